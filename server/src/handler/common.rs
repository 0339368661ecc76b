//! Pieces shared by the proxy handlers: options, timeouts, stream wrappers, logging.

use pht_runtime::Reset;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::info;

use super::HandlerError;
use super::auth::{self, Authenticator};
use crate::access::Bypass;
use crate::config::{Metadata, MetadataError, ServiceConfig};
use crate::listener::Stream;
use crate::router::Router;

/// gost's default for `readTimeout`: how long a client may take to send its request.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// What every proxy handler of a service shares.
pub struct Common {
    pub service: String,
    pub kind: String,
    pub router: Router,
    pub auth: Option<Arc<dyn Authenticator>>,
    /// Limit for reading the client's handshake/request; `None` = no limit.
    pub read_timeout: Option<Duration>,
    pub metadata: Metadata,
    /// The service's bypass lists: destinations it refuses.
    pub bypass: Option<Arc<Bypass>>,
    /// gost's `retries`: how many more times [`Common::dial`] tries a target after a
    /// failed dial (each try routes afresh through the chain's selectors).
    pub retries: u32,
}

/// The handler's `retries`: gost's `handler.retries`, else `retries` in its metadata (where
/// the command line's `?retries=N` puts it); 0 or less is no retry, as in gost.
pub fn retries(svc: &ServiceConfig) -> Result<u32, HandlerError> {
    let n = match svc.handler.retries {
        Some(n) => n,
        None => svc
            .handler
            .metadata
            .get_int("retries")
            .map_err(|error| HandlerError::Option {
                kind: svc.handler.kind.clone(),
                error,
            })?
            .unwrap_or(0),
    };
    Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

impl Common {
    pub fn new(svc: &ServiceConfig, router: Router) -> Result<Self, HandlerError> {
        let mut c = Common {
            service: svc.name.clone(),
            kind: svc.handler.kind.clone(),
            router,
            auth: auth::for_service(svc),
            read_timeout: Some(DEFAULT_READ_TIMEOUT),
            metadata: svc.handler.metadata.clone(),
            bypass: svc.bypass_rules.get().cloned(),
            retries: retries(svc)?,
        };
        c.read_timeout = c.timeout("readTimeout", DEFAULT_READ_TIMEOUT)?;
        Ok(c)
    }

    fn invalid(&self, e: MetadataError) -> HandlerError {
        HandlerError::Option {
            kind: self.kind.clone(),
            error: e,
        }
    }

    /// Connects to `target` through the router, trying `retries` more times after a failed
    /// dial (see [`Router::dial_retrying`]).
    pub async fn dial(&self, target: &str) -> io::Result<Box<dyn Stream>> {
        self.router
            .dial_retrying(target, self.retries, &self.service)
            .await
    }

    /// Whether the service refuses `target` (its bypass lists match it). Logged by the
    /// caller, with the protocol's refusal.
    pub fn refuses(&self, target: &str) -> bool {
        self.bypass.as_ref().is_some_and(|b| b.contains(target))
    }

    /// A boolean option (default false).
    pub fn flag(&self, key: &str) -> Result<bool, HandlerError> {
        Ok(self
            .metadata
            .get_bool(key)
            .map_err(|e| self.invalid(e))?
            .unwrap_or(false))
    }

    /// A text option.
    pub fn text(&self, key: &str) -> Option<String> {
        self.metadata.get_str(key)
    }

    /// A timeout option: absent → `default`; zero or negative → no limit.
    pub fn timeout(&self, key: &str, default: Duration) -> Result<Option<Duration>, HandlerError> {
        match self.metadata.get_str(key) {
            None => Ok(Some(default)),
            Some(v) if v.trim().starts_with('-') => Ok(None),
            Some(_) => {
                let d = self
                    .metadata
                    .get_duration(key)
                    .map_err(|e| self.invalid(e))?;
                Ok(d.filter(|d| !d.is_zero()))
            }
        }
    }

    /// Whether these credentials may use the service (always, without an authenticator).
    pub fn authenticate(&self, username: &str, password: &str) -> bool {
        self.auth
            .as_ref()
            .is_none_or(|a| a.authenticate(username, password))
    }

    /// Logs the end of a connection: one info line.
    #[allow(clippy::too_many_arguments)]
    pub fn log_done(
        &self,
        peer: SocketAddr,
        tag: &str,
        target: &str,
        input: u64,
        output: u64,
        started: Instant,
        err: Option<io::Error>,
    ) {
        crate::metrics::transfer(&self.service, input, output);
        info!(
            service = %self.service, handler = %self.kind, %peer, token = tag, %target,
            input_bytes = input, output_bytes = output,
            duration = ?started.elapsed(),
            error = err.map(|e| e.to_string()),
            "{peer} >< {target}"
        );
    }

    /// The end every proxy handler shares once its target is connected: send the
    /// protocol's success `reply`, splice the two streams, log the outcome.
    pub async fn reply_and_splice(
        &self,
        stream: &mut Box<dyn Stream>,
        upstream: &mut Box<dyn Stream>,
        reply: &[u8],
        conn: (SocketAddr, &str, &str),
        started: Instant,
    ) {
        let (peer, tag, target) = conn;
        if let Err(e) = send(stream, reply).await {
            upstream.reset();
            self.log_done(peer, tag, target, 0, 0, started, Some(e));
            return;
        }
        tracing::debug!(service = %self.service, %peer, token = tag, "{peer} <-> {target}");
        // Either side failing resets both: no peer takes a failure for a clean end.
        let (stats, err) = pht_runtime::splice(stream, upstream).await;
        self.log_done(peer, tag, target, stats.a_to_b, stats.b_to_a, started, err);
    }
}

/// Runs `fut` within `limit`; running out of time is a `TimedOut` error.
pub async fn within<T>(
    limit: Option<Duration>,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match limit {
        None => fut.await,
        Some(d) => tokio::time::timeout(d, fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request read timed out"))?,
    }
}

/// Writes a complete protocol message and flushes it, so it leaves as its own segment.
pub async fn send<S: AsyncWrite + Unpin + ?Sized>(s: &mut S, bytes: &[u8]) -> io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}

/// Writes a final message and closes the write side (errors ignored: the peer may be gone).
pub async fn send_and_close<S: AsyncWrite + Unpin + ?Sized>(s: &mut S, bytes: &[u8]) {
    let _ = send(s, bytes).await;
    let _ = s.shutdown().await;
}

/// A stream that first replays bytes already read from it (a sniffed byte, or data that
/// arrived behind a request head).
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: impl Into<Bytes>, inner: S) -> Self {
        Rewind {
            prefix: prefix.into(),
            inner,
        }
    }
}

