//! The in-memory pipe between a tunnel's HTTP side (push and pull requests) and the
//! service's handler.
//!
//! Bytes move as `Bytes` chunks: a decoded push body goes to the handler without a copy,
//! and the pull request takes what the handler wrote without a read buffer of its own, so
//! an idle tunnel costs no buffer memory at all.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use futures::future::poll_fn;
use pht_core::frame::ResetCode;
use pht_runtime::Chunked;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A handler's write at least this long becomes a chunk of its own.
const OWN_CHUNK: usize = 4 * 1024;
/// Small writes gathered up to this many bytes become a chunk.
const TAIL_MAX: usize = 64 * 1024;

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    /// Bytes written in small pieces (by the handler), gathered without an allocation per
    /// write, and always newer than every chunk.
    tail: BytesMut,
    len: usize,
    /// The writing side is done: the reader gets EOF once the queue is empty.
    eof: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

impl Queue {
    /// Copies bytes a writer lent. Chunks are taken by the pull without a copy, and the
    /// tail stays short: taking part of a long tail would make the next small write
    /// move the rest of it to a new allocation.
    fn append(&mut self, b: &[u8]) {
        if b.len() >= OWN_CHUNK {
            return self.append_bytes(Bytes::copy_from_slice(b));
        }
        self.tail.extend_from_slice(b);
        if self.tail.len() >= TAIL_MAX {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.len += b.len();
        wake(&mut self.reader);
    }

    /// Takes bytes a writer gave up (a push, or a handler's read buffer): no copy.
    fn append_bytes(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.len += b.len();
        self.chunks.push_back(b);
        wake(&mut self.reader);
    }

    /// Up to `max` bytes from the front, as one chunk.
    fn take(&mut self, max: usize) -> Option<Bytes> {
        let b = match self.chunks.front_mut() {
            Some(front) if front.len() <= max => self.chunks.pop_front()?,
            Some(front) => front.split_to(max),
            None if self.tail.is_empty() => return None,
            None => self.tail.split_to(max.min(self.tail.len())).freeze(),
        };
        self.len -= b.len();
        wake(&mut self.writer);
        Some(b)
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.tail = BytesMut::new();
        self.len = 0;
    }
}

/// Why a tunnel was aborted: the code a PHT/2 RESET frame carries, and the reason for
/// people (logs, the frame's text, the handler's error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cause {
    pub code: ResetCode,
    pub reason: &'static str,
}

/// What the handler→HTTP direction has for a pull right now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Up {
    Data(Bytes),
    /// Nothing yet; the handler may write more.
    Empty,
    /// The handler shut its write side (or is gone) and everything was taken.
    Eof,
    /// The HTTP side closed the tunnel: no end of the handler's stream to report.
    Closed,
    /// The tunnel failed; nothing more comes.
    Aborted(Cause),
}

#[derive(Default)]
struct State {
    /// HTTP (push) → handler.
    down: Queue,
    /// Handler → HTTP (pull).
    up: Queue,
    /// Ended as an error (by either side): both sides get errors, not EOF.
    aborted: Option<Cause>,
    /// The handler dropped its end.
    handler_gone: bool,
    /// [`Pipe::close`] was called.
    closed: bool,
    /// The handler has read the end of what the HTTP side sent.
    down_drained: bool,
}

fn reset_error(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, why)
}

/// Both ends of one tunnel's pipe.
pub(super) struct Pipe {
    state: Mutex<State>,
    /// Bytes buffered per direction before the writer waits.
    cap: usize,
}

