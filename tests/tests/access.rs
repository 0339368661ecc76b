//! Access control with real clients through a real `pht-server`, over PHT tunnels where the
//! handler allows it: service bypass lists (each protocol's refusal), hop and node bypass
//! lists (the route changes), admission lists (refused clients are closed), and the
//! command-line forms (`?bypass=`, `?admission=`, a leading `~` for a whitelist).

use std::net::SocketAddr;
use std::time::Duration;

use pht_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every read in these tests is bounded.
const LIMIT: Duration = Duration::from_secs(15);

/// `pht-server -L <scheme>://127.0.0.1:PORT<rest>` and a `pht-client` forwarding a local
/// port to that service through PHT; returns both and the local port.
async fn over_pht(scheme: &str, rest: &str) -> (Proc, Proc, u16) {
    let sp = free_port();
    let srv = server(&["-L", &format!("{scheme}://127.0.0.1:{sp}{rest}")], sp).await;
    let (cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    (srv, cli, local)
}

/// The HTTP status curl sees through the proxy (`-p`: CONNECT), or `000`.
async fn status(proxy: u16, url: &str, connect: bool) -> String {
    let proxy = format!("http://127.0.0.1:{proxy}");
    // The answer to CONNECT is `http_connect`; `http_code` is the origin's.
    let code = if connect {
        "%{http_connect}"
    } else {
        "%{http_code}"
    };
    let mut args = vec!["-o", "/dev/null", "-w", code, "-x", &proxy];
    if connect {
        args.push("-p");
    }
    args.push(url);
    curl(&args).await.1
}

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).await.unwrap()
}

/// Everything the peer sends until it closes (or resets).
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(LIMIT, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return buf,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the connection stayed open: {buf:?}"),
        }
    }
}

async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(LIMIT, s.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .expect("read failed");
    buf
}

fn v4(addr: SocketAddr) -> [u8; 6] {
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        panic!("IPv4 targets only")
    };
    let [a, b, c, d] = ip.octets();
    let [p, q] = addr.port().to_be_bytes();
    [a, b, c, d, p, q]
}

/// A SOCKS5 CONNECT to `target` on a fresh connection to `port`; returns the reply code
/// and the connection.
async fn socks5_connect(port: u16, target: SocketAddr) -> (u8, TcpStream) {
    let mut s = connect(port).await;
    s.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, [5, 0]);
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&v4(target));
    s.write_all(&req).await.unwrap();
    let reply = read_n(&mut s, 10).await;
    (reply[1], s)
}

/// A SOCKS4 CONNECT; returns the 8-byte reply's code.
async fn socks4_connect(port: u16, target: SocketAddr) -> u8 {
    let mut s = connect(port).await;
    let a = v4(target);
    let mut req = vec![4, 1, a[4], a[5], a[0], a[1], a[2], a[3]];
    req.extend_from_slice(b"\0");
    s.write_all(&req).await.unwrap();
    read_n(&mut s, 8).await[1]
}

