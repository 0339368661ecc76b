//! The `h3` listener: the PHT server over HTTP/3 (QUIC), with the same paths, bodies and
//! tunnels as `pht` and `phts`. Each request is a QUIC stream; the routes cannot tell
//! which HTTP version carried it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use pht_client::QuicOptions;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::registry::Registry;
use super::routes::{self, ReqBody};
use super::{DRAIN_LIMIT, PhtOptions, reap_loop};
use crate::config::{Metadata, MetadataError};
use crate::listener::{Bound, Gate, ListenError, Prepared, QueuedListener, Spec};

/// Reads gost's QUIC keys from listener metadata. `maxStreams` defaults to the PHT
/// listener's (20 000) rather than quic-go's 100: every open tunnel holds a stream.
pub fn quic_options(md: &Metadata, opts: &PhtOptions) -> Result<QuicOptions, MetadataError> {
    let mut q = QuicOptions {
        // gost's listener sends no keep-alive unless asked to.
        keep_alive: None,
        max_streams: opts.max_streams,
        ..QuicOptions::default()
    };
    if md.get_bool("keepalive")?.or(md.get_bool("keepAlive")?) == Some(true) {
        q.keep_alive = Some(
            md.get_duration("ttl")?
                .filter(|d| !d.is_zero())
                .unwrap_or(pht_client::quic::DEFAULT_KEEP_ALIVE),
        );
    }
    if let Some(d) = md
        .get_duration("handshakeTimeout")?
        .filter(|d| !d.is_zero())
    {
        q.handshake_timeout = d;
    }
    if let Some(d) = md.get_duration("maxIdleTimeout")?.filter(|d| !d.is_zero()) {
        q.max_idle_timeout = d;
    }
    Ok(q)
}

/// The HTTP/3 side of a listener: what it serves with, before it is bound.
pub struct H3Side {
    pub quic: QuicOptions,
    pub tls: Arc<rustls::ServerConfig>,
    /// `maxConns`, counted in QUIC connections.
    pub gate: Gate,
}

impl H3Side {
    /// Reads the QUIC keys and `maxConns`, and loads the certificate (ALPN h3).
    pub(in crate::listener) fn prepare(
        spec: &Spec<'_>,
        opts: &PhtOptions,
    ) -> Result<Self, ListenError> {
        let md = &spec.cfg.metadata;
        Ok(H3Side {
            quic: quic_options(md, opts)?,
            tls: crate::listener::server_tls(spec, &[b"h3"])?,
            gate: Gate::from_metadata(md, spec.service)?,
        })
    }

    /// Binds UDP `addr` (gost's `:port` form, or a host and port) with these settings.
    pub async fn endpoint(&self, addr: &str) -> Result<quinn::Endpoint, ListenError> {
        let bind_err = |source: io::Error| ListenError::Bind {
            addr: format!("{addr} (udp)"),
            source,
        };
        let mut tls = (*self.tls).clone();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls)).map_err(|e| {
                bind_err(io::Error::other(format!(
                    "TLS settings unusable for QUIC: {e}"
                )))
            })?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(self.quic.transport());
        udp_endpoint(addr, config).await.map_err(bind_err)
    }
}

/// Binds UDP `addr` and serves PHT over HTTP/3 on it until `shutdown` (the `h3` listener).
/// An h3 listener's options: the PHT keys and its QUIC side.
struct Plan {
    addr: String,
    service: String,
    opts: PhtOptions,
    side: H3Side,
}

pub(in crate::listener) fn prepare(spec: &Spec<'_>) -> Result<Box<dyn Prepared>, ListenError> {
    let opts = PhtOptions::from_metadata(&spec.cfg.metadata)?;
    Ok(Box::new(Plan {
        addr: spec.addr.to_string(),
        service: spec.service.to_string(),
        side: H3Side::prepare(spec, &opts)?,
        opts,
    }))
}

impl Prepared for Plan {
    fn bind(self: Box<Self>, shutdown: CancellationToken) -> Bound {
        Box::pin(async move {
            let p = *self;
            let l = bind(&p.addr, p.opts, p.side, &p.service, shutdown).await?;
            Ok(Box::new(l) as _)
        })
    }
}

