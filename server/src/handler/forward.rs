//! Port forwarding (`forward`, `tcp`): splice each connection to a forwarder node. Nodes
//! the service's bypass lists refuse are never dialled (see [`crate::forwarder`]); with none
//! left the connection is reset.

use futures::future::BoxFuture;
use pht_client::{Reset, splice};
use tracing::{debug, info, warn};

use super::{Handler, HandlerError};
use crate::config::ServiceConfig;
use crate::forwarder::Forwarder;
use crate::listener::Accepted;
use crate::router::Router;

pub struct ForwardHandler {
    service: String,
    forwarder: Forwarder,
    router: Router,
}

impl ForwardHandler {
    pub fn new(svc: &ServiceConfig, router: Router) -> Result<Self, HandlerError> {
        let forwarder = Forwarder::for_service(svc).ok_or_else(|| HandlerError::Invalid {
            kind: svc.handler.kind.clone(),
            reason: "no forwarder nodes (give a target: -L pht://:8443/host:port)".into(),
        })?;
        Ok(ForwardHandler {
            service: svc.name.clone(),
            forwarder,
            router,
        })
    }
}

impl Handler for ForwardHandler {
    fn handle(&self, mut conn: Accepted) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let peer = conn.peer;
            let tag = conn.tag.as_deref().unwrap_or("");
            let (node, mut upstream) = match self
                .forwarder
                .dial(&self.router, &self.service, &peer.to_string(), tag)
                .await
            {
                Ok(x) => x,
                Err(e) => {
                    // No target: the client must see a failure, not an empty answer.
                    conn.stream.reset();
                    crate::metrics::handler_error(&self.service);
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound
                    ) {
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
