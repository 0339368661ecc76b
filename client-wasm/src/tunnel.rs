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

use crate::clock::JsClock;
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

/// Bytes handed to the reader per chunk at most. Each chunk costs a promise and a trip
/// through the stream machinery on both sides, and Chromium hands a fast download to the
/// tunnel in pieces of about a megabyte: a chunk takes whatever has arrived, up to this.
const READ_CHUNK: usize = 256 * 1024;

type Stream = Connected<pht_core::Tunnel>;

/// What the readable, the writable, `close()` and the driver task share.
struct State {
    /// The tunnel after its connector handshake; `None` once released (closed, ended, or
    /// failed and read to its error).
    stream: Option<Stream>,
    /// The first failure seen: `closed` rejects with it, and `readable` errors with it.
    error: Option<String>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    closer: Option<Waker>,
    /// `readable` and `writable`, held while the tunnel is live. Their sources are dropped
    /// when they are cancelled or aborted (which resets the tunnel), but also when they are
    /// garbage-collected (wasm-bindgen's weak refs): a page keeping only `readable` must
    /// not have its tunnel reset when the unused `writable` is collected.
    streams: Option<(JsValue, JsValue)>,
    /// The connector handshake is still running (`stream` is not set yet).
    opening: bool,
    /// The version last read from `stream`, kept for after it is released.
    version: u8,
    /// PHT/2 half-closes: the readable has ended in order (the far end's FIN) while the
    /// writable is still open...
    read_ended: bool,
    /// ...or the writable has been closed (its FIN acknowledged) while the readable still
    /// delivers. The tunnel is let go once both have ended.
    write_ended: bool,
}

type Shared = Rc<RefCell<State>>;

impl State {
    /// Records a failure (the first one wins) without letting the tunnel go: the reader
    /// still gets the bytes that arrived before it, then the error.
    fn fail(&mut self, error: String) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        if let Some(w) = self.closer.take() {
            w.wake();
        }
    }

    /// Lets the tunnel go: dropping it makes pht-core send the close request (or, after a
    /// failure or reset, nothing more) and end the driver. Everyone waiting on this state
    /// is woken to see it. A failure of the tunnel that nobody has seen yet is recorded
    /// first, so that it never turns into a clean end.
    fn release(&mut self, error: Option<String>) {
        if self.error.is_none() {
            self.error = error.or_else(|| self.stream.as_mut().and_then(tunnel_error));
        }
        self.version();
        let stream = self.stream.take();
        self.streams = None;
        for w in [self.reader.take(), self.writer.take(), self.closer.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
        drop(stream);
    }

    /// Ends the tunnel as an error on this side's request (`readable.cancel()`,
    /// `writable.abort()`): pht-core tells the server to reset the far end.
    fn reset(&mut self) {
        if let Some(stream) = self.stream.as_mut() {
            stream.get_mut().reset();
            self.fail(pht_core::Error::Aborted.to_string());
        }
    }

    /// The PHT version the tunnel speaks (`2` can only appear later, once a minted token's
    /// first pull has answered).
    fn version(&mut self) -> u8 {
        if let Some(stream) = &self.stream {
            self.version = stream.get_ref().version();
        }
        self.version
    }

    /// One direction has ended cleanly while the other may go on: PHT/2 only, and only
    /// while nothing has failed. PHT/1 has no half-close: either end is the tunnel's end.
    fn half_closes(&mut self) -> bool {
        self.error.is_none() && self.version() == 2
    }

    fn closed_error(&self) -> JsValue {
        js_sys::Error::new(self.error.as_deref().unwrap_or("tunnel closed")).into()
    }
}

/// The tunnel's failure, if it has failed: pht-core reports it to every later flush.
fn tunnel_error(stream: &mut Stream) -> Option<String> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match Pin::new(stream.get_mut()).poll_flush(&mut cx) {
        Poll::Ready(Err(e)) => Some(e.to_string()),
        _ => None,
    }
}

