//! Live tunnels by token, tombstones for closed ones, and the idle reaper.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use pht_client::logging::token_prefix;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::PhtOptions;
use super::pipe::Pipe;
use crate::listener::Accepted;

/// The HTTP side of one tunnel.
pub(super) struct ServerTunnel {
    pub token: String,
    /// The bytes between HTTP requests and the handler.
    pub pipe: Arc<Pipe>,
    /// Set while a pull request streams this tunnel (a second one gets 409).
    pub pull_busy: AtomicBool,
    /// Fired when the tunnel is torn down, so pending requests let go at once.
    pub cancel: CancellationToken,
    pub pull_attached: AtomicBool,
    last_active: Mutex<Instant>,
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
    fn abort(&self, why: &'static str) {
        self.pipe.abort(why);
        self.cancel.cancel();
    }
}

enum Slot {
    Live(Arc<ServerTunnel>),
    Closed(Instant),
}

pub(super) enum Lookup {
    Live(Arc<ServerTunnel>),
    /// The token was closed: never bring it back.
    Closed,
    /// Unknown and not created (creation not asked for).
    Unknown,
    /// The handler is not taking tunnels fast enough.
    QueueFull,
}

pub(super) struct Registry {
    map: Mutex<HashMap<String, Slot>>,
    queue: mpsc::Sender<Accepted>,
    pub opts: PhtOptions,
    pub service: String,
}

impl Registry {
    pub fn new(opts: PhtOptions, queue: mpsc::Sender<Accepted>, service: String) -> Self {
        Registry {
            map: Mutex::new(HashMap::new()),
            queue,
            opts,
            service,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds `token`, creating its tunnel when `create` is set and it was never seen
    /// (gost ≥ 3.3 clients choose their own tokens). A full backlog is waited on for
    /// `backlogWait` before the answer is 429.
    pub async fn lookup(&self, token: &str, peer: SocketAddr, create: bool) -> Lookup {
        match self.map().get(token) {
            Some(Slot::Live(t)) => return Lookup::Live(t.clone()),
            Some(Slot::Closed(_)) => return Lookup::Closed,
            None if !create => return Lookup::Unknown,
            None => {}
        }
        let permit = match tokio::time::timeout(self.opts.backlog_wait, self.queue.reserve()).await
        {
            Ok(Ok(p)) => p,
            _ => {
                debug!(service = %self.service, %peer, "pht backlog full: tunnel refused");
                return Lookup::QueueFull;
            }
        };
        let mut map = self.map();
        // Another request for the same token may have won while this one waited.
        match map.get(token) {
            Some(Slot::Live(t)) => return Lookup::Live(t.clone()),
            Some(Slot::Closed(_)) => return Lookup::Closed,
            None => {}
        }
        let (pipe, end) = Pipe::new(self.opts.tunnel_buffer);
        permit.send(Accepted {
            stream: Box::new(end),
            peer,
            tag: Some(token_prefix(token).to_string()),
            local: None,
        });
        let t = Arc::new(ServerTunnel {
            token: token.to_string(),
            pipe,
            pull_busy: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            pull_attached: AtomicBool::new(false),
            last_active: Mutex::new(Instant::now()),
        });
        map.insert(token.to_string(), Slot::Live(t.clone()));
        debug!(service = %self.service, token = token_prefix(token), %peer, tunnels = map.len(), "tunnel opened");
        Lookup::Live(t)
    }

    /// Closes `token` and leaves a tombstone.
    pub fn close(&self, token: &str, reason: &str) {
        let old = self
            .map()
            .insert(token.to_string(), Slot::Closed(Instant::now()));
        if let Some(Slot::Live(t)) = old {
            debug!(service = %self.service, token = token_prefix(token), reason, "tunnel closed");
            t.shut();
        }
    }

    /// Ends `token` as an error (see [`Pipe::abort`]) and leaves a tombstone.
    pub fn abort(&self, token: &str, reason: &'static str) {
        let old = self
            .map()
            .insert(token.to_string(), Slot::Closed(Instant::now()));
        if let Some(Slot::Live(t)) = old {
            debug!(service = %self.service, token = token_prefix(token), reason, "tunnel reset");
            t.abort(reason);
        }
    }

    /// Closes idle tunnels and forgets old tombstones.
    pub fn reap(&self) {
        let now = Instant::now();
        let mut idle = Vec::new();
        self.map().retain(|token, slot| match slot {
            Slot::Live(t) => {
                if !t.pull_attached.load(Ordering::Acquire)
                    && now.duration_since(t.idle_since()) >= self.opts.idle_timeout
                {
                    idle.push(token.clone());
                }
                true
            }
            Slot::Closed(at) => now.duration_since(*at) < self.opts.tombstone_ttl,
        });
        // The client vanished without closing: its far end must not see a clean end.
        for token in idle {
            self.abort(&token, "idle: no pull and no push");
        }
    }

    /// Resets every tunnel (shutdown): a stream cut short is not a clean end.
    pub fn close_all(&self) {
        let live: Vec<String> = self
            .map()
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Live(_)))
            .map(|(k, _)| k.clone())
            .collect();
        for token in live {
            self.abort(&token, "server shutting down");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[tokio::test]
    async fn backlog_full_refuses_and_creates_nothing() {
        let opts = PhtOptions {
            backlog: 1,
            backlog_wait: std::time::Duration::from_millis(20),
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::channel(opts.backlog);
        let reg = Registry::new(opts, tx, "s".into());
        assert!(matches!(
            reg.lookup("a", peer(), true).await,
            Lookup::Live(_)
        ));
        // The handler has not taken "a" yet: the queue is full.
        assert!(matches!(
            reg.lookup("b", peer(), true).await,
            Lookup::QueueFull
        ));
        assert!(
            matches!(reg.lookup("b", peer(), false).await, Lookup::Unknown),
            "no half-made tunnel"
        );
        assert_eq!(rx.recv().await.unwrap().tag.as_deref(), Some("a"));
        assert!(matches!(
            reg.lookup("b", peer(), true).await,
            Lookup::Live(_)
        ));
    }

    #[tokio::test]
    async fn closed_tokens_stay_closed_until_the_tombstone_expires() {
        let opts = PhtOptions {
            tombstone_ttl: std::time::Duration::from_millis(0),
            ..Default::default()
        };
        let (tx, _rx) = mpsc::channel(8);
        let reg = Registry::new(opts, tx, "s".into());
        assert!(matches!(
            reg.lookup("a", peer(), true).await,
            Lookup::Live(_)
        ));
        reg.close("a", "test");
        assert!(matches!(
            reg.lookup("a", peer(), true).await,
            Lookup::Closed
        ));
        reg.reap();
        assert!(matches!(
            reg.lookup("a", peer(), false).await,
            Lookup::Unknown
        ));
    }
}
