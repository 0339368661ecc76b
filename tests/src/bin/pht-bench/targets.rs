//! The benchmark's own target server on 127.0.0.1. The first byte of a connection picks
//! what it does, so one `pht-server` forward target serves every scenario:
//!
//! - `D <len:u64>`: sends the first `len` bytes of the shared source buffer;
//! - `U <len:u64>` then `len` bytes: reads them into a pre-faulted buffer, answers `K`
//!   at once (the timing point), then the SHA-256 of what it read;
//! - `E`: echoes every further byte;
//! - `A`: answers the number of other connections the target holds (u64).
//!
//! It runs in a process of its own (`pht-bench --serve-target PORT`), so that the
//! benchmark process and the target each hold one end of every connection within their
//! open-file limits, and its CPU time is counted apart.
//!
//! Hashing happens outside the timed part on both sides, so the hash speed of this
//! machine does not cap the figures of the direct path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Mutex;

/// Listen backlog of the target (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 8192;

/// The target process's main: serves on 127.0.0.1:`port` a source of `size` bytes made
/// by `random_bytes(size, seed)`, until stdin closes (the benchmark has gone) or two
/// hours have passed.
pub fn serve_main(port: u16, size: usize, seed: u64) -> i32 {
    std::thread::spawn(|| {
        let mut b = [0u8; 64];
        use std::io::Read;
        while matches!(std::io::stdin().read(&mut b), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let source = Arc::new(pht_e2e::random_bytes(size, seed));
        let addr = match start(port, source) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("target: listen on 127.0.0.1:{port}: {e}");
                return 1;
            }
        };
        eprintln!("target listening on {addr}/tcp");
        tokio::time::sleep(std::time::Duration::from_secs(2 * 3600)).await;
        0
    })
}

/// How many connections the target at `port` holds, besides the one asking.
pub async fn active(port: u16) -> Option<usize> {
    let q = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"A").await?;
        s.read_u64().await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), q).await {
        Ok(Ok(n)) => Some(n as usize),
        _ => None,
    }
}

struct Shared {
    source: Arc<Vec<u8>>,
    sink: Mutex<Vec<u8>>,
    active: Arc<AtomicUsize>,
}

/// Decrements the active-connection count when a connection task ends.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts the target; `source` is what downloads send, uploads may be as long as it.
fn start(port: u16, source: Arc<Vec<u8>>) -> std::io::Result<SocketAddr> {
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let listener = sock.listen(BACKLOG)?;
    let addr = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    // Pre-faulted, so page faults of a fresh buffer do not land in the upload timing.
    let sink = vec![0xA5u8; source.len()];
    let shared = Arc::new(Shared {
        source,
        sink: Mutex::new(sink),
        active: active.clone(),
    });
    tokio::spawn(async move {
        loop {
            let (s, _) = match listener.accept().await {
                Ok(c) => c,
                Err(_) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
            };
            shared.active.fetch_add(1, Ordering::Relaxed);
            let guard = Active(shared.active.clone());
            let shared = shared.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let _ = serve(s, &shared).await;
            });
        }
    });
    Ok(addr)
}

async fn serve(mut s: TcpStream, shared: &Shared) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut cmd = [0u8; 1];
    s.read_exact(&mut cmd).await?;
    match cmd[0] {
        b'D' => {
            let len = (s.read_u64().await? as usize).min(shared.source.len());
            s.write_all(&shared.source[..len]).await?;
            drain(&mut s).await
        }
        b'U' => {
            let len = s.read_u64().await? as usize;
            let mut sink = shared.sink.lock().await;
            if len > sink.len() {
                return Ok(());
            }
            let mut off = 0;
            while off < len {
                let n = s.read(&mut sink[off..len]).await?;
                if n == 0 {
                    return Ok(());
                }
                off += n;
            }
            s.write_all(b"K").await?;
            let digest = Sha256::digest(&sink[..len]);
            drop(sink);
            s.write_all(&digest).await?;
            drain(&mut s).await
        }
        b'E' => {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                s.write_all(&buf[..n]).await?;
            }
        }
        b'A' => {
            let others = shared.active.load(Ordering::Relaxed).saturating_sub(1);
            s.write_u64(others as u64).await
        }
        _ => Ok(()),
    }
}

/// Waits for the peer to hang up, so nothing sent is cut short by our close.
async fn drain(s: &mut TcpStream) -> std::io::Result<()> {
    let mut sink = [0u8; 256];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}
