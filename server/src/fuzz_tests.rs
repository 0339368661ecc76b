//! Property-based fuzzing of every pht-server parser reachable from the network or the
//! command line: the http, socks4/4a, socks5, relay and auto handlers (driven end to end
//! over in-memory streams), SOCKS address decoding, `-L`/`-F` normalisation and the
//! YAML/JSON config loader.
//!
//! Runs on stable Rust with `proptest`; `PROPTEST_CASES` scales every property (defaults
//! keep `cargo test` fast). See docs/FUZZING.md. No regression files are written: a
//! failure prints its shrunk input, which belongs in a plain unit test.
//!
//! Handlers never reach the network: every dial goes through a chain whose only node is a
//! local stand-in on 127.0.0.1 (a canned upstream, or a recording HTTP proxy that accepts
//! or refuses CONNECT). Each connection is one in-memory duplex stream: the fuzzed bytes
//! are written in fuzzed pieces, the write side is closed, and the whole exchange must end
//! (handler returned, stream closed) within [`LIMIT`], or the case fails as a hang.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use crate::config::{
    AuthConfig, ChainConfig, Config, ConnectorConfig, ForwardNodeConfig, ForwarderConfig,
    HopConfig, LoadError, NodeConfig, ServiceConfig, from_cli, load_source,
};
use crate::handler::{self, Handler};
use crate::listener::Accepted;
use crate::router::Router;

/// Longest a fuzzed connection may take from first byte to closed stream.
const LIMIT: Duration = Duration::from_secs(20);
/// How long a client that keeps its write side open waits for an answer.
const PATIENCE: Duration = Duration::from_millis(50);

/// `default` cases, or `PROPTEST_CASES` when set (at most `cap`: for slow properties).
fn config(default: u32, cap: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(default, |n: u32| n.min(cap));
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `test` on inputs from `strategy`; panics with the shrunk input on failure.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    check_capped(cases, u32::MAX, strategy, test);
}

/// [`check`] for a slow property: `PROPTEST_CASES` is followed up to `cap`.
fn check_capped<S: Strategy>(
    cases: u32,
    cap: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(config(cases, cap));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Input helpers
// ---------------------------------------------------------------------------------------

/// Applies a few byte edits (replace, insert, delete, truncate) to a valid message, so
/// the fuzzer spends its time near the protocol rather than in the first byte check.
fn mutated(valid: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let edits = prop::collection::vec((0u8..4, any::<Index>(), any::<u8>()), 1..4);
    (valid, edits)
        .prop_map(|(mut v, edits)| {
            for (op, i, b) in edits {
                match op {
                    0 if !v.is_empty() => {
                        let i = i.index(v.len());
                        v[i] = b;
                    }
                    1 => {
                        let i = i.index(v.len() + 1);
                        v.insert(i, b);
                    }
                    2 if !v.is_empty() => {
                        let i = i.index(v.len());
                        v.remove(i);
                    }
                    3 => {
                        let i = i.index(v.len() + 1);
                        v.truncate(i);
                    }
                    _ => {}
                }
            }
            v
        })
        .boxed()
}

/// Valid messages, mutated ones, and noise.
fn fuzz_input(valid: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => valid.clone(),
        6 => mutated(valid),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
    .boxed()
}

/// `data` cut into pieces at the cut points.
fn split(data: &[u8], cuts: &[Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for a in at {
        out.push(data[prev..a].to_vec());
        prev = a;
    }
    out.push(data[prev..].to_vec());
    out
}

fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..6)
}

/// Domain names as a client may send them: plain, arbitrary bytes, and with the
/// characters that would break a request line built from them.
fn domain() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => "[a-z0-9.\\-]{0,20}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..40),
        1 => "[a-z]{1,5}( |\t|\r\n|\n|\r\n\r\nGET / HTTP/1.0\r\n\r\n)[a-z]{0,5}".prop_map(String::into_bytes),
    ]
    .boxed()
}

/// SOCKS5 / relay `ATYP ADDR PORT`.
fn socks_addr() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        2 => (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| [&[1][..], &ip, &p.to_be_bytes()].concat()),
        1 => (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| [&[4][..], &ip, &p.to_be_bytes()].concat()),
        3 => (domain(), any::<u16>()).prop_map(|(d, p)| {
            let d = &d[..d.len().min(255)];
            [&[3, d.len() as u8][..], d, &p.to_be_bytes()].concat()
        }),
        1 => (any::<u8>(), prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(t, d)| [&[t][..], &d].concat()),
    ]
    .boxed()
}

