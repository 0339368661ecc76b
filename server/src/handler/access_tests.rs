//! Every handler's answer to a destination the service's bypass lists refuse, and the
//! admission check in front of them (in-memory clients; the e2e suite has the real ones).

use tokio::io::AsyncWriteExt;

use super::testutil::*;

/// Allows only `allowed`; everything else is refused.
fn only(kind: &str, allowed: std::net::SocketAddr) -> std::sync::Arc<dyn super::Handler> {
    build_svc(&with_bypass(
        service(kind, None, &[("proxyAgent", "pa/1")]),
        true,
        &[&allowed.to_string()],
    ))
}

fn socks5_connect(addr: std::net::SocketAddr) -> Vec<u8> {
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        panic!("v4")
    };
    let mut r = vec![0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x01];
    r.extend_from_slice(&ip.octets());
    r.extend_from_slice(&addr.port().to_be_bytes());
    r
}

#[tokio::test]
async fn http_connect_and_forwarding_get_403_with_proxy_agent() {
    let (allowed, other) = (echo_server().await, echo_server().await);
    for kind in ["http", "auto"] {
        let h = only(kind, allowed);
        let mut c = start(h.clone());
        c.write_all(format!("CONNECT {other} HTTP/1.1\r\nHost: {other}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            read_to_end(&mut c).await,
            b"HTTP/1.1 403 Forbidden\r\nProxy-Agent: pa/1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "{kind}"
        );
        let mut c = start(h.clone());
        c.write_all(format!("GET http://{other}/ HTTP/1.1\r\nHost: {other}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let resp = String::from_utf8(read_to_end(&mut c).await).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 403 Forbidden\r\n"),
            "{kind}: {resp}"
        );
        assert!(resp.contains("Proxy-Agent: pa/1\r\n"), "{kind}: {resp}");
        let mut c = start(h);
        c.write_all(format!("CONNECT {allowed} HTTP/1.1\r\n\r\nhi").as_bytes())
            .await
            .unwrap();
        let ok = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: pa/1\r\n\r\n";
        assert_eq!(read_n(&mut c, ok.len()).await, ok);
        assert_eq!(read_n(&mut c, 2).await, b"hi");
    }
}

#[tokio::test]
async fn socks5_gets_02_and_socks4_gets_92() {
    let (allowed, other) = (echo_server().await, echo_server().await);
    for kind in ["socks5", "auto"] {
        let mut c = start(only(kind, allowed));
        c.write_all(&socks5_connect(other)).await.unwrap();
        assert_eq!(read_n(&mut c, 2).await, [0x05, 0x00]);
        assert_eq!(
            read_to_end(&mut c).await,
            [5, 0x02, 0, 1, 0, 0, 0, 0, 0, 0],
            "{kind}"
        );
        let mut c = start(only(kind, allowed));
        c.write_all(&socks5_connect(allowed)).await.unwrap();
        assert_eq!(
            read_n(&mut c, 12).await[..4],
            [0x05, 0x00, 0x05, 0x00],
            "{kind}"
        );
    }
    for kind in ["socks4", "auto"] {
        let mut req = vec![0x04, 0x01];
        req.extend_from_slice(&other.port().to_be_bytes());
        req.extend_from_slice(&[127, 0, 0, 1, 0]);
        let mut c = start(only(kind, allowed));
        c.write_all(&req).await.unwrap();
        assert_eq!(
            read_to_end(&mut c).await,
            [0, 92, 0, 0, 0, 0, 0, 0],
            "{kind}"
        );
        // SOCKS4a with a name: names are not resolved, so a whitelist of IPs refuses it.
        let mut req = vec![0x04, 0x01];
        req.extend_from_slice(&allowed.port().to_be_bytes());
        req.extend_from_slice(&[0, 0, 0, 1, 0]);
        req.extend_from_slice(b"localhost\0");
        let mut c = start(only(kind, allowed));
        c.write_all(&req).await.unwrap();
        assert_eq!(
            read_to_end(&mut c).await,
            [0, 92, 0, 0, 0, 0, 0, 0],
            "{kind} 4a"
        );
    }
}

#[tokio::test]
async fn relay_gets_03_in_both_modes_and_forward_closes() {
    let (allowed, other) = (echo_server().await, echo_server().await);
    let relay_connect = |addr: std::net::SocketAddr| {
        let std::net::IpAddr::V4(ip) = addr.ip() else {
            panic!("v4")
        };
        let mut f = vec![0x02, 0x00, 0x07, 0x01];
        f.extend_from_slice(&ip.octets());
        f.extend_from_slice(&addr.port().to_be_bytes());
        let mut r = vec![0x01, 0x01];
        r.extend_from_slice(&(f.len() as u16).to_be_bytes());
        r.extend_from_slice(&f);
        r
    };
    let mut c = start(only("relay", allowed));
    c.write_all(&relay_connect(other)).await.unwrap();
    assert_eq!(read_to_end(&mut c).await, [1, 0x03, 0, 0]);
    let mut c = start(only("relay", allowed));
    c.write_all(&relay_connect(allowed)).await.unwrap();
    assert_eq!(read_n(&mut c, 4).await, [1, 0, 0, 0]);

    // Forward mode: the refused node is never dialled; with only refused nodes: 03.
    let svc = with_forwarder(
        service("relay", None, &[]),
        &[other.to_string(), allowed.to_string()],
    );
    let h = build_svc(&with_bypass(svc.clone(), true, &[&allowed.to_string()]));
    for _ in 0..3 {
        let mut c = start(h.clone());
        c.write_all(&relay_connect(other)).await.unwrap();
        c.write_all(b"x").await.unwrap();
        assert_eq!(read_n(&mut c, 5).await, [1, 0, 0, 0, b'x']);
    }
    let h = build_svc(&with_bypass(svc.clone(), false, &["127.0.0.0/8"]));
    let mut c = start(h);
    c.write_all(&relay_connect(other)).await.unwrap();
    assert_eq!(read_to_end(&mut c).await, [1, 0x03, 0, 0]);

    // forward/tcp: only the allowed node is used; with none, the connection ends.
    let svc = with_forwarder(
        service("forward", None, &[]),
        &[other.to_string(), allowed.to_string()],
    );
    let h = build_svc(&with_bypass(svc.clone(), true, &[&allowed.to_string()]));
    for _ in 0..3 {
        let mut c = start(h.clone());
        c.write_all(b"ping").await.unwrap();
        assert_eq!(read_n(&mut c, 4).await, b"ping");
    }
    let h = build_svc(&with_bypass(svc, false, &["127.0.0.1"]));
    let mut c = start(h);
    let _ = c.write_all(b"ping").await;
    assert_eq!(read_to_end(&mut c).await, b"");
}

#[tokio::test]
async fn admission_closes_refused_clients_before_the_handler() {
    let echo = echo_server().await;
    // The in-memory client comes from 127.0.0.1.
    for (whitelist, entries, admitted) in [
        (true, &["10.0.0.0/8"][..], false),
        (false, &["127.0.0.1"][..], false),
        (true, &["127.0.0.0/8", "::1"][..], true),
        (false, &["10.0.0.0/8"][..], true),
    ] {
        let h = build_svc(&with_admission(
            service("http", None, &[]),
            whitelist,
            entries,
        ));
        let mut c = start(h);
        let _ = c
            .write_all(format!("CONNECT {echo} HTTP/1.1\r\n\r\n").as_bytes())
            .await;
        let got = read_to_end_or_open(&mut c).await;
        if admitted {
            assert!(got.starts_with(b"HTTP/1.1 200 "), "{entries:?}");
        } else {
            assert_eq!(got, b"", "{entries:?}: closed without a byte");
        }
    }
}
