//! Outbound dials for handlers: direct, or through a chain of hops (gost's `-F` nodes).
//!
//! The first node is reached by its dialer (TCP, or a PHT tunnel); each further node, and
//! finally the target, by asking the previous node's connector (HTTP CONNECT, SOCKS5,
//! relay, forward) to connect onwards.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use pht_client::{Dial, HyperFetch, Io, TransportOptions};
use pht_core::{Connector, Credentials, NodeUrl};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tracing::{debug, warn};

use crate::config::{ChainConfig, Metadata, NodeConfig, TlsConfig};
use crate::listener::Stream;
use crate::selector::Selector;

/// Time allowed for one outbound TCP connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a chain cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("chain {0:?} is not defined")]
    UnknownChain(String),
    #[error("chain {0}: no hops (a chain needs at least one hop with a node)")]
    NoHops(String),
    #[error("chain {chain}: hop {hop} has no nodes")]
    EmptyHop { chain: String, hop: String },
    #[error("chain {chain}: node {node}: {reason}")]
    BadNode {
        chain: String,
        node: String,
        reason: String,
    },
}

/// How a handler reaches its targets.
#[derive(Clone, Default)]
pub struct Router {
    chain: Option<Arc<Chain>>,
}

struct Chain {
    name: String,
    hops: Vec<Arc<Hop>>,
}

struct Hop {
    nodes: Vec<ChainNode>,
    selector: Selector,
}

struct ChainNode {
    name: String,
    addr: String,
    connector: Connector,
    auth: Option<Credentials>,
    dialer: Dialer,
}

