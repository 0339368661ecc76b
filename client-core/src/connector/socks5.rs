//! SOCKS5 `CONNECT` (RFC 1928) with RFC 1929 user/password (wire.md §2).
//!
//! Only the standard methods are offered: `00` and, with credentials, `02`. gost's private
//! TLS methods (`80`/`82`) are never offered, so a gost server answers with a plain method.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ConnectorError, Credentials, Target, io_err};
use crate::socks_addr::{SocksAddr, SocksAddrError};
use crate::socks5::{
    AUTH_OK, AUTH_VERSION, CMD_CONNECT, METHOD_NONE, METHOD_UNACCEPTABLE, METHOD_USER_PASS, REP_OK,
    VERSION,
};

const CONTEXT: &str = "socks5";

/// The greeting: `05 NMETHODS 00 [02]`.
pub(super) fn greeting(auth: Option<&Credentials>) -> Vec<u8> {
    if auth.is_some() {
        vec![VERSION, 0x02, METHOD_NONE, METHOD_USER_PASS]
    } else {
        vec![VERSION, 0x01, METHOD_NONE]
    }
}

/// The RFC 1929 request: `01 ULEN USER PLEN PASS`.
pub(super) fn auth_request(c: &Credentials) -> Result<Vec<u8>, ConnectorError> {
    let (u, p) = c.length_prefixed(CONTEXT)?;
    let mut out = Vec::with_capacity(3 + u.len() + p.len());
    out.push(AUTH_VERSION);
    out.push(u.len() as u8);
    out.extend_from_slice(u);
    out.push(p.len() as u8);
    out.extend_from_slice(p);
    Ok(out)
}

