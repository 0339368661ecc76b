//! The PHT/1 tunnel: a byte stream for the caller, a driver future for its runtime.
//!
//! How a tunnel ends is never ambiguous: a clean end of the stream (`read` returning 0)
//! only when the server ended the pull response in order; every failure (a broken pull or
//! push, a refused request, a missed deadline, silence past `heartbeatTimeout`) is a read
//! and write error, and the server is told with a reset request so it resets the far end.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use futures::future::poll_fn;
use futures::{AsyncRead, AsyncWrite, StreamExt};

use crate::clock::{Clock, timeout};
use crate::codec::{PullDecoder, PullEvent, encode_push_body};
use crate::{BoxFuture, Error, Fetch, TokenMode, TunnelConfig, mint_token};

/// Longest authorize answer read; gost's is 26 bytes.
const MAX_AUTHORIZE_BODY: usize = 4096;

/// Query parameter of this project's reset request: an empty push with it aborts the
/// tunnel on our server (the far end sees a reset). gost servers read the same request as
/// their ordinary close (an empty push body), so it is safe to send to any PHT/1 server.
pub const RESET_PARAM: &str = "rst=1";

/// Opens a tunnel: gets a token (authorize round trip or local mint, per
/// [`TunnelConfig::token_mode`]) and returns the byte stream and the future that moves it.
///
/// The driver must be polled (spawned) for any byte to move. It finishes by itself once
/// the tunnel is closed, reset or dropped and the last request has been sent, or when the
/// server ends the tunnel and the [`Tunnel`] is dropped. `clock` times every request
/// (`requestTimeout`) and watches the pull for silence (`heartbeatTimeout`).
pub async fn open<F: Fetch, C: Clock>(
    fetch: F,
    clock: C,
    cfg: TunnelConfig,
) -> Result<(Tunnel, TunnelDriver), Error> {
    let token = match cfg.token_mode {
        TokenMode::Authorize => authorize(&fetch, &clock, &cfg).await?,
        TokenMode::Mint => mint_token(),
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        max_push: cfg.max_push_payload.max(1),
        recv_cap: cfg.recv_buffer.max(1),
    });
    let driver = TunnelDriver {
        fut: Box::pin(drive(fetch, clock, cfg, token.clone(), shared.clone())),
    };
    Ok((Tunnel { shared, token }, driver))
}

