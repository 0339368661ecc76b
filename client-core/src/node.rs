//! A PHT node as gost's `-F` names it, and the settings a tunnel runs with.

use std::time::Duration;

use crate::url::{MAX_DURATION, MAX_SIZE, parse_bool, parse_duration, parse_size};
use crate::{GostUrl, UrlError, defaults};

/// Characters escaped in a query value: all but RFC 3986's unreserved ones, so gost's and
/// our own tokens travel verbatim.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How a client gets its tunnel token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenMode {
    /// `GET authorizePath` first (works with every gost server; stable ones answer 403 to
    /// tokens they did not hand out).
    #[default]
    Authorize,
    /// Make the token locally and save a round trip (gost ≥ 3.3 servers and ours accept it).
    Mint,
}

/// Which PHT version a tunnel speaks (node option `v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// Ask for PHT/2 and fall back to PHT/1 when the server does not offer it.
    #[default]
    Auto,
    /// gost's PHT/1 only.
    V1,
    /// PHT/2, or an error.
    V2,
}

/// When a PHT/2 client long-polls instead of streaming its pull (node option `poll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollMode {
    /// Stream, and switch to long polls while a proxy holds responses back.
    #[default]
    Auto,
    /// Always long-poll (`poll=1`).
    Always,
    /// Always stream (`poll=0`).
    Never,
}

/// Everything a tunnel needs to know about its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// `http://host:port` or `https://host:port` (the `host` override already applied).
    pub base_url: String,
    pub authorize_path: String,
    pub push_path: String,
    pub pull_path: String,
    /// Extra headers sent on every request (gost's `header` map).
    pub headers: Vec<(String, String)>,
    pub token_mode: TokenMode,
    /// Raw bytes per push POST at most (writes are coalesced up to this).
    pub max_push_payload: usize,
    /// Smallest push the client shrinks to when proxies answer 413.
    pub min_push_payload: usize,
    /// Deadline of each HTTP exchange: authorize, a push's answer, a pull's headers.
    pub request_timeout: Duration,
    /// Silence on the pull (no data, no heartbeat) after which the tunnel is dead.
    pub heartbeat_timeout: Duration,
    /// Longest accepted pull line, in base64 characters.
    pub max_pull_line: usize,
    /// Decoded bytes held for the reader before the pull response is left unread.
    pub recv_buffer: usize,
    /// PHT version to speak (`v`).
    pub version: Version,
    /// PHT/2: how long pulls or pushes may fail in a row before the tunnel fails.
    pub resume_timeout: Duration,
    /// PHT/2: age at which the pull is replaced by a new one (make before break).
    pub pull_max_age: Duration,
    /// PHT/2: push POSTs in flight at most.
    pub push_window: usize,
    /// PHT/2: streaming or long-polling pulls.
    pub poll: PollMode,
}

impl TunnelConfig {
    /// Defaults for a server at `base_url`.
    ///
    /// ```
    /// let c = pht_core::TunnelConfig::new("http://127.0.0.1:8443");
    /// assert_eq!(c.pull_path, "/pull");
    /// ```
    pub fn new(base_url: impl Into<String>) -> Self {
        TunnelConfig {
            base_url: base_url.into(),
            authorize_path: defaults::AUTHORIZE_PATH.into(),
            push_path: defaults::PUSH_PATH.into(),
            pull_path: defaults::PULL_PATH.into(),
            headers: Vec::new(),
            token_mode: TokenMode::default(),
            max_push_payload: defaults::MAX_PUSH_PAYLOAD,
            min_push_payload: defaults::MIN_PUSH_PAYLOAD,
            request_timeout: defaults::REQUEST_TIMEOUT,
            heartbeat_timeout: defaults::HEARTBEAT_TIMEOUT,
            max_pull_line: defaults::MAX_PULL_LINE,
            recv_buffer: defaults::RECV_BUFFER,
            version: Version::default(),
            resume_timeout: crate::frame::defaults::RESUME_TIMEOUT,
            pull_max_age: crate::frame::defaults::PULL_MAX_AGE,
            push_window: crate::frame::defaults::PUSH_WINDOW,
            poll: PollMode::default(),
        }
    }

    pub(crate) fn url(&self, path: &str, token: Option<&str>) -> String {
        match token {
            Some(t) => format!(
                "{}{}?token={}",
                self.base_url,
                path,
                percent_encoding::utf8_percent_encode(t, QUERY_VALUE)
            ),
            None => format!("{}{}", self.base_url, path),
        }
    }
}

