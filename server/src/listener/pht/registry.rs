//! Tunnels by token: reserved (authorized, not used yet), live, or closed (tombstones);
//! the limits on them per client and in total; and the idle reaper.
//!
//! An authorized token costs a map entry and nothing else: its tunnel, and so the
//! handler's work (a `forward` handler dials its target at once), only starts with the
//! first pull or push. A server-speaks-first protocol still works, since the client pulls
//! right after authorizing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use pht_core::frame::ResetCode;
use pht_core::token_prefix;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::PhtOptions;
use super::pipe::Pipe;
use super::v2::{Session, Version};
use crate::listener::{Accepted, ReportTimer};

/// The HTTP side of one tunnel.
pub(super) struct ServerTunnel {
    pub token: String,
    /// The client address the tunnel counts against.
    client: IpAddr,
    /// The bytes between HTTP requests and the handler.
    pub pipe: Arc<Pipe>,
    /// Set while a pull request streams this tunnel (a second one gets 409).
    pub pull_busy: AtomicBool,
    /// Fired when the tunnel is torn down, so pending requests let go at once.
    pub cancel: CancellationToken,
    pub pull_attached: AtomicBool,
    last_active: Mutex<Instant>,
    /// The PHT/2 state; `None` for a PHT/1 tunnel (the version its first request spoke).
    pub v2: Option<Arc<Session>>,
}

impl ServerTunnel {
    pub fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_since(&self) -> Instant {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the HTTP side: pending requests let go, the handler reads what is left, then EOF.
    fn shut(&self) {
        self.pipe.close();
        self.cancel.cancel();
    }

    /// Ends the tunnel as an error: the handler's stream fails, so it resets its target,
    /// and a pull in progress breaks off.
    fn abort(&self, code: ResetCode, why: &'static str) {
        self.pipe.abort(code, why);
        self.cancel.cancel();
    }
}

enum Slot {
    /// Handed out by authorize; becomes live on its first pull or push.
    Reserved {
        client: IpAddr,
        at: Instant,
    },
    Live(Arc<ServerTunnel>),
    /// A tombstone; `reset` when the tunnel ended as an error.
    Closed {
        at: Instant,
        reset: bool,
    },
}

pub(super) enum Lookup {
    Live(Arc<ServerTunnel>),
    /// The token was closed (`reset`: as an error): never bring it back.
    Closed {
        reset: bool,
    },
    /// Unknown and not created (creation not asked for).
    Unknown,
    /// Not created: a limit says no.
    Refused(Refusal),
}

/// Which tokens a lookup may start a tunnel for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Create {
    /// None: only live tunnels are found.
    Never,
    /// Tokens this server handed out (authorize) and nothing else: a request that proves
    /// its tunnel existed (a PHT/2 `ack` > 0) must not start one for a token never seen.
    Reserved,
    /// Reserved tokens and tokens never seen (gost ≥ 3.3 clients choose their own).
    Any,
}

impl From<bool> for Create {
    fn from(create: bool) -> Self {
        if create { Create::Any } else { Create::Never }
    }
}

/// Why a new tunnel was refused; each is a `429` with its own body, except
/// [`Refusal::Draining`], a `503`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The handler is not taking tunnels fast enough (`backlog`).
    QueueFull,
    /// `maxTunnels` tunnels are open.
    ServerFull,
    /// This client has `maxTunnelsPerClient` tunnels open.
    ClientFull,
    /// This client opens tunnels faster than `tunnelRate`.
    TooFast,
    /// The server is shutting down gracefully (`drainTimeout`): open tunnels run on, new
    /// ones belong on another instance.
    Draining,
}

