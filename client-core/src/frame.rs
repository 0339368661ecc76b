//! PHT/2 framing: the binary frames of a pull body, the negotiated limits, and the
//! parameters both sides put in query strings. See docs/PROTOCOL.md.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::DecodeError;

/// Frame type bytes. None of them is a base64 character or `\n`, so the first byte of a
/// pull body tells PHT/2 from PHT/1.
pub mod kind {
    pub const DATA: u8 = 0x01;
    pub const PING: u8 = 0x02;
    pub const ACK: u8 = 0x03;
    pub const FIN: u8 = 0x04;
    pub const RESET: u8 = 0x05;
    pub const END: u8 = 0x06;
    /// Types from here on are extensions a receiver skips when it does not know them.
    pub const EXTENSION: u8 = 0x40;
}

/// Why a tunnel was reset, as carried by a RESET frame (for people: clients act on the
/// frame, not the code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ResetCode {
    Other = 0,
    TargetFailed = 1,
    ClientReset = 2,
    ShuttingDown = 3,
    NoPull = 4,
    PushStalled = 5,
    PushBroken = 6,
}

/// Largest frame payload accepted (and sent).
pub const MAX_FRAME: usize = 1024 * 1024;

/// Longest varint accepted for a frame length (4 × 7 bits cover [`MAX_FRAME`]).
const MAX_LEN_VARINT: usize = 4;

/// Appends `v` as unsigned LEB128.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Reads an unsigned LEB128 of at most `max` bytes from the front of `b`: `Ok(None)` when
/// `b` ends first.
fn get_varint(b: &[u8], max: usize) -> Result<Option<(u64, usize)>, DecodeError> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate() {
        if i >= max {
            return Err(DecodeError::Frame("varint too long".into()));
        }
        let part = u64::from(byte & 0x7f);
        if i == 9 && part > 1 {
            return Err(DecodeError::Frame("varint overflows 64 bits".into()));
        }
        v |= part << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    if b.len() >= max {
        return Err(DecodeError::Frame("varint too long".into()));
    }
    Ok(None)
}

fn put_head(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(kind);
    put_varint(out, len as u64);
}

fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7)
}

/// Appends a DATA frame; `data` must be at most [`MAX_FRAME`] less the offset's bytes.
///
/// ```
/// let mut out = Vec::new();
/// pht_core::frame::put_data(&mut out, 300, b"hi");
/// assert_eq!(out, [0x01, 4, 0xac, 0x02, b'h', b'i']);
/// ```
pub fn put_data(out: &mut Vec<u8>, offset: u64, data: &[u8]) {
    put_data_head(out, offset, data.len());
    out.extend_from_slice(data);
}

/// Appends the head of a DATA frame whose `len` payload bytes the caller sends right
/// after it, from a buffer of their own: a sender that has the payload in hand need not
/// copy it next to the head.
///
/// ```
/// let mut head = Vec::new();
/// pht_core::frame::put_data_head(&mut head, 300, 2);
/// let mut whole = Vec::new();
/// pht_core::frame::put_data(&mut whole, 300, b"hi");
/// assert_eq!([&head[..], b"hi"].concat(), whole);
/// ```
pub fn put_data_head(out: &mut Vec<u8>, offset: u64, len: usize) {
    put_head(out, kind::DATA, varint_len(offset) + len);
    put_varint(out, offset);
}

/// Appends a frame with no payload: PING or END.
pub fn put_empty(out: &mut Vec<u8>, kind: u8) {
    put_head(out, kind, 0);
}

/// Appends a frame whose payload is one count: ACK or FIN.
pub fn put_count(out: &mut Vec<u8>, kind: u8, n: u64) {
    put_head(out, kind, varint_len(n));
    put_varint(out, n);
}

/// Appends a RESET frame (the reason is cut to fit a frame).
pub fn put_reset(out: &mut Vec<u8>, code: ResetCode, reason: &str) {
    let mut r = &reason.as_bytes()[..reason.len().min(1024)];
    while std::str::from_utf8(r).is_err() {
        r = &r[..r.len() - 1];
    }
    put_head(out, kind::RESET, 1 + r.len());
    out.push(code as u8);
    out.extend_from_slice(r);
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data { offset: u64, data: Bytes },
    Ping,
    Ack(u64),
    Fin(u64),
    Reset { code: u8, reason: String },
    End,
}

