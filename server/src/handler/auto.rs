//! `auto`: SOCKS4/4a, SOCKS5 or HTTP on one port, chosen by the first byte (`04`, `05`,
//! anything else). The sniffed byte is replayed to the chosen handler. The relay protocol is
//! not part of `auto` (as in gost), and TLS is not sniffed: a TLS client reaches the HTTP
//! handler and gets 400.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::AsyncReadExt;
use tracing::warn;

use super::common::{Common, Rewind, within};
use super::http::HttpHandler;
use super::socks4::Socks4Handler;
use super::socks5::Socks5Handler;
use super::{Handler, HandlerError};
use crate::config::ServiceConfig;
use crate::listener::Accepted;
use crate::router::Router;

pub struct AutoHandler {
    common: Arc<Common>,
    http: HttpHandler,
    socks4: Socks4Handler,
    socks5: Socks5Handler,
}

impl AutoHandler {
    pub fn new(svc: &ServiceConfig, router: Router) -> Result<Self, HandlerError> {
        let common = Arc::new(Common::new(svc, router)?);
        Ok(AutoHandler {
            http: HttpHandler::with_common(common.clone())?,
            socks4: Socks4Handler::with_common(common.clone()),
            socks5: Socks5Handler::with_common(common.clone())?,
            common,
        })
    }
}

impl Handler for AutoHandler {
    fn handle(&self, conn: Accepted) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Accepted {
                mut stream,
                peer,
                tag,
                local,
            } = conn;
            let c = &self.common;
            let first = match within(c.read_timeout, stream.read_u8()).await {
                Ok(b) => b,
                Err(e) => {
                    warn!(service = %c.service, %peer, token = tag.as_deref().unwrap_or(""), "auto: no request: {e}");
                    return;
                }
            };
            let conn = Accepted {
                stream: Box::new(Rewind::new(vec![first], stream)),
                peer,
                tag,
                local,
            };
            match first {
                0x05 => self.socks5.handle(conn).await,
                0x04 => self.socks4.handle(conn).await,
                _ => self.http.handle(conn).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn dispatches_on_the_first_byte() {
        let echo = echo_server().await;
        let h = build("auto", None, &[]);

        let mut c = start(h.clone());
        c.write_all(&[0x05, 0x01, 0x00]).await.unwrap();
        assert_eq!(read_n(&mut c, 2).await, [0x05, 0x00]);

        let mut c = start(h.clone());
        let mut req = vec![0x04, 0x01];
        req.extend_from_slice(&echo.port().to_be_bytes());
        req.extend_from_slice(&[127, 0, 0, 1, 0]);
        c.write_all(&req).await.unwrap();
        assert_eq!(read_n(&mut c, 8).await, [0, 0x5A, 0, 0, 0, 0, 0, 0]);

        let mut c = start(h.clone());
        c.write_all(format!("CONNECT {echo} HTTP/1.1\r\n\r\nhi").as_bytes())
            .await
            .unwrap();
        let ok = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: gost/3.0\r\n\r\n";
        assert_eq!(read_n(&mut c, ok.len()).await, ok);
        assert_eq!(read_n(&mut c, 2).await, b"hi");

        // A client that connects and says nothing is closed at the read timeout.
        let h = build("auto", None, &[("readTimeout", "50ms")]);
        let mut c = start(h);
        assert_eq!(read_to_end(&mut c).await, b"");
    }
}
