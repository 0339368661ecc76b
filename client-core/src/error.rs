use std::io;

/// A node or service URL that cannot be understood.
#[cfg_attr(not(target_arch = "wasm32"), derive(Debug))]
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The URL has no host:port part.
    #[error("{url:?}: missing host:port")]
    MissingAddress { url: String },
    /// The port is not a number in 0..=65535.
    #[error("{url:?}: invalid port {port:?}")]
    BadPort { url: String, port: String },
    /// A percent-escape is malformed or not UTF-8.
    #[error("{url:?}: invalid percent-encoding")]
    BadEscape { url: String },
    /// A parameter has a value that cannot be used.
    #[error("{url:?}: parameter {key}={value:?}: {reason}")]
    BadParam {
        url: String,
        key: String,
        value: String,
        reason: String,
    },
}

/// A pull stream or push body that does not follow the PHT framing.
#[cfg_attr(not(target_arch = "wasm32"), derive(Debug))]
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A line is not standard padded base64.
    #[error("invalid base64 in PHT line: {0}")]
    Base64(String),
    /// A line grew past the configured maximum before its newline arrived.
    #[error("PHT line longer than {max} bytes")]
    LineTooLong { max: usize },
    /// The stream ended in the middle of a line.
    #[error("PHT stream ended in the middle of a line")]
    Truncated,
    /// A PHT/2 frame that breaks the framing rules.
    #[error("PHT/2 protocol error: {0}")]
    Frame(String),
}

/// What an HTTP fetch implementation reports when a request fails below HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

impl FetchError {
    /// Wraps any displayable error.
    pub fn new(e: impl std::fmt::Display) -> Self {
        FetchError(e.to_string())
    }
}

/// Why a tunnel could not be opened or broke.
#[cfg_attr(not(target_arch = "wasm32"), derive(Debug))]
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The HTTP request itself failed (connection refused, reset, TLS...).
    #[error("{what} request failed: {source}")]
    Fetch {
        what: &'static str,
        #[source]
        source: FetchError,
    },
    /// The server answered with a status the protocol does not allow here.
    #[error("{what} refused by server: HTTP {status}{}", status_hint(*status))]
    Status { what: &'static str, status: u16 },
    /// The authorize answer did not carry `token=`.
    #[error("authorize failed: unexpected answer {0:?}")]
    Authorize(String),
    /// A request got no complete answer within `requestTimeout`.
    #[error("{what} request timed out after {} (requestTimeout)", Took(*after))]
    Timeout {
        what: &'static str,
        after: std::time::Duration,
    },
    /// The pull carried neither data nor a heartbeat for `heartbeatTimeout`: the path to
    /// the server is dead even though no connection reported it.
    #[error("no data or heartbeat from the server for {} (heartbeatTimeout)", Took(*after))]
    Silent { after: std::time::Duration },
    /// The tunnel was closed by this side.
    #[error("tunnel closed")]
    Closed,
    /// The tunnel was reset by this side ([`crate::Tunnel::reset`]).
    #[error("tunnel reset by this side")]
    Aborted,
    /// The server reset the tunnel (a PHT/2 RESET frame), with its reason.
    #[error("tunnel reset by the server: {0}")]
    Reset(String),
    /// PHT/2 was required (`v=2`) and the server speaks only PHT/1.
    #[error("the server does not speak PHT/2 (the node asks for v=2)")]
    NoV2,
    /// PHT/2 requests kept failing for `resumeTimeout`; the last failure is given.
    #[error("{what} failed for {} in a row (resumeTimeout); last: {last}", Took(*after))]
    Unresumable {
        what: &'static str,
        after: std::time::Duration,
        last: Box<Error>,
    },
}

// The wasm package: the `Debug` of these errors is their `Display`. Nothing there prints
// `Debug` (no panic hook, no logger: tracing is compiled out), but `io::Error` keeps it
// reachable, and derived it brings `Duration`'s decimal formatting and more: 4 KB of the
// package. Native builds derive it.
macro_rules! debug_is_display {
    ($($t:ty),*) => {$(
        #[cfg(target_arch = "wasm32")]
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(self, f)
            }
        }
    )*};
}
debug_is_display!(UrlError, DecodeError, Error);

