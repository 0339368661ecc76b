//! Plain TCP.

use std::io;
use std::net::SocketAddr;

use futures::future::BoxFuture;

use tokio_util::sync::CancellationToken;

use super::{Accepted, Bound, Gate, ListenError, Listener, Prepared, Spec};

/// A tcp listener's options: `maxConns`.
struct Plan {
    addr: String,
    gate: Gate,
}

pub(super) fn prepare(spec: &Spec<'_>) -> Result<Box<dyn Prepared>, ListenError> {
    Ok(Box::new(Plan {
        addr: spec.addr.to_string(),
        gate: Gate::from_metadata(&spec.cfg.metadata, spec.service)?,
    }))
}

impl Prepared for Plan {
    fn bind(self: Box<Self>, _shutdown: CancellationToken) -> Bound {
        Box::pin(async move {
            let l = TcpListener::bind(&self.addr, self.gate).await?;
            Ok(Box::new(l) as _)
        })
    }
}

pub struct TcpListener {
    /// `None` once draining: the socket is closed, so new connections go elsewhere.
    inner: Option<tokio::net::TcpListener>,
    local: SocketAddr,
    gate: Gate,
}

impl TcpListener {
    pub async fn bind(addr: &str, gate: Gate) -> Result<Self, ListenError> {
        let inner = super::bind_tcp(addr).await?;
        let local = inner.local_addr().map_err(|source| ListenError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        Ok(TcpListener {
            inner: Some(inner),
            local,
            gate,
        })
    }
}

impl Listener for TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Accepted>> {
        Box::pin(async move {
            let Some(inner) = &self.inner else {
                return std::future::pending().await;
            };
            loop {
                let (stream, peer) = inner.accept().await?;
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().ok();
                if let Some(stream) = self.gate.admit(stream, peer) {
                    return Ok(Accepted {
                        stream: Box::new(stream),
                        peer,
                        tag: None,
                        local,
                    });
                }
            }
        })
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn drain(&mut self) {
        self.inner = None;
    }
}
