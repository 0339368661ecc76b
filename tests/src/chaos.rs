//! A TCP proxy that cuts a random one of its connections every few hundred milliseconds:
//! the weather a tunnel meets behind NATs, flaky Wi-Fi and proxies with short limits.
//!
//! Unlike [`crate::fault::FaultProxy`], which breaks exactly one chosen request, this one
//! knows nothing of HTTP: every `interval` (a random time in the given range) it picks a
//! random open connection and closes both of its sockets, half of the time with a RST
//! (`SO_LINGER 0`) and half with a FIN.
//!
//! ```no_run
//! # async fn f() {
//! use std::time::Duration;
//! let p = pht_e2e::chaos::ChaosProxy::start(
//!     "127.0.0.1:8443".parse().unwrap(),
//!     Duration::from_millis(200)..Duration::from_millis(500),
//!     7,
//! ).await;
//! // point a client at 127.0.0.1:{p.port()}, move data, then:
//! assert!(p.cuts() > 0);
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How a connection is cut.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Fin,
    Rst,
}

#[derive(Default)]
struct Shared {
    /// Open connections: id → the way to cut it.
    live: Mutex<HashMap<u64, oneshot::Sender<Cut>>>,
    cuts: AtomicU64,
    connections: AtomicU64,
}

/// See the module docs. Dropping it stops the proxy and closes every connection.
pub struct ChaosProxy {
    port: u16,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl ChaosProxy {
    /// Proxies 127.0.0.1:(a free port) to `upstream`, cutting one connection every
    /// `interval` (uniformly random in the range); `seed` makes the choices repeatable.
    pub async fn start(upstream: SocketAddr, interval: Range<Duration>, seed: u64) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            let mut next_id = 0u64;
            loop {
                let Ok((down, _)) = l.accept().await else {
                    continue;
                };
                next_id += 1;
                let id = next_id;
                let (tx, rx) = oneshot::channel();
                s.live.lock().unwrap().insert(id, tx);
                s.connections.fetch_add(1, Ordering::Relaxed);
                let s = s.clone();
                tokio::spawn(async move {
                    if let Ok(up) = TcpStream::connect(upstream).await {
                        forward(down, up, rx).await;
                    }
                    s.live.lock().unwrap().remove(&id);
                });
            }
        });
        let s = shared.clone();
        let chaos = tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            loop {
                let wait = rng.random_range(interval.clone());
                tokio::time::sleep(wait).await;
                let victim = {
                    let mut live = s.live.lock().unwrap();
                    if live.is_empty() {
                        continue;
                    }
                    let ids: Vec<u64> = live.keys().copied().collect();
                    let id = ids[rng.random_range(0..ids.len())];
                    live.remove(&id)
                };
                let how = if rng.random_bool(0.5) {
                    Cut::Rst
                } else {
                    Cut::Fin
                };
                if let Some(tx) = victim
                    && tx.send(how).is_ok()
                {
                    s.cuts.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        ChaosProxy {
            port,
            shared,
            tasks: vec![accept, chaos],
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Dropping the senders lets every connection run on; the runtime's end closes them.
        self.shared.live.lock().unwrap().clear();
    }
}

/// Copies both ways until either side ends or the cut comes.
async fn forward(mut down: TcpStream, mut up: TcpStream, cut: oneshot::Receiver<Cut>) {
    let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
    tokio::select! {
        _ = copy => {}
        how = cut => {
            if let Ok(Cut::Rst) = how {
                let _ = down.set_zero_linger();
                let _ = up.set_zero_linger();
            }
            // Dropping both sockets closes them: with linger 0 that is a RST.
        }
    }
}
