//! The `pht` listener: gost's Plain HTTP Tunnel server (PHT/1) on hyper, and this
//! project's PHT/2 for requests that ask for it (docs/PROTOCOL.md).
//!
//! Each tunnel is an in-memory byte pipe: push POSTs write into one end, the pull GET
//! streams out of it, and the service's handler gets the other end as an accepted stream.

mod client_addr;
mod cors;
pub mod http3;
mod pipe;
mod registry;
mod reorder;
mod replay;
mod routes;
mod stall;
mod v2;

pub use cors::Cors;

use std::sync::Arc;
use std::time::Duration;

use std::io;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::{Bound, Gate, ListenError, Prepared, QueuedListener, Spec, accept_tcp};
use crate::config::{Metadata, MetadataError};
use registry::Registry;

/// Listener options, all read from listener metadata (gost's names where gost has them).
#[derive(Debug, Clone, PartialEq)]
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
    /// `pushTimeout` (PHT/1): a push whose data the handler does not take within this
    /// time fails with 410 and resets the tunnel (default 30s). A PHT/1 push cannot be
    /// answered before its bytes are delivered, nor sent again.
    pub push_timeout: Duration,
    /// `pushWait` (PHT/2): how long a push's answer waits for the handler to take its
    /// bytes (default 2s). Past it the push is answered with the count taken so far and
    /// the server delivers the rest as the target reads, as TCP would wait for a slow
    /// reader; a push that cannot even start its delivery by then gets `429`.
    pub push_wait: Duration,
    /// `tunnelBuffer`: bytes buffered per direction between HTTP and handler (default 1 MiB).
    pub tunnel_buffer: usize,
    /// `cors` (`*` or a comma list of origins) and `corsMaxAge`: off unless set.
    pub cors: Option<Cors>,
    /// `maxStreams`: concurrent HTTP/2 streams per connection (default 20000: each
    /// tunnel holds one pull stream, and pushes come on top).
    pub max_streams: u32,
    /// `maxTunnels`: open (and authorized) tunnels at most; `0` is no limit. The default
    /// leaves room in the descriptor limit: a third of it, less 256 (each tunnel may hold
    /// a pull connection, a push connection and a target connection).
    pub max_tunnels: usize,
    /// `maxTunnelsPerClient`: open (and authorized) tunnels per client address (default
    /// 1024; `0` is no limit).
    pub max_tunnels_per_client: usize,
    /// `tunnelRate`: new tunnels per second per client address (default 100, with bursts
    /// up to `maxTunnelsPerClient`; `0` is no limit).
    pub tunnel_rate: f64,
    /// `trustedProxies`: addresses and CIDRs of reverse proxies whose `X-Forwarded-For`
    /// or `Forwarded` headers name the client (default none: the client is the peer).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `headerTimeout`: time for a request head, from a connection's start and between
    /// requests (default 30s, gost's ReadHeaderTimeout): silent, slow and idle
    /// connections are closed after it.
    pub header_timeout: Duration,
    /// `handshakeTimeout`: time for a TLS handshake (`phts`; default 10s).
    pub handshake_timeout: Duration,
    /// `replayBuffer` (PHT/2): download bytes kept per tunnel until the client
    /// acknowledges them, so a broken pull resumes without loss (default 8 MiB). It is
    /// also the download's window: the handler's bytes wait while it is full.
    pub replay_buffer: usize,
    /// `reorderBuffer` (PHT/2): upload bytes per tunnel held while earlier pushes are
    /// missing (default 8 MiB; `0` takes only in-order pushes); beyond it a push gets 429.
    pub reorder_buffer: usize,
    /// `resumeGrace` (PHT/2): how long a tunnel without a pull waits for one before it
    /// is reset (default 30s).
    pub resume_grace: Duration,
    /// `pollWait` (PHT/2): how long a `poll=1` pull waits for data before it ends
    /// (default: the heartbeat).
    pub poll_wait: Duration,
    /// `instance`: this server's name among several behind one balancer. Tokens from
    /// authorize start with it and a dot (`a.Xy3…`), so the balancer can send every
    /// request of the tunnel back here (docs/DEPLOY.md). Default: none.
    pub instance: Option<String>,
    /// `altSvc`: an `Alt-Svc` header on every answer, so that browsers move to HTTP/3 by
    /// themselves. A port number (`8443`) means `h3=":8443"; ma=86400`, the `h3` listener
    /// on that UDP port of the same host; anything else is sent as written. Default: none.
    pub alt_svc: Option<http::HeaderValue>,
    /// `http3` (phts): serve HTTP/3 on the same port number over UDP, into the same
    /// tunnels, and advertise it with `Alt-Svc` (unless `altSvc` says otherwise). The QUIC
    /// keys of the `h3` listener apply. Default: off.
    pub http3: bool,
}

