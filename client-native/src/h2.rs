//! HTTP/2 settings both ends of a PHT connection use (this client, and pht-server's
//! phts/h2c listener), so that neither side's defaults stall the other.

use std::time::Duration;

/// Per-stream flow-control window: a tunnel's pull or push never waits for credit on
/// loopback-class links.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// Per-connection window: many tunnels share one connection.
pub const CONN_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest frame either end accepts (the protocol's default is 16 KiB): a PHT/2 DATA
/// frame of 64 KiB crosses as one HTTP/2 frame instead of four, and a push body in a
/// few, so neither end pays per-frame work and copies four times over.
pub const MAX_FRAME: u32 = 128 * 1024;
/// PING interval: a dead connection is found even while its streams are idle; an
/// unanswered PING closes it (and fails its tunnels' requests) after hyper's 20 s.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
