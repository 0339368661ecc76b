//! gost's command-line and YAML forms, one by one, with real clients (curl, raw sockets):
//! the shorthands a gost user types most, their credentials and query keys, the options
//! whose effect a client sees (probe resistance), hops named from a chain, and the forms
//! gost refuses to start with. Every server is `pht-server`, also where it plays gost's
//! client side (`-F`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pht_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts `pht-server` with `-L` forms whose `PORT` is replaced by a free port each (one
/// port per form, in order); returns the process and the ports.
async fn serve(forms: &[&str], extra: &[&str]) -> (Proc, Vec<u16>) {
    let ports: Vec<u16> = forms.iter().map(|_| free_port()).collect();
    let mut args = Vec::new();
    for (f, p) in forms.iter().zip(&ports) {
        args.push("-L".to_string());
        args.push(f.replace("PORT", &p.to_string()));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Services bind in order: the last one listening means all do.
    (server(&args, *ports.last().unwrap()).await, ports)
}

/// curl's answer as `(status code, body)`; curl itself must succeed.
async fn fetch(args: &[&str]) -> (String, String) {
    let mut all = vec!["-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let (rc, out, err) = curl(&all).await;
    assert_eq!(rc, 0, "curl {args:?}: {err}");
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.to_string(), body.to_string())
}

/// Runs `pht-server args`, which must refuse to start: returns its stderr.
fn refused(args: &[&str]) -> String {
    let mut child = Command::new(bin("pht-server"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pht-server {args:?} kept running: the form was accepted");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?}: {stderr}");
    assert!(!stderr.contains("listening on"), "{args:?} bound: {stderr}");
    stderr
}

/// A SOCKS4 CONNECT to 127.0.0.1:`port` through `proxy`; returns the reply code.
async fn socks4_connect(proxy: u16, port: u16) -> (u8, TcpStream) {
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).await.unwrap();
    let mut req = vec![4, 1];
    req.extend_from_slice(&port.to_be_bytes());
    req.extend_from_slice(&[127, 0, 0, 1, b'u', 0]);
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut reply))
        .await
        .expect("socks4 reply in time")
        .unwrap();
    (reply[1], s)
}

/// `-L pht://` is gost's `auto` handler behind the tunnel: HTTP, SOCKS5 and SOCKS4 on one
/// service, reached through `-L tcp:// -F forward+pht://` (the seed's two halves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pht_alone_is_auto_for_http_socks5_and_socks4() {
    let origin = http_target().await;
    let url = format!("http://{origin}/");
    let (_srv, sp) = serve(&["pht://127.0.0.1:PORT"], &[]).await;
    let f = format!("forward+pht://127.0.0.1:{}", sp[0]);
    let (_cli, cp) = serve(&["tcp://127.0.0.1:PORT"], &["-F", &f]).await;
    let local = format!("127.0.0.1:{}", cp[0]);
    let (code, body) = fetch(&["-x", &format!("http://{local}"), &url]).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", HELLO));
    let (code, body) = fetch(&["-p", "-x", &format!("http://{local}"), &url]).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", HELLO));
    let (code, body) = fetch(&["--socks5-hostname", &local, &url]).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", HELLO));
    let echo = echo_target().await;
    let (rep, mut s) = socks4_connect(cp[0], echo.port()).await;
    assert_eq!(rep, 90, "socks4 granted");
    s.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"ping");
}

/// Bare schemes on TCP: `http://`, `socks5://`, `socks://`, `tcp://:port/target`, a
/// scheme-less `:port` (auto), and a scheme gost does not know (`foo://`: auto on tcp).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_schemes_on_tcp() {
    let origin = http_target().await;
    let echo = echo_target().await;
    let url = format!("http://{origin}/");
    let target = format!("tcp://127.0.0.1:PORT/{echo}");
    let (_srv, p) = serve(
        &[
            "http://127.0.0.1:PORT",
            "socks5://127.0.0.1:PORT",
            "socks://127.0.0.1:PORT",
            &target,
            "127.0.0.1:PORT",
            "foo://127.0.0.1:PORT",
        ],
        &[],
    )
    .await;
    let (code, body) = fetch(&["-x", &format!("http://127.0.0.1:{}", p[0]), &url]).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", HELLO), "http://");
    for (i, what) in [(1, "socks5://"), (2, "socks://")] {
        let (code, body) =
            fetch(&["--socks5-hostname", &format!("127.0.0.1:{}", p[i]), &url]).await;
        assert_eq!((code.as_str(), body.as_str()), ("200", HELLO), "{what}");
    }
    echo_roundtrip(p[3], &random_bytes(64 * 1024, 13)).await;
    for (i, what) in [(4, ":port"), (5, "foo://")] {
        let (code, body) = fetch(&["-x", &format!("http://127.0.0.1:{}", p[i]), &url]).await;
        assert_eq!(
            (code.as_str(), body.as_str()),
            ("200", HELLO),
            "{what} http"
        );
        let (code, body) =
            fetch(&["--socks5-hostname", &format!("127.0.0.1:{}", p[i]), &url]).await;
        assert_eq!(
            (code.as_str(), body.as_str()),
            ("200", HELLO),
            "{what} socks5"
        );
    }
}

