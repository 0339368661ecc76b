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

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// First buffer per direction.
const MIN_BUFFER: usize = 4 * 1024;
/// Largest buffer per direction.
const MAX_BUFFER: usize = 256 * 1024;

/// A stream that hands out and takes whole buffers: an in-memory pipe, a tunnel. Found
/// through [`Reset::as_chunked`](crate::Reset::as_chunked); [`splice`] moves bytes
/// through it without a copy into a buffer of its own.
pub trait Chunked {
    /// The next bytes, at most `max`; `None` at the clean end.
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Option<Bytes>>>;

    /// Takes bytes from the front of `data` (all of them while there is room); pending
    /// only when it can take none.
    fn poll_write_chunk(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>>;
}

/// How the pump finds a stream's [`Chunked`] side, if it looks for one.
type AsChunked<S> = fn(&mut S) -> Option<&mut dyn Chunked>;

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
    /// Where reads land; what was read is split off into `pending`, and the allocation is
    /// used again once the writer let go of it.
    fill: BytesMut,
    /// How much the next read asks for: grows while reads fill it.
    size: usize,
    /// Read and not written yet.
    pending: Bytes,
    read_eof: bool,
    done: bool,
    /// The reader went idle since the last write: kick the writer's flush.
    need_flush: bool,
    moved: u64,
}

impl Dir {
    fn new() -> Self {
        Dir {
            fill: BytesMut::new(),
            size: MIN_BUFFER,
            pending: Bytes::new(),
            read_eof: false,
            done: false,
            need_flush: false,
            moved: 0,
        }
    }

    /// The reader's next bytes (empty at EOF).
    fn poll_fill<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        chunked: AsChunked<R>,
    ) -> Poll<io::Result<Bytes>>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        if let Some(c) = chunked(r) {
            return Poll::Ready(
                ready!(c.poll_read_chunk(cx, MAX_BUFFER)).map(Option::unwrap_or_default),
            );
        }
        if self.fill.capacity() < self.size {
            // Reuses the allocation when nothing read from it is still held.
            self.fill.reserve(self.size);
        }
        let room = self.fill.capacity();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(r),
            cx,
            &mut self.fill
        ))?;
        if n == room && self.size < MAX_BUFFER {
            // The read filled the buffer: this direction is busy, read more at once.
            self.size *= 2;
        }
        Poll::Ready(Ok(self.fill.split().freeze()))
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        (rc, wc): (AsChunked<R>, AsChunked<W>),
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.pending.is_empty() && !self.read_eof {
                match self.poll_fill(cx, r, rc) {
                    Poll::Ready(Ok(b)) => {
                        self.read_eof = b.is_empty();
                        self.pending = b;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if self.need_flush {
                            // Drive buffered writers (stdout, TLS) until their flush is
                            // done, without ever making the read side wait for it.
                            match Pin::new(&mut *w).poll_flush(cx) {
                                Poll::Ready(Ok(())) => self.need_flush = false,
                                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                                Poll::Pending => {}
                            }
                        }
                        return Poll::Pending;
                    }
                }
            }
            while !self.pending.is_empty() {
                let before = self.pending.len();
                if let Some(c) = wc(w) {
                    ready!(c.poll_write_chunk(cx, &mut self.pending))?;
                } else {
                    let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.pending))?;
                    self.pending.advance(n);
                }
                let n = before - self.pending.len();
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.moved += n as u64;
                self.need_flush = true;
            }
            if self.read_eof {
                ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                self.done = true;
                self.fill = BytesMut::new();
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
    pump(a, b, |_| None, |_| None).await
}

