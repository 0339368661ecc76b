//! [`pht_core::Fetch`] over hyper: pooled keep-alive HTTP/1.1, or HTTP/2 (ALPN over TLS,
//! or prior knowledge on plain TCP), to one PHT node: directly, through an HTTP forward
//! proxy, or over a stream a caller dials (a chain's earlier hops).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;
use http::HeaderValue;
use http::{Method, Request, Uri};
use http_body_util::{BodyDataStream, BodyExt, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pht_core::{Fetch, FetchError, FetchResponse, NodeUrl, PostBody};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tracing::{info, warn};

use crate::http3::{H3Body, H3Client};
use crate::quic::QuicOptions;
use crate::tls::{ClientTlsError, ClientTlsOptions};

/// Largest push/authorize response body read into memory (PHT answers are tiny).
const MAX_SMALL_BODY: usize = 64 * 1024;
/// Idle pooled connections are closed after this, before the servers close them: ours
/// after its 30 s `headerTimeout`, nginx after 75 s. A push sent on a connection the
/// server is closing at that moment would fail, and a PHT/1 push cannot be retried.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Time allowed for the TCP connection, and again for the TLS handshake, to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a transport could not be built for a node.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("dialer {0:?} is not supported by this transport (supported: pht, phts, h3, http3)")]
    UnsupportedDialer(String),
    #[error("{0}")]
    Quic(String),
    #[error(transparent)]
    Tls(#[from] ClientTlsError),
    #[error("parameter {key}={value:?}: {reason}")]
    BadParam {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "proxy {proxy}: only http:// forward proxies are supported (from {source_name}; set proxy=none on the node to go direct)"
    )]
    UnsupportedProxy {
        proxy: String,
        source_name: &'static str,
    },
    #[error(
        "proxy {proxy}: not a valid proxy URL (from {source_name}; expected http://[user:pass@]host:port)"
    )]
    InvalidProxy {
        proxy: String,
        source_name: &'static str,
    },
}

/// A byte stream a connection to the node can run on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Opens a fresh byte stream to the node for each HTTP connection: how a PHT node is
/// reached through the earlier hops of a chain.
pub type Dial = Arc<dyn Fn() -> BoxFuture<'static, io::Result<Box<dyn Io>>> + Send + Sync>;

/// An HTTP forward proxy on the way to the node.
#[derive(Clone)]
pub struct Proxy {
    /// `host:port` of the proxy.
    pub addr: String,
    /// `Proxy-Authorization` value (`Basic ...`) from the proxy URL's `user:pass@`.
    pub auth: Option<HeaderValue>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credentials stay out of logs.
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("auth", &self.auth.is_some())
            .finish()
    }
}

impl Proxy {
    /// The proxy for `node`: its `proxy=` parameter (`none` turns proxies off), else the
    /// environment as curl reads it (`http_proxy`/`HTTP_PROXY` for `pht`,
    /// `https_proxy`/`HTTPS_PROXY` for `phts`, `ALL_PROXY`, and `NO_PROXY`).
    ///
    /// A proxy of any other scheme than `http://`, or one that is not a URL, is an error
    /// naming where it was set, unless `NO_PROXY` exempts the node: going direct instead
    /// would bypass a proxy the user asked for.
    pub fn for_node(node: &NodeUrl) -> Result<Option<Proxy>, TransportError> {
        Self::for_node_in(node, &|k| std::env::var(k).ok())
    }

