//! `pht-bench`: throughput, latency, set-up time, many tunnels at once and the memory and
//! CPU they cost, through the real `pht-server` and `pht-client` on 127.0.0.1, each figure
//! next to the same scenario without a tunnel ("direct") and as a ratio to it. PHT/2 and
//! PHT/1 are measured in the same run (`--versions`), each through its own `pht-client`
//! (`v=2`, `v=1`) and the same server, and so is the "TCP relay": two plain TCP port
//! forwarders in series (both `pht-server -L tcp://...`), the same four processes as a
//! tunnel without HTTP or PHT, i.e. the floor any tunnel of that shape can reach here.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/pht-bench                          # pht, HTTP/1.1, full sizes
//! target/release/pht-bench --proto phts --http 2 --json bench.json
//! target/release/pht-bench --proto h3              # PHT over HTTP/3 (QUIC)
//! target/release/pht-bench --versions 1             # PHT/1 only
//! target/release/pht-bench --versions 2,relay       # PHT/2 and the TCP relay
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
use report::{Cpu, Metric, ProcStat, Report, Scenario, Side};
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
    #[arg(long, default_value = "pht", value_parser = ["pht", "phts", "h3"])]
    proto: String,
    /// HTTP version: 2 is h2 by ALPN for phts, h2c (prior knowledge) for pht; h3 is
    /// always HTTP/3.
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
    /// Ping-pongs and setups run in this many rounds, each visiting every path in turn, so
    /// that a change in the machine's load during the run falls on all paths alike
    /// [default: 5; --quick: 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Tunnels at once, one run per number [default: 100,1000,10000; --quick: 50].
    #[arg(long, value_delimiter = ',')]
    tunnels: Option<Vec<usize>>,
    /// Small sizes, for the test suite.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, of: download,upload,pingpong,setup,tunnels [default: all].
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Paths to measure, in this order after the direct run of each scenario: PHT versions,
    /// each through its own pht-client (node URL `v=2`, `v=1`), and `relay`, two plain TCP
    /// forwarders in series (the floor of that four-process shape).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,1,relay",
        value_parser = ["2", "1", "relay"]
    )]
    versions: Vec<String>,
    /// Also measure a wstunnel tunnel (WebSocket; github.com/erebe/wstunnel, not built by
    /// this project): `BIN server ws://...` and `BIN client -L tcp://...` on 127.0.0.1, the
    /// same four-process shape, listed after the other paths.
    #[arg(long, value_name = "BIN")]
    wstunnel: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Where pht-server and pht-client are [default: next to this executable].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Extra listener metadata for the server's -L URL, e.g. `backlog=1024&tunnelBuffer=256KiB`
    /// (added to `maxTunnels=0&maxTunnelsPerClient=0&tunnelRate=0`; a key given here wins).
    #[arg(long, value_name = "QUERY")]
    server_params: Option<String>,
    /// Extra node URL keys for the clients' -F URLs, e.g. `maxPushSize=4MiB` (not `v`: see
    /// --versions).
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
    /// Rounds of the latency scenarios (see `--rounds`).
    pub rounds: usize,
    pub tunnels: Vec<usize>,
    pub scenarios: Vec<String>,
    /// The paths besides direct, in the order measured (no repeats).
    pub paths: Vec<Via>,
    /// The query of the server's -L URL (defaults merged with `--server-params`).
    pub server_query: String,
    /// `--client-params` as given (each client adds its `v`).
    pub client_params: String,
    pub quick: bool,
}

/// Listener keys the bench sets unless `--server-params` names them: the bench opens up
/// to 10 000 tunnels at once from one address, far beyond the per-client limits meant for
/// the Internet (1024 open, 100 new per second) and the server's total, which is sized
/// for HTTP/1.1 (a third of the descriptor limit: 6581 of the 10 000 at a limit of 20 000).
const SERVER_DEFAULTS: [(&str, &str); 3] = [
    ("maxTunnels", "0"),
    ("maxTunnelsPerClient", "0"),
    ("tunnelRate", "0"),
];

