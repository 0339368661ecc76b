//! The GOST relay protocol (`relay`), wire.md §1.
//!
//! Request `01 CMD FEALEN FEATURES`, response `01 STATUS 00 00`. Features understood:
//! UserAuth (0x01), Addr (0x02), Network (0x04); any other type is skipped (relay ≥ v0.6.1
//! behaviour). A bad version or a truncated feature closes the connection without a
//! response.
//!
//! The OK response is written as soon as the dial succeeds (gost's `nodelay=true`), which
//! every gost client mode accepts. Only TCP is served: UDP (flag `0x80` or Network udp),
//! unix/serial/ip networks, ASSOCIATE and unknown commands get BadRequest; BIND gets
//! Forbidden unless the `bind` option is true, and BadRequest (not implemented) if it is.
//!
//! Forward mode: when the service has forwarder nodes, the command and Addr are ignored
//! and the nodes are dialled in the selector's order (ServiceUnavailable without nodes,
//! HostUnreachable when every node fails, Forbidden when the service's bypass lists refuse
//! every node).
//!
//! A CONNECT address the service's bypass lists refuse gets Forbidden (`03`).

use crate::forwarder::Forwarder;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use pht_core::relay::status::{
    BAD_REQUEST, FORBIDDEN, HOST_UNREACHABLE, NETWORK_UNREACHABLE, OK, SERVICE_UNAVAILABLE,
    UNAUTHORIZED,
};
use pht_core::relay::{
    CMD_BIND, CMD_CONNECT, CMD_MASK, FEATURE_ADDR, FEATURE_NETWORK, FEATURE_USER_AUTH, FLAG_UDP,
    NETWORK_IP, NETWORK_SERIAL, NETWORK_UDP, NETWORK_UNIX, VERSION, response,
};
use pht_core::socks_addr::SocksAddr;
use tokio::io::AsyncReadExt;
use tracing::warn;

use super::common::{Common, send_and_close, within};
use super::{Handler, HandlerError};
use crate::config::ServiceConfig;
use crate::listener::{Accepted, Stream};
use crate::router::Router;

pub struct RelayHandler {
    common: Arc<Common>,
    bind: bool,
    forwarder: Option<Forwarder>,
}

#[derive(Debug, Default, PartialEq)]
struct Request {
    cmd: u8,
    user: Option<(String, String)>,
    addr: Option<String>,
    network: Option<u16>,
}

impl Request {
    fn is_tcp(&self) -> bool {
        self.cmd & FLAG_UDP == 0
            && !matches!(
                self.network,
                Some(NETWORK_UDP | NETWORK_IP | NETWORK_UNIX | NETWORK_SERIAL)
            )
    }
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

async fn read_request(s: &mut Box<dyn Stream>) -> std::io::Result<Request> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(bad(format!("bad version {:#04x}", head[0])));
    }
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let mut features = vec![0u8; len];
    s.read_exact(&mut features).await?;
    parse_features(head[1], &features)
}

fn parse_features(cmd: u8, mut f: &[u8]) -> std::io::Result<Request> {
    let mut req = Request {
        cmd,
        ..Default::default()
    };
    while !f.is_empty() {
        if f.len() < 3 {
            return Err(bad("truncated feature header".into()));
        }
        let typ = f[0];
        let len = u16::from_be_bytes([f[1], f[2]]) as usize;
        let data = f
            .get(3..3 + len)
            .ok_or_else(|| bad(format!("feature {typ:#04x} truncated")))?;
        f = &f[3 + len..];
        match typ {
            FEATURE_USER_AUTH => {
                let user_pass = (|| {
                    let (&ulen, rest) = data.split_first()?;
                    let user = rest.get(..ulen as usize)?;
                    let (&plen, rest) = rest[ulen as usize..].split_first()?;
                    let pass = rest.get(..plen as usize)?;
                    Some((
                        String::from_utf8_lossy(user).into_owned(),
                        String::from_utf8_lossy(pass).into_owned(),
                    ))
                })();
                req.user =
                    Some(user_pass.ok_or_else(|| bad("malformed user auth feature".into()))?);
            }
            FEATURE_ADDR => {
                let (addr, _) =
                    SocksAddr::decode(data).map_err(|_| bad("malformed address feature".into()))?;
                req.addr = Some(addr.to_string());
            }
            FEATURE_NETWORK => {
                let id = data
                    .get(..2)
                    .ok_or_else(|| bad("malformed network feature".into()))?;
                req.network = Some(u16::from_be_bytes([id[0], id[1]]));
            }
            _ => {} // Tunnel, Metadata, future types: not ours.
        }
    }
    Ok(req)
}

impl RelayHandler {
    pub fn new(svc: &ServiceConfig, router: Router) -> Result<Self, HandlerError> {
        let common = Arc::new(Common::new(svc, router)?);
        Ok(RelayHandler {
            bind: common.flag("bind")?,
            common,
            forwarder: Forwarder::for_service(svc).map_err(HandlerError::At)?,
        })
    }

