//! Who a request is from: the TCP peer, or, behind a trusted reverse proxy, the client it
//! names in `Forwarded` / `X-Forwarded-For`.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The client address of a request from `peer`. Forwarding headers are believed only
/// when `peer` is a trusted proxy; then the chain is read from the right, skipping
/// trusted hops, and the first untrusted address is the client (an address a client
/// wrote into the header itself sits further left and is never reached).
pub fn client_addr(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let chain = forwarded_for(headers);
    chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(chain.first())
        .copied()
        .unwrap_or(peer)
}

/// The addresses of `Forwarded: for=` (RFC 7239), else of `X-Forwarded-For`, in order.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let rfc: Vec<IpAddr> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|elem| elem.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.eq_ignore_ascii_case("for").then(|| parse_node(v))?
        })
        .collect();
    if !rfc.is_empty() {
        return rfc;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse_node)
        .collect()
}

/// `192.0.2.1`, `"[2001:db8::1]:443"`, `192.0.2.1:80` → the address.
fn parse_node(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let xff = h(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(
            client_addr(&xff, ip("198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_addr(&xff, ip("127.0.0.1"), &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(client_addr(&xff, ip("127.0.0.1"), &[]), ip("127.0.0.1"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        // A client wrote 1.2.3.4 itself; the proxies appended its real address.
        let xff = h(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7, 10.1.1.1")]);
        assert_eq!(
            client_addr(&xff, ip("127.0.0.1"), &trusted),
            ip("203.0.113.7")
        );
        let fwd = h(&[(
            "forwarded",
            "for=1.2.3.4, for=\"[2001:db8::7]:443\";proto=https",
        )]);
        assert_eq!(
            client_addr(&fwd, ip("127.0.0.1"), &trusted),
            ip("2001:db8::7")
        );
        // Only trusted hops in the header: the leftmost one.
        let xff = h(&[("x-forwarded-for", "10.2.2.2")]);
        assert_eq!(client_addr(&xff, ip("127.0.0.1"), &trusted), ip("10.2.2.2"));
        // No header: the proxy itself.
        assert_eq!(
            client_addr(&h(&[]), ip("127.0.0.1"), &trusted),
            ip("127.0.0.1")
        );
    }
}