/// A relay CONNECT (Addr feature only); returns the response status, and the bytes the
/// target echoed for `payload` when it was accepted.
async fn relay_connect(port: u16, target: SocketAddr, payload: &[u8]) -> (u8, Vec<u8>) {
    let mut s = connect(port).await;
    let mut f = vec![0x02, 0x00, 0x07, 0x01];
    f.extend_from_slice(&v4(target));
    let mut req = vec![0x01, 0x01];
    req.extend_from_slice(&(f.len() as u16).to_be_bytes());
    req.extend_from_slice(&f);
    req.extend_from_slice(payload);
    s.write_all(&req).await.unwrap();
    let head = read_n(&mut s, 4).await;
    if head[1] != 0 {
        return (head[1], Vec::new());
    }
    (0, read_n(&mut s, payload.len()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_whitelist_bypass_over_pht_refuses_other_targets_with_403() {
    let (allowed, other) = (http_target().await, http_target().await);
    let (_s, _c, local) = over_pht("http+pht", &format!("?bypass=~{allowed}")).await;
    let proxy = format!("http://127.0.0.1:{local}");
    let (code, body, err) = curl(&["-x", &proxy, &format!("http://{allowed}/")]).await;
    assert_eq!((code, body.as_str()), (0, HELLO), "{err}");
    let (code, body, err) = curl(&["-p", "-x", &proxy, &format!("http://{allowed}/")]).await;
    assert_eq!((code, body.as_str()), (0, HELLO), "CONNECT: {err}");

    assert_eq!(
        status(local, &format!("http://{other}/"), false).await,
        "403"
    );
    let (_, head, _) = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-x",
        &proxy,
        &format!("http://{other}/"),
    ])
    .await;
    assert!(head.contains("Proxy-Agent: gost/3.0"), "{head}");
    // CONNECT, byte for byte.
    let mut s = connect(local).await;
    s.write_all(format!("CONNECT {other} HTTP/1.1\r\nHost: {other}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_all(&mut s).await,
        b"HTTP/1.1 403 Forbidden\r\nProxy-Agent: gost/3.0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    // Names are not resolved: `localhost` is not the whitelisted address.
    let url = format!("http://localhost:{}/", allowed.port());
    assert_eq!(status(local, &url, false).await, "403");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_and_socks4_over_pht_refuse_with_02_and_92() {
    let (allowed, other) = (http_target().await, http_target().await);
    let (_s, _c, local) = over_pht("socks5+pht", &format!("?bypass=~{allowed}")).await;
    let (code, body, err) = curl(&[
        "--socks5",
        &format!("127.0.0.1:{local}"),
        &format!("http://{allowed}/"),
    ])
    .await;
    assert_eq!((code, body.as_str()), (0, HELLO), "{err}");
    let (rep, mut s) = socks5_connect(local, other).await;
    assert_eq!(rep, 0x02, "socks5: not allowed");
    assert_eq!(read_all(&mut s).await, b"", "closed after the refusal");

    let (_s, _c, local) = over_pht("socks4+pht", &format!("?bypass=~{allowed}")).await;
    let (code, body, err) = curl(&[
        "--socks4",
        &format!("127.0.0.1:{local}"),
        &format!("http://{allowed}/"),
    ])
    .await;
    assert_eq!((code, body.as_str()), (0, HELLO), "{err}");
    assert_eq!(socks4_connect(local, other).await, 92);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_over_pht_refuses_in_each_of_its_protocols() {
    let (allowed, other) = (http_target().await, http_target().await);
    // A blacklist this time: everything but `other` passes.
    let (_s, _c, local) = over_pht("pht", &format!("?bypass={other}")).await;
    assert_eq!(
        status(local, &format!("http://{allowed}/"), false).await,
        "200"
    );
    assert_eq!(
        status(local, &format!("http://{other}/"), false).await,
        "403"
    );
    assert_eq!(
        status(local, &format!("http://{other}/"), true).await,
        "403"
    );
    assert_eq!(socks5_connect(local, allowed).await.0, 0x00);
    assert_eq!(socks5_connect(local, other).await.0, 0x02);
    assert_eq!(socks4_connect(local, allowed).await, 90);
    assert_eq!(socks4_connect(local, other).await, 92);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_over_pht_refuses_with_03() {
    let (allowed, other) = (echo_target().await, echo_target().await);
    let (_s, _c, local) = over_pht("relay+pht", &format!("?bypass=~{allowed}")).await;
    assert_eq!(
        relay_connect(local, allowed, b"hi").await,
        (0, b"hi".to_vec())
    );
    assert_eq!(
        relay_connect(local, other, b"hi").await.0,
        0x03,
        "forbidden"
    );

    // A gost-shaped client (relay connector over pht) in front: its own HTTP proxy answers
    // 503 when the chain is refused.
    let origin = http_target().await;
    let sp = free_port();
    let _srv = server(
        &[
            "-L",
            &format!("relay+pht://127.0.0.1:{sp}?bypass=~{origin}"),
        ],
        sp,
    )
    .await;
    let cp = free_port();
    let _cli = server(
        &[
            "-L",
            &format!("http://127.0.0.1:{cp}"),
            "-F",
            &format!("relay+pht://127.0.0.1:{sp}"),
        ],
        cp,
    )
    .await;
    assert_eq!(status(cp, &format!("http://{origin}/"), false).await, "200");
    let elsewhere = http_target().await;
    assert_eq!(
        status(cp, &format!("http://{elsewhere}/"), false).await,
        "503"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_over_pht_uses_only_the_nodes_the_bypass_allows() {
    let web = http_target().await;
    let echo = echo_target().await;
    // Two targets; the whitelist allows only the web one: every tunnel lands there.
    let (_s, _c, local) = over_pht("pht", &format!("/{echo},{web}?bypass=~{web}")).await;
    for _ in 0..4 {
        let (code, body, err) = curl(&[&format!("http://127.0.0.1:{local}/")]).await;
        assert_eq!((code, body.as_str()), (0, HELLO), "{err}");
    }
    // Relay in forward mode: same choice, the client's address is ignored.
    let (_s, _c, local) = over_pht("relay+pht", &format!("/{echo},{web}?bypass=~{web}")).await;
    let mut s = connect(local).await;
    let mut req = vec![0x01, 0x01, 0x00, 0x00];
    req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let got = String::from_utf8_lossy(&read_n(&mut s, 4 + 17).await).into_owned();
    assert!(got[4..].starts_with("HTTP/1.1 200 OK\r\n"), "{got:?}");

    // Every node refused: the connection is reset without a byte (on a busy machine the
    // reset may even arrive before connect() returns).
    let (_s, _c, local) = over_pht("pht", &format!("/{echo},{web}?bypass=127.0.0.0/8")).await;
    match TcpStream::connect(("127.0.0.1", local)).await {
        Ok(mut s) => {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert_eq!(read_all(&mut s).await, b"");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    let (_s, _c, local) = over_pht("relay+pht", &format!("/{echo}?bypass=127.0.0.0/8")).await;
    assert_eq!(relay_connect(local, echo, b"x").await.0, 0x03);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_bind_and_udp_respect_the_bypass() {
    let udp_echo = |sock: tokio::net::UdpSocket| async move {
        let mut b = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut b).await {
            let _ = sock.send_to(&b[..n], from).await;
        }
    };
    let allowed = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let refused = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (allowed_addr, refused_addr) =
        (allowed.local_addr().unwrap(), refused.local_addr().unwrap());
    tokio::spawn(udp_echo(allowed));
    tokio::spawn(udp_echo(refused));
    // BIND and UDP are served on direct TCP connections only.
    let sp = free_port();
    let _srv = server(
        &[
            "-L",
            &format!("socks5://127.0.0.1:{sp}?udp=true&bind=true&bypass=~{allowed_addr},0.0.0.0"),
        ],
        sp,
    )
    .await;

    let mut ctl = connect(sp).await;
    ctl.write_all(&[5, 1, 0]).await.unwrap();
    read_n(&mut ctl, 2).await;
    ctl.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let r = read_n(&mut ctl, 10).await;
    assert_eq!(r[1], 0, "associated");
    let relay = SocketAddr::from(([r[4], r[5], r[6], r[7]], u16::from_be_bytes([r[8], r[9]])));
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dgram = |to: SocketAddr, body: &[u8]| {
        let mut d = vec![0, 0, 0, 1];
        d.extend_from_slice(&v4(to));
        d.extend_from_slice(body);
        d
    };
    // The refused destination first: dropped; then the allowed one answers.
    udp.send_to(&dgram(refused_addr, b"no"), relay)
        .await
        .unwrap();
    udp.send_to(&dgram(allowed_addr, b"yes"), relay)
        .await
        .unwrap();
    let mut b = [0u8; 2048];
    let (n, _) = tokio::time::timeout(LIMIT, udp.recv_from(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&b[..n], &dgram(allowed_addr, b"yes")[..]);
    let late = tokio::time::timeout(Duration::from_millis(500), udp.recv_from(&mut b)).await;
    assert!(
        late.is_err(),
        "nothing comes back from the refused destination"
    );

    // BIND to an address the whitelist does not hold: 02.
    let mut ctl = connect(sp).await;
    ctl.write_all(&[5, 1, 0]).await.unwrap();
    read_n(&mut ctl, 2).await;
    let mut req = vec![5, 2, 0, 1];
    req.extend_from_slice(&v4(refused_addr));
    ctl.write_all(&req).await.unwrap();
    assert_eq!(read_n(&mut ctl, 10).await[1], 0x02);
    // BIND 0.0.0.0 is allowed, but the peer that connects in (127.0.0.1) is not: 02.
    let mut ctl = connect(sp).await;
    ctl.write_all(&[5, 1, 0]).await.unwrap();
    read_n(&mut ctl, 2).await;
    ctl.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let r = read_n(&mut ctl, 10).await;
    assert_eq!(r[1], 0, "listening");
    let listen = SocketAddr::from(([r[4], r[5], r[6], r[7]], u16::from_be_bytes([r[8], r[9]])));
    let _inbound = TcpStream::connect(listen).await.unwrap();
    assert_eq!(read_n(&mut ctl, 10).await[1], 0x02, "inbound peer refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_closes_refused_clients_on_tcp_and_pht() {
    let origin = http_target().await;
    let url = format!("http://{origin}/");
    // Over PHT: the tunnel's client is the HTTP peer (127.0.0.1 here).
    for (admission, admitted) in [
        ("~10.0.0.0/8", false),
        ("127.0.0.1", false),
        ("~127.0.0.1,::1", true),
        ("10.0.0.0/8", true),
    ] {
        let (_s, _c, local) = over_pht("http+pht", &format!("?admission={admission}")).await;
        let (code, body, err) = curl(&["-x", &format!("http://127.0.0.1:{local}"), &url]).await;
        if admitted {
            assert_eq!((code, body.as_str()), (0, HELLO), "{admission}: {err}");
        } else {
            assert_ne!(code, 0, "{admission}: refused");
            assert_eq!(body, "", "{admission}");
        }
    }
    // Plain TCP: reset before a byte is read, logged once however often the client tries.
    let sp = free_port();
    let srv = server(
        &[
            "-L",
            &format!("http://127.0.0.1:{sp}?admission=~10.0.0.0/8"),
        ],
        sp,
    )
    .await;
    for _ in 0..3 {
        // The reset may even beat the connect's completion.
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", sp)).await {
            let _ = s
                .write_all(format!("GET {url} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
                .await;
            assert_eq!(read_all(&mut s).await, b"");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = srv.log_text();
    assert_eq!(
        log.matches("client refused by admission").count(),
        1,
        "{log}"
    );
}

/// The chain's first hop is a PHT server whose own whitelist allows only `via_hop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_bypass_sends_matching_targets_direct() {
    let (direct, via_hop, neither) = (
        http_target().await,
        http_target().await,
        http_target().await,
    );
    let hp = free_port();
    let _hop = server(
        &[
            "-L",
            &format!("http+pht://127.0.0.1:{hp}?bypass=~{via_hop}"),
        ],
        hp,
    )
    .await;
    let cp = free_port();
    let _cli = server(
        &[
            "-L",
            &format!("http://127.0.0.1:{cp}"),
            "-F",
            &format!("http+pht://127.0.0.1:{hp}?bypass={direct}"),
        ],
        cp,
    )
    .await;
    // The hop would refuse `direct`: it works only because the route skips the hop.
    assert_eq!(status(cp, &format!("http://{direct}/"), false).await, "200");
    assert_eq!(status(cp, &format!("http://{direct}/"), true).await, "200");
    assert_eq!(
        status(cp, &format!("http://{via_hop}/"), false).await,
        "200"
    );
    // Not bypassed, so through the hop, which refuses it.
    assert_eq!(
        status(cp, &format!("http://{neither}/"), false).await,
        "503"
    );
}

/// A hop with two PHT nodes, each server allowing one target; node bypass lists send each
/// target to the node that can reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_bypass_makes_a_node_ineligible() {
    let (t1, t2) = (http_target().await, http_target().await);
    let (p1, p2) = (free_port(), free_port());
    let _n1 = server(
        &["-L", &format!("http+pht://127.0.0.1:{p1}?bypass=~{t1}")],
        p1,
    )
    .await;
    let _n2 = server(
        &["-L", &format!("http+pht://127.0.0.1:{p2}?bypass=~{t2}")],
        p2,
    )
    .await;
    let cp = free_port();
    // n1 is for t1 only (a whitelist); n2 for anything but t1.
    let yaml = format!(
        "services:
- name: client
  addr: 127.0.0.1:{cp}
  handler: {{type: http, chain: c}}
  listener: {{type: tcp}}
bypasses:
- {{name: not-t1, matchers: ['{t1}']}}
- {{name: only-t1, whitelist: true, matchers: ['{t1}']}}
chains:
- name: c
  hops:
  - name: h
    selector: {{strategy: round}}
    nodes:
    - {{name: n1, addr: '127.0.0.1:{p1}', bypass: only-t1, connector: {{type: http}}, dialer: {{type: pht}}}}
    - {{name: n2, addr: '127.0.0.1:{p2}', bypass: not-t1, connector: {{type: http}}, dialer: {{type: pht}}}}
"
    );
    let _cli = server(
        &["-C", &temp_file(&format!("node-bypass-{cp}.yaml"), &yaml)],
        cp,
    )
    .await;
    // Round robin would send half of each to the wrong node; bypass lists make it exact.
    for _ in 0..3 {
        assert_eq!(
            status(cp, &format!("http://{t1}/"), false).await,
            "200",
            "t1"
        );
        assert_eq!(
            status(cp, &format!("http://{t2}/"), false).await,
            "200",
            "t2"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_lists_print_as_gost_names_them() {
    let out = std::process::Command::new(bin("pht-server"))
        .args([
            "-L",
            "http+pht://127.0.0.1:8443?admission=~127.0.0.1,10.0.0.0/8&bypass=~127.0.0.1:8080,.example.com",
            "-F",
            "http://127.0.0.1:3128?bypass=10.0.0.0/8",
            "-O",
            "yaml",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    for want in [
        "  admission: admission-0\n",
        "  bypass: bypass-1\n",
        "admissions:\n- name: admission-0\n  whitelist: true\n  matchers:\n  - 127.0.0.1\n  - 10.0.0.0/8\n",
        "bypasses:\n- name: bypass-0\n  matchers:\n  - 10.0.0.0/8\n- name: bypass-1\n  whitelist: true\n  matchers:\n  - 127.0.0.1:8080\n  - .example.com\n",
        "  - name: hop-0\n    bypass: bypass-0\n",
    ] {
        assert!(yaml.contains(want), "missing {want:?} in\n{yaml}");
    }
    assert!(
        !yaml.contains("admission: ~") && !yaml.contains("bypass: ~"),
        "{yaml}"
    );
}
