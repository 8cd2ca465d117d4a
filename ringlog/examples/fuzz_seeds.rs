//! Writes the seed corpus for the `reader_bytes` fuzz target:
//! `cargo run -p ringlog --example fuzz_seeds -- ringlog/fuzz/corpus/reader_bytes`.
//! One small valid ring (records, events, names, counters, a wrap) and
//! variants broken in each header field and slot state the reader checks.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;

use ringlog::format::{hdr, meta};
use ringlog::{CreateOptions, Item, NameKind, RingWriter, Sampler, SamplerConfig, TypeRule, synth};

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ringlog/fuzz/corpus/reader_bytes".into());
    let out = Path::new(&out);
    std::fs::create_dir_all(out)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("seed.ring");
    let opts = CreateOptions {
        size: 8192,
        shards: 2,
        name_capacity: 6,
        type_slots: 2,
        user_tag: 7,
    };
    let w = RingWriter::create_with(&path, &opts)?;
    w.intern(NameKind::Route, "orders", 1)?;
    w.intern(NameKind::Endpoint, "10.0.0.1:8080", 1)?;
    w.intern(NameKind::RequestType, "market", 1)?;
    w.name_worker(0, "worker-0")?;
    let slots = w.layout().slots_per_shard;
    let mut sampler = Sampler::new(
        &SamplerConfig {
            default: TypeRule::rate(0.5),
            types: vec![],
            max_records_per_sec: 0,
            max_forced_per_sec: 0,
        },
        0,
    );
    for s in 0..2 {
        let mut sw = w.shard(s)?;
        // Shard 0 wraps; shard 1 is half full.
        let n = if s == 0 { slots + slots / 2 } else { slots / 2 };
        for t in 0..n {
            let d = sampler.decide(t, 1, synth::mix(t), 1000, false);
            sw.count(1, &d);
            match synth::item(7, s, t) {
                Item::Record(r) => sw.write(&r),
                Item::Event(e) => sw.write_event(&e),
            };
        }
    }
    let good = std::fs::read(&path)?;
    let layout = w.layout();
    let put = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes);
    let set = |b: &mut Vec<u8>, word: usize, v: u64| {
        b[word * 8..word * 8 + 8].copy_from_slice(&v.to_le_bytes())
    };
    put("valid", &good)?;
    let variants: Vec<(&str, usize, u64)> = vec![
        ("bad_magic", hdr::MAGIC, 0),
        ("version_2", hdr::VERSION_RECSIZE, 2 | 64 << 32),
        ("record_size_32", hdr::VERSION_RECSIZE, 1 | 32 << 32),
        ("zero_shards", hdr::SHARDS_TYPES, 2 << 32),
        ("many_shards", hdr::SHARDS_TYPES, 5000 | 2 << 32),
        ("slots_not_pow2", hdr::SLOTS_PER_SHARD, 3),
        ("slots_huge", hdr::SLOTS_PER_SHARD, 1 << 60),
        ("names_offset_off", hdr::NAMES_OFFSET, 8),
        ("file_size_big", hdr::FILE_SIZE, u64::MAX),
        ("not_ready", hdr::STATE, 0),
        ("head_huge", layout.meta_word(0) + meta::HEAD, u64::MAX),
        ("head_behind", layout.meta_word(0) + meta::HEAD, 1),
        ("seq_odd", layout.slots_word(1), 7),
        ("seq_wrong_slot", layout.slots_word(1) + 8, 2),
        (
            "name_bad_len",
            layout.name_word(0),
            0xA5 << 56 | 1 << 48 | 0xffff << 32 | 1,
        ),
        (
            "name_bad_kind",
            layout.name_word(1),
            0xA5 << 56 | 99 << 48 | 1 << 32 | 1,
        ),
    ];
    for (name, word, v) in variants {
        let mut b = good.clone();
        set(&mut b, word, v);
        put(name, &b)?;
    }
    put("truncated", &good[..good.len() / 2])?;
    put("header_only", &good[..256])?;
    put("empty", &[])?;
    put("odd_length", &good[..good.len() - 3])?;
    println!(
        "wrote {} seeds to {}",
        std::fs::read_dir(out)?.count(),
        out.display()
    );
    Ok(())
}