    /// [`Proxy::for_node`] with the environment read through `env`.
    fn for_node_in(
        node: &NodeUrl,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Proxy>, TransportError> {
        // The first of the names that is set, if it is not empty: as in hyper-util's
        // matcher, `HTTP_PROXY=""` hides `http_proxy` and leaves the choice to
        // `ALL_PROXY`.
        let first = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|n| env(n).map(|v| (n, v)))
                .filter(|(_, v)| !v.trim().is_empty())
        };
        let (raw, source_name, no_proxy) = match node.url.param("proxy") {
            Some("" | "none" | "off" | "direct") => return Ok(None),
            Some(p) => (p.to_string(), "proxy=", String::new()),
            // A CGI program's HTTP_PROXY may come from a request header (httpoxy): like
            // hyper-util, ignore the environment's proxies there altogether.
            None if env("REQUEST_METHOD").is_some() => return Ok(None),
            None => {
                let no = first(["NO_PROXY", "no_proxy"])
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                // curl's `*` exempts every host, addresses included; the matcher applies
                // it to host names only.
                if no.split(',').any(|e| e.trim() == "*") {
                    return Ok(None);
                }
                let own = if node.is_tls() {
                    first(["HTTPS_PROXY", "https_proxy"])
                } else {
                    first(["HTTP_PROXY", "http_proxy"])
                };
                match own.or_else(|| first(["ALL_PROXY", "all_proxy"])) {
                    Some((name, raw)) => (raw, name, no),
                    None => return Ok(None),
                }
            }
        };
        let scheme = if node.is_tls() { "https" } else { "http" };
        let host = node
            .addr
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&node.addr);
        let dst: http::Uri =
            format!("{scheme}://{host}/")
                .parse()
                .map_err(|_| TransportError::BadParam {
                    key: "proxy",
                    value: node.addr.clone(),
                    reason: "the node address is not a valid host",
                })?;
        let exempt = Matcher::builder()
            .all("http://127.0.0.1:1")
            .no(no_proxy.clone())
            .build()
            .intercept(&dst)
            .is_none();
        if exempt {
            return Ok(None);
        }
        let raw = raw.trim();
        let proxy_scheme = raw.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if proxy_scheme.as_deref().is_some_and(|s| s != "http") {
            return Err(TransportError::UnsupportedProxy {
                proxy: without_credentials(raw),
                source_name,
            });
        }
        let invalid = || TransportError::InvalidProxy {
            proxy: without_credentials(raw),
            source_name,
        };
        let hit = Matcher::builder()
            .all(raw.to_string())
            .no(no_proxy)
            .build()
            .intercept(&dst)
            .ok_or_else(invalid)?;
        let uri = hit.uri();
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(invalid)?;
        let port = uri.port_u16().unwrap_or(80);
        let auth = hit.basic_auth().cloned().or_else(|| {
            hit.raw_auth()
                .and_then(|(u, p)| HeaderValue::from_str(&format!("Basic {}", basic(u, p))).ok())
        });
        Ok(Some(Proxy {
            addr: format!("{host}:{port}"),
            auth,
        }))
    }
}

/// A proxy URL as it may be shown: `scheme://host:port`, without `user:pass@` or a path.
fn without_credentials(raw: &str) -> String {
    let (scheme, rest) = raw.split_once("://").unwrap_or(("http", raw));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}")
}

/// `user:pass` in base64, as Basic authentication sends it.
fn basic(user: &str, pass: &str) -> String {
    base64_simd::STANDARD.encode_to_string(format!("{user}:{pass}"))
}

/// How to reach a node: the address, TLS, and HTTP version.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// TLS settings; `None` for plain HTTP.
    pub tls: Option<ClientTlsOptions>,
    /// HTTP/2: offered by ALPN over TLS (default on), or spoken by prior knowledge (h2c)
    /// on plain TCP (default off). Node URL key `http2`.
    pub http2: Option<bool>,
    /// Idle pooled connections kept per node (node URL key `maxIdleConns`, default 100).
    pub max_idle: Option<usize>,
    /// HTTP/3 over QUIC (the `h3` and `http3` dialers), with their QUIC settings.
    pub quic: Option<QuicOptions>,
    /// The forward proxy on the way to the node (node URL key `proxy`, or the environment).
    pub proxy: Option<Proxy>,
}

