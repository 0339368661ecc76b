//! The `pht` listener: gost's Plain HTTP Tunnel server (PHT/1) on hyper.
//!
//! Each tunnel is an in-memory byte pipe: push POSTs write into one end, the pull GET
//! streams out of it, and the service's handler gets the other end as an accepted stream.

mod cors;
mod pipe;
mod registry;
mod routes;

pub use cors::Cors;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{ListenError, QueuedListener, accept_tcp};
use crate::config::{Metadata, MetadataError};
use registry::Registry;

/// Listener options, all read from listener metadata (gost's names where gost has them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhtOptions {
    /// `authorizePath` (default `/authorize`).
    pub authorize_path: String,
    /// `pushPath` (default `/push`).
    pub push_path: String,
    /// `pullPath` (default `/pull`).
    pub pull_path: String,
    /// `backlog`: tunnels created but not yet taken by the handler (default 128); beyond
    /// it new tunnels are refused with 429.
    pub backlog: usize,
    /// `backlogWait`: how long a new tunnel waits for room in a full backlog before it is
    /// refused with 429 (default 2s; gost refuses at once).
    pub backlog_wait: Duration,
    /// `heartbeat`: an idle pull stream gets a `\n` after this long (default 10s).
    pub heartbeat: Duration,
    /// `maxPushBody`: largest push body in bytes (default 8 MiB); larger → 413.
    pub max_push_body: usize,
    /// `idleTimeout`: a tunnel with no pull attached and no push for this long is closed
    /// (default 60s).
    pub idle_timeout: Duration,
    /// `tombstoneTTL`: how long a closed token is remembered, so a late pull ends at once
    /// instead of creating a new tunnel (default 10m).
    pub tombstone_ttl: Duration,
    /// `pullLineSize`: payload bytes per pull line at most (default 49 149, just under 48 KiB: gost clients
    /// refuse lines over 64 KiB of text).
    pub pull_line_payload: usize,
    /// `pushTimeout`: a push whose data the handler does not take within this time fails
    /// with 410 and closes the tunnel (default 30s).
    pub push_timeout: Duration,
    /// `tunnelBuffer`: bytes buffered per direction between HTTP and handler (default 1 MiB).
    pub tunnel_buffer: usize,
    /// `cors` (`*` or a comma list of origins) and `corsMaxAge`: off unless set.
    pub cors: Option<Cors>,
    /// `maxStreams`: concurrent HTTP/2 streams per connection (default 20000: each
    /// tunnel holds one pull stream, and pushes come on top).
    pub max_streams: u32,
}

impl Default for PhtOptions {
    fn default() -> Self {
        PhtOptions {
            authorize_path: pht_core::defaults::AUTHORIZE_PATH.into(),
            push_path: pht_core::defaults::PUSH_PATH.into(),
            pull_path: pht_core::defaults::PULL_PATH.into(),
            backlog: 128,
            backlog_wait: Duration::from_secs(2),
            heartbeat: Duration::from_secs(10),
            max_push_body: 8 * 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            tombstone_ttl: Duration::from_secs(600),
            pull_line_payload: pht_core::defaults::PULL_LINE_PAYLOAD,
            push_timeout: Duration::from_secs(30),
            tunnel_buffer: 1024 * 1024,
            cors: None,
            max_streams: 20_000,
        }
    }
}

impl PhtOptions {
    /// Reads the options from listener metadata; a bad value is an error naming the key.
    pub fn from_metadata(md: &Metadata) -> Result<Self, MetadataError> {
        let mut o = PhtOptions::default();
        let path = |key: &str, dflt: &mut String| {
            // gost falls back to the default for a path without a leading '/'.
            if let Some(p) = md.get_str(key).filter(|p| p.starts_with('/')) {
                *dflt = p;
            }
        };
        path("authorizePath", &mut o.authorize_path);
        path("pushPath", &mut o.push_path);
        path("pullPath", &mut o.pull_path);
        let positive = |key: &str, v: Option<usize>| -> Result<Option<usize>, MetadataError> {
            match v {
                Some(0) => Err(MetadataError {
                    key: key.into(),
                    value: "0".into(),
                    expected: "a positive number",
                }),
                v => Ok(v),
            }
        };
        if let Some(v) = positive("backlog", md.get_size("backlog")?)? {
            o.backlog = v;
        }
        if let Some(v) = md.get_duration("backlogWait")? {
            o.backlog_wait = v;
        }
        if let Some(v) = md.get_duration("heartbeat")? {
            o.heartbeat = v.max(Duration::from_millis(10));
        }
        if let Some(v) = positive("maxPushBody", md.get_size("maxPushBody")?)? {
            o.max_push_body = v;
        }
        if let Some(v) = md.get_duration("idleTimeout")? {
            o.idle_timeout = v;
        }
        if let Some(v) = md.get_duration("tombstoneTTL")? {
            o.tombstone_ttl = v;
        }
        if let Some(v) = positive("pullLineSize", md.get_size("pullLineSize")?)? {
            o.pull_line_payload = v;
        }
        if let Some(v) = md.get_duration("pushTimeout")? {
            o.push_timeout = v;
        }
        if let Some(v) = positive("tunnelBuffer", md.get_size("tunnelBuffer")?)? {
            o.tunnel_buffer = v;
        }
        o.cors = Cors::from_metadata(md)?;
        if let Some(v) = positive("maxStreams", md.get_size("maxStreams")?)? {
            o.max_streams = u32::try_from(v).unwrap_or(u32::MAX);
        }
        Ok(o)
    }
}

/// Binds `addr` and serves PHT on it (over TLS with `tls`: `phts`) until `shutdown`;
/// tunnels come out of the returned listener.
pub async fn bind(
    addr: &str,
    opts: PhtOptions,
    tls: Option<TlsAcceptor>,
    service: &str,
    shutdown: CancellationToken,
) -> Result<QueuedListener, ListenError> {
    let tcp = super::bind_tcp(addr).await?;
    let local = tcp.local_addr().map_err(|source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let (tx, rx) = mpsc::channel(opts.backlog);
    let registry = Arc::new(Registry::new(opts, tx, service.to_string()));
    tokio::spawn(reap_loop(registry.clone(), shutdown.clone()));
    tokio::spawn(serve(tcp, tls, registry, shutdown));
    Ok(QueuedListener::new(rx, local, "pht"))
}

/// Time a client gets for the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 flow-control windows (see the client's): big enough that a tunnel never waits
/// for credit on loopback-class links.
const H2_STREAM_WINDOW: u32 = 1024 * 1024;
const H2_CONN_WINDOW: u32 = 16 * 1024 * 1024;

async fn serve(
    tcp: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(registry.opts.max_streams)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .keep_alive_interval(Duration::from_secs(30));
    loop {
        let Some((stream, peer)) = accept_tcp(&tcp, &shutdown).await else {
            break;
        };
        debug!(service = %registry.service, %peer, "pht connection accepted");
        let registry = registry.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(routes::route(req, &registry, peer).await)
                }
            });
            let served = match tls {
                None => builder.serve_connection(TokioIo::new(stream), svc).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => builder.serve_connection(TokioIo::new(s), svc).await,
                        Ok(Err(e)) => {
                            debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = served {
                debug!(%peer, "pht connection: {e}");
            }
        });
    }
    info!(service = %registry.service, "pht listener stopped; closing tunnels");
    registry.close_all();
}

async fn reap_loop(registry: Arc<Registry>, shutdown: CancellationToken) {
    let period =
        (registry.opts.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => registry.reap(),
        }
    }
}
