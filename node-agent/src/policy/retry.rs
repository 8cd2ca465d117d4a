//! Retries of a cluster, sans-IO: which endings are retried, the backoff
//! before each attempt, and a node-wide budget that keeps retries a small
//! share of requests so they cannot amplify an outage.
//!
//! The budget counts requests and retries in ten one-second buckets, each
//! an atomic tagged with its second (a bucket from an older second is
//! reset by the first writer of the new one). A retry is allowed while the
//! retries in the last ten seconds stay under `budget_percent` of the
//! requests, or under the floor of `min_retries_per_sec` × 10 (so a quiet
//! cluster can still retry). Two workers may pass the check at the same
//! instant: the overshoot is at most one retry per worker.

use std::sync::atomic::{AtomicU64, Ordering};

use ringlog::Reason;

use super::FailureOn;

/// Seconds the budget looks back over.
const WINDOW_S: u64 = 10;

/// Longest wait before a retry: the backoff's cap, and the most of an
/// upstream's `Retry-After` that is honoured (a longer one is not retried).
pub const MAX_WAIT_NS: u64 = 1_000_000_000;

/// Counters of one cluster's retries, for `/metrics`.
#[derive(Debug, Default)]
pub struct RetryStats {
    /// Attempts after the first, sent.
    pub retries: AtomicU64,
    /// Retries the budget refused.
    pub budget_exhausted: AtomicU64,
}

/// Requests or retries per second over the last [`WINDOW_S`] seconds.
#[derive(Debug, Default)]
struct Window {
    /// `second << 32 | count`, one per second modulo the window.
    buckets: [AtomicU64; WINDOW_S as usize],
}

