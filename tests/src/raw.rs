//! A raw HTTP/1.1 client that writes requests byte for byte as gost's Go client does, and
//! reads responses (including chunked pull streams) without any HTTP library in between.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct RawConn {
    io: BufReader<TcpStream>,
    host: String,
}

/// A response head.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

impl RawConn {
    pub async fn connect(port: u16) -> RawConn {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        RawConn {
            io: BufReader::new(s),
            host: format!("127.0.0.1:{port}"),
        }
    }

    /// Closes the connection with a RST (`SO_LINGER` 0): a connection that died.
    pub fn reset(self) {
        let _ = self.io.get_ref().set_zero_linger();
    }

    /// Writes raw bytes (for malformed requests).
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    /// `GET path` as Go's net/http client sends it.
    pub async fn go_get(&mut self, path: &str) {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
            self.host
        );
        self.write_raw(req.as_bytes()).await;
    }

    /// `POST path` with `body` as Go's net/http client sends it (no Content-Type).
    pub async fn go_post(&mut self, path: &str, body: &[u8]) {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\nAccept-Encoding: gzip\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.write_raw(&req).await;
    }

    async fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        let n = self.io.read_line(&mut l).await.ok()?;
        (n > 0).then(|| l.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Reads a response head; `None` if the server closed the connection instead.
    pub async fn head(&mut self) -> Option<Head> {
        let status_line = self.line().await?;
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let l = self.line().await?;
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':')?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        Some(Head { status, headers })
    }

    /// Next chunk of a chunked body; `None` at the terminating chunk or on EOF.
    pub async fn chunk(&mut self) -> Option<Vec<u8>> {
        let size_line = self.line().await?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        let mut data = vec![0u8; size];
        self.io.read_exact(&mut data).await.ok()?;
        self.line().await?; // CRLF after the chunk (or after trailers when size is 0)
        (size > 0).then_some(data)
    }

    /// Next chunk of a chunked body: `Ok(None)` at the terminating chunk (a clean end),
    /// `Err` when the connection ends or breaks before it (a cut stream).
    pub async fn try_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let cut =
            |what: &str| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what.to_string());
        let mut l = String::new();
        if self.io.read_line(&mut l).await? == 0 {
            return Err(cut("connection closed before the last chunk"));
        }
        let size = usize::from_str_radix(l.trim_end().split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad chunk size line {l:?}"),
            )
        })?;
        let mut data = vec![0u8; size];
        self.io.read_exact(&mut data).await?;
        l.clear();
        if self.io.read_line(&mut l).await? == 0 {
            return Err(cut("connection closed inside a chunk"));
        }
        Ok((size > 0).then_some(data))
    }

    /// The whole body of a response with `head`.
    pub async fn body(&mut self, head: &Head) -> Vec<u8> {
        if head.chunked() {
            let mut out = Vec::new();
            while let Some(c) = self.chunk().await {
                out.extend_from_slice(&c);
            }
            out
        } else {
            let len = head
                .header("content-length")
                .map(|v| v.parse().unwrap())
                .unwrap_or(0);
            let mut out = vec![0u8; len];
            self.io.read_exact(&mut out).await.unwrap();
            out
        }
    }

    /// One request/response: status and body.
    pub async fn exchange_get(&mut self, path: &str) -> (u16, Vec<u8>) {
        self.go_get(path).await;
        let head = self.head().await.expect("no response");
        let body = self.body(&head).await;
        (head.status, body)
    }

    pub async fn exchange_post(&mut self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.go_post(path, body).await;
        let head = self.head().await.expect("no response");
        let body = self.body(&head).await;
        (head.status, body)
    }

    /// True when the server closes the connection within 10 s (whatever it sends first,
    /// such as a TLS alert).
    pub async fn closed(&mut self) -> bool {
        let mut b = [0u8; 512];
        let drain = async {
            loop {
                if matches!(self.io.read(&mut b).await, Ok(0) | Err(_)) {
                    return;
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), drain)
            .await
            .is_ok()
    }
}
