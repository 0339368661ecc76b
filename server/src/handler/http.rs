//! HTTP/1.x proxy (`http`), wire.md §4.1–4.2.
//!
//! The first request head is read here, byte-exact answers included:
//! * `CONNECT host:port` → dial → `HTTP/1.1 200 Connection established` + `Proxy-Agent`,
//!   then a raw splice; bytes the client sent behind the head are not lost. Dial failure →
//!   503.
//! * With an authenticator, `Proxy-Authorization: Basic …` must match, else 407 and close.
//! * A head that is not HTTP/1.x, `PRI`, a non-`http` absolute URI, or an origin-form
//!   request without a usable `Host` → 400 and close.
//! * A target the service's bypass lists refuse → 403 with `Proxy-Agent` and close (CONNECT
//!   and every forwarded request alike).
//! * `X-Gost-Protocol: udp` → 403 (UDP over HTTP is not implemented; gost's answer when
//!   `udp` is off).
//! * Anything else is plain forward proxying: the connection is handed to hyper (the head
//!   replayed), and every request on it — keep-alive loop, no re-authentication, as gost —
//!   is re-issued in origin form on a fresh upstream connection with `Proxy-*`, `Gost-*`
//!   headers removed. `101 Switching Protocols` answers are spliced.
//!
//! Options: `readTimeout` (request head, and upstream response head; default 15s),
//! `proxyAgent` (`gost/3.0`), `authBasicRealm` (`gost`), and gost's probe resistance:
//! `probeResist` (`probe_resist`) `TYPE:VALUE` answers a failed authentication with a decoy
//! instead of 407, unless the request names a host of `knock` (comma list): `code:N` → an
//! empty `N` answer; `file:PATH` → `200` with the file as `text/html` (503 if it cannot be
//! read); `host:ADDR` → the request goes to `ADDR` (dialled directly) and its answer back
//! (503 if the dial fails). `web:URL` (gost fetches the page) is refused as not supported;
//! another type answers 503, as gost does.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderValue, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pht_runtime::splice;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::common::{Common, Counted, Rewind, send, send_and_close, within};
use super::{Handler, HandlerError};
use crate::config::ServiceConfig;
use crate::listener::{Accepted, Stream};
use crate::router::Router;

/// Longest request line accepted before giving up on the client.
const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Longest request head.
const MAX_HEAD: usize = 64 * 1024;

/// Headers never passed upstream.
const STRIPPED: [&str; 5] = [
    "proxy-authorization",
    "proxy-connection",
    "gost-target",
    "x-gost-target",
    "gost-record",
];

const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n";
const UDP_FORBIDDEN: &[u8] = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";

pub struct HttpHandler {
    common: Arc<Common>,
    proxy_agent: String,
    realm: String,
    probe_resist: Option<ProbeResist>,
}

