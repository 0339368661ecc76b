//! `pht-server`: gost's command line (`-L`, `-F`, `-C`, `-O`, `-D`) for PHT services.
//!
//! ```text
//! pht-server -L "pht://:8443/127.0.0.1:22"          # forward every tunnel to local ssh
//! pht-server -C gost.yaml
//! pht-server -L "forward+pht://:8443/:1080" -O yaml # print the config gost would build
//! ```

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Parser};
use pht_server::config::{self, Config};
use pht_server::service::Service;
use tokio_util::sync::CancellationToken;
use tracing::info;

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
    Ok(config::merge(cfg, from_flags))
}

fn resolved(mut cfg: Config) -> Result<Config> {
    cfg.resolve()?;
    Ok(cfg)
}

fn main() -> Result<()> {
    // gost accepts `-DD`; clap reads it as two `-D`, which is what we want.
    let cli = Cli::parse();
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
    pht_client::logging::init(level);
    pht_client::raise_fd_limit();
    if cfg.services.is_empty() {
        bail!("nothing to run: the configuration has no services (see pht-server --help)");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start runtime")?
        .block_on(run(resolved(cfg)?))
}

async fn run(cfg: Config) -> Result<()> {
    let shutdown = CancellationToken::new();
    let mut services = Vec::new();
    for s in &cfg.services {
        services.push(Service::start(s, &cfg.chains, cfg.tls.as_ref(), shutdown.clone()).await?);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for s in services {
        tasks.spawn(s.run(shutdown.clone()));
    }
    pht_client::shutdown_signal().await;
    info!("shutting down");
    shutdown.cancel();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
