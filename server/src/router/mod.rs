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

mod dialer;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use pht_client::{Dial, Io};
use pht_core::{Connector, Credentials};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tracing::debug;

use crate::access::Bypass;
use crate::config::{ChainConfig, HopConfig, Issue, NodeConfig};
use crate::listener::Stream;
use crate::selector::{NodeOptions, Selector};
use dialer::{Dialer, NodeRef};

/// Time allowed for one outbound TCP connection, and for a TLS handshake over it.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a chain cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("chain {0:?} is not defined")]
    UnknownChain(String),
    #[error("chain {chain}: {}", crate::config::join_issues(issues))]
    Invalid { chain: String, issues: Vec<Issue> },
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
    dialer: Arc<dyn Dialer>,
    bypass: Option<Arc<Bypass>>,
}

impl ChainNode {
    fn as_ref(&self) -> NodeRef<'_> {
        NodeRef {
            name: &self.name,
            addr: &self.addr,
        }
    }
}

/// The hop's or node's bypass lists; names without compiled lists are an error, so that a
/// configuration that skipped `Config::resolve` cannot run without its lists.
fn bypass_of(
    names: (&Option<String>, &[String]),
    rules: &crate::access::Rules<Bypass>,
) -> Result<Option<Arc<Bypass>>, String> {
    let named = names.0.as_deref().is_some_and(|n| !n.is_empty()) || !names.1.is_empty();
    if named && !rules.is_some() {
        return Err("bypass lists that were not resolved (Config::resolve)".into());
    }
    Ok(rules.get().cloned())
}

