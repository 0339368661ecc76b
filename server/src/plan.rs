//! A configuration turned into its running parts before anything binds: each chain built
//! once (shared by the services that name it), each handler built with its options
//! parsed, each listener prepared with its options parsed and its certificate loaded.
//! Binding is all that is left, so every mistake in a configuration is reported at start,
//! with its key path, and nothing parses configuration text once traffic flows.
//!
//! ```no_run
//! # fn demo(mut cfg: pht_server::config::Config) -> Result<(), pht_server::config::ConfigError> {
//! let plan = pht_server::plan::Plan::build(&mut cfg)?;
//! for svc in &plan.services {
//!     println!("{} ready to bind {}", svc.name, svc.addr);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError, Issue, MetadataError};
use crate::handler::{self, Handler, HandlerError};
use crate::listener::{self, ListenError, Prepared};
use crate::router::Router;

/// Every service of a configuration, ready to bind.
pub struct Plan {
    pub services: Vec<ServicePlan>,
    /// Settings that will do nothing here (keys no setting reads, gost options this
    /// server does not have): logged at start, each with its key path.
    pub warnings: Vec<Issue>,
}

/// gost options (service, handler or listener metadata) that this server does not have
/// and does not read, with what gost does with them; lower case, as gost matches keys.
const NOT_SUPPORTED: &[(&str, &str)] = &[
    (
        "interface",
        "gost binds outbound connections to this interface or address",
    ),
    ("so_mark", "gost marks outbound sockets (SO_MARK)"),
    ("somark", "gost marks outbound sockets (SO_MARK)"),
    ("netns", "gost runs the service in this network namespace"),
    ("netns.out", "gost dials from this network namespace"),
    ("resolver", "gost resolves names with this resolver"),
    ("hosts", "gost maps names with this hosts table"),
    ("limiter", "gost limits traffic with this limiter"),
    ("limiter.in", "gost limits incoming traffic"),
    ("limiter.out", "gost limits outgoing traffic"),
    (
        "limiter.conn.in",
        "gost limits each connection's incoming traffic",
    ),
    (
        "limiter.conn.out",
        "gost limits each connection's outgoing traffic",
    ),
    (
        "climiter",
        "gost limits concurrent connections with this limiter",
    ),
    ("rlimiter", "gost limits the request rate with this limiter"),
    (
        "sniffing",
        "gost sniffs the protocol of forwarded connections",
    ),
    ("mptcp", "gost uses multipath TCP"),
    ("compression", "gost compresses HTTP answers"),
    ("udpbuffersize", "gost sizes SOCKS5 UDP relay buffers"),
    (
        "publicaddr",
        "gost announces this address in SOCKS5 UDP replies",
    ),
    ("tor", "gost's Tor mode"),
    ("comp", "gost's SOCKS5 compatibility mode"),
    ("observer", "gost reports statistics to this observer"),
    ("recorder", "gost records traffic with this recorder"),
];

/// gost's PROXY protocol: connections start with a PROXY header this server would take
/// for a bad request, so a configuration that asks for it cannot run as meant.
const PROXY_PROTOCOL: &str = "proxyprotocol";

/// One service, ready to bind.
pub struct ServicePlan {
    pub name: String,
    /// The address to bind (gost's `:port` or `host:port`).
    pub addr: String,
    pub handler_kind: String,
    pub listener_kind: String,
    pub handler: Arc<dyn Handler>,
    pub listener: Box<dyn Prepared>,
    /// `drainTimeout` (service metadata): how long open connections and tunnels may run
    /// on after the first SIGTERM; `0` (the default, as in gost) ends them at once.
    pub drain_timeout: Duration,
}

fn metadata_issue(at: &str, e: MetadataError) -> Issue {
    Issue {
        path: format!("{at}.metadata.{}", e.key),
        message: format!("{} is not {}", e.value, e.expected),
    }
}

