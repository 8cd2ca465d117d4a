//! How many new connections one loop turn sets up, the same rule on both
//! drivers.
//!
//! Setting up an accepted connection costs the worker a few microseconds
//! (its address, the connection limit, socket options, a first receive),
//! and connections arrive in bursts: an attack opened 1,200 in a few
//! milliseconds, and the worker took 420 of them in one turn, 1.3 ms in
//! which no request on the worker moved. So a turn sets up at most
//! [`PER_TURN`] connections and the rest wait for the next turns, in
//! arrival order: on epoll in the listener's backlog (the driver accepts
//! again next turn), on io_uring, whose multishot accept has already taken
//! them, in a queue of the driver's. While connections wait, the driver
//! does not block in its wait for events.

/// Connections one loop turn sets up before the rest wait for the next.
pub const PER_TURN: usize = 32;
/// Accepted connections a driver may hold waiting (io_uring). Past this,
/// each is set up at once: the queue stays bounded, and a flood meets
/// `max_connections` as it would without pacing.
pub const QUEUE_MAX: usize = 1024;

/// What is left of the turn's allowance.
#[derive(Debug)]
pub struct Accepts {
    left: usize,
    /// A connection had to wait in this turn.
    deferred: bool,
}

impl Accepts {
    /// A full allowance.
    pub fn new() -> Accepts {
        Accepts {
            left: PER_TURN,
            deferred: false,
        }
    }

    /// Start of a loop turn: a full allowance.
    pub fn begin(&mut self) {
        self.left = PER_TURN;
        self.deferred = false;
    }

    /// Whether one more connection may be set up now, with `queued`
    /// accepted connections already waiting in the driver. No: it waits
    /// for the next turn.
    pub fn take(&mut self, queued: usize) -> bool {
        if queued >= QUEUE_MAX {
            return true;
        }
        if self.left == 0 {
            self.deferred = true;
            return false;
        }
        self.left -= 1;
        true
    }

    /// A connection waits for the next turn.
    pub fn waiting(&self) -> bool {
        self.deferred
    }
}

impl Default for Accepts {
    fn default() -> Self {
        Accepts::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_sets_up_its_allowance_and_the_rest_wait() {
        let mut a = Accepts::new();
        for _ in 0..PER_TURN {
            assert!(a.take(0));
        }
        assert!(!a.waiting());
        assert!(!a.take(0));
        assert!(a.waiting());
        a.begin();
        assert!(!a.waiting());
        assert!(a.take(0));
    }

    #[test]
    fn a_full_queue_is_served_past_the_allowance() {
        let mut a = Accepts::new();
        while a.take(0) {}
        assert!(a.take(QUEUE_MAX));
        assert!(!a.take(QUEUE_MAX - 1));
    }
}