/// Credentials: mostly the service's own (`user`/`pass`), sometimes wrong ones.
fn user_pass() -> BoxedStrategy<(Vec<u8>, Vec<u8>)> {
    prop_oneof![
        3 => Just((b"user".to_vec(), b"pass".to_vec())),
        1 => (prop::collection::vec(any::<u8>(), 0..8), prop::collection::vec(any::<u8>(), 0..8)),
    ]
    .boxed()
}

fn trailing() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..32)
}

/// A SOCKS5 greeting, sub-negotiation (usually present when the service has
/// credentials), request and early data.
fn socks5_request(auth: bool) -> BoxedStrategy<Vec<u8>> {
    let method = if auth { 2u8 } else { 0u8 };
    (
        prop::collection::vec(prop_oneof![4 => Just(method), 1 => any::<u8>()], 0..4),
        prop::option::weighted(if auth { 0.9 } else { 0.1 }, user_pass()),
        prop_oneof![6 => Just(1u8), 1 => Just(2), 1 => Just(3), 1 => Just(0xF2), 1 => Just(0xF3), 1 => any::<u8>()],
        socks_addr(),
        trailing(),
    )
        .prop_map(|(methods, auth, cmd, addr, data)| {
            let mut v = vec![5, methods.len() as u8];
            v.extend(methods);
            if let Some((u, p)) = auth {
                v.extend([1, u.len() as u8]);
                v.extend(u);
                v.push(p.len() as u8);
                v.extend(p);
            }
            v.extend([5, cmd, 0]);
            v.extend(addr);
            v.extend(data);
            v
        })
        .boxed()
}

/// A SOCKS4 or SOCKS4a request (the service's user id is `user`) and early data.
fn socks4_request(_auth: bool) -> BoxedStrategy<Vec<u8>> {
    (
        prop_oneof![6 => Just(1u8), 1 => Just(2u8), 1 => any::<u8>()],
        any::<u16>(),
        prop_oneof![Just([127, 0, 0, 1]), Just([0, 0, 0, 1]), any::<[u8; 4]>()],
        prop_oneof![
            3 => Just(b"user".to_vec()),
            1 => prop::collection::vec(1u8.., 0..12),
            1 => prop::collection::vec(1u8.., 250..262),
        ],
        domain(),
        trailing(),
    )
        .prop_map(|(cmd, port, ip, userid, host, data)| {
            let mut v = vec![4, cmd];
            v.extend(port.to_be_bytes());
            v.extend(ip);
            v.extend(userid);
            v.push(0);
            if ip[..3] == [0, 0, 0] && ip[3] != 0 {
                v.extend(host.into_iter().filter(|&b| b != 0));
                v.push(0);
            }
            v.extend(data);
            v
        })
        .boxed()
}

fn relay_feature(auth: bool) -> BoxedStrategy<Vec<u8>> {
    let framed = |t: u8, d: Vec<u8>| [&[t][..], &(d.len() as u16).to_be_bytes(), &d].concat();
    prop_oneof![
        if auth { 3 } else { 1 } => user_pass().prop_map(move |(u, p)| {
            framed(1, [&[u.len() as u8][..], &u, &[p.len() as u8], &p].concat())
        }),
        4 => socks_addr().prop_map(move |a| framed(2, a)),
        1 => prop_oneof![Just(0u16), Just(1), Just(2), Just(0x10), any::<u16>()]
            .prop_map(move |n| framed(4, n.to_be_bytes().to_vec())),
        1 => (any::<u8>(), prop::collection::vec(any::<u8>(), 0..16)).prop_map(move |(t, d)| framed(t, d)),
    ]
    .boxed()
}

/// A relay request: `01 CMD FEALEN FEATURES`, then early data.
fn relay_request(auth: bool) -> BoxedStrategy<Vec<u8>> {
    (
        prop_oneof![6 => Just(1u8), 1 => Just(2), 1 => Just(0x81), 1 => Just(0), 1 => any::<u8>()],
        prop::collection::vec(relay_feature(auth), 0..4),
        trailing(),
    )
        .prop_map(|(cmd, features, data)| {
            let f = features.concat();
            let mut v = vec![1, cmd];
            v.extend((f.len() as u16).to_be_bytes());
            v.extend(f);
            v.extend(data);
            v
        })
        .boxed()
}

