//! Choosing among nodes (forwarder targets, hop nodes): gost's strategies and failure marking.
//!
//! As in gost (go-gost/x `selector/filter.go`, `selector/strategy.go`), each node may carry
//! its own selector keys in its metadata, read once when the hop or forwarder is built
//! ([`NodeOptions::from_metadata`]):
//!
//! - `maxFails`, `failTimeout`: a node given either key uses it instead of the selector's
//!   (a node that sets only one takes the other from the selector). A value of 0 or less
//!   means gost's default, 1 and 10s, not the selector's value.
//! - `weight`: used by the `random` strategy only (a weighted draw; 0 or less counts as 1).
//!   gost's round robin and FIFO ignore it, and so do ours.
//! - `backup`: used only when no primary node is usable.
//!
//! Strategy names are matched exactly, as gost matches them: `FIFO` is not `fifo` but an
//! unknown name, which runs as round robin.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Metadata, MetadataError, SelectorConfig, parse_duration};

/// gost's defaults when no selector is configured.
pub const DEFAULT_MAX_FAILS: u32 = 1;
const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// The `failTimeout` gost fills in when a command-line URL sets selector keys: 30 s, not
/// the 10 s of a configuration without a selector. The two differ in gost too.
pub const CLI_FAIL_TIMEOUT: &str = "30s";

/// A node's own selector keys (its metadata), as given; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeOptions {
    pub backup: bool,
    /// `maxFails` when the node sets it (0 when its value is 0 or less).
    pub max_fails: Option<u32>,
    /// `failTimeout` when the node sets it (zero when its value is zero or negative).
    pub fail_timeout: Option<Duration>,
    /// `weight` for the random strategy (0 when unset or 0 or less).
    pub weight: u32,
}

impl NodeOptions {
    /// Reads `backup`, `maxFails`, `failTimeout` and `weight` (keys case-insensitive, as in
    /// gost). Every value that is not of its kind comes back as an error.
    pub fn from_metadata(md: &Metadata) -> Result<Self, Vec<MetadataError>> {
        let mut errors = Vec::new();
        let mut opts = NodeOptions::default();
        match md.get_bool("backup") {
            Ok(b) => opts.backup = b.unwrap_or(false),
            Err(e) => errors.push(e),
        }
        let count = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        match md.get_int("maxFails") {
            Ok(v) => opts.max_fails = v.map(count),
            Err(e) => errors.push(e),
        }
        match md.get_int("weight") {
            Ok(v) => opts.weight = v.map(count).unwrap_or(0),
            Err(e) => errors.push(e),
        }
        match md.get_str("failTimeout") {
            None => {}
            // A negative duration is a valid Go duration: gost's default then.
            Some(v) if v.trim().starts_with('-') => opts.fail_timeout = Some(Duration::ZERO),
            Some(_) => match md.get_duration("failTimeout") {
                Ok(d) => opts.fail_timeout = d,
                Err(e) => errors.push(e),
            },
        }
        if errors.is_empty() {
            Ok(opts)
        } else {
            Err(errors)
        }
    }
}

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

/// One node's settings, with the selector's filled in.
#[derive(Debug)]
struct NodeSettings {
    backup: bool,
    max_fails: u32,
    fail_timeout: Duration,
    weight: u64,
}

/// Picks nodes by strategy, skipping nodes that failed `maxFails` times within
/// `failTimeout` (the node's own values, else the selector's), and using backup nodes only
/// when no primary is usable.
#[derive(Debug)]
pub struct Selector {
    strategy: Strategy,
    nodes: Vec<NodeSettings>,
    health: Mutex<Vec<Health>>,
    next: AtomicUsize,
}

impl Selector {
    /// A selector for the nodes `nodes` describes (their own keys, in order), under the
    /// hop's or forwarder's selector `cfg` (none: gost's default, round robin, 1, 10s).
    pub fn new(cfg: Option<&SelectorConfig>, nodes: Vec<NodeOptions>) -> Self {
        // Exact names, as gost's ParseNodeSelector matches them; anything else (`FIFO`,
        // `hash`, `parallel`, `lowest`...) runs as round robin.
        let strategy = match cfg.map(|c| c.strategy.as_str()) {
            Some("random" | "rand") => Strategy::Random,
            Some("fifo" | "ha") => Strategy::Fifo,
            _ => Strategy::Round,
        };
        let max_fails = cfg.map(|c| c.max_fails).unwrap_or(0);
        let fail_timeout = cfg
            .and_then(|c| parse_duration(&c.fail_timeout))
            .unwrap_or(Duration::ZERO);
        let n = nodes.len();
        let nodes = nodes
            .into_iter()
            .map(|o| {
                // gost's effectiveFailSettings: the node's key when it has one, then 0 or
                // less means the default (not the selector's value).
                let max_fails = o.max_fails.unwrap_or(max_fails);
                let fail_timeout = o.fail_timeout.unwrap_or(fail_timeout);
                NodeSettings {
                    backup: o.backup,
                    max_fails: if max_fails == 0 {
                        DEFAULT_MAX_FAILS
                    } else {
                        max_fails
                    },
                    fail_timeout: if fail_timeout.is_zero() {
                        DEFAULT_FAIL_TIMEOUT
                    } else {
                        fail_timeout
                    },
                    weight: u64::from(o.weight.max(1)),
                }
            })
            .collect();
        Selector {
            strategy,
            nodes,
            health: Mutex::new((0..n).map(|_| Health::default()).collect()),
            next: AtomicUsize::new(0),
        }
    }

