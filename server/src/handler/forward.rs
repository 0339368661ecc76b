//! Port forwarding (`forward`, `tcp`): splice each connection to a forwarder node.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use pht_client::pipe;
use tracing::{debug, info, warn};

use super::{Handler, HandlerError};
use crate::config::ServiceConfig;
use crate::listener::Accepted;
use crate::router::Router;

pub struct ForwardHandler {
    service: String,
    nodes: Vec<String>,
    next: AtomicUsize,
    router: Router,
}

impl ForwardHandler {
    pub fn new(svc: &ServiceConfig, router: Router) -> Result<Self, HandlerError> {
        let nodes: Vec<String> = svc
            .forwarder
            .as_ref()
            .map(|f| {
                f.nodes
                    .iter()
                    .map(|n| n.addr.clone())
                    .filter(|a| !a.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if nodes.is_empty() {
            return Err(HandlerError::Invalid {
                kind: svc.handler.kind.clone(),
                reason: "no forwarder nodes (give a target: -L pht://:8443/host:port)".into(),
            });
        }
        Ok(ForwardHandler {
            service: svc.name.clone(),
            nodes,
            next: AtomicUsize::new(0),
            router,
        })
    }
}

impl Handler for ForwardHandler {
    fn handle(&self, mut conn: Accepted) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let peer = conn.peer;
            let tag = conn.tag.as_deref().unwrap_or("");
            // Round robin, falling over to the next node when a dial fails.
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let mut target = None;
            for i in 0..self.nodes.len() {
                let node = &self.nodes[(start + i) % self.nodes.len()];
                match self.router.dial(node).await {
                    Ok(s) => {
                        target = Some((node, s));
                        break;
                    }
                    Err(e) => {
                        warn!(service = %self.service, %peer, token = tag, target = %node, "dial failed: {e}")
                    }
                }
            }
            let Some((node, mut upstream)) = target else {
                return;
            };
            debug!(service = %self.service, %peer, token = tag, "{peer} <-> {node}");
            let (stats, err) = pipe(&mut conn.stream, &mut upstream).await;
            info!(
                service = %self.service, %peer, token = tag, target = %node,
                input_bytes = stats.a_to_b, output_bytes = stats.b_to_a,
                duration = ?stats.duration,
                error = err.map(|e| e.to_string()),
                "{peer} >< {node}"
            );
        })
    }
}