/// gost's `probeResist`: what a client that fails authentication gets instead of 407.
#[derive(Debug, Clone, PartialEq)]
enum Decoy {
    /// An empty answer with this status (`None`: gost's 503 for a code that is not one).
    Code(Option<u16>),
    /// `200` with this file's content as `text/html`.
    File(String),
    /// The request is passed to this address and the answer back.
    Host(String),
    /// A type gost does not know: 503.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
struct ProbeResist {
    decoy: Decoy,
    /// Host names (lower case) whose requests get the 407 after all.
    knock: Vec<String>,
}

impl ProbeResist {
    fn from_common(c: &Common) -> Result<Option<Self>, HandlerError> {
        let Some(value) = c.text("probeResist").or_else(|| c.text("probe_resist")) else {
            return Ok(None);
        };
        // Without a `:` gost has no probe resistance.
        let Some((kind, arg)) = value.split_once(':') else {
            return Ok(None);
        };
        let decoy = match kind {
            "code" => Decoy::Code(arg.trim().parse().ok()),
            "file" => Decoy::File(arg.into()),
            "host" => Decoy::Host(arg.into()),
            "web" => {
                return Err(HandlerError::Invalid {
                    kind: c.kind.clone(),
                    reason: format!(
                        "probeResist {value:?}: web decoys are not supported (code:, file: and host: are)"
                    ),
                });
            }
            _ => Decoy::Other,
        };
        let knock = c
            .text("knock")
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Ok(Some(ProbeResist { decoy, knock }))
    }
}

/// The host name of a request's URL as Go parses it: CONNECT's authority, an absolute
/// URI's host, nothing for an origin-form request.
fn url_hostname(head: &Head) -> String {
    let authority = if head.method.eq_ignore_ascii_case("CONNECT") {
        head.target.as_str()
    } else if let Some((_, rest)) = head.target.split_once("://") {
        rest.split(['/', '?', '#']).next().unwrap_or("")
    } else {
        ""
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host.to_ascii_lowercase()
}

const DECOY_UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n";

impl HttpHandler {
    pub fn new(svc: &ServiceConfig, router: Router) -> Result<Self, HandlerError> {
        Self::with_common(Arc::new(Common::new(svc, router)?))
    }

    pub(super) fn with_common(common: Arc<Common>) -> Result<Self, HandlerError> {
        let proxy_agent = common
            .text("proxyAgent")
            .or_else(|| common.text("http.proxyAgent"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "gost/3.0".into());
        let realm = common
            .text("authBasicRealm")
            .or_else(|| common.text("http.authBasicRealm"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "gost".into());
        let probe_resist = ProbeResist::from_common(&common)?;
        Ok(HttpHandler {
            common,
            proxy_agent,
            realm,
            probe_resist,
        })
    }

    /// Answers a client that failed authentication: the decoy when `probeResist` is set
    /// and the request knocks on none of `knock`'s hosts, else 407. `raw` is everything
    /// read from the client so far (the request as it came).
    async fn refuse_unauthenticated(&self, stream: &mut Box<dyn Stream>, head: &Head, raw: &[u8]) {
        let pr = self
            .probe_resist
            .as_ref()
            .filter(|pr| !pr.knock.contains(&url_hostname(head)));
        let Some(pr) = pr else {
            send_and_close(stream, &self.auth_required(head)).await;
            return;
        };
        let answer = match &pr.decoy {
            Decoy::Code(Some(0)) => self.auth_required(head),
            Decoy::Code(Some(code)) => {
                let reason = StatusCode::from_u16(*code)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("status code {code}"));
                format!("HTTP/1.1 {code:03} {reason}\r\nConnection: close\r\n\r\n").into_bytes()
            }
            Decoy::File(path) => match tokio::fs::read(path).await {
                Ok(body) => {
                    let mut a = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\
                         Content-Type: text/html\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    a.extend_from_slice(&body);
                    a
                }
                Err(e) => {
                    warn!(service = %self.common.service, "http: probeResist file {path}: {e}");
                    DECOY_UNAVAILABLE.to_vec()
                }
            },
            Decoy::Host(addr) => {
                let dial = tokio::net::TcpStream::connect(addr.as_str());
                match within(Some(super::common::DEFAULT_READ_TIMEOUT), dial).await {
                    Ok(mut decoy) => {
                        if send(&mut decoy, raw).await.is_ok() {
                            let mut decoy: Box<dyn Stream> = Box::new(decoy);
                            let _ = splice(stream, &mut decoy).await;
                        }
                        return;
                    }
                    Err(e) => {
                        warn!(service = %self.common.service, "http: probeResist host {addr}: {e}");
                        DECOY_UNAVAILABLE.to_vec()
                    }
                }
            }
            Decoy::Code(None) | Decoy::Other => DECOY_UNAVAILABLE.to_vec(),
        };
        send_and_close(stream, &answer).await;
    }

    /// gost's answer to a target the service refuses.
    fn forbidden(&self) -> Vec<u8> {
        format!(
            "HTTP/1.1 403 Forbidden\r\nProxy-Agent: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.proxy_agent
        )
        .into_bytes()
    }

    fn auth_required(&self, head: &Head) -> Vec<u8> {
        let keep_alive = head
            .header("proxy-connection")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("keep-alive"));
        format!(
            "HTTP/1.1 407 Proxy Authentication Required\r\nConnection: close\r\n\
             Proxy-Authenticate: Basic realm=\"{}\"\r\n{}\r\n",
            self.realm,
            if keep_alive {
                "Proxy-Connection: close\r\n"
            } else {
                ""
            }
        )
        .into_bytes()
    }
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Judges a request line (`line` up to and including its `\n`): `METHOD target HTTP/1.x`.
fn parse_request_line(line: &[u8]) -> Result<(String, String), String> {
    let text = std::str::from_utf8(line).map_err(|_| "request line is not text".to_string())?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    // Without room for headers, a good line leaves httparse waiting for them, the method,
    // target and version parsed (leading blank lines, which httparse skips, never are).
    let mut req = httparse::Request::new(&mut []);
    match (req.parse(line), req.method, req.path, req.version) {
        (Ok(_), Some(method), Some(target), Some(_)) => {
            Ok((method.to_string(), target.to_string()))
        }
        _ => Err(format!(
            "malformed request line {:?}",
            text.chars().take(64).collect::<String>()
        )),
    }
}

/// Parses a complete request head (request line to blank line).
fn parse_head(head: &[u8]) -> Result<Head, String> {
    let line_len = head
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head.len(), |i| i + 1);
    let (method, target) = parse_request_line(&head[..line_len])?;
    // One slot a line: no head is refused for its number of headers.
    let lines = head.iter().filter(|&&b| b == b'\n').count();
    let mut headers = vec![httparse::EMPTY_HEADER; lines];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("request head incomplete".into()),
        Err(_)
            if head
                .windows(2)
                .any(|w| w[0] == b'\n' && matches!(w[1], b' ' | b'\t')) =>
        {
            return Err("obsolete header line folding".into());
        }
        Err(httparse::Error::HeaderName) => return Err("malformed header name".into()),
        Err(e) => return Err(format!("malformed header line: {e}")),
    }
    let headers = req
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value);
            (h.name.to_string(), value.trim().to_string())
        })
        .collect();
    Ok(Head {
        method,
        target,
        headers,
    })
}