    /// Forward mode: the first forwarder node that answers, in the selector's order.
    async fn dial_node(&self, peer: &str, tag: &str) -> Result<(String, Box<dyn Stream>), u8> {
        let Some(f) = &self.forwarder else {
            return Err(SERVICE_UNAVAILABLE);
        };
        let c = &self.common;
        f.dial(&c.router, c.retries, &c.service, peer, tag)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => FORBIDDEN,
                std::io::ErrorKind::NotFound => SERVICE_UNAVAILABLE,
                _ => HOST_UNREACHABLE,
            })
    }

    /// Decides what to dial; `Err(status)` refuses the request.
    async fn connect(
        &self,
        req: &Request,
        peer: &str,
        tag: &str,
    ) -> Result<(String, Box<dyn Stream>), (u8, String)> {
        if !req.is_tcp() {
            return Err((BAD_REQUEST, "only TCP is supported".into()));
        }
        if self.forwarder.is_some() {
            return self.dial_node(peer, tag).await.map_err(|s| {
                let why = match s {
                    FORBIDDEN => "every forwarder node is refused by bypass",
                    SERVICE_UNAVAILABLE => "no forwarder node available",
                    _ => "no forwarder node answered",
                };
                (s, why.into())
            });
        }
        match req.cmd & CMD_MASK {
            0 | CMD_CONNECT => {}
            CMD_BIND if !self.bind => return Err((FORBIDDEN, "BIND is not enabled".into())),
            CMD_BIND => return Err((BAD_REQUEST, "BIND is not supported".into())),
            c => return Err((BAD_REQUEST, format!("unknown command {c:#04x}"))),
        }
        let Some(target) = &req.addr else {
            return Err((BAD_REQUEST, "CONNECT without an address".into()));
        };
        if self.common.refuses(target) {
            return Err((FORBIDDEN, format!("{target} refused by bypass")));
        }
        match self.common.dial(target).await {
            Ok(s) => Ok((target.clone(), s)),
            Err(e) => Err((NETWORK_UNREACHABLE, format!("dial {target} failed: {e}"))),
        }
    }
}

