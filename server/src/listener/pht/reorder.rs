//! The PHT/2 upload sequencer: pushes carry their stream offset, may arrive in any order
//! and may be sent again. Bytes already delivered are dropped, bodies that start beyond
//! the next expected offset wait in a bounded reorder buffer, and `fin` marks where the
//! upload ends.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use pht_core::PostBody;

/// Appends everything of `body` after its first `skip` bytes to `out`, as the pieces
/// that hold it: a push body arrives in the pieces hyper read it in, and joining them
/// would copy every upload byte once more.
fn after(body: PostBody, mut skip: usize, out: &mut Vec<Bytes>) {
    for mut b in body.into_parts() {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        b.advance(skip);
        skip = 0;
        out.push(b);
    }
}

/// What a held body costs beyond its bytes, counted against the buffer's capacity: the
/// map entry and the body's pieces take a few hundred bytes whatever its length, and a
/// client pushing one-byte bodies with gaps between them would otherwise hold hundreds
/// of times the capacity in bookkeeping.
const HELD_ENTRY_COST: usize = 1024;

/// Why a push body was refused; nothing of it was taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ReorderError {
    /// Holding the body would put more than the buffer's capacity out of order (429: the
    /// client retries once earlier bytes have filled the gap).
    #[error("reorder buffer full: {held} bytes held, {len} more would pass {cap}")]
    Full { held: usize, len: usize, cap: usize },
    /// Bytes beyond the end a `fin` named.
    #[error("bytes up to {end} are beyond the upload's end at {fin}")]
    BeyondEnd { end: u64, fin: u64 },
    /// A `fin` at another offset than an earlier one, or before bytes already taken.
    #[error("fin at {end} contradicts the upload's end at {known}")]
    FinConflict { end: u64, known: u64 },
    /// `seq` plus the body's length does not fit 64 bits.
    #[error("seq {seq} plus {len} bytes overflows")]
    Overflow { seq: u64, len: usize },
}

/// The upload's in-order offset, the bodies held beyond it, and its end once known.
#[derive(Debug)]
pub(super) struct ReorderBuffer {
    next: u64,
    /// Bodies starting beyond `next`, by start offset (they may overlap).
    held: BTreeMap<u64, PostBody>,
    held_bytes: usize,
    cap: usize,
    fin: Option<u64>,
}

impl ReorderBuffer {
    pub fn new(cap: usize) -> Self {
        ReorderBuffer {
            next: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            cap,
            fin: None,
        }
    }

    /// Upload bytes taken in order: the count a push answer and an ACK frame carry.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Whether every byte up to a known end has been taken: the handler may read EOF.
    pub fn ended(&self) -> bool {
        self.fin == Some(self.next)
    }

    /// Takes the body of a push at offset `seq` (`fin`: the upload ends after it) and
    /// returns the bytes that are now next in order, to be delivered in that order. On an
    /// error nothing was taken.
    pub fn insert(
        &mut self,
        seq: u64,
        data: PostBody,
        fin: bool,
    ) -> Result<Vec<Bytes>, ReorderError> {
        let len = data.len();
        let end = seq
            .checked_add(len as u64)
            .ok_or(ReorderError::Overflow { seq, len })?;
        if fin {
            let reached = self.furthest();
            match self.fin {
                Some(known) if known != end => {
                    return Err(ReorderError::FinConflict { end, known });
                }
                None if reached > end => {
                    return Err(ReorderError::FinConflict {
                        end,
                        known: reached,
                    });
                }
                _ => {}
            }
        } else if let Some(f) = self.fin.filter(|f| end > *f) {
            return Err(ReorderError::BeyondEnd { end, fin: f });
        }
        let mut out = Vec::new();
        if end <= self.next {
            // Sent again: its bytes were taken already.
        } else if seq > self.next {
            let had = self.held.get(&seq).map(PostBody::len);
            if had.is_none_or(|had| had < len) {
                let more = match had {
                    Some(had) => len - had,
                    None => len + HELD_ENTRY_COST,
                };
                // Nor may it reach further than the capacity past the next offset: an
                // honest client has no more than its window in flight.
                let too_far = end - self.next > self.cap as u64;
                if too_far || self.held_bytes + more > self.cap {
                    return Err(ReorderError::Full {
                        held: self.held_bytes,
                        len: more,
                        cap: self.cap,
                    });
                }
                self.held.insert(seq, data);
                self.held_bytes += more;
            }
        } else {
            after(data, (self.next - seq) as usize, &mut out);
            self.next = end;
            self.drain(&mut out);
        }
        if fin {
            self.fin = Some(end);
        }
        Ok(out)
    }

