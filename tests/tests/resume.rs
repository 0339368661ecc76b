//! PHT/2 in the field: tunnels that keep every byte while the HTTP connections under them
//! are cut, that half-close for real, and that get through a proxy holding responses back.
//! Real pht-server and pht-client processes; a fault proxy, a chaos proxy and Debian's
//! nginx in the path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pht_e2e::fault::{Fault, FaultProxy, Kind, Mode, RandomCuts};
use pht_e2e::middlebox::{Middlebox, Nginx};
use pht_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn bounded<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {secs} s"))
}

/// The server's count of open tunnels, from the last `tunnels=N` of its debug log.
fn open_tunnels(server_log: &str) -> Option<usize> {
    server_log.lines().rev().find_map(|l| {
        let at = l.find("tunnels=")?;
        l[at + 8..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// Waits until the server's log says no tunnel is open.
async fn expect_no_tunnels(srv: &Proc, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = srv.log_text();
        if open_tunnels(&log) == Some(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the server still holds tunnels (last count {:?})",
            open_tunnels(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------
// One cut, as in tests/tests/field.rs, but now every byte must arrive with no error.

const FAULT_DATA: usize = 32 * MIB;
const FAULT_AFTER: u64 = 4_000_000;

async fn survival_case(kind: Kind, mode: Mode) {
    let what = format!("PHT/2, {kind} cut by {mode}");
    let data = Arc::new(random_bytes(FAULT_DATA, 30));
    let l = target_listener().await;
    let target = l.local_addr().unwrap();
    let d = data.clone();
    // The target streams the data (pull) or reads it (push), each time until EOF, and
    // reports what it read.
    let target_side = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        if kind == Kind::Pull {
            s.write_all(&d).await?;
            s.shutdown().await?;
            s.read_to_end(&mut got).await?;
        } else {
            s.read_to_end(&mut got).await?;
            s.shutdown().await?;
        }
        std::io::Result::Ok(got)
    });
    let sp = free_port();
    let srv = server(
        &[
            "-D",
            "-L",
            &format!("forward+pht://127.0.0.1:{sp}/{target}?heartbeat=1s"),
        ],
        sp,
    )
    .await;
    let proxy = FaultProxy::start(
        loopback(sp),
        Fault {
            kind,
            after: FAULT_AFTER,
            mode,
        },
    )
    .await;
    let cli = client(&format!(
        "forward+pht://127.0.0.1:{}?heartbeatTimeout=3s&requestTimeout=5s",
        proxy.port()
    ))
    .await;
    let start = Instant::now();
    let app = async {
        let mut s = TcpStream::connect(("127.0.0.1", cli.1)).await?;
        let mut got = Vec::new();
        if kind == Kind::Pull {
            s.write_all(b"go").await?;
            s.shutdown().await?;
            s.read_to_end(&mut got).await?;
        } else {
            s.write_all(&data).await?;
            s.shutdown().await?;
            s.read_to_end(&mut got).await?;
        }
        std::io::Result::Ok(got)
    };
    let context = || {
        format!(
            "proxy: {:#?}\n--- pht-client log ---\n{}\n--- pht-server log (tail) ---\n{}",
            proxy.events(),
            cli.0.log_text(),
            tail(&srv.log_text(), 40)
        )
    };
    let app_got = match bounded(90, &what, app).await {
        Ok(g) => g,
        Err(e) => panic!("{what}: the app saw an error: {e}\n{}", context()),
    };
    let target_got = match bounded(30, &what, target_side).await.unwrap() {
        Ok(g) => g,
        Err(e) => panic!("{what}: the target saw an error: {e}\n{}", context()),
    };
    assert!(proxy.tripped(), "{what}: the fault never tripped");
    let (app_want, target_want): (&[u8], &[u8]) = match kind {
        Kind::Pull => (&data, b"go"),
        Kind::Push => (b"", &data),
    };
    assert!(
        app_got == app_want && target_got == target_want,
        "{what}: bytes differ (app got {} of {}, target got {} of {})\n{}",
        app_got.len(),
        app_want.len(),
        target_got.len(),
        target_want.len(),
        context()
    );
    println!(
        "{what}: 32 MiB intact, clean end both sides, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    expect_no_tunnels(&srv, &what).await;
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_cut_by_fin_loses_nothing() {
    survival_case(Kind::Pull, Mode::Fin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_cut_by_rst_loses_nothing() {
    survival_case(Kind::Pull, Mode::Rst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_gone_silent_loses_nothing() {
    survival_case(Kind::Pull, Mode::Silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_cut_by_fin_loses_nothing() {
    survival_case(Kind::Push, Mode::Fin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_cut_by_rst_loses_nothing() {
    survival_case(Kind::Push, Mode::Rst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_gone_silent_loses_nothing() {
    survival_case(Kind::Push, Mode::Silent).await;
}

// ---------------------------------------------------------------------------------------
// Mixed traffic while connections are cut at random.

/// Seconds of traffic (`PHT_CHAOS_SECS` shortens it for a quick local run).
fn chaos_secs() -> u64 {
    std::env::var("PHT_CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// One tunnel to an echo target: writes a seeded stream for `secs` (32 KiB pieces with
/// pauses, and 1 MiB bursts),
/// reads the echo at the same time, then half-closes and checks every byte came back.
async fn echo_for(local: u16, secs: u64, seed: u64) -> Result<usize, String> {
    let s = TcpStream::connect(("127.0.0.1", local))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut r, mut w) = s.into_split();
    let stop = Instant::now() + Duration::from_secs(secs);
    let writer = tokio::spawn(async move {
        let mut sent = Vec::new();
        let mut i = 0u64;
        while Instant::now() < stop {
            // Mostly small writes with pauses, now and then a 1 MiB burst at full speed.
            let burst = i % 16 == 15;
            let len = if burst { MIB } else { 32 * 1024 };
            let piece = random_bytes(len, seed * 1_000_003 + i);
            i += 1;
            w.write_all(&piece)
                .await
                .map_err(|e| format!("write after {} bytes: {e}", sent.len()))?;
            sent.extend_from_slice(&piece);
            if !burst {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        w.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
        Ok::<_, String>(sent)
    });
    let mut got = Vec::new();
    let read = r.read_to_end(&mut got).await;
    let sent = writer.await.map_err(|e| e.to_string())??;
    read.map_err(|e| format!("read after {} of {} bytes: {e}", got.len(), sent.len()))?;
    if got != sent {
        let at = got.iter().zip(&sent).position(|(a, b)| a != b);
        return Err(format!(
            "echo differs: {} bytes back of {} sent, first difference at {at:?}",
            got.len(),
            sent.len()
        ));
    }
    Ok(sent.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_tunnels_keep_every_byte_while_connections_are_cut_at_random() {
    let secs = chaos_secs();
    let echo = echo_target().await;
    let sp = free_port();
    let srv = server(
        &[
            "-D",
            "-L",
            &format!("forward+pht://127.0.0.1:{sp}/{echo}?heartbeat=1s"),
        ],
        sp,
    )
    .await;
    let chaos = FaultProxy::random(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        loopback(sp),
        RandomCuts {
            every: Duration::from_millis(200)..=Duration::from_millis(500),
            kind: None,
            seed: 42,
        },
        false,
    );
    // Pulls are also replaced every second (make before break), between the cuts.
    let cli = client(&format!(
        "forward+pht://127.0.0.1:{}?heartbeatTimeout=3s&requestTimeout=5s&pullMaxAge=1s",
        chaos.port()
    ))
    .await;
    let start = Instant::now();
    let tunnels: Vec<_> = (0..10)
        .map(|i| tokio::spawn(echo_for(cli.1, secs, i + 1)))
        .collect();
    let mut total = 0;
    for (i, t) in tunnels.into_iter().enumerate() {
        match bounded(secs + 120, "chaos tunnel", t).await.unwrap() {
            Ok(n) => total += n,
            Err(e) => panic!(
                "tunnel {i}: {e}\n--- pht-client log (tail) ---\n{}",
                tail(&cli.0.log_text(), 60)
            ),
        }
    }
    println!(
        "chaos: 10 tunnels, {:.1} MB each way intact in {:.1} s; {} connections cut",
        total as f64 / 1e6,
        start.elapsed().as_secs_f64(),
        chaos.cuts()
    );
    assert!(
        chaos.cuts() >= secs,
        "the chaos proxy cut only {} connections",
        chaos.cuts()
    );
    expect_no_tunnels(&srv, "chaos").await;
    let log = srv.log_text();
    let rotations = log.matches("replaced by a newer pull").count();
    println!("chaos: {rotations} pulls replaced by newer ones");
    assert!(rotations > 0, "no pull was rotated (pullMaxAge=1s)");
}

// ---------------------------------------------------------------------------------------
// Half-close and buffering proxies.

/// A target that reads until EOF and only then answers: the SHA-256 of what it read.
async fn digest_after_eof_target() -> SocketAddr {
    late_digest_target(Duration::ZERO).await
}

/// [`digest_after_eof_target`] that reads nothing for `stall` after each accept.
async fn late_digest_target(stall: Duration) -> SocketAddr {
    let l = target_listener().await;
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(stall).await;
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let _ = s.write_all(&sha256(&got)).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Sends `data`, half-closes, and returns the answer read to a clean EOF.
async fn ask_after_eof(local: u16, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", local)).await?;
    s.write_all(data).await?;
    s.shutdown().await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_reaches_the_target_and_its_answer_comes_back() {
    let target = digest_after_eof_target().await;
    let sp = free_port();
    let _srv = server(
        &["-L", &format!("forward+pht://127.0.0.1:{sp}/{target}")],
        sp,
    )
    .await;
    let cli = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    for (len, seed) in [(0, 1), (5, 2), (3 * MIB, 3)] {
        let data = random_bytes(len, seed);
        let answer = bounded(60, "half-close", ask_after_eof(cli.1, &data))
            .await
            .unwrap_or_else(|e| panic!("{len} bytes: {e}\n{}", cli.0.log_text()));
        assert_eq!(answer, sha256(&data), "{len} bytes: the target's answer");
    }
}

// ---------------------------------------------------------------------------------------
// A target that stops reading: back-pressure, not a failure.

/// How long the target of [`stalled_target_tunnel`] reads nothing: longer than the server's `pushTimeout`
/// and `pushWait` and the client's `requestTimeout` in the tests below.
const STALL: Duration = Duration::from_secs(4);
/// More than every buffer on the way holds (the client's upload queue, the server's
/// reorder buffer and handler queue, the socket buffers), so the stall reaches the
/// application's writes.
const STALLED_DATA: usize = 48 * MIB;

/// A server in front of a target that reads nothing for [`STALL`] that gives up on a handler after 1 s (PHT/1)
/// and answers PHT/2 pushes after 300 ms, and a client with `requestTimeout=2s`.
async fn stalled_target_tunnel(version: u8) -> (Proc, (Proc, u16)) {
    let target = late_digest_target(STALL).await;
    let sp = free_port();
    let srv = server(
        &[
            "-D",
            "-L",
            &format!("forward+pht://127.0.0.1:{sp}/{target}?pushTimeout=1s&pushWait=300ms"),
        ],
        sp,
    )
    .await;
    let cli = client(&format!(
        "forward+pht://127.0.0.1:{sp}?v={version}&requestTimeout=2s"
    ))
    .await;
    (srv, cli)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_stops_reading_slows_the_upload_and_loses_nothing() {
    let (srv, cli) = stalled_target_tunnel(2).await;
    let data = random_bytes(STALLED_DATA, 11);
    let started = Instant::now();
    let answer = bounded(90, "upload to a late reader", ask_after_eof(cli.1, &data))
        .await
        .unwrap_or_else(|e| panic!("the tunnel failed: {e}\n{}", srv.log_text()));
    assert_eq!(answer, sha256(&data), "the target's digest of what it read");
    assert!(
        started.elapsed() >= STALL,
        "the target read nothing for {STALL:?}, yet the upload ended after {:?}",
        started.elapsed()
    );
    let log = srv.log_text();
    assert!(
        log.contains("push: answered before the handler took all of it"),
        "no push waited for the stalled target: the test did not test it\n{log}"
    );
    assert!(!log.contains("tunnel reset"), "a tunnel was reset:\n{log}");
    expect_no_tunnels(&srv, "after the late reader").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_stops_reading_past_push_timeout_resets_a_pht1_tunnel() {
    // A PHT/1 push is answered only once its bytes are delivered and cannot be sent
    // again, so `pushTimeout` ends the tunnel: the application must see it fail.
    let (srv, cli) = stalled_target_tunnel(1).await;
    let data = random_bytes(STALLED_DATA, 12);
    let r = bounded(
        90,
        "PHT/1 upload to a late reader",
        ask_after_eof(cli.1, &data),
    )
    .await;
    match r {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "expected a reset, got {e}"
        ),
        Ok(answer) => panic!(
            "a PHT/1 tunnel outlived its pushTimeout: {} answer bytes\n{}",
            answer.len(),
            srv.log_text()
        ),
    }
    let log = srv.log_text();
    assert!(
        log.contains("handler did not take pushed data in time"),
        "the reset's reason is not in the server log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_stops_reading_its_download_loses_nothing() {
    // The other direction: the client's application reads nothing for several heartbeat
    // timeouts while 48 MiB wait for it (more than the server's replay buffer and the
    // client's receive buffer hold). The pull is held back, not dead, and nothing resets.
    let target = bulk_target().await;
    let sp = free_port();
    let srv = server(
        &[
            "-D",
            "-L",
            &format!("forward+pht://127.0.0.1:{sp}/{target}?heartbeat=1s&resumeGrace=3s"),
        ],
        sp,
    )
    .await;
    let cli = client(&format!(
        "forward+pht://127.0.0.1:{sp}?v=2&heartbeatTimeout=3s&requestTimeout=2s&resumeTimeout=3s"
    ))
    .await;
    let len = STALLED_DATA;
    let mut s = TcpStream::connect(("127.0.0.1", cli.1)).await.unwrap();
    s.write_all(b"D").await.unwrap();
    s.write_u64(len as u64).await.unwrap();
    s.write_u64(13).await.unwrap();
    tokio::time::sleep(STALL).await;
    let got = bounded(90, "download after the pause", async {
        let mut got = vec![0u8; len];
        s.read_exact(&mut got).await.map(|_| got)
    })
    .await
    .unwrap_or_else(|e| panic!("the tunnel failed: {e}\n{}", srv.log_text()));
    assert_eq!(
        sha256(&got),
        sha256(&random_bytes(len, 13)),
        "downloaded bytes"
    );
    let log = srv.log_text();
    assert!(!log.contains("tunnel reset"), "a tunnel was reset:\n{log}");
    drop(s);
    expect_no_tunnels(&srv, "after the pause").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_buffers_responses_gets_long_polls_and_the_transfer_completes() {
    let target = bulk_target().await;
    let sp = free_port();
    let _srv = server(
        &[
            "-L",
            &format!("forward+pht://127.0.0.1:{sp}/{target}?heartbeat=1s"),
        ],
        sp,
    )
    .await;
    let nginx = Middlebox::nginx_with(loopback(sp), Nginx::Buffering).await;
    let cli = client(&format!("forward+pht://127.0.0.1:{}", nginx.port())).await;
    let start = Instant::now();
    // A round trip of a few bytes: held in nginx's buffers unless the pull polls.
    let mut s = TcpStream::connect(("127.0.0.1", cli.1)).await.unwrap();
    s.write_all(b"Ehello").await.unwrap();
    let mut buf = [0u8; 5];
    bounded(30, "echo through a buffering proxy", s.read_exact(&mut buf))
        .await
        .unwrap_or_else(|e| panic!("echo: {e}\n{}", cli.0.log_text()));
    assert_eq!(&buf, b"hello");
    let echo_s = start.elapsed().as_secs_f64();
    let data = random_bytes(8 * MIB, 5);
    let (digest, up) = bounded(120, "upload", upload(cli.1, &data)).await;
    assert_eq!(digest, sha256(&data), "upload through a buffering proxy");
    let (digest, down) = bounded(120, "download", download(cli.1, 8 * MIB, 6)).await;
    assert_eq!(
        digest,
        sha256(&random_bytes(8 * MIB, 6)),
        "download through a buffering proxy"
    );
    println!(
        "buffering nginx: first echo after {echo_s:.1} s; 8 MiB up {up:.0} MB/s, down {down:.0} MB/s"
    );
    let log = cli.0.log_text();
    assert!(
        log.contains("long-polling (poll=1)"),
        "the client must say it switched:\n{log}"
    );
    assert!(
        nginx.access_log().contains("poll=1"),
        "nginx saw no long poll:\n{}",
        nginx.logs()
    );
}

/// Full speed both ways on one tunnel: the echo's answer fills the server's replay buffer
/// while pushes wait for the echo to read. Only acknowledgements sent beside the waiting
/// pushes let both move; without them the tunnel stalls until a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_speed_echo_both_ways_never_stalls() {
    let echo = echo_target().await;
    let sp = free_port();
    let _srv = server(&["-L", &format!("forward+pht://127.0.0.1:{sp}/{echo}")], sp).await;
    let cli = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    let data = Arc::new(random_bytes(64 * MIB, 9));
    let s = TcpStream::connect(("127.0.0.1", cli.1)).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let d = data.clone();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        w.write_all(&d).await?;
        w.shutdown().await
    });
    let mut got = Vec::with_capacity(data.len());
    // Well under requestTimeout (30 s): a stall that waits for a timeout fails here.
    bounded(25, "full-speed echo", r.read_to_end(&mut got))
        .await
        .unwrap_or_else(|e| panic!("echo: {e}\n{}", cli.0.log_text()));
    writer.await.unwrap().unwrap();
    assert!(
        got == *data,
        "echo differs: {} of {} bytes",
        got.len(),
        data.len()
    );
    println!(
        "full-speed echo: 64 MiB each way in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