async fn pump<A, B>(
    a: &mut A,
    b: &mut B,
    ac: AsChunked<A>,
    bc: AsChunked<B>,
) -> (PipeStats, Option<io::Error>)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let start = Instant::now();
    let (mut ab, mut ba) = (Dir::new(), Dir::new());
    let res = poll_fn(|cx| {
        if !ab.done {
            if let Poll::Ready(Err(e)) = ab.poll(cx, &mut *a, &mut *b, (ac, bc)) {
                return Poll::Ready(Err(e));
            }
        }
        if !ba.done {
            if let Poll::Ready(Err(e)) = ba.poll(cx, &mut *b, &mut *a, (bc, ac)) {
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
/// prefix. Streams that are [`Chunked`] get and give whole buffers, uncopied.
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> (PipeStats, Option<io::Error>)
where
    A: AsyncRead + AsyncWrite + crate::Reset + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + crate::Reset + Unpin + ?Sized,
{
    let (stats, err) = pump(a, b, |s| s.as_chunked(), |s| s.as_chunked()).await;
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

    /// `n` bytes from `a_user` to `b_user`, then a half-close; a reply the other way after
    /// it; both checked.
    async fn exchange(
        mut a_user: tokio::io::DuplexStream,
        mut b_user: tokio::io::DuplexStream,
        n: u32,
    ) {
        let big: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
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
        assert!(got == big, "a → b intact, then EOF");
        b_user.write_all(b"reply").await.unwrap();
        b_user.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply");
    }

    /// A stream that counts how often it was asked for and given whole buffers.
    struct Counting {
        io: tokio::io::DuplexStream,
        chunk_reads: usize,
        chunk_writes: usize,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    impl Chunked for Counting {
        fn poll_read_chunk(
            &mut self,
            cx: &mut Context<'_>,
            max: usize,
        ) -> Poll<io::Result<Option<Bytes>>> {
            let mut b = BytesMut::with_capacity(max.min(4096));
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.io),
                cx,
                &mut b
            ))?;
            self.chunk_reads += 1;
            Poll::Ready(Ok((n > 0).then(|| b.freeze())))
        }
        fn poll_write_chunk(
            &mut self,
            cx: &mut Context<'_>,
            data: &mut Bytes,
        ) -> Poll<io::Result<()>> {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, data))?;
            data.advance(n);
            self.chunk_writes += 1;
            Poll::Ready(Ok(()))
        }
    }

    impl crate::Reset for Counting {
        fn reset(&mut self) {}
        fn as_chunked(&mut self) -> Option<&mut dyn Chunked> {
            Some(self)
        }
    }

    #[tokio::test]
    async fn splice_moves_whole_buffers_through_chunked_streams_and_pipe_does_not() {
        for use_splice in [true, false] {
            let (a_user, a) = tokio::io::duplex(1 << 16);
            let (b, b_user) = tokio::io::duplex(1 << 16);
            let task = tokio::spawn(async move {
                let mut a = Counting {
                    io: a,
                    chunk_reads: 0,
                    chunk_writes: 0,
                };
                let mut b = b;
                let (stats, err) = if use_splice {
                    splice(&mut a, &mut b).await
                } else {
                    pipe(&mut a, &mut b).await
                };
                (stats, err, a.chunk_reads, a.chunk_writes)
            });
            exchange(a_user, b_user, 1_000_000).await;
            let (stats, err, reads, writes) = task.await.unwrap();
            assert!(err.is_none());
            assert_eq!((stats.a_to_b, stats.b_to_a), (1_000_000, 5));
            if use_splice {
                assert!(
                    reads > 1 && writes >= 1,
                    "splice: {reads} chunk reads, {writes} writes"
                );
            } else {
                assert_eq!((reads, writes), (0, 0), "pipe looks for no chunks");
            }
        }
    }

    #[tokio::test]
    async fn copies_both_ways_with_half_close_and_counts() {
        let (a_user, mut a) = tokio::io::duplex(1 << 20);
        let (mut b, b_user) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(async move { pipe(&mut a, &mut b).await });
        exchange(a_user, b_user, 3_000_000).await;
        let (stats, err) = task.await.unwrap();
        assert!(err.is_none());
        assert_eq!((stats.a_to_b, stats.b_to_a), (3_000_000, 5));
    }
}