/// Longest `instance` name.
const MAX_INSTANCE_LEN: usize = 32;

/// Descriptors kept out of the derived limits, for listeners, logs and the rest.
const FD_HEADROOM: u64 = 256;

impl PhtOptions {
    /// Bursts of new tunnels a client may open at once.
    pub fn tunnel_burst(&self) -> usize {
        if self.max_tunnels_per_client > 0 {
            self.max_tunnels_per_client
        } else {
            (self.tunnel_rate.ceil() as usize).max(1)
        }
    }
}

fn default_max_tunnels() -> usize {
    match pht_runtime::fd_limit() {
        Some(n) => (n.saturating_sub(FD_HEADROOM) / 3).max(64) as usize,
        None => 1_000_000,
    }
}

impl Default for PhtOptions {
    fn default() -> Self {
        PhtOptions {
            authorize_path: pht_core::defaults::AUTHORIZE_PATH.into(),
            push_path: pht_core::defaults::PUSH_PATH.into(),
            pull_path: pht_core::defaults::PULL_PATH.into(),
            backlog: 128,
            backlog_wait: Duration::from_secs(2),
            heartbeat: pht_core::frame::defaults::HEARTBEAT,
            max_push_body: pht_core::frame::defaults::MAX_PUSH_BODY,
            idle_timeout: Duration::from_secs(60),
            tombstone_ttl: Duration::from_secs(600),
            pull_line_payload: pht_core::defaults::PULL_LINE_PAYLOAD,
            push_timeout: Duration::from_secs(30),
            push_wait: Duration::from_secs(2),
            tunnel_buffer: 1024 * 1024,
            cors: None,
            max_streams: 20_000,
            max_tunnels: default_max_tunnels(),
            max_tunnels_per_client: 1024,
            tunnel_rate: 100.0,
            trusted_proxies: Vec::new(),
            header_timeout: super::DEFAULT_HEADER_TIMEOUT,
            handshake_timeout: super::DEFAULT_HANDSHAKE_TIMEOUT,
            replay_buffer: pht_core::frame::defaults::REPLAY_BUFFER,
            reorder_buffer: pht_core::frame::defaults::REORDER_BUFFER,
            resume_grace: pht_core::frame::defaults::GRACE,
            poll_wait: pht_core::frame::defaults::HEARTBEAT,
            instance: None,
            alt_svc: None,
            http3: false,
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
        if let Some(v) = md.get_duration("pushWait")? {
            o.push_wait = v;
        }
        if let Some(v) = positive("tunnelBuffer", md.get_size("tunnelBuffer")?)? {
            o.tunnel_buffer = v;
        }
        o.cors = Cors::from_metadata(md)?;
        if let Some(v) = positive("maxStreams", md.get_size("maxStreams")?)? {
            o.max_streams = u32::try_from(v).unwrap_or(u32::MAX);
        }
        if let Some(v) = md.get_size("maxTunnels")? {
            o.max_tunnels = v;
        }
        if let Some(v) = md.get_size("maxTunnelsPerClient")? {
            o.max_tunnels_per_client = v;
        }
        if let Some(v) = md.get_str("tunnelRate") {
            let n = v.trim().trim_end_matches("/s");
            o.tunnel_rate = n
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r >= 0.0)
                .ok_or(MetadataError {
                    key: "tunnelRate".into(),
                    value: v.clone(),
                    expected: "tunnels per second (e.g. 100 or 100/s; 0 for no limit)",
                })?;
        }
        if let Some(v) = md.get_duration("headerTimeout")? {
            o.header_timeout = v.max(Duration::from_millis(10));
        }
        if let Some(v) = md.get_duration("handshakeTimeout")? {
            o.handshake_timeout = v.max(Duration::from_millis(10));
        }
        if let Some(v) = md.get_str("trustedProxies") {
            o.trusted_proxies = parse_nets(&v).ok_or(MetadataError {
                key: "trustedProxies".into(),
                value: v.clone(),
                expected: "a comma list of addresses and CIDRs",
            })?;
        }
        if let Some(v) = positive("replayBuffer", md.get_size("replayBuffer")?)? {
            o.replay_buffer = v;
        }
        if let Some(v) = md.get_size("reorderBuffer")? {
            o.reorder_buffer = v;
        }
        if let Some(v) = md.get_duration("resumeGrace")? {
            o.resume_grace = v;
        }
        // After `heartbeat`, which it follows unless set.
        o.poll_wait = md.get_duration("pollWait")?.unwrap_or(o.heartbeat);
        if let Some(v) = md.get_str("instance").filter(|v| !v.is_empty()) {
            // The balancer matches it in a regular expression, and clients copy the token
            // into a query unescaped: letters, digits, '-' and '_' only.
            let ok = v.len() <= MAX_INSTANCE_LEN
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(MetadataError {
                    key: "instance".into(),
                    value: format!("{v:?}"),
                    expected: "a name of up to 32 letters, digits, '-' or '_'",
                });
            }
            o.instance = Some(v);
        }
        o.http3 = md.get_bool("http3")?.unwrap_or(false);
        if let Some(v) = md.get_str("altSvc").filter(|v| !v.trim().is_empty()) {
            let v = v.trim();
            let value = match v.parse::<u16>() {
                Ok(port) if port > 0 => format!("h3=\":{port}\"; ma=86400"),
                _ => v.to_string(),
            };
            o.alt_svc = Some(http::HeaderValue::from_str(&value).map_err(|_| MetadataError {
                key: "altSvc".into(),
                value: format!("{v:?}"),
                expected: "a UDP port (8443) or an Alt-Svc header value (h3=\":8443\"; ma=86400)",
            })?);
        }
        Ok(o)
    }
}

