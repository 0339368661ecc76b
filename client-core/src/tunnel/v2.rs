//! The PHT/2 driver: a resumable pull of binary frames and pipelined, retried pushes
//! (docs/PROTOCOL.md). A cut request is repaired, not reported: the pull resumes from the
//! client's `ack`, and a push is sent again, since the server drops bytes it already has.
//! Only a failure that outlasts `resumeTimeout`, a RESET from the server or a refusal
//! ends the tunnel, and then as an error.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::future::{Either, poll_fn, select};
use futures::{FutureExt, StreamExt};

use super::{Ctx, Shared, send_reset, wake};
use crate::clock::{Clock, timeout};
use crate::frame::{self, Frame, FrameDecoder, Limits};
use crate::{BoxFuture, DecodeError, Error, Fetch, FetchResponse, PollMode, PostBody, Version};

/// First pause before a failed request is sent again; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Longest wait, once the tunnel has ended in order, for the second of the pull's end and
/// the close's answer. Read to its end, the pull's connection goes back to the pool and
/// the next tunnel need not open one; our server ends it as the close arrives.
pub(super) const CLOSE_DRAIN: Duration = Duration::from_millis(500);

/// POSTs in flight when a tunnel starts; the window grows from there.
const START_WINDOW: usize = 2;

/// Whether a pull response is PHT/2: our server labels it; gost's pulls carry no type.
fn is_v2(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|t| t.trim().starts_with("application/octet-stream"))
}

/// What the first pull of a minted token found.
pub(super) enum Probed<B> {
    V2(FetchResponse<B>),
    V1(FetchResponse<B>),
}

/// Sends the first pull of a minted token with `v=2` and reads the version from its
/// answer, before any push: a raw PHT/2 body must never reach a PHT/1 server.
pub(super) async fn probe<F: Fetch, C: Clock>(
    ctx: &Ctx<'_, F, C>,
) -> Result<Probed<F::Body>, Error> {
    let url = format!(
        "{}&v=2&ack=0",
        ctx.cfg.url(&ctx.cfg.pull_path, Some(ctx.token))
    );
    let resp = get(ctx, &url).await?;
    match resp.status {
        200 if is_v2(resp.content_type.as_deref()) => {
            super::known::remember(ctx.cfg, &Limits::default());
            Ok(Probed::V2(resp))
        }
        200 if ctx.cfg.version == Version::Auto => Ok(Probed::V1(resp)),
        200 => Err(Error::NoV2),
        status => Err(Error::Status {
            what: "pull",
            status,
        }),
    }
}

async fn get<F: Fetch, C: Clock>(
    ctx: &Ctx<'_, F, C>,
    url: &str,
) -> Result<FetchResponse<F::Body>, Error> {
    get_within(ctx, url, ctx.cfg.request_timeout).await
}

async fn get_within<F: Fetch, C: Clock>(
    ctx: &Ctx<'_, F, C>,
    url: &str,
    limit: Duration,
) -> Result<FetchResponse<F::Body>, Error> {
    timeout(ctx.clock, limit, ctx.fetch.get(url, &ctx.cfg.headers))
        .await
        .map_err(|_| Error::Timeout {
            what: "pull",
            after: limit,
        })?
        .map_err(|source| Error::Fetch {
            what: "pull",
            source,
        })
}

