//! gost's configuration model (YAML/JSON), and its command-line form.
//!
//! Field names follow gost's schema; unknown keys are ignored as gost ignores them.

mod cli;
mod load;
mod metadata;
mod validate;

pub use cli::{from_cli, parse_chain_node, parse_metrics, parse_service};
pub use load::{LoadError, load_source, merge};
pub use metadata::{MAX_DURATION, MAX_SIZE, Metadata, MetadataError, parse_duration};
pub use validate::{ConfigError, Issue, join_issues};

/// The error [`Config::resolve`] returns (the name it had before validation was added).
pub type ResolveError = ConfigError;

use serde::{Deserialize, Serialize};

use crate::access::{Admission, Bypass, Rules};

/// The whole configuration: what `-C` reads and `-O` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<ChainConfig>,
    /// Hops defined once and named by chains: a chain's hop that has no nodes of its own
    /// is the hop of this list with its name (see [`Config::link_hops`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<HopConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authers: Vec<AutherConfig>,
    /// Client address lists, referenced by `services[].admission(s)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admissions: Vec<AccessListConfig>,
    /// Destination lists, referenced by `bypass(es)` of services, hops and nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypasses: Vec<AccessListConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The Prometheus endpoint (`-metrics`, gost's `metrics:` section).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// Keys of loaded files that no setting reads, as `SOURCE: PATH`
    /// (`a.yaml: services[0].resolver`), warned about by `Plan::build`.
    #[serde(skip)]
    pub ignored: Vec<String>,
}

/// gost's `metrics` section: where Prometheus scrapes (see [`crate::metrics`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsConfig {
    #[serde(default)]
    pub addr: String,
    /// Default `/metrics`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
}

/// gost's `tls` block (global, `listener.tls`, `dialer.tls`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
    /// Client side: verify the server (default false, as in gost).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_name: String,
    /// Self-made certificate fields (global section).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub common_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub organization: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub validity: String,
    /// Where the self-made certificate is kept (this project's key; default `$HOME/.gost`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auto_cert_dir: String,
    /// More names (DNS names, IP addresses) for the self-made certificate (this project's
    /// key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub addr: String,
    /// Admission list names: which clients may use the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admissions: Vec<String>,
    /// Bypass list names: destinations the service refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypasses: Vec<String>,
    /// The admission lists named above, compiled by [`Config::resolve`].
    #[serde(skip)]
    pub admission_rules: Rules<Admission>,
    /// The bypass lists named above, compiled by [`Config::resolve`].
    #[serde(skip)]
    pub bypass_rules: Rules<Bypass>,
    #[serde(default)]
    pub handler: HandlerConfig,
    #[serde(default)]
    pub listener: ListenerConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarder: Option<ForwarderConfig>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

/// An `admissions[]` or `bypasses[]` entry: a named list of addresses (see [`crate::access`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessListConfig {
    #[serde(default)]
    pub name: String,
    /// Matching entries are the allowed ones (default: the refused ones).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whitelist: bool,
    /// gost's old spelling of `whitelist`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverse: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<String>,
    /// More entries from a file: one per line, `#` comments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
}

impl AccessListConfig {
    /// `whitelist`, or its old spelling `reverse`.
    pub fn is_whitelist(&self) -> bool {
        self.whitelist || self.reverse
    }
}

/// A named set of users (`authers[]`), referenced by `handler.auther`/`handler.authers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutherConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auths: Vec<AuthConfig>,
    /// A file of `user password` lines (`#` comments), as gost reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSource {
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerConfig {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auther: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authers: Vec<String>,
    /// Users of the named authers, filled in by [`Config::resolve`].
    #[serde(skip)]
    pub users: Vec<AuthConfig>,
    /// gost's `handler.retries`: how many more times a failed dial is tried (0 or less:
    /// none). The command line's `?retries=N` lands in `metadata`, read when this is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerConfig {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwarderConfig {
    #[serde(default)]
    pub nodes: Vec<ForwardNodeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SelectorConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardNodeConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub addr: String,
    /// Bypass list names: a node whose address they match is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypasses: Vec<String>,
    #[serde(skip)]
    pub bypass_rules: Rules<Bypass>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectorConfig {
    #[serde(default)]
    pub strategy: String,
    #[serde(default)]
    pub max_fails: u32,
    #[serde(default)]
    pub fail_timeout: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub hops: Vec<HopConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HopConfig {
    #[serde(default)]
    pub name: String,
    /// Bypass list names: matching targets skip this hop and the rest of the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypasses: Vec<String>,
    #[serde(skip)]
    pub bypass_rules: Rules<Bypass>,
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SelectorConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub addr: String,
    /// Bypass list names: this node is not used for matching targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypasses: Vec<String>,
    #[serde(skip)]
    pub bypass_rules: Rules<Bypass>,
    #[serde(default)]
    pub connector: ConnectorConfig,
    #[serde(default)]
    pub dialer: DialerConfig,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorConfig {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DialerConfig {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub level: String,
}

impl Config {
    /// gost's hop references: a hop in a chain with no nodes stands for the top-level
    /// `hops[]` entry of the same name, which takes its place (nodes, selector, bypass).
    /// A name with no such entry stays as it is (and is refused as a hop without nodes).
    /// [`merge`] calls this, so hops and chains may come from different sources.
    ///
    /// ```
    /// let mut c: pht_server::config::Config = serde_yaml::from_str(
    ///     "chains:\n- name: c\n  hops:\n  - name: h\nhops:\n- name: h\n  nodes:\n  - {name: n, addr: 'a:1'}\n",
    /// ).unwrap();
    /// c.link_hops();
    /// assert_eq!(c.chains[0].hops[0].nodes[0].addr, "a:1");
    /// ```
    pub fn link_hops(&mut self) {
        for hop in self.chains.iter_mut().flat_map(|c| c.hops.iter_mut()) {
            if !hop.nodes.is_empty() {
                continue;
            }
            if let Some(def) = self.hops.iter().find(|h| h.name == hop.name) {
                *hop = def.clone();
            }
        }
    }
}

/// gost's auth file: one `user password` per line, `#` starts a comment.
pub(crate) fn parse_users(text: &str) -> Vec<AuthConfig> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            AuthConfig {
                username: it.next().unwrap_or("").to_string(),
                password: it.next().unwrap_or("").to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authers_resolve_inline_and_file_users() {
        let path = std::env::temp_dir().join(format!("pht-auth-{}.txt", std::process::id()));
        std::fs::write(
            &path,
            "# users\nfile-user secret  # trailing comment\n\nbob  pw2\n",
        )
        .unwrap();
        let yaml = format!(
            "services:\n- name: s\n  addr: :1\n  handler: {{type: http, auther: a1}}\n  listener: {{type: tcp}}\n\
             authers:\n- name: a1\n  auths:\n  - {{username: u, password: p}}\n  file: {{path: {}}}\n",
            path.display()
        );
        let mut c: Config = serde_yaml::from_str(&yaml).unwrap();
        c.resolve().unwrap();
        let users: Vec<(&str, &str)> = c.services[0]
            .handler
            .users
            .iter()
            .map(|a| (a.username.as_str(), a.password.as_str()))
            .collect();
        assert_eq!(
            users,
            vec![("u", "p"), ("file-user", "secret"), ("bob", "pw2")]
        );
        c.services[0].handler.auther = Some("nope".into());
        assert_eq!(
            c.resolve().unwrap_err().to_string(),
            "services[0].handler.auther: auther \"nope\" is not defined"
        );
        let _ = std::fs::remove_file(path);
    }
}