impl Window {
    fn add(&self, now: u64) {
        let sec = now / 1_000_000_000;
        let b = &self.buckets[(sec % WINDOW_S) as usize];
        let mut cur = b.load(Ordering::Relaxed);
        loop {
            let next = if cur >> 32 == sec & 0xffff_ffff {
                cur + 1
            } else {
                (sec & 0xffff_ffff) << 32 | 1
            };
            match b.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    fn sum(&self, now: u64) -> u64 {
        let sec = now / 1_000_000_000;
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .filter(|w| sec.wrapping_sub(w >> 32) < WINDOW_S)
            .map(|w| w & 0xffff_ffff)
            .sum()
    }
}

/// A cluster's retry policy and budget, shared by every worker.
#[derive(Debug)]
pub struct RetryPolicy {
    /// Attempts after the first (at most).
    pub attempts: u32,
    on: FailureOn,
    /// Per-attempt limit on the wait for the response head, ns (None: the
    /// cluster's `timeouts.read` only).
    pub per_try_ns: Option<u64>,
    backoff_ns: u64,
    budget_percent: u64,
    min_per_sec: u64,
    requests: Window,
    retries: Window,
    /// Counters for `/metrics`.
    pub stats: RetryStats,
}

impl RetryPolicy {
    /// A policy retrying what `on` names, `attempts` times at most, waiting
    /// `backoff_ns` doubled per attempt (jittered, capped at
    /// [`MAX_WAIT_NS`]), within the budget.
    pub fn new(
        attempts: u32,
        on: FailureOn,
        per_try_ns: Option<u64>,
        backoff_ns: u64,
        budget_percent: u32,
        min_per_sec: u32,
    ) -> RetryPolicy {
        RetryPolicy {
            attempts,
            on,
            per_try_ns,
            backoff_ns,
            budget_percent: u64::from(budget_percent),
            min_per_sec: u64::from(min_per_sec),
            requests: Window::default(),
            retries: Window::default(),
            stats: RetryStats::default(),
        }
    }

    /// A request to the cluster started (it earns budget).
    pub fn request(&self, now: u64) {
        self.requests.add(now);
    }

    /// Whether this ending is one the policy retries.
    pub fn retries_on(&self, status: u16, reason: Reason) -> bool {
        self.on.classify(status, reason) == Some(super::breaker::Outcome::Failure)
    }

    /// Takes one retry from the budget at `now`, or says no (counted).
    pub fn take_budget(&self, now: u64) -> bool {
        let retries = self.retries.sum(now);
        let allowed =
            (self.requests.sum(now) * self.budget_percent / 100).max(self.min_per_sec * WINDOW_S);
        if retries >= allowed {
            self.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.retries.add(now);
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The wait before retry number `n` (1 for the first): the backoff
    /// doubled per retry, from half to all of it by `rand`, at most
    /// [`MAX_WAIT_NS`].
    pub fn backoff(&self, n: u32, rand: u64) -> u64 {
        let full = self
            .backoff_ns
            .saturating_mul(1 << n.saturating_sub(1).min(20))
            .min(MAX_WAIT_NS);
        let frac = 0.5 + 0.5 * ((rand & 0xffff) as f64 / 65536.0);
        (full as f64 * frac) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn policy(percent: u32, floor: u32) -> RetryPolicy {
        let on = FailureOn::parse(&["connect_failure".into(), "503".into()]).unwrap();
        RetryPolicy::new(2, on, None, 25_000_000, percent, floor)
    }

    #[test]
    fn the_list_says_what_is_retried() {
        let p = policy(20, 1);
        assert!(p.retries_on(503, Reason::UpstreamConnect));
        assert!(p.retries_on(503, Reason::None));
        assert!(!p.retries_on(500, Reason::None));
        assert!(!p.retries_on(504, Reason::UpstreamTimeout));
        assert!(!p.retries_on(0, Reason::DownstreamReset));
    }

    #[test]
    fn a_failure_storm_retries_within_the_budget() {
        // 100% of 1000 rps fail for 30 s; every failure asks to retry.
        let p = policy(20, 1);
        let mut now = 100 * SEC;
        let (mut asked, mut got) = (0u64, 0u64);
        let mut window_peak = 0.0f64;
        for second in 0..30 {
            let mut this_second = 0u64;
            for _ in 0..1000 {
                now += SEC / 1000;
                p.request(now);
                asked += 1;
                if p.take_budget(now) {
                    got += 1;
                    this_second += 1;
                }
            }
            if second >= 10 {
                window_peak = window_peak.max(this_second as f64 / 1000.0);
            }
        }
        let share = got as f64 / asked as f64;
        assert!(share <= 0.20 + 1e-9, "retries were {share:.3} of requests");
        assert!(share > 0.15, "the budget is used, not starved: {share:.3}");
        assert_eq!(p.stats.retries.load(Ordering::Relaxed), got);
        assert_eq!(
            p.stats.budget_exhausted.load(Ordering::Relaxed),
            asked - got
        );
        // Over any ten seconds retries stay within 20% (plus the floor).
        let retries = p.retries.sum(now);
        let requests = p.requests.sum(now);
        assert!(retries <= requests / 5 + 10, "{retries} of {requests}");
        assert!(window_peak <= 1.0);
    }

    #[test]
    fn a_quiet_cluster_still_gets_the_floor() {
        let p = policy(20, 2);
        let now = 50 * SEC;
        // Two requests earn no whole retry; the floor allows 20 in 10 s.
        p.request(now);
        p.request(now);
        let got = (0..30).filter(|_| p.take_budget(now)).count();
        assert_eq!(got, 20);
        // Ten seconds later the window has moved on.
        assert!(p.take_budget(now + 10 * SEC));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = policy(20, 1);
        let ms = 1_000_000;
        let top = p.backoff(1, 0xffff);
        assert!(top > 24 * ms && top <= 25 * ms, "{top}");
        assert_eq!(p.backoff(1, 0), 25 * ms / 2);
        assert_eq!(p.backoff(2, 0), 25 * ms);
        assert_eq!(p.backoff(3, 0), 50 * ms);
        assert!(p.backoff(30, 0xffff) <= MAX_WAIT_NS);
        assert_eq!(p.backoff(30, 0), MAX_WAIT_NS / 2);
    }
}
