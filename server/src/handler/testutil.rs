//! Helpers for handler tests: in-memory clients and local targets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;

use super::Handler;
use crate::config::{AuthConfig, ForwardNodeConfig, ForwarderConfig, ServiceConfig};
use crate::listener::Accepted;
use crate::router::Router;

/// Guards every read so a broken handler fails the test instead of hanging it.
const LIMIT: Duration = Duration::from_secs(10);

pub fn service(kind: &str, auth: Option<(&str, &str)>, meta: &[(&str, &str)]) -> ServiceConfig {
    let mut svc = ServiceConfig {
        name: "test".into(),
        addr: ":0".into(),
        ..Default::default()
    };
    svc.handler.kind = kind.into();
    svc.handler.auth = auth.map(|(u, p)| AuthConfig {
        username: u.into(),
        password: p.into(),
    });
    for (k, v) in meta {
        svc.handler.metadata.insert(*k, *v);
    }
    svc
}

pub fn with_forwarder(mut svc: ServiceConfig, nodes: &[String]) -> ServiceConfig {
    svc.forwarder = Some(ForwarderConfig {
        nodes: nodes
            .iter()
            .map(|a| ForwardNodeConfig {
                name: a.clone(),
                addr: a.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    svc
}

pub fn build(kind: &str, auth: Option<(&str, &str)>, meta: &[(&str, &str)]) -> Arc<dyn Handler> {
    super::build(&service(kind, auth, meta), Router::direct()).expect("handler builds")
}

/// Serves one in-memory connection on `h`; returns the client end.
pub fn start(h: Arc<dyn Handler>) -> DuplexStream {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let conn = Accepted {
        stream: Box::new(server),
        peer: "127.0.0.1:40000".parse().unwrap(),
        tag: None,
        local: None,
    };
    tokio::spawn(async move { h.handle(conn).await });
    client
}

/// A TCP echo server on 127.0.0.1.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A server that greets every connection with `banner`, then echoes.
pub async fn banner_server(banner: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(banner).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

pub async fn read_n(c: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(LIMIT, c.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .expect("read failed");
    buf
}

pub async fn read_to_end(c: &mut DuplexStream) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(LIMIT, c.read_to_end(&mut buf))
        .await
        .expect("read timed out")
        .expect("read failed");
    buf
}

/// `svc` with one resolved bypass list of `entries` (a whitelist with `whitelist`).
pub fn with_bypass(mut svc: ServiceConfig, whitelist: bool, entries: &[&str]) -> ServiceConfig {
    use crate::access::{AccessList, Bypass, ListKind, Rules};
    let list = AccessList::compile("b", whitelist, entries, ListKind::Bypass).expect("entries");
    svc.bypass = Some("b".into());
    svc.bypass_rules = Rules::new(Bypass::new(vec![list]));
    svc
}

/// `svc` with one resolved admission list of `entries`.
pub fn with_admission(mut svc: ServiceConfig, whitelist: bool, entries: &[&str]) -> ServiceConfig {
    use crate::access::{AccessList, Admission, ListKind, Rules};
    let list = AccessList::compile("a", whitelist, entries, ListKind::Admission).expect("entries");
    svc.admission = Some("a".into());
    svc.admission_rules = Rules::new(Admission::new(vec![list]));
    svc
}

pub fn build_svc(svc: &ServiceConfig) -> Arc<dyn Handler> {
    super::build(svc, Router::direct()).expect("handler builds")
}

/// Reads what arrives until the end, or for half a second when the stream stays open.
pub async fn read_to_end_or_open(c: &mut DuplexStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(500), c.read_to_end(&mut buf)).await;
    buf
}
