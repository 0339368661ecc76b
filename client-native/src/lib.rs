//! Native transport for the PHT protocol core: hyper 1.x over tokio.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let node = pht_core::NodeUrl::parse("forward+pht://127.0.0.1:8443")?;
//! let mut stream = pht_client::connect(&node).await?;
//! stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
//! let mut reply = Vec::new();
//! stream.read_to_end(&mut reply).await?;
//! # Ok(()) }
//! ```

pub mod logging;
mod pipe;
mod transport;

pub use pipe::{PipeStats, pipe};
pub use transport::{HyperBody, HyperFetch, TransportError};

use pht_core::{NodeUrl, Tunnel};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// A PHT tunnel as a tokio byte stream.
pub type PhtStream = Compat<Tunnel>;

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Protocol(#[from] pht_core::Error),
}

/// Opens one tunnel to `node` with a fresh HTTP client. To open many tunnels to the same
/// server, make one [`HyperFetch`] and call [`connect_with`] so they share pooled
/// connections.
pub async fn connect(node: &NodeUrl) -> Result<PhtStream, ConnectError> {
    let fetch = HyperFetch::for_node(node)?;
    connect_with(&fetch, node).await
}

/// Opens one tunnel over an existing client; the driver runs on the current tokio runtime.
pub async fn connect_with(fetch: &HyperFetch, node: &NodeUrl) -> Result<PhtStream, ConnectError> {
    let (tunnel, driver) = pht_core::open(
        fetch.clone(),
        node.try_tunnel_config().map_err(pht_core::Error::from)?,
    )
    .await?;
    tokio::spawn(driver);
    Ok(tunnel.compat())
}