async fn authorize<F: Fetch, C: Clock>(
    fetch: &F,
    clock: &C,
    cfg: &TunnelConfig,
) -> Result<String, Error> {
    let url = cfg.url(&cfg.authorize_path, None);
    let fetch_err = |source| Error::Fetch {
        what: "authorize",
        source,
    };
    let exchange = async {
        let mut resp = fetch.get(&url, &cfg.headers).await.map_err(fetch_err)?;
        if resp.status != 200 {
            return Err(Error::Status {
                what: "authorize",
                status: resp.status,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.body.next().await {
            body.extend_from_slice(&chunk.map_err(fetch_err)?);
            if body.len() > MAX_AUTHORIZE_BODY {
                break;
            }
        }
        Ok(body)
    };
    let body = timeout(clock, cfg.request_timeout, exchange)
        .await
        .map_err(|_| Error::Timeout {
            what: "authorize",
            after: cfg.request_timeout,
        })??;
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    // PHT/2 servers may append `&key=value` pairs after the token.
    match text
        .strip_prefix("token=")
        .map(|t| t.split('&').next().unwrap_or(""))
    {
        Some(token) if !token.is_empty() => Ok(token.to_string()),
        _ => Err(Error::Authorize(text.chars().take(80).collect())),
    }
}

struct Shared {
    state: Mutex<State>,
    max_push: usize,
    recv_cap: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the tunnel as failed (first cause wins) and wakes everyone to see it.
    fn fail(&self, e: Error) {
        let mut st = self.lock();
        if st.tx_err.is_none() {
            st.tx_err = Some(e.clone());
        }
        if !matches!(st.rx_end, Some(Err(_))) {
            st.rx_end = Some(Err(e));
        }
        st.wake_all();
    }
}

#[derive(Default)]
struct State {
    // server → client
    rx: VecDeque<Bytes>,
    rx_len: usize,
    rx_end: Option<Result<(), Error>>,
    reader: Option<Waker>,
    puller: Option<Waker>,
    // client → server
    tx: BytesMut,
    tx_inflight: bool,
    tx_err: Option<Error>,
    close_requested: bool,
    close_done: bool,
    reset_requested: bool,
    writer: Option<Waker>,
    pusher: Option<Waker>,
    /// The driver waits here for a close or reset from the application.
    driver: Option<Waker>,
}

impl State {
    fn wake_all(&mut self) {
        for w in [
            self.reader.take(),
            self.writer.take(),
            self.puller.take(),
            self.pusher.take(),
            self.driver.take(),
        ]
        .into_iter()
        .flatten()
        {
            w.wake();
        }
    }
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

/// One PHT tunnel as a byte stream (`futures::io::AsyncRead + AsyncWrite`).
///
/// Writes are buffered: `poll_write` returns once the bytes are queued for the next push
/// POST, `poll_flush` once every queued byte has been accepted by the server, and
/// `poll_close` once the close request has been sent. Dropping the tunnel closes it too;
/// [`Tunnel::reset`] ends it as an error instead.
///
/// Reads return `Ok(0)` only after a clean end: the server finished the pull in order.
/// A broken tunnel is an error (`ConnectionReset`, `TimedOut`, `ConnectionRefused`...)
/// once the bytes that did arrive have been read.
pub struct Tunnel {
    shared: Arc<Shared>,
    token: String,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("token", &self.token)
            .finish()
    }
}

impl Tunnel {
    /// The tunnel's token (log only a prefix of it: it is the tunnel's only secret).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Ends the tunnel as an error, the way a TCP reset ends a connection: queued bytes
    /// are dropped, the pull is cancelled, and the server is sent a reset request, so the
    /// far end sees a reset rather than a clean end. Used when the local side of a
    /// forwarded connection broke.
    pub fn reset(&self) {
        let mut st = self.shared.lock();
        st.reset_requested = true;
        st.tx.clear();
        if st.tx_err.is_none() {
            st.tx_err = Some(Error::Aborted);
        }
        if st.rx_end.is_none() {
            st.rx_end = Some(Err(Error::Aborted));
        }
        st.wake_all();
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let shared = &self.shared;
        let mut st = shared.lock();
        if let Some(front) = st.rx.front_mut() {
            let n = buf.len().min(front.len());
            buf[..n].copy_from_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                st.rx.pop_front();
            }
            st.rx_len -= n;
            if st.rx_len < shared.recv_cap {
                wake(&mut st.puller);
            }
            return Poll::Ready(Ok(n));
        }
        match &st.rx_end {
            Some(Ok(())) => Poll::Ready(Ok(0)),
            Some(Err(e)) => Poll::Ready(Err(e.clone().into())),
            None => {
                st.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let shared = &self.shared;
        let mut st = shared.lock();
        if let Some(e) = &st.tx_err {
            return Poll::Ready(Err(e.clone().into()));
        }
        if st.close_requested {
            return Poll::Ready(Err(Error::Closed.into()));
        }
        match &st.rx_end {
            // The far end has finished and the server has forgotten the tunnel: like a TCP
            // peer that closed, take the bytes and drop them, so a reader still gets the
            // last words the far end sent (a refusal, say) instead of a write error first.
            Some(Ok(())) => return Poll::Ready(Ok(buf.len())),
            Some(Err(e)) => return Poll::Ready(Err(e.clone().into())),
            None => {}
        }
        let space = shared.max_push.saturating_sub(st.tx.len());
        if space == 0 {
            st.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = space.min(buf.len());
        st.tx.extend_from_slice(&buf[..n]);
        wake(&mut st.pusher);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if let Some(e) = &st.tx_err {
            return Poll::Ready(Err(e.clone().into()));
        }
        if st.tx.is_empty() && !st.tx_inflight {
            return Poll::Ready(Ok(()));
        }
        st.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if !st.close_requested {
            st.close_requested = true;
            wake(&mut st.pusher);
            wake(&mut st.driver);
        }
        // After a failure there is nothing left to close cleanly.
        if let Some(e) = &st.tx_err {
            return Poll::Ready(Err(e.clone().into()));
        }
        if st.close_done {
            return Poll::Ready(Ok(()));
        }
        st.writer = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.close_requested = true;
        wake(&mut st.pusher);
        wake(&mut st.driver);
    }
}

/// The future that carries a tunnel's HTTP requests; spawn it on the caller's runtime.
#[must_use = "a tunnel moves no bytes unless its driver is polled"]
pub struct TunnelDriver {
    fut: BoxFuture<'static, ()>,
}

impl Future for TunnelDriver {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.fut.as_mut().poll(cx)
    }
}

/// Whatever ended the first of the tunnel's activities.
enum First {
    Push(PushEnd),
    Pull(Result<(), Error>),
    Reset,
}

/// Logged once per process: later tunnels shrink their pushes the same way.
static SHRINK_LOGGED: AtomicBool = AtomicBool::new(false);

async fn drive<F: Fetch, C: Clock>(
    fetch: F,
    clock: C,
    cfg: TunnelConfig,
    token: String,
    shared: Arc<Shared>,
) {
    let ctx = Ctx {
        fetch: &fetch,
        clock: &clock,
        cfg: &cfg,
        token: &token,
        shared: &shared,
    };
    let mut push = Box::pin(push_loop(&ctx));
    let mut pull = Box::pin(pull_loop(&ctx));
    let first = poll_fn(|cx| {
        if let Poll::Ready(r) = push.as_mut().poll(cx) {
            return Poll::Ready(First::Push(r));
        }
        if let Poll::Ready(r) = pull.as_mut().poll(cx) {
            return Poll::Ready(First::Pull(r));
        }
        reset_or_wait(&shared, cx).map(|()| First::Reset)
    })
    .await;
    match first {
        // Closed by this side: the pull request is cancelled by dropping it.
        First::Push(PushEnd::Closed) => {
            let mut st = shared.lock();
            if st.rx_end.is_none() {
                st.rx_end = Some(Ok(()));
            }
            st.wake_all();
        }
        // The server has ended the tunnel already (its handler finished): what the far
        // end sent last (a refusal, say) may still be on its way down. Keep pulling until
        // the pull ends, then report the refused push.
        First::Push(PushEnd::Failed(e @ Error::Status { status: 410, .. })) => {
            let pulled = poll_fn(|cx| {
                if let Poll::Ready(r) = pull.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                let mut st = shared.lock();
                if st.close_requested || st.reset_requested {
                    return Poll::Ready(None);
                }
                st.driver = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            match pulled {
                Some(Err(pull_err)) => shared.fail(pull_err),
                _ => shared.fail(e),
            }
        }
        First::Push(PushEnd::Failed(e)) | First::Pull(Err(e)) => {
            shared.fail(e);
            // Cancel the pull first: on our server that alone resets the far end.
            drop((push, pull));
            send_reset(&ctx).await;
        }
        First::Reset => {
            drop((push, pull));
            send_reset(&ctx).await;
        }
        // The far end finished in order. Writes from now on are dropped like a closed TCP
        // peer's; the push side still sends what was queued and, later, the close request.
        First::Pull(Ok(())) => {
            {
                let mut st = shared.lock();
                if st.rx_end.is_none() {
                    st.rx_end = Some(Ok(()));
                }
                st.wake_all();
            }
            poll_fn(|cx| {
                if push.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                reset_or_wait(&shared, cx)
            })
            .await;
        }
    }
}

fn reset_or_wait(shared: &Shared, cx: &mut Context<'_>) -> Poll<()> {
    let mut st = shared.lock();
    if st.reset_requested {
        Poll::Ready(())
    } else {
        st.driver = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// What every part of the driver needs.
struct Ctx<'a, F, C> {
    fetch: &'a F,
    clock: &'a C,
    cfg: &'a TunnelConfig,
    token: &'a str,
    shared: &'a Shared,
}

impl<F: Fetch, C: Clock> Ctx<'_, F, C> {
    /// A POST to the push path with its deadline.
    async fn post(&self, url: &str, body: Bytes) -> Result<(u16, Bytes), Error> {
        let limit = self.cfg.request_timeout;
        timeout(
            self.clock,
            limit,
            self.fetch.post(url, &self.cfg.headers, body),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: "push",
            after: limit,
        })?
        .map_err(|source| Error::Fetch {
            what: "push",
            source,
        })
    }
}

/// Tells the server the tunnel failed, so it resets the far end instead of closing it.
/// Best effort: the server may be unreachable, which is why the tunnel failed.
async fn send_reset<F: Fetch, C: Clock>(ctx: &Ctx<'_, F, C>) {
    let url = format!(
        "{}&{RESET_PARAM}",
        ctx.cfg.url(&ctx.cfg.push_path, Some(ctx.token))
    );
    let _ = ctx.post(&url, Bytes::new()).await;
}

/// How the push side ended.
enum PushEnd {
    /// The close request was sent.
    Closed,
    /// A push failed.
    Failed(Error),
}

enum PushJob {
    Data(BytesMut),
    Close,
}

async fn push_loop<F: Fetch, C: Clock>(ctx: &Ctx<'_, F, C>) -> PushEnd {
    let shared = ctx.shared;
    let url = ctx.cfg.url(&ctx.cfg.push_path, Some(ctx.token));
    // Shrinks on 413: a proxy on the way refused the body size, and took none of it.
    let mut limit = shared.max_push;
    let floor = ctx.cfg.min_push_payload.clamp(1, limit);
    loop {
        let job = poll_fn(|cx| {
            let mut st = shared.lock();
            if let Some(e) = &st.tx_err {
                return Poll::Ready(Err(e.clone()));
            }
            if !st.tx.is_empty() {
                let n = st.tx.len().min(limit);
                let data = st.tx.split_to(n);
                st.tx_inflight = true;
                wake(&mut st.writer);
                return Poll::Ready(Ok(PushJob::Data(data)));
            }
            if st.close_requested {
                return Poll::Ready(Ok(PushJob::Close));
            }
            st.pusher = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let data = match job {
            Err(e) => return PushEnd::Failed(e),
            Ok(PushJob::Close) => {
                // The server may have forgotten the token already; any answer will do.
                let _ = ctx.post(&url, Bytes::new()).await;
                let mut st = shared.lock();
                st.close_done = true;
                wake(&mut st.writer);
                return PushEnd::Closed;
            }
            Ok(PushJob::Data(data)) => data,
        };
        let body = Bytes::from(encode_push_body(&data));
        let res = ctx.post(&url, body).await;
        let mut st = shared.lock();
        st.tx_inflight = false;
        let err = match res {
            Ok((200, _)) => None,
            Ok((413, _)) if limit > floor => {
                let smaller = (limit / 2).max(floor);
                if !SHRINK_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        refused = data.len(),
                        now = smaller,
                        "a proxy refused a push body as too large (HTTP 413): sending smaller \
                         pushes; set maxPushSize={smaller} on the node to skip the refusal"
                    );
                }
                tracing::debug!(limit = smaller, "push refused with 413: halving");
                limit = smaller;
                // Nothing of the refused body was taken: send the same bytes again first.
                let mut again = data;
                again.extend_from_slice(&st.tx);
                st.tx = again;
                st.tx_inflight = true;
                None
            }
            Ok((status, _)) => Some(Error::Status {
                what: "push",
                status,
            }),
            Err(e) => Some(e),
        };
        wake(&mut st.writer);
        if let Some(e) = err {
            if st.tx_err.is_none() {
                st.tx_err = Some(e.clone());
            }
            return PushEnd::Failed(e);
        }
    }
}

async fn pull_loop<F: Fetch, C: Clock>(ctx: &Ctx<'_, F, C>) -> Result<(), Error> {
    let url = ctx.cfg.url(&ctx.cfg.pull_path, Some(ctx.token));
    let shared = ctx.shared;
    let (cfg, clock) = (ctx.cfg, ctx.clock);
    let fetch_err = |source| Error::Fetch {
        what: "pull",
        source,
    };
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let resp = timeout(
            clock,
            cfg.request_timeout,
            ctx.fetch.get(&url, &cfg.headers),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: "pull",
            after: cfg.request_timeout,
        })?
        .map_err(fetch_err)?;
        if resp.status != 200 {
            return Err(Error::Status {
                what: "pull",
                status: resp.status,
            });
        }
        let mut body = resp.body;
        let mut decoder = PullDecoder::new(cfg.max_pull_line);
        let mut lines = 0usize;
        let mut last_was_heartbeat = false;
        loop {
            // The server sends a line at least every heartbeat; silence past the limit
            // means the path is dead even if no connection says so.
            let chunk = match timeout(clock, cfg.heartbeat_timeout, body.next()).await {
                Err(_) => {
                    return Err(Error::Silent {
                        after: cfg.heartbeat_timeout,
                    });
                }
                Ok(None) => break,
                Ok(Some(chunk)) => chunk.map_err(fetch_err)?,
            };
            decoder.feed(&chunk, &mut |ev| {
                lines += 1;
                match ev {
                    PullEvent::Data(b) => {
                        last_was_heartbeat = false;
                        batch.push(b);
                    }
                    PullEvent::Heartbeat => last_was_heartbeat = true,
                }
            })?;
            if !batch.is_empty() {
                let mut st = shared.lock();
                for b in batch.drain(..) {
                    st.rx_len += b.len();
                    st.rx.push_back(b);
                }
                wake(&mut st.reader);
            }
            // Backpressure: stop reading the response while the reader is behind.
            poll_fn(|cx| {
                let mut st = shared.lock();
                if st.rx_len < shared.recv_cap || st.reset_requested {
                    Poll::Ready(())
                } else {
                    st.puller = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
        }
        decoder.finish()?;
        // Stable gost ends each pull after an idle heartbeat (long poll): ask again.
        // A response ending after data, or with nothing at all, is the end of the tunnel.
        if lines > 0 && last_was_heartbeat {
            continue;
        }
        return Ok(());
    }
}

#[cfg(test)]
mod tests;
