//! Golden wire tests: a raw HTTP client speaking exactly as gost's Go client does, against
//! the real pht-server; and every malformed input with its documented status.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pht_e2e::raw::RawConn;
use pht_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(10);

fn line(data: &[u8]) -> Vec<u8> {
    let mut v = STANDARD.encode(data).into_bytes();
    v.push(b'\n');
    v
}

/// Reads pull chunks until `want` bytes of payload have arrived.
async fn pull_payload(pull: &mut RawConn, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut pending = Vec::new();
    while got.len() < want {
        let chunk = tokio::time::timeout(T, pull.chunk())
            .await
            .expect("pull stalled")
            .expect("pull ended");
        pending.extend_from_slice(&chunk);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = pending.drain(..=nl).collect();
            if l.len() > 1 {
                got.extend(
                    STANDARD
                        .decode(&l[..l.len() - 1])
                        .expect("pull line is not base64"),
                );
            }
        }
    }
    got
}

async fn open_pull(port: u16, token: &str) -> RawConn {
    let mut pull = RawConn::connect(port).await;
    pull.go_get(&format!("/pull?token={token}")).await;
    let head = tokio::time::timeout(T, pull.head())
        .await
        .unwrap()
        .expect("pull: no response");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-accel-buffering"), Some("no"));
    assert_eq!(head.header("cache-control"), Some("no-store"));
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    pull
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stable_gost_client_flow_with_authorize() {
    let target = echo_target().await;
    let sp = free_port();
    let _srv = server(&["-L", &format!("pht://127.0.0.1:{sp}/{target}")], sp).await;

    let mut ctl = RawConn::connect(sp).await;
    let (status, body) = ctl.exchange_get("/authorize").await;
    assert_eq!(status, 200);
    let body = String::from_utf8(body).unwrap();
    let token = body
        .strip_prefix("token=")
        .expect("body starts with token=");
    assert_eq!(token.len(), 22, "128-bit URL-safe token");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );

    let mut pull = open_pull(sp, token).await;
    // Two pushes on one keep-alive connection, as Go's transport reuses it.
    let (s1, b1) = ctl
        .exchange_post(&format!("/push?token={token}"), &line(b"hello, "))
        .await;
    let (s2, _) = ctl
        .exchange_post(&format!("/push?token={token}"), &line(b"world"))
        .await;
    assert_eq!((s1, s2), (200, 200));
    assert!(b1.is_empty());
    assert_eq!(pull_payload(&mut pull, 12).await, b"hello, world");

    // Close: an empty POST. The pull response then ends.
    let (s, _) = ctl
        .exchange_post(&format!("/push?token={token}"), b"")
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        tokio::time::timeout(T, pull.chunk()).await.unwrap(),
        None,
        "pull must end after close"
    );

    // A re-pull of the closed token ends at once, empty: no phantom tunnel.
    let mut again = RawConn::connect(sp).await;
    let (s, body) = tokio::time::timeout(T, again.exchange_get(&format!("/pull?token={token}")))
        .await
        .unwrap();
    assert_eq!((s, body.len()), (200, 0));
    // And data for it is refused.
    let (s, _) = ctl
        .exchange_post(&format!("/push?token={token}"), &line(b"late"))
        .await;
    assert_eq!(s, 410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_gost_client_flow_with_own_token() {
    let target = echo_target().await;
    let sp = free_port();
    let _srv = server(&["-L", &format!("pht://127.0.0.1:{sp}/{target}")], sp).await;
    // gost ≥ 3.3 mints a 20-character xid and never calls /authorize.
    let token = "d1f8k2m6qa3c7vq0e9lg";
    let mut pull = open_pull(sp, token).await;
    let mut ctl = RawConn::connect(sp).await;
    let payload = random_bytes(100_000, 7);
    let (s, _) = ctl
        .exchange_post(&format!("/push?token={token}"), &line(&payload))
        .await;
    assert_eq!(s, 200);
    let got = pull_payload(&mut pull, payload.len()).await;
    assert_eq!(sha256(&got), sha256(&payload));
    let (s, _) = ctl
        .exchange_post(&format!("/push?token={token}"), b"")
        .await;
    assert_eq!(s, 200);
    assert_eq!(tokio::time::timeout(T, pull.chunk()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_lines_stay_under_gost_client_limit() {
    // A target that sends 1 MiB at once: every pull line must stay below 64 KiB of text.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let payload = random_bytes(1024 * 1024, 9);
    let p2 = payload.clone();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(&p2).await.unwrap();
        let mut b = [0u8; 1];
        let _ = s.read(&mut b).await;
    });
    let sp = free_port();
    let _srv = server(&["-L", &format!("pht://127.0.0.1:{sp}/{target}")], sp).await;
    let mut pull = open_pull(sp, "bigline-token").await;
    let mut text = Vec::new();
    let mut got = Vec::new();
    while got.len() < payload.len() {
        let chunk = tokio::time::timeout(T, pull.chunk())
            .await
            .unwrap()
            .unwrap();
        text.extend_from_slice(&chunk);
        while let Some(nl) = text.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = text.drain(..=nl).collect();
            // Go's bufio.Scanner holds at most 64 KiB, newline included.
            assert!(l.len() < 64 * 1024, "pull line of {} bytes", l.len());
            got.extend(STANDARD.decode(&l[..l.len() - 1]).unwrap());
        }
    }
    assert_eq!(sha256(&got), sha256(&payload));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_a_tunnel_beside_it_is_unharmed() {
    let target = echo_target().await;
    let sp = free_port();
    let _srv = server(
        &[
            "-L",
            &format!("pht://127.0.0.1:{sp}/{target}?maxPushBody=4096"),
        ],
        sp,
    )
    .await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}?maxPushSize=2048")).await;
    // A real tunnel carrying 8 MiB while the abuse goes on.
    let beside = tokio::spawn(async move {
        let data = random_bytes(8 * 1024 * 1024, 3);
        echo_roundtrip(local, &data).await;
    });

    let mut c = RawConn::connect(sp).await;
    assert_eq!(
        c.exchange_get("/push?token=abc").await.0,
        400,
        "GET on push"
    );
    assert_eq!(
        c.exchange_post("/pull?token=abc", b"").await.0,
        400,
        "POST on pull"
    );
    assert_eq!(c.exchange_get("/other").await.0, 404, "unknown path");
    assert_eq!(c.exchange_get("/").await.0, 404, "root");
    assert_eq!(c.exchange_get("/pull").await.0, 400, "missing token");
    assert_eq!(
        c.exchange_post("/push?token=", &line(b"x")).await.0,
        400,
        "empty token"
    );

    // Bad base64 → 400 and the tunnel is reset: its pull breaks off, and a re-pull is told
    // so (a reset must never read as an end).
    let mut pull = open_pull(sp, "badb64-token").await;
    assert_eq!(
        c.exchange_post("/push?token=badb64-token", b"%%%not base64%%%\n")
            .await
            .0,
        400
    );
    assert_eq!(tokio::time::timeout(T, pull.chunk()).await.unwrap(), None);
    let mut again = RawConn::connect(sp).await;
    assert_eq!(
        again.exchange_get("/pull?token=badb64-token").await,
        (410, b"tunnel was reset\n".to_vec())
    );

    // Oversized push with a declared length: 413 without the body being sent at all.
    let mut big = RawConn::connect(sp).await;
    big.write_raw(
        format!("POST /push?token=big-token HTTP/1.1\r\nHost: 127.0.0.1:{sp}\r\nContent-Length: 104857600\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let head = tokio::time::timeout(T, big.head())
        .await
        .expect("413 must not wait for the body")
        .unwrap();
    assert_eq!(head.status, 413);

    // Oversized chunked push: 413 once the limit is passed.
    let mut chunked = RawConn::connect(sp).await;
    let chunk = vec![b'A'; 8192];
    let mut req = format!("POST /push?token=chunk-token HTTP/1.1\r\nHost: 127.0.0.1:{sp}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", chunk.len()).into_bytes();
    req.extend_from_slice(&chunk);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    chunked.write_raw(&req).await;
    let head = tokio::time::timeout(T, chunked.head())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.status, 413);

    // Not HTTP at all: the connection is dropped (or answered 400), the server lives on.
    let mut garbage = RawConn::connect(sp).await;
    garbage
        .write_raw(b"\x16\x03\x01\x00\xa5garbage\r\n\r\n")
        .await;
    if let Some(h) = tokio::time::timeout(T, garbage.head()).await.unwrap() {
        assert_eq!(h.status, 400);
    }

    tokio::time::timeout(Duration::from_secs(120), beside)
        .await
        .expect("tunnel beside stalled")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_without_pull_is_reaped() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 16];
        let end = loop {
            match s.read(&mut b).await {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) => break Err(e.kind()),
            }
        };
        let _ = tx.send((got, end));
    });
    let sp = free_port();
    let _srv = server(
        &[
            "-L",
            &format!("pht://127.0.0.1:{sp}/{target}?idleTimeout=300ms"),
        ],
        sp,
    )
    .await;
    let mut c = RawConn::connect(sp).await;
    let (s, body) = c.exchange_get("/authorize").await;
    assert_eq!(s, 200);
    let token = String::from_utf8(body).unwrap()[6..].to_string();
    // The first push starts the tunnel (the handler dials the target).
    let (s, _) = c
        .exchange_post(&format!("/push?token={token}"), b"aGk=\n")
        .await;
    assert_eq!(s, 200);
    // Then nobody pulls or pushes: the client vanished, so the target sees a reset after
    // what it got, never a clean end.
    let (got, end) = tokio::time::timeout(T, rx)
        .await
        .expect("tunnel not reaped")
        .unwrap();
    assert_eq!(got, b"hi");
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));
    let (s, body) = c.exchange_get(&format!("/pull?token={token}")).await;
    assert_eq!((s, body.as_slice()), (410, &b"tunnel was reset\n"[..]));
}
