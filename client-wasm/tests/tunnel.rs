//! The JS API (`connect`, the tunnel's web streams, its errors) against real `pht-server`
//! processes and Node target servers on 127.0.0.1, in Node and in headless Chromium.
//!
//! Run by `scripts/test-wasm.sh`, which starts the servers and passes their ports at
//! compile time in `PHT_WASM_TEST` (`key=port,...`).
#![cfg(target_arch = "wasm32")]

use futures::{SinkExt, StreamExt};
use js_sys::{Object, Reflect, Uint8Array};
use pht_wasm::{Tunnel, connect};
use sha2::{Digest, Sha256};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

fn port(key: &str) -> u16 {
    let Some(cfg) = option_env!("PHT_WASM_TEST") else {
        panic!("PHT_WASM_TEST is not set: run these tests with scripts/test-wasm.sh")
    };
    cfg.split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.parse().expect("a port number"))
        .unwrap_or_else(|| panic!("PHT_WASM_TEST has no {key}"))
}

fn server(key: &str) -> String {
    format!("http://127.0.0.1:{}", port(key))
}

fn target(key: &str) -> String {
    format!("127.0.0.1:{}", port(key))
}

fn options(pairs: &[(&str, JsValue)]) -> pht_wasm::ConnectOptions {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &JsValue::from_str(k), v).unwrap();
    }
    o.unchecked_into()
}

fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}

/// The message of a JS `Error`; anything else fails the test.
fn message(v: &JsValue) -> String {
    let e = v
        .dyn_ref::<js_sys::Error>()
        .unwrap_or_else(|| panic!("rejected with something other than an Error: {v:?}"));
    String::from(e.message())
}

async fn open(url: &str, pairs: &[(&str, JsValue)]) -> Result<Tunnel, String> {
    connect(url.to_string(), Some(options(pairs)))
        .await
        .map_err(|e| message(&JsValue::from(e)))
}

async fn open_ok(url: &str, pairs: &[(&str, JsValue)]) -> Tunnel {
    match open(url, pairs).await {
        Ok(t) => t,
        Err(e) => panic!("connect({url}) failed: {e}"),
    }
}

fn reader(t: &Tunnel) -> wasm_streams::readable::IntoStream<'static> {
    wasm_streams::ReadableStream::from_raw(JsValue::from(t.readable()).unchecked_into())
        .into_stream()
}

fn writer(t: &Tunnel) -> wasm_streams::writable::IntoSink<'static> {
    wasm_streams::WritableStream::from_raw(JsValue::from(t.writable()).unchecked_into()).into_sink()
}

/// `Ok(())` when `closed` resolved, the error message when it rejected.
async fn closed(t: &Tunnel) -> Result<(), String> {
    JsFuture::from(js_sys::Promise::from(JsValue::from(t.closed())))
        .await
        .map(|_| ())
        .map_err(|e| message(&e))
}

/// Deterministic bytes that compress badly.
fn pseudo_random(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(n);
    out
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(f: &js_sys::Function, ms: i32) -> JsValue;
}

async fn sleep(ms: i32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        set_timeout(&resolve, ms);
    });
    JsFuture::from(p).await.unwrap();
}

/// The echo target's counters.
#[derive(Debug, Clone, Copy)]
struct EchoStats {
    closed: u32,
    /// Connections that ended with an error (a reset from the server).
    reset: u32,
}

async fn echo_stats() -> EchoStats {
    let url = format!("http://127.0.0.1:{}/stats", port("stats"));
    let text = gloo_net::http::Request::get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v = js_sys::JSON::parse(&text).unwrap();
    let get = |k: &str| Reflect::get(&v, &s(k)).unwrap().as_f64().unwrap() as u32;
    EchoStats {
        closed: get("echoClosed"),
        reset: get("echoReset"),
    }
}