/// Incremental decoder for a PHT/2 pull body: feed it chunks split anywhere.
///
/// DATA payloads are not gathered: each piece of one that a chunk carries comes out at
/// once, as a slice of that chunk with its own offset, so download bytes are never copied
/// here however the HTTP layer cut them. Only frame heads and the short control frames
/// that straddle two chunks are buffered.
///
/// ```
/// use bytes::Bytes;
/// use pht_core::frame::{Frame, FrameDecoder, kind, put_count, put_data, put_empty};
/// let mut wire = Vec::new();
/// put_empty(&mut wire, kind::PING);
/// put_data(&mut wire, 0, b"hello");
/// put_count(&mut wire, kind::FIN, 5);
/// let wire = Bytes::from(wire);
/// let mut d = FrameDecoder::default();
/// let mut got = Vec::new();
/// d.feed(wire.slice(..8), &mut |f| got.push(f)).unwrap();
/// d.feed(wire.slice(8..), &mut |f| got.push(f)).unwrap();
/// assert_eq!(
///     got,
///     vec![
///         Frame::Ping,
///         Frame::Data { offset: 0, data: Bytes::from_static(b"hel") },
///         Frame::Data { offset: 3, data: Bytes::from_static(b"lo") },
///         Frame::Fin(5),
///     ]
/// );
/// assert!(d.is_clean());
/// ```
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// The start of a frame that the last chunk cut short: a head, or a whole control
    /// frame. Never DATA payload bytes.
    partial: BytesMut,
    /// The DATA frame whose payload is arriving: the offset of its next byte, and how
    /// many bytes it still has.
    data: Option<(u64, usize)>,
}

/// What the front of a buffer holds.
enum Head {
    /// Not enough: the buffer needs at least this many bytes to say more.
    Need(usize),
    /// A DATA frame's head (`taken` bytes, through its offset) and `left` payload bytes.
    Data {
        taken: usize,
        offset: u64,
        left: usize,
    },
    /// A whole frame of another type: `taken` bytes, the payload from `start`.
    Whole {
        taken: usize,
        kind: u8,
        start: usize,
    },
}

fn head(b: &[u8]) -> Result<Head, DecodeError> {
    let Some(&kind) = b.first() else {
        return Ok(Head::Need(1));
    };
    let Some((len, n)) = get_varint(&b[1..], MAX_LEN_VARINT)? else {
        return Ok(Head::Need(b.len() + 1));
    };
    let len = len as usize;
    if len > MAX_FRAME {
        return Err(DecodeError::Frame(format!(
            "frame of {len} bytes is over the {MAX_FRAME} limit"
        )));
    }
    let start = 1 + n;
    if kind != kind::DATA {
        return Ok(if b.len() < start + len {
            Head::Need(start + len)
        } else {
            Head::Whole {
                taken: start + len,
                kind,
                start,
            }
        });
    }
    let have = &b[start..b.len().min(start + len)];
    match get_varint(have, 10)? {
        Some((offset, m)) => Ok(Head::Data {
            taken: start + m,
            offset,
            left: len - m,
        }),
        None if have.len() == len => Err(DecodeError::Frame("malformed DATA frame".into())),
        None => Ok(Head::Need(b.len() + 1)),
    }
}

impl FrameDecoder {
    /// Decodes every frame, and every piece of a DATA payload, in `chunk` (with what
    /// earlier chunks left over).
    pub fn feed(
        &mut self,
        mut chunk: Bytes,
        emit: &mut impl FnMut(Frame),
    ) -> Result<(), DecodeError> {
        loop {
            if let Some((offset, left)) = self.data {
                if chunk.is_empty() && left > 0 {
                    return Ok(());
                }
                let data = chunk.split_to(left.min(chunk.len()));
                let n = data.len();
                self.data = (n < left).then_some((offset + n as u64, left - n));
                emit(Frame::Data { offset, data });
                continue;
            }
            if self.partial.is_empty() {
                if chunk.is_empty() {
                    return Ok(());
                }
                match head(&chunk)? {
                    Head::Need(n) => {
                        self.partial.reserve(n);
                        self.partial.extend_from_slice(&chunk);
                        return Ok(());
                    }
                    Head::Data {
                        taken,
                        offset,
                        left,
                    } => {
                        chunk.advance(taken);
                        self.data = Some((offset, left));
                    }
                    Head::Whole { taken, kind, start } => {
                        let frame = chunk.split_to(taken);
                        if let Some(f) = parse(kind, frame.slice(start..))? {
                            emit(f);
                        }
                    }
                }
                continue;
            }
            // A cut head: move over only what completes it, so that no payload byte of a
            // DATA frame ever lands here.
            match head(&self.partial)? {
                Head::Need(n) => {
                    if chunk.is_empty() {
                        return Ok(());
                    }
                    let more = chunk.split_to((n - self.partial.len()).min(chunk.len()));
                    self.partial.extend_from_slice(&more);
                }
                Head::Data {
                    taken,
                    offset,
                    left,
                } => {
                    debug_assert_eq!(taken, self.partial.len(), "a cut head holds no payload");
                    self.partial.clear();
                    self.data = Some((offset, left));
                }
                Head::Whole { taken, kind, start } => {
                    debug_assert_eq!(taken, self.partial.len());
                    let frame = self.partial.split().freeze();
                    if let Some(f) = parse(kind, frame.slice(start..))? {
                        emit(f);
                    }
                }
            }
        }
    }

