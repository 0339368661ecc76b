//! Native transport for the PHT protocol core: hyper 1.x (and h3 on quinn) over tokio,
//! and the `pht-client` binary. The process plumbing that binary shares with `pht-server`
//! (splice, listening sockets, signals, log set-up, PEM files) is in `pht-runtime`.
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

mod clock;
pub mod h2;
mod http3;
pub mod quic;
pub mod tls;
mod transport;

pub use clock::TokioClock;
pub use quic::QuicOptions;
pub use transport::{
    Dial, HyperBody, HyperFetch, Io, NodeIo, Proxy, TransportError, TransportOptions,
};

use pht_core::{Connected, Connector, Credentials, NodeUrl, Tunnel};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// A PHT tunnel as a tokio byte stream.
pub type PhtStream = Compat<Tunnel>;

/// A PHT tunnel after the node's connector handshake (HTTP CONNECT, SOCKS5, relay).
pub type ProxiedStream = Compat<Connected<Tunnel>>;

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Protocol(#[from] pht_core::Error),
    #[error(transparent)]
    Connector(#[from] pht_core::ConnectorError),
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
        TokioClock::new(),
        node.try_tunnel_config().map_err(pht_core::Error::from)?,
    )
    .await?;
    tokio::spawn(driver);
    Ok(tunnel.compat())
}

/// Opens a tunnel and asks the node's connector (`http`, `socks5`, `relay`; `forward` does
/// nothing) for `target` (`host:port`), with the node URL's `user:pass@` credentials.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// let node = pht_core::NodeUrl::parse("socks5+pht://u:p@127.0.0.1:8443")?;
/// let fetch = pht_client::HyperFetch::for_node(&node)?;
/// let stream = pht_client::connect_to(&fetch, &node, "example.com:443").await?;
/// # Ok(()) }
/// ```
pub async fn connect_to(
    fetch: &HyperFetch,
    node: &NodeUrl,
    target: &str,
) -> Result<ProxiedStream, ConnectError> {
    let connector: Connector = node.connector.parse()?;
    let (tunnel, driver) = pht_core::open(
        fetch.clone(),
        TokioClock::new(),
        node.try_tunnel_config().map_err(pht_core::Error::from)?,
    )
    .await?;
    tokio::spawn(driver);
    let auth = node
        .user
        .as_ref()
        .map(|u| Credentials::new(u.clone(), node.password.clone().unwrap_or_default()));
    let connected = pht_core::handshake(tunnel, connector, target, auth.as_ref()).await?;
    Ok(connected.compat())
}