/// `-F http://` and `-F socks5://` (connectors over a TCP dialer) with `user:pass@`, and
/// `auth=` carrying base64 of `user:pass` on the server: right credentials pass, a chain
/// with wrong ones makes the local proxy answer 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_socks5_chain_nodes_with_credentials() {
    let origin = http_target().await;
    let url = format!("http://{origin}/");
    // auth=YWxpY2U6czNjcmV0 is base64("alice:s3cret").
    let (_up, up) = serve(
        &[
            "http://alice:s3cret@127.0.0.1:PORT",
            "socks5://127.0.0.1:PORT?auth=YWxpY2U6czNjcmV0",
        ],
        &[],
    )
    .await;
    for (scheme, port) in [("http", up[0]), ("socks5", up[1])] {
        for (pass, want) in [("s3cret", "200"), ("wrong", "503")] {
            let node = format!("{scheme}://alice:{pass}@127.0.0.1:{port}");
            let (_c, cp) = serve(&["http://127.0.0.1:PORT"], &["-F", &node]).await;
            let (code, body) = fetch(&["-x", &format!("http://127.0.0.1:{}", cp[0]), &url]).await;
            assert_eq!(code, want, "-F {node}");
            if want == "200" {
                assert_eq!(body, HELLO);
            }
        }
    }
    // `-F relay+pht://` with credentials, against `-L relay+pht://user:pass@`.
    let (_s, sp) = serve(&["relay+pht://alice:s3cret@127.0.0.1:PORT"], &[]).await;
    let node = format!("relay+pht://alice:s3cret@127.0.0.1:{}", sp[0]);
    let (_c, cp) = serve(&["http://127.0.0.1:PORT"], &["-F", &node]).await;
    let (code, body) = fetch(&["-p", "-x", &format!("http://127.0.0.1:{}", cp[0]), &url]).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", HELLO), "relay+pht");
}

/// gost refuses to start on an `auth=` that is not base64; so does pht-server (it used to
/// run the service without credentials: an open proxy where a closed one was asked for).
#[test]
fn auth_that_is_not_base64_is_refused() {
    let p = free_port().to_string();
    let form = format!("http://127.0.0.1:{p}?auth=alice:s3cret");
    let err = refused(&["-L", &form]);
    assert!(
        err.contains(&format!(
            "{form:?}: parameter auth=\"alice:s3cret\": expected base64 of user:password"
        )),
        "{err}"
    );
    let node = "socks5://127.0.0.1:1?auth=*";
    let err = refused(&["-L", &format!("http://127.0.0.1:{p}"), "-F", node]);
    assert!(err.contains("expected base64 of user:password"), "{err}");
}

/// A scheme naming a listener or handler gost has and this server has not is a clear
/// error, never a silent stand-in.
#[test]
fn unsupported_gost_schemes_are_named() {
    let p = free_port();
    for (form, want) in [
        (
            format!("ws://127.0.0.1:{p}"),
            "listener type \"ws\" is not supported",
        ),
        (
            format!("rtcp://127.0.0.1:{p}/127.0.0.1:22"),
            "handler type \"rtcp\" is not supported",
        ),
        (
            format!("udp://127.0.0.1:{p}/127.0.0.1:53"),
            "handler type \"udp\" is not supported",
        ),
        (
            format!("ss://127.0.0.1:{p}"),
            "handler type \"ss\" is not supported",
        ),
    ] {
        let err = refused(&["-L", &form]);
        assert!(err.contains(want), "{form}: {err}");
    }
    let err = refused(&[
        "-L",
        &format!("http://127.0.0.1:{p}"),
        "-F",
        "socks4://127.0.0.1:1",
    ]);
    assert!(
        err.contains("connector type \"socks4\" is not supported"),
        "{err}"
    );
}

