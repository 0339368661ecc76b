//! The `metrics` handler (`-L metrics://:9000`): Prometheus scrapes over HTTP/1 at the
//! `path` option (default `/metrics`), basic auth when the service has `auth`. Turning
//! such a service on turns metrics on (see [`crate::metrics`]).

use std::sync::Arc;

use futures::future::BoxFuture;
use tracing::debug;

use super::{Handler, HandlerError};
use crate::config::ServiceConfig;
use crate::listener::Accepted;
use crate::metrics::{self, Endpoint};

pub struct MetricsHandler {
    service: String,
    endpoint: Arc<Endpoint>,
}

impl MetricsHandler {
    pub fn new(svc: &ServiceConfig) -> Result<Self, HandlerError> {
        metrics::enable();
        let path = svc.handler.metadata.get_str("path");
        let auth = svc
            .handler
            .auth
            .clone()
            .or_else(|| svc.handler.users.first().cloned());
        Ok(MetricsHandler {
            service: svc.name.clone(),
            endpoint: Arc::new(Endpoint::new(path.as_deref(), auth)),
        })
    }
}

impl Handler for MetricsHandler {
    fn handle(&self, conn: Accepted) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let peer = conn.peer;
            if let Err(e) = metrics::serve_conn(conn.stream, self.endpoint.clone()).await {
                debug!(service = %self.service, %peer, "metrics: {e}");
            }
        })
    }
}
