//! Multi-writer stress with concurrent readers: every accepted slot must be
//! exactly the synthetic item for its (shard, ticket), checked by content.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringlog::synth;
use ringlog::{CreateOptions, Follower, RingReader, RingWriter};

#[test]
fn concurrent_writers_and_readers_accept_no_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stress.ring");
    let seed = 0x5eed_1234;
    // Small rings (256 slots per shard) so writers lap readers constantly.
    let opts = CreateOptions {
        user_tag: seed,
        name_capacity: 16,
        ..CreateOptions::new(64 << 10, 2)
    };
    let w = RingWriter::create_with(&path, &opts).unwrap();
    let slots = w.layout().slots_per_shard;
    assert_eq!(slots, 256);
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(2);
    const MAX_PER_WRITER: u64 = 20_000_000;

    let writers: Vec<_> = (0..2)
        .map(|s| {
            let mut sw = w.shard(s).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && sw.next_ticket() < MAX_PER_WRITER {
                    for _ in 0..1024 {
                        let t = sw.next_ticket();
                        match synth::item(seed, s, t) {
                            ringlog::Item::Record(r) => sw.write(&r),
                            ringlog::Item::Event(e) => sw.write_event(&e),
                        };
                    }
                }
                sw.next_ticket()
            })
        })
        .collect();

    let reader = {
        let path = path.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let r = RingReader::open(&path).unwrap();
            let view = r.view();
            let (mut accepted, mut skipped, mut mismatched) = (0u64, 0u64, 0u64);
            let mut follower = Follower::from_start(&view);
            let mut buf = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut snap = view.snapshot();
                for e in &mut snap {
                    accepted += 1;
                    if e.item != synth::canonical(synth::item(seed, e.shard, e.ticket)) {
                        mismatched += 1;
                    }
                }
                skipped += snap.skips().total();
                buf.clear();
                follower.poll(&view, &mut buf, 4096);
                for e in &buf {
                    accepted += 1;
                    if e.item != synth::canonical(synth::item(seed, e.shard, e.ticket)) {
                        mismatched += 1;
                    }
                }
            }
            (accepted, skipped, mismatched, follower.lost)
        })
    };

    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let written: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
    let (accepted, skipped, mismatched, lost) = reader.join().unwrap();
    println!(
        "written {written} accepted {accepted} skipped {skipped} lost {lost} mismatched {mismatched}"
    );
    assert_eq!(mismatched, 0, "accepted a torn or misplaced record");
    assert!(
        written > 100_000,
        "writers made too little progress: {written}"
    );
    assert!(accepted > 1_000, "reader accepted too little: {accepted}");
    assert!(
        skipped + lost > 0,
        "the reader was never lapped; the test is too weak"
    );

    // At rest everything in the window verifies.
    let r = RingReader::open(&path).unwrap();
    let v = synth::verify(&r.view());
    assert_eq!(v.corrupt, 0);
    assert_eq!(v.torn_skipped, 0);
    assert_eq!(v.valid, 2 * slots);
    assert_eq!(v.lost, written - 2 * slots);
}
