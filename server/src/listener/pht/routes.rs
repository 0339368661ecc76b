//! The three PHT endpoints: authorize, push, pull.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use percent_encoding::percent_decode_str;
use pht_core::frame::{Limits, ResetCode};
use pht_core::token_prefix;
use tracing::debug;

use super::client_addr::client_addr;
use super::pipe::Cause;
use super::registry::{Lookup, Refusal, Registry, ServerTunnel};
use super::v2::{self, Version};
use crate::metrics::{PhtKind, RefusalReason};

/// Response bodies; an error aborts the response, which is how a broken tunnel reaches
/// the client (a PHT/1 pull has no in-band error).
pub(super) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Request bodies, whatever carried them: hyper (HTTP/1.1, HTTP/2) or h3 (HTTP/3).
pub(super) type ReqBody = UnsyncBoxBody<Bytes, io::Error>;

pub(super) fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// Decoded push bytes handed to the handler at a time while a large body is still
/// arriving: the handler's largest write, so that a slice is one system call.
pub(super) const PUSH_SLICE: usize = 256 * 1024;

/// Bytes of pull lines gathered into one response chunk when the handler has more ready.
pub(super) const PULL_CHUNK: usize = 256 * 1024;

/// Longest token accepted in a query string.
const MAX_TOKEN_LEN: usize = 256;

pub(super) fn text(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(msg.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Routes one request: exact paths only, as gost's ServeMux does. Each answer is
/// counted when metrics are on (kind, status, push time, refusal reason).
pub(super) async fn route(
    req: Request<ReqBody>,
    reg: &Arc<Registry>,
    peer: SocketAddr,
) -> Response<Body> {
    let mut resp = route_counted(req, reg, peer).await;
    if let Some(alt) = &reg.opts.alt_svc {
        resp.headers_mut().insert(header::ALT_SVC, alt.clone());
    }
    resp
}

async fn route_counted(
    req: Request<ReqBody>,
    reg: &Arc<Registry>,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(m) = &reg.metrics else {
        return route_cors(req, reg, peer).await;
    };
    let path = req.uri().path();
    let o = &reg.opts;
    let kind = if path == o.authorize_path {
        PhtKind::Authorize
    } else if path == o.push_path {
        PhtKind::Push
    } else if path == o.pull_path {
        PhtKind::Pull
    } else {
        PhtKind::Other
    };
    let started = std::time::Instant::now();
    let resp = route_cors(req, reg, peer).await;
    let reason = resp.extensions().get::<RefusalReason>().copied();
    m.answered(kind, resp.status(), started.elapsed(), reason);
    resp
}

async fn route_cors(
    req: Request<ReqBody>,
    reg: &Arc<Registry>,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(cors) = &reg.opts.cors else {
        return route_pht(req, reg, peer).await;
    };
    let o = &reg.opts;
    let path = req.uri().path();
    let known = path == o.authorize_path || path == o.push_path || path == o.pull_path;
    if req.method() == Method::OPTIONS && known {
        debug!(service = %reg.service, %peer, path, "CORS preflight");
        return cors.preflight(req.headers());
    }
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = route_pht(req, reg, peer).await;
    cors.decorate(origin.as_ref(), &mut resp);
    resp
}

async fn route_pht(req: Request<ReqBody>, reg: &Arc<Registry>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path();
    let o = &reg.opts;
    let client = client_addr(req.headers(), peer.ip(), &o.trusted_proxies);
    let peer = Peer { addr: peer, client };
    let version = Version::of(req.uri().query().unwrap_or(""));
    if path == o.authorize_path {
        authorize(reg, &peer, version)
    } else if path == o.push_path {
        if req.method() != Method::POST {
            return text(StatusCode::BAD_REQUEST, "push must be POST\n");
        }
        let idle = o.header_timeout;
        let req = req.map(|b| super::stall::StallGuard::new(b, idle).boxed_unsync());
        match (token_of(&req), version) {
            (Ok(token), Version::V1) => push(req, reg, &token, &peer).await,
            (Ok(token), Version::V2) => v2::push(req, reg, &token, &peer).await,
            (Err(r), _) => r,
        }
    } else if path == o.pull_path {
        if req.method() != Method::GET {
            return text(StatusCode::BAD_REQUEST, "pull must be GET\n");
        }
        match (token_of(&req), version) {
            (Ok(token), Version::V1) => pull(reg, &token, &peer).await,
            (Ok(token), Version::V2) => {
                let query = req.uri().query().unwrap_or("");
                v2::pull(reg, &token, &peer, query).await
            }
            (Err(r), _) => r,
        }
    } else {
        text(StatusCode::NOT_FOUND, "404 page not found\n")
    }
}

#[allow(clippy::result_large_err)]
fn token_of(req: &Request<ReqBody>) -> Result<String, Response<Body>> {
    let query = req.uri().query().unwrap_or("");
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .ok_or_else(|| text(StatusCode::BAD_REQUEST, "missing token\n"))?;
    let token = percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .map(|t| t.into_owned())
        .map_err(|_| text(StatusCode::BAD_REQUEST, "invalid token\n"))?;
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(text(StatusCode::BAD_REQUEST, "invalid token\n"));
    }
    Ok(token)
}

/// The TCP peer of a request, and the client address its limits count against.
pub(super) struct Peer {
    pub addr: SocketAddr,
    pub client: IpAddr,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.client == self.addr.ip() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} (via {})", self.client, self.addr)
        }
    }
}

