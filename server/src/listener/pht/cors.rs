//! CORS for PHT endpoints, so web pages on other origins can open tunnels.
//!
//! The wasm client only sends simple requests (GET; POST with `text/plain`), which need no
//! preflight; OPTIONS is still answered for pages that add their own headers.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::config::{Metadata, MetadataError};

/// Which origins may read PHT responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// `None`: any origin (`cors=*`); otherwise the listed origins only.
    origins: Option<Vec<String>>,
    /// `corsMaxAge`: how long a browser may cache a preflight answer (default 24h).
    max_age: Duration,
}

impl Cors {
    /// Reads `cors` (`*` or a comma list of origins) and `corsMaxAge`; no `cors`, no CORS.
    pub fn from_metadata(md: &Metadata) -> Result<Option<Cors>, MetadataError> {
        let Some(v) = md.get_str("cors").filter(|v| !v.trim().is_empty()) else {
            return Ok(None);
        };
        let origins = if v.trim() == "*" {
            None
        } else {
            Some(
                v.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_string())
                    .filter(|o| !o.is_empty())
                    .collect(),
            )
        };
        let max_age = md
            .get_duration("corsMaxAge")?
            .unwrap_or(Duration::from_secs(86_400));
        Ok(Some(Cors { origins, max_age }))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match (&self.origins, origin) {
            (None, _) => Some(HeaderValue::from_static("*")),
            (Some(list), Some(o)) => {
                let s = o.to_str().ok()?;
                list.iter().any(|a| a == s).then(|| o.clone())
            }
            (Some(_), None) => None,
        }
    }

    /// Adds the allow-origin header to a PHT response.
    pub fn decorate<B>(&self, origin: Option<&HeaderValue>, resp: &mut Response<B>) {
        let h = resp.headers_mut();
        if let Some(v) = self.allow(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        if self.origins.is_some() {
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }

    /// Answers a preflight: 204 with the methods and the headers the page asked for.
    pub fn preflight<B: Default>(&self, req_headers: &HeaderMap) -> Response<B> {
        let mut resp = Response::new(B::default());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        self.decorate(req_headers.get(header::ORIGIN), &mut resp);
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        if let Some(asked) = req_headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(self.max_age.as_secs()),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> Metadata {
        let mut m = Metadata::default();
        for (k, v) in pairs {
            m.insert(*k, *v);
        }
        m
    }

    #[test]
    fn any_origin_and_lists() {
        assert_eq!(Cors::from_metadata(&md(&[])).unwrap(), None);
        let any = Cors::from_metadata(&md(&[("cors", "*")])).unwrap().unwrap();
        assert_eq!(any.allow(None).unwrap(), "*");
        let list = Cors::from_metadata(&md(&[
            ("cors", "http://a:1, http://b:2/"),
            ("corsMaxAge", "60"),
        ]))
        .unwrap()
        .unwrap();
        let b = HeaderValue::from_static("http://b:2");
        assert_eq!(list.allow(Some(&b)).unwrap(), "http://b:2");
        assert_eq!(
            list.allow(Some(&HeaderValue::from_static("http://evil"))),
            None
        );
        let pre: Response<()> = list.preflight(&{
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, b.clone());
            h.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_static("x-k"),
            );
            h
        });
        assert_eq!(pre.status(), 204);
        assert_eq!(pre.headers()[header::ACCESS_CONTROL_MAX_AGE], "60");
        assert_eq!(pre.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-k");
        assert_eq!(
            pre.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://b:2"
        );
    }
}