/// gost's `probeResist` and `knock` on the http handler, from the command line: a client
/// without credentials gets the decoy instead of 407, one asking for a knock host the 407,
/// one with credentials the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_resistance_from_the_command_line() {
    let origin = http_target().await;
    let url = format!("http://{origin}/");
    let dir = TempDir::new("decoy");
    let page = dir.join("decoy.html");
    std::fs::write(&page, "decoy-response").unwrap();
    let file_form = format!("http://u:p@127.0.0.1:PORT?probeResist=file:{page}");
    let (_s, p) = serve(
        &[
            "http://u:p@127.0.0.1:PORT?probeResist=code:404&knock=secret.example.com",
            &file_form,
            // Over the tunnel too: the auto handler's HTTP side takes the same options.
            "pht://u:p@127.0.0.1:PORT?probeResist=code:404",
        ],
        &[],
    )
    .await;
    let proxy = format!("http://127.0.0.1:{}", p[0]);
    let (code, body) = fetch(&["-x", &proxy, &url]).await;
    assert_eq!((code.as_str(), body.as_str()), ("404", ""));
    let (code, _) = fetch(&["-x", &proxy, "http://secret.example.com/"]).await;
    assert_eq!(code, "407", "knock");
    let (code, body) = fetch(&["-x", &proxy, "--proxy-user", "u:p", &url]).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", HELLO));
    // A scanner's plain GET gets the decoy page.
    let (code, body) = fetch(&[&format!("http://127.0.0.1:{}/", p[1])]).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", "decoy-response"));

    let f = format!("forward+pht://127.0.0.1:{}", p[2]);
    let (_c, cp) = serve(&["tcp://127.0.0.1:PORT"], &["-F", &f]).await;
    let proxy = format!("http://127.0.0.1:{}", cp[0]);
    let (code, _) = fetch(&["-x", &proxy, &url]).await;
    assert_eq!(code, "404", "auto+pht");
    let (code, body) = fetch(&["-x", &proxy, "--proxy-user", "u:p", &url]).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", HELLO), "auto+pht");
}

/// gost's top-level `hops:` named from a chain (a chain hop with no nodes of its own), its
/// selector and nodes taken from there, across two `-C` files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_hops_named_from_a_chain() {
    let origin = http_target().await;
    let url = format!("http://{origin}/");
    let (_up, up) = serve(&["http://127.0.0.1:PORT"], &[]).await;
    let lp = free_port();
    let chains = format!(
        "services:
- name: local
  addr: 127.0.0.1:{lp}
  handler: {{type: http, chain: c}}
  listener: {{type: tcp}}
chains:
- name: c
  hops:
  - name: shared-hop
"
    );
    let hops = format!(
        "hops:
- name: shared-hop
  selector: {{strategy: fifo, maxFails: 1, failTimeout: 30s}}
  nodes:
  - name: up
    addr: 127.0.0.1:{}
    connector: {{type: http}}
    dialer: {{type: tcp}}
",
        up[0]
    );
    let dir = TempDir::new("hops");
    let (a, b) = (dir.join("chains.yaml"), dir.join("hops.yaml"));
    std::fs::write(&a, chains).unwrap();
    std::fs::write(&b, hops).unwrap();
    let _local = server(&["-C", &a, "-C", &b], lp).await;
    let (code, body) = fetch(&["-x", &format!("http://127.0.0.1:{lp}"), &url]).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", HELLO));
}

/// gost's `tcp` connector hands the stream on untouched, like `forward`: `-F tcp://` in
/// front of a port forwarder reaches that forwarder's target, bytes intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connector_passes_the_stream_on() {
    let echo = echo_target().await;
    let target = format!("tcp://127.0.0.1:PORT/{echo}");
    let (_fwd, fp) = serve(&[&target], &[]).await;
    let hop = format!("tcp://127.0.0.1:{}", fp[0]);
    let (_entry, ep) = serve(&["tcp://127.0.0.1:PORT"], &["-F", &hop]).await;
    let mut s = TcpStream::connect(("127.0.0.1", ep[0])).await.unwrap();
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    s.write_all(&data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert!(
        back == data,
        "64 KiB echoed intact through the tcp connector"
    );
}
