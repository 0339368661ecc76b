//! Listeners turn an address into a stream of accepted byte streams. They know nothing of
//! handlers: a new listener type is one file here, with a `prepare` function that reads
//! its options into a [`Prepared`] value, and one line in the registry (`REGISTRY`).

mod gate;
pub mod pht;
mod tcp;
mod tls;

use std::io;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::config::{ListenerConfig, MetadataError, TlsConfig};
use crate::registry::Registry;

/// Any bidirectional byte stream a handler can serve.
pub trait Stream: AsyncRead + AsyncWrite + pht_runtime::Reset + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + pht_runtime::Reset + Send + Unpin> Stream for T {}

/// One accepted connection.
pub struct Accepted {
    pub stream: Box<dyn Stream>,
    /// The client: the TCP peer, or for PHT the HTTP peer that created the tunnel.
    pub peer: SocketAddr,
    /// Extra context for logs (a PHT token prefix).
    pub tag: Option<String>,
    /// This side's address of a direct TCP connection (SOCKS5 BIND and UDP replies name
    /// it); `None` for tunnels.
    pub local: Option<SocketAddr>,
}

/// A bound listener.
pub trait Listener: Send {
    /// Waits for the next connection.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Accepted>>;
    /// The address actually bound (port 0 resolved).
    fn local_addr(&self) -> SocketAddr;
    /// After shutdown: waits (bounded) until the listener's connections have said their
    /// last words, such as the RESET frame that tells a PHT/2 client its tunnel is gone
    /// (a connection merely dropped would look resumable to it).
    fn drained(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// Graceful shutdown begins: take no new connections (no new tunnels) from now on,
    /// and let the open ones run on.
    fn drain(&mut self) {}
    /// While draining: how many tunnels the listener itself still holds open, beyond the
    /// handler's connections (a PHT tunnel whose last bytes are on their way to the client).
    fn busy(&self) -> usize {
        0
    }
}

/// What a listener's background task does when the service drains (see [`Listener::drain`]).
pub trait Drain: Send + Sync {
    /// Stop taking new connections or tunnels.
    fn drain(&self);
    /// Tunnels still open.
    fn busy(&self) -> usize;
}

/// An accept loop that stops when its token is cancelled: draining closes the listening
/// socket, so a balancer's next connection goes to another instance.
pub struct StopAccepting(pub CancellationToken);

impl Drain for StopAccepting {
    fn drain(&self) {
        self.0.cancel();
    }
    fn busy(&self) -> usize {
        0
    }
}

/// What a listener type is prepared from.
pub struct Spec<'a> {
    /// The type as configured (one of the names its registry line lists).
    pub kind: &'a str,
    pub cfg: &'a ListenerConfig,
    /// The configuration's top-level `tls` section.
    pub global_tls: Option<&'a TlsConfig>,
    /// The service's address (gost's `:port` or `host:port`).
    pub addr: &'a str,
    /// The service's name, for logs and metrics.
    pub service: &'a str,
}

/// A listener whose options have been read and whose certificates are loaded: binding is
/// all that is left, so a configuration's mistakes all surface before anything binds.
pub trait Prepared: Send + Sync {
    /// Binds the address and starts serving.
    fn bind(self: Box<Self>, shutdown: CancellationToken) -> Bound;
}

/// What [`Prepared::bind`] returns: the bound listener, boxed.
pub type Bound = BoxFuture<'static, Result<Box<dyn Listener>, ListenError>>;

