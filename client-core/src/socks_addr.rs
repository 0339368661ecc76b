//! The SOCKS5 address, `ATYP ADDR PORT` (RFC 1928 §4/§5), once: SOCKS5 requests, replies and
//! UDP headers and the gost relay Addr feature all carry it.
//!
//! ```
//! use pht_core::socks_addr::{Host, SocksAddr};
//! let a = SocksAddr::new(Host::Domain("example.com".into()), 443);
//! let mut wire = Vec::new();
//! a.encode(&mut wire).unwrap();
//! assert_eq!(&wire[..2], [0x03, 11]);
//! assert_eq!(SocksAddr::decode(&wire), Ok((a.clone(), wire.len())));
//! assert_eq!(a.to_string(), "example.com:443");
//! ```

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use futures::{AsyncRead, AsyncReadExt};

/// `ATYP` of an IPv4 address (4 bytes).
pub const ATYP_IPV4: u8 = 0x01;
/// `ATYP` of a domain name (a length byte, then at most 255 bytes).
pub const ATYP_DOMAIN: u8 = 0x03;
/// `ATYP` of an IPv6 address (16 bytes).
pub const ATYP_IPV6: u8 = 0x04;

/// The longest domain name the length byte can carry.
pub const MAX_DOMAIN_LEN: usize = u8::MAX as usize;

/// The host part of a SOCKS address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    /// A name as received (bytes that are not UTF-8 are replaced, as gost's `string()`
    /// conversion would show them).
    Domain(String),
}

/// `ATYP ADDR PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocksAddr {
    pub host: Host,
    pub port: u16,
}

/// Why bytes are not a SOCKS address, or an address cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SocksAddrError {
    /// `ATYP` is none of 1, 3, 4.
    #[error("unknown address type {0:#04x}")]
    UnknownType(u8),
    /// The input ends before the address does.
    #[error("address truncated")]
    Truncated,
    /// A domain name longer than [`MAX_DOMAIN_LEN`] bytes.
    #[error("host name longer than 255 bytes")]
    DomainTooLong,
}

impl SocksAddr {
    pub fn new(host: Host, port: u16) -> Self {
        SocksAddr { host, port }
    }

    /// The `ATYP` byte this address is encoded with.
    pub fn atyp(&self) -> u8 {
        match self.host {
            Host::V4(_) => ATYP_IPV4,
            Host::V6(_) => ATYP_IPV6,
            Host::Domain(_) => ATYP_DOMAIN,
        }
    }

    /// Appends `ATYP ADDR PORT` to `out`. A domain longer than 255 bytes is an error, and
    /// then nothing is written.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), SocksAddrError> {
        match &self.host {
            Host::V4(ip) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&ip.octets());
            }
            Host::V6(ip) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&ip.octets());
            }
            Host::Domain(d) => {
                let len = u8::try_from(d.len()).map_err(|_| SocksAddrError::DomainTooLong)?;
                out.push(ATYP_DOMAIN);
                out.push(len);
                out.extend_from_slice(d.as_bytes());
            }
        }
        out.extend_from_slice(&self.port.to_be_bytes());
        Ok(())
    }

    /// Parses `ATYP ADDR PORT` at the start of `buf`: the address and the bytes it took
    /// (anything after them is left alone).
    pub fn decode(buf: &[u8]) -> Result<(SocksAddr, usize), SocksAddrError> {
        let (&atyp, rest) = buf.split_first().ok_or(SocksAddrError::Truncated)?;
        let (host, used) = match atyp {
            ATYP_IPV4 => (
                Host::V4(<[u8; 4]>::try_from(take(rest, 4)?).unwrap().into()),
                4,
            ),
            ATYP_IPV6 => (
                Host::V6(<[u8; 16]>::try_from(take(rest, 16)?).unwrap().into()),
                16,
            ),
            ATYP_DOMAIN => {
                let len = *rest.first().ok_or(SocksAddrError::Truncated)? as usize;
                let name = take(&rest[1..], len)?;
                (
                    Host::Domain(String::from_utf8_lossy(name).into_owned()),
                    1 + len,
                )
            }
            a => return Err(SocksAddrError::UnknownType(a)),
        };
        let port = take(&rest[used..], 2)?;
        let port = u16::from_be_bytes([port[0], port[1]]);
        Ok((SocksAddr { host, port }, 1 + used + 2))
    }

    /// Reads `ADDR PORT` from a stream whose `ATYP` byte has been read already (SOCKS5
    /// requests and replies carry it in their fixed head). Reads exactly the address's
    /// bytes. An unknown `atyp` is an `InvalidData` error wrapping
    /// [`SocksAddrError::UnknownType`], read before any byte.
    pub async fn read<R: AsyncRead + Unpin + ?Sized>(r: &mut R, atyp: u8) -> io::Result<SocksAddr> {
        let host = match atyp {
            ATYP_IPV4 => {
                let mut b = [0u8; 4];
                r.read_exact(&mut b).await?;
                Host::V4(b.into())
            }
            ATYP_IPV6 => {
                let mut b = [0u8; 16];
                r.read_exact(&mut b).await?;
                Host::V6(b.into())
            }
            ATYP_DOMAIN => {
                let mut len = [0u8; 1];
                r.read_exact(&mut len).await?;
                let mut b = vec![0u8; len[0] as usize];
                r.read_exact(&mut b).await?;
                Host::Domain(String::from_utf8_lossy(&b).into_owned())
            }
            a => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    SocksAddrError::UnknownType(a),
                ));
            }
        };
        let mut port = [0u8; 2];
        r.read_exact(&mut port).await?;
        Ok(SocksAddr {
            host,
            port: u16::from_be_bytes(port),
        })
    }
}