enum Dialer {
    Tcp,
    /// TLS over the stream that reaches the node.
    Tls(TlsConnector, ServerName<'static>),
    /// A PHT tunnel per connection, over a shared pooled HTTP client.
    Pht(HyperFetch, Box<NodeUrl>),
}

fn io_err(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl Router {
    /// A router that dials targets directly.
    pub fn direct() -> Self {
        Router { chain: None }
    }

    /// True when targets are dialled directly from this machine.
    pub fn is_direct(&self) -> bool {
        self.chain.is_none()
    }

    /// The router for a service whose handler names `chain` (none: direct).
    pub fn for_chain(chain: Option<&str>, chains: &[ChainConfig]) -> Result<Self, RouteError> {
        let Some(name) = chain.filter(|c| !c.is_empty()) else {
            return Ok(Self::direct());
        };
        let cfg = chains
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| RouteError::UnknownChain(name.to_string()))?;
        let mut hops: Vec<Arc<Hop>> = Vec::new();
        for hop in &cfg.hops {
            if hop.nodes.is_empty() {
                return Err(RouteError::EmptyHop {
                    chain: cfg.name.clone(),
                    hop: hop.name.clone(),
                });
            }
            // A PHT node behind earlier hops: each of its HTTP connections is dialled
            // through them, as gost does (one PHT node = many HTTP connections).
            let prefix = (!hops.is_empty()).then(|| {
                Arc::new(Chain {
                    name: cfg.name.clone(),
                    hops: hops.clone(),
                })
            });
            let nodes = hop
                .nodes
                .iter()
                .map(|n| build_node(&cfg.name, n, prefix.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            let backup = hop
                .nodes
                .iter()
                .map(|n| {
                    n.metadata
                        .get_bool("backup")
                        .ok()
                        .flatten()
                        .unwrap_or(false)
                })
                .collect();
            let pht = |n: &ChainNode| matches!(n.dialer, Dialer::Pht(..));
            if nodes.iter().any(pht) && !nodes.iter().all(pht) {
                return Err(RouteError::BadNode {
                    chain: cfg.name.clone(),
                    node: hop.name.clone(),
                    reason: "a hop's nodes must all use a pht/phts dialer or none of them".into(),
                });
            }
            hops.push(Arc::new(Hop {
                nodes,
                selector: Selector::new(hop.selector.as_ref(), backup),
            }));
        }
        if hops.is_empty() {
            return Err(RouteError::NoHops(cfg.name.clone()));
        }
        Ok(Router {
            chain: Some(Arc::new(Chain {
                name: cfg.name.clone(),
                hops,
            })),
        })
    }

    /// Connects to `addr` (`host:port`; an empty host means this machine, as in gost),
    /// through the chain if there is one.
    pub async fn dial(&self, addr: &str) -> io::Result<Box<dyn Stream>> {
        match &self.chain {
            None => dial_tcp(addr).await,
            Some(chain) => chain.dial(addr).await,
        }
    }
}

fn build_node(
    chain: &str,
    n: &NodeConfig,
    behind: Option<Arc<Chain>>,
) -> Result<ChainNode, RouteError> {
    let bad = |reason: String| RouteError::BadNode {
        chain: chain.to_string(),
        node: n.name.clone(),
        reason,
    };
    let connector_kind = if n.connector.kind.is_empty() {
        "http"
    } else {
        &n.connector.kind
    };
    let connector: Connector = connector_kind
        .parse()
        .map_err(|_| bad(format!("connector {connector_kind:?} is not supported (supported: http, socks5, relay, forward)")))?;
    let auth = n
        .connector
        .auth
        .as_ref()
        .map(|a| Credentials::new(a.username.clone(), a.password.clone()));
    let params = dialer_params(&n.dialer.metadata, n.dialer.tls.as_ref());
    let dialer = match n.dialer.kind.as_str() {
        "" | "tcp" => Dialer::Tcp,
        kind @ ("pht" | "phts") => {
            let node = NodeUrl::from_parts(connector_kind, kind, &n.addr, params)
                .map_err(|e| bad(e.to_string()))?;
            let dial = behind.map(|prefix| {
                let addr: Arc<str> = Arc::from(n.addr.as_str());
                let dial: Dial = Arc::new(move || {
                    let (prefix, addr) = (prefix.clone(), addr.clone());
                    Box::pin(async move {
                        let s = prefix.dial(&addr).await?;
                        Ok(Box::new(s) as Box<dyn Io>)
                    })
                });
                dial
            });
            let fetch =
                HyperFetch::for_node_via(&node, dial).map_err(|e| bad(e.to_string()))?;
            Dialer::Pht(fetch, Box::new(node))
        }
        "tls" => {
            // The node URL parser reads the same TLS keys for every dialer.
            let node = NodeUrl::from_parts(connector_kind, "phts", &n.addr, params)
                .map_err(|e| bad(e.to_string()))?;
            let opts = TransportOptions::from_node(&node).map_err(|e| bad(e.to_string()))?;
            let tls = opts.tls.unwrap_or_default();
            if !tls.verifies() {
                warn!(node = %n.addr, "TLS certificate verification is off (gost's default); set secure=true and caFile, or pin=sha256:<hex>");
            }
            let host = n.addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&n.addr);
            let cfg = tls.client_config(&[]).map_err(|e| bad(e.to_string()))?;
            Dialer::Tls(
                TlsConnector::from(Arc::new(cfg)),
                tls.sni(host).map_err(|e| bad(e.to_string()))?,
            )
        }
        other => {
            return Err(bad(format!(
                "dialer {other:?} is not supported (supported: tcp, tls, pht, phts)"
            )));
        }
    };
    Ok(ChainNode {
        name: n.name.clone(),
        addr: n.addr.clone(),
        connector,
        auth,
        dialer,
    })
}

/// Dialer metadata and TLS block as node URL parameters; gost's `header` map becomes
/// `header.NAME`.
fn dialer_params(md: &Metadata, tls: Option<&TlsConfig>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(t) = tls {
        for (k, v) in [
            ("caFile", &t.ca_file),
            ("certFile", &t.cert_file),
            ("keyFile", &t.key_file),
            ("serverName", &t.server_name),
        ] {
            if !v.is_empty() {
                out.push((k.to_string(), v.clone()));
            }
        }
        if t.secure {
            out.push(("secure".into(), "true".into()));
        }
    }
    for (k, v) in &md.0 {
        match v {
            Value::Object(map) if k.eq_ignore_ascii_case("header") => {
                for (h, hv) in map {
                    if let Some(s) = hv.as_str() {
                        out.push((format!("header.{h}"), s.to_string()));
                    }
                }
            }
            _ => {
                if let Some(s) = md.get_str(k) {
                    out.push((k.clone(), s));
                }
            }
        }
    }
    out
}

async fn dial_tcp(addr: &str) -> io::Result<Box<dyn Stream>> {
    let addr = if addr.starts_with(':') {
        format!("127.0.0.1{addr}")
    } else {
        addr.to_string()
    };
    let s = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, format!("dial {addr}: timed out"))
        })??;
    let _ = s.set_nodelay(true);
    Ok(Box::new(s))
}

