use std::io;

/// A node or service URL that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    #[error("{what} request timed out after {after:?} (requestTimeout)")]
    Timeout {
        what: &'static str,
        after: std::time::Duration,
    },
    /// The pull carried neither data nor a heartbeat for `heartbeatTimeout`: the path to
    /// the server is dead even though no connection reported it.
    #[error("no data or heartbeat from the server for {after:?} (heartbeatTimeout)")]
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
    #[error("{what} failed for {after:?} in a row (resumeTimeout); last: {last}")]
    Unresumable {
        what: &'static str,
        after: std::time::Duration,
        last: Box<Error>,
    },
}

fn status_hint(status: u16) -> &'static str {
    match status {
        403 => " (unknown token: was it authorized, or did the server restart?)",
        404 => " (wrong path: check authorizePath/pushPath/pullPath)",
        410 => " (tunnel is gone on the server)",
        413 => " (push body too large for the server)",
        429 => " (server tunnel queue full, try later)",
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
