//! PHT/1 framing: standard padded base64 per line, `\n` terminated, empty line = heartbeat.

use base64_simd::STANDARD;
use bytes::Bytes;

use crate::DecodeError;

/// Encodes one push body: `base64(data) + "\n"`, exactly as gost's client does.
///
/// ```
/// assert_eq!(pht_core::encode_push_body(b"hi"), b"aGk=\n".to_vec());
/// ```
pub fn encode_push_body(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_line_into(data, &mut out);
    out
}

/// Encodes one pull line (same framing as a push body), appending to `out`.
pub fn encode_pull_line(data: &[u8], out: &mut Vec<u8>) {
    encode_line_into(data, out);
}

// base64-simd: several times faster than scalar base64, and base64 is most of the CPU a
// PHT/1 byte costs (see docs/BENCHMARKS.md).
fn encode_line_into(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(STANDARD.encoded_length(data.len()) + 1);
    STANDARD.encode_append(data, out);
    out.push(b'\n');
}

/// Decodes a push body. Returns `None` when the body carries no data at all (empty, or only
/// empty lines): PHT/1 reads that as "close the tunnel". Several lines are accepted; a
/// final line without its newline is accepted too.
///
/// ```
/// assert_eq!(pht_core::decode_push_body(b"aGk=\n").unwrap().unwrap(), b"hi".to_vec());
/// assert_eq!(pht_core::decode_push_body(b"").unwrap(), None);
/// assert!(pht_core::decode_push_body(b"!!\n").is_err());
/// ```
pub fn decode_push_body(body: &[u8]) -> Result<Option<Vec<u8>>, DecodeError> {
    let mut out = Vec::new();
    let mut any = false;
    for line in LinesOf(body) {
        let line = trim_cr(line);
        if line.is_empty() {
            continue;
        }
        any = true;
        decode_append(line, &mut out)?;
    }
    Ok(any.then_some(out))
}

/// `\n`-separated pieces (with the last, possibly empty, one), found with SIMD.
struct LinesOf<'a>(&'a [u8]);

impl<'a> Iterator for LinesOf<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        match memchr::memchr(b'\n', self.0) {
            Some(i) => {
                let (line, rest) = (&self.0[..i], &self.0[i + 1..]);
                self.0 = rest;
                Some(line)
            }
            None => Some(std::mem::take(&mut self.0)),
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn decode_append(line: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let start = out.len();
    STANDARD.decode_append(line, out).map_err(|e| {
        out.truncate(start);
        DecodeError::Base64(e.to_string())
    })
}

/// Incremental decoder for a push body arriving in pieces, so a server can pass data on
/// before the whole POST has arrived. Accepts what [`decode_push_body`] accepts.
///
/// ```
/// use pht_core::PushDecoder;
/// let mut d = PushDecoder::default();
/// let mut out = Vec::new();
/// d.feed(b"aGVs", &mut out).unwrap();
/// d.feed(b"bG8=\n", &mut out).unwrap();
/// assert_eq!(out, b"hello");
/// assert!(d.finish(&mut out).unwrap(), "the body carried data");
/// ```
#[derive(Debug, Default)]
pub struct PushDecoder {
    /// Characters of the current line not decoded yet (fewer than four, or a `\r`).
    carry: Vec<u8>,
    /// The current line already ended with padding: only its newline may follow.
    padded: bool,
    any: bool,
}

impl PushDecoder {
    /// Decodes what `chunk` completes, appending the bytes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let mut rest = chunk;
        while !rest.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(nl) => {
                    self.take(&rest[..nl], out)?;
                    self.end_line(out)?;
                    rest = &rest[nl + 1..];
                }
                None => {
                    self.take(rest, out)?;
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    /// Ends the body; `Ok(false)` when it carried no data at all (PHT/1's close).
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<bool, DecodeError> {
        self.end_line(out)?;
        Ok(self.any)
    }

    /// Adds part of a line, decoding every complete four-character group.
    fn take(&mut self, part: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if part.is_empty() {
            return Ok(());
        }
        if self.padded && !(part == b"\r" && self.carry.is_empty()) {
            return Err(DecodeError::Base64("data after padding".into()));
        }
        let text: std::borrow::Cow<'_, [u8]> = if self.carry.is_empty() {
            part.into()
        } else {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(part);
            joined.into()
        };
        let keep = decodable(&text);
        self.decode_groups(&text[..keep], out)?;
        self.carry = text[keep..].to_vec();
        Ok(())
    }

