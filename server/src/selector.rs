//! Choosing among nodes (forwarder targets, hop nodes): gost's strategies and failure marking.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::{SelectorConfig, parse_duration};

/// gost's defaults when no selector is configured.
pub const DEFAULT_MAX_FAILS: u32 = 1;
const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// The `failTimeout` gost fills in when a command-line URL sets selector keys: 30 s, not
/// the 10 s of a configuration without a selector. The two differ in gost too.
pub const CLI_FAIL_TIMEOUT: &str = "30s";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Round,
    Random,
    Fifo,
}

/// Per-node health.
#[derive(Debug, Default)]
struct Health {
    fails: u32,
    last_fail: Option<Instant>,
}

/// Picks nodes by strategy, skipping nodes that failed `max_fails` times within
/// `fail_timeout`, and using backup nodes only when no primary is usable.
#[derive(Debug)]
pub struct Selector {
    strategy: Strategy,
    max_fails: u32,
    fail_timeout: Duration,
    backup: Vec<bool>,
    health: Mutex<Vec<Health>>,
    next: AtomicUsize,
}

impl Selector {
    /// A selector for `n` nodes; `backup[i]` marks backup nodes.
    pub fn new(cfg: Option<&SelectorConfig>, backup: Vec<bool>) -> Self {
        let strategy = match cfg.map(|c| c.strategy.as_str()) {
            Some("random" | "rand") => Strategy::Random,
            Some("fifo" | "ha") => Strategy::Fifo,
            _ => Strategy::Round,
        };
        let max_fails = cfg
            .map(|c| c.max_fails)
            .filter(|&m| m > 0)
            .unwrap_or(DEFAULT_MAX_FAILS);
        let fail_timeout = cfg
            .and_then(|c| parse_duration(&c.fail_timeout))
            .unwrap_or(DEFAULT_FAIL_TIMEOUT);
        let n = backup.len();
        Selector {
            strategy,
            max_fails,
            fail_timeout,
            backup,
            health: Mutex::new((0..n).map(|_| Health::default()).collect()),
            next: AtomicUsize::new(0),
        }
    }

    /// Node indexes in the order to try them for one connection.
    pub fn order(&self) -> Vec<usize> {
        let n = self.backup.len();
        if n == 0 {
            return Vec::new();
        }
        let start = match self.strategy {
            Strategy::Round => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Strategy::Random => (rand_u64() % n as u64) as usize,
            Strategy::Fifo => 0,
        };
        let rotated: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let alive = |i: &usize| {
            let h = &health[*i];
            h.fails < self.max_fails
                || h.last_fail
                    .is_none_or(|t| now.duration_since(t) >= self.fail_timeout)
        };
        // Live primaries, then live backups, then the rest (better a retry than nothing).
        let mut out: Vec<usize> = rotated
            .iter()
            .copied()
            .filter(|i| !self.backup[*i] && alive(i))
            .collect();
        out.extend(
            rotated
                .iter()
                .copied()
                .filter(|i| self.backup[*i] && alive(i)),
        );
        out.extend(rotated.iter().copied().filter(|i| !alive(i)));
        out
    }

    /// Records the outcome of using node `i`.
    pub fn report(&self, i: usize, ok: bool) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let Some(h) = health.get_mut(i) else { return };
        if ok {
            *h = Health::default();
        } else {
            h.fails += 1;
            h.last_fail = Some(Instant::now());
        }
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(strategy: &str, backup: Vec<bool>) -> Selector {
        Selector::new(
            Some(&SelectorConfig {
                strategy: strategy.into(),
                max_fails: 1,
                fail_timeout: "30s".into(),
            }),
            backup,
        )
    }

    #[test]
    fn round_robin_rotates_and_skips_failed_nodes() {
        let s = sel("round", vec![false; 3]);
        assert_eq!(s.order()[0], 0);
        assert_eq!(s.order()[0], 1);
        s.report(2, false);
        assert_eq!(s.order(), vec![0, 1, 2], "failed node 2 goes last");
        s.report(2, true);
        assert_eq!(
            s.order(),
            vec![0, 1, 2],
            "healthy again, and the rotation goes on"
        );
    }

    #[test]
    fn fifo_and_backup() {
        let s = sel("fifo", vec![false, false, true]);
        assert_eq!(s.order(), vec![0, 1, 2]);
        s.report(0, false);
        s.report(1, false);
        assert_eq!(
            s.order(),
            vec![2, 0, 1],
            "backup used when primaries are down"
        );
    }
}
