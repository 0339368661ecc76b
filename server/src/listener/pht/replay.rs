//! The PHT/2 replay buffer: download bytes kept from the oldest one the client has not
//! acknowledged, so a pull that breaks can be resumed at any offset the client names.
//!
//! Its capacity is also the download's flow control: the pull takes no more from the
//! handler while the buffer is full, and only acknowledgements make room.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Chunks smaller than this are merged on the way in: a handler writing a byte at a time
/// must not cost a `Bytes` (and a binary-search step) per byte for a whole window.
const MERGE_BELOW: usize = 4 * 1024;

/// An acknowledgement the buffer cannot honour: beyond the last byte taken in. The
/// client claims bytes the server never had, so the two ends disagree beyond repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ack {ack} is beyond the {end} download bytes sent")]
pub(super) struct AckBeyondEnd {
    pub ack: u64,
    pub end: u64,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Acked {
    /// Freed this many bytes.
    Freed(usize),
    /// Below or at what was already acknowledged: a request that was overtaken by a
    /// later one (pushes are pipelined, a rotated pull races pure acks). Only the
    /// client's own acknowledgements move the base, and its count only grows, so the
    /// client has every byte below the base: nothing is lost, nothing to do.
    Stale,
}

/// Download bytes from offset `base` (the client's acknowledged count) to `end`.
#[derive(Debug)]
pub(super) struct ReplayBuffer {
    /// Chunks with their stream offsets, contiguous and in order.
    chunks: VecDeque<(u64, Bytes)>,
    base: u64,
    end: u64,
    cap: usize,
}

impl ReplayBuffer {
    pub fn new(cap: usize) -> Self {
        ReplayBuffer {
            chunks: VecDeque::new(),
            base: 0,
            end: 0,
            cap: cap.max(1),
        }
    }

    /// The oldest byte kept: everything before it was acknowledged.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The offset after the last byte taken in.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes that may still be taken in.
    pub fn room(&self) -> usize {
        self.cap.saturating_sub((self.end - self.base) as usize)
    }

    /// Appends the stream's next bytes (the caller keeps within [`ReplayBuffer::room`]).
    pub fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let len = data.len() as u64;
        match self.chunks.back_mut() {
            Some((_, last)) if last.len() + data.len() < MERGE_BELOW => {
                let mut merged = BytesMut::with_capacity(last.len() + data.len());
                merged.extend_from_slice(last);
                merged.extend_from_slice(&data);
                *last = merged.freeze();
            }
            _ => self.chunks.push_back((self.end, data)),
        }
        self.end += len;
    }

    /// The client has the first `n` bytes: frees them.
    pub fn ack(&mut self, n: u64) -> Result<Acked, AckBeyondEnd> {
        if n > self.end {
            return Err(AckBeyondEnd {
                ack: n,
                end: self.end,
            });
        }
        if n <= self.base {
            return Ok(Acked::Stale);
        }
        let freed = (n - self.base) as usize;
        while let Some((at, chunk)) = self.chunks.front_mut() {
            let chunk_end = *at + chunk.len() as u64;
            if chunk_end <= n {
                self.chunks.pop_front();
            } else {
                if *at < n {
                    let _ = chunk.split_to((n - *at) as usize);
                    *at = n;
                }
                break;
            }
        }
        self.base = n;
        Ok(Acked::Freed(freed))
    }

    /// Up to `max` bytes starting at `from`, out of one chunk; `None` when `from` is not
    /// inside the buffer.
    pub fn get(&self, from: u64, max: usize) -> Option<Bytes> {
        if from < self.base || from >= self.end || max == 0 {
            return None;
        }
        // The last chunk starting at or before `from`.
        let i = self.chunks.partition_point(|(at, _)| *at <= from) - 1;
        let (at, chunk) = &self.chunks[i];
        let skip = (from - at) as usize;
        let n = (chunk.len() - skip).min(max);
        Some(chunk.slice(skip..skip + n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: &ReplayBuffer, from: u64, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = from;
        while let Some(b) = r.get(at, max) {
            assert!(b.len() <= max);
            at += b.len() as u64;
            out.extend_from_slice(&b);
        }
        out
    }

    fn filled(cap: usize, pieces: &[&[u8]]) -> ReplayBuffer {
        let mut r = ReplayBuffer::new(cap);
        for p in pieces {
            r.push(Bytes::copy_from_slice(p));
        }
        r
    }

    #[test]
    fn bytes_come_back_from_any_offset_in_the_window() {
        let big = vec![7u8; 10_000];
        let r = filled(1 << 20, &[b"hello ", b"world", &big, b"!"]);
        assert_eq!(r.end(), 11 + 10_000 + 1);
        let all = read_all(&r, 0, 3);
        assert_eq!(&all[..11], b"hello world");
        assert_eq!(all.len(), 10_012);
        assert_eq!(read_all(&r, 4, 1000)[..7], *b"o world");
        assert_eq!(read_all(&r, 10_011, 10), b"!");
        assert_eq!(r.get(10_012, 10), None, "nothing at the end");
    }

    #[test]
    fn acks_trim_and_make_room() {
        let mut r = filled(16, &[b"0123456789"]);
        assert_eq!(r.room(), 6);
        assert_eq!(r.ack(4), Ok(Acked::Freed(4)));
        assert_eq!((r.base(), r.room()), (4, 10));
        assert_eq!(r.get(3, 10), None, "acknowledged bytes are gone");
        assert_eq!(read_all(&r, 4, 100), b"456789");
        r.push(Bytes::from_static(b"abc"));
        assert_eq!(r.ack(13), Ok(Acked::Freed(9)));
        assert_eq!((r.base(), r.end(), r.room()), (13, 13, 16));
        assert_eq!(r.get(13, 1), None);
    }

    #[test]
    fn the_window_is_checked() {
        let mut r = filled(64, &[b"abcdef"]);
        assert_eq!(r.ack(7), Err(AckBeyondEnd { ack: 7, end: 6 }));
        assert_eq!(r.base(), 0, "a refused ack frees nothing");
        assert_eq!(r.ack(6), Ok(Acked::Freed(6)), "up to the end is fine");
        assert_eq!(r.ack(2), Ok(Acked::Stale), "an overtaken ack is harmless");
        assert_eq!(r.ack(6), Ok(Acked::Stale));
        assert_eq!(r.base(), 6);
    }

    #[test]
    fn small_writes_are_merged_large_ones_kept() {
        let mut r = ReplayBuffer::new(1 << 20);
        for _ in 0..1000 {
            r.push(Bytes::from_static(b"x"));
        }
        assert_eq!(r.chunks.len(), 1);
        r.push(Bytes::from(vec![1u8; MERGE_BELOW]));
        assert_eq!(r.chunks.len(), 2);
        assert_eq!(r.get(999, 2).unwrap(), "x", "one chunk at a time");
        assert_eq!(r.get(1000, 2).unwrap(), [1u8, 1][..]);
        // Trimming into the middle of a merged chunk keeps the offsets right.
        assert_eq!(r.ack(500), Ok(Acked::Freed(500)));
        assert_eq!(r.get(500, 1_000_000).unwrap().len(), 500);
    }
}
