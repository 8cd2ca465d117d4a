//! Reader behaviour on the file system: clear errors for bad files,
//! read-only opening, name resolution across reloads, follow mode and
//! detection of a recreated file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::os::unix::fs::PermissionsExt;

use ringlog::{
    Event, EventKind, Follower, Item, NameKind, OpenError, Record, RingReader, RingWriter,
};

fn ring(dir: &std::path::Path) -> (std::path::PathBuf, RingWriter) {
    let p = dir.join("t.ring");
    let w = RingWriter::create(&p, 1 << 20, 2).unwrap();
    (p, w)
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = ring(dir.path());
    let good = std::fs::read(&p).unwrap();

    let write = |name: &str, bytes: &[u8]| {
        let q = dir.path().join(name);
        std::fs::write(&q, bytes).unwrap();
        q
    };
    let mut b = good.clone();
    b[0] = b'X';
    let e = RingReader::open(&write("magic", &b)).unwrap_err();
    assert!(matches!(e, OpenError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a tailmesh ring file"));

    let mut b = good.clone();
    b[8] = 9;
    let e = RingReader::open(&write("version", &b)).unwrap_err();
    assert!(
        matches!(e, OpenError::UnsupportedVersion { found: 9, .. }),
        "{e}"
    );

    let e = RingReader::open(&write("trunc", &good[..good.len() / 2])).unwrap_err();
    assert!(matches!(e, OpenError::Truncated { .. }), "{e}");
    let e = RingReader::open(&write("tiny", &good[..10])).unwrap_err();
    assert!(matches!(e, OpenError::Truncated { .. }), "{e}");

    let mut b = good.clone();
    b[24] = 3; // slots_per_shard not a power of two
    let e = RingReader::open(&write("slots", &b)).unwrap_err();
    assert!(e.to_string().contains("slots_per_shard"), "{e}");

    let e = RingReader::open(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(e, OpenError::Io { .. }), "{e}");
    assert!(e.to_string().contains("missing"));
}

#[test]
fn opens_read_only_and_resolves_names_across_generations() {
    let dir = tempfile::tempdir().unwrap();
    let (p, w) = ring(dir.path());
    let r1 = w.intern(NameKind::Route, "orders", 1).unwrap();
    let e1 = w.intern(NameKind::Endpoint, "10.0.0.1:8080", 1).unwrap();
    w.name_worker(0, "worker-0").unwrap();
    let mut sw = w.shard(0).unwrap();
    sw.write(&Record {
        route: r1,
        endpoint: e1,
        generation: 1,
        ..Record::default()
    });
    // Reload: generation 2 adds a route; the old ids keep their names.
    let r2 = w.intern(NameKind::Route, "payments", 2).unwrap();
    assert_eq!(w.intern(NameKind::Route, "orders", 2).unwrap(), r1);
    sw.write(&Record {
        route: r2,
        generation: 2,
        ..Record::default()
    });

    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
    let r = RingReader::open(&p).unwrap();
    let names = r.view().names();
    assert_eq!(names.get(NameKind::Route, u32::from(r1)), Some("orders"));
    assert_eq!(names.get(NameKind::Route, u32::from(r2)), Some("payments"));
    assert_eq!(
        names.get(NameKind::Endpoint, u32::from(e1)),
        Some("10.0.0.1:8080")
    );
    assert_eq!(names.display(NameKind::Worker, 0), "worker-0");
    assert_eq!(names.display(NameKind::Cluster, 0), "-");
    let got: Vec<_> = r.view().snapshot().collect();
    assert_eq!(got.len(), 2);
}

#[test]
fn follower_sees_new_entries_in_order_and_counts_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (p, w) = ring(dir.path());
    let slots = w.layout().slots_per_shard;
    let r = RingReader::open(&p).unwrap();
    let view = r.view();
    let mut f = Follower::from_end(&view);
    let mut s0 = w.shard(0).unwrap();
    let mut s1 = w.shard(1).unwrap();
    for i in 0..10u64 {
        let rec = Record {
            start_ns: 1000 * i,
            total_ns: 10,
            ..Record::default()
        };
        if i % 2 == 0 {
            s0.write(&rec)
        } else {
            s1.write(&rec)
        };
    }
    s1.write_event(&Event::new(EventKind::ConfigApplied, 5_500));
    let mut out = Vec::new();
    assert_eq!(f.poll(&view, &mut out, u64::MAX), 11);
    let keys: Vec<u64> = out.iter().map(|e| e.item.time_key()).collect();
    assert!(
        keys.windows(2).all(|k| k[0] <= k[1]),
        "not in time order: {keys:?}"
    );
    assert!(
        out.iter()
            .any(|e| matches!(e.item, Item::Event(ev) if ev.kind == EventKind::ConfigApplied))
    );

    // Lap the follower: it reports exactly what it missed.
    for i in 0..(slots + 5) {
        s0.write(&Record {
            start_ns: i,
            ..Record::default()
        });
    }
    out.clear();
    f.poll(&view, &mut out, u64::MAX);
    assert_eq!(f.lost, 5);
    assert_eq!(out.len() as u64, slots);
}

#[test]
fn recreated_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (p, w) = ring(dir.path());
    let r = RingReader::open(&p).unwrap();
    assert!(!r.is_replaced());
    drop(w);
    let _w2 = RingWriter::create(&p, 1 << 20, 2).unwrap();
    assert!(r.is_replaced());
    let r2 = RingReader::open(&p).unwrap();
    assert_ne!(r2.header().instance, r.header().instance);
}