impl TransportOptions {
    /// Reads the transport keys of a node URL: `http2`, `maxIdleConns`, and for `phts`
    /// `secure`, `serverName`, `caFile`, `certFile`, `keyFile`, `pin` (also `tls.`-prefixed).
    pub fn from_node(node: &NodeUrl) -> Result<Self, TransportError> {
        let p = |k: &str| {
            node.url
                .param(k)
                .or_else(|| node.url.param(&format!("tls.{k}")))
                .map(str::to_string)
        };
        let boolean = |key: &'static str| -> Result<Option<bool>, TransportError> {
            match node.url.param(key) {
                None => Ok(None),
                Some(v) if pht_core::parse_bool(v).is_some() => Ok(pht_core::parse_bool(v)),
                Some(v) => Err(TransportError::BadParam {
                    key,
                    value: v.into(),
                    reason: "expected a boolean",
                }),
            }
        };
        let tls = match node.dialer.as_str() {
            "pht" => None,
            "phts" | "h3" | "http3" => Some(ClientTlsOptions {
                secure: boolean("secure")?.unwrap_or(false),
                server_name: p("serverName").filter(|s| !s.is_empty()),
                ca_file: p("caFile").or_else(|| p("ca")).filter(|s| !s.is_empty()),
                cert_file: p("certFile")
                    .or_else(|| p("cert"))
                    .filter(|s| !s.is_empty()),
                key_file: p("keyFile").or_else(|| p("key")).filter(|s| !s.is_empty()),
                pin: p("pin").filter(|s| !s.is_empty()),
            }),
            other => return Err(TransportError::UnsupportedDialer(other.to_string())),
        };
        let max_idle = match node.url.param("maxIdleConns") {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| TransportError::BadParam {
                key: "maxIdleConns",
                value: v.into(),
                reason: "expected a number",
            })?),
        };
        let duration = |key: &'static str| -> Result<Option<Duration>, TransportError> {
            match node.url.param(key) {
                None => Ok(None),
                Some(v) => pht_core::parse_duration(v)
                    .map(Some)
                    .ok_or(TransportError::BadParam {
                        key,
                        value: v.into(),
                        reason: "expected a duration (10s, 1m30s)",
                    }),
            }
        };
        let quic = if node.is_quic() {
            let mut q = QuicOptions {
                // gost's dialer keeps connections alive unless told not to.
                keep_alive: match boolean("keepalive")? {
                    Some(false) => None,
                    _ => Some(
                        duration("ttl")?
                            .filter(|d| !d.is_zero())
                            .unwrap_or(crate::quic::DEFAULT_KEEP_ALIVE),
                    ),
                },
                ..QuicOptions::default()
            };
            if let Some(d) = duration("handshakeTimeout")?.filter(|d| !d.is_zero()) {
                q.handshake_timeout = d;
            }
            if let Some(d) = duration("maxIdleTimeout")?.filter(|d| !d.is_zero()) {
                q.max_idle_timeout = d;
            }
            Some(q)
        } else {
            None
        };
        let proxy = match (&quic, node.url.param("proxy")) {
            // QUIC is UDP: an HTTP proxy cannot carry it, and the environment's proxy
            // settings speak of TCP connections.
            (Some(_), None | Some("" | "none" | "off" | "direct")) => None,
            (Some(_), Some(p)) => {
                return Err(TransportError::BadParam {
                    key: "proxy",
                    value: p.into(),
                    reason: "an HTTP proxy cannot carry h3 (QUIC runs over UDP); use phts",
                });
            }
            (None, _) => Proxy::for_node(node)?,
        };
        Ok(TransportOptions {
            tls,
            http2: boolean("http2")?,
            max_idle,
            quic,
            proxy,
        })
    }
}

/// An HTTP client bound to one node: every request's connection goes to the node's
/// address (directly, through the proxy, or through the caller's dialer), whatever
/// authority the URL carries (gost's `host` option is fronting). Cloning is cheap and
/// shares the connection pool.
#[derive(Clone)]
pub struct HyperFetch {
    inner: Arc<Inner>,
}

