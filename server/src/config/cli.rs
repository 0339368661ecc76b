//! gost's `-L` / `-F` URL grammar turned into the configuration model.

use base64::Engine;
use pht_core::{GostUrl, UrlError};

use super::{
    AccessListConfig, AuthConfig, ChainConfig, Config, ConnectorConfig, DialerConfig,
    ForwardNodeConfig, ForwarderConfig, HandlerConfig, HopConfig, ListenerConfig, Metadata,
    MetricsConfig, NodeConfig, SelectorConfig, ServiceConfig, TlsConfig,
};

/// Handler names gost registers: a scheme word outside this list means `auto`.
const GOST_HANDLERS: &[&str] = &[
    "auto", "http", "http2", "http3", "socks4", "socks4a", "socks5", "socks", "relay", "tcp",
    "udp", "forward", "rtcp", "rudp", "runix", "red", "redir", "redirect", "redu", "sni", "ss",
    "ssu", "sshd", "dns", "tun", "tungo", "tap", "tunnel", "router", "serial", "unix", "file",
    "api", "metrics", "masque",
    // Not gost's: this project's echo target (handler/echo.rs).
    "echo",
];
/// Listener names gost registers: a scheme word outside this list means `tcp`.
const GOST_LISTENERS: &[&str] = &[
    "tcp", "udp", "tls", "mtls", "pht", "phts", "ws", "wss", "mws", "mwss", "http2", "h2", "h2c",
    "http3", "h3", "wt", "grpc", "quic", "kcp", "dtls", "ftcp", "icmp", "icmp6", "ohttp", "otls",
    "mtcp", "rtcp", "rudp", "runix", "red", "redir", "redirect", "redu", "ssh", "sshd", "stdio",
    "tun", "tungo", "tap", "dns", "serial", "unix",
];
/// Connector names gost registers: a scheme word outside this list means `http`.
const GOST_CONNECTORS: &[&str] = &[
    "http", "http2", "socks4", "socks4a", "socks5", "socks", "relay", "forward", "tcp", "ss",
    "ssu", "sni", "sshd", "tunnel", "router", "serial", "unix", "direct", "virtual", "masque",
];
/// Dialer names gost registers: a scheme word outside this list means `tcp`.
#[rustfmt::skip]
const GOST_DIALERS: &[&str] = &[
    "tcp", "udp", "tls", "mtls", "pht", "phts", "ws", "wss", "mws", "mwss", "http2", "h2", "h2c",
    "http3", "h3", "wt", "grpc", "quic", "kcp", "dtls", "ftcp", "icmp", "icmp6", "ohttp", "otls",
    "mtcp", "ssh", "sshd", "serial", "unix", "direct", "virtual", "h3-masque", "ohttps", "utls",
];
/// Listeners whose name becomes the handler when a forward target is given.
const FORWARD_LISTENERS: &[&str] = &[
    "tcp", "udp", "rtcp", "rudp", "tun", "tap", "dns", "unix", "runix", "serial",
];

