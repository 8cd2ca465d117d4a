//! Waking idle workers when the control plane changed what they act on: a
//! new config snapshot, or the start of a drain. A worker with nothing to
//! do waits up to 100 ms between loop turns and reads both only at the
//! start of a turn; without a wake-up an idle worker would keep serving
//! the old config for up to that long after the swap.
//!
//! Each worker owns the receiving end of a datagram socket pair and waits
//! on it beside its connections; the control side holds the sending ends.
//! One byte is one wake-up; when a worker's queue is full a wake-up is
//! already pending, so a full queue is not an error.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

/// The sending end: rings one worker.
#[derive(Debug)]
pub struct Bell(UnixDatagram);

/// The receiving end, owned by one worker.
#[derive(Debug)]
pub struct Wake(UnixDatagram);

/// One bell and wake per worker, both non-blocking.
pub fn pairs(workers: usize) -> io::Result<(Vec<Bell>, Vec<Wake>)> {
    let mut bells = Vec::with_capacity(workers);
    let mut wakes = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = UnixDatagram::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        bells.push(Bell(tx));
        wakes.push(Wake(rx));
    }
    Ok((bells, wakes))
}

impl Bell {
    /// Wakes the worker (a full queue already holds a wake-up; a worker
    /// that exited has nothing to wake).
    pub fn ring(&self) {
        let _ = self.0.send(&[1]);
    }
}

impl Wake {
    /// The descriptor a driver waits on for readability.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Takes every pending wake-up; returns how many there were.
    pub fn drain(&self) -> usize {
        let mut n = 0;
        let mut byte = [0u8; 1];
        while self.0.recv(&mut byte).is_ok() {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_is_read_once_and_a_full_queue_is_no_error() {
        let (bells, wakes) = pairs(2).unwrap();
        assert_eq!(wakes[0].drain(), 0);
        bells[0].ring();
        bells[0].ring();
        assert_eq!(wakes[0].drain(), 2);
        assert_eq!(wakes[1].drain(), 0);
        // Far more rings than the socket queues: none blocks or fails.
        for _ in 0..100_000 {
            bells[1].ring();
        }
        assert!(wakes[1].drain() > 0);
        assert_eq!(wakes[1].drain(), 0);
        // A bell whose worker is gone does nothing.
        drop(wakes);
        bells[0].ring();
    }
}