pub(super) fn refused(r: Refusal) -> Response<Body> {
    let status = match r {
        Refusal::Draining => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::TOO_MANY_REQUESTS,
    };
    let mut resp = text(status, r.body());
    resp.extensions_mut().insert(RefusalReason(r.limit()));
    resp
}

/// A request of one version on a tunnel started by the other.
pub(super) fn version_mismatch() -> Response<Body> {
    text(StatusCode::BAD_REQUEST, "version mismatch\n")
}

fn authorize(reg: &Registry, peer: &Peer, version: Version) -> Response<Body> {
    match reg.reserve(peer.client) {
        Ok(token) => {
            let body = match version {
                Version::V1 => format!("token={token}"),
                Version::V2 => {
                    let o = &reg.opts;
                    let limits = Limits {
                        heartbeat: o.heartbeat,
                        grace: o.resume_grace,
                        replay: o.replay_buffer,
                        reorder: o.reorder_buffer,
                        max_push: o.max_push_body,
                    };
                    format!("token={token}{}", limits.to_query())
                }
            };
            let mut r = text(StatusCode::OK, "");
            *r.body_mut() = full(Bytes::from(body));
            r
        }
        Err(why) => refused(why),
    }
}

/// Why a push failed, and what becomes of the tunnel.
struct PushFailure {
    status: StatusCode,
    body: &'static str,
    /// Bytes of this push may have reached the target: the stream has a gap, so the
    /// tunnel is reset. Otherwise nothing was taken and the client may send them again.
    reset: Option<Cause>,
}

const PUSH_BROKEN: Cause = Cause {
    code: ResetCode::PushBroken,
    reason: "push body broken",
};
const BAD_BASE64: Cause = Cause {
    code: ResetCode::PushBroken,
    reason: "invalid base64 in push",
};
const TOO_LARGE_LATE: Cause = Cause {
    code: ResetCode::PushBroken,
    reason: "push body too large after part of it was delivered",
};
pub(super) const PUSH_STALLED: Cause = Cause {
    code: ResetCode::PushStalled,
    reason: "handler did not take pushed data in time",
};

