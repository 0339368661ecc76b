//! PHT/2 on the server: what a tunnel keeps between its requests so that pulls can be
//! resumed and replaced and pushes pipelined and retried (see docs/PROTOCOL.md).
//!
//! A tunnel's version is fixed by the request that starts it; PHT/1 tunnels have no
//! [`Session`] and behave exactly as gost's.

mod pull;
mod push;

pub(super) use pull::pull;
pub(super) use push::push;

use std::num::ParseIntError;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pht_core::frame::{param, query_value};
use tokio::sync::{Mutex as AsyncMutex, watch};

use std::sync::Arc;

use http::{Response, StatusCode};
use pht_core::frame::ResetCode;
use pht_core::token_prefix;

use super::PhtOptions;
pub(super) use super::registry::Create;
use super::registry::{Lookup, Registry, ServerTunnel};
use super::reorder::ReorderBuffer;
use super::replay::{AckBeyondEnd, Acked, ReplayBuffer};
use super::routes::{Body, Peer, refused, text, version_mismatch};

/// The protocol a request (and the tunnel it starts) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V1,
    V2,
}

impl Version {
    /// `v=2` asks for PHT/2; anything else is PHT/1, as a gost server ignores what it
    /// does not know.
    pub fn of(query: &str) -> Version {
        if query_value(query, param::VERSION) == Some("2") {
            Version::V2
        } else {
            Version::V1
        }
    }
}

/// What the tunnel's requests share, under one lock: never held across an await.
pub(super) struct State {
    /// Download bytes the client has not acknowledged.
    pub replay: ReplayBuffer,
    /// Upload bytes the handler's queue took in order: what ACK frames carry.
    pub uploaded: u64,
    /// The attached pull, by its number.
    attached: Option<u64>,
    pulls: u64,
    /// When the last pull went away (or the tunnel started without one).
    detached_at: Instant,
}

/// The PHT/2 side of one tunnel.
pub(super) struct Session {
    state: Mutex<State>,
    /// Pushes apply one at a time, so bytes reach the handler in order and once; held
    /// across the handler taking them (it is an async lock for that).
    pub upload: AsyncMutex<ReorderBuffer>,
    /// Bumped on every change an attached pull acts on (acks, upload progress, a newer
    /// pull); the handler's bytes and the tunnel's end have their own wake-ups.
    changed: watch::Sender<u64>,
}

