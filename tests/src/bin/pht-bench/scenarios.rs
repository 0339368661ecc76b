//! The measurements. Each takes the local port to connect to: the target itself (direct)
//! or `pht-client`'s entry port (tunnel). Every loop is bounded in count and in time.

use std::future::Future;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the target may take to see every tunnel closed once all are released.
pub const CLOSE_WAIT: Duration = Duration::from_secs(20);

/// Time allowed for any single connect, echo or setup.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// `f` with a deadline; a timeout becomes an error.
pub async fn within<T>(
    d: Duration,
    what: &str,
    f: impl Future<Output = std::io::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(d, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {d:?}")),
    }
}

/// Time allowed for moving `len` bytes once: generous even for a slow debug build.
pub fn bulk_timeout(len: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_secs_f64(len as f64 / 1e6)
}

pub struct Bulk {
    pub secs: f64,
    pub mb_s: f64,
    pub hash_ok: bool,
    pub error: Option<String>,
}

impl Bulk {
    fn failed(e: String) -> Bulk {
        Bulk {
            secs: 0.0,
            mb_s: 0.0,
            hash_ok: false,
            error: Some(e),
        }
    }
}

/// Receives `recv.len()` bytes of the target's source into `recv`; the clock runs from
/// connect to the last byte; the hash is compared afterwards.
pub async fn download(port: u16, recv: &mut [u8], want: &[u8; 32]) -> Bulk {
    let len = recv.len();
    let start = Instant::now();
    let r = within(bulk_timeout(len), "download", async {
        let mut s = connect(port).await?;
        let mut head = [0u8; 9];
        head[0] = b'D';
        head[1..].copy_from_slice(&(len as u64).to_be_bytes());
        s.write_all(&head).await?;
        let mut off = 0;
        while off < len {
            let n = s.read(&mut recv[off..]).await?;
            if n == 0 {
                return Err(std::io::Error::other(format!(
                    "stream ended after {off} of {len} bytes"
                )));
            }
            off += n;
        }
        Ok(s)
    })
    .await;
    let secs = start.elapsed().as_secs_f64();
    match r {
        Ok(s) => {
            drop(s);
            let got: [u8; 32] = Sha256::digest(&*recv).into();
            Bulk {
                secs,
                mb_s: len as f64 / secs / 1e6,
                hash_ok: &got == want,
                error: (&got != want).then(|| "download: SHA-256 differs".to_string()),
            }
        }
        Err(e) => Bulk::failed(e),
    }
}

/// Sends `data`; the clock runs from connect to the target's `K` (all bytes arrived); the
/// target's SHA-256 of what it got is compared with `want`.
pub async fn upload(port: u16, data: &[u8], want: &[u8; 32]) -> Bulk {
    let len = data.len();
    let start = Instant::now();
    let mut secs = 0.0;
    let r = within(bulk_timeout(len), "upload", async {
        let mut s = connect(port).await?;
        let mut head = [0u8; 9];
        head[0] = b'U';
        head[1..].copy_from_slice(&(len as u64).to_be_bytes());
        s.write_all(&head).await?;
        s.write_all(data).await?;
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack).await?;
        secs = start.elapsed().as_secs_f64();
        let mut digest = [0u8; 32];
        s.read_exact(&mut digest).await?;
        Ok((ack[0] == b'K', digest))
    })
    .await;
    match r {
        Ok((ack_ok, got)) => Bulk {
            secs,
            mb_s: len as f64 / secs / 1e6,
            hash_ok: ack_ok && &got == want,
            error: (!ack_ok || &got != want).then(|| "upload: SHA-256 differs".to_string()),
        },
        Err(e) => Bulk::failed(e),
    }
}

pub struct Latencies {
    pub requested: usize,
    /// Round trips (or setups) that came back right, in order.
    pub samples: Vec<Duration>,
    pub error: Option<String>,
}

/// Round trips of 64 bytes on one connection (after `warmup` uncounted ones).
pub async fn ping_pong(port: u16, n: usize, warmup: usize) -> Latencies {
    let mut samples = Vec::with_capacity(n);
    let deadline = Duration::from_secs(60) + STEP_TIMEOUT;
    let r = within(deadline, "ping-pong", async {
        let mut s = connect(port).await?;
        s.write_all(b"E").await?;
        let mut msg = [0u8; 64];
        let mut back = [0u8; 64];
        for i in 0..(warmup + n) {
            msg[..8].copy_from_slice(&(i as u64).to_be_bytes());
            msg[8] = msg[8].wrapping_add(1);
            let t = Instant::now();
            s.write_all(&msg).await?;
            s.read_exact(&mut back).await?;
            let rtt = t.elapsed();
            if back != msg {
                return Err(std::io::Error::other(format!(
                    "round trip {i}: echo differs"
                )));
            }
            if i >= warmup {
                samples.push(rtt);
            }
        }
        Ok(())
    })
    .await;
    Latencies {
        requested: n,
        samples,
        error: r.err(),
    }
}