async fn push(req: Request<ReqBody>, reg: &Registry, token: &str, peer: &Peer) -> Response<Body> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let reset = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == pht_core::RESET_PARAM));
    let empty = declared == Some(0);
    // An empty POST is a close (or, with rst=1, a reset): never create a tunnel for it.
    let t = match reg
        .lookup(token, peer.addr, peer.client, !empty, Version::V1)
        .await
    {
        Lookup::Live(t) if t.v2.is_some() => return version_mismatch(),
        Lookup::Live(t) => t,
        Lookup::Closed { .. } | Lookup::Unknown if empty => return text(StatusCode::OK, ""),
        Lookup::Closed { .. } | Lookup::Unknown => {
            return text(StatusCode::GONE, "tunnel closed\n");
        }
        Lookup::Refused(why) => return refused(why),
    };
    if reset {
        reg.abort(token, ResetCode::ClientReset, "reset by client");
        return text(StatusCode::OK, "");
    }
    t.touch();
    let max = reg.opts.max_push_body;
    if declared.is_some_and(|n| n > max as u64) {
        // Refused unread: nothing reached the target, the tunnel lives on, and our client
        // sends the same bytes again in smaller pushes.
        debug!(token = token_prefix(token), %peer, declared, max, "push body too large: refused unread");
        return text(StatusCode::PAYLOAD_TOO_LARGE, "push body too large\n");
    }
    let result = tokio::select! {
        r = deliver(req.into_body(), &t, reg, token, peer) => r,
        // Reset or closed meanwhile (a silent push connection, say): stop reading.
        _ = t.cancel.cancelled() => Err(PushFailure {
            status: StatusCode::GONE,
            body: "tunnel closed\n",
            reset: None,
        }),
    };
    match result {
        Ok(true) => {
            t.touch();
            text(StatusCode::OK, "")
        }
        Ok(false) => {
            reg.close(token, "closed by client");
            text(StatusCode::OK, "")
        }
        Err(r) => {
            if let Some(c) = r.reset {
                reg.abort(token, c.code, c.reason);
            }
            text(r.status, r.body)
        }
    }
}

/// Decodes a push body as it arrives and hands it to the handler in slices, so the
/// handler forwards the start of a large push while the rest is still on the wire.
/// `Ok(false)`: the body carried no data line (a close).
async fn deliver(
    mut body: ReqBody,
    t: &ServerTunnel,
    reg: &Registry,
    token: &str,
    peer: &Peer,
) -> Result<bool, PushFailure> {
    let max = reg.opts.max_push_body;
    let mut decoder = pht_core::PushDecoder::default();
    let mut out = Vec::new();
    let mut received = 0usize;
    let mut delivered = false;
    let refuse = |delivered: bool, status, body, cause| PushFailure {
        status,
        body,
        reset: delivered.then_some(cause),
    };
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                debug!(token = token_prefix(token), %peer, "push body: {e}");
                // Cut mid-body, or silent past `headerTimeout`: whatever part came
                // through is a gap in the stream now.
                let (status, body) = super::stall::body_failure(&e);
                return Err(PushFailure {
                    status,
                    body,
                    reset: Some(PUSH_BROKEN),
                });
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len();
        if received > max {
            return Err(refuse(
                delivered,
                StatusCode::PAYLOAD_TOO_LARGE,
                "push body too large\n",
                TOO_LARGE_LATE,
            ));
        }
        if let Err(e) = decoder.feed(&data, &mut out) {
            debug!(token = token_prefix(token), %peer, "push: {e}");
            return Err(PushFailure {
                status: StatusCode::BAD_REQUEST,
                body: "invalid base64\n",
                reset: Some(BAD_BASE64),
            });
        }
        if out.len() >= PUSH_SLICE {
            write_into(t, std::mem::take(&mut out), reg.opts.push_timeout).await?;
            delivered = true;
        }
    }
    let had_data = decoder.finish(&mut out).map_err(|e| {
        debug!(token = token_prefix(token), %peer, "push: {e}");
        PushFailure {
            status: StatusCode::BAD_REQUEST,
            body: "invalid base64\n",
            reset: Some(BAD_BASE64),
        }
    })?;
    if !out.is_empty() {
        write_into(t, out, reg.opts.push_timeout).await?;
    }
    Ok(had_data)
}

async fn write_into(t: &ServerTunnel, data: Vec<u8>, limit: Duration) -> Result<(), PushFailure> {
    match tokio::time::timeout(limit, t.pipe.push(Bytes::from(data))).await {
        Ok(Ok(())) => Ok(()),
        // The handler has finished (its far end closed) or the tunnel was reset. What it
        // wrote last stays queued for the pull: a refusal reaches the client that way.
        Ok(Err(_)) => Err(PushFailure {
            status: StatusCode::GONE,
            body: "tunnel closed\n",
            reset: None,
        }),
        Err(_) => Err(PushFailure {
            status: StatusCode::GONE,
            body: "tunnel closed\n",
            reset: Some(PUSH_STALLED),
        }),
    }
}

