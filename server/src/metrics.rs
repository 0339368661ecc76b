//! Prometheus metrics, under gost's names (`gost_*`) plus the PHT listener's own (`pht_*`).
//!
//! One process-wide set, made by [`enable`] when the configuration asks for metrics
//! (`-metrics`, a `metrics:` section, or a `metrics` service); until then every recording
//! call is a no-op. Recording is cheap: a service or PHT listener resolves its labelled
//! series once and keeps the handles (atomics); byte counts are added once per connection,
//! when it ends, never per write.
//!
//! The text form is served by [`serve_conn`]: on the global metrics address (main) and by
//! the `metrics` handler (`-L metrics://:9000`).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::AuthConfig;

/// gost's default scrape path.
pub const DEFAULT_PATH: &str = "/metrics";

/// gost's request-duration buckets (seconds).
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
];
/// PHT push buckets (seconds): a push is one HTTP request, usually well under a second.
const PUSH_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    host: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChainLabels {
    host: String,
    chain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhtLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PullLabels {
    service: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    service: String,
    kind: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    service: String,
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn push_histogram() -> Histogram {
    Histogram::new(PUSH_BUCKETS)
}

/// Every metric this server keeps.
pub struct Metrics {
    registry: Registry,
    host: String,
    services: Family<HostLabels, Gauge>,
    requests: Family<ServiceLabels, Counter>,
    in_flight: Family<ServiceLabels, Gauge>,
    duration: HistogramFamily<ServiceLabels>,
    input_bytes: Family<ServiceLabels, Counter>,
    output_bytes: Family<ServiceLabels, Counter>,
    handler_errors: Family<ServiceLabels, Counter>,
    chain_errors: Family<ChainLabels, Counter>,
    pht_tunnels: Family<PhtLabels, Gauge>,
    pht_pulls: Family<PullLabels, Counter>,
    pht_push_duration: HistogramFamily<PhtLabels>,
    pht_requests: Family<HttpLabels, Counter>,
    pht_refusals: Family<RefusalLabels, Counter>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Turns metrics on (idempotent) and returns them.
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(hostname()))
}

/// The metrics, if [`enable`] was called.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// The `host` label gost puts on its metrics: this machine's name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Metrics {
    /// A fresh set (tests use their own; the process uses [`enable`]).
    pub fn new(host: String) -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            host,
            services: Family::default(),
            requests: Family::default(),
            in_flight: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            input_bytes: Family::default(),
            output_bytes: Family::default(),
            handler_errors: Family::default(),
            chain_errors: Family::default(),
            pht_tunnels: Family::default(),
            pht_pulls: Family::default(),
            pht_push_duration: Family::new_with_constructor(push_histogram),
            pht_requests: Family::default(),
            pht_refusals: Family::default(),
        };
        // Counters are registered without `_total`: the encoder appends it.
        let r = &mut registry;
        r.register(
            "gost_services",
            "Current number of services",
            m.services.clone(),
        );
        r.register(
            "gost_service_requests",
            "Total number of requests (connections, PHT tunnels) a service accepted",
            m.requests.clone(),
        );
        r.register(
            "gost_service_requests_in_flight",
            "Current number of requests a service is handling",
            m.in_flight.clone(),
        );
        r.register(
            "gost_service_request_duration_seconds",
            "How long a service handled a request",
            m.duration.clone(),
        );
        r.register(
            "gost_service_transfer_input_bytes",
            "Bytes received from clients (client side of the service)",
            m.input_bytes.clone(),
        );
        r.register(
            "gost_service_transfer_output_bytes",
            "Bytes sent to clients (client side of the service)",
            m.output_bytes.clone(),
        );
        r.register(
            "gost_service_handler_errors",
            "Requests a handler ended with an error (target unreachable or refused)",
            m.handler_errors.clone(),
        );
        r.register(
            "gost_chain_errors",
            "Failed connections through a chain",
            m.chain_errors.clone(),
        );
        r.register("pht_tunnels", "Open PHT tunnels", m.pht_tunnels.clone());
        r.register(
            "pht_pulls",
            "PHT pull requests that attached to a tunnel (kind: attached, or resumed for a PHT/2 pull with ack > 0)",
            m.pht_pulls.clone(),
        );
        r.register(
            "pht_push_duration_seconds",
            "How long a PHT push request took, from routing to the answer",
            m.pht_push_duration.clone(),
        );
        r.register(
            "pht_http_requests",
            "HTTP requests to a PHT listener by endpoint kind and status code",
            m.pht_requests.clone(),
        );
        r.register(
            "pht_refusals",
            "PHT requests refused, by reason (the limit's option name for 429s)",
            m.pht_refusals.clone(),
        );
        Metrics { registry, ..m }
    }

    fn service_labels(&self, service: &str) -> ServiceLabels {
        ServiceLabels {
            host: self.host.clone(),
            service: service.to_string(),
        }
    }

    /// The handles of one service's series.
    pub fn service(&self, name: &str) -> ServiceMetrics {
        let l = self.service_labels(name);
        ServiceMetrics {
            services: self
                .services
                .get_or_create(&HostLabels {
                    host: self.host.clone(),
                })
                .clone(),
            requests: self.requests.get_or_create(&l).clone(),
            in_flight: self.in_flight.get_or_create(&l).clone(),
            duration: self.duration.get_or_create(&l).clone(),
        }
    }

    /// The handles of one PHT listener's series.
    pub fn pht(&'static self, service: &str) -> PhtMetrics {
        let l = PhtLabels {
            service: service.to_string(),
        };
        let pulls = |kind| {
            self.pht_pulls
                .get_or_create(&PullLabels {
                    service: service.to_string(),
                    kind,
                })
                .clone()
        };
        PhtMetrics {
            metrics: self,
            service: service.to_string(),
            tunnels: self.pht_tunnels.get_or_create(&l).clone(),
            attached: pulls("attached"),
            resumed: pulls("resumed"),
            push_duration: self.pht_push_duration.get_or_create(&l).clone(),
        }
    }

    /// The text exposition (OpenMetrics text, which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Adds one finished connection's bytes: `input` from the client, `output` to it.
