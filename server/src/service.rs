//! A service: one listener feeding one handler, until shutdown.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{ChainConfig, ServiceConfig, TlsConfig};
use crate::handler::{self, Handler};
use crate::listener::{self, Listener};
use crate::router::Router;

/// A service that is bound and ready to run.
pub struct Service {
    pub name: String,
    listener: Box<dyn Listener>,
    handler: Arc<dyn Handler>,
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
#[error("service {name}: {source}")]
pub struct ServiceError {
    pub name: String,
    #[source]
    pub source: anyhow::Error,
}

impl Service {
    /// Builds the handler and binds the listener.
    pub async fn start(
        cfg: &ServiceConfig,
        chains: &[ChainConfig],
        global_tls: Option<&TlsConfig>,
        shutdown: CancellationToken,
    ) -> Result<Self, ServiceError> {
        let err = |source: anyhow::Error| ServiceError {
            name: cfg.name.clone(),
            source,
        };
        let router =
            Router::for_chain(cfg.handler.chain.as_deref(), chains).map_err(|e| err(e.into()))?;
        let handler = handler::build(cfg, router).map_err(|e| err(e.into()))?;
        let listener = listener::bind(&cfg.listener, global_tls, &cfg.addr, &cfg.name, shutdown)
            .await
            .map_err(|e| err(e.into()))?;
        info!(
            service = %cfg.name, handler = %cfg.handler.kind, listener = %cfg.listener.kind,
            "listening on {}/{}", listener.local_addr(), cfg.listener.kind
        );
        Ok(Service {
            name: cfg.name.clone(),
            listener,
            handler,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr()
    }

    /// Accepts and serves until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let metrics = crate::metrics::get().map(|m| m.service(&self.name));
        let _running = metrics.as_ref().map(|m| m.running());
        loop {
            let conn = tokio::select! {
                _ = shutdown.cancelled() => {
                    self.listener.drained().await;
                    return;
                }
                c = self.listener.accept() => c,
            };
            match conn {
                Ok(conn) => {
                    let h = self.handler.clone();
                    let request = metrics.as_ref().map(|m| m.request());
                    tokio::spawn(async move {
                        h.handle(conn).await;
                        drop(request);
                    });
                }
                Err(e) => {
                    error!(service = %self.name, "accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}