type HttpClient = Client<NodeConnector, Pieces>;

/// A request body sent as the pieces it is made of, its length known up front (hyper
/// then sends a `Content-Length`, as gost's server expects): over HTTP/1.1 the pieces
/// go out in one vectored write, with no copy to join them.
pub(crate) struct Pieces {
    parts: std::vec::IntoIter<Bytes>,
    left: u64,
}

impl From<PostBody> for Pieces {
    fn from(b: PostBody) -> Self {
        Pieces {
            left: b.len() as u64,
            parts: b.into_parts().into_iter(),
        }
    }
}

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = self.parts.next();
        if let Some(b) = &next {
            self.left -= b.len() as u64;
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

struct Inner {
    /// HTTP/1.1 (or h2c prior knowledge when asked for).
    client: HttpClient,
    /// Over TLS with h2 offered: an HTTP/2-only client, used once a probe connection has
    /// shown the server agrees. Without it, a burst of new tunnels would each open a
    /// connection before the first ALPN answer is known.
    h2: Option<(HttpClient, NodeConnector, tokio::sync::OnceCell<bool>)>,
    /// Sent with every request when plain HTTP goes through a forward proxy.
    proxy_auth: Option<HeaderValue>,
    /// HTTP/3 instead of all the above (`h3`, `http3`).
    h3: Option<H3Client>,
}

impl HyperFetch {
    /// A client for `node` (`pht://` or `phts://`), with the node URL's transport options.
    pub fn for_node(node: &NodeUrl) -> Result<Self, TransportError> {
        Self::for_node_via(node, None)
    }

    /// Like [`HyperFetch::for_node`], with every connection opened by `dial` instead of
    /// a TCP connection to the node: a PHT node behind earlier hops of a chain. TLS (for
    /// `phts`) still runs end to end with the node.
    pub fn for_node_via(node: &NodeUrl, dial: Option<Dial>) -> Result<Self, TransportError> {
        let mut opts = TransportOptions::from_node(node)?;
        if opts.quic.is_some() && dial.is_some() {
            return Err(TransportError::Quic(format!(
                "{}: an h3 node cannot sit behind earlier hops of a chain (QUIC needs UDP \
                 to the node); use phts there",
                node.addr
            )));
        }
        let host = node
            .addr
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&node.addr);
        if let Some(tls) = &opts.tls {
            if !tls.verifies() {
                warn!(
                    node = %node.addr,
                    "TLS certificate verification is off (gost's default): anyone on the path \
                     can read this tunnel; set secure=true and caFile, or pin=sha256:<hex>"
                );
            }
        }
        let route = match (dial, opts.proxy.take()) {
            (Some(dial), _) => Route::Dial(dial),
            (None, Some(proxy)) => {
                info!(node = %node.addr, proxy = %proxy.addr, "reaching the node through the HTTP proxy {}", proxy.addr);
                Route::Proxy {
                    proxy: Arc::from(proxy.addr.as_str()),
                    auth: proxy.auth,
                    node: Arc::from(node.addr.as_str()),
                }
            }
            (None, None) => Route::Direct(Arc::from(node.addr.as_str())),
        };
        Self::build(route, host, &opts)
    }

    /// A plain-HTTP/1.1 client whose connections all go to `addr` (`host:port`).
    pub fn plain(addr: &str) -> Self {
        Self::new(addr, "", &TransportOptions::default()).expect("plain transport needs no files")
    }

    /// A client whose connections all go to `addr`; `host` is the default TLS server name.
    pub fn new(addr: &str, host: &str, opts: &TransportOptions) -> Result<Self, TransportError> {
        let route = match &opts.proxy {
            None => Route::Direct(Arc::from(addr)),
            Some(p) => Route::Proxy {
                proxy: Arc::from(p.addr.as_str()),
                auth: p.auth.clone(),
                node: Arc::from(addr),
            },
        };
        Self::build(route, host, opts)
    }

    fn build(route: Route, host: &str, opts: &TransportOptions) -> Result<Self, TransportError> {
        if let (Some(quic), Some(t), Route::Direct(addr)) = (&opts.quic, &opts.tls, &route) {
            let name = t.server_name.as_deref().unwrap_or(host);
            let name = name.trim_start_matches('[').trim_end_matches(']');
            let h3 = H3Client::new(addr, name.to_string(), t.client_config(&[b"h3"])?, quic)
                .map_err(TransportError::Quic)?;
            return Ok(HyperFetch {
                inner: Arc::new(Inner {
                    client: Client::builder(TokioExecutor::new())
                        .build(NodeConnector { route, tls: None }),
                    h2: None,
                    proxy_auth: None,
                    h3: Some(h3),
                }),
            });
        }
        let tls = match &opts.tls {
            None => None,
            Some(t) => {
                let alpn: &[&[u8]] = if opts.http2 == Some(false) {
                    &[b"http/1.1"]
                } else {
                    &[b"h2", b"http/1.1"]
                };
                let cfg = t.client_config(alpn)?;
                Some((TlsConnector::from(Arc::new(cfg)), t.sni(host)?))
            }
        };
        // Plain HTTP through a proxy goes as absolute-form requests, with the proxy's
        // credentials on each; HTTP/2 cannot be spoken that way.
        let proxy_auth = match (&route, &tls) {
            (Route::Proxy { auth, .. }, None) => auth.clone(),
            _ => None,
        };
        let forward_proxied = matches!(route, Route::Proxy { .. }) && tls.is_none();
        let h2c = opts.tls.is_none() && opts.http2 == Some(true) && !forward_proxied;
        let h2_over_tls = opts.tls.is_some() && opts.http2 != Some(false);
        let connector = NodeConnector {
            route,
            tls: tls.map(Arc::new),
        };
        let build = |h2_only: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_max_idle_per_host(opts.max_idle.unwrap_or(100))
                .http2_initial_stream_window_size(crate::h2::STREAM_WINDOW)
                .http2_initial_connection_window_size(crate::h2::CONN_WINDOW)
                .http2_max_frame_size(crate::h2::MAX_FRAME)
                .http2_keep_alive_interval(crate::h2::KEEP_ALIVE)
                .http2_only(h2_only);
            b.build(connector.clone())
        };
        let h2 =
            h2_over_tls.then(|| (build(true), connector.clone(), tokio::sync::OnceCell::new()));
        Ok(HyperFetch {
            inner: Arc::new(Inner {
                client: build(h2c),
                h2,
                proxy_auth,
                h3: None,
            }),
        })
    }

    /// The client to use: HTTP/2 when the node negotiated it over TLS.
    async fn client(&self) -> &HttpClient {
        let Some((h2, connector, agreed)) = &self.inner.h2 else {
            return &self.inner.client;
        };
        let probe = || async {
            let io = connector.clone().connect().await?;
            Ok::<_, io::Error>(io.inner().connected().is_negotiated_h2())
        };
        match agreed.get_or_try_init(probe).await {
            Ok(true) => h2,
            // Not agreed, or the node is unreachable: HTTP/1.1 reports the error itself.
            _ => &self.inner.client,
        }
    }

    fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        body: PostBody,
    ) -> Result<Request<Pieces>, FetchError> {
        let uri: Uri = url.parse().map_err(FetchError::new)?;
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(auth) = &self.inner.proxy_auth {
            req = req.header(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
        req.body(body.into()).map_err(FetchError::new)
    }
}

impl Fetch for HyperFetch {
    type Body = HyperBody;

    async fn get(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<FetchResponse<HyperBody>, FetchError> {
        if let Some(h3) = &self.inner.h3 {
            let r = h3.get(url, headers).await?;
            return Ok(FetchResponse {
                status: r.status,
                content_type: r.content_type,
                body: HyperBody(BodyInner::H3(r.body)),
            });
        }
        let req = self.request(Method::GET, url, headers, PostBody::default())?;
        let resp = self
            .client()
            .await
            .request(req)
            .await
            .map_err(fetch_error)?;
        Ok(FetchResponse {
            status: resp.status().as_u16(),
            content_type: content_type(resp.headers()),
            body: HyperBody(BodyInner::Hyper(resp.into_body().into_data_stream())),
        })
    }

    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: PostBody,
    ) -> Result<(u16, Bytes), FetchError> {
        if let Some(h3) = &self.inner.h3 {
            return h3.post(url, headers, body, MAX_SMALL_BODY).await;
        }
        let req = self.request(Method::POST, url, headers, body)?;
        let resp = self
            .client()
            .await
            .request(req)
            .await
            .map_err(fetch_error)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_SMALL_BODY)
            .collect()
            .await
            .map_err(FetchError::new)?
            .to_bytes();
        Ok((status, body))
    }
}

