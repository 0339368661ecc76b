//! HTTP/2 settings both ends of a PHT connection use (this client, and pht-server's
//! phts/h2c listener), so that neither side's defaults stall the other.

use std::time::Duration;

/// Per-stream flow-control window: a tunnel's pull or push never waits for credit on
/// loopback-class links.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// Per-connection window: many tunnels share one connection.
pub const CONN_WINDOW: u32 = 16 * 1024 * 1024;
/// PING interval: a dead connection is found even while its streams are idle; an
/// unanswered PING closes it (and fails its tunnels' requests) after hyper's 20 s.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