/// Waits (at most 10 s) until the echo target has seen `n` connections closed.
async fn wait_echo_closed(n: u32) -> EchoStats {
    for _ in 0..200 {
        let st = echo_stats().await;
        if st.closed >= n {
            return st;
        }
        sleep(50).await;
    }
    panic!("the echo target never saw its connection closed");
}

/// Sends `n` bytes through an echo tunnel while reading them back: SHA-256 both ways.
/// Returns the streams for the caller to close.
async fn echo_roundtrip(
    t: &Tunnel,
    n: usize,
) -> (
    wasm_streams::writable::IntoSink<'static>,
    wasm_streams::readable::IntoStream<'static>,
) {
    let data = pseudo_random(n, 0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let sent = Sha256::digest(&data);
    let mut sink = writer(t);
    let mut source = reader(t);
    let write = async {
        for c in data.chunks(61_440) {
            sink.send(Uint8Array::from(c).into()).await.unwrap();
        }
    };
    let read = async {
        let mut h = Sha256::new();
        let mut got = 0;
        while got < n {
            let chunk = source
                .next()
                .await
                .expect("readable ended early")
                .map_err(|e| message(&e))
                .expect("readable failed");
            let bytes = Uint8Array::new(&chunk).to_vec();
            got += bytes.len();
            h.update(&bytes);
        }
        assert_eq!(got, n, "more bytes came back than were sent");
        h.finalize()
    };
    let ((), received) = futures::join!(write, read);
    assert_eq!(received, sent, "SHA-256 of the echoed bytes");
    (sink, source)
}

async fn expect_end(source: &mut wasm_streams::readable::IntoStream<'static>) {
    match source.next().await {
        None => {}
        Some(Ok(v)) => panic!(
            "expected the end, got {} more bytes",
            Uint8Array::new(&v).length()
        ),
        Some(Err(e)) => panic!("expected the end, got the error {}", message(&e)),
    }
}

#[wasm_bindgen_test]
async fn forward_bytes_both_ways_then_writable_close_reaches_the_target() {
    let before = echo_stats().await;
    let t = open_ok(&server("fwd_echo"), &[]).await;
    let (mut sink, mut source) = echo_roundtrip(&t, 4 << 20).await;
    // Closing the writable ends the tunnel (PHT/1 has no half-close): the target sees EOF.
    sink.close().await.unwrap();
    expect_end(&mut source).await;
    closed(&t).await.unwrap();
    let after = wait_echo_closed(before.closed + 1).await;
    assert_eq!(
        after.reset, before.reset,
        "a clean close must not reset the target"
    );
}

#[wasm_bindgen_test]
async fn forward_with_minted_token_and_small_pushes() {
    let t = open_ok(
        &format!("forward+pht://127.0.0.1:{}", port("fwd_echo")),
        &[("token", s("mint")), ("maxPushSize", JsValue::from(1000))],
    )
    .await;
    let (_sink, mut source) = echo_roundtrip(&t, 100_000).await;
    // close() ends the tunnel at once: the readable ends, `closed` resolves.
    JsFuture::from(js_sys::Promise::from(JsValue::from(t.close())))
        .await
        .unwrap();
    expect_end(&mut source).await;
    closed(&t).await.unwrap();
}

async fn through_connector(connector: &str, plain: &str, with_auth: &str) {
    let closed_before = echo_stats().await.closed;
    let t = open_ok(
        &server(plain),
        &[("connector", s(connector)), ("target", s(&target("echo")))],
    )
    .await;
    let (_sink, mut source) = echo_roundtrip(&t, 1 << 20).await;
    JsFuture::from(js_sys::Promise::from(JsValue::from(t.close())))
        .await
        .unwrap();
    expect_end(&mut source).await;
    closed(&t).await.unwrap();
    wait_echo_closed(closed_before + 1).await;

    // The same through a server that wants credentials, given as options...
    let t = open_ok(
        &server(with_auth),
        &[
            ("connector", s(connector)),
            ("target", s(&target("echo"))),
            ("username", s(USER)),
            ("password", s(PASSWORD)),
        ],
    )
    .await;
    let (mut sink, mut source) = echo_roundtrip(&t, 64 * 1024).await;
    sink.close().await.unwrap();
    expect_end(&mut source).await;
    closed(&t).await.unwrap();
    // ...and in the node URL.
    let url = format!(
        "{connector}+pht://{USER}:{PASSWORD}@127.0.0.1:{}",
        port(with_auth)
    );
    let t = open_ok(&url, &[("target", s(&target("echo")))]).await;
    let (mut sink, _source) = echo_roundtrip(&t, 1000).await;
    sink.close().await.unwrap();
    closed(&t).await.unwrap();
}

#[wasm_bindgen_test]
async fn http_connector_bytes_both_ways() {
    through_connector("http", "http", "http_auth").await;
}

#[wasm_bindgen_test]
async fn socks5_connector_bytes_both_ways() {
    through_connector("socks5", "socks5", "socks5_auth").await;
}

#[wasm_bindgen_test]
async fn relay_connector_bytes_both_ways() {
    through_connector("relay", "relay", "relay_auth").await;
}

#[wasm_bindgen_test]
async fn the_far_end_closes() {
    let t = open_ok(&server("fwd_bye"), &[]).await;
    let mut source = reader(&t);
    let mut got = Vec::new();
    while let Some(chunk) = source.next().await {
        let chunk = chunk.map_err(|e| message(&e)).expect("readable failed");
        got.extend(Uint8Array::new(&chunk).to_vec());
    }
    assert_eq!(got, b"bye\n");
    closed(&t).await.unwrap();
    // Writing to a closed tunnel fails with a JS Error.
    let e = writer(&t)
        .send(Uint8Array::from(&b"late"[..]).into())
        .await
        .unwrap_err();
    assert_eq!(message(&e), "tunnel closed");
}

/// The readable's error, failing the test on bytes or a clean end.
async fn expect_error(t: &Tunnel, what: &str) -> String {
    match reader(t).next().await {
        Some(Err(e)) => message(&e),
        Some(Ok(_)) => panic!("{what}: unexpected bytes"),
        None => panic!("{what}: the readable ended cleanly, but the tunnel failed"),
    }
}

#[wasm_bindgen_test]
async fn forward_to_an_unreachable_target_fails_at_once() {
    // The server dials its target once the tunnel exists: a failed dial resets the tunnel,
    // which the client sees as a broken pull (an error, never a clean end).
    let t = open_ok(&server("fwd_dead"), &[("token", s("mint"))]).await;
    let e = expect_error(&t, "minted token").await;
    assert!(e.starts_with("pull "), "{e}");
    assert_eq!(closed(&t).await.unwrap_err(), e);

    // The same after an authorize request, whose connection the pull reuses. pht-server
    // breaks off that pull before any response byte, and Chromium then resends the GET on
    // a new connection, which the server answers as it answers any closed token: an empty
    // 200, the clean end. Until the server answers pulls of reset tunnels with an error,
    // this part runs in Node only (Node's fetch never resends).
    if in_node() {
        let t = open_ok(&server("fwd_dead"), &[]).await;
        let e = expect_error(&t, "authorized token").await;
        assert!(e.starts_with("pull "), "{e}");
        assert_eq!(closed(&t).await.unwrap_err(), e);
    }
}

#[wasm_bindgen_test]
async fn wrong_credentials_reject_with_the_cause() {
    let echo = target("echo");
    let e = open(
        &server("http_auth"),
        &[
            ("connector", s("http")),
            ("target", s(&echo)),
            ("username", s(USER)),
            ("password", s("wrong")),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        "http connect: HTTP/1.1 407 Proxy Authentication Required"
    );
    let e = open(
        &server("http_auth"),
        &[("connector", s("http")), ("target", s(&echo))],
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        "http connect: HTTP/1.1 407 Proxy Authentication Required"
    );

    let e = open(
        &server("socks5_auth"),
        &[
            ("connector", s("socks5")),
            ("target", s(&echo)),
            ("username", s(USER)),
            ("password", s("wrong")),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(e, "socks5: authentication failed");
    let e = open(
        &server("socks5_auth"),
        &[("connector", s("socks5")), ("target", s(&echo))],
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("socks5: "), "{e}");

    // gost's relay answers after the request has gone out: the refusal arrives on the
    // readable (and in `closed`).
    let t = open_ok(
        &server("relay_auth"),
        &[
            ("connector", s("relay")),
            ("target", s(&echo)),
            ("username", s(USER)),
            ("password", s("wrong")),
        ],
    )
    .await;
    let e = reader(&t).next().await.expect("an error").unwrap_err();
    assert_eq!(message(&e), "relay: 2 Unauthorized");
    assert_eq!(closed(&t).await.unwrap_err(), "relay: 2 Unauthorized");
}

#[wasm_bindgen_test]
async fn unreachable_target_rejects_with_the_cause() {
    let dead = target("dead");
    let e = open(
        &server("http"),
        &[("connector", s("http")), ("target", s(&dead))],
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("http connect: HTTP/1.1 5"), "{e}");
    let e = open(
        &server("socks5"),
        &[("connector", s("socks5")), ("target", s(&dead))],
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("socks5: connect failed: "), "{e}");
    let t = open_ok(
        &server("relay"),
        &[("connector", s("relay")), ("target", s(&dead))],
    )
    .await;
    let e = message(&reader(&t).next().await.expect("an error").unwrap_err());
    assert!(e.starts_with("relay: "), "{e}");
    assert_eq!(closed(&t).await.unwrap_err(), e);
}

#[wasm_bindgen_test]
async fn server_down_or_misconfigured_rejects_with_the_cause() {
    let down = server("dead");
    let e = open(&down, &[]).await.unwrap_err();
    assert!(e.starts_with("authorize request failed: "), "{e}");
    // With a minted token nothing is sent before the first pull, which fails.
    let t = open_ok(&down, &[("token", s("mint"))]).await;
    let e = message(&reader(&t).next().await.expect("an error").unwrap_err());
    assert!(e.starts_with("pull request failed: "), "{e}");
    assert_eq!(closed(&t).await.unwrap_err(), e);

    let e = open(&server("fwd_echo"), &[("authorizePath", s("/nope"))])
        .await
        .unwrap_err();
    assert!(
        e.starts_with("authorize refused by server: HTTP 404"),
        "{e}"
    );
}

#[wasm_bindgen_test]
async fn bad_arguments_reject_with_the_cause() {
    let url = server("http");
    let e = open(&url, &[("connector", s("socks4")), ("target", s("a:1"))])
        .await
        .unwrap_err();
    assert!(e.contains("unknown connector \"socks4\""), "{e}");
    let e = open(&url, &[("connector", s("http"))]).await.unwrap_err();
    assert!(e.contains("options.target"), "{e}");
    let e = open(&url, &[("pushpath", s("/x"))]).await.unwrap_err();
    assert!(e.contains("unknown option \"pushpath\""), "{e}");
    let e = open(&url, &[("maxPushSize", JsValue::from(-1))])
        .await
        .unwrap_err();
    assert!(e.contains("maxPushSize"), "{e}");
    let e = open(&url, &[("token", s("sometimes"))]).await.unwrap_err();
    assert!(e.contains("expected authorize or mint"), "{e}");
    let e = open("ftp://127.0.0.1:1", &[]).await.unwrap_err();
    assert!(e.contains("expected http, https, pht or phts"), "{e}");
    let e = open(&format!("{url}/tunnel"), &[]).await.unwrap_err();
    assert!(e.contains("no path"), "{e}");
    let e = connect(url.clone(), Some(JsValue::from(7).unchecked_into()))
        .await
        .map_err(|e| message(&JsValue::from(e)))
        .unwrap_err();
    assert_eq!(e, "options must be an object");
}

/// A connection reset reaches the echo target (at most 10 s).
async fn wait_echo_reset(n: u32) {
    for _ in 0..200 {
        if echo_stats().await.reset >= n {
            return;
        }
        sleep(50).await;
    }
    panic!("the echo target never saw its connection reset");
}

const RESET_BY_THIS_SIDE: &str = "tunnel reset by this side";

#[wasm_bindgen_test]
async fn writable_abort_resets_the_tunnel() {
    let before = echo_stats().await;
    let t = open_ok(&server("fwd_echo"), &[]).await;
    let (sink, mut source) = echo_roundtrip(&t, 100_000).await;
    sink.abort_with_reason(&js_sys::Error::new("local failure").into())
        .await
        .unwrap();
    match source.next().await {
        Some(Err(e)) => assert_eq!(message(&e), RESET_BY_THIS_SIDE),
        Some(Ok(_)) => panic!("bytes after the abort"),
        None => panic!("the readable ended cleanly after writable.abort()"),
    }
    assert_eq!(closed(&t).await.unwrap_err(), RESET_BY_THIS_SIDE);
    wait_echo_reset(before.reset + 1).await;
}

#[wasm_bindgen_test]
async fn readable_cancel_resets_the_tunnel() {
    let before = echo_stats().await;
    let t = open_ok(&server("fwd_echo"), &[]).await;
    let (mut sink, source) = echo_roundtrip(&t, 100_000).await;
    source.cancel_with_reason(&s("enough")).await.unwrap();
    assert_eq!(closed(&t).await.unwrap_err(), RESET_BY_THIS_SIDE);
    let e = sink
        .send(Uint8Array::from(&b"late"[..]).into())
        .await
        .unwrap_err();
    assert_eq!(message(&e), RESET_BY_THIS_SIDE);
    wait_echo_reset(before.reset + 1).await;
}

#[wasm_bindgen_test]
async fn close_after_a_failure_still_rejects_closed() {
    // The server is down: with a minted token the pull fails, and nobody reads it. A
    // later close() must not turn that failure into a clean end.
    let t = open_ok(&server("dead"), &[("token", s("mint"))]).await;
    let e = closed(&t).await.unwrap_err();
    assert!(e.starts_with("pull request failed: "), "{e}");
    JsFuture::from(js_sys::Promise::from(JsValue::from(t.close())))
        .await
        .unwrap();
    let got = message(&reader(&t).next().await.expect("an error").unwrap_err());
    assert_eq!(got, e);
}

fn now_ms() -> f64 {
    use pht_core::Clock;
    pht_wasm::JsClock::new().now().as_secs_f64() * 1000.0
}

/// Node's count of pending `setTimeout`s; `None` elsewhere.
fn node_timeouts() -> Option<usize> {
    let process = Reflect::get(&js_sys::global(), &s("process")).ok()?;
    let info = Reflect::get(&process, &s("getActiveResourcesInfo"))
        .ok()?
        .dyn_into::<js_sys::Function>()
        .ok()?;
    let list: js_sys::Array = info.call0(&process).ok()?.dyn_into().ok()?;
    Some(
        list.iter()
            .filter(|v| v.as_string().as_deref() == Some("Timeout"))
            .count(),
    )
}

#[wasm_bindgen_test]
async fn clock_sleeps_and_clears_dropped_timers() {
    use pht_core::Clock;
    let clock = pht_wasm::JsClock::new();
    let (a, b) = (clock.now(), clock.now());
    assert!(b >= a, "now() went backwards");
    let t0 = now_ms();
    clock.sleep(std::time::Duration::from_millis(40)).await;
    let slept = now_ms() - t0;
    assert!((39.0..2000.0).contains(&slept), "slept {slept} ms for 40");
    clock.sleep(std::time::Duration::ZERO).await;

    // Dropping a sleep clears its timer (Node can count them).
    if let Some(before) = node_timeouts() {
        let sleeps: Vec<_> = (0..100)
            .map(|_| clock.sleep(std::time::Duration::from_secs(3600)))
            .collect();
        assert!(node_timeouts().unwrap() >= before + 100);
        drop(sleeps);
        assert!(
            node_timeouts().unwrap() <= before,
            "dropped sleeps left timers behind"
        );
    }
}

#[wasm_bindgen_test]
async fn a_tunnel_leaves_no_timers_behind() {
    let before = node_timeouts();
    let t = open_ok(&server("fwd_echo"), &[]).await;
    let (mut sink, mut source) = echo_roundtrip(&t, 4 << 20).await;
    sink.close().await.unwrap();
    expect_end(&mut source).await;
    closed(&t).await.unwrap();
    // Hundreds of pull chunks and pushes each armed a timer; the platform's own timers
    // (connection pools) may come and go.
    if let (Some(before), Some(after)) = (before, node_timeouts()) {
        assert!(
            after <= before + 10,
            "{before} timers before, {after} after"
        );
    }
}

// Fault injection: a `fault-proxy` in front of a `forward+pht` server to the bulk target cuts
// the first pull (or push) connection after 4 MB (FIN, RST, or silence). The tunnel must
// fail (never end cleanly), with the cause, within a bounded time.

/// Client options for the fault tests: short deadlines, and a minted token so that the pull
/// opens a connection of its own (the proxy classifies connections by their first request).
fn fault_url(key: &str) -> String {
    format!(
        "forward+pht://127.0.0.1:{}?heartbeatTimeout=3s&requestTimeout=5s&token=mint",
        port(key)
    )
}

const BULK: usize = 32 << 20;
/// Time from opening to the error, at most.
const FAULT_BOUND_MS: f64 = 20_000.0;

fn log(msg: &str) {
    web_sys_console_log(&JsValue::from_str(msg));
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn web_sys_console_log(v: &JsValue);
}

/// Downloads 32 MiB through the proxy `key` (which cuts the pull): returns the error.
async fn download_until_cut(key: &str) -> String {
    let t0 = now_ms();
    let t = open_ok(&fault_url(key), &[]).await;
    let mut sink = writer(&t);
    sink.send(Uint8Array::from(format!("send {BULK} {key}\n").as_bytes()).into())
        .await
        .unwrap();
    let mut source = reader(&t);
    let mut got = 0usize;
    let err = loop {
        match source.next().await {
            Some(Ok(c)) => got += Uint8Array::new(&c).length() as usize,
            Some(Err(e)) => break message(&e),
            None => panic!("{key}: the readable ended cleanly after {got} bytes"),
        }
    };
    let ms = now_ms() - t0;
    assert!(
        got < BULK,
        "{key}: all {got} bytes arrived: the cut never happened"
    );
    assert_eq!(closed(&t).await.unwrap_err(), err, "{key}: closed");
    assert!(ms < FAULT_BOUND_MS, "{key}: the error took {ms} ms");
    log(&format!(
        "{key}: readable errored after {got} bytes in {ms:.0} ms: {err}"
    ));
    err
}

#[wasm_bindgen_test]
async fn pull_cut_with_fin_is_an_error() {
    let e = download_until_cut("cut_pull_fin").await;
    assert!(e.starts_with("pull "), "{e}");
}

#[wasm_bindgen_test]
async fn pull_cut_with_rst_is_an_error() {
    let e = download_until_cut("cut_pull_rst").await;
    assert!(e.starts_with("pull request failed: "), "{e}");
}

#[wasm_bindgen_test]
async fn pull_gone_silent_is_an_error() {
    let e = download_until_cut("cut_pull_silent").await;
    assert_eq!(
        e,
        "no data or heartbeat from the server for 3s (heartbeatTimeout)"
    );
}

/// How an upload through a cutting proxy ended.
enum Upload {
    /// The tunnel failed: the readable's error (the same as `closed`'s and a failed write's).
    Failed(String),
    /// Every byte arrived intact anyway (a browser may resend a request whose connection
    /// broke before any answer, on a new connection the proxy leaves alone).
    Intact,
}

/// Uploads 32 MiB through the proxy `key` (which cuts the push) to the bulk target.
async fn upload_until_cut(key: &str) -> Upload {
    let t0 = now_ms();
    let t = open_ok(&fault_url(key), &[]).await;
    let data = pseudo_random(BULK, 0x5eed);
    let mut sink = writer(&t);
    let mut source = reader(&t);
    let write = async {
        sink.send(Uint8Array::from(format!("recv {BULK}\n").as_bytes()).into())
            .await
            .map_err(|e| message(&e))?;
        for c in data.chunks(64 * 1024) {
            sink.send(Uint8Array::from(c).into())
                .await
                .map_err(|e| message(&e))?;
        }
        Ok::<(), String>(())
    };
    let read = async {
        let mut answer = Vec::new();
        loop {
            match source.next().await {
                Some(Ok(c)) => answer.extend(Uint8Array::new(&c).to_vec()),
                Some(Err(e)) => return Err(message(&e)),
                None => return Ok(answer),
            }
        }
    };
    let (written, read) = futures::join!(write, read);
    let ms = now_ms() - t0;
    assert!(ms < FAULT_BOUND_MS, "{key}: took {ms} ms");
    match read {
        Err(e) => {
            if let Err(w) = written {
                assert_eq!(w, e, "{key}: the failed write's error");
            }
            assert_eq!(closed(&t).await.unwrap_err(), e, "{key}: closed");
            log(&format!("{key}: readable errored in {ms:.0} ms: {e}"));
            Upload::Failed(e)
        }
        Ok(answer) => {
            // A clean end is only right if every byte arrived.
            let want = format!("{:x}\n", Sha256::digest(&data));
            assert_eq!(
                String::from_utf8_lossy(&answer),
                want,
                "{key}: the readable ended cleanly, but the target did not get the bytes"
            );
            written.expect("all written");
            closed(&t).await.unwrap();
            log(&format!("{key}: all bytes arrived intact in {ms:.0} ms"));
            Upload::Intact
        }
    }
}

/// Node's fetch never resends a POST: there the cut push must fail the tunnel.
fn in_node() -> bool {
    node_timeouts().is_some()
}

/// A broken push: the client's push fails, or the server, which resets the tunnel when a
/// push body breaks off, ends the pull first: either request may name the failure.
fn assert_push_cut(e: &str) {
    assert!(
        e.starts_with("push request failed: ") || e.starts_with("pull request failed: "),
        "{e}"
    );
}

#[wasm_bindgen_test]
async fn push_cut_with_fin_is_an_error() {
    match upload_until_cut("cut_push_fin").await {
        Upload::Failed(e) => assert_push_cut(&e),
        Upload::Intact => assert!(!in_node(), "Node resent a push"),
    }
}

#[wasm_bindgen_test]
async fn push_cut_with_rst_is_an_error() {
    match upload_until_cut("cut_push_rst").await {
        Upload::Failed(e) => assert_push_cut(&e),
        Upload::Intact => assert!(!in_node(), "Node resent a push"),
    }
}

#[wasm_bindgen_test]
async fn push_gone_silent_is_an_error() {
    match upload_until_cut("cut_push_silent").await {
        Upload::Failed(e) => assert_eq!(e, "push request timed out after 5s (requestTimeout)"),
        Upload::Intact => panic!("a silent push cannot succeed"),
    }
}