/// An HTTP/1.x request head (credentials usually right when the service has them), and
/// a body or early tunnel data: CONNECT, absolute-form and origin-form requests, and odd
/// request lines.
fn http_request(auth: bool) -> BoxedStrategy<Vec<u8>> {
    let host = prop_oneof![
        Just("example.com".to_string()),
        Just("127.0.0.1".to_string()),
        Just("[::1]".to_string()),
        Just("u:p@localhost".to_string()),
        "[a-z0-9.\\-_]{1,12}",
    ];
    let authority = (
        host,
        prop::option::of(prop_oneof![4 => 1u32..65536, 1 => 0u32..100_000]),
    )
        .prop_map(|(h, p)| match p {
            Some(p) => format!("{h}:{p}"),
            None => h,
        });
    let path = "/[a-z0-9?=&%._\\-]{0,10}";
    let line = prop_oneof![
        3 => authority.clone().prop_map(|a| ("CONNECT".to_string(), a, None)),
        3 => (prop_oneof![Just("GET"), Just("POST"), Just("HEAD"), Just("OPTIONS")], authority.clone(), path)
            .prop_map(|(m, a, p)| (m.to_string(), format!("http://{a}{p}"), None)),
        3 => (prop_oneof![Just("GET"), Just("PUT"), Just("DELETE")], path, authority)
            .prop_map(|(m, p, a)| (m.to_string(), p, Some(a))),
        2 => (
            prop_oneof![Just("PRI".to_string()), "[A-Za-z]{1,7}", "[ -~]{0,6}"],
            prop_oneof![
                "(http|HTTP|https|ftp)://[a-z0-9.:@\\[\\]]{0,12}(/[a-z?=&]{0,8})?",
                Just("*".to_string()),
                "[^ \r\n]{0,20}",
            ],
        )
            .prop_map(|(m, t)| (m, t, None)),
    ];
    let version = prop_oneof![
        6 => Just("HTTP/1.1".to_string()),
        2 => Just("HTTP/1.0".to_string()),
        1 => Just("HTTP/2.0".to_string()),
        1 => "[ -~]{0,9}",
    ];
    let header = prop_oneof![
        1 => "Proxy-Authorization: (Basic |basic |)[A-Za-z0-9+/=]{0,12}",
        1 => Just("X-Gost-Protocol: udp".to_string()),
        1 => Just("Proxy-Connection: keep-alive".to_string()),
        1 => "Content-Length: [0-9]{1,3}",
        1 => Just("Transfer-Encoding: chunked".to_string()),
        1 => Just("Upgrade: websocket".to_string()),
        1 => Just("Connection: Upgrade".to_string()),
        1 => "[ \t][ -~]{0,10}",
        4 => "[A-Za-z-]{1,10}: ?[ -~]{0,20}",
        1 => "[^\r\n]{0,20}",
    ];
    (
        line,
        version,
        prop::collection::vec(header, 0..3),
        prop::bool::weighted(if auth { 0.8 } else { 0.1 }),
        prop::bool::weighted(0.2),
        trailing(),
    )
        .prop_map(|((m, t, host), v, headers, creds, bare_lf, body)| {
            let eol = if bare_lf { "\n" } else { "\r\n" };
            let mut s = format!("{m} {t} {v}{eol}");
            if let Some(h) = host {
                s.push_str(&format!("Host: {h}{eol}"));
            }
            if creds {
                s.push_str(&format!("Proxy-Authorization: Basic dXNlcjpwYXNz{eol}"));
            }
            for h in headers {
                s.push_str(&h);
                s.push_str(eol);
            }
            s.push_str(eol);
            let mut out = s.into_bytes();
            out.extend(body);
            out
        })
        .boxed()
}

fn any_request(auth: bool) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        socks5_request(auth),
        socks4_request(auth),
        http_request(auth)
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------
// Local stand-ins for everything the handlers dial
// ---------------------------------------------------------------------------------------

const CANNED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Where a fuzzed handler's dials end up.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// A `forward` hop to a server that answers [`CANNED`] and closes: every dial works.
    Upstream,
    /// An `http` hop to a proxy that accepts CONNECT, then answers [`CANNED`].
    ProxyOk,
    /// An `http` hop to a proxy that refuses CONNECT with 503: every dial fails.
    ProxyRefuses,
}

