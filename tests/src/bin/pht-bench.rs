//! `pht-bench`: throughput, latency, set-up time, many tunnels at once and the memory and
//! CPU they cost, through the real `pht-server` and `pht-client` on 127.0.0.1, each figure
//! next to the same scenario without a tunnel ("direct") and as a ratio to it.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/pht-bench                          # pht, HTTP/1.1, full sizes
//! target/release/pht-bench --proto phts --http 2 --json bench.json
//! target/release/pht-bench --quick                  # small sizes (what the test suite runs)
//! ```
//!
//! The binaries are looked up next to this executable (or in `--bin-dir`). See
//! docs/BENCHMARKS.md for what each scenario does and how to read the figures.

#[path = "pht-bench/procs.rs"]
mod procs;
#[path = "pht-bench/report.rs"]
mod report;
#[path = "pht-bench/scenarios.rs"]
mod scenarios;
#[path = "pht-bench/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use procs::Child;
use report::{Cpu, Metric, Report, Scenario, Side};
use scenarios as sc;

const MIB: usize = 1024 * 1024;
const ALL_SCENARIOS: [&str; 5] = ["download", "upload", "pingpong", "setup", "tunnels"];

#[derive(Parser, Debug)]
#[command(
    name = "pht-bench",
    about = "Benchmark the real pht-server and pht-client on 127.0.0.1 against a direct connection"
)]
struct Cli {
    /// Transport between client and server.
    #[arg(long, default_value = "pht", value_parser = ["pht", "phts"])]
    proto: String,
    /// HTTP version: 2 is h2 by ALPN for phts, h2c (prior knowledge) for pht.
    #[arg(long, default_value = "1", value_parser = ["1", "2"])]
    http: String,
    /// Bytes per download and per upload: a number of MiB, or with a KiB/MiB/GiB suffix
    /// [default: 256MiB; --quick: 4MiB].
    #[arg(long)]
    size: Option<String>,
    /// 64-byte round trips on one tunnel [default: 2000; --quick: 200].
    #[arg(long)]
    pingpongs: Option<usize>,
    /// Fresh tunnels timed from connect to first echoed byte [default: 200; --quick: 20].
    #[arg(long)]
    setups: Option<usize>,
    /// Tunnels at once, one run per number [default: 100,1000,10000; --quick: 50].
    #[arg(long, value_delimiter = ',')]
    tunnels: Option<Vec<usize>>,
    /// Small sizes, for the test suite.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, of: download,upload,pingpong,setup,tunnels [default: all].
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Where pht-server and pht-client are [default: next to this executable].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Extra listener metadata for the server's -L URL, e.g. `backlog=1024&tunnelBuffer=256KiB`.
    #[arg(long, value_name = "QUERY")]
    server_params: Option<String>,
    /// Extra node URL keys for the client's -F URL, e.g. `maxPushSize=4MiB`.
    #[arg(long, value_name = "QUERY")]
    client_params: Option<String>,
    /// Exit with status 3 if any tunnel, round trip or hash check failed.
    #[arg(long)]
    strict: bool,
    /// Keep the work directory (server and client logs) even when everything succeeded.
    #[arg(long)]
    keep_logs: bool,
    /// Start server and client with -D (debug logs; slows them down), keep the logs.
    #[arg(long)]
    debug_logs: bool,
    /// Internal: run as the target server on this port (with --size bytes of source).
    #[arg(long, hide = true, value_name = "PORT")]
    serve_target: Option<u16>,
}

