//! Entry points shared by the cargo-fuzz targets (`ringlog/fuzz`) and the
//! regression test that replays their corpora under `cargo test`.

use std::sync::atomic::AtomicU64;

use crate::reader::{Follower, RingView};

/// Treats `data` as a ring file and exercises every read path: header
/// validation, the name table, shard counters, a merged snapshot, a
/// follower and the synthetic verifier. Must never panic, whatever the bytes.
/// Returns the number of accepted entries (for the regression test).
pub fn read_ring_bytes(data: &[u8]) -> usize {
    let words: Vec<AtomicU64> = data
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            AtomicU64::new(u64::from_le_bytes(b))
        })
        .collect();
    let Ok(view) = RingView::new(&words) else {
        return 0;
    };
    let names = view.names();
    let mut accepted = 0;
    for e in view.snapshot() {
        if let crate::record::Item::Record(r) = e.item {
            let _ = names.display(crate::names::NameKind::Route, u32::from(r.route));
            let _ = view.header().wall_ns(r.start_ns);
            let _ = r.weight();
        }
        accepted += 1;
    }
    let mut totals = crate::reader::TypeCounters::default();
    for s in 0..view.shards() {
        for t in &view.shard_stats(s).types {
            totals.merge(t);
            let _ = (t.kept(), t.dropped());
        }
    }
    let _ = (view.overwritten(), totals.named());
    let mut f = Follower::from_start(&view);
    let mut out = Vec::new();
    f.poll(&view, &mut out, 1 << 16);
    let _ = crate::synth::verify(&view);
    accepted
}