    /// Whether no partial frame is left over (a body may end only here).
    pub fn is_clean(&self) -> bool {
        self.partial.is_empty() && self.data.is_none()
    }
}

fn count(payload: &[u8], what: &str) -> Result<u64, DecodeError> {
    match get_varint(payload, 10)? {
        Some((v, n)) if n == payload.len() => Ok(v),
        _ => Err(DecodeError::Frame(format!("malformed {what} frame"))),
    }
}

/// A frame other than DATA (whose payload [`FrameDecoder`] passes on in pieces).
fn parse(kind: u8, payload: Bytes) -> Result<Option<Frame>, DecodeError> {
    let empty = |f: Frame| {
        if payload.is_empty() {
            Ok(Some(f))
        } else {
            Err(DecodeError::Frame(format!("{f:?} frame with a payload")))
        }
    };
    match kind {
        kind::PING => empty(Frame::Ping),
        kind::END => empty(Frame::End),
        kind::ACK => Ok(Some(Frame::Ack(count(&payload, "ACK")?))),
        kind::FIN => Ok(Some(Frame::Fin(count(&payload, "FIN")?))),
        kind::RESET => {
            let Some((&code, reason)) = payload.split_first() else {
                return Err(DecodeError::Frame("RESET frame without a code".into()));
            };
            Ok(Some(Frame::Reset {
                code,
                reason: String::from_utf8_lossy(reason).into_owned(),
            }))
        }
        k if k >= kind::EXTENSION => Ok(None),
        k => Err(DecodeError::Frame(format!("unknown frame type {k:#04x}"))),
    }
}

/// What a PHT/2 server offers, from its authorize answer (defaults for what it omits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub heartbeat: Duration,
    pub grace: Duration,
    pub replay: usize,
    pub reorder: usize,
    pub max_push: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            heartbeat: defaults::HEARTBEAT,
            grace: defaults::GRACE,
            replay: defaults::REPLAY_BUFFER,
            reorder: defaults::REORDER_BUFFER,
            max_push: defaults::MAX_PUSH_BODY,
        }
    }
}

impl Limits {
    /// The authorize answer's tail after the token: `&v=2&heartbeat=...`.
    ///
    /// ```
    /// let l = pht_core::frame::Limits { replay: 1024, ..Default::default() };
    /// assert!(l.to_query().starts_with("&v=2&heartbeat=10000&grace=30000&replay=1024&"));
    /// ```
    pub fn to_query(&self) -> String {
        format!(
            "&v=2&heartbeat={}&grace={}&replay={}&reorder={}&maxPush={}",
            self.heartbeat.as_millis(),
            self.grace.as_millis(),
            self.replay,
            self.reorder,
            self.max_push
        )
    }
}

/// A parsed authorize answer: `token=T` (PHT/1) or `token=T&v=2&...` (PHT/2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeAnswer {
    pub token: String,
    /// `Some` when the server speaks PHT/2.
    pub v2: Option<Limits>,
}