/// The CONNECT request: `05 01 00 ATYP ADDR PORT`.
pub(super) fn connect_request(target: &Target) -> Result<Vec<u8>, ConnectorError> {
    let mut out = vec![VERSION, CMD_CONNECT, 0x00];
    target.encode_to(&mut out)?;
    Ok(out)
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<(), ConnectorError> {
    stream.write_all(bytes).await.map_err(io_err(CONTEXT))?;
    stream.flush().await.map_err(io_err(CONTEXT))
}

async fn recv<S: AsyncRead + Unpin, const N: usize>(
    stream: &mut S,
) -> Result<[u8; N], ConnectorError> {
    let mut buf = [0u8; N];
    stream.read_exact(&mut buf).await.map_err(io_err(CONTEXT))?;
    Ok(buf)
}

/// Negotiates, authenticates and connects. Reads exactly the server's messages, so no
/// byte of the tunnel is consumed.
pub(super) async fn connect<S>(
    stream: &mut S,
    target: &Target,
    auth: Option<&Credentials>,
) -> Result<(), ConnectorError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let auth_msg = auth.map(auth_request).transpose()?;
    let request = connect_request(target)?;
    send(stream, &greeting(auth)).await?;
    let [ver, method] = recv::<_, 2>(stream).await?;
    if ver != VERSION {
        return Err(ConnectorError::Socks5Malformed(format!(
            "version {ver:#04x} in method choice"
        )));
    }
    match method {
        METHOD_NONE => {}
        METHOD_USER_PASS => {
            let Some(msg) = auth_msg else {
                return Err(ConnectorError::Socks5AuthRequired);
            };
            send(stream, &msg).await?;
            let [_ver, status] = recv::<_, 2>(stream).await?;
            if status != AUTH_OK {
                return Err(ConnectorError::Socks5AuthFailed);
            }
        }
        METHOD_UNACCEPTABLE => return Err(ConnectorError::Socks5NoMethod),
        m => {
            return Err(ConnectorError::Socks5Malformed(format!(
                "server chose method {m:#04x}, which was not offered"
            )));
        }
    }

    send(stream, &request).await?;
    let [ver, rep, _rsv, atyp] = recv::<_, 4>(stream).await?;
    if ver != VERSION {
        return Err(ConnectorError::Socks5Malformed(format!(
            "version {ver:#04x} in reply"
        )));
    }
    if rep != REP_OK {
        return Err(ConnectorError::Socks5Refused { code: rep });
    }
    // BND.ADDR and BND.PORT: read to keep the stream in step, otherwise unused.
    SocksAddr::read(stream, atyp).await.map_err(|e| {
        match e.get_ref().and_then(|e| e.downcast_ref::<SocksAddrError>()) {
            Some(SocksAddrError::UnknownType(a)) => {
                ConnectorError::Socks5Malformed(format!("address type {a:#04x} in reply"))
            }
            _ => io_err(CONTEXT)(e),
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::mock::Mock;
    use super::super::{Connector, handshake};
    use super::*;
    use futures::executor::block_on;

    const OK_V4: &[u8] = &[0x05, 0x00, 0x00, 0x01, 10, 0, 0, 1, 0x1f, 0x90];

    #[test]
    fn no_auth_connect_domain() {
        let mut script = vec![0x05, 0x00];
        script.extend_from_slice(OK_V4);
        script.extend_from_slice(b"data");
        let mut m = Mock::chunked(&script, 1);
        let data = block_on(async {
            let mut c = handshake(&mut m, Connector::Socks5, "example.com:443", None)
                .await
                .unwrap();
            let mut d = Vec::new();
            c.read_to_end(&mut d).await.unwrap();
            d
        });
        assert_eq!(data, b"data");
        let mut want = vec![0x05, 0x01, 0x00];
        want.extend_from_slice(&[0x05, 0x01, 0x00, 0x03, 11]);
        want.extend_from_slice(b"example.com");
        want.extend_from_slice(&[0x01, 0xbb]);
        assert_eq!(m.written, want);
    }

    #[test]
    fn user_pass_and_ip_literals() {
        let c = Credentials::new("u", "pw");
        let mut script = vec![0x05, 0x02, 0x01, 0x00];
        // Reply with a domain BND and IPv6 BND are both consumed exactly.
        script.extend_from_slice(&[0x05, 0x00, 0x00, 0x03, 3, b'a', b'b', b'c', 0, 80]);
        let mut m = Mock::new(&script);
        block_on(handshake(&mut m, Connector::Socks5, "[::1]:22", Some(&c))).unwrap();
        let mut want = vec![0x05, 0x02, 0x00, 0x02, 0x01, 1, b'u', 2, b'p', b'w'];
        want.extend_from_slice(&[0x05, 0x01, 0x00, 0x04]);
        want.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        want.extend_from_slice(&[0, 22]);
        assert_eq!(m.written, want);
        assert!(m.unread().is_empty());

        let mut m = Mock::new(&[0x05, 0x00, 0x05, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
        block_on(handshake(&mut m, Connector::Socks5, "192.0.2.7:8080", None)).unwrap();
        assert_eq!(
            m.written,
            [
                0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x01, 192, 0, 2, 7, 0x1f, 0x90
            ]
        );
    }

    #[test]
    fn errors_name_the_failure() {
        let c = Credentials::new("u", "bad");
        let mut m = Mock::new(&[0x05, 0x02, 0x01, 0x01]);
        let e = block_on(handshake(&mut m, Connector::Socks5, "a:1", Some(&c))).unwrap_err();
        assert_eq!(e.to_string(), "socks5: authentication failed");

        let mut m = Mock::new(&[0x05, 0xFF]);
        let e = block_on(handshake(&mut m, Connector::Socks5, "a:1", None)).unwrap_err();
        assert_eq!(e.to_string(), "socks5: no acceptable authentication method");

        let mut m = Mock::new(&[0x05, 0x02]);
        let e = block_on(handshake(&mut m, Connector::Socks5, "a:1", None)).unwrap_err();
        assert!(matches!(e, ConnectorError::Socks5AuthRequired));

        let mut m = Mock::new(&[0x05, 0x80]);
        let e = block_on(handshake(&mut m, Connector::Socks5, "a:1", None)).unwrap_err();
        assert!(matches!(e, ConnectorError::Socks5Malformed(_)));

        let mut m = Mock::new(&[0x05, 0x00, 0x05, 0x03, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
        let e = block_on(handshake(&mut m, Connector::Socks5, "a:1", None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "socks5: connect failed: 03 network unreachable"
        );

        let mut m = Mock::new(&[0x05, 0x00]);
        let e = block_on(handshake(&mut m, Connector::Socks5, "a:1", None)).unwrap_err();
        assert!(matches!(e, ConnectorError::Io { .. }), "{e}");

        let long = Credentials::new("u".repeat(256), "p");
        let mut m = Mock::new(&[]);
        let e = block_on(handshake(&mut m, Connector::Socks5, "a:1", Some(&long))).unwrap_err();
        assert!(matches!(e, ConnectorError::CredentialsTooLong { .. }));
        assert!(m.written.is_empty());
    }
}
