//! Connector handshakes: what a client says on a freshly opened stream (a PHT tunnel, a TCP
//! connection...) so that the proxy at its far end connects it on to a target.
//!
//! Runtime-free: everything is generic over `futures::io::{AsyncRead, AsyncWrite}`.
//!
//! * [`Connector::Forward`]: no bytes at all; the far end decides the target.
//! * [`Connector::Http`]: `CONNECT host:port HTTP/1.1`, answer must be `200`.
//! * [`Connector::Socks5`]: RFC 1928 with "no auth" and, given credentials, RFC 1929.
//! * [`Connector::Relay`]: the GOST relay protocol. The request goes out at once, but the
//!   response is *not* awaited: it is checked on the first read of the returned stream, so
//!   client-speaks-first and server-speaks-first protocols both work against every gost
//!   server mode.

mod http;
pub use http::head_end as http_head_end;
mod relay;
mod socks5;

#[cfg(test)]
mod mock;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll, ready};

use futures::{AsyncRead, AsyncWrite};

use crate::socks_addr::{Host, MAX_DOMAIN_LEN, SocksAddr};
use relay::RelayResponse;

/// The protocol spoken to the proxy at the far end of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Connector {
    /// No handshake: the stream is used as is.
    Forward,
    /// HTTP `CONNECT`.
    Http,
    /// SOCKS5 `CONNECT` (also spelled `socks`).
    Socks5,
    /// GOST relay `CONNECT`.
    Relay,
}

impl Connector {
    /// The connector registry: every name gost accepts (`socks` is `socks5`, `tcp` is
    /// `forward`). Parsing and
    /// every "supported: ..." message read it. (Connectors are a closed enum rather than
    /// trait objects because the wasm client matches on them and pays for every vtable;
    /// each handshake lives in its own file.)
    pub const NAMES: &'static [(&'static str, Connector)] = &[
        ("http", Connector::Http),
        ("socks5", Connector::Socks5),
        ("socks", Connector::Socks5),
        ("relay", Connector::Relay),
        ("forward", Connector::Forward),
        // gost's `tcp` connector passes the stream on untouched, as `forward` does.
        ("tcp", Connector::Forward),
    ];

    /// Every connector name, for "supported: ..." messages.
    pub fn supported() -> String {
        let names: Vec<&str> = Self::NAMES.iter().map(|(name, _)| *name).collect();
        names.join(", ")
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Connector::Forward => "forward",
            Connector::Http => "http",
            Connector::Socks5 => "socks5",
            Connector::Relay => "relay",
        }
    }
}

impl fmt::Display for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Connector {
    type Err = ConnectorError;

    /// `forward`, `http`, `socks5` or `socks`, `relay` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Connector::NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, c)| *c)
            .ok_or_else(|| ConnectorError::Unknown(s.to_string()))
    }
}

/// The longest user name or password a length byte carries.
const MAX_CREDENTIAL_LEN: usize = u8::MAX as usize;