/// The dialers that speak PHT: plain HTTP, TLS, and HTTP/3 under gost's two names.
pub const PHT_DIALERS: &[&str] = &["pht", "phts", "h3", "http3"];

/// A chain node in gost's `-F` syntax, for the PHT dialers.
///
/// `[connector+](pht|phts|h3|http3)://[user:pass@]host:port?authorizePath=&pushPath=&pullPath=&host=`
///
/// gost's defaults apply: `pht://` alone means the `http` connector. Extra query keys of
/// this project: `token=authorize|mint`, `maxPushSize=<size>`, `minPushSize=<size>` (bytes,
/// or with a unit: `512KiB`, `4MiB`),
/// `requestTimeout=<duration>`, `heartbeatTimeout=<duration>`, PHT/2's `v=auto|1|2`,
/// `resumeTimeout=<duration>`, `pullMaxAge=<duration>`, `pushWindow=<n>`,
/// `poll=auto|<bool>` (and the transport's `proxy=`, read by the native client).
///
/// ```
/// let n = pht_core::NodeUrl::parse("forward+pht://10.0.0.1:8443?pushPath=/up&host=cdn.example").unwrap();
/// assert_eq!(n.connector, "forward");
/// assert_eq!(n.addr, "10.0.0.1:8443");
/// let c = n.tunnel_config();
/// assert_eq!(c.base_url, "http://cdn.example:8443");
/// assert_eq!(c.push_path, "/up");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUrl {
    /// `http`, `socks5`, `relay`, `forward`...
    pub connector: String,
    /// `pht`, `phts`, `h3` or `http3`.
    pub dialer: String,
    /// Where the TCP connection goes: `host:port`.
    pub addr: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// The raw URL, for options that belong to other layers (TLS...).
    pub url: GostUrl,
}