thread_local! {
    static IGNORE: Closure<dyn FnMut(JsValue)> = Closure::new(|_| {});
}

/// An open PHT tunnel: a byte stream to the target, as a pair of web streams.
///
/// On PHT/2 (`version` 2) each direction ends on its own, as in TCP: `writable.close()`
/// sends an end of stream to the target while `readable` goes on until the target ends
/// too, and `readable` ends when the target has finished while `writable` goes on. The
/// tunnel is over once both have ended, or at `close()`. PHT/1 has no half-close: either
/// end, or `close()`, ends the whole tunnel (`writable.close()` once the bytes written
/// before it have been sent).
///
/// `readable` ends only in order; when the tunnel breaks (PHT/2: requests that keep
/// failing for `resumeTimeout`, a reset by the server; PHT/1: any failed or refused
/// request, `requestTimeout`, `heartbeatTimeout`), `readable` errors with an `Error`
/// naming the cause, after the bytes that did arrive, and `closed` rejects with the same
/// message. `writable.abort()` and `readable.cancel()` reset the tunnel: the far end sees
/// a reset, not a clean end.
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
    /// Bytes from the target. Ends when the target has finished sending (PHT/2) or the
    /// tunnel is closed in order (PHT/1: by either side); errors with the cause when the
    /// tunnel breaks. `cancel()` resets the tunnel.
    #[wasm_bindgen(getter)]
    pub fn readable(&self) -> ByteReadableStream {
        self.readable.clone().unchecked_into()
    }

    /// Bytes to the target (`Uint8Array` chunks; any `BufferSource` or a string is taken
    /// too). A write resolves once its bytes are queued for the next push request.
    /// `close()` resolves once the server has them all: on PHT/2 the target then reads an
    /// end of stream and `readable` goes on; on PHT/1 the tunnel is closed. `abort()`
    /// resets the tunnel.
    #[wasm_bindgen(getter)]
    pub fn writable(&self) -> ByteWritableStream {
        self.writable.clone().unchecked_into()
    }

    /// Settles when the tunnel is over and its last request has been sent. Resolves after
    /// `close()`, or once both `writable.close()` has resolved and `readable` has reported
    /// its clean end (keep reading it); on PHT/1 either of the two is enough. Rejects with
    /// an `Error` naming the cause as soon as the tunnel has failed (`readable` errors with
    /// the same message once the bytes before the failure are read), or with `tunnel reset
    /// by this side` after `writable.abort()` or `readable.cancel()`.
    #[wasm_bindgen(getter)]
    pub fn closed(&self) -> VoidPromise {
        self.closed.clone().unchecked_into()
    }

    /// The PHT version the tunnel speaks: `2` (PHT/2: survives cut requests, half-closes)
    /// or `1` (gost's PHT/1). With `token: "mint"`, the `forward` connector and a server not
    /// yet seen speaking PHT/2 it reads `1` until the first pull has answered (other
    /// connectors wait for that answer in `connect`).
    #[wasm_bindgen(getter)]
    pub fn version(&self) -> u8 {
        self.state.borrow_mut().version()
    }

    /// Where the tunnel stands, or `null` once it has been let go: `{version, received,
    /// sent, queued, writeClosing, writeClosed, readEnded, pushesInFlight, pushWindow,
    /// pushRetries, error}` (byte counts as numbers; `readEnded` is `null` while the
    /// download goes on, then `true` for a clean end or `false` for an error).
    #[wasm_bindgen(getter)]
    pub fn progress(&self) -> JsValue {
        let st = self.state.borrow();
        let Some(stream) = &st.stream else {
            return JsValue::NULL;
        };
        let p = stream.get_ref().progress();
        let o = js_sys::Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = js_sys::Reflect::set(&o, &JsValue::from_str(k), &v);
        };
        set("version", p.version.into());
        set("received", (p.received as f64).into());
        set("sent", (p.sent as f64).into());
        set("queued", (p.queued as f64).into());
        set("writeClosing", p.write_closing.into());
        set("writeClosed", p.write_closed.into());
        set(
            "readEnded",
            p.read_ended.map_or(JsValue::NULL, JsValue::from),
        );
        set("pushesInFlight", (p.pushes_in_flight as f64).into());
        set("pushWindow", (p.push_window as f64).into());
        set("pushRetries", (p.push_retries as f64).into());
        set("error", p.error.map_or(JsValue::NULL, JsValue::from));
        o.into()
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

    let fetch = match plan.dispatcher {
        Some(d) => GlooFetch::with_dispatcher(d),
        None => GlooFetch::new(),
    };
    let (tunnel, driver) = pht_core::open(fetch, JsClock::new(), plan.config)
        .await
        .map_err(|e| JsError::new(&e.to_string()))?;

    let state: Shared = Rc::new(RefCell::new(State {
        stream: None,
        error: None,
        reader: None,
        writer: None,
        closer: None,
        streams: None,
        opening: true,
        version: 1,
        read_ended: false,
        write_ended: false,
    }));

    // `closed`: settles once the driver is done (the last request of the tunnel has been
    // sent) and the tunnel is either released or known to have failed.
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
            let st = &mut *st;
            if st.opening {
                st.closer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let Some(stream) = st.stream.as_mut() else {
                return Poll::Ready(());
            };
            // The driver ends by itself only when the tunnel failed or was reset; the
            // reader may still be reading what arrived before that.
            if st.error.is_none() {
                st.error = tunnel_error(stream);
            }
            if st.error.is_some() {
                return Poll::Ready(());
            }
            st.closer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let mut st = task_state.borrow_mut();
        // Over on the wire: what is left (a failure not yet read) may be collected.
        st.streams = None;
        let _ = match &st.error {
            None => resolve.call0(&JsValue::UNDEFINED),
            Some(_) => reject.call1(&JsValue::UNDEFINED, &st.closed_error()),
        };
    });

    // One turn of the event loop lets the driver start, which is when an authorized
    // tunnel learns its version: `version` is right as soon as the tunnel is handed out,
    // even where no handshake waits for the server (`forward`).
    let _ = JsFuture::from(Promise::resolve(&JsValue::UNDEFINED)).await;
    let handshake =
        pht_core::handshake(tunnel, plan.connector, &plan.target, plan.auth.as_ref()).await;
    let mut st = state.borrow_mut();
    st.opening = false;
    if let Some(w) = st.closer.take() {
        w.wake();
    }
    st.stream = Some(handshake.map_err(|e| JsError::new(&e.to_string()))?);
    drop(st);

    let readable = wasm_streams::ReadableStream::from_stream(ReadSide {
        state: state.clone(),
        buf: vec![0; READ_CHUNK].into_boxed_slice(),
        done: false,
    })
    .into_raw();
    let writable = wasm_streams::WritableStream::from_sink(WriteSide {
        state: state.clone(),
        pending: Vec::new(),
        pos: 0,
        done: false,
    })
    .into_raw();
    state.borrow_mut().streams = Some((readable.clone().into(), writable.clone().into()));
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
    /// The readable has reported its end or error; dropped before that, it was cancelled.
    done: bool,
}

