//! The three PHT endpoints: authorize, push, pull.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use percent_encoding::percent_decode_str;
use pht_client::logging::token_prefix;
use tracing::debug;

use super::registry::{Lookup, Registry, ServerTunnel};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Decoded push bytes handed to the handler at a time while a large body is still arriving.
const PUSH_SLICE: usize = 128 * 1024;

/// Bytes of pull lines gathered into one response chunk when the handler has more ready.
const PULL_CHUNK: usize = 256 * 1024;

/// Longest token accepted in a query string.
const MAX_TOKEN_LEN: usize = 256;

fn text(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(msg.as_bytes())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Routes one request: exact paths only, as gost's ServeMux does.
pub(super) async fn route(
    req: Request<Incoming>,
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

async fn route_pht(
    req: Request<Incoming>,
    reg: &Arc<Registry>,
    peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path();
    let o = &reg.opts;
    if path == o.authorize_path {
        authorize(reg, peer).await
    } else if path == o.push_path {
        if req.method() != Method::POST {
            return text(StatusCode::BAD_REQUEST, "push must be POST\n");
        }
        match token_of(&req) {
            Ok(token) => push(req, reg, &token, peer).await,
            Err(r) => r,
        }
    } else if path == o.pull_path {
        if req.method() != Method::GET {
            return text(StatusCode::BAD_REQUEST, "pull must be GET\n");
        }
        match token_of(&req) {
            Ok(token) => pull(reg, &token, peer).await,
            Err(r) => r,
        }
    } else {
        text(StatusCode::NOT_FOUND, "404 page not found\n")
    }
}

#[allow(clippy::result_large_err)]
fn token_of(req: &Request<Incoming>) -> Result<String, Response<Body>> {
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

async fn authorize(reg: &Registry, peer: SocketAddr) -> Response<Body> {
    let token = pht_core::mint_token();
    match reg.lookup(&token, peer, true).await {
        Lookup::Live(_) => {
            let mut r = text(StatusCode::OK, "");
            *r.body_mut() = Full::new(Bytes::from(format!("token={token}"))).boxed_unsync();
            r
        }
        _ => text(StatusCode::TOO_MANY_REQUESTS, "tunnel queue full\n"),
    }
}

async fn push(
    req: Request<Incoming>,
    reg: &Registry,
    token: &str,
    peer: SocketAddr,
) -> Response<Body> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // An empty POST is a close: never create a tunnel just to close it.
    let t = match reg.lookup(token, peer, declared != Some(0)).await {
        Lookup::Live(t) => t,
        Lookup::Closed | Lookup::Unknown if declared == Some(0) => return text(StatusCode::OK, ""),
        Lookup::Closed | Lookup::Unknown => return text(StatusCode::GONE, "tunnel closed\n"),
        Lookup::QueueFull => return text(StatusCode::TOO_MANY_REQUESTS, "tunnel queue full\n"),
    };
    t.touch();
    let max = reg.opts.max_push_body;
    if declared.is_some_and(|n| n > max as u64) {
        // Refused without reading: the data is lost, so the stream is broken for good.
        reg.close(token, "push body too large");
        return text(StatusCode::PAYLOAD_TOO_LARGE, "push body too large\n");
    }
    // Decoded as it arrives and handed on in slices, so the handler forwards the start of
    // a large push while the rest is still on the wire.
    let mut body = req.into_body();
    let mut decoder = pht_core::PushDecoder::default();
    let mut out = Vec::new();
    let mut received = 0usize;
    let mut failure = None;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                debug!(token = token_prefix(token), %peer, "push body: {e}");
                failure = Some((
                    StatusCode::BAD_REQUEST,
                    "push body broken",
                    "push body broken\n",
                ));
                break;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len();
        if received > max {
            failure = Some((
                StatusCode::PAYLOAD_TOO_LARGE,
                "push body too large",
                "push body too large\n",
            ));
            break;
        }
        if let Err(e) = decoder.feed(&data, &mut out) {
            debug!(token = token_prefix(token), %peer, "push: {e}");
            failure = Some((
                StatusCode::BAD_REQUEST,
                "invalid base64 in push",
                "invalid base64\n",
            ));
            break;
        }
        if out.len() >= PUSH_SLICE {
            if let Err(reason) =
                write_into(&t, std::mem::take(&mut out), reg.opts.push_timeout).await
            {
                reg.close(token, reason);
                return text(StatusCode::GONE, "tunnel closed\n");
            }
        }
    }
    let had_data = match failure {
        Some(_) => false,
        None => match decoder.finish(&mut out) {
            Ok(had) => had,
            Err(e) => {
                debug!(token = token_prefix(token), %peer, "push: {e}");
                failure = Some((
                    StatusCode::BAD_REQUEST,
                    "invalid base64 in push",
                    "invalid base64\n",
                ));
                false
            }
        },
    };
    if let Some((status, reason, body)) = failure {
        // PHT/1 cannot resend: the stream has a gap now, so the tunnel ends.
        reg.close(token, reason);
        return text(status, body);
    }
    if !had_data {
        reg.close(token, "closed by client");
        return text(StatusCode::OK, "");
    }
    if !out.is_empty() {
        if let Err(reason) = write_into(&t, out, reg.opts.push_timeout).await {
            reg.close(token, reason);
            return text(StatusCode::GONE, "tunnel closed\n");
        }
    }
    t.touch();
    text(StatusCode::OK, "")
}

async fn write_into(t: &ServerTunnel, data: Vec<u8>, limit: Duration) -> Result<(), &'static str> {
    let write = async {
        t.pipe
            .push(Bytes::from(data))
            .await
            .map_err(|_| "handler closed its end")
    };
    tokio::select! {
        _ = t.cancel.cancelled() => Err("tunnel closed"),
        r = tokio::time::timeout(limit, write) => r.unwrap_or(Err("handler did not take pushed data in time")),
    }
}

