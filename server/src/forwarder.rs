//! A service's forwarder: its target nodes and the selector that picks among them.
//! Used by the handlers that forward (`forward`/`tcp`, relay in forward mode).
//!
//! A forwarded connection's destination is the node's address, so that is what bypass
//! lists see: a node whose own `bypass` lists match its address is never used, and a node
//! the service's bypass lists refuse is never dialled (when every node is refused, the
//! connection is refused).

use std::io;

use tracing::{debug, warn};

use crate::config::{Issue, ServiceConfig};
use crate::listener::Stream;
use crate::router::Router;
use crate::selector::{NodeOptions, Selector};

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
    /// The service's forwarder, or `None` when it has no nodes with an address. Each node's
    /// own selector keys (`backup`, `maxFails`, `failTimeout`, `weight`: see
    /// [`crate::selector`]) are read here, once; values that are not of their kind come
    /// back each with its key path below the service (`forwarder.nodes[1].metadata.maxFails`).
    pub fn for_service(svc: &ServiceConfig) -> Result<Option<Forwarder>, Vec<Issue>> {
        let Some(f) = svc.forwarder.as_ref() else {
            return Ok(None);
        };
        let mut issues = Vec::new();
        let mut options = Vec::new();
        let mut nodes = Vec::new();
        let service_bypass = svc.bypass_rules.get();
        for (ni, n) in f.nodes.iter().enumerate() {
            if n.addr.is_empty() {
                continue;
            }
            match NodeOptions::from_metadata(&n.metadata) {
                Ok(o) => options.push(o),
                Err(errors) => issues.extend(errors.into_iter().map(|e| Issue {
                    path: format!("forwarder.nodes[{ni}].metadata.{}", e.key),
                    message: format!("{} is not {}", e.value, e.expected),
                })),
            }
            nodes.push(Node {
                addr: n.addr.clone(),
                skipped: n.bypass_rules.get().is_some_and(|b| b.contains(&n.addr)),
                refused: service_bypass.is_some_and(|b| b.contains(&n.addr)),
            });
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        if nodes.is_empty() {
            return Ok(None);
        }
        Ok(Some(Forwarder {
            nodes,
            selector: Selector::new(f.selector.as_ref(), options),
        }))
    }

    /// Dials the usable nodes in the selector's order until one answers; failures are
    /// logged and counted against the node. Each node is dialled up to `retries` more
    /// times before the next is tried, as gost's router retries the node it selected
    /// (handler `retries`). Errors: `PermissionDenied` when the service's bypass lists
    /// refuse every usable node, `NotFound` when no node is usable, else the last dial
    /// error.
    pub async fn dial(
        &self,
        router: &Router,
        retries: u32,
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
            match router.dial_retrying(&node.addr, retries, service).await {
                Ok(s) => {
                    self.selector.report(i, true);
                    return Ok((node.addr.clone(), s));
                }
                Err(e) => {
                    warn!(service, %peer, token = tag, target = %node.addr, "dial failed: {e}");
                    last = Some(e);
                }
            }
            self.selector.report(i, false);
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