impl Chain {
    async fn dial(&self, target: &str) -> io::Result<Box<dyn Stream>> {
        // The last PHT hop carries everything before it inside its HTTP connections, so
        // the stream starts there.
        let start = self
            .hops
            .iter()
            .rposition(|h| matches!(h.nodes[0].dialer, Dialer::Pht(..)))
            .unwrap_or(0);
        // Pick one node per later hop; the starting hop fails over to its other nodes.
        let mut picks: Vec<usize> = Vec::with_capacity(self.hops.len());
        for hop in &self.hops[start + 1..] {
            picks.push(hop.selector.order()[0]);
        }
        let first = &self.hops[start];
        let mut last_err = None;
        for i in first.selector.order() {
            let node = &first.nodes[i];
            match self.dial_from(start, node, &picks, target).await {
                Ok(s) => {
                    first.selector.report(i, true);
                    return Ok(s);
                }
                Err(e) => {
                    debug!(chain = %self.name, node = %node.name, "{e}");
                    first.selector.report(i, false);
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io_err(format!("chain {}: no node", self.name))))
    }

    async fn dial_from(
        &self,
        start: usize,
        first: &ChainNode,
        picks: &[usize],
        target: &str,
    ) -> io::Result<Box<dyn Stream>> {
        let mut stream: Box<dyn Stream> = match &first.dialer {
            Dialer::Tcp => dial_tcp(&first.addr).await?,
            Dialer::Tls(c, name) => tls_over(dial_tcp(&first.addr).await?, c, name, first).await?,
            Dialer::Pht(fetch, url) => Box::new(
                pht_client::connect_with(fetch, url)
                    .await
                    .map_err(|e| io_err(format!("node {} ({}): {e}", first.name, first.addr)))?,
            ),
        };
        let mut node = first;
        for (h, &pick) in picks.iter().enumerate() {
            let next = &self.hops[start + h + 1].nodes[pick];
            stream = connect_via(stream, node, &next.addr).await?;
            if let Dialer::Tls(c, name) = &next.dialer {
                stream = tls_over(stream, c, name, next).await?;
            }
            node = next;
        }
        connect_via(stream, node, target).await
    }
}

async fn tls_over(
    stream: Box<dyn Stream>,
    c: &TlsConnector,
    name: &ServerName<'static>,
    node: &ChainNode,
) -> io::Result<Box<dyn Stream>> {
    let s = tokio::time::timeout(DIAL_TIMEOUT, c.connect(name.clone(), stream))
        .await
        .map_err(|_| {
            io_err(format!(
                "node {} ({}): TLS handshake timed out",
                node.name, node.addr
            ))
        })?
        .map_err(|e| io_err(format!("node {} ({}): TLS: {e}", node.name, node.addr)))?;
    Ok(Box::new(s))
}

/// Asks `node`'s connector, over `stream`, to connect to `addr`.
async fn connect_via(
    stream: Box<dyn Stream>,
    node: &ChainNode,
    addr: &str,
) -> io::Result<Box<dyn Stream>> {
    if node.connector == Connector::Forward {
        return Ok(stream);
    }
    let connected = pht_core::handshake(stream.compat(), node.connector, addr, node.auth.as_ref())
        .await
        .map_err(|e| io_err(format!("node {} ({}): {e}", node.name, node.addr)))?;
    Ok(Box::new(connected.compat()))
}
