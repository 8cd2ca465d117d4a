//! Crash consistency: a writer process is SIGKILLed at pseudo-random moments
//! (50 times, bounded). After each kill the file must verify with 0 corrupt
//! records, and every committed record in the ring window must be readable:
//! at most the one slot per shard that was being overwritten may be skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringlog::{RingReader, SlotRead, synth};

const BIN: &str = env!("CARGO_BIN_EXE_tailmesh-bench");

#[test]
fn sigkilled_writer_leaves_a_consistent_ring() {
    let dir = tempfile::tempdir().unwrap();
    let iterations = 50;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut with_data, mut before_file) = (0, 0);
    for i in 0..iterations {
        assert!(
            Instant::now() < deadline,
            "crash test exceeded its time bound"
        );
        let path = dir.path().join(format!("crash-{i}.ring"));
        let mut child = Command::new(BIN)
            .args([
                "ring",
                "--writers",
                "2",
                "--seconds",
                "30",
                "--size",
                "2MiB",
                "--seed",
            ])
            .arg(i.to_string())
            .arg("--file")
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // 1..=120 ms: sometimes during creation, mostly mid-write.
        let delay = 1 + synth::mix(i) % 120;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        if !path.exists() {
            before_file += 1; // killed before the atomic rename: nothing committed
            continue;
        }
        let reader = RingReader::open(&path).expect("a renamed-in ring always opens");
        let view = reader.view();
        assert_eq!(view.header().user_tag, i);
        let v = synth::verify(&view);
        assert_eq!(v.corrupt, 0, "iteration {i}: corrupt records {v:?}");
        for shard in 0..view.shards() {
            let (first, end) = view.range(shard);
            let st = view.shard_stats(shard);
            assert!(end >= st.head, "range end below the published head");
            let mut skipped = 0;
            for t in first..end {
                match view.read(shard, t) {
                    SlotRead::Item(got) => {
                        assert_eq!(got, synth::canonical(synth::item(i, shard, t)))
                    }
                    // The only slot that may be unreadable is the oldest one,
                    // which the killed writer had started to overwrite.
                    SlotRead::InProgress
                        if t == first && end >= view.header().layout.slots_per_shard =>
                    {
                        skipped += 1
                    }
                    other => panic!(
                        "iteration {i} shard {shard} ticket {t} of {first}..{end}: {other:?}"
                    ),
                }
            }
            assert!(skipped <= 1);
        }
        if v.valid > 0 {
            with_data += 1;
        }
        // The CLI verifier agrees and exits 0.
        let out = Command::new(BIN)
            .args(["ring", "--json", "--verify"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "verify failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["corrupt"], 0);
        assert_eq!(j["valid"].as_u64(), Some(v.valid));
        std::fs::remove_file(&path).unwrap();
    }
    println!("{iterations} kills: {with_data} mid-write, {before_file} before the file existed");
    assert!(
        with_data >= iterations * 2 / 3,
        "too few kills landed mid-write ({with_data})"
    );
}
