//! Property-based fuzzing of every pht-core parser that reads bytes from the network, or
//! strings from a user: the PHT pull and push decoders, PHT/2 frames, the HTTP head scan, the client's
//! HTTP CONNECT / SOCKS5 / relay reply parsing, gost URLs and node URLs.
//!
//! Runs on stable Rust with `proptest`. Each property runs `PROPTEST_CASES` cases (512
//! unless set; the slow never-ending-head property fewer), so the normal test suite stays
//! fast; `docs/FUZZING.md` says how to run longer. Failing inputs are printed shrunk; add them as plain tests next to the parser
//! (no regression files are written).
//!
//! Async parsing is driven by [`Mock`], an in-memory stream that answers every read at
//! once (at most `chunk` bytes), then reports EOF. A parser that keeps reading after EOF
//! is a hang in the making: the mock panics after a bounded number of reads past it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::executor::block_on;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite};
use proptest::prelude::*;
use proptest::sample::Index;

use pht_core::{
    Connector, ConnectorError, Credentials, DecodeError, GostUrl, NodeUrl, PullDecoder, PullEvent,
    PushDecoder, decode_push_body, encode_pull_line, encode_push_body, handshake, http_head_end,
    parse_bool, parse_duration,
};

// ---------------------------------------------------------------------------------------
// Configuration and input helpers
// ---------------------------------------------------------------------------------------

/// `default` cases, or `PROPTEST_CASES` when set. No regression files are written: a
/// failure prints its shrunk input, which belongs in a plain unit test.
fn config(default: u32) -> ProptestConfig {
    config_capped(default, u32::MAX)
}

/// Like [`config`], for a slow property: `PROPTEST_CASES` is followed up to `cap`.
fn config_capped(default: u32, cap: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(default, |n: u32| n.min(cap));
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const B64_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Bytes that look like PHT framing often enough to reach deep decoder states: mostly
/// base64 characters, with padding, newlines, carriage returns and arbitrary bytes.
fn b64ish(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        12 => prop::sample::select(B64_ALPHABET),
        2 => Just(b'='),
        2 => Just(b'\n'),
        1 => Just(b'\r'),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..max_len)
}

/// Arbitrary bytes, or framing-like bytes.
fn wire_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        b64ish(max_len),
        prop::collection::vec(any::<u8>(), 0..max_len),
    ]
}

/// Where to cut an input into chunks.
fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..8)
}

/// `data` split at the cut points (chunks may be empty, as reads may be).
fn split<'a>(data: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::with_capacity(at.len() + 1);
    let mut prev = 0;
    for a in at {
        out.push(&data[prev..a]);
        prev = a;
    }
    out.push(&data[prev..]);
    out
}

/// Strict standard padded base64 (RFC 4648 §4, canonical trailing bits), written
/// independently of the crate as the oracle for what a PHT line may carry.
fn ref_b64(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 != 0 {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let groups = text.len() / 4;
    let mut out = Vec::with_capacity(groups * 3);
    for (i, g) in text.chunks(4).enumerate() {
        let pad = g.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != groups) {
            return None;
        }
        let mut acc = 0u32;
        for &c in &g[..4 - pad] {
            acc = acc << 6 | val(c)?;
        }
        acc <<= 6 * pad as u32;
        let b = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        match pad {
            0 => out.extend_from_slice(&b),
            1 if b[2] == 0 => out.extend_from_slice(&b[..2]),
            2 if b[1] == 0 && b[2] == 0 => out.push(b[0]),
            _ => return None, // non-canonical: bits set past the data
        }
    }
    Some(out)
}

fn same_kind(a: &DecodeError, b: &DecodeError) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

// ---------------------------------------------------------------------------------------
// PHT pull decoder
// ---------------------------------------------------------------------------------------

/// What a pull stream means, line by line (the spec the decoder is held to): each
/// `\n`-terminated line, less one trailing `\r`, is a heartbeat when empty, else base64;
/// a line whose text is longer than `max` is an error; a line left open at the end is
/// `Truncated`, or `LineTooLong` if it already holds more than `max` + 1 bytes (the room
/// for a `\r`).
fn pull_reference(input: &[u8], max: usize) -> (Vec<PullEvent>, Result<(), DecodeError>) {
    let mut events = Vec::new();
    let mut rest = input;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        let text = line.strip_suffix(b"\r").unwrap_or(line);
        if text.len() > max {
            return (events, Err(DecodeError::LineTooLong { max }));
        }
        if text.is_empty() {
            events.push(PullEvent::Heartbeat);
            continue;
        }
        match ref_b64(text) {
            Some(data) => events.push(PullEvent::Data(data.into())),
            None => return (events, Err(DecodeError::Base64(String::new()))),
        }
    }
    if rest.len() > max + 1 {
        return (events, Err(DecodeError::LineTooLong { max }));
    }
    if !rest.is_empty() {
        return (events, Err(DecodeError::Truncated));
    }
    (events, Ok(()))
}

