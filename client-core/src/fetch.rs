//! The HTTP client a tunnel runs on: implemented with hyper natively and with the
//! browser/Node `fetch` on wasm32.

use std::future::Future;

use bytes::Bytes;
use futures::Stream;

use crate::{FetchError, MaybeSend, MaybeSync};

/// A POST body in the pieces the upload queue holds it in. A transport that can send
/// pieces (hyper's vectored writes, HTTP/2 and HTTP/3 DATA frames, a `Blob` made of
/// several arrays) sends them as they are; a bulk upload's bytes are then never copied
/// between the application's write and the socket.
///
/// ```
/// use bytes::Bytes;
/// use pht_core::PostBody;
/// let mut b = PostBody::from(Bytes::from_static(b"hel"));
/// b.push(Bytes::from_static(b"lo"));
/// assert_eq!((b.len(), b.parts().len()), (5, 2));
/// assert_eq!(b.to_bytes(), Bytes::from_static(b"hello"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostBody {
    parts: Vec<Bytes>,
    len: usize,
}

impl PostBody {
    /// Appends a piece (an empty one is dropped).
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.parts.push(b);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    pub fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }

    /// The body as one buffer: a copy only when it is in several pieces.
    pub fn to_bytes(&self) -> Bytes {
        match &self.parts[..] {
            [] => Bytes::new(),
            [one] => one.clone(),
            parts => parts.concat().into(),
        }
    }
}

impl From<Bytes> for PostBody {
    fn from(b: Bytes) -> Self {
        let mut body = PostBody::default();
        body.push(b);
        body
    }
}

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
        body: PostBody,
    ) -> impl Future<Output = Result<(u16, Bytes), FetchError>> + MaybeSend;
}
