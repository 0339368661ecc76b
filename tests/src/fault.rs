//! A TCP proxy between pht-client and pht-server that breaks exactly one connection.
//!
//! Requests are classified by their request line ([`classify`]): `GET /pull` →
//! [`Class::Pull`], `POST /push` → [`Class::Push`], anything else (such as `/authorize`)
//! → [`Class::Other`]. The proxy follows the HTTP/1.x framing of what each client sends
//! (heads, `Content-Length` and chunked bodies), so it knows what every connection
//! carries even when the client's keep-alive pool reuses a connection opened by a push
//! for a pull or the other way round. Bytes of the chosen [`Kind`] are counted in its data
//! direction (pull: server → client bytes while a connection carries a pull, response
//! heads included; push: client → server bytes of push requests, heads included), over
//! all connections; the connection that carries byte number [`Fault::after`] is cut, as
//! [`Mode`] says — exactly one connection, once. Everything else, and that connection
//! until the cut, is forwarded untouched both ways, half-close included; a reset from one
//! peer is passed on as a reset to the other.
//!
//! ```no_run
//! # async fn f() {
//! use pht_e2e::fault::*;
//! let fault = Fault { kind: Kind::Pull, after: 4_000_000, mode: Mode::Rst };
//! let proxy = FaultProxy::start("127.0.0.1:8443".parse().unwrap(), fault).await;
//! // point pht-client at 127.0.0.1:{proxy.port()}, move data, then:
//! assert!(proxy.tripped());
//! # }
//! ```
//!
//! HTTP/2 (`PRI * HTTP/2.0`), TLS and anything else that is not HTTP/1.x is forwarded as
//! [`Class::Other`] and never cut.
//!
//! [`FaultProxy::random`] is the other way to run it: instead of one fault, it cuts a
//! random connection every so often ([`RandomCuts`]), for as long as it runs.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// Which connection to cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The first `GET /pull` connection, counted in server → client bytes.
    Pull,
    /// The first `POST /push` connection, counted in client → server bytes.
    Push,
}

/// How to cut it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `shutdown(SHUT_WR)` on both sockets: a clean FIN to both peers. What they send
    /// afterwards is read and dropped (closing with unread data would send a RST).
    Fin,
    /// `SO_LINGER 0` and close on both sockets: a RST to both peers.
    Rst,
    /// Stop forwarding both ways and keep both sockets open, neither read nor written,
    /// until the proxy is dropped: a path that went silent.
    Silent,
}

/// The one fault a [`FaultProxy`] injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: Kind,
    /// Bytes that pass in the kind's data direction before the cut.
    pub after: u64,
    pub mode: Mode,
}

/// What [`FaultProxy::random`] does: every `every` (a time drawn at random from the range)
/// it cuts one random connection, with a FIN or a RST (drawn at random too), until it is
/// dropped. Only a connection whose latest request is a pull or a push (of `kind`, if
/// given) is cut, idle or not: PHT repeats those, but nothing repeats an authorize.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RandomCuts {
    pub every: RangeInclusive<Duration>,
    /// Only connections carrying this kind; `None`: pulls and pushes.
    pub kind: Option<Kind>,
    /// Seeds the draws, so that a run can be repeated (timing aside).
    pub seed: u64,
}

/// What a request is, by its request line ([`classify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Pull,
    Push,
    Other,
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "pull" => Ok(Kind::Pull),
            "push" => Ok(Kind::Push),
            _ => Err(format!("kind {s:?}: expected pull or push")),
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "fin" => Ok(Mode::Fin),
            "rst" => Ok(Mode::Rst),
            "silent" => Ok(Mode::Silent),
            _ => Err(format!("mode {s:?}: expected fin, rst or silent")),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Pull => "pull",
            Kind::Push => "push",
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Fin => "fin",
            Mode::Rst => "rst",
            Mode::Silent => "silent",
        })
    }
}

/// Longest request line looked at; a connection without a line break by then is `Other`.
pub const MAX_REQUEST_LINE: usize = 8192;

/// Classifies a connection by the first bytes it sent. `None`: the request line is not
/// complete yet (read more; at end of stream the connection is [`Class::Other`]).
///
/// The request target may be in origin form (`/pull?token=...`) or absolute form
/// (`http://host:port/pull?token=...`, as sent to a forward proxy); the path must be
/// exactly `/pull` (with `GET`) or `/push` (with `POST`).
pub fn classify(head: &[u8]) -> Option<Class> {
    let Some(end) = head.iter().position(|&b| b == b'\n') else {
        return (head.len() >= MAX_REQUEST_LINE).then_some(Class::Other);
    };
    let line = head[..end].strip_suffix(b"\r").unwrap_or(&head[..end]);
    let Ok(line) = std::str::from_utf8(line) else {
        return Some(Class::Other);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some(Class::Other);
    };
    if !version.starts_with("HTTP/1.") {
        return Some(Class::Other);
    }
    let target = target.split(['?', '#']).next().unwrap_or("");
    let path = match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    Some(match (method, path) {
        ("GET", "/pull") => Class::Pull,
        ("POST", "/push") => Class::Push,
        _ => Class::Other,
    })
}

