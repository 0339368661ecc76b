//! SOCKS5 (`socks5`, `socks`): RFC 1928 CONNECT with "no auth" or RFC 1929 user/password,
//! choosing methods as gost ≥ v0.12.4 does (wire.md §2).
//!
//! Method choice: with an authenticator `02` if offered, else `FF`; without one `00` if
//! offered, else `FF`. gost's TLS methods `80`/`82` are never chosen (no TLS here).
//!
//! Commands: CONNECT is served. BIND and UDP ASSOCIATE are refused with `02` unless the
//! `bind` / `udp` option is true; with it they are served on this machine's sockets when
//! the service dials directly and the client came over TCP (a chain or a tunnel has no
//! socket the client could reach: `07`). gost's MUXBIND `F2` and UDPTun `F3` get `02`
//! when off and `07` when on. Any other command gets `07`.
//!
//! The service's bypass lists: a CONNECT or BIND whose address they refuse gets `02`; a
//! BIND peer they refuse is turned away (`02`); UDP datagrams to a refused destination are
//! dropped.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use pht_core::socks_addr::SocksAddr;
use tokio::io::AsyncReadExt;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tracing::{debug, warn};

use super::common::{Common, send, send_and_close, within};
use super::{Handler, HandlerError};
use super::{socks5_bind, socks5_udp};
use crate::config::ServiceConfig;
use crate::listener::{Accepted, Stream};
use crate::router::Router;

use pht_core::socks5::{
    AUTH_OK, AUTH_REFUSED, AUTH_VERSION, CMD_BIND, CMD_CONNECT, CMD_MUXBIND, CMD_UDP, CMD_UDPTUN,
    METHOD_NONE, METHOD_UNACCEPTABLE, METHOD_USER_PASS, REP_CMD_UNSUPPORTED, REP_NET_UNREACHABLE,
    REP_NOT_ALLOWED, REP_OK, VERSION,
};

pub struct Socks5Handler {
    common: Arc<Common>,
    bind: bool,
    udp: bool,
}

/// A request that passed negotiation and authentication.
struct Request {
    cmd: u8,
    target: String,
}

impl Socks5Handler {
    pub fn new(svc: &ServiceConfig, router: Router) -> Result<Self, HandlerError> {
        Self::with_common(Arc::new(Common::new(svc, router)?))
    }

    pub(super) fn with_common(common: Arc<Common>) -> Result<Self, HandlerError> {
        Ok(Socks5Handler {
            bind: common.flag("bind")?,
            udp: common.flag("udp")?,
            common,
        })
    }