/// Feeds `chunks` to a fresh decoder, stopping at the first error, and checks after every
/// accepted chunk that the open line (what the decoder must buffer) is within the bound.
fn pull_chunked(chunks: &[&[u8]], max: usize) -> (Vec<PullEvent>, Result<(), DecodeError>) {
    let mut d = PullDecoder::new(max);
    let mut events = Vec::new();
    let mut open = 0usize;
    for c in chunks {
        if let Err(e) = d.feed(c, &mut |e| events.push(e)) {
            return (events, Err(e));
        }
        open = match c.iter().rposition(|&b| b == b'\n') {
            Some(nl) => c.len() - nl - 1,
            None => open + c.len(),
        };
        assert!(
            open <= max + 1,
            "decoder accepted an open line of {open} bytes with max_line {max}"
        );
    }
    (events, d.finish())
}

fn max_line() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..48, Just(pht_core::defaults::MAX_PULL_LINE)]
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary bytes, split anywhere: the decoder never panics, agrees with the
    /// line-by-line spec (events, then the same kind of error), and never holds an open
    /// line longer than `max_line + 1`.
    #[test]
    fn pull_decoder_matches_spec_at_any_split(
        input in wire_bytes(300),
        cuts in cuts(),
        max in max_line(),
    ) {
        let chunks = split(&input, &cuts);
        let (events, res) = pull_chunked(&chunks, max);
        let (want_events, want) = pull_reference(&input, max);
        prop_assert_eq!(&events, &want_events);
        match (&res, &want) {
            (Ok(()), Ok(())) => {}
            (Err(a), Err(b)) => prop_assert!(same_kind(a, b), "got {a:?}, spec says {b:?}"),
            _ => prop_assert!(false, "got {res:?}, spec says {want:?}"),
        }
        // Every accepted data line was within the limit.
        for e in &events {
            if let PullEvent::Data(b) = e {
                prop_assert!(b.len().div_ceil(3) * 4 <= max, "{} bytes from a line over {max}", b.len());
            }
        }
        // A decoder keeps failing cleanly if fed after an error (no panic).
        let mut d = PullDecoder::new(max);
        for c in &chunks {
            let _ = d.feed(c, &mut |_| {});
        }
        let _ = d.finish();
    }

    /// Round trip: encoded payloads and heartbeats (LF or CRLF), split anywhere, come back
    /// as the same events, also with `max_line` exactly the longest line.
    #[test]
    fn pull_round_trip(
        lines in prop::collection::vec(
            (prop::option::of(prop::collection::vec(any::<u8>(), 0..200)), any::<bool>()),
            0..10,
        ),
        cuts in cuts(),
        tight in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        let mut longest = 0;
        for (payload, crlf) in &lines {
            let start = stream.len();
            match payload {
                Some(p) => {
                    encode_pull_line(p, &mut stream);
                    want.push(if p.is_empty() {
                        PullEvent::Heartbeat
                    } else {
                        PullEvent::Data(p.clone().into())
                    });
                }
                None => {
                    stream.push(b'\n');
                    want.push(PullEvent::Heartbeat);
                }
            }
            longest = longest.max(stream.len() - start - 1);
            if *crlf {
                stream.insert(stream.len() - 1, b'\r');
            }
        }
        let max = if tight { longest } else { pht_core::defaults::MAX_PULL_LINE };
        let (events, res) = pull_chunked(&split(&stream, &cuts), max);
        prop_assert_eq!(res, Ok(()));
        prop_assert_eq!(events, want);
    }

    /// A line one character over the limit is refused, at whatever point it is split and
    /// whether or not its newline has arrived.
    #[test]
    fn pull_line_limit_holds(max in 0usize..64, cuts in cuts(), newline in any::<bool>(), crlf in any::<bool>()) {
        // The shortest valid base64 text longer than `max`.
        let len = (max + 1).div_ceil(4) * 4;
        let mut line = vec![b'A'; len];
        if crlf {
            line.push(b'\r');
        }
        if newline {
            line.push(b'\n');
        }
        let (events, res) = pull_chunked(&split(&line, &cuts), max);
        prop_assert!(events.is_empty());
        prop_assert!(res.is_err(), "a {len}-character line passed max_line {max}");
    }
}

// ---------------------------------------------------------------------------------------
// PHT push decoders
// ---------------------------------------------------------------------------------------