/// A user name and password for the proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The user name and password as bytes, each at most 255 long: SOCKS5 (RFC 1929) and
    /// the relay UserAuth feature give each one length byte.
    pub(crate) fn length_prefixed(
        &self,
        protocol: &'static str,
    ) -> Result<(&[u8], &[u8]), ConnectorError> {
        let (u, p) = (self.username.as_bytes(), self.password.as_bytes());
        if u.len() > MAX_CREDENTIAL_LEN || p.len() > MAX_CREDENTIAL_LEN {
            return Err(ConnectorError::CredentialsTooLong { protocol });
        }
        Ok((u, p))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Why a connector handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The connector name is not one of ours.
    #[error("unknown connector {0:?} (supported: {list})", list = Connector::supported())]
    Unknown(String),
    /// The target is not `host:port` or cannot be encoded by the protocol.
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget {
        target: String,
        reason: &'static str,
    },
    /// A user name or password is longer than the protocol allows.
    #[error("{protocol}: user name and password are limited to 255 bytes each")]
    CredentialsTooLong { protocol: &'static str },
    /// The HTTP proxy answered `CONNECT` with something other than 200 (the status line).
    #[error("http connect: {0}")]
    HttpStatus(String),
    /// The HTTP proxy's answer is not an HTTP/1.x response head.
    #[error("http connect: malformed response: {0}")]
    HttpMalformed(String),
    /// The SOCKS5 server accepted none of the offered methods (`05 FF`).
    #[error("socks5: no acceptable authentication method")]
    Socks5NoMethod,
    /// The SOCKS5 server asks for user/password, but none are configured.
    #[error("socks5: server requires authentication, but no credentials are configured")]
    Socks5AuthRequired,
    /// The SOCKS5 server rejected the user name or password.
    #[error("socks5: authentication failed")]
    Socks5AuthFailed,
    /// The SOCKS5 server refused the CONNECT request with this reply code.
    #[error("socks5: connect failed: {code:02x} {}", crate::socks5::reply_text(*code))]
    Socks5Refused { code: u8 },
    /// The SOCKS5 server's answer does not follow RFC 1928/1929.
    #[error("socks5: malformed reply: {0}")]
    Socks5Malformed(String),
    /// The stream failed or ended during the handshake.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
}

impl From<ConnectorError> for io::Error {
    fn from(e: ConnectorError) -> io::Error {
        let kind = match &e {
            ConnectorError::Io { source, .. } => source.kind(),
            ConnectorError::Unknown(_)
            | ConnectorError::InvalidTarget { .. }
            | ConnectorError::CredentialsTooLong { .. } => io::ErrorKind::InvalidInput,
            ConnectorError::Socks5AuthRequired | ConnectorError::Socks5AuthFailed => {
                io::ErrorKind::PermissionDenied
            }
            ConnectorError::HttpStatus(_)
            | ConnectorError::Socks5NoMethod
            | ConnectorError::Socks5Refused { .. } => io::ErrorKind::ConnectionRefused,
            ConnectorError::HttpMalformed(_) | ConnectorError::Socks5Malformed(_) => {
                io::ErrorKind::InvalidData
            }
        };
        io::Error::new(kind, e)
    }
}

pub(crate) fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> ConnectorError {
    move |source| ConnectorError::Io { context, source }
}

/// Runs `connector`'s handshake on `stream`, asking the proxy for `target` (`host:port`;
/// IPv6 literals in brackets; an empty host means the proxy's own machine, 127.0.0.1).
///
/// Returns the stream to use afterwards. For [`Connector::Relay`] the request has been
/// written and flushed but the response not read yet: it is checked on the first read,
/// and a refusal surfaces there as an `io::Error` such as `relay: 2 Unauthorized`.
pub async fn handshake<S>(
    mut stream: S,
    connector: Connector,
    target: &str,
    auth: Option<&Credentials>,
) -> Result<Connected<S>, ConnectorError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match connector {
        Connector::Forward => Ok(Connected::new(stream, Vec::new(), RelayResponse::Done)),
        Connector::Http => {
            let target = Target::parse(target)?;
            let rest = http::connect(&mut stream, &target, auth).await?;
            Ok(Connected::new(stream, rest, RelayResponse::Done))
        }
        Connector::Socks5 => {
            let target = Target::parse(target)?;
            socks5::connect(&mut stream, &target, auth).await?;
            Ok(Connected::new(stream, Vec::new(), RelayResponse::Done))
        }
        Connector::Relay => {
            let target = Target::parse(target)?;
            relay::send_request(&mut stream, &target, auth).await?;
            Ok(Connected::new(stream, Vec::new(), RelayResponse::pending()))
        }
    }
}

/// A stream after its connector handshake: reads first return any bytes the handshake
/// read past its end, and (relay) check the proxy's response before any data.
pub struct Connected<S> {
    inner: S,
    buffered: Vec<u8>,
    pos: usize,
    relay: RelayResponse,
}

