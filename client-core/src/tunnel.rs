//! The PHT/1 tunnel: a byte stream for the caller, a driver future for its runtime.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use futures::future::{Either, poll_fn, select};
use futures::{AsyncRead, AsyncWrite, StreamExt};

use crate::codec::{PullDecoder, PullEvent, encode_push_body};
use crate::{BoxFuture, Error, Fetch, TokenMode, TunnelConfig, mint_token};

/// Longest authorize answer read; gost's is 26 bytes.
const MAX_AUTHORIZE_BODY: usize = 4096;

/// Opens a tunnel: gets a token (authorize round trip or local mint, per
/// [`TunnelConfig::token_mode`]) and returns the byte stream and the future that moves it.
///
/// The driver must be polled (spawned) for any byte to move. It finishes by itself once
/// the tunnel is closed or dropped and the close request has been sent, or when the
/// server ends the tunnel and the [`Tunnel`] is dropped.
pub async fn open<F: Fetch>(fetch: F, cfg: TunnelConfig) -> Result<(Tunnel, TunnelDriver), Error> {
    let token = match cfg.token_mode {
        TokenMode::Authorize => authorize(&fetch, &cfg).await?,
        TokenMode::Mint => mint_token(),
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        max_push: cfg.max_push_payload.max(1),
        recv_cap: cfg.recv_buffer.max(1),
    });
    let driver = TunnelDriver {
        fut: Box::pin(drive(fetch, cfg, token.clone(), shared.clone())),
    };
    Ok((Tunnel { shared, token }, driver))
}

async fn authorize<F: Fetch>(fetch: &F, cfg: &TunnelConfig) -> Result<String, Error> {
    let url = cfg.url(&cfg.authorize_path, None);
    let fetch_err = |source| Error::Fetch {
        what: "authorize",
        source,
    };
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
    writer: Option<Waker>,
    pusher: Option<Waker>,
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
/// `poll_close` once the close request has been sent. Dropping the tunnel closes it too.
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
        }
        // After a failed push there is nothing left to close cleanly.
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

async fn drive<F: Fetch>(fetch: F, cfg: TunnelConfig, token: String, shared: Arc<Shared>) {
    let push = push_loop(&fetch, &cfg, &token, &shared);
    let pull = pull_loop(&fetch, &cfg, &token, &shared);
    futures::pin_mut!(push, pull);
    match select(push, pull).await {
        // Closed by this side: the pull request is cancelled by dropping it.
        Either::Left((PushEnd::Closed, _pull)) => {
            let mut st = shared.lock();
            if st.rx_end.is_none() {
                st.rx_end = Some(Ok(()));
            }
            wake(&mut st.reader);
        }
        // A push failed: the server usually ended the tunnel too, and its last bytes
        // (a refusal, say) may still be on their way down. Keep pulling until the pull
        // ends or the tunnel is closed here.
        Either::Left((PushEnd::Failed, pull)) => {
            let closed = poll_fn(|cx| {
                let mut st = shared.lock();
                if st.close_requested {
                    Poll::Ready(())
                } else {
                    st.pusher = Some(cx.waker().clone());
                    Poll::Pending
                }
            });
            futures::pin_mut!(closed);
            select(pull, closed).await;
            let mut st = shared.lock();
            if st.rx_end.is_none() {
                st.rx_end = Some(Err(st.tx_err.clone().unwrap_or(Error::Closed)));
            }
            wake(&mut st.reader);
        }
        Either::Right(((), push)) => {
            push.await;
        }
    }
}

/// How the push side ended.
enum PushEnd {
    /// The close request was sent.
    Closed,
    /// A push failed; `State::tx_err` says why.
    Failed,
}

enum PushJob {
    Data(BytesMut),
    Close,
}

async fn push_loop<F: Fetch>(
    fetch: &F,
    cfg: &TunnelConfig,
    token: &str,
    shared: &Shared,
) -> PushEnd {
    let url = cfg.url(&cfg.push_path, Some(token));
    loop {
        let job = poll_fn(|cx| {
            let mut st = shared.lock();
            if st.tx_err.is_some() {
                return Poll::Ready(None);
            }
            if !st.tx.is_empty() {
                let n = st.tx.len().min(shared.max_push);
                let data = st.tx.split_to(n);
                st.tx_inflight = true;
                wake(&mut st.writer);
                return Poll::Ready(Some(PushJob::Data(data)));
            }
            if st.close_requested {
                return Poll::Ready(Some(PushJob::Close));
            }
            st.pusher = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        match job {
            None => return PushEnd::Failed,
            Some(PushJob::Data(data)) => {
                let body = Bytes::from(encode_push_body(&data));
                drop(data);
                let res = fetch.post(&url, &cfg.headers, body).await;
                let mut st = shared.lock();
                st.tx_inflight = false;
                match res {
                    Ok((200, _)) => {}
                    Ok((status, _)) => {
                        st.tx_err = Some(Error::Status {
                            what: "push",
                            status,
                        })
                    }
                    Err(source) => {
                        st.tx_err = Some(Error::Fetch {
                            what: "push",
                            source,
                        })
                    }
                }
                wake(&mut st.writer);
                if st.tx_err.is_some() {
                    return PushEnd::Failed;
                }
            }
            Some(PushJob::Close) => {
                // The server may have forgotten the token already; any answer will do.
                let _ = fetch.post(&url, &cfg.headers, Bytes::new()).await;
                let mut st = shared.lock();
                st.close_done = true;
                wake(&mut st.writer);
                return PushEnd::Closed;
            }
        }
    }
}

async fn pull_loop<F: Fetch>(fetch: &F, cfg: &TunnelConfig, token: &str, shared: &Shared) {
    let url = cfg.url(&cfg.pull_path, Some(token));
    let result = pull_until_end(fetch, cfg, &url, shared).await;
    let mut st = shared.lock();
    if st.rx_end.is_none() {
        st.rx_end = Some(result);
    }
    wake(&mut st.reader);
    // Writers blocked on a tunnel whose far end is gone must learn about it.
    wake(&mut st.writer);
}

async fn pull_until_end<F: Fetch>(
    fetch: &F,
    cfg: &TunnelConfig,
    url: &str,
    shared: &Shared,
) -> Result<(), Error> {
    let fetch_err = |source| Error::Fetch {
        what: "pull",
        source,
    };
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let resp = fetch.get(url, &cfg.headers).await.map_err(fetch_err)?;
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
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(fetch_err)?;
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
                if st.rx_len < shared.recv_cap {
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