/// A response's `Content-Type`, if readable.
pub(crate) fn content_type(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn fetch_error(e: hyper_util::client::legacy::Error) -> FetchError {
    // The legacy client's Display hides the cause ("client error (Connect)").
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    FetchError(msg)
}

/// A pull response body as a stream of chunks.
pub struct HyperBody(BodyInner);

enum BodyInner {
    Hyper(BodyDataStream<Incoming>),
    H3(H3Body),
}

impl Stream for HyperBody {
    type Item = Result<Bytes, FetchError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let body = match &mut self.0 {
            BodyInner::H3(b) => return Pin::new(b).poll_next(cx),
            BodyInner::Hyper(b) => b,
        };
        Pin::new(body).poll_next(cx).map(|o| {
            o.map(|r| {
                r.map_err(|e| {
                    // hyper's Display says only "error reading a body from connection".
                    let mut msg = e.to_string();
                    if let Some(s) = std::error::Error::source(&e) {
                        msg.push_str(": ");
                        msg.push_str(&s.to_string());
                    }
                    FetchError(msg)
                })
            })
        })
    }
}

/// How a connection reaches the node.
#[derive(Clone)]
enum Route {
    /// TCP to the node's `host:port`.
    Direct(Arc<str>),
    /// TCP to an HTTP forward proxy: plain HTTP then travels as absolute-form requests
    /// (no CONNECT, which proxies often refuse); TLS asks the proxy to CONNECT first.
    Proxy {
        proxy: Arc<str>,
        auth: Option<HeaderValue>,
        node: Arc<str>,
    },
    /// The caller's dialer.
    Dial(Dial),
}

