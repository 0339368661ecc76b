//! Ending a stream as an error: what a forwarder does to both sides when either breaks,
//! so that no application mistakes a failure for a clean end.

use tokio::net::TcpStream;

/// A byte stream that can end as an error for its peer.
///
/// ```no_run
/// # use tokio_util::compat::Compat;
/// # async fn demo(mut local: tokio::net::TcpStream, mut tunnel: Compat<pht_core::Tunnel>) {
/// // Copy both ways; on a failure both peers see a reset, never a clean end.
/// let (stats, err) = pht_runtime::splice(&mut local, &mut tunnel).await;
/// if let Some(e) = err {
///     eprintln!("tunnel broke after {} bytes down: {e}", stats.b_to_a);
/// }
/// # }
/// ```
pub trait Reset {
    /// Makes the peer see an error instead of a clean end: a TCP reset (RST) once the
    /// socket is dropped, or a PHT reset request. Call it, then drop the stream.
    fn reset(&mut self);

    /// The stream as one that hands out and takes whole buffers, if it is one (an
    /// in-memory pipe, a tunnel): [`splice`](crate::splice) then moves its bytes without
    /// copying them through a buffer of its own. A wrapper that changes the bytes on
    /// their way (counts them, puts some back in front) keeps the default.
    fn as_chunked(&mut self) -> Option<&mut dyn crate::Chunked> {
        None
    }
}

impl Reset for TcpStream {
    fn reset(&mut self) {
        // SO_LINGER 0: closing sends RST instead of FIN, and never blocks.
        let _ = self.set_zero_linger();
    }
}

impl Reset for pht_core::Tunnel {
    fn reset(&mut self) {
        pht_core::Tunnel::reset(self);
    }

    fn as_chunked(&mut self) -> Option<&mut dyn crate::Chunked> {
        Some(self)
    }
}

impl crate::Chunked for pht_core::Tunnel {
    fn poll_read_chunk(
        &mut self,
        cx: &mut std::task::Context<'_>,
        max: usize,
    ) -> std::task::Poll<std::io::Result<Option<bytes::Bytes>>> {
        self.poll_read_bytes(cx, max)
    }

    fn poll_write_chunk(
        &mut self,
        cx: &mut std::task::Context<'_>,
        data: &mut bytes::Bytes,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_write_bytes(cx, data)
    }
}

impl<S: Reset> Reset for pht_core::Connected<S> {
    fn reset(&mut self) {
        self.get_mut().reset();
    }
}

impl<S: Reset> Reset for tokio_util::compat::Compat<S> {
    fn reset(&mut self) {
        self.get_mut().reset();
    }

    fn as_chunked(&mut self) -> Option<&mut dyn crate::Chunked> {
        self.get_mut().as_chunked()
    }
}

impl<S: Reset> Reset for tokio_rustls::client::TlsStream<S> {
    fn reset(&mut self) {
        self.get_mut().0.reset();
    }
}

impl<S: Reset> Reset for tokio_rustls::server::TlsStream<S> {
    fn reset(&mut self) {
        self.get_mut().0.reset();
    }
}

impl<S: Reset + ?Sized> Reset for Box<S> {
    fn reset(&mut self) {
        (**self).reset();
    }

    fn as_chunked(&mut self) -> Option<&mut dyn crate::Chunked> {
        (**self).as_chunked()
    }
}

/// In-memory pipes have no way to signal an error; dropping one is all there is.
impl Reset for tokio::io::DuplexStream {
    fn reset(&mut self) {}
}