struct Upstreams {
    upstream: SocketAddr,
    proxy_ok: SocketAddr,
    proxy_refuses: SocketAddr,
    /// What the proxies received before answering, one entry per connection.
    heads: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Upstreams {
    async fn start() -> Self {
        let heads = Arc::new(Mutex::new(Vec::new()));
        Upstreams {
            upstream: serve(None, heads.clone()).await,
            proxy_ok: serve(
                Some(b"HTTP/1.1 200 Connection established\r\n\r\n"),
                heads.clone(),
            )
            .await,
            proxy_refuses: serve(
                Some(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"),
                heads.clone(),
            )
            .await,
            heads,
        }
    }

    fn router(&self, route: Route) -> Router {
        let (addr, connector) = match route {
            Route::Upstream => (self.upstream, "forward"),
            Route::ProxyOk => (self.proxy_ok, "http"),
            Route::ProxyRefuses => (self.proxy_refuses, "http"),
        };
        let chain = ChainConfig {
            name: "fuzz".into(),
            hops: vec![HopConfig {
                name: "hop".into(),
                nodes: vec![NodeConfig {
                    name: "node".into(),
                    addr: addr.to_string(),
                    connector: ConnectorConfig {
                        kind: connector.into(),
                        ..Default::default()
                    },
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Router::for_chain(Some("fuzz"), &[chain]).expect("fuzz chain")
    }

    fn take_heads(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.heads.lock().unwrap())
    }
}

/// A loopback server: as a proxy (`answer` set) it records the request head and answers
/// it; then it sends [`CANNED`] and closes.
async fn serve(answer: Option<&'static [u8]>, heads: Arc<Mutex<Vec<Vec<u8>>>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                if let Some(answer) = answer {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let read_head = async {
                        while pht_core::http_head_end(&buf).is_none() && buf.len() < 65536 {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(5), read_head).await;
                    heads.lock().unwrap().push(buf);
                    if s.write_all(answer).await.is_err() || answer.starts_with(b"HTTP/1.1 5") {
                        return;
                    }
                }
                // Answer once the client has spoken (or closed, or been silent a while),
                // as a server would.
                let mut first = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(1), s.read(&mut first)).await;
                let _ = s.write_all(CANNED).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Checks what a recording proxy received: exactly one CONNECT request head as
/// pht-core builds it, whatever the client asked the handler for.
fn check_connect_head(head: &[u8]) -> Result<(), TestCaseError> {
    if head.is_empty() {
        // The chain reached the proxy, then refused the target before writing.
        return Ok(());
    }
    let text = String::from_utf8_lossy(head);
    prop_assert_eq!(
        pht_core::http_head_end(head),
        Some(head.len()),
        "{:?}",
        text
    );
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let parts: Vec<&str> = first.split(' ').collect();
    prop_assert!(
        parts.len() == 3 && parts[0] == "CONNECT" && parts[2] == "HTTP/1.1",
        "request line {:?}",
        first
    );
    prop_assert!(!first.bytes().any(|b| b.is_ascii_control()), "{:?}", first);
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default();
        prop_assert!(
            [
                "Host",
                "User-Agent",
                "Proxy-Authorization",
                "Proxy-Connection"
            ]
            .contains(&name),
            "unexpected header line {:?} in {:?}",
            line,
            text
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Handlers, end to end
// ---------------------------------------------------------------------------------------

fn service(kind: &str, auth: bool, forwarder: bool) -> ServiceConfig {
    let mut svc = ServiceConfig {
        name: "fuzz".into(),
        addr: ":0".into(),
        ..Default::default()
    };
    svc.handler.kind = kind.into();
    if auth {
        svc.handler.auth = Some(AuthConfig {
            username: "user".into(),
            password: "pass".into(),
        });
        if kind.starts_with("socks4") {
            svc.handler.auth.as_mut().unwrap().password = String::new();
        }
    }
    svc.handler.metadata.insert("readTimeout", "3s");
    if forwarder {
        svc.forwarder = Some(ForwarderConfig {
            nodes: vec![ForwardNodeConfig {
                name: "target".into(),
                addr: "127.0.0.1:9".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    svc
}

/// Serves one in-memory connection carrying `chunks`; returns everything the handler
/// sent back. The client closes its write side right after the last piece
/// (`close_early`), or once the handler has answered or closed (at most [`PATIENCE`]
/// later): hyper drops a plain HTTP request whose client half-closes before the answer.
/// Fails the case if the exchange does not end within [`LIMIT`].
async fn exchange(
    h: &dyn Handler,
    chunks: Vec<Vec<u8>>,
    close_early: bool,
) -> Result<Vec<u8>, TestCaseError> {
    let answered = tokio::sync::Notify::new();
    let (client, server) = tokio::io::duplex(1 << 16);
    let conn = Accepted {
        stream: Box::new(server),
        peer: "127.0.0.1:40000".parse().unwrap(),
        tag: None,
        local: None,
    };
    let (mut rd, mut wr) = tokio::io::split(client);
    let answered = &answered;
    let write = async move {
        for c in chunks {
            if wr.write_all(&c).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        if !close_early {
            let _ = tokio::time::timeout(PATIENCE, answered.notified()).await;
        }
        let _ = wr.shutdown().await;
    };
    let read = async {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = rd.read(&mut buf).await.unwrap_or(0);
            answered.notify_one();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    };
    match tokio::time::timeout(LIMIT, async { tokio::join!(h.handle(conn), write, read) }).await {
        Ok(((), (), out)) => Ok(out),
        Err(_) => Err(TestCaseError::fail(
            "the exchange hung (handler did not finish)",
        )),
    }
}

/// What one handler's answer must look like, given where its dials go. `Ok(true)`: the
/// answer is the protocol's success reply.
fn check_answer(kind: &str, first: u8, route: Route, out: &[u8]) -> Result<bool, TestCaseError> {
    let kind = match (kind, first) {
        ("auto", 5) => "socks5",
        ("auto", 4) => "socks4",
        ("auto", _) => "http",
        (k, _) => k,
    };
    if out.is_empty() {
        return Ok(false);
    }
    let refused = matches!(route, Route::ProxyRefuses);
    match kind {
        "socks4" => {
            prop_assert!(out.len() >= 8 && out[0] == 0, "{:02x?}", out);
            prop_assert!([0x5A, 0x5B, 0x5D].contains(&out[1]), "{:02x?}", out);
            if out[1] != 0x5A {
                prop_assert_eq!(out.len(), 8);
            }
            prop_assert!(!(refused && out[1] == 0x5A), "granted a failed dial");
            Ok(out[1] == 0x5A)
        }
        "socks5" => {
            prop_assert_eq!(out[0], 5, "{:02x?}", out);
            // Method choice, then (user/pass) status, then the reply.
            if out.len() >= 2 && out[1] != 0xFF {
                let mut at = 2;
                if out[1] == 2 && out.len() >= 4 {
                    at = 4;
                }
                if let Some(reply) = out.get(at..at + 2) {
                    prop_assert_eq!(reply[0], 5, "{:02x?}", out);
                    prop_assert!(!(refused && reply[1] == 0), "success for a failed dial");
                    return Ok(reply[1] == 0);
                }
            }
            Ok(false)
        }
        "relay" => {
            prop_assert!(
                out.len() >= 4 && out[0] == 1 && out[2..4] == [0, 0],
                "{:02x?}",
                out
            );
            prop_assert!(!(refused && out[1] == 0), "OK for a failed dial");
            Ok(out[1] == 0)
        }
        _ => {
            prop_assert!(
                out.starts_with(b"HTTP/1."),
                "{:?}",
                String::from_utf8_lossy(out)
            );
            prop_assert!(
                !(refused && out.starts_with(b"HTTP/1.1 200 Connection established")),
                "200 for a failed dial"
            );
            Ok(out.starts_with(b"HTTP/1.1 200"))
        }
    }
}

fn route() -> impl Strategy<Value = Route> {
    prop_oneof![
        Just(Route::Upstream),
        Just(Route::ProxyOk),
        Just(Route::ProxyRefuses)
    ]
}

/// Fuzzes the `kind` handler with `input`, in every configuration: with and without
/// credentials, every route.
fn fuzz_handler(
    kind: &'static str,
    cases: u32,
    request: fn(bool) -> BoxedStrategy<Vec<u8>>,
    forwarder: bool,
) {
    let rt = runtime();
    let up = rt.block_on(Upstreams::start());
    let strategy = any::<bool>().prop_flat_map(move |auth| {
        (
            fuzz_input(request(auth)),
            cuts(),
            Just(auth),
            route(),
            any::<bool>(),
            any::<bool>(),
        )
    });
    // How many cases got as far as a success reply: the generators must reach past the
    // request parsing, or the property proves little.
    let (runs, successes) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    check(
        cases,
        strategy,
        |(bytes, cuts, auth, route, fwd, close_early)| {
            let svc = service(kind, auth, forwarder && fwd);
            let h = handler::build(&svc, up.router(route)).expect("handler builds");
            let first = bytes.first().copied().unwrap_or(0);
            let out = rt.block_on(exchange(&*h, split(&bytes, &cuts), close_early))?;
            runs.set(runs.get() + 1);
            if std::env::var_os("PHT_FUZZ_DEBUG").is_some() {
                eprintln!(
                    "{kind} {auth} {route:?} {:?}\n  -> {:?}",
                    String::from_utf8_lossy(&bytes),
                    String::from_utf8_lossy(&out[..out.len().min(60)])
                );
            }
            if check_answer(kind, first, route, &out)? {
                successes.set(successes.get() + 1);
            }
            for head in up.take_heads() {
                check_connect_head(&head)?;
            }
            Ok(())
        },
    );
    eprintln!(
        "{kind}: {} of {} connections got a success reply",
        successes.get(),
        runs.get()
    );
    if runs.get() >= 64 {
        assert!(
            successes.get() > 0,
            "{kind}: no fuzzed connection got past the request"
        );
    }
}

#[test]
fn socks5_handler() {
    fuzz_handler("socks5", 128, socks5_request, false);
}

#[test]
fn socks4_handler() {
    fuzz_handler("socks4", 128, socks4_request, false);
}

#[test]
fn relay_handler() {
    fuzz_handler("relay", 128, relay_request, true);
}

#[test]
fn http_handler() {
    fuzz_handler("http", 128, http_request, false);
}

#[test]
fn auto_handler() {
    fuzz_handler("auto", 128, any_request, false);
}

/// The request head is bounded: a client that never ends its head is answered 400 once
/// it passes 64 KiB, whatever the piece sizes.
#[test]
fn http_head_is_bounded() {
    let rt = runtime();
    let up = rt.block_on(Upstreams::start());
    let h = handler::build(&service("http", false, false), up.router(Route::Upstream)).unwrap();
    check_capped(8, 200, (1usize..120, 64usize..9000), |(line, piece)| {
        let mut head = b"GET http://example.com/ HTTP/1.1\r\n".to_vec();
        let header = format!("X: {}\r\n", "a".repeat(line));
        while head.len() < 80 * 1024 {
            head.extend_from_slice(header.as_bytes());
        }
        let chunks: Vec<Vec<u8>> = head.chunks(piece).map(<[u8]>::to_vec).collect();
        let out = rt.block_on(exchange(&*h, chunks, true))?;
        prop_assert!(
            out.starts_with(b"HTTP/1.1 400"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// SOCKS address decoding
// ---------------------------------------------------------------------------------------

/// pht-core's SOCKS address codec as the handlers use it: `SocksAddr::decode` (relay's Addr
/// feature, SOCKS5 UDP headers: a byte slice) and `SocksAddr::read` (SOCKS5 requests: a
/// stream) agree on every input, same address or both refuse, and what they accept
/// encodes back to an address that decodes the same (unless a name that is not UTF-8
/// grew past 255 bytes in its replacement characters).
#[test]
fn socks_addr_decoders_agree() {
    use pht_core::socks_addr::SocksAddr;
    let rt = runtime();
    check(1024, fuzz_input(socks_addr()), |bytes| {
        let sliced = SocksAddr::decode(&bytes).ok();
        let streamed = match bytes.split_first() {
            None => None,
            Some((&atyp, mut rest)) => rt.block_on(SocksAddr::read(&mut rest, atyp)).ok(),
        };
        prop_assert_eq!(sliced.as_ref().map(|(a, _)| a), streamed.as_ref());
        if let Some((a, used)) = sliced {
            prop_assert!(used <= bytes.len());
            let text = a.to_string();
            prop_assert!(
                text.rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
                "{}",
                text
            );
            let mut wire = Vec::new();
            if a.encode(&mut wire).is_ok() {
                prop_assert_eq!(SocksAddr::decode(&wire), Ok((a, wire.len())));
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// Command line: -L / -F
// ---------------------------------------------------------------------------------------

/// gost-style `-L`/`-F` strings: noise, and URLs assembled from the grammar's pieces
/// (port ranges kept small: `:1-65535` legitimately makes 65535 services).
fn cli_url() -> BoxedStrategy<String> {
    let scheme = prop_oneof![
        Just(String::new()),
        "(auto|http|https|socks|socks4|socks4a|socks5|relay|tcp|forward|file|pht|phts|tls|ss|[a-z]{1,5})(\\+(pht|phts|tls|tcp|ws|[a-z]{1,4}))?://",
    ];
    let user = "([a-z%0-9]{0,5}(:[a-z%0-9]{0,5})?@)?";
    let host = "(\\[[0-9a-f:]{0,10}\\]|[a-z0-9.]{0,10})(:[0-9]{1,4}(-[0-9]{1,2})?)?(,[a-z0-9.]{0,5}:[0-9]{1,3})?";
    let path = "(/([a-z0-9.]{0,8}:[0-9]{1,4}(-[0-9]{1,2})?)?(,[a-z0-9.]{0,5}:[0-9]{1,3})?)?";
    let key = prop_oneof![
        Just("auth".to_string()),
        Just("secure".to_string()),
        Just("strategy".to_string()),
        Just("maxFails".to_string()),
        Just("failTimeout".to_string()),
        Just("readTimeout".to_string()),
        Just("pushPath".to_string()),
        Just("backlog".to_string()),
        Just("heartbeat".to_string()),
        Just("maxPushBody".to_string()),
        Just("cors".to_string()),
        Just("bind".to_string()),
        Just("udp".to_string()),
        Just("token".to_string()),
        Just("serverName".to_string()),
        "(handler|listener|service|connector|dialer|node|hop)\\.[a-zA-Z]{1,8}",
        "[a-zA-Z%+]{0,6}",
    ];
    let value = "[a-zA-Z0-9%+:.,*\\-=]{0,10}";
    let structured = (
        scheme,
        user,
        host,
        path,
        prop::collection::vec((key, value), 0..4),
    )
        .prop_map(|(s, u, h, p, q)| {
            let q: Vec<String> = q.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            let q = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            format!("{s}{u}{h}{p}{q}")
        });
    prop_oneof![".{0,50}", "[a-z0-9:/@?&=%+,\\[\\].\\- ]{0,50}", structured].boxed()
}

/// Resolves and builds what a configuration describes, short of binding or dialling:
/// chains, handlers, listeners (exactly what `pht-server` does before it binds). Nothing
/// may panic, and a refusal names where and why.
fn plan(cfg: &mut Config) -> Result<(), TestCaseError> {
    if let Err(e) = crate::plan::Plan::build(cfg) {
        prop_assert!(!e.issues.is_empty());
        for issue in &e.issues {
            prop_assert!(
                !issue.path.is_empty() && !issue.message.is_empty(),
                "{issue:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn cli_flags() {
    let rt = runtime();
    let _enter = rt.enter();
    let strategy = (
        prop::collection::vec(cli_url(), 0..3),
        prop::collection::vec(cli_url(), 0..3),
    );
    check(256, strategy, |(listens, forwards)| {
        match from_cli(&listens, &forwards) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(mut cfg) => {
                // What `-O yaml` prints, `-C` reads back unchanged.
                let yaml = serde_yaml::to_string(&cfg).expect("config serialises");
                let back: Config = serde_yaml::from_str(&yaml).map_err(|e| {
                    TestCaseError::fail(format!("-O output unreadable: {e}\n{yaml}"))
                })?;
                prop_assert_eq!(&back, &cfg, "{}", yaml);
                plan(&mut cfg)?;
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// Config files: YAML and JSON
// ---------------------------------------------------------------------------------------

/// Writes `text` to a per-test temporary file named `*.ext` and loads it with
/// [`load_source`], exactly as `-C FILE` does.
struct ConfigFile {
    path: std::path::PathBuf,
}

impl ConfigFile {
    fn new(test: &str, ext: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("pht-fuzz-{}-{test}-{n}.{ext}", std::process::id()));
        ConfigFile { path }
    }

    fn load(&self, text: &str) -> Result<Config, LoadError> {
        std::fs::write(&self.path, text).expect("write temp config");
        load_source(self.path.to_str().unwrap())
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A loaded configuration is resolved and built; a refused one names where and why.
fn check_loaded(res: Result<Config, LoadError>) -> Result<(), TestCaseError> {
    match res {
        Ok(mut cfg) => plan(&mut cfg)?,
        Err(LoadError::Parse { path, message, .. }) => {
            prop_assert!(
                !path.is_empty() && !message.is_empty(),
                "{path:?}: {message:?}"
            );
        }
        Err(e) => prop_assert!(false, "not a parse error: {e}"),
    }
    Ok(())
}

const KEYS: &[&str] = &[
    "services",
    "chains",
    "authers",
    "admissions",
    "bypasses",
    "log",
    "tls",
    "name",
    "addr",
    "handler",
    "listener",
    "forwarder",
    "metadata",
    "type",
    "chain",
    "auth",
    "auther",
    "username",
    "password",
    "auths",
    "nodes",
    "selector",
    "strategy",
    "maxFails",
    "failTimeout",
    "hops",
    "connector",
    "dialer",
    "level",
    "secure",
    "serverName",
    "validity",
    "matchers",
    "whitelist",
    "reverse",
    "admission",
    "bypass",
    "readTimeout",
    "pushPath",
    "backlog",
    "heartbeat",
    "maxPushBody",
    "cors",
    "names",
    "commonName",
    "header",
];

const WORDS: &[&str] = &[
    "http",
    "socks5",
    "socks4",
    "relay",
    "auto",
    "forward",
    "tcp",
    "pht",
    "phts",
    "tls",
    ":8080",
    "127.0.0.1:1",
    "[::1]:80",
    "10s",
    "-1s",
    "0",
    "true",
    "yes",
    "1KiB",
    "chain-0",
    "hop-0",
    "a1",
    "10.0.0.0/8",
    "*.example.com",
    "round",
    "fifo",
    "",
    "*",
];

/// A YAML/JSON tree that uses the schema's own keys, with values of every type.
fn config_tree() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(WORDS).prop_map(|s| Value::String(s.into())),
    ];
    let key = prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-zA-Z.]{1,8}",
    ];
    leaf.prop_recursive(5, 96, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A valid configuration to mutate.
const SAMPLE_YAML: &str = "\
services:
- name: service-0
  addr: :8443
  handler: {type: http, chain: chain-0, auth: {username: u, password: p}, metadata: {readTimeout: 10s}}
  listener: {type: pht, metadata: {pushPath: /up, backlog: 8}}
  forwarder: {nodes: [{name: t, addr: '127.0.0.1:22'}], selector: {strategy: fifo, maxFails: 1, failTimeout: 30s}}
chains:
- name: chain-0
  hops:
  - name: hop-0
    nodes:
    - {name: node-0, addr: '127.0.0.1:1080', connector: {type: socks5}, dialer: {type: tcp}}
log: {level: info}
";

#[test]
fn config_files_structured() {
    let rt = runtime();
    let _enter = rt.enter();
    let yaml = ConfigFile::new("structured", "yaml");
    let json = ConfigFile::new("structured", "json");
    let top = prop::collection::vec(
        (
            prop_oneof![
                4 => prop::sample::select(&KEYS[..6]).prop_map(str::to_string),
                1 => prop::sample::select(KEYS).prop_map(str::to_string),
            ],
            config_tree(),
        ),
        0..4,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().collect()));
    check(256, top, |tree| {
        check_loaded(yaml.load(&serde_yaml::to_string(&tree).unwrap()))?;
        check_loaded(json.load(&serde_json::to_string(&tree).unwrap()))?;
        Ok(())
    });
}

#[test]
fn config_files_mutated_and_noise() {
    let rt = runtime();
    let _enter = rt.enter();
    let yaml = ConfigFile::new("mutated", "yaml");
    let json = ConfigFile::new("mutated", "json");
    let sample_json = {
        let v: Value = serde_yaml::from_str(SAMPLE_YAML).unwrap();
        serde_json::to_string_pretty(&v).unwrap()
    };
    let sample = prop_oneof![
        Just(SAMPLE_YAML.as_bytes().to_vec()),
        Just(sample_json.into_bytes())
    ];
    let text = prop_oneof![
        4 => mutated(sample.boxed()).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => ".{0,200}",
        1 => "[\\[\\]{}:,\\-&*!|>'\"# \n\ta-z0-9]{0,200}",
    ];
    check(256, text, |text| {
        check_loaded(yaml.load(&text))?;
        check_loaded(json.load(&text))?;
        if text.trim_start().starts_with('{') {
            check_loaded(load_source(&text))?;
        }
        Ok(())
    });
}

/// Deep nesting and alias expansion end in a parse error, not a stack overflow or an
/// exponential blow-up.
#[test]
fn config_files_hostile_shapes() {
    let yaml = ConfigFile::new("hostile", "yaml");
    let json = ConfigFile::new("hostile", "json");
    // YAML flow nesting costs quadratic time in the YAML scanner (5 000 levels: ~0.1 s,
    // 40 000: ~15 s; see docs/FUZZING.md), so the depths here stay moderate.
    for depth in [64, 1000, 5000] {
        let started = std::time::Instant::now();
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        check_loaded(yaml.load(&format!("services: {nested}"))).unwrap();
        check_loaded(json.load(&format!("{{\"services\": {nested}}}"))).unwrap();
        let maps = format!("services:\n{}", "- a: ".repeat(depth));
        check_loaded(yaml.load(&maps)).unwrap();
        let objects = format!("{}{}", "{\"a\": ".repeat(depth), "}".repeat(depth));
        check_loaded(json.load(&objects)).unwrap();
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(10),
            "depth {depth}: {elapsed:?}"
        );
    }
    for depth in [100_000, 1_000_000] {
        // JSON and block-style YAML stay linear.
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        check_loaded(json.load(&format!("{{\"services\": {nested}}}"))).unwrap();
        check_loaded(yaml.load(&format!("services:\n{}", "- a: ".repeat(depth)))).unwrap();
    }
    // Billion laughs: each level refers to the one before nine times.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        bomb.push_str(&format!(
            "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    bomb.push_str("services: *i\n");
    let started = std::time::Instant::now();
    let res = yaml.load(&bomb);
    assert!(res.is_err(), "an alias bomb was accepted");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "alias bomb took {:?}",
        started.elapsed()
    );
}
