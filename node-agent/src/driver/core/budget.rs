//! The bulk budget of one loop turn, the same rule on both drivers.
//!
//! A worker serves every connection from one loop. Without a bound, a turn
//! lasts as long as its connections have bytes to move: when 200 clients
//! start 32 MiB downloads at once, one turn forwards hundreds of
//! megabytes before it looks at the next request, and every interactive
//! request on the worker waits that long. So a turn moves at most
//! [`TURN_BYTES`] of bulk input (chunks of at least [`BULK_MIN`] bytes);
//! a connection that would move more waits for the next turn, queued in
//! arrival order, and the queue is served first then (so no bulk transfer
//! starves behind fresher ones). Small chunks (request heads, small
//! responses, the end of a body) are never held back. While connections
//! wait, the driver does not block in its wait for events.
//!
//! The bytes a waiting connection would have read stay in its socket's
//! receive buffer, where TCP flow control holds the sender back.
//!
//! A fresh upstream connection's first read takes at most [`FIRST_READ`]
//! bytes, never held back ([`Pace::Fresh`]): a small response passes at
//! once, and one that fills the read makes the connection bulk. Its first
//! response may be a large one: 200 downloads starting together read
//! 64 KiB each unasked in one epoll turn (12.8 MB, a 10-19 ms stall for
//! every other connection on the worker). Yet holding the first read back
//! as bulk queued a new connection of the interactive load behind every
//! waiting download: while 200 downloads started, one legitimate
//! connection's first response waited ~150 ms, and every request behind
//! it on its client connection with it. Both drivers start an upstream
//! connection that way.
//!
//! Bulk input the driver did not ask for within the budget (a read armed
//! for small chunks that came back full) is charged to the next budget
//! ([`Budget::charge`]): it cost as much as planned bulk. And when
//! interactive input arrived, the next budget is [`SHARED_TURN_BYTES`]:
//! a worker that serves requests beside bulk transfers keeps its turns
//! short.

use std::collections::VecDeque;

/// Bulk input bytes one loop turn moves before further bulk input waits
/// for the next turn (at most one chunk more).
pub const TURN_BYTES: usize = 256 * 1024;
/// The bulk budget of a turn after one that took in interactive input
/// (a chunk under [`BULK_MIN`]): requests and small responses then wait
/// for at most this much bulk per turn. (200 downloads starting beside an
/// interactive load: its slowest 20 ms stretch 33-55 ms with 256 KiB a
/// turn, ~20 ms with 64 KiB; a lone transfer keeps the full budget.)
pub const SHARED_TURN_BYTES: usize = 64 * 1024;
/// Input chunks shorter than this are interactive: never held back.
pub const BULK_MIN: usize = 4 * 1024;
/// The most a fresh upstream connection's first read takes: under
/// [`BULK_MIN`], so it is never held back, and a response this small
/// (most API responses) passes whole.
pub const FIRST_READ: usize = BULK_MIN - 1;

/// How a socket's next read is sized, and whether the turn's budget holds
/// it back. The one rule both drivers apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// A fresh upstream connection: one read of at most [`FIRST_READ`]
    /// bytes, never held back.
    Fresh,
    /// The last read was short: a read of a whole buffer, never held back
    /// (bulk that arrives this way is charged, see [`Budget::charge`]).
    Small,
    /// The last read filled its buffer: the next one waits for the turn's
    /// bulk budget ([`Budget::allow`]).
    Bulk,
}

impl Pace {
    /// The most the next read takes, given a buffer of `buf` bytes.
    pub fn read_len(self, buf: usize) -> usize {
        match self {
            Pace::Fresh => FIRST_READ.min(buf),
            Pace::Small | Pace::Bulk => buf,
        }
    }

    /// Whether the next read needs the turn's bulk budget.
    pub fn budgeted(self) -> bool {
        self == Pace::Bulk
    }

    /// The pace after a read of `asked` bytes that took `n`: a read that
    /// filled what it asked for leaves more waiting, so the next is bulk.
    pub fn after(n: usize, asked: usize) -> Pace {
        if n >= asked { Pace::Bulk } else { Pace::Small }
    }
}

/// What is left of the turn's budget, and who waits for the next one.
#[derive(Debug, Default)]
pub struct Budget {
    left: usize,
    /// Bulk input taken in since the last [`Budget::begin`] without being
    /// asked for within the budget.
    unplanned: usize,
    /// Interactive input (a chunk under [`BULK_MIN`]) arrived since the
    /// last [`Budget::begin`].
    interactive: bool,
    /// Slots waiting for the next turn, oldest first.
    queue: VecDeque<usize>,
    /// `queued[slot]`: the slot is in `queue` (one entry per slot).
    queued: Vec<bool>,
}

impl Budget {
    /// A full budget, nobody waiting.
    pub fn new() -> Budget {
        Budget {
            left: TURN_BYTES,
            ..Budget::default()
        }
    }

    /// Start of a turn's pumping: the budget is full again, and the slots
    /// that waited are pushed onto `todo` so that they are pumped first,
    /// oldest first (`todo` is popped from its end).
    pub fn begin(&mut self, todo: &mut Vec<usize>) {
        let full = if std::mem::take(&mut self.interactive) {
            SHARED_TURN_BYTES
        } else {
            TURN_BYTES
        };
        self.left = full.saturating_sub(std::mem::take(&mut self.unplanned));
        for &i in self.queue.iter().rev() {
            todo.push(i);
            if let Some(q) = self.queued.get_mut(i) {
                *q = false;
            }
        }
        self.queue.clear();
    }

