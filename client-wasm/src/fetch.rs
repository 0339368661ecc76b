//! [`Fetch`] on the platform's `fetch` (browsers, Node ≥ 18), through gloo-net.
//!
//! Every request is a CORS *simple* request, so a page on another origin opens tunnels
//! without preflights: `GET`, and `POST` with `Content-Type: text/plain`. No header is added
//! but those the user configured (which, being custom, do cause preflights).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use gloo_net::http::{Request, RequestBuilder, Response};
use js_sys::{Reflect, Uint8Array};
use pht_core::{Fetch, FetchError, FetchResponse, PostBody};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, RequestCache};

#[wasm_bindgen]
extern "C" {
    /// The global `fetch`, called directly so that a failure keeps its `cause` (Node puts
    /// the socket error there: `connect ECONNREFUSED ...`).
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &web_sys::Request) -> js_sys::Promise;

    /// The same with an init object (for Node's `dispatcher`).
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch_with(request: &web_sys::Request, init: &JsValue) -> js_sys::Promise;
}

/// The fetch transport of a tunnel. The platform pools connections.
#[derive(Debug, Clone, Default)]
pub struct GlooFetch {
    /// Node: an undici `Dispatcher` (a `ProxyAgent`, say) for every request, passed as
    /// fetch's `dispatcher` option; browsers ignore it.
    dispatcher: Option<JsValue>,
}

impl GlooFetch {
    pub fn new() -> Self {
        GlooFetch::default()
    }

    /// Sends every request through `dispatcher` (fetch's `dispatcher` option in Node).
    pub fn with_dispatcher(dispatcher: JsValue) -> Self {
        GlooFetch {
            dispatcher: Some(dispatcher),
        }
    }

    async fn send(&self, req: Request) -> Result<Response, FetchError> {
        let raw: web_sys::Request = req.into();
        let promise = match &self.dispatcher {
            None => global_fetch(&raw),
            Some(d) => {
                let init = js_sys::Object::new();
                Reflect::set(&init, &JsValue::from_str("dispatcher"), d)
                    .map_err(|e| FetchError(describe_js_error(&e)))?;
                global_fetch_with(&raw, &init)
            }
        };
        let resp = JsFuture::from(promise)
            .await
            .map_err(|e| FetchError(describe_js_error(&e)))?;
        let resp: web_sys::Response = resp
            .dyn_into()
            .map_err(|v| FetchError(format!("fetch returned {v:?}, not a Response")))?;
        Ok(Response::from(resp))
    }
}

/// A streamed response body. Dropping it cancels the body stream and aborts the request.
pub struct FetchBody {
    chunks: Option<wasm_streams::readable::IntoStream<'static>>,
    abort: AbortOnDrop,
}

impl std::fmt::Debug for FetchBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchBody").finish_non_exhaustive()
    }
}

impl Stream for FetchBody {
    type Item = Result<Bytes, FetchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(chunks) = self.chunks.as_mut() else {
            self.abort.disarm();
            return Poll::Ready(None);
        };
        match Pin::new(chunks).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.chunks = None;
                self.abort.disarm();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(chunk))) => {
                let bytes = chunk.unchecked_into::<Uint8Array>().to_vec();
                Poll::Ready(Some(Ok(Bytes::from(bytes))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.chunks = None;
                Poll::Ready(Some(Err(FetchError(describe_js_error(&e)))))
            }
        }
    }
}

/// Aborts its request when dropped before it completed: a pull that is given up on must
/// not keep its connection busy (browsers allow six per server).
struct AbortOnDrop(Option<AbortController>);

impl AbortOnDrop {
    fn new() -> Self {
        AbortOnDrop(AbortController::new().ok())
    }

    fn signal(&self) -> Option<web_sys::AbortSignal> {
        self.0.as_ref().map(|c| c.signal())
    }

    /// The request is complete: nothing left to abort (and nothing to disturb in the
    /// connection it leaves to the pool).
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.abort();
        }
    }
}

fn with_headers(mut req: RequestBuilder, headers: &[(String, String)]) -> RequestBuilder {
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req
}

fn build_err(e: gloo_net::Error) -> FetchError {
    FetchError(e.to_string())
}

impl Fetch for GlooFetch {
    type Body = FetchBody;

    async fn get(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<FetchResponse<FetchBody>, FetchError> {
        let abort = AbortOnDrop::new();
        let req = with_headers(Request::get(url), headers)
            // An authorize answer served from a cache would hand out someone's token again.
            .cache(RequestCache::NoStore)
            .abort_signal(abort.signal().as_ref())
            .build()
            .map_err(build_err)?;
        let resp = self.send(req).await?;
        let chunks = resp
            .body()
            .map(|b| wasm_streams::ReadableStream::from_raw(b.unchecked_into()).into_stream());
        Ok(FetchResponse {
            status: resp.status(),
            content_type: resp.headers().get("content-type"),
            body: FetchBody { chunks, abort },
        })
    }

    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: PostBody,
    ) -> Result<(u16, Bytes), FetchError> {
        let mut abort = AbortOnDrop::new();
        let req = with_headers(Request::post(url), headers)
            // `text/plain` keeps the request simple (no CORS preflight), and gost's server
            // would parse a form content type and lose the data.
            .header("Content-Type", "text/plain")
            .abort_signal(abort.signal().as_ref())
            .body(request_body(&body)?)
            .map_err(build_err)?;
        drop(body);
        let resp = self.send(req).await?;
        let status = resp.status();
        let answer = resp.binary().await.map_err(build_err)?;
        abort.disarm();
        Ok((status, Bytes::from(answer)))
    }
}

/// A push body: a `Blob` unless it is empty. Chromium sends a request body given as bytes
/// (a `Uint8Array` or `ArrayBuffer`) at about 6 MB/s on loopback, whatever its size and
/// however many requests run at once, and the same bytes as a `Blob` at 50–80 MB/s; Node
/// takes either at the same speed. The blob copies the bytes, from every piece of the
/// body, when it is made: the pieces are never joined in wasm memory first. An empty
/// body (a pure acknowledgement, a close) stays an empty `Uint8Array`: nothing to gain,
/// and no blob to make per request.
fn request_body(body: &PostBody) -> Result<JsValue, FetchError> {
    if body.is_empty() {
        return Ok(Uint8Array::new_with_length(0).into());
    }
    let parts = js_sys::Array::new();
    for p in body.parts() {
        // SAFETY: the views are used by the Blob constructor only, which copies the bytes
        // before anything here can allocate in wasm memory (and so move it).
        parts.push(&unsafe { Uint8Array::view(p) }.into());
    }
    web_sys::Blob::new_with_u8_array_sequence(&parts)
        .map(JsValue::from)
        .map_err(|e| FetchError(format!("making the push body: {}", describe_js_error(&e))))
}

/// `TypeError: fetch failed (connect ECONNREFUSED 127.0.0.1:1)`: an error's own text and,
/// where the platform gives one, its cause's message.
pub(crate) fn describe_js_error(e: &JsValue) -> String {
    let Some(err) = e.dyn_ref::<js_sys::Error>() else {
        return e.as_string().unwrap_or_else(|| format!("{e:?}"));
    };
    let mut text = String::from(err.to_string());
    let cause = Reflect::get(err, &JsValue::from_str("cause")).unwrap_or(JsValue::UNDEFINED);
    if let Some(c) = cause.dyn_ref::<js_sys::Error>() {
        let msg = String::from(c.message());
        if !msg.is_empty() {
            text.push_str(&format!(" ({msg})"));
        }
    } else if let Some(s) = cause.as_string() {
        text.push_str(&format!(" ({s})"));
    }
    text
}