impl Handler for RelayHandler {
    fn handle(&self, conn: Accepted) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let started = Instant::now();
            let Accepted {
                mut stream,
                peer,
                tag,
                ..
            } = conn;
            let tag = tag.as_deref().unwrap_or("");
            let c = &self.common;
            let req = match within(c.read_timeout, read_request(&mut stream)).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(service = %c.service, %peer, token = tag, "relay: bad request: {e}");
                    return;
                }
            };
            let wanted = req.addr.clone().unwrap_or_default();
            if c.auth.is_some() {
                let (u, p) = req.user.clone().unwrap_or_default();
                if !c.authenticate(&u, &p) {
                    send_and_close(&mut stream, &response(UNAUTHORIZED)).await;
                    warn!(service = %c.service, %peer, token = tag, target = %wanted, "relay: authentication failed for user {u:?}");
                    return;
                }
            }
            let peer_s = peer.to_string();
            let (target, mut upstream) = match self.connect(&req, &peer_s, tag).await {
                Ok(ok) => ok,
                Err((status, why)) => {
                    send_and_close(&mut stream, &response(status)).await;
                    crate::metrics::handler_error(&c.service);
                    warn!(service = %c.service, %peer, token = tag, target = %wanted, "relay: refused with status {status}: {why}");
                    return;
                }
            };
            c.reply_and_splice(
                &mut stream,
                &mut upstream,
                &response(OK),
                (peer, tag, &target),
                started,
            )
            .await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn connect(user: Option<(&str, &str)>, addr: &str, extra: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        if let Some((u, p)) = user {
            f.push(0x01);
            f.extend_from_slice(&((2 + u.len() + p.len()) as u16).to_be_bytes());
            f.push(u.len() as u8);
            f.extend_from_slice(u.as_bytes());
            f.push(p.len() as u8);
            f.extend_from_slice(p.as_bytes());
        }
        f.extend_from_slice(extra);
        let sa: std::net::SocketAddr = addr.parse().unwrap();
        let std::net::IpAddr::V4(ip) = sa.ip() else {
            panic!()
        };
        f.extend_from_slice(&[0x02, 0x00, 0x07, 0x01]);
        f.extend_from_slice(&ip.octets());
        f.extend_from_slice(&sa.port().to_be_bytes());
        let mut r = vec![0x01, 0x01];
        r.extend_from_slice(&(f.len() as u16).to_be_bytes());
        r.extend_from_slice(&f);
        r
    }

    #[test]
    fn parses_the_worked_example() {
        let f = [
            0x01, 0x00, 0x04, 0x01, 0x75, 0x01, 0x70, 0x02, 0x00, 0x0f, 0x03, 0x0b, b'e', b'x',
            b'a', b'm', b'p', b'l', b'e', b'.', b'c', b'o', b'm', 0x01, 0xbb,
        ];
        let r = parse_features(0x01, &f).unwrap();
        assert_eq!(r.user, Some(("u".into(), "p".into())));
        assert_eq!(r.addr.as_deref(), Some("example.com:443"));
        assert!(r.is_tcp());
        // UDP CONNECT from wire.md: Network udp + flag.
        let f = [
            0x04, 0x00, 0x02, 0x00, 0x01, 0x02, 0x00, 0x07, 0x01, 8, 8, 8, 8, 0x00, 0x35,
        ];
        let r = parse_features(0x81, &f).unwrap();
        assert_eq!(r.network, Some(NETWORK_UDP));
        assert!(!r.is_tcp());
        // Truncated TLV and short user auth are errors.
        assert!(parse_features(1, &[0x02, 0x00, 0x07, 0x01]).is_err());
        assert!(parse_features(1, &[0x01, 0x00, 0x01, 0x05]).is_err());
        assert!(parse_features(1, &[0x02, 0x00]).is_err());
    }

    #[tokio::test]
    async fn connect_with_auth_and_unknown_features() {
        let echo = echo_server().await;
        let h = build("relay", Some(("u", "p")), &[]);
        let mut c = start(h.clone());
        // Unknown feature 0x09 and Tunnel 0x03 are skipped.
        let extra = [0x09, 0x00, 0x02, 0xAA, 0xBB, 0x03, 0x00, 0x01, 0x00];
        let mut req = connect(Some(("u", "p")), &echo.to_string(), &extra);
        req.extend_from_slice(b"early data");
        c.write_all(&req).await.unwrap();
        assert_eq!(read_n(&mut c, 4).await, [0x01, 0x00, 0x00, 0x00]);
        assert_eq!(read_n(&mut c, 10).await, b"early data");

        let mut c = start(h.clone());
        c.write_all(&connect(Some(("u", "x")), &echo.to_string(), &[]))
            .await
            .unwrap();
        assert_eq!(read_to_end(&mut c).await, [0x01, 0x02, 0x00, 0x00]);

        let mut c = start(h);
        c.write_all(&connect(None, &echo.to_string(), &[]))
            .await
            .unwrap();
        assert_eq!(read_to_end(&mut c).await, [0x01, 0x02, 0x00, 0x00]);
    }

    #[tokio::test]
    async fn status_codes() {
        let closed = closed_port().await;
        let h = build("relay", None, &[]);
        for (req, want) in [
            // Dial failure.
            (connect(None, &closed.to_string(), &[]), 0x07u8),
            // CONNECT without Addr.
            (vec![0x01, 0x01, 0x00, 0x00], 0x01),
            // BIND while bind is off.
            (
                {
                    let mut r = connect(None, "0.0.0.0:0", &[]);
                    r[1] = 0x02;
                    r
                },
                0x03,
            ),
            // ASSOCIATE.
            (
                {
                    let mut r = connect(None, "0.0.0.0:0", &[]);
                    r[1] = 0x03;
                    r
                },
                0x01,
            ),
            // UDP CONNECT.
            (
                {
                    let mut r = connect(None, "8.8.8.8:53", &[]);
                    r[1] = 0x81;
                    r
                },
                0x01,
            ),
        ] {
            let mut c = start(h.clone());
            c.write_all(&req).await.unwrap();
            assert_eq!(
                read_to_end(&mut c).await,
                [0x01, want, 0x00, 0x00],
                "{req:02x?}"
            );
        }
    }

    #[tokio::test]
    async fn bad_version_and_garbage_close_silently() {
        let h = build("relay", None, &[]);
        let mut c = start(h.clone());
        c.write_all(&[0x02, 0x01, 0x00, 0x00]).await.unwrap();
        assert_eq!(read_to_end(&mut c).await, b"");

        let mut c = start(h);
        c.write_all(&[0x01, 0x01, 0x00, 0x05, 0x02, 0x00, 0x09, 0x01, 0x00])
            .await
            .unwrap();
        let _ = c.shutdown().await;
        assert_eq!(read_to_end(&mut c).await, b"");
    }

    #[tokio::test]
    async fn forward_mode_ignores_the_address() {
        let banner = banner_server(b"hello from node\n").await;
        let closed = closed_port().await;
        let svc = with_forwarder(
            service("relay", None, &[]),
            &[closed.to_string(), banner.to_string()],
        );
        let h: Arc<dyn Handler> = Arc::new(RelayHandler::new(&svc, Router::direct()).unwrap());
        for _ in 0..2 {
            let mut c = start(h.clone());
            c.write_all(&[0x01, 0x01, 0x00, 0x00]).await.unwrap();
            assert_eq!(read_n(&mut c, 4).await, [0x01, 0x00, 0x00, 0x00]);
            assert_eq!(read_n(&mut c, 16).await, b"hello from node\n");
        }

        let svc = with_forwarder(service("relay", None, &[]), &[closed.to_string()]);
        let h: Arc<dyn Handler> = Arc::new(RelayHandler::new(&svc, Router::direct()).unwrap());
        let mut c = start(h);
        c.write_all(&connect(None, "1.2.3.4:5", &[])).await.unwrap();
        assert_eq!(read_to_end(&mut c).await, [0x01, 0x06, 0x00, 0x00]);
    }
}