    /// Whether slot `i` may move an input chunk of `n` bytes now. If not,
    /// it is queued for the next turn: its pump stops and leaves the chunk
    /// where it is.
    pub fn allow(&mut self, i: usize, n: usize) -> bool {
        if n < BULK_MIN {
            return true;
        }
        if self.left > 0 {
            self.left = self.left.saturating_sub(n);
            return true;
        }
        if self.queued.len() <= i {
            self.queued.resize(i + 1, false);
        }
        if !self.queued[i] {
            self.queued[i] = true;
            self.queue.push_back(i);
        }
        false
    }

    /// Input of `n` bytes that arrived without [`Budget::allow`] (a read
    /// armed for small chunks): bulk counts against the next budget, and a
    /// small chunk makes the next budget [`SHARED_TURN_BYTES`].
    pub fn charge(&mut self, n: usize) {
        if n >= BULK_MIN {
            self.unplanned = self.unplanned.saturating_add(n);
        } else if n > 0 {
            self.interactive = true;
        }
    }

    /// Whether connections wait for the next turn (then the driver does
    /// not block waiting for events).
    pub fn waiting(&self) -> bool {
        !self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_chunks_always_pass_and_bulk_waits_once_the_turn_is_spent() {
        let mut b = Budget::new();
        let mut todo = Vec::new();
        b.begin(&mut todo);
        assert!(todo.is_empty());
        let chunk = 32 * 1024;
        for _ in 0..TURN_BYTES / chunk {
            assert!(b.allow(7, chunk));
        }
        assert!(!b.allow(7, chunk));
        assert!(!b.allow(3, chunk));
        assert!(!b.allow(7, chunk), "asked again: still one entry");
        assert!(b.allow(9, BULK_MIN - 1), "an interactive chunk passes");
        assert!(b.waiting());
        // The next turn serves the waiting slots first, oldest first.
        todo.push(42); // a fresh event of the new turn
        b.begin(&mut todo);
        assert_eq!(todo.pop(), Some(7));
        assert_eq!(todo.pop(), Some(3));
        assert_eq!(todo.pop(), Some(42));
        assert!(!b.waiting());
        assert!(b.allow(3, chunk));
    }

    #[test]
    fn bulk_that_arrived_unasked_leaves_less_for_the_turn() {
        let mut b = Budget::new();
        let chunk = 32 * 1024;
        for _ in 0..TURN_BYTES / chunk - 1 {
            b.charge(chunk);
        }
        b.begin(&mut Vec::new());
        assert!(b.allow(5, chunk), "one chunk of the budget was left");
        assert!(!b.allow(5, chunk));
        // The charge applies to one turn only.
        b.begin(&mut Vec::new());
        for _ in 0..TURN_BYTES / chunk {
            assert!(b.allow(6, chunk));
        }
        // Charged past the whole budget: planned bulk waits a turn.
        b.charge(2 * TURN_BYTES);
        b.begin(&mut Vec::new());
        assert!(!b.allow(6, chunk));
        assert!(b.allow(6, BULK_MIN - 1));
    }

    #[test]
    fn interactive_input_shrinks_the_next_budget_once() {
        let mut b = Budget::new();
        let chunk = 16 * 1024;
        b.charge(300); // a request head
        b.begin(&mut Vec::new());
        for _ in 0..SHARED_TURN_BYTES / chunk {
            assert!(b.allow(2, chunk));
        }
        assert!(!b.allow(2, chunk), "the shared budget is spent");
        // No interactive input since: the full budget again.
        b.begin(&mut Vec::new());
        for _ in 0..TURN_BYTES / chunk {
            assert!(b.allow(2, chunk));
        }
        assert!(!b.allow(2, chunk));
    }

    #[test]
    fn a_fresh_connection_reads_a_small_chunk_at_once_even_with_the_budget_spent() {
        let mut b = Budget::new();
        b.begin(&mut Vec::new());
        assert!(b.allow(1, TURN_BYTES));
        assert!(!b.allow(2, BULK_MIN), "the budget is spent");
        // A fresh upstream's first read is small: it needs no budget.
        let fresh = Pace::Fresh;
        assert!(!fresh.budgeted());
        let asked = fresh.read_len(64 * 1024);
        assert_eq!(asked, FIRST_READ);
        assert!(b.allow(3, asked), "under BULK_MIN: never held back");
        // A small response fits; a large one fills the read and is bulk.
        assert_eq!(Pace::after(300, asked), Pace::Small);
        assert_eq!(Pace::after(asked, asked), Pace::Bulk);
        assert!(Pace::Bulk.budgeted() && !Pace::Small.budgeted());
        assert_eq!(Pace::Small.read_len(64 * 1024), 64 * 1024);
        assert_eq!(Pace::Fresh.read_len(100), 100);
    }

    #[test]
    fn a_chunk_larger_than_the_whole_budget_still_moves_in_a_fresh_turn() {
        let mut b = Budget::new();
        assert!(b.allow(1, 4 * TURN_BYTES));
        assert!(!b.allow(1, BULK_MIN));
        b.begin(&mut Vec::new());
        assert!(b.allow(1, 4 * TURN_BYTES));
    }
}
