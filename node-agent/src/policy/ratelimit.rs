//! Rate limits as GCRA (the generic cell rate algorithm) on one atomic per
//! key: the whole state of a bucket is its theoretical arrival time (TAT),
//! so a check is one load and one compare-exchange, shared by every worker
//! without a lock, and the limit holds node-wide however connections spread
//! over workers.
//!
//! Two shapes from one state:
//! - **Token bucket** (`smooth: false`): up to `burst` requests pass at once,
//!   then one per `1/rps`; the rest are rejected with the time until the
//!   next one would pass (`Retry-After`).
//! - **Leaky bucket** (`smooth: true`): requests are released spaced at
//!   `1/rps`. One that arrives early waits (the caller delays it, holding no
//!   worker) as long as at most `burst` wait before it and its wait is at
//!   most `max_delay`; past either it is rejected. This is nginx's
//!   `limit_req` without `nodelay`.
//!
//! A TAT at or before `now` is the same state as a key never seen, which is
//! what keeps keyed tables bounded for free: a slot whose TAT has passed is
//! idle and may be given to another key ([`KeyTable`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// Probes per key lookup in a [`KeyTable`] before the overflow bucket.
const PROBES: usize = 8;

/// What a rate limit decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Pass now.
    Allow,
    /// Pass after waiting this many ns (leaky bucket only).
    Delay(u64),
    /// Reject; the next request of this key would pass in this many ns.
    Reject {
        /// ns until a request of this key would conform.
        retry_after_ns: u64,
    },
}

/// The parameters of one limit, in ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval: ns per request at the sustained rate (≥ 1).
    interval: u64,
    /// Token bucket: how far ahead of `now` the TAT may run and still pass
    /// at once (`(burst - 1) × interval`). Leaky bucket: the longest wait.
    tolerance: u64,
    /// Leaky bucket (delay) rather than token bucket (reject).
    smooth: bool,
}

impl Gcra {
    /// A limit of `rps` per second (> 0) with bucket size `burst` (≥ 1).
    /// With `smooth`, the longest wait is the smaller of `burst` intervals
    /// and `max_delay_ns`.
    pub fn new(rps: f64, burst: u64, smooth: bool, max_delay_ns: u64) -> Gcra {
        // Float to integer casts saturate: a huge rps gives interval 1.
        let interval = ((1e9 / rps.max(1e-9)) as u64).max(1);
        let burst = burst.max(1);
        let tolerance = if smooth {
            interval.saturating_mul(burst).min(max_delay_ns)
        } else {
            interval.saturating_mul(burst - 1)
        };
        Gcra {
            interval,
            tolerance,
            smooth,
        }
    }

    /// ns per request at the sustained rate.
    pub fn interval_ns(&self) -> u64 {
        self.interval
    }

    /// Decides one request at `now` against the bucket state `tat`,
    /// updating it when the request passes (now or after its delay).
    pub fn check(&self, tat: &AtomicU64, now: u64) -> Decision {
        let mut cur = tat.load(Ordering::Relaxed);
        loop {
            let (next, decision) = self.step(cur, now);
            if next == cur {
                return decision;
            }
            match tat.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return decision,
                Err(seen) => cur = seen,
            }
        }
    }

    /// The pure step: from TAT `cur` at `now`, the new TAT and the decision.
    pub fn step(&self, cur: u64, now: u64) -> (u64, Decision) {
        let start = cur.max(now);
        let ahead = start - now;
        if ahead > self.tolerance {
            let retry_after_ns = ahead - self.tolerance;
            return (cur, Decision::Reject { retry_after_ns });
        }
        let next = start.saturating_add(self.interval);
        let decision = if self.smooth && ahead > 0 {
            Decision::Delay(ahead)
        } else {
            Decision::Allow
        };
        (next, decision)
    }
}

/// One bucket of a keyed table: which key holds it and its TAT.
#[derive(Debug, Default)]
struct Slot {
    key: AtomicU64,
    tat: AtomicU64,
}

