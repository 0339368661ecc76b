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
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use futures::future::poll_fn;
use futures::{AsyncRead, AsyncWrite, StreamExt};
use txq::TxQueue;

use crate::clock::{Clock, timeout};
use crate::codec::{PullDecoder, PullEvent, encode_push_body};
use crate::frame::{AuthorizeAnswer, Limits};
use crate::{
    BoxFuture, Error, Fetch, FetchResponse, PostBody, TokenMode, TunnelConfig, Version, mint_token,
};

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
    let known_v2 = (cfg.version != Version::V1)
        .then(|| known::get(&cfg))
        .flatten();
    let (token, plan) = match (cfg.token_mode, cfg.version, known_v2) {
        (_, Version::V1, _) if cfg.token_mode == TokenMode::Mint => (mint_token(), Plan::V1),
        // A PHT/2 server seen before: no authorize round trip, and the first push
        // carries the first bytes.
        (_, _, Some(limits)) => (mint_token(), Plan::V2(limits)),
        (TokenMode::Authorize, version, None) => {
            let answer = authorize(&fetch, &clock, &cfg).await?;
            let plan = match (answer.v2, version) {
                (_, Version::V1) => Plan::V1,
                (Some(limits), _) => {
                    known::remember(&cfg, &limits);
                    Plan::V2(limits)
                }
                (None, Version::Auto) => Plan::V1,
                (None, Version::V2) => return Err(Error::NoV2),
            };
            (answer.token, plan)
        }
        (TokenMode::Mint, _, None) => (mint_token(), Plan::Probe),
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            tx_cap: cfg.max_push_payload.max(1),
            ..State::default()
        }),
        recv_cap: cfg.recv_buffer.max(1),
    });
    let driver = TunnelDriver {
        fut: Box::pin(drive(
            fetch,
            clock,
            cfg,
            token.clone(),
            shared.clone(),
            plan,
        )),
    };
    Ok((Tunnel { shared, token }, driver))
}

/// How the driver learns the tunnel's version.
enum Plan {
    V1,
    V2(Limits),
    /// A minted token: the first pull asks for PHT/2 and its answer tells.
    Probe,
}

async fn authorize<F: Fetch, C: Clock>(
    fetch: &F,
    clock: &C,
    cfg: &TunnelConfig,
) -> Result<AuthorizeAnswer, Error> {
    let mut url = cfg.url(&cfg.authorize_path, None);
    if cfg.version != Version::V1 {
        // gost's servers ignore the query; ours answer with the PHT/2 offer.
        url.push_str("?v=2");
    }
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
    AuthorizeAnswer::parse(&text)
        .ok_or_else(|| Error::Authorize(text.trim().chars().take(80).collect()))
}

struct Shared {
    state: Mutex<State>,
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
    /// PHT/2: the tunnel survives cut requests and half-closes.
    v2: bool,
    /// PHT/2: download bytes received in order (the `ack` the client reports).
    rx_off: u64,
    /// PHT/2: the server's FIN arrived (the download is complete).
    fin_seen: bool,
    /// PHT/2: the download count at which the push side owes the server a pure
    /// acknowledgement (`u64::MAX` while one is on its way).
    ack_due: u64,
    /// PHT/2: what the push side is doing, for [`Tunnel::progress`].
    push_inflight: usize,
    push_window: usize,
    push_retries: usize,
    /// PHT/2: a request has succeeded. Before that, a failure ends the tunnel at once:
    /// there is nothing to resume, and a wrong certificate or address never heals.
    established: bool,
    // client → server
    /// PHT/1: bytes not sent yet. PHT/2: bytes not acknowledged yet, from `tx_acked` on.
    tx: TxQueue,
    /// Bytes the writer may queue in `tx`.
    tx_cap: usize,
    /// PHT/2: upload bytes the server has acknowledged.
    tx_acked: u64,
    /// PHT/2: where the upload ends, once the writer closed.
    fin_at: Option<u64>,
    /// PHT/2: a push carrying `fin=1` was answered 200, so the server knows where the
    /// upload ends. Acknowledgements of the bytes before it do not say that: the push
    /// with the fin may have been lost while an earlier one was answered.
    fin_delivered: bool,
    tx_inflight: bool,
    tx_err: Option<Error>,
    close_requested: bool,
    /// The application dropped the tunnel: nobody reads any more.
    dropped: bool,
    close_done: bool,
    /// PHT/2: the push with `close=1` is sent: the server ends the pull response when it
    /// arrives, and that end is the tunnel's, not a cut to resume from.
    close_sent: bool,
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
            .field("token", &crate::token_prefix(&self.token))
            .field("progress", &self.progress())
            .finish()
    }
}