/// Reads the first request head into `buf` (which may end up holding bytes past it).
/// `Ok(Err(reason))`: not an acceptable HTTP/1.x head.
async fn read_head(
    s: &mut Box<dyn Stream>,
    buf: &mut Vec<u8>,
) -> io::Result<Result<(Head, usize), String>> {
    let mut chunk = [0u8; 4096];
    // Where the next scans start: a head trickled a byte per read costs linear time, not
    // quadratic (the blank line that ends it is at most 4 bytes, so back up 3).
    let mut scanned: usize = 0;
    let mut line_checked = false;
    loop {
        let from = scanned.saturating_sub(3);
        if let Some(end) = pht_core::http_head_end(&buf[from..]) {
            let end = from + end;
            return Ok(parse_head(&buf[..end]).map(|h| (h, end)));
        }
        if !line_checked {
            match buf[scanned..].iter().position(|&b| b == b'\n') {
                // Judge the request line as soon as it is complete: garbage fails fast.
                Some(nl) => {
                    if let Err(e) = parse_request_line(&buf[..=scanned + nl]) {
                        return Ok(Err(e));
                    }
                    line_checked = true;
                }
                None if buf.len() > MAX_REQUEST_LINE => {
                    return Ok(Err("request line too long".into()));
                }
                None => {}
            }
        }
        scanned = buf.len();
        if buf.len() > MAX_HEAD {
            return Ok(Err("request head too long".into()));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                if buf.is_empty() {
                    "closed without a request"
                } else {
                    "closed in the middle of the request head"
                },
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `host` is a DNS name or an IP literal (IPv6 in brackets).
fn valid_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('.')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// `host[:port]` → `host:port` (port 80 when missing); `None` when it is not a valid
/// authority.
fn dial_addr(authority: &str) -> Option<String> {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if authority.starts_with('[') {
        match authority.rsplit_once("]:") {
            Some((h, p)) => (format!("{h}]"), Some(p)),
            None => (authority.to_string(), None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if !valid_host(&host) {
        return None;
    }
    let port = match port {
        None | Some("") => 80,
        Some(p) => p.parse::<u16>().ok()?,
    };
    Some(format!("{host}:{port}"))
}

/// Where a non-CONNECT request goes: `Some(host:port)` for an `http://` absolute URI or
/// an origin-form request with a usable Host; `None` → 400.
fn proxy_target(target: &str, host_header: Option<&str>) -> Option<String> {
    if let Some((scheme, rest)) = target.split_once("://") {
        if !scheme.eq_ignore_ascii_case("http") {
            return None;
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        return dial_addr(authority);
    }
    if target.starts_with('/') {
        return dial_addr(host_header?.trim());
    }
    None
}

fn basic_credentials(value: Option<&str>) -> (String, String) {
    value
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| STANDARD.decode(b64).ok())
        .and_then(|raw| {
            let s = String::from_utf8_lossy(&raw).into_owned();
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        })
        .unwrap_or_default()
}

impl Handler for HttpHandler {
    fn handle(&self, conn: Accepted) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let started = Instant::now();
            let Accepted {
                mut stream,
                peer,
                tag,
                ..
            } = conn;
            let tag_s = tag.unwrap_or_default();
            let tag = tag_s.as_str();
            let c = &self.common;

            let mut buf = Vec::with_capacity(1024);
            let (head, head_len) = match within(c.read_timeout, read_head(&mut stream, &mut buf))
                .await
            {
                Ok(Ok(h)) => h,
                Ok(Err(reason)) => {
                    send_and_close(&mut stream, BAD_REQUEST).await;
                    warn!(service = %c.service, %peer, token = tag, "http: bad request: {reason}");
                    return;
                }
                Err(e) => {
                    warn!(service = %c.service, %peer, token = tag, "http: reading request: {e}");
                    return;
                }
            };

            let is_connect = head.method.eq_ignore_ascii_case("CONNECT");
            let target = if is_connect {
                dial_addr(&head.target)
            } else {
                proxy_target(&head.target, head.header("host"))
            };
            let shown = target.clone().unwrap_or_else(|| head.target.clone());

            if c.auth.is_some() {
                let (u, p) = basic_credentials(head.header("proxy-authorization"));
                if !c.authenticate(&u, &p) {
                    self.refuse_unauthenticated(&mut stream, &head, &buf).await;
                    warn!(service = %c.service, %peer, token = tag, target = %shown, "http: authentication failed for user {u:?}");
                    return;
                }
            }
            let Some(target) = target.filter(|_| head.method != "PRI") else {
                send_and_close(&mut stream, BAD_REQUEST).await;
                warn!(service = %c.service, %peer, token = tag, "http: bad request: {} {}", head.method, head.target);
                return;
            };
            if is_connect && c.refuses(&target) {
                send_and_close(&mut stream, &self.forbidden()).await;
                warn!(service = %c.service, %peer, token = tag, %target, "http: CONNECT refused by bypass: 403");
                return;
            }
            if head
                .header("x-gost-protocol")
                .is_some_and(|v| v.eq_ignore_ascii_case("udp"))
            {
                send_and_close(&mut stream, UDP_FORBIDDEN).await;
                warn!(service = %c.service, %peer, token = tag, %target, "http: UDP is not supported");
                return;
            }

            if is_connect {
                let extra = buf.split_off(head_len);
                let mut upstream = match c.dial(&target).await {
                    Ok(u) => u,
                    Err(e) => {
                        let msg = format!(
                            "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
                             Proxy-Agent: {}\r\n\r\n",
                            self.proxy_agent
                        );
                        send_and_close(&mut stream, msg.as_bytes()).await;
                        crate::metrics::handler_error(&c.service);
                        warn!(service = %c.service, %peer, token = tag, %target, "http: dial failed: {e}");
                        return;
                    }
                };
                let ok = format!(
                    "HTTP/1.1 200 Connection established\r\nProxy-Agent: {}\r\n\r\n",
                    self.proxy_agent
                );
                if let Err(e) = send(&mut stream, ok.as_bytes()).await {
                    c.log_done(peer, tag, &target, 0, 0, started, Some(e));
                    return;
                }
                debug!(service = %c.service, %peer, token = tag, "{peer} <-> {target}");
                let mut client = Rewind::new(extra, stream);
                let (stats, err) = splice(&mut client, &mut upstream).await;
                c.log_done(peer, tag, &target, stats.a_to_b, stats.b_to_a, started, err);
                return;
            }

            // Plain proxying: hyper serves the connection, starting with the head we read.
            let (io, counters) = Counted::new(Rewind::new(buf, stream));
            let plain = Arc::new(Plain {
                common: c.clone(),
                proxy_agent: self.proxy_agent.clone(),
                peer,
                tag: tag.to_string(),
                upgrades: Mutex::new(Vec::new()),
            });
            let svc = {
                let plain = plain.clone();
                service_fn(move |req| {
                    let plain = plain.clone();
                    async move { Ok::<_, Infallible>(plain.forward(req).await) }
                })
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .title_case_headers(true)
                .preserve_header_case(true)
                .auto_date_header(false)
                .timer(TokioTimer::new())
                .header_read_timeout(c.read_timeout);
            let res = builder
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades()
                .await;
            let upgrades = std::mem::take(&mut *plain.upgrades.lock().unwrap());
            for u in upgrades {
                let _ = u.await;
            }
            let (input, output) = counters.get();
            let err = res.err().map(|e| io::Error::other(format!("http: {e}")));
            c.log_done(peer, tag, &target, input, output, started, err);
        })
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|n| match n {}).boxed()
}

/// A bodiless answer that ends the connection.
fn closing(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// One plain-proxy client connection.
struct Plain {
    common: Arc<Common>,
    proxy_agent: String,
    peer: SocketAddr,
    tag: String,
    /// Splices of upgraded (101) connections, awaited before the connection is logged.
    upgrades: Mutex<Vec<JoinHandle<()>>>,
}

impl Plain {
    async fn forward(&self, mut req: Request<Incoming>) -> Response<Body> {
        let c = &self.common;
        let (peer, tag) = (self.peer, self.tag.as_str());
        if req.method() == Method::CONNECT || req.method().as_str() == "PRI" {
            warn!(service = %c.service, %peer, token = tag, "http: {} inside a keep-alive connection", req.method());
            return closing(StatusCode::BAD_REQUEST);
        }
        let uri = req.uri().clone();
        let host_header = req
            .headers()
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let target = match uri.scheme_str() {
            Some(s) if !s.eq_ignore_ascii_case("http") => None,
            Some(_) => uri.authority().and_then(|a| dial_addr(a.as_str())),
            None => host_header.as_deref().and_then(|h| dial_addr(h.trim())),
        };
        let Some(target) = target else {
            warn!(service = %c.service, %peer, token = tag, "http: bad request: {} {uri}", req.method());
            return closing(StatusCode::BAD_REQUEST);
        };
        if c.refuses(&target) {
            warn!(service = %c.service, %peer, token = tag, %target, "http: {} {uri} refused by bypass: 403", req.method());
            let mut r = closing(StatusCode::FORBIDDEN);
            if let Ok(v) = HeaderValue::from_str(&self.proxy_agent) {
                r.headers_mut().insert("proxy-agent", v);
            }
            return r;
        }
        debug!(service = %c.service, %peer, token = tag, %target, "http: {} {uri}", req.method());

        // Rewrite into an origin-form request for the target.
        let upgrade = req
            .headers()
            .contains_key(UPGRADE)
            .then(|| hyper::upgrade::on(&mut req));
        if let Some(a) = uri.authority() {
            let host = a.as_str().rsplit('@').next().unwrap_or_default();
            if let Ok(v) = HeaderValue::from_str(host) {
                req.headers_mut().insert(HOST, v);
            }
        }
        for h in STRIPPED {
            req.headers_mut().remove(h);
        }
        if !req.headers().contains_key(CONNECTION) {
            req.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = path.parse().unwrap_or_else(|_| "/".parse().unwrap());
        *req.version_mut() = Version::HTTP_11;

        let fail = |what: &str, e: &dyn std::fmt::Display| {
            warn!(service = %c.service, %peer, token = tag, %target, "http: {what}: {e}");
            closing(StatusCode::SERVICE_UNAVAILABLE)
        };
        let upstream = match c.dial(&target).await {
            Ok(u) => u,
            Err(e) => {
                crate::metrics::handler_error(&c.service);
                return fail("dial failed", &e);
            }
        };
        let (mut sender, conn) = match hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .preserve_header_case(true)
            .handshake::<_, Incoming>(TokioIo::new(upstream))
            .await
        {
            Ok(x) => x,
            Err(e) => return fail("upstream handshake", &e),
        };
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!("http: upstream connection: {e}");
            }
        });
        let resp = match within(c.read_timeout, async {
            sender.send_request(req).await.map_err(io::Error::other)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => return fail("upstream request", &e),
        };
        let mut resp = resp.map(|b| b.boxed());
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                let task = tokio::spawn(async move {
                    match tokio::try_join!(client_side, upstream_side) {
                        Ok((a, b)) => {
                            let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                        }
                        Err(e) => debug!("http: upgrade failed: {e}"),
                    }
                });
                self.upgrades.lock().unwrap().push(task);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    const OK_200: &[u8] = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: gost/3.0\r\n\r\n";
    const REQ_407: &[u8] = b"HTTP/1.1 407 Proxy Authentication Required\r\nConnection: close\r\n\
        Proxy-Authenticate: Basic realm=\"gost\"\r\n\r\n";

    #[test]
    fn targets() {
        assert_eq!(dial_addr("example.com").as_deref(), Some("example.com:80"));
        assert_eq!(
            dial_addr("example.com:443").as_deref(),
            Some("example.com:443")
        );
        assert_eq!(dial_addr("[::1]").as_deref(), Some("[::1]:80"));
        assert_eq!(dial_addr("[::1]:8080").as_deref(), Some("[::1]:8080"));
        assert_eq!(dial_addr("u:p@h:81").as_deref(), Some("h:81"));
        assert_eq!(dial_addr("bad!"), None);
        assert_eq!(dial_addr("h:99999"), None);
        assert_eq!(dial_addr(""), None);
        assert_eq!(
            proxy_target("http://example.com/x?y", None).as_deref(),
            Some("example.com:80")
        );
        assert_eq!(proxy_target("https://example.com/", None), None);
        assert_eq!(
            proxy_target("/", Some("10.0.0.1:8080")).as_deref(),
            Some("10.0.0.1:8080")
        );
        assert_eq!(proxy_target("/", Some("bad!")), None);
        assert_eq!(proxy_target("/", None), None);
        assert_eq!(proxy_target("*", Some("h")), None);
    }

    #[test]
    fn heads() {
        let h = parse_head(b"CONNECT a:1 HTTP/1.1\r\nHost:  a:1 \r\nX-Empty:\n\r\n").unwrap();
        assert_eq!((h.method.as_str(), h.target.as_str()), ("CONNECT", "a:1"));
        assert_eq!(h.header("host"), Some("a:1"));
        assert_eq!(h.header("x-empty"), Some(""));
        // Any number of headers.
        let mut many = b"GET / HTTP/1.0\r\n".to_vec();
        for i in 0..500 {
            many.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many).unwrap().headers.len(), 500);
        // Non-ASCII text in the target is fine; control characters and a third space not.
        assert!(parse_head("GET /\u{e9} HTTP/1.1\r\n\r\n".as_bytes()).is_ok());
        for (head, why) in [
            (
                &b"\r\nGET / HTTP/1.1\r\n\r\n"[..],
                "malformed request line \"\"",
            ),
            (b"GET /\x7f HTTP/1.1\r\n\r\n", "malformed request line"),
            (b"GET / HTTP/1.1 \r\n\r\n", "malformed request line"),
            (b"GET / HTTP/2.0\r\n\r\n", "malformed request line"),
            (b"G(T / HTTP/1.1\r\n\r\n", "malformed request line"),
            (b"GET /\xff HTTP/1.1\r\n\r\n", "request line is not text"),
            (
                b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
                "obsolete header line folding",
            ),
            (b"GET / HTTP/1.1\r\nA b\r\n\r\n", "malformed header name"),
            (b"GET / HTTP/1.1\r\nA : b\r\n\r\n", "malformed header name"),
            (b"GET / HTTP/1.1\r\n: b\r\n\r\n", "malformed header name"),
        ] {
            let e = parse_head(head).unwrap_err();
            assert!(
                e.starts_with(why),
                "{e} for {}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn credentials() {
        assert_eq!(
            basic_credentials(Some("Basic dTpwOng=")),
            ("u".into(), "p:x".into())
        );
        assert_eq!(basic_credentials(Some("basic dTpw")), Default::default());
        assert_eq!(basic_credentials(Some("Basic !!")), Default::default());
        assert_eq!(basic_credentials(None), Default::default());
    }

    #[tokio::test]
    async fn connect_keeps_early_data() {
        let echo = echo_server().await;
        let mut c = start(build("http", None, &[]));
        let req = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\nearly bytes");
        c.write_all(req.as_bytes()).await.unwrap();
        assert_eq!(read_n(&mut c, OK_200.len()).await, OK_200);
        assert_eq!(read_n(&mut c, 11).await, b"early bytes");
        c.write_all(b" more").await.unwrap();
        assert_eq!(read_n(&mut c, 5).await, b" more");
    }

    #[tokio::test]
    async fn auth_407_and_success() {
        let echo = echo_server().await;
        let h = build("http", Some(("user", "pass")), &[]);
        let mut c = start(h.clone());
        c.write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(read_to_end(&mut c).await, REQ_407);

        // Wrong password, with Proxy-Connection: keep-alive (as gost's connector sends).
        let mut c = start(h.clone());
        let req = format!(
            "CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\nProxy-Authorization: Basic dXNlcjp4\r\n\
             Proxy-Connection: keep-alive\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.unwrap();
        assert_eq!(
            read_to_end(&mut c).await,
            b"HTTP/1.1 407 Proxy Authentication Required\r\nConnection: close\r\n\
              Proxy-Authenticate: Basic realm=\"gost\"\r\nProxy-Connection: close\r\n\r\n"
        );

        let mut c = start(h);
        let req = format!(
            "CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.unwrap();
        assert_eq!(read_n(&mut c, OK_200.len()).await, OK_200);
    }

    /// gost's `probeResist`: a decoy for a failed authentication, 407 for a knock host.
    #[tokio::test]
    async fn probe_resistance_decoys_and_knock() {
        let echo = echo_server().await;
        let decoy_file =
            std::env::temp_dir().join(format!("pht-decoy-{}.html", std::process::id()));
        std::fs::write(&decoy_file, "decoy-response").unwrap();
        let file = format!("file:{}", decoy_file.display());
        let host = format!("host:{echo}");
        let bad_file = "file:/nonexistent/decoy.html".to_string();
        let closed = format!("host:{}", closed_port().await);
        let unauthenticated = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n");
        let cases: [(&str, &[u8]); 6] = [
            (
                "code:404",
                b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n",
            ),
            (
                "code:499",
                b"HTTP/1.1 499 status code 499\r\nConnection: close\r\n\r\n",
            ),
            ("code:x", DECOY_UNAVAILABLE),
            ("smtp:25", DECOY_UNAVAILABLE),
            (&bad_file, DECOY_UNAVAILABLE),
            (&closed, DECOY_UNAVAILABLE),
        ];
        for (pr, want) in cases {
            let h = build("http", Some(("user", "pass")), &[("probeResist", pr)]);
            let mut c = start(h);
            c.write_all(unauthenticated.as_bytes()).await.unwrap();
            assert_eq!(read_to_end(&mut c).await, want, "{pr}");
        }
        // file: the page, as gost writes it.
        let h = build("http", Some(("user", "pass")), &[("probeResist", &file)]);
        let mut c = start(h);
        c.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            read_to_end(&mut c).await,
            b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: keep-alive\r\n\
              Content-Type: text/html\r\n\r\ndecoy-response"
        );
        // host: the request itself reaches the decoy (an echo here) and its answer comes back.
        let h = build("http", Some(("user", "pass")), &[("probe_resist", &host)]);
        let mut c = start(h);
        let req = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
        c.write_all(req).await.unwrap();
        assert_eq!(read_n(&mut c, req.len()).await, req);
        // knock: a request for a knock host gets the 407 (CONNECT authority and absolute URI
        // alike, case-insensitively); others, and origin-form requests, the decoy.
        let h = build(
            "http",
            Some(("user", "pass")),
            &[
                ("probeResist", "code:404"),
                ("knock", "a.example, Secret.Example.com"),
            ],
        );
        for (req, want) in [
            ("CONNECT secret.example.com:443 HTTP/1.1\r\n\r\n", REQ_407),
            ("GET http://SECRET.example.com/x HTTP/1.1\r\n\r\n", REQ_407),
            (
                "GET http://other.example.com/ HTTP/1.1\r\n\r\n",
                &b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n"[..],
            ),
            (
                "GET / HTTP/1.1\r\nHost: secret.example.com\r\n\r\n",
                b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n",
            ),
        ] {
            let mut c = start(h.clone());
            c.write_all(req.as_bytes()).await.unwrap();
            assert_eq!(read_to_end(&mut c).await, want, "{req}");
        }
        // Right credentials never see the decoy; no `:` means no probe resistance.
        let h = build(
            "http",
            Some(("user", "pass")),
            &[("probeResist", "code:404")],
        );
        let mut c = start(h);
        let req = format!(
            "CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.unwrap();
        assert_eq!(read_n(&mut c, OK_200.len()).await, OK_200);
        let h = build("http", Some(("user", "pass")), &[("probeResist", "404")]);
        let mut c = start(h);
        c.write_all(unauthenticated.as_bytes()).await.unwrap();
        assert_eq!(read_to_end(&mut c).await, REQ_407);
        // web: is refused when the configuration is checked.
        let e = super::super::build(
            &service("http", None, &[("probeResist", "web:example.com")]),
            Router::direct(),
        )
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            "handler http: probeResist \"web:example.com\": web decoys are not supported (code:, file: and host: are)"
        );
        let _ = std::fs::remove_file(decoy_file);
    }

    #[tokio::test]
    async fn dial_failure_and_bad_requests() {
        let closed = closed_port().await;
        let h = build("http", None, &[("proxyAgent", "pht-test/1")]);
        let mut c = start(h.clone());
        c.write_all(format!("CONNECT {closed} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            read_to_end(&mut c).await,
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nProxy-Agent: pht-test/1\r\n\r\n"
        );

        for req in [
            &b"GET / HTTP/1.1\r\nHost: bad!\r\n\r\n"[..],
            b"GET https://example.com/ HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
            b"hello there\r\n",
        ] {
            let mut c = start(h.clone());
            c.write_all(req).await.unwrap();
            assert_eq!(
                read_to_end(&mut c).await,
                BAD_REQUEST,
                "{}",
                String::from_utf8_lossy(req)
            );
        }

        let mut c = start(h);
        c.write_all(b"CONNECT a:1 HTTP/1.1\r\nX-Gost-Protocol: udp\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_to_end(&mut c).await, UDP_FORBIDDEN);
    }

    /// An origin server answering every request with `hello`; sends each request head
    /// it receives on the channel.
    async fn origin() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut r = BufReader::new(s);
                    loop {
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push_str(&line);
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let _ = tx.send(head);
                        let _ = r
                            .get_mut()
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Origin: yes\r\n\r\nhello")
                            .await;
                    }
                });
            }
        });
        (addr, rx)
    }

    async fn read_response(c: &mut tokio::io::DuplexStream) -> String {
        // Head, then a 5-byte body.
        let mut got = Vec::new();
        while pht_core::http_head_end(&got).is_none() {
            got.extend_from_slice(&read_n(c, 1).await);
        }
        got.extend_from_slice(&read_n(c, 5).await);
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn plain_forwarding_with_keep_alive() {
        let (addr, mut heads) = origin().await;
        let h = build("http", Some(("u", "p")), &[]);
        let mut c = start(h);
        let req = format!(
            "GET http://{addr}/path?q=1 HTTP/1.1\r\nHost: {addr}\r\nProxy-Authorization: Basic dTpw\r\n\
             Proxy-Connection: keep-alive\r\nX-Custom: Kept\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let resp = read_response(&mut c).await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("X-Origin: yes\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nhello"), "{resp}");
        let up = heads.recv().await.unwrap();
        assert!(up.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "{up}");
        assert!(up.contains(&format!("Host: {addr}\r\n")), "{up}");
        assert!(up.contains("X-Custom: Kept\r\n"), "{up}");
        assert!(!up.to_ascii_lowercase().contains("proxy-"), "{up}");

        // Second request on the same connection: origin form, no credentials needed.
        let req = format!("POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 3\r\n\r\nabc");
        c.write_all(req.as_bytes()).await.unwrap();
        let resp = read_response(&mut c).await;
        assert!(resp.ends_with("hello"), "{resp}");
        let up = heads.recv().await.unwrap();
        assert!(up.starts_with("POST / HTTP/1.1\r\n"), "{up}");
    }

    #[tokio::test]
    async fn plain_forwarding_upstream_failure_is_503() {
        let closed = closed_port().await;
        let mut c = start(build("http", None, &[]));
        c.write_all(format!("GET http://{closed}/ HTTP/1.1\r\nHost: {closed}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let resp = String::from_utf8(read_to_end(&mut c).await).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{resp}"
        );
        assert!(resp.contains("Content-Length: 0\r\n"), "{resp}");
    }
}