fn take(b: &[u8], n: usize) -> Result<&[u8], SocksAddrError> {
    b.get(..n).ok_or(SocksAddrError::Truncated)
}

/// `host:port`, IPv6 in brackets: the form dialers and HTTP request lines use.
impl fmt::Display for SocksAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::V4(ip) => write!(f, "{ip}:{}", self.port),
            Host::V6(ip) => write!(f, "[{ip}]:{}", self.port),
            Host::Domain(d) => write!(f, "{d}:{}", self.port),
        }
    }
}

impl From<SocketAddr> for SocksAddr {
    fn from(a: SocketAddr) -> Self {
        let host = match a.ip() {
            IpAddr::V4(ip) => Host::V4(ip),
            IpAddr::V6(ip) => Host::V6(ip),
        };
        SocksAddr::new(host, a.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn round_trip(a: SocksAddr, wire: &[u8]) {
        let mut out = Vec::new();
        a.encode(&mut out).unwrap();
        assert_eq!(out, wire, "{a}");
        // Trailing bytes are not part of the address.
        let mut longer = wire.to_vec();
        longer.extend_from_slice(b"data");
        assert_eq!(SocksAddr::decode(&longer), Ok((a.clone(), wire.len())));
        let mut stream = &longer[1..];
        assert_eq!(block_on(SocksAddr::read(&mut stream, wire[0])).unwrap(), a);
        assert_eq!(stream, b"data");
    }

    #[test]
    fn ipv4() {
        let a = SocksAddr::new(Host::V4(Ipv4Addr::new(127, 0, 0, 1)), 80);
        round_trip(a.clone(), &[1, 127, 0, 0, 1, 0, 80]);
        assert_eq!(a.atyp(), ATYP_IPV4);
        assert_eq!(a.to_string(), "127.0.0.1:80");
        assert_eq!(SocksAddr::from(SocketAddr::from(([127, 0, 0, 1], 80))), a);
    }

    #[test]
    fn ipv6() {
        let mut wire = vec![4];
        wire.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        wire.extend_from_slice(&[1, 0xbb]);
        let a = SocksAddr::new(Host::V6(Ipv6Addr::LOCALHOST), 443);
        round_trip(a.clone(), &wire);
        assert_eq!(a.to_string(), "[::1]:443");
        // IPv4-mapped stays IPv6 on the wire and in text.
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:1".parse().unwrap();
        let a = SocksAddr::from(mapped);
        assert_eq!(a.atyp(), ATYP_IPV6);
        assert_eq!(a.to_string(), "[::ffff:10.0.0.1]:1");
    }

    #[test]
    fn domain() {
        let a = SocksAddr::new(Host::Domain("abc".into()), 22);
        round_trip(a.clone(), b"\x03\x03abc\x00\x16");
        assert_eq!(a.to_string(), "abc:22");
        // An empty name is valid on the wire.
        round_trip(
            SocksAddr::new(Host::Domain(String::new()), 1),
            &[3, 0, 0, 1],
        );
        // Bytes that are not UTF-8 are replaced.
        let (a, used) = SocksAddr::decode(&[3, 2, b'a', 0xff, 0, 80]).unwrap();
        assert_eq!((a.to_string().as_str(), used), ("a\u{fffd}:80", 6));
    }

    #[test]
    fn domain_of_255_bytes_and_longer() {
        let name = "d".repeat(255);
        let mut wire = vec![3, 255];
        wire.extend_from_slice(name.as_bytes());
        wire.extend_from_slice(&[0x1f, 0x90]);
        round_trip(SocksAddr::new(Host::Domain(name.clone()), 8080), &wire);

        let long = SocksAddr::new(Host::Domain(name + "d"), 1);
        let mut out = vec![0xaa];
        assert_eq!(long.encode(&mut out), Err(SocksAddrError::DomainTooLong));
        assert_eq!(out, [0xaa], "nothing written");
    }

    #[test]
    fn bad_type() {
        assert_eq!(
            SocksAddr::decode(&[9, 0, 0]),
            Err(SocksAddrError::UnknownType(9))
        );
        assert_eq!(
            SocksAddr::decode(&[2, 1, 2, 3, 4, 0, 0]),
            Err(SocksAddrError::UnknownType(2))
        );
        let mut stream: &[u8] = &[0, 0, 0];
        let e = block_on(SocksAddr::read(&mut stream, 0x09)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "unknown address type 0x09");
        assert_eq!(stream.len(), 3, "nothing read");
    }

    #[test]
    fn truncated_input() {
        for bad in [
            &[][..],
            &[1, 127, 0, 0],
            &[1, 127, 0, 0, 1, 0],
            &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            &[3],
            b"\x03\x05abc\x00\x16",
            b"\x03\x03abc\x00",
        ] {
            assert_eq!(
                SocksAddr::decode(bad),
                Err(SocksAddrError::Truncated),
                "{bad:?}"
            );
            if let Some((&atyp, mut rest)) = bad.split_first() {
                let e = block_on(SocksAddr::read(&mut rest, atyp)).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{bad:?}");
            }
        }
    }
}
