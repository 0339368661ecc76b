//! Scale-out with no shared state: three pht-server instances behind Debian's nginx
//! (`fixtures/nginx-scale-out.conf.in`, the configuration docs/DEPLOY.md explains), and
//! every kind of client: gost's stable flow (authorize first) and its newer one (a token of
//! its own), both spoken byte for byte by a raw client, pht-client, and the wasm client
//! (Node, `client-wasm/examples/forward.mjs`).
//!
//! Each instance forwards to a target that first names the instance, so every tunnel
//! knows where it landed. Also here: graceful restart (`drainTimeout`) behind the balancer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::future::join_all;
use pht_e2e::middlebox::Middlebox;
use pht_e2e::raw::RawConn;
use pht_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NAMES: [&str; 3] = ["s1", "s2", "s3"];
/// Longest wait for any one step; a tunnel that neither answers nor fails within it hangs.
const T: Duration = Duration::from_secs(30);
/// Bytes each tunnel echoes to prove it works.
const PAYLOAD: usize = 24 * 1024;

/// The Node forwarder around the wasm client: every local connection is a tunnel.
struct WasmForward {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl WasmForward {
    async fn start(node: &str) -> WasmForward {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let script = root.join("client-wasm/examples/forward.mjs");
        assert!(
            root.join("client-wasm/pkg/package.json").is_file(),
            "the wasm package is not built: run scripts/build-wasm.sh"
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("pht-e2e-wasm-forward-{port}.log"));
        let child = Command::new("node")
            .arg(&script)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--server", node])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("node not found: run scripts/setup.sh --test");
        let mut w = WasmForward { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !w.log_text().contains("listening on") {
            if let Ok(Some(s)) = w.child.try_wait() {
                panic!("forward.mjs exited with {s}: {}", w.log_text());
            }
            assert!(Instant::now() < deadline, "forward.mjs did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WasmForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three instances, their named targets, nginx in front, and the two client processes.
struct Cluster {
    servers: Vec<Option<Proc>>,
    /// Each instance's Prometheus endpoint.
    metrics: Vec<String>,
    nginx: Middlebox,
    pht_client: Proc,
    pht_client_port: u16,
    wasm: WasmForward,
}

impl Cluster {
    async fn start(server_opts: &str) -> Cluster {
        pht_runtime::raise_fd_limit();
        let mut servers = Vec::new();
        let mut metrics = Vec::new();
        let mut addrs = Vec::new();
        for name in NAMES {
            let target = named_echo_target(name).await;
            let port = free_port();
            let url = format!(
                "pht://127.0.0.1:{port}/{target}?instance={name}&maxTunnelsPerClient=0&tunnelRate=0{server_opts}"
            );
            let mp = free_port();
            let m = format!("127.0.0.1:{mp}");
            servers.push(Some(server(&["-L", &url, "-metrics", &m], port).await));
            metrics.push(format!("http://{m}/metrics"));
            addrs.push((name, SocketAddr::from(([127, 0, 0, 1], port))));
        }
        let nginx = Middlebox::nginx_pool(&addrs).await;
        // Short resume: a tunnel whose instance died fails within seconds, not 30.
        let node = format!("forward+pht://127.0.0.1:{}?resumeTimeout=3s", nginx.port());
        let (pht_client, pht_client_port) = client(&node).await;
        let wasm = WasmForward::start(&node).await;
        Cluster {
            servers,
            metrics,
            nginx,
            pht_client,
            pht_client_port,
            wasm,
        }
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for (name, p) in NAMES.iter().zip(&self.servers) {
            if let Some(p) = p {
                s += &format!("--- {name}\n{}\n", p.log_text());
            }
        }
        s += &format!("--- pht-client\n{}\n", self.pht_client.log_text());
        s += &format!("--- wasm forward\n{}\n", self.wasm.log_text());
        s += &format!("--- nginx\n{}\n", self.nginx.error_log());
        s
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// gost's stable client: GET /authorize, then pull and push with that token.
    GostAuthorize,
    /// gost ≥ 3.3: a token of its own (a 20-character xid), no authorize.
    GostOwnToken,
    PhtClient,
    Wasm,
}

const KINDS: [Kind; 4] = [
    Kind::GostAuthorize,
    Kind::GostOwnToken,
    Kind::PhtClient,
    Kind::Wasm,
];

/// How a tunnel ended, as its application saw it.
#[derive(Debug)]
enum End {
    /// A clean end: the stream said every byte had arrived.
    Clean,
    /// An error: a reset, a cut stream, an HTTP error.
    Broken(String),
}

enum Conn {
    /// PHT/1 spoken byte for byte as gost's Go client does.
    Raw {
        token: String,
        ctl: Box<RawConn>,
        pull: Box<RawConn>,
        /// Pull bytes not yet decoded (a partial line).
        pending: Vec<u8>,
        /// Decoded payload not yet read.
        ready: Vec<u8>,
    },
    /// A local connection of pht-client or of the wasm forwarder.
    Tcp(TcpStream),
}

struct Tunnel {
    kind: Kind,
    instance: String,
    conn: Conn,
}

fn xid(seed: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    random_bytes(20, seed)
        .iter()
        .map(|b| ALPHABET[(*b % 32) as usize] as char)
        .collect()
}

fn line(data: &[u8]) -> Vec<u8> {
    let mut v = STANDARD.encode(data).into_bytes();
    v.push(b'\n');
    v
}

impl Conn {
    async fn raw(nginx: u16, token: String) -> Result<Conn, End> {
        let mut pull = RawConn::connect(nginx).await;
        pull.go_get(&format!("/pull?token={token}")).await;
        let head = pull
            .head()
            .await
            .ok_or_else(|| End::Broken("pull: no response".into()))?;
        if head.status != 200 {
            return Err(End::Broken(format!("pull: status {}", head.status)));
        }
        Ok(Conn::Raw {
            token,
            ctl: Box::new(RawConn::connect(nginx).await),
            pull: Box::new(pull),
            pending: Vec::new(),
            ready: Vec::new(),
        })
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), End> {
        match self {
            Conn::Tcp(s) => s
                .write_all(data)
                .await
                .map_err(|e| End::Broken(format!("write: {e}"))),
            Conn::Raw { token, ctl, .. } => {
                ctl.go_post(&format!("/push?token={token}"), &line(data))
                    .await;
                let head = ctl
                    .head()
                    .await
                    .ok_or_else(|| End::Broken("push: connection closed".into()))?;
                let body = ctl.body(&head).await;
                // The status and the first line of the body (nginx answers in HTML).
                let first = String::from_utf8_lossy(&body);
                let first = first.lines().next().unwrap_or("").trim().to_string();
                match head.status {
                    200 => Ok(()),
                    s => Err(End::Broken(format!("push: {s} {first}"))),
                }
            }
        }
    }

    async fn read(&mut self, n: usize) -> Result<Vec<u8>, End> {
        match self {
            Conn::Tcp(s) => {
                let mut buf = vec![0u8; n];
                let mut at = 0;
                while at < n {
                    match s.read(&mut buf[at..]).await {
                        Ok(0) => return Err(End::Clean),
                        Ok(k) => at += k,
                        Err(e) => return Err(End::Broken(format!("read: {e}"))),
                    }
                }
                Ok(buf)
            }
            Conn::Raw {
                pull,
                pending,
                ready,
                ..
            } => {
                while ready.len() < n {
                    match pull.try_chunk().await {
                        Ok(Some(c)) => pending.extend_from_slice(&c),
                        Ok(None) => return Err(End::Clean),
                        Err(e) => return Err(End::Broken(format!("pull: {e}"))),
                    }
                    while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                        let l: Vec<u8> = pending.drain(..=nl).collect();
                        if l.len() > 1 {
                            let data = STANDARD
                                .decode(&l[..l.len() - 1])
                                .map_err(|e| End::Broken(format!("pull line: {e}")))?;
                            ready.extend(data);
                        }
                    }
                }
                Ok(ready.drain(..n).collect())
            }
        }
    }

    /// Ends the tunnel as its client would: an empty push (PHT/1), or closing the local
    /// connection.
    async fn close(self) {
        match self {
            Conn::Raw { token, mut ctl, .. } => {
                let _ = ctl
                    .exchange_post(&format!("/push?token={token}"), b"")
                    .await;
            }
            Conn::Tcp(s) => drop(s),
        }
    }
}

impl Tunnel {
    /// Opens a tunnel of `kind` through nginx and reads the name of its instance.
    async fn open(c: &Cluster, kind: Kind, seed: u64) -> Result<Tunnel, End> {
        let nginx = c.nginx.port();
        let mut authorized = None;
        let mut conn = match kind {
            Kind::GostAuthorize => {
                let mut ctl = RawConn::connect(nginx).await;
                let (status, body) = ctl.exchange_get("/authorize").await;
                let body = String::from_utf8_lossy(&body).into_owned();
                if status != 200 {
                    return Err(End::Broken(format!("authorize: {status} {body}")));
                }
                let token = body
                    .strip_prefix("token=")
                    .unwrap_or_else(|| panic!("authorize body {body:?}"))
                    .to_string();
                authorized = Some(token.clone());
                Conn::raw(nginx, token).await?
            }
            Kind::GostOwnToken => Conn::raw(nginx, xid(seed)).await?,
            Kind::PhtClient | Kind::Wasm => {
                let port = match kind {
                    Kind::PhtClient => c.pht_client_port,
                    _ => c.wasm.port,
                };
                Conn::Tcp(TcpStream::connect(("127.0.0.1", port)).await.unwrap())
            }
        };
        let name = conn.read(3).await?;
        let instance = String::from_utf8_lossy(&name[..2]).into_owned();
        assert_eq!(name[2], b'\n', "{kind:?}: bad greeting {name:?}");
        if let Some(token) = authorized {
            // The route under test: the issuing instance's name leads the token, and the
            // balancer sent the tunnel's requests there.
            assert!(
                token.starts_with(&format!("{instance}.")),
                "token {token} served by {instance}"
            );
        }
        Ok(Tunnel {
            kind,
            instance,
            conn,
        })
    }

    /// Sends `data` and checks the echo, hash for hash.
    async fn echo(&mut self, data: &[u8]) -> Result<(), End> {
        self.conn.write(data).await?;
        let got = self.conn.read(data.len()).await?;
        assert_eq!(
            sha256(&got),
            sha256(data),
            "{:?} on {}: echo differs",
            self.kind,
            self.instance
        );
        Ok(())
    }
}

async fn timed<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(T, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer and no error within {T:?}"))
}

/// Opens `n` tunnels of each kind (one of each first, so the clients that remember a
/// PHT/2 server make up their own tokens for the rest) and checks each with an echo.
async fn open_tunnels(c: &Cluster, n: usize, seed: u64) -> Vec<Tunnel> {
    let one = |kind: Kind, i: u64| async move {
        let data = random_bytes(PAYLOAD, seed + i);
        let mut t = timed(
            &format!("open {kind:?} #{i}"),
            Tunnel::open(c, kind, seed + i),
        )
        .await
        .unwrap_or_else(|e| panic!("{kind:?} #{i}: {e:?}\n{}", c.logs()));
        timed(&format!("echo {kind:?} #{i}"), t.echo(&data))
            .await
            .unwrap_or_else(|e| panic!("{kind:?} #{i} on {}: {e:?}\n{}", t.instance, c.logs()));
        t
    };
    let mut all = join_all(
        KINDS
            .iter()
            .enumerate()
            .map(|(k, kind)| one(*kind, k as u64)),
    )
    .await;
    let rest = (1..n).flat_map(|i| KINDS.iter().map(move |k| (*k, i)));
    let more =
        join_all(rest.map(|(kind, i)| one(kind, (i * KINDS.len()) as u64 + kind as u64))).await;
    all.extend(more);
    all
}

fn per_instance(tunnels: &[Tunnel]) -> BTreeMap<(String, Kind), usize> {
    let mut m = BTreeMap::new();
    for t in tunnels {
        *m.entry((t.instance.clone(), t.kind)).or_default() += 1;
    }
    m
}

fn report(what: &str, tunnels: &[Tunnel]) {
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    for t in tunnels {
        *totals
            .entry(NAMES.iter().find(|n| **n == t.instance).unwrap())
            .or_default() += 1;
    }
    eprintln!("{what}: tunnels per instance {totals:?}");
    eprintln!("{what}: by instance and kind {:?}", per_instance(tunnels));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tunnels_over_three_instances_and_one_instance_dies() {
    let mut c = Cluster::start("").await;
    let started = Instant::now();
    let tunnels = open_tunnels(&c, 50, 1_000).await;
    assert_eq!(tunnels.len(), 200);
    report("200 tunnels", &tunnels);
    eprintln!("200 tunnels opened and echoed in {:?}", started.elapsed());
    for (i, name) in NAMES.iter().enumerate() {
        let n = tunnels.iter().filter(|t| t.instance == *name).count();
        assert!(n >= 20, "instance {name} got {n} of 200 tunnels");
        // Each instance counts exactly the tunnels that landed on it: none lost, none
        // made twice by a request that went astray.
        let (code, page) = scrape_metrics(&c.metrics[i], &[]).await;
        assert_eq!(code, "200");
        let svc = "service=\"service-0\"";
        assert_eq!(
            metric_sample(&page, "pht_tunnels", &[svc]),
            Some(n as f64),
            "{name}:\n{page}"
        );
        if i == 0 {
            eprintln!("--- metrics of s1 with its {n} tunnels open ---\n{page}");
        }
    }

    // s2 dies without a word.
    drop(c.servers[1].take());
    let killed = Instant::now();
    let (doomed, alive): (Vec<_>, Vec<_>) = tunnels.into_iter().partition(|t| t.instance == "s2");
    let probe = random_bytes(1000, 9);
    let outcomes = join_all(doomed.into_iter().map(|mut t| {
        let probe = &probe;
        async move {
            let what = format!("{:?} on s2 after the kill", t.kind);
            let end = timed(&what, async {
                // The write may be taken (by nginx, or a new instance); the read must fail.
                match t.conn.write(probe).await {
                    Err(e) => e,
                    Ok(()) => match t.conn.read(probe.len()).await {
                        Ok(_) => panic!("{what}: echoed by a dead instance"),
                        Err(e) => e,
                    },
                }
            })
            .await;
            (t.kind, end)
        }
    }))
    .await;
    let mut seen: BTreeMap<Kind, Vec<String>> = BTreeMap::new();
    for (kind, end) in &outcomes {
        match end {
            End::Clean => panic!(
                "{kind:?} on the killed instance ended cleanly: silent loss\n{}",
                c.logs()
            ),
            End::Broken(why) => seen.entry(*kind).or_default().push(why.clone()),
        }
    }
    for (kind, whys) in &mut seen {
        whys.sort();
        whys.dedup();
        eprintln!("killed instance: {kind:?} tunnels saw {whys:?}");
    }
    eprintln!(
        "killed instance: {} tunnels, all ended with an error within {:?}",
        outcomes.len(),
        killed.elapsed()
    );

    // The others carry on, byte for byte.
    let survivors = join_all(alive.into_iter().enumerate().map(|(i, mut t)| async move {
        let data = random_bytes(PAYLOAD, 5_000 + i as u64);
        let what = format!("{:?} on {} after the kill", t.kind, t.instance);
        timed(&what, t.echo(&data))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        t
    }))
    .await;
    eprintln!("{} tunnels on s1 and s3 still echo", survivors.len());

    // Every new tunnel, of every kind, succeeds on the others.
    let fresh = open_tunnels(&c, 15, 9_000).await;
    report("60 new tunnels", &fresh);
    assert!(fresh.iter().all(|t| t.instance != "s2"));
    for t in survivors.into_iter().chain(fresh) {
        t.conn.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_moves_new_tunnels_and_keeps_open_ones() {
    let mut c = Cluster::start("&drainTimeout=60s").await;
    let tunnels = open_tunnels(&c, 6, 20_000).await;
    let (draining, others): (Vec<_>, Vec<_>) =
        tunnels.into_iter().partition(|t| t.instance == "s1");
    assert!(!draining.is_empty(), "no tunnel landed on s1");
    let s1 = c.servers[0].as_mut().unwrap();
    s1.sigterm();
    // Draining, not gone: the open tunnels still work.
    assert!(s1.exited_within(Duration::from_millis(500)).await.is_none());
    let mut draining = join_all(
        draining
            .into_iter()
            .enumerate()
            .map(|(i, mut t)| async move {
                let data = random_bytes(PAYLOAD, 30_000 + i as u64);
                let what = format!("{:?} on draining s1", t.kind);
                timed(&what, t.echo(&data))
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e:?}"));
                t
            }),
    )
    .await;
    // New tunnels of every kind go to the others.
    let fresh = open_tunnels(&c, 6, 40_000).await;
    report("new tunnels while s1 drains", &fresh);
    assert!(fresh.iter().all(|t| t.instance != "s1"));
    let s1 = c.servers[0].as_mut().unwrap();
    assert!(
        s1.exited_within(Duration::from_millis(10)).await.is_none(),
        "s1 left while its tunnels were open"
    );
    // Once its last tunnel is closed, s1 ends by itself, well before drainTimeout.
    let n = draining.len();
    for t in draining.drain(..) {
        t.conn.close().await;
    }
    let status = s1.exited_within(Duration::from_secs(15)).await;
    let log = s1.log_text();
    assert!(
        matches!(status, Some(s) if s.success()),
        "s1 after its {n} tunnels closed: {status:?}\n{log}"
    );
    assert!(log.contains("drained: nothing open"), "{log}");
    for t in others.into_iter().chain(fresh) {
        t.conn.close().await;
    }
}

/// Without a balancer: what a client of a draining server sees, and the second SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_for_drain_timeout_and_a_second_one_ends_at_once() {
    let target = named_echo_target("s1").await;
    let sp = free_port();
    let url = format!("pht://127.0.0.1:{sp}/{target}?drainTimeout=60s");
    let mp = free_port();
    let metrics = format!("http://127.0.0.1:{mp}/metrics");
    let mut srv = server(&["-L", &url, "-metrics", &format!("127.0.0.1:{mp}")], sp).await;
    let mut ctl = RawConn::connect(sp).await;
    let (status, body) = ctl.exchange_get("/authorize").await;
    assert_eq!(status, 200);
    let token = String::from_utf8(body).unwrap()["token=".len()..].to_string();
    let mut t = Conn::raw(sp, token)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(timed("greeting", t.read(3)).await.unwrap(), b"s1\n");

    srv.sigterm();
    assert!(
        srv.exited_within(Duration::from_millis(500))
            .await
            .is_none()
    );
    // New tunnels: 503, whether authorized or made up by the client.
    let mut other = RawConn::connect(sp).await;
    assert_eq!(
        other.exchange_get("/authorize").await,
        (503, b"server is shutting down\n".to_vec())
    );
    assert_eq!(
        other
            .exchange_post(&format!("/push?token={}", xid(1)), &line(b"x"))
            .await,
        (503, b"server is shutting down\n".to_vec())
    );
    // Counted as refusals of their own, apart from the limits.
    let (_, page) = scrape_metrics(&metrics, &[]).await;
    let svc = "service=\"service-0\"";
    assert_eq!(
        metric_sample(&page, "pht_refusals_total", &[svc, "reason=\"draining\""]),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        metric_sample(&page, "pht_tunnels", &[svc]),
        Some(1.0),
        "{page}"
    );
    // The open one works on.
    let data = random_bytes(PAYLOAD, 3);
    timed("write", t.write(&data)).await.unwrap();
    assert_eq!(
        sha256(&timed("echo", t.read(data.len())).await.unwrap()),
        sha256(&data)
    );

    // The second SIGTERM does not wait: the tunnel is cut, and its pull says so.
    srv.sigterm();
    let status = srv.exited_within(Duration::from_secs(5)).await;
    assert!(
        matches!(status, Some(s) if s.success()),
        "{status:?}\n{}",
        srv.log_text()
    );
    match timed("read after exit", t.read(1)).await {
        Err(End::Broken(_)) => {}
        other => panic!("the cut tunnel read {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_ends_tunnels_still_open() {
    let target = named_echo_target("s1").await;
    let sp = free_port();
    let url = format!("pht://127.0.0.1:{sp}/{target}?drainTimeout=2s");
    let mut srv = server(&["-L", &url], sp).await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let mut greeting = [0u8; 3];
    timed("greeting", s.read_exact(&mut greeting))
        .await
        .unwrap();
    let start = Instant::now();
    srv.sigterm();
    let status = srv.exited_within(Duration::from_secs(10)).await;
    let took = start.elapsed();
    assert!(matches!(status, Some(s) if s.success()), "{status:?}");
    assert!(
        took >= Duration::from_secs(2),
        "left after {took:?}, before drainTimeout"
    );
    assert!(
        srv.log_text().contains("drainTimeout passed"),
        "{}",
        srv.log_text()
    );
    // The tunnel cut by the end of the drain is an error for its application.
    let mut b = [0u8; 1];
    match timed("read after exit", s.read(&mut b)).await {
        Err(_) => {}
        Ok(n) => panic!("the cut tunnel read {n} bytes and a clean end"),
    }
}

/// A `tls` listener drains too: its socket closes at the first SIGTERM (new connections are
/// refused), the open connection runs on, and the server ends once it closes, with no
/// error logged for the accept loop that stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_service_drains_its_open_connection() {
    let home = std::env::temp_dir().join(format!("pht-e2e-home-drain-{}", std::process::id()));
    let h = home.to_string_lossy().into_owned();
    let target = named_echo_target("t1").await;
    let tp = free_port();
    let mut srv = Proc::start_env(
        "pht-server",
        &[
            "-L",
            &format!("forward+tls://127.0.0.1:{tp}/{target}?drainTimeout=60s"),
        ],
        tp,
        &[("HOME", &h)],
    )
    .await;
    let cp = free_port();
    let _cli = server(
        &[
            "-L",
            &format!("tcp://127.0.0.1:{cp}"),
            "-F",
            &format!("forward+tls://127.0.0.1:{tp}"),
        ],
        cp,
    )
    .await;
    let mut s = TcpStream::connect(("127.0.0.1", cp)).await.unwrap();
    let mut greeting = [0u8; 3];
    timed("greeting", s.read_exact(&mut greeting))
        .await
        .unwrap();
    assert_eq!(&greeting, b"t1\n");

    srv.sigterm();
    assert!(
        srv.exited_within(Duration::from_millis(500))
            .await
            .is_none()
    );
    let refused = TcpStream::connect(("127.0.0.1", tp)).await;
    assert!(refused.is_err(), "the draining tls listener still accepts");
    let data = random_bytes(PAYLOAD, 11);
    s.write_all(&data).await.unwrap();
    let mut got = vec![0u8; data.len()];
    timed("echo while draining", s.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(sha256(&got), sha256(&data));

    drop(s);
    let status = srv.exited_within(Duration::from_secs(15)).await;
    let log = srv.log_text();
    assert!(
        matches!(status, Some(st) if st.success()),
        "{status:?}\n{log}"
    );
    assert!(log.contains("drained: nothing open"), "{log}");
    assert!(!log.contains("accept:"), "{log}");
    let _ = std::fs::remove_dir_all(&home);
}