    /// Node indexes in the order to try them for one connection.
    pub fn order(&self) -> Vec<usize> {
        let n = self.nodes.len();
        if n == 0 {
            return Vec::new();
        }
        let start = match self.strategy {
            Strategy::Round => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Strategy::Random | Strategy::Fifo => 0,
        };
        let rotated: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let alive = |i: &usize| {
            let (h, s) = (&health[*i], &self.nodes[*i]);
            h.fails < s.max_fails
                || h.last_fail
                    .is_none_or(|t| now.duration_since(t) >= s.fail_timeout)
        };
        // Live primaries, then live backups, then the rest (better a retry than nothing).
        let mut out: Vec<usize> = rotated
            .iter()
            .copied()
            .filter(|i| !self.nodes[*i].backup && alive(i))
            .collect();
        let primaries = out.len();
        out.extend(
            rotated
                .iter()
                .copied()
                .filter(|i| self.nodes[*i].backup && alive(i)),
        );
        let live = out.len();
        out.extend(rotated.iter().copied().filter(|i| !alive(i)));
        drop(health);
        if self.strategy == Strategy::Random {
            // gost's random strategy: a draw weighted by `weight` among the nodes its
            // filters leave (live primaries, else live backups, else every node); the
            // others follow as before, for failover.
            let pool = if primaries > 0 {
                0..primaries
            } else if live > 0 {
                0..live
            } else {
                0..n
            };
            let total: u64 = out[pool.clone()]
                .iter()
                .map(|&i| self.nodes[i].weight)
                .sum();
            let mut r = rand_u64() % total;
            let mut pick = pool.start;
            for k in pool.clone() {
                let w = self.nodes[out[k]].weight;
                if r < w {
                    pick = k;
                    break;
                }
                r -= w;
            }
            out[pool.start..pool.end].rotate_left(pick - pool.start);
        }
        out
    }

