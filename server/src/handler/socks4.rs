//! SOCKS4 and SOCKS4a (`socks4`, `socks4a`; both names serve both forms), wire.md §3.
//!
//! Replies are 8 bytes `00 CD 00 00 00 00 00 00`: `5A` granted, `5B` dial failure, `5C`
//! (92) a target the service's bypass lists refuse, `5D` user id rejected (with an
//! authenticator the USERID is the user name, password empty).
//! BIND is not implemented: the connection is closed without a reply, as gost does.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use tokio::io::AsyncReadExt;
use tracing::warn;

use super::common::{Common, send_and_close, within};
use super::{Handler, HandlerError};
use crate::config::ServiceConfig;
use crate::listener::{Accepted, Stream};
use crate::router::Router;

const CD_CONNECT: u8 = 0x01;
const CD_BIND: u8 = 0x02;
const GRANTED: u8 = 0x5A;
const FAILED: u8 = 0x5B;
const REJECTED: u8 = 0x5C;
const USERID_REJECTED: u8 = 0x5D;

/// Longest USERID / hostname accepted.
const MAX_FIELD: usize = 255;

pub struct Socks4Handler {
    common: Arc<Common>,
}

struct Request {
    cmd: u8,
    userid: String,
    target: String,
}

impl Socks4Handler {
    pub fn new(svc: &ServiceConfig, router: Router) -> Result<Self, HandlerError> {
        Ok(Self::with_common(Arc::new(Common::new(svc, router)?)))
    }

    pub(super) fn with_common(common: Arc<Common>) -> Self {
        Socks4Handler { common }
    }
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Reads a NUL-terminated field byte by byte, so nothing behind it is consumed.
async fn read_field(s: &mut Box<dyn Stream>, what: &str) -> std::io::Result<String> {
    let mut out = Vec::new();
    loop {
        let b = s.read_u8().await?;
        if b == 0 {
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        if out.len() == MAX_FIELD {
            return Err(bad(format!("{what} longer than {MAX_FIELD} bytes")));
        }
        out.push(b);
    }
}

async fn read_request(s: &mut Box<dyn Stream>) -> std::io::Result<Request> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).await?;
    if head[0] != 0x04 {
        return Err(bad(format!("not SOCKS4 (first byte {:#04x})", head[0])));
    }
    let cmd = head[1];
    if cmd != CD_CONNECT && cmd != CD_BIND {
        return Err(bad(format!("unknown command {cmd:#04x}")));
    }
    let port = u16::from_be_bytes([head[2], head[3]]);
    let ip = Ipv4Addr::new(head[4], head[5], head[6], head[7]);
    let userid = read_field(s, "user id").await?;
    // SOCKS4a: 0.0.0.x with x != 0 means "a host name follows".
    let [a, b, c, d] = ip.octets();
    let host = if a == 0 && b == 0 && c == 0 && d != 0 {
        read_field(s, "host name").await?
    } else {
        ip.to_string()
    };
    Ok(Request {
        cmd,
        userid,
        target: format!("{host}:{port}"),
    })
}

fn reply(code: u8) -> [u8; 8] {
    [0x00, code, 0, 0, 0, 0, 0, 0]
}

impl Handler for Socks4Handler {
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
                    warn!(service = %c.service, %peer, token = tag, "socks4: bad request: {e}");
                    return;
                }
            };
            let target = req.target;
            if !c.authenticate(&req.userid, "") {
                send_and_close(&mut stream, &reply(USERID_REJECTED)).await;
                warn!(service = %c.service, %peer, token = tag, %target, "socks4: user id {:?} rejected", req.userid);
                return;
            }
            if req.cmd == CD_BIND {
                warn!(service = %c.service, %peer, token = tag, %target, "socks4: BIND is not supported");
                return;
            }
            if c.refuses(&target) {
                send_and_close(&mut stream, &reply(REJECTED)).await;
                warn!(service = %c.service, %peer, token = tag, %target, "socks4: CONNECT refused by bypass: 92");
                return;
            }
            let mut upstream = match c.dial(&target).await {
                Ok(u) => u,
                Err(e) => {
                    send_and_close(&mut stream, &reply(FAILED)).await;
                    crate::metrics::handler_error(&c.service);
                    warn!(service = %c.service, %peer, token = tag, %target, "socks4: dial failed: {e}");
                    return;
                }
            };
            c.reply_and_splice(
                &mut stream,
                &mut upstream,
                &reply(GRANTED),
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
    use tokio::io::AsyncWriteExt;

    fn request(ip: [u8; 4], port: u16, userid: &[u8], host: Option<&[u8]>) -> Vec<u8> {
        let mut r = vec![0x04, 0x01];
        r.extend_from_slice(&port.to_be_bytes());
        r.extend_from_slice(&ip);
        r.extend_from_slice(userid);
        r.push(0);
        if let Some(h) = host {
            r.extend_from_slice(h);
            r.push(0);
        }
        r
    }

    #[tokio::test]
    async fn socks4_and_4a_connect() {
        let echo = echo_server().await;
        let mut c = start(build("socks4", None, &[]));
        let mut req = request([127, 0, 0, 1], echo.port(), b"anyone", None);
        req.extend_from_slice(b"early");
        c.write_all(&req).await.unwrap();
        assert_eq!(read_n(&mut c, 8).await, [0, 0x5A, 0, 0, 0, 0, 0, 0]);
        assert_eq!(read_n(&mut c, 5).await, b"early");

        let mut c = start(build("socks4a", None, &[]));
        c.write_all(&request([0, 0, 0, 1], echo.port(), b"", Some(b"localhost")))
            .await
            .unwrap();
        assert_eq!(read_n(&mut c, 8).await, [0, 0x5A, 0, 0, 0, 0, 0, 0]);
        c.write_all(b"x").await.unwrap();
        assert_eq!(read_n(&mut c, 1).await, b"x");
    }

    #[tokio::test]
    async fn userid_is_checked_when_auth_is_configured() {
        let echo = echo_server().await;
        let mut c = start(build("socks4", Some(("alice", "")), &[]));
        c.write_all(&request([127, 0, 0, 1], echo.port(), b"mallory", None))
            .await
            .unwrap();
        assert_eq!(read_to_end(&mut c).await, [0, 0x5D, 0, 0, 0, 0, 0, 0]);

        let mut c = start(build("socks4", Some(("alice", "")), &[]));
        c.write_all(&request([127, 0, 0, 1], echo.port(), b"alice", None))
            .await
            .unwrap();
        assert_eq!(read_n(&mut c, 8).await, [0, 0x5A, 0, 0, 0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn dial_failure_bind_and_garbage() {
        let closed = closed_port().await;
        let mut c = start(build("socks4", None, &[]));
        c.write_all(&request([127, 0, 0, 1], closed.port(), b"", None))
            .await
            .unwrap();
        assert_eq!(read_to_end(&mut c).await, [0, 0x5B, 0, 0, 0, 0, 0, 0]);

        let mut c = start(build("socks4", None, &[]));
        let mut req = request([127, 0, 0, 1], 1, b"", None);
        req[1] = 0x02;
        c.write_all(&req).await.unwrap();
        assert_eq!(read_to_end(&mut c).await, b"");

        let mut c = start(build("socks4", None, &[]));
        c.write_all(b"\x05\x01\x00garbage!").await.unwrap();
        assert_eq!(read_to_end(&mut c).await, b"");
    }
}
