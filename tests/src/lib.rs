//! Harness for the end-to-end tests: spawn the real binaries on 127.0.0.1, run target
//! servers, move bytes and compare hashes.

pub mod fault;
pub mod lossy_udp;
pub mod middlebox;
pub mod raw;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where cargo put the binaries (`target/debug` next to the test executable's `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A free port on 127.0.0.1 (bound, then released for a child process to take).
///
/// Taken below the kernel's ephemeral range (32768 and up here), which every outgoing
/// connection draws its local port from: a port from that range can be taken by some
/// test's client connection before the child process binds it. Ports are handed out
/// in turn from a random start, so concurrent tests (and test binaries) rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let seed = rand::random::<u32>() % SPAN;
        let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped; its stderr goes to a log file kept for failures.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `name` with `args` and waits until it logs that it listens on `port`.
    /// (Probing with a connection would open a tunnel and disturb single-shot targets.)
    pub async fn start(name: &str, args: &[&str], port: u16) -> Proc {
        Self::start_env(name, args, port, &[]).await
    }

    /// Like [`Proc::start`], with extra environment variables (e.g. a private `HOME`).
    /// The proxy variables of the test's own environment ([`PROXY_ENV`]) are not passed
    /// on; set them here to test them.
    pub async fn start_env(name: &str, args: &[&str], port: u16, env: &[(&str, &str)]) -> Proc {
        let log = std::env::temp_dir().join(format!("pht-e2e-{name}-{port}.log"));
        let mut cmd = Command::new(bin(name));
        for var in PROXY_ENV {
            cmd.env_remove(var);
        }
        let child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut p = Proc { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if p.log_text().contains(&format!(":{port}/")) {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("{name} exited with {status}: {}", p.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on {port}: {}",
                p.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id (to read its /proc entries).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and returns at once (see [`Proc::exited_within`]).
    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// The exit status, if the process ends within `limit`.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.sigterm();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy variables `pht-client` reads as curl does: never inherited by the binaries
/// [`Proc`] starts, so a proxy set on the test machine cannot reroute the tunnels.
pub const PROXY_ENV: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// A fresh directory under the system temp dir, removed (with its contents) when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "pht-e2e-{prefix}-{}-{n}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// A path inside the directory, as a string (for command lines and config files).
    pub fn join(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server started with `pht-server`, plus the port it serves on.
pub async fn server(args: &[&str], port: u16) -> Proc {
    Proc::start("pht-server", args, port).await
}

/// A forwarding `pht-client` on a fresh local port; returns it with that port.
pub async fn client(node: &str) -> (Proc, u16) {
    let port = free_port();
    let l = format!("tcp://127.0.0.1:{port}");
    (
        Proc::start("pht-client", &["-L", &l, "-F", node], port).await,
        port,
    )
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A listener for a test target, with a backlog deep enough for a thousand connects at
/// once (a shallow one drops SYNs, and the late ones get reset).
pub async fn target_listener() -> TcpListener {
    pht_runtime::listen("127.0.0.1:0").await.unwrap()
}

/// An echo server on 127.0.0.1: every connection gets its bytes back.
pub async fn echo_target() -> SocketAddr {
    named_echo_target("").await
}

/// An echo server that first writes `name` (when not empty) and a newline, so that a
/// client learns which of several servers its connection reached; then it echoes.
pub async fn named_echo_target(name: &'static str) -> SocketAddr {
    let l = target_listener().await;
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                // A connection reset before accept: keep serving the others.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            tokio::spawn(async move {
                if !name.is_empty() && s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A bulk target speaking a tiny protocol, so each direction is measured on its own:
/// `U <len:u64>` then `len` bytes → answers their SHA-256;
/// `D <len:u64> <seed:u64>` → sends `random_bytes(len, seed)`;
/// `E` → echoes every later byte (for a tunnel kept idle beside the bulk ones).
pub async fn bulk_target() -> SocketAddr {
    let l = target_listener().await;
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                // A connection reset before accept: keep serving the others.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            tokio::spawn(async move {
                let mut cmd = [0u8; 1];
                if s.read_exact(&mut cmd).await.is_err() {
                    return;
                }
                if cmd[0] == b'E' {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    return;
                }
                let len = s.read_u64().await.unwrap_or(0) as usize;
                match cmd[0] {
                    b'U' => {
                        let mut h = Sha256::new();
                        let mut left = len;
                        let mut buf = vec![0u8; 256 * 1024];
                        while left > 0 {
                            let n = s.read(&mut buf[..left.min(256 * 1024)]).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            h.update(&buf[..n]);
                            left -= n;
                        }
                        let _ = s.write_all(&h.finalize()).await;
                    }
                    b'D' => {
                        let seed = s.read_u64().await.unwrap_or(0);
                        let _ = s.write_all(&random_bytes(len, seed)).await;
                    }
                    _ => {}
                }
                // Wait for the client to hang up so nothing is cut short.
                let mut sink = [0u8; 64];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Sends `data` through `local` to a bulk target; returns the target's SHA-256 and MB/s.
pub async fn upload(local: u16, data: &[u8]) -> ([u8; 32], f64) {
    let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let start = Instant::now();
    s.write_all(b"U").await.unwrap();
    s.write_u64(data.len() as u64).await.unwrap();
    s.write_all(data).await.unwrap();
    let mut digest = [0u8; 32];
    s.read_exact(&mut digest).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    (digest, data.len() as f64 / secs / 1e6)
}

/// Receives `len` bytes generated from `seed` through `local`; returns their SHA-256 and MB/s.
pub async fn download(local: u16, len: usize, seed: u64) -> ([u8; 32], f64) {
    let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let start = Instant::now();
    s.write_all(b"D").await.unwrap();
    s.write_u64(len as u64).await.unwrap();
    s.write_u64(seed).await.unwrap();
    let mut h = Sha256::new();
    let mut left = len;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let n = s.read(&mut buf[..left.min(256 * 1024)]).await.unwrap();
        assert!(n > 0, "stream ended with {left} bytes missing");
        h.update(&buf[..n]);
        left -= n;
    }
    let secs = start.elapsed().as_secs_f64();
    (h.finalize().into(), len as f64 / secs / 1e6)
}

/// Sends `data` through an echo path and checks every byte comes back.
pub async fn echo_roundtrip(local: u16, data: &[u8]) {
    let s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let len = data.len();
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; len];
        r.read_exact(&mut got).await.map(|_| got)
    });
    w.write_all(data).await.unwrap();
    let got = reader.await.unwrap().expect("echo came back short");
    assert_eq!(sha256(&got), sha256(data), "echoed bytes differ");
}

/// The body every request to [`http_target`] gets.
pub const HELLO: &str = "hello from target\n";

/// An HTTP/1.1 origin on 127.0.0.1 answering every request with [`HELLO`] (keep-alive).
pub async fn http_target() -> SocketAddr {
    let l = target_listener().await;
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{HELLO}",
                            HELLO.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// Runs curl (bounded to 20 s); returns its exit code, stdout and stderr.
pub async fn curl(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["-sS", "--max-time", "20"];
    all.extend_from_slice(args);
    let out = tokio::process::Command::new("curl")
        .args(&all)
        .output()
        .await
        .expect("curl is needed for the proxy tests (scripts/setup.sh installs it)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` to a fresh temp file and returns its path.
pub fn temp_file(name: &str, text: &str) -> String {
    let p = std::env::temp_dir().join(format!("pht-e2e-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// The value of the first sample of `name` whose labels contain every one of `labels`
/// (`key="value"` pieces).
pub fn metric_sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (labelset, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|want| labelset.split(',').any(|have| have == *want))
            .then(|| value.trim().parse().ok())?
    })
}

/// GETs a metrics page with curl (`extra`: more curl arguments); returns status and body.
pub async fn scrape_metrics(url: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["-w", "\n%{http_code}", url];
    args.extend_from_slice(extra);
    let (rc, out, err) = curl(&args).await;
    assert_eq!(rc, 0, "curl {url}: {err}");
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.to_string(), body.to_string())
}