/// Reads a listener type's options (parsed once, here).
type Prepare = fn(&Spec<'_>) -> Result<Box<dyn Prepared>, ListenError>;

/// The listener registry: each type's names (canonical first; `""` means `tcp`, as in
/// gost) and how it is prepared. Everything that lists or checks listener types reads it.
const REGISTRY: Registry<Prepare> = Registry(&[
    (&["tcp", ""], tcp::prepare),
    (&["tls"], tls::prepare),
    (&["pht", "phts"], pht::prepare),
    (&["h3"], pht::http3::prepare),
]);

/// Every listener type name, for "supported: ..." messages.
pub fn supported() -> String {
    REGISTRY.supported()
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("listener type {0:?} is not supported (supported: {list})", list = supported())]
    Unsupported(String),
    #[error("listener TLS: {0}")]
    Tls(#[from] pht_runtime::pem::TlsError),
    #[error("listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("listener option {0}")]
    Option(#[from] MetadataError),
}

pub use gate::{Gate, Guarded, REPORT_EVERY, ReportTimer};

/// Time a client gets for the TLS handshake (`handshakeTimeout`).
pub const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Time a client gets to send a request head, counted from the connection's start or
/// from the end of the previous exchange (`headerTimeout`; gost's ReadHeaderTimeout).
/// So a connection that never sends a byte, sends its head slowly, or idles between
/// requests is closed after it.
pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits for the next TCP connection the gate admits (with TCP_NODELAY set), or `None` at
/// shutdown. Accept errors (out of descriptors, a connection reset before accept) are
/// logged and waited out, so a listener never stops or spins on them.
pub async fn accept_tcp(
    tcp: &tokio::net::TcpListener,
    gate: &Gate,
    shutdown: &CancellationToken,
) -> Option<(Guarded<tokio::net::TcpStream>, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = tcp.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    if let Some(s) = gate.admit(stream, peer) {
                        return Some((s, peer));
                    }
                }
                Err(e) => {
                    tracing::debug!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// A listener whose connections are produced by a background task (TLS handshakes, PHT
/// tunnels) and queued for the service.
pub struct QueuedListener {
    rx: tokio::sync::mpsc::Receiver<Accepted>,
    local: SocketAddr,
    kind: &'static str,
    /// Fires (or is dropped) once the serving side has drained after shutdown.
    drained: Option<tokio::sync::oneshot::Receiver<()>>,
    /// The background task's side of a graceful shutdown.
    drain: Option<std::sync::Arc<dyn Drain>>,
}

impl QueuedListener {
    pub fn new(
        rx: tokio::sync::mpsc::Receiver<Accepted>,
        local: SocketAddr,
        kind: &'static str,
    ) -> Self {
        QueuedListener {
            rx,
            local,
            kind,
            drained: None,
            drain: None,
        }
    }

    /// What [`Listener::drain`] and [`Listener::busy`] ask.
    pub fn with_drain(mut self, drain: std::sync::Arc<dyn Drain>) -> Self {
        self.drain = Some(drain);
        self
    }

    /// What [`Listener::drained`] waits for.
    pub fn with_drained(mut self, drained: tokio::sync::oneshot::Receiver<()>) -> Self {
        self.drained = Some(drained);
        self
    }
}

impl Listener for QueuedListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Accepted>> {
        Box::pin(async move {
            self.rx.recv().await.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!("{} listener closed", self.kind),
                )
            })
        })
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn drained(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(rx) = self.drained.take() {
                let _ = rx.await;
            }
        })
    }

    fn drain(&mut self) {
        if let Some(d) = &self.drain {
            d.drain();
        }
    }

    fn busy(&self) -> usize {
        self.drain.as_ref().map_or(0, |d| d.busy())
    }
}

/// gost's `:port` means every interface.
pub fn bind_addr(addr: &str) -> String {
    if addr.starts_with(':') {
        format!("[::]{addr}")
    } else {
        addr.to_string()
    }
}

pub(crate) async fn bind_tcp(addr: &str) -> Result<tokio::net::TcpListener, ListenError> {
    let a = bind_addr(addr);
    let res = match pht_runtime::listen(&a).await {
        // Hosts without IPv6 still get `:port` on IPv4.
        Err(_) if addr.starts_with(':') => pht_runtime::listen(&format!("0.0.0.0{addr}")).await,
        r => r,
    };
    res.map_err(|source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Builds the TLS setup of a TLS listener and logs where its certificate came from.
pub(crate) fn server_tls(
    spec: &Spec<'_>,
    alpn: &[&[u8]],
) -> Result<std::sync::Arc<rustls::ServerConfig>, ListenError> {
    let tls =
        crate::tls::server_config_for(spec.cfg.tls.as_ref(), spec.global_tls, spec.addr, alpn)?;
    tracing::info!(
        service = spec.service, certificate = %tls.source, fingerprint = %tls.fingerprint,
        "TLS certificate (clients can pin it with pin={})", tls.fingerprint
    );
    Ok(tls.config)
}

/// Reads the listener's options and loads its certificates, binding nothing.
pub fn prepare(spec: &Spec<'_>) -> Result<Box<dyn Prepared>, ListenError> {
    let prepare = REGISTRY
        .find(spec.kind)
        .ok_or_else(|| ListenError::Unsupported(spec.kind.to_string()))?;
    // Timeouts gost's listeners share; checked for every type, as gost parses them for all.
    for key in ["handshakeTimeout", "headerTimeout"] {
        spec.cfg.metadata.get_duration(key)?;
    }
    prepare(spec)
}

/// Prepares and binds in one step. `global_tls` is the configuration's top-level `tls`.
pub async fn bind(
    cfg: &ListenerConfig,
    global_tls: Option<&TlsConfig>,
    addr: &str,
    service: &str,
    shutdown: CancellationToken,
) -> Result<Box<dyn Listener>, ListenError> {
    let spec = Spec {
        kind: &cfg.kind,
        cfg,
        global_tls,
        addr,
        service,
    };
    prepare(&spec)?.bind(shutdown).await
}
