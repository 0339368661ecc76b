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
    "http", "http2", "socks4", "socks4a", "socks5", "socks", "relay", "forward", "ss", "ssu",
    "sni", "sshd", "tunnel", "router", "serial", "unix", "direct", "virtual",
];
/// Dialer names gost registers: a scheme word outside this list means `tcp`.
const GOST_DIALERS: &[&str] = &[
    "tcp", "udp", "tls", "mtls", "pht", "phts", "ws", "wss", "mws", "mwss", "http2", "h2", "h2c",
    "http3", "h3", "wt", "grpc", "quic", "kcp", "dtls", "ftcp", "icmp", "icmp6", "ohttp", "otls",
    "mtcp", "ssh", "sshd", "serial", "unix",
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
        auth: auth_of(&u),
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
fn tls_key(k: &str) -> Option<&'static str> {
    Some(match k {
        "certFile" | "cert" | "tls.certFile" => "certFile",
        "keyFile" | "key" | "tls.keyFile" => "keyFile",
        "caFile" | "ca" | "tls.caFile" => "caFile",
        "secure" | "tls.secure" => "secure",
        "serverName" | "tls.serverName" => "serverName",
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

fn auth_of(u: &GostUrl) -> Option<AuthConfig> {
    if let Some(user) = &u.user {
        return Some(AuthConfig {
            username: user.clone(),
            password: u.password.clone().unwrap_or_default(),
        });
    }
    let raw = u.param("auth")?;
    let engines = [
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
    ];
    let decoded = engines.iter().find_map(|e| {
        e.decode(raw.trim_end_matches('='))
            .ok()
            .or_else(|| e.decode(raw).ok())
    })?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':').unwrap_or((&text, ""));
    Some(AuthConfig {
        username: user.into(),
        password: pass.into(),
    })
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
    let mut selector = None::<SelectorConfig>;
    for (k, v) in &u.query {
        if k == "auth" || tls_key(k).is_some() || list_key(k) {
            continue;
        }
        if let Some(k) = k.strip_prefix("service.") {
            service_md.insert(k, v);
        } else if let Some(k) = k.strip_prefix("handler.") {
            handler_md.insert(k, v);
        } else if let Some(k) = k.strip_prefix("listener.") {
            listener_md.insert(k, v);
        } else if selector_key(k, v, &mut selector) {
        } else {
            handler_md.insert(k, v);
            listener_md.insert(k, v);
            service_md.insert(k, v);
        }
    }
    let selector = selector.map(fill_selector);

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
                    auth: auth_of(&u),
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

fn selector_key(k: &str, v: &str, sel: &mut Option<SelectorConfig>) -> bool {
    let s = sel.get_or_insert_with(SelectorConfig::default);
    match k {
        "strategy" => s.strategy = v.into(),
        "maxFails" | "max_fails" => s.max_fails = v.parse().unwrap_or(1),
        "failTimeout" | "fail_timeout" => s.fail_timeout = v.into(),
        _ => {
            if *s == SelectorConfig::default() {
                *sel = None;
            }
            return false;
        }
    }
    true
}

fn fill_selector(mut s: SelectorConfig) -> SelectorConfig {
    if s.strategy.is_empty() {
        s.strategy = "round".into();
    }
    if s.max_fails == 0 {
        s.max_fails = crate::selector::DEFAULT_MAX_FAILS;
    }
    if s.fail_timeout.is_empty() {
        s.fail_timeout = crate::selector::CLI_FAIL_TIMEOUT.into();
    }
    s
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
    let mut selector = None::<SelectorConfig>;
    for (k, v) in &u.query {
        if k == "auth" || tls_key(k).is_some() || k.eq_ignore_ascii_case("bypass") {
            continue;
        }
        if let Some(k) = k.strip_prefix("connector.") {
            connector_md.insert(k, v);
        } else if let Some(k) = k.strip_prefix("dialer.") {
            dialer_md.insert(k, v);
        } else if let Some(k) = k.strip_prefix("node.").or_else(|| k.strip_prefix("hop.")) {
            node_md.insert(k, v);
        } else if selector_key(k, v, &mut selector) {
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
    let hop = HopConfig {
        name: String::new(),
        selector: selector.map(fill_selector),
        nodes: addrs
            .into_iter()
            .enumerate()
            .map(|(i, addr)| NodeConfig {
                name: format!("node-{i}"),
                addr,
                connector: ConnectorConfig {
                    kind: connector.clone(),
                    auth: auth_of(&u),
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