/// The spec for a push body: lines split at `\n`, one trailing `\r` trimmed, empty lines
/// skipped, the rest strict base64; `None` when no line carried data.
fn push_reference(body: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    let mut out = Vec::new();
    let mut any = false;
    for line in body.split(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\r").unwrap_or(line);
        if text.is_empty() {
            continue;
        }
        any = true;
        out.extend(ref_b64(text).ok_or(())?);
    }
    Ok(any.then_some(out))
}

/// Runs a [`PushDecoder`] over `chunks`: `Ok(Some(data))`, `Ok(None)` for a close.
fn push_chunked(chunks: &[&[u8]]) -> Result<Option<Vec<u8>>, DecodeError> {
    let mut d = PushDecoder::default();
    let mut out = Vec::new();
    let mut fed = 0;
    for c in chunks {
        d.feed(c, &mut out)?;
        fed += c.len();
        // Memory: the output is at most what the input can decode to.
        assert!(
            out.len() <= fed / 4 * 3,
            "{} bytes out of {fed} in",
            out.len()
        );
    }
    let any = d.finish(&mut out)?;
    if !any {
        assert!(out.is_empty());
    }
    Ok(any.then_some(out))
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary bytes, split anywhere: `PushDecoder` and `decode_push_body` never panic
    /// and both agree with the spec.
    #[test]
    fn push_decoders_match_spec_at_any_split(input in wire_bytes(300), cuts in cuts()) {
        let want = push_reference(&input);
        let whole = decode_push_body(&input);
        let chunked = push_chunked(&split(&input, &cuts));
        match &want {
            Ok(v) => {
                prop_assert_eq!(whole.as_ref().ok(), Some(v), "decode_push_body");
                prop_assert_eq!(chunked.as_ref().ok(), Some(v), "PushDecoder");
            }
            Err(()) => {
                prop_assert!(whole.is_err(), "decode_push_body accepted {:?}", whole);
                prop_assert!(chunked.is_err(), "PushDecoder accepted {:?}", chunked);
            }
        }
    }

    /// Round trip: payloads encoded as gost's client does (one line each, optionally
    /// CRLF, blank lines between, last newline optional), split anywhere, decode to the
    /// concatenation.
    #[test]
    fn push_round_trip(
        parts in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..200), any::<bool>(), any::<bool>()),
            0..6,
        ),
        drop_last_newline in any::<bool>(),
        cuts in cuts(),
    ) {
        let mut body = Vec::new();
        let mut want = Vec::new();
        for (p, crlf, blank) in &parts {
            if *blank {
                body.extend_from_slice(b"\r\n");
            }
            let mut line = encode_push_body(p);
            if *crlf {
                line.insert(line.len() - 1, b'\r');
            }
            body.extend_from_slice(&line);
            want.extend_from_slice(p);
        }
        if drop_last_newline && body.last() == Some(&b'\n') {
            body.pop();
        }
        let any = parts.iter().any(|(p, ..)| !p.is_empty());
        let want = any.then_some(want);
        prop_assert_eq!(decode_push_body(&body).ok(), Some(want.clone()));
        prop_assert_eq!(push_chunked(&split(&body, &cuts)).ok(), Some(want));
    }
}

// ---------------------------------------------------------------------------------------
// HTTP head scan
// ---------------------------------------------------------------------------------------