/// Longest request head (request line and headers) followed; a longer one makes the rest
/// of its connection opaque ([`Class::Other`] from there on).
const MAX_HEAD: usize = 64 * 1024;

#[derive(Clone, Debug)]
enum Framing {
    /// A request head, up to and including its empty line.
    Head(Vec<u8>),
    /// This many body bytes left (`Content-Length`).
    Body(u64),
    /// A chunk-size line.
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    /// CRLF bytes left after a chunk's data.
    ChunkEnd(u8),
    /// A trailer line (the last chunk's trailers end with an empty one).
    Trailer(Vec<u8>),
    /// No longer followed (CONNECT, Upgrade, an oversized or unparsable head).
    Opaque,
}

/// Follows the requests a client sends on one connection, byte by byte in order, and
/// tells which [`Class`] each byte belongs to.
#[derive(Clone, Debug)]
pub struct RequestTracker {
    framing: Framing,
    /// Class of the request being read; `None` until its request line is complete.
    request: Option<Class>,
    /// Class of the latest complete request line: what the server's answer belongs to.
    last: Option<Class>,
}

impl Default for RequestTracker {
    fn default() -> Self {
        RequestTracker {
            framing: Framing::Head(Vec::new()),
            request: None,
            last: None,
        }
    }
}

/// What a request head says about its body.
fn body_framing(head: &[u8]) -> Framing {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let method = lines.next().and_then(|l| l.split(' ').next()).unwrap_or("");
    if method == "CONNECT" {
        return Framing::Opaque;
    }
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => match value.parse::<u64>() {
                Ok(n) => length = Some(n),
                Err(_) => return Framing::Opaque,
            },
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "upgrade" => return Framing::Opaque,
            _ => {}
        }
    }
    match (chunked, length) {
        (true, _) => Framing::ChunkSize(Vec::new()),
        (false, Some(n)) if n > 0 => Framing::Body(n),
        _ => Framing::Head(Vec::new()),
    }
}

impl RequestTracker {
    /// The class of the latest request line seen: what the server is answering.
    pub fn current(&self) -> Option<Class> {
        self.last
    }

