//! [`Fetch`] on the platform's `fetch` (browsers, Node ≥ 18), called through web-sys.
//!
//! Every request is a CORS *simple* request, so a page on another origin opens tunnels
//! without preflights: `GET`, and `POST` with `Content-Type: text/plain`. No header is added
//! but those the user configured (which, being custom, do cause preflights).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use js_sys::{Reflect, Uint8Array};
use pht_core::{Fetch, FetchError, FetchResponse};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Request, RequestCache, RequestInit, Response};

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
pub struct JsFetch {
    /// Node: an undici `Dispatcher` (a `ProxyAgent`, say) for every request, passed as
    /// fetch's `dispatcher` option; browsers ignore it.
    dispatcher: Option<JsValue>,
}

impl JsFetch {
    pub fn new() -> Self {
        JsFetch::default()
    }

    /// Sends every request through `dispatcher` (fetch's `dispatcher` option in Node).
    pub fn with_dispatcher(dispatcher: JsValue) -> Self {
        JsFetch {
            dispatcher: Some(dispatcher),
        }
    }

    async fn send(&self, req: Request) -> Result<Response, FetchError> {
        let promise = match &self.dispatcher {
            None => global_fetch(&req),
            Some(d) => {
                let init = js_sys::Object::new();
                Reflect::set(&init, &JsValue::from_str("dispatcher"), d)
                    .map_err(|e| FetchError(describe_js_error(&e)))?;
                global_fetch_with(&req, &init)
            }
        };
        let resp = JsFuture::from(promise)
            .await
            .map_err(|e| FetchError(describe_js_error(&e)))?;
        resp.dyn_into()
            .map_err(|v| FetchError(format!("fetch returned {v:?}, not a Response")))
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

/// A request: `method` to `url` with the configured headers (`init` has the rest).
fn request(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    init: RequestInit,
) -> Result<Request, FetchError> {
    init.set_method(method);
    if !headers.is_empty() || method == "POST" {
        let h = web_sys::Headers::new().map_err(js_err)?;
        for (k, v) in headers {
            h.set(k, v).map_err(js_err)?;
        }
        if method == "POST" {
            // `text/plain` keeps the request simple (no CORS preflight), and gost's server
            // would parse a form content type and lose the data.
            h.set("Content-Type", "text/plain").map_err(js_err)?;
        }
        init.set_headers(&h);
    }
    Request::new_with_str_and_init(url, &init).map_err(js_err)
}

/// A JS exception as `TypeError: message`.
fn js_err(e: JsValue) -> FetchError {
    match e.dyn_ref::<js_sys::Error>() {
        Some(err) => FetchError(err.to_string().into()),
        None => FetchError(describe_js_error(&e)),
    }
}

impl Fetch for JsFetch {
    type Body = FetchBody;

    async fn get(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<FetchResponse<FetchBody>, FetchError> {
        let abort = AbortOnDrop::new();
        let init = RequestInit::new();
        // An authorize answer served from a cache would hand out someone's token again.
        init.set_cache(RequestCache::NoStore);
        init.set_signal(abort.signal().as_ref());
        let resp = self.send(request("GET", url, headers, init)?).await?;
        let chunks = resp
            .body()
            .map(|b| wasm_streams::ReadableStream::from_raw(b.unchecked_into()).into_stream());
        Ok(FetchResponse {
            status: resp.status(),
            content_type: resp.headers().get("content-type").ok().flatten(),
            body: FetchBody { chunks, abort },
        })
    }

    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<(u16, Bytes), FetchError> {
        let mut abort = AbortOnDrop::new();
        let init = RequestInit::new();
        init.set_signal(abort.signal().as_ref());
        init.set_body(&request_body(&body)?);
        drop(body);
        let resp = self.send(request("POST", url, headers, init)?).await?;
        let status = resp.status();
        let buffer = JsFuture::from(resp.array_buffer().map_err(js_err)?)
            .await
            .map_err(js_err)?;
        let answer = Uint8Array::new(&buffer).to_vec();
        abort.disarm();
        Ok((status, Bytes::from(answer)))
    }
}

/// A push body: a `Blob` unless it is empty. Chromium sends a request body given as bytes
/// (a `Uint8Array` or `ArrayBuffer`) at about 6 MB/s on loopback, whatever its size and
/// however many requests run at once, and the same bytes as a `Blob` at 50–80 MB/s; Node
/// takes either at the same speed. The blob copies the bytes when it is made. An empty
/// body (a pure acknowledgement, a close) stays an empty `Uint8Array`: nothing to gain,
/// and no blob to make per request.
fn request_body(body: &[u8]) -> Result<JsValue, FetchError> {
    if body.is_empty() {
        return Ok(Uint8Array::new_with_length(0).into());
    }
    // SAFETY: the view is used by the Blob constructor only, which copies the bytes before
    // anything here can allocate in wasm memory (and so move it).
    let view = unsafe { Uint8Array::view(body) };
    web_sys::Blob::new_with_u8_array_sequence(&js_sys::Array::of1(&view))
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
