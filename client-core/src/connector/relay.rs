//! GOST relay `CONNECT` (wire.md §1).
//!
//! The request is written at once; the response (`01 STATUS FEALEN FEATURES`) is read
//! lazily, with exact-length reads, from the first read of the returned stream. This works
//! whether the server answers right after dialling (`nodelay=true`) or only together with
//! the target's first bytes (gost's default), and for protocols where either side speaks
//! first.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{ConnectorError, Credentials, Target, io_err};
use crate::relay::{CMD_CONNECT, FEATURE_ADDR, FEATURE_USER_AUTH, VERSION, status, status_text};

const CONTEXT: &str = "relay";

/// A TCP CONNECT request: `01 01 FEALEN [UserAuth] Addr`, as gost's connector orders it.
pub(super) fn request(
    target: &Target,
    auth: Option<&Credentials>,
) -> Result<Vec<u8>, ConnectorError> {
    let mut features = Vec::new();
    if let Some(c) = auth {
        let (u, p) = c.length_prefixed(CONTEXT)?;
        let len = 2 + u.len() + p.len();
        features.push(FEATURE_USER_AUTH);
        features.extend_from_slice(&(len as u16).to_be_bytes());
        features.push(u.len() as u8);
        features.extend_from_slice(u);
        features.push(p.len() as u8);
        features.extend_from_slice(p);
    }
    let mut addr = Vec::new();
    target.encode_to(&mut addr)?;
    features.push(FEATURE_ADDR);
    features.extend_from_slice(&(addr.len() as u16).to_be_bytes());
    features.extend_from_slice(&addr);

    let mut out = Vec::with_capacity(4 + features.len());
    out.push(VERSION);
    out.push(CMD_CONNECT);
    out.extend_from_slice(&(features.len() as u16).to_be_bytes());
    out.extend_from_slice(&features);
    Ok(out)
}

pub(super) async fn send_request<S: AsyncWrite + Unpin>(
    stream: &mut S,
    target: &Target,
    auth: Option<&Credentials>,
) -> Result<(), ConnectorError> {
    let req = request(target, auth)?;
    stream.write_all(&req).await.map_err(io_err(CONTEXT))?;
    stream.flush().await.map_err(io_err(CONTEXT))
}

/// Where the reader is in the relay response.
#[derive(Debug)]
pub(crate) enum RelayResponse {
    /// No response expected (other connectors), or it has been checked.
    Done,
    /// Reading the 4-byte head.
    Head { buf: [u8; 4], got: usize },
    /// Skipping this many feature bytes.
    Features { left: usize },
    /// The response refused the connection, or was malformed: every read fails.
    Failed { kind: io::ErrorKind, msg: String },
}

impl RelayResponse {
    pub fn pending() -> Self {
        RelayResponse::Head {
            buf: [0; 4],
            got: 0,
        }
    }

    fn fail(&mut self, kind: io::ErrorKind, msg: String) -> io::Error {
        let err = io::Error::new(kind, msg.clone());
        *self = RelayResponse::Failed { kind, msg };
        err
    }

    /// Reads and checks the response; `Ready(Ok(()))` once data may flow.
    pub fn poll_check<S: AsyncRead + Unpin>(
        &mut self,
        mut inner: Pin<&mut S>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match self {
                RelayResponse::Done => return Poll::Ready(Ok(())),
                RelayResponse::Failed { kind, msg } => {
                    return Poll::Ready(Err(io::Error::new(*kind, msg.clone())));
                }
                RelayResponse::Head { buf, got } => {
                    let n = ready!(inner.as_mut().poll_read(cx, &mut buf[*got..]))?;
                    if n == 0 {
                        let e = self.fail(
                            io::ErrorKind::UnexpectedEof,
                            "relay: connection closed before the response".into(),
                        );
                        return Poll::Ready(Err(e));
                    }
                    *got += n;
                    if *got < 4 {
                        continue;
                    }
                    let [ver, code, hi, lo] = *buf;
                    if ver != VERSION {
                        let e = self.fail(
                            io::ErrorKind::InvalidData,
                            format!("relay: bad response version {ver:#04x}"),
                        );
                        return Poll::Ready(Err(e));
                    }
                    if code != status::OK {
                        let e = self.fail(
                            status_kind(code),
                            format!("relay: {code} {}", status_text(code)),
                        );
                        return Poll::Ready(Err(e));
                    }
                    *self = RelayResponse::Features {
                        left: u16::from_be_bytes([hi, lo]) as usize,
                    };
                }
                RelayResponse::Features { left } => {
                    if *left == 0 {
                        *self = RelayResponse::Done;
                        continue;
                    }
                    let mut scratch = [0u8; 256];
                    let want = (*left).min(scratch.len());
                    let n = ready!(inner.as_mut().poll_read(cx, &mut scratch[..want]))?;
                    if n == 0 {
                        let e = self.fail(
                            io::ErrorKind::UnexpectedEof,
                            "relay: connection closed inside the response".into(),
                        );
                        return Poll::Ready(Err(e));
                    }
                    *left -= n;
                }
            }
        }
    }
}