fn hop_bypass(hop: &HopConfig) -> Result<Option<Arc<Bypass>>, String> {
    bypass_of((&hop.bypass, &hop.bypasses), &hop.bypass_rules)
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
        Self::build(cfg).map_err(|issues| RouteError::Invalid {
            chain: name.to_string(),
            issues,
        })
    }

    /// Builds a chain once: its hops and nodes, each node's dialer (TLS settings, HTTP
    /// client) and connector. Every problem comes back, each with its key path below the
    /// chain (`hops[0].nodes[1].dialer`).
    pub fn build(cfg: &ChainConfig) -> Result<Self, Vec<Issue>> {
        let mut issues = Vec::new();
        let mut add = |path: String, message: String| issues.push(Issue { path, message });
        let mut hops: Vec<Arc<Hop>> = Vec::new();
        for (hi, hop) in cfg.hops.iter().enumerate() {
            let at = format!("hops[{hi}]");
            if hop.nodes.is_empty() {
                add(
                    format!("{at}.nodes"),
                    format!(
                        "hop {:?} has no nodes, and no top-level hops[] entry has its name",
                        hop.name
                    ),
                );
                continue;
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
            let mut nodes = Vec::new();
            let mut options = Vec::new();
            for (ni, n) in hop.nodes.iter().enumerate() {
                let at = format!("{at}.nodes[{ni}]");
                // The node's own selector keys (backup, maxFails, failTimeout, weight).
                match NodeOptions::from_metadata(&n.metadata) {
                    Ok(o) => options.push(o),
                    Err(errors) => {
                        for e in errors {
                            add(
                                format!("{at}.metadata.{}", e.key),
                                format!("{} is not {}", e.value, e.expected),
                            );
                        }
                    }
                }
                match build_node(n, prefix.clone()) {
                    Ok(node) => nodes.push(node),
                    Err(list) => {
                        for (field, message) in list {
                            add(format!("{at}{field}"), message);
                        }
                    }
                }
            }
            if nodes.len() < hop.nodes.len() || options.len() < hop.nodes.len() {
                continue;
            }
            let carries = |n: &ChainNode| n.dialer.carries_earlier_hops();
            if nodes.iter().any(carries) && !nodes.iter().all(carries) {
                add(
                    format!("{at}.nodes"),
                    "a hop's nodes must all use a pht/phts/h3 dialer or none of them".into(),
                );
                continue;
            }
            let bypass = match hop_bypass(hop) {
                Ok(b) => b,
                Err(e) => {
                    add(format!("{at}.bypass"), e);
                    continue;
                }
            };
            hops.push(Arc::new(Hop {
                name: hop.name.clone(),
                nodes,
                selector: Selector::new(hop.selector.as_ref(), options),
                bypass,
            }));
        }
        if cfg.hops.is_empty() {
            add(
                "hops".into(),
                format!(
                    "chain {:?} has no hops (a chain needs at least one hop with a node)",
                    cfg.name
                ),
            );
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Router {
            chain: Some(Arc::new(Chain {
                name: cfg.name.clone(),
                hops,
                apply_bypass: true,
            })),
        })
    }

    /// gost's router retries: [`Router::dial`] up to `retries` more times after a failed
    /// dial, each retried failure logged at debug level; the last error when every attempt
    /// fails. Each attempt routes afresh (the chain's selectors pick again).
    pub async fn dial_retrying(
        &self,
        target: &str,
        retries: u32,
        service: &str,
    ) -> io::Result<Box<dyn Stream>> {
        let mut attempt = 0;
        loop {
            match self.dial(target).await {
                Err(e) if attempt < retries => {
                    debug!(service, %target, attempt, "dial failed, retrying: {e}");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// Connects to `addr` (`host:port`; an empty host means this machine, as in gost),
    /// through the chain if there is one.
    pub async fn dial(&self, addr: &str) -> io::Result<Box<dyn Stream>> {
        match &self.chain {
            None => dialer::dial_tcp(addr).await,
            Some(chain) => chain.dial(addr).await,
        }
    }
}

/// Connector types of chain nodes (`""` means `http`, as in gost).
pub fn connector_types() -> String {
    Connector::supported()
}

/// Dialer types of chain nodes (`""` means `tcp`, as in gost).
pub fn dialer_types() -> String {
    dialer::supported()
}

/// Builds one node; its problems come back as the key below the node (`.dialer`,
/// `.connector.type`...) and the message.
fn build_node(
    n: &NodeConfig,
    behind: Option<Arc<Chain>>,
) -> Result<ChainNode, Vec<(String, String)>> {
    let mut issues = Vec::new();
    let connector_kind = if n.connector.kind.is_empty() {
        "http"
    } else {
        &n.connector.kind
    };
    let connector = connector_kind.parse::<Connector>().map_err(|_| {
        issues.push((
            ".connector.type".to_string(),
            format!(
                "connector type {:?} is not supported (supported: {})",
                n.connector.kind,
                connector_types()
            ),
        ))
    });
    if n.addr.trim().is_empty() {
        issues.push((".addr".into(), "a node needs an address (host:port)".into()));
    }
    let via = behind.map(|prefix| {
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
    let spec = dialer::Spec {
        kind: &n.dialer.kind,
        connector: connector_kind,
        node: n,
        via,
    };
    let dialer = match dialer::build(&spec) {
        Ok(d) => Some(d),
        Err(dialer::BuildError::Unsupported) => {
            issues.push((
                ".dialer.type".to_string(),
                format!(
                    "dialer type {:?} is not supported (supported: {})",
                    n.dialer.kind,
                    dialer_types()
                ),
            ));
            None
        }
        // The dialer's own options only count once the node's address and connector do.
        Err(dialer::BuildError::Invalid(reason)) => {
            if issues.is_empty() {
                issues.push((".dialer".to_string(), reason));
            }
            None
        }
    };
    let bypass = bypass_of((&n.bypass, &n.bypasses), &n.bypass_rules)
        .map_err(|e| issues.push((".bypass".to_string(), e)));
    match (connector, dialer, bypass) {
        (Ok(connector), Some(dialer), Ok(bypass)) if issues.is_empty() => Ok(ChainNode {
            name: n.name.clone(),
            addr: n.addr.clone(),
            connector,
            auth: n
                .connector
                .auth
                .as_ref()
                .map(|a| Credentials::new(a.username.clone(), a.password.clone())),
            dialer,
            bypass,
        }),
        _ => Err(issues),
    }
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
            return dialer::dial_tcp(target).await;
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
            .rposition(|h| h.nodes[0].dialer.carries_earlier_hops())
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
                    for (k, &pick) in picks.iter().enumerate() {
                        self.hops[start + 1 + k].selector.report(pick, true);
                    }
                    return Ok(s);
                }
                Err((failed, e)) => {
                    debug!(chain = %self.name, node = %node.name, "{e}");
                    self.mark(start, i, &picks, failed);
                    last_err = Some(e);
                }
            }
        }
        crate::metrics::chain_error(&self.name);
        Err(last_err.unwrap_or_else(|| io_err(format!("chain {}: no node", self.name))))
    }

    /// Records a failed attempt as gost's node markers do: the nodes reached before the
    /// failure worked, the node the failure happened at (its dial or handshake, or the
    /// previous node's connect to it) failed. The starting node also counts a failure
    /// to connect to the target, as it always has here (gost marks no node for that).
    fn mark(&self, start: usize, first: usize, picks: &[usize], failed: Failed) {
        let hop = |k: usize| &self.hops[start + 1 + k].selector;
        match failed {
            Failed::Start => self.hops[start].selector.report(first, false),
            Failed::Target => {
                self.hops[start].selector.report(first, false);
                for (k, &pick) in picks.iter().enumerate() {
                    hop(k).report(pick, true);
                }
            }
            Failed::Hop(at) => {
                self.hops[start].selector.report(first, true);
                for (k, &pick) in picks.iter().enumerate().take(at + 1) {
                    hop(k).report(pick, k < at);
                }
            }
        }
    }

    async fn dial_from(
        &self,
        start: usize,
        first: &ChainNode,
        picks: &[usize],
        target: &str,
    ) -> Result<Box<dyn Stream>, (Failed, io::Error)> {
        let mut stream = first
            .dialer
            .dial(first.as_ref())
            .await
            .map_err(|e| (Failed::Start, e))?;
        let mut node = first;
        for (h, &pick) in picks.iter().enumerate() {
            let next = &self.hops[start + h + 1].nodes[pick];
            let at = |e| (Failed::Hop(h), e);
            stream = connect_via(stream, node, &next.addr).await.map_err(at)?;
            stream = next.dialer.over(stream, next.as_ref()).await.map_err(at)?;
            node = next;
        }
        connect_via(stream, node, target)
            .await
            .map_err(|e| (Failed::Target, e))
    }
}

/// Where a chain dial failed.
#[derive(Debug, Clone, Copy)]
enum Failed {
    /// Dialling the starting hop's node.
    Start,
    /// Reaching the node picked for the `k`th hop after the starting one.
    Hop(usize),
    /// The last node's connect to the target.
    Target,
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
