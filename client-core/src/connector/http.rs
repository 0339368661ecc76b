//! HTTP `CONNECT` (wire.md §4.4).

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ConnectorError, Credentials, Target, io_err};

/// Longest response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

const CONTEXT: &str = "http connect";

/// The request, in the header order Go's serializer uses.
pub(super) fn request(target: &Target, auth: Option<&Credentials>) -> Vec<u8> {
    let authority = target.to_string();
    let mut req =
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: pht-client\r\n");
    if let Some(c) = auth {
        let token =
            base64_simd::STANDARD.encode_to_string(format!("{}:{}", c.username, c.password));
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("Proxy-Connection: keep-alive\r\n\r\n");
    req.into_bytes()
}

/// Sends `CONNECT`, reads the response head and checks for 200. Returns the bytes read
/// past the head, which belong to the tunnel.
pub(super) async fn connect<S>(
    stream: &mut S,
    target: &Target,
    auth: Option<&Credentials>,
) -> Result<Vec<u8>, ConnectorError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(&request(target, auth))
        .await
        .map_err(io_err(CONTEXT))?;
    stream.flush().await.map_err(io_err(CONTEXT))?;

    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(ConnectorError::HttpMalformed(format!(
                "response head longer than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        let n = stream.read(&mut chunk).await.map_err(io_err(CONTEXT))?;
        if n == 0 {
            return Err(io_err(CONTEXT)(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the response",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };

    // Only the status line is judged (headers are not ours to check): httparse parses it,
    // then stops short of the headers.
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(end);
    let mut response = httparse::Response::new(&mut []);
    let parsed = response.parse(&buf[..(line_end + 1).min(end)]);
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let line = line.trim_end_matches('\r');
    let code = match (parsed, response.code) {
        (Ok(_), Some(code)) if response.reason.is_some() => code,
        _ => return Err(ConnectorError::HttpMalformed(truncate(line))),
    };
    if code != 200 {
        return Err(ConnectorError::HttpStatus(truncate(line)));
    }
    Ok(buf.split_off(end))
}

/// Index just past the blank line ending an HTTP/1 head (`\r\n\r\n`, bare `\n`
/// tolerated); shared with the server's HTTP handler.
///
/// ```
/// assert_eq!(pht_core::http_head_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(19));
/// assert_eq!(pht_core::http_head_end(b"HTTP/1.1 200 OK\r\n"), None);
/// ```
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

fn truncate(line: &str) -> String {
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::super::mock::Mock;
    use super::super::{Connector, handshake};
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn request_bytes() {
        let t = Target::parse("example.com:443").unwrap();
        assert_eq!(
            request(&t, None),
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\
              User-Agent: pht-client\r\nProxy-Connection: keep-alive\r\n\r\n"
        );
        let c = Credentials::new("user", "pass");
        let t = Target::parse("[2001:db8::1]:8080").unwrap();
        assert_eq!(
            String::from_utf8(request(&t, Some(&c))).unwrap(),
            "CONNECT [2001:db8::1]:8080 HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\
             User-Agent: pht-client\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\
             Proxy-Connection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn ok_keeps_bytes_after_the_head() {
        for chunk in [1, 3, 1024] {
            let mut m = Mock::chunked(
                b"HTTP/1.1 200 Connection established\r\nProxy-Agent: gost/3.0\r\n\r\nSSH-2.0-x\r\n",
                chunk,
            );
            let data = block_on(async {
                let mut c = handshake(&mut m, Connector::Http, "example.com:22", None)
                    .await
                    .unwrap();
                let mut data = Vec::new();
                c.read_to_end(&mut data).await.unwrap();
                data
            });
            assert_eq!(data, b"SSH-2.0-x\r\n", "chunk {chunk}");
            assert!(
                m.written
                    .starts_with(b"CONNECT example.com:22 HTTP/1.1\r\n")
            );
        }
    }

    #[test]
    fn status_line_without_reason_and_headers_unchecked() {
        // No reason phrase, and a header line that is not one: only the status line counts.
        let mut m = Mock::new(b"HTTP/1.0 200\nnot a header\n\nx");
        block_on(async {
            let mut c = handshake(&mut m, Connector::Http, "a:1", None)
                .await
                .unwrap();
            let mut data = Vec::new();
            c.read_to_end(&mut data).await.unwrap();
            assert_eq!(data, b"x");
        });
    }

    #[test]
    fn non_200_is_an_error_with_the_status_line() {
        let mut m = Mock::new(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nConnection: close\r\n\
              Proxy-Authenticate: Basic realm=\"gost\"\r\n\r\n",
        );
        let e = block_on(handshake(&mut m, Connector::Http, "a:1", None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "http connect: HTTP/1.1 407 Proxy Authentication Required"
        );
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn garbage_and_eof() {
        let mut m = Mock::new(b"SSH-2.0-OpenSSH\r\n\r\n");
        let e = block_on(handshake(&mut m, Connector::Http, "a:1", None)).unwrap_err();
        assert!(matches!(e, ConnectorError::HttpMalformed(_)), "{e}");
        // A blank line before the status line is not skipped.
        let mut m = Mock::new(b"\r\nHTTP/1.1 200 OK\r\n\r\n");
        let e = block_on(handshake(&mut m, Connector::Http, "a:1", None)).unwrap_err();
        assert_eq!(e.to_string(), "http connect: malformed response: ");
        let mut m = Mock::new(b"HTTP/1.1 20x OK\r\n\r\n");
        let e = block_on(handshake(&mut m, Connector::Http, "a:1", None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "http connect: malformed response: HTTP/1.1 20x OK"
        );
        let mut m = Mock::new(b"HTTP/1.1 200 OK\r\n");
        let e = block_on(handshake(&mut m, Connector::Http, "a:1", None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "http connect: connection closed before the response"
        );
    }

    #[test]
    fn finds_head_end() {
        assert_eq!(head_end(b"a\r\n\r\nb"), Some(5));
        assert_eq!(head_end(b"a\n\nb"), Some(3));
        assert_eq!(head_end(b"a\r\nb\r\n"), None);
        assert_eq!(head_end(b"a\r\n\r"), None);
    }
}