/// Builds the configuration gost builds from `-L` and `-F` flags.
///
/// ```
/// let c = pht_server::config::from_cli(&["pht://:8443/:1080".into()], &[]).unwrap();
/// assert_eq!(c.services[0].handler.kind, "forward");
/// assert_eq!(c.services[0].listener.kind, "pht");
/// assert_eq!(c.services[0].forwarder.as_ref().unwrap().nodes[0].addr, ":1080");
/// ```
///
/// `admission=` on `-L` and `bypass=` on `-L` or `-F` become named lists, as gost makes
/// them: `admission-N` / `bypass-N` (the hops' lists are numbered first), a leading `~`
/// making the whole list a whitelist.
///
/// ```
/// let c = pht_server::config::from_cli(&["http://:8080?bypass=~10.0.0.0/8,.example.com".into()], &[]).unwrap();
/// assert_eq!(c.services[0].bypass.as_deref(), Some("bypass-0"));
/// assert!(c.bypasses[0].whitelist);
/// assert_eq!(c.bypasses[0].matchers, ["10.0.0.0/8", ".example.com"]);
/// ```
pub fn from_cli(listens: &[String], forwards: &[String]) -> Result<Config, UrlError> {
    let mut cfg = Config::default();
    let mut chain = None;
    if !forwards.is_empty() {
        let mut c = ChainConfig {
            name: "chain-0".into(),
            hops: Vec::new(),
        };
        for (i, f) in forwards.iter().enumerate() {
            let (mut hop, bypass) = chain_node(f)?;
            hop.name = format!("hop-{i}");
            hop.bypass = bypass.map(|v| add_list(&mut cfg.bypasses, "bypass", &v));
            c.hops.push(hop);
        }
        chain = Some(c);
    }
    for l in listens {
        let (services, lists) = service(l)?;
        let admission = lists
            .admission
            .map(|v| add_list(&mut cfg.admissions, "admission", &v));
        let bypass = lists
            .bypass
            .map(|v| add_list(&mut cfg.bypasses, "bypass", &v));
        for mut svc in services {
            svc.name = format!("service-{}", cfg.services.len());
            svc.admission = admission.clone();
            svc.bypass = bypass.clone();
            cfg.services.push(svc);
        }
    }
    if let Some(chain) = chain {
        cfg.chains.push(chain);
        for s in &mut cfg.services {
            s.handler.chain = Some("chain-0".into());
        }
    }
    Ok(cfg)
}

/// gost's `-metrics` value: `[user:pass@]addr[?path=/p]`, read as a URL.
///
/// ```
/// let m = pht_server::config::parse_metrics("u:p@127.0.0.1:9000?path=/m").unwrap();
/// assert_eq!((m.addr.as_str(), m.path.as_str()), ("127.0.0.1:9000", "/m"));
/// assert_eq!(m.auth.unwrap().password, "p");
/// assert_eq!(pht_server::config::parse_metrics(":9000").unwrap().path, "");
/// ```
pub fn parse_metrics(input: &str) -> Result<MetricsConfig, UrlError> {
    let full = if input.contains("://") {
        input.to_string()
    } else {
        format!("auto://{input}")
    };
    let u = GostUrl::parse(&full)?;
    if u.host.is_empty() {
        return Err(UrlError::MissingAddress { url: input.into() });
    }
    Ok(MetricsConfig {
        addr: u.host.clone(),
        path: u.param("path").unwrap_or_default().to_string(),
        auth: auth_of(&u, input)?,
    })
}

/// Appends the list a `admission=`/`bypass=` value stands for; returns its name.
fn add_list(lists: &mut Vec<AccessListConfig>, kind: &str, value: &str) -> String {
    let (whitelist, entries) = match value.strip_prefix('~') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let name = format!("{kind}-{}", lists.len());
    lists.push(AccessListConfig {
        name: name.clone(),
        whitelist,
        matchers: entries
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect(),
        ..Default::default()
    });
    name
}

/// The list values a flag carries (`admission=`, `bypass=`), not yet named.
#[derive(Default)]
struct FlagLists {
    admission: Option<String>,
    bypass: Option<String>,
}

/// Query keys that make named lists instead of metadata.
fn list_key(k: &str) -> bool {
    k.eq_ignore_ascii_case("admission") || k.eq_ignore_ascii_case("bypass")
}

fn flag_lists(u: &GostUrl) -> FlagLists {
    let get = |k: &str| u.param(k).filter(|v| !v.is_empty()).map(str::to_string);
    FlagLists {
        admission: get("admission"),
        bypass: get("bypass"),
    }
}

/// TLS query keys and the `tls` field they fill (gost's aliases).
/// Matched case-insensitively, as gost looks them up.
fn tls_key(k: &str) -> Option<&'static str> {
    Some(match k.to_ascii_lowercase().as_str() {
        "certfile" | "cert" | "tls.certfile" => "certFile",
        "keyfile" | "key" | "tls.keyfile" => "keyFile",
        "cafile" | "ca" | "tls.cafile" => "caFile",
        "secure" | "tls.secure" => "secure",
        "servername" | "tls.servername" => "serverName",
        _ => return None,
    })
}