impl Plan {
    /// Resolves `cfg`'s references ([`Config::resolve`]), then builds every chain,
    /// handler and listener. Every problem found comes back, each with its key path.
    pub fn build(cfg: &mut Config) -> Result<Plan, ConfigError> {
        cfg.resolve()?;
        let mut issues: Vec<Issue> = Vec::new();

        let mut routers: HashMap<&str, Router> = HashMap::new();
        for (ci, chain) in cfg.chains.iter().enumerate() {
            match Router::build(chain) {
                Ok(r) => {
                    routers.insert(&chain.name, r);
                }
                Err(list) => issues.extend(list.into_iter().map(|i| Issue {
                    path: format!("chains[{ci}].{}", i.path),
                    message: i.message,
                })),
            }
        }

        let mut warnings: Vec<Issue> = cfg
            .ignored
            .iter()
            .map(|path| Issue {
                path: path.clone(),
                message: "not a setting pht-server reads; ignored".into(),
            })
            .collect();

        let mut services = Vec::new();
        for (si, svc) in cfg.services.iter().enumerate() {
            let at = format!("services[{si}]");
            unsupported_keys(&at, svc, &mut issues, &mut warnings);
            let drain_timeout = match svc.metadata.get_duration("drainTimeout") {
                Ok(d) => d.unwrap_or(Duration::ZERO),
                Err(e) => {
                    issues.push(metadata_issue(&at, e));
                    Duration::ZERO
                }
            };
            let router = match svc.handler.chain.as_deref().filter(|c| !c.is_empty()) {
                None => Some(Router::direct()),
                // A chain that did not build is reported with the chains.
                Some(name) => routers.get(name).cloned(),
            };
            let handler = router.and_then(|router| match handler::build(svc, router) {
                Ok(h) => Some(h),
                Err(e) => {
                    match e {
                        HandlerError::Option { error, .. } => {
                            issues.push(metadata_issue(&format!("{at}.handler"), error))
                        }
                        HandlerError::At(list) => issues.extend(list.into_iter().map(|i| Issue {
                            path: format!("{at}.{}", i.path),
                            message: i.message,
                        })),
                        e @ HandlerError::Unsupported(_) => issues.push(Issue {
                            path: format!("{at}.handler.type"),
                            message: e.to_string(),
                        }),
                        e => issues.push(Issue {
                            path: format!("{at}.handler"),
                            message: e.to_string(),
                        }),
                    }
                    None
                }
            });
            let spec = listener::Spec {
                kind: &svc.listener.kind,
                cfg: &svc.listener,
                global_tls: cfg.tls.as_ref(),
                addr: &svc.addr,
                service: &svc.name,
            };
            let prepared = match listener::prepare(&spec) {
                Ok(p) => Some(p),
                Err(e) => {
                    let at = format!("{at}.listener");
                    issues.push(match e {
                        ListenError::Option(e) => metadata_issue(&at, e),
                        e @ ListenError::Unsupported(_) => Issue {
                            path: format!("{at}.type"),
                            message: e.to_string(),
                        },
                        e => Issue {
                            path: at,
                            message: e.to_string(),
                        },
                    });
                    None
                }
            };
            if let (Some(handler), Some(listener)) = (handler, prepared) {
                services.push(ServicePlan {
                    name: svc.name.clone(),
                    addr: svc.addr.clone(),
                    handler_kind: svc.handler.kind.clone(),
                    listener_kind: svc.listener.kind.clone(),
                    handler,
                    listener,
                    drain_timeout,
                });
            }
        }
        if issues.is_empty() {
            Ok(Plan { services, warnings })
        } else {
            Err(ConfigError { issues })
        }
    }
}

/// gost options this server does not have, in a service's three metadata maps: a warning
/// each (once per service, where the command line put the key in all three), and an error
/// for a PROXY protocol that is switched on.
fn unsupported_keys(
    at: &str,
    svc: &crate::config::ServiceConfig,
    issues: &mut Vec<Issue>,
    warnings: &mut Vec<Issue>,
) {
    let mut seen: Vec<String> = Vec::new();
    for (part, md) in [
        ("", &svc.metadata),
        (".handler", &svc.handler.metadata),
        (".listener", &svc.listener.metadata),
    ] {
        for key in md.0.keys() {
            let lower = key.to_ascii_lowercase();
            if seen.contains(&lower) {
                continue;
            }
            let path = format!("{at}{part}.metadata.{key}");
            if lower == PROXY_PROTOCOL {
                let on = md
                    .get_str(key)
                    .is_some_and(|v| !matches!(v.trim(), "" | "0" | "false"));
                if on {
                    seen.push(lower);
                    issues.push(Issue {
                        path,
                        message: "the PROXY protocol is not supported: every connection that \
                                  starts with a PROXY header would be refused as a bad request"
                            .into(),
                    });
                }
                continue;
            }
            if let Some((_, what)) = NOT_SUPPORTED.iter().find(|(k, _)| *k == lower) {
                seen.push(lower);
                warnings.push(Issue {
                    path,
                    message: format!("not supported by pht-server ({what}); ignored"),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Result<Plan, ConfigError> {
        let mut c: Config = serde_yaml::from_str(yaml).unwrap();
        Plan::build(&mut c)
    }

    #[test]
    fn gost_options_this_server_lacks_are_named() {
        let p = plan(
            "services:\n- name: s\n  addr: 127.0.0.1:0\n  metadata: {interface: eth1}\n  handler: {type: http, metadata: {Interface: eth1, sniffing: true}}\n",
        )
        .unwrap();
        let got: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            got,
            [
                "services[0].metadata.interface: not supported by pht-server (gost binds outbound connections to this interface or address); ignored",
                "services[0].handler.metadata.sniffing: not supported by pht-server (gost sniffs the protocol of forwarded connections); ignored",
            ]
        );
        let e = plan(
            "services:\n- name: s\n  addr: 127.0.0.1:0\n  listener: {type: pht, metadata: {proxyProtocol: 2}}\n",
        )
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            "services[0].listener.metadata.proxyProtocol: the PROXY protocol is not supported: \
             every connection that starts with a PROXY header would be refused as a bad request"
        );
        let off = "services:\n- name: s\n  addr: 127.0.0.1:0\n  metadata: {proxyProtocol: 0}\n";
        assert!(plan(off).unwrap().warnings.is_empty());
    }
}
