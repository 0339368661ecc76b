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

    #[test]
    fn userinfo_and_escapes() {
        let u = GostUrl::parse("socks5://admin:p%3Aw@[::1]:1080").unwrap();
        assert_eq!(u.user.as_deref(), Some("admin"));
        assert_eq!(u.password.as_deref(), Some("p:w"));
        assert_eq!(u.host, "[::1]:1080");
        assert!(GostUrl::parse("pht://h:1?x=%ff").is_err());
    }
}
