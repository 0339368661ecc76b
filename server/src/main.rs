//! `pht-server`: gost's command line (`-L`, `-F`, `-C`, `-O`, `-D`) for PHT services.
//!
//! ```text
//! pht-server -L "pht://:8443/127.0.0.1:22"          # forward every tunnel to local ssh
//! pht-server -C gost.yaml
//! pht-server -L "forward+pht://:8443/:1080" -O yaml # print the config gost would build
//! pht-server -L "pht://:8443/:22" -metrics :9000    # Prometheus at http://host:9000/metrics
//! ```

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Parser};
use pht_server::config::{self, Config};
use pht_server::metrics::Endpoint;
use pht_server::plan::Plan;
use pht_server::service::{Lifecycle, Service};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long running connections get to finish after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(
    name = "pht-server",
    version,
    about = "gost-compatible PHT (Plain HTTP Tunnel) server"
)]
struct Cli {
    /// Service: `[handler+]listener://[user:pass@][host]:port[/target,...][?k=v...]` (repeatable).
    #[arg(short = 'L', value_name = "URL")]
    listen: Vec<String>,
    /// Chain node: `[connector+]dialer://[user:pass@]host:port[?k=v...]` (repeatable: one hop each).
    #[arg(short = 'F', value_name = "URL")]
    forward: Vec<String>,
    /// Configuration file (YAML or JSON), `-` for stdin, or inline JSON (repeatable).
    #[arg(short = 'C', value_name = "FILE")]
    config: Vec<String>,
    /// Print the resulting configuration as `yaml` or `json` and exit.
    #[arg(short = 'O', value_name = "FORMAT")]
    output: Option<String>,
    /// Debug logging (`-DD` for trace).
    #[arg(short = 'D', action = ArgAction::Count)]
    debug: u8,
    /// Prometheus metrics: `[user:pass@]addr[?path=/metrics]` (gost's `-metrics`; also
    /// the `GOST_METRICS` environment variable, which this flag overrides).
    #[arg(long = "metrics", value_name = "ADDR")]
    metrics: Option<String>,
}

/// gost's single-dash long flags (`-metrics x`, `-metrics=x`) as clap reads them.
fn gost_args() -> Vec<std::ffi::OsString> {
    std::env::args_os()
        .map(|a| match a.to_str() {
            Some("-metrics") => "--metrics".into(),
            Some(s) if s.starts_with("-metrics=") => format!("-{s}").into(),
            _ => a,
        })
        .collect()
}

/// What runs when no `-L`, no `-C` and no gost config file is found: an HTTP/SOCKS proxy
/// (gost's `auto` handler) over PHT, on loopback only, so nothing is exposed by accident.
const EMBEDDED_DEFAULT: &str = "pht://127.0.0.1:8443";

/// gost's default config file: `gost.yaml|yml|json` in /etc/gost, ~/.gost, then `.`.
fn default_config_file() -> Option<std::path::PathBuf> {
    let mut dirs = vec![std::path::PathBuf::from("/etc/gost")];
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(std::path::PathBuf::from(home).join(".gost"));
    }
    dirs.push(std::path::PathBuf::from("."));
    dirs.into_iter()
        .flat_map(|d| ["gost.yaml", "gost.yml", "gost.json"].map(|f| d.join(f)))
        .find(|p| p.is_file())
}

fn build_config(cli: &Cli) -> Result<Config> {
    let mut cfg = Config::default();
    let mut sources = cli.config.clone();
    let mut listens = cli.listen.clone();
    if sources.is_empty() && listens.is_empty() {
        match default_config_file() {
            Some(p) => sources.push(p.to_string_lossy().into_owned()),
            None => listens.push(EMBEDDED_DEFAULT.to_string()),
        }
    }
    for src in &sources {
        cfg = config::merge(cfg, config::load_source(src)?);
    }
    let from_flags = config::from_cli(&listens, &cli.forward)?;
    let mut cfg = config::merge(cfg, from_flags);
    // As in gost: the environment after the config sources, the flag last.
    if let Some(addr) = std::env::var("GOST_METRICS").ok().filter(|a| !a.is_empty()) {
        cfg.metrics.get_or_insert_with(Default::default).addr = addr;
    }
    if let Some(m) = &cli.metrics {
        cfg.metrics = Some(config::parse_metrics(m).context("-metrics")?);
    }
    Ok(cfg)
}

fn main() -> Result<()> {
    pht_runtime::tune_allocator();
    // gost accepts `-DD`; clap reads it as two `-D`, which is what we want.
    let cli = Cli::parse_from(gost_args());
    let cfg = build_config(&cli)?;
    if let Some(fmt) = &cli.output {
        let out = if fmt == "json" {
            serde_json::to_string_pretty(&cfg)? + "\n"
        } else {
            serde_yaml::to_string(&cfg)?
        };
        print!("{out}");
        return Ok(());
    }
    let level = match cfg.log.as_ref().map(|l| l.level.as_str()) {
        _ if cli.debug > 0 => cli.debug,
        Some("debug") => 1,
        Some("trace") => 2,
        _ => 0,
    };
    pht_runtime::logging::init(level, &["pht_core", "pht_client", "pht_server"]);
    pht_runtime::raise_fd_limit();
    if cfg.services.is_empty() && cfg.metrics.is_none() {
        bail!("nothing to run: the configuration has no services (see pht-server --help)");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start runtime")?
        .block_on(run(cfg))
}

async fn run(mut cfg: Config) -> Result<()> {
    let shutdown = CancellationToken::new();
    // Before anything is built: listeners and handlers pick their series up as they are.
    if cfg.metrics.is_some() || cfg.services.iter().any(|s| s.handler.kind == "metrics") {
        pht_server::metrics::enable();
    }
    // Every chain, handler and listener built from its text before anything binds.
    let plan = Plan::build(&mut cfg)?;
    for w in &plan.warnings {
        warn!("{w}");
    }
    let mut metrics_task = None;
    if let Some(m) = &cfg.metrics {
        let ep = Endpoint::new(
            Some(&m.path).filter(|p| !p.is_empty()).map(String::as_str),
            m.auth.clone(),
        );
        metrics_task = Some(
            pht_server::metrics::bind(&m.addr, ep, shutdown.clone())
                .await?
                .1,
        );
    }
    let mut services = Vec::new();
    for s in plan.services {
        services.push(Service::start(s, shutdown.clone()).await?);
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut lives = Vec::new();
    for s in services {
        let life = Lifecycle::new(shutdown.clone());
        lives.push(life.clone());
        tasks.spawn(s.run(life));
    }
    // The first signal drains (each service for its `drainTimeout`, none by default), a
    // second one ends everything at once.
    pht_runtime::shutdown_signal().await;
    for l in &lives {
        l.draining.cancel();
    }
    tokio::select! {
        _ = futures::future::join_all(lives.iter().map(|l| l.drained.cancelled())) => {}
        _ = pht_runtime::shutdown_signal() => info!("second signal: not waiting for open tunnels"),
    }
    info!("shutting down");
    shutdown.cancel();
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