pub fn transfer(service: &str, input: u64, output: u64) {
    if let Some(m) = get() {
        let l = m.service_labels(service);
        m.input_bytes.get_or_create(&l).inc_by(input);
        m.output_bytes.get_or_create(&l).inc_by(output);
    }
}

/// Counts a request the handler ended with an error.
pub fn handler_error(service: &str) {
    if let Some(m) = get() {
        m.handler_errors
            .get_or_create(&m.service_labels(service))
            .inc();
    }
}

/// Counts a failed dial through `chain`.
pub fn chain_error(chain: &str) {
    if let Some(m) = get() {
        m.chain_errors
            .get_or_create(&ChainLabels {
                host: m.host.clone(),
                chain: chain.to_string(),
            })
            .inc();
    }
}

/// One service's series.
#[derive(Clone)]
pub struct ServiceMetrics {
    services: Gauge,
    requests: Counter,
    in_flight: Gauge,
    duration: Histogram,
}

impl ServiceMetrics {
    /// The service runs until the guard is dropped (`gost_services`).
    pub fn running(&self) -> Running {
        self.services.inc();
        Running(self.services.clone())
    }

    /// One request starts; it ends (in flight, duration) when the guard is dropped.
    pub fn request(&self) -> RequestGuard {
        self.requests.inc();
        self.in_flight.inc();
        RequestGuard {
            m: self.clone(),
            started: Instant::now(),
        }
    }
}

