//! TLS over TCP: the handler gets the decrypted stream.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{
    Accepted, Bound, DEFAULT_HANDSHAKE_TIMEOUT, Gate, ListenError, Prepared, QueuedListener, Spec,
    StopAccepting, accept_tcp,
};

/// A tls listener's options: certificate, `maxConns`, `handshakeTimeout`.
struct Plan {
    addr: String,
    acceptor: TlsAcceptor,
    gate: Gate,
    handshake: Duration,
}

pub(super) fn prepare(spec: &Spec<'_>) -> Result<Box<dyn Prepared>, ListenError> {
    let md = &spec.cfg.metadata;
    Ok(Box::new(Plan {
        addr: spec.addr.to_string(),
        acceptor: super::server_tls(spec, &[])?.into(),
        gate: Gate::from_metadata(md, spec.service)?,
        handshake: md
            .get_duration("handshakeTimeout")?
            .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
    }))
}

impl Prepared for Plan {
    fn bind(self: Box<Self>, shutdown: CancellationToken) -> Bound {
        Box::pin(async move {
            let Plan {
                addr,
                acceptor,
                gate,
                handshake,
            } = *self;
            let l = bind(&addr, acceptor, gate, handshake, shutdown).await?;
            Ok(Box::new(l) as _)
        })
    }
}

/// Connections handshaken but not yet taken by the handler.
const QUEUE: usize = 128;

/// Binds `addr`; handshakes run in their own tasks, so one slow client delays nobody.
async fn bind(
    addr: &str,
    acceptor: TlsAcceptor,
    gate: Gate,
    handshake: Duration,
    shutdown: CancellationToken,
) -> Result<QueuedListener, ListenError> {
    let tcp = super::bind_tcp(addr).await?;
    let local = tcp.local_addr().map_err(|source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let stop = shutdown.child_token();
    let accepting = stop.clone();
    tokio::spawn(async move {
        // The socket closes when the loop ends (drain or shutdown).
        while let Some((stream, peer)) = accept_tcp(&tcp, &gate, &accepting).await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            let local = stream.tcp().local_addr().ok();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let conn = Accepted {
                            stream: Box::new(s),
                            peer,
                            tag: None,
                            local,
                        };
                        let _ = tx.send(conn).await;
                    }
                    Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    Ok(QueuedListener::new(rx, local, "tls").with_drain(std::sync::Arc::new(StopAccepting(stop))))
}