async fn pull(reg: &Arc<Registry>, token: &str, peer: &Peer) -> Response<Body> {
    let t = match reg
        .lookup(token, peer.addr, peer.client, true, Version::V1)
        .await
    {
        Lookup::Live(t) if t.v2.is_some() => return version_mismatch(),
        Lookup::Live(t) => t,
        // A reset tunnel: a pull that comes again (a browser retries a GET whose
        // connection closed before any answer) must not read an error as an end.
        Lookup::Closed { reset: true } => return text(StatusCode::GONE, "tunnel was reset\n"),
        // A closed token: an empty, finished 200 is what every gost client reads as EOF.
        Lookup::Closed { reset: false } | Lookup::Unknown => {
            return stream_response(full(Bytes::new()));
        }
        Lookup::Refused(why) => return refused(why),
    };
    if t.pull_busy.swap(true, Ordering::AcqRel) {
        return text(
            StatusCode::CONFLICT,
            "another pull is active for this token\n",
        );
    }
    t.pull_attached.store(true, Ordering::Release);
    t.touch();
    if let Some(m) = &reg.metrics {
        m.pull(false);
    }
    let state = PullState {
        max: reg.opts.pull_line_payload,
        heartbeat: reg.opts.heartbeat,
        tunnel: t,
        registry: reg.clone(),
        ended: false,
    };
    let lines = futures::stream::unfold(state, |mut st| async move {
        let item = st.next_line().await?;
        Some((item.map(Frame::data), st))
    });
    stream_response(StreamBody::new(lines.boxed()).boxed_unsync())
}

pub(super) fn stream_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

struct PullState {
    max: usize,
    heartbeat: Duration,
    tunnel: Arc<ServerTunnel>,
    registry: Arc<Registry>,
    /// The response reached its end (clean or error) rather than being dropped.
    ended: bool,
}

impl PullState {
    /// The next chunk of the response; an error aborts it so the client cannot take a
    /// broken tunnel for a finished one.
    async fn next_line(&mut self) -> Option<io::Result<Bytes>> {
        if self.ended {
            return None;
        }
        let item = self.next_item().await;
        if !matches!(item, Some(Ok(_))) {
            self.ended = true;
        }
        item
    }

    async fn next_item(&mut self) -> Option<io::Result<Bytes>> {
        tokio::select! {
            biased;
            _ = self.tunnel.cancel.cancelled() => {
                let why = self.tunnel.pipe.aborted()?;
                Some(Err(io::Error::new(io::ErrorKind::ConnectionReset, why)))
            }
            r = tokio::time::timeout(self.heartbeat, self.tunnel.pipe.pull(self.max)) => match r {
                Err(_) => Some(Ok(Bytes::from_static(b"\n"))),
                Ok(Err(e)) => Some(Err(e)),
                Ok(Ok(None)) => None,
                Ok(Ok(Some(data))) => {
                    // Lines stay under the gost client's limit, but whatever else is
                    // already waiting goes out in the same chunk: one write, not many.
                    let mut chunk = Vec::with_capacity(data.len().div_ceil(3) * 4 + 1);
                    pht_core::encode_pull_line(&data, &mut chunk);
                    while chunk.len() < PULL_CHUNK {
                        let Some(more) = self.tunnel.pipe.try_pull(self.max) else { break };
                        pht_core::encode_pull_line(&more, &mut chunk);
                    }
                    Some(Ok(Bytes::from(chunk)))
                }
            },
        }
    }
}

impl Drop for PullState {
    /// The pull is over. Run to its end, the tunnel is finished; dropped before that, the
    /// client's connection broke, and PHT/1 cannot resume a pull: the tunnel is reset, so
    /// the handler's target sees an error rather than a clean end.
    fn drop(&mut self) {
        self.tunnel.pull_attached.store(false, Ordering::Release);
        self.tunnel.pull_busy.store(false, Ordering::Release);
        match (self.ended, self.tunnel.pipe.cause()) {
            (true, None) => self.registry.close(&self.tunnel.token, "pull ended"),
            // The handler's target failed: the tombstone must say so.
            (_, Some(c)) => self.registry.abort(&self.tunnel.token, c.code, c.reason),
            (false, None) => {
                self.registry
                    .abort(&self.tunnel.token, ResetCode::Other, "pull broken")
            }
        }
    }
}
