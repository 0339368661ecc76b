//! The HTTP client a tunnel runs on: implemented with hyper natively and with the
//! browser/Node `fetch` on wasm32.

use std::future::Future;

use bytes::Bytes;
use futures::Stream;

use crate::{FetchError, MaybeSend, MaybeSync};

/// A response whose body arrives as a stream of chunks split anywhere.
pub struct FetchResponse<B> {
    pub status: u16,
    /// The `Content-Type` header, if any (a PHT/2 pull says `application/octet-stream`;
    /// gost's pulls carry none).
    pub content_type: Option<String>,
    pub body: B,
}

/// The two requests PHT needs. URLs are absolute (`http://host:port/path?query`) and already
/// carry the `host` override, if any; `headers` are the user's extra request headers.
///
/// Implementations must not add headers of their own that would make a browser send a CORS
/// preflight, and must let a dropped body stream abort its request.
pub trait Fetch: MaybeSend + MaybeSync + 'static {
    /// The streamed GET body.
    type Body: Stream<Item = Result<Bytes, FetchError>> + Unpin + MaybeSend + 'static;

    /// `GET url`, resolving once the status line and headers have arrived.
    fn get(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> impl Future<Output = Result<FetchResponse<Self::Body>, FetchError>> + MaybeSend;

    /// `POST url` with `body`, resolving to the status and the whole (small) response body.
    /// The content type, if any, must be `text/plain`: gost's server parses form bodies and
    /// would swallow the data, and a browser sends no preflight for `text/plain`.
    fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> impl Future<Output = Result<(u16, Bytes), FetchError>> + MaybeSend;
}