/// Where a tunnel stands: for status pages, logs, and when something hangs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// 1 or 2 (see [`Tunnel::version`]).
    pub version: u8,
    /// Bytes the server sent that arrived, in order.
    pub received: u64,
    /// Bytes written that the server has taken.
    pub sent: u64,
    /// Bytes written and not yet taken by the server.
    pub queued: usize,
    /// The application closed its writing side; `write_closed`: the server has it all.
    pub write_closing: bool,
    pub write_closed: bool,
    /// The download has ended, in order (`Some(true)`) or as an error (`Some(false)`).
    pub read_ended: Option<bool>,
    /// PHT/2 pushes in flight, the window they may fill, and pushes waiting to be sent
    /// again.
    pub pushes_in_flight: usize,
    pub push_window: usize,
    pub push_retries: usize,
    /// Why the tunnel failed, once it has.
    pub error: Option<String>,
}

impl Tunnel {
    /// The tunnel's token (log only a prefix of it: it is the tunnel's only secret).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Where the tunnel stands now.
    ///
    /// ```no_run
    /// # fn f(t: &pht_core::Tunnel) {
    /// let p = t.progress();
    /// println!("PHT/{}: {} bytes in, {} out", p.version, p.received, p.sent);
    /// # }
    /// ```
    pub fn progress(&self) -> Progress {
        let st = self.shared.lock();
        Progress {
            version: if st.v2 { 2 } else { 1 },
            received: st.rx_off,
            sent: st.tx_acked,
            queued: st.tx.len(),
            write_closing: st.close_requested,
            write_closed: st.close_done,
            read_ended: st.rx_end.as_ref().map(|r| r.is_ok()),
            pushes_in_flight: st.push_inflight,
            push_window: st.push_window,
            push_retries: st.push_retries,
            error: st.tx_err.as_ref().map(|e| e.to_string()),
        }
    }