async fn bind(
    addr: &str,
    opts: PhtOptions,
    side: H3Side,
    service: &str,
    shutdown: CancellationToken,
) -> Result<QueuedListener, ListenError> {
    let endpoint = side.endpoint(addr).await?;
    let local = endpoint.local_addr().map_err(|source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let (tx, rx) = mpsc::channel(opts.backlog);
    let registry = Arc::new(Registry::new(opts, tx, service.to_string()));
    let drain: Arc<dyn crate::listener::Drain> = registry.clone();
    tokio::spawn(reap_loop(registry.clone(), shutdown.clone()));
    let (drained, drained_rx) = oneshot::channel();
    let handshake = side.quic.handshake_timeout;
    tokio::spawn(async move {
        serve(endpoint, side.gate, registry, handshake, shutdown).await;
        let _ = drained.send(());
    });
    Ok(QueuedListener::new(rx, local, "h3")
        .with_drained(drained_rx)
        .with_drain(drain))
}

/// gost's `:port` is every interface: `[::]` (both families on Linux), else IPv4.
async fn udp_endpoint(addr: &str, config: quinn::ServerConfig) -> io::Result<quinn::Endpoint> {
    let candidates: Vec<SocketAddr> = if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad port"))?;
        vec![
            SocketAddr::from(([0u16; 8], port)),
            SocketAddr::from(([0u8; 4], port)),
        ]
    } else {
        tokio::net::lookup_host(addr).await?.collect()
    };
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
    for a in candidates {
        match quinn::Endpoint::server(config.clone(), a) {
            Ok(e) => return Ok(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Serves PHT over HTTP/3 from `endpoint` into `registry` until `shutdown`.
pub(super) async fn serve(
    endpoint: quinn::Endpoint,
    gate: Gate,
    registry: Arc<Registry>,
    handshake: Duration,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let peer = incoming.remote_address();
        let Some(permit) = gate.permit(peer) else {
            incoming.refuse();
            continue;
        };
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let conn = match tokio::time::timeout(handshake, incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    debug!(%peer, "QUIC handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "QUIC handshake timed out");
                    return;
                }
            };
            debug!(service = %registry.service, %peer, "h3 connection accepted");
            if let Err(e) = serve_connection(conn, registry, peer, shutdown).await {
                debug!(%peer, "h3 connection: {e}");
            }
        });
    }
    super::stopped(&registry, &connections, "h3").await;
    endpoint.close(0u32.into(), b"shutting down");
}

/// Takes requests until the client closes the connection. At shutdown it says GOAWAY and
/// lets the requests in flight finish (the pulls' RESET frames), bounded by the drain
/// limit, before the connection is dropped.
async fn serve_connection(
    conn: quinn::Connection,
    registry: Arc<Registry>,
    peer: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), h3::error::ConnectionError> {
    let mut h3 = h3::server::builder()
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await?;
    let requests = TaskTracker::new();
    loop {
        let resolver = tokio::select! {
            r = h3.accept() => match r? {
                Some(r) => r,
                None => break,
            },
            _ = shutdown.cancelled() => {
                let _ = h3.shutdown(0).await;
                requests.close();
                let _ = tokio::time::timeout(DRAIN_LIMIT, requests.wait()).await;
                return Ok(());
            }
        };
        let registry = registry.clone();
        requests.spawn(async move {
            let (req, stream) = match resolver.resolve_request().await {
                Ok(r) => r,
                Err(e) => {
                    debug!(%peer, "h3 request: {e}");
                    return;
                }
            };
            let (mut send, recv) = stream.split();
            let req = req.map(|()| request_body(recv));
            let resp = routes::route(req, &registry, peer).await;
            if let Err(e) = respond(&mut send, resp).await {
                debug!(%peer, "h3 response: {e}");
            }
        });
    }
    // The client closed the connection: its streams are gone with it.
    requests.close();
    requests.wait().await;
    Ok(())
}

type SendHalf = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;

/// A request's receiving side. Dropped before the request's end (a route that answers
/// without reading the body, such as a pull, or a push refused unread), it tells the
/// client to stop sending with H3_NO_ERROR, as RFC 9114 (4.1.2) asks, rather than the
/// bare code 0 quinn would use.
struct Receiving {
    recv: RecvHalf,
    ended: bool,
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if !self.ended {
            self.recv.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}

/// A request body read from its stream, as the routes take it.
fn request_body(recv: RecvHalf) -> ReqBody {
    let start = Receiving { recv, ended: false };
    let chunks = futures::stream::unfold(Some(start), |state| async move {
        let mut r = state?;
        match r.recv.recv_data().await {
            Ok(Some(mut b)) => {
                let data = b.copy_to_bytes(b.remaining());
                Some((Ok(Frame::data(data)), Some(r)))
            }
            Ok(None) => {
                r.ended = true;
                None
            }
            // The body broke off: one error, then the end.
            Err(e) => Some((Err(io::Error::other(e)), None)),
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}

/// Sends the head, then the body as it comes. A body that fails (a tunnel reset under a
/// PHT/1 pull) resets the stream, so the client sees a broken response, never an end.
async fn respond(
    send: &mut SendHalf,
    resp: Response<routes::Body>,
) -> Result<(), h3::error::StreamError> {
    let (parts, mut body) = resp.into_parts();
    send.send_response(Response::from_parts(parts, ())).await?;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    if !data.is_empty() {
                        send.send_data(data).await?;
                    }
                }
            }
            Err(e) => {
                debug!("h3 response body: {e}");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return Ok(());
            }
        }
    }
    send.finish().await
}