/// `n` fresh connections one after another: connect, send one byte, time to its echo.
pub async fn setups(port: u16, n: usize) -> Latencies {
    let mut samples = Vec::with_capacity(n);
    let mut error = None;
    for i in 0..n {
        let start = Instant::now();
        let r = within(STEP_TIMEOUT, "setup", async {
            let mut s = connect(port).await?;
            s.write_all(&[b'E', i as u8]).await?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await?;
            let took = start.elapsed();
            if b[0] != i as u8 {
                return Err(std::io::Error::other("echo differs"));
            }
            Ok(took)
        })
        .await;
        match r {
            Ok(took) => samples.push(took),
            Err(e) => {
                error.get_or_insert(format!("setup {i}: {e}"));
            }
        }
    }
    Latencies {
        requested: n,
        samples,
        error,
    }
}

/// Median and 99th percentile (nearest rank), in microseconds.
pub fn median_p99_us(samples: &[Duration]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    v.sort_by(f64::total_cmp);
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, rank(0.99))
}

pub struct Concurrent {
    pub requested: usize,
    pub succeeded: usize,
    /// From the first connect until every tunnel has echoed its KiB (or failed).
    pub open_secs: f64,
    /// Per tunnel: connect to echo complete.
    pub per_tunnel: Vec<Duration>,
    /// From the release of all tunnels until the target holds no connection.
    pub close_secs: f64,
    pub closed_clean: bool,
    /// Connections the target still held when the close wait ended.
    pub left_open: usize,
    pub first_error: Option<String>,
    pub errors: usize,
}

/// What to do while every tunnel is open (sample memory, count connections).
pub type AtPeak<'a> = Box<dyn FnMut() + 'a>;

/// `n` tunnels at once: each connects, sends 1 KiB, reads it back, then stays open until
/// all have done so (or failed); `at_peak` runs then; all are closed together, and the
/// close is done when the target at `target_port` holds `baseline` connections again.
pub async fn concurrent(
    port: u16,
    n: usize,
    mut at_peak: AtPeak<'_>,
    target_port: u16,
    baseline: usize,
) -> Concurrent {
    let open_deadline = Duration::from_secs(120);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (res_tx, mut res_rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let res_tx = res_tx.clone();
        let mut release = release_rx.clone();
        tasks.spawn(async move {
            let t = Instant::now();
            let r = within(open_deadline, "tunnel", async {
                let mut s = connect(port).await?;
                let mut msg = vec![0u8; 1 + 1024];
                msg[0] = b'E';
                for (j, b) in msg[1..].iter_mut().enumerate() {
                    *b = (i + j) as u8;
                }
                s.write_all(&msg).await?;
                let mut back = vec![0u8; 1024];
                s.read_exact(&mut back).await?;
                if back[..] != msg[1..] {
                    return Err(std::io::Error::other("echo differs"));
                }
                Ok(s)
            })
            .await;
            match r {
                Ok(s) => {
                    let _ = res_tx.send(Ok(t.elapsed()));
                    // Hold the tunnel open until all are open (bounded).
                    let _ = tokio::time::timeout(
                        open_deadline + Duration::from_secs(60),
                        release.wait_for(|r| *r),
                    )
                    .await;
                    drop(s);
                }
                Err(e) => {
                    let _ = res_tx.send(Err(e));
                }
            }
        });
    }
    drop(res_tx);
    let mut per_tunnel = Vec::with_capacity(n);
    let mut errors = 0;
    let mut first_error = None;
    let hard_stop = start + open_deadline + Duration::from_secs(10);
    for _ in 0..n {
        match tokio::time::timeout_at(hard_stop.into(), res_rx.recv()).await {
            Ok(Some(Ok(d))) => per_tunnel.push(d),
            Ok(Some(Err(e))) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let open_secs = start.elapsed().as_secs_f64();
    let succeeded = per_tunnel.len();
    if succeeded + errors < n {
        first_error.get_or_insert(format!(
            "{} tunnels neither opened nor failed in time",
            n - succeeded - errors
        ));
    }
    at_peak();
    let released = Instant::now();
    let _ = release_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    // Every tunnel closed end to end: the target has let go of its connections. (Waiting
    // longer than the server's idle timeout, 60 s by default, would hide tunnels that
    // only the idle reaper closes.)
    let close_deadline = released + CLOSE_WAIT;
    let mut closed_clean = false;
    let mut left = None;
    while Instant::now() < close_deadline {
        left = crate::targets::active(target_port).await;
        if left.is_some_and(|a| a <= baseline) {
            closed_clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left_open = left.map_or(0, |l| l.saturating_sub(baseline));
    Concurrent {
        requested: n,
        succeeded,
        open_secs,
        per_tunnel,
        close_secs: released.elapsed().as_secs_f64(),
        closed_clean,
        left_open,
        first_error,
        errors,
    }
}
