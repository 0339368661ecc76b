//! The PHT protocol, once: gost's Plain HTTP Tunnel (PHT/1) as a runtime-free byte stream.
//!
//! This crate knows no sockets, no runtime and no clock. It turns a [`Fetch`] implementation
//! (an HTTP client that can POST a body and stream a GET response) into a [`Tunnel`]: a
//! `futures::io::AsyncRead + AsyncWrite` byte stream, plus a [`TunnelDriver`] future that the
//! caller runs (`tokio::spawn` natively, `spawn_local` in a browser) to move the bytes.
//!
//! ```no_run
//! # async fn demo<F: pht_core::Fetch>(fetch: F) -> Result<(), Box<dyn std::error::Error>> {
//! use futures::{AsyncReadExt, AsyncWriteExt};
//! let node = pht_core::NodeUrl::parse("forward+pht://127.0.0.1:8443")?;
//! let (mut tunnel, driver) = pht_core::open(fetch, node.tunnel_config()).await?;
//! # let spawn = |_d| ();
//! spawn(driver); // the caller's runtime drives the HTTP requests
//! tunnel.write_all(b"hello").await?;
//! let mut buf = [0u8; 5];
//! tunnel.read_exact(&mut buf).await?;
//! # Ok(()) }
//! ```

mod codec;
mod connector;
mod error;
mod fetch;
mod maybe_send;
mod node;
mod server_addr;
mod token;
mod tunnel;
mod url;

pub use codec::{
    PullDecoder, PullEvent, PushDecoder, decode_push_body, encode_pull_line, encode_push_body,
};
pub use connector::http_head_end;
pub use connector::{Connected, Connector, ConnectorError, Credentials, handshake};
pub use error::{DecodeError, Error, FetchError, UrlError};
pub use fetch::{Fetch, FetchResponse};
pub use maybe_send::{BoxFuture, MaybeSend, MaybeSync};
pub use node::{NodeUrl, TokenMode, TunnelConfig};
pub use token::mint_token;
pub use tunnel::{Tunnel, TunnelDriver, open};
pub use url::GostUrl;

/// Defaults shared by every PHT peer in this project.
pub mod defaults {
    /// gost's default authorize path.
    pub const AUTHORIZE_PATH: &str = "/authorize";
    /// gost's default push (client → server) path.
    pub const PUSH_PATH: &str = "/push";
    /// gost's default pull (server → client) path.
    pub const PULL_PATH: &str = "/pull";
    /// Raw bytes carried by one push POST at most. Writes made while a POST is in flight
    /// are coalesced up to this size; gost servers accept any line length.
    pub const MAX_PUSH_PAYLOAD: usize = 1024 * 1024;
    /// Longest pull line (base64 characters, without the newline) the client accepts.
    /// gost's own client stops at 64 KiB; ours is more lenient so it also reads servers
    /// configured with larger lines.
    pub const MAX_PULL_LINE: usize = 4 * 1024 * 1024;
    /// Decoded bytes buffered on the client before it stops reading the pull response.
    pub const RECV_BUFFER: usize = 1024 * 1024;
    /// Payload bytes per pull line on the server: just under 48 KiB, so that a line and
    /// its newline (65 533 bytes) fit the 64 KiB buffer of a gost client's line scanner.
    /// Exactly 48 KiB would make 65 536 characters plus `\n`: one byte too many.
    pub const PULL_LINE_PAYLOAD: usize = 48 * 1024 - 3;
}
