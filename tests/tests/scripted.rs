//! Our client library against scripted servers that behave like stable gost (authorize
//! required, pulls ended after each idle heartbeat) and like new gost (lazy tokens,
//! persistent pull).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pht_client::{HyperFetch, connect_with};
use pht_core::NodeUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Clone, Copy, PartialEq)]
enum Gen {
    /// gost ≤ 3.2: 403 for unknown tokens, each pull ends after an idle heartbeat.
    Stable,
    /// gost ≥ 3.3: tokens created on first sight, pulls stay open with heartbeats.
    New,
}

struct Tun {
    tx: mpsc::UnboundedSender<Option<Bytes>>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Option<Bytes>>>>,
}

struct Script {
    generation: Gen,
    heartbeat: Duration,
    tunnels: Mutex<HashMap<String, Arc<Tun>>>,
    seen: Mutex<Vec<String>>,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

impl Script {
    fn tunnel(&self, token: &str, create: bool) -> Option<Arc<Tun>> {
        let mut map = self.tunnels.lock().unwrap();
        if let Some(t) = map.get(token) {
            return Some(t.clone());
        }
        if !create {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let t = Arc::new(Tun {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        });
        map.insert(token.to_string(), t.clone());
        Some(t)
    }

    fn count(&self, what: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.as_str() == what)
            .count()
    }

    /// Requests whose record starts with `prefix` (`"push "`: every push of any token).
    fn count_prefix(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.starts_with(prefix))
            .count()
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let token = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
            .unwrap_or("")
            .to_string();
        let lazy = self.generation == Gen::New;
        match path.as_str() {
            "/authorize" => {
                let token = format!("tok{:017}", self.tunnels.lock().unwrap().len());
                self.tunnel(&token, true);
                reply(200, format!("token={token}"))
            }
            "/push" => {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                self.seen
                    .lock()
                    .unwrap()
                    .push(format!("push {token} {}", body.len()));
                let Some(t) = self.tunnel(&token, lazy) else {
                    return reply(403, "");
                };
                let line = body.split(|&b| b == b'\n').next().unwrap_or(b"");
                if line.is_empty() {
                    let _ = t.tx.send(None);
                    return reply(200, "");
                }
                let data = STANDARD.decode(line).unwrap();
                if data == b"CLOSE-ME" {
                    // The far end answers and hangs up.
                    let _ = t.tx.send(Some(Bytes::from_static(b"bye")));
                    let _ = t.tx.send(None);
                } else {
                    let _ = t.tx.send(Some(data.into()));
                }
                reply(200, "")
            }
            "/pull" => {
                self.seen.lock().unwrap().push(format!("pull {token}"));
                let Some(t) = self.tunnel(&token, lazy) else {
                    return reply(403, "");
                };
                let (generation, hb) = (self.generation, self.heartbeat);
                let rx = t.rx.clone();
                let lines = futures::stream::unfold(false, move |done| {
                    let rx = rx.clone();
                    async move {
                        if done {
                            return None;
                        }
                        let mut rx = rx.lock().await;
                        match tokio::time::timeout(hb, rx.recv()).await {
                            Err(_) if generation == Gen::Stable => {
                                Some((Bytes::from_static(b"\n"), true))
                            }
                            Err(_) => Some((Bytes::from_static(b"\n"), false)),
                            Ok(Some(Some(data))) => {
                                let mut l = STANDARD.encode(&data).into_bytes();
                                l.push(b'\n');
                                Some((Bytes::from(l), false))
                            }
                            Ok(_) => None,
                        }
                    }
                });
                let body = StreamBody::new(futures::StreamExt::map(lines, |b| Ok(Frame::data(b))));
                Response::new(body.boxed_unsync())
            }
            _ => reply(404, ""),
        }
    }
}

async fn start(generation: Gen) -> (Arc<Script>, SocketAddr) {
    let script = Arc::new(Script {
        generation,
        heartbeat: Duration::from_millis(100),
        tunnels: Mutex::new(HashMap::new()),
        seen: Mutex::new(Vec::new()),
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let s = script.clone();
    tokio::spawn(async move {
        loop {
            let (io, _) = l.accept().await.unwrap();
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let s = s.clone();
                    async move { Ok::<_, Infallible>(s.handle(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    (script, addr)
}

async fn open(addr: SocketAddr, extra: &str) -> pht_client::PhtStream {
    let node = NodeUrl::parse(&format!("forward+pht://{addr}{extra}")).unwrap();
    connect_with(&HyperFetch::plain(&addr.to_string()), &node)
        .await
        .unwrap()
}

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn against_stable_gost_long_poll_cycles_are_followed() {
    let (script, addr) = start(Gen::Stable).await;
    let mut s = open(addr, "").await;
    let token = s.get_ref().token().to_string();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(T, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    // Several long-poll cycles go by; the tunnel must still carry bytes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(b"pong").await.unwrap();
    tokio::time::timeout(T, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"pong");
    assert!(
        script.count(&format!("pull {token}")) >= 3,
        "the client re-polls after each heartbeat-ended pull"
    );
    s.shutdown().await.unwrap();
    assert_eq!(
        script.count(&format!("push {token} 0")),
        1,
        "close is one empty POST"
    );
}

#[tokio::test]
async fn against_stable_gost_a_minted_token_is_refused_with_a_clear_error() {
    let (_script, addr) = start(Gen::Stable).await;
    let mut s = open(addr, "?token=mint").await;
    let mut buf = [0u8; 1];
    let err = tokio::time::timeout(T, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pull refused by server: HTTP 403 (unknown token: was it authorized, or did the server restart?)"
    );
}

#[tokio::test]
async fn against_new_gost_minted_token_and_server_close_without_phantom() {
    let (script, addr) = start(Gen::New).await;
    let mut s = open(addr, "?token=mint").await;
    let token = s.get_ref().token().to_string();
    assert_eq!(script.count_prefix("push "), 0, "opening sends no push");
    s.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(T, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello");
    tokio::time::sleep(Duration::from_millis(350)).await; // heartbeats on a persistent pull
    s.write_all(b"CLOSE-ME").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b"bye", "data then EOF");
    // The pull that ended after data is the end: no second pull that would create a phantom.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(script.count(&format!("pull {token}")), 1);
    assert!(
        script.tunnels.lock().unwrap().keys().all(|k| k == &token),
        "authorize was never called"
    );
}
