//! A UDP relay on 127.0.0.1 that drops a share of the datagrams it carries, each way: a
//! lossy path for QUIC (h3) tests. Drops are drawn from a seeded generator, so a run
//! loses the same packets in the same order of arrival.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

/// What the relay did so far.
#[derive(Debug, Default)]
pub struct LossCounts {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
}

/// A running relay; it stops when the test's runtime ends.
pub struct LossyUdp {
    /// Where clients send their datagrams.
    pub addr: SocketAddr,
    pub counts: Arc<LossCounts>,
    /// Bumped by [`LossyUdp::rebind`].
    generation: Arc<AtomicU64>,
}

impl LossyUdp {
    /// From the next datagram on, each client's traffic leaves from a new source port, as
    /// when a NAT forgets a mapping or a laptop changes networks: the upstream sees the
    /// same client arrive from another address.
    pub fn rebind(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts a relay to `upstream` that drops each datagram with probability `loss`, in
/// both directions. Each client address gets its own upstream socket, so answers find
/// their way back.
pub async fn lossy_udp(upstream: SocketAddr, loss: f64, seed: u64) -> LossyUdp {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let counts = Arc::new(LossCounts::default());
    let rng = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)));
    let generation = Arc::new(AtomicU64::new(0));
    let (c, r, g) = (counts.clone(), rng.clone(), generation.clone());
    tokio::spawn(async move {
        let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut seen = 0;
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, from)) = front.recv_from(&mut buf).await else {
                continue;
            };
            let now = g.load(Ordering::Relaxed);
            if now != seen {
                // The old sockets stay open: answers still on their way there get through.
                seen = now;
                backs.clear();
            }
            let back = match backs.get(&from) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    b.connect(upstream).await.unwrap();
                    backs.insert(from, b.clone());
                    tokio::spawn(answers(
                        b.clone(),
                        front.clone(),
                        from,
                        c.clone(),
                        r.clone(),
                        loss,
                    ));
                    b
                }
            };
            if drop_one(&r, loss).await {
                c.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                c.forwarded.fetch_add(1, Ordering::Relaxed);
                let _ = back.send(&buf[..n]).await;
            }
        }
    });
    LossyUdp {
        addr,
        counts,
        generation,
    }
}

async fn drop_one(rng: &Mutex<rand::rngs::StdRng>, loss: f64) -> bool {
    rng.lock().await.random_bool(loss)
}

/// Carries the upstream's datagrams back to the client `to`, with the same losses.
async fn answers(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    to: SocketAddr,
    counts: Arc<LossCounts>,
    rng: Arc<Mutex<rand::rngs::StdRng>>,
    loss: f64,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok(n) = back.recv(&mut buf).await else {
            continue;
        };
        if drop_one(&rng, loss).await {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            counts.forwarded.fetch_add(1, Ordering::Relaxed);
            let _ = front.send_to(&buf[..n], to).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn about_the_asked_share_is_dropped_and_the_rest_arrives_both_ways() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut b).await {
                let _ = echo.send_to(&b[..n], from).await;
            }
        });
        let relay = lossy_udp(echo_addr, 0.1, 7).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(relay.addr).await.unwrap();
        let mut back = 0;
        for i in 0..2000u32 {
            client.send(&i.to_be_bytes()).await.unwrap();
            let mut b = [0u8; 4];
            if let Ok(Ok(4)) =
                tokio::time::timeout(std::time::Duration::from_millis(20), client.recv(&mut b))
                    .await
            {
                back += 1;
            }
        }
        let dropped = relay.counts.dropped.load(Ordering::Relaxed);
        // Each round trip crosses the relay twice: about 0.9² of them come back.
        assert!((1400..1800).contains(&back), "{back} of 2000 came back");
        assert!((200..600).contains(&dropped), "{dropped} dropped");
    }
}
