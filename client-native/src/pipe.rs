//! Splicing two byte streams together, as every forwarder and handler does.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

/// Copy buffer per direction: large enough that a tunnel's coalesced pushes fill up.
const PIPE_BUFFER: usize = 64 * 1024;

/// What [`pipe`] moved.
#[derive(Debug, Clone, Copy, Default)]
pub struct PipeStats {
    /// Bytes from `a` to `b`.
    pub a_to_b: u64,
    /// Bytes from `b` to `a`.
    pub b_to_a: u64,
    pub duration: Duration,
}

/// Copies both ways until both directions have ended; EOF on one side is passed on as a
/// write shutdown of the other (half-close), and an error on either ends both.
pub async fn pipe<A, B>(a: &mut A, b: &mut B) -> (PipeStats, Option<std::io::Error>)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let start = Instant::now();
    let res = tokio::io::copy_bidirectional_with_sizes(a, b, PIPE_BUFFER, PIPE_BUFFER).await;
    let duration = start.elapsed();
    match res {
        Ok((a_to_b, b_to_a)) => (
            PipeStats {
                a_to_b,
                b_to_a,
                duration,
            },
            None,
        ),
        Err(e) => (
            PipeStats {
                duration,
                ..Default::default()
            },
            Some(e),
        ),
    }
}