/// What one run measures, after `--quick` and the options are applied.
#[derive(Debug, Clone)]
pub struct Plan {
    pub proto: String,
    pub http: u8,
    pub size: usize,
    pub pingpongs: usize,
    pub setups: usize,
    pub tunnels: Vec<usize>,
    pub scenarios: Vec<String>,
    pub quick: bool,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("--size {s}: expected e.g. 256MiB"))?;
    let mul = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mib" | "mb" => MIB,
        "k" | "kib" | "kb" => 1024,
        "g" | "gib" | "gb" => 1024 * MIB,
        "b" => 1,
        _ => return Err(format!("--size {s}: unknown unit {unit:?}")),
    };
    let bytes = n.checked_mul(mul).ok_or(format!("--size {s}: too large"))?;
    if bytes == 0 || bytes > 8 * 1024 * MIB {
        return Err(format!("--size {s}: must be between 1 byte and 8 GiB"));
    }
    Ok(bytes)
}

fn plan(cli: &Cli) -> Result<Plan, String> {
    let q = cli.quick;
    let size = match &cli.size {
        Some(s) => parse_size(s)?,
        None if q => 4 * MIB,
        None => 256 * MIB,
    };
    let mut scenarios = Vec::new();
    for s in cli
        .scenarios
        .clone()
        .unwrap_or_else(|| ALL_SCENARIOS.map(String::from).to_vec())
    {
        let s = match s.trim() {
            "concurrent" | "tunnel" => "tunnels".to_string(),
            "ping-pong" | "ping" => "pingpong".to_string(),
            other => other.to_string(),
        };
        if !ALL_SCENARIOS.contains(&s.as_str()) {
            return Err(format!(
                "--scenarios: unknown {s:?} (known: {})",
                ALL_SCENARIOS.join(",")
            ));
        }
        if !scenarios.contains(&s) {
            scenarios.push(s);
        }
    }
    let tunnels = cli
        .tunnels
        .clone()
        .unwrap_or_else(|| if q { vec![50] } else { vec![100, 1000, 10000] });
    if tunnels.iter().any(|&n| n == 0 || n > 100_000) {
        return Err("--tunnels: each number must be 1..=100000".into());
    }
    Ok(Plan {
        proto: cli.proto.clone(),
        http: if cli.http == "2" { 2 } else { 1 },
        size,
        pingpongs: cli
            .pingpongs
            .unwrap_or(if q { 200 } else { 2000 })
            .clamp(1, 1_000_000),
        setups: cli
            .setups
            .unwrap_or(if q { 20 } else { 200 })
            .clamp(1, 100_000),
        tunnels,
        scenarios,
        quick: q,
    })
}