    /// Follows `data` (the next client → server bytes) until its end or until `budget`
    /// bytes of class `kind` have been charged; calls `on_request` for every complete
    /// request line. Returns the bytes consumed and the bytes charged to `kind`. A request
    /// line is charged when its line break arrives, so a charge may pass `budget` by less
    /// than one request line.
    pub fn feed(
        &mut self,
        data: &[u8],
        kind: Class,
        budget: u64,
        on_request: &mut dyn FnMut(Class, &[u8]),
    ) -> (usize, u64) {
        let (mut i, mut charged) = (0usize, 0u64);
        while i < data.len() {
            let mine = self.request == Some(kind);
            // Room left before the budget for a byte of this request.
            let room = if mine {
                budget.saturating_sub(charged)
            } else {
                u64::MAX
            };
            if room == 0 {
                break;
            }
            let rest = &data[i..];
            match &mut self.framing {
                Framing::Head(buf) if self.request.is_none() => {
                    // The request line: its class decides how its bytes are charged.
                    let take = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(rest.len(), |p| p + 1);
                    buf.extend_from_slice(&rest[..take]);
                    i += take;
                    if let Some(class) = classify(buf) {
                        let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
                        on_request(class, &buf[..line_end]);
                        self.request = Some(class);
                        self.last = Some(class);
                        if class == kind {
                            charged += buf.len() as u64;
                        }
                        if class == Class::Other && !buf.contains(&b'\n') {
                            // No line break within MAX_REQUEST_LINE: not HTTP/1.x.
                            self.framing = Framing::Opaque;
                        }
                    }
                }
                Framing::Head(buf) => {
                    // Header lines, one byte at a time up to the empty line.
                    let mut n = 0usize;
                    let mut done = false;
                    while n < rest.len() && (n as u64) < room {
                        buf.push(rest[n]);
                        n += 1;
                        if buf.ends_with(b"\r\n\r\n") || buf.ends_with(b"\n\n") {
                            done = true;
                            break;
                        }
                    }
                    i += n;
                    if mine {
                        charged += n as u64;
                    }
                    if done {
                        self.framing = body_framing(buf);
                        if matches!(self.framing, Framing::Head(_)) {
                            self.request = None;
                        }
                    } else if buf.len() > MAX_HEAD {
                        self.framing = Framing::Opaque;
                    }
                }
                Framing::Body(left) | Framing::ChunkData(left) => {
                    let n = (*left).min(rest.len() as u64).min(room);
                    *left -= n;
                    i += n as usize;
                    if mine {
                        charged += n;
                    }
                    if *left == 0 {
                        self.framing = match self.framing {
                            Framing::ChunkData(_) => Framing::ChunkEnd(2),
                            _ => {
                                self.request = None;
                                Framing::Head(Vec::new())
                            }
                        };
                    }
                }
                Framing::ChunkEnd(left) => {
                    let n = (*left as u64).min(rest.len() as u64).min(room);
                    *left -= n as u8;
                    i += n as usize;
                    if mine {
                        charged += n;
                    }
                    if *left == 0 {
                        self.framing = Framing::ChunkSize(Vec::new());
                    }
                }
                Framing::ChunkSize(line) | Framing::Trailer(line) => {
                    let mut n = 0usize;
                    let mut done = false;
                    while n < rest.len() && (n as u64) < room {
                        line.push(rest[n]);
                        n += 1;
                        if rest[n - 1] == b'\n' {
                            done = true;
                            break;
                        }
                    }
                    i += n;
                    if mine {
                        charged += n as u64;
                    }
                    if done {
                        let text = String::from_utf8_lossy(line)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        self.framing = if matches!(self.framing, Framing::Trailer(_)) {
                            if text.is_empty() {
                                self.request = None;
                                Framing::Head(Vec::new())
                            } else {
                                Framing::Trailer(Vec::new())
                            }
                        } else {
                            let size = text.split(';').next().unwrap_or("").trim();
                            match u64::from_str_radix(size, 16) {
                                Ok(0) => Framing::Trailer(Vec::new()),
                                Ok(n) => Framing::ChunkData(n),
                                Err(_) => Framing::Opaque,
                            }
                        };
                    } else if line.len() > MAX_HEAD {
                        self.framing = Framing::Opaque;
                    }
                }
                Framing::Opaque => {
                    let n = (rest.len() as u64).min(room);
                    i += n as usize;
                    if mine {
                        charged += n;
                    }
                }
            }
        }
        (i, charged)
    }
}

#[derive(Default)]
struct Budget {
    /// Bytes of the chosen kind still to pass before the cut.
    left: u64,
    tripped: Option<Instant>,
}

/// A connection [`RandomCuts`] may pick.
struct Victim {
    /// The class of its latest request ([`class_code`]).
    class: Arc<AtomicU8>,
    cut: oneshot::Sender<Mode>,
}

fn class_code(c: Option<Class>) -> u8 {
    match c {
        None => 0,
        Some(Class::Pull) => 1,
        Some(Class::Push) => 2,
        Some(Class::Other) => 3,
    }
}

#[derive(Default)]
struct Shared {
    budget: Mutex<Budget>,
    /// Random mode: the open connections, by id.
    victims: Mutex<HashMap<u64, Victim>>,
    /// Random mode: connections cut so far.
    cuts: AtomicU64,
    /// Sockets of a silent cut, held open until the proxy is dropped.
    parked: Mutex<Vec<TcpStream>>,
    events: Mutex<Vec<String>>,
    verbose: bool,
}

impl Shared {
    fn event(&self, msg: String) {
        if self.verbose {
            eprintln!("[fault-proxy] {msg}");
        }
        self.events.lock().unwrap().push(msg);
    }

    /// Bytes of the chosen kind that may still pass; `None` once the fault happened.
    fn left(&self) -> Option<u64> {
        let b = self.budget.lock().unwrap();
        b.tripped.is_none().then_some(b.left)
    }

    /// Counts `n` bytes of the chosen kind; true when they spent the budget (the caller
    /// makes the cut: exactly one caller ever gets true).
    fn charge(&self, n: u64) -> bool {
        let mut b = self.budget.lock().unwrap();
        if b.tripped.is_some() || n == 0 {
            return false;
        }
        b.left = b.left.saturating_sub(n);
        if b.left == 0 {
            b.tripped = Some(Instant::now());
            return true;
        }
        false
    }

