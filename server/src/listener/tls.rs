//! TLS over TCP: the handler gets the decrypted stream.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Accepted, ListenError, Listener};

/// Time a client gets for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken but not yet taken by the handler.
const QUEUE: usize = 128;

pub struct TlsListener {
    rx: mpsc::Receiver<Accepted>,
    local: SocketAddr,
}

impl TlsListener {
    /// Handshakes run in their own tasks, so one slow client delays nobody.
    pub async fn bind(
        addr: &str,
        acceptor: TlsAcceptor,
        shutdown: CancellationToken,
    ) -> Result<Self, ListenError> {
        let tcp = super::bind_tcp(addr).await?;
        let local = tcp.local_addr().map_err(|source| ListenError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            debug!("tls accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                let local = stream.local_addr().ok();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = tx
                                .send(Accepted {
                                    stream: Box::new(s),
                                    peer,
                                    tag: None,
                                    local,
                                })
                                .await;
                        }
                        Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl Listener for TlsListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Accepted>> {
        Box::pin(async move {
            self.rx
                .recv()
                .await
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "tls listener closed"))
        })
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}