async fn pull(reg: &Arc<Registry>, token: &str, peer: SocketAddr) -> Response<Body> {
    let t = match reg.lookup(token, peer, true).await {
        Lookup::Live(t) => t,
        // A closed token: an empty, finished 200 is what every gost client reads as EOF.
        Lookup::Closed | Lookup::Unknown => {
            return stream_response(Full::new(Bytes::new()).boxed_unsync());
        }
        Lookup::QueueFull => return text(StatusCode::TOO_MANY_REQUESTS, "tunnel queue full\n"),
    };
    if t.pull_busy.swap(true, Ordering::AcqRel) {
        return text(
            StatusCode::CONFLICT,
            "another pull is active for this token\n",
        );
    }
    t.pull_attached.store(true, Ordering::Release);
    t.touch();
    let state = PullState {
        max: reg.opts.pull_line_payload,
        heartbeat: reg.opts.heartbeat,
        tunnel: t,
        registry: reg.clone(),
    };
    let lines = futures::stream::unfold(state, |mut st| async move {
        let line = st.next_line().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), st))
    });
    stream_response(StreamBody::new(lines.boxed()).boxed_unsync())
}

fn stream_response(body: Body) -> Response<Body> {
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
}

impl PullState {
    async fn next_line(&mut self) -> Option<Bytes> {
        tokio::select! {
            biased;
            _ = self.tunnel.cancel.cancelled() => None,
            r = tokio::time::timeout(self.heartbeat, self.tunnel.pipe.pull(self.max)) => match r {
                Err(_) => Some(Bytes::from_static(b"\n")),
                Ok(None) => None,
                Ok(Some(data)) => {
                    // Lines stay under the gost client's limit, but whatever else is
                    // already waiting goes out in the same chunk: one write, not many.
                    let mut chunk = Vec::with_capacity(data.len().div_ceil(3) * 4 + 1);
                    pht_core::encode_pull_line(&data, &mut chunk);
                    while chunk.len() < PULL_CHUNK {
                        let Some(more) = self.tunnel.pipe.try_pull(self.max) else { break };
                        pht_core::encode_pull_line(&more, &mut chunk);
                    }
                    Some(Bytes::from(chunk))
                }
            },
        }
    }
}

impl Drop for PullState {
    /// The pull ended (tunnel finished, or the client went away): PHT/1 cannot resume a
    /// broken pull, so the tunnel ends with it.
    fn drop(&mut self) {
        self.tunnel.pull_attached.store(false, Ordering::Release);
        self.tunnel.pull_busy.store(false, Ordering::Release);
        self.registry.close(&self.tunnel.token, "pull ended");
    }
}
