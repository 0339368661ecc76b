//! gost's per-node selector keys and handler `retries`, seen by a client: a chain whose
//! second hop has a dead node and a live one, in round robin.
//!
//! The first hop is one live HTTP proxy, so a connection whose round robin picks the
//! dead node fails there (the starting hop has no other node to fail over to). How many
//! of a run of requests fail then shows what the configuration did.

use pht_e2e::*;

/// The service under test: an http proxy whose chain is `first`, then `[dead, second]`.
/// `dead_md` is the dead node's metadata (YAML flow map), `handler_md` the handler's.
fn yaml(port: u16, first: u16, dead: u16, second: u16, dead_md: &str, handler_md: &str) -> String {
    format!(
        "services:
- name: s
  addr: 127.0.0.1:{port}
  handler: {{type: http, chain: c, metadata: {handler_md}}}
  listener: {{type: tcp}}
chains:
- name: c
  hops:
  - name: h0
    nodes:
    - {{name: first, addr: '127.0.0.1:{first}', connector: {{type: http}}}}
  - name: h1
    selector: {{strategy: round}}
    nodes:
    - {{name: dead, addr: '127.0.0.1:{dead}', connector: {{type: http}}, metadata: {dead_md}}}
    - {{name: second, addr: '127.0.0.1:{second}', connector: {{type: http}}}}
"
    )
}

/// How many of `n` requests through the proxy on `port` fail (they run one after another).
async fn failures(port: u16, url: &str, n: usize) -> usize {
    let proxy = format!("http://127.0.0.1:{port}");
    let mut failed = 0;
    for _ in 0..n {
        let (_, out, _) = curl(&["-x", &proxy, url]).await;
        if out != HELLO {
            failed += 1;
        }
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_node_max_fails_and_handler_retries() {
    let origin = http_target().await;
    let url = format!("http://{origin}/");
    let url = url.as_str();
    let (p1, p2) = (free_port(), free_port());
    let _first = server(&["-L", &format!("http://127.0.0.1:{p1}")], p1).await;
    let _second = server(&["-L", &format!("http://127.0.0.1:{p2}")], p2).await;
    // Nothing listens here: the first proxy's CONNECT to it is refused.
    let dead = free_port();

    let run = |dead_md: &'static str, handler_md: &'static str| async move {
        let port = free_port();
        let cfg = temp_file(
            &format!("node-selection-{port}.yaml"),
            &yaml(port, p1, dead, p2, dead_md, handler_md),
        );
        let _s = server(&["-C", &cfg], port).await;
        failures(port, url, 6).await
    };

    // The dead node's own maxFails keeps it in the rotation: every other request fails.
    assert_eq!(
        run("{maxFails: 100}", "{}").await,
        3,
        "per-node maxFails 100"
    );
    // Without it, the selector's default (1 failure within 10s) takes it out after the
    // first failure.
    assert_eq!(run("{}", "{}").await, 1, "default maxFails");
    // retries=1: a request whose route meets the dead node is routed again, and the round
    // robin then picks the live one.
    assert_eq!(run("{maxFails: 100}", "{retries: 1}").await, 0, "retries 1");
    // gost's YAML form, handler.retries (beside the metadata, not in it).
    let port = free_port();
    let cfg = temp_file(
        &format!("node-selection-{port}.yaml"),
        &yaml(port, p1, dead, p2, "{maxFails: 100}", "{}")
            .replace("type: http, chain: c,", "type: http, chain: c, retries: 1,"),
    );
    let s = server(&["-C", &cfg], port).await;
    assert_eq!(failures(port, url, 6).await, 0, "handler.retries 1");
    assert!(
        !s.log_text().contains("retries"),
        "not warned about: {}",
        s.log_text()
    );
    drop(s);
    // The command-line form, -L ...?retries=N (the hop's selector keys keep the dead
    // node in the rotation).
    let port = free_port();
    let _s = server(
        &[
            "-L",
            &format!("http://127.0.0.1:{port}?retries=1"),
            "-F",
            &format!("http://127.0.0.1:{p1}"),
            "-F",
            &format!("http://127.0.0.1:{dead},127.0.0.1:{p2}?strategy=round&maxFails=100"),
        ],
        port,
    )
    .await;
    assert_eq!(failures(port, url, 6).await, 0, "?retries=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_node_selector_keys_and_retries_are_refused_with_their_key() {
    let p = free_port();
    for (dead_md, handler_md, key) in [
        (
            "{maxFails: lots}",
            "{}",
            "chains[0].hops[1].nodes[0].metadata.maxFails",
        ),
        (
            "{failTimeout: soon}",
            "{}",
            "chains[0].hops[1].nodes[0].metadata.failTimeout",
        ),
        (
            "{weight: heavy}",
            "{}",
            "chains[0].hops[1].nodes[0].metadata.weight",
        ),
        (
            "{}",
            "{retries: twice}",
            "services[0].handler.metadata.retries",
        ),
    ] {
        let cfg = temp_file(
            &format!("node-selection-bad-{p}.yaml"),
            &yaml(p, 1, 2, 3, dead_md, handler_md),
        );
        let out = std::process::Command::new(bin("pht-server"))
            .args(["-C", &cfg])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{dead_md} {handler_md}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key}: {err}");
    }
}