/// Buckets for many keys in a fixed amount of memory, shared by every
/// worker without a lock. A key is a 64-bit hash (0 is never used); it
/// lives in one of [`PROBES`] slots from its hash. A slot whose TAT has
/// passed is idle (the same state as a fresh bucket) and is taken over by a
/// new key. When every probed slot is busy with other keys (a flood of
/// distinct keys, each within its rate), the new key shares the overflow
/// bucket, which has the same limit: the flood is throttled together and
/// memory does not grow.
///
/// Races are benign and bounded: two keys taking the same idle slot at
/// once resolve by compare-exchange; a request charged to a slot its key
/// just lost charges one request to the new owner.
#[derive(Debug)]
pub struct KeyTable {
    slots: Box<[Slot]>,
    mask: usize,
    overflow: AtomicU64,
}

impl KeyTable {
    /// A table for about `max_keys` active keys (rounded up to a power of
    /// two, at least [`PROBES`]).
    pub fn new(max_keys: usize) -> KeyTable {
        let n = max_keys.max(PROBES).next_power_of_two();
        KeyTable {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            overflow: AtomicU64::new(0),
        }
    }

    /// Slots in the table (its memory is 16 bytes each).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The bucket state of `key` at `now`: its slot, an idle slot it takes
    /// over, or the shared overflow bucket.
    pub fn bucket(&self, key: u64, now: u64) -> &AtomicU64 {
        let key = key.max(1);
        let base = key as usize;
        let slot = |i: usize| &self.slots[base.wrapping_add(i) & self.mask];
        for i in 0..PROBES {
            let s = slot(i);
            if s.key.load(Ordering::Relaxed) == key {
                return &s.tat;
            }
        }
        for i in 0..PROBES {
            let s = slot(i);
            let held = s.key.load(Ordering::Relaxed);
            let idle = held == 0 || s.tat.load(Ordering::Relaxed) <= now;
            if idle
                && s.key
                    .compare_exchange(held, key, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return &s.tat;
            }
        }
        &self.overflow
    }

