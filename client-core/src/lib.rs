//! The PHT protocol, once: gost's Plain HTTP Tunnel (PHT/1) as a runtime-free byte stream.
//!
//! This crate knows no sockets and no runtime. It turns a [`Fetch`] implementation (an HTTP
//! client that can POST a body and stream a GET response) and a [`Clock`] (timers) into a
//! [`Tunnel`]: a `futures::io::AsyncRead + AsyncWrite` byte stream, plus a [`TunnelDriver`]
//! future that the caller runs (`tokio::spawn` natively, `spawn_local` in a browser) to
//! move the bytes.
//!
//! ```no_run
//! # async fn demo<F: pht_core::Fetch, C: pht_core::Clock>(fetch: F, clock: C) -> Result<(), Box<dyn std::error::Error>> {
//! use futures::{AsyncReadExt, AsyncWriteExt};
//! let node = pht_core::NodeUrl::parse("forward+pht://127.0.0.1:8443")?;
//! let (mut tunnel, driver) = pht_core::open(fetch, clock, node.tunnel_config()).await?;
//! # let spawn = |_d| ();
//! spawn(driver); // the caller's runtime drives the HTTP requests
//! tunnel.write_all(b"hello").await?;
//! let mut buf = [0u8; 5];
//! tunnel.read_exact(&mut buf).await?;
//! # Ok(()) }
//! ```

mod clock;
mod codec;
mod connector;
mod error;
mod fetch;
pub mod frame;
mod maybe_send;
mod node;
pub mod relay;
mod server_addr;
pub mod socks5;
pub mod socks_addr;
mod token;
mod tunnel;
mod url;

pub use clock::{Clock, Elapsed, timeout};
pub use codec::{
    PullDecoder, PullEvent, PushDecoder, decode_push_body, encode_pull_line, encode_push_body,
};
pub use connector::http_head_end;
pub use connector::{Connected, Connector, ConnectorError, Credentials, handshake};
pub use error::{DecodeError, Error, FetchError, UrlError};
pub use fetch::{Fetch, FetchResponse, PostBody};
pub use maybe_send::{BoxFuture, MaybeSend, MaybeSync};
pub use node::{NodeUrl, PollMode, TokenMode, TunnelConfig, Version};
pub use token::{mint_token, token_prefix};
pub use tunnel::{Progress, RESET_PARAM, Tunnel, TunnelDriver, open};
pub use url::{GostUrl, MAX_DURATION, MAX_SIZE, parse_bool, parse_duration, parse_size};

/// Defaults shared by every PHT peer in this project.
pub mod defaults {
    /// gost's default authorize path.
    pub const AUTHORIZE_PATH: &str = "/authorize";
    /// gost's default push (client → server) path.
    pub const PUSH_PATH: &str = "/push";
    /// gost's default pull (server → client) path.
    pub const PULL_PATH: &str = "/pull";
    /// Raw bytes carried by one push POST at most. Writes made while a POST is in flight
    /// are coalesced up to this size. 786 429 bytes are 1 048 572 base64 characters, so
    /// with the newline a full push stays under nginx's default `client_max_body_size`
    /// (1 MiB), the smallest body limit common in front of PHT servers.
    pub const MAX_PUSH_PAYLOAD: usize = 262_143 * 3;
    /// Smallest push the client shrinks to after proxies answer 413 (`minPushSize`).
    pub const MIN_PUSH_PAYLOAD: usize = 16 * 1024;
    /// Time for one HTTP exchange: the authorize answer, a push's answer, a pull's
    /// response headers (`requestTimeout`).
    pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    /// Silence on the pull after which the tunnel is dead (`heartbeatTimeout`): three of
    /// the servers' 10 s heartbeats (gost's and ours).
    pub const HEARTBEAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
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
