//! [`pht_core::Fetch`] over hyper: pooled keep-alive HTTP/1.1 to one PHT node.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::{Method, Request, Uri};
use http_body_util::{BodyDataStream, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pht_core::{Fetch, FetchError, FetchResponse, NodeUrl};
use tokio::net::TcpStream;

/// Largest push/authorize response body read into memory (PHT answers are tiny).
const MAX_SMALL_BODY: usize = 64 * 1024;
/// Connections idle longer than this are closed (gost: 90 s).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Time allowed for the TCP connection to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a transport could not be built for a node.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("dialer {0:?} is not supported by this build (supported: pht)")]
    UnsupportedDialer(String),
}

/// An HTTP client bound to one node: every request's TCP connection goes to the node's
/// address, whatever authority the URL carries (gost's `host` option is fronting).
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct HyperFetch {
    client: Client<NodeConnector, Full<Bytes>>,
}

impl HyperFetch {
    /// A client for `node` (`pht://`; `phts://` comes with the TLS transport).
    pub fn for_node(node: &NodeUrl) -> Result<Self, TransportError> {
        if node.dialer != "pht" {
            return Err(TransportError::UnsupportedDialer(node.dialer.clone()));
        }
        Ok(Self::plain(&node.addr))
    }

    /// A plain-HTTP client whose connections all go to `addr` (`host:port`).
    pub fn plain(addr: &str) -> Self {
        let connector = NodeConnector {
            addr: Arc::from(addr),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        HyperFetch { client }
    }

    fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, FetchError> {
        let uri: Uri = url.parse().map_err(FetchError::new)?;
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req.body(Full::new(body)).map_err(FetchError::new)
    }
}

impl Fetch for HyperFetch {
    type Body = HyperBody;

    async fn get(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<FetchResponse<HyperBody>, FetchError> {
        let req = self.request(Method::GET, url, headers, Bytes::new())?;
        let resp = self.client.request(req).await.map_err(fetch_error)?;
        let status = resp.status().as_u16();
        Ok(FetchResponse {
            status,
            body: HyperBody(resp.into_body().into_data_stream()),
        })
    }

    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<(u16, Bytes), FetchError> {
        let req = self.request(Method::POST, url, headers, body)?;
        let resp = self.client.request(req).await.map_err(fetch_error)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_SMALL_BODY)
            .collect()
            .await
            .map_err(FetchError::new)?
            .to_bytes();
        Ok((status, body))
    }
}

fn fetch_error(e: hyper_util::client::legacy::Error) -> FetchError {
    // The legacy client's Display hides the cause ("client error (Connect)").
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    FetchError(msg)
}

/// A pull response body as a stream of chunks.
pub struct HyperBody(BodyDataStream<Incoming>);

impl Stream for HyperBody {
    type Item = Result<Bytes, FetchError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|o| o.map(|r| r.map_err(FetchError::new)))
    }
}

/// Dials the node's address for every connection, with TCP_NODELAY (PHT is request/response
/// bound: Nagle would add a delay to every small POST).
#[derive(Clone)]
struct NodeConnector {
    addr: Arc<str>,
}

impl tower_service::Service<Uri> for NodeConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let addr = self.addr.clone();
        Box::pin(async move {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*addr))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {addr} timed out"),
                    )
                })??;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}
