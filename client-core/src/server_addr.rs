//! Server addresses as programs with a single "server URL" field take them (the wasm
//! package, web pages): a gost node URL or a plain `http(s)://` URL, plus per-call overrides.

use crate::{Credentials, NodeUrl, UrlError};

impl NodeUrl {
    /// Parses the address of a PHT server given either way:
    ///
    /// * a gost node URL: `[connector+](pht|phts)://[user:pass@]host:port[?options]`;
    /// * a plain web URL: `http://host[:port][/]` stands for `pht://host:port` (port 80 when
    ///   none is given) and `https://...` for `phts://` (port 443). Query options apply as in
    ///   a node URL.
    ///
    /// A URL that names no connector gets `forward`, so `http://host:8443` opens a plain
    /// tunnel (in gost's `-F`, a bare `pht://` means the `http` connector).
    ///
    /// ```
    /// use pht_core::NodeUrl;
    /// let n = NodeUrl::parse_server("https://example.com/").unwrap();
    /// assert_eq!((n.connector.as_str(), n.addr.as_str()), ("forward", "example.com:443"));
    /// assert_eq!(n.tunnel_config().base_url, "https://example.com:443");
    /// let n = NodeUrl::parse_server("socks5+pht://u:p@127.0.0.1:8443?pushPath=/up").unwrap();
    /// assert_eq!(n.connector, "socks5");
    /// assert_eq!(n.tunnel_config().push_path, "/up");
    /// assert!(NodeUrl::parse_server("socks5://127.0.0.1:1080").is_err());
    /// ```
    pub fn parse_server(input: &str) -> Result<NodeUrl, UrlError> {
        let trimmed = input.trim();
        let web = split_scheme(trimmed).and_then(|(scheme, rest)| {
            match scheme.to_ascii_lowercase().as_str() {
                "http" => Some(("pht", "80", rest)),
                "https" => Some(("phts", "443", rest)),
                _ => None,
            }
        });
        let mut node = match web {
            Some((dialer, default_port, rest)) => {
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                let (authority, tail) = rest.split_at(end);
                let (path, query) = match tail.find('?') {
                    Some(i) => (&tail[..i], &tail[i..]),
                    None => (tail, ""),
                };
                if !path.is_empty() && path != "/" {
                    return Err(UrlError::BadParam {
                        url: input.into(),
                        key: "path".into(),
                        value: path.into(),
                        reason: "a server URL has no path; set authorizePath, pushPath and \
                                 pullPath instead"
                            .into(),
                    });
                }
                let host = authority.rsplit('@').next().unwrap_or("");
                let has_port = match host.rfind(']') {
                    Some(i) => host[i..].contains(':'),
                    None => host.contains(':'),
                };
                let port = if has_port || host.is_empty() {
                    String::new()
                } else {
                    format!(":{default_port}")
                };
                NodeUrl::parse(&format!("{dialer}://{authority}{port}{query}"))?
            }
            None => NodeUrl::parse(trimmed)?,
        };
        if node.is_quic() {
            return Err(UrlError::BadParam {
                url: input.into(),
                key: "scheme".into(),
                value: node.url.scheme.clone(),
                reason: "fetch cannot choose HTTP/3: use https:// (a browser moves to HTTP/3 \
                         by itself when the server advertises it with Alt-Svc)"
                    .into(),
            });
        }
        if node.dialer != "pht" && node.dialer != "phts" {
            return Err(UrlError::BadParam {
                url: input.into(),
                key: "scheme".into(),
                value: node.url.scheme.clone(),
                reason: "expected http, https, pht or phts, optionally after a connector \
                         (socks5+pht)"
                    .into(),
            });
        }
        if node.url.scheme_parts().1.is_none() {
            node.connector = "forward".into();
        }
        Ok(node)
    }

