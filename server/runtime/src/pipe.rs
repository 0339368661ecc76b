//! Splicing two byte streams together, as every forwarder and handler does.
//!
//! Unlike `tokio::io::copy_bidirectional`, the buffers start small and grow only while a
//! direction keeps filling them: ten thousand idle tunnels cost 8 KiB each, a bulk
//! transfer still moves 256 KiB per system call. And a writer is never waited on for a
//! flush before more is read: a PHT tunnel flushes by itself, and waiting for each
//! push to finish would turn coalesced uploads back into stop-and-wait.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// First buffer per direction.
const MIN_BUFFER: usize = 4 * 1024;
/// Largest buffer per direction.
const MAX_BUFFER: usize = 256 * 1024;

/// What [`pipe`] moved.
#[derive(Debug, Clone, Copy, Default)]
pub struct PipeStats {
    /// Bytes from `a` to `b`.
    pub a_to_b: u64,
    /// Bytes from `b` to `a`.
    pub b_to_a: u64,
    pub duration: Duration,
}

/// One direction of the copy.
struct Dir {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    read_eof: bool,
    done: bool,
    /// The reader went idle since the last write: kick the writer's flush.
    need_flush: bool,
    moved: u64,
}

impl Dir {
    fn new() -> Self {
        Dir {
            buf: Vec::new(),
            pos: 0,
            end: 0,
            read_eof: false,
            done: false,
            need_flush: false,
            moved: 0,
        }
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.end && !self.read_eof {
                if self.buf.is_empty() {
                    self.buf = vec![0; MIN_BUFFER];
                } else if self.end == self.buf.len() && self.buf.len() < MAX_BUFFER {
                    // The last read filled the buffer: this direction is busy, read more at once.
                    self.buf = vec![0; self.buf.len() * 2];
                }
                let mut rb = ReadBuf::new(&mut self.buf);
                match r.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        self.pos = 0;
                        self.end = rb.filled().len();
                        if self.end == 0 {
                            self.read_eof = true;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if self.need_flush {
                            // Drive buffered writers (stdout, TLS) until their flush is
                            // done, without ever making the read side wait for it.
                            match w.as_mut().poll_flush(cx) {
                                Poll::Ready(Ok(())) => self.need_flush = false,
                                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                                Poll::Pending => {}
                            }
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.end {
                let n = ready!(w.as_mut().poll_write(cx, &self.buf[self.pos..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.moved += n as u64;
                self.need_flush = true;
            }
            if self.read_eof {
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
                self.buf = Vec::new();
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Copies both ways until both directions have ended; EOF on one side is passed on as a
/// write shutdown of the other (half-close), and an error on either ends both.
pub async fn pipe<A, B>(a: &mut A, b: &mut B) -> (PipeStats, Option<io::Error>)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let start = Instant::now();
    let (mut ab, mut ba) = (Dir::new(), Dir::new());
    let res = poll_fn(|cx| {
        if !ab.done {
            if let Poll::Ready(Err(e)) = ab.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b)) {
                return Poll::Ready(Err(e));
            }
        }
        if !ba.done {
            if let Poll::Ready(Err(e)) = ba.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a)) {
                return Poll::Ready(Err(e));
            }
        }
        if ab.done && ba.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await;
    let stats = PipeStats {
        a_to_b: ab.moved,
        b_to_a: ba.moved,
        duration: start.elapsed(),
    };
    (stats, res.err())
}

/// [`pipe`], and when it fails, [`Reset`](crate::Reset) both streams: a tunnel that breaks
/// must look broken to the applications at both ends, never like a clean end after a
/// prefix.
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> (PipeStats, Option<io::Error>)
where
    A: AsyncRead + AsyncWrite + crate::Reset + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + crate::Reset + Unpin + ?Sized,
{
    let (stats, err) = pipe(a, b).await;
    if err.is_some() {
        a.reset();
        b.reset();
    }
    (stats, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn buffered_writers_are_flushed_while_the_stream_stays_open() {
        let (mut a_user, mut a) = tokio::io::duplex(1024);
        let (b, mut b_user) = tokio::io::duplex(1024);
        // Like tokio's stdout: nothing reaches the other side before a flush.
        let mut b = tokio::io::BufWriter::new(b);
        tokio::spawn(async move { pipe(&mut a, &mut b).await });
        a_user.write_all(b"tail").await.unwrap();
        let mut got = [0u8; 4];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            b_user.read_exact(&mut got),
        )
        .await
        .expect("buffered bytes were never flushed")
        .unwrap();
        assert_eq!(&got, b"tail");
    }

    #[tokio::test]
    async fn copies_both_ways_with_half_close_and_counts() {
        let (mut a_user, mut a) = tokio::io::duplex(1 << 20);
        let (mut b, mut b_user) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(async move { pipe(&mut a, &mut b).await });
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let big2 = big.clone();
        let writer = tokio::spawn(async move {
            a_user.write_all(&big2).await.unwrap();
            a_user.shutdown().await.unwrap();
            let mut back = Vec::new();
            a_user.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        b_user.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big, "a → b intact, then EOF");
        b_user.write_all(b"reply").await.unwrap();
        b_user.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply");
        let (stats, err) = task.await.unwrap();
        assert!(err.is_none());
        assert_eq!((stats.a_to_b, stats.b_to_a), (3_000_000, 5));
    }
}