/// A running service (`gost_services`), until dropped.
pub struct Running(Gauge);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A request in flight.
pub struct RequestGuard {
    m: ServiceMetrics,
    started: Instant,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.m.in_flight.dec();
        self.m
            .duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Endpoint kinds of a PHT listener (`pht_http_requests_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhtKind {
    Authorize,
    Push,
    Pull,
    Other,
}

impl PhtKind {
    fn label(self) -> &'static str {
        match self {
            PhtKind::Authorize => "authorize",
            PhtKind::Push => "push",
            PhtKind::Pull => "pull",
            PhtKind::Other => "other",
        }
    }
}

/// Why a PHT request was refused, when a limit says so; carried in the response's
/// extensions from where the answer is made to where it is counted.
#[derive(Debug, Clone, Copy)]
pub struct RefusalReason(pub &'static str);

/// One PHT listener's series.
pub struct PhtMetrics {
    metrics: &'static Metrics,
    service: String,
    tunnels: Gauge,
    attached: Counter,
    resumed: Counter,
    push_duration: Histogram,
}

impl PhtMetrics {
    pub fn tunnel_opened(&self) {
        self.tunnels.inc();
    }

    pub fn tunnel_closed(&self) {
        self.tunnels.dec();
    }

    /// A pull attached to its tunnel; `resumed`: a PHT/2 pull continuing after `ack > 0`.
    pub fn pull(&self, resumed: bool) {
        if resumed {
            self.resumed.inc()
        } else {
            self.attached.inc()
        };
    }

    /// One answered request: its kind, status, how long it took, and why it was refused.
    pub fn answered(
        &self,
        kind: PhtKind,
        status: StatusCode,
        took: Duration,
        reason: Option<RefusalReason>,
    ) {
        let m = self.metrics;
        m.pht_requests
            .get_or_create(&HttpLabels {
                service: self.service.clone(),
                kind: kind.label(),
                code: status.as_u16(),
            })
            .inc();
        if kind == PhtKind::Push {
            self.push_duration.observe(took.as_secs_f64());
        }
        let reason = match (status.as_u16(), reason) {
            (429 | 503, Some(RefusalReason(r))) => r,
            (429, None) => "tooManyRequests",
            (413, _) => "maxPushBody",
            (410, _) => "gone",
            (409, _) => "conflict",
            _ => return,
        };
        m.pht_refusals
            .get_or_create(&RefusalLabels {
                service: self.service.clone(),
                reason,
            })
            .inc();
    }
}

/// Where and how the text form is served.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub path: String,
    /// Basic-auth credentials a scrape must carry.
    pub auth: Option<AuthConfig>,
}

impl Endpoint {
    pub fn new(path: Option<&str>, auth: Option<AuthConfig>) -> Self {
        let path = match path.map(str::trim) {
            Some(p) if p.starts_with('/') => p.to_string(),
            Some(p) if !p.is_empty() => format!("/{p}"),
            _ => DEFAULT_PATH.to_string(),
        };
        Endpoint {
            path,
            auth: auth.filter(|a| !a.username.is_empty()),
        }
    }

    fn authorized(&self, value: Option<&HeaderValue>) -> bool {
        let Some(want) = &self.auth else {
            return true;
        };
        let Some(encoded) = value
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(raw) else {
            return false;
        };
        let (user, pass) = text.split_once(':').unwrap_or((&text, ""));
        user == want.username && pass == want.password
    }

    /// The answer to one request.
    pub fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r
        };
        if req.uri().path() != self.path {
            return reply(StatusCode::NOT_FOUND, "404 page not found\n".into());
        }
        if !self.authorized(req.headers().get(header::AUTHORIZATION)) {
            let mut r = reply(StatusCode::UNAUTHORIZED, "Unauthorized\n".into());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"metrics\""),
            );
            return r;
        }
        let body = get().map(Metrics::render).unwrap_or_default();
        let mut r = reply(StatusCode::OK, body);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        r
    }
}

/// Time a scraper gets to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves HTTP/1 scrapes on one connection until it closes.
pub async fn serve_conn<S>(io: S, endpoint: Arc<Endpoint>) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ep = endpoint.clone();
        async move { Ok::<_, std::convert::Infallible>(ep.answer(&req)) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        .await
}

/// The global metrics server (`-metrics`, `metrics:`): binds `addr` now, serves until
/// `shutdown`. Not a service, so `gost_services` does not count it (as in gost).
pub async fn bind(
    addr: &str,
    endpoint: Endpoint,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    let tcp = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics: listen on {addr}: {e}"))?;
    let local = tcp.local_addr()?;
    let endpoint = Arc::new(endpoint);
    info!("metrics on http://{local}{}", endpoint.path);
    let task = tokio::spawn(async move {
        loop {
            let (conn, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = tcp.accept() => match c {
                    Ok(c) => c,
                    Err(e) => {
                        debug!("metrics accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let ep = endpoint.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_conn(conn, ep).await {
                    debug!(%peer, "metrics: {e}");
                }
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, auth: Option<&str>) -> Request<()> {
        let mut b = Request::get(path);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn endpoint_paths_and_basic_auth() {
        let ep = Endpoint::new(
            Some("/m"),
            Some(AuthConfig {
                username: "u".into(),
                password: "p:x".into(),
            }),
        );
        assert_eq!(ep.answer(&req("/metrics", None)).status(), 404);
        let r = ep.answer(&req("/m", None));
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"metrics\""
        );
        // base64("u:wrong"), base64("u:p:x")
        assert_eq!(
            ep.answer(&req("/m", Some("Basic dTp3cm9uZw=="))).status(),
            401
        );
        assert_eq!(ep.answer(&req("/m", Some("Basic dTpwOng="))).status(), 200);
        let open = Endpoint::new(None, None);
        assert_eq!(open.path, "/metrics");
        assert_eq!(open.answer(&req("/metrics", None)).status(), 200);
    }

    #[test]
    fn names_labels_and_values() {
        let m: &'static Metrics = Box::leak(Box::new(Metrics::new("h1".into())));
        let s = m.service("svc-a");
        let running = s.running();
        drop(s.request());
        let _open = s.request();
        let p = m.pht("svc-a");
        p.tunnel_opened();
        p.pull(true);
        p.answered(
            PhtKind::Pull,
            StatusCode::TOO_MANY_REQUESTS,
            Duration::ZERO,
            Some(RefusalReason("maxTunnels")),
        );
        p.answered(
            PhtKind::Push,
            StatusCode::OK,
            Duration::from_millis(2),
            None,
        );
        let text = m.render();
        for line in [
            "gost_services{host=\"h1\"} 1",
            "gost_service_requests_total{host=\"h1\",service=\"svc-a\"} 2",
            "gost_service_requests_in_flight{host=\"h1\",service=\"svc-a\"} 1",
            "gost_service_request_duration_seconds_count{host=\"h1\",service=\"svc-a\"} 1",
            "pht_tunnels{service=\"svc-a\"} 1",
            "pht_pulls_total{service=\"svc-a\",kind=\"resumed\"} 1",
            "pht_pulls_total{service=\"svc-a\",kind=\"attached\"} 0",
            "pht_http_requests_total{service=\"svc-a\",kind=\"pull\",code=\"429\"} 1",
            "pht_http_requests_total{service=\"svc-a\",kind=\"push\",code=\"200\"} 1",
            "pht_refusals_total{service=\"svc-a\",reason=\"maxTunnels\"} 1",
            "pht_push_duration_seconds_count{service=\"svc-a\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        drop(running);
        assert!(
            m.render()
                .lines()
                .any(|l| l == "gost_services{host=\"h1\"} 0")
        );
    }
}
