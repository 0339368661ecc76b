//! Access control as gost has it.
//!
//! * An **admission** list decides which clients (by source IP) may use a service. A
//!   client it refuses is closed before the handler reads a byte.
//! * A **bypass** list names destinations. What a match means depends on where the list
//!   hangs: on a service the destination is refused (each protocol's refusal code), on a
//!   hop the route ends before that hop (the previous hop, or this machine, connects to
//!   the destination), on a node that node is not used for the destination.
//!
//! A list is a blacklist (matching entries are refused/bypassed) or, with `whitelist:
//! true`, a whitelist (everything that does not match is). Entries:
//!
//! | entry | matches |
//! |---|---|
//! | `10.0.0.1`, `::1` | that IP, any port |
//! | `10.0.0.0/8`, `fd00::/8` | IPs in the network |
//! | `10.0.0.1-10.0.0.9` | IPs in the range |
//! | `example.com` | that name only |
//! | `.example.com` | that name and every name below it |
//! | `*.example.com` | every name below it (a glob: `*` any run of characters, `?` one) |
//! | `HOST:PORT`, `HOST:LOW-HIGH` | an IP, name, `.name` or glob entry, on those ports only |
//!
//! Names are compared as written, case-insensitively: nothing is resolved. An IP entry
//! never matches a name that resolves to it, so a blacklist of addresses does not stop
//! `localhost`; a whitelist is the safe way to restrict targets. IPv4 addresses written
//! in the shorthand forms resolvers accept (`127.1`, `2130706433`, `0x7f.0.0.1`) and
//! IPv4-mapped IPv6 addresses are read as the IPv4 address they stand for.
//!
//! Several lists on one object combine as in gost: for bypasses, a destination passes
//! when some whitelist matches it (if there are whitelists) and no blacklist does; for
//! admissions every list must admit the client.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// Compiled rules attached to a configuration object by `Config::resolve` (not part of the
/// file format). Two handles are equal when they share the same rules.
pub struct Rules<T>(Option<Arc<T>>);

impl<T> Rules<T> {
    pub fn new(rules: T) -> Self {
        Rules(Some(Arc::new(rules)))
    }

    pub fn none() -> Self {
        Rules(None)
    }

    pub fn get(&self) -> Option<&Arc<T>> {
        self.0.as_ref()
    }

    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }
}

impl<T> Clone for Rules<T> {
    fn clone(&self) -> Self {
        Rules(self.0.clone())
    }
}

impl<T> Default for Rules<T> {
    fn default() -> Self {
        Rules(None)
    }
}

impl<T> PartialEq for Rules<T> {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Rules<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("-"),
            Some(r) => r.fmt(f),
        }
    }
}

/// Which entries a list may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// Client addresses: IPs, networks, ranges.
    Admission,
    /// Destinations: also names, globs and ports.
    Bypass,
}

/// Ports an entry is limited to (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ports(u16, u16);

impl Ports {
    fn parse(s: &str) -> Option<Ports> {
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        let (lo, hi) = (lo.parse::<u16>().ok()?, hi.parse::<u16>().ok()?);
        (lo <= hi).then_some(Ports(lo, hi))
    }
}

fn port_ok(ports: Option<Ports>, port: u16) -> bool {
    ports.is_none_or(|Ports(lo, hi)| lo <= port && port <= hi)
}

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Net(IpNet),
    Range(IpAddr, IpAddr),
    Ip(IpAddr, Option<Ports>),
    Name {
        name: String,
        subdomains: bool,
        ports: Option<Ports>,
    },
    Glob {
        pattern: String,
        ports: Option<Ports>,
    },
}

/// IPv4-mapped IPv6 addresses stand for their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// One part of a shorthand IPv4 address: decimal, octal (`0` prefix) or hex (`0x`).
fn aton_part(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() {
            return Some(0);
        }
        return u64::from_str_radix(h, 16)
            .ok()
            .filter(|v| *v <= u32::MAX as u64);
    }
    if s.len() > 1 && s.starts_with('0') {
        return u64::from_str_radix(&s[1..], 8).ok();
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 10 {
        return None;
    }
    s.parse().ok()
}