/// The directory holding pht-server and pht-client: `--bin-dir`, else next to this
/// executable (target/release or target/debug), else its parent (for `deps/`).
fn bin_dir(cli: &Cli) -> Result<PathBuf, String> {
    let has = |d: &Path| d.join("pht-server").is_file() && d.join("pht-client").is_file();
    if let Some(d) = &cli.bin_dir {
        return if has(d) {
            Ok(d.clone())
        } else {
            Err(format!(
                "--bin-dir {}: no pht-server and pht-client there",
                d.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        match dir {
            Some(d) if has(d) => return Ok(d.to_path_buf()),
            Some(d) => dir = d.parent(),
            None => break,
        }
    }
    Err(format!(
        "pht-server and pht-client not found next to {}: build them (cargo build --release \
         --workspace --bins) or pass --bin-dir",
        exe.display()
    ))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Seed of the bulk data (both processes make the same bytes from it).
const SEED: u64 = 0x5eed;

fn main() {
    let cli = Cli::parse();
    let plan = match plan(&cli) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pht-bench: {e}");
            std::process::exit(2);
        }
    };
    let want = procs::nr_open().min(1 << 20);
    let nofile = procs::raise_nofile(want);
    if let Some(port) = cli.serve_target {
        std::process::exit(targets::serve_main(port, plan.size, SEED));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run(cli, plan, nofile));
    // Children are gone; lingering tasks must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

/// The processes of the benchmark: the target, and those of the tunnel path.
struct TunnelPath {
    target: Child,
    target_port: u16,
    server: Child,
    client: Child,
    server_port: u16,
    local_port: u16,
}

/// Starts this executable as the target server (see `targets`).
async fn start_target(work: &Path, size: usize) -> Result<(Child, u16), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let port = free_port();
    let child = Child::start(
        &exe,
        &[
            "--serve-target".into(),
            port.to_string(),
            "--size".into(),
            format!("{size}b"),
        ],
        &[],
        port,
        work.join("target.log"),
    )
    .await?;
    Ok((child, port))
}

async fn start_all(
    cli: &Cli,
    plan: &Plan,
    dir: &Path,
    work: &Path,
    source_len: usize,
) -> Result<TunnelPath, String> {
    let (target_child, target_port) = start_target(work, source_len).await?;
    let target = format!("127.0.0.1:{target_port}");
    let home = work.join("home");
    std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
    let sp = free_port();
    let q = |p: &Option<String>| {
        p.as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| format!("?{s}"))
    };
    let server_url = format!(
        "forward+{}://127.0.0.1:{sp}/{target}{}",
        plan.proto,
        q(&cli.server_params).unwrap_or_default()
    );
    let debug: &[String] = if cli.debug_logs {
        &["-D".to_string()]
    } else {
        &[]
    };
    let server = Child::start(
        &dir.join("pht-server"),
        &[debug, &["-L".into(), server_url]].concat(),
        &[("HOME", &home)],
        sp,
        work.join("pht-server.log"),
    )
    .await?;
    let mut params: Vec<String> = Vec::new();
    match (plan.proto.as_str(), plan.http) {
        ("pht", 2) => params.push("http2=true".into()),
        ("phts", 1) => params.push("http2=false".into()),
        _ => {}
    }
    if let Some(p) = cli.client_params.as_deref().filter(|s| !s.is_empty()) {
        params.push(p.to_string());
    }
    let mut node = format!("forward+{}://127.0.0.1:{sp}", plan.proto);
    if !params.is_empty() {
        node = format!("{node}?{}", params.join("&"));
    }
    let lp = free_port();
    let client = Child::start(
        &dir.join("pht-client"),
        &[
            debug,
            &[
                "-L".into(),
                format!("tcp://127.0.0.1:{lp}"),
                "-F".into(),
                node,
            ],
        ]
        .concat(),
        &[("HOME", &home)],
        lp,
        work.join("pht-client.log"),
    )
    .await?;
    Ok(TunnelPath {
        target: target_child,
        target_port,
        server,
        client,
        server_port: sp,
        local_port: lp,
    })
}

/// CPU seconds of server, client and this process at one moment.
fn cpu_now(p: &TunnelPath) -> Cpu {
    let t = |pid| procs::cpu_seconds(pid).unwrap_or((0.0, 0.0));
    let (server, client) = (t(Some(p.server.pid)), t(Some(p.client.pid)));
    Cpu {
        server: server.0,
        client: client.0,
        bench: t(None).0,
        target: t(Some(p.target.pid)).0,
        server_sys: server.1,
        client_sys: client.1,
    }
}

/// Runs `f` against `port`, with the CPU each process spent meanwhile.
async fn measured<T, F: std::future::Future<Output = T>>(p: &TunnelPath, f: F) -> (T, Cpu) {
    let before = cpu_now(p);
    let out = f.await;
    let after = cpu_now(p);
    (out, after.minus(&before))
}

async fn run(cli: Cli, plan: Plan, nofile: u64) -> i32 {
    let dir = match bin_dir(&cli) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pht-bench: {e}");
            return 1;
        }
    };
    let work = std::env::temp_dir().join(format!("pht-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    if let Err(e) = std::fs::create_dir_all(&work) {
        eprintln!("pht-bench: {}: {e}", work.display());
        return 1;
    }
    let max_tunnels = if plan.scenarios.iter().any(|s| s == "tunnels") {
        plan.tunnels.iter().copied().max().unwrap_or(0)
    } else {
        0
    };
    // This process holds one end of every connection, the target process the other.
    if (nofile as usize) < max_tunnels + 256 {
        eprintln!(
            "pht-bench: warning: open-file limit {nofile} is too low for {max_tunnels} tunnels \
             at once (needs about {}); expect failures",
            max_tunnels + 256
        );
    }

    let bulk = plan
        .scenarios
        .iter()
        .any(|s| s == "download" || s == "upload");
    let source_len = if bulk { plan.size } else { 1 };
    eprintln!("pht-bench: preparing {} of data", report::bytes(source_len));
    let source = pht_e2e::random_bytes(source_len, SEED);
    let want = pht_e2e::sha256(&source);
    let mut tunnel = match start_all(&cli, &plan, &dir, &work, source_len).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pht-bench: {e}");
            return 1;
        }
    };
    let direct_port = tunnel.target_port;
    let tunnel_port = tunnel.local_port;
    eprintln!(
        "pht-bench: {} {} | binaries {} | server pid {} port {} | client pid {} port {} | target pid {} port {} | open files {}",
        plan.proto,
        report::http_name(plan.http),
        dir.display(),
        tunnel.server.pid,
        tunnel.server_port,
        tunnel.client.pid,
        tunnel.local_port,
        tunnel.target.pid,
        tunnel.target_port,
        nofile
    );

    // One tunnel end to end before anything is timed: the path works, pools are warm.
    for (what, port) in [("direct", direct_port), ("tunnel", tunnel_port)] {
        let w = sc::setups(port, 1).await;
        if w.samples.len() != 1 {
            eprintln!(
                "pht-bench: warm-up {what} failed: {}\n--- server log:\n{}\n--- client log:\n{}",
                w.error.unwrap_or_default(),
                tail(&tunnel.server.log_text()),
                tail(&tunnel.client.log_text())
            );
            return 1;
        }
    }

    let mut report = Report::new(&plan, nofile);
    let mut recv = if plan.scenarios.iter().any(|s| s == "download") {
        vec![0x5Au8; plan.size] // pre-faulted
    } else {
        Vec::new()
    };

    for name in plan.scenarios.clone() {
        match name.as_str() {
            "download" | "upload" => {
                let mut sides = Vec::new();
                for port in [direct_port, tunnel_port] {
                    eprintln!(
                        "pht-bench: {name} {} via {}",
                        report::bytes(plan.size),
                        side_name(port, direct_port)
                    );
                    let (b, cpu) = measured(&tunnel, async {
                        if name == "download" {
                            sc::download(port, &mut recv, &want).await
                        } else {
                            sc::upload(port, &source, &want).await
                        }
                    })
                    .await;
                    let mut s = Side::new(1, usize::from(b.hash_ok), cpu);
                    s.hash_ok = Some(b.hash_ok);
                    s.error = b.error;
                    s.metric(Metric::higher("MB/s", "mb_s", b.mb_s));
                    s.metric(Metric::lower("seconds", "secs", b.secs));
                    sides.push(s);
                    settle().await;
                }
                let tun = sides.pop().unwrap();
                let dir_side = sides.pop().unwrap();
                report.push(Scenario::new(
                    &name,
                    &format!("{name} {}", report::bytes(plan.size)),
                    dir_side,
                    tun,
                ));
            }
            "pingpong" => {
                let mut sides = Vec::new();
                for port in [direct_port, tunnel_port] {
                    eprintln!(
                        "pht-bench: ping-pong x{} via {}",
                        plan.pingpongs,
                        side_name(port, direct_port)
                    );
                    let (l, cpu) = measured(&tunnel, sc::ping_pong(port, plan.pingpongs, 20)).await;
                    sides.push(latency_side(l, cpu));
                    settle().await;
                }
                let tun = sides.pop().unwrap();
                let dir_side = sides.pop().unwrap();
                report.push(Scenario::new(
                    "pingpong",
                    &format!("ping-pong 64 B x{}", plan.pingpongs),
                    dir_side,
                    tun,
                ));
            }
            "setup" => {
                let mut sides = Vec::new();
                for port in [direct_port, tunnel_port] {
                    eprintln!(
                        "pht-bench: setup x{} via {}",
                        plan.setups,
                        side_name(port, direct_port)
                    );
                    let (l, cpu) = measured(&tunnel, sc::setups(port, plan.setups)).await;
                    sides.push(latency_side(l, cpu));
                    settle().await;
                }
                let tun = sides.pop().unwrap();
                let dir_side = sides.pop().unwrap();
                report.push(Scenario::new(
                    "setup",
                    &format!("setup x{}", plan.setups),
                    dir_side,
                    tun,
                ));
            }
            "tunnels" => {
                for &n in &plan.tunnels {
                    let mut sides = Vec::new();
                    for port in [direct_port, tunnel_port] {
                        eprintln!(
                            "pht-bench: {n} tunnels at once via {}",
                            side_name(port, direct_port)
                        );
                        let is_tunnel = port == tunnel_port;
                        sides.push(concurrent_side(&mut tunnel, port, n, is_tunnel).await);
                        settle().await;
                    }
                    let tun = sides.pop().unwrap();
                    let dir_side = sides.pop().unwrap();
                    report.push(Scenario::new(
                        &format!("tunnels_{n}"),
                        &format!("{n} tunnels at once"),
                        dir_side,
                        tun,
                    ));
                }
            }
            _ => unreachable!("checked in plan()"),
        }
        if !tunnel.server.alive() || !tunnel.client.alive() || !tunnel.target.alive() {
            eprintln!("pht-bench: a process died; stopping");
            break;
        }
    }

    report.finish(
        [
            procs::status_kib(Some(tunnel.server.pid), "VmHWM"),
            procs::status_kib(Some(tunnel.client.pid), "VmHWM"),
            procs::status_kib(None, "VmHWM"),
            procs::status_kib(Some(tunnel.target.pid), "VmHWM"),
        ],
        cpu_now(&tunnel),
    );
    let server_alive = tunnel.server.alive();
    let client_alive = tunnel.client.alive();
    tunnel.client.terminate();
    tunnel.server.terminate();
    tunnel.target.terminate();

    print!("{}", report.table());
    let mut code = 0;
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report.json()).expect("JSON") + "\n";
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("pht-bench: --json {}: {e}", path.display());
            code = 1;
        }
    }
    let all_ok = report.all_ok() && server_alive && client_alive;
    if !all_ok {
        eprintln!(
            "pht-bench: some measurements failed; logs kept in {}\n--- server log tail:\n{}\n--- client log tail:\n{}",
            work.display(),
            tail(&tunnel.server.log_text()),
            tail(&tunnel.client.log_text())
        );
        if cli.strict && code == 0 {
            code = 3;
        }
    } else if cli.keep_logs || cli.debug_logs {
        eprintln!("pht-bench: logs in {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    code
}

fn side_name(port: u16, direct: u16) -> &'static str {
    if port == direct { "direct" } else { "tunnel" }
}

