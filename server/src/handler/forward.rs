//! Port forwarding (`forward`, `tcp`): splice each connection to a forwarder node. Nodes
//! the service's bypass lists refuse are never dialled (see [`crate::forwarder`]); with none
//! left the connection is reset.

use futures::future::BoxFuture;
use pht_runtime::{Reset, splice};
use tracing::{debug, info, warn};

use super::common::retries;
use super::{Handler, HandlerError};
use crate::config::ServiceConfig;
use crate::forwarder::Forwarder;
use crate::listener::Accepted;
use crate::router::Router;

pub struct ForwardHandler {
    service: String,
    /// `None`: no target of its own, only a chain. gost's client half of port forwarding,
    /// `-L tcp://:1080 -F forward+pht://server:8443`: the chain's last node (a `forward`
    /// connector) takes the connection to the server's own target, so the address dialled
    /// through the chain is empty, as in gost.
    forwarder: Option<Forwarder>,
    router: Router,
    /// gost's `retries`: more tries of a failed dial (of each node, or through the chain).
    retries: u32,
}

impl ForwardHandler {
    pub fn new(svc: &ServiceConfig, router: Router) -> Result<Self, HandlerError> {
        let forwarder = Forwarder::for_service(svc).map_err(HandlerError::At)?;
        if forwarder.is_none() && router.is_direct() {
            return Err(HandlerError::Invalid {
                kind: svc.handler.kind.clone(),
                reason:
                    "no forwarder nodes and no chain (give a target: -L tcp://:8080/host:port, \
                         or a chain that ends in a forward connector: -F forward+pht://server:8443)"
                        .into(),
            });
        }
        Ok(ForwardHandler {
            service: svc.name.clone(),
            forwarder,
            router,
            retries: retries(svc)?,
        })
    }
}

impl Handler for ForwardHandler {
    fn handle(&self, mut conn: Accepted) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let peer = conn.peer;
            let tag = conn.tag.as_deref().unwrap_or("");
            let dialled = match &self.forwarder {
                Some(f) => {
                    let peer = peer.to_string();
                    f.dial(&self.router, self.retries, &self.service, &peer, tag)
                        .await
                }
                None => self
                    .router
                    .dial_retrying("", self.retries, &self.service)
                    .await
                    .map(|s| ("the chain's target".to_string(), s)),
            };
            let (node, mut upstream) = match dialled {
                Ok(x) => x,
                Err(e) => {
                    // No target: the client must see a failure, not an empty answer.
                    conn.stream.reset();
                    crate::metrics::handler_error(&self.service);
                    // The forwarder logs each node's dial failure; a chain-only dial is
                    // logged here.
                    if self.forwarder.is_none()
                        || matches!(
                            e.kind(),
                            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound
                        )
                    {
                        warn!(service = %self.service, %peer, token = tag, "forward: {e}: connection reset");
                    }
                    return;
                }
            };
            debug!(service = %self.service, %peer, token = tag, "{peer} <-> {node}");
            let (stats, err) = splice(&mut conn.stream, &mut upstream).await;
            crate::metrics::transfer(&self.service, stats.a_to_b, stats.b_to_a);
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
