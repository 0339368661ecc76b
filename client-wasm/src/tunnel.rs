//! `connect()` and the tunnel object: a web-streams face on pht-core's tunnel.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures::future::poll_fn;
use futures::{AsyncRead, AsyncWrite, Sink};
use js_sys::{Promise, Uint8Array};
use pht_core::Connected;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};

use crate::fetch::GlooFetch;
use crate::options;

#[wasm_bindgen]
extern "C" {
    /// A JS `ConnectOptions` object (see the TypeScript declaration).
    #[wasm_bindgen(typescript_type = "ConnectOptions")]
    pub type ConnectOptions;
    #[wasm_bindgen(typescript_type = "ReadableStream<Uint8Array>")]
    pub type ByteReadableStream;
    #[wasm_bindgen(typescript_type = "WritableStream<Uint8Array>")]
    pub type ByteWritableStream;
    #[wasm_bindgen(typescript_type = "Promise<void>")]
    pub type VoidPromise;
}

/// Bytes handed to the reader per chunk at most.
const READ_CHUNK: usize = 64 * 1024;

type Stream = Connected<pht_core::Tunnel>;

/// What the readable, the writable, `close()` and the driver task share.
struct State {
    /// The tunnel after its connector handshake; `None` once released (closed or failed).
    stream: Option<Stream>,
    /// The first failure seen: `closed` rejects with it.
    error: Option<String>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    closer: Option<Waker>,
}

type Shared = Rc<RefCell<State>>;