    fn decode_groups(&mut self, groups: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if groups.is_empty() {
            return Ok(());
        }
        self.any = true;
        decode_append(groups, out)?;
        self.padded = groups.ends_with(b"=");
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let line = std::mem::take(&mut self.carry);
        let line = trim_cr(&line);
        if !line.is_empty() {
            if self.padded {
                return Err(DecodeError::Base64("data after padding".into()));
            }
            self.any = true;
            decode_append(line, out)?;
        }
        self.padded = false;
        Ok(())
    }
}

/// Length of the longest prefix made of whole four-character groups.
fn decodable(text: &[u8]) -> usize {
    text.len() - text.len() % 4
}

/// One decoded line of a pull stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// Tunnel payload.
    Data(Bytes),
    /// An empty line: the server is alive and idle.
    Heartbeat,
}

/// Incremental decoder for a pull response body: feed it chunks split anywhere.
///
/// ```
/// use pht_core::{PullDecoder, PullEvent};
/// let mut d = PullDecoder::new(1024);
/// let mut ev = Vec::new();
/// d.feed(b"aG", &mut |e| ev.push(e)).unwrap();
/// d.feed(b"k=\n\n", &mut |e| ev.push(e)).unwrap();
/// assert_eq!(ev, vec![PullEvent::Data("hi".into()), PullEvent::Heartbeat]);
/// ```
#[derive(Debug)]
pub struct PullDecoder {
    partial: Vec<u8>,
    max_line: usize,
}

impl PullDecoder {
    /// `max_line` bounds one line's base64 text; a longer line is an error, not a memory leak.
    pub fn new(max_line: usize) -> Self {
        PullDecoder {
            partial: Vec::new(),
            max_line,
        }
    }

    /// Decodes every complete line in `chunk` (together with what earlier chunks left over).
    pub fn feed(
        &mut self,
        mut chunk: &[u8],
        emit: &mut impl FnMut(PullEvent),
    ) -> Result<(), DecodeError> {
        while let Some(nl) = memchr::memchr(b'\n', chunk) {
            let (head, rest) = (&chunk[..nl], &chunk[nl + 1..]);
            chunk = rest;
            if self.partial.is_empty() {
                self.check_line(head)?;
                emit(decode_line(head)?);
            } else {
                self.check_len(self.partial.len() + head.len())?;
                self.partial.extend_from_slice(head);
                self.check_line(&self.partial)?;
                let line = std::mem::take(&mut self.partial);
                emit(decode_line(&line)?);
                self.partial = line;
                self.partial.clear();
            }
        }
        if !chunk.is_empty() {
            self.check_len(self.partial.len() + chunk.len())?;
            self.partial.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// Call when the response ends: a half line left over means the stream was cut.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            self.partial.clear();
            Err(DecodeError::Truncated)
        }
    }

    /// A complete line: its text, without the tolerated `\r`, must fit the limit.
    fn check_line(&self, line: &[u8]) -> Result<(), DecodeError> {
        if trim_cr(line).len() > self.max_line {
            Err(DecodeError::LineTooLong { max: self.max_line })
        } else {
            Ok(())
        }
    }

    fn check_len(&self, len: usize) -> Result<(), DecodeError> {
        // A trailing '\r' is tolerated on top of the limit.
        if len > self.max_line + 1 {
            Err(DecodeError::LineTooLong { max: self.max_line })
        } else {
            Ok(())
        }
    }
}

