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
}

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

        let mut services = Vec::new();
        for (si, svc) in cfg.services.iter().enumerate() {
            let at = format!("services[{si}]");
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
                    issues.push(match e {
                        HandlerError::Option { error, .. } => {
                            metadata_issue(&format!("{at}.handler"), error)
                        }
                        e @ HandlerError::Unsupported(_) => Issue {
                            path: format!("{at}.handler.type"),
                            message: e.to_string(),
                        },
                        e => Issue {
                            path: format!("{at}.handler"),
                            message: e.to_string(),
                        },
                    });
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
            Ok(Plan { services })
        } else {
            Err(ConfigError { issues })
        }
    }
}
