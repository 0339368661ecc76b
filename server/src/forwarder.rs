//! A service's forwarder: its target nodes and the selector that picks among them.
//! Used by the handlers that forward (`forward`/`tcp`, relay in forward mode).
//!
//! A forwarded connection's destination is the node's address, so that is what bypass
//! lists see: a node whose own `bypass` lists match its address is never used, and a node
//! the service's bypass lists refuse is never dialled (when every node is refused, the
//! connection is refused).

use std::io;

use tracing::{debug, warn};

use crate::config::ServiceConfig;
use crate::listener::Stream;
use crate::router::Router;
use crate::selector::Selector;

struct Node {
    addr: String,
    /// The node's own bypass lists match its address: never used.
    skipped: bool,
    /// The service's bypass lists refuse its address: never dialled.
    refused: bool,
}

pub struct Forwarder {
    nodes: Vec<Node>,
    selector: Selector,
}

impl Forwarder {
    /// The service's forwarder, or `None` when it has no nodes with an address.
    pub fn for_service(svc: &ServiceConfig) -> Option<Forwarder> {
        let f = svc.forwarder.as_ref()?;
        let nodes: Vec<_> = f.nodes.iter().filter(|n| !n.addr.is_empty()).collect();
        if nodes.is_empty() {
            return None;
        }
        let backup = nodes
            .iter()
            .map(|n| {
                n.metadata
                    .get_bool("backup")
                    .ok()
                    .flatten()
                    .unwrap_or(false)
            })
            .collect();
        let service_bypass = svc.bypass_rules.get();
        let nodes = nodes
            .iter()
            .map(|n| {
                let skipped = n.bypass_rules.get().is_some_and(|b| b.contains(&n.addr));
                let refused = service_bypass.is_some_and(|b| b.contains(&n.addr));
                Node {
                    addr: n.addr.clone(),
                    skipped,
                    refused,
                }
            })
            .collect();
        Some(Forwarder {
            nodes,
            selector: Selector::new(f.selector.as_ref(), backup),
        })
    }

    /// Dials the usable nodes in the selector's order until one answers; failures are
    /// logged and counted against the node. Errors: `PermissionDenied` when the service's
    /// bypass lists refuse every usable node, `NotFound` when no node is usable, else the
    /// last dial error.
    pub async fn dial(
        &self,
        router: &Router,
        service: &str,
        peer: &str,
        tag: &str,
    ) -> io::Result<(String, Box<dyn Stream>)> {
        let mut last = None;
        let mut refused = false;
        for i in self.selector.order() {
            let node = &self.nodes[i];
            if node.skipped {
                continue;
            }
            if node.refused {
                debug!(service, %peer, token = tag, target = %node.addr, "forwarder node refused by bypass");
                refused = true;
                continue;
            }
            match router.dial(&node.addr).await {
                Ok(s) => {
                    self.selector.report(i, true);
                    return Ok((node.addr.clone(), s));
                }
                Err(e) => {
                    warn!(service, %peer, token = tag, target = %node.addr, "dial failed: {e}");
                    self.selector.report(i, false);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            if refused {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "every forwarder node is refused by the service's bypass",
                )
            } else {
                io::Error::new(io::ErrorKind::NotFound, "no usable forwarder node")
            }
        }))
    }
}