/// Dials the node for every connection, with TCP_NODELAY (PHT is request/response bound:
/// Nagle would add a delay to every small POST), then TLS if configured.
#[derive(Clone)]
struct NodeConnector {
    route: Route,
    tls: Option<Arc<(TlsConnector, ServerName<'static>)>>,
}

impl tower_service::Service<Uri> for NodeConnector {
    type Response = TokioIo<NodeIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<NodeIo>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

async fn tcp(addr: &str) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out"),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl NodeConnector {
    async fn connect(self) -> io::Result<TokioIo<NodeIo>> {
        let NodeConnector { route, tls } = self;
        let (stream, proxied): (Box<dyn Io>, bool) = match &route {
            Route::Direct(addr) => (Box::new(tcp(addr).await?), false),
            Route::Dial(dial) => (dial().await?, false),
            Route::Proxy { proxy, .. } if tls.is_none() => (Box::new(tcp(proxy).await?), true),
            Route::Proxy { proxy, auth, node } => {
                let s = tcp(proxy).await?;
                (connect_through(s, proxy, auth.as_ref(), node).await?, false)
            }
        };
        let kind = match tls.as_deref() {
            None => NodeIoKind::Plain(stream),
            Some((connector, name)) => {
                let s =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream))
                        .await
                        .map_err(|_| {
                            io::Error::new(
                                io::ErrorKind::TimedOut,
                                "TLS handshake with the node timed out",
                            )
                        })??;
                NodeIoKind::Tls(Box::new(s))
            }
        };
        Ok(TokioIo::new(NodeIo { kind, proxied }))
    }
}