impl<S: Reset> Reset for Rewind<S> {
    fn reset(&mut self) {
        self.inner.reset();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Byte counters shared with a [`Counted`] stream.
#[derive(Clone, Default)]
pub struct Counters {
    pub read: Arc<AtomicU64>,
    pub written: Arc<AtomicU64>,
}

impl Counters {
    pub fn get(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }
}

/// A stream that counts the bytes read from and written to it.
pub struct Counted<S> {
    inner: S,
    counters: Counters,
}

impl<S> Counted<S> {
    pub fn new(inner: S) -> (Self, Counters) {
        let counters = Counters::default();
        (
            Counted {
                inner,
                counters: counters.clone(),
            },
            counters,
        )
    }
}

impl<S: Reset> Reset for Counted<S> {
    fn reset(&mut self) {
        self.inner.reset();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        this.counters.read.fetch_add(n as u64, Ordering::Relaxed);
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.counters.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn rewind_replays_then_reads_on() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"world").await.unwrap();
        drop(a);
        let mut r = Rewind::new(&b"hello "[..], b);
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }

    #[test]
    fn timeouts() {
        let mut svc = ServiceConfig::default();
        let c = Common::new(&svc, Router::direct()).unwrap();
        assert_eq!(c.read_timeout, Some(DEFAULT_READ_TIMEOUT));
        svc.handler.metadata.insert("readtimeout", "2s");
        let c = Common::new(&svc, Router::direct()).unwrap();
        assert_eq!(c.read_timeout, Some(Duration::from_secs(2)));
        svc.handler.metadata.insert("readtimeout", "-1s");
        assert_eq!(
            Common::new(&svc, Router::direct()).unwrap().read_timeout,
            None
        );
        svc.handler.metadata.insert("readtimeout", "0");
        assert_eq!(
            Common::new(&svc, Router::direct()).unwrap().read_timeout,
            None
        );
        svc.handler.metadata.insert("readtimeout", "soon");
        assert!(Common::new(&svc, Router::direct()).is_err());
    }
}