/// An IPv4 address in any form `inet_aton` accepts (`a`, `a.b`, `a.b.c`, `a.b.c.d`).
fn parse_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let nums: Vec<u64> = parts.iter().map(|p| aton_part(p)).collect::<Option<_>>()?;
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&v| v > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if *last >= 1u64 << room {
        return None;
    }
    let mut v: u64 = 0;
    for (i, &b) in head.iter().enumerate() {
        v |= b << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from((v | last) as u32))
}

/// The IP a destination host stands for, if it is an address literal.
fn host_ip(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    parse_aton(host).map(IpAddr::V4)
}

/// A destination as matched: its host (lower case, no trailing dot), IP and port.
struct Target {
    host: String,
    ip: Option<IpAddr>,
    port: u16,
}

impl Target {
    fn parse(addr: &str) -> Target {
        let addr = addr.trim();
        let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
            match rest.split_once(']') {
                Some((h, p)) => (h, p.strip_prefix(':').unwrap_or("")),
                None => (rest, ""),
            }
        } else {
            match addr.rsplit_once(':') {
                // Two colons or more and no brackets: a bare IPv6 address.
                Some((h, _)) if h.contains(':') => (addr, ""),
                Some((h, p)) => (h, p),
                None => (addr, ""),
            }
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        Target {
            ip: host_ip(&host),
            host,
            port: port.parse().unwrap_or(0),
        }
    }
}

/// `*` any run of characters (dots included, as gost's globs), `?` one character.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

impl Entry {
    fn matches(&self, t: &Target) -> bool {
        match self {
            Entry::Net(net) => t.ip.is_some_and(|ip| net.contains(&ip)),
            Entry::Range(lo, hi) => t.ip.is_some_and(|ip| in_range(ip, *lo, *hi)),
            Entry::Ip(ip, ports) => t.ip == Some(*ip) && port_ok(*ports, t.port),
            Entry::Name {
                name,
                subdomains,
                ports,
            } => {
                t.ip.is_none()
                    && port_ok(*ports, t.port)
                    && (t.host == *name
                        || (*subdomains
                            && t.host.len() > name.len()
                            && t.host.ends_with(name.as_str())
                            && t.host.as_bytes()[t.host.len() - name.len() - 1] == b'.'))
            }
            Entry::Glob { pattern, ports } => {
                port_ok(*ports, t.port) && glob_match(pattern.as_bytes(), t.host.as_bytes())
            }
        }
    }

    fn admits_ip(&self, ip: IpAddr) -> bool {
        match self {
            Entry::Net(net) => net.contains(&ip),
            Entry::Range(lo, hi) => in_range(ip, *lo, *hi),
            Entry::Ip(e, _) => *e == ip,
            _ => false,
        }
    }
}