impl NodeUrl {
    /// Parses a node URL; see the type's docs for the accepted shape.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        Self::from_url(GostUrl::parse(input)?, input)
    }

    /// Builds a node from configuration parts (a YAML node's connector, dialer, address
    /// and dialer metadata) with the same defaults and checks as [`NodeUrl::parse`].
    ///
    /// ```
    /// let n = pht_core::NodeUrl::from_parts("relay", "pht", "10.0.0.1:80",
    ///     vec![("pullPath".into(), "/down".into())]).unwrap();
    /// assert_eq!(n.tunnel_config().pull_path, "/down");
    /// ```
    pub fn from_parts(
        connector: &str,
        dialer: &str,
        addr: &str,
        params: Vec<(String, String)>,
    ) -> Result<Self, UrlError> {
        let url = GostUrl {
            scheme: format!("{connector}+{dialer}"),
            host: addr.to_string(),
            query: params,
            ..GostUrl::default()
        };
        let input = format!("{connector}+{dialer}://{addr}");
        Self::from_url(url, &input)
    }

    fn from_url(url: GostUrl, input: &str) -> Result<Self, UrlError> {
        let (a, b) = url.scheme_parts();
        let (connector, dialer) = match b {
            Some(b) => (a.to_string(), b.to_string()),
            None if PHT_DIALERS.contains(&a) => ("http".to_string(), a.to_string()),
            None => (a.to_string(), a.to_string()),
        };
        if url.host.is_empty() {
            return Err(UrlError::MissingAddress { url: input.into() });
        }
        let addr = with_port(&url.host, input)?;
        let node = NodeUrl {
            connector,
            dialer,
            addr,
            user: url.user.clone(),
            password: url.password.clone(),
            url,
        };
        node.try_tunnel_config()?;
        Ok(node)
    }

    /// `true` for `phts` and the HTTP/3 dialers (TLS, `https://` URLs).
    pub fn is_tls(&self) -> bool {
        self.dialer == "phts" || self.is_quic()
    }

    /// `true` for gost's HTTP/3 dialers, `h3` and `http3` (PHT over QUIC).
    pub fn is_quic(&self) -> bool {
        self.dialer == "h3" || self.dialer == "http3"
    }

    /// The tunnel settings this node asks for.
    pub fn tunnel_config(&self) -> TunnelConfig {
        self.try_tunnel_config()
            .expect("options are validated by NodeUrl::parse")
    }

    /// Like [`NodeUrl::tunnel_config`], reporting bad option values instead of panicking.
    pub fn try_tunnel_config(&self) -> Result<TunnelConfig, UrlError> {
        let scheme = if self.is_tls() { "https" } else { "http" };
        let authority = match self.url.param("host").filter(|h| !h.is_empty()) {
            // gost keeps the node's port when `host` has none.
            Some(h) if !h.contains(':') || h.ends_with(']') => {
                format!("{h}:{}", port_of(&self.addr))
            }
            Some(h) => h.to_string(),
            None => self.addr.clone(),
        };
        let mut c = TunnelConfig::new(format!("{scheme}://{authority}"));
        let path = |key: &str, default: &str| match self.url.param(key) {
            Some(p) if p.starts_with('/') => p.to_string(),
            _ => default.to_string(),
        };
        c.authorize_path = path("authorizePath", defaults::AUTHORIZE_PATH);
        c.push_path = path("pushPath", defaults::PUSH_PATH);
        c.pull_path = path("pullPath", defaults::PULL_PATH);
        let bad = |key: &str, value: &str, reason: &str| UrlError::BadParam {
            url: self.url.scheme.clone() + "://" + &self.url.host,
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        };
        if let Some(v) = self.url.param("token") {
            c.token_mode = match v {
                "authorize" => TokenMode::Authorize,
                "mint" => TokenMode::Mint,
                _ => return Err(bad("token", v, "expected authorize or mint")),
            };
        }
        if let Some(v) = self.url.param("authorize") {
            match parse_bool(v) {
                Some(true) => c.token_mode = TokenMode::Authorize,
                Some(false) => c.token_mode = TokenMode::Mint,
                None => return Err(bad("authorize", v, "expected a boolean")),
            }
        }
        let bytes = |key: &str| match self.url.param(key) {
            None => Ok(None),
            Some(v) => match parse_size(v) {
                Some(n) if n > 0 && n <= MAX_SIZE => Ok(Some(n)),
                _ => Err(bad(
                    key,
                    v,
                    "expected a positive size in bytes up to 1GiB (e.g. 786429, 512KiB, 4MiB)",
                )),
            },
        };
        if let Some(n) = bytes("maxPushSize")? {
            c.max_push_payload = n;
        }
        if let Some(n) = bytes("minPushSize")? {
            c.min_push_payload = n;
        }
        let duration = |key: &str| match self.url.param(key) {
            None => Ok(None),
            Some(v) => match parse_duration(v) {
                Some(d) if !d.is_zero() && d <= MAX_DURATION => Ok(Some(d)),
                _ => Err(bad(
                    key,
                    v,
                    "expected a positive duration up to 8760h (e.g. 30s, 1m)",
                )),
            },
        };
        if let Some(d) = duration("requestTimeout")? {
            c.request_timeout = d;
        }
        if let Some(d) = duration("heartbeatTimeout")? {
            c.heartbeat_timeout = d;
        }
        if let Some(d) = duration("resumeTimeout")? {
            c.resume_timeout = d;
        }
        if let Some(d) = duration("pullMaxAge")? {
            c.pull_max_age = d;
        }
        if let Some(v) = self.url.param("pushWindow") {
            c.push_window = match v.parse::<usize>() {
                Ok(n) if n > 0 => n.min(64),
                _ => {
                    return Err(bad(
                        "pushWindow",
                        v,
                        "expected a positive number of requests",
                    ));
                }
            };
        }
        if let Some(v) = self.url.param("v") {
            c.version = match v {
                "auto" | "" => Version::Auto,
                "1" => Version::V1,
                "2" => Version::V2,
                _ => return Err(bad("v", v, "expected auto, 1 or 2")),
            };
        }
        if let Some(v) = self.url.param("poll") {
            c.poll = match v {
                "auto" | "" => PollMode::Auto,
                _ => match parse_bool(v) {
                    Some(true) => PollMode::Always,
                    Some(false) => PollMode::Never,
                    None => return Err(bad("poll", v, "expected auto or a boolean")),
                },
            };
        }
        for (k, v) in &self.url.query {
            // gost reads headers from a YAML map; `header.Name=value` is this project's CLI form.
            if let Some(name) = k.strip_prefix("header.") {
                c.headers.push((name.to_string(), v.clone()));
            }
        }
        Ok(c)
    }
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(_, p)| p).unwrap_or("")
}

