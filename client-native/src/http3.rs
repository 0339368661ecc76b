//! PHT over HTTP/3 (gost's `h3` and `http3` dialers): the same requests as over HTTP/1.1
//! and HTTP/2, each on its own QUIC stream, every tunnel to a node sharing one QUIC
//! connection (quinn on rustls, hyperium's h3).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use futures::future::BoxFuture;
use http::{Method, Request};
use pht_core::{FetchError, FetchResponse, PostBody};
use tokio::sync::Mutex;
use tracing::debug;

use crate::quic::QuicOptions;

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;
type ReqStream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// An HTTP/3 client bound to one node address.
pub(crate) struct H3Client {
    /// `host:port` the QUIC connection goes to.
    addr: Arc<str>,
    /// TLS server name (SNI, and the name verified when `secure`).
    server_name: String,
    config: quinn::ClientConfig,
    handshake_timeout: std::time::Duration,
    /// Made on first use: quinn needs a running tokio runtime.
    endpoint: tokio::sync::OnceCell<quinn::Endpoint>,
    /// The shared connection, replaced when it has closed. Held across a handshake so a
    /// burst of new tunnels opens one connection, not one each.
    conn: Mutex<Option<(quinn::Connection, Sender)>>,
}

impl H3Client {
    pub(crate) fn new(
        addr: &str,
        server_name: String,
        tls: rustls::ClientConfig,
        quic: &QuicOptions,
    ) -> Result<Self, String> {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
            .map_err(|e| format!("TLS settings unusable for QUIC: {e}"))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(quic.transport());
        Ok(H3Client {
            addr: Arc::from(addr),
            server_name,
            config,
            handshake_timeout: quic.handshake_timeout,
            endpoint: tokio::sync::OnceCell::new(),
            conn: Mutex::new(None),
        })
    }

    async fn resolve(&self) -> Result<SocketAddr, FetchError> {
        tokio::net::lookup_host(&*self.addr)
            .await
            .map_err(|e| FetchError(format!("h3: resolve {}: {e}", self.addr)))?
            .next()
            .ok_or_else(|| FetchError(format!("h3: {} has no address", self.addr)))
    }