fn in_range(ip: IpAddr, lo: IpAddr, hi: IpAddr) -> bool {
    match (ip, lo, hi) {
        (IpAddr::V4(ip), IpAddr::V4(lo), IpAddr::V4(hi)) => lo <= ip && ip <= hi,
        (IpAddr::V6(ip), IpAddr::V6(lo), IpAddr::V6(hi)) => lo <= ip && ip <= hi,
        _ => false,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn valid_glob(g: &str) -> bool {
    !g.is_empty()
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*' | b'?'))
}

/// Parses one list entry; the error says what the entry should have been.
fn parse_entry(raw: &str, kind: ListKind) -> Result<Entry, String> {
    let s = raw.trim();
    let what = match kind {
        ListKind::Admission => "an IP address, CIDR or IP range (a-b)",
        ListKind::Bypass => {
            "an IP address, CIDR, IP range (a-b), domain (example.com, .example.com, \
             *.example.com) or one of those with :PORT or :LOW-HIGH"
        }
    };
    let bad = || {
        let hint = if s.starts_with('~') {
            " (a leading ~ makes the whole list a whitelist: write it once, before the first entry)"
        } else {
            ""
        };
        format!("{raw:?} is not {what}{hint}")
    };
    if s.is_empty() {
        return Err(format!("an empty entry is not {what}"));
    }
    if s.contains('/') {
        return s
            .parse::<IpNet>()
            .map(|n| Entry::Net(canonical_net(n.trunc())))
            .map_err(|_| bad());
    }
    if let Some((a, b)) = s.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>()) {
            let (a, b) = (canonical(a), canonical(b));
            if a.is_ipv4() != b.is_ipv4() || !in_range(a, a, b) {
                return Err(format!(
                    "{raw:?}: the range's ends must be one IP family, low to high"
                ));
            }
            return Ok(Entry::Range(a, b));
        }
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Entry::Ip(canonical(ip), None));
    }
    if kind == ListKind::Admission {
        return Err(bad());
    }
    // HOST[:PORTS], the host an IP in brackets, an IP, a name, `.name` or a glob.
    let (host, ports) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or_else(bad)?;
        let p = p.strip_prefix(':').ok_or_else(bad)?;
        let ip = h.parse::<IpAddr>().map_err(|_| bad())?;
        return Ok(Entry::Ip(
            canonical(ip),
            Some(Ports::parse(p).ok_or_else(bad)?),
        ));
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(Ports::parse(p).ok_or_else(bad)?)),
            None => (s, None),
        }
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Entry::Ip(canonical(ip), ports));
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.contains(['*', '?']) {
        if !valid_glob(&host) {
            return Err(bad());
        }
        return Ok(Entry::Glob {
            pattern: host,
            ports,
        });
    }
    let (name, subdomains) = match host.strip_prefix('.') {
        Some(n) => (n.to_string(), true),
        None => (host, false),
    };
    if !valid_name(&name) {
        return Err(bad());
    }
    Ok(Entry::Name {
        name,
        subdomains,
        ports,
    })
}

fn canonical_net(n: IpNet) -> IpNet {
    // `::ffff:10.0.0.0/104` is the IPv4 network 10.0.0.0/8.
    if let IpNet::V6(v6) = n {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                if let Ok(net) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(net);
                }
            }
        }
    }
    n
}

/// One named list.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessList {
    pub name: String,
    pub whitelist: bool,
    entries: Vec<Entry>,
}

/// An entry that cannot be used: its index among the entries given, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    pub index: usize,
    pub message: String,
}

impl AccessList {
    /// Compiles `entries` (blank ones and `#` comments already removed by the caller).
    pub fn compile<S: AsRef<str>>(
        name: &str,
        whitelist: bool,
        entries: &[S],
        kind: ListKind,
    ) -> Result<AccessList, EntryError> {
        let entries = entries
            .iter()
            .enumerate()
            .map(|(index, e)| {
                parse_entry(e.as_ref(), kind).map_err(|message| EntryError { index, message })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AccessList {
            name: name.to_string(),
            whitelist,
            entries,
        })
    }

    fn matches(&self, t: &Target) -> bool {
        self.entries.iter().any(|e| e.matches(t))
    }
}

/// gost's list files: one entry per line, `#` starts a comment.
pub fn file_entries(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The bypass lists an object names.
#[derive(Debug, Clone, PartialEq)]
pub struct Bypass {
    lists: Vec<AccessList>,
}

impl Bypass {
    pub fn new(lists: Vec<AccessList>) -> Bypass {
        Bypass { lists }
    }

    /// Whether `target` (`host:port`) is bypassed: refused by a service, skipped by a
    /// hop or node. An empty target never is.
    pub fn contains(&self, target: &str) -> bool {
        if target.is_empty() || self.lists.is_empty() {
            return false;
        }
        let t = Target::parse(target);
        let mut whitelists = false;
        let mut listed = false;
        for l in &self.lists {
            let m = l.matches(&t);
            if l.whitelist {
                whitelists = true;
                listed |= m;
            } else if m {
                return true;
            }
        }
        whitelists && !listed
    }
}

/// The admission lists a service names.
#[derive(Debug)]
pub struct Admission {
    lists: Vec<AccessList>,
    denials: DenialLog,
}

impl PartialEq for Admission {
    fn eq(&self, other: &Self) -> bool {
        self.lists == other.lists
    }
}

impl Admission {
    pub fn new(lists: Vec<AccessList>) -> Admission {
        Admission {
            lists,
            denials: DenialLog::default(),
        }
    }

    /// Whether a client at `ip` may use the service: every list must admit it.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.lists.iter().all(|l| {
            let m = l.entries.iter().any(|e| e.admits_ip(ip));
            m == l.whitelist
        })
    }

    /// Records a refused client; true when it should be logged loudly (the first refusal
    /// of this IP in a while), false for the repeats.
    pub fn note_denied(&self, ip: IpAddr) -> bool {
        self.denials.first_in_a_while(canonical(ip))
    }
}