    /// Keys whose buckets are not idle at `now` (for tests and metrics;
    /// a full scan).
    pub fn active(&self, now: u64) -> usize {
        self.slots
            .iter()
            .filter(|s| s.key.load(Ordering::Relaxed) != 0 && s.tat.load(Ordering::Relaxed) > now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn passes(g: &Gcra, tat: &AtomicU64, at: &[u64]) -> Vec<Decision> {
        at.iter().map(|&t| g.check(tat, t)).collect()
    }

    #[test]
    fn token_bucket_passes_the_burst_then_one_per_interval() {
        let g = Gcra::new(10.0, 5, false, 0);
        let tat = AtomicU64::new(0);
        let now = 100 * SEC;
        let d = passes(&g, &tat, &[now; 7]);
        assert!(d[..5].iter().all(|d| *d == Decision::Allow), "{d:?}");
        // The 6th waits for one interval to free a token.
        assert_eq!(
            d[5],
            Decision::Reject {
                retry_after_ns: SEC / 10
            }
        );
        assert_eq!(g.check(&tat, now + SEC / 10), Decision::Allow);
        assert!(matches!(
            g.check(&tat, now + SEC / 10),
            Decision::Reject { .. }
        ));
        // A full second later, the bucket holds 5 again (capped at burst).
        let later = now + 10 * SEC;
        let d = passes(&g, &tat, &[later; 6]);
        assert_eq!(d.iter().filter(|d| **d == Decision::Allow).count(), 5);
    }

    #[test]
    fn token_bucket_over_a_long_run_passes_burst_plus_rate_times_time() {
        // Requests every 1 ms for 10 s at 100 rps, burst 20.
        let g = Gcra::new(100.0, 20, false, 0);
        let tat = AtomicU64::new(0);
        let t0 = 5 * SEC;
        let allowed = (0..10_000u64)
            .filter(|i| g.check(&tat, t0 + i * 1_000_000) == Decision::Allow)
            .count();
        // 20 at once, then one per 10 ms over 9.999 s.
        assert_eq!(allowed, 20 + 999);
    }

    #[test]
    fn leaky_bucket_spaces_requests_at_the_rate_and_bounds_the_wait() {
        let g = Gcra::new(100.0, 3, true, SEC);
        let tat = AtomicU64::new(0);
        let now = SEC;
        let d = passes(&g, &tat, &[now; 5]);
        let ms = 1_000_000;
        assert_eq!(
            d,
            [
                Decision::Allow,
                Decision::Delay(10 * ms),
                Decision::Delay(20 * ms),
                Decision::Delay(30 * ms),
                Decision::Reject {
                    retry_after_ns: 10 * ms
                },
            ]
        );
        // max_delay below burst × interval is the tighter bound.
        let g = Gcra::new(100.0, 100, true, 25 * ms);
        let tat = AtomicU64::new(0);
        let d = passes(&g, &tat, &[now; 5]);
        assert_eq!(d[2], Decision::Delay(20 * ms));
        assert!(matches!(d[3], Decision::Reject { .. }), "{d:?}");
    }

    /// A reference GCRA in the virtual-scheduling form of ITU-T I.371, on
    /// a different arithmetic (i128, explicit TAT), against ours.
    #[test]
    fn matches_the_virtual_scheduling_reference() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for case in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let rps = 1.0 + (x >> 40) as f64 % 5000.0;
            let burst = 1 + (x >> 20) % 50;
            let g = Gcra::new(rps, burst, false, 0);
            let t = g.interval as i128;
            let tau = t * (burst as i128 - 1);
            let tat = AtomicU64::new(0);
            let mut ref_tat: i128 = 0;
            let mut now: i128 = 1_000_000_000;
            for _ in 0..500 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                now += ((x >> 33) % (2 * t as u64 + 1)) as i128;
                let conforming = ref_tat - tau <= now;
                if conforming {
                    ref_tat = ref_tat.max(now) + t;
                }
                let ours = g.check(&tat, now as u64) == Decision::Allow;
                assert_eq!(ours, conforming, "case {case} rps {rps} burst {burst}");
            }
        }
    }

    #[test]
    fn two_threads_on_one_key_share_the_rate_exactly() {
        // A virtual clock both threads advance: 10 s at 1000 rps, burst 1.
        let g = Gcra::new(1000.0, 1, false, 0);
        let tat = AtomicU64::new(0);
        let clock = AtomicU64::new(SEC);
        let end = 11 * SEC;
        let allowed: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut n = 0;
                        loop {
                            let now = clock.fetch_add(20_000, Ordering::Relaxed);
                            if now >= end {
                                return n;
                            }
                            n += usize::from(g.check(&tat, now) == Decision::Allow);
                        }
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        // One per ms within 2%: a thread that read its clock earlier may
        // lose the race to one that read it later, so a pass can start a
        // clock step late; it can never pass early.
        assert!((9_800..=10_001).contains(&allowed), "{allowed}");
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_table() {
        let table = KeyTable::new(1024);
        let g = Gcra::new(1.0, 1, false, 0);
        let mut now = SEC;
        let mut overflowed = 0;
        for k in 0..1_000_000u64 {
            now += 1_000;
            let b = table.bucket(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), now);
            overflowed += usize::from(std::ptr::eq(b, &table.overflow));
            let _ = g.check(b, now);
        }
        assert_eq!(table.capacity(), 1024);
        assert!(table.active(now) <= 1024);
        // Every key is within its rate for a second: the table fills and
        // the rest share the overflow bucket.
        assert!(overflowed > 900_000, "{overflowed}");
    }

    #[test]
    fn an_idle_key_gives_its_slot_to_a_new_one() {
        let table = KeyTable::new(8);
        let g = Gcra::new(1.0, 1, false, 0);
        let now = SEC;
        // Fill the table's 8 slots with keys that collide on purpose.
        for k in 0..8u64 {
            let b = table.bucket(8 * k + 16, now);
            assert_eq!(g.check(b, now), Decision::Allow);
        }
        assert!(std::ptr::eq(table.bucket(1_000, now), &table.overflow));
        // Two seconds later they are idle; a new key gets a slot and a
        // fresh bucket.
        let later = now + 2 * SEC;
        let b = table.bucket(1_000, later);
        assert!(!std::ptr::eq(b, &table.overflow));
        assert_eq!(g.check(b, later), Decision::Allow);
        // The same key finds the same slot again.
        assert!(std::ptr::eq(table.bucket(1_000, later), b));
    }
}