fn http_ish(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'\n'),
        3 => Just(b'\r'),
        4 => prop::sample::select(&b"HTTP/1. 200OKa:"[..]),
        1 => any::<u8>(),
    ];
    prop_oneof![
        prop::collection::vec(byte, 0..max_len),
        prop::collection::vec(any::<u8>(), 0..max_len),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    /// `http_head_end` finds exactly the first `\n\n` or `\n\r\n`, on every prefix.
    #[test]
    fn head_end_is_the_first_blank_line(buf in http_ish(200)) {
        let first = (1..=buf.len())
            .find(|&e| buf[..e].ends_with(b"\n\n") || buf[..e].ends_with(b"\n\r\n"));
        prop_assert_eq!(http_head_end(&buf), first);
        for k in 0..buf.len() {
            prop_assert_eq!(http_head_end(&buf[..k]), first.filter(|&e| e <= k));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Connector handshakes (client side)
// ---------------------------------------------------------------------------------------

/// A scripted proxy: reads return the script, at most `chunk` bytes at a time, then EOF;
/// writes are recorded. Panics when read far past EOF (a parser that would spin).
struct Mock {
    script: Vec<u8>,
    pos: usize,
    chunk: usize,
    written: Vec<u8>,
    reads_after_eof: usize,
}

impl Mock {
    fn new(script: &[u8], chunk: usize) -> Self {
        Mock {
            script: script.to_vec(),
            pos: 0,
            chunk: chunk.max(1),
            written: Vec::new(),
            reads_after_eof: 0,
        }
    }
}

impl AsyncRead for Mock {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = buf.len().min(this.chunk).min(this.script.len() - this.pos);
        if n == 0 && !buf.is_empty() {
            this.reads_after_eof += 1;
            assert!(
                this.reads_after_eof <= 8,
                "parser keeps reading after EOF (hang)"
            );
        }
        buf[..n].copy_from_slice(&this.script[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Mock {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs a handshake against `script`; on success reads the stream to its end.
/// Returns the handshake result (with what the stream carried after it), the bytes the
/// client wrote, and how many script bytes the whole exchange consumed.
fn run_handshake(
    connector: Connector,
    target: &str,
    auth: Option<&Credentials>,
    script: &[u8],
    chunk: usize,
) -> (Result<io::Result<Vec<u8>>, ConnectorError>, Vec<u8>, usize) {
    let mut m = Mock::new(script, chunk);
    let res = block_on(async {
        match handshake(&mut m, connector, target, auth).await {
            Ok(mut c) => {
                let mut data = Vec::new();
                Ok(c.read_to_end(&mut data).await.map(|_| data))
            }
            Err(e) => Err(e),
        }
    });
    (res, m.written, m.pos)
}

fn chunk_size() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..8, 8usize..2048]
}

fn creds() -> impl Strategy<Value = Option<Credentials>> {
    prop::option::of(("[a-z]{0,8}", "[ -~]{0,8}").prop_map(|(u, p)| Credentials::new(u, p)))
}

/// Response head bound of the HTTP connector (client-core/src/connector/http.rs).
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// A structured HTTP response head: status line, headers, blank line, body.
fn http_response() -> impl Strategy<Value = (u16, Vec<u8>, Vec<u8>)> {
    (
        prop_oneof![Just(200u16), 100u16..600],
        prop::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,40}"), 0..6),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(code, headers, bare_lf, body)| {
            let eol = if bare_lf { "\n" } else { "\r\n" };
            let mut head = format!("HTTP/1.1 {code} Whatever{eol}");
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}{eol}"));
            }
            head.push_str(eol);
            (code, head.into_bytes(), body)
        })
}

proptest! {
    #![proptest_config(config(512))]

    /// HTTP CONNECT answer: arbitrary bytes at any read size end in Ok or an error, never
    /// a panic or a read loop; success means a 200 head and every byte past it kept;
    /// the head is bounded.
    #[test]
    fn http_connect_arbitrary_answer(script in prop_oneof![http_ish(400), wire_bytes(400)], chunk in chunk_size()) {
        let (res, written, consumed) = run_handshake(Connector::Http, "example.com:443", None, &script, chunk);
        prop_assert!(written.starts_with(b"CONNECT example.com:443 HTTP/1.1\r\n"));
        prop_assert!(consumed <= MAX_RESPONSE_HEAD + 1024 + 1);
        match res {
            Ok(data) => {
                let end = http_head_end(&script).expect("accepted without a complete head");
                let line = script.split(|&b| b == b'\n').next().unwrap();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                prop_assert!(
                    line.starts_with(b"HTTP/1.")
                        && line[7..].splitn(3, |&b| b == b' ').nth(1) == Some(&b"200"[..]),
                    "accepted status line {:?}", String::from_utf8_lossy(line)
                );
                prop_assert_eq!(data.expect("reading on"), script[end..].to_vec());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Well-formed answers at any read size: 200 passes with the body intact, any other
    /// status is `HttpStatus`.
    #[test]
    fn http_connect_structured_answer((code, head, body) in http_response(), chunk in chunk_size()) {
        let mut script = head.clone();
        script.extend_from_slice(&body);
        let (res, _, _) = run_handshake(Connector::Http, "[2001:db8::1]:8080", None, &script, chunk);
        match res {
            Ok(data) => {
                prop_assert_eq!(code, 200);
                prop_assert_eq!(data.unwrap(), body);
            }
            Err(ConnectorError::HttpStatus(line)) => {
                prop_assert_ne!(code, 200);
                prop_assert!(line.starts_with(&format!("HTTP/1.1 {code}")), "{line}");
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}

proptest! {
    // About 20 ms a case in a debug build (each case reads more than 16 KiB).
    #![proptest_config(config_capped(64, 2000))]

    /// A head that never ends is refused once it passes the bound. (Reads of at least
    /// 64 bytes: the head scan restarts from the start on every read, so 1-byte reads of
    /// a 16 KiB head cost seconds in a debug build; see docs/FUZZING.md.)
    #[test]
    fn http_connect_head_is_bounded(line_len in 1usize..200, chunk in 64usize..2048) {
        let mut script = b"HTTP/1.1 200 OK\r\n".to_vec();
        let line = format!("X: {}\r\n", "a".repeat(line_len));
        while script.len() <= MAX_RESPONSE_HEAD + 4096 {
            script.extend_from_slice(line.as_bytes());
        }
        let (res, _, consumed) = run_handshake(Connector::Http, "a:1", None, &script, chunk);
        prop_assert!(matches!(res, Err(ConnectorError::HttpMalformed(_))), "{res:?}");
        prop_assert!(consumed <= MAX_RESPONSE_HEAD + 1024 + 1);
    }
}

/// The SOCKS5 client's reading of the server's messages, as RFC 1928/1929 define them:
/// `Some(consumed)` when the handshake succeeds.
fn socks5_reference(s: &[u8], auth: bool) -> Option<usize> {
    let at = |i: usize| s.get(i).copied();
    if at(0)? != 5 {
        return None;
    }
    let mut pos = match at(1)? {
        0 => 2,
        2 if auth => {
            at(3).filter(|&st| st == 0)?;
            4
        }
        _ => return None,
    };
    if at(pos)? != 5 || at(pos + 1)? != 0 {
        return None;
    }
    at(pos + 2)?;
    let len = match at(pos + 3)? {
        1 => 4,
        4 => 16,
        3 => 1 + at(pos + 4)? as usize,
        _ => return None,
    };
    pos += 4 + len + 2;
    (s.len() >= pos).then_some(pos)
}

/// A well-formed SOCKS5 server side: method choice, auth status, reply with a random
/// BND address.
fn socks5_answer(auth: bool) -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just(vec![1u8, 127, 0, 0, 1]),
            prop::collection::vec(any::<u8>(), 0..=255).prop_map(|d| {
                let mut v = vec![3u8, d.len() as u8];
                v.extend(d);
                v
            }),
            prop::collection::vec(any::<u8>(), 16).prop_map(|d| {
                let mut v = vec![4u8];
                v.extend(d);
                v
            }),
        ],
        any::<u16>(),
    )
        .prop_map(move |(addr, port)| {
            let mut s = if auth { vec![5, 2, 1, 0] } else { vec![5, 0] };
            s.extend_from_slice(&[5, 0, 0]);
            s.extend(addr);
            s.extend_from_slice(&port.to_be_bytes());
            s
        })
}

proptest! {
    #![proptest_config(config(512))]

    /// SOCKS5 replies: arbitrary bytes (or a valid exchange with bytes changed) at any
    /// read size; the handshake agrees with the RFC reading, consumes exactly the server's
    /// messages, and passes every later byte on.
    #[test]
    fn socks5_arbitrary_answer(
        script in prop_oneof![
            wire_bytes(300),
            (socks5_answer(false), prop::collection::vec((any::<Index>(), any::<u8>()), 0..3))
                .prop_map(|(mut s, edits)| {
                    for (i, b) in edits {
                        let i = i.index(s.len());
                        s[i] = b;
                    }
                    s
                }),
        ],
        auth in creds(),
        chunk in chunk_size(),
    ) {
        let (res, _, _) = run_handshake(Connector::Socks5, "example.com:443", auth.as_ref(), &script, chunk);
        match (res, socks5_reference(&script, auth.is_some())) {
            (Ok(data), Some(consumed)) => prop_assert_eq!(data.unwrap(), script[consumed..].to_vec()),
            (Err(e), None) => prop_assert!(!e.to_string().is_empty()),
            (res, want) => prop_assert!(false, "handshake {res:?}, RFC reading {want:?}"),
        }
    }

    /// Valid SOCKS5 exchanges with trailing data, at any read size, succeed and keep the data.
    #[test]
    fn socks5_structured_answer(
        (auth, script) in any::<bool>().prop_flat_map(|a| (Just(a), socks5_answer(a))),
        data in prop::collection::vec(any::<u8>(), 0..64),
        chunk in chunk_size(),
    ) {
        let c = Credentials::new("user", "pass");
        let mut all = script;
        all.extend_from_slice(&data);
        let (res, written, _) = run_handshake(Connector::Socks5, "10.0.0.1:22", auth.then_some(&c), &all, chunk);
        prop_assert_eq!(res.expect("handshake").expect("read"), data);
        prop_assert!(written.ends_with(&[5, 1, 0, 1, 10, 0, 0, 1, 0, 22]));
    }
}

/// The relay response as wire.md §1 defines it: `01 00 LEN FEATURES`, then data.
fn relay_reference(s: &[u8]) -> Option<&[u8]> {
    if s.len() < 4 || s[0] != 1 || s[1] != 0 {
        return None;
    }
    let len = u16::from_be_bytes([s[2], s[3]]) as usize;
    s.get(4 + len..)
}

proptest! {
    #![proptest_config(config(512))]

    /// Relay responses: arbitrary bytes at any read size; reading the stream yields the
    /// data past a valid OK response, or an error.
    #[test]
    fn relay_arbitrary_answer(
        script in prop_oneof![
            wire_bytes(300),
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..300), any::<bool>())
                .prop_map(|(status, rest, ok)| {
                    let len = (rest.len() / 2) as u16;
                    let mut s = vec![1, if ok { 0 } else { status }];
                    s.extend_from_slice(&len.to_be_bytes());
                    s.extend(rest);
                    s
                }),
        ],
        auth in creds(),
        chunk in chunk_size(),
    ) {
        let (res, written, _) = run_handshake(Connector::Relay, "example.com:443", auth.as_ref(), &script, chunk);
        prop_assert!(written.starts_with(&[1, 1]));
        let read = res.expect("the relay handshake does not read");
        match (read, relay_reference(&script)) {
            (Ok(data), Some(want)) => prop_assert_eq!(&data[..], want),
            (Err(e), None) => prop_assert!(!e.to_string().is_empty()),
            (read, want) => prop_assert!(false, "read {read:?}, spec {want:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Targets (what the connectors are asked to reach)
// ---------------------------------------------------------------------------------------

fn target_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-z0-9.\\-\\[\\]:%]{0,30}",
        ("[a-z0-9.\\-]{0,300}", "[0-9]{0,6}").prop_map(|(h, p)| format!("{h}:{p}")),
        ("[0-9a-f:.]{0,40}", "[0-9]{0,6}").prop_map(|(h, p)| format!("[{h}]:{p}")),
        ("[ -~\r\n\t]{0,20}", 0u16..).prop_map(|(h, p)| format!("{h}:{p}")),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    /// Any target string: every connector either refuses it before writing anything, or
    /// writes a request that encodes it faithfully (a SOCKS5/relay domain length byte that
    /// matches, an HTTP request line without control characters).
    #[test]
    fn targets_are_refused_or_encoded_faithfully(target in target_string()) {
        for connector in [Connector::Http, Connector::Socks5, Connector::Relay] {
            let mut script = vec![5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]; // SOCKS5 OK
            if connector == Connector::Http {
                script = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            }
            let (res, written, _) = run_handshake(connector, &target, None, &script, 4096);
            match res {
                Err(ConnectorError::InvalidTarget { .. }) => prop_assert!(written.is_empty()),
                Err(e) => prop_assert!(false, "{connector}: {e}"),
                Ok(_) => match connector {
                    Connector::Http => {
                        let head = String::from_utf8(written).expect("target is text");
                        let line = head.split("\r\n").next().unwrap();
                        prop_assert!(!line.bytes().any(|b| b.is_ascii_control()), "{line:?}");
                        prop_assert_eq!(http_head_end(head.as_bytes()), Some(head.len()), "{}", head);
                    }
                    Connector::Socks5 => {
                        let req = &written[3..]; // after the greeting
                        prop_assert_eq!(&req[..3], &[5, 1, 0]);
                        let addr_len = match req[3] {
                            1 => 4,
                            4 => 16,
                            3 => 1 + req[4] as usize,
                            a => { prop_assert!(false, "atyp {a}"); 0 }
                        };
                        prop_assert_eq!(req.len(), 4 + addr_len + 2);
                    }
                    _ => {
                        let fealen = u16::from_be_bytes([written[2], written[3]]) as usize;
                        prop_assert_eq!(written.len(), 4 + fealen);
                    }
                },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// gost URLs, node URLs, durations
// ---------------------------------------------------------------------------------------

/// Strings shaped like gost URLs, with the characters that matter to the grammar.
fn url_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,60}",
        "[a-z+:/@?&=%.\\[\\]0-9,\\- ]{0,60}",
        (
            "(pht|phts|relay\\+pht|forward\\+phts|http|socks5|[a-z+]{0,8})",
            "([a-z%0-9]{0,6}(:[a-z%0-9]{0,6})?@)?",
            "(\\[[0-9a-f:]{0,12}\\]|[a-z0-9.]{0,12})(:[0-9\\-]{0,7})?",
            "(/[a-z0-9:/,%.]{0,12})?",
            prop::collection::vec(
                (
                    "(token|authorize|maxPushSize|minPushSize|requestTimeout|heartbeatTimeout|host|pushPath|header\\.X|[a-z%+]{0,6})",
                    "[a-z0-9%+/:.\\-]{0,10}",
                ),
                0..4,
            ),
        )
            .prop_map(|(scheme, user, host, path, query)| {
                let q: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                let q = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
                format!("{scheme}://{user}{host}{path}{q}")
            }),
    ]
}

/// Percent-encodes everything but unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary URL strings: `GostUrl::parse` and `NodeUrl::parse` return Ok or an Err
    /// with a message; an accepted node always yields its tunnel settings.
    #[test]
    fn urls_never_panic(input in url_ish()) {
        match GostUrl::parse(&input) {
            Ok(u) => {
                prop_assert_eq!(&u.scheme, &u.scheme.to_ascii_lowercase());
                prop_assert!(!u.host.contains(['/', '?', '@']), "{:?}", u.host);
                let _ = u.scheme_parts();
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        match NodeUrl::parse(&input) {
            Ok(n) => {
                let c = n.tunnel_config();
                prop_assert!(c.base_url.starts_with("http"));
                let port = n.addr.rsplit_once(':').map(|(_, p)| p);
                prop_assert!(port.is_some_and(|p| p.parse::<u16>().is_ok()), "{}", n.addr);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// `NodeUrl::from_parts` (a YAML node): arbitrary parts, Ok or Err, never a panic.
    #[test]
    fn node_from_parts_never_panics(
        connector in ".{0,10}",
        dialer in "(pht|phts|.{0,6})",
        addr in ".{0,20}",
        params in prop::collection::vec((".{0,16}", ".{0,16}"), 0..4),
    ) {
        if let Ok(n) = NodeUrl::from_parts(&connector, &dialer, &addr, params) {
            let _ = n.tunnel_config();
        }
    }

    /// Round trip: a URL built from escaped parts parses back to those parts.
    #[test]
    fn gost_url_round_trip(
        scheme in "[a-z][a-z0-9]{0,6}(\\+[a-z][a-z0-9]{0,6})?",
        user in prop::option::of((".{0,10}", prop::option::of(".{0,10}"))),
        host in "[a-z0-9.:,\\-\\[\\]]{0,20}",
        path in prop::option::of(".{0,16}"),
        query in prop::collection::vec(("[^ ]{1,10}", ".{0,10}"), 0..4),
    ) {
        let mut s = format!("{scheme}://");
        if let Some((u, p)) = &user {
            s.push_str(&pct(u));
            if let Some(p) = p {
                s.push(':');
                s.push_str(&pct(p));
            }
            s.push('@');
        }
        s.push_str(&host);
        if let Some(p) = &path {
            s.push('/');
            s.push_str(&pct(p));
        }
        if !query.is_empty() {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", pct(k), pct(v))).collect();
            s.push('?');
            s.push_str(&q.join("&"));
        }
        let u = GostUrl::parse(&s).expect("a well-formed URL parses");
        let want_scheme = if scheme == "https" { "http+tls".to_string() } else { scheme };
        prop_assert_eq!(u.scheme, want_scheme);
        prop_assert_eq!(u.user.as_deref(), user.as_ref().map(|(u, _)| u.as_str()));
        prop_assert_eq!(u.password.as_deref(), user.as_ref().and_then(|(_, p)| p.as_deref()));
        prop_assert_eq!(u.host, host);
        prop_assert_eq!(u.path, path.map(|p| format!("/{p}")).unwrap_or_default());
        prop_assert_eq!(u.query, query);
    }

    /// Durations and booleans: arbitrary text never panics; whole units parse exactly.
    #[test]
    fn durations(input in "[0-9.a-zµ ]{0,16}|.{0,16}", h in 0u64..1000, m in 0u64..1000, s in 0u64..1000) {
        let _ = parse_duration(&input);
        let _ = parse_bool(&input);
        let want = std::time::Duration::from_secs(h * 3600 + m * 60 + s);
        prop_assert_eq!(parse_duration(&format!("{h}h{m}m{s}s")), Some(want));
        prop_assert_eq!(parse_duration(&format!(" {s} ")), Some(std::time::Duration::from_secs(s)));
    }
}

// ---------------------------------------------------------------------------------------
// Regressions: inputs the properties above found (docs/FUZZING.md, "Findings")
// ---------------------------------------------------------------------------------------

/// `PullDecoder::new(3)` accepted the 4-character line `AAAA\n`: the room kept for a
/// trailing `\r` was granted to any character. Now the line's text is measured without
/// its `\r` once the newline arrives.
#[test]
fn regression_pull_line_one_over_the_limit() {
    let mut d = PullDecoder::new(3);
    let r = d.feed(b"AAAA\n", &mut |_| panic!("no event expected"));
    assert_eq!(r, Err(DecodeError::LineTooLong { max: 3 }));
    let mut d = PullDecoder::new(3);
    d.feed(b"AA", &mut |_| panic!("no event expected")).unwrap();
    let r = d.feed(b"AA\n", &mut |_| panic!("no event expected"));
    assert_eq!(r, Err(DecodeError::LineTooLong { max: 3 }));
    // The `\r` itself is still tolerated on top of the limit.
    let mut ev = Vec::new();
    PullDecoder::new(4)
        .feed(b"AAAA\r\n", &mut |e| ev.push(e))
        .unwrap();
    assert_eq!(ev, vec![PullEvent::Data(vec![0, 0, 0].into())]);
}

/// A target host with CR/LF (or any control character, or a space) went verbatim into
/// the HTTP CONNECT request line: a SOCKS4a/SOCKS5/relay client of the server could add
/// header lines, or a whole second request, to what the server sends an upstream HTTP
/// proxy of its chain. Such hosts are now invalid targets for every connector.
#[test]
fn regression_control_characters_in_target_host() {
    for target in [
        "\t:0",
        "a\r\nX-Injected: 1:80",
        "a\r\n\r\nGET / HTTP/1.0\r\n\r\nb:80",
        "a b:80",
        "\0:1",
    ] {
        for connector in [Connector::Http, Connector::Socks5, Connector::Relay] {
            let (res, written, _) = run_handshake(connector, target, None, b"", 1);
            assert!(
                matches!(res, Err(ConnectorError::InvalidTarget { .. })),
                "{connector} {target:?}: {res:?}"
            );
            assert!(written.is_empty());
        }
    }
}

// ---------------------------------------------------------------------------------------
// PHT/2 frames: however the body is cut, the same frames (or the same failure)
// ---------------------------------------------------------------------------------------

/// A PHT/2 pull body: well-formed frames, or arbitrary bytes.
fn frame_wire() -> impl Strategy<Value = Vec<u8>> {
    use pht_core::frame::{ResetCode, kind, put_count, put_data, put_empty, put_reset};
    let frame = prop_oneof![
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(off, d)| (0u8, off, d)),
        Just((1u8, 0, Vec::new())),
        any::<u64>().prop_map(|n| (2u8, n, Vec::new())),
        any::<u64>().prop_map(|n| (3u8, n, Vec::new())),
        Just((4u8, 0, b"gone".to_vec())),
        Just((5u8, 0, Vec::new())),
    ];
    prop_oneof![
        4 => prop::collection::vec(frame, 0..12).prop_map(|frames| {
            let mut w = Vec::new();
            for (k, n, d) in frames {
                match k {
                    0 => put_data(&mut w, n, &d),
                    1 => put_empty(&mut w, kind::PING),
                    2 => put_count(&mut w, kind::ACK, n),
                    3 => put_count(&mut w, kind::FIN, n),
                    4 => put_reset(&mut w, ResetCode::TargetFailed, "gone"),
                    _ => put_empty(&mut w, kind::END),
                }
            }
            w
        }),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

/// Frames out of `chunks` fed one by one, and whether decoding failed. A DATA payload
/// comes out in as many pieces as the chunks cut it into: pieces that continue the one
/// before are joined again.
fn frames_chunked(chunks: &[&[u8]]) -> (Vec<pht_core::frame::Frame>, bool, bool) {
    use pht_core::frame::Frame;
    let mut d = pht_core::frame::FrameDecoder::default();
    let mut got: Vec<Frame> = Vec::new();
    let mut put = |f: Frame| {
        if let (
            Frame::Data { offset, data },
            Some(Frame::Data {
                offset: o,
                data: prev,
            }),
        ) = (&f, got.last_mut())
        {
            if !data.is_empty() && *o + prev.len() as u64 == *offset {
                *prev = [&prev[..], &data[..]].concat().into();
                return;
            }
        }
        got.push(f);
    };
    let failed = chunks
        .iter()
        .any(|c| d.feed(bytes::Bytes::copy_from_slice(c), &mut put).is_err());
    (got, failed, !failed && d.is_clean())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn frames_do_not_depend_on_where_the_body_is_cut(wire in frame_wire(), cuts in cuts()) {
        let (whole, whole_err, whole_clean) = frames_chunked(&[&wire]);
        let (parts, parts_err, parts_clean) = frames_chunked(&split(&wire, &cuts));
        // The same frames before a failure too: a frame is judged once it is whole.
        prop_assert_eq!(whole_err, parts_err);
        prop_assert_eq!(whole, parts);
        prop_assert_eq!(whole_clean, parts_clean);
    }
}