    /// Sets the option `key` (as in the node URL's query; any earlier value of it goes) and
    /// checks the node's options again. Header options are `header.NAME`.
    ///
    /// ```
    /// let mut n = pht_core::NodeUrl::parse_server("http://127.0.0.1:8443?maxPushSize=10").unwrap();
    /// n.set_param("maxPushSize", "4096").unwrap();
    /// assert_eq!(n.tunnel_config().max_push_payload, 4096);
    /// assert!(n.set_param("token", "sometimes").is_err());
    /// ```
    pub fn set_param(&mut self, key: &str, value: impl Into<String>) -> Result<(), UrlError> {
        let old = self.url.query.clone();
        self.url.query.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.url.query.push((key.to_string(), value.into()));
        if let Err(e) = self.try_tunnel_config() {
            self.url.query = old;
            return Err(e);
        }
        Ok(())
    }

    /// The `user:pass@` part as connector credentials (a missing password is empty).
    pub fn credentials(&self) -> Option<Credentials> {
        self.user
            .as_ref()
            .map(|u| Credentials::new(u.clone(), self.password.clone().unwrap_or_default()))
    }
}

/// `scheme://rest` → (`scheme`, `rest`), for a scheme made of letters only.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once("://")?;
    (!scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphabetic()))
        .then_some((scheme, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenMode;

    #[test]
    fn plain_web_urls() {
        let n = NodeUrl::parse_server("http://127.0.0.1:8443").unwrap();
        assert_eq!(n.connector, "forward");
        assert_eq!(n.dialer, "pht");
        assert_eq!(n.tunnel_config().base_url, "http://127.0.0.1:8443");
        let n = NodeUrl::parse_server("HTTP://u:p@[::1]/?token=mint").unwrap();
        assert_eq!(n.addr, "[::1]:80");
        assert_eq!(n.tunnel_config().token_mode, TokenMode::Mint);
        let c = n.credentials().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        let n = NodeUrl::parse_server("https://[::1]:9443").unwrap();
        assert_eq!(n.tunnel_config().base_url, "https://[::1]:9443");
        assert!(n.is_tls());
        let e = NodeUrl::parse_server("http://h:1/tunnel").unwrap_err();
        assert!(e.to_string().contains("has no path"), "{e}");
        assert!(NodeUrl::parse_server("http://").is_err());
    }

    #[test]
    fn node_urls() {
        let n = NodeUrl::parse_server("pht://127.0.0.1:8443").unwrap();
        assert_eq!(n.connector, "forward");
        let n = NodeUrl::parse_server("relay+phts://u@h:1").unwrap();
        assert_eq!((n.connector.as_str(), n.dialer.as_str()), ("relay", "phts"));
        assert_eq!(n.credentials().unwrap().password, "");
        assert!(NodeUrl::parse_server("h:1").is_err());
        assert!(NodeUrl::parse_server("relay+tls://h:1").is_err());
        // fetch picks the HTTP version itself: h3 nodes are for the native client.
        for url in ["h3://h:1", "relay+http3://h:1"] {
            let e = NodeUrl::parse_server(url).unwrap_err().to_string();
            assert!(
                e.contains("fetch cannot choose HTTP/3: use https://"),
                "{e}"
            );
        }
        let n = NodeUrl::parse("h3://h:1").unwrap();
        assert_eq!((n.connector.as_str(), n.dialer.as_str()), ("http", "h3"));
        assert_eq!(n.tunnel_config().base_url, "https://h:1");
    }

    #[test]
    fn set_param_replaces_and_validates() {
        let mut n = NodeUrl::parse_server("pht://h:1?PushPath=/a").unwrap();
        n.set_param("pushPath", "/b").unwrap();
        assert_eq!(n.tunnel_config().push_path, "/b");
        n.set_param("header.X-A", "1").unwrap();
        assert_eq!(n.tunnel_config().headers, vec![("X-A".into(), "1".into())]);
        assert!(n.set_param("maxPushSize", "0").is_err());
        assert_eq!(
            n.tunnel_config().max_push_payload,
            crate::defaults::MAX_PUSH_PAYLOAD
        );
    }
}