/// The pairs of a URL query (`a=1&b=2`), without a leading `?` or empty parts.
fn query_parts(q: &str) -> Vec<&str> {
    q.trim()
        .trim_start_matches('?')
        .split('&')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Whether a query names `key` (case-insensitive, like the server's metadata).
fn query_has(parts: &[&str], key: &str) -> bool {
    parts
        .iter()
        .any(|p| p.split('=').next().unwrap_or("").eq_ignore_ascii_case(key))
}

/// `SERVER_DEFAULTS` the user did not set, then the user's pairs.
fn server_query(user: Option<&str>) -> String {
    let user = query_parts(user.unwrap_or(""));
    let mut parts: Vec<String> = SERVER_DEFAULTS
        .iter()
        .filter(|(k, _)| !query_has(&user, k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    parts.extend(user.iter().map(|p| p.to_string()));
    parts.join("&")
}

/// "PHT/2" or "PHT/1".
pub fn version_name(v: u8) -> String {
    format!("PHT/{v}")
}

/// A measured path besides direct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Through the pht-client of this PHT version and the pht-server.
    Pht(u8),
    /// Through two plain TCP forwarders in series (`pht-server -L tcp://...`): the same
    /// four processes as a tunnel, no HTTP, no PHT.
    Relay,
    /// Through wstunnel's client and server (`--wstunnel`): a WebSocket tunnel.
    Wstunnel,
}

impl Via {
    /// Its name in the table: "PHT/2", "PHT/1", "TCP relay".
    pub fn name(self) -> String {
        match self {
            Via::Pht(v) => version_name(v),
            Via::Relay => "TCP relay".into(),
            Via::Wstunnel => "wstunnel".into(),
        }
    }

    /// Its id in the JSON (`path`, `config.paths`): "pht2", "pht1", "relay".
    pub fn id(self) -> String {
        match self {
            Via::Pht(v) => format!("pht{v}"),
            Via::Relay => "relay".into(),
            Via::Wstunnel => "wstunnel".into(),
        }
    }

    /// The PHT version, `None` for the relay.
    pub fn version(self) -> Option<u8> {
        match self {
            Via::Pht(v) => Some(v),
            Via::Relay | Via::Wstunnel => None,
        }
    }
}

impl Plan {
    /// The PHT versions measured, in order.
    pub fn versions(&self) -> Vec<u8> {
        self.paths.iter().filter_map(|p| p.version()).collect()
    }

    /// Whether the TCP relay is measured.
    pub fn relay(&self) -> bool {
        self.paths.contains(&Via::Relay)
    }
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
    let mut paths = Vec::new();
    for v in &cli.versions {
        let via = match v.trim() {
            "relay" => Via::Relay,
            n => Via::Pht(n.parse().map_err(|_| format!("--versions: {v:?}"))?),
        };
        if !paths.contains(&via) {
            paths.push(via);
        }
    }
    if paths.is_empty() {
        return Err("--versions: name at least one of 2,1,relay".into());
    }
    if cli.wstunnel.is_some() {
        paths.push(Via::Wstunnel);
    }
    let client_params = query_parts(cli.client_params.as_deref().unwrap_or("")).join("&");
    if query_has(&query_parts(&client_params), "v") {
        return Err("--client-params: choose the PHT version with --versions, not v=".into());
    }
    Ok(Plan {
        proto: cli.proto.clone(),
        http: match (cli.proto.as_str(), cli.http.as_str()) {
            ("h3", _) => 3,
            (_, "2") => 2,
            _ => 1,
        },
        size,
        pingpongs: cli
            .pingpongs
            .unwrap_or(if q { 200 } else { 2000 })
            .clamp(1, 1_000_000),
        setups: cli
            .setups
            .unwrap_or(if q { 20 } else { 200 })
            .clamp(1, 100_000),
        rounds: cli.rounds.unwrap_or(if q { 1 } else { 5 }).clamp(1, 1000),
        tunnels,
        scenarios,
        paths,
        server_query: server_query(cli.server_params.as_deref()),
        client_params,
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

/// One pht-client: the PHT version its node URL asks for (`v=`), and its entry port.
struct Client {
    version: u8,
    child: Child,
    port: u16,
}

/// A path of two processes besides ours: the TCP relay (two plain forwarders in series,
/// both `pht-server -L tcp://...`) or wstunnel's client and server. The bench connects to
/// `client_port`; the client side dials the server side at `server_port`, which dials
/// the target.
struct Relay {
    server: Child,
    server_port: u16,
    client: Child,
    client_port: u16,
}

/// The processes of the benchmark: the target, the server, one client per version, and
/// the relay's two forwarders when it is measured.
struct TunnelPath {
    target: Child,
    target_port: u16,
    server: Child,
    server_port: u16,
    clients: Vec<Client>,
    relay: Option<Relay>,
    wstunnel: Option<Relay>,
}

impl TunnelPath {
    /// The two-process paths that run, by name: the relay and wstunnel.
    fn pairs(&self) -> impl Iterator<Item = (&'static str, &Relay)> {
        [("relay", &self.relay), ("wstunnel", &self.wstunnel)]
            .into_iter()
            .filter_map(|(name, r)| Some((name, r.as_ref()?)))
    }

    fn all_alive(&mut self) -> bool {
        self.server.alive()
            && self.target.alive()
            && self.clients.iter_mut().all(|c| c.child.alive())
            && [&mut self.relay, &mut self.wstunnel].into_iter().all(|r| {
                r.as_mut()
                    .is_none_or(|r| r.server.alive() && r.client.alive())
            })
    }

    /// The last lines of the server's, every client's and the relay's logs.
    fn log_tails(&self) -> String {
        let mut out = format!("--- server log tail:\n{}", tail(&self.server.log_text()));
        for c in &self.clients {
            out += &format!(
                "\n--- client v={} log tail:\n{}",
                c.version,
                tail(&c.child.log_text())
            );
        }
        for (name, r) in self.pairs() {
            out += &format!(
                "\n--- {name} server-side log tail:\n{}\n--- {name} client-side log tail:\n{}",
                tail(&r.server.log_text()),
                tail(&r.client.log_text())
            );
        }
        out
    }

    /// Stops every child but the target, clients first.
    fn terminate(&mut self) {
        for c in &mut self.clients {
            c.child.terminate();
        }
        for r in [&mut self.relay, &mut self.wstunnel].into_iter().flatten() {
            r.client.terminate();
            r.server.terminate();
        }
        self.server.terminate();
        self.target.terminate();
    }
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

/// The client's -F URL for one PHT version.
fn node_url(plan: &Plan, server_port: u16, version: u8) -> String {
    let mut params: Vec<String> = Vec::new();
    match (plan.proto.as_str(), plan.http) {
        ("pht", 2) => params.push("http2=true".into()),
        ("phts", 1) => params.push("http2=false".into()),
        _ => {}
    }
    params.push(format!("v={version}"));
    if !plan.client_params.is_empty() {
        params.push(plan.client_params.clone());
    }
    format!(
        "forward+{}://127.0.0.1:{server_port}?{}",
        plan.proto,
        params.join("&")
    )
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
    let mut server_url = format!("forward+{}://127.0.0.1:{sp}/{target}", plan.proto);
    if !plan.server_query.is_empty() {
        server_url = format!("{server_url}?{}", plan.server_query);
    }
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
    let mut clients = Vec::new();
    for version in plan.versions() {
        let lp = free_port();
        let child = Child::start(
            &dir.join("pht-client"),
            &[
                debug,
                &[
                    "-L".into(),
                    format!("tcp://127.0.0.1:{lp}"),
                    "-F".into(),
                    node_url(plan, sp, version),
                ],
            ]
            .concat(),
            &[("HOME", &home)],
            lp,
            work.join(format!("pht-client-v{version}.log")),
        )
        .await?;
        clients.push(Client {
            version,
            child,
            port: lp,
        });
    }
    let relay = if plan.relay() {
        // A plain TCP port forwarder of pht-server: `tcp://LISTEN/TARGET`.
        let forwarder = async |port: u16, to: String, log: &str| {
            let args = [
                debug,
                &["-L".into(), format!("tcp://127.0.0.1:{port}/{to}")],
            ]
            .concat();
            let bin = dir.join("pht-server");
            Child::start(&bin, &args, &[("HOME", &home)], port, work.join(log)).await
        };
        let rsp = free_port();
        let server = forwarder(rsp, target.clone(), "relay-server.log").await?;
        let rcp = free_port();
        let client = forwarder(rcp, format!("127.0.0.1:{rsp}"), "relay-client.log").await?;
        Some(Relay {
            server,
            server_port: rsp,
            client,
            client_port: rcp,
        })
    } else {
        None
    };
    let wstunnel = match &cli.wstunnel {
        Some(bin) => {
            let wsp = free_port();
            let server = Child::start_probed(
                bin,
                &["server".into(), format!("ws://127.0.0.1:{wsp}")],
                &[],
                wsp,
                work.join("wstunnel-server.log"),
            )
            .await?;
            let wcp = free_port();
            let client = Child::start_probed(
                bin,
                &[
                    "client".into(),
                    "-L".into(),
                    format!("tcp://127.0.0.1:{wcp}:{target}"),
                    format!("ws://127.0.0.1:{wsp}"),
                ],
                &[],
                wcp,
                work.join("wstunnel-client.log"),
            )
            .await?;
            Some(Relay {
                server,
                server_port: wsp,
                client,
                client_port: wcp,
            })
        }
        None => None,
    };
    Ok(TunnelPath {
        target: target_child,
        target_port,
        server,
        server_port: sp,
        clients,
        relay,
        wstunnel,
    })
}

/// CPU seconds of the way's server-side and client-side processes (none for direct), the
/// target and this process at one moment.
fn cpu_now(p: &TunnelPath, way: &Way) -> Cpu {
    let t = |pid| procs::cpu_seconds(pid).unwrap_or((0.0, 0.0));
    let (server, client) = way
        .procs
        .map_or(((0.0, 0.0), (0.0, 0.0)), |(s, c)| (t(Some(s)), t(Some(c))));
    Cpu {
        server: server.0,
        client: client.0,
        bench: t(None).0,
        target: t(Some(p.target.pid)).0,
        server_sys: server.1,
        client_sys: client.1,
    }
}

/// Runs `f`, with the CPU each process of `way` spent meanwhile.
async fn measured<T, F: std::future::Future<Output = T>>(
    p: &TunnelPath,
    way: &Way,
    f: F,
) -> (T, Cpu) {
    let before = cpu_now(p, way);
    let out = f.await;
    let after = cpu_now(p, way);
    (out, after.minus(&before))
}

/// One way to the target: its name, the port to connect to, and what it goes through.
struct Way {
    name: String,
    /// `None`: direct.
    via: Option<Via>,
    port: u16,
    /// The pids of its server-side and client-side processes (pht-server and this
    /// version's pht-client, or the relay's two forwarders); `None` for direct.
    procs: Option<(u32, u32)>,
    /// The port its client-side process connects to.
    upstream: u16,
}

/// Direct first, then every path in `--versions` order.
fn ways(p: &TunnelPath, plan: &Plan) -> Vec<Way> {
    let mut out = vec![Way {
        name: "direct".into(),
        via: None,
        port: p.target_port,
        procs: None,
        upstream: p.target_port,
    }];
    for &via in &plan.paths {
        let way = match via {
            Via::Pht(v) => p.clients.iter().find(|c| c.version == v).map(|c| Way {
                name: via.name(),
                via: Some(via),
                port: c.port,
                procs: Some((p.server.pid, c.child.pid)),
                upstream: p.server_port,
            }),
            Via::Relay | Via::Wstunnel => {
                p.pairs()
                    .find(|(name, _)| *name == via.id())
                    .map(|(_, r)| Way {
                        name: via.name(),
                        via: Some(via),
                        port: r.client_port,
                        procs: Some((r.server.pid, r.client.pid)),
                        upstream: r.server_port,
                    })
            }
        };
        out.extend(way);
    }
    out
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
    let mut clients: Vec<String> = tunnel
        .clients
        .iter()
        .map(|c| format!("client v={} pid {} port {}", c.version, c.child.pid, c.port))
        .collect();
    for (name, r) in tunnel.pairs() {
        clients.push(format!(
            "{name} server-side pid {} port {}, client-side pid {} port {}",
            r.server.pid, r.server_port, r.client.pid, r.client_port
        ));
    }
    eprintln!(
        "pht-bench: {} {} | binaries {} | server pid {} port {} ?{} | {} | target pid {} port {} | open files {}",
        plan.proto,
        report::http_name(plan.http),
        dir.display(),
        tunnel.server.pid,
        tunnel.server_port,
        plan.server_query,
        clients.join(" | "),
        tunnel.target.pid,
        tunnel.target_port,
        nofile
    );
    let ways = ways(&tunnel, &plan);

    // One tunnel end to end before anything is timed: each path works, pools are warm.
    for way in &ways {
        let w = sc::setups(way.port, 1).await;
        if w.samples.len() != 1 {
            let hint = match way.via {
                Some(Via::Pht(2)) => {
                    "\n(v=2 requires PHT/2 of the server; --versions 1 measures PHT/1 alone)"
                }
                _ => "",
            };
            eprintln!(
                "pht-bench: warm-up {} failed: {}{hint}\n{}",
                way.name,
                w.error.unwrap_or_default(),
                tunnel.log_tails()
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
                for way in &ways {
                    eprintln!(
                        "pht-bench: {name} {} via {}",
                        report::bytes(plan.size),
                        way.name
                    );
                    let (b, cpu) = measured(&tunnel, way, async {
                        if name == "download" {
                            sc::download(way.port, &mut recv, &want).await
                        } else {
                            sc::upload(way.port, &source, &want).await
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
                report.push(scenario(
                    &name,
                    &format!("{name} {}", report::bytes(plan.size)),
                    sides,
                    &plan.paths,
                ));
            }
            "pingpong" => {
                eprintln!(
                    "pht-bench: ping-pong x{} via {} in {} round(s)",
                    plan.pingpongs,
                    names(&ways),
                    plan.rounds
                );
                let sides = in_rounds(&tunnel, &ways, plan.pingpongs, plan.rounds, |port, n| {
                    sc::ping_pong(port, n, 20)
                })
                .await;
                report.push(scenario(
                    "pingpong",
                    &format!("ping-pong 64 B x{}", plan.pingpongs),
                    sides,
                    &plan.paths,
                ));
            }
            "setup" => {
                eprintln!(
                    "pht-bench: setup x{} via {} in {} round(s)",
                    plan.setups,
                    names(&ways),
                    plan.rounds
                );
                let sides = in_rounds(&tunnel, &ways, plan.setups, plan.rounds, sc::setups).await;
                report.push(scenario(
                    "setup",
                    &format!("setup x{}", plan.setups),
                    sides,
                    &plan.paths,
                ));
            }
            "tunnels" => {
                for &n in &plan.tunnels {
                    let mut sides = Vec::new();
                    for way in &ways {
                        eprintln!("pht-bench: {n} tunnels at once via {}", way.name);
                        sides.push(concurrent_side(&mut tunnel, way, n).await);
                        settle().await;
                    }
                    report.push(scenario(
                        &format!("tunnels_{n}"),
                        &format!("{n} tunnels at once"),
                        sides,
                        &plan.paths,
                    ));
                }
            }
            _ => unreachable!("checked in plan()"),
        }
        if !tunnel.all_alive() {
            eprintln!("pht-bench: a process died; stopping");
            break;
        }
    }

    let whole = |pid: u32| procs::cpu_seconds(Some(pid)).map_or(0.0, |c| c.0);
    let mut procs_end = vec![ProcStat {
        key: "server".into(),
        label: "pht-server".into(),
        peak_rss_kib: procs::status_kib(Some(tunnel.server.pid), "VmHWM"),
        cpu_s: whole(tunnel.server.pid),
    }];
    for c in &tunnel.clients {
        procs_end.push(ProcStat {
            key: format!("client_pht{}", c.version),
            label: format!("pht-client v={}", c.version),
            peak_rss_kib: procs::status_kib(Some(c.child.pid), "VmHWM"),
            cpu_s: whole(c.child.pid),
        });
    }
    for (name, r) in tunnel.pairs() {
        for (key, label, child) in [
            (
                format!("{name}_server"),
                format!("{name} server-side"),
                &r.server,
            ),
            (
                format!("{name}_client"),
                format!("{name} client-side"),
                &r.client,
            ),
        ] {
            procs_end.push(ProcStat {
                key,
                label,
                peak_rss_kib: procs::status_kib(Some(child.pid), "VmHWM"),
                cpu_s: whole(child.pid),
            });
        }
    }
    procs_end.push(ProcStat {
        key: "bench".into(),
        label: "bench".into(),
        peak_rss_kib: procs::status_kib(None, "VmHWM"),
        cpu_s: procs::cpu_seconds(None).map_or(0.0, |c| c.0),
    });
    procs_end.push(ProcStat {
        key: "target".into(),
        label: "bench target".into(),
        peak_rss_kib: procs::status_kib(Some(tunnel.target.pid), "VmHWM"),
        cpu_s: whole(tunnel.target.pid),
    });
    report.finish(procs_end);
    let alive = tunnel.all_alive();
    tunnel.terminate();

    print!("{}", report.table());
    let mut code = 0;
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report.json()).expect("JSON") + "\n";
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("pht-bench: --json {}: {e}", path.display());
            code = 1;
        }
    }
    let all_ok = report.all_ok() && alive;
    if !all_ok {
        eprintln!(
            "pht-bench: some measurements failed; logs kept in {}\n{}",
            work.display(),
            tunnel.log_tails()
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

/// A scenario from its sides: direct first, then one per path in `paths` order.
fn scenario(name: &str, title: &str, mut sides: Vec<Side>, paths: &[Via]) -> Scenario {
    let direct = sides.remove(0);
    Scenario::new(
        name,
        title,
        direct,
        paths.iter().copied().zip(sides).collect(),
    )
}

/// A short pause between measurements, so closing tunnels do not overlap the next one.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn names(ways: &[Way]) -> String {
    ways.iter()
        .map(|w| w.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n` samples per way of a latency scenario, in `rounds` rounds that each visit every
/// way in turn: a slow stretch of the machine is shared by all ways instead of falling
/// on whichever ran then. Samples and CPU add up over the rounds; the first error stays.
async fn in_rounds<F, Fut>(
    p: &TunnelPath,
    ways: &[Way],
    n: usize,
    rounds: usize,
    run: F,
) -> Vec<Side>
where
    F: Fn(u16, usize) -> Fut,
    Fut: std::future::Future<Output = sc::Latencies>,
{
    let rounds = rounds.clamp(1, n.max(1));
    let mut acc: Vec<(sc::Latencies, Cpu)> = ways
        .iter()
        .map(|_| {
            let none = sc::Latencies {
                requested: 0,
                samples: Vec::with_capacity(n),
                error: None,
            };
            (none, Cpu::default())
        })
        .collect();
    for r in 0..rounds {
        // The rounds share `n` out; the first ones take the remainder.
        let part = n / rounds + usize::from(r < n % rounds);
        for (way, (l, cpu)) in ways.iter().zip(acc.iter_mut()) {
            let (got, used) = measured(p, way, run(way.port, part)).await;
            l.requested += got.requested;
            l.samples.extend(got.samples);
            if l.error.is_none() {
                l.error = got.error;
            }
            *cpu = cpu.plus(&used);
            settle().await;
        }
    }
    acc.into_iter()
        .map(|(l, cpu)| latency_side(l, cpu))
        .collect()
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
async fn concurrent_side(p: &mut TunnelPath, way: &Way, n: usize) -> Side {
    let rss = |pid: Option<u32>| procs::status_kib(pid, "VmRSS").unwrap_or(0);
    // Direct: no server or client; their figures are left out below.
    let spid = way.procs.map(|(s, _)| s);
    let cpid = way.procs.map(|(_, c)| c);
    let some_rss = |pid: Option<u32>| pid.map_or(0, |pid| rss(Some(pid)));
    let before = (some_rss(spid), some_rss(cpid), rss(None));
    let baseline = targets::active(p.target_port).await.unwrap_or(0);
    let mut peak = (0u64, 0u64, 0u64);
    let mut conns = 0usize;
    let mut fds = (0usize, 0usize);
    let up = way.upstream;
    let cpu0 = cpu_now(p, way);
    let tcp0 = procs::tcp_counters();
    let c = sc::concurrent(
        way.port,
        n,
        Box::new(|| {
            // All tunnels are open: sample a few times, keep the highest.
            for i in 0..3 {
                peak.0 = peak.0.max(some_rss(spid));
                peak.1 = peak.1.max(some_rss(cpid));
                peak.2 = peak.2.max(rss(None));
                if i < 2 {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            // This client's connections only: the other clients may hold idle ones.
            conns = cpid.map_or(0, |pid| procs::established_to(pid, up));
            fds = (
                spid.and_then(|pid| procs::open_fds(Some(pid))).unwrap_or(0),
                cpid.and_then(|pid| procs::open_fds(Some(pid))).unwrap_or(0),
            );
        }),
        p.target_port,
        baseline,
    )
    .await;
    let cpu = cpu_now(p, way).minus(&cpu0);
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
    if way.procs.is_some() {
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
        // The relay has no HTTP, and wstunnel one WebSocket per tunnel: one TCP
        // connection per tunnel, by construction.
        if !matches!(way.via, Some(Via::Relay | Via::Wstunnel)) {
            s.metric(Metric::info(
                "HTTP connections at peak",
                "http_connections",
                conns as f64,
            ));
        }
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
