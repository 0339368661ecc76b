//! gost's service/node URL shape: `[scheme://][user:pass@]host[/path][?query]`.

use percent_encoding::percent_decode_str;

use crate::UrlError;

/// A `-L`/`-F` style URL split the way gost splits it.
///
/// The host part is kept raw (gost allows port ranges and comma lists in it); the query is
/// decoded like Go's `url.ParseQuery` (`+` is a space), first value of a key wins.
///
/// ```
/// let u = pht_core::GostUrl::parse("relay+pht://u:p%40ss@example.com:8443/a:1,b:2?pushPath=/up").unwrap();
/// assert_eq!(u.scheme, "relay+pht");
/// assert_eq!(u.password.as_deref(), Some("p@ss"));
/// assert_eq!(u.host, "example.com:8443");
/// assert_eq!(u.path, "/a:1,b:2");
/// assert_eq!(u.param("pushPath"), Some("/up"));
/// assert_eq!(pht_core::GostUrl::parse(":8080").unwrap().scheme, "auto");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GostUrl {
    /// Lower-cased scheme; `auto` when none was given, `http+tls` for `https`.
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `host:port`, `:port`, or gost's lists and ranges, as written.
    pub host: String,
    /// Everything from the first `/` after the host, percent-decoded.
    pub path: String,
    /// Decoded query parameters in order.
    pub query: Vec<(String, String)>,
}

impl GostUrl {
    /// Parses with gost's normalisation (missing scheme → `auto`, `https` → `http+tls`).
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let s = input.trim();
        let (scheme, rest) = match s.find("://") {
            Some(i) if !s.starts_with(':') => (s[..i].to_ascii_lowercase(), &s[i + 3..]),
            _ => ("auto".to_string(), s),
        };
        let scheme = if scheme == "https" {
            "http+tls".to_string()
        } else {
            scheme
        };
        let (before_query, query) = match rest.find('?') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i..]),
            None => (before_query, ""),
        };
        let (userinfo, host) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let bad = || UrlError::BadEscape {
            url: input.to_string(),
        };
        let decode = |v: &str| -> Result<String, UrlError> {
            percent_decode_str(v)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| bad())
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => match ui.find(':') {
                Some(i) => (Some(decode(&ui[..i])?), Some(decode(&ui[i + 1..])?)),
                None => (Some(decode(ui)?), None),
            },
        };
        let mut pairs = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = decode(&k.replace('+', " "))?;
            let v = decode(&v.replace('+', " "))?;
            pairs.push((k, v));
        }
        Ok(GostUrl {
            scheme,
            user,
            password,
            host: host.to_string(),
            path: decode(path)?,
            query: pairs,
        })
    }

    /// The first value of `key` (case-insensitive, as gost's metadata lookups are).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// `a+b` → (`a`, Some(`b`)); `a` → (`a`, None).
    pub fn scheme_parts(&self) -> (&str, Option<&str>) {
        match self.scheme.split_once('+') {
            Some((a, b)) => (a, Some(b)),
            None => (&self.scheme, None),
        }
    }
}

/// Parses a boolean the way Go's `strconv.ParseBool` does.
///
/// ```
/// assert_eq!(pht_core::parse_bool("T"), Some(true));
/// assert_eq!(pht_core::parse_bool("yes"), None);
/// ```
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The longest duration any option takes (365 days): longer values are refused where
/// they are read, so no timer or deadline can overflow.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
/// The largest size or count any option takes (1 GiB).
pub const MAX_SIZE: usize = 1 << 30;

/// Parses a size in bytes: a number, optionally with a unit (`k`/`KB`/`KiB`, `M`/`MB`/`MiB`,
/// `G`/`GB`/`GiB`, all powers of 1024, any case). Overflowing values are `None`. The
/// server's metadata sizes and the client's node URL keys (`maxPushSize`) read the same.
///
/// ```
/// use pht_core::parse_size;
/// assert_eq!(parse_size("4MiB"), Some(4 << 20));
/// assert_eq!(parse_size("512kb"), Some(512 << 10));
/// assert_eq!(parse_size("786429"), Some(786429));
/// assert_eq!(parse_size("4 MB"), Some(4 << 20));
/// assert_eq!(parse_size("lots"), None);
/// assert_eq!(parse_size("99999999999G"), None);
/// ```
pub fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Parses Go's duration syntax (`10s`, `1m30s`, `250ms`), or a bare number meaning seconds
/// (gost's metadata rule). Values past `Duration::MAX` and negative ones are `None`.
///
/// ```
/// use std::time::Duration;
/// use pht_core::parse_duration;
/// assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
/// assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
/// assert_eq!(parse_duration("soon"), None);
/// assert_eq!(parse_duration("99999999999999999999h"), None);
/// ```
pub fn parse_duration(v: &str) -> Option<std::time::Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs));
    }
    if v.is_empty() {
        return None;
    }
    #[cfg(target_arch = "wasm32")]
    return parse_units_exact(v);
    #[cfg(not(target_arch = "wasm32"))]
    parse_units_f64(v)
}

