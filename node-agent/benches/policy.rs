//! Policy decision costs: a rate-limit check uncontended and with two
//! threads on one key, a keyed check (table lookup included), and a breaker
//! admission (closed: the lock-free path) with its release.
//! Run: `cargo bench -p node-agent --bench policy`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failure report

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use node_agent::policy::FailureOn;
use node_agent::policy::breaker::{Breaker, Params};
use node_agent::policy::ratelimit::{Gcra, KeyTable};

/// A limit that is never reached at the bench's request rate.
fn open_limit() -> Gcra {
    Gcra::new(1e9, 1_000_000, false, 0)
}

fn rate_limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit");
    let gcra = open_limit();
    let tat = AtomicU64::new(0);
    let mut now = 1_000_000_000u64;
    g.bench_function("check_uncontended", |b| {
        b.iter(|| {
            now += 10;
            black_box(gcra.check(&tat, black_box(now)))
        })
    });
    let table = KeyTable::new(65_536);
    let mut k = 0u64;
    g.bench_function("check_keyed_1k_keys", |b| {
        b.iter(|| {
            now += 10;
            k = (k + 0x9e37_79b9_7f4a_7c15) % (1024 << 20);
            let bucket = table.bucket(black_box(k >> 20).wrapping_mul(0xff51_afd7_ed55_8ccd), now);
            black_box(gcra.check(bucket, now))
        })
    });
    // Two threads on one key: each op's time is the elapsed time of both
    // threads running `iters` checks at once, divided by `iters`. A fresh
    // bucket per sample: a bucket left far ahead by the last sample would
    // turn every check into a rejection that never writes.
    g.bench_function("check_2_threads_one_key", |b| {
        b.iter_custom(|iters| {
            let shared = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2u64 {
                    let tat = shared.clone();
                    s.spawn(move || {
                        let gcra = open_limit();
                        let mut now = 1_000_000_000 + t;
                        for _ in 0..iters {
                            now += 10;
                            black_box(gcra.check(&tat, now));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

fn breaker(c: &mut Criterion) {
    let b = Arc::new(Breaker::new(
        Params {
            consecutive_failures: 5,
            error_rate: 0.5,
            min_requests: 20,
            window_ns: 10_000_000_000,
            open_for_ns: 30_000_000_000,
            half_open_probes: 3,
        },
        1024,
        1024,
        FailureOn::default(),
    ));
    let mut g = c.benchmark_group("breaker");
    let mut now = 1_000_000_000u64;
    g.bench_function("admit_closed_and_release", |bn| {
        bn.iter(|| {
            now += 10;
            let (pass, _) = b.admit(black_box(now));
            drop(black_box(pass));
        })
    });
    g.bench_function("state_check", |bn| bn.iter(|| black_box(b.state())));
    g.bench_function("admit_and_record_success", |bn| {
        bn.iter(|| {
            now += 10;
            if let (Ok(p), _) = b.admit(now) {
                black_box(p.end(now, 200, ringlog::Reason::None, 0));
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = rate_limit, breaker
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