/// A short pause between measurements, so closing tunnels do not overlap the next one.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn latency_side(l: sc::Latencies, cpu: Cpu) -> Side {
    let (median, p99) = sc::median_p99_us(&l.samples);
    let mut s = Side::new(l.requested, l.samples.len(), cpu);
    s.error = l.error;
    s.metric(Metric::lower("median µs", "median_us", median));
    s.metric(Metric::lower("p99 µs", "p99_us", p99));
    s
}

/// One run of `n` tunnels at once, with memory sampled while all are open.
async fn concurrent_side(p: &mut TunnelPath, port: u16, n: usize, is_tunnel: bool) -> Side {
    let rss = |pid: Option<u32>| procs::status_kib(pid, "VmRSS").unwrap_or(0);
    let (spid, cpid) = (p.server.pid, p.client.pid);
    let before = (rss(Some(spid)), rss(Some(cpid)), rss(None));
    let baseline = targets::active(p.target_port).await.unwrap_or(0);
    let mut peak = (0u64, 0u64, 0u64);
    let mut conns = 0usize;
    let mut fds = (0usize, 0usize);
    let sp = p.server_port;
    let cpu0 = cpu_now(p);
    let tcp0 = procs::tcp_counters();
    let c = sc::concurrent(
        port,
        n,
        Box::new(|| {
            // All tunnels are open: sample a few times, keep the highest.
            for i in 0..3 {
                peak.0 = peak.0.max(rss(Some(spid)));
                peak.1 = peak.1.max(rss(Some(cpid)));
                peak.2 = peak.2.max(rss(None));
                if i < 2 {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            conns = procs::established_on(sp);
            fds = (
                procs::open_fds(Some(spid)).unwrap_or(0),
                procs::open_fds(Some(cpid)).unwrap_or(0),
            );
        }),
        p.target_port,
        baseline,
    )
    .await;
    let cpu = cpu_now(p).minus(&cpu0);
    let tcp1 = procs::tcp_counters();
    let mut s = Side::new(c.requested, c.succeeded, cpu);
    s.error = c.first_error;
    let (median, p99) = sc::median_p99_us(&c.per_tunnel);
    s.metric(Metric::lower("total s", "total_s", c.open_secs));
    s.metric(Metric::lower(
        "per-tunnel median ms",
        "median_ms",
        median / 1000.0,
    ));
    s.metric(Metric::lower("per-tunnel p99 ms", "p99_ms", p99 / 1000.0));
    s.metric(Metric::lower("close all s", "close_s", c.close_secs));
    // System-wide counters: other work on the machine adds to them.
    s.metric(Metric::info(
        "listen queue overflows",
        "listen_overflows",
        tcp1.0.saturating_sub(tcp0.0) as f64,
    ));
    s.metric(Metric::info(
        "SYN retransmits",
        "syn_retransmits",
        tcp1.1.saturating_sub(tcp0.1) as f64,
    ));
    s.extra("errors", c.errors.into());
    s.extra("closed_clean", c.closed_clean.into());
    s.extra("target_connections_left_open", c.left_open.into());
    if !c.closed_clean {
        s.note = Some(format!(
            "{} target connection(s) still open {} s after every tunnel was closed",
            c.left_open,
            sc::CLOSE_WAIT.as_secs()
        ));
    }
    if is_tunnel {
        let per = |peak: u64, before: u64| {
            if c.succeeded == 0 {
                0.0
            } else {
                peak.saturating_sub(before) as f64 / c.succeeded as f64
            }
        };
        s.metric(Metric::info(
            "server RSS KiB/tunnel",
            "server_rss_kib_per_tunnel",
            per(peak.0, before.0),
        ));
        s.metric(Metric::info(
            "client RSS KiB/tunnel",
            "client_rss_kib_per_tunnel",
            per(peak.1, before.1),
        ));
        s.metric(Metric::info(
            "server RSS at peak MiB",
            "server_rss_peak_mib",
            peak.0 as f64 / 1024.0,
        ));
        s.metric(Metric::info(
            "client RSS at peak MiB",
            "client_rss_peak_mib",
            peak.1 as f64 / 1024.0,
        ));
        s.metric(Metric::info(
            "HTTP connections at peak",
            "http_connections",
            conns as f64,
        ));
        s.extra("server_rss_kib_before", before.0.into());
        s.extra("client_rss_kib_before", before.1.into());
        s.extra("server_rss_kib_peak", peak.0.into());
        s.extra("client_rss_kib_peak", peak.1.into());
        s.extra("server_open_fds_peak", fds.0.into());
        s.extra("client_open_fds_peak", fds.1.into());
    }
    s.extra("bench_rss_kib_before", before.2.into());
    s.extra("bench_rss_kib_peak", peak.2.into());
    s
}