    /// The live connection's request sender, connecting first if there is none.
    async fn sender(&self) -> Result<Sender, FetchError> {
        let mut slot = self.conn.lock().await;
        if let Some((conn, sender)) = &*slot {
            if conn.close_reason().is_none() {
                return Ok(sender.clone());
            }
        }
        *slot = None;
        let to = self.resolve().await?;
        let endpoint = self
            .endpoint
            .get_or_try_init(|| async {
                let local: SocketAddr = if to.is_ipv6() {
                    "[::]:0".parse().expect("an address")
                } else {
                    "0.0.0.0:0".parse().expect("an address")
                };
                quinn::Endpoint::client(local)
            })
            .await
            .map_err(|e| FetchError(format!("h3: UDP socket: {e}")))?;
        let connecting = endpoint
            .connect_with(self.config.clone(), to, &self.server_name)
            .map_err(|e| FetchError(format!("h3: connect to {to}: {e}")))?;
        let conn = tokio::time::timeout(self.handshake_timeout, connecting)
            .await
            .map_err(|_| {
                FetchError(format!(
                    "h3: connect to {to}: no handshake within {:?}",
                    self.handshake_timeout
                ))
            })?
            .map_err(|e| FetchError(format!("h3: connect to {to}: {e}")))?;
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .map_err(|e| FetchError(format!("h3: {to}: {e}")))?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            let e = futures::future::poll_fn(|cx| driver.poll_close(cx)).await;
            debug!(node = %addr, "h3 connection closed: {e}");
        });
        debug!(node = %self.addr, %to, "h3 connection open");
        *slot = Some((conn, sender.clone()));
        Ok(sender)
    }

    async fn open(
        &self,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        len: usize,
    ) -> Result<ReqStream, FetchError> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            // The URL's authority is the request's; a second one would be refused.
            if !k.eq_ignore_ascii_case("host") {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        if len > 0 {
            req = req.header(http::header::CONTENT_LENGTH, len);
        }
        let req = req.body(()).map_err(FetchError::new)?;
        let mut sender = self.sender().await?;
        sender
            .send_request(req)
            .await
            .map_err(|e| FetchError(format!("h3 request: {e}")))
    }

    pub(crate) async fn get(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<FetchResponse<H3Body>, FetchError> {
        let mut s = self.open(Method::GET, url, headers, 0).await?;
        // A server may answer before it has read the request's end, and stop the request
        // side (RFC 9114, 4.1.2): the answer still counts, so only its own errors do.
        let sent = s.finish().await;
        let resp = s
            .recv_response()
            .await
            .map_err(|e| request_error(e, sent))?;
        Ok(FetchResponse {
            status: resp.status().as_u16(),
            content_type: crate::transport::content_type(resp.headers()),
            body: H3Body::new(s),
        })
    }

    pub(crate) async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: PostBody,
        max_answer: usize,
    ) -> Result<(u16, Bytes), FetchError> {
        let mut s = self.open(Method::POST, url, headers, body.len()).await?;
        // As in `get`: a server that refuses a push unread (413, 410) stops the body, and
        // its answer is what the tunnel needs to see.
        let mut sent = Ok(());
        for part in body.into_parts() {
            sent = s.send_data(part).await;
            if sent.is_err() {
                break;
            }
        }
        if sent.is_ok() {
            sent = s.finish().await;
        }
        let resp = s
            .recv_response()
            .await
            .map_err(|e| request_error(e, sent))?;
        let mut answer = BytesMut::new();
        while let Some(mut chunk) = s.recv_data().await.map_err(stream_error)? {
            if answer.len() + chunk.remaining() > max_answer {
                return Err(FetchError(format!("h3: answer over {max_answer} bytes")));
            }
            answer.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        Ok((resp.status().as_u16(), answer.freeze()))
    }
}

fn stream_error(e: h3::error::StreamError) -> FetchError {
    FetchError(format!("h3 stream: {e}"))
}

/// No answer came: the error says why, including a failure to send the request first.
fn request_error(
    e: h3::error::StreamError,
    sent: Result<(), h3::error::StreamError>,
) -> FetchError {
    match sent {
        Ok(()) => stream_error(e),
        Err(s) => FetchError(format!("h3 stream: sending the request: {s}; then: {e}")),
    }
}

/// A response body read from its QUIC stream. Dropping it stops the stream, which tells
/// the server the pull is gone.
type NextChunk = BoxFuture<'static, (Option<Result<Bytes, FetchError>>, ReqStream)>;

pub struct H3Body {
    next: Option<NextChunk>,
    done: bool,
}

impl H3Body {
    fn new(s: ReqStream) -> Self {
        H3Body {
            next: Some(Self::read(s)),
            done: false,
        }
    }

    fn read(
        mut s: ReqStream,
    ) -> BoxFuture<'static, (Option<Result<Bytes, FetchError>>, ReqStream)> {
        Box::pin(async move {
            let item = match s.recv_data().await {
                Ok(Some(mut b)) => Some(Ok(b.copy_to_bytes(b.remaining()))),
                Ok(None) => None,
                Err(e) => Some(Err(stream_error(e))),
            };
            (item, s)
        })
    }
}

impl Stream for H3Body {
    type Item = Result<Bytes, FetchError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let Some(fut) = self.next.as_mut() else {
            return Poll::Ready(None);
        };
        let (item, s) = futures::ready!(fut.as_mut().poll(cx));
        match &item {
            Some(Ok(_)) => self.next = Some(Self::read(s)),
            // End or error: nothing more comes.
            _ => {
                self.done = true;
                self.next = None;
            }
        }
        Poll::Ready(item)
    }
}