#[test]
fn follower_does_not_stall_on_a_slot_left_in_progress() {
    // A writer killed while overwriting the oldest slot leaves it odd
    // forever; the follower must count it lost and keep going.
    let dir = tempfile::tempdir().unwrap();
    let (p, w) = ring(dir.path());
    let slots = w.layout().slots_per_shard;
    let mut s0 = w.shard(0).unwrap();
    for i in 0..slots {
        s0.write(&Record {
            start_ns: i,
            ..Record::default()
        });
    }
    // Simulate the crash: mark ticket 0's slot as being rewritten (ticket
    // `slots`) directly in the file.
    let layout = w.layout();
    let off = layout.slots_offset() as usize;
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[off..off + 8].copy_from_slice(&(2 * slots + 1).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let r = RingReader::open(&p).unwrap();
    let view = r.view();
    let mut f = Follower::from_start(&view);
    let mut out = Vec::new();
    f.poll(&view, &mut out, u64::MAX);
    assert_eq!(f.lost, 1);
    assert_eq!(out.len() as u64, slots - 1);
}

#[test]
fn unordered_parts_visit_every_slot_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (p, w) = ring(dir.path());
    // Uneven shards, and shard 0 wraps (1 MiB holds fewer slots than this).
    let mut s0 = w.shard(0).unwrap();
    for i in 0..20_000u64 {
        s0.write(&Record {
            start_ns: i,
            ..Record::default()
        });
    }
    let mut s1 = w.shard(1).unwrap();
    for i in 0..7u64 {
        s1.write(&Record {
            start_ns: 1_000_000 + i,
            ..Record::default()
        });
    }
    let r = RingReader::open(&p).unwrap();
    let v = r.view();
    let mut whole = Vec::new();
    v.for_each_unordered(|e| whole.push((e.shard, e.ticket)));
    assert!(whole.len() < 20_007, "shard 0 should have wrapped");
    for parts in [1, 2, 3, 8, 64] {
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        for part in 0..parts + 1 {
            let before = got.len();
            v.for_each_unordered_part(part, parts, |e| got.push((e.shard, e.ticket)));
            sizes.push(got.len() - before);
        }
        got.sort_unstable();
        let mut want = whole.clone();
        want.sort_unstable();
        assert_eq!(got, want, "{parts} parts");
        // Even: no part more than one block per shard above another, and
        // the part past the end is empty.
        let (lo, hi) = (sizes[..parts].iter().min(), sizes[..parts].iter().max());
        let block = ringlog::reader::PART_BLOCK as usize;
        assert!(
            hi.unwrap() - lo.unwrap() <= 2 * block,
            "{parts} parts: {sizes:?}"
        );
        assert_eq!(sizes[parts], 0);
    }
}