impl futures::Stream for ReadSide {
    type Item = Result<JsValue, JsValue>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut st = this.state.borrow_mut();
        let Some(stream) = st.stream.as_mut() else {
            // Released: by `close()` or a clean `writable.close()` (the end), or after a
            // failure (the error).
            this.done = true;
            return Poll::Ready(st.error.is_some().then(|| Err(st.closed_error())));
        };
        // pht-core returns one received piece per read (a DATA frame, at most 64 KiB):
        // gather what is there into one chunk. The end or an error after those bytes is
        // seen by the next poll.
        let mut filled = 0;
        while filled < this.buf.len() {
            match Pin::new(&mut *stream).poll_read(cx, &mut this.buf[filled..]) {
                Poll::Ready(Ok(n)) if n > 0 => filled += n,
                _ => break,
            }
        }
        if filled > 0 {
            return Poll::Ready(Some(Ok(Uint8Array::from(&this.buf[..filled]).into())));
        }
        match Pin::new(stream).poll_read(cx, &mut this.buf) {
            Poll::Pending => {
                st.reader = Some(cx.waker().clone());
                Poll::Pending
            }
            Poll::Ready(Ok(0)) => {
                // pht-core's clean end: the far end finished (PHT/2), or the server ended
                // the tunnel in order (PHT/1). (A failure recorded by the writer still
                // rejects `closed`: its bytes were lost.)
                this.done = true;
                if st.half_closes() && !st.write_ended {
                    // The writable goes on: the far end may still be reading.
                    st.read_ended = true;
                } else {
                    st.release(None);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Ok(n)) => Poll::Ready(Some(Ok(Uint8Array::from(&this.buf[..n]).into()))),
            Poll::Ready(Err(e)) => {
                this.done = true;
                st.release(Some(e.to_string()));
                Poll::Ready(Some(Err(st.closed_error())))
            }
        }
    }
}

