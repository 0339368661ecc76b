//! Child processes (the real `pht-server` and `pht-client`), the open-file limit, and the
//! figures the kernel keeps about a process in `/proc`.

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A started binary; killed when dropped, and sent SIGTERM by the kernel should this
/// process die first. Its stdin is a pipe held open until then; its stderr goes to `log`.
pub struct Child {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
    child: std::process::Child,
}

impl Child {
    /// Starts `bin` and waits (at most 20 s) until it logs that it listens on `port`.
    /// Call it from the thread that outlives the child (the kernel's parent-death signal
    /// follows the thread that forked).
    pub async fn start(
        bin: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        port: u16,
        log: PathBuf,
    ) -> Result<Child, String> {
        Self::start_when(bin, args, env, port, log, Ready::Logged).await
    }

    /// Like [`Child::start`], for a program whose log does not name its port as ours do
    /// (another project's): ready once `port` takes a connection.
    pub async fn start_probed(
        bin: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        port: u16,
        log: PathBuf,
    ) -> Result<Child, String> {
        Self::start_when(bin, args, env, port, log, Ready::Accepts).await
    }

    async fn start_when(
        bin: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        port: u16,
        log: PathBuf,
        ready: Ready,
    ) -> Result<Child, String> {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(bin);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut c = Child {
            name,
            pid: child.id(),
            log,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let needle = format!(":{port}/");
        loop {
            let up = match ready {
                Ready::Logged => c.log_text().contains(&needle),
                Ready::Accepts => tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok(),
            };
            if up {
                return Ok(c);
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                return Err(format!("{} exited with {status}: {}", c.name, c.log_text()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen on port {port} within 20 s: {}",
                    c.name,
                    c.log_text()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub fn terminate(&mut self) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How [`Child::start_when`] knows the child listens.
enum Ready {
    /// Its log names `:<port>/` (pht-server, pht-client, the bench's target).
    Logged,
    /// A TCP connection to the port succeeds.
    Accepts,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises the open-file limit: the hard limit to `want` when allowed (root), and the soft
/// limit to the hard one. Children inherit it. Returns the resulting soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_max < want as libc::rlim_t {
            let higher = libc::rlimit {
                rlim_cur: want as libc::rlim_t,
                rlim_max: want as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &higher) == 0 {
                return want;
            }
        }
        lim.rlim_cur = lim.rlim_max;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

/// `/proc/sys/fs/nr_open`: the highest open-file limit the kernel allows.
pub fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

/// `pid`, or `None` for this process.
fn proc_dir(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_string(),
    }
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: Option<u32>, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("{}/status", proc_dir(pid))).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// CPU seconds the process has used so far, from `/proc/<pid>/stat`: (user + system, system).
pub fn cpu_seconds(pid: Option<u32>) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("{}/stat", proc_dir(pid))).ok()?;
    // The command name is in parentheses and may contain anything: count after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    Some(((utime + stime) as f64 / tck, stime as f64 / tck))
}

/// Open descriptors of a process (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: Option<u32>) -> Option<usize> {
    Some(
        std::fs::read_dir(format!("{}/fd", proc_dir(pid)))
            .ok()?
            .count(),
    )
}

/// Established TCP connections that process `pid` holds to remote port `port` (IPv4,
/// `/proc/net/tcp`, matched by socket inode to the process's descriptors): the HTTP
/// connections one client has open to the server.
pub fn established_to(pid: u32, port: u16) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: HashSet<String> = dir
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let want = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter(|l| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9 && f[2].ends_with(&want) && f[3] == "01" && inodes.contains(f[9])
        })
        .count()
}

/// Kernel TCP counters (whole network namespace) from `/proc/net/netstat`:
/// `(ListenOverflows, TCPSynRetrans)`. A full accept queue drops the handshake and the
/// connecting side retries after a second: these show when that happened.
pub fn tcp_counters() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/net/netstat") else {
        return (0, 0);
    };
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (Some(names), Some(values)) = (lines.first(), lines.get(1)) else {
        return (0, 0);
    };
    let get = |key: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == key)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    (get("ListenOverflows"), get("TCPSynRetrans"))
}
