//! `pht-client`: carry local TCP connections or stdio through PHT tunnels, in gost's syntax.
//!
//! ```text
//! pht-client -L tcp://127.0.0.1:8080 -F forward+pht://server:8443
//! ssh -o ProxyCommand='pht-client -L stdio:// -F forward+pht://server:8443' user@host
//! ```

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Parser};
use pht_client::{HyperFetch, connect_to, connect_with};
use pht_core::{GostUrl, NodeUrl, token_prefix};
use pht_runtime::{Reset, logging, pipe, splice};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "pht-client",
    version,
    about = "Forward local TCP ports and stdio through gost PHT tunnels"
)]
struct Cli {
    /// Local entry point: `tcp://[host]:port` or `stdio://` (repeatable).
    #[arg(short = 'L', value_name = "URL", required = true)]
    listen: Vec<String>,
    /// The PHT node: `forward+pht://[user:pass@]host:port?pushPath=..&pullPath=..`.
    #[arg(short = 'F', value_name = "URL", required = true)]
    forward: Vec<String>,
    /// Debug logging (`-DD` for trace).
    #[arg(short = 'D', action = ArgAction::Count)]
    debug: u8,
}

enum Kind {
    Tcp(String),
    Stdio,
}

struct Entry {
    kind: Kind,
    /// `host:port` asked of the node's connector; `None` for `forward`.
    target: Option<String>,
}

fn parse_entry(s: &str) -> Result<Entry> {
    let u = GostUrl::parse(s).with_context(|| format!("-L {s}"))?;
    let (handler, _) = u.scheme_parts();
    let target = Some(u.path.trim_matches('/').to_string()).filter(|t| !t.is_empty());
    let kind = match handler {
        "stdio" => Kind::Stdio,
        "tcp" | "auto" | "forward" => {
            let host = if u.host.starts_with(':') {
                format!("0.0.0.0{}", u.host)
            } else {
                u.host.clone()
            };
            if host.is_empty() {
                bail!("-L {s}: missing listen address");
            }
            Kind::Tcp(host)
        }
        other => bail!("-L {s}: entry type {other:?} is not supported (use tcp:// or stdio://)"),
    };
    Ok(Entry { kind, target })
}

/// Opens one tunnel for `entry`: plain for `forward`, else through the node's connector.
async fn open(
    fetch: &HyperFetch,
    node: &NodeUrl,
    target: Option<&str>,
) -> Result<(Box<dyn Stream>, String)> {
    match target {
        _ if node.connector == "forward" => {
            let t = connect_with(fetch, node).await?;
            let token = token_prefix(t.get_ref().token()).to_string();
            Ok((Box::new(t), token))
        }
        Some(target) => {
            let t = connect_to(fetch, node, target).await?;
            let token = token_prefix(t.get_ref().get_ref().token()).to_string();
            Ok((Box::new(t), token))
        }
        None => bail!("internal: no target for connector {}", node.connector),
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Reset + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Reset + Unpin + Send> Stream for T {}

#[tokio::main]
async fn main() -> Result<()> {
    pht_runtime::tune_allocator();
    let cli = Cli::parse();
    logging::init(cli.debug, &["pht_core", "pht_client"]);
    pht_runtime::raise_fd_limit();
    if cli.forward.len() > 1 {
        bail!("pht-client takes one -F node; multi-hop chains run in pht-server");
    }
    let node = NodeUrl::parse(&cli.forward[0]).with_context(|| format!("-F {}", cli.forward[0]))?;
    node.connector
        .parse::<pht_core::Connector>()
        .with_context(|| format!("-F {}", cli.forward[0]))?;
    let fetch =
        Arc::new(HyperFetch::for_node(&node).with_context(|| format!("-F {}", cli.forward[0]))?);
    let entries = cli
        .listen
        .iter()
        .map(|s| parse_entry(s))
        .collect::<Result<Vec<_>>>()?;
    for (e, s) in entries.iter().zip(&cli.listen) {
        if node.connector != "forward" && e.target.is_none() {
            bail!(
                "-L {s}: connector {:?} needs a target: -L tcp://127.0.0.1:8080/host:port \
                 (or use forward+{}:// to let the server's forwarder choose)",
                node.connector,
                node.dialer
            );
        }
    }

    let mut tasks = tokio::task::JoinSet::new();
    for entry in entries {
        let (fetch, node) = (fetch.clone(), node.clone());
        let target = entry.target;
        match entry.kind {
            Kind::Stdio => {
                tasks.spawn(async move { run_stdio(&fetch, &node, target.as_deref()).await });
            }
            Kind::Tcp(addr) => {
                let listener = pht_runtime::listen(&addr)
                    .await
                    .with_context(|| format!("listen on {addr}"))?;
                info!(addr = %listener.local_addr()?, node = %node.addr, "listening on {}/tcp", listener.local_addr()?);
                tasks.spawn(async move { run_tcp(listener, fetch, node, target).await });
            }
        }
    }
    tokio::select! {
        Some(res) = tasks.join_next() => res?,
        _ = pht_runtime::shutdown_signal() => { info!("shutting down"); Ok(()) }
    }
}

async fn run_tcp(
    listener: TcpListener,
    fetch: Arc<HyperFetch>,
    node: NodeUrl,
    target: Option<String>,
) -> Result<()> {
    loop {
        let (mut local, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, or a connection reset before accept: the
                // other tunnels go on; back off a little and keep accepting.
                warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = local.set_nodelay(true);
        let (fetch, node, target) = (fetch.clone(), node.clone(), target.clone());
        tokio::spawn(async move {
            let (mut tunnel, token) = match open(&fetch, &node, target.as_deref()).await {
                Ok(t) => t,
                Err(e) => {
                    warn!(%peer, node = %node.addr, "tunnel failed: {e:#}");
                    // No tunnel: the application must not mistake this for an empty answer.
                    local.reset();
                    return;
                }
            };
            debug!(%peer, token, node = %node.addr, "{peer} <-> {}", node.addr);
            // A broken tunnel resets the local connection, and a reset local connection
            // resets the tunnel: neither end sees a clean close after a failure.
            let (stats, err) = splice(&mut local, &mut tunnel).await;
            info!(
                %peer, token,
                sent = stats.a_to_b, received = stats.b_to_a,
                duration = ?stats.duration,
                error = err.as_ref().map(|e| e.to_string()),
                "{peer} >< {}", node.addr
            );
        });
    }
}

async fn run_stdio(fetch: &HyperFetch, node: &NodeUrl, target: Option<&str>) -> Result<()> {
    let (mut tunnel, _) = open(fetch, node, target)
        .await
        .with_context(|| format!("tunnel to {}", node.addr))?;
    let mut stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let (stats, err) = pipe(&mut stdio, &mut tunnel).await;
    if err.is_some() {
        // stdio cannot be reset; the far end can, and exiting non-zero tells the caller.
        tunnel.reset();
    }
    debug!(
        sent = stats.a_to_b,
        received = stats.b_to_a,
        "stdio tunnel ended"
    );
    match err {
        Some(e) => Err(e).context("tunnel"),
        None => Ok(()),
    }
}
