//! Handlers serve one accepted byte stream each. They know nothing of listeners: a new
//! handler type is one file here and one line in the registry (`REGISTRY`).

#[cfg(test)]
mod access_tests;
pub mod auth;
mod auto;
pub(crate) mod common;
mod echo;
mod file;
mod forward;
mod http;
#[cfg(test)]
mod interop_tests;
mod metrics;
mod relay;
mod socks4;
mod socks5;
mod socks5_bind;
mod socks5_udp;
#[cfg(test)]
mod testutil;

use std::sync::Arc;

use futures::future::BoxFuture;
use pht_runtime::Reset;
use tracing::{debug, warn};

use crate::access::Admission;
use crate::config::{Issue, MetadataError, ServiceConfig};
use crate::listener::Accepted;
use crate::registry::Registry;
use crate::router::Router;

/// Serves connections for one service.
pub trait Handler: Send + Sync {
    /// Serves `conn` to its end; errors are logged by the handler itself.
    fn handle(&self, conn: Accepted) -> BoxFuture<'_, ()>;
}

/// How a handler type is built from its service's configuration (options parsed here,
/// once, before anything binds).
type Build = fn(&ServiceConfig, Router) -> Result<Arc<dyn Handler>, HandlerError>;

/// The handler registry: each type's names (canonical first, then gost's aliases) and its
/// builder. A new handler is its file plus one line here; everything that lists or checks
/// handler types reads this table.
const REGISTRY: Registry<Build> = Registry(&[
    (&["auto", ""], |s, r| {
        Ok(Arc::new(auto::AutoHandler::new(s, r)?))
    }),
    (&["http"], |s, r| {
        Ok(Arc::new(http::HttpHandler::new(s, r)?))
    }),
    (&["socks5", "socks"], |s, r| {
        Ok(Arc::new(socks5::Socks5Handler::new(s, r)?))
    }),
    (&["socks4", "socks4a"], |s, r| {
        Ok(Arc::new(socks4::Socks4Handler::new(s, r)?))
    }),
    (&["relay"], |s, r| {
        Ok(Arc::new(relay::RelayHandler::new(s, r)?))
    }),
    (&["forward", "tcp"], |s, r| {
        Ok(Arc::new(forward::ForwardHandler::new(s, r)?))
    }),
    (&["file"], |s, _| Ok(Arc::new(file::FileHandler::new(s)?))),
    (&["metrics"], |s, _| {
        Ok(Arc::new(metrics::MetricsHandler::new(s)?))
    }),
    (&["echo"], |s, _| Ok(Arc::new(echo::EchoHandler::new(s)?))),
]);

/// Every handler type name, for "supported: ..." messages.
pub fn supported() -> String {
    REGISTRY.supported()
}

/// Why a handler could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("handler type {0:?} is not supported (supported: {list})", list = supported())]
    Unsupported(String),
    #[error("handler {kind}: {reason}")]
    Invalid { kind: String, reason: String },
    /// A metadata option that cannot be used.
    #[error("handler {kind}: {error}")]
    Option { kind: String, error: MetadataError },
    /// Settings of the service beside the handler's own (its forwarder's nodes), each
    /// with its key path below the service.
    #[error("{}", crate::config::join_issues(.0))]
    At(Vec<Issue>),
}

/// The handler registry. Services that name admission lists get them checked before the
/// handler sees a connection.
pub fn build(svc: &ServiceConfig, router: Router) -> Result<Arc<dyn Handler>, HandlerError> {
    let unresolved = |what: &str| HandlerError::Invalid {
        kind: svc.handler.kind.clone(),
        reason: format!("the service names {what} lists that were not resolved (Config::resolve)"),
    };
    if (svc.admission.as_deref().is_some_and(|a| !a.is_empty()) || !svc.admissions.is_empty())
        && !svc.admission_rules.is_some()
    {
        return Err(unresolved("admission"));
    }
    if (svc.bypass.as_deref().is_some_and(|b| !b.is_empty()) || !svc.bypasses.is_empty())
        && !svc.bypass_rules.is_some()
    {
        return Err(unresolved("bypass"));
    }
    let build = REGISTRY
        .find(&svc.handler.kind)
        .ok_or_else(|| HandlerError::Unsupported(svc.handler.kind.clone()))?;
    let handler = build(svc, router)?;
    Ok(match svc.admission_rules.get() {
        Some(admission) => Arc::new(Admitted {
            inner: handler,
            admission: admission.clone(),
            service: svc.name.clone(),
        }),
        None => handler,
    })
}

/// A handler behind the service's admission lists: a refused client is reset before a
/// byte of it is read (for a PHT tunnel: the tunnel is reset).
struct Admitted {
    inner: Arc<dyn Handler>,
    admission: Arc<Admission>,
    service: String,
}

impl Handler for Admitted {
    fn handle(&self, mut conn: Accepted) -> BoxFuture<'_, ()> {
        if self.admission.admits(conn.peer.ip()) {
            return self.inner.handle(conn);
        }
        Box::pin(async move {
            conn.stream.reset();
            let peer = conn.peer;
            let tag = conn.tag.as_deref().unwrap_or("");
            // One line a minute per client at warn; the repeats at debug.
            if self.admission.note_denied(peer.ip()) {
                warn!(service = %self.service, %peer, token = tag, "client refused by admission (repeats from this address are logged at debug for a minute)");
            } else {
                debug!(service = %self.service, %peer, token = tag, "client refused by admission");
            }
        })
    }
}