/// The `tls` block a URL's query asks for. On `-L` only certificate files count, and only
/// with a `certFile` (otherwise the global or self-made certificate is used).
fn tls_of(u: &GostUrl, listener: bool, input: &str) -> Result<Option<TlsConfig>, UrlError> {
    let mut t = TlsConfig::default();
    for (k, v) in &u.query {
        match tls_key(k) {
            Some("certFile") => t.cert_file = v.clone(),
            Some("keyFile") => t.key_file = v.clone(),
            Some("caFile") => t.ca_file = v.clone(),
            Some("secure") if !listener => {
                t.secure = pht_core::parse_bool(v).ok_or_else(|| UrlError::BadParam {
                    url: input.into(),
                    key: k.clone(),
                    value: v.clone(),
                    reason: "expected a boolean (1, t, true, 0, f, false)".into(),
                })?;
            }
            Some("serverName") if !listener => t.server_name = v.clone(),
            _ => {}
        }
    }
    Ok(if listener {
        (!t.cert_file.is_empty()).then_some(t)
    } else {
        (t != TlsConfig::default()).then_some(t)
    })
}

/// `user:pass@` (which wins, as in gost), else `auth=` carrying base64 of `user[:pass]`
/// (URL-safe unpadded or standard padded, gost's two alphabets). gost refuses to start on an
/// `auth=` that is not base64, and so does this: ignoring it would leave the service open.
fn auth_of(u: &GostUrl, input: &str) -> Result<Option<AuthConfig>, UrlError> {
    if let Some(user) = &u.user {
        return Ok(Some(AuthConfig {
            username: user.clone(),
            password: u.password.clone().unwrap_or_default(),
        }));
    }
    let Some((key, raw)) = u
        .query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("auth"))
        .filter(|(_, v)| !v.is_empty())
    else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
        .map_err(|_| UrlError::BadParam {
            url: input.into(),
            key: key.clone(),
            value: raw.clone(),
            reason: "expected base64 of user:password".into(),
        })?;
    let text = String::from_utf8_lossy(&decoded);
    let (user, pass) = text.split_once(':').unwrap_or((&text, ""));
    Ok(Some(AuthConfig {
        username: user.into(),
        password: pass.into(),
    }))
}

/// Expands gost's host part: `:8000-8002` → three addresses; `a:1,b:2` → two.
fn expand_addrs(host: &str, input: &str) -> Result<Vec<String>, UrlError> {
    let mut out = Vec::new();
    for part in host.split(',').filter(|p| !p.is_empty()) {
        match part.rsplit_once(':') {
            Some((h, ports)) if ports.contains('-') => {
                let bad = || UrlError::BadPort {
                    url: input.into(),
                    port: ports.into(),
                };
                let (a, b) = ports.split_once('-').ok_or_else(bad)?;
                let (a, b): (u16, u16) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend((a..=b).map(|p| format!("{h}:{p}")));
            }
            _ => out.push(part.to_string()),
        }
    }
    Ok(out)
}

/// One `-L` flag → one or more services (port ranges expand). Its `admission=` and
/// `bypass=` lists are made by [`from_cli`], which names them.
pub fn parse_service(input: &str) -> Result<Vec<ServiceConfig>, UrlError> {
    service(input).map(|(s, _)| s)
}

