//! Outbound dials for handlers: direct TCP (chains come through here too).

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::listener::Stream;

/// Time allowed for one outbound TCP connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How a handler reaches its targets.
#[derive(Clone, Default)]
pub struct Router {}

impl Router {
    /// A router that dials targets directly.
    pub fn direct() -> Self {
        Router {}
    }

    /// Connects to `addr` (`host:port`; an empty host means this machine, as in gost).
    pub async fn dial(&self, addr: &str) -> io::Result<Box<dyn Stream>> {
        let addr = if addr.starts_with(':') {
            format!("127.0.0.1{addr}")
        } else {
            addr.to_string()
        };
        let s = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, format!("dial {addr}: timed out"))
            })??;
        let _ = s.set_nodelay(true);
        Ok(Box::new(s))
    }
}
