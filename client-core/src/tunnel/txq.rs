//! The upload queue: bytes the application wrote that the server has not acknowledged
//! (PHT/2) or that were not sent yet (PHT/1).
//!
//! A large write handed over as `Bytes` (a read buffer the native client's pump gives up)
//! is kept as it is. Small writes are copied into blocks sized for how much is queued:
//! small while a tunnel carries a conversation, large in a bulk transfer, so that a few
//! bytes never pin a large buffer. A push body is a list of views of the queue
//! ([`PostBody`]), never a copy; nothing already queued is moved again: when a block is
//! full the next one is a fresh allocation, so a queue whose front is still lent out to a
//! push in flight is never copied to make room.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use crate::PostBody;

/// The smallest block: what a tunnel with a few bytes in flight keeps.
const MIN_BLOCK: usize = 4 * 1024;
/// The largest block.
const MAX_BLOCK: usize = 2 * 1024 * 1024;
/// A write handed over whole at least this long is kept, not copied: below it, the bytes
/// could pin a buffer much larger than themselves until the server acknowledges them.
pub(crate) const KEEP_FROM: usize = 16 * 1024;

/// Queued upload bytes, front first.
#[derive(Debug, Default)]
pub(crate) struct TxQueue {
    /// Parts that no longer grow, in order, before `tail`.
    parts: VecDeque<Bytes>,
    /// The block being written; its capacity is never grown, so it never moves.
    tail: BytesMut,
    len: usize,
}

impl TxQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        *self = TxQueue::default();
    }

    /// Appends a copy of `data`.
    pub fn write(&mut self, mut data: &[u8]) {
        self.len += data.len();
        while !data.is_empty() {
            let room = self.tail.capacity() - self.tail.len();
            if room == 0 {
                self.seal();
                // As large as everything queued (this write included), rounded up: a bulk
                // upload soon writes into the largest blocks, a conversation keeps small ones.
                let block = self.len.next_power_of_two().clamp(MIN_BLOCK, MAX_BLOCK);
                self.tail = BytesMut::with_capacity(block);
                continue;
            }
            let n = room.min(data.len());
            self.tail.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// Appends `data`, kept as it is when it is long enough (see [`KEEP_FROM`]).
    pub fn write_bytes(&mut self, data: Bytes) {
        if data.len() < KEEP_FROM {
            return self.write(&data);
        }
        self.seal();
        self.len += data.len();
        self.parts.push_back(data);
    }

    /// Ends the tail's part here, so that what comes next goes after it; the tail keeps
    /// its spare room for later small writes.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            self.parts.push_back(self.tail.split().freeze());
        }
    }

    /// Bytes `from..to` (counted from the front), as views of the queue.
    pub fn slice(&mut self, from: usize, to: usize) -> PostBody {
        let to = to.min(self.len);
        let from = from.min(to);
        let parted: usize = self.parts.iter().map(Bytes::len).sum();
        if to > parted {
            // The tail stops growing up to here; it keeps its spare room for more writes.
            let n = to - parted;
            self.parts.push_back(self.tail.split_to(n).freeze());
        }
        let mut out = PostBody::default();
        let mut start = 0;
        for p in &self.parts {
            let end = start + p.len();
            if end > from && start < to {
                out.push(p.slice(from.max(start) - start..to.min(end) - start));
            }
            if end >= to {
                break;
            }
            start = end;
        }
        out
    }

    /// Drops the first `n` bytes (acknowledged, or taken for a PHT/1 push).
    pub fn advance(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            match self.parts.front_mut() {
                Some(p) if p.len() <= n => {
                    n -= p.len();
                    self.parts.pop_front();
                }
                Some(p) => {
                    p.advance(n);
                    n = 0;
                }
                None => {
                    self.tail.advance(n);
                    n = 0;
                }
            }
        }
    }

    /// Takes the first `n` bytes out, as one buffer (a PHT/1 push encodes them as one
    /// line).
    pub fn take_front(&mut self, n: usize) -> Bytes {
        let b = self.slice(0, n).to_bytes();
        self.advance(b.len());
        b
    }

    /// Puts bytes taken out back at the front (a PHT/1 push the proxy refused).
    pub fn put_back(&mut self, data: Bytes) {
        self.len += data.len();
        self.parts.push_front(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + seed) as u8).collect()
    }

    #[test]
    fn slices_read_back_what_was_written_across_blocks() {
        let mut q = TxQueue::default();
        let mut want = Vec::new();
        for (i, n) in [10, 40_000, 3, 300_000, 1, 2_000_000]
            .into_iter()
            .enumerate()
        {
            let p = pattern(n, i);
            q.write(&p);
            want.extend_from_slice(&p);
        }
        assert_eq!(q.len(), want.len());
        // Every range, whether it crosses a block's end or not.
        for (from, to) in [
            (0, 5),
            (5, 50_000),
            (16_380, 16_390),
            (0, want.len()),
            (100, 100),
        ] {
            assert_eq!(
                &q.slice(from, to).to_bytes()[..],
                &want[from..to],
                "{from}..{to}"
            );
        }
    }

    #[test]
    fn large_writes_handed_over_are_kept_and_lent_out_without_a_copy() {
        let mut q = TxQueue::default();
        q.write(b"head");
        let big = Bytes::from(pattern(300_000, 1));
        q.write_bytes(big.clone());
        q.write_bytes(Bytes::from_static(b"small"));
        assert_eq!(q.len(), 4 + 300_000 + 5);
        let body = q.slice(2, q.len());
        assert_eq!(body.len(), 2 + 300_000 + 5);
        assert_eq!(
            body.parts().len(),
            3,
            "the head's block, the kept write, a block"
        );
        assert_eq!(body.parts()[1].as_ptr(), big.as_ptr(), "not copied");
        let mut want = b"ad".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"small");
        assert_eq!(&body.to_bytes()[..], &want[..]);
        q.advance(100_004);
        assert_eq!(&q.take_front(q.len())[..], &want[100_002..]);
    }

    #[test]
    fn advance_take_and_put_back_keep_the_order() {
        let mut q = TxQueue::default();
        let a = pattern(50_000, 1);
        q.write(&a);
        q.advance(20_000);
        let front = q.take_front(10_000);
        assert_eq!(&front[..], &a[20_000..30_000]);
        let b = pattern(70_000, 2);
        q.write(&b);
        q.put_back(front);
        let mut want = a[20_000..].to_vec();
        want.extend_from_slice(&b);
        assert_eq!(q.len(), want.len());
        assert_eq!(&q.take_front(q.len())[..], &want[..]);
        assert!(q.is_empty());
        q.write(b"after");
        assert_eq!(&q.slice(0, 5).to_bytes()[..], b"after");
    }

    #[test]
    fn views_lent_out_stay_intact_while_more_is_written() {
        let mut q = TxQueue::default();
        q.write(&pattern(1000, 3));
        let lent = q.slice(0, 1000).to_bytes();
        q.advance(1000);
        for i in 0..100 {
            q.write(&pattern(10_000, i));
        }
        assert_eq!(&lent[..], &pattern(1000, 3)[..]);
        assert_eq!(q.len(), 1_000_000);
    }
}
