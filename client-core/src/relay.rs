//! The GOST relay protocol's numbers (wire.md §1), once: the client's relay connector and
//! the server's relay handler both speak from here.
//!
//! Request `VER CMD FEALEN FEATURES`, response `VER STATUS FEALEN FEATURES`; each feature
//! is `TYPE LEN(2) DATA`.

/// The protocol version, first byte of every request and response.
pub const VERSION: u8 = 0x01;

/// The command bits of the `CMD` byte (the high bits are flags).
pub const CMD_MASK: u8 = 0x0F;
/// `CMD` flag: the request is for UDP.
pub const FLAG_UDP: u8 = 0x80;
pub const CMD_CONNECT: u8 = 0x01;
pub const CMD_BIND: u8 = 0x02;

/// Feature: `ULEN USER PLEN PASS`.
pub const FEATURE_USER_AUTH: u8 = 0x01;
/// Feature: a SOCKS address, `ATYP ADDR PORT` ([`crate::socks_addr`]).
pub const FEATURE_ADDR: u8 = 0x02;
/// Feature: a network id, 2 bytes ([`NETWORK_UDP`]...).
pub const FEATURE_NETWORK: u8 = 0x04;

pub const NETWORK_UDP: u16 = 0x0001;
pub const NETWORK_IP: u16 = 0x0002;
pub const NETWORK_UNIX: u16 = 0x0010;
pub const NETWORK_SERIAL: u16 = 0x0011;

/// Response status codes.
pub mod status {
    pub const OK: u8 = 0x00;
    pub const BAD_REQUEST: u8 = 0x01;
    pub const UNAUTHORIZED: u8 = 0x02;
    pub const FORBIDDEN: u8 = 0x03;
    pub const TIMEOUT: u8 = 0x04;
    pub const SERVICE_UNAVAILABLE: u8 = 0x05;
    pub const HOST_UNREACHABLE: u8 = 0x06;
    pub const NETWORK_UNREACHABLE: u8 = 0x07;
    pub const INTERNAL_SERVER_ERROR: u8 = 0x08;
}

/// The text gost's connector uses for a status code.
///
/// ```
/// use pht_core::relay::{status, status_text};
/// assert_eq!(status_text(status::UNAUTHORIZED), "Unauthorized");
/// assert_eq!(status_text(0x42), "Unknown Error");
/// ```
pub fn status_text(code: u8) -> &'static str {
    match code {
        status::OK => "OK",
        status::BAD_REQUEST => "Bad Request",
        status::UNAUTHORIZED => "Unauthorized",
        status::FORBIDDEN => "Forbidden",
        status::TIMEOUT => "Timeout",
        status::SERVICE_UNAVAILABLE => "Service Unavailable",
        status::HOST_UNREACHABLE => "Host Unreachable",
        status::NETWORK_UNREACHABLE => "Network Unreachable",
        status::INTERNAL_SERVER_ERROR => "Internal Server Error",
        _ => "Unknown Error",
    }
}

/// A response without features: `VER STATUS 00 00`.
pub fn response(code: u8) -> [u8; 4] {
    [VERSION, code, 0x00, 0x00]
}