/// Checks `host:port` and fills an empty host with `127.0.0.1` (gost dials the local machine).
fn with_port(host: &str, input: &str) -> Result<String, UrlError> {
    let (h, p) = host
        .rsplit_once(':')
        .filter(|(h, _)| !h.ends_with('[') && (!h.starts_with('[') || h.ends_with(']')))
        .ok_or_else(|| UrlError::MissingAddress { url: input.into() })?;
    if p.parse::<u16>().is_err() {
        return Err(UrlError::BadPort {
            url: input.into(),
            port: p.into(),
        });
    }
    let h = if h.is_empty() { "127.0.0.1" } else { h };
    Ok(format!("{h}:{p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gost_defaults() {
        let n = NodeUrl::parse("pht://srv:8443").unwrap();
        assert_eq!((n.connector.as_str(), n.dialer.as_str()), ("http", "pht"));
        let n = NodeUrl::parse("relay+phts://u:p@srv:443?secure=true").unwrap();
        assert!(n.is_tls());
        assert_eq!(n.user.as_deref(), Some("u"));
        assert_eq!(n.tunnel_config().base_url, "https://srv:443");
        let n = NodeUrl::parse("forward+pht://:8443").unwrap();
        assert_eq!(n.addr, "127.0.0.1:8443");
    }

    #[test]
    fn paths_and_options() {
        let n = NodeUrl::parse(
            "pht://[::1]:80?authorizePath=/a&pushPath=p&pullPath=/q&token=mint&maxPushSize=100&header.X-K=v",
        )
        .unwrap();
        let c = n.tunnel_config();
        assert_eq!(c.base_url, "http://[::1]:80");
        assert_eq!(c.authorize_path, "/a");
        assert_eq!(
            c.push_path, "/push",
            "a path without / falls back to the default"
        );
        assert_eq!(c.pull_path, "/q");
        assert_eq!(c.token_mode, TokenMode::Mint);
        assert_eq!(c.max_push_payload, 100);
        assert_eq!(c.headers, vec![("X-K".to_string(), "v".to_string())]);
        assert_eq!(
            c.url("/q", Some("a b-_")),
            "http://[::1]:80/q?token=a%20b-_"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            NodeUrl::parse("pht://srv").unwrap_err().to_string(),
            "\"pht://srv\": missing host:port"
        );
        assert_eq!(
            NodeUrl::parse("pht://srv:99999").unwrap_err().to_string(),
            "\"pht://srv:99999\": invalid port \"99999\""
        );
        assert_eq!(
            NodeUrl::parse("pht://srv:1?token=maybe")
                .unwrap_err()
                .to_string(),
            "\"pht://srv:1\": parameter token=\"maybe\": expected authorize or mint"
        );
        assert_eq!(
            NodeUrl::parse("pht://srv:1?maxPushSize=lots")
                .unwrap_err()
                .to_string(),
            "\"pht://srv:1\": parameter maxPushSize=\"lots\": expected a positive size in bytes up to 1GiB (e.g. 786429, 512KiB, 4MiB)"
        );
        assert_eq!(
            NodeUrl::parse("pht://srv:1?pushWindow=8k")
                .unwrap_err()
                .to_string(),
            "\"pht://srv:1\": parameter pushWindow=\"8k\": expected a positive number of requests"
        );
    }

    #[test]
    fn sizes_and_durations_have_the_servers_bounds() {
        for (q, key) in [
            ("maxPushSize=2GiB", "maxPushSize"),
            ("requestTimeout=9000h", "requestTimeout"),
        ] {
            let e = NodeUrl::parse(&format!("pht://srv:1?{q}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("parameter {key}=")) && e.contains("up to"),
                "{e}"
            );
        }
        let c = NodeUrl::parse("pht://srv:1?maxPushSize=1GiB&pullMaxAge=8760h")
            .unwrap()
            .tunnel_config();
        assert_eq!(c.max_push_payload, 1 << 30);
    }

    #[test]
    fn sizes_take_the_units_the_server_takes() {
        let c = NodeUrl::parse("pht://srv:1?maxPushSize=4MiB&minPushSize=64kb&pushWindow=4")
            .unwrap()
            .try_tunnel_config()
            .unwrap();
        assert_eq!(
            (c.max_push_payload, c.min_push_payload, c.push_window),
            (4 << 20, 64 << 10, 4)
        );
    }
}
