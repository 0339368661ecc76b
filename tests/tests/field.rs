//! The tunnel in the field: real nginx and squid in the path, proxy settings read as curl
//! reads them, and connections cut mid-stream by a fault proxy. Whatever breaks, neither
//! end may mistake it for a clean close: the app and the target see a reset (an error),
//! never an early EOF.
//!
//! nginx and squid come from Debian (`scripts/setup.sh --test`); they run as foreground
//! processes of their own on free loopback ports (`pht_e2e::middlebox`).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pht_e2e::fault::{Fault, FaultProxy, Kind, Mode};
use pht_e2e::middlebox::{Middlebox, Nginx, Squid};
use pht_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;
/// The name only squid's hosts file knows.
const SERVER_NAME: &str = "pht-server.test";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs `fut` with a deadline; panics with `what` when it passes.
async fn bounded<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {secs} s"))
}

/// A forwarding `pht-client` on a fresh local port with extra environment variables (the
/// test machine's own proxy variables are never passed on).
async fn client_env(node: &str, env: &[(&str, &str)]) -> (Proc, u16) {
    let port = free_port();
    let l = format!("tcp://127.0.0.1:{port}");
    (
        Proc::start_env("pht-client", &["-L", &l, "-F", node], port, env).await,
        port,
    )
}

/// Uploads `mib` MiB through the client `(proc, local port)` to a bulk target and checks
/// the hash; returns MB/s. On failure the client's log is shown.
async fn upload_ok(cli: &(Proc, u16), mib: usize, seed: u64, what: &str) -> f64 {
    let data = random_bytes(mib * MIB, seed);
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(300), async {
        let mut s = TcpStream::connect(("127.0.0.1", cli.1)).await?;
        s.write_all(b"U").await?;
        s.write_u64(data.len() as u64).await?;
        s.write_all(&data).await?;
        let mut digest = [0u8; 32];
        s.read_exact(&mut digest).await?;
        std::io::Result::Ok(digest)
    })
    .await;
    let rate = data.len() as f64 / start.elapsed().as_secs_f64() / 1e6;
    match r {
        Ok(Ok(digest)) => assert!(
            digest == sha256(&data),
            "{what}: upload hash differs\n{}",
            cli.0.log_text()
        ),
        Ok(Err(e)) => panic!("{what}: upload failed: {e}\n{}", cli.0.log_text()),
        Err(_) => panic!("{what}: upload timed out\n{}", cli.0.log_text()),
    }
    rate
}

/// Downloads `mib` MiB from a bulk target through the client and checks the hash; MB/s.
async fn download_ok(cli: &(Proc, u16), mib: usize, seed: u64, what: &str) -> f64 {
    let len = mib * MIB;
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(300), async {
        let mut s = TcpStream::connect(("127.0.0.1", cli.1)).await?;
        s.write_all(b"D").await?;
        s.write_u64(len as u64).await?;
        s.write_u64(seed).await?;
        let mut got = vec![0u8; len];
        s.read_exact(&mut got).await?;
        std::io::Result::Ok(got)
    })
    .await;
    let rate = len as f64 / start.elapsed().as_secs_f64() / 1e6;
    match r {
        Ok(Ok(got)) => assert!(
            sha256(&got) == sha256(&random_bytes(len, seed)),
            "{what}: download hash differs\n{}",
            cli.0.log_text()
        ),
        Ok(Err(e)) => panic!("{what}: download failed: {e}\n{}", cli.0.log_text()),
        Err(_) => panic!("{what}: download timed out\n{}", cli.0.log_text()),
    }
    rate
}

/// How one side's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Everything was sent and everything expected arrived.
    Complete,
    /// A clean EOF before that.
    Eof,
    /// A read or write failed.
    Err(ErrorKind),
    /// Nothing happened before the deadline.
    Timeout,
}

#[derive(Debug)]
struct Outcome {
    end: End,
    sent: usize,
    received: usize,
    /// A received byte differed from the expected one (or came beyond them).
    corrupt: bool,
    at: Instant,
}

impl Outcome {
    fn describe(&self, since: Option<Instant>) -> String {
        let when = match since {
            Some(t) if self.at >= t => {
                format!("{:.1} s after the cut", (self.at - t).as_secs_f64())
            }
            Some(t) => format!("{:.1} s before the cut", (t - self.at).as_secs_f64()),
            None => "(no cut)".into(),
        };
        format!(
            "{:?} {when}, {:.2} MB sent, {:.2} MB received{}",
            self.end,
            self.sent as f64 / 1e6,
            self.received as f64 / 1e6,
            if self.corrupt { ", CORRUPT" } else { "" }
        )
    }
}