fn service(input: &str) -> Result<(Vec<ServiceConfig>, FlagLists), UrlError> {
    let u = GostUrl::parse(input)?;
    let (a, b) = u.scheme_parts();
    let (mut handler, listener) = match b {
        Some(b) => (a.to_string(), b.to_string()),
        None => (a.to_string(), a.to_string()),
    };
    if !GOST_HANDLERS.contains(&handler.as_str()) {
        handler = "auto".into();
    }
    let listener = if GOST_LISTENERS.contains(&listener.as_str()) {
        listener
    } else if handler == "ssu" {
        "udp".into()
    } else {
        "tcp".into()
    };
    let targets = expand_addrs(u.path.trim_matches('/'), input)?;
    if !targets.is_empty() && handler != "relay" {
        handler = if FORWARD_LISTENERS.contains(&listener.as_str()) {
            listener.clone()
        } else {
            "forward".into()
        };
    }

    let mut handler_md = Metadata::default();
    let mut listener_md = Metadata::default();
    let mut service_md = Metadata::default();
    let selector = cli_selector(&u);
    for (k, v) in &u.query {
        if k.eq_ignore_ascii_case("auth")
            || tls_key(k).is_some()
            || list_key(k)
            || (selector.is_some() && selector_key(k))
        {
            continue;
        }
        if let Some(k) = k.strip_prefix("service.") {
            service_md.insert(k, v);
        } else if let Some(k) = k.strip_prefix("handler.") {
            handler_md.insert(k, v);
        } else if let Some(k) = k.strip_prefix("listener.") {
            listener_md.insert(k, v);
        } else {
            handler_md.insert(k, v);
            listener_md.insert(k, v);
            service_md.insert(k, v);
        }
    }
    let auth = auth_of(&u, input)?;

    let addrs = expand_addrs(&u.host, input)?;
    if addrs.is_empty() {
        return Err(UrlError::MissingAddress { url: input.into() });
    }
    let listener_tls = tls_of(&u, true, input)?;
    let n = addrs.len();
    let services = addrs
        .into_iter()
        .enumerate()
        .map(|(i, addr)| {
            // Several services and several targets: service i gets target i only.
            let own: Vec<&String> = if n > 1 && targets.len() > 1 {
                targets.get(i).into_iter().collect()
            } else {
                targets.iter().collect()
            };
            let forwarder = (!own.is_empty()).then(|| ForwarderConfig {
                nodes: own
                    .iter()
                    .enumerate()
                    .map(|(j, t)| ForwardNodeConfig {
                        name: format!("target-{j}"),
                        addr: (*t).clone(),
                        ..Default::default()
                    })
                    .collect(),
                selector: selector.clone(),
            });
            ServiceConfig {
                name: String::new(),
                addr,
                handler: HandlerConfig {
                    kind: handler.clone(),
                    chain: None,
                    auth: auth.clone(),
                    metadata: handler_md.clone(),
                    ..Default::default()
                },
                listener: ListenerConfig {
                    kind: listener.clone(),
                    tls: listener_tls.clone(),
                    metadata: listener_md.clone(),
                },
                forwarder,
                metadata: service_md.clone(),
                ..Default::default()
            }
        })
        .collect();
    Ok((services, flag_lists(&u)))
}

/// The selector keys of a command-line URL (gost reads them case-insensitively).
fn selector_key(k: &str) -> bool {
    [
        "strategy",
        "maxFails",
        "max_fails",
        "failTimeout",
        "fail_timeout",
    ]
    .iter()
    .any(|n| k.eq_ignore_ascii_case(n))
}

