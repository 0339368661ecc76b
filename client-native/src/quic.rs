//! QUIC settings shared by the `h3` dialer and the `h3` listener, under gost's keys:
//! `keepalive` with `ttl`, `handshakeTimeout`, `maxIdleTimeout`, `maxStreams`.

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

/// PING period when `keepalive` is on and `ttl` is not set (gost's).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Time for a QUIC handshake (`handshakeTimeout`; quic-go's default, which gost keeps).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no packet for this long is closed (`maxIdleTimeout`; quic-go's
/// default, which gost keeps).
pub const DEFAULT_MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-stream receive window: one pull may have this much in flight before it waits for
/// the reader. Loopback-class links need megabytes; QUIC's credit costs no memory until
/// the bytes come.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Bytes in flight on a connection across its streams.
const SEND_WINDOW: u64 = 16 * 1024 * 1024;

/// One side's QUIC settings.
///
/// ```
/// let q = pht_client::QuicOptions { max_streams: 1000, ..Default::default() };
/// let _ = q.transport();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicOptions {
    /// PING period keeping an idle connection (and the NAT mappings on its path) alive;
    /// `None` sends none.
    pub keep_alive: Option<Duration>,
    /// Time for the handshake.
    pub handshake_timeout: Duration,
    /// Silence after which the connection is closed.
    pub max_idle_timeout: Duration,
    /// Concurrent request streams the peer may open (each PHT tunnel holds one pull
    /// stream, and its pushes come on top).
    pub max_streams: u32,
}

impl Default for QuicOptions {
    fn default() -> Self {
        QuicOptions {
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_idle_timeout: DEFAULT_MAX_IDLE_TIMEOUT,
            max_streams: 100,
        }
    }
}

impl QuicOptions {
    /// The transport parameters quinn sends and enforces.
    pub fn transport(&self) -> Arc<TransportConfig> {
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams))
            // An out-of-range idle time (over 2^62 ms) means "never idle".
            .max_idle_timeout(IdleTimeout::try_from(self.max_idle_timeout).ok())
            .keep_alive_interval(self.keep_alive)
            .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
            .send_window(SEND_WINDOW);
        Arc::new(t)
    }
}