impl State {
    /// Lets the tunnel go: dropping it makes pht-core send the close request and end the
    /// driver. Everyone waiting on this state is woken to see it.
    fn release(&mut self, error: Option<String>) {
        if self.error.is_none() {
            self.error = error;
        }
        let stream = self.stream.take();
        for w in [self.reader.take(), self.writer.take(), self.closer.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
        drop(stream);
    }

    fn closed_error(&self) -> JsValue {
        js_sys::Error::new(self.error.as_deref().unwrap_or("tunnel closed")).into()
    }
}

thread_local! {
    static IGNORE: Closure<dyn FnMut(JsValue)> = Closure::new(|_| {});
}

/// An open PHT tunnel: a byte stream to the target, as a pair of web streams.
///
/// PHT/1 has no half-close: `writable.close()` ends the whole tunnel once the bytes written
/// before it have been sent, as `close()` does at once. When the far end closes, `readable`
/// ends. `readable.cancel()` and `writable.abort()` only stop using that side; `close()`
/// ends the tunnel.
#[wasm_bindgen]
pub struct Tunnel {
    readable: JsValue,
    writable: JsValue,
    closed: Promise,
    state: Shared,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.borrow();
        f.debug_struct("Tunnel")
            .field("open", &st.stream.is_some())
            .field("error", &st.error)
            .finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl Tunnel {
    /// Bytes from the target. Ends when the tunnel is closed (by either side); errors with
    /// the cause when the tunnel breaks.
    #[wasm_bindgen(getter)]
    pub fn readable(&self) -> ByteReadableStream {
        self.readable.clone().unchecked_into()
    }

    /// Bytes to the target (`Uint8Array` chunks; any `BufferSource` or a string is taken
    /// too). A write resolves once its bytes are queued for the next push request.
    #[wasm_bindgen(getter)]
    pub fn writable(&self) -> ByteWritableStream {
        self.writable.clone().unchecked_into()
    }

    /// Settles when the tunnel is over and its close request has been sent: after
    /// `close()`, `writable.close()`, or once `readable` has reported its end or error
    /// (keep reading it). Rejects with the cause if the tunnel failed.
    #[wasm_bindgen(getter)]
    pub fn closed(&self) -> VoidPromise {
        self.closed.clone().unchecked_into()
    }

    /// Closes the tunnel at once (bytes not yet queued by a pending write are dropped) and
    /// resolves when the close request has been sent. Never rejects; see `closed`.
    pub fn close(&self) -> VoidPromise {
        self.state.borrow_mut().release(None);
        let closed = JsFuture::from(self.closed.clone());
        wasm_bindgen_futures::future_to_promise(async move {
            let _ = closed.await;
            Ok(JsValue::UNDEFINED)
        })
        .unchecked_into()
    }
}

/// Opens a tunnel to a PHT server and, unless the connector is `forward`, asks the server's
/// handler for `options.target` through it.
///
/// `serverUrl` is a gost node URL (`socks5+pht://user:pass@host:port?pushPath=/up`) or a
/// plain `http(s)://host:port` URL. Rejects with an `Error` naming the cause: the server
/// is unreachable (`authorize request failed: ...`), refused a request
/// (`pull refused by server: HTTP 403 ...`), or the handshake failed
/// (`http connect: HTTP/1.1 407 Proxy Authentication Required`).
#[wasm_bindgen]
pub async fn connect(
    #[wasm_bindgen(js_name = "serverUrl")] server_url: String,
    options: Option<ConnectOptions>,
) -> Result<Tunnel, JsError> {
    let options = options.map(JsValue::from).unwrap_or(JsValue::UNDEFINED);
    let plan = options::plan(&server_url, &options).map_err(|e| JsError::new(&e))?;

    let (tunnel, driver) = pht_core::open(GlooFetch::new(), plan.config)
        .await
        .map_err(|e| JsError::new(&e.to_string()))?;

    let state: Shared = Rc::new(RefCell::new(State {
        stream: None,
        error: None,
        reader: None,
        writer: None,
        closer: None,
    }));

    // `closed`: settles when the driver is done and the tunnel has been released.
    let mut settle = None;
    let closed = Promise::new(&mut |resolve, reject| settle = Some((resolve, reject)));
    let (resolve, reject) = settle.expect("the Promise executor runs at once");
    // A rejection nobody listens to must not take a Node process down.
    IGNORE.with(|f| {
        let _ = closed.catch(f);
    });
    let task_state = state.clone();
    spawn_local(async move {
        driver.await;
        poll_fn(|cx| {
            let mut st = task_state.borrow_mut();
            if st.stream.is_none() {
                Poll::Ready(())
            } else {
                st.closer = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let st = task_state.borrow();
        let _ = match &st.error {
            None => resolve.call0(&JsValue::UNDEFINED),
            Some(_) => reject.call1(&JsValue::UNDEFINED, &st.closed_error()),
        };
    });

    let connected = pht_core::handshake(tunnel, plan.connector, &plan.target, plan.auth.as_ref())
        .await
        .map_err(|e| JsError::new(&e.to_string()))?;
    state.borrow_mut().stream = Some(connected);

    let readable = wasm_streams::ReadableStream::from_stream(ReadSide {
        state: state.clone(),
        buf: vec![0; READ_CHUNK].into_boxed_slice(),
    })
    .into_raw();
    let writable = wasm_streams::WritableStream::from_sink(WriteSide {
        state: state.clone(),
        pending: Vec::new(),
        pos: 0,
    })
    .into_raw();
    Ok(Tunnel {
        readable: readable.into(),
        writable: writable.into(),
        closed,
        state,
    })
}

/// The source of `readable`.
struct ReadSide {
    state: Shared,
    buf: Box<[u8]>,
}

impl futures::Stream for ReadSide {
    type Item = Result<JsValue, JsValue>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut st = this.state.borrow_mut();
        let Some(stream) = st.stream.as_mut() else {
            // Released: an error seen by the other side is this side's error too.
            return Poll::Ready(st.error.is_some().then(|| Err(st.closed_error())));
        };
        match Pin::new(stream).poll_read(cx, &mut this.buf) {
            Poll::Pending => {
                st.reader = Some(cx.waker().clone());
                Poll::Pending
            }
            Poll::Ready(Ok(0)) => {
                st.release(None);
                Poll::Ready(None)
            }
            Poll::Ready(Ok(n)) => Poll::Ready(Some(Ok(Uint8Array::from(&this.buf[..n]).into()))),
            Poll::Ready(Err(e)) => {
                st.release(Some(e.to_string()));
                Poll::Ready(Some(Err(st.closed_error())))
            }
        }
    }
}

/// The sink of `writable`: each chunk is queued into the tunnel (pht-core coalesces
/// queued bytes into push requests of up to `maxPushSize`).
struct WriteSide {
    state: Shared,
    pending: Vec<u8>,
    pos: usize,
}

impl WriteSide {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JsValue>> {
        let mut st = self.state.borrow_mut();
        loop {
            let Some(stream) = st.stream.as_mut() else {
                return Poll::Ready(Err(st.closed_error()));
            };
            if self.pos == self.pending.len() {
                self.pending = Vec::new();
                self.pos = 0;
                return Poll::Ready(Ok(()));
            }
            match Pin::new(stream).poll_write(cx, &self.pending[self.pos..]) {
                Poll::Pending => {
                    st.writer = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    st.release(Some("tunnel write returned 0 bytes".into()));
                }
                Poll::Ready(Ok(n)) => self.pos += n,
                Poll::Ready(Err(e)) => st.release(Some(e.to_string())),
            }
        }
    }
}

impl Sink<JsValue> for WriteSide {
    type Error = JsValue;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), JsValue>> {
        self.get_mut().poll_drain(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: JsValue) -> Result<(), JsValue> {
        let this = self.get_mut();
        this.pending = chunk_bytes(&item)?;
        this.pos = 0;
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), JsValue>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), JsValue>> {
        let this = self.get_mut();
        {
            let st = this.state.borrow();
            if st.stream.is_none() {
                // Already closed by `close()` or the far end: nothing left to do.
                return Poll::Ready(match st.error {
                    Some(_) => Err(st.closed_error()),
                    None => Ok(()),
                });
            }
        }
        futures::ready!(this.poll_drain(cx))?;
        let mut st = this.state.borrow_mut();
        let Some(stream) = st.stream.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match Pin::new(stream).poll_close(cx) {
            Poll::Pending => {
                st.writer = Some(cx.waker().clone());
                Poll::Pending
            }
            Poll::Ready(Ok(())) => {
                st.release(None);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                st.release(Some(e.to_string()));
                Poll::Ready(Err(st.closed_error()))
            }
        }
    }
}

/// The bytes of a written chunk: any `BufferSource`, or a string (as UTF-8).
fn chunk_bytes(v: &JsValue) -> Result<Vec<u8>, JsValue> {
    if let Some(a) = v.dyn_ref::<Uint8Array>() {
        return Ok(a.to_vec());
    }
    if let Some(b) = v.dyn_ref::<js_sys::ArrayBuffer>() {
        return Ok(Uint8Array::new(b).to_vec());
    }
    if js_sys::ArrayBuffer::is_view(v) {
        let get = |k: &str| js_sys::Reflect::get(v, &JsValue::from_str(k)).unwrap_or_default();
        let bytes = Uint8Array::new_with_byte_offset_and_length(
            &get("buffer"),
            get("byteOffset").as_f64().unwrap_or(0.0) as u32,
            get("byteLength").as_f64().unwrap_or(0.0) as u32,
        );
        return Ok(bytes.to_vec());
    }
    if let Some(s) = v.as_string() {
        return Ok(s.into_bytes());
    }
    Err(js_sys::TypeError::new(
        "tunnel.writable takes Uint8Array chunks (or any BufferSource, or strings)",
    )
    .into())
}
