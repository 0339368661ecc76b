//! Outbound dials for handlers: direct, or through a chain of hops (gost's `-F` nodes).
//!
//! The first node is reached by its dialer (TCP, or a PHT tunnel); each further node, and
//! finally the target, by asking the previous node's connector (HTTP CONNECT, SOCKS5,
//! relay, forward) to connect onwards.
//!
//! Bypass lists change the route per target, as in gost: a hop whose lists match the
//! target ends the route there (the previous hop's connector, or this machine when it is
//! the first hop, connects to the target), and a node whose lists match is not eligible;
//! a hop left with no eligible node ends the route the same way.

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

use crate::access::Bypass;
use crate::config::{ChainConfig, HopConfig, Metadata, NodeConfig, TlsConfig};
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
    #[error("chain {chain}: {what} {name}: bypass lists that were not resolved (Config::resolve)")]
    Unresolved {
        chain: String,
        what: &'static str,
        name: String,
    },
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
    /// False for the hops in front of a PHT node: they carry its HTTP connections, and
    /// the route through them was chosen for the final target already.
    apply_bypass: bool,
}

struct Hop {
    name: String,
    nodes: Vec<ChainNode>,
    selector: Selector,
    bypass: Option<Arc<Bypass>>,
}

struct ChainNode {
    name: String,
    addr: String,
    connector: Connector,
    auth: Option<Credentials>,
    dialer: Dialer,
    bypass: Option<Arc<Bypass>>,
}

/// The hop's or node's bypass lists; names without compiled lists are an error, so that a
/// configuration that skipped `Config::resolve` cannot run without its lists.
fn bypass_of(
    chain: &str,
    what: &'static str,
    name: &str,
    names: (&Option<String>, &[String]),
    rules: &crate::access::Rules<Bypass>,
) -> Result<Option<Arc<Bypass>>, RouteError> {
    let named = names.0.as_deref().is_some_and(|n| !n.is_empty()) || !names.1.is_empty();
    if named && !rules.is_some() {
        return Err(RouteError::Unresolved {
            chain: chain.to_string(),
            what,
            name: name.to_string(),
        });
    }
    Ok(rules.get().cloned())
}

