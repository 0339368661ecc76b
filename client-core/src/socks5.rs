//! SOCKS5's numbers (RFC 1928, RFC 1929 and gost's extensions), for the client's
//! connector and the server's handler alike.

/// The protocol version, first byte of every message.
pub const VERSION: u8 = 0x05;

/// Authentication methods.
pub const METHOD_NONE: u8 = 0x00;
pub const METHOD_USER_PASS: u8 = 0x02;
/// The server's answer when none of the offered methods will do.
pub const METHOD_UNACCEPTABLE: u8 = 0xFF;

/// The version of the RFC 1929 user/password sub-negotiation.
pub const AUTH_VERSION: u8 = 0x01;
/// RFC 1929's status for accepted credentials; anything else refuses them.
pub const AUTH_OK: u8 = 0x00;
/// The refusal status servers send.
pub const AUTH_REFUSED: u8 = 0x01;

/// Commands.
pub const CMD_CONNECT: u8 = 0x01;
pub const CMD_BIND: u8 = 0x02;
pub const CMD_UDP: u8 = 0x03;
/// gost's multiplexed BIND and UDP-over-TCP extensions.
pub const CMD_MUXBIND: u8 = 0xF2;
pub const CMD_UDPTUN: u8 = 0xF3;

/// Reply codes.
pub const REP_OK: u8 = 0x00;
pub const REP_FAILURE: u8 = 0x01;
pub const REP_NOT_ALLOWED: u8 = 0x02;
pub const REP_NET_UNREACHABLE: u8 = 0x03;
pub const REP_CMD_UNSUPPORTED: u8 = 0x07;

/// The text for a reply code (RFC 1928 §6).
///
/// ```
/// assert_eq!(pht_core::socks5::reply_text(pht_core::socks5::REP_NOT_ALLOWED),
///     "connection not allowed by ruleset");
/// ```
pub fn reply_text(code: u8) -> &'static str {
    match code {
        0x00 => "succeeded",
        0x01 => "general SOCKS server failure",
        0x02 => "connection not allowed by ruleset",
        0x03 => "network unreachable",
        0x04 => "host unreachable",
        0x05 => "connection refused",
        0x06 => "TTL expired",
        0x07 => "command not supported",
        0x08 => "address type not supported",
        _ => "unassigned",
    }
}
