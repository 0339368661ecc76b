//! Real middleboxes on loopback: Debian's nginx as a stock reverse proxy and squid as a
//! forward proxy, each a foreground process of its own in a temp dir, started from the
//! templates in `tests/fixtures/` (compiled in, so the binaries need no source tree).
//!
//! ```no_run
//! # async fn f() {
//! let nginx = pht_e2e::middlebox::Middlebox::nginx("127.0.0.1:8443".parse().unwrap()).await;
//! let squid = pht_e2e::middlebox::Middlebox::squid(&pht_e2e::middlebox::Squid {
//!     allow_connect: false,
//!     hosts: vec![("pht-server.test".into(), "127.0.0.1".parse().unwrap())],
//! })
//! .await;
//! println!("{} {}", nginx.port(), squid.url());
//! # }
//! ```
//!
//! Both are killed (with their worker processes: each runs in a process group of its own)
//! and their directory removed on drop. A test that panics while one is running gets its
//! logs printed.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{TempDir, free_port};

const NGINX_CONF: &str = include_str!("../fixtures/nginx.conf.in");
const NGINX_64K_CONF: &str = include_str!("../fixtures/nginx-64k.conf.in");
const NGINX_BUFFERING_CONF: &str = include_str!("../fixtures/nginx-buffering.conf.in");
const NGINX_SCALE_OUT_CONF: &str = include_str!("../fixtures/nginx-scale-out.conf.in");
const SQUID_CONF: &str = include_str!("../fixtures/squid.conf.in");

/// Which nginx configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nginx {
    /// `fixtures/nginx.conf.in`: `location / { proxy_pass ...; }` and nothing else.
    Stock,
    /// `fixtures/nginx-64k.conf.in`: the same with `client_max_body_size 64k`.
    SmallBody,
    /// `fixtures/nginx-buffering.conf.in`: responses buffered whatever the server says
    /// (`proxy_ignore_headers X-Accel-Buffering`).
    Buffering,
}

/// How squid is set up.
#[derive(Clone, Debug, Default)]
pub struct Squid {
    /// `CONNECT` to any port allowed (phts through squid); else every `CONNECT` is denied
    /// (`403`), so a client must send absolute-form requests.
    pub allow_connect: bool,
    /// Entries of squid's own hosts file: names only squid can resolve.
    pub hosts: Vec<(String, IpAddr)>,
}

/// A running nginx or squid.
pub struct Middlebox {
    name: &'static str,
    child: Option<Child>,
    port: u16,
    error_log: PathBuf,
    access_log: PathBuf,
    stderr: PathBuf,
    // Last: removed after the process is gone.
    dir: TempDir,
}

/// Where `prog` is installed: `PATH`, then the sbin directories a non-root `PATH` lacks.
fn find(prog: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{prog} not found: run scripts/setup.sh --test"))
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("@{k}@"), v);
    }
    assert!(
        !s.contains("@DIR@") && !s.contains("@PORT@"),
        "unfilled template variable"
    );
    s
}

impl Middlebox {
    /// Stock nginx reverse proxy in front of `upstream` (pht-server).
    pub async fn nginx(upstream: SocketAddr) -> Middlebox {
        Self::nginx_with(upstream, Nginx::Stock).await
    }

