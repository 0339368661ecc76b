//! `tcp`: a plain TCP connection to the node (gost's default dialer).

use std::io;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::net::TcpStream;

use super::{Dialer, NodeRef, Spec};
use crate::listener::Stream;

pub(super) struct Tcp;

pub(super) fn build(_spec: &Spec<'_>) -> Result<Arc<dyn Dialer>, String> {
    Ok(Arc::new(Tcp))
}

impl Dialer for Tcp {
    fn dial<'a>(&'a self, node: NodeRef<'a>) -> BoxFuture<'a, io::Result<Box<dyn Stream>>> {
        Box::pin(dial_tcp(node.addr))
    }
}

/// Connects to `addr` (`host:port`; an empty host means this machine, as in gost) within
/// [`crate::router::DIAL_TIMEOUT`], with TCP_NODELAY.
pub(crate) async fn dial_tcp(addr: &str) -> io::Result<Box<dyn Stream>> {
    let addr = if addr.starts_with(':') {
        format!("127.0.0.1{addr}")
    } else {
        addr.to_string()
    };
    let s = tokio::time::timeout(crate::router::DIAL_TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, format!("dial {addr}: timed out"))
        })??;
    let _ = s.set_nodelay(true);
    Ok(Box::new(s))
}