fn decode_line(line: &[u8]) -> Result<PullEvent, DecodeError> {
    let line = trim_cr(line);
    if line.is_empty() {
        return Ok(PullEvent::Heartbeat);
    }
    let mut out = Vec::new();
    decode_append(line, &mut out)?;
    Ok(PullEvent::Data(Bytes::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(d: &mut PullDecoder, chunks: &[&[u8]]) -> Result<Vec<PullEvent>, DecodeError> {
        let mut ev = Vec::new();
        for c in chunks {
            d.feed(c, &mut |e| ev.push(e))?;
        }
        Ok(ev)
    }

    #[test]
    fn push_body_matches_go_encoding() {
        // Go: base64.StdEncoding.EncodeToString([]byte("hello, world")) + "\n"
        assert_eq!(encode_push_body(b"hello, world"), b"aGVsbG8sIHdvcmxk\n");
        assert_eq!(encode_push_body(b"\x00\xff"), b"AP8=\n");
    }

    #[test]
    fn pull_decoder_handles_every_split_point() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut stream = Vec::new();
        encode_pull_line(&payload[..400], &mut stream);
        stream.push(b'\n');
        encode_pull_line(&payload[400..], &mut stream);
        for split in 0..stream.len() {
            let mut d = PullDecoder::new(4096);
            let ev = collect(&mut d, &[&stream[..split], &stream[split..]]).unwrap();
            let mut data = Vec::new();
            let mut beats = 0;
            for e in ev {
                match e {
                    PullEvent::Data(b) => data.extend_from_slice(&b),
                    PullEvent::Heartbeat => beats += 1,
                }
            }
            assert_eq!(data, payload, "split at {split}");
            assert_eq!(beats, 1);
            d.finish().unwrap();
        }
    }

    #[test]
    fn pull_decoder_byte_at_a_time_and_crlf() {
        let mut d = PullDecoder::new(64);
        let text = b"aGk=\r\n\r\nYQ==\n";
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        let ev = collect(&mut d, &chunks).unwrap();
        assert_eq!(
            ev,
            vec![
                PullEvent::Data("hi".into()),
                PullEvent::Heartbeat,
                PullEvent::Data("a".into())
            ]
        );
    }

    #[test]
    fn pull_decoder_limits_line_length_across_chunks() {
        let mut d = PullDecoder::new(8);
        assert_eq!(
            collect(&mut d, &[b"AAAA", b"AAAA", b"AAAA"]),
            Err(DecodeError::LineTooLong { max: 8 })
        );
        let mut d = PullDecoder::new(8);
        assert!(collect(&mut d, &[b"AAAAAAAA\n"]).is_ok());
    }

    #[test]
    fn pull_decoder_rejects_garbage_and_truncation() {
        let mut d = PullDecoder::new(64);
        assert!(matches!(
            collect(&mut d, &[b"not base64!\n"]),
            Err(DecodeError::Base64(_))
        ));
        let mut d = PullDecoder::new(64);
        collect(&mut d, &[b"aGk="]).unwrap();
        assert_eq!(d.finish(), Err(DecodeError::Truncated));
    }

    #[test]
    fn push_decoder_matches_the_whole_body_decoder_at_every_split() {
        let mut body = Vec::new();
        encode_line_into(b"hello, world!", &mut body);
        encode_line_into(b"second line", &mut body);
        body.extend_from_slice(b"dGhpcmQ=\r\n");
        let whole = decode_push_body(&body).unwrap().unwrap();
        for a in 0..body.len() {
            for b in a..body.len() {
                let mut d = PushDecoder::default();
                let mut out = Vec::new();
                d.feed(&body[..a], &mut out).unwrap();
                d.feed(&body[a..b], &mut out).unwrap();
                d.feed(&body[b..], &mut out).unwrap();
                assert!(d.finish(&mut out).unwrap());
                assert_eq!(out, whole, "splits {a}/{b}");
            }
        }
    }

    #[test]
    fn push_decoder_rejects_what_the_whole_decoder_rejects() {
        for bad in [&b"aGk=YQ==\n"[..], b"aGk\n", b"!!!!\n", b"aGk=\rx\n"] {
            assert!(decode_push_body(bad).is_err(), "{bad:?}");
            let mut d = PushDecoder::default();
            let mut out = Vec::new();
            let r = d
                .feed(bad, &mut out)
                .and_then(|_| d.finish(&mut out).map(|_| ()));
            assert!(r.is_err(), "{bad:?}");
        }
        for empty in [&b""[..], b"\n", b"\r\n\n"] {
            let mut out = Vec::new();
            let mut d = PushDecoder::default();
            d.feed(empty, &mut out).unwrap();
            assert!(!d.finish(&mut out).unwrap(), "{empty:?} is a close");
        }
    }

    #[test]
    fn push_body_variants() {
        assert_eq!(decode_push_body(b"\n").unwrap(), None);
        assert_eq!(
            decode_push_body(b"aGk=\nYQ==\n").unwrap(),
            Some(b"hia".to_vec())
        );
        assert_eq!(decode_push_body(b"aGk=").unwrap(), Some(b"hi".to_vec()));
        assert_eq!(decode_push_body(b"aGk=\r\n").unwrap(), Some(b"hi".to_vec()));
        assert!(decode_push_body(b"aGk\n").is_err());
    }
}