/// A duration in an error message, as `Duration`'s `Debug` writes it: `30s`, `1.5s`,
/// `250ms`. The wasm package writes it with [`duration_text`] (see `debug_is_display`).
struct Took(std::time::Duration);

impl std::fmt::Display for Took {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(not(target_arch = "wasm32"))]
        return write!(f, "{:?}", self.0);
        #[cfg(target_arch = "wasm32")]
        f.write_str(&duration_text(self.0))
    }
}

/// `Duration`'s `Debug` text (no width or precision): the largest of `s`, `ms`, `µs` and
/// `ns` that has a whole part, then every decimal up to the last nonzero one.
#[cfg(any(target_arch = "wasm32", test))]
fn duration_text(d: std::time::Duration) -> String {
    let (secs, nanos) = (d.as_secs(), u64::from(d.subsec_nanos()));
    let (whole, mut frac, mut digit, unit) = if secs > 0 {
        (secs, nanos, 100_000_000, "s")
    } else if nanos >= 1_000_000 {
        (nanos / 1_000_000, nanos % 1_000_000, 100_000, "ms")
    } else if nanos >= 1_000 {
        (nanos / 1_000, nanos % 1_000, 100, "µs")
    } else {
        (nanos, 0, 1, "ns")
    };
    let mut text = whole.to_string();
    if frac > 0 {
        text.push('.');
        while frac > 0 {
            text.push(char::from(b'0' + (frac / digit) as u8));
            frac %= digit;
            digit /= 10;
        }
    }
    text.push_str(unit);
    text
}

fn status_hint(status: u16) -> &'static str {
    match status {
        403 => " (unknown token: was it authorized, or did the server restart?)",
        404 => " (wrong path: check authorizePath/pushPath/pullPath)",
        410 => " (tunnel is gone on the server)",
        413 => " (push body too large for the server)",
        429 => " (the server is at one of its tunnel limits: try later)",
        _ => "",
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Closed => io::ErrorKind::BrokenPipe,
            Error::Aborted => io::ErrorKind::ConnectionAborted,
            Error::Timeout { .. } | Error::Silent { .. } => io::ErrorKind::TimedOut,
            Error::Status { status: 403, .. } | Error::Status { status: 429, .. } => {
                io::ErrorKind::ConnectionRefused
            }
            Error::Status { .. }
            | Error::Fetch { .. }
            | Error::Reset(_)
            | Error::Unresumable { .. } => io::ErrorKind::ConnectionReset,
            Error::NoV2 => io::ErrorKind::Unsupported,
            Error::Decode(_) | Error::Authorize(_) => io::ErrorKind::InvalidData,
            Error::Url(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Error, duration_text};

    /// A `429` names no particular limit: our server has five behind it (`backlog`,
    /// `maxTunnels`, `maxTunnelsPerClient`, `tunnelRate`, `reorderBuffer`).
    #[test]
    fn a_429_says_a_limit_was_reached_not_which() {
        let e = Error::Status {
            what: "push",
            status: 429,
        };
        assert_eq!(
            e.to_string(),
            "push refused by server: HTTP 429 (the server is at one of its tunnel limits: try later)"
        );
    }

    #[test]
    fn duration_text_is_debug() {
        let nanos = [
            0, 1, 9, 10, 999, 1_000, 1_001, 1_500, 999_999, 1_000_000, 1_000_001,
        ];
        let more = [
            250_000_000,
            100_000_000,
            999_999_999,
            123_456_789,
            5_000,
            120_000,
        ];
        for secs in [0, 1, 5, 30, 59, 3600, 86_400, u64::MAX] {
            for n in nanos.iter().chain(&more) {
                let d = Duration::new(secs, *n);
                assert_eq!(duration_text(d), format!("{d:?}"));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn duration_text_is_debug_random(
            secs in proptest::prop_oneof![proptest::strategy::Just(0u64), 0u64..100_000],
            nanos in 0u32..1_000_000_000,
        ) {
            let d = Duration::new(secs, nanos);
            proptest::prop_assert_eq!(duration_text(d), format!("{d:?}"));
        }
    }
}