/// `10.0.0.1, 192.168.0.0/16, ::1` → networks (a bare address is a /32 or /128).
fn parse_nets(v: &str) -> Option<Vec<ipnet::IpNet>> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        })
        .collect()
}

/// A pht or phts listener's options: the PHT keys, `maxConns`, the certificate for
/// phts, and the HTTP/3 side of `http3=true`.
struct Plan {
    addr: String,
    service: String,
    opts: PhtOptions,
    tls: Option<TlsAcceptor>,
    gate: Gate,
    h3: Option<http3::H3Side>,
}

/// `http3=true` on a plain `pht` listener.
pub fn http3_needs_tls() -> MetadataError {
    MetadataError {
        key: "http3".into(),
        value: "true".into(),
        expected: "possible on pht: HTTP/3 runs over TLS (use phts)",
    }
}

pub(in crate::listener) fn prepare(spec: &Spec<'_>) -> Result<Box<dyn Prepared>, ListenError> {
    let md = &spec.cfg.metadata;
    let opts = PhtOptions::from_metadata(md)?;
    let with_tls = spec.kind == "phts";
    if opts.http3 && !with_tls {
        return Err(ListenError::Option(http3_needs_tls()));
    }
    let h3 = match opts.http3 {
        false => None,
        true => Some(http3::H3Side::prepare(spec, &opts)?),
    };
    let tls = match with_tls {
        true => Some(super::server_tls(spec, &[b"h2", b"http/1.1"])?.into()),
        false => None,
    };
    Ok(Box::new(Plan {
        addr: spec.addr.to_string(),
        service: spec.service.to_string(),
        gate: Gate::from_metadata(md, spec.service)?,
        opts,
        tls,
        h3,
    }))
}

impl Prepared for Plan {
    fn bind(self: Box<Self>, shutdown: CancellationToken) -> Bound {
        Box::pin(async move {
            let p = *self;
            let l = bind(&p.addr, p.opts, p.tls, p.gate, p.h3, &p.service, shutdown).await?;
            Ok(Box::new(l) as _)
        })
    }
}

/// Binds `addr` and serves PHT on it (over TLS with `tls`: `phts`) until `shutdown`;
/// tunnels come out of the returned listener. With `h3`, the same port number on UDP
/// serves HTTP/3 into the same tunnels (`http3=true`), so a browser that moves to HTTP/3
/// halfway through a tunnel finds it there.
async fn bind(
    addr: &str,
    mut opts: PhtOptions,
    tls: Option<TlsAcceptor>,
    gate: Gate,
    h3: Option<http3::H3Side>,
    service: &str,
    shutdown: CancellationToken,
) -> Result<QueuedListener, ListenError> {
    let tcp = super::bind_tcp(addr).await?;
    let local = tcp.local_addr().map_err(|source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let h3 = match h3 {
        None => None,
        Some(side) => {
            let endpoint = side.endpoint(&local.to_string()).await?;
            if opts.alt_svc.is_none() {
                let v = format!("h3=\":{}\"; ma=86400", local.port());
                opts.alt_svc = http::HeaderValue::from_str(&v).ok();
            }
            info!(service, "HTTP/3 on udp {local}, with the same tunnels");
            Some((endpoint, side))
        }
    };
    let (tx, rx) = mpsc::channel(opts.backlog);
    let registry = Arc::new(Registry::new(opts, tx, service.to_string()));
    // The HTTP side keeps serving while draining: the open tunnels' requests still come.
    let drain: Arc<dyn super::Drain> = registry.clone();
    tokio::spawn(reap_loop(registry.clone(), shutdown.clone()));
    let (drained, drained_rx) = oneshot::channel();
    tokio::spawn(async move {
        let tcp_side = serve(tcp, tls, gate, registry.clone(), shutdown.clone());
        match h3 {
            None => tcp_side.await,
            Some((endpoint, side)) => {
                let handshake = side.quic.handshake_timeout;
                let udp_side = http3::serve(endpoint, side.gate, registry, handshake, shutdown);
                futures::future::join(tcp_side, udp_side).await;
            }
        }
        let _ = drained.send(());
    });
    Ok(QueuedListener::new(rx, local, "pht")
        .with_drained(drained_rx)
        .with_drain(drain))
}

/// How long shutdown waits for connections to finish their responses: PHT/2 pulls send
/// their RESET frames, then the connections close.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Drives a hyper connection; on `shutdown` it finishes the responses in flight (and
/// takes no new requests) instead of being dropped mid-response.
async fn until_drained<F: Future>(
    mut conn: std::pin::Pin<&mut F>,
    shutdown: &CancellationToken,
    graceful: impl FnOnce(std::pin::Pin<&mut F>),
) -> F::Output {
    tokio::select! {
        r = conn.as_mut() => return r,
        _ = shutdown.cancelled() => {}
    }
    graceful(conn.as_mut());
    conn.await
}

/// The HTTP/2 client preface: a plain connection that starts with it speaks h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plain connection speaks HTTP/2 (prior knowledge), from its first bytes, read
/// without consuming them. `None`: closed, or nothing decisive within `limit`.
async fn speaks_h2(stream: &tokio::net::TcpStream, limit: Duration) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // Part of the preface so far: wait a little for the rest (peek does not wait for
        // more than what is already there).
        tokio::time::sleep(Duration::from_millis(5)).await;
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
    }
}