    /// Random mode: cuts one connection carrying a request of `kind` (pull or push when
    /// `None`), if there is one.
    fn cut_random(&self, kind: Option<Kind>, rng: &mut rand::rngs::StdRng) {
        let want = |code: u8| match kind {
            Some(Kind::Pull) => code == class_code(Some(Class::Pull)),
            Some(Kind::Push) => code == class_code(Some(Class::Push)),
            None => code == class_code(Some(Class::Pull)) || code == class_code(Some(Class::Push)),
        };
        let victim = {
            let mut victims = self.victims.lock().unwrap();
            let mut ids: Vec<u64> = victims
                .iter()
                .filter(|(_, v)| want(v.class.load(Ordering::Relaxed)))
                .map(|(id, _)| *id)
                .collect();
            if ids.is_empty() {
                return;
            }
            // HashMap order varies between runs; sorted, the seed alone decides.
            ids.sort_unstable();
            let id = ids[rng.random_range(0..ids.len())];
            victims.remove(&id)
        };
        let mode = if rng.random_bool(0.5) {
            Mode::Fin
        } else {
            Mode::Rst
        };
        if let Some(v) = victim
            && v.cut.send(mode).is_ok()
        {
            self.cuts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A byte of the chosen kind is due and the budget is spent (`after` 0): the cut is
    /// now. True for the one caller that makes it.
    fn trip(&self) -> bool {
        let mut b = self.budget.lock().unwrap();
        if b.tripped.is_some() {
            return false;
        }
        b.tripped = Some(Instant::now());
        true
    }
}

/// A running fault proxy; stops (and closes every connection it holds) when dropped.
pub struct FaultProxy {
    port: u16,
    /// `None` in random mode.
    fault: Option<Fault>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr, fault: Fault) -> FaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::with_listener(l, upstream, fault, false)
    }

    /// Serves on `listener`; with `verbose`, every event is also printed on stderr.
    pub fn with_listener(
        listener: TcpListener,
        upstream: SocketAddr,
        fault: Fault,
        verbose: bool,
    ) -> FaultProxy {
        Self::serve(listener, upstream, Ok(fault), verbose)
    }

    /// Serves on `listener`, cutting connections at random as `cuts` says (see
    /// [`RandomCuts`]) instead of injecting one fault.
    pub fn random(
        listener: TcpListener,
        upstream: SocketAddr,
        cuts: RandomCuts,
        verbose: bool,
    ) -> FaultProxy {
        Self::serve(listener, upstream, Err(cuts), verbose)
    }

    fn serve(
        listener: TcpListener,
        upstream: SocketAddr,
        plan: Result<Fault, RandomCuts>,
        verbose: bool,
    ) -> FaultProxy {
        let port = listener.local_addr().unwrap().port();
        let fault = plan.as_ref().ok().copied();
        let shared = Arc::new(Shared {
            budget: Mutex::new(Budget {
                left: fault.map_or(0, |f| f.after),
                tripped: None,
            }),
            verbose,
            ..Shared::default()
        });
        let sh = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            let mut next_id = 0u64;
            let random = plan.err();
            let mut rng = rand::rngs::StdRng::seed_from_u64(random.as_ref().map_or(0, |r| r.seed));
            let draw = |rng: &mut rand::rngs::StdRng| match &random {
                Some(r) => rng.random_range(r.every.clone()),
                None => Duration::MAX,
            };
            let next = draw(&mut rng);
            let timer = tokio::time::sleep(next.min(Duration::from_secs(1 << 30)));
            tokio::pin!(timer);
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => {
                            next_id += 1;
                            conns.spawn(connection(next_id, s, upstream, fault, sh.clone()));
                        }
                        // A connection reset before accept, or out of descriptors.
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    () = &mut timer, if random.is_some() => {
                        sh.cut_random(random.as_ref().and_then(|r| r.kind), &mut rng);
                        let next = draw(&mut rng);
                        timer.as_mut().reset(tokio::time::Instant::now() + next);
                    }
                }
            }
        });
        FaultProxy {
            port,
            fault,
            shared,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The one fault it injects; `None` for a [`FaultProxy::random`] proxy.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// Random mode: connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::Relaxed)
    }

    /// Whether the fault happened (a connection was cut).
    pub fn tripped(&self) -> bool {
        self.tripped_at().is_some()
    }

    /// When the cut happened.
    pub fn tripped_at(&self) -> Option<Instant> {
        self.shared.budget.lock().unwrap().tripped
    }

    /// What the proxy did: what each connection carries (a line whenever that changes)
    /// and the cut.
    pub fn events(&self) -> Vec<String> {
        self.shared.events.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
        self.shared.parked.lock().unwrap().clear();
        self.shared.victims.lock().unwrap().clear();
    }
}