/// What [`exchange`] waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// All sent and all of a non-empty `expect` received (`Complete`), or the end.
    Done,
    /// The end of the connection (EOF or error), whatever was sent and received: a
    /// target whose bytes all fit into buffers on the way must still learn how it ended.
    End,
}

/// Sends `send` and reads, checking against `expect`, until `until` or `limit` passes.
/// One task makes every read and write, so the first call that meets a reset reports it
/// (after a RST, Linux fails one call with ECONNRESET and then reads return 0).
async fn exchange(
    s: TcpStream,
    send: &[u8],
    expect: &[u8],
    until: Until,
    limit: Duration,
) -> Outcome {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut sent, mut received, mut corrupt) = (0usize, 0usize, false);
    let end = loop {
        if until == Until::Done
            && !expect.is_empty()
            && received >= expect.len()
            && sent == send.len()
        {
            break End::Complete;
        }
        let interest = if sent < send.len() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let ready = match tokio::time::timeout_at(deadline, s.ready(interest)).await {
            Err(_) => break End::Timeout,
            Ok(Err(e)) => break End::Err(e.kind()),
            Ok(Ok(r)) => r,
        };
        if ready.is_readable() {
            match s.try_read(&mut buf) {
                Ok(0) => break End::Eof,
                Ok(n) => {
                    let want = expect.get(received..(received + n).min(expect.len()));
                    if want != Some(&buf[..n]) {
                        corrupt = true;
                    }
                    received += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => break End::Err(e.kind()),
            }
        }
        if ready.is_writable() && sent < send.len() {
            let chunk = &send[sent..send.len().min(sent + 256 * 1024)];
            match s.try_write(chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => break End::Err(e.kind()),
            }
        }
    };
    Outcome {
        end,
        sent,
        received,
        corrupt,
        at: Instant::now(),
    }
}

/// Opens a tunnel through `local`, sends a little and expects the connection to be reset
/// (not closed cleanly) within `secs`.
async fn expect_reset(local: u16, secs: u64, what: &str) {
    let start = Instant::now();
    let out = match TcpStream::connect(("127.0.0.1", local)).await {
        Ok(s) => exchange(s, b"hello", b"", Until::End, Duration::from_secs(secs)).await,
        // Accepted and reset before connect() returned: the reset is what the app saw.
        Err(e) => Outcome {
            end: End::Err(e.kind()),
            sent: 0,
            received: 0,
            corrupt: false,
            at: Instant::now(),
        },
    };
    println!(
        "{what}: {} ({:.1} s)",
        out.describe(None),
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        out.end,
        End::Err(ErrorKind::ConnectionReset),
        "{what}: the app must see its connection reset: {out:?}"
    );
}

/// An echo tunnel (`E` to the bulk target) idle for `idle` between two round trips.
async fn idle_echo(local: u16, idle: Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let mut buf = [0u8; 5];
    s.write_all(b"Efirst").await.unwrap();
    bounded(30, "idle tunnel: first echo", s.read_exact(&mut buf))
        .await
        .expect("idle tunnel: first echo");
    assert_eq!(&buf, b"first");
    tokio::time::sleep(idle).await;
    s.write_all(b"again")
        .await
        .expect("idle tunnel: write after idle");
    bounded(30, "idle tunnel: echo after idle", s.read_exact(&mut buf))
        .await
        .expect("idle tunnel: echo after idle");
    assert_eq!(&buf, b"again");
}