    /// Method negotiation, sub-negotiation and the request. `Ok(None)`: the client was
    /// refused and told so.
    async fn negotiate(
        &self,
        s: &mut Box<dyn Stream>,
        peer: &str,
    ) -> std::io::Result<Option<Request>> {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await?;
        if head[0] != VERSION {
            return Err(bad(format!("not SOCKS5 (first byte {:#04x})", head[0])));
        }
        if head[1] == 0 {
            return Err(bad("no methods offered".into()));
        }
        let mut methods = vec![0u8; head[1] as usize];
        s.read_exact(&mut methods).await?;

        let wanted = if self.common.auth.is_some() {
            METHOD_USER_PASS
        } else {
            METHOD_NONE
        };
        let method = if methods.contains(&wanted) {
            wanted
        } else {
            METHOD_UNACCEPTABLE
        };
        if method == METHOD_UNACCEPTABLE {
            send_and_close(s, &[VERSION, METHOD_UNACCEPTABLE]).await;
            warn!(service = %self.common.service, %peer, "socks5: no acceptable method in {methods:02x?}");
            return Ok(None);
        }
        send(s, &[VERSION, method]).await?;

        if method == METHOD_USER_PASS {
            let ver = s.read_u8().await?;
            if ver != 0x01 {
                return Err(bad(format!("bad sub-negotiation version {ver:#04x}")));
            }
            let ulen = s.read_u8().await? as usize;
            let mut user = vec![0u8; ulen];
            s.read_exact(&mut user).await?;
            let plen = s.read_u8().await? as usize;
            let mut pass = vec![0u8; plen];
            s.read_exact(&mut pass).await?;
            let user = String::from_utf8_lossy(&user);
            if !self
                .common
                .authenticate(&user, &String::from_utf8_lossy(&pass))
            {
                send_and_close(s, &[AUTH_VERSION, AUTH_REFUSED]).await;
                warn!(service = %self.common.service, %peer, "socks5: authentication failed for user {user:?}");
                return Ok(None);
            }
            send(s, &[AUTH_VERSION, AUTH_OK]).await?;
        }

        let mut req = [0u8; 4];
        s.read_exact(&mut req).await?;
        if req[0] != VERSION {
            return Err(bad(format!("bad request version {:#04x}", req[0])));
        }
        let target = SocksAddr::read(&mut (&mut *s).compat(), req[3])
            .await?
            .to_string();
        Ok(Some(Request {
            cmd: req[1],
            target,
        }))
    }
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// A reply with BND `0.0.0.0:0`.
///
/// gost HEAD puts the outbound connection's local address in BND; the router's streams do
/// not expose it, and clients ignore BND for CONNECT, so the zero address (what stable
/// gost sends) is used.
fn reply(rep: u8) -> [u8; 10] {
    [VERSION, rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0]
}

impl Handler for Socks5Handler {
    fn handle(&self, conn: Accepted) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let started = Instant::now();
            let Accepted {
                mut stream,
                peer,
                tag,
                local,
            } = conn;
            let tag = tag.as_deref().unwrap_or("");
            let c = &self.common;
            let peer_s = peer.to_string();
            let req = match within(c.read_timeout, self.negotiate(&mut stream, &peer_s)).await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    warn!(service = %c.service, %peer, token = tag, "socks5: bad handshake: {e}");
                    return;
                }
            };
            let Request { cmd, target } = req;

            let refuse = match cmd {
                CMD_CONNECT | CMD_BIND if c.refuses(&target) => {
                    send_and_close(&mut stream, &reply(REP_NOT_ALLOWED)).await;
                    warn!(service = %c.service, %peer, token = tag, %target, "socks5: command {cmd:#04x} refused by bypass: 0x02");
                    return;
                }
                CMD_CONNECT => None,
                CMD_BIND | CMD_MUXBIND if !self.bind => Some(REP_NOT_ALLOWED),
                CMD_UDP | CMD_UDPTUN if !self.udp => Some(REP_NOT_ALLOWED),
                // Served directly only: through a chain, or over a tunnel, there is no
                // local socket a client could reach.
                CMD_BIND | CMD_UDP if c.router.is_direct() && local.is_some() => {
                    let local = local.expect("checked");
                    let bypass = c.bypass.as_deref();
                    let res = if cmd == CMD_BIND {
                        socks5_bind::serve(&mut stream, &target, local, bypass).await
                    } else {
                        socks5_udp::serve(&mut stream, peer, local, bypass).await
                    };
                    if let Err(e) = res {
                        debug!(service = %c.service, %peer, %target, "socks5: command {cmd:#04x}: {e}");
                    }
                    c.log_done(peer, tag, &target, 0, 0, started, None);
                    return;
                }
                _ => Some(REP_CMD_UNSUPPORTED),
            };
            if let Some(rep) = refuse {
                send_and_close(&mut stream, &reply(rep)).await;
                warn!(service = %c.service, %peer, token = tag, %target, "socks5: command {cmd:#04x} refused with {rep:#04x}");
                return;
            }

            let mut upstream = match c.dial(&target).await {
                Ok(u) => u,
                Err(e) => {
                    send_and_close(&mut stream, &reply(REP_NET_UNREACHABLE)).await;
                    crate::metrics::handler_error(&c.service);
                    warn!(service = %c.service, %peer, token = tag, %target, "socks5: dial failed: {e}");
                    return;
                }
            };
            c.reply_and_splice(
                &mut stream,
                &mut upstream,
                &reply(REP_OK),
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn handler(
        auth: Option<(&str, &str)>,
        meta: &[(&str, &str)],
    ) -> std::sync::Arc<dyn super::Handler> {
        build("socks5", auth, meta)
    }

    fn connect_v4(addr: std::net::SocketAddr) -> Vec<u8> {
        let std::net::IpAddr::V4(ip) = addr.ip() else {
            panic!("v4 only")
        };
        let mut r = vec![0x05, 0x01, 0x00, 0x01];
        r.extend_from_slice(&ip.octets());
        r.extend_from_slice(&addr.port().to_be_bytes());
        r
    }

    #[tokio::test]
    async fn no_auth_connect_and_relay() {
        let echo = echo_server().await;
        let mut c = start(handler(None, &[]));
        c.write_all(&[0x05, 0x02, 0x00, 0x80]).await.unwrap();
        assert_eq!(read_n(&mut c, 2).await, [0x05, 0x00]);
        c.write_all(&connect_v4(echo)).await.unwrap();
        assert_eq!(read_n(&mut c, 10).await, [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        c.write_all(b"ping").await.unwrap();
        assert_eq!(read_n(&mut c, 4).await, b"ping");
    }

    #[tokio::test]
    async fn domain_target() {
        let echo = echo_server().await;
        let mut c = start(handler(None, &[]));
        let mut req = vec![0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x03, 9];
        req.extend_from_slice(b"127.0.0.1");
        req.extend_from_slice(&echo.port().to_be_bytes());
        req.extend_from_slice(b"early");
        c.write_all(&req).await.unwrap();
        assert_eq!(
            read_n(&mut c, 12).await,
            [5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(read_n(&mut c, 5).await, b"early");
    }

    #[tokio::test]
    async fn auth_required_and_checked() {
        let echo = echo_server().await;
        // Only "no auth" offered to an authenticating server: FF, then closed.
        let mut c = start(handler(Some(("u", "p")), &[]));
        c.write_all(&[0x05, 0x01, 0x00]).await.unwrap();
        assert_eq!(read_to_end(&mut c).await, [0x05, 0xFF]);

        // Wrong password: 01 01, then closed.
        let mut c = start(handler(Some(("u", "p")), &[]));
        c.write_all(&[0x05, 0x02, 0x00, 0x02]).await.unwrap();
        assert_eq!(read_n(&mut c, 2).await, [0x05, 0x02]);
        c.write_all(&[0x01, 0x01, b'u', 0x01, b'x']).await.unwrap();
        assert_eq!(read_to_end(&mut c).await, [0x01, 0x01]);

        // Right password.
        let mut c = start(handler(Some(("u", "p")), &[]));
        c.write_all(&[0x05, 0x02, 0x00, 0x02, 0x01, 0x01, b'u', 0x01, b'p'])
            .await
            .unwrap();
        assert_eq!(read_n(&mut c, 4).await, [0x05, 0x02, 0x01, 0x00]);
        c.write_all(&connect_v4(echo)).await.unwrap();
        assert_eq!(read_n(&mut c, 2).await, [0x05, 0x00]);
    }

    #[tokio::test]
    async fn no_auth_server_refuses_user_pass_only() {
        let mut c = start(handler(None, &[]));
        c.write_all(&[0x05, 0x01, 0x02]).await.unwrap();
        assert_eq!(read_to_end(&mut c).await, [0x05, 0xFF]);
    }

    #[tokio::test]
    async fn dial_failure_is_network_unreachable() {
        let closed = closed_port().await;
        let mut c = start(handler(None, &[]));
        c.write_all(&[0x05, 0x01, 0x00]).await.unwrap();
        c.write_all(&connect_v4(closed)).await.unwrap();
        assert_eq!(
            read_to_end(&mut c).await,
            [5, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]
        );
    }

    #[tokio::test]
    async fn bind_udp_and_unknown_commands() {
        for (cmd, meta, rep) in [
            (0x02u8, &[][..], 0x02u8),
            (0x03, &[][..], 0x02),
            (0xF3, &[][..], 0x02),
            (0x02, &[("bind", "true")][..], 0x07),
            (0x03, &[("udp", "true")][..], 0x07),
            (0x09, &[][..], 0x07),
        ] {
            let mut c = start(handler(None, meta));
            c.write_all(&[0x05, 0x01, 0x00, 0x05, cmd, 0x00, 0x01, 0, 0, 0, 0, 0, 0])
                .await
                .unwrap();
            assert_eq!(
                read_to_end(&mut c).await,
                [5, 0, 5, rep, 0, 1, 0, 0, 0, 0, 0, 0],
                "cmd {cmd:#04x}"
            );
        }
    }

    #[tokio::test]
    async fn garbage_and_bad_atyp_are_closed_silently() {
        let mut c = start(handler(None, &[]));
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(read_to_end(&mut c).await, b"");

        let mut c = start(handler(None, &[]));
        c.write_all(&[0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x09, 0, 0])
            .await
            .unwrap();
        assert_eq!(read_to_end(&mut c).await, [0x05, 0x00]);
    }

    #[tokio::test]
    async fn slow_client_times_out() {
        let mut c = start(handler(None, &[("readTimeout", "100ms")]));
        c.write_all(&[0x05]).await.unwrap();
        let t = std::time::Instant::now();
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty());
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}
