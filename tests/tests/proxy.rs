//! Proxy handlers over PHT with real clients: curl through gost-shaped client and server
//! configurations (http, socks5, relay connectors), credentials, the seed's port
//! forwarding, config round trips and bad input.

use std::time::Duration;

use pht_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// gost's e2e client shape: a local http service whose chain has one node with the given
/// connector (and credentials) and a pht dialer.
fn client_yaml(local: u16, server: u16, connector: &str, auth: Option<(&str, &str)>) -> String {
    let auth = auth
        .map(|(u, p)| {
            format!("\n          auth:\n            username: {u}\n            password: {p}")
        })
        .unwrap_or_default();
    format!(
        "services:
- name: client
  addr: 127.0.0.1:{local}
  handler:
    type: http
    chain: chain-0
  listener:
    type: tcp
chains:
- name: chain-0
  hops:
  - name: hop-0
    nodes:
    - name: node-0
      addr: 127.0.0.1:{server}
      connector:
          type: {connector}{auth}
      dialer:
        type: pht
"
    )
}

/// Starts `-L <scheme>://127.0.0.1:PORT` as the PHT server and the YAML client; returns
/// the client's local proxy port (and keeps both processes alive in the tuple).
async fn pair(
    server_scheme: &str,
    connector: &str,
    auth: Option<(&str, &str)>,
) -> (Proc, Proc, u16) {
    let sp = free_port();
    let srv = server(&["-L", &server_scheme.replace("PORT", &sp.to_string())], sp).await;
    let cp = free_port();
    let cfg = temp_file(
        &format!("client-{cp}.yaml"),
        &client_yaml(cp, sp, connector, auth),
    );
    let cli = server(&["-C", &cfg], cp).await;
    (srv, cli, cp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_http_socks5_and_relay_over_pht() {
    let origin = http_target().await;
    let url = format!("http://{origin}/");
    for (scheme, connector) in [
        ("http+pht://127.0.0.1:PORT", "http"),
        ("socks5+pht://127.0.0.1:PORT", "socks5"),
        ("relay+pht://127.0.0.1:PORT", "relay"),
    ] {
        let (_s, _c, cp) = pair(scheme, connector, None).await;
        let proxy = format!("http://127.0.0.1:{cp}");
        // Plain forwarding (curl -x) and CONNECT (curl -p -x).
        let (code, out, err) = curl(&["-x", &proxy, &url]).await;
        assert_eq!((code, out.as_str()), (0, HELLO), "{connector} -x: {err}");
        let (code, out, err) = curl(&["-p", "-x", &proxy, &url]).await;
        assert_eq!((code, out.as_str()), (0, HELLO), "{connector} -p -x: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_right_wrong_and_missing() {
    let origin = http_target().await;
    let url = format!("http://{origin}/");
    for (scheme, connector) in [
        ("http+pht://alice:s3cret@127.0.0.1:PORT", "http"),
        ("socks5+pht://alice:s3cret@127.0.0.1:PORT", "socks5"),
        ("relay+pht://alice:s3cret@127.0.0.1:PORT", "relay"),
    ] {
        let (_s, _c, cp) = pair(scheme, connector, Some(("alice", "s3cret"))).await;
        let (code, out, err) = curl(&["-x", &format!("http://127.0.0.1:{cp}"), &url]).await;
        assert_eq!(
            (code, out.as_str()),
            (0, HELLO),
            "{connector} right credentials: {err}"
        );
        let (_s, _c, cp) = pair(scheme, connector, Some(("alice", "wrong"))).await;
        // The chain cannot connect: the local http service answers 503.
        let (_, out, _) = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &format!("http://127.0.0.1:{cp}"),
            &url,
        ])
        .await;
        assert_eq!(out, "503", "{connector} wrong credentials");
    }

    // Straight at the server's handlers through a forward tunnel, to see their own answers.
    let sp = free_port();
    let _srv = server(
        &["-L", &format!("http+pht://alice:s3cret@127.0.0.1:{sp}")],
        sp,
    )
    .await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    let proxy = format!("http://127.0.0.1:{local}");
    let (_, out, _) = curl(&["-o", "/dev/null", "-w", "%{http_code}", "-x", &proxy, &url]).await;
    assert_eq!(out, "407", "missing credentials");
    let (_, out, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--proxy-user",
        "alice:nope",
        "-x",
        &proxy,
        &url,
    ])
    .await;
    assert_eq!(out, "407", "wrong credentials");
    let (code, out, _) = curl(&["--proxy-user", "alice:s3cret", "-x", &proxy, &url]).await;
    assert_eq!((code, out.as_str()), (0, HELLO));
    let (_, out, _) = curl(&["-D", "-", "-o", "/dev/null", "-x", &proxy, &url]).await;
    assert!(
        out.contains("Proxy-Authenticate: Basic realm=\"gost\""),
        "{out}"
    );

    let sp = free_port();
    let _srv = server(
        &["-L", &format!("socks5+pht://alice:s3cret@127.0.0.1:{sp}")],
        sp,
    )
    .await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    let (code, _, err) = curl(&[
        "--socks5",
        &format!("127.0.0.1:{local}"),
        "--proxy-user",
        "alice:nope",
        &url,
    ])
    .await;
    assert_eq!(code, 97, "socks5 wrong credentials: {err}");
    let (code, out, err) = curl(&[
        "--socks5",
        &format!("127.0.0.1:{local}"),
        "--proxy-user",
        "alice:s3cret",
        &url,
    ])
    .await;
    assert_eq!((code, out.as_str()), (0, HELLO), "{err}");

    let sp = free_port();
    let _srv = server(
        &["-L", &format!("relay+pht://alice:s3cret@127.0.0.1:{sp}")],
        sp,
    )
    .await;
    let node =
        pht_core::NodeUrl::parse(&format!("relay+pht://alice:wrong@127.0.0.1:{sp}")).unwrap();
    let fetch = pht_client::HyperFetch::for_node(&node).unwrap();
    let mut s = pht_client::connect_to(&fetch, &node, &origin.to_string())
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut b = [0u8; 16];
    let err = s.read(&mut b).await.unwrap_err();
    assert_eq!(err.to_string(), "relay: 2 Unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_port_forwarding_cli_and_yaml() {
    let origin = http_target().await;
    let url = format!("http://{origin}/");
    // gost -L pht://:8443/:1080 -L socks5://:1080, on free ports.
    let (sp, s5) = (free_port(), free_port());
    let _srv = server(
        &[
            "-L",
            &format!("pht://:{sp}/:{s5}"),
            "-L",
            &format!("socks5://:{s5}"),
        ],
        sp,
    )
    .await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    let (code, out, err) = curl(&["--socks5-hostname", &format!("127.0.0.1:{local}"), &url]).await;
    assert_eq!((code, out.as_str()), (0, HELLO), "{err}");

    // The same as the seed's YAML.
    let (sp, s5) = (free_port(), free_port());
    let yaml = format!(
        "services:
- name: service-0
  addr: :{sp}
  handler:
    type: forward
  listener:
    type: pht
    # type: phts
  forwarder:
    nodes:
    - name: target-0
      addr: :{s5}
- name: service-1
  addr: :{s5}
  handler:
    type: socks5
  listener:
    type: tcp
"
    );
    let _srv = server(&["-C", &temp_file("seed-forward.yaml", &yaml)], sp).await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    let (code, out, err) = curl(&["--socks5-hostname", &format!("127.0.0.1:{local}"), &url]).await;
    assert_eq!((code, out.as_str()), (0, HELLO), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_config_loads_and_behaves_the_same() {
    let origin = http_target().await;
    let sp = free_port();
    let out = std::process::Command::new(bin("pht-server"))
        .args([
            "-L",
            &format!("http+pht://127.0.0.1:{sp}?authorizePath=/a&pushPath=/p&pullPath=/q"),
            "-O",
            "yaml",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("type: pht") && yaml.contains("authorizePath: /a"),
        "{yaml}"
    );
    let _srv = server(&["-C", &temp_file("printed.yaml", &yaml)], sp).await;
    // A client with the same paths works; the default paths do not.
    let cp = free_port();
    let _c = server(
        &[
            "-L",
            &format!("http://127.0.0.1:{cp}"),
            "-F",
            &format!("http+pht://127.0.0.1:{sp}?authorizePath=/a&pushPath=/p&pullPath=/q"),
        ],
        cp,
    )
    .await;
    let (code, body, err) = curl(&[
        "-x",
        &format!("http://127.0.0.1:{cp}"),
        &format!("http://{origin}/"),
    ])
    .await;
    assert_eq!((code, body.as_str()), (0, HELLO), "{err}");
    let json = std::process::Command::new(bin("pht-server"))
        .args(["-C", &temp_file("printed2.yaml", &yaml), "-O", "json"])
        .output()
        .unwrap();
    assert!(json.status.success());
    assert!(String::from_utf8_lossy(&json.stdout).contains("\"authorizePath\": \"/a\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seed_yaml_block_loads() {
    // gost's PHT page, kept as a fixture: every YAML block in it must load.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/gost-pht-seed.md");
    let seed =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("seed document {path}: {e}"));
    let mut blocks = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for line in seed.lines() {
        let t = line.trim_start();
        match (&mut cur, t) {
            (None, "```yaml") => cur = Some(Vec::new()),
            (Some(b), "```") => {
                blocks.push(b.join("\n"));
                cur = None;
            }
            (Some(b), _) => b.push(line.strip_prefix("    ").unwrap_or(line).to_string()),
            _ => {}
        }
    }
    assert_eq!(blocks.len(), 6, "the seed has six YAML blocks");
    for (i, b) in blocks.iter().enumerate() {
        let out = std::process::Command::new(bin("pht-server"))
            .args(["-C", &temp_file(&format!("seed-{i}.yaml"), b), "-O", "yaml"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "block {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(printed.contains("name: service-0"), "block {i}: {printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_yaml_names_the_key_and_line() {
    let bad = "services:\n- name: s\n  addr: :1\n  handler:\n    type: http\n    metadata: [1, 2]\n  listener:\n    type: pht\n";
    let out = std::process::Command::new(bin("pht-server"))
        .args(["-C", &temp_file("bad.yaml", bad)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("services[0].handler.metadata"), "{err}");
    assert!(err.contains("line 6"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_at_a_handler_leaves_a_transfer_beside_it_intact() {
    let target = echo_target().await;
    // An auto handler (HTTP/SOCKS) over pht; a forward tunnel carries bytes beside it.
    let sp = free_port();
    let _srv = server(&["-L", &format!("pht://127.0.0.1:{sp}")], sp).await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    let beside = tokio::spawn(async move {
        // SOCKS5 CONNECT to the echo target through the auto handler, then 4 MiB of echo.
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", local))
            .await
            .unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut r = [0u8; 2];
        s.read_exact(&mut r).await.unwrap();
        assert_eq!(r, [5, 0]);
        let ip = match target.ip() {
            std::net::IpAddr::V4(v4) => v4.octets(),
            _ => unreachable!(),
        };
        let mut req = vec![5, 1, 0, 1];
        req.extend_from_slice(&ip);
        req.extend_from_slice(&target.port().to_be_bytes());
        s.write_all(&req).await.unwrap();
        let mut rep = [0u8; 10];
        s.read_exact(&mut rep).await.unwrap();
        assert_eq!(rep[1], 0, "socks5 connect succeeded");
        let data = random_bytes(4 * 1024 * 1024, 21);
        let (mut rd, mut wr) = s.into_split();
        let len = data.len();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; len];
            rd.read_exact(&mut got).await.map(|_| got)
        });
        wr.write_all(&data).await.unwrap();
        let got = reader.await.unwrap().unwrap();
        assert_eq!(sha256(&got), sha256(&data));
    });
    for i in 0..20u64 {
        let mut g = tokio::net::TcpStream::connect(("127.0.0.1", local))
            .await
            .unwrap();
        let _ = g.write_all(&random_bytes(2048, 100 + i)).await;
        let mut sink = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(20), g.read_to_end(&mut sink)).await;
        assert!(r.is_ok(), "garbage connection {i} was not closed");
    }
    tokio::time::timeout(Duration::from_secs(60), beside)
        .await
        .unwrap()
        .unwrap();
}

async fn reply_of(s: &mut tokio::net::TcpStream) -> std::net::SocketAddr {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[..2], &[5, 0], "socks5 reply code");
    assert_eq!(head[3], 1, "IPv4 address");
    let mut a = [0u8; 6];
    s.read_exact(&mut a).await.unwrap();
    std::net::SocketAddr::from(([a[0], a[1], a[2], a[3]], u16::from_be_bytes([a[4], a[5]])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_udp_associate_and_bind_when_enabled() {
    let sp = free_port();
    let _srv = server(
        &["-L", &format!("socks5://127.0.0.1:{sp}?udp=true&bind=true")],
        sp,
    )
    .await;

    // UDP ASSOCIATE to a UDP echo target.
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut b = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut b).await {
            let _ = echo.send_to(&b[..n], from).await;
        }
    });
    let mut ctl = tokio::net::TcpStream::connect(("127.0.0.1", sp))
        .await
        .unwrap();
    ctl.write_all(&[5, 1, 0]).await.unwrap();
    let mut r = [0u8; 2];
    ctl.read_exact(&mut r).await.unwrap();
    ctl.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let relay = reply_of(&mut ctl).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut dgram = vec![0, 0, 0, 1, 127, 0, 0, 1];
    dgram.extend_from_slice(&echo_addr.port().to_be_bytes());
    dgram.extend_from_slice(b"datagram!");
    udp.send_to(&dgram, relay).await.unwrap();
    let mut b = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), udp.recv_from(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, relay);
    assert_eq!(
        &b[..n],
        &dgram[..],
        "the echo comes back with a header naming its source"
    );

    // BIND: the server listens, reports the port, accepts one peer, then splices.
    let mut ctl = tokio::net::TcpStream::connect(("127.0.0.1", sp))
        .await
        .unwrap();
    ctl.write_all(&[5, 1, 0]).await.unwrap();
    ctl.read_exact(&mut r).await.unwrap();
    ctl.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let listen = reply_of(&mut ctl).await;
    let mut inbound = tokio::net::TcpStream::connect(listen).await.unwrap();
    let from = reply_of(&mut ctl).await;
    assert_eq!(from, inbound.local_addr().unwrap());
    inbound.write_all(b"from the peer").await.unwrap();
    let mut got = [0u8; 13];
    ctl.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"from the peer");
    ctl.write_all(b"back").await.unwrap();
    let mut got = [0u8; 4];
    inbound.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pht_node_behind_an_http_hop_sends_its_requests_through_it() {
    let echo = echo_target().await;
    // The PHT server, reachable here only by way of the HTTP proxy in the chain.
    let sp = free_port();
    let _srv = server(&["-L", &format!("forward+pht://127.0.0.1:{sp}/{echo}")], sp).await;
    let pp = free_port();
    let proxy = server(&["-D", "-L", &format!("http://127.0.0.1:{pp}")], pp).await;
    // gost's chain grammar: -F hops in order; the pht node is the second hop.
    let lp = free_port();
    let _cli = server(
        &[
            "-L",
            &format!("tcp://127.0.0.1:{lp}/{echo}"),
            "-F",
            &format!("http://127.0.0.1:{pp}"),
            "-F",
            &format!("forward+pht://127.0.0.1:{sp}"),
        ],
        lp,
    )
    .await;
    echo_roundtrip(lp, &random_bytes(2 * 1024 * 1024, 7)).await;
    // Every HTTP connection of the tunnel was a CONNECT through the proxy.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !proxy.log_text().contains(&format!("<-> 127.0.0.1:{sp}")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never carried a connection to the pht server: {}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// gost's client half of port forwarding, as its documentation writes it: a tcp service
/// with no target of its own, whose chain ends in a forward connector. The connection goes
/// to the server's target; nothing else is needed on the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_service_with_no_target_forwards_through_a_forward_chain() {
    let target = echo_target().await;
    let sp = free_port();
    let _srv = server(&["-L", &format!("pht://127.0.0.1:{sp}/{target}")], sp).await;
    let cp = free_port();
    let _cli = server(
        &[
            "-L",
            &format!("tcp://127.0.0.1:{cp}"),
            "-F",
            &format!("forward+pht://127.0.0.1:{sp}"),
        ],
        cp,
    )
    .await;
    echo_roundtrip(cp, &random_bytes(300_000, 21)).await;
    // Without a chain, the same service has nowhere to go: refused at start, with the why.
    let out = std::process::Command::new(bin("pht-server"))
        .args(["-L", &format!("tcp://127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no forwarder nodes and no chain"), "{err}");
}