    /// The PHT version the tunnel speaks: `2` once its driver runs PHT/2, else `1`. A tunnel
    /// that minted its token for a server not yet seen speaking PHT/2 reads `1` until its
    /// first pull has answered.
    pub fn version(&self) -> u8 {
        if self.shared.lock().v2 { 2 } else { 1 }
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

impl Tunnel {
    /// The next received bytes, at most `max` (which must not be 0), as they arrived:
    /// the same as reading, without copying them into a buffer of the caller's. `None` is
    /// the clean end, after every byte.
    ///
    /// ```no_run
    /// # async fn f(t: pht_core::Tunnel) -> std::io::Result<()> {
    /// while let Some(bytes) = futures::future::poll_fn(|cx| t.poll_read_bytes(cx, 1 << 20)).await? {
    ///     println!("{} bytes", bytes.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn poll_read_bytes(
        &self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Option<Bytes>>> {
        let shared = &self.shared;
        let mut st = shared.lock();
        if let Some(front) = st.rx.front_mut() {
            let b = if front.len() <= max.max(1) {
                st.rx.pop_front().unwrap_or_default()
            } else {
                front.split_to(max.max(1))
            };
            st.rx_len -= b.len();
            if st.rx_len < shared.recv_cap {
                wake(&mut st.puller);
            }
            return Poll::Ready(Ok(Some(b)));
        }
        match &st.rx_end {
            Some(Ok(())) => Poll::Ready(Ok(None)),
            Some(Err(e)) => Poll::Ready(Err(e.clone().into())),
            None => {
                st.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Writes `data`'s bytes from its front, taking them without a copy where the
    /// upload queue keeps them as they are (large writes): the same as writing, for a
    /// caller that has its bytes as `Bytes` already. Pending only when no byte fits.
    pub fn poll_write_bytes(&self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>> {
        let n = ready!(self.poll_queue(cx, data.len(), |q, n| q.write_bytes(data.slice(..n))))?;
        bytes::Buf::advance(data, n);
        Poll::Ready(Ok(()))
    }

    /// Queues up to `len` bytes for upload through `put` (given the queue and how many
    /// fit); the count taken, or pending while the queue is full.
    fn poll_queue(
        &self,
        cx: &mut Context<'_>,
        len: usize,
        put: impl FnOnce(&mut TxQueue, usize),
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
            // PHT/1: the far end has finished and the server has forgotten the tunnel: like
            // a TCP peer that closed, take the bytes and drop them, so a reader still gets
            // the last words the far end sent (a refusal, say) instead of a write error
            // first. PHT/2 tunnels are half-closed then: the upload goes on.
            Some(Ok(())) if !st.v2 => return Poll::Ready(Ok(len)),
            Some(Err(e)) => return Poll::Ready(Err(e.clone().into())),
            _ => {}
        }
        let space = st.tx_cap.saturating_sub(st.tx.len());
        if space == 0 {
            st.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = space.min(len);
        put(&mut st.tx, n);
        wake(&mut st.pusher);
        Poll::Ready(Ok(n))
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        Poll::Ready(match ready!(self.poll_read_bytes(cx, buf.len())) {
            Ok(Some(b)) => {
                buf[..b.len()].copy_from_slice(&b);
                Ok(b.len())
            }
            Ok(None) => Ok(0),
            Err(e) => Err(e),
        })
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_queue(cx, buf.len(), |q, n| q.write(&buf[..n]))
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
        st.dropped = true;
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

/// A 413 made a tunnel halve its pushes: warn once per process, debug after that.
fn warn_shrink(refused: usize, smaller: usize) {
    if !SHRINK_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            refused,
            now = smaller,
            "a proxy refused a push body as too large (HTTP 413): sending smaller \
             pushes; set maxPushSize={smaller} on the node to skip the refusal"
        );
    }
    tracing::debug!(limit = smaller, "push refused with 413: halving");
}

async fn drive<F: Fetch, C: Clock>(
    fetch: F,
    clock: C,
    cfg: TunnelConfig,
    token: String,
    shared: Arc<Shared>,
    plan: Plan,
) {
    let ctx = Ctx {
        fetch: &fetch,
        clock: &clock,
        cfg: &cfg,
        token: &token,
        shared: &shared,
    };
    match plan {
        Plan::V1 => drive_v1(&ctx, None).await,
        Plan::V2(limits) => v2::drive(&ctx, limits, None).await,
        Plan::Probe => match v2::probe(&ctx).await {
            Ok(v2::Probed::V2(first)) => v2::drive(&ctx, Limits::default(), Some(first)).await,
            Ok(v2::Probed::V1(first)) => drive_v1(&ctx, Some(first)).await,
            Err(e) => {
                shared.fail(e);
                send_reset(&ctx).await;
            }
        },
    }
}

async fn drive_v1<F: Fetch, C: Clock>(ctx: &Ctx<'_, F, C>, first: Option<FetchResponse<F::Body>>) {
    let shared = ctx.shared;
    let mut push = Box::pin(push_loop(ctx));
    let mut pull = Box::pin(pull_loop(ctx, first));
    let first = poll_fn(|cx| {
        if let Poll::Ready(r) = push.as_mut().poll(cx) {
            return Poll::Ready(First::Push(r));
        }
        if let Poll::Ready(r) = pull.as_mut().poll(cx) {
            return Poll::Ready(First::Pull(r));
        }
        reset_or_wait(shared, cx).map(|()| First::Reset)
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
            send_reset(ctx).await;
        }
        First::Reset => {
            drop((push, pull));
            send_reset(ctx).await;
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
                reset_or_wait(shared, cx)
            })
            .await;
        }
    }
}

/// Waits while the reader is behind (or until a reset): the pull is not read meanwhile.
async fn reader_room(shared: &Shared) {
    poll_fn(|cx| {
        let mut st = shared.lock();
        if st.rx_len < shared.recv_cap || st.reset_requested {
            Poll::Ready(())
        } else {
            st.puller = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
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
    async fn post(&self, url: &str, body: PostBody) -> Result<(u16, Bytes), Error> {
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
    let mut url = ctx.cfg.url(&ctx.cfg.push_path, Some(ctx.token));
    let (v2, acked) = {
        let st = ctx.shared.lock();
        (st.v2, st.tx_acked)
    };
    if v2 {
        url.push_str(&format!("&v=2&seq={acked}"));
    }
    url.push('&');
    url.push_str(RESET_PARAM);
    let _ = ctx.post(&url, PostBody::default()).await;
}

/// How the push side ended.
enum PushEnd {
    /// The close request was sent.
    Closed,
    /// A push failed.
    Failed(Error),
}

enum PushJob {
    Data(Bytes),
    Close,
}

async fn push_loop<F: Fetch, C: Clock>(ctx: &Ctx<'_, F, C>) -> PushEnd {
    let shared = ctx.shared;
    let url = ctx.cfg.url(&ctx.cfg.push_path, Some(ctx.token));
    // Shrinks on 413: a proxy on the way refused the body size, and took none of it.
    let mut limit = shared.lock().tx_cap;
    let floor = ctx.cfg.min_push_payload.clamp(1, limit);
    loop {
        let job = poll_fn(|cx| {
            let mut st = shared.lock();
            if let Some(e) = &st.tx_err {
                return Poll::Ready(Err(e.clone()));
            }
            if !st.tx.is_empty() {
                let n = st.tx.len().min(limit);
                let data = st.tx.take_front(n);
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
                let _ = ctx.post(&url, PostBody::default()).await;
                let mut st = shared.lock();
                st.close_done = true;
                wake(&mut st.writer);
                return PushEnd::Closed;
            }
            Ok(PushJob::Data(data)) => data,
        };
        let body = Bytes::from(encode_push_body(&data));
        let res = ctx.post(&url, body.into()).await;
        let mut st = shared.lock();
        st.tx_inflight = false;
        let err = match res {
            Ok((200, _)) => {
                st.tx_acked += data.len() as u64;
                None
            }
            Ok((413, _)) if data.len() > floor => {
                let smaller = (data.len() / 2).max(floor);
                warn_shrink(data.len(), smaller);
                limit = smaller;
                // Nothing of the refused body was taken: send the same bytes again first.
                st.tx.put_back(data);
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

async fn pull_loop<F: Fetch, C: Clock>(
    ctx: &Ctx<'_, F, C>,
    mut first: Option<FetchResponse<F::Body>>,
) -> Result<(), Error> {
    let url = ctx.cfg.url(&ctx.cfg.pull_path, Some(ctx.token));
    let shared = ctx.shared;
    let (cfg, clock) = (ctx.cfg, ctx.clock);
    let fetch_err = |source| Error::Fetch {
        what: "pull",
        source,
    };
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let resp = match first.take() {
            Some(r) => r,
            None => timeout(
                clock,
                cfg.request_timeout,
                ctx.fetch.get(&url, &cfg.headers),
            )
            .await
            .map_err(|_| Error::Timeout {
                what: "pull",
                after: cfg.request_timeout,
            })?
            .map_err(fetch_err)?,
        };
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
                    st.rx_off += b.len() as u64;
                    st.rx.push_back(b);
                }
                wake(&mut st.reader);
            }
            // Backpressure: stop reading the response while the reader is behind.
            reader_room(shared).await;
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

mod known;
mod txq;
mod v2;

#[cfg(test)]
mod tests;
