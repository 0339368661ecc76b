//! Checking a whole configuration before anything binds, and resolving the references
//! between its sections (authers, admissions, bypasses) into what handlers and routers use.
//!
//! Every problem is reported with the key path it sits at, e.g.
//! `services[0].handler.chain: chain "x" is not defined`.

use std::collections::HashMap;
use std::fmt;

use super::metadata::bounded_duration as bounded_duration_text;
use super::{AccessListConfig, AuthConfig, Config, SelectorConfig, parse_users};
use crate::access::{AccessList, Admission, Bypass, ListKind, Rules, file_entries};

/// The longest `tls.validity` of a self-made certificate.
const MAX_VALIDITY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
/// Selector strategies gost knows; the ones not implemented here pick round robin.
const STRATEGIES: &[&str] = &[
    "round",
    "rr",
    "random",
    "rand",
    "fifo",
    "ha",
    "hash",
    "parallel",
    "lowestlatency",
    "lowest",
    "ll",
];

/// One problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

/// A configuration that cannot run: every problem found, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub issues: Vec<Issue>,
}

/// `path: message`, as every report of an issue reads.
impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Issues on one line, `; ` between them (inside a larger error message).
pub fn join_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(Issue::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The problems found so far. A reference to a definition that is itself broken adds
/// nothing: the problem is reported once, at the definition.
#[derive(Default)]
struct Issues(Vec<Issue>);

impl Issues {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// `name` (singular key) then `names` (list key), with their key paths; empty names are
/// ignored, as gost ignores them.
fn references<'a>(
    at: &str,
    one_key: &str,
    one: &'a Option<String>,
    many_key: &str,
    many: &'a [String],
) -> Vec<(String, &'a str)> {
    let mut out = Vec::new();
    if let Some(n) = one.as_deref().filter(|n| !n.is_empty()) {
        out.push((format!("{at}.{one_key}"), n));
    }
    for (i, n) in many.iter().enumerate() {
        if !n.is_empty() {
            out.push((format!("{at}.{many_key}[{i}]"), n.as_str()));
        }
    }
    out
}

/// Compiled top-level lists by name.
struct Lists {
    kind: &'static str,
    by_name: HashMap<String, AccessList>,
}

impl Lists {
    fn compile(
        section: &str,
        kind: ListKind,
        cfgs: &[AccessListConfig],
        issues: &mut Issues,
    ) -> Lists {
        let (what, article) = match kind {
            ListKind::Admission => ("admission", "an"),
            ListKind::Bypass => ("bypass", "a"),
        };
        let mut by_name = HashMap::new();
        let mut first_at: HashMap<&str, usize> = HashMap::new();
        for (i, c) in cfgs.iter().enumerate() {
            let at = format!("{section}[{i}]");
            if c.name.is_empty() {
                issues.add(
                    format!("{at}.name"),
                    format!("{article} {what} needs a name"),
                );
                continue;
            }
            if let Some(&j) = first_at.get(c.name.as_str()) {
                issues.add(
                    format!("{at}.name"),
                    format!("{what} {:?} is defined twice (also {section}[{j}])", c.name),
                );
                continue;
            }
            first_at.insert(&c.name, i);
            // The inline entries, then the file's.
            let mut entries = c.matchers.clone();
            let file = c
                .file
                .as_ref()
                .map(|f| f.path.as_str())
                .filter(|p| !p.is_empty());
            if let Some(path) = file {
                match std::fs::read_to_string(path) {
                    Ok(text) => entries.extend(file_entries(&text)),
                    Err(e) => {
                        issues.add(format!("{at}.file.path"), format!("read {path}: {e}"));
                        continue;
                    }
                }
            }
            match AccessList::compile(&c.name, c.is_whitelist(), &entries, kind) {
                Ok(list) => {
                    by_name.insert(c.name.clone(), list);
                }
                Err(e) if e.index < c.matchers.len() => {
                    issues.add(format!("{at}.matchers[{}]", e.index), e.message)
                }
                Err(e) => issues.add(
                    format!("{at}.file.path"),
                    format!("{}: {}", file.unwrap_or_default(), e.message),
                ),
            }
        }
        Lists {
            kind: what,
            by_name,
        }
    }

    /// The lists the references name; unknown names are reported.
    fn pick(
        &self,
        refs: &[(String, &str)],
        defined: &[AccessListConfig],
        issues: &mut Issues,
    ) -> Vec<AccessList> {
        let mut out = Vec::new();
        for (path, name) in refs {
            match self.by_name.get(*name) {
                Some(l) => out.push(l.clone()),
                // Defined but broken: its own entry already says why.
                None if defined.iter().any(|d| d.name == *name) => {}
                None => issues.add(
                    path.clone(),
                    format!("{} {name:?} is not defined", self.kind),
                ),
            }
        }
        out
    }

    fn bypass(
        &self,
        refs: &[(String, &str)],
        defined: &[AccessListConfig],
        issues: &mut Issues,
    ) -> Rules<Bypass> {
        let lists = self.pick(refs, defined, issues);
        if lists.is_empty() {
            Rules::none()
        } else {
            Rules::new(Bypass::new(lists))
        }
    }
}

fn check_selector(at: &str, sel: Option<&SelectorConfig>, issues: &mut Issues) {
    let Some(sel) = sel else { return };
    if !sel.strategy.is_empty() && !STRATEGIES.contains(&sel.strategy.to_ascii_lowercase().as_str())
    {
        issues.add(
            format!("{at}.selector.strategy"),
            format!(
                "strategy {:?} is not one of {}",
                sel.strategy,
                STRATEGIES.join(", ")
            ),
        );
    }
    if !sel.fail_timeout.is_empty() {
        if let Err(expected) = bounded_duration_text(&sel.fail_timeout) {
            issues.add(
                format!("{at}.selector.failTimeout"),
                format!("{:?} is not {expected}", sel.fail_timeout),
            );
        }
    }
}

impl Config {
    /// Checks the whole configuration and resolves its references: authers into their
    /// handlers' users, admission and bypass lists into the services, hops and nodes that
    /// name them. Nothing is bound or dialled; every problem found is returned, each with
    /// its key path. Calling it again gives the same result.
    pub fn resolve(&mut self) -> Result<(), ConfigError> {
        let mut issues = Issues::default();

        if let Some(m) = &self.metrics
            && m.addr.trim().is_empty()
        {
            issues.add("metrics.addr", "an address is required (e.g. :9000)");
        }
        if let Some(t) = &self.tls {
            // A certificate may live longer than any timeout: up to a hundred years.
            let ok = |d: std::time::Duration| d <= MAX_VALIDITY;
            if !t.validity.is_empty() && !super::parse_duration(&t.validity).is_some_and(ok) {
                issues.add(
                    "tls.validity",
                    format!(
                        "{:?} is not a duration up to 876000h (100 years; e.g. 8760h)",
                        t.validity
                    ),
                );
            }
        }

        // Authers: name → users.
        let mut users: HashMap<&str, Vec<AuthConfig>> = HashMap::new();
        for (i, a) in self.authers.iter().enumerate() {
            let at = format!("authers[{i}]");
            if a.name.is_empty() {
                issues.add(format!("{at}.name"), "an auther needs a name");
                continue;
            }
            if users.contains_key(a.name.as_str()) {
                issues.add(
                    format!("{at}.name"),
                    format!("auther {:?} is defined twice", a.name),
                );
                continue;
            }
            let mut list = a.auths.clone();
            if let Some(f) = a.file.as_ref().filter(|f| !f.path.is_empty()) {
                match std::fs::read_to_string(&f.path) {
                    Ok(text) => list.extend(parse_users(&text)),
                    Err(e) => {
                        issues.add(format!("{at}.file.path"), format!("read {}: {e}", f.path));
                        continue;
                    }
                }
            }
            users.insert(&a.name, list);
        }

        let admissions = Lists::compile(
            "admissions",
            ListKind::Admission,
            &self.admissions,
            &mut issues,
        );
        let bypasses = Lists::compile("bypasses", ListKind::Bypass, &self.bypasses, &mut issues);

        // Chains.
        let mut chain_at: HashMap<String, usize> = HashMap::new();
        for (ci, chain) in self.chains.iter_mut().enumerate() {
            let at = format!("chains[{ci}]");
            if chain.name.is_empty() {
                issues.add(format!("{at}.name"), "a chain needs a name");
            } else if let Some(j) = chain_at.get(&chain.name) {
                issues.add(
                    format!("{at}.name"),
                    format!("chain {:?} is defined twice (also chains[{j}])", chain.name),
                );
            } else {
                chain_at.insert(chain.name.clone(), ci);
            }
            // Hops, nodes, dialers and connectors are checked where they are built
            // (`Router::build`, from `Plan::build`); here only their references.
            for (hi, hop) in chain.hops.iter_mut().enumerate() {
                let at = format!("{at}.hops[{hi}]");
                check_selector(&at, hop.selector.as_ref(), &mut issues);
                let refs = references(&at, "bypass", &hop.bypass, "bypasses", &hop.bypasses);
                hop.bypass_rules = bypasses.bypass(&refs, &self.bypasses, &mut issues);
                for (ni, node) in hop.nodes.iter_mut().enumerate() {
                    let at = format!("{at}.nodes[{ni}]");
                    let refs = references(&at, "bypass", &node.bypass, "bypasses", &node.bypasses);
                    node.bypass_rules = bypasses.bypass(&refs, &self.bypasses, &mut issues);
                }
            }
        }

        // Services.
        for (si, svc) in self.services.iter_mut().enumerate() {
            let at = format!("services[{si}]");
            if svc.addr.trim().is_empty() {
                issues.add(
                    format!("{at}.addr"),
                    "a service needs an address (host:port, or :port for every interface)",
                );
            }
            // Types, handler and listener options and `drainTimeout` are checked where
            // they are built (`Plan::build`); here only the references.
            if let Some(chain) = svc.handler.chain.as_deref().filter(|c| !c.is_empty()) {
                if !self.chains.iter().any(|c| c.name == chain) {
                    issues.add(
                        format!("{at}.handler.chain"),
                        format!("chain {chain:?} is not defined"),
                    );
                }
            }
            svc.handler.users.clear();
            for (path, name) in references(
                &format!("{at}.handler"),
                "auther",
                &svc.handler.auther,
                "authers",
                &svc.handler.authers,
            ) {
                match users.get(name) {
                    Some(u) => svc.handler.users.extend(u.iter().cloned()),
                    None if self.authers.iter().any(|a| a.name == name) => {}
                    None => issues.add(path, format!("auther {name:?} is not defined")),
                }
            }
            let refs = references(
                &at,
                "admission",
                &svc.admission,
                "admissions",
                &svc.admissions,
            );
            let lists = admissions.pick(&refs, &self.admissions, &mut issues);
            svc.admission_rules = if lists.is_empty() {
                Rules::none()
            } else {
                Rules::new(Admission::new(lists))
            };
            let refs = references(&at, "bypass", &svc.bypass, "bypasses", &svc.bypasses);
            svc.bypass_rules = bypasses.bypass(&refs, &self.bypasses, &mut issues);
            if let Some(f) = svc.forwarder.as_mut() {
                let fat = format!("{at}.forwarder");
                check_selector(&fat, f.selector.as_ref(), &mut issues);
                for (ni, node) in f.nodes.iter_mut().enumerate() {
                    let nat = format!("{fat}.nodes[{ni}]");
                    let refs = references(&nat, "bypass", &node.bypass, "bypasses", &node.bypasses);
                    node.bypass_rules = bypasses.bypass(&refs, &self.bypasses, &mut issues);
                }
            }
        }

        if issues.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { issues: issues.0 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a user sees: the references resolved, then everything built.
    fn errors(yaml: &str) -> String {
        let mut c: Config = serde_yaml::from_str(yaml).unwrap();
        match crate::plan::Plan::build(&mut c) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    const SVC: &str = "services:\n- name: s\n  addr: 127.0.0.1:0\n";

    #[test]
    fn dangling_references_name_their_key() {
        assert_eq!(
            errors(&format!("{SVC}  handler: {{type: http, chain: x}}\n")),
            "services[0].handler.chain: chain \"x\" is not defined"
        );
        assert_eq!(
            errors(&format!(
                "{SVC}  admission: a\n  bypasses: [b0, b1]\nbypasses:\n- name: b0\n"
            )),
            "services[0].admission: admission \"a\" is not defined\n\
             services[0].bypasses[1]: bypass \"b1\" is not defined"
        );
        assert_eq!(
            errors(
                "chains:\n- name: c\n  hops:\n  - name: h\n    bypass: nope\n    nodes:\n    - name: n\n      addr: 1.2.3.4:1\n      bypasses: [nada]\n"
            ),
            "chains[0].hops[0].bypass: bypass \"nope\" is not defined\n\
             chains[0].hops[0].nodes[0].bypasses[0]: bypass \"nada\" is not defined"
        );
    }

    #[test]
    fn types_hops_and_lists() {
        assert_eq!(
            errors(&format!(
                "{SVC}  handler: {{type: ss}}\n  listener: {{type: ws}}\n"
            )),
            format!(
                "services[0].handler.type: handler type \"ss\" is not supported (supported: {})\n\
                 services[0].listener.type: listener type \"ws\" is not supported (supported: tcp, tls, pht, phts, h3)",
                crate::handler::supported()
            )
        );
        assert_eq!(
            errors("chains:\n- name: c\n  hops: []\n"),
            "chains[0].hops: chain \"c\" has no hops (a chain needs at least one hop with a node)"
        );
        assert_eq!(
            errors(
                "chains:\n- name: c\n  hops:\n  - name: h\n    nodes:\n    - {name: n, addr: 'a:1', connector: {type: socks4}, dialer: {type: ws}}\n"
            ),
            "chains[0].hops[0].nodes[0].connector.type: connector type \"socks4\" is not supported (supported: http, socks5, socks, relay, forward, tcp)\n\
             chains[0].hops[0].nodes[0].dialer.type: dialer type \"ws\" is not supported (supported: tcp, tls, pht, phts, h3, http3)"
        );
        assert_eq!(
            errors("bypasses:\n- name: b\n  matchers: [10.0.0.0/8, 'bad host']\n"),
            "bypasses[0].matchers[1]: \"bad host\" is not an IP address, CIDR, IP range (a-b), \
             domain (example.com, .example.com, *.example.com) or one of those with :PORT or :LOW-HIGH"
        );
        assert_eq!(
            errors("admissions:\n- name: a\n- name: a\n"),
            "admissions[1].name: admission \"a\" is defined twice (also admissions[0])"
        );
    }

    #[test]
    fn list_files_add_entries_and_name_bad_ones() {
        let path = std::env::temp_dir().join(format!("pht-list-{}.txt", std::process::id()));
        std::fs::write(&path, "# clients\n10.0.0.0/8\n\n192.0.2.7  # one host\n").unwrap();
        let yaml = format!(
            "{SVC}  admission: a\nadmissions:\n- name: a\n  whitelist: true\n  matchers: [127.0.0.1]\n  file: {{path: {}}}\n",
            path.display()
        );
        let mut c: Config = serde_yaml::from_str(&yaml).unwrap();
        c.resolve().unwrap();
        let a = c.services[0].admission_rules.get().unwrap().clone();
        for (ip, ok) in [
            ("127.0.0.1", true),
            ("10.1.1.1", true),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
        ] {
            assert_eq!(a.admits(ip.parse().unwrap()), ok, "{ip}");
        }
        std::fs::write(&path, "10.0.0.0/8\nexample.com\n").unwrap();
        assert_eq!(
            errors(&yaml),
            format!(
                "admissions[0].file.path: {}: \"example.com\" is not an IP address, CIDR or IP range (a-b)",
                path.display()
            )
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn bounds_name_the_option() {
        assert_eq!(
            errors(&format!(
                "{SVC}  listener:\n    type: pht\n    metadata: {{heartbeat: 99999999999999999999h}}\n"
            )),
            "services[0].listener.metadata.heartbeat: \"99999999999999999999h\" is not a duration up to 8760h (e.g. 10s, 1m30s, 500ms)"
        );
        assert!(
            errors(&format!(
                "{SVC}  listener:\n    type: pht\n    metadata: {{backlog: 18446744073709551615}}\n"
            ))
            .starts_with("services[0].listener.metadata.backlog: \"18446744073709551615\" is not a number or size up to 1GiB")
        );
        assert_eq!(
            errors(&format!(
                "{SVC}  handler:\n    type: http\n    metadata: {{readTimeout: 9000h}}\n"
            )),
            "services[0].handler.metadata.readTimeout: \"9000h\" is not a duration up to 8760h (e.g. 10s, 1m30s, 500ms)"
        );
        assert_eq!(
            errors("tls: {validity: forever}\n"),
            "tls.validity: \"forever\" is not a duration up to 876000h (100 years; e.g. 8760h)"
        );
        let mut c: Config = serde_yaml::from_str("tls: {validity: 87600h}\n").unwrap();
        c.resolve().unwrap();
    }

    #[test]
    fn resolved_rules_reach_services_hops_and_nodes() {
        let yaml = "services:\n- name: s\n  addr: 127.0.0.1:0\n  admission: a\n  bypass: b\n  handler: {type: http, chain: c}\n\
                    admissions:\n- {name: a, whitelist: true, matchers: [127.0.0.1]}\n\
                    bypasses:\n- {name: b, matchers: [.example.com]}\n- {name: w, reverse: true, matchers: ['10.0.0.1:80']}\n\
                    chains:\n- name: c\n  hops:\n  - name: h\n    bypass: w\n    nodes:\n    - {name: n, addr: '1.2.3.4:1', bypass: b}\n";
        let mut c: Config = serde_yaml::from_str(yaml).unwrap();
        c.resolve().unwrap();
        let s = &c.services[0];
        assert!(
            s.admission_rules
                .get()
                .unwrap()
                .admits("127.0.0.1".parse().unwrap())
        );
        assert!(
            s.bypass_rules
                .get()
                .unwrap()
                .contains("www.example.com:443")
        );
        let hop = &c.chains[0].hops[0];
        assert!(!hop.bypass_rules.get().unwrap().contains("10.0.0.1:80"));
        assert!(hop.bypass_rules.get().unwrap().contains("10.0.0.1:81"));
        assert!(
            hop.nodes[0]
                .bypass_rules
                .get()
                .unwrap()
                .contains("example.com:80")
        );
        // Idempotent.
        c.resolve().unwrap();
    }
}
