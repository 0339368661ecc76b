//! h3: PHT over HTTP/3 (QUIC) with the real binaries: bulk bytes both ways, a thousand
//! tunnels on one QUIC connection, the seed's handlers through a local entry point with
//! curl, a path that loses 1 % of its datagrams, and Alt-Svc on phts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use pht_client::{HyperBody, HyperFetch};
use pht_core::{Fetch, FetchError, FetchResponse, NodeUrl};
use pht_e2e::lossy_udp::lossy_udp;
use pht_e2e::*;

const MIB: usize = 1024 * 1024;

/// Sends the first `left` requests through `first` and the rest through `then`: a
/// browser that moves to HTTP/3 halfway through a tunnel.
struct Switch {
    first: HyperFetch,
    then: HyperFetch,
    left: Arc<AtomicUsize>,
}

impl Switch {
    fn pick(&self) -> &HyperFetch {
        let before = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if before.is_ok() {
            &self.first
        } else {
            &self.then
        }
    }
}

impl Fetch for Switch {
    type Body = HyperBody;

    async fn get(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<FetchResponse<HyperBody>, FetchError> {
        self.pick().get(url, headers).await
    }

    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: pht_core::PostBody,
    ) -> Result<(u16, bytes::Bytes), FetchError> {
        self.pick().post(url, headers, body).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_over_h3_from_yaml() {
    let target = bulk_target().await;
    let sp = free_port();
    // The YAML form: listener type h3, a forwarder to the target.
    let yaml = format!(
        "services:
- name: h3-forward
  addr: 127.0.0.1:{sp}
  handler:
    type: forward
  listener:
    type: h3
    metadata:
      keepalive: true
      ttl: 5s
      maxIdleTimeout: 20s
  forwarder:
    nodes:
    - name: target-0
      addr: {target}
"
    );
    let _srv = server(&["-C", &temp_file("h3-forward.yaml", &yaml)], sp).await;
    for (v, len) in [("", 64 * MIB), ("&v=1", 8 * MIB)] {
        let (_cli, local) = client(&format!("forward+h3://127.0.0.1:{sp}?x=1{v}")).await;
        let data = random_bytes(len, 1);
        let (digest, up) = upload(local, &data).await;
        assert_eq!(digest, sha256(&data), "upload hash ({v})");
        let (digest, down) = download(local, len, 2).await;
        assert_eq!(digest, sha256(&random_bytes(len, 2)), "download hash ({v})");
        let proto = if v.is_empty() { "PHT/2" } else { "PHT/1" };
        println!(
            "{} MiB over h3, {proto} (debug build): upload {up:.0} MB/s, download {down:.0} MB/s",
            len / MIB
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tunnels_at_once_share_one_quic_connection() {
    let target = echo_target().await;
    let sp = free_port();
    let srv = server(&["-D", "-L", &format!("h3://127.0.0.1:{sp}/{target}")], sp).await;
    let (cli, local) = client(&format!("forward+h3://127.0.0.1:{sp}")).await;

    let mut tasks = Vec::new();
    for i in 0..1000u64 {
        tasks.push(tokio::spawn(async move {
            echo_roundtrip(local, &random_bytes(16 * 1024 + i as usize, i)).await;
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(180), t)
            .await
            .expect("a tunnel stalled")
            .unwrap();
    }
    let log = srv.log_text();
    assert_eq!(
        log.matches("h3 connection accepted").count(),
        1,
        "every tunnel should ride one QUIC connection: {}",
        cli.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_handlers_over_h3_through_a_local_entry_point() {
    let origin = http_target().await;
    let url = format!("http://{origin}/");
    let (h, s5, r, f) = (free_port(), free_port(), free_port(), free_port());
    let _srv = server(
        &[
            "-L",
            &format!("http+h3://127.0.0.1:{h}"),
            "-L",
            &format!("socks5+h3://127.0.0.1:{s5}"),
            "-L",
            &format!("relay+h3://127.0.0.1:{r}"),
            "-L",
            &format!("forward+h3://127.0.0.1:{f}/{origin}"),
        ],
        f,
    )
    .await;
    // The entry points: gost's client forms with an h3 chain node.
    let (eh, es5, er, ef) = (free_port(), free_port(), free_port(), free_port());
    let _entry = server(
        &[
            "-L",
            &format!("http://127.0.0.1:{eh}"),
            "-F",
            &format!("http+h3://127.0.0.1:{h}"),
        ],
        eh,
    )
    .await;
    let _entry5 = server(
        &[
            "-L",
            &format!("socks5://127.0.0.1:{es5}"),
            "-F",
            &format!("socks5+h3://127.0.0.1:{s5}"),
        ],
        es5,
    )
    .await;
    let _entryr = server(
        &[
            "-L",
            &format!("http://127.0.0.1:{er}"),
            "-F",
            &format!("relay+http3://127.0.0.1:{r}"),
        ],
        er,
    )
    .await;
    let _entryf = server(
        &[
            "-L",
            &format!("tcp://127.0.0.1:{ef}"),
            "-F",
            &format!("forward+h3://127.0.0.1:{f}"),
        ],
        ef,
    )
    .await;
    for (what, args) in [
        (
            "http",
            vec![
                "-x".to_string(),
                format!("http://127.0.0.1:{eh}"),
                url.clone(),
            ],
        ),
        (
            "socks5",
            vec![
                "--socks5-hostname".to_string(),
                format!("127.0.0.1:{es5}"),
                url.clone(),
            ],
        ),
        (
            "relay",
            vec![
                "-x".to_string(),
                format!("http://127.0.0.1:{er}"),
                url.clone(),
            ],
        ),
        ("forward", vec![format!("http://127.0.0.1:{ef}/")]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = curl(&args).await;
        assert_eq!((code, out.as_str()), (0, HELLO), "{what}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_completes_intact_when_the_path_drops_one_percent_of_datagrams() {
    let target = bulk_target().await;
    let sp = free_port();
    let _srv = server(&["-L", &format!("h3://127.0.0.1:{sp}/{target}")], sp).await;
    let relay = lossy_udp(format!("127.0.0.1:{sp}").parse().unwrap(), 0.01, 42).await;
    let (_cli, local) = client(&format!("forward+h3://{}", relay.addr)).await;

    let data = random_bytes(16 * MIB, 3);
    let (digest, up) = upload(local, &data).await;
    assert_eq!(digest, sha256(&data), "upload hash");
    let (digest, down) = download(local, 16 * MIB, 4).await;
    assert_eq!(digest, sha256(&random_bytes(16 * MIB, 4)), "download hash");
    let dropped = relay.counts.dropped.load(Ordering::Relaxed);
    let forwarded = relay.counts.forwarded.load(Ordering::Relaxed);
    assert!(
        dropped > 50,
        "the path should have lost packets: {dropped} of {}",
        dropped + forwarded
    );
    println!(
        "16 MiB each way over h3 losing 1 % ({dropped} of {} datagrams dropped): \
         upload {up:.1} MB/s, download {down:.1} MB/s",
        dropped + forwarded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phts_with_http3_serves_the_same_tunnels_on_udp_and_advertises_them() {
    let target = echo_target().await;
    let p = free_port();
    let srv = server(
        &["-L", &format!("phts://127.0.0.1:{p}/{target}?http3=true")],
        p,
    )
    .await;
    assert!(srv.log_text().contains(&format!(
        "HTTP/3 on udp 127.0.0.1:{p}, with the same tunnels"
    )));
    let (code, out, err) = curl(&[
        "-k",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("https://127.0.0.1:{p}/authorize"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let alt = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("alt-svc:"))
        .unwrap_or_else(|| panic!("no Alt-Svc header: {out}"));
    assert_eq!(alt.trim_end(), format!("alt-svc: h3=\":{p}\"; ma=86400"));
    for node in [
        format!("forward+phts://127.0.0.1:{p}"),
        format!("forward+h3://127.0.0.1:{p}"),
    ] {
        let (_cli, local) = client(&node).await;
        echo_roundtrip(local, &random_bytes(512 * 1024, 9)).await;
    }

    // A browser moves to HTTP/3 once it has seen Alt-Svc, in the middle of a tunnel: the
    // first requests (authorize, the first pull) go over TCP, the rest over QUIC. Both
    // reach the same tunnel.
    for version in ["2", "1"] {
        let url = format!("forward+phts://127.0.0.1:{p}?v={version}");
        let tcp = HyperFetch::for_node(&NodeUrl::parse(&url).unwrap()).unwrap();
        let url = format!("forward+h3://127.0.0.1:{p}?v={version}");
        let node = NodeUrl::parse(&url).unwrap();
        let quic = HyperFetch::for_node(&node).unwrap();
        let fetch = Switch {
            first: tcp,
            then: quic,
            left: Arc::new(AtomicUsize::new(2)),
        };
        let (tunnel, driver) =
            pht_core::open(fetch, pht_client::TokioClock::new(), node.tunnel_config())
                .await
                .unwrap();
        tokio::spawn(driver);
        let (mut rd, mut wr) = tunnel.split();
        let data = random_bytes(MIB, 10);
        let mut back = vec![0u8; data.len()];
        let (w, r) = tokio::time::timeout(Duration::from_secs(30), async {
            futures::join!(wr.write_all(&data), rd.read_exact(&mut back))
        })
        .await
        .expect("the tunnel stalled when its requests moved to HTTP/3");
        w.unwrap();
        r.unwrap();
        assert_eq!(sha256(&back), sha256(&data), "PHT/{version}: echoed bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_mistakes_get_clear_errors() {
    // An h3 node behind another hop: QUIC cannot be carried over a TCP chain.
    let p = free_port();
    let out = tokio::process::Command::new(bin("pht-server"))
        .args([
            "-L",
            &format!("tcp://127.0.0.1:{p}/127.0.0.1:1"),
            "-F",
            "relay+pht://127.0.0.1:1",
            "-F",
            "relay+h3://127.0.0.1:2",
        ])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("an h3 node cannot sit behind earlier hops of a chain"),
        "{err}"
    );
    // A forward proxy cannot carry QUIC.
    let out = tokio::process::Command::new(bin("pht-client"))
        .args([
            "-L",
            "tcp://127.0.0.1:0",
            "-F",
            "forward+h3://127.0.0.1:1?proxy=http://127.0.0.1:3128",
        ])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("parameter proxy=\"http://127.0.0.1:3128\": an HTTP proxy cannot carry h3"),
        "{err}"
    );
    // A bad QUIC option names its key.
    let out = tokio::process::Command::new(bin("pht-server"))
        .args(["-L", "h3://127.0.0.1:0?maxIdleTimeout=soon"])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("maxIdleTimeout"), "{err}");
    // HTTP/3 needs TLS.
    let out = tokio::process::Command::new(bin("pht-server"))
        .args(["-L", "pht://127.0.0.1:0?http3=true"])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "services[0].listener.metadata.http3: true is not possible on pht: HTTP/3 runs \
             over TLS (use phts)"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_survives_the_client_address_changing_mid_transfer() {
    let target = bulk_target().await;
    let sp = free_port();
    let srv = server(&["-D", "-L", &format!("h3://127.0.0.1:{sp}/{target}")], sp).await;
    let relay = lossy_udp(format!("127.0.0.1:{sp}").parse().unwrap(), 0.0, 1).await;
    let (_cli, local) = client(&format!("forward+h3://{}", relay.addr)).await;

    // Change the client's source address three times while 32 MiB come down.
    let len = 32 * MIB;
    let transfer = tokio::spawn(download(local, len, 5));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        relay.rebind();
    }
    let (digest, _) = tokio::time::timeout(Duration::from_secs(120), transfer)
        .await
        .expect("the transfer stalled after an address change")
        .unwrap();
    assert_eq!(digest, sha256(&random_bytes(len, 5)), "download hash");
    // The same QUIC connection moved to the new address (migration), and the tunnel with it.
    let log = srv.log_text();
    assert_eq!(log.matches("h3 connection accepted").count(), 1, "{log}");
    // A new tunnel still works over the moved connection.
    upload_one_mib(local).await;
}

/// One more upload through a bulk target: the path works after the moves.
async fn upload_one_mib(local: u16) {
    let data = random_bytes(MIB, 6);
    let (digest, _) = upload(local, &data).await;
    assert_eq!(digest, sha256(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_short_tunnels_in_a_row_all_succeed() {
    // A server may answer a request before the client has finished sending it, and stop
    // the request side (RFC 9114, 4.1.2): a client that took that as a failure lost about
    // one short tunnel in a few hundred.
    let target = echo_target().await;
    let sp = free_port();
    let _srv = server(&["-L", &format!("h3://127.0.0.1:{sp}/{target}")], sp).await;
    for v in ["1", "2"] {
        let (_cli, local) = client(&format!("forward+h3://127.0.0.1:{sp}?v={v}")).await;
        for i in 0..300u64 {
            echo_roundtrip(local, &random_bytes(64, i)).await;
        }
    }
}
