//! The PHT/2 pull: a stream of frames that a newer pull replaces, that may break without
//! harm, and that resumes at the offset the client names.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use pht_core::frame::{self as wire, defaults, kind, param};
use pht_core::token_prefix;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use super::super::pipe::Up;
use super::super::registry::{Registry, ServerTunnel};
use super::super::routes::{Body, PULL_CHUNK, Peer, text};
use super::{Session, count_param, flag};

/// Payload bytes of one DATA frame at most: a whole response chunk. Clients pass a DATA
/// payload on piece by piece as it arrives (see `FrameDecoder`), so a frame need not fit
/// a read buffer, and a larger frame means fewer, larger writes on the client's side.
const DATA_FRAME: usize = PULL_CHUNK;

/// Payloads at least this long go out as the replay buffer's own bytes, after their head;
/// shorter ones are copied next to it, so a small answer is one piece of the response.
const SHARE_FROM: usize = 4 * 1024;

/// A response chunk being put together, as pieces that the HTTP connection writes with
/// one vectored write: the download bytes themselves are never copied on their way from
/// the handler to the socket.
#[derive(Default)]
struct Out {
    pieces: Vec<Bytes>,
    /// Frame heads and small frames since the last shared payload.
    buf: Vec<u8>,
}

impl Out {
    /// Where frames other than large DATA payloads are written.
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn put_data(&mut self, offset: u64, data: Bytes) {
        if data.len() < SHARE_FROM {
            wire::put_data(&mut self.buf, offset, &data);
            return;
        }
        wire::put_data_head(&mut self.buf, offset, data.len());
        self.pieces.push(Bytes::from(std::mem::take(&mut self.buf)));
        self.pieces.push(data);
    }

    fn is_empty(&self) -> bool {
        self.pieces.is_empty() && self.buf.is_empty()
    }

    fn into_pieces(mut self) -> Vec<Bytes> {
        if !self.buf.is_empty() {
            self.pieces.push(Bytes::from(self.buf));
        }
        self.pieces
    }
}