/// Runs a PHT/2 tunnel to its end. `first` is a pull already answered (a probe).
pub(super) async fn drive<F: Fetch, C: Clock>(
    ctx: &Ctx<'_, F, C>,
    limits: Limits,
    first: Option<FetchResponse<F::Body>>,
) {
    let shared = ctx.shared;
    {
        let mut st = shared.lock();
        st.v2 = true;
        // Unacknowledged bytes stay queued; more than the server reorders would only
        // earn 429s.
        st.tx_cap = limits.reorder.max(ctx.cfg.max_push_payload).max(1);
        wake(&mut st.writer);
    }
    let push = push_loop(ctx, &limits).fuse();
    let pull = pull_loop(ctx, &limits, first).fuse();
    let reset = poll_fn(|cx| super::reset_or_wait(shared, cx)).fuse();
    futures::pin_mut!(push, pull, reset);
    enum End {
        Done,
        Failed(Error),
        Reset,
    }
    let (end, pull_running) = futures::select_biased! {
        r = reset => { let () = r; (End::Reset, true) },
        r = push => match r { Ok(()) => (End::Done, true), Err(e) => (End::Failed(e), true) },
        r = pull => match r { Ok(()) => (End::Done, false), Err(e) => (End::Failed(e), false) },
    };
    match end {
        End::Done => {
            {
                let mut st = shared.lock();
                if st.rx_end.is_none() {
                    st.rx_end = Some(Ok(()));
                }
                st.close_done = true;
                st.wake_all();
            }
            // Errors here are no one's: the tunnel ended in order. Whichever of the two
            // ends second, the pull's end (its connection goes back to the pool) or the
            // answer to the close (the server forgets the token), is waited for.
            if pull_running {
                let _ = timeout(ctx.clock, CLOSE_DRAIN, &mut pull).await;
            } else {
                let _ = timeout(ctx.clock, CLOSE_DRAIN, &mut push).await;
            }
        }
        End::Failed(e) => {
            // A push refused with 410: the server has ended the tunnel, and the reason it
            // gives (a RESET frame: the target failed, say) is on its way down the pull,
            // which that push's answer may have overtaken. The reason is the better error.
            let e = match e {
                Error::Status { status: 410, .. } if pull_running => {
                    match timeout(ctx.clock, CLOSE_DRAIN, &mut pull).await {
                        Ok(Err(reason @ Error::Reset(_))) => reason,
                        _ => e,
                    }
                }
                e => e,
            };
            // Refused as unknown or malformed: the server at that address may not be the
            // PHT/2 server remembered; the next tunnel asks /authorize again.
            if !shared.lock().established
                || matches!(
                    e,
                    Error::Status {
                        status: 400 | 403 | 404,
                        ..
                    }
                )
            {
                super::known::forget(ctx.cfg);
            }
            tracing::debug!(
                token = crate::token_prefix(ctx.token),
                "PHT/2 tunnel failed: {e}"
            );
            shared.fail(e);
            send_reset(ctx).await;
        }
        End::Reset => send_reset(ctx).await,
    }
}

// ------------------------------------------------------------------------ push side

/// One push POST: `len` bytes from upload offset `seq`.
#[derive(Debug, Clone, Copy)]
struct Job {
    seq: u64,
    len: u64,
    fin: bool,
    close: bool,
}

impl Job {
    /// Everything it carries is acknowledged already.
    fn obsolete(&self, acked: u64, fin_acked: bool) -> bool {
        self.seq + self.len <= acked && !self.close && (!self.fin || fin_acked)
    }
}

/// The push side's own bookkeeping (the shared state holds the bytes).
struct Pusher {
    /// Upload offset up to which bytes were sent at least once.
    next_seq: u64,
    /// Failed jobs, by offset, sent again before new ones.
    retry: VecDeque<Job>,
    fin_sent: bool,
    close_sent: bool,
    /// Largest `ack` (download count) sent to the server.
    ack_reported: u64,
    /// A pure acknowledgement is on its way (one at a time, outside the window).
    ack_inflight: bool,
    ack_every: u64,
    limit: u64,
    floor: u64,
    window: usize,
    max_window: usize,
}

impl Pusher {
    fn requeue(&mut self, job: Job) {
        let at = self.retry.partition_point(|j| j.seq <= job.seq);
        self.retry.insert(at, job);
    }