impl<S> Connected<S> {
    fn new(inner: S, buffered: Vec<u8>, relay: RelayResponse) -> Self {
        Connected {
            inner,
            buffered,
            pos: 0,
            relay,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The underlying stream. Reading from it directly skips the buffered bytes and the
    /// relay response check.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S> fmt::Debug for Connected<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connected")
            .field("buffered", &(self.buffered.len() - self.pos))
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Connected<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(this.relay.poll_check(Pin::new(&mut this.inner), cx))?;
        if this.pos < this.buffered.len() {
            let n = buf.len().min(this.buffered.len() - this.pos);
            buf[..n].copy_from_slice(&this.buffered[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.buffered.len() {
                this.buffered = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Connected<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// A parsed `host:port`: the address the SOCKS5 and relay requests encode.
pub(crate) type Target = SocksAddr;

impl Target {
    pub(crate) fn parse(target: &str) -> Result<Target, ConnectorError> {
        let bad = |reason| ConnectorError::InvalidTarget {
            target: target.to_string(),
            reason,
        };
        let (host, port) = if let Some(rest) = target.strip_prefix('[') {
            let (host, rest) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = rest.strip_prefix(':').ok_or_else(|| bad("missing port"))?;
            let ip: Ipv6Addr = host.parse().map_err(|_| bad("invalid IPv6 address"))?;
            (Host::V6(ip), port)
        } else {
            let (host, port) = target.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
            (host_from_name(host).map_err(bad)?, port)
        };
        let port = port.parse::<u16>().map_err(|_| bad("invalid port"))?;
        let host = match host {
            // IPv4-mapped IPv6 travels as IPv4, as gost encodes it.
            Host::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => Host::V4(v4),
                None => Host::V6(ip),
            },
            h => h,
        };
        Ok(Target { host, port })
    }

    /// Appends the SOCKS5 / relay address, `ATYP ADDR PORT`.
    pub(crate) fn encode_to(&self, out: &mut Vec<u8>) -> Result<(), ConnectorError> {
        self.encode(out).map_err(|_| ConnectorError::InvalidTarget {
            target: self.to_string(),
            reason: DOMAIN_TOO_LONG,
        })
    }
}

const DOMAIN_TOO_LONG: &str = "host name longer than 255 bytes";

fn host_from_name(host: &str) -> Result<Host, &'static str> {
    if host.is_empty() {
        // gost: a missing host is the proxy's own machine.
        return Ok(Host::V4(Ipv4Addr::LOCALHOST));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Host::V4(ip));
    }
    if let Ok(ip) = host.parse::<Ipv6Addr>() {
        return Ok(Host::V6(ip));
    }
    // A CR/LF would end an HTTP CONNECT request line early (header injection).
    if host.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("host name contains a space or a control character");
    }
    if host.contains(':') {
        return Err("invalid IPv6 address (IPv6 needs brackets: [::1]:443)");
    }
    if host.len() > MAX_DOMAIN_LEN {
        return Err(DOMAIN_TOO_LONG);
    }
    Ok(Host::Domain(host.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::{AsyncReadExt, AsyncWriteExt};
    use mock::Mock;

    #[test]
    fn parses_connector_names() {
        assert_eq!("forward".parse::<Connector>().unwrap(), Connector::Forward);
        assert_eq!("http".parse::<Connector>().unwrap(), Connector::Http);
        assert_eq!("socks5".parse::<Connector>().unwrap(), Connector::Socks5);
        assert_eq!("SOCKS".parse::<Connector>().unwrap(), Connector::Socks5);
        assert_eq!("relay".parse::<Connector>().unwrap(), Connector::Relay);
        let e = "socks4".parse::<Connector>().unwrap_err();
        assert!(
            e.to_string().contains("unknown connector \"socks4\""),
            "{e}"
        );
    }

    #[test]
    fn parses_targets() {
        let t = Target::parse("example.com:443").unwrap();
        assert_eq!(t.host, Host::Domain("example.com".into()));
        assert_eq!(t.port, 443);
        let t = Target::parse("[::1]:80").unwrap();
        assert_eq!(t.host, Host::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(t.to_string(), "[::1]:80");
        let t = Target::parse("[::ffff:10.0.0.1]:80").unwrap();
        assert_eq!(t.host, Host::V4(Ipv4Addr::new(10, 0, 0, 1)));
        let t = Target::parse(":1080").unwrap();
        assert_eq!(t.to_string(), "127.0.0.1:1080");
        for bad in [
            "example.com",
            "example.com:x",
            "host:65536",
            "[::1]",
            "[zz]:1",
            "1:2:3",
        ] {
            assert!(
                matches!(
                    Target::parse(bad),
                    Err(ConnectorError::InvalidTarget { .. })
                ),
                "{bad}"
            );
        }
        let long = format!("{}:80", "a".repeat(256));
        assert!(Target::parse(&long).is_err());
    }

    #[test]
    fn forward_sends_nothing() {
        let mut m = Mock::new(b"hello");
        block_on(async {
            let mut c = handshake(&mut m, Connector::Forward, "ignored:1", None)
                .await
                .unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"hello");
            c.write_all(b"x").await.unwrap();
        });
        assert_eq!(m.written, b"x");
    }

    #[test]
    fn bad_target_is_rejected_before_any_io() {
        let mut m = Mock::new(b"");
        let e = block_on(handshake(&mut m, Connector::Http, "nope", None)).unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidTarget { .. }));
        assert!(m.written.is_empty());
    }
}
