//! Proves the write path (sampler decision, counters, record and event
//! writes) performs no heap allocation, with a counting global allocator.
//! Only the test's own thread is counted: the harness's threads allocate
//! whenever they like (a CI run once saw 4 allocations from them).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringlog::{Event, EventKind, Record, RingWriter, Sampler, SamplerConfig, TypeRule};

struct Counting;

thread_local! {
    // Const-initialised and without a destructor: touching it never
    // allocates, so the allocator may use it.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// Counts one allocation made by the calling thread.
fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

/// Allocations the calling thread has made.
fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn writing_records_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = RingWriter::create(&dir.path().join("a.ring"), 1 << 20, 1).unwrap();
    let mut sw = w.shard(0).unwrap();
    let rule = TypeRule {
        p: 0.3,
        keep_errors: true,
        keep_slower_than_ns: Some(5_000_000),
        keep_above_quantile: Some(0.99),
    };
    let cfg = SamplerConfig {
        default: rule.clone(),
        types: vec![rule; 4],
        max_records_per_sec: 1000,
        max_forced_per_sec: 100,
    };
    let mut sampler = Sampler::new(&cfg, 0);

    let before = allocs();
    let mut kept = 0u64;
    for i in 0..200_000u64 {
        let now = i * 10_000;
        let ty = (i % 5) as u16;
        let d = sampler.decide(
            now,
            ty,
            ringlog::synth::mix(i),
            1_000_000 + i % 7_000_000,
            i % 31 == 0,
        );
        sw.count(ty, &d);
        if d.keep {
            kept += 1;
            let r = Record {
                start_ns: now,
                total_ns: 1000,
                sample_p: d.sample_p,
                keep: d.reason,
                ..Record::default()
            };
            sw.write(&r);
        }
        if i % 10_000 == 0 {
            sw.write_event(&Event::new(EventKind::RingFull, now));
            sw.set_sampler_level(sampler.level());
        }
    }
    let after = allocs();
    assert!(kept > 1000, "too few kept ({kept}) to prove anything");
    assert_eq!(after - before, 0, "the write path allocated");
}