/// `CONNECT node` through the proxy: the way TLS crosses a forward proxy.
async fn connect_through(
    s: TcpStream,
    proxy: &str,
    auth: Option<&HeaderValue>,
    node: &str,
) -> io::Result<Box<dyn Io>> {
    let creds = auth.and_then(|a| {
        let b64 = a.to_str().ok()?.strip_prefix("Basic ")?;
        let raw = base64_simd::STANDARD.decode_to_vec(b64).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (u, p) = raw.split_once(':')?;
        Some(pht_core::Credentials::new(u.to_string(), p.to_string()))
    });
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        pht_core::handshake(s.compat(), pht_core::Connector::Http, node, creds.as_ref()),
    )
    .await
    .map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("CONNECT {node} through proxy {proxy} timed out"),
        )
    })?
    .map_err(|e| {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("proxy {proxy}: {e}"),
        )
    })?;
    Ok(Box::new(connected.compat()))
}

/// A connection to a node, plain or TLS, over whatever stream reaches it.
pub struct NodeIo {
    kind: NodeIoKind,
    /// Plain HTTP to a forward proxy: requests must keep their absolute form.
    proxied: bool,
}

enum NodeIoKind {
    Plain(Box<dyn Io>),
    Tls(Box<TlsStream<Box<dyn Io>>>),
}