/// gost's selector from a command-line URL: present when `strategy` is set, `maxFails` is
/// above 0 or `failTimeout` above zero; the keys left out then default to `round`, 1 and
/// 30s. Without any, there is no selector and the keys stay plain metadata, as in gost.
/// (A `failTimeout` that is not a duration is kept, and refused when the configuration is
/// checked, where gost would fall back to 30s.)
fn cli_selector(u: &GostUrl) -> Option<SelectorConfig> {
    let strategy = u.param("strategy").unwrap_or_default().trim();
    let max_fails = u
        .param("maxFails")
        .or_else(|| u.param("max_fails"))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let fail_timeout = u
        .param("failTimeout")
        .or_else(|| u.param("fail_timeout"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && crate::config::parse_duration(v) != Some(Default::default()))
        .unwrap_or_default();
    if strategy.is_empty() && max_fails <= 0 && fail_timeout.is_empty() {
        return None;
    }
    Some(SelectorConfig {
        strategy: if strategy.is_empty() {
            "round"
        } else {
            strategy
        }
        .into(),
        max_fails: if max_fails <= 0 {
            crate::selector::DEFAULT_MAX_FAILS
        } else {
            u32::try_from(max_fails).unwrap_or(u32::MAX)
        },
        fail_timeout: if fail_timeout.is_empty() {
            crate::selector::CLI_FAIL_TIMEOUT
        } else {
            fail_timeout
        }
        .into(),
    })
}

/// One `-F` flag → one hop (a comma list in the host makes several nodes). Its `bypass=`
/// list is made by [`from_cli`], which names it.
pub fn parse_chain_node(input: &str) -> Result<HopConfig, UrlError> {
    chain_node(input).map(|(h, _)| h)
}

fn chain_node(input: &str) -> Result<(HopConfig, Option<String>), UrlError> {
    let u = GostUrl::parse(input)?;
    let (a, b) = u.scheme_parts();
    let (mut connector, dialer) = match b {
        Some(b) => (a.to_string(), b.to_string()),
        None => (a.to_string(), a.to_string()),
    };
    if !GOST_CONNECTORS.contains(&connector.as_str()) {
        connector = "http".into();
    }
    let dialer = if GOST_DIALERS.contains(&dialer.as_str()) {
        dialer
    } else if connector == "ssu" {
        "udp".into()
    } else {
        "tcp".into()
    };
    let mut connector_md = Metadata::default();
    let mut dialer_md = Metadata::default();
    let mut node_md = Metadata::default();
    let selector = cli_selector(&u);
    for (k, v) in &u.query {
        if k.eq_ignore_ascii_case("auth")
            || tls_key(k).is_some()
            || k.eq_ignore_ascii_case("bypass")
            || (selector.is_some() && selector_key(k))
            // gost's hop metadata (interface, so_mark, ...), none of it used here: it
            // reaches neither the node, nor its connector or dialer.
            || k.starts_with("hop.")
        {
            continue;
        }
        if let Some(k) = k.strip_prefix("connector.") {
            connector_md.insert(k, v);
        } else if let Some(k) = k.strip_prefix("dialer.") {
            dialer_md.insert(k, v);
        } else if let Some(k) = k.strip_prefix("node.") {
            node_md.insert(k, v);
        } else {
            connector_md.insert(k, v);
            dialer_md.insert(k, v);
            node_md.insert(k, v);
        }
    }
    let addrs = expand_addrs(&u.host, input)?;
    if addrs.is_empty() {
        return Err(UrlError::MissingAddress { url: input.into() });
    }
    let dialer_tls = tls_of(&u, false, input)?;
    let auth = auth_of(&u, input)?;
    let hop = HopConfig {
        name: String::new(),
        selector,
        nodes: addrs
            .into_iter()
            .enumerate()
            .map(|(i, addr)| NodeConfig {
                name: format!("node-{i}"),
                addr,
                connector: ConnectorConfig {
                    kind: connector.clone(),
                    auth: auth.clone(),
                    metadata: connector_md.clone(),
                },
                dialer: DialerConfig {
                    kind: dialer.clone(),
                    tls: dialer_tls.clone(),
                    metadata: dialer_md.clone(),
                },
                metadata: node_md.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    Ok((hop, flag_lists(&u).bypass))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(s: &str) -> ServiceConfig {
        parse_service(s).unwrap().remove(0)
    }

    #[test]
    fn a_bad_boolean_in_a_url_is_an_error_not_false() {
        let hop = parse_chain_node("phts://h:443?secure=T&serverName=x").unwrap();
        assert!(hop.nodes[0].dialer.tls.as_ref().unwrap().secure);
        let e = parse_chain_node("phts://h:443?secure=yes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"phts://h:443?secure=yes\": parameter secure=\"yes\": expected a boolean (1, t, true, 0, f, false)"
        );
    }

    #[test]
    fn scheme_defaults_match_gost() {
        for (input, h, l) in [
            (":8080", "auto", "tcp"),
            ("http://:8080", "http", "tcp"),
            ("socks5://:1080", "socks5", "tcp"),
            ("relay://:8421", "relay", "tcp"),
            ("tls://:443", "auto", "tls"),
            ("https://:443", "http", "tls"),
            ("pht://:8443", "auto", "pht"),
            ("phts://:8443", "auto", "phts"),
            ("http+pht://:8443", "http", "pht"),
            ("tcp://:8080", "tcp", "tcp"),
            ("pht://:8443/:1080", "forward", "pht"),
            ("forward+pht://:8443/:1080", "forward", "pht"),
            ("http://:8080/x:80", "tcp", "tcp"),
            ("relay://:8420/:53", "relay", "tcp"),
            // This project's echo handler, on TCP and straight behind a tunnel.
            ("echo://127.0.0.1:7007", "echo", "tcp"),
            ("echo+pht://:8446", "echo", "pht"),
        ] {
            let s = svc(input);
            assert_eq!(
                (s.handler.kind.as_str(), s.listener.kind.as_str()),
                (h, l),
                "{input}"
            );
        }
    }

    #[test]
    fn metadata_scoping_and_auth() {
        let s = svc("http+pht://u:p@:8443?pushPath=/up&listener.backlog=4&handler.x=1&service.y=2");
        assert_eq!(s.handler.auth.as_ref().unwrap().username, "u");
        assert_eq!(
            s.listener.metadata.get_str("pushPath").as_deref(),
            Some("/up")
        );
        assert_eq!(
            s.handler.metadata.get_str("pushpath").as_deref(),
            Some("/up")
        );
        assert_eq!(s.listener.metadata.get_str("backlog").as_deref(), Some("4"));
        assert_eq!(s.handler.metadata.get_str("backlog"), None);
        assert_eq!(s.handler.metadata.get_str("x").as_deref(), Some("1"));
        assert_eq!(s.metadata.get_str("y").as_deref(), Some("2"));
        // auth= carries base64("user:pass")
        let s = svc("socks5://:1080?auth=dXNlcjpwYXNz");
        let a = s.handler.auth.unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("user", "pass"));
    }

    #[test]
    fn ranges_and_targets() {
        let v = parse_service("tcp://:8000-8001/10.0.0.1:9000-9001").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].addr, ":8001");
        assert_eq!(
            v[1].forwarder.as_ref().unwrap().nodes[0].addr,
            "10.0.0.1:9001"
        );
        let s = svc("tcp://:8080/a:1,b:2?strategy=fifo");
        let f = s.forwarder.unwrap();
        assert_eq!(f.nodes.len(), 2);
        let sel = f.selector.unwrap();
        assert_eq!(
            (
                sel.strategy.as_str(),
                sel.max_fails,
                sel.fail_timeout.as_str()
            ),
            ("fifo", 1, "30s")
        );
    }

    #[test]
    fn admission_and_bypass_become_named_lists() {
        let c = from_cli(
            &[
                "http+pht://:8443?admission=~127.0.0.1,10.0.0.0/8&bypass=.example.com&x=1".into(),
                ":8080?bypass=~127.0.0.1:80".into(),
            ],
            &["relay+pht://srv:8443?bypass=~10.0.0.0/8".into()],
        )
        .unwrap();
        // The hop's list first, as gost numbers them.
        assert_eq!(c.chains[0].hops[0].bypass.as_deref(), Some("bypass-0"));
        assert_eq!(c.bypasses[0].matchers, ["10.0.0.0/8"]);
        assert!(c.bypasses[0].whitelist);
        let s0 = &c.services[0];
        assert_eq!(s0.admission.as_deref(), Some("admission-0"));
        assert_eq!(s0.bypass.as_deref(), Some("bypass-1"));
        assert_eq!(c.admissions[0].matchers, ["127.0.0.1", "10.0.0.0/8"]);
        assert!(c.admissions[0].whitelist);
        assert!(!c.bypasses[1].whitelist);
        assert_eq!(c.services[1].bypass.as_deref(), Some("bypass-2"));
        assert_eq!(c.services[1].admission, None);
        // Consumed: not metadata anywhere.
        for md in [&s0.handler.metadata, &s0.listener.metadata, &s0.metadata] {
            assert_eq!(md.get_str("bypass"), None);
            assert_eq!(md.get_str("admission"), None);
            assert_eq!(md.get_str("x").as_deref(), Some("1"));
        }
        assert_eq!(
            c.chains[0].hops[0].nodes[0]
                .connector
                .metadata
                .get_str("bypass"),
            None
        );
        // A port range shares one list.
        let c = from_cli(&["tcp://:8000-8001/a:1?bypass=b.com".into()], &[]).unwrap();
        assert_eq!(c.bypasses.len(), 1);
        assert!(
            c.services
                .iter()
                .all(|s| s.bypass.as_deref() == Some("bypass-0"))
        );
        // `-O yaml` prints them, and the printed form loads back.
        let yaml = serde_yaml::to_string(&c).unwrap();
        assert!(
            yaml.contains("bypasses:\n- name: bypass-0\n  matchers:\n  - b.com\n"),
            "{yaml}"
        );
        assert!(yaml.contains("  bypass: bypass-0\n"), "{yaml}");
        let back: Config = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn auth_query_is_base64_or_refused() {
        let user = |s: &str| {
            let a = svc(s).handler.auth.unwrap();
            (a.username, a.password)
        };
        // gost's two alphabets: URL-safe unpadded, standard padded; the password optional.
        assert_eq!(user(":1?auth=dTpwPj4_"), ("u".into(), "p>>?".into()));
        assert_eq!(user(":1?auth=dTpwPz8="), ("u".into(), "p??".into()));
        // A `+` must be escaped in a URL (a bare one is a space, in gost too).
        assert_eq!(user(":1?auth=dTpwPz9%2B"), ("u".into(), "p??~".into()));
        assert_eq!(user(":1?AUTH=dQ"), ("u".into(), "".into()));
        // user:pass@ wins over auth=.
        assert_eq!(user("http://a:b@:1?auth=dTpw"), ("a".into(), "b".into()));
        // An empty auth= is no auth, as in gost.
        assert_eq!(svc(":1?auth=").handler.auth, None);
        for input in [":1?auth=!!", ":1?auth=dTpwPz8==="] {
            let e = parse_service(input).unwrap_err().to_string();
            let value = input.split_once('=').unwrap().1;
            assert_eq!(
                e,
                format!("{input:?}: parameter auth={value:?}: expected base64 of user:password")
            );
        }
        let e = parse_chain_node("relay+pht://h:1?auth=*")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("expected base64 of user:password"), "{e}");
    }

    #[test]
    fn special_keys_are_case_insensitive_as_in_gost() {
        let hop = parse_chain_node("phts://h:443?Secure=true&SERVERNAME=x&CaFile=/ca.pem").unwrap();
        let t = hop.nodes[0].dialer.tls.clone().unwrap();
        assert!(t.secure);
        assert_eq!(
            (t.server_name.as_str(), t.ca_file.as_str()),
            ("x", "/ca.pem")
        );
        let s = svc("phts://:8443?CertFile=/c.pem&KEY=/k.pem");
        let t = s.listener.tls.unwrap();
        assert_eq!(
            (t.cert_file.as_str(), t.key_file.as_str()),
            ("/c.pem", "/k.pem")
        );
        let f = svc("tcp://:1/a:1,b:2?Strategy=fifo&MaxFails=3")
            .forwarder
            .unwrap();
        let sel = f.selector.unwrap();
        assert_eq!(
            (
                sel.strategy.as_str(),
                sel.max_fails,
                sel.fail_timeout.as_str()
            ),
            ("fifo", 3, "30s")
        );
    }

    #[test]
    fn selector_only_when_gost_makes_one() {
        // maxFails 0 and failTimeout 0 count as absent: no selector, plain metadata.
        let s = svc("tcp://:1/a:1?maxFails=0&failTimeout=0");
        assert_eq!(s.forwarder.unwrap().selector, None);
        assert_eq!(s.handler.metadata.get_str("maxFails").as_deref(), Some("0"));
        // One key is enough; the others take the command line's defaults.
        let sel = svc("tcp://:1/a:1?max_fails=2")
            .forwarder
            .unwrap()
            .selector
            .unwrap();
        assert_eq!(
            (
                sel.strategy.as_str(),
                sel.max_fails,
                sel.fail_timeout.as_str()
            ),
            ("round", 2, "30s")
        );
        let sel = svc("tcp://:1/a:1?fail_timeout=5")
            .forwarder
            .unwrap()
            .selector
            .unwrap();
        assert_eq!(
            (
                sel.strategy.as_str(),
                sel.max_fails,
                sel.fail_timeout.as_str()
            ),
            ("round", 1, "5")
        );
        let hop = parse_chain_node("http://a:1,b:2?strategy=random").unwrap();
        let sel = hop.selector.unwrap();
        assert_eq!(
            (
                sel.strategy.as_str(),
                sel.max_fails,
                sel.fail_timeout.as_str()
            ),
            ("random", 1, "30s")
        );
        assert_eq!(hop.nodes[0].metadata.get_str("strategy"), None);
        assert_eq!(parse_chain_node("http://a:1").unwrap().selector, None);
    }

    #[test]
    fn every_gost_connector_and_dialer_name_is_kept() {
        // Names gost registers stay as written (and are refused by name if this server
        // lacks them), never replaced by http or tcp as an unknown word is.
        for (input, c, d) in [
            ("tcp://h:1", "tcp", "tcp"),
            ("utls://h:1", "http", "utls"),
            ("socks5+utls://h:1", "socks5", "utls"),
            ("masque+h3-masque://h:1", "masque", "h3-masque"),
            ("direct://h:1", "direct", "direct"),
            ("foo://h:1", "http", "tcp"),
            ("h:1", "http", "tcp"),
            ("https://h:1", "http", "tls"),
            ("tls://h:1", "http", "tls"),
            ("pht://h:1", "http", "pht"),
            ("phts://h:1", "http", "phts"),
        ] {
            let n = &parse_chain_node(input).unwrap().nodes[0];
            assert_eq!(
                (n.connector.kind.as_str(), n.dialer.kind.as_str()),
                (c, d),
                "{input}"
            );
        }
    }

    #[test]
    fn hop_keys_stay_off_nodes() {
        let hop = parse_chain_node("http://a:1?hop.backup=true&node.backup=false&x=1").unwrap();
        let n = &hop.nodes[0];
        assert_eq!(n.metadata.get_str("backup").as_deref(), Some("false"));
        assert_eq!(n.connector.metadata.get_str("hop.backup"), None);
        assert_eq!(n.dialer.metadata.get_str("x").as_deref(), Some("1"));
    }

    #[test]
    fn chain_nodes() {
        let c = from_cli(
            &[":8080".into()],
            &[
                "pht://srv:8443".into(),
                "relay+phts://u:p@a:1,b:2?secure=true".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.services[0].handler.chain.as_deref(), Some("chain-0"));
        let hops = &c.chains[0].hops;
        assert_eq!(hops[0].nodes[0].connector.kind, "http");
        assert_eq!(hops[0].nodes[0].dialer.kind, "pht");
        assert_eq!(hops[1].nodes.len(), 2);
        assert_eq!(hops[1].nodes[1].addr, "b:2");
        assert_eq!(
            hops[1].nodes[0].connector.auth.as_ref().unwrap().password,
            "p"
        );
        assert!(hops[1].nodes[0].dialer.tls.as_ref().unwrap().secure);
        assert_eq!(hops[1].nodes[0].dialer.metadata.get_str("secure"), None);
    }
}
