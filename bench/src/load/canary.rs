//! The host's own stalls during a load, measured beside it.
//!
//! On a shared machine (a VM, a CI runner) the whole host sometimes stops
//! for milliseconds: every process, the server under test and the
//! generator alike. The open-loop latency then rises for reasons that
//! belong to neither. On each CPU (up to [`MAX_CPUS`]) a thread pinned
//! there, at the highest priority it may take, sleeps 1 ms at a time and
//! notes how late it woke; a wake-up [`LATE_NS`] or more late means that
//! CPU did not run it, which at that priority only a stop of the host's
//! CPU explains. The result is reported beside the latencies, never
//! subtracted from them.

use std::time::{Duration, Instant};

/// A wake-up this late is a host stall.
pub const LATE_NS: u64 = 5_000_000;
/// The canary's sleep.
const NAP: Duration = Duration::from_millis(1);
/// CPUs watched at most.
pub const MAX_CPUS: usize = 8;

/// What the canary saw.
#[derive(Debug, Clone, Default)]
pub struct Stalls {
    /// Wake-ups at least [`LATE_NS`] late.
    pub count: u64,
    /// The latest wake-up's lateness (ns), stall or not.
    pub max_ns: u64,
    /// Per timeline bucket: the largest lateness (ns) that began in it.
    pub by_bucket: Vec<u64>,
}

impl Stalls {
    /// Both CPUs' findings as one: the worse of each bucket.
    fn merge(&mut self, o: &Stalls) {
        self.count += o.count;
        self.max_ns = self.max_ns.max(o.max_ns);
        if self.by_bucket.len() < o.by_bucket.len() {
            self.by_bucket.resize(o.by_bucket.len(), 0);
        }
        for (a, b) in self.by_bucket.iter_mut().zip(&o.by_bucket) {
            *a = (*a).max(*b);
        }
    }
}

/// Watches every CPU from `start` to `end`, bucketing by `step`.
pub fn spawn(start: Instant, end: Instant, step: Duration) -> std::thread::JoinHandle<Stalls> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_CPUS));
    let each: Vec<_> = (0..cpus).map(|cpu| one(cpu, start, end, step)).collect();
    std::thread::spawn(move || {
        let mut all = Stalls::default();
        for h in each {
            if let Ok(s) = h.join() {
                all.merge(&s);
            }
        }
        all
    })
}

/// One canary on `cpu` (unpinned if pinning fails).
fn one(
    cpu: usize,
    start: Instant,
    end: Instant,
    step: Duration,
) -> std::thread::JoinHandle<Stalls> {
    std::thread::spawn(move || {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        let _ = rustix::thread::sched_setaffinity(None, &set);
        // Highest priority it may take: -20 as root, else its own.
        let _ = rustix::process::setpriority_process(None, -20);
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
        if let Some(wait) = start.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let step_ns = step.as_nanos().max(1);
        let mut out = Stalls::default();
        loop {
            let t0 = Instant::now();
            if t0 >= end {
                return out;
            }
            std::thread::sleep(NAP);
            let late = t0.elapsed().saturating_sub(NAP);
            let late_ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
            out.max_ns = out.max_ns.max(late_ns);
            if late_ns >= LATE_NS {
                out.count += 1;
            }
            let i = usize::try_from(t0.saturating_duration_since(start).as_nanos() / step_ns)
                .unwrap_or(usize::MAX);
            if i < 100_000 {
                if out.by_bucket.len() <= i {
                    out.by_bucket.resize(i + 1, 0);
                }
                out.by_bucket[i] = out.by_bucket[i].max(late_ns);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_reports_its_buckets_and_a_lateness() {
        let start = Instant::now();
        let h = spawn(
            start,
            start + Duration::from_millis(50),
            Duration::from_millis(10),
        );
        let s = h.join().unwrap();
        assert!(!s.by_bucket.is_empty() && s.by_bucket.len() <= 6);
        assert!(s.by_bucket.iter().all(|&b| b <= s.max_ns));
    }
}