    /// Records the outcome of using node `i`.
    pub fn report(&self, i: usize, ok: bool) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let Some(h) = health.get_mut(i) else { return };
        if ok {
            *h = Health::default();
        } else {
            h.fails = h.fails.saturating_add(1);
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

    fn cfg(strategy: &str, max_fails: u32, fail_timeout: &str) -> SelectorConfig {
        SelectorConfig {
            strategy: strategy.into(),
            max_fails,
            fail_timeout: fail_timeout.into(),
        }
    }

    fn sel(strategy: &str, backup: Vec<bool>) -> Selector {
        let nodes = backup
            .into_iter()
            .map(|backup| NodeOptions {
                backup,
                ..Default::default()
            })
            .collect();
        Selector::new(Some(&cfg(strategy, 1, "30s")), nodes)
    }

    fn node(pairs: &[(&str, &str)]) -> NodeOptions {
        let mut md = Metadata::default();
        for (k, v) in pairs {
            md.insert(*k, *v);
        }
        NodeOptions::from_metadata(&md).unwrap()
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

    #[test]
    fn node_max_fails_overrides_the_selector() {
        // Selector: 1 failure marks a node; node 0 allows 3, node 1 keeps the selector's.
        let s = Selector::new(
            Some(&cfg("fifo", 1, "30s")),
            vec![node(&[("maxFails", "3")]), node(&[])],
        );
        s.report(0, false);
        s.report(0, false);
        assert_eq!(s.order(), vec![0, 1], "two failures of three: still usable");
        s.report(0, false);
        assert_eq!(s.order(), vec![1, 0], "the third marks node 0");
        s.report(1, false);
        assert_eq!(
            s.order(),
            vec![0, 1],
            "node 1 is marked at its first failure"
        );
        s.report(0, true);
        s.report(1, true);
        assert_eq!(s.order(), vec![0, 1], "a success clears the marks");
    }

    #[test]
    fn node_max_fails_zero_is_gosts_default_not_the_selectors() {
        // gost: a node's key, when present, replaces the selector's; 0 or less is then 1.
        let s = Selector::new(
            Some(&cfg("fifo", 5, "30s")),
            vec![
                node(&[("MaxFails", "0")]),
                node(&[("maxfails", "-2")]),
                node(&[]),
            ],
        );
        s.report(0, false);
        s.report(1, false);
        s.report(2, false);
        assert_eq!(
            s.order(),
            vec![2, 0, 1],
            "nodes 0 and 1 marked at 1 failure, node 2 allows the selector's 5"
        );
    }

    #[test]
    fn node_fail_timeout_overrides_the_selector() {
        let s = Selector::new(
            Some(&cfg("fifo", 1, "30s")),
            vec![
                node(&[("failTimeout", "50ms")]),
                node(&[]),
                node(&[("failTimeout", "0")]),
            ],
        );
        assert_eq!(s.nodes[0].fail_timeout, Duration::from_millis(50));
        assert_eq!(s.nodes[1].fail_timeout, Duration::from_secs(30));
        assert_eq!(
            s.nodes[2].fail_timeout, DEFAULT_FAIL_TIMEOUT,
            "0 is gost's default (10s), not the selector's 30s"
        );
        s.report(0, false);
        s.report(1, false);
        assert_eq!(s.order(), vec![2, 0, 1]);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(
            s.order(),
            vec![0, 2, 1],
            "node 0's mark expired after its own failTimeout; node 1's has not"
        );
        // A node's maxFails alone keeps the selector's failTimeout, and the reverse.
        let s = Selector::new(
            Some(&cfg("round", 4, "20s")),
            vec![node(&[("maxFails", "2")]), node(&[("failTimeout", "5s")])],
        );
        assert_eq!(
            (s.nodes[0].max_fails, s.nodes[0].fail_timeout),
            (2, Duration::from_secs(20))
        );
        assert_eq!(
            (s.nodes[1].max_fails, s.nodes[1].fail_timeout),
            (4, Duration::from_secs(5))
        );
        // Without a selector: gost's defaults, 1 and 10s, under the node's own keys.
        let s = Selector::new(None, vec![node(&[]), node(&[("maxFails", "7")])]);
        assert_eq!(
            (s.nodes[0].max_fails, s.nodes[0].fail_timeout),
            (1, DEFAULT_FAIL_TIMEOUT)
        );
        assert_eq!(s.nodes[1].max_fails, 7);
    }

    #[test]
    fn node_keys_are_checked() {
        let mut md = Metadata::default();
        md.insert("maxFails", "many");
        md.insert("failTimeout", "soon");
        md.insert("weight", "1.5");
        md.insert("backup", "perhaps");
        let keys: Vec<String> = NodeOptions::from_metadata(&md)
            .unwrap_err()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["backup", "maxFails", "weight", "failTimeout"]);
        assert_eq!(
            node(&[("backup", "true"), ("weight", "3"), ("failTimeout", "-1s")]),
            NodeOptions {
                backup: true,
                max_fails: None,
                fail_timeout: Some(Duration::ZERO),
                weight: 3,
            }
        );
    }

    #[test]
    fn random_draws_by_weight_among_usable_nodes() {
        let s = Selector::new(
            Some(&cfg("random", 1, "30s")),
            vec![
                node(&[]),
                node(&[("weight", "1000")]),
                node(&[("weight", "-4")]),
            ],
        );
        let firsts = (0..300).filter(|_| s.order()[0] == 1).count();
        assert!(
            firsts > 250,
            "weight 1000 against 1 and 1: node 1 first {firsts} times of 300"
        );
        // The heavy node marked failed: the draw is among the others, it goes last.
        s.report(1, false);
        for _ in 0..50 {
            let o = s.order();
            assert_ne!(o[0], 1, "{o:?}");
            assert_eq!(o[2], 1, "{o:?}");
        }
    }

    #[test]
    fn weight_is_ignored_by_round_robin() {
        let s = Selector::new(
            Some(&cfg("round", 1, "30s")),
            vec![node(&[("weight", "100")]), node(&[])],
        );
        let firsts: Vec<usize> = (0..4).map(|_| s.order()[0]).collect();
        assert_eq!(firsts, [0, 1, 0, 1]);
    }

    #[test]
    fn strategy_names_are_matched_exactly_as_in_gost() {
        // gost's ParseNodeSelector: `FIFO` is no known name, so round robin.
        let s = sel("FIFO", vec![false; 2]);
        let firsts: Vec<usize> = (0..3).map(|_| s.order()[0]).collect();
        assert_eq!(firsts, [0, 1, 0]);
        let s = sel("ha", vec![false; 2]);
        let firsts: Vec<usize> = (0..3).map(|_| s.order()[0]).collect();
        assert_eq!(firsts, [0, 0, 0]);
    }
}
