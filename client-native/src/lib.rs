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

mod clock;
mod http3;
pub mod logging;
mod pipe;
pub mod quic;
mod reset;
pub mod tls;
mod transport;

pub use clock::TokioClock;
pub use pipe::{PipeStats, pipe, splice};
pub use quic::QuicOptions;
pub use reset::Reset;
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

/// Raises the open-file soft limit to the hard limit, as Go programs (gost) do at start:
/// every tunnel costs sockets, and the usual soft limit of 1024 caps a busy server.
pub fn raise_fd_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The open-file soft limit (`None` when unlimited or unknown): what a server sizes its
/// default limits from.
pub fn fd_limit() -> Option<u64> {
    #[cfg(unix)]
    // SAFETY: getrlimit only writes the struct passed by pointer.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0
            && lim.rlim_cur != libc::RLIM_INFINITY
        {
            // rlim_t is u64 here but not on every unix.
            #[allow(clippy::unnecessary_cast)]
            return Some(lim.rlim_cur as u64);
        }
    }
    None
}

/// Resolves on SIGINT or SIGTERM: how both binaries learn to shut down.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Connections the kernel queues for a listener before the program accepts them
/// (capped by `net.core.somaxconn`). std's default of 128 overflows under a burst of new
/// tunnels, and each overflowed connect then waits out a one-second SYN retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener on `addr` (`host:port`, resolved) with [`LISTEN_BACKLOG`].
pub async fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr}: no address"),
        )
    }))
}
