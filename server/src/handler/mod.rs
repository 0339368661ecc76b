//! Handlers serve one accepted byte stream each. They know nothing of listeners: a new
//! handler type is one file here and one line in [`build`].

pub mod auth;
mod auto;
mod common;
mod file;
mod forward;
mod http;
#[cfg(test)]
mod interop_tests;
mod relay;
mod socks4;
mod socks5;
mod socks5_bind;
mod socks5_udp;
#[cfg(test)]
mod testutil;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::config::ServiceConfig;
use crate::listener::Accepted;
use crate::router::Router;

/// Serves connections for one service.
pub trait Handler: Send + Sync {
    /// Serves `conn` to its end; errors are logged by the handler itself.
    fn handle(&self, conn: Accepted) -> BoxFuture<'_, ()>;
}

/// Why a handler could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(
        "handler type {0:?} is not supported (supported: forward, tcp, http, socks5, socks, socks4, socks4a, relay, auto)"
    )]
    Unsupported(String),
    #[error("handler {kind}: {reason}")]
    Invalid { kind: String, reason: String },
}

/// The handler registry.
pub fn build(svc: &ServiceConfig, router: Router) -> Result<Arc<dyn Handler>, HandlerError> {
    match svc.handler.kind.as_str() {
        "forward" | "tcp" => Ok(Arc::new(forward::ForwardHandler::new(svc, router)?)),
        "http" => Ok(Arc::new(http::HttpHandler::new(svc, router)?)),
        "socks5" | "socks" => Ok(Arc::new(socks5::Socks5Handler::new(svc, router)?)),
        "socks4" | "socks4a" => Ok(Arc::new(socks4::Socks4Handler::new(svc, router)?)),
        "relay" => Ok(Arc::new(relay::RelayHandler::new(svc, router)?)),
        "auto" => Ok(Arc::new(auto::AutoHandler::new(svc, router)?)),
        "file" => Ok(Arc::new(file::FileHandler::new(svc)?)),
        other => Err(HandlerError::Unsupported(other.to_string())),
    }
}
