//! The connection limit every listener applies (`maxConns`), so that a flood of idle
//! connections on one listener cannot take the descriptors the others need.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::config::{Metadata, MetadataError};

/// How often refusals are summed up in the log, instead of a line per refusal.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Says when a summary of refusals is due: at most once per [`REPORT_EVERY`], and at the
/// first refusal.
pub struct ReportTimer(Mutex<Instant>);

impl ReportTimer {
    pub fn new() -> Self {
        ReportTimer(Mutex::new(Instant::now() - REPORT_EVERY))
    }

    /// `true` (and the timer restarts) when a summary is due.
    pub fn due(&self) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.elapsed() >= REPORT_EVERY;
        if due {
            *last = Instant::now();
        }
        due
    }
}

impl Default for ReportTimer {
    fn default() -> Self {
        Self::new()
    }
}
/// Descriptors kept out of the derived limit.
const FD_HEADROOM: u64 = 256;

/// The default `maxConns`: half the descriptor limit, so one listener's flood leaves the
/// other half to everything else.
pub fn default_max_conns() -> usize {
    match pht_runtime::fd_limit() {
        Some(n) => (n.saturating_sub(FD_HEADROOM) / 2).max(16) as usize,
        None => 1_000_000,
    }
}

/// Admits connections up to a limit; beyond it, connections are reset at once.
pub struct Gate {
    permits: Arc<Semaphore>,
    max: usize,
    service: String,
    refused: AtomicU64,
    report: ReportTimer,
}

impl Gate {
    /// A gate for `service` with `maxConns` from listener metadata (`0`: no limit).
    pub fn from_metadata(md: &Metadata, service: &str) -> Result<Gate, MetadataError> {
        let max = md.get_size("maxConns")?.unwrap_or_else(default_max_conns);
        Ok(Gate::new(max, service))
    }

    pub fn new(max: usize, service: &str) -> Gate {
        let max = if max == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max.min(Semaphore::MAX_PERMITS)
        };
        Gate {
            permits: Arc::new(Semaphore::new(max)),
            max,
            service: service.to_string(),
            refused: AtomicU64::new(0),
            report: ReportTimer::new(),
        }
    }

    /// The connection with its share of the limit, or `None` (it was reset) when the
    /// listener is full.
    pub fn admit(&self, stream: TcpStream, peer: SocketAddr) -> Option<Guarded<TcpStream>> {
        match self.permit(peer) {
            Some(permit) => Some(Guarded {
                inner: stream,
                _permit: permit,
            }),
            None => {
                let _ = stream.set_zero_linger();
                None
            }
        }
    }

    /// A share of the limit for a connection from `peer` that is not a TCP stream (a
    /// QUIC connection), held until dropped; `None` (counted and reported) when full.
    pub fn permit(&self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                if self.report.due() {
                    self.refused.store(0, Ordering::Relaxed);
                    warn!(
                        service = %self.service, last_peer = %peer, refused = n, max_conns = self.max,
                        "connection limit reached: connections reset (count since the last report)"
                    );
                }
                None
            }
        }
    }
}

/// A connection holding its share of a listener's limit until it is dropped.
pub struct Guarded<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
}

impl Guarded<TcpStream> {
    /// The TCP stream, to peek at or to ask for addresses.
    pub fn tcp(&self) -> &TcpStream {
        &self.inner
    }
}

impl<S: pht_runtime::Reset> pht_runtime::Reset for Guarded<S> {
    fn reset(&mut self) {
        self.inner.reset();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn beyond_the_limit_connections_are_reset_and_a_freed_place_is_reused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let gate = Gate::new(1, "s");
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let (s1, p1) = l.accept().await.unwrap();
        let first = gate.admit(s1, p1).expect("room for one");
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let (s2, p2) = l.accept().await.unwrap();
        assert!(gate.admit(s2, p2).is_none());
        let e = c2.read(&mut [0u8; 1]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        drop(first);
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let (s3, p3) = l.accept().await.unwrap();
        assert!(gate.admit(s3, p3).is_some());
    }
}
