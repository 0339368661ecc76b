//! Time as an input: the runtime crate supplies a [`Clock`], so deadlines and the heartbeat
//! watch run the same way on tokio, in a browser, and under a manual clock in tests.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::future::{Either, select};

use crate::MaybeSend;

/// Monotonic time and timers for a tunnel.
///
/// `client-native` implements it with tokio's timer, `client-wasm` with `setTimeout`.
///
/// ```
/// use std::time::Duration;
/// use pht_core::Clock;
/// // A clock whose sleeps never end: a tunnel on it has no deadlines at all.
/// struct Frozen;
/// impl pht_core::Clock for Frozen {
///     type Sleep = futures::future::Pending<()>;
///     fn now(&self) -> Duration { Duration::ZERO }
///     fn sleep(&self, _: Duration) -> Self::Sleep { futures::future::pending() }
/// }
/// assert_eq!(Frozen.now(), Duration::ZERO);
/// ```
pub trait Clock: MaybeSend + crate::MaybeSync + 'static {
    /// The future [`Clock::sleep`] returns; dropping it cancels the timer.
    type Sleep: Future<Output = ()> + MaybeSend + 'static;

    /// Time since an arbitrary fixed origin; never goes backwards.
    fn now(&self) -> Duration;

    /// Resolves once `d` has passed.
    fn sleep(&self, d: Duration) -> Self::Sleep;
}

/// A deadline passed before the work it guarded finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Runs `fut`, giving up after `limit`.
pub async fn timeout<C: Clock, F: Future>(
    clock: &C,
    limit: Duration,
    fut: F,
) -> Result<F::Output, Elapsed> {
    let sleep = pin!(clock.sleep(limit));
    match select(pin!(fut), sleep).await {
        Either::Left((out, _)) => Ok(out),
        Either::Right(((), _)) => Err(Elapsed),
    }
}