// ---------------------------------------------------------------------------------------
// nginx: a stock reverse proxy (`location / { proxy_pass ...; }` and nothing else).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_stock_proxy_pass_carries_64_mib_each_way_and_an_idle_tunnel() {
    let target = bulk_target().await;
    let sp = free_port();
    let _srv = server(
        &["-L", &format!("forward+pht://127.0.0.1:{sp}/{target}")],
        sp,
    )
    .await;
    let nginx = Middlebox::nginx(loopback(sp)).await;
    let cli = client(&format!("forward+pht://127.0.0.1:{}", nginx.port())).await;

    // Idle for 30 s (three server heartbeats, half nginx's proxy_read_timeout) while the
    // bulk transfers run beside it.
    let idle = tokio::spawn(idle_echo(cli.1, Duration::from_secs(30)));
    let up = upload_ok(&cli, 64, 1, "nginx").await;
    let down = download_ok(&cli, 64, 2, "nginx").await;
    println!(
        "64 MiB through nginx (stock proxy_pass): upload {up:.0} MB/s, download {down:.0} MB/s"
    );
    bounded(90, "idle tunnel", idle).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_413_on_a_small_body_limit_shrinks_pushes_and_warns_once() {
    let target = bulk_target().await;
    let sp = free_port();
    let _srv = server(
        &["-L", &format!("forward+pht://127.0.0.1:{sp}/{target}")],
        sp,
    )
    .await;
    let nginx = Middlebox::nginx_with(loopback(sp), Nginx::SmallBody).await;
    let cli = client(&format!(
        "forward+pht://127.0.0.1:{}?maxPushSize=1048576",
        nginx.port()
    ))
    .await;

    let up = upload_ok(&cli, 16, 3, "nginx 64k").await;
    println!("16 MiB through nginx with client_max_body_size 64k: upload {up:.0} MB/s");
    assert!(
        nginx.error_log().contains("too large body"),
        "nginx refused no push:\n{}",
        nginx.logs()
    );
    let log = cli.0.log_text();
    assert_eq!(
        log.matches("HTTP 413").count(),
        1,
        "pht-client must warn about HTTP 413 exactly once:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// squid: a forward proxy; the server's name resolves only through it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_without_connect_carries_pht_by_option_and_by_environment() {
    let target = bulk_target().await;
    let sp = free_port();
    let _srv = server(
        &["-L", &format!("forward+pht://127.0.0.1:{sp}/{target}")],
        sp,
    )
    .await;
    let squid = Middlebox::squid(&Squid {
        allow_connect: false,
        hosts: vec![(SERVER_NAME.into(), "127.0.0.1".parse().unwrap())],
    })
    .await;
    let node = format!("forward+pht://{SERVER_NAME}:{sp}");

    // proxy= in the node URL.
    let cli = client(&format!("{node}?proxy={}", squid.url())).await;
    let up = upload_ok(&cli, 64, 4, "squid, proxy=").await;
    let down = download_ok(&cli, 64, 5, "squid, proxy=").await;
    println!(
        "64 MiB through squid (absolute-form, no CONNECT): upload {up:.0} MB/s, download {down:.0} MB/s"
    );
    let access = squid.access_log();
    assert!(
        access.contains(&format!("GET http://{SERVER_NAME}:{sp}/"))
            && access.contains(&format!("POST http://{SERVER_NAME}:{sp}/")),
        "squid carried no absolute-form pull and push:\n{}",
        squid.logs()
    );

    // The environment, as curl reads it.
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY"] {
        let cli = client_env(&node, &[(var, &squid.url())]).await;
        let mib = if var == "HTTP_PROXY" { 16 } else { 2 };
        let up = upload_ok(&cli, mib, 6, var).await;
        let down = download_ok(&cli, mib, 7, var).await;
        println!("{mib} MiB through squid by {var}: upload {up:.0} MB/s, download {down:.0} MB/s");
    }

    // No proxy: the name does not resolve, and the app must see that as a reset.
    let cli = client(&node).await;
    expect_reset(cli.1, 40, "no proxy, unresolvable name").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_and_proxy_none_bypass_the_environment() {
    let target = bulk_target().await;
    let sp = free_port();
    let _srv = server(
        &["-L", &format!("forward+pht://127.0.0.1:{sp}/{target}")],
        sp,
    )
    .await;
    // A proxy that is not there: using it would fail the tunnel.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let node = format!("forward+pht://127.0.0.1:{sp}");
    let cli = client_env(
        &node,
        &[
            ("HTTP_PROXY", &dead),
            ("http_proxy", &dead),
            ("NO_PROXY", "127.0.0.1"),
        ],
    )
    .await;
    upload_ok(&cli, 1, 8, "NO_PROXY=127.0.0.1").await;
    // Lower case, a list, a CIDR range.
    let cli = client_env(
        &node,
        &[
            ("http_proxy", &dead),
            ("no_proxy", "localhost, .test, 127.0.0.0/8"),
        ],
    )
    .await;
    upload_ok(&cli, 1, 9, "no_proxy=...,127.0.0.0/8").await;
    let cli = client_env(
        &format!("{node}?proxy=none"),
        &[
            ("HTTP_PROXY", &dead),
            ("http_proxy", &dead),
            ("ALL_PROXY", &dead),
        ],
    )
    .await;
    upload_ok(&cli, 1, 10, "proxy=none").await;
    // A proxy that is not there, named in the URL: the open fails, loudly.
    let cli = client(&format!("{node}?proxy={dead}")).await;
    expect_reset(cli.1, 40, "proxy= unreachable").await;
}

#[test]
fn a_proxy_of_another_scheme_stops_the_client_instead_of_going_direct() {
    // hyper-util's matcher skips a proxy URL of a scheme it does not know: the tunnel
    // used to go direct, silently, past the proxy the user had set.
    for (var, value, from) in [
        (
            "HTTP_PROXY",
            "ftp://u:secret@127.0.0.1:21",
            "(from HTTP_PROXY;",
        ),
        ("all_proxy", "socks5://127.0.0.1:1080", "(from all_proxy;"),
    ] {
        let mut child = std::process::Command::new(bin("pht-client"))
            .args(["-L", "tcp://127.0.0.1:0", "-F", "forward+pht://127.0.0.1:1"])
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env(var, value)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let running = child.try_wait().unwrap().is_none();
        if running {
            child.kill().unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !running,
            "{var}={value}: the client went on running:\n{err}"
        );
        assert!(!out.status.success(), "{var}={value}:\n{err}");
        assert!(
            err.contains("only http:// forward proxies are supported") && err.contains(from),
            "{var}={value}:\n{err}"
        );
        assert!(!err.contains("secret"), "credentials in the error:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_star_bypasses_every_host_as_in_curl() {
    // curl: NO_PROXY "*" alone "matches all hosts", IP addresses included.
    let target = bulk_target().await;
    let sp = free_port();
    let _srv = server(
        &["-L", &format!("forward+pht://127.0.0.1:{sp}/{target}")],
        sp,
    )
    .await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cli = client_env(
        &format!("forward+pht://127.0.0.1:{sp}"),
        &[
            ("HTTP_PROXY", &dead),
            ("http_proxy", &dead),
            ("NO_PROXY", "*"),
        ],
    )
    .await;
    upload_ok(&cli, 1, 15, "NO_PROXY=* with an IP-address node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phts_through_squid_connect() {
    let home = TempDir::new("home");
    let h = home.path().to_string_lossy().into_owned();
    let target = bulk_target().await;
    let sp = free_port();
    let _srv = Proc::start_env(
        "pht-server",
        &["-L", &format!("forward+phts://127.0.0.1:{sp}/{target}")],
        sp,
        &[("HOME", &h)],
    )
    .await;
    let squid = Middlebox::squid(&Squid {
        allow_connect: true,
        hosts: vec![(SERVER_NAME.into(), "127.0.0.1".parse().unwrap())],
    })
    .await;
    let cli = client_env(
        &format!("forward+phts://{SERVER_NAME}:{sp}?proxy={}", squid.url()),
        &[("HOME", &h)],
    )
    .await;
    let up = upload_ok(&cli, 8, 11, "phts via squid").await;
    let down = download_ok(&cli, 8, 12, "phts via squid").await;
    println!("8 MiB phts through squid CONNECT: upload {up:.0} MB/s, download {down:.0} MB/s");
    assert!(
        squid
            .access_log()
            .contains(&format!("CONNECT {SERVER_NAME}:{sp}")),
        "squid carried no CONNECT:\n{}",
        squid.logs()
    );
}

// ---------------------------------------------------------------------------------------
// Broken paths under PHT/1 (`v=1`): a fault proxy cuts the pull or the push connection
// mid-stream, and PHT/1 cannot repair it, so both ends must see an error. (PHT/2 repairs
// the same cuts: tests/tests/resume.rs.)

const FAULT_DATA: usize = 32 * MIB;
const FAULT_AFTER: u64 = 4_000_000;
/// Longest a side may take to see the break, counted from the cut.
const NOTICE_LIMIT: Duration = Duration::from_secs(20);

async fn fault_case(kind: Kind, mode: Mode) {
    let what = format!("{kind} cut by {mode}");
    let data = Arc::new(random_bytes(FAULT_DATA, 20));
    // The target streams to the app (pull) or takes the app's stream (push), and tells
    // how its connection ended.
    let l = target_listener().await;
    let target = l.local_addr().unwrap();
    let d = data.clone();
    let target_side = tokio::spawn(async move {
        let (s, _) = tokio::time::timeout(Duration::from_secs(30), l.accept())
            .await
            .expect("the server never dialled the target")
            .unwrap();
        let (send, expect): (&[u8], &[u8]) = match kind {
            Kind::Pull => (&d, b"go"),
            Kind::Push => (b"", &d),
        };
        exchange(s, send, expect, Until::End, Duration::from_secs(60)).await
    });
    let sp = free_port();
    let _srv = server(
        &[
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
        "forward+pht://127.0.0.1:{}?v=1&heartbeatTimeout=3s&requestTimeout=5s",
        proxy.port()
    ))
    .await;

    let app = TcpStream::connect(("127.0.0.1", cli.1)).await.unwrap();
    let (send, expect): (&[u8], &[u8]) = match kind {
        Kind::Pull => (b"go", &data),
        Kind::Push => (&data, b""),
    };
    // Everything arriving (`Complete`) would mean the cut went unnoticed.
    let app_side = exchange(app, send, expect, Until::Done, Duration::from_secs(60)).await;
    let target_side = bounded(70, &format!("{what}: target side"), target_side)
        .await
        .unwrap();
    let cut = proxy.tripped_at();
    println!(
        "{what}: app saw {}; target saw {}",
        app_side.describe(cut),
        target_side.describe(cut)
    );
    let context = || {
        format!(
            "proxy: {:#?}\n--- pht-client log ---\n{}",
            proxy.events(),
            cli.0.log_text()
        )
    };
    assert!(
        cut.is_some(),
        "{what}: the fault never tripped\n{}",
        context()
    );
    let cut = cut.unwrap();
    for (side, out) in [("app", &app_side), ("target", &target_side)] {
        assert!(
            !out.corrupt,
            "{what}: {side} received wrong bytes\n{}",
            context()
        );
        assert!(
            matches!(out.end, End::Err(_)),
            "{what}: the {side} must see an error, not {:?}: {}\n{}",
            out.end,
            out.describe(Some(cut)),
            context()
        );
        assert!(
            out.at <= cut + NOTICE_LIMIT,
            "{what}: the {side} took too long: {}\n{}",
            out.describe(Some(cut)),
            context()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_cut_by_fin_fails_both_ends() {
    fault_case(Kind::Pull, Mode::Fin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_cut_by_rst_fails_both_ends() {
    fault_case(Kind::Pull, Mode::Rst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_gone_silent_fails_both_ends() {
    fault_case(Kind::Pull, Mode::Silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_cut_by_fin_fails_both_ends() {
    fault_case(Kind::Push, Mode::Fin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_cut_by_rst_fails_both_ends() {
    fault_case(Kind::Push, Mode::Rst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_gone_silent_fails_both_ends() {
    fault_case(Kind::Push, Mode::Silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_at_open_resets_the_app() {
    // Nothing listens there.
    let dead = free_port();
    for v in ["1", "2"] {
        let cli = client(&format!("forward+pht://127.0.0.1:{dead}?v={v}")).await;
        expect_reset(cli.1, 40, &format!("server unreachable, v={v}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_proxy_passes_untouched_connections_through() {
    // The proxy itself: with a fault that never trips, 8 MiB each way arrive intact.
    let target = bulk_target().await;
    let sp = free_port();
    let _srv = server(
        &["-L", &format!("forward+pht://127.0.0.1:{sp}/{target}")],
        sp,
    )
    .await;
    let proxy = FaultProxy::start(
        loopback(sp),
        Fault {
            kind: Kind::Pull,
            after: u64::MAX,
            mode: Mode::Rst,
        },
    )
    .await;
    let cli = client(&format!("forward+pht://127.0.0.1:{}", proxy.port())).await;
    upload_ok(&cli, 8, 13, "through the fault proxy").await;
    download_ok(&cli, 8, 14, "through the fault proxy").await;
    assert!(!proxy.tripped());
    let events = proxy.events();
    assert!(
        events.iter().any(|e| e.contains("Pull")) && events.iter().any(|e| e.contains("Push")),
        "pull and push classified: {events:#?}"
    );
}