impl Drop for ReadSide {
    /// `readable.cancel()`: nobody will read the far end's bytes any more, so the tunnel
    /// is reset (the far end sees a reset, the writable fails) and let go.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(mut st) = self.state.try_borrow_mut() {
            st.reset();
            st.release(None);
        }
    }
}

/// The sink of `writable`: each chunk is queued into the tunnel (pht-core coalesces
/// queued bytes into push requests of up to `maxPushSize`).
struct WriteSide {
    state: Shared,
    pending: Vec<u8>,
    pos: usize,
    /// The writable has been closed or has failed; dropped before that, it was aborted.
    done: bool,
}

impl WriteSide {
    /// A write failed: the tunnel has failed (pht-core fails both directions at once), and
    /// the reader gets the bytes that did arrive, then the same error.
    fn failed(&mut self, st: &mut State, e: String) -> Poll<Result<(), JsValue>> {
        self.done = true;
        st.fail(e);
        Poll::Ready(Err(st.closed_error()))
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JsValue>> {
        let state = self.state.clone();
        let mut st = state.borrow_mut();
        loop {
            let Some(stream) = st.stream.as_mut() else {
                self.done = true;
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
                    return self.failed(&mut st, "tunnel write returned 0 bytes".into());
                }
                Poll::Ready(Ok(n)) => self.pos += n,
                Poll::Ready(Err(e)) => return self.failed(&mut st, e.to_string()),
            }
        }
    }
}

impl Drop for WriteSide {
    /// `writable.abort()` (or a chunk of the wrong type, which errors the writable): the
    /// tunnel is reset; the reader gets what already arrived, then the error.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(mut st) = self.state.try_borrow_mut() {
            st.reset();
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
                // Already over (`close()`, the far end, a failure): nothing left to do.
                this.done = true;
                return Poll::Ready(match st.error {
                    Some(_) => Err(st.closed_error()),
                    None => Ok(()),
                });
            }
        }
        futures::ready!(this.poll_drain(cx))?;
        let state = this.state.clone();
        let mut st = state.borrow_mut();
        let Some(stream) = st.stream.as_mut() else {
            this.done = true;
            return Poll::Ready(Ok(()));
        };
        match Pin::new(stream).poll_close(cx) {
            Poll::Pending => {
                st.writer = Some(cx.waker().clone());
                Poll::Pending
            }
            Poll::Ready(Ok(())) => {
                this.done = true;
                if st.half_closes() && !st.read_ended {
                    // The readable goes on until the far end's own end.
                    st.write_ended = true;
                    return Poll::Ready(Ok(()));
                }
                // PHT/1 has no half-close: the whole tunnel is over (as it is on PHT/2
                // once the readable has ended too).
                st.release(None);
                match st.error {
                    Some(_) => Poll::Ready(Err(st.closed_error())),
                    None => Poll::Ready(Ok(())),
                }
            }
            Poll::Ready(Err(e)) => this.failed(&mut st, e.to_string()),
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
