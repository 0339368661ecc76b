//! A push body whose sender goes silent fails after a while, instead of holding its
//! connection (and a slot under `maxConns`) for as long as the client likes:
//! `headerTimeout` bounds a request's head, and this bounds each wait for its body.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The answer to a push whose body failed: `408` when [`StallGuard`] gave up waiting for
/// it, `400` when it broke off.
pub(super) fn body_failure(e: &io::Error) -> (StatusCode, &'static str) {
    if e.kind() == io::ErrorKind::TimedOut {
        (StatusCode::REQUEST_TIMEOUT, "push body stalled\n")
    } else {
        (StatusCode::BAD_REQUEST, "push body broken\n")
    }
}

/// `inner`, failing with [`io::ErrorKind::TimedOut`] when a wait for its next frame lasts
/// `idle`. Only time spent waiting on the sender counts: a reader that pauses (a handler
/// slow to take bytes) does not use up the sender's time.
pub(super) struct StallGuard<B> {
    inner: B,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// The timer runs for the wait in progress.
    armed: bool,
}

impl<B> StallGuard<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        StallGuard {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: false,
        }
    }
}

impl<B> Body for StallGuard<B>
where
    B: Body<Data = Bytes, Error = io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(r);
        }
        if !this.armed {
            this.timer.as_mut().reset(Instant::now() + this.idle);
            this.armed = true;
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no byte of the body for {:?}", this.idle),
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Chan = StreamBody<futures::channel::mpsc::Receiver<Result<Frame<Bytes>, io::Error>>>;

    fn body(
        idle: Duration,
    ) -> (
        futures::channel::mpsc::Sender<Result<Frame<Bytes>, io::Error>>,
        StallGuard<Chan>,
    ) {
        let (tx, rx) = futures::channel::mpsc::channel(4);
        (tx, StallGuard::new(StreamBody::new(rx), idle))
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_sender_fails_the_body_after_the_idle_time() {
        let (mut tx, mut b) = body(Duration::from_secs(30));
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        let first = b.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"abc");
        let started = Instant::now();
        let e = b.frame().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "no byte of the body for 30s");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_pauses_uses_none_of_the_senders_time() {
        let (mut tx, mut b) = body(Duration::from_secs(30));
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .unwrap();
        b.frame().await.unwrap().unwrap();
        // The handler takes its time; the sender's next bytes are already there.
        tokio::time::sleep(Duration::from_secs(100)).await;
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"b"))))
            .unwrap();
        let next = b.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&next[..], b"b");
        // Each frame that comes within the idle time starts the clock again.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(29)).await;
            tx.try_send(Ok(Frame::data(Bytes::from_static(b"c"))))
                .unwrap();
        }
        drop(tx);
        let mut rest = Vec::new();
        while let Some(f) = b.frame().await {
            rest.extend_from_slice(&f.unwrap().into_data().unwrap());
        }
        assert_eq!(rest, b"ccccc");
    }
}