fn status_kind(code: u8) -> io::ErrorKind {
    match code {
        status::UNAUTHORIZED | status::FORBIDDEN => io::ErrorKind::PermissionDenied,
        status::TIMEOUT => io::ErrorKind::TimedOut,
        status::HOST_UNREACHABLE => io::ErrorKind::HostUnreachable,
        status::NETWORK_UNREACHABLE => io::ErrorKind::NetworkUnreachable,
        _ => io::ErrorKind::ConnectionRefused,
    }
}

#[cfg(test)]
mod tests {
    use super::super::mock::Mock;
    use super::super::{Connector, handshake};
    use super::*;
    use futures::executor::block_on;
    use futures::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn worked_example_from_wire_md() {
        let c = Credentials::new("u", "p");
        let mut m = Mock::new(b"");
        block_on(async {
            let _ = handshake(&mut m, Connector::Relay, "example.com:443", Some(&c))
                .await
                .unwrap();
        });
        let want: &[u8] = &[
            0x01, 0x01, 0x00, 0x19, // VER CMD FEALEN=25
            0x01, 0x00, 0x04, 0x01, 0x75, 0x01, 0x70, // UserAuth u/p
            0x02, 0x00, 0x0f, 0x03, 0x0b, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c',
            b'o', b'm', 0x01, 0xbb, // Addr example.com:443
        ];
        assert_eq!(m.written, want);
        // The handshake returned without waiting for the response.
        assert_eq!(m.reads, 0);
    }

    #[test]
    fn ip_targets_without_auth() {
        let t = Target::parse("8.8.8.8:53").unwrap();
        assert_eq!(
            request(&t, None).unwrap(),
            [
                0x01, 0x01, 0x00, 0x0a, 0x02, 0x00, 0x07, 0x01, 8, 8, 8, 8, 0x00, 0x35
            ]
        );
        let t = Target::parse("[::1]:80").unwrap();
        let r = request(&t, None).unwrap();
        assert_eq!(&r[..8], [0x01, 0x01, 0x00, 0x16, 0x02, 0x00, 0x13, 0x04]);
        assert_eq!(r.len(), 4 + 3 + 1 + 16 + 2);
    }

    #[test]
    fn response_glued_to_data_and_split_reads() {
        // OK with an Addr feature, then payload, delivered one byte per read.
        let mut script = vec![0x01, 0x00, 0x00, 0x0a];
        script.extend_from_slice(&[0x02, 0x00, 0x07, 0x01, 127, 0, 0, 1, 0x1f, 0x90]);
        script.extend_from_slice(b"hello");
        for chunk in [1, 2, 64] {
            let mut m = Mock::chunked(&script, chunk);
            let data = block_on(async {
                let mut c = handshake(&mut m, Connector::Relay, "a:1", None)
                    .await
                    .unwrap();
                c.write_all(b"req").await.unwrap();
                let mut d = Vec::new();
                c.read_to_end(&mut d).await.unwrap();
                d
            });
            assert_eq!(data, b"hello", "chunk {chunk}");
            assert!(m.written.ends_with(b"req"));
        }
    }

    #[test]
    fn refusal_is_a_read_error() {
        let mut m = Mock::new(&[0x01, 0x02, 0x00, 0x00]);
        block_on(async {
            let mut c = handshake(&mut m, Connector::Relay, "a:1", None)
                .await
                .unwrap();
            let mut buf = [0u8; 16];
            let e = c.read(&mut buf).await.unwrap_err();
            assert_eq!(e.to_string(), "relay: 2 Unauthorized");
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
            // Sticky.
            let e = c.read(&mut buf).await.unwrap_err();
            assert_eq!(e.to_string(), "relay: 2 Unauthorized");
        });
        let mut m = Mock::new(&[0x01, 0x07, 0x00, 0x00]);
        block_on(async {
            let mut c = handshake(&mut m, Connector::Relay, "a:1", None)
                .await
                .unwrap();
            let e = c.read(&mut [0u8; 4]).await.unwrap_err();
            assert_eq!(e.to_string(), "relay: 7 Network Unreachable");
        });
    }

    #[test]
    fn silent_close_and_bad_version() {
        let mut m = Mock::new(&[]);
        block_on(async {
            let mut c = handshake(&mut m, Connector::Relay, "a:1", None)
                .await
                .unwrap();
            let e = c.read(&mut [0u8; 4]).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        });
        let mut m = Mock::new(b"HTTP/1.1 400");
        block_on(async {
            let mut c = handshake(&mut m, Connector::Relay, "a:1", None)
                .await
                .unwrap();
            let e = c.read(&mut [0u8; 4]).await.unwrap_err();
            assert_eq!(e.to_string(), "relay: bad response version 0x48");
        });
    }
}
