//! `ringlog stat`: what the file is, who writes it, what time it covers,
//! how many records were kept, overwritten and skipped, and the sampler's
//! counters per request type.

use std::path::Path;

use anyhow::Result;
use ringlog::clock::rfc3339;
use ringlog::reader::TypeCounters;
use ringlog::units::{format_ns, format_size};
use ringlog::{Item, RingReader, SkipStats};
use serde::Serialize;

use crate::show::type_name;

#[derive(Debug, Serialize)]
struct Stat {
    path: String,
    version: u32,
    file_size: u64,
    instance: String,
    writer_pid: u64,
    writer_start: String,
    shards: u32,
    slots_per_shard: u64,
    record_size: u32,
    names_used: usize,
    name_capacity: u64,
    span: Option<Span>,
    records_in_ring: u64,
    events_in_ring: u64,
    written: u64,
    overwritten: u64,
    skipped: Skipped,
    per_shard: Vec<ShardRow>,
    sampler: Vec<TypeRow>,
}

#[derive(Debug, Serialize)]
struct Span {
    from: String,
    to: String,
    seconds: f64,
}

#[derive(Debug, Serialize)]
struct Skipped {
    empty: u64,
    in_progress: u64,
    torn: u64,
    overwritten_during_read: u64,
    stale: u64,
    corrupt: u64,
}

#[derive(Debug, Serialize)]
struct ShardRow {
    shard: u32,
    worker: String,
    head: u64,
    overwritten: u64,
    events: u64,
    sampler_level: u64,
}

#[derive(Debug, Serialize)]
struct TypeRow {
    request_type: String,
    counters: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    raw: TypeCounters,
}

pub fn run(path: &Path, json: bool) -> Result<()> {
    let reader = RingReader::open(path)?;
    let view = reader.view();
    let h = *view.header();
    let names = view.names();

    let (mut records, mut events) = (0u64, 0u64);
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    let mut snap = view.snapshot();
    for e in &mut snap {
        match e.item {
            Item::Record(r) => {
                records += 1;
                lo = lo.min(r.start_ns);
                hi = hi.max(r.end_ns());
            }
            Item::Event(ev) => {
                events += 1;
                lo = lo.min(ev.time_ns);
                hi = hi.max(ev.time_ns);
            }
        }
    }
    let skips: SkipStats = snap.skips();
    let span = (lo <= hi).then(|| Span {
        from: rfc3339(h.wall_ns(lo)),
        to: rfc3339(h.wall_ns(hi)),
        seconds: (hi - lo) as f64 / 1e9,
    });

    let mut per_shard = Vec::new();
    let mut totals = vec![TypeCounters::default(); h.layout.type_slots as usize];
    for s in 0..view.shards() {
        let st = view.shard_stats(s);
        for (t, c) in totals.iter_mut().zip(&st.types) {
            t.merge(c);
        }
        per_shard.push(ShardRow {
            shard: s,
            worker: names.display(ringlog::NameKind::Worker, s),
            head: st.head,
            overwritten: st.overwritten,
            events: st.events,
            sampler_level: st.sampler_level,
        });
    }
    let last = totals.len().saturating_sub(1);
    let sampler = totals
        .iter()
        .enumerate()
        .filter(|(_, c)| c.seen > 0)
        .map(|(t, c)| TypeRow {
            request_type: {
                let n = type_name(&names, t as u16);
                if t == last && t > 0 {
                    format!("{n} (and higher ids)")
                } else {
                    n
                }
            },
            counters: c
                .named()
                .iter()
                .map(|(k, v)| (k.to_string(), (*v).into()))
                .collect(),
            raw: *c,
        })
        .collect();

    let stat = Stat {
        path: path.display().to_string(),
        version: h.version,
        file_size: h.file_size,
        instance: format!("{:016x}", h.instance),
        writer_pid: h.writer_pid,
        writer_start: rfc3339(h.writer_start),
        shards: h.layout.shards,
        slots_per_shard: h.layout.slots_per_shard,
        record_size: ringlog::format::RECORD_SIZE,
        names_used: names.entries().len(),
        name_capacity: h.layout.name_capacity,
        span,
        records_in_ring: records,
        events_in_ring: events,
        written: per_shard
            .iter()
            .map(|s| s.head)
            .fold(0, u64::saturating_add),
        overwritten: per_shard
            .iter()
            .map(|s| s.overwritten)
            .fold(0, u64::saturating_add),
        skipped: Skipped {
            empty: skips.empty,
            in_progress: skips.in_progress,
            torn: skips.torn,
            overwritten_during_read: skips.overwritten,
            stale: skips.stale,
            corrupt: skips.corrupt,
        },
        per_shard,
        sampler,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&stat)?);
    } else {
        print_text(&stat);
    }
    Ok(())
}

fn print_text(s: &Stat) {
    println!(
        "ring      {}  (format v{}, {}, instance {})",
        s.path,
        s.version,
        format_size(s.file_size),
        s.instance
    );
    println!("writer    pid {}, started {}", s.writer_pid, s.writer_start);
    println!(
        "layout    {} shard(s) x {} slots x {} B; names {}/{}",
        s.shards, s.slots_per_shard, s.record_size, s.names_used, s.name_capacity
    );
    match &s.span {
        Some(sp) => println!(
            "span      {} .. {}  ({})",
            sp.from,
            sp.to,
            format_ns((sp.seconds * 1e9) as u64)
        ),
        None => println!("span      (empty)"),
    }
    println!(
        "entries   {} records + {} events in the ring; {} written, {} overwritten",
        s.records_in_ring, s.events_in_ring, s.written, s.overwritten
    );
    let k = &s.skipped;
    println!(
        "skipped   in_progress {}, torn {}, overwritten during read {}, stale {}, corrupt {}, empty {}",
        k.in_progress, k.torn, k.overwritten_during_read, k.stale, k.corrupt, k.empty
    );
    println!();
    println!(
        "{:>5}  {:<16} {:>12} {:>12} {:>8} {:>6}",
        "shard", "worker", "written", "overwritten", "events", "level"
    );
    for r in &s.per_shard {
        println!(
            "{:>5}  {:<16} {:>12} {:>12} {:>8} {:>6}",
            r.shard, r.worker, r.head, r.overwritten, r.events, r.sampler_level
        );
    }
    if s.sampler.is_empty() {
        println!("\nsampler   no decisions counted");
        return;
    }
    println!();
    print!("{:<20}", "request type");
    for n in TypeCounters::default().named().map(|(n, _)| n) {
        print!(" {n:>13}");
    }
    println!();
    for row in &s.sampler {
        print!("{:<20}", row.request_type);
        for (_, v) in row.raw.named() {
            print!(" {v:>13}");
        }
        println!();
    }
}