impl AuthorizeAnswer {
    /// Parses the body; `None` when it carries no token.
    ///
    /// ```
    /// use pht_core::frame::AuthorizeAnswer;
    /// let a = AuthorizeAnswer::parse("token=abc").unwrap();
    /// assert_eq!((a.token.as_str(), a.v2.is_none()), ("abc", true));
    /// let a = AuthorizeAnswer::parse("token=abc&v=2&replay=4096&future=1").unwrap();
    /// assert_eq!(a.v2.unwrap().replay, 4096);
    /// ```
    pub fn parse(body: &str) -> Option<Self> {
        let mut parts = body.trim().split('&');
        let token = parts.next()?.strip_prefix("token=")?;
        if token.is_empty() {
            return None;
        }
        let mut limits = Limits::default();
        let mut v2 = false;
        for kv in parts {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let num = v.parse::<u64>().ok();
            match (k, num) {
                ("v", Some(2)) => v2 = true,
                ("heartbeat", Some(ms)) if ms > 0 => limits.heartbeat = Duration::from_millis(ms),
                ("grace", Some(ms)) => limits.grace = Duration::from_millis(ms),
                ("replay", Some(n)) if n > 0 => limits.replay = n as usize,
                ("reorder", Some(n)) => limits.reorder = n as usize,
                ("maxPush", Some(n)) if n > 0 => limits.max_push = n as usize,
                _ => {}
            }
        }
        Some(AuthorizeAnswer {
            token: token.to_string(),
            v2: v2.then_some(limits),
        })
    }
}

/// Query keys of PHT/2 requests.
pub mod param {
    pub const VERSION: &str = "v";
    pub const ACK: &str = "ack";
    pub const SEQ: &str = "seq";
    pub const FIN: &str = "fin";
    pub const CLOSE: &str = "close";
    pub const POLL: &str = "poll";
}

/// Finds `key`'s value in a query string (no decoding: PHT/2 values are plain numbers).
///
/// ```
/// assert_eq!(pht_core::frame::query_value("token=a&seq=5", "seq"), Some("5"));
/// assert_eq!(pht_core::frame::query_value("token=a&seq=5", "fin"), None);
/// ```
pub fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

/// Parses a push answer body `ack=M`.
pub fn parse_push_answer(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body)
        .ok()?
        .trim()
        .split('&')
        .find_map(|kv| kv.strip_prefix("ack="))?
        .parse()
        .ok()
}

