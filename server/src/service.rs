//! A service: one listener feeding one handler, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::handler::Handler;
use crate::listener::Listener;
use crate::plan::ServicePlan;

/// A service that is bound and ready to run.
pub struct Service {
    pub name: String,
    listener: Box<dyn Listener>,
    handler: Arc<dyn Handler>,
    /// `drainTimeout` (service metadata): how long open connections and tunnels may run
    /// on after the first SIGTERM; `0` (the default, as in gost) ends them at once.
    drain_timeout: Duration,
}

/// How a running service learns that the server is going away, and tells it is done.
#[derive(Clone)]
pub struct Lifecycle {
    /// Ends everything now.
    pub shutdown: CancellationToken,
    /// The first SIGTERM: no new connections or tunnels; open ones run on.
    pub draining: CancellationToken,
    /// Cancelled by the service once its drain is over: nothing open, or its
    /// `drainTimeout` has passed.
    pub drained: CancellationToken,
}

impl Lifecycle {
    pub fn new(shutdown: CancellationToken) -> Self {
        Lifecycle {
            shutdown,
            draining: CancellationToken::new(),
            drained: CancellationToken::new(),
        }
    }
}

/// How often a draining service looks whether its connections are gone.
const DRAIN_CHECK: Duration = Duration::from_millis(100);

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
#[error("service {name}: {source}")]
pub struct ServiceError {
    pub name: String,
    #[source]
    pub source: anyhow::Error,
}

impl Service {
    /// Binds the planned service's listener (its handler and options are built already).
    pub async fn start(
        plan: ServicePlan,
        shutdown: CancellationToken,
    ) -> Result<Self, ServiceError> {
        let listener = plan
            .listener
            .bind(shutdown)
            .await
            .map_err(|e| ServiceError {
                name: plan.name.clone(),
                source: e.into(),
            })?;
        info!(
            service = %plan.name, handler = %plan.handler_kind, listener = %plan.listener_kind,
            "listening on {}/{}", listener.local_addr(), plan.listener_kind
        );
        Ok(Service {
            name: plan.name,
            listener,
            handler: plan.handler,
            drain_timeout: plan.drain_timeout,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr()
    }

    /// Accepts and serves until `life.shutdown`; from `life.draining` on it takes nothing
    /// new, and cancels `life.drained` once what is open has ended or `drainTimeout` passed.
    pub async fn run(mut self, life: Lifecycle) {
        let metrics = crate::metrics::get().map(|m| m.service(&self.name));
        let _running = metrics.as_ref().map(|m| m.running());
        let handlers = TaskTracker::new();
        let mut deadline = None;
        // Off once a draining listener has nothing more to give (its queue closed).
        let mut accepting = true;
        let mut check = tokio::time::interval(DRAIN_CHECK);
        loop {
            let conn = tokio::select! {
                _ = life.shutdown.cancelled() => {
                    self.listener.drained().await;
                    return;
                }
                _ = life.draining.cancelled(), if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + self.drain_timeout);
                    self.listener.drain();
                    let open = handlers.len() + self.listener.busy();
                    if open > 0 && !self.drain_timeout.is_zero() {
                        info!(
                            service = %self.name, open, drain_timeout = ?self.drain_timeout,
                            "draining: new connections are refused, open ones run on"
                        );
                    }
                    continue;
                }
                _ = check.tick(), if deadline.is_some() && !life.drained.is_cancelled() => {
                    let open = handlers.len() + self.listener.busy();
                    if open == 0 {
                        if !self.drain_timeout.is_zero() {
                            info!(service = %self.name, "drained: nothing open");
                        }
                        life.drained.cancel();
                    } else if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        if !self.drain_timeout.is_zero() {
                            warn!(service = %self.name, open, "drainTimeout passed: ending what is still open");
                        }
                        life.drained.cancel();
                    }
                    continue;
                }
                c = self.listener.accept(), if accepting => c,
            };
            match conn {
                Ok(conn) => {
                    let h = self.handler.clone();
                    let request = metrics.as_ref().map(|m| m.request());
                    handlers.spawn(async move {
                        h.handle(conn).await;
                        drop(request);
                    });
                }
                // A draining listener whose accept loop has stopped: not an error.
                Err(_) if deadline.is_some() => accepting = false,
                Err(e) => {
                    error!(service = %self.name, "accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}