/// `GET pull?token=T&v=2&ack=N[&poll=1]`.
pub(in crate::listener::pht) async fn pull(
    reg: &Arc<Registry>,
    token: &str,
    peer: &Peer,
    query: &str,
) -> Response<Body> {
    let Ok(Some(ack)) = count_param(query, param::ACK) else {
        return text(StatusCode::BAD_REQUEST, "missing or bad ack\n");
    };
    let poll = flag(query, param::POLL);
    // A pull that has received bytes belongs to a tunnel that existed: for a token never
    // seen (its tunnel was on another instance, or before a restart) it starts nothing.
    let create = if ack == 0 {
        super::Create::Any
    } else {
        super::Create::Reserved
    };
    let (t, session) = match super::live_session(reg, token, peer, create).await {
        Ok(live) => live,
        Err(r) => return r,
    };
    if let Err(r) = super::take_ack(reg, token, &session, ack) {
        return r;
    }
    t.touch();
    let changes = session.subscribe();
    let id = session.attach();
    if let Some(m) = &reg.metrics {
        // The ack was accepted, so a non-zero one continues an existing download.
        m.pull(ack > 0);
    }
    // Below the base is an ack overtaken by a later one: the client has those bytes.
    let from = ack.max(session.lock().replay.base());
    debug!(service = %reg.service, token = token_prefix(token), %peer, ack, from, poll, pull = id, "pull attached");
    let o = &reg.opts;
    let stream = PullStream {
        tunnel: t,
        session,
        registry: reg.clone(),
        id,
        changes,
        next: from,
        acked: 0,
        fin_sent: false,
        poll_until: None,
        poll_wait: poll.then_some(o.poll_wait),
        started: false,
        done: false,
        last_frame: Instant::now(),
        heartbeat: o.heartbeat,
    };
    let chunks = futures::stream::unfold(stream, |mut st| async move {
        let pieces = st.next_chunk().await?;
        let frames = pieces
            .into_iter()
            .map(|b| Ok::<_, io::Error>(Frame::data(b)));
        Some((futures::stream::iter(frames), st))
    })
    .flatten();
    let mut r = Response::new(StreamBody::new(chunks.boxed()).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// One pull response in progress.
struct PullStream {
    tunnel: Arc<ServerTunnel>,
    session: Arc<Session>,
    registry: Arc<Registry>,
    /// This pull's number: it stays attached until a newer one replaces it.
    id: u64,
    changes: watch::Receiver<u64>,
    /// The next download offset this response sends.
    next: u64,
    /// The upload count the last ACK frame carried.
    acked: u64,
    fin_sent: bool,
    /// `poll=1`: how long to wait for data, and from the first frame on, until when.
    poll_wait: Option<Duration>,
    poll_until: Option<Instant>,
    started: bool,
    done: bool,
    last_frame: Instant,
    heartbeat: Duration,
}

/// What one look at the tunnel produced.
enum Step {
    /// Frames to send now.
    Send,
    /// The response ends after what was put out (if anything).
    End,
    /// Nothing to send; `pipe`: the handler's bytes are worth waiting for (the replay
    /// buffer has room and the handler may still write).
    Wait { pipe: bool },
}

/// Where taking download bytes stopped.
enum Stop {
    /// This chunk is full; more may be ready.
    Budget,
    /// The replay buffer is full: only acknowledgements make room.
    Window,
    /// The handler's side said this.
    Pipe(Up),
}

impl PullStream {
    /// The next response chunk, in pieces; `None` ends the response cleanly.
    async fn next_chunk(&mut self) -> Option<Vec<Bytes>> {
        if self.done {
            return None;
        }
        let mut out = Out::default();
        if !self.started {
            // PING first, on its own: the byte that tells the client this is PHT/2.
            self.started = true;
            self.acked = self.session.uploaded();
            wire::put_empty(out.buf(), kind::PING);
            wire::put_count(out.buf(), kind::ACK, self.acked);
            self.poll_until = self.poll_wait.map(|w| Instant::now() + w);
            return Some(self.sent(out));
        }
        loop {
            // Seen before looking, so a change made while looking wakes the wait below.
            self.changes.borrow_and_update();
            let pipe = match self.step(&mut out) {
                Step::Send => return Some(self.sent(out)),
                Step::End => {
                    self.done = true;
                    return (!out.is_empty()).then(|| out.into_pieces());
                }
                Step::Wait { pipe } => pipe,
            };
            let beat = self.last_frame + self.heartbeat;
            let poll_until = self.poll_until;
            tokio::select! {
                biased;
                _ = self.tunnel.cancel.cancelled() => {}
                // The sender lives in the session this pull holds: it cannot close.
                _ = self.changes.changed() => {}
                _ = self.tunnel.pipe.readable(), if pipe => {}
                _ = sleep_until(poll_until.unwrap_or(beat)), if poll_until.is_some_and(|p| p <= beat) => {
                    self.put_ack(out.buf());
                    wire::put_empty(out.buf(), kind::END);
                    self.done = true;
                    return Some(out.into_pieces());
                }
                _ = sleep_until(beat) => {
                    wire::put_empty(out.buf(), kind::PING);
                    self.put_ack(out.buf());
                    return Some(self.sent(out));
                }
            }
        }
    }

    /// An ACK frame, if the upload count moved since the last one. Upload progress does
    /// not wake the pull (see `Session::set_uploaded`): it rides whatever frame goes next.
    fn put_ack(&mut self, out: &mut Vec<u8>) {
        let uploaded = self.session.uploaded();
        if uploaded > self.acked {
            self.acked = uploaded;
            wire::put_count(out, kind::ACK, self.acked);
        }
    }

    fn sent(&mut self, out: Out) -> Vec<Bytes> {
        self.last_frame = Instant::now();
        out.into_pieces()
    }

    fn log_end(&self, what: &str) {
        debug!(service = %self.registry.service, token = token_prefix(&self.tunnel.token), pull = self.id, "pull ends: {what}");
    }

    /// Looks at the tunnel once and puts out the frames it calls for.
    fn step(&mut self, out: &mut Out) -> Step {
        if self.tunnel.cancel.is_cancelled() {
            match self.tunnel.pipe.cause() {
                Some(c) => {
                    wire::put_reset(out.buf(), c.code, c.reason);
                    self.log_end(c.reason);
                }
                None => self.log_end("tunnel closed"),
            }
            return Step::End;
        }
        if !self.session.is_attached(self.id) {
            wire::put_empty(out.buf(), kind::END);
            self.log_end("replaced by a newer pull");
            return Step::End;
        }
        let poll = self.poll_wait.is_some();
        let budget = if poll {
            defaults::POLL_BYTES
        } else {
            PULL_CHUNK
        };
        let (sent, stop, end) = {
            let mut st = self.session.lock();
            if st.uploaded > self.acked {
                self.acked = st.uploaded;
                wire::put_count(out.buf(), kind::ACK, self.acked);
            }
            // Acknowledged through another request: the client has those bytes.
            self.next = self.next.max(st.replay.base());
            let mut sent = 0;
            let stop = loop {
                if sent >= budget {
                    break Stop::Budget;
                }
                if let Some(b) = st.replay.get(self.next, DATA_FRAME.min(budget - sent)) {
                    let n = b.len();
                    out.put_data(self.next, b);
                    self.next += n as u64;
                    sent += n;
                    continue;
                }
                let room = st.replay.room();
                if room == 0 {
                    break Stop::Window;
                }
                match self.tunnel.pipe.take_up(room.min(DATA_FRAME)) {
                    Up::Data(b) => st.replay.push(b),
                    other => break Stop::Pipe(other),
                }
            };
            (sent, stop, st.replay.end())
        };
        let mut fin = false;
        match stop {
            Stop::Pipe(Up::Aborted(c)) => {
                // The handler's side failed, and every byte it wrote before is out.
                self.registry.abort(&self.tunnel.token, c.code, c.reason);
                let c = self.tunnel.pipe.cause().unwrap_or(c);
                wire::put_reset(out.buf(), c.code, c.reason);
                self.log_end(c.reason);
                return Step::End;
            }
            // Closed by a request (close=1): the response just ends, with no FIN.
            Stop::Pipe(Up::Closed) => {
                self.log_end("tunnel closed");
                return Step::End;
            }
            Stop::Pipe(Up::Eof) if !self.fin_sent => {
                wire::put_count(out.buf(), kind::FIN, end);
                self.fin_sent = true;
                fin = true;
                debug!(service = %self.registry.service, token = token_prefix(&self.tunnel.token), pull = self.id, total = end, "download finished: FIN");
            }
            _ => {}
        }
        if poll && (sent > 0 || fin) {
            wire::put_empty(out.buf(), kind::END);
            return Step::End;
        }
        if !out.is_empty() {
            return Step::Send;
        }
        Step::Wait {
            pipe: matches!(stop, Stop::Pipe(Up::Empty)),
        }
    }
}

impl Drop for PullStream {
    /// Ended or broken, a PHT/2 pull leaves the tunnel alive: the client pulls again
    /// within the grace period, or the reaper resets the tunnel.
    fn drop(&mut self) {
        if self.session.detach(self.id) {
            debug!(
                service = %self.registry.service,
                token = token_prefix(&self.tunnel.token),
                pull = self.id,
                ended = self.done,
                "pull detached: the tunnel waits resumeGrace for the next one"
            );
        }
    }
}