    /// The next POST to send, if any is due. Called with the lock held.
    fn pick(&mut self, st: &mut super::State, inflight: usize) -> Option<Job> {
        let fin_acked = st.fin_at.is_some_and(|f| st.tx_acked >= f) && st.close_done;
        while let Some(j) = self.retry.front() {
            if j.obsolete(st.tx_acked, fin_acked) {
                self.retry.pop_front();
                continue;
            }
            let mut j = self.retry.pop_front()?;
            if j.len > self.limit {
                // Shrunk after a 413: the rest waits for the next turn.
                let rest = Job {
                    seq: j.seq + self.limit,
                    len: j.len - self.limit,
                    ..j
                };
                j.len = self.limit;
                j.fin = false;
                j.close = false;
                self.retry.push_front(rest);
            }
            return Some(j);
        }
        let tx_end = st.tx_acked + st.tx.len() as u64;
        if self.next_seq < tx_end {
            let len = (tx_end - self.next_seq).min(self.limit);
            let fin = st.close_requested && self.next_seq + len == tx_end;
            let job = Job {
                seq: self.next_seq,
                len,
                fin,
                close: false,
            };
            self.next_seq += len;
            if fin {
                self.fin_sent = true;
                st.fin_at = Some(tx_end);
            }
            return Some(job);
        }
        if st.close_requested && !self.fin_sent {
            self.fin_sent = true;
            st.fin_at = Some(tx_end);
            return Some(Job {
                seq: tx_end,
                len: 0,
                fin: true,
                close: false,
            });
        }
        // The end: every byte acknowledged both ways (or nobody left to read), and no
        // other POST that could arrive after it.
        let finished = st.dropped || (fin_acked && st.fin_seen);
        if !self.close_sent && finished && st.tx.is_empty() && inflight == 0 {
            self.close_sent = true;
            st.close_sent = true;
            return Some(Job {
                seq: tx_end,
                len: 0,
                fin: true,
                close: true,
            });
        }
        None
    }

    /// A pure acknowledgement, when one is due. The server's replay buffer frees only on
    /// acknowledgements, and the pushes in flight carry old ones: they may be waiting for
    /// the target, which waits for the download to move, which waits for this.
    fn pick_ack(&mut self, st: &super::State) -> Option<Job> {
        if self.ack_inflight || st.rx_off < self.ack_reported + self.ack_every {
            return None;
        }
        self.ack_inflight = true;
        Some(Job {
            seq: self.next_seq,
            len: 0,
            fin: false,
            close: false,
        })
    }
}

enum PushEvent<T> {
    Job(Job, String, PostBody),
    Done(T),
    Timer,
    Failed(Error),
}