fn hop_bypass(chain: &str, hop: &HopConfig) -> Result<Option<Arc<Bypass>>, RouteError> {
    bypass_of(
        chain,
        "hop",
        &hop.name,
        (&hop.bypass, &hop.bypasses),
        &hop.bypass_rules,
    )
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
                    apply_bypass: false,
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
                    reason: "a hop's nodes must all use a pht/phts/h3 dialer or none of them"
                        .into(),
                });
            }
            hops.push(Arc::new(Hop {
                name: hop.name.clone(),
                nodes,
                selector: Selector::new(hop.selector.as_ref(), backup),
                bypass: hop_bypass(&cfg.name, hop)?,
            }));
        }
        if hops.is_empty() {
            return Err(RouteError::NoHops(cfg.name.clone()));
        }
        Ok(Router {
            chain: Some(Arc::new(Chain {
                name: cfg.name.clone(),
                hops,
                apply_bypass: true,
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

/// Connector types of chain nodes (`""` means `http`, as in gost).
pub const CONNECTOR_TYPES: &[&str] = &["http", "socks5", "socks", "relay", "forward"];
/// Dialer types of chain nodes (`""` means `tcp`, as in gost).
pub const DIALER_TYPES: &[&str] = &["tcp", "tls", "pht", "phts", "h3", "http3"];

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
    let connector: Connector = connector_kind.parse().map_err(|_| {
        bad(format!(
            "connector {connector_kind:?} is not supported (supported: {})",
            CONNECTOR_TYPES.join(", ")
        ))
    })?;
    let auth = n
        .connector
        .auth
        .as_ref()
        .map(|a| Credentials::new(a.username.clone(), a.password.clone()));
    let params = dialer_params(&n.dialer.metadata, n.dialer.tls.as_ref());
    let dialer = match n.dialer.kind.as_str() {
        "" | "tcp" => Dialer::Tcp,
        kind @ ("pht" | "phts" | "h3" | "http3") => {
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
            let fetch = HyperFetch::for_node_via(&node, dial).map_err(|e| bad(e.to_string()))?;
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
                "dialer {other:?} is not supported (supported: {})",
                DIALER_TYPES.join(", ")
            )));
        }
    };
    Ok(ChainNode {
        name: n.name.clone(),
        addr: n.addr.clone(),
        connector,
        auth,
        dialer,
        bypass: bypass_of(
            chain,
            "node",
            &n.name,
            (&n.bypass, &n.bypasses),
            &n.bypass_rules,
        )?,
    })
}

/// Dialer metadata and TLS block as node URL parameters; gost's `header` map becomes
/// `header.NAME`.
pub(crate) fn dialer_params(md: &Metadata, tls: Option<&TlsConfig>) -> Vec<(String, String)> {
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
    /// The route to `target`: how many hops it goes through, and which nodes of each are
    /// eligible. The route ends before the first hop whose bypass lists match the target
    /// or that has no eligible node. (No selector is asked here, so round robin advances
    /// only for the hops a connection really uses.)
    fn route(&self, target: &str) -> Vec<Vec<bool>> {
        let bypassed = |b: &Option<Arc<Bypass>>| {
            self.apply_bypass && b.as_ref().is_some_and(|b| b.contains(target))
        };
        let mut route = Vec::with_capacity(self.hops.len());
        for hop in &self.hops {
            if bypassed(&hop.bypass) {
                debug!(chain = %self.name, hop = %hop.name, %target, "hop bypassed: the route ends before it");
                break;
            }
            let eligible: Vec<bool> = hop.nodes.iter().map(|n| !bypassed(&n.bypass)).collect();
            if !eligible.contains(&true) {
                debug!(chain = %self.name, hop = %hop.name, %target, "no eligible node: the route ends before the hop");
                break;
            }
            route.push(eligible);
        }
        route
    }

    async fn dial(&self, target: &str) -> io::Result<Box<dyn Stream>> {
        let route = self.route(target);
        if route.is_empty() {
            return dial_tcp(target).await;
        }
        // The selector's order for hop `h`, eligible nodes only (never empty: the order
        // holds every node, and the route holds only hops with an eligible one).
        let order = |h: usize| -> Vec<usize> {
            self.hops[h]
                .selector
                .order()
                .into_iter()
                .filter(|&i| route[h][i])
                .collect()
        };
        // The last PHT hop carries everything before it inside its HTTP connections, so
        // the stream starts there.
        let start = self.hops[..route.len()]
            .iter()
            .rposition(|h| matches!(h.nodes[0].dialer, Dialer::Pht(..)))
            .unwrap_or(0);
        // One node per later hop; the starting hop fails over to its other nodes.
        let picks: Vec<usize> = (start + 1..route.len()).map(|h| order(h)[0]).collect();
        let first = &self.hops[start];
        let mut last_err = None;
        for i in order(start) {
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
        crate::metrics::chain_error(&self.name);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn chain(yaml: &str) -> Arc<Chain> {
        let mut c: Config = serde_yaml::from_str(yaml).unwrap();
        c.resolve().unwrap();
        Router::for_chain(Some("c"), &c.chains)
            .unwrap()
            .chain
            .unwrap()
    }

    #[test]
    fn hop_and_node_bypass_shape_the_route() {
        let c = chain(
            r"
bypasses:
- {name: local, matchers: [127.0.0.0/8]}
- {name: only-web, whitelist: true, matchers: ['*:80', '*:443', '0.0.0.0/0']}
- {name: not-a, matchers: [a.example]}
chains:
- name: c
  hops:
  - name: h0
    bypass: local
    nodes:
    - {name: n0, addr: '10.0.0.1:1', bypass: not-a}
    - {name: n1, addr: '10.0.0.2:1'}
  - name: h1
    bypass: only-web
    nodes:
    - {name: m0, addr: '10.0.0.3:1', bypass: not-a}
",
        );
        let len = |t: &str| c.route(t).len();
        let eligible = |t: &str| c.route(t);
        assert_eq!(len("127.0.0.1:80"), 0, "the first hop bypassed: direct");
        assert_eq!(len("b.example:80"), 2, "the whole chain");
        assert_eq!(
            len("b.example:22"),
            1,
            "h1 whitelists web ports: ends after h0"
        );
        // a.example: n0 not eligible in h0 (n1 is), and h1's only node is not: cut there.
        assert_eq!(eligible("a.example:80"), vec![vec![false, true]]);
        assert_eq!(eligible("b.example:80"), vec![vec![true, true], vec![true]]);
        assert_eq!(len("10.9.9.9:5"), 2, "the CIDR entry lets IPs through h1");
    }

    #[test]
    fn unresolved_bypass_names_are_refused() {
        let c: Config = serde_yaml::from_str(
            "chains:\n- name: c\n  hops:\n  - name: h\n    bypass: b\n    nodes:\n    - {name: n, addr: 'a:1'}\n",
        )
        .unwrap();
        let e = Router::for_chain(Some("c"), &c.chains).err().unwrap();
        assert!(e.to_string().contains("not resolved"), "{e}");
    }
}
