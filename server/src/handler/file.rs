//! Static files (`file`): serves the directory `dir` (default `.`) over HTTP/1.1, so one
//! `pht-server` process can serve a web page and the tunnels it opens:
//!
//! ```text
//! pht-server -L "file://127.0.0.1:8080?dir=web" -L "http+pht://127.0.0.1:8443?cors=*"
//! ```
//!
//! `GET` and `HEAD` only (else 405); `..` in a path is refused (400); a directory serves its
//! `index.html` (a directory path without its trailing `/` is redirected to it first, so
//! relative links resolve); anything missing is 404.

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use percent_encoding::percent_decode_str;
use tokio_util::io::ReaderStream;
use tracing::debug;

use super::{Handler, HandlerError};
use crate::config::ServiceConfig;
use crate::listener::Accepted;

pub struct FileHandler {
    service: String,
    root: Arc<PathBuf>,
    header_timeout: std::time::Duration,
}

impl FileHandler {
    pub fn new(svc: &ServiceConfig) -> Result<Self, HandlerError> {
        let dir = svc
            .handler
            .metadata
            .get_str("dir")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| ".".into());
        let root = PathBuf::from(&dir);
        if !root.is_dir() {
            return Err(HandlerError::Invalid {
                kind: svc.handler.kind.clone(),
                reason: format!("dir {dir:?} is not a directory"),
            });
        }
        let header_timeout = svc
            .handler
            .metadata
            .get_duration("headerTimeout")
            .map_err(|e| HandlerError::Invalid {
                kind: svc.handler.kind.clone(),
                reason: e.to_string(),
            })?
            .unwrap_or(crate::listener::DEFAULT_HEADER_TIMEOUT)
            .max(std::time::Duration::from_millis(10));
        Ok(FileHandler {
            service: svc.name.clone(),
            root: Arc::new(root),
            header_timeout,
        })
    }
}

impl Handler for FileHandler {
    fn handle(&self, conn: Accepted) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let peer = conn.peer;
            let service = self.service.clone();
            let root = self.root.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let root = root.clone();
                let service = service.clone();
                async move {
                    let resp = serve(&root, req.method(), req.uri()).await;
                    debug!(%service, %peer, "{} {} {}", req.method(), req.uri(), resp.status().as_u16());
                    Ok::<_, Infallible>(resp)
                }
            });
            // A request head must arrive within headerTimeout, from the connection's start
            // and between requests: silent, slow and idle connections are closed.
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_timeout)
                .serve_connection(TokioIo::new(conn.stream), svc)
                .await
            {
                debug!(service = %self.service, %peer, "file connection: {e}");
            }
        })
    }
}

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Bytes read from a file per chunk of the response.
const FILE_CHUNK: usize = 64 * 1024;

/// The `Content-Type` of a file, by extension.
fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "ts" => "application/typescript; charset=utf-8",
        "txt" | "md" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// The file a request path names under `root`, or why it names none.
fn resolve(root: &Path, raw_path: &str) -> Result<PathBuf, StatusCode> {
    let path = percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    if !path.starts_with('/') {
        return Err(StatusCode::BAD_REQUEST);
    }
    let mut out = root.to_path_buf();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(StatusCode::BAD_REQUEST),
            s if s.contains(['\\', '\0']) => return Err(StatusCode::BAD_REQUEST),
            s => out.push(s),
        }
    }
    Ok(out)
}

enum Found {
    /// An open file and its length: streamed, never read whole into memory.
    File(PathBuf, std::fs::File, u64),
    /// A directory asked for without its trailing slash.
    Directory,
    Missing,
}

fn load(path: PathBuf, slash: bool) -> io::Result<Found> {
    let md = match std::fs::metadata(&path) {
        Ok(md) => md,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(Found::Missing);
        }
        Err(e) => return Err(e),
    };
    let path = if md.is_dir() {
        if !slash {
            return Ok(Found::Directory);
        }
        let index = path.join("index.html");
        if !index.is_file() {
            return Ok(Found::Missing);
        }
        index
    } else if md.is_file() {
        path
    } else {
        return Ok(Found::Missing);
    };
    let file = std::fs::File::open(&path)?;
    let len = file.metadata()?.len();
    Ok(Found::File(path, file, len))
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn serve(root: &Arc<PathBuf>, method: &Method, uri: &http::Uri) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let raw = uri.path();
    let path = match resolve(root, raw) {
        Ok(p) => p,
        Err(status) => return plain(status, "bad path"),
    };
    let slash = raw.ends_with('/');
    let found = tokio::task::spawn_blocking(move || load(path, slash)).await;
    let (path, file, len) = match found {
        Ok(Ok(Found::File(path, file, len))) => (path, file, len),
        Ok(Ok(Found::Missing)) => return plain(StatusCode::NOT_FOUND, "not found"),
        Ok(Ok(Found::Directory)) => {
            let mut location = format!("{raw}/");
            if let Some(q) = uri.query() {
                location.push('?');
                location.push_str(q);
            }
            let mut resp = plain(StatusCode::MOVED_PERMANENTLY, "moved");
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return resp;
        }
        Ok(Err(_)) | Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "read failed"),
    };
    let body = if method == Method::HEAD {
        full(Bytes::new())
    } else {
        let chunks = ReaderStream::with_capacity(tokio::fs::File::from_std(file), FILE_CHUNK);
        StreamBody::new(chunks.map_ok(Frame::data)).boxed_unsync()
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for (f, t) in [
            ("a.html", "text/html; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.mjs", "text/javascript; charset=utf-8"),
            ("a.wasm", "application/wasm"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.json", "application/json"),
            ("a.d.ts", "application/typescript; charset=utf-8"),
            ("a.js.map", "application/json"),
            ("a.bin", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(f)), t, "{f}");
        }
    }

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/srv");
        assert_eq!(resolve(root, "/a/b.js").unwrap(), Path::new("/srv/a/b.js"));
        assert_eq!(resolve(root, "/./a//b").unwrap(), Path::new("/srv/a/b"));
        assert_eq!(resolve(root, "/a%20b").unwrap(), Path::new("/srv/a b"));
        for bad in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/a%2f..%2fb",
            "/a\\b",
            "/%ff",
        ] {
            assert_eq!(resolve(root, bad), Err(StatusCode::BAD_REQUEST), "{bad}");
        }
    }

    #[tokio::test]
    async fn serves_files_indexes_and_errors() {
        let dir = std::env::temp_dir().join(format!("pht-file-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("index.html"), "<p>hi</p>").unwrap();
        std::fs::write(dir.join("sub/m.wasm"), [0, 97, 115, 109]).unwrap();
        let root = Arc::new(dir.clone());
        let get = |p: &str| p.parse::<http::Uri>().unwrap();

        let r = serve(&root, &Method::GET, &get("/")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let r = serve(&root, &Method::HEAD, &get("/sub/m.wasm")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/wasm");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "4");
        let r = serve(&root, &Method::GET, &get("/sub?x=1")).await;
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()[header::LOCATION], "/sub/?x=1");
        let r = serve(&root, &Method::GET, &get("/sub/")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "no index.html in sub/");
        let r = serve(&root, &Method::GET, &get("/nope.js")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = serve(&root, &Method::GET, &get("/index.html/x")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = serve(&root, &Method::GET, &get("/../x")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = serve(&root, &Method::POST, &get("/")).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
