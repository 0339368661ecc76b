//! `tls`: TLS to the node, over TCP for the first hop or over the stream earlier hops
//! opened to it.

use std::io;
use std::sync::Arc;

use futures::future::BoxFuture;
use pht_client::TransportOptions;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tracing::warn;

use super::{Dialer, NodeRef, Spec, dial_tcp};
use crate::listener::Stream;

pub(super) struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

pub(super) fn build(spec: &Spec<'_>) -> Result<Arc<dyn Dialer>, String> {
    // The node URL parser reads the same TLS keys (caFile, secure, serverName, pin...)
    // for every dialer; phts is the one whose URL has them all.
    let node = super::node_url(spec, "phts")?;
    let opts = TransportOptions::from_node(&node).map_err(|e| e.to_string())?;
    let tls = opts.tls.unwrap_or_default();
    let addr = &spec.node.addr;
    if !tls.verifies() {
        warn!(node = %addr, "TLS certificate verification is off (gost's default); set secure=true and caFile, or pin=sha256:<hex>");
    }
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    let cfg = tls.client_config(&[]).map_err(|e| e.to_string())?;
    Ok(Arc::new(Tls {
        connector: TlsConnector::from(Arc::new(cfg)),
        name: tls.sni(host).map_err(|e| e.to_string())?,
    }))
}

impl Dialer for Tls {
    fn dial<'a>(&'a self, node: NodeRef<'a>) -> BoxFuture<'a, io::Result<Box<dyn Stream>>> {
        Box::pin(async move {
            let tcp = dial_tcp(node.addr).await?;
            self.over(tcp, node).await
        })
    }

    fn over<'a>(
        &'a self,
        stream: Box<dyn Stream>,
        node: NodeRef<'a>,
    ) -> BoxFuture<'a, io::Result<Box<dyn Stream>>> {
        Box::pin(async move {
            let handshake = self.connector.connect(self.name.clone(), stream);
            let s = tokio::time::timeout(crate::router::DIAL_TIMEOUT, handshake)
                .await
                .map_err(|_| {
                    io::Error::other(format!(
                        "node {} ({}): TLS handshake timed out",
                        node.name, node.addr
                    ))
                })?
                .map_err(|e| {
                    io::Error::other(format!("node {} ({}): TLS: {e}", node.name, node.addr))
                })?;
            Ok(Box::new(s) as Box<dyn Stream>)
        })
    }
}
