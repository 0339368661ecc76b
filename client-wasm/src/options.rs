//! The `options` object of `connect()`, read into the node description pht-core works with.

use js_sys::{Object, Reflect};
use pht_core::{Connector, Credentials, NodeUrl, TunnelConfig};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const CONNECT_OPTIONS_TS: &str = r#"
/** Options of {@link connect}; all are optional. */
export interface ConnectOptions {
  /**
   * What is spoken through the tunnel to the server's handler: `forward` (nothing: the
   * server's fixed target), `http` (CONNECT), `socks5`, `relay` (gost relay). Default: the
   * connector named by the server URL (`socks5+pht://...`), else `forward`.
   */
  connector?: "forward" | "http" | "socks5" | "relay";
  /** `host:port` the server connects the tunnel to; required unless `forward`. */
  target?: string;
  /** Credentials for the connector handshake (override the URL's `user:pass@`). */
  username?: string;
  password?: string;
  /** Endpoint paths; must match the server (defaults `/authorize`, `/push`, `/pull`). */
  authorizePath?: string;
  pushPath?: string;
  pullPath?: string;
  /** Bytes carried by one push POST at most (default 786 429: 1 MiB of base64). */
  maxPushSize?: number;
  /** Smallest push the client shrinks to when a proxy answers 413 (default 16 KiB). */
  minPushSize?: number;
  /**
   * Milliseconds one HTTP exchange may take: the authorize answer, a push's answer, a
   * pull's response headers (default 30000). Past it the tunnel fails with
   * `... request timed out after ... (requestTimeout)`.
   */
  requestTimeout?: number;
  /**
   * Milliseconds of silence on the pull (no data, no heartbeat) after which the tunnel is
   * dead (default 30000; servers send a heartbeat every 10 s unless told otherwise).
   */
  heartbeatTimeout?: number;
  /**
   * PHT version: `"auto"` (default) asks the server for PHT/2 and falls back to gost's
   * PHT/1; `1` speaks PHT/1 only; `2` makes a PHT/1-only server an error. PHT/2 tunnels
   * survive cut HTTP connections and can be half-closed. See {@link Tunnel.version}.
   */
  v?: "auto" | "1" | "2" | 1 | 2;
  /**
   * PHT/2: milliseconds pulls or pushes may keep failing in a row (each is resent) before
   * the tunnel fails (default 30000).
   */
  resumeTimeout?: number;
  /**
   * PHT/2: milliseconds after which the pull is replaced by a new one, opened before the
   * old one ends (default 50000: below the 60 s and 100 s response limits of common
   * proxies and CDNs).
   */
  pullMaxAge?: number;
  /** PHT/2: push POSTs in flight at most (default 8, at most 64). */
  pushWindow?: number;
  /**
   * PHT/2: `"auto"` (default) streams the pull and switches to long polls while a proxy
   * holds responses back; `true` always long-polls; `false` always streams.
   */
  poll?: "auto" | boolean;
  /**
   * `authorize` (default): ask the server for a token, works with every gost server;
   * `mint`: make one locally and save a round trip (gost >= 3.3 and pht-server).
   */
  token?: "authorize" | "mint";
  /**
   * Extra request headers on every PHT request. Any such header makes a browser send a
   * CORS preflight before each request.
   */
  headers?: Record<string, string>;
  /**
   * Node only: an undici `Dispatcher` for this tunnel's requests, passed to every `fetch`
   * as its `dispatcher` option; e.g. `new ProxyAgent({ uri: 'http://proxy:3128',
   * proxyTunnel: false })` from the `undici` package to go through an HTTP proxy.
   * Browsers ignore it (they use the system's proxy settings).
   */
  dispatcher?: object;
}
"#;

const KNOWN: &[&str] = &[
    "connector",
    "target",
    "username",
    "password",
    "authorizePath",
    "pushPath",
    "pullPath",
    "maxPushSize",
    "minPushSize",
    "requestTimeout",
    "heartbeatTimeout",
    "v",
    "resumeTimeout",
    "pullMaxAge",
    "pushWindow",
    "poll",
    "token",
    "headers",
    "dispatcher",
];

/// Everything `connect()` needs, checked.
pub(crate) struct Plan {
    pub config: TunnelConfig,
    pub connector: Connector,
    pub target: String,
    pub auth: Option<Credentials>,
    /// `options.dispatcher` (Node: an undici dispatcher for every request).
    pub dispatcher: Option<JsValue>,
}

fn get(obj: &JsValue, key: &str) -> Result<Option<JsValue>, String> {
    let v = Reflect::get(obj, &JsValue::from_str(key))
        .map_err(|_| format!("options.{key} cannot be read"))?;
    Ok((!v.is_undefined() && !v.is_null()).then_some(v))
}

fn get_string(obj: &JsValue, key: &str) -> Result<Option<String>, String> {
    match get(obj, key)? {
        None => Ok(None),
        Some(v) => v
            .as_string()
            .map(Some)
            .ok_or_else(|| format!("options.{key} must be a string")),
    }
}

