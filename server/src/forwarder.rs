//! A service's forwarder: its target nodes and the selector that picks among them.
//! Used by the handlers that forward (`forward`/`tcp`, relay in forward mode).

use std::io;

use tracing::warn;

use crate::config::ServiceConfig;
use crate::listener::Stream;
use crate::router::Router;
use crate::selector::Selector;

pub struct Forwarder {
    nodes: Vec<String>,
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
        Some(Forwarder {
            nodes: nodes.iter().map(|n| n.addr.clone()).collect(),
            selector: Selector::new(f.selector.as_ref(), backup),
        })
    }

    /// Dials the nodes in the selector's order until one answers; failures are logged
    /// and counted against the node.
    pub async fn dial(
        &self,
        router: &Router,
        service: &str,
        peer: &str,
        tag: &str,
    ) -> io::Result<(String, Box<dyn Stream>)> {
        let mut last = None;
        for i in self.selector.order() {
            let node = &self.nodes[i];
            match router.dial(node).await {
                Ok(s) => {
                    self.selector.report(i, true);
                    return Ok((node.clone(), s));
                }
                Err(e) => {
                    warn!(service, %peer, token = tag, target = %node, "dial failed: {e}");
                    self.selector.report(i, false);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no forwarder node")))
    }
}