async fn push_loop<F: Fetch, C: Clock>(ctx: &Ctx<'_, F, C>, limits: &Limits) -> Result<(), Error> {
    let shared = ctx.shared;
    let cfg = ctx.cfg;
    let base = format!("{}&v=2", cfg.url(&cfg.push_path, Some(ctx.token)));
    let limit = cfg.max_push_payload.min(limits.max_push).max(1) as u64;
    let max_window = cfg.push_window.max(1);
    let mut p = Pusher {
        next_seq: shared.lock().tx_acked,
        retry: VecDeque::new(),
        fin_sent: false,
        close_sent: false,
        ack_reported: 0,
        ack_inflight: false,
        ack_every: (limits.replay / 4).max(1) as u64,
        limit,
        floor: (cfg.min_push_payload as u64).clamp(1, limit),
        window: START_WINDOW.min(max_window),
        max_window,
    };
    // A plain list, polled whole on every wake-up (it holds at most `pushWindow`):
    // FuturesUnordered wakes its own task each time it has polled all of its futures
    // once, and with one POST in flight that is every time.
    let mut inflight = Vec::new();
    let mut hold: Option<Pin<Box<C::Sleep>>> = None;
    let mut failing_since: Option<Duration> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let ev = poll_fn(|cx| {
            if let Some(h) = hold.as_mut() {
                if h.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(PushEvent::Timer);
                }
            }
            if let Poll::Ready(done) = poll_any(&mut inflight, cx) {
                return Poll::Ready(PushEvent::Done(done));
            }
            let mut st = shared.lock();
            if let Some(e) = &st.tx_err {
                return Poll::Ready(PushEvent::Failed(e.clone()));
            }
            if hold.is_none() && !st.reset_requested {
                let job = if inflight.len() < p.window {
                    p.pick(&mut st, inflight.len())
                } else {
                    None
                };
                if let Some(job) = job.or_else(|| p.pick_ack(&st)) {
                    let mut url = format!("{base}&seq={}&ack={}", job.seq, st.rx_off);
                    p.ack_reported = p.ack_reported.max(st.rx_off);
                    if job.fin {
                        url.push_str("&fin=1");
                    }
                    if job.close {
                        url.push_str("&close=1");
                    }
                    let from = (job.seq.saturating_sub(st.tx_acked)) as usize;
                    let to = (job.seq + job.len).saturating_sub(st.tx_acked) as usize;
                    let body = st.tx.slice(from, to);
                    return Poll::Ready(PushEvent::Job(job, url, body));
                }
            }
            st.push_inflight = inflight.len();
            st.push_window = p.window;
            st.push_retries = p.retry.len();
            st.ack_due = if p.ack_inflight {
                u64::MAX
            } else {
                p.ack_reported + p.ack_every
            };
            st.pusher = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        match ev {
            PushEvent::Timer => hold = None,
            PushEvent::Failed(e) => return Err(e),
            PushEvent::Job(job, url, body) => {
                inflight.push(Box::pin(async move {
                    let r = ctx.post(&url, body).await;
                    (job, r)
                }));
            }
            PushEvent::Done((job, res)) => {
                let pure_ack = job.len == 0 && !job.fin && !job.close;
                if pure_ack {
                    p.ack_inflight = false;
                    if !matches!(res, Ok((200, _))) {
                        // Not taken: the next one carries the count again.
                        p.ack_reported = 0;
                    }
                }
                let retryable = match res {
                    Ok((200, body)) => {
                        let Some(acked) = frame::parse_push_answer(&body) else {
                            return Err(Error::Decode(DecodeError::Frame(
                                "push answer without ack=".into(),
                            )));
                        };
                        {
                            let mut st = shared.lock();
                            st.fin_delivered |= job.fin;
                            // This loop looks at everything again next: no wake-up of
                            // its own task (a requeue and another worker woken).
                            st.pusher = None;
                        }
                        on_ack(shared, acked);
                        shared.lock().established = true;
                        failing_since = None;
                        backoff = MIN_BACKOFF;
                        p.window = (p.window + 1).min(p.max_window);
                        if job.close {
                            return Ok(());
                        }
                        continue;
                    }
                    // A proxy refused the body's size: halve the limit below it. A body
                    // sent before an earlier refusal may be over the limit already: it is
                    // only sent again, in pieces of the limit.
                    Ok((413, _)) if job.len > p.floor => {
                        if job.len <= p.limit {
                            let smaller = (job.len / 2).max(p.floor);
                            super::warn_shrink(job.len as usize, smaller as usize);
                            p.limit = smaller;
                        }
                        p.requeue(job);
                        continue;
                    }
                    Ok((status, _)) if status >= 500 || status == 408 || status == 429 => {
                        Error::Status {
                            what: "push",
                            status,
                        }
                    }
                    Ok((status, _)) => {
                        return Err(Error::Status {
                            what: "push",
                            status,
                        });
                    }
                    Err(e) => e,
                };
                if !shared.lock().established {
                    return Err(retryable);
                }
                let now = ctx.clock.now();
                // A 429 from a tunnel that has answered before is back-pressure: the
                // reorder buffer is full, or the target is not reading and earlier bytes
                // still wait for it. It is sent again after the back-off for as long as
                // it takes: a slow reader is not a broken path, so it does not count
                // towards `resumeTimeout`.
                let back_pressure = matches!(retryable, Error::Status { status: 429, .. });
                if back_pressure {
                    failing_since = None;
                } else if now.saturating_sub(*failing_since.get_or_insert(now))
                    >= cfg.resume_timeout
                {
                    return Err(Error::Unresumable {
                        what: "push",
                        after: cfg.resume_timeout,
                        last: Box::new(retryable),
                    });
                }
                tracing::debug!(
                    token = crate::token_prefix(ctx.token),
                    seq = job.seq,
                    "push failed, sending it again: {retryable}"
                );
                if !pure_ack {
                    p.requeue(job);
                }
                p.window = (p.window / 2).max(1);
                hold = Some(Box::pin(ctx.clock.sleep(backoff)));
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The first of `futs` to finish, taken out of the list.
fn poll_any<T, F: Future<Output = T> + ?Sized>(
    futs: &mut Vec<Pin<Box<F>>>,
    cx: &mut std::task::Context<'_>,
) -> Poll<T> {
    for i in 0..futs.len() {
        if let Poll::Ready(out) = futs[i].as_mut().poll(cx) {
            drop(futs.swap_remove(i));
            return Poll::Ready(out);
        }
    }
    Poll::Pending
}

/// The server has the first `acked` upload bytes: free them.
fn on_ack(shared: &Shared, acked: u64) {
    let mut st = shared.lock();
    if acked > st.tx_acked {
        let n = ((acked - st.tx_acked) as usize).min(st.tx.len());
        st.tx.advance(n);
        st.tx_acked += n as u64;
    }
    if st.fin_delivered && st.fin_at.is_some_and(|f| st.tx_acked >= f) && st.tx.is_empty() {
        st.close_done = true;
    }
    wake(&mut st.writer);
    // Before the writer's close the push side has nothing to do on an ack (new bytes
    // wake it themselves); after it, the ack may make the close due. It runs in the
    // driver's task, so a needless wake-up costs a requeue and another worker woken.
    if st.fin_at.is_some() {
        wake(&mut st.pusher);
    }
}

// ------------------------------------------------------------------------ pull side

/// How one pull response ended.
enum Next {
    /// END (or a poll cycle): pull again.
    Again,
    /// No byte within the heartbeat and a margin: a proxy holds responses back.
    ToPoll,
    /// A poll response was delivered while still open: streaming works.
    ToStream,
    /// The response ended after the close was sent: the tunnel is over.
    Closed,
}

/// Why a pull response failed.
struct Failure {
    err: Error,
    /// Only the tunnel's end (RESET, a protocol error) is fatal; the rest is resumed.
    fatal: bool,
    /// The response carried frames before it failed: the path works, the clock of
    /// failures in a row starts again.
    progressed: bool,
}

fn retry(err: Error) -> Failure {
    retry_after(false, err)
}

fn retry_after(progressed: bool, err: Error) -> Failure {
    Failure {
        err,
        fatal: false,
        progressed,
    }
}

async fn pull_loop<F: Fetch, C: Clock>(
    ctx: &Ctx<'_, F, C>,
    limits: &Limits,
    mut first: Option<FetchResponse<F::Body>>,
) -> Result<(), Error> {
    let cfg = ctx.cfg;
    let base = format!("{}&v=2", cfg.url(&cfg.pull_path, Some(ctx.token)));
    let mut poll = cfg.poll == PollMode::Always;
    let mut failing_since: Option<Duration> = None;
    let mut backoff = MIN_BACKOFF;
    let mut next: Option<NextPull<'_, F::Body>> = None;
    loop {
        let switch_on_silence = cfg.poll == PollMode::Auto && !poll;
        let resp = match (first.take(), next.take()) {
            (Some(r), _) => Ok(r),
            (None, Some(n)) => n.await,
            (None, None) if switch_on_silence => {
                let wait = first_byte_wait(limits.heartbeat).min(cfg.request_timeout);
                get_within(ctx, &pull_url(&base, ctx.shared, poll), wait).await
            }
            (None, None) => get(ctx, &pull_url(&base, ctx.shared, poll)).await,
        };
        let outcome = match resp {
            Ok(r) if r.status == 200 && is_v2(r.content_type.as_deref()) => {
                ctx.shared.lock().established = true;
                read_response(ctx, limits, r, poll, &mut next, &base).await
            }
            Ok(r) if r.status == 200 => Err(Failure {
                err: Error::Decode(DecodeError::Frame("a PHT/2 pull answered as PHT/1".into())),
                fatal: true,
                progressed: false,
            }),
            Ok(r) if r.status >= 500 || r.status == 408 || r.status == 429 => {
                Err(retry(Error::Status {
                    what: "pull",
                    status: r.status,
                }))
            }
            Ok(r) => Err(Failure {
                err: Error::Status {
                    what: "pull",
                    status: r.status,
                },
                fatal: true,
                progressed: false,
            }),
            // A proxy that holds responses back may hold the head too.
            Err(Error::Timeout { .. }) if switch_on_silence => Ok(Next::ToPoll),
            Err(e) => Err(retry(e)),
        };
        match outcome {
            Ok(n) => {
                failing_since = None;
                backoff = MIN_BACKOFF;
                match n {
                    Next::Closed => return Ok(()),
                    Next::Again => {}
                    Next::ToPoll => {
                        tracing::info!(
                            token = crate::token_prefix(ctx.token),
                            "the pull shows nothing within the heartbeat: a proxy holds \
                             responses back; long-polling (poll=1)"
                        );
                        poll = true;
                    }
                    Next::ToStream => {
                        tracing::info!(
                            token = crate::token_prefix(ctx.token),
                            "poll responses arrive while open: streaming the pull again"
                        );
                        poll = false;
                    }
                }
            }
            Err(f) if f.fatal => return Err(f.err),
            Err(f) if !ctx.shared.lock().established => return Err(f.err),
            // A next pull already asked for (rotation) takes over.
            Err(f) => {
                let now = ctx.clock.now();
                if f.progressed {
                    failing_since = None;
                    backoff = MIN_BACKOFF;
                }
                let since = *failing_since.get_or_insert(now);
                if now.saturating_sub(since) >= cfg.resume_timeout {
                    return Err(Error::Unresumable {
                        what: "pull",
                        after: cfg.resume_timeout,
                        last: Box::new(f.err),
                    });
                }
                tracing::debug!(
                    token = crate::token_prefix(ctx.token),
                    "pull broke, resuming: {}",
                    f.err
                );
                ctx.clock.sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// How long a streaming pull may show nothing before the client concludes that a proxy
/// holds responses back: the server's heartbeat plus half of it, at least 1 s.
fn first_byte_wait(heartbeat: Duration) -> Duration {
    heartbeat + (heartbeat / 2).max(Duration::from_secs(1))
}

/// A pull asked for ahead of time (rotation).
type NextPull<'a, B> = BoxFuture<'a, Result<FetchResponse<B>, Error>>;

fn pull_url(base: &str, shared: &Shared, poll: bool) -> String {
    let ack = shared.lock().rx_off;
    let p = if poll { "&poll=1" } else { "" };
    format!("{base}&ack={ack}{p}")
}

/// Reads one pull response to its END. While it streams, the next pull may be opened
/// ahead of `pullMaxAge` (into `next`), so the tunnel never waits between the two.
async fn read_response<'a, F: Fetch, C: Clock>(
    ctx: &'a Ctx<'_, F, C>,
    limits: &Limits,
    resp: FetchResponse<F::Body>,
    poll: bool,
    next: &mut Option<NextPull<'a, F::Body>>,
    base: &str,
) -> Result<Next, Failure> {
    let (cfg, clock, shared) = (ctx.cfg, ctx.clock, ctx.shared);
    let hb = limits.heartbeat;
    let auto = cfg.poll == PollMode::Auto;
    // A streaming pull shows its first PING at once unless something holds it back.
    let first_wait = if auto && !poll {
        first_byte_wait(hb)
    } else {
        cfg.heartbeat_timeout
    };
    let mut body = resp.body;
    let mut decoder = FrameDecoder::default();
    let mut first_at: Option<Duration> = None;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut ended = None;
    let mut rotate = (!poll).then(|| Box::pin(clock.sleep(cfg.pull_max_age)));
    let mut next_done = false;
    loop {
        // Streaming, the server sends a frame at least every heartbeat: longer silence
        // means a proxy holds the response back (at its start, or, once its buffers stop
        // filling, anywhere later), and long polls get through.
        let wait = if (auto && !poll) || first_at.is_none() {
            first_wait
        } else {
            cfg.heartbeat_timeout
        };
        let chunk = {
            let sleep = clock.sleep(wait);
            let read = body.next();
            futures::pin_mut!(sleep, read);
            // Make before break: the next pull is sent while this one still streams; the
            // server ends this one with END when the next arrives.
            let ahead = poll_fn(|cx| {
                if let Some(r) = rotate.as_mut() {
                    if r.as_mut().poll(cx).is_ready() {
                        rotate = None;
                        let u = pull_url(base, shared, false);
                        *next = Some(Box::pin(async move { get(ctx, &u).await }));
                    }
                }
                match next.as_mut() {
                    Some(f) if !next_done => f.as_mut().poll(cx),
                    _ => Poll::Pending,
                }
            });
            futures::pin_mut!(ahead);
            match select(read, select(sleep, ahead)).await {
                Either::Left((c, _)) => c,
                Either::Right((Either::Left(_), _)) => {
                    if auto && !poll {
                        return Ok(Next::ToPoll);
                    }
                    return Err(retry_after(
                        first_at.is_some(),
                        Error::Silent { after: wait },
                    ));
                }
                // The next pull is answered: keep its answer until this one ends.
                Either::Right((Either::Right((answer, _)), _)) => {
                    *next = Some(Box::pin(futures::future::ready(answer)));
                    next_done = true;
                    continue;
                }
            }
        };
        let chunk = match chunk {
            None if shared.lock().close_sent => return Ok(Next::Closed),
            None => {
                return Err(retry_after(
                    first_at.is_some(),
                    Error::Fetch {
                        what: "pull",
                        source: crate::FetchError("the pull response ended without END".into()),
                    },
                ));
            }
            Some(Err(source)) => {
                return Err(retry_after(
                    first_at.is_some(),
                    Error::Fetch {
                        what: "pull",
                        source,
                    },
                ));
            }
            Some(Ok(c)) => c,
        };
        let now = clock.now();
        first_at.get_or_insert(now);
        let mut fatal = None;
        let mut gap = false;
        let mut ack_max: Option<u64> = None;
        {
            let mut st = shared.lock();
            let mut rx_off = st.rx_off;
            let res = decoder.feed(chunk, &mut |f| {
                if fatal.is_some() || gap || ended.is_some() {
                    return;
                }
                match f {
                    Frame::Data { offset, mut data } => {
                        if offset > rx_off {
                            gap = true;
                            return;
                        }
                        let skip = (rx_off - offset) as usize;
                        if skip >= data.len() {
                            return;
                        }
                        data.advance(skip);
                        rx_off += data.len() as u64;
                        batch.push(data);
                    }
                    Frame::Ping => {}
                    // Applied below, once this lock is let go.
                    Frame::Ack(n) => ack_max = ack_max.max(Some(n)),
                    Frame::Fin(total) => {
                        if total == rx_off {
                            ended = Some(true);
                        } else if total > rx_off {
                            gap = true;
                        } else {
                            fatal = Some(Error::Decode(DecodeError::Frame(format!(
                                "FIN at {total} after {rx_off} bytes"
                            ))));
                        }
                    }
                    Frame::Reset { reason, .. } => fatal = Some(Error::Reset(reason)),
                    Frame::End => ended = Some(false),
                }
            });
            if !batch.is_empty() {
                for b in batch.drain(..) {
                    st.rx_len += b.len();
                    st.rx.push_back(b);
                }
                wake(&mut st.reader);
            }
            st.rx_off = rx_off;
            // The push side runs in this task: waking it for nothing requeues the task
            // and wakes another worker, on every chunk.
            if rx_off >= st.ack_due {
                wake(&mut st.pusher);
            }
            if ended == Some(true) {
                ended = None;
                if !st.fin_seen {
                    st.fin_seen = true;
                    if st.rx_end.is_none() {
                        st.rx_end = Some(Ok(()));
                    }
                    st.wake_all();
                }
            }
            if let Err(e) = res {
                return Err(Failure {
                    err: Error::Decode(e),
                    fatal: true,
                    progressed: true,
                });
            }
        }
        if let Some(e) = fatal {
            return Err(Failure {
                err: e,
                fatal: true,
                progressed: true,
            });
        }
        if let Some(acked) = ack_max {
            on_ack(shared, acked);
        }
        if gap {
            return Err(retry_after(
                first_at.is_some(),
                Error::Decode(DecodeError::Frame("a gap in the download: resuming".into())),
            ));
        }
        if ended == Some(false) {
            // A poll response seen while it was still open (its PING long before its
            // END) means nothing holds responses back any more.
            let open_for = now.saturating_sub(first_at.unwrap_or(now));
            if poll && auto && open_for >= hb / 4 && open_for > Duration::ZERO {
                return Ok(Next::ToStream);
            }
            return Ok(Next::Again);
        }
        // Backpressure: stop reading while the reader is behind.
        super::reader_room(shared).await;
    }
}
