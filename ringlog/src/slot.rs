//! The per-slot commit protocol (a seqlock with tickets).
//!
//! Word 0 of every slot is its sequence word:
//! - `0`: never written;
//! - `2*ticket + 1` (odd): the writer is storing ticket `ticket`'s body;
//! - `2*ticket + 2` (even, non-zero): ticket `ticket` is committed.
//!
//! Writer: store odd (Relaxed), Release fence, body (Relaxed), store even
//! (Release). Reader: load seq (Relaxed) + Acquire fence, body (Relaxed),
//! Acquire fence, load seq again (Relaxed); the body is accepted only if both
//! loads agree, are even, and name the ticket the reader expected for that
//! slot.
//!
//! Readers only ever do Relaxed loads followed by fences, never an Acquire
//! load: the std docs allow small Relaxed atomic loads on read-only memory
//! (a reader maps the file read-only) and recommend exactly this pattern for
//! acquire semantics there.
//!
//! The code is generic over [`Word`] so the loom model below runs exactly
//! this logic against loom's atomics.

use std::sync::atomic::Ordering;

/// An atomic 64-bit cell plus the matching fence.
pub(crate) trait Word {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, value: u64, order: Ordering);
    fn fence(order: Ordering);
}

impl Word for std::sync::atomic::AtomicU64 {
    #[inline(always)]
    fn load(&self, order: Ordering) -> u64 {
        std::sync::atomic::AtomicU64::load(self, order)
    }
    #[inline(always)]
    fn store(&self, value: u64, order: Ordering) {
        std::sync::atomic::AtomicU64::store(self, value, order)
    }
    #[inline(always)]
    fn fence(order: Ordering) {
        std::sync::atomic::fence(order)
    }
}

/// An acquire load made of a Relaxed load and an Acquire fence (valid on
/// read-only memory, unlike `load(Acquire)`).
#[inline(always)]
pub(crate) fn load_acquire<W: Word>(w: &W) -> u64 {
    let v = w.load(Ordering::Relaxed);
    W::fence(Ordering::Acquire);
    v
}

/// Sequence value while `ticket` is being written.
#[inline(always)]
pub(crate) fn writing(ticket: u64) -> u64 {
    ticket.wrapping_mul(2).wrapping_add(1)
}

/// Sequence value once `ticket` is committed.
#[inline(always)]
pub(crate) fn committed(ticket: u64) -> u64 {
    ticket.wrapping_mul(2).wrapping_add(2)
}

/// Writes `body` into `slot` (8 words) as `ticket`. Single writer per slot.
#[inline(always)]
pub(crate) fn write<W: Word>(slot: &[W], ticket: u64, body: &[u64; 7]) {
    let Some((seq, rest)) = slot.split_first() else {
        return;
    };
    seq.store(writing(ticket), Ordering::Relaxed);
    W::fence(Ordering::Release);
    for (cell, &v) in rest.iter().zip(body) {
        cell.store(v, Ordering::Relaxed);
    }
    seq.store(committed(ticket), Ordering::Release);
}

/// Outcome of reading one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// The expected ticket, committed and stable across the read.
    Ok([u64; 7]),
    /// Sequence word 0: never written.
    Empty,
    /// Odd sequence: a write is in progress.
    InProgress,
    /// The sequence changed during the read.
    Torn,
    /// A committed ticket other than the expected one: `found`.
    Other(u64),
    /// The sequence word is even but cannot belong to this slot.
    Corrupt,
}

/// Reads `slot` expecting `ticket`; `mask` is slots-per-shard minus one.
#[inline(always)]
pub(crate) fn read<W: Word>(slot: &[W], ticket: u64, mask: u64) -> Read {
    let Some((seq, rest)) = slot.split_first() else {
        return Read::Corrupt;
    };
    let s1 = load_acquire(seq);
    if s1 == 0 {
        return Read::Empty;
    }
    if s1 & 1 == 1 {
        return Read::InProgress;
    }
    let found = s1 / 2 - 1;
    if found & mask != ticket & mask {
        return Read::Corrupt;
    }
    let mut body = [0u64; 7];
    for (v, cell) in body.iter_mut().zip(rest) {
        *v = cell.load(Ordering::Relaxed);
    }
    W::fence(Ordering::Acquire);
    let s2 = seq.load(Ordering::Relaxed);
    if s2 != s1 {
        return Read::Torn;
    }
    if found != ticket {
        return Read::Other(found);
    }
    Read::Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn slot() -> Vec<AtomicU64> {
        (0..8).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn states() {
        let s = slot();
        assert_eq!(read(&s, 0, 3), Read::Empty);
        write(&s, 4, &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(read(&s, 4, 3), Read::Ok([1, 2, 3, 4, 5, 6, 7]));
        assert_eq!(read(&s, 0, 3), Read::Other(4));
        assert_eq!(read(&s, 8, 3), Read::Other(4));
        assert_eq!(read(&s, 5, 3), Read::Corrupt);
        s[0].store(writing(8), Ordering::Relaxed);
        assert_eq!(read(&s, 8, 3), Read::InProgress);
    }
}

/// Loom model: one writer laps a 1-slot ring while a reader reads; the
/// reader must never accept a body that mixes two tickets. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p ringlog --lib --release loom`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU64;

    impl Word for AtomicU64 {
        fn load(&self, order: Ordering) -> u64 {
            AtomicU64::load(self, order)
        }
        fn store(&self, value: u64, order: Ordering) {
            AtomicU64::store(self, value, order)
        }
        fn fence(order: Ordering) {
            loom::sync::atomic::fence(order)
        }
    }

    fn body(ticket: u64) -> [u64; 7] {
        std::array::from_fn(|i| ticket * 100 + i as u64)
    }

    #[test]
    fn loom_reader_never_accepts_torn() {
        loom::model(|| {
            // Two body words are enough to expose tearing and keep the state space small.
            let slot: Arc<Vec<AtomicU64>> = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());
            let w = slot.clone();
            let writer = loom::thread::spawn(move || {
                for t in 0..2u64 {
                    write(&w[..], t, &body(t));
                }
            });
            for expect in 0..2u64 {
                match read(&slot[..], expect, 0) {
                    Read::Ok(b) => {
                        assert_eq!(&b[..2], &body(expect)[..2], "accepted a torn body");
                    }
                    Read::Other(found) => assert!(found < 2),
                    Read::Empty | Read::InProgress | Read::Torn => {}
                    Read::Corrupt => panic!("corrupt on a valid slot"),
                }
            }
            writer.join().unwrap();
            assert_eq!(
                read(&slot[..], 1, 0),
                Read::Ok({
                    let mut b = [0; 7];
                    b[..2].copy_from_slice(&body(1)[..2]);
                    b
                })
            );
        });
    }
}
