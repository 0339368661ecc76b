//! gost's configuration model (YAML/JSON), and its command-line form.
//!
//! Field names follow gost's schema; unknown keys are ignored as gost ignores them.

mod cli;
mod load;
mod metadata;

pub use cli::{from_cli, parse_chain_node, parse_service};
pub use load::{LoadError, load_source, merge};
pub use metadata::{Metadata, MetadataError, parse_duration};

use serde::{Deserialize, Serialize};

/// The whole configuration: what `-C` reads and `-O` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<ChainConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
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
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub addr: String,
    #[serde(default)]
    pub handler: HandlerConfig,
    #[serde(default)]
    pub listener: ListenerConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarder: Option<ForwarderConfig>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
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
