//! `pht`, `phts`, `h3` (`http3`): a PHT tunnel per connection, over an HTTP client the
//! node's connections share (pooled HTTP/1.1 or HTTP/2, or one QUIC connection).

use std::io;
use std::sync::Arc;

use futures::future::BoxFuture;
use pht_client::HyperFetch;
use pht_core::NodeUrl;

use super::{Dialer, NodeRef, Spec};
use crate::listener::Stream;

pub(super) struct Pht {
    fetch: HyperFetch,
    url: NodeUrl,
}

pub(super) fn build(spec: &Spec<'_>) -> Result<Arc<dyn Dialer>, String> {
    let url = super::node_url(spec, spec.kind)?;
    let fetch = HyperFetch::for_node_via(&url, spec.via.clone()).map_err(|e| e.to_string())?;
    Ok(Arc::new(Pht { fetch, url }))
}

impl Dialer for Pht {
    fn dial<'a>(&'a self, node: NodeRef<'a>) -> BoxFuture<'a, io::Result<Box<dyn Stream>>> {
        Box::pin(async move {
            let s = pht_client::connect_with(&self.fetch, &self.url)
                .await
                .map_err(|e| {
                    io::Error::other(format!("node {} ({}): {e}", node.name, node.addr))
                })?;
            Ok(Box::new(s) as Box<dyn Stream>)
        })
    }

    fn carries_earlier_hops(&self) -> bool {
        true
    }
}