    /// Moves held bodies that have become contiguous into `out`.
    fn drain(&mut self, out: &mut Vec<Bytes>) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let (at, body) = entry.remove_entry();
            self.held_bytes = self.held_bytes.saturating_sub(body.len() + HELD_ENTRY_COST);
            let body_end = at + body.len() as u64;
            if body_end > self.next {
                let skip = (self.next - at) as usize;
                after(body, skip, out);
                self.next = body_end;
            }
        }
        if self.held.is_empty() {
            // Overlapping bodies may have been counted twice; nothing is held now.
            self.held_bytes = 0;
        }
    }

    /// The furthest offset any taken or held byte reaches.
    fn furthest(&self) -> u64 {
        self.held
            .iter()
            .map(|(at, b)| at + b.len() as u64)
            .max()
            .unwrap_or(0)
            .max(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> PostBody {
        Bytes::copy_from_slice(s.as_bytes()).into()
    }

    const C: usize = HELD_ENTRY_COST;

    fn joined(v: Vec<Bytes>) -> String {
        v.iter().map(|c| String::from_utf8_lossy(c)).collect()
    }

    #[test]
    fn in_order_bodies_pass_and_retries_are_dropped() {
        let mut r = ReorderBuffer::new(4 * C);
        assert_eq!(joined(r.insert(0, b("hello "), false).unwrap()), "hello ");
        assert_eq!(r.next(), 6);
        assert_eq!(
            joined(r.insert(0, b("hello "), false).unwrap()),
            "",
            "a full retry"
        );
        // A retry that overlaps new bytes delivers only the new part.
        assert_eq!(joined(r.insert(3, b("lo world"), false).unwrap()), "world");
        assert_eq!(r.next(), 11);
        assert_eq!(
            joined(r.insert(11, PostBody::default(), false).unwrap()),
            "",
            "a pure ack"
        );
    }

    #[test]
    fn bodies_in_pieces_pass_without_a_copy() {
        let whole = Bytes::from_static(b"0123456789");
        let mut body = PostBody::default();
        for r in [0..4, 4..4, 4..7, 7..10] {
            body.push(whole.slice(r));
        }
        assert_eq!(body.len(), 10);
        let mut r = ReorderBuffer::new(4 * C);
        r.insert(0, whole.slice(..5).into(), false).unwrap();
        // A retry that overlaps taken bytes: only the new part, cut inside a piece.
        let out = r.insert(0, body.clone(), false).unwrap();
        assert_eq!(joined(out.clone()), "56789");
        assert_eq!(out.len(), 2, "the pieces it arrived in");
        assert_eq!(out[1].as_ptr(), whole[7..].as_ptr(), "not copied");
        // Held in pieces, then drained behind the body that fills the gap.
        let mut r = ReorderBuffer::new(2 * C);
        let mut late = PostBody::default();
        late.push(Bytes::from_static(b"ab"));
        late.push(Bytes::from_static(b"cd"));
        r.insert(10, late, false).unwrap();
        assert_eq!(r.held_bytes, 4 + C);
        let out = r.insert(0, body, false).unwrap();
        assert_eq!(joined(out), "0123456789abcd");
        assert_eq!((r.next(), r.held_bytes), (14, 0));
    }

    #[test]
    fn gaps_are_held_then_filled_in_order() {
        let mut r = ReorderBuffer::new(4 * C);
        assert_eq!(joined(r.insert(6, b("world"), false).unwrap()), "");
        assert_eq!(joined(r.insert(11, b("!"), false).unwrap()), "");
        assert_eq!(
            joined(r.insert(6, b("world"), false).unwrap()),
            "",
            "held twice"
        );
        assert_eq!(
            r.held_bytes,
            6 + 2 * C,
            "a retried held body is counted once"
        );
        assert_eq!(r.next(), 0);
        assert_eq!(
            joined(r.insert(0, b("hello "), false).unwrap()),
            "hello world!"
        );
        assert_eq!((r.next(), r.held_bytes), (12, 0));
    }

    #[test]
    fn overlapping_held_bodies_deliver_each_byte_once() {
        let mut r = ReorderBuffer::new(4 * C);
        r.insert(4, b("456789"), false).unwrap();
        r.insert(2, b("2345"), false).unwrap();
        assert_eq!(joined(r.insert(0, b("012"), false).unwrap()), "0123456789");
        assert_eq!(r.next(), 10);
    }

    #[test]
    fn a_full_buffer_refuses_and_takes_nothing() {
        let mut r = ReorderBuffer::new(C + 8);
        r.insert(10, b("abcde"), false).unwrap();
        assert_eq!(
            r.insert(20, b("fghi"), false),
            Err(ReorderError::Full {
                held: 5 + C,
                len: 4 + C,
                cap: C + 8
            })
        );
        assert_eq!(r.held.len(), 1, "nothing taken");
        // In-order bytes are never refused: they need no room.
        assert_eq!(
            joined(r.insert(0, b("0123456789"), false).unwrap()),
            "0123456789abcde"
        );
        r.insert(20, b("fghi"), false).unwrap();
        // No reorder room at all: only in-order bytes pass.
        let mut none = ReorderBuffer::new(0);
        assert!(matches!(
            none.insert(1, b("x"), false),
            Err(ReorderError::Full { .. })
        ));
        assert_eq!(joined(none.insert(0, b("x"), false).unwrap()), "x");
    }

    #[test]
    fn tiny_bodies_and_far_offsets_cannot_outgrow_the_capacity() {
        // One-byte bodies with gaps: each costs its bookkeeping, so a client cannot hold
        // hundreds of times the capacity in map entries.
        let cap = 8 * C;
        let mut r = ReorderBuffer::new(cap);
        let mut held = 0;
        for i in 0..100u64 {
            if r.insert(1 + 2 * i, b("x"), false).is_err() {
                break;
            }
            held += 1;
        }
        assert_eq!(
            held, 7,
            "8 KiB holds seven one-byte bodies and their entries"
        );
        assert!(r.held_bytes <= cap);
        // A body ending further than the capacity past the next offset is refused, even
        // into an empty buffer: no honest client has that much in flight.
        let mut r = ReorderBuffer::new(cap);
        assert!(matches!(
            r.insert(cap as u64, b("late"), false),
            Err(ReorderError::Full { .. })
        ));
        r.insert(cap as u64 - 4 - C as u64, b("late"), false)
            .unwrap();
        assert!(matches!(
            r.insert(u64::MAX - 10, b("x"), false),
            Err(ReorderError::Full { .. })
        ));
    }

    #[test]
    fn fin_marks_the_end_once_every_byte_is_in() {
        let mut r = ReorderBuffer::new(4 * C);
        // The last body arrives first, with fin.
        r.insert(3, b("def"), true).unwrap();
        assert!(!r.ended(), "bytes before the end are missing");
        assert_eq!(
            r.insert(6, b("x"), false),
            Err(ReorderError::BeyondEnd { end: 7, fin: 6 })
        );
        assert_eq!(
            r.insert(0, b("abcdefg"), true),
            Err(ReorderError::FinConflict { end: 7, known: 6 })
        );
        assert_eq!(joined(r.insert(0, b("abc"), false).unwrap()), "abcdef");
        assert!(r.ended());
        // fin sent again (its answer was lost) is harmless; an empty fin at the end too.
        assert_eq!(joined(r.insert(3, b("def"), true).unwrap()), "");
        assert_eq!(joined(r.insert(6, PostBody::default(), true).unwrap()), "");
        assert!(r.ended());
    }

    #[test]
    fn a_fin_before_bytes_already_taken_is_refused() {
        let mut r = ReorderBuffer::new(4 * C);
        r.insert(0, b("abcdef"), false).unwrap();
        assert!(matches!(
            r.insert(0, b("abc"), true),
            Err(ReorderError::FinConflict { .. })
        ));
        r.insert(10, b("k"), false).unwrap();
        assert!(
            matches!(
                r.insert(6, b("gh"), true),
                Err(ReorderError::FinConflict { .. })
            ),
            "a held body lies beyond that end"
        );
        assert!(!r.ended());
        assert!(matches!(
            r.insert(u64::MAX, b("zz"), false),
            Err(ReorderError::Overflow { .. })
        ));
    }
}
