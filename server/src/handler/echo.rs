//! `echo` (this project's addition; gost has no such handler): every byte a client sends
//! comes back to it, and its end of stream is answered with one. A target to try tunnels
//! against and measure them with, on any listener: `-L echo://127.0.0.1:7007` (TCP),
//! `-L echo+pht://127.0.0.1:8446` (straight behind a tunnel).

use std::time::Instant;

use futures::future::BoxFuture;
use pht_runtime::Reset;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::info;

use super::{Handler, HandlerError};
use crate::config::ServiceConfig;
use crate::listener::Accepted;

/// First read buffer. It doubles while reads fill it, so idle connections stay cheap and
/// a bulk transfer still moves [`MAX_BUFFER`] per read.
const MIN_BUFFER: usize = 4 * 1024;
const MAX_BUFFER: usize = 128 * 1024;

pub struct EchoHandler {
    service: String,
}

impl EchoHandler {
    pub fn new(svc: &ServiceConfig) -> Result<Self, HandlerError> {
        Ok(EchoHandler {
            service: svc.name.clone(),
        })
    }
}

impl Handler for EchoHandler {
    fn handle(&self, mut conn: Accepted) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let peer = conn.peer;
            let tag = conn.tag.as_deref().unwrap_or("");
            let started = Instant::now();
            let mut echoed = 0u64;
            let result = echo(&mut conn.stream, &mut echoed).await;
            if result.is_err() {
                // The client must not take a broken echo for a finished one.
                conn.stream.reset();
            }
            crate::metrics::transfer(&self.service, echoed, echoed);
            info!(
                service = %self.service, %peer, token = tag,
                bytes = echoed, duration = ?started.elapsed(),
                error = result.err().map(|e| e.to_string()),
                "echo: {peer} done"
            );
        })
    }
}

/// Writes back what `stream` reads, until its end of stream, which it answers with its
/// own (a half-close: the client may still be reading). `echoed` counts the bytes sent
/// back, also when an error cuts it short.
async fn echo<S>(stream: &mut S, echoed: &mut u64) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; MIN_BUFFER];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
        // A TLS stream holds written bytes until flushed; TCP and PHT flush at no cost.
        stream.flush().await?;
        *echoed += n as u64;
        if n == buf.len() && buf.len() < MAX_BUFFER {
            buf = vec![0; buf.len() * 2];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::testutil;

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn echoes_every_byte_in_order_and_answers_the_end_of_stream() {
        let client = testutil::start(testutil::build("echo", None, &[]));
        let (mut rd, mut wr) = tokio::io::split(client);
        // More than the in-memory pipe holds, so reading and writing must interleave.
        let sent: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let to_send = sent.clone();
        let writer = tokio::spawn(async move {
            for chunk in to_send.chunks(70_001) {
                wr.write_all(chunk).await.unwrap();
            }
            wr.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        tokio::time::timeout(LIMIT, rd.read_to_end(&mut got))
            .await
            .expect("the echo ends its side after the client's end of stream")
            .unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the echoed bytes differ from the sent ones");
    }

    #[tokio::test]
    async fn goes_on_echoing_after_a_pause_and_keeps_nothing_back() {
        let mut client = testutil::start(testutil::build("echo", None, &[]));
        for msg in [&b"one"[..], b"two, after a pause", b"x"] {
            client.write_all(msg).await.unwrap();
            let mut got = vec![0u8; msg.len()];
            tokio::time::timeout(LIMIT, client.read_exact(&mut got))
                .await
                .expect("each message comes back before the next is sent")
                .unwrap();
            assert_eq!(got, msg);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