impl Session {
    pub fn new(opts: &PhtOptions) -> Self {
        Session {
            state: Mutex::new(State {
                replay: ReplayBuffer::new(opts.replay_buffer),
                uploaded: 0,
                attached: None,
                pulls: 0,
                detached_at: Instant::now(),
            }),
            upload: AsyncMutex::new(ReorderBuffer::new(opts.reorder_buffer)),
            changed: watch::Sender::new(0),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poke(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later [`Session`] change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Makes a new pull the attached one; the one it replaces sees that and ends.
    pub fn attach(&self) -> u64 {
        let id = {
            let mut st = self.lock();
            st.pulls += 1;
            st.attached = Some(st.pulls);
            st.pulls
        };
        self.poke();
        id
    }

    /// Pull `id` is gone; if it was the attached one, the grace period starts now.
    pub fn detach(&self, id: u64) -> bool {
        let mut st = self.lock();
        if st.attached != Some(id) {
            return false;
        }
        st.attached = None;
        st.detached_at = Instant::now();
        true
    }

    pub fn is_attached(&self, id: u64) -> bool {
        self.lock().attached == Some(id)
    }

    /// How long the tunnel has been without a pull (`None`: one is attached).
    pub fn detached_for(&self, now: Instant) -> Option<Duration> {
        let st = self.lock();
        st.attached
            .is_none()
            .then(|| now.saturating_duration_since(st.detached_at))
    }

    /// The client has `n` download bytes: frees them from the replay buffer.
    pub fn ack(&self, n: u64) -> Result<Acked, AckBeyondEnd> {
        let (acked, was_full) = {
            let mut st = self.lock();
            let was_full = st.replay.room() == 0;
            (st.replay.ack(n)?, was_full)
        };
        // Room for more of the handler's bytes: the pull waits for that only when the
        // buffer was full (it takes handler bytes while there is room). Waking it for
        // every ack (each push carries one) costs a wake-up and a look per request.
        if was_full && matches!(acked, Acked::Freed(_)) {
            self.poke();
        }
        Ok(acked)
    }

    /// The handler's queue has taken the first `n` upload bytes.
    ///
    /// The attached pull is not woken for this: the push's answer carries the count
    /// already, and the pull's next frame (DATA, PING, FIN, END) brings an ACK frame
    /// with it. A lone ACK frame for every push cost a write here, and a read and a
    /// wake-up in the client, on every request.
    pub fn set_uploaded(&self, n: u64) {
        let mut st = self.lock();
        if n > st.uploaded {
            st.uploaded = n;
        }
    }

    /// Wakes the attached pull to send an ACK frame for the upload count now: for bytes
    /// taken after their push was answered, which no push answer will carry.
    pub fn announce_uploaded(&self) {
        self.poke();
    }

    pub fn uploaded(&self) -> u64 {
        self.lock().uploaded
    }
}

/// Parses a count parameter: `Ok(None)` when absent, `Err` when not a number.
/// The live PHT/2 tunnel of `token` and its session, created when `create` allows; or
/// the answer that says why there is none.
#[allow(clippy::result_large_err)]
pub(super) async fn live_session(
    reg: &Registry,
    token: &str,
    peer: &Peer,
    create: Create,
) -> Result<(Arc<ServerTunnel>, Arc<Session>), Response<Body>> {
    let t = match reg
        .lookup(token, peer.addr, peer.client, create, Version::V2)
        .await
    {
        Lookup::Live(t) => t,
        Lookup::Closed { reset: true } => return Err(text(StatusCode::GONE, "tunnel was reset\n")),
        Lookup::Closed { reset: false } | Lookup::Unknown => {
            return Err(text(StatusCode::GONE, "tunnel closed\n"));
        }
        Lookup::Refused(why) => return Err(refused(why)),
    };
    match t.v2.clone() {
        Some(session) => Ok((t, session)),
        None => Err(version_mismatch()),
    }
}

/// Applies a client's download acknowledgement; one beyond what was sent resets the
/// tunnel, and the answer says so.
#[allow(clippy::result_large_err)]
pub(super) fn take_ack(
    reg: &Registry,
    token: &str,
    session: &Session,
    ack: u64,
) -> Result<(), Response<Body>> {
    if let Err(e) = session.ack(ack) {
        tracing::debug!(service = %reg.service, token = token_prefix(token), "{e}: tunnel reset");
        reg.abort(token, ResetCode::Other, "ack outside the replay window");
        return Err(text(StatusCode::GONE, "ack outside the replay window\n"));
    }
    Ok(())
}

pub(super) fn count_param(query: &str, key: &str) -> Result<Option<u64>, ParseIntError> {
    query_value(query, key).map(str::parse).transpose()
}

/// Whether a flag parameter is set (`key=1`).
pub(super) fn flag(query: &str, key: &str) -> bool {
    query_value(query, key) == Some("1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_parameters() {
        assert_eq!(Version::of("token=a&v=2&ack=0"), Version::V2);
        assert_eq!(Version::of("token=a"), Version::V1);
        assert_eq!(Version::of("token=a&v=3"), Version::V1);
        assert_eq!(Version::of("token=v=2"), Version::V1);
        assert_eq!(count_param("seq=12&ack=x", "seq"), Ok(Some(12)));
        assert!(count_param("seq=12&ack=x", "ack").is_err());
        assert_eq!(count_param("seq=12", "ack"), Ok(None));
        assert!(count_param("seq=-1", "seq").is_err());
        assert!(flag("fin=1&close=0", "fin"));
        assert!(!flag("fin=1&close=0", "close"));
    }

    #[test]
    fn a_newer_pull_replaces_and_detaching_starts_the_grace() {
        let s = Session::new(&PhtOptions::default());
        let now = Instant::now();
        assert!(s.detached_for(now).is_some(), "no pull yet");
        let mut rx = s.subscribe();
        let a = s.attach();
        let b = s.attach();
        assert!(rx.has_changed().unwrap(), "the older pull is woken");
        rx.borrow_and_update();
        assert!(!s.is_attached(a) && s.is_attached(b));
        assert!(!s.detach(a), "a replaced pull going away changes nothing");
        assert_eq!(s.detached_for(Instant::now()), None);
        assert!(s.detach(b));
        assert!(s.detached_for(Instant::now()).is_some());
        s.set_uploaded(5);
        assert!(
            !rx.has_changed().unwrap(),
            "upload progress rides the pull's next frame"
        );
        assert_eq!(s.uploaded(), 5);
    }
}