/// PHT/2 defaults shared by both sides.
pub mod defaults {
    use std::time::Duration;
    /// Server heartbeat (a PING after this long without a frame).
    pub const HEARTBEAT: Duration = Duration::from_secs(10);
    /// How long a tunnel waits for a new pull after its pull broke (`resumeGrace`).
    pub const GRACE: Duration = Duration::from_secs(30);
    /// Unacknowledged download bytes kept per tunnel (`replayBuffer`): about 3 round
    /// trips of 200 ms at 100 Mbit/s.
    pub const REPLAY_BUFFER: usize = 8 * 1024 * 1024;
    /// Out-of-order upload bytes held per tunnel (`reorderBuffer`).
    pub const REORDER_BUFFER: usize = 8 * 1024 * 1024;
    /// Largest push body the server takes (`maxPushBody`).
    pub const MAX_PUSH_BODY: usize = 8 * 1024 * 1024;
    /// Client: how long pulls or pushes may fail in a row (`resumeTimeout`).
    pub const RESUME_TIMEOUT: Duration = Duration::from_secs(30);
    /// Client: make-before-break rotation of the pull (`pullMaxAge`), below Cloudflare's
    /// 100 s, AWS ALB's and CloudFront's 60 s, nginx's 60 s and Heroku's 55 s.
    pub const PULL_MAX_AGE: Duration = Duration::from_secs(50);
    /// Client: POSTs in flight at most (`pushWindow`).
    pub const PUSH_WINDOW: usize = 8;
    /// Download bytes a `poll=1` response carries at most.
    pub const POLL_BYTES: usize = 1024 * 1024;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` cut at `cuts`, checks that every DATA piece is a slice of the chunk
    /// that carried it, and joins the pieces of each DATA frame again.
    fn decode_cut(wire: &[u8], cuts: &[usize]) -> Result<(Vec<Frame>, bool), DecodeError> {
        let wire = Bytes::copy_from_slice(wire);
        let mut d = FrameDecoder::default();
        let mut got: Vec<Frame> = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([&wire.len()]) {
            let chunk = wire.slice(from..to);
            let range = chunk.as_ptr_range();
            d.feed(chunk, &mut |f| {
                if let Frame::Data { offset, data } = f {
                    assert!(data.is_empty() || range.contains(&data.as_ptr()), "copied");
                    if let Some(Frame::Data {
                        offset: o,
                        data: prev,
                    }) = got.last_mut()
                    {
                        if *o + prev.len() as u64 == offset && !data.is_empty() {
                            *prev = [&prev[..], &data[..]].concat().into();
                            return;
                        }
                    }
                    got.push(Frame::Data { offset, data });
                } else {
                    got.push(f);
                }
            })?;
            from = to;
        }
        Ok((got, d.is_clean()))
    }

    fn roundtrip(wire: &[u8], split: usize) -> Result<Vec<Frame>, DecodeError> {
        let (got, clean) = decode_cut(wire, &[split])?;
        assert!(clean);
        Ok(got)
    }

    #[test]
    fn every_frame_survives_any_split() {
        let mut wire = Vec::new();
        put_empty(&mut wire, kind::PING);
        put_count(&mut wire, kind::ACK, u64::MAX);
        put_data(&mut wire, 1 << 40, &[7u8; 300]);
        put_count(&mut wire, kind::FIN, 0);
        put_reset(&mut wire, ResetCode::TargetFailed, "target gone");
        put_empty(&mut wire, kind::END);
        for split in 0..=wire.len() {
            let got = roundtrip(&wire, split).unwrap();
            assert_eq!(
                got,
                vec![
                    Frame::Ping,
                    Frame::Ack(u64::MAX),
                    Frame::Data {
                        offset: 1 << 40,
                        data: Bytes::from(vec![7u8; 300])
                    },
                    Frame::Fin(0),
                    Frame::Reset {
                        code: 1,
                        reason: "target gone".into()
                    },
                    Frame::End,
                ]
            );
        }
        // Byte by byte: heads and control frames gathered, the payload in 300 pieces.
        let cuts: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(
            decode_cut(&wire, &cuts).unwrap().0,
            roundtrip(&wire, 0).unwrap()
        );
    }

    #[test]
    fn data_payloads_come_out_as_they_arrive() {
        let mut wire = Vec::new();
        put_data(&mut wire, 10, b"abcdef");
        put_data(&mut wire, 16, b"");
        let wire = Bytes::from(wire);
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        d.feed(wire.slice(..5), &mut |f| got.push(f)).unwrap();
        assert_eq!(
            got,
            vec![Frame::Data {
                offset: 10,
                data: Bytes::from_static(b"ab")
            }]
        );
        assert!(!d.is_clean(), "the rest of the frame is owed");
        d.feed(wire.slice(5..), &mut |f| got.push(f)).unwrap();
        assert_eq!(
            got[1..],
            [
                Frame::Data {
                    offset: 12,
                    data: Bytes::from_static(b"cdef")
                },
                Frame::Data {
                    offset: 16,
                    data: Bytes::new()
                }
            ]
        );
        assert!(d.is_clean());
    }

    #[test]
    fn extensions_are_skipped_and_unknown_types_refused() {
        let wire = [0x41, 2, 9, 9, kind::PING, 0];
        assert_eq!(roundtrip(&wire, 3).unwrap(), vec![Frame::Ping]);
        assert!(roundtrip(&[0x07, 0], 1).is_err());
        // The first byte of a PHT/1 body is never PING: that is how a client tells them apart.
        let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n";
        assert!(!b64.contains(&kind::PING));
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let mut wire = vec![kind::DATA];
        put_varint(&mut wire, MAX_FRAME as u64 + 1);
        assert!(roundtrip(&wire, 0).is_err());
        assert!(roundtrip(&[kind::DATA, 0xff, 0xff, 0xff, 0xff, 0x01], 3).is_err());
        assert!(
            roundtrip(&[kind::DATA, 2, 0x80, 0x80], 1).is_err(),
            "no offset"
        );
        assert!(roundtrip(&[kind::ACK, 0], 0).is_err(), "empty ACK");
        assert!(
            roundtrip(&[kind::PING, 1, 0], 0).is_err(),
            "PING with payload"
        );
        let (_, clean) = decode_cut(&[kind::DATA, 5, 0], &[]).unwrap();
        assert!(!clean, "a cut frame is visible");
        let (_, clean) = decode_cut(&[kind::RESET, 5, 0], &[]).unwrap();
        assert!(!clean, "a cut frame is visible");
    }

    #[test]
    fn authorize_answers() {
        assert_eq!(AuthorizeAnswer::parse("token="), None);
        assert_eq!(AuthorizeAnswer::parse("nope"), None);
        let a =
            AuthorizeAnswer::parse(&format!("token=t{}", Limits::default().to_query())).unwrap();
        assert_eq!(a.v2, Some(Limits::default()));
        assert_eq!(parse_push_answer(b"ack=42"), Some(42));
        assert_eq!(parse_push_answer(b""), None);
    }
}
