//! [`pht_core::Clock`] on tokio's timer.

use std::time::{Duration, Instant};

/// Tokio's clock: `now` counts from the clock's creation, `sleep` is `tokio::time::sleep`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock {
            origin: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl pht_core::Clock for TokioClock {
    type Sleep = tokio::time::Sleep;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, d: Duration) -> tokio::time::Sleep {
        tokio::time::sleep(d)
    }
}