/// Reads `serverUrl` and `options` (undefined, null or an object).
pub(crate) fn plan(server_url: &str, options: &JsValue) -> Result<Plan, String> {
    let mut node = NodeUrl::parse_server(server_url).map_err(|e| e.to_string())?;
    let has_options = !options.is_undefined() && !options.is_null();
    if has_options && !options.is_object() {
        return Err("options must be an object".into());
    }
    let empty = JsValue::from(Object::new());
    let o = if has_options { options } else { &empty };
    if has_options {
        for key in Object::keys(o.unchecked_ref::<Object>()).iter() {
            let key = key.as_string().unwrap_or_default();
            if !KNOWN.contains(&key.as_str()) {
                return Err(format!(
                    "unknown option {key:?} (known: {})",
                    KNOWN.join(", ")
                ));
            }
        }
    }

    for key in ["authorizePath", "pushPath", "pullPath", "token"] {
        if let Some(v) = get_string(o, key)? {
            node.set_param(key, v).map_err(|e| e.to_string())?;
        }
    }
    for (key, unit) in [
        ("maxPushSize", " of bytes"),
        ("minPushSize", " of bytes"),
        ("pushWindow", ""),
    ] {
        if let Some(v) = get(o, key)? {
            let n = v
                .as_f64()
                .filter(|n| n.fract() == 0.0 && *n >= 1.0 && *n <= 9_007_199_254_740_991.0)
                .ok_or_else(|| format!("options.{key} must be a positive whole number{unit}"))?;
            // Whole numbers only (checked above): printed as integers, which keeps the
            // float formatter (14 KB of wasm) out of the package.
            node.set_param(key, (n as u64).to_string())
                .map_err(|e| e.to_string())?;
        }
    }
    if let Some(v) = get(o, "v")? {
        let version = match (v.as_string().as_deref(), v.as_f64()) {
            (Some(s @ ("auto" | "1" | "2")), _) => s.to_string(),
            (_, Some(n)) if n == 1.0 || n == 2.0 => (n as u8).to_string(),
            _ => return Err("options.v must be \"auto\", 1 or 2".into()),
        };
        node.set_param("v", version).map_err(|e| e.to_string())?;
    }
    if let Some(v) = get(o, "poll")? {
        let poll = match (v.as_string().as_deref(), v.as_bool()) {
            (Some("auto"), _) => "auto",
            (_, Some(true)) => "true",
            (_, Some(false)) => "false",
            _ => return Err("options.poll must be \"auto\", true or false".into()),
        };
        node.set_param("poll", poll).map_err(|e| e.to_string())?;
    }
    for key in [
        "requestTimeout",
        "heartbeatTimeout",
        "resumeTimeout",
        "pullMaxAge",
    ] {
        if let Some(v) = get(o, key)? {
            let ms = v
                .as_f64()
                .filter(|n| n.is_finite() && *n > 0.0 && *n <= 1e15)
                .ok_or_else(|| {
                    format!("options.{key} must be a positive number of milliseconds")
                })?;
            // In whole microseconds: no float formatting in the package.
            let us = (ms * 1000.0).round().max(1.0) as u64;
            node.set_param(key, format!("{us}us"))
                .map_err(|e| e.to_string())?;
        }
    }
    let dispatcher = get(o, "dispatcher")?;
    if dispatcher.as_ref().is_some_and(|d| !d.is_object()) {
        return Err("options.dispatcher must be an undici Dispatcher object".into());
    }
    if let Some(h) = get(o, "headers")? {
        if !h.is_object() {
            return Err("options.headers must be an object of strings".into());
        }
        for entry in Object::entries(h.unchecked_ref()).iter() {
            let pair: js_sys::Array = entry.unchecked_into();
            let (name, value) = (pair.get(0).as_string(), pair.get(1).as_string());
            let (Some(name), Some(value)) = (name, value) else {
                return Err("options.headers must be an object of strings".into());
            };
            node.set_param(&format!("header.{name}"), value)
                .map_err(|e| e.to_string())?;
        }
    }
    let config = node.try_tunnel_config().map_err(|e| e.to_string())?;

    let connector = get_string(o, "connector")?
        .unwrap_or_else(|| node.connector.clone())
        .parse::<Connector>()
        .map_err(|e| e.to_string())?;
    let target = get_string(o, "target")?.unwrap_or_default();
    if connector != Connector::Forward && target.is_empty() {
        return Err(format!(
            "options.target (\"host:port\") is required for the {connector} connector"
        ));
    }

    let mut auth = node.credentials();
    let username = get_string(o, "username")?;
    let password = get_string(o, "password")?;
    match (username, password) {
        (Some(u), p) => auth = Some(Credentials::new(u, p.unwrap_or_default())),
        (None, Some(p)) => match auth.as_mut() {
            Some(a) => a.password = p,
            None => return Err("options.password needs options.username".into()),
        },
        (None, None) => {}
    }

    Ok(Plan {
        config,
        connector,
        target,
        auth,
        dispatcher,
    })
}