/// `1m30s`, `1.5h`: the sum of numbers with units, in `f64` seconds.
#[cfg(not(target_arch = "wasm32"))]
fn parse_units_f64(v: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += num * scale;
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

/// [`parse_units_f64`] in whole nanoseconds (each term rounded to the nearest): the same
/// values without the float parser, whose code and tables weigh 16 KB of the wasm package.
#[cfg(any(target_arch = "wasm32", test))]
fn parse_units_exact(v: &str) -> Option<std::time::Duration> {
    const NANOS: u64 = 1_000_000_000;
    let (mut secs, mut nanos) = (0u64, 0u64);
    let mut rest = v;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (int, frac) = rest[..num_end]
            .split_once('.')
            .unwrap_or((&rest[..num_end], ""));
        // What `f64` parsing takes: digits with at most one point, and at least one digit.
        if int.len() + frac.len() == 0 || frac.contains('.') {
            return None;
        }
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        // The unit in whole seconds, or else in nanoseconds.
        let (unit_secs, unit_nanos) = match &rest[..unit_end] {
            "ns" => (0, 1),
            "us" | "µs" => (0, 1_000),
            "ms" => (0, 1_000_000),
            "s" => (1, 0),
            "m" => (60, 0),
            "h" => (3600, 0),
            _ => return None,
        };
        rest = &rest[unit_end..];
        let mut n = 0u64;
        for d in int.bytes() {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        // The first 15 decimals, in units of 1e-15: finer than a nanosecond even in hours.
        let mut f = 0u64;
        for i in 0..15 {
            f = f * 10 + frac.as_bytes().get(i).map_or(0, |d| u64::from(d - b'0'));
        }
        let (s, ns) = if unit_secs > 0 {
            (
                n.checked_mul(unit_secs)?,
                (f * unit_secs + 500_000) / 1_000_000,
            )
        } else {
            let per_sec = NANOS / unit_nanos;
            let frac_div = 1_000_000_000_000_000 / unit_nanos;
            (
                n / per_sec,
                (n % per_sec) * unit_nanos + (f + frac_div / 2) / frac_div,
            )
        };
        secs = secs.checked_add(s)?;
        nanos = nanos.checked_add(ns)?;
    }
    let secs = secs.checked_add(nanos / NANOS)?;
    Some(std::time::Duration::new(secs, (nanos % NANOS) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_gost() {
        assert_eq!(GostUrl::parse("https://:443").unwrap().scheme, "http+tls");
        let u = GostUrl::parse("127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str()),
            ("auto", "127.0.0.1:8080")
        );
        let u = GostUrl::parse("  pht://:8443/:1080  ").unwrap();
        assert_eq!(u.scheme_parts(), ("pht", None));
        assert_eq!((u.host.as_str(), u.path.as_str()), (":8443", "/:1080"));
        let u = GostUrl::parse("tcp://:8000-8002/10.0.0.1:9000?a=1&a=2&b=x+y").unwrap();
        assert_eq!(u.host, ":8000-8002");
        assert_eq!(u.param("a"), Some("1"));
        assert_eq!(u.param("B"), Some("x y"));
    }

    /// The wasm build's integer reading of durations agrees with the `f64` one (where the
    /// float is precise to the nanosecond; see the random test for the rest).
    #[test]
    fn exact_durations_agree_with_f64() {
        // Comma-separated, with the empty string among them.
        let cases = "1m30s,250ms,1.5h,0.5s,.5s,5.s,1h1m1s1ms1us1ns,1500000us,2µs,0.000000001s,\
            0.0000000005s,1.23456789s,0.1ms,0.3ms,3.6ns,0.9999999999h,18446744073709551616s,\
            18446744073709551617s,99999999999999999999h,5124095576030432h,1s1s1s,,.,1..2s,\
            1.2.3s,s,1,1x,1S,-1s,1e3s,1 s,ms1";
        for v in cases.split(',') {
            assert_eq!(parse_units_exact(v), parse_units_f64(v), "{v:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn exact_durations_agree_with_f64_random(
            terms in proptest::collection::vec(
                (0u64..100_000, proptest::option::of(0u64..1_000_000), 0usize..7),
                1..4,
            )
        ) {
            let units = ["ns", "us", "µs", "ms", "s", "m", "h"];
            let v: String = terms
                .iter()
                .map(|(n, frac, u)| match frac {
                    Some(f) => format!("{n}.{f:06}{}", units[*u]),
                    None => format!("{n}{}", units[*u]),
                })
                .collect();
            let (exact, float) = (parse_units_exact(&v), parse_units_f64(&v));
            let (exact, float) = (exact.unwrap(), float.unwrap());
            // The float is off by its last bits (7 ns at 9000 h): the two are a nanosecond
            // (rounding) plus a few float steps apart.
            let gap = exact.abs_diff(float);
            let slack = std::time::Duration::from_nanos(1) + float.mul_f64(1e-15);
            proptest::prop_assert!(gap <= slack, "{v}: {exact:?} vs {float:?}");
        }
    }

    #[test]
    fn userinfo_and_escapes() {
        let u = GostUrl::parse("socks5://admin:p%3Aw@[::1]:1080").unwrap();
        assert_eq!(u.user.as_deref(), Some("admin"));
        assert_eq!(u.password.as_deref(), Some("p:w"));
        assert_eq!(u.host, "[::1]:1080");
        assert!(GostUrl::parse("pht://h:1?x=%ff").is_err());
    }
}
