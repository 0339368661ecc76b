//! A scripted peer for handshake tests: reads return a fixed script (at most `chunk` bytes
//! per read, then EOF), writes are recorded.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

pub struct Mock {
    pub script: Vec<u8>,
    pub pos: usize,
    /// Largest read answered at once (exercises split responses).
    pub chunk: usize,
    pub written: Vec<u8>,
    /// Number of `poll_read` calls.
    pub reads: usize,
}

impl Mock {
    pub fn new(script: &[u8]) -> Self {
        Mock {
            script: script.to_vec(),
            pos: 0,
            chunk: usize::MAX,
            written: Vec::new(),
            reads: 0,
        }
    }

    pub fn chunked(script: &[u8], chunk: usize) -> Self {
        Mock {
            chunk,
            ..Mock::new(script)
        }
    }

    pub fn unread(&self) -> &[u8] {
        &self.script[self.pos..]
    }
}

impl AsyncRead for Mock {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.reads += 1;
        let n = buf.len().min(this.chunk).min(this.script.len() - this.pos);
        buf[..n].copy_from_slice(&this.script[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Mock {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
