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

use crate::select::Select;
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
    /// Present when --since, --until or --where narrowed the view.
    #[serde(skip_serializing_if = "Option::is_none")]
    selected: Option<Selected>,
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

/// Earliest and latest time seen (monotonic ns).
#[derive(Debug, Clone, Copy)]
struct Bounds {
    lo: u64,
    hi: u64,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            lo: u64::MAX,
            hi: 0,
        }
    }
}

impl Bounds {
    fn add(&mut self, from: u64, to: u64) {
        self.lo = self.lo.min(from);
        self.hi = self.hi.max(to);
    }
    fn span(self, h: &ringlog::Header) -> Option<Span> {
        (self.lo <= self.hi).then(|| Span {
            from: rfc3339(h.wall_ns(self.lo)),
            to: rfc3339(h.wall_ns(self.hi)),
            seconds: (self.hi - self.lo) as f64 / 1e9,
        })
    }
}

/// What `--since/--until/--where` keep.
#[derive(Debug, Serialize, Default)]
struct Selected {
    records: u64,
    /// Requests the records stand for (sum of weights).
    requests: f64,
    /// Of those, errors (status >= 500 or a local error).
    errors: f64,
    events: u64,
    span: Option<Span>,
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

pub fn run(path: &Path, json: bool, sel: &Select) -> Result<()> {
    let reader = RingReader::open(path)?;
    let view = reader.view();
    let h = *view.header();
    let names = view.names();
    let narrowed = sel.since.is_some() || sel.until.is_some() || sel.filter.is_some();
    let selection = if narrowed {
        Some(sel.resolve(&view, &names)?)
    } else {
        None
    };

    let (mut records, mut events) = (0u64, 0u64);
    let mut all = Bounds::default();
    let mut chosen = Selected::default();
    let mut chosen_bounds = Bounds::default();
    // Counting needs no time order: a straight read of each shard.
    let skips: SkipStats = view.for_each_unordered(|e| match &e.item {
        Item::Record(r) => {
            records += 1;
            all.add(r.start_ns, r.end_ns());
            if let Some(s) = &selection
                && s.keep(r, e.shard)
            {
                chosen.records += 1;
                let w = r.weight();
                chosen.requests += w;
                if r.status >= 500 || r.flags.has(ringlog::record::Flags::ERROR) {
                    chosen.errors += w;
                }
                chosen_bounds.add(r.start_ns, r.end_ns());
            }
        }
        Item::Event(ev) => {
            events += 1;
            all.add(ev.time_ns, ev.time_ns);
            if let Some(s) = &selection
                && s.keep_event(ev)
            {
                chosen.events += 1;
                chosen_bounds.add(ev.time_ns, ev.time_ns);
            }
        }
    });
    let span = all.span(&h);
    let selected = selection.map(|_| Selected {
        span: chosen_bounds.span(&h),
        ..chosen
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
        selected,
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
    if let Some(x) = &s.selected {
        let when = match &x.span {
            Some(sp) => format!("{} .. {}", sp.from, sp.to),
            None => "nothing".into(),
        };
        println!(
            "selected  {} records ({:.0} requests, {:.0} errors) + {} events: {when}",
            x.records, x.requests, x.errors, x.events
        );
    }
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