async fn serve(
    tcp: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    gate: Gate,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let o = &registry.opts;
    let mut h1 = hyper::server::conn::http1::Builder::new();
    // The timer starts whenever the connection waits for a request head: from the first
    // byte of a new connection on, and again between requests.
    h1.timer(TokioTimer::new())
        .header_read_timeout(o.header_timeout);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(o.max_streams)
        .initial_stream_window_size(pht_client::h2::STREAM_WINDOW)
        .initial_connection_window_size(pht_client::h2::CONN_WINDOW)
        .max_frame_size(pht_client::h2::MAX_FRAME)
        .keep_alive_interval(pht_client::h2::KEEP_ALIVE);
    let (header_timeout, handshake_timeout) = (o.header_timeout, o.handshake_timeout);
    let connections = TaskTracker::new();
    loop {
        let Some((stream, peer)) = accept_tcp(&tcp, &gate, &shutdown).await else {
            break;
        };
        debug!(service = %registry.service, %peer, "pht connection accepted");
        let registry = registry.clone();
        let (h1, h2) = (h1.clone(), h2.clone());
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let registry = registry.clone();
                    let req = req.map(|b| b.map_err(io::Error::other).boxed_unsync());
                    async move { Ok::<_, io::Error>(routes::route(req, &registry, peer).await) }
                });
            // HTTP/1 and HTTP/2 connections are different types with the same shutdown.
            macro_rules! drive {
                ($builder:expr, $io:expr) => {{
                    let conn = $builder.serve_connection(TokioIo::new($io), svc);
                    tokio::pin!(conn);
                    until_drained(conn.as_mut(), &shutdown, |c| c.graceful_shutdown()).await
                }};
            }
            let served = match tls {
                None => {
                    let h2_or_not = tokio::select! {
                        r = speaks_h2(stream.tcp(), header_timeout) => r,
                        _ = shutdown.cancelled() => None,
                    };
                    match h2_or_not {
                        None => {
                            debug!(%peer, "no request within headerTimeout: closed");
                            return;
                        }
                        Some(true) => drive!(h2, stream),
                        Some(false) => drive!(h1, stream),
                    }
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                                drive!(h2, s)
                            } else {
                                drive!(h1, s)
                            }
                        }
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
    stopped(&registry, &connections, "pht").await;
}

/// After a serving loop's shutdown: resets the tunnels (PHT/2 pulls send their RESET
/// frames) and gives the connections up to [`DRAIN_LIMIT`] to say so.
async fn stopped(registry: &Registry, connections: &TaskTracker, kind: &str) {
    info!(service = %registry.service, "{kind} listener stopped; resetting tunnels");
    registry.close_all();
    connections.close();
    if tokio::time::timeout(DRAIN_LIMIT, connections.wait())
        .await
        .is_err()
    {
        debug!(service = %registry.service, open = connections.len(), "{kind} connections still open after the drain limit");
    }
}

impl super::Drain for Registry {
    fn drain(&self) {
        Registry::drain(self);
    }
    fn busy(&self) -> usize {
        Registry::busy(self)
    }
}

async fn reap_loop(registry: Arc<Registry>, shutdown: CancellationToken) {
    let o = &registry.opts;
    let period = (o.idle_timeout.min(o.resume_grace) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => registry.reap(),
        }
    }
}
