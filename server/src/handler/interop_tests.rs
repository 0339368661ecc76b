//! The client connectors of `pht-core` against these handlers.

use futures::{AsyncReadExt, AsyncWriteExt};
use pht_core::{Connector, Credentials, handshake};
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::testutil::*;

fn creds(u: &str, p: &str) -> Credentials {
    Credentials::new(u, p)
}

#[tokio::test]
async fn connectors_reach_the_target() {
    let echo = echo_server().await;
    for (kind, connector) in [
        ("http", Connector::Http),
        ("socks5", Connector::Socks5),
        ("relay", Connector::Relay),
        ("auto", Connector::Http),
        ("auto", Connector::Socks5),
    ] {
        for auth in [None, Some(("u", "p"))] {
            let h = build(kind, auth, &[]);
            let c = start(h).compat();
            let cred = auth.map(|(u, p)| creds(u, p));
            let mut s = handshake(c, connector, &echo.to_string(), cred.as_ref())
                .await
                .unwrap_or_else(|e| panic!("{kind}/{connector}: {e}"));
            s.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping", "{kind}/{connector}");
        }
    }
}

#[tokio::test]
async fn server_speaks_first_over_relay() {
    let banner = banner_server(b"220 ready\r\n").await;
    let c = start(build("relay", None, &[])).compat();
    let mut s = handshake(c, Connector::Relay, &banner.to_string(), None)
        .await
        .unwrap();
    let mut buf = [0u8; 11];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"220 ready\r\n");
}

#[tokio::test]
async fn refusals_are_reported() {
    let echo = echo_server().await;
    let bad = creds("u", "wrong");
    let target = echo.to_string();

    let c = start(build("http", Some(("u", "p")), &[])).compat();
    let e = handshake(c, Connector::Http, &target, Some(&bad))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "http connect: HTTP/1.1 407 Proxy Authentication Required"
    );

    let c = start(build("socks5", Some(("u", "p")), &[])).compat();
    let e = handshake(c, Connector::Socks5, &target, Some(&bad))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "socks5: authentication failed");

    let c = start(build("relay", Some(("u", "p")), &[])).compat();
    let mut s = handshake(c, Connector::Relay, &target, Some(&bad))
        .await
        .unwrap();
    let e = s.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(e.to_string(), "relay: 2 Unauthorized");

    let closed = closed_port().await.to_string();
    let c = start(build("socks5", None, &[])).compat();
    let e = handshake(c, Connector::Socks5, &closed, None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "socks5: connect failed: 03 network unreachable"
    );

    let c = start(build("relay", None, &[])).compat();
    let mut s = handshake(c, Connector::Relay, &closed, None).await.unwrap();
    let e = s.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(e.to_string(), "relay: 7 Network Unreachable");
}