impl Connection for NodeIo {
    fn connected(&self) -> Connected {
        match &self.kind {
            NodeIoKind::Plain(_) => Connected::new().proxy(self.proxied),
            NodeIoKind::Tls(s) => {
                if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl AsyncRead for NodeIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().kind {
            NodeIoKind::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NodeIoKind::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NodeIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().kind {
            NodeIoKind::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NodeIoKind::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().kind {
            NodeIoKind::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            NodeIoKind::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.kind {
            NodeIoKind::Plain(s) => s.is_write_vectored(),
            NodeIoKind::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().kind {
            NodeIoKind::Plain(s) => Pin::new(s).poll_flush(cx),
            NodeIoKind::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().kind {
            NodeIoKind::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NodeIoKind::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy_of(url: &str) -> Result<Option<Proxy>, TransportError> {
        Proxy::for_node(&NodeUrl::parse(url).unwrap())
    }

    #[test]
    fn an_explicit_proxy_with_credentials() {
        let p =
            proxy_of("forward+pht://srv.test:8443?proxy=http://al%2540ice:s3cret@127.0.0.1:3128")
                .unwrap()
                .unwrap();
        assert_eq!(p.addr, "127.0.0.1:3128");
        // The query value is decoded once (%2540 → %40), the proxy URL once more: al@ice.
        // base64("al@ice:s3cret")
        assert_eq!(
            p.auth.unwrap().to_str().unwrap(),
            "Basic YWxAaWNlOnMzY3JldA=="
        );
        let p = proxy_of("relay+phts://srv.test:443?proxy=http://proxy.corp")
            .unwrap()
            .unwrap();
        assert_eq!((p.addr.as_str(), p.auth.is_none()), ("proxy.corp:80", true));
    }

    #[test]
    fn none_turns_proxies_off_and_other_schemes_are_refused() {
        assert!(proxy_of("pht://srv:1?proxy=none").unwrap().is_none());
        let e = proxy_of("pht://srv:1?proxy=socks5://127.0.0.1:1080").unwrap_err();
        assert_eq!(
            e.to_string(),
            "proxy socks5://127.0.0.1:1080: only http:// forward proxies are supported \
             (from proxy=; set proxy=none on the node to go direct)"
        );
    }

    fn proxy_in_env(url: &str, vars: &[(&str, &str)]) -> Result<Option<Proxy>, TransportError> {
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        Proxy::for_node_in(&NodeUrl::parse(url).unwrap(), &env)
    }

    #[test]
    fn a_proxy_that_cannot_be_used_is_an_error_naming_where_it_was_set() {
        // An unknown scheme used to be skipped silently: the tunnel went direct.
        for (vars, node, want) in [
            (
                &[("HTTP_PROXY", "ftp://u:pw@proxy.test:21")][..],
                "pht://srv.test:1",
                "proxy ftp://proxy.test:21: only http:// forward proxies are supported \
                 (from HTTP_PROXY; set proxy=none on the node to go direct)",
            ),
            (
                &[("https_proxy", "socks5h://127.0.0.1:1080")],
                "phts://srv.test:1",
                "proxy socks5h://127.0.0.1:1080: only http:// forward proxies are supported \
                 (from https_proxy; set proxy=none on the node to go direct)",
            ),
            (
                &[("ALL_PROXY", "gopher://proxy.test")],
                "pht://srv.test:1",
                "proxy gopher://proxy.test: only http:// forward proxies are supported \
                 (from ALL_PROXY; set proxy=none on the node to go direct)",
            ),
            (
                &[("http_proxy", "http://[oops")],
                "pht://srv.test:1",
                "proxy http://[oops: not a valid proxy URL (from http_proxy; expected \
                 http://[user:pass@]host:port)",
            ),
        ] {
            let e = proxy_in_env(node, vars).unwrap_err();
            assert_eq!(e.to_string(), want, "{vars:?}");
        }
        let e = proxy_of("pht://srv:1?proxy=ftp://proxy.test:21").unwrap_err();
        assert!(e.to_string().contains("(from proxy=;"), "{e}");
    }

    #[test]
    fn the_environment_is_read_as_curl_reads_it() {
        let http = [
            ("HTTP_PROXY", "http://a.test:1"),
            ("HTTPS_PROXY", "http://b.test:2"),
        ];
        let addr =
            |url: &str, vars: &[(&str, &str)]| proxy_in_env(url, vars).unwrap().map(|p| p.addr);
        assert_eq!(addr("pht://srv.test:1", &http).as_deref(), Some("a.test:1"));
        assert_eq!(
            addr("phts://srv.test:1", &http).as_deref(),
            Some("b.test:2")
        );
        // ALL_PROXY when the scheme's own is unset or empty; no scheme means http://.
        let all = [("HTTP_PROXY", ""), ("ALL_PROXY", "c.test:3")];
        assert_eq!(addr("pht://srv.test:1", &all).as_deref(), Some("c.test:3"));
        // NO_PROXY exempts a host even from a proxy that would be refused.
        let exempt = [("HTTP_PROXY", "socks5://x.test:1"), ("NO_PROXY", ".test")];
        assert_eq!(addr("pht://srv.test:1", &exempt), None);
        assert_eq!(
            addr(
                "pht://srv.test:1",
                &[("HTTP_PROXY", "ftp://x"), ("no_proxy", "*")]
            ),
            None
        );
        // A CGI program's environment names no proxy.
        let cgi = [("HTTP_PROXY", "http://a.test:1"), ("REQUEST_METHOD", "GET")];
        assert_eq!(addr("pht://srv.test:1", &cgi), None);
        assert_eq!(addr("pht://srv.test:1", &[]), None);
    }

    #[test]
    fn credentials_stay_out_of_debug_output() {
        let p = proxy_of("pht://srv:1?proxy=http://u:secret@127.0.0.1:3128")
            .unwrap()
            .unwrap();
        assert!(!format!("{p:?}").contains("secret"));
        assert!(!format!("{p:?}").contains(&basic("u", "secret")));
    }
}
