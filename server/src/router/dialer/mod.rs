//! Dialers: how a chain reaches a node. The first hop of a route is dialled from this
//! machine; a later hop is reached through the previous node's connector, and its dialer
//! only adds what it layers over that stream (TLS). A new dialer type is one file here
//! and one line in the registry (`REGISTRY`).

mod pht;
mod tcp;
mod tls;

use std::io;
use std::sync::Arc;

use futures::future::BoxFuture;
use pht_core::NodeUrl;
use serde_json::Value;

use crate::config::{Metadata, NodeConfig, TlsConfig};
use crate::listener::Stream;
use crate::registry::Registry;

pub(crate) use tcp::dial_tcp;

/// The node a dialer serves, for its error messages.
pub(crate) struct NodeRef<'a> {
    pub name: &'a str,
    pub addr: &'a str,
}

/// Reaches one node. Built once from the node's configuration.
pub(crate) trait Dialer: Send + Sync {
    /// Opens a stream from this machine to the node.
    fn dial<'a>(&'a self, node: NodeRef<'a>) -> BoxFuture<'a, io::Result<Box<dyn Stream>>>;

    /// Makes `stream`, which already reaches the node's address through earlier hops, a
    /// stream to the node itself: TLS does its handshake; TCP adds nothing.
    fn over<'a>(
        &'a self,
        stream: Box<dyn Stream>,
        _node: NodeRef<'a>,
    ) -> BoxFuture<'a, io::Result<Box<dyn Stream>>> {
        Box::pin(async move { Ok(stream) })
    }

    /// True when the node is reached by HTTP requests (PHT): the hops before it carry its
    /// HTTP connections, so a route's stream starts at this node.
    fn carries_earlier_hops(&self) -> bool {
        false
    }
}

/// What a dialer is built from.
pub(crate) struct Spec<'a> {
    /// The dialer type as configured (one of the names its registry line lists).
    pub kind: &'a str,
    /// The node's connector type (`http` when empty), which a PHT node URL carries.
    pub connector: &'a str,
    pub node: &'a NodeConfig,
    /// For a node behind earlier hops: how each of its connections goes through them.
    pub via: Option<pht_client::Dial>,
}

/// Reads a dialer's options (parsed once, here); the error is the reason alone.
type Build = fn(&Spec<'_>) -> Result<Arc<dyn Dialer>, String>;

/// The dialer registry: each type's names (canonical first; `""` means `tcp`, as in gost)
/// and its builder.
const REGISTRY: Registry<Build> = Registry(&[
    (&["tcp", ""], tcp::build),
    (&["tls"], tls::build),
    (&["pht", "phts", "h3", "http3"], pht::build),
]);

/// Every dialer type name, for "supported: ..." messages.
pub(crate) fn supported() -> String {
    REGISTRY.supported()
}

/// Why a dialer could not be built.
pub(crate) enum BuildError {
    /// No such dialer type.
    Unsupported,
    /// The type exists; its options are wrong.
    Invalid(String),
}

/// Builds the dialer `spec.kind` names.
pub(crate) fn build(spec: &Spec<'_>) -> Result<Arc<dyn Dialer>, BuildError> {
    let build = REGISTRY.find(spec.kind).ok_or(BuildError::Unsupported)?;
    build(spec).map_err(BuildError::Invalid)
}

/// The node as a node URL of dialer type `as_kind`: the URL parser reads the TLS and PHT
/// keys the same way for every dialer.
fn node_url(spec: &Spec<'_>, as_kind: &str) -> Result<NodeUrl, String> {
    let params = dialer_params(&spec.node.dialer.metadata, spec.node.dialer.tls.as_ref());
    NodeUrl::from_parts(spec.connector, as_kind, &spec.node.addr, params).map_err(|e| e.to_string())
}

/// Dialer metadata and TLS block as node URL parameters; gost's `header` map becomes
/// `header.NAME`.
fn dialer_params(md: &Metadata, tls: Option<&TlsConfig>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(t) = tls {
        for (k, v) in [
            ("caFile", &t.ca_file),
            ("certFile", &t.cert_file),
            ("keyFile", &t.key_file),
            ("serverName", &t.server_name),
        ] {
            if !v.is_empty() {
                out.push((k.to_string(), v.clone()));
            }
        }
        if t.secure {
            out.push(("secure".into(), "true".into()));
        }
    }
    for (k, v) in &md.0 {
        match v {
            Value::Object(map) if k.eq_ignore_ascii_case("header") => {
                for (h, hv) in map {
                    if let Some(s) = hv.as_str() {
                        out.push((format!("header.{h}"), s.to_string()));
                    }
                }
            }
            _ => {
                if let Some(s) = md.get_str(k) {
                    out.push((k.clone(), s));
                }
            }
        }
    }
    out
}