    pub async fn nginx_with(upstream: SocketAddr, conf: Nginx) -> Middlebox {
        let exe = find("nginx");
        let dir = TempDir::new("nginx");
        // The master runs as root here and its worker as `nobody`: the worker must reach
        // its temp directories (the master creates them and hands them over).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let template = match conf {
            Nginx::Stock => NGINX_CONF,
            Nginx::SmallBody => NGINX_64K_CONF,
            Nginx::Buffering => NGINX_BUFFERING_CONF,
        };
        let d = dir.path().to_string_lossy().into_owned();
        let d = d.as_str();
        let text = fill(
            template,
            &[
                ("DIR", d),
                ("PORT", &port.to_string()),
                ("UPSTREAM", &upstream.to_string()),
            ],
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, text).unwrap();
        let mut cmd = Command::new(exe);
        cmd.args(["-p", d, "-e", &dir.join("error.log"), "-c", &conf_path]);
        Self::spawn("nginx", cmd, dir, port, "error.log", "access.log").await
    }

    /// nginx in front of several pht-server instances (`fixtures/nginx-scale-out.conf.in`):
    /// each `(name, addr)` is an instance started with `instance=name`.
    pub async fn nginx_pool(instances: &[(&str, SocketAddr)]) -> Middlebox {
        let exe = find("nginx");
        let dir = TempDir::new("nginx");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let mut map = String::new();
        let mut pool = String::new();
        let mut pinned = String::new();
        for (name, addr) in instances {
            map += &format!("        \"~^{name}\\.\" pht_{name};\n");
            pool += &format!("        server {addr} max_fails=0;\n");
            pinned += &format!(
                "    upstream pht_{name} {{\n        server {addr};\n        keepalive 8;\n    }}\n"
            );
        }
        let d = dir.path().to_string_lossy().into_owned();
        let text = fill(
            NGINX_SCALE_OUT_CONF,
            &[
                ("DIR", &d),
                ("PORT", &port.to_string()),
                ("MAP", map.trim_end()),
                ("POOL", pool.trim_end()),
                ("PINNED", pinned.trim_end()),
            ],
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, text).unwrap();
        let mut cmd = Command::new(exe);
        cmd.args(["-p", &d, "-e", &dir.join("error.log"), "-c", &conf_path]);
        Self::spawn("nginx", cmd, dir, port, "error.log", "access.log").await
    }

    /// squid as a forward proxy on 127.0.0.1.
    pub async fn squid(opts: &Squid) -> Middlebox {
        let exe = find("squid");
        let dir = TempDir::new("squid");
        // Started as root, squid drops to its `cache_effective_user` (`proxy`) before it
        // opens its logs.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = free_port();
        let hosts: String = opts
            .hosts
            .iter()
            .map(|(name, ip)| format!("{ip} {name}\n"))
            .collect();
        std::fs::write(dir.join("hosts"), hosts).unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let d = d.as_str();
        let text = fill(
            SQUID_CONF,
            &[
                ("DIR", d),
                ("PORT", &port.to_string()),
                ("CONNECT", if opts.allow_connect { "allow" } else { "deny" }),
            ],
        );
        let conf_path = dir.join("squid.conf");
        std::fs::write(&conf_path, text).unwrap();
        let mut cmd = Command::new(exe);
        cmd.args(["-N", "-f", &conf_path]);
        Self::spawn("squid", cmd, dir, port, "cache.log", "access.log").await
    }

    async fn spawn(
        name: &'static str,
        mut cmd: Command,
        dir: TempDir,
        port: u16,
        error_log: &str,
        access_log: &str,
    ) -> Middlebox {
        let stderr = dir.path().join("stderr.log");
        let out = std::fs::File::create(&stderr).unwrap();
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group: one signal reaches nginx's workers too.
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e} (run scripts/setup.sh --test)"));
        let mut mb = Middlebox {
            name,
            child: Some(child),
            port,
            error_log: dir.path().join(error_log),
            access_log: dir.path().join(access_log),
            stderr,
            dir,
        };
        // Dropped on panic below: killed and its directory removed.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = mb.exited() {
                panic!(
                    "{name} exited with {status} before listening:\n{}",
                    mb.logs()
                );
            }
            let probe = tokio::net::TcpStream::connect(("127.0.0.1", port));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
                return mb;
            }
            if Instant::now() > deadline {
                panic!("{name} did not listen on 127.0.0.1:{port}:\n{}", mb.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:port` (a proxy URL for squid).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The temp directory holding its configuration and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// nginx's `error.log` / squid's `cache.log`, plus anything printed on stderr.
    pub fn error_log(&self) -> String {
        let mut s = std::fs::read_to_string(&self.error_log).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(&self.stderr).unwrap_or_default());
        s
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }

    /// Both logs, labelled, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {name} error log ({dir}) ---\n{}--- {name} access log ---\n{}---",
            self.error_log(),
            self.access_log(),
            name = self.name,
            dir = self.dir.path().display()
        )
    }

    /// Its exit status, if it has exited (it should not while the value lives).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops it: SIGTERM to its process group (nginx's master stops its workers, squid
    /// shuts down at once with `shutdown_lifetime 0`), SIGKILL to the group after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pgid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on the process group this value created (its leader is
        // still unreaped here, so the id cannot have been reused).
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above; the leader has not been reaped yet.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for Middlebox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.stop();
    }
}