impl Pipe {
    /// A pipe and the handler's end of it.
    pub fn new(cap: usize) -> (Arc<Pipe>, HandlerEnd) {
        let p = Arc::new(Pipe {
            state: Mutex::new(State::default()),
            cap: cap.max(1),
        });
        (p.clone(), HandlerEnd(p))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands pushed bytes to the handler once there is room; `Err` when the handler has
    /// gone.
    pub async fn push(&self, data: Bytes) -> io::Result<()> {
        let mut data = Some(data);
        poll_fn(|cx| {
            let mut st = self.lock();
            if let Some(c) = st.aborted {
                return Poll::Ready(Err(reset_error(c.reason)));
            }
            // Closed by the HTTP side, the handler gone, or (PHT/2) the upload finished.
            if st.down.eof {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if st.down.len >= self.cap {
                st.down.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            st.down.append_bytes(data.take().unwrap_or_default());
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// The next bytes the handler wrote (at most `max`), `None` once it has finished, or
    /// an error once the tunnel was aborted.
    pub async fn pull(&self, max: usize) -> io::Result<Option<Bytes>> {
        poll_fn(|cx| {
            let mut st = self.lock();
            if let Some(b) = st.up.take(max) {
                return Poll::Ready(Ok(Some(b)));
            }
            if let Some(c) = st.aborted {
                return Poll::Ready(Err(reset_error(c.reason)));
            }
            if st.up.eof {
                return Poll::Ready(Ok(None));
            }
            st.up.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// What [`Pipe::pull`] would return now, without waiting (`None`: nothing ready).
    pub fn try_pull(&self, max: usize) -> Option<Bytes> {
        self.lock().up.take(max)
    }

    /// The handler's next bytes for a PHT/2 pull (at most `max`), without waiting.
    /// Bytes the handler wrote before a failure come before [`Up::Aborted`].
    pub fn take_up(&self, max: usize) -> Up {
        let mut st = self.lock();
        if let Some(b) = st.up.take(max) {
            return Up::Data(b);
        }
        match st.aborted {
            Some(c) => Up::Aborted(c),
            None if st.closed => Up::Closed,
            None if st.up.eof => Up::Eof,
            None => Up::Empty,
        }
    }

    /// Waits until [`Pipe::take_up`] has something other than [`Up::Empty`]. One waiter
    /// at a time: the tunnel's attached pull.
    pub async fn readable(&self) {
        poll_fn(|cx| {
            let mut st = self.lock();
            if st.up.len > 0 || st.up.eof || st.aborted.is_some() {
                return Poll::Ready(());
            }
            st.up.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Why the tunnel was aborted, if it was.
    pub fn aborted(&self) -> Option<&'static str> {
        self.lock().aborted.map(|c| c.reason)
    }

    /// The code and reason of the abort, if the tunnel was aborted.
    pub fn cause(&self) -> Option<Cause> {
        self.lock().aborted
    }

    /// Whether the handler dropped its end (it reads and writes no more).
    pub fn handler_gone(&self) -> bool {
        self.lock().handler_gone
    }

    /// The upload ended (a PHT/2 `fin`): the handler reads what is queued, then EOF, and
    /// may still write (a TCP half-close).
    pub fn finish_down(&self) {
        let mut st = self.lock();
        st.down.eof = true;
        wake(&mut st.down.reader);
    }

    /// Ends the tunnel as an error from the HTTP side: pending bytes are dropped both
    /// ways, the handler's reads and writes fail (so it resets its target), and the pull
    /// breaks off.
    pub fn abort(&self, code: ResetCode, why: &'static str) {
        self.lock().up.clear();
        self.fail(code, why);
    }

    /// Marks the tunnel failed. Bytes the handler already wrote still go down the pull
    /// before its error, as a TCP peer's last bytes arrive before its reset.
    fn fail(&self, code: ResetCode, why: &'static str) {
        let mut st = self.lock();
        // Closed by the client first: it has let go of the tunnel and reads nothing more,
        // so a failure of the handler's side afterwards is not the tunnel's to report.
        if st.aborted.is_none() && !(st.closed && code == ResetCode::TargetFailed) {
            st.aborted = Some(Cause { code, reason: why });
        }
        st.down.clear();
        st.down.eof = true;
        st.up.eof = true;
        wake(&mut st.down.reader);
        wake(&mut st.down.writer);
        wake(&mut st.up.reader);
        wake(&mut st.up.writer);
    }

    /// The HTTP side is gone: the handler reads what is left, then EOF; its writes fail.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.down.eof = true;
        st.up.eof = true;
        st.up.clear();
        wake(&mut st.down.reader);
        wake(&mut st.down.writer);
        wake(&mut st.up.reader);
        wake(&mut st.up.writer);
    }
}

/// The handler's end: an ordinary byte stream.
pub(super) struct HandlerEnd(Arc<Pipe>);

impl AsyncRead for HandlerEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(b) = ready!(self.get_mut().poll_read_chunk(cx, buf.remaining()))? {
            buf.put_slice(&b);
        }
        Poll::Ready(Ok(()))
    }
}

/// What a write of some bytes may do now.
enum Room {
    /// Take this many of them.
    Take(usize),
    /// Drop them all, reporting them written.
    Drop,
}

impl HandlerEnd {
    /// How much of a write of `len` bytes the pipe takes now.
    fn poll_room(
        &self,
        st: &mut State,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Poll<io::Result<Room>> {
        if let Some(c) = st.aborted {
            return Poll::Ready(Err(reset_error(c.reason)));
        }
        // Closed by the client, which reads nothing more: until the handler has read the
        // last bytes it sent, an answer is dropped rather than failed, since a failure
        // here would reset the target before those bytes reach it.
        if st.closed && !st.down_drained {
            return Poll::Ready(Ok(Room::Drop));
        }
        if st.up.eof {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = self.0.cap.saturating_sub(st.up.len);
        if room == 0 {
            st.up.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(Room::Take(room.min(len))))
    }
}

/// The handler's end hands out what the HTTP side pushed as it came, and takes the
/// handler's reads whole: a download's bytes are never copied between the target's
/// socket and the HTTP connection's.
impl Chunked for HandlerEnd {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Option<Bytes>>> {
        let mut st = self.0.lock();
        if let Some(c) = st.aborted {
            return Poll::Ready(Err(reset_error(c.reason)));
        }
        let q = &mut st.down;
        if let Some(b) = q.take(max.max(1)) {
            return Poll::Ready(Ok(Some(b)));
        }
        if q.eof {
            st.down_drained = true;
            return Poll::Ready(Ok(None));
        }
        q.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_write_chunk(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>> {
        let mut st = self.0.lock();
        match ready!(self.poll_room(&mut st, cx, data.len()))? {
            Room::Drop => data.clear(),
            Room::Take(n) => st.up.append_bytes(data.split_to(n)),
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HandlerEnd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.0.lock();
        Poll::Ready(Ok(match ready!(self.poll_room(&mut st, cx, buf.len()))? {
            Room::Drop => buf.len(),
            Room::Take(n) => {
                st.up.append(&buf[..n]);
                n
            }
        }))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.0.lock();
        st.up.eof = true;
        wake(&mut st.up.reader);
        Poll::Ready(Ok(()))
    }
}

impl pht_runtime::Reset for HandlerEnd {
    /// The handler's target broke: the client's pull breaks off with an error.
    fn reset(&mut self) {
        self.0
            .fail(ResetCode::TargetFailed, "the target connection failed");
    }

    fn as_chunked(&mut self) -> Option<&mut dyn Chunked> {
        Some(self)
    }
}

impl Drop for HandlerEnd {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.handler_gone = true;
        st.up.eof = true;
        st.down.eof = true;
        st.down.clear();
        wake(&mut st.up.reader);
        wake(&mut st.down.writer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_flow_both_ways_and_end_in_order() {
        let (pipe, mut h) = Pipe::new(8);
        pipe.push(Bytes::from_static(b"hello")).await.unwrap();
        let mut b = [0u8; 5];
        h.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hello");
        h.write_all(b"01234567").await.unwrap(); // exactly the capacity
        assert_eq!(pipe.pull(4).await.unwrap().unwrap(), "0123");
        h.shutdown().await.unwrap();
        let mut rest = Vec::new();
        while let Some(c) = pipe.pull(100).await.unwrap() {
            rest.extend_from_slice(&c);
        }
        assert_eq!(rest, b"4567");
    }

    #[tokio::test]
    async fn small_and_large_writes_come_out_in_order_however_they_are_taken() {
        let (pipe, mut h) = Pipe::new(1 << 20);
        let sizes = [10, 5000, 3, 70_000, 1, 1, 4096, 65_530, 9, 64 * 1024, 2];
        let takes = [1, 7000, 3, 65_536, 100_000];
        let (mut want, mut got) = (Vec::new(), Vec::new());
        for (i, &len) in sizes.iter().enumerate() {
            let piece: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            h.write_all(&piece).await.unwrap();
            want.extend_from_slice(&piece);
            if let Up::Data(b) = pipe.take_up(takes[i % takes.len()]) {
                assert!(b.len() <= takes[i % takes.len()]);
                got.extend_from_slice(&b);
            }
        }
        h.shutdown().await.unwrap();
        loop {
            match pipe.take_up(4000) {
                Up::Data(b) => got.extend_from_slice(&b),
                Up::Eof => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes came out of order");
    }

    #[tokio::test]
    async fn whole_buffers_cross_the_handler_end_uncopied() {
        let (pipe, mut h) = Pipe::new(1 << 20);
        let mut given = Bytes::from(vec![7u8; 100_000]);
        let at = given.as_ptr();
        futures::future::poll_fn(|cx| h.poll_write_chunk(cx, &mut given))
            .await
            .unwrap();
        assert!(given.is_empty(), "all taken");
        let Up::Data(b) = pipe.take_up(64 * 1024) else {
            panic!("nothing to pull")
        };
        assert_eq!((b.as_ptr(), b.len()), (at, 64 * 1024), "the same memory");
        // And the other way: what a push brought is what the handler gets.
        let pushed = Bytes::from(vec![9u8; 5000]);
        let at = pushed.as_ptr();
        pipe.push(pushed).await.unwrap();
        let got = futures::future::poll_fn(|cx| h.poll_read_chunk(cx, 1 << 20))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.as_ptr(), got.len()), (at, 5000));
    }

    #[tokio::test]
    async fn close_gives_the_handler_the_rest_then_eof() {
        let (pipe, mut h) = Pipe::new(64);
        pipe.push(Bytes::from_static(b"last")).await.unwrap();
        pipe.close();
        // An answer written before the handler read the rest must not fail its stream
        // (which would reset the target before "last" reached it): it is dropped.
        h.write_all(b"early answer").await.unwrap();
        let mut got = Vec::new();
        h.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last");
        assert!(h.write_all(b"x").await.is_err());
        // The failed write ends the handler's splice with a reset of the target; the
        // client closed first, so the tunnel does not turn into a reset for it.
        pht_runtime::Reset::reset(&mut h);
        assert_eq!(pipe.cause(), None);
        drop(h);
        assert!(pipe.push(Bytes::from_static(b"y")).await.is_err());
        assert_eq!(pipe.take_up(10), Up::Closed, "not the handler's end");
    }

    #[tokio::test]
    async fn abort_is_an_error_on_both_sides_never_an_end() {
        let (pipe, mut h) = Pipe::new(64);
        pipe.push(Bytes::from_static(b"dropped")).await.unwrap();
        h.write_all(b"dropped too").await.unwrap();
        pipe.abort(ResetCode::Other, "pull broken");
        let e = h.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(e.to_string(), "pull broken");
        assert!(h.write_all(b"x").await.is_err());
        assert!(pipe.pull(100).await.is_err());

        // From the handler's side: what it wrote still goes down, then the pull breaks.
        let (pipe, mut h) = Pipe::new(64);
        h.write_all(b"partial").await.unwrap();
        pht_runtime::Reset::reset(&mut h);
        assert_eq!(pipe.pull(100).await.unwrap().unwrap(), "partial");
        assert!(pipe.pull(100).await.is_err());
    }

    #[tokio::test]
    async fn a_finished_upload_is_a_half_close() {
        let (pipe, mut h) = Pipe::new(64);
        assert_eq!(pipe.take_up(10), Up::Empty);
        pipe.push(Bytes::from_static(b"question")).await.unwrap();
        pipe.finish_down();
        let mut got = Vec::new();
        h.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"question", "the rest, then EOF");
        // The handler still answers, and its end reads as Eof once everything is taken.
        h.write_all(b"answer").await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), pipe.readable())
            .await
            .expect("readable once the handler wrote");
        assert_eq!(pipe.take_up(3), Up::Data(Bytes::from_static(b"ans")));
        h.shutdown().await.unwrap();
        assert_eq!(pipe.take_up(10), Up::Data(Bytes::from_static(b"wer")));
        assert_eq!(pipe.take_up(10), Up::Eof);
        assert!(!pipe.handler_gone());
        drop(h);
        assert!(pipe.handler_gone());
        assert!(pipe.push(Bytes::from_static(b"late")).await.is_err());
        assert_eq!(pipe.cause(), None, "a finished handler is no failure");
    }

    #[tokio::test]
    async fn a_failure_carries_its_code_after_the_last_bytes() {
        let (pipe, mut h) = Pipe::new(64);
        h.write_all(b"last").await.unwrap();
        pht_runtime::Reset::reset(&mut h);
        assert_eq!(pipe.take_up(10), Up::Data(Bytes::from_static(b"last")));
        let cause = Cause {
            code: ResetCode::TargetFailed,
            reason: "the target connection failed",
        };
        assert_eq!(pipe.take_up(10), Up::Aborted(cause));
        // The first cause stays.
        pipe.abort(ResetCode::ShuttingDown, "later");
        assert_eq!(pipe.cause(), Some(cause));
    }
}