/// Bytes held for one direction.
struct Pipe {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The source sent FIN.
    eof: bool,
    /// FIN passed on to the destination.
    shut: bool,
}

const PIPE_BUF: usize = 64 * 1024;

impl Pipe {
    fn new() -> Pipe {
        Pipe {
            buf: vec![0; PIPE_BUF],
            start: 0,
            end: 0,
            eof: false,
            shut: false,
        }
    }
    fn has_data(&self) -> bool {
        self.start < self.end
    }
    fn held(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn wants_read(&self) -> bool {
        !self.eof && self.end < self.buf.len()
    }
    fn done(&self) -> bool {
        self.shut
    }
    /// Reads from `src` without blocking.
    fn fill(&mut self, src: &TcpStream) -> std::io::Result<()> {
        match src.try_read(&mut self.buf[self.end..]) {
            Ok(0) => {
                self.eof = true;
                Ok(())
            }
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
    /// Writes at most `limit` held bytes to `dst` without blocking; returns them.
    fn drain(&mut self, dst: &TcpStream, limit: usize) -> std::io::Result<&[u8]> {
        let n = (self.end - self.start).min(limit);
        match dst.try_write(&self.buf[self.start..self.start + n]) {
            Ok(w) => {
                let from = self.start;
                self.start += w;
                let written = &self.buf[from..from + w];
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                Ok(written)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(&[]),
            Err(e) => Err(e),
        }
    }
}

fn interest(read: bool, write: bool) -> Option<Interest> {
    match (read, write) {
        (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
        (true, false) => Some(Interest::READABLE),
        (false, true) => Some(Interest::WRITABLE),
        (false, false) => None,
    }
}

/// How a relay ended.
enum End {
    /// Both directions finished (FIN passed on both ways).
    Closed,
    /// A peer failed (reset, or a write to a closed peer): pass a reset on.
    Failed(&'static str, std::io::Error),
    /// This connection spent the last byte of the budget.
    Cut,
    /// Random mode picked this connection.
    RandomCut(Mode),
}

/// `fault` is `None` in random mode.
async fn connection(
    id: u64,
    client: TcpStream,
    upstream: SocketAddr,
    fault: Option<Fault>,
    sh: Arc<Shared>,
) {
    let _ = client.set_nodelay(true);
    let server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            sh.event(format!("conn {id}: upstream {upstream}: {e}"));
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let mut random = None;
    if fault.is_none() {
        let (tx, rx) = oneshot::channel();
        let class = Arc::new(AtomicU8::new(class_code(None)));
        sh.victims.lock().unwrap().insert(
            id,
            Victim {
                class: class.clone(),
                cut: tx,
            },
        );
        random = Some((class, rx));
    }
    let end = relay(id, &client, &server, fault.map(|f| f.kind), random, &sh).await;
    sh.victims.lock().unwrap().remove(&id);
    match end {
        End::Closed => {}
        End::Failed(side, e) => {
            // Pass the failure on as a reset, as the peers' own stacks would once they
            // wrote into a dead connection.
            sh.event(format!("conn {id}: {side}: {e}; resetting both"));
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
        End::Cut => {
            let Some(fault) = fault else {
                unreachable!("only a fault's budget cuts")
            };
            sh.event(format!(
                "conn {id}: cut ({}) after {} {} bytes",
                fault.mode, fault.after, fault.kind
            ));
            cut(client, server, fault.mode, &sh).await;
        }
        End::RandomCut(mode) => {
            sh.event(format!("conn {id}: cut ({mode}) at random"));
            cut(client, server, mode, &sh).await;
        }
    }
}

/// Forwards both ways until both are closed, a peer fails, or this connection spends the
/// last byte of the budget of `kind`. In random mode (`kind` is `None`) there is no budget;
/// `random` publishes the class of the connection's latest request and brings the cut.
async fn relay(
    id: u64,
    client: &TcpStream,
    server: &TcpStream,
    kind: Option<Kind>,
    mut random: Option<(Arc<AtomicU8>, oneshot::Receiver<Mode>)>,
    sh: &Shared,
) -> End {
    let class = match kind {
        Some(Kind::Pull) | None => Class::Pull,
        Some(Kind::Push) => Class::Push,
    };
    let mut up = Pipe::new(); // client → server
    let mut down = Pipe::new(); // server → client
    let mut requests = RequestTracker::default();
    let mut shown: Option<Class> = None;
    let mut note = |c: Class, line: &[u8]| {
        if shown != Some(c) {
            shown = Some(c);
            let line = String::from_utf8_lossy(&line[..line.len().min(120)]);
            sh.event(format!("conn {id}: {c:?} ({})", line.trim_end()));
        }
    };
    loop {
        // Half-close: a FIN goes on once everything before it has.
        if up.eof && !up.has_data() && !up.shut {
            up.shut = true;
            let _ = shutdown_write(server);
        }
        if down.eof && !down.has_data() && !down.shut {
            down.shut = true;
            let _ = shutdown_write(client);
        }
        if up.done() && down.done() {
            return End::Closed;
        }
        let ci = interest(up.wants_read(), down.has_data());
        let si = interest(down.wants_read(), up.has_data());
        tokio::select! {
            r = client.ready(ci.unwrap_or(Interest::READABLE)), if ci.is_some() => {
                let Ok(ready) = r else { return End::Failed("client", std::io::Error::other("poll")) };
                let read = if ready.is_readable() && up.wants_read() {
                    up.fill(client)
                } else {
                    Ok(())
                };
                if let Err(e) = read {
                    return End::Failed("client read", e);
                }
                if ready.is_writable() && down.has_data() {
                    // Server → client bytes belong to the request being answered.
                    let counted = kind == Some(Kind::Pull) && requests.current() == Some(class);
                    let left = if counted { sh.left() } else { None };
                    let limit = left.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
                    if limit == 0 && sh.trip() {
                        return End::Cut;
                    }
                    match down.drain(client, limit) {
                        Ok(w) => {
                            if left.is_some() && sh.charge(w.len() as u64) {
                                return End::Cut;
                            }
                        }
                        Err(e) => return End::Failed("client write", e),
                    }
                }
            }
            r = server.ready(si.unwrap_or(Interest::READABLE)), if si.is_some() => {
                let Ok(ready) = r else { return End::Failed("server", std::io::Error::other("poll")) };
                let read = if ready.is_readable() && down.wants_read() {
                    down.fill(server)
                } else {
                    Ok(())
                };
                if let Err(e) = read {
                    return End::Failed("server read", e);
                }
                if ready.is_writable() && up.has_data() {
                    // How far the budget lets these bytes go (push bytes are charged).
                    let left = if kind == Some(Kind::Push) { sh.left() } else { None };
                    let limit = match left {
                        Some(l) => requests.clone().feed(up.held(), class, l, &mut |_, _| {}).0,
                        None => usize::MAX,
                    };
                    if limit == 0 && sh.trip() {
                        return End::Cut;
                    }
                    match up.drain(server, limit) {
                        Ok(w) => {
                            let (_, charged) = requests.feed(w, class, u64::MAX, &mut note);
                            if let Some((published, _)) = &random {
                                published.store(class_code(requests.current()), Ordering::Relaxed);
                            }
                            if left.is_some() && sh.charge(charged) {
                                return End::Cut;
                            }
                        }
                        Err(e) => return End::Failed("server write", e),
                    }
                }
            }
            cut = async { (&mut random.as_mut().expect("guarded").1).await }, if random.is_some() => {
                match cut {
                    Ok(mode) => return End::RandomCut(mode),
                    // The proxy is going away: forward until the runtime's end.
                    Err(_) => random = None,
                }
            }
            // Both directions are blocked on nothing: only possible once both ended,
            // which the checks above return on.
            else => return End::Closed,
        }
    }
}

fn shutdown_write(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a descriptor `s` owns and keeps open.
    let r = unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn cut(mut client: TcpStream, mut server: TcpStream, mode: Mode, sh: &Shared) {
    match mode {
        Mode::Rst => {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
        Mode::Silent => {
            sh.parked.lock().unwrap().extend([client, server]);
        }
        Mode::Fin => {
            let _ = shutdown_write(&client);
            let _ = shutdown_write(&server);
            // Read and drop until both peers close, so closing sends no RST.
            let mut a = vec![0u8; 64 * 1024];
            let mut b = vec![0u8; 64 * 1024];
            let (mut ca, mut sa) = (true, true);
            while ca || sa {
                tokio::select! {
                    r = client.read(&mut a), if ca => ca = matches!(r, Ok(n) if n > 0),
                    r = server.read(&mut b), if sa => sa = matches!(r, Ok(n) if n > 0),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_the_request_line() {
        let c = |s: &str| classify(s.as_bytes());
        assert_eq!(
            c("GET /pull?token=abc HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Class::Pull)
        );
        assert_eq!(
            c("POST /push?token=abc HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
            Some(Class::Push)
        );
        assert_eq!(c("GET /pull HTTP/1.0\n"), Some(Class::Pull));
        // Absolute form, as a client sends it to a forward proxy.
        assert_eq!(
            c("GET http://pht-server.test:8443/pull?token=t HTTP/1.1\r\n"),
            Some(Class::Pull)
        );
        assert_eq!(
            c("POST http://127.0.0.1:1/push HTTP/1.1\r\n"),
            Some(Class::Push)
        );
        assert_eq!(c("POST /authorize HTTP/1.1\r\n"), Some(Class::Other));
        assert_eq!(c("GET /authorize HTTP/1.1\r\n"), Some(Class::Other));
        // Method and path must match together, and exactly.
        assert_eq!(c("POST /pull?token=t HTTP/1.1\r\n"), Some(Class::Other));
        assert_eq!(c("GET /push?token=t HTTP/1.1\r\n"), Some(Class::Other));
        assert_eq!(c("GET /pullx HTTP/1.1\r\n"), Some(Class::Other));
        assert_eq!(c("GET /x/pull HTTP/1.1\r\n"), Some(Class::Other));
        assert_eq!(c("get /pull HTTP/1.1\r\n"), Some(Class::Other));
        assert_eq!(c("GET http://h/pullx HTTP/1.1\r\n"), Some(Class::Other));
        assert_eq!(c("GET http://h HTTP/1.1\r\n"), Some(Class::Other));
        assert_eq!(c("CONNECT h:1 HTTP/1.1\r\n"), Some(Class::Other));
        // HTTP/2 prior knowledge, TLS, garbage.
        assert_eq!(c("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Some(Class::Other));
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x02, b'\n']),
            Some(Class::Other)
        );
        assert_eq!(c("GET /pull\r\n"), Some(Class::Other));
        assert_eq!(c("GET  /pull HTTP/1.1\r\n"), Some(Class::Other));
    }

    #[test]
    fn waits_for_a_whole_request_line() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GET /pu"), None);
        assert_eq!(classify(b"GET /pull?token=abc HTTP/1.1\r"), None);
        assert_eq!(
            classify(b"GET /pull?token=abc HTTP/1.1\r\n"),
            Some(Class::Pull)
        );
        let long = vec![b'a'; MAX_REQUEST_LINE];
        assert_eq!(classify(&long), Some(Class::Other));
        assert_eq!(classify(&long[..MAX_REQUEST_LINE - 1]), None);
    }

    const R1: &[u8] = b"POST /push?token=a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    const R2: &[u8] = b"GET /pull?token=a HTTP/1.1\r\nHost: x\r\n\r\n";
    const R3: &[u8] = b"POST /push?token=a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n";
    const R4: &[u8] = b"POST /authorize HTTP/1.1\r\ncontent-length: 0\r\n\r\n";
    const R5: &[u8] = b"GET /pull HTTP/1.1\r\n\r\n";

    /// Feeds `chunks` in order; returns the classes seen and the bytes charged to `kind`.
    fn track(chunks: &[&[u8]], kind: Class) -> (Vec<Class>, u64, Option<Class>) {
        let mut t = RequestTracker::default();
        let mut seen = Vec::new();
        let mut charged = 0;
        for c in chunks {
            let (n, ch) = t.feed(c, kind, u64::MAX, &mut |cl, _| seen.push(cl));
            assert_eq!(n, c.len(), "an unlimited feed consumes everything");
            charged += ch;
        }
        (seen, charged, t.current())
    }

    #[test]
    fn follows_requests_on_a_reused_connection() {
        let all = [R1, R2, R3, R4, R5].concat();
        let want = vec![
            Class::Push,
            Class::Pull,
            Class::Push,
            Class::Other,
            Class::Pull,
        ];
        let push = (R1.len() + R3.len()) as u64;
        let pull = (R2.len() + R5.len()) as u64;
        // In one piece, byte by byte, and in odd pieces: the same.
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        let odd: Vec<&[u8]> = all.chunks(7).collect();
        for chunks in [vec![&all[..]], bytes, odd] {
            assert_eq!(
                track(&chunks, Class::Push),
                (want.clone(), push, Some(Class::Pull))
            );
            assert_eq!(track(&chunks, Class::Pull).1, pull);
        }
    }

    #[test]
    fn request_lines_inside_bodies_are_data() {
        let body = b"GET /pull HTTP/1.1\r\n\r\n";
        let mut req = format!(
            "POST /push HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let (seen, charged, _) = track(&[&req, R5], Class::Push);
        assert_eq!(seen, vec![Class::Push, Class::Pull]);
        assert_eq!(charged, req.len() as u64);
        // CONNECT turns the rest of the connection into opaque bytes.
        let (seen, _, current) = track(&[b"CONNECT h:1 HTTP/1.1\r\n\r\n", R2, R1], Class::Push);
        assert_eq!(seen, vec![Class::Other]);
        assert_eq!(current, Some(Class::Other));
    }

    #[test]
    fn stops_at_the_budget() {
        let line = b"POST /push?token=a HTTP/1.1\r\n".len();
        let mut t = RequestTracker::default();
        let mut none = |_: Class, _: &[u8]| {};
        // Within the head, after its request line.
        assert_eq!(t.feed(R1, Class::Push, 40, &mut none), (40, 40));
        assert_eq!(t.feed(&R1[40..], Class::Push, 0, &mut none), (0, 0));
        // Within the body.
        let head = R1.len() - 5;
        assert_eq!(
            t.feed(&R1[40..], Class::Push, (head - 40 + 2) as u64, &mut none),
            (head - 40 + 2, (head - 40 + 2) as u64)
        );
        // Bytes of other requests are not limited.
        let mut t = RequestTracker::default();
        assert_eq!(t.feed(R2, Class::Push, 0, &mut none), (R2.len(), 0));
        // A request line is charged whole when it completes: a small overshoot.
        let mut t = RequestTracker::default();
        assert_eq!(t.feed(R1, Class::Push, 10, &mut none), (line, line as u64));
    }

    /// Opens a connection through `port` and sends `request`; the upstream echoes it.
    async fn request(port: u16, request: &str) -> TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut back = vec![0; request.len()];
        c.read_exact(&mut back).await.unwrap();
        c
    }

    /// Whether the proxy cut `c` (EOF or reset) within `wait`.
    async fn was_cut(c: &mut TcpStream, wait: Duration) -> bool {
        let mut b = [0u8; 16];
        match tokio::time::timeout(wait, c.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => panic!("{n} unexpected bytes"),
            Err(_) => false,
        }
    }

    async fn echo_upstream() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    const PULL: &str = "GET /pull?token=a HTTP/1.1\r\n\r\n";
    const PUSH: &str = "POST /push?token=a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
    const AUTHORIZE: &str = "GET /authorize HTTP/1.1\r\n\r\n";

    #[tokio::test]
    async fn random_mode_cuts_pulls_and_pushes_only() {
        let upstream = echo_upstream().await;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cuts = RandomCuts {
            every: Duration::from_millis(5)..=Duration::from_millis(20),
            kind: None,
            seed: 7,
        };
        let proxy = FaultProxy::random(l, upstream, cuts, false);
        assert_eq!(proxy.fault(), None);
        let mut others = Vec::new();
        for _ in 0..3 {
            others.push(request(proxy.port(), AUTHORIZE).await);
        }
        let mut victims = Vec::new();
        for r in [PULL, PUSH, PULL, PUSH] {
            victims.push(request(proxy.port(), r).await);
        }
        for (i, c) in victims.iter_mut().enumerate() {
            assert!(
                was_cut(c, Duration::from_secs(5)).await,
                "connection {i} lives"
            );
        }
        assert_eq!(proxy.cuts(), 4);
        // Dozens of draws later, the authorize connections still carry bytes both ways.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for c in &mut others {
            use tokio::io::AsyncWriteExt;
            assert!(!was_cut(c, Duration::from_millis(1)).await);
            c.write_all(b"ping").await.unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"ping");
        }
        assert_eq!(proxy.cuts(), 4);
    }

    #[tokio::test]
    async fn random_mode_keeps_to_its_kind() {
        let upstream = echo_upstream().await;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cuts = RandomCuts {
            every: Duration::from_millis(5)..=Duration::from_millis(5),
            kind: Some(Kind::Push),
            seed: 1,
        };
        let proxy = FaultProxy::random(l, upstream, cuts, false);
        let mut pull = request(proxy.port(), PULL).await;
        let mut push = request(proxy.port(), PUSH).await;
        assert!(was_cut(&mut push, Duration::from_secs(5)).await);
        assert!(!was_cut(&mut pull, Duration::from_millis(200)).await);
        assert_eq!(proxy.cuts(), 1);
    }

    #[test]
    fn parses_kind_and_mode() {
        assert_eq!("pull".parse(), Ok(Kind::Pull));
        assert_eq!("push".parse(), Ok(Kind::Push));
        assert!("other".parse::<Kind>().is_err());
        assert_eq!("fin".parse(), Ok(Mode::Fin));
        assert_eq!("rst".parse(), Ok(Mode::Rst));
        assert_eq!("silent".parse(), Ok(Mode::Silent));
        assert!("RST".parse::<Mode>().is_err());
    }
}