impl Refusal {
    /// The option that set the limit (`pht_refusals_total{reason}`).
    pub fn limit(self) -> &'static str {
        match self {
            Refusal::QueueFull => "backlog",
            Refusal::ServerFull => "maxTunnels",
            Refusal::ClientFull => "maxTunnelsPerClient",
            Refusal::TooFast => "tunnelRate",
            Refusal::Draining => "draining",
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Refusal::QueueFull => "tunnel queue full\n",
            Refusal::ServerFull => "server tunnel limit reached\n",
            Refusal::ClientFull => "tunnel limit for this client reached\n",
            Refusal::TooFast => "tunnels opened too fast, slow down\n",
            Refusal::Draining => "server is shutting down\n",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How long an authorized but unused token keeps a drain waiting for its tunnel.
const RESERVED_BUSY: std::time::Duration = std::time::Duration::from_secs(5);

/// Per-client accounting: open (and reserved) tunnels, and a token bucket for new ones.
struct Client {
    tunnels: usize,
    bucket: f64,
    refilled: Instant,
}

struct Tables {
    tokens: HashMap<String, Slot>,
    clients: HashMap<IpAddr, Client>,
    /// Reserved and live tokens.
    open: usize,
}

pub(super) struct Registry {
    tables: Mutex<Tables>,
    queue: mpsc::Sender<Accepted>,
    pub opts: PhtOptions,
    pub service: String,
    /// Refusals per [`Refusal`] since the last report: a flood makes one log line per
    /// [`REPORT_EVERY`](crate::listener::REPORT_EVERY), not one per request.
    refused: [AtomicU64; 5],
    /// Set by [`Registry::drain`]: no new tunnels from then on.
    draining: AtomicBool,
    report: ReportTimer,
    /// This listener's series, when metrics are on.
    pub metrics: Option<crate::metrics::PhtMetrics>,
}

impl Registry {
    pub fn new(opts: PhtOptions, queue: mpsc::Sender<Accepted>, service: String) -> Self {
        Registry {
            tables: Mutex::new(Tables {
                tokens: HashMap::new(),
                clients: HashMap::new(),
                open: 0,
            }),
            queue,
            opts,
            refused: Default::default(),
            draining: AtomicBool::new(false),
            report: ReportTimer::new(),
            metrics: crate::metrics::get().map(|m| m.pht(&service)),
            service,
        }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a refusal, and logs the sum now and then.
    fn refuse(&self, why: Refusal, client: IpAddr) -> Refusal {
        if why == Refusal::Draining {
            // Expected while shutting down: the balancer sends the client elsewhere.
            debug!(service = %self.service, %client, "new tunnel refused: draining");
            return why;
        }
        self.refused[why.index()].fetch_add(1, Ordering::Relaxed);
        if self.report.due() {
            let n = |r: Refusal| self.refused[r.index()].swap(0, Ordering::Relaxed);
            let (queue, server, per_client, rate) = (
                n(Refusal::QueueFull),
                n(Refusal::ServerFull),
                n(Refusal::ClientFull),
                n(Refusal::TooFast),
            );
            warn!(
                service = %self.service, last_client = %client,
                backlog = queue, max_tunnels = server, max_tunnels_per_client = per_client,
                tunnel_rate = rate,
                "new tunnels refused with 429 (counts since the last report, by limit)"
            );
        }
        why
    }

    /// Takes one tunnel's worth of the limits for `client`, or says which limit refuses.
    fn admit(&self, t: &mut Tables, client: IpAddr) -> Result<(), Refusal> {
        let o = &self.opts;
        if o.max_tunnels > 0 && t.open >= o.max_tunnels {
            return Err(Refusal::ServerFull);
        }
        let c = t.clients.entry(client).or_insert_with(|| Client {
            tunnels: 0,
            bucket: o.tunnel_burst() as f64,
            refilled: Instant::now(),
        });
        if o.max_tunnels_per_client > 0 && c.tunnels >= o.max_tunnels_per_client {
            return Err(Refusal::ClientFull);
        }
        if o.tunnel_rate > 0.0 {
            let now = Instant::now();
            let earned = now.duration_since(c.refilled).as_secs_f64() * o.tunnel_rate;
            c.bucket = (c.bucket + earned).min(o.tunnel_burst() as f64);
            c.refilled = now;
            if c.bucket < 1.0 {
                return Err(Refusal::TooFast);
            }
            c.bucket -= 1.0;
        }
        c.tunnels += 1;
        t.open += 1;
        Ok(())
    }

    /// Gives back what [`Registry::admit`] took.
    fn release(&self, t: &mut Tables, client: IpAddr) {
        t.open = t.open.saturating_sub(1);
        if let Some(c) = t.clients.get_mut(&client) {
            c.tunnels = c.tunnels.saturating_sub(1);
        }
    }

    /// Hands out a new token for `client` (authorize), within the limits. Its tunnel
    /// starts with the first pull or push.
    pub fn reserve(&self, client: IpAddr) -> Result<String, Refusal> {
        if self.draining.load(Ordering::Acquire) {
            return Err(self.refuse(Refusal::Draining, client));
        }
        let token = match &self.opts.instance {
            // The balancer reads the instance back from the token (docs/DEPLOY.md).
            Some(name) => format!("{name}.{}", pht_core::mint_token()),
            None => pht_core::mint_token(),
        };
        let mut t = self.tables();
        if let Err(why) = self.admit(&mut t, client) {
            drop(t);
            return Err(self.refuse(why, client));
        }
        t.tokens.insert(
            token.clone(),
            Slot::Reserved {
                client,
                at: Instant::now(),
            },
        );
        Ok(token)
    }

    /// Finds `token`'s tunnel, starting it when `create` is set and the token was
    /// reserved or never seen (gost ≥ 3.3 clients choose their own tokens); a new tunnel
    /// speaks `version` for good. A full backlog is waited on for `backlogWait` before
    /// the answer is 429.
    pub async fn lookup(
        &self,
        token: &str,
        peer: SocketAddr,
        client: IpAddr,
        create: impl Into<Create>,
        version: Version,
    ) -> Lookup {
        let create = create.into();
        let reserved = match self.tables().tokens.get(token) {
            Some(Slot::Live(t)) => return Lookup::Live(t.clone()),
            // While draining, a token never seen here may well be live on another
            // instance: 503 sends the balancer there (a 410 would end the tunnel).
            None if self.draining.load(Ordering::Acquire) => {
                return Lookup::Refused(self.refuse(Refusal::Draining, client));
            }
            Some(Slot::Closed { reset, .. }) => return Lookup::Closed { reset: *reset },
            Some(Slot::Reserved { client, .. }) if create != Create::Never => Some(*client),
            Some(Slot::Reserved { .. }) => return Lookup::Unknown,
            None if create != Create::Any => return Lookup::Unknown,
            None => None,
        };
        let permit = match tokio::time::timeout(self.opts.backlog_wait, self.queue.reserve()).await
        {
            Ok(Ok(p)) => p,
            _ => {
                debug!(service = %self.service, %peer, "pht backlog full: tunnel refused");
                return Lookup::Refused(self.refuse(Refusal::QueueFull, client));
            }
        };
        let mut t = self.tables();
        // Another request for the same token may have won while this one waited.
        let owner = match t.tokens.get(token) {
            Some(Slot::Live(s)) => return Lookup::Live(s.clone()),
            Some(Slot::Closed { reset, .. }) => return Lookup::Closed { reset: *reset },
            Some(Slot::Reserved { client, .. }) => *client,
            // Expired meanwhile.
            None if reserved.is_some() => return Lookup::Closed { reset: false },
            None => {
                if self.draining.load(Ordering::Acquire) {
                    drop(t);
                    return Lookup::Refused(self.refuse(Refusal::Draining, client));
                }
                if let Err(why) = self.admit(&mut t, client) {
                    drop(t);
                    return Lookup::Refused(self.refuse(why, client));
                }
                client
            }
        };
        let (pipe, end) = Pipe::new(self.opts.tunnel_buffer);
        permit.send(Accepted {
            stream: Box::new(end),
            // Behind a trusted proxy the handler (admission, logs) sees the client it named.
            peer: if client == peer.ip() {
                peer
            } else {
                SocketAddr::new(client, 0)
            },
            tag: Some(token_prefix(token).to_string()),
            local: None,
        });
        let s = Arc::new(ServerTunnel {
            token: token.to_string(),
            client: owner,
            pipe,
            pull_busy: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            pull_attached: AtomicBool::new(false),
            last_active: Mutex::new(Instant::now()),
            v2: (version == Version::V2).then(|| Arc::new(Session::new(&self.opts))),
        });
        t.tokens.insert(token.to_string(), Slot::Live(s.clone()));
        if let Some(m) = &self.metrics {
            m.tunnel_opened();
        }
        debug!(service = %self.service, token = token_prefix(token), %peer, tunnels = t.open, ?version, "tunnel opened");
        Lookup::Live(s)
    }

    /// Leaves a tombstone for `token` and gives back its share of the limits; returns
    /// the live tunnel it replaced, if any, and how many tunnels are open now.
    fn bury(&self, token: &str, reset: bool) -> Option<(Arc<ServerTunnel>, usize)> {
        let mut t = self.tables();
        let tomb = Slot::Closed {
            at: Instant::now(),
            reset,
        };
        let old = match t.tokens.get_mut(token) {
            // Already buried: a reset after a close still marks it reset.
            Some(Slot::Closed { reset: was, .. }) => {
                *was |= reset;
                return None;
            }
            _ => t.tokens.insert(token.to_string(), tomb),
        };
        match old {
            Some(Slot::Live(s)) => {
                self.release(&mut t, s.client);
                if let Some(m) = &self.metrics {
                    m.tunnel_closed();
                }
                Some((s, t.open))
            }
            Some(Slot::Reserved { client, .. }) => {
                self.release(&mut t, client);
                None
            }
            _ => None,
        }
    }

    /// Closes `token` and leaves a tombstone.
    pub fn close(&self, token: &str, reason: &str) {
        if let Some((s, open)) = self.bury(token, false) {
            debug!(service = %self.service, token = token_prefix(token), reason, tunnels = open, "tunnel closed");
            s.shut();
        }
    }

    /// Ends `token` as an error (see [`Pipe::abort`]) and leaves a tombstone.
    pub fn abort(&self, token: &str, code: ResetCode, reason: &'static str) {
        if let Some((s, open)) = self.bury(token, true) {
            debug!(service = %self.service, token = token_prefix(token), reason, ?code, tunnels = open, "tunnel reset");
            s.abort(code, reason);
        }
    }

    /// Resets idle tunnels (PHT/1: no pull and no push for `idleTimeout`; PHT/2: no pull
    /// for `resumeGrace`), forgets unused reservations and old tombstones.
    pub fn reap(&self) {
        let now = Instant::now();
        let mut idle = Vec::new();
        let mut no_pull = Vec::new();
        let mut t = self.tables();
        let mut freed = Vec::new();
        t.tokens.retain(|token, slot| match slot {
            Slot::Live(s) => {
                match &s.v2 {
                    // A PHT/2 pull may break and come back; without one for this long
                    // the client is gone (pushes alone do not prove it can still read).
                    Some(session) => {
                        if session
                            .detached_for(now)
                            .is_some_and(|d| d >= self.opts.resume_grace)
                        {
                            no_pull.push(token.clone());
                        }
                    }
                    None => {
                        if !s.pull_attached.load(Ordering::Acquire)
                            && now.duration_since(s.idle_since()) >= self.opts.idle_timeout
                        {
                            idle.push(token.clone());
                        }
                    }
                }
                true
            }
            Slot::Reserved { client, at } => {
                let keep = now.duration_since(*at) < self.opts.idle_timeout;
                if !keep {
                    freed.push(*client);
                }
                keep
            }
            Slot::Closed { at, .. } => now.duration_since(*at) < self.opts.tombstone_ttl,
        });
        for client in freed {
            self.release(&mut t, client);
        }
        // Forget clients with nothing open and a full bucket: the table stays small.
        let burst = self.opts.tunnel_burst() as f64;
        let rate = self.opts.tunnel_rate;
        t.clients.retain(|_, c| {
            c.tunnels > 0
                || rate > 0.0
                    && c.bucket + now.duration_since(c.refilled).as_secs_f64() * rate < burst
        });
        drop(t);
        // The client vanished without closing: its far end must not see a clean end.
        for token in idle {
            self.abort(&token, ResetCode::NoPull, "idle: no pull and no push");
        }
        for token in no_pull {
            self.abort(&token, ResetCode::NoPull, "no pull within the grace period");
        }
    }

    /// Resets every tunnel (shutdown): a stream cut short is not a clean end.
    pub fn close_all(&self) {
        let live: Vec<String> = self
            .tables()
            .tokens
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Live(_)))
            .map(|(k, _)| k.clone())
            .collect();
        for token in live {
            self.abort(&token, ResetCode::ShuttingDown, "server shutting down");
        }
    }

    /// Graceful shutdown begins: authorize and never-seen tokens get 503 from now on;
    /// live tunnels, and tokens authorized before, go on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Tunnels still open (or authorized within the last few seconds, whose first pull
    /// is surely on its way): while there are any, a drain is not finished.
    pub fn busy(&self) -> usize {
        let now = Instant::now();
        self.tables()
            .tokens
            .values()
            .filter(|s| match s {
                Slot::Live(_) => true,
                Slot::Reserved { at, .. } => now.duration_since(*at) < RESERVED_BUSY,
                Slot::Closed { .. } => false,
            })
            .count()
    }

    /// Open (and reserved) tunnels now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.tables().open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Version::V1;
    use std::time::Duration;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lo() -> IpAddr {
        ip("127.0.0.1")
    }

    #[tokio::test]
    async fn backlog_full_refuses_and_creates_nothing() {
        let opts = PhtOptions {
            backlog: 1,
            backlog_wait: Duration::from_millis(20),
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::channel(opts.backlog);
        let reg = Registry::new(opts, tx, "s".into());
        assert!(matches!(
            reg.lookup("a", peer(), lo(), true, V1).await,
            Lookup::Live(_)
        ));
        // The handler has not taken "a" yet: the queue is full.
        assert!(matches!(
            reg.lookup("b", peer(), lo(), true, V1).await,
            Lookup::Refused(Refusal::QueueFull)
        ));
        assert!(
            matches!(
                reg.lookup("b", peer(), lo(), false, V1).await,
                Lookup::Unknown
            ),
            "no half-made tunnel"
        );
        assert_eq!(rx.recv().await.unwrap().tag.as_deref(), Some("a"));
        assert!(matches!(
            reg.lookup("b", peer(), lo(), true, V1).await,
            Lookup::Live(_)
        ));
    }

    #[tokio::test]
    async fn draining_refuses_new_tokens_and_keeps_the_others() {
        let opts = PhtOptions {
            instance: Some("s1".into()),
            ..Default::default()
        };
        let (tx, _rx) = mpsc::channel(8);
        let reg = Registry::new(opts, tx, "s".into());
        let reserved = reg.reserve(lo()).unwrap();
        assert!(reserved.starts_with("s1."), "{reserved}");
        assert!(matches!(
            reg.lookup("live", peer(), lo(), true, V1).await,
            Lookup::Live(_)
        ));
        assert_eq!(reg.busy(), 2, "a live tunnel and a fresh reservation");
        reg.drain();
        assert_eq!(reg.reserve(lo()), Err(Refusal::Draining));
        // Never seen: it may be live on another instance, so even a lookup that would
        // create nothing says 503 rather than 410.
        for create in [true, false] {
            assert!(matches!(
                reg.lookup("elsewhere", peer(), lo(), create, V1).await,
                Lookup::Refused(Refusal::Draining)
            ));
        }
        assert!(matches!(
            reg.lookup("live", peer(), lo(), true, V1).await,
            Lookup::Live(_)
        ));
        assert!(matches!(
            reg.lookup(&reserved, peer(), lo(), true, V1).await,
            Lookup::Live(_)
        ));
        reg.close("live", "test");
        reg.close(&reserved, "test");
        assert_eq!(reg.busy(), 0);
    }

    #[tokio::test]
    async fn a_request_that_has_received_bytes_starts_no_tunnel_for_a_token_never_seen() {
        let (tx, _rx) = mpsc::channel(8);
        let reg = Registry::new(PhtOptions::default(), tx, "s".into());
        assert!(matches!(
            reg.lookup(
                "other-instance",
                peer(),
                lo(),
                Create::Reserved,
                Version::V2
            )
            .await,
            Lookup::Unknown
        ));
        let token = reg.reserve(lo()).unwrap();
        assert!(matches!(
            reg.lookup(&token, peer(), lo(), Create::Reserved, Version::V2)
                .await,
            Lookup::Live(_)
        ));
        assert_eq!(reg.open(), 1);
    }

    #[tokio::test]
    async fn closed_tokens_stay_closed_until_the_tombstone_expires() {
        let opts = PhtOptions {
            tombstone_ttl: Duration::from_millis(0),
            ..Default::default()
        };
        let (tx, _rx) = mpsc::channel(8);
        let reg = Registry::new(opts, tx, "s".into());
        assert!(matches!(
            reg.lookup("a", peer(), lo(), true, V1).await,
            Lookup::Live(_)
        ));
        reg.close("a", "test");
        assert!(matches!(
            reg.lookup("a", peer(), lo(), true, V1).await,
            Lookup::Closed { reset: false }
        ));
        reg.abort("a", ResetCode::Other, "test");
        assert!(
            matches!(
                reg.lookup("a", peer(), lo(), true, V1).await,
                Lookup::Closed { reset: true }
            ),
            "a pull retried after a reset must learn of it"
        );
        reg.reap();
        assert!(matches!(
            reg.lookup("a", peer(), lo(), false, V1).await,
            Lookup::Unknown
        ));
        assert_eq!(reg.open(), 0);
    }

    #[tokio::test]
    async fn an_authorized_token_starts_no_tunnel_until_it_is_used() {
        let (tx, mut rx) = mpsc::channel(8);
        let reg = Registry::new(PhtOptions::default(), tx, "s".into());
        let token = reg.reserve(lo()).unwrap();
        assert!(rx.try_recv().is_err(), "nothing for the handler yet");
        assert!(matches!(
            reg.lookup(&token, peer(), lo(), false, V1).await,
            Lookup::Unknown
        ));
        assert!(matches!(
            reg.lookup(&token, peer(), lo(), true, V1).await,
            Lookup::Live(_)
        ));
        assert!(rx.try_recv().is_ok(), "the first pull started it");
        assert_eq!(reg.open(), 1, "counted once");
    }

    #[tokio::test]
    async fn per_client_and_total_limits() {
        let opts = PhtOptions {
            max_tunnels: 3,
            max_tunnels_per_client: 2,
            tunnel_rate: 0.0,
            ..Default::default()
        };
        let (tx, _rx) = mpsc::channel(8);
        let reg = Registry::new(opts, tx, "s".into());
        let a = reg.reserve(lo()).unwrap();
        assert!(matches!(
            reg.lookup("minted", peer(), lo(), true, V1).await,
            Lookup::Live(_)
        ));
        assert_eq!(reg.reserve(lo()), Err(Refusal::ClientFull));
        // Another client is unaffected, up to the total.
        reg.reserve(ip("127.0.0.2")).unwrap();
        assert_eq!(reg.reserve(ip("127.0.0.3")), Err(Refusal::ServerFull));
        // Closing gives the share back.
        reg.close(&a, "test");
        reg.reserve(lo()).unwrap();
    }

    #[tokio::test]
    async fn creation_rate_per_client() {
        let opts = PhtOptions {
            tunnel_rate: 1000.0,
            max_tunnels_per_client: 5,
            ..Default::default()
        };
        let (tx, _rx) = mpsc::channel(8);
        let reg = Registry::new(opts, tx, "s".into());
        // The bucket holds `maxTunnelsPerClient` tunnels: a burst that size passes.
        let mut tokens: Vec<String> = (0..5).map(|_| reg.reserve(lo()).unwrap()).collect();
        for t in tokens.drain(..) {
            reg.close(&t, "test");
        }
        assert_eq!(reg.reserve(lo()), Err(Refusal::TooFast));
        tokio::time::sleep(Duration::from_millis(5)).await;
        reg.reserve(lo()).unwrap();
    }

    #[tokio::test]
    async fn unused_reservations_expire() {
        let opts = PhtOptions {
            idle_timeout: Duration::from_millis(0),
            ..Default::default()
        };
        let (tx, _rx) = mpsc::channel(8);
        let reg = Registry::new(opts, tx, "s".into());
        let token = reg.reserve(lo()).unwrap();
        reg.reap();
        assert_eq!(reg.open(), 0);
        assert!(matches!(
            reg.lookup(&token, peer(), lo(), false, V1).await,
            Lookup::Unknown
        ));
    }

    #[tokio::test]
    async fn a_pht2_tunnel_without_a_pull_is_reset_after_the_grace() {
        let opts = PhtOptions {
            resume_grace: Duration::from_millis(0),
            ..Default::default()
        };
        let (tx, _rx) = mpsc::channel(8);
        let reg = Registry::new(opts, tx, "s".into());
        let Lookup::Live(t) = reg.lookup("a", peer(), lo(), true, Version::V2).await else {
            panic!("not created");
        };
        let session = t.v2.clone().expect("a PHT/2 tunnel has a session");
        let pull = session.attach();
        reg.reap();
        assert!(
            matches!(
                reg.lookup("a", peer(), lo(), false, V1).await,
                Lookup::Live(_)
            ),
            "a pull is attached"
        );
        session.detach(pull);
        reg.reap();
        assert!(matches!(
            reg.lookup("a", peer(), lo(), true, Version::V2).await,
            Lookup::Closed { reset: true }
        ));
        assert_eq!(t.pipe.cause().map(|c| c.code), Some(ResetCode::NoPull));
        assert_eq!(reg.open(), 0, "its share is given back");
    }
}