/// How long a refused IP is remembered for logging, and how many are remembered.
const DENIAL_QUIET: Duration = Duration::from_secs(60);
const DENIAL_MEMORY: usize = 4096;

/// Remembers refused clients so that a flood from one address logs one line a minute.
#[derive(Debug, Default)]
struct DenialLog {
    seen: Mutex<HashMap<IpAddr, Instant>>,
}

impl DenialLog {
    fn first_in_a_while(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = seen.get(&ip) {
            if now.duration_since(*at) < DENIAL_QUIET {
                return false;
            }
        }
        if seen.len() >= DENIAL_MEMORY {
            seen.retain(|_, at| now.duration_since(*at) < DENIAL_QUIET);
            if seen.len() >= DENIAL_MEMORY {
                seen.clear();
            }
        }
        seen.insert(ip, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bypass(whitelist: bool, entries: &[&str]) -> Bypass {
        Bypass::new(vec![
            AccessList::compile("b", whitelist, entries, ListKind::Bypass).unwrap(),
        ])
    }

    #[test]
    fn entries_parse_or_say_why_not() {
        for ok in [
            "10.0.0.1",
            "::1",
            "10.0.0.0/8",
            "fd00::/8",
            "10.0.0.1-10.0.0.9",
            "example.com",
            ".example.com",
            "*.example.com",
            "example.com:443",
            ".example.com:80-90",
            "*.example.com:0-65535",
            "127.0.0.1:8080",
            "[::1]:22",
            "EXAMPLE.com.",
        ] {
            assert!(parse_entry(ok, ListKind::Bypass).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "example.com:99999",
            "example.com:90-80",
            "exa mple.com",
            "~10.0.0.0/8",
            "[::1]",
            "10.0.0.9-10.0.0.1",
            "10.0.0.1-::1",
            "a..b",
        ] {
            assert!(parse_entry(bad, ListKind::Bypass).is_err(), "{bad:?}");
        }
        assert!(parse_entry("example.com", ListKind::Admission).is_err());
        assert!(parse_entry("10.0.0.1:80", ListKind::Admission).is_err());
        let e = parse_entry("~10.0.0.0/8", ListKind::Admission).unwrap_err();
        assert!(e.contains("leading ~"), "{e}");
    }

    #[test]
    fn addresses_networks_and_ports() {
        let b = bypass(
            false,
            &["10.0.0.0/8", "192.168.1.1", "127.0.0.1:8080", "::1"],
        );
        assert!(b.contains("10.1.2.3:80"));
        assert!(b.contains("192.168.1.1:1"));
        assert!(!b.contains("192.168.1.2:1"));
        assert!(b.contains("127.0.0.1:8080"));
        assert!(!b.contains("127.0.0.1:8081"));
        assert!(b.contains("[::1]:80"));
        assert!(
            b.contains("[::ffff:10.0.0.1]:80"),
            "IPv4-mapped IPv6 is IPv4"
        );
        assert!(b.contains("012.0.0.1:80"), "octal shorthand is 10.0.0.1");
        assert!(b.contains("167772161:80"), "a single number is 10.0.0.1");
        assert!(!b.contains(""), "no target, nothing bypassed");
        assert!(!b.contains("example.com:80"));
        let r = bypass(false, &["10.0.0.5-10.0.0.7"]);
        assert!(r.contains("10.0.0.6:1") && !r.contains("10.0.0.8:1"));
    }

    #[test]
    fn names_dot_names_and_globs() {
        let b = bypass(false, &["example.com", ".example.org", "*.example.net:443"]);
        assert!(b.contains("example.com:80"));
        assert!(b.contains("EXAMPLE.COM.:80"));
        assert!(
            !b.contains("www.example.com:80"),
            "a plain name is that name only"
        );
        assert!(b.contains("example.org:1"));
        assert!(b.contains("a.b.example.org:1"));
        assert!(!b.contains("badexample.org:1"));
        assert!(b.contains("www.example.net:443"));
        assert!(b.contains("a.b.example.net:443"));
        assert!(!b.contains("www.example.net:80"), "port limits the glob");
        assert!(!b.contains("example.net:443"), "*. needs a label in front");
    }

    #[test]
    fn whitelists_and_groups() {
        let w = bypass(true, &["127.0.0.1:8080"]);
        assert!(!w.contains("127.0.0.1:8080"));
        assert!(w.contains("127.0.0.1:8081"));
        assert!(w.contains("localhost:8080"), "names are not resolved");
        // Two whitelists: either lets a target through; a blacklist still refuses.
        let g = Bypass::new(vec![
            AccessList::compile("w1", true, &["a.com"], ListKind::Bypass).unwrap(),
            AccessList::compile("w2", true, &["b.com", "c.com"], ListKind::Bypass).unwrap(),
            AccessList::compile("bl", false, &["c.com"], ListKind::Bypass).unwrap(),
        ]);
        assert!(!g.contains("a.com:1"));
        assert!(!g.contains("b.com:1"));
        assert!(g.contains("c.com:1"));
        assert!(g.contains("d.com:1"));
    }

    #[test]
    fn admissions() {
        let list =
            |w: bool, e: &[&str]| AccessList::compile("a", w, e, ListKind::Admission).unwrap();
        let a = Admission::new(vec![list(true, &["127.0.0.1", "10.0.0.0/8"])]);
        assert!(a.admits("127.0.0.1".parse().unwrap()));
        assert!(a.admits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(a.admits("10.9.9.9".parse().unwrap()));
        assert!(!a.admits("192.168.0.1".parse().unwrap()));
        let b = Admission::new(vec![list(false, &["192.168.0.0/16"])]);
        assert!(b.admits("127.0.0.1".parse().unwrap()));
        assert!(!b.admits("192.168.3.4".parse().unwrap()));
        // Every list must admit.
        let both = Admission::new(vec![
            list(true, &["10.0.0.0/8"]),
            list(false, &["10.0.0.1"]),
        ]);
        assert!(both.admits("10.0.0.2".parse().unwrap()));
        assert!(!both.admits("10.0.0.1".parse().unwrap()));
        let ip = "10.0.0.1".parse().unwrap();
        assert!(both.note_denied(ip));
        assert!(!both.note_denied(ip), "the repeat is quiet");
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*.a.com", b"x.a.com"));
        assert!(glob_match(b"*.a.com", b"x.y.a.com"));
        assert!(!glob_match(b"*.a.com", b"a.com"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
        assert!(!glob_match(b"a*b*c", b"aXXbYY"));
    }

    #[test]
    fn files_have_comments() {
        assert_eq!(
            file_entries("# list\n10.0.0.1  # one\n\n .a.com \n"),
            vec!["10.0.0.1", ".a.com"]
        );
    }
}
