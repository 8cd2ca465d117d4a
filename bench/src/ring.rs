//! `tailmesh-bench ring`: recorder throughput and crash consistency.
//!
//! Write mode fills a ring with synthetic records whose every field derives
//! from (seed, shard, ticket), the seed stored in the header's user tag.
//! Verify mode re-derives each accepted record and counts mismatches, so any
//! torn or corrupted record is caught by content.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ringlog::units::{parse_duration_ns, parse_size};
use ringlog::{CreateOptions, Item, NameKind, RingReader, RingWriter, synth};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Writer threads (one shard each).
    #[arg(long, default_value_t = 1)]
    writers: u32,
    /// How long to write, e.g. 5s or 500ms (a bare number means seconds).
    #[arg(long, default_value = "5s")]
    seconds: String,
    /// Ring file to create (write mode).
    #[arg(long, required_unless_present = "verify")]
    file: Option<PathBuf>,
    /// Ring size upper bound, e.g. 64MiB.
    #[arg(long, default_value = "64MiB")]
    size: String,
    /// Seed for the synthetic content (default: derived from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many records per writer.
    #[arg(long, default_value_t = u64::MAX)]
    max_records: u64,
    /// Verify this file instead of writing.
    #[arg(long, conflicts_with = "file")]
    verify: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.verify {
        Some(path) => verify(path, args.json),
        None => write(args),
    }
}

fn write(args: &Args) -> Result<ExitCode> {
    let Some(path) = &args.file else {
        bail!("--file is required to write")
    };
    if args.writers == 0 {
        bail!("--writers must be at least 1");
    }
    let secs = if args.seconds.chars().all(|c| c.is_ascii_digit() || c == '.') {
        format!("{}s", args.seconds)
    } else {
        args.seconds.clone()
    };
    let duration = Duration::from_nanos(parse_duration_ns(&secs)?);
    let size = parse_size(&args.size)?;
    let seed = args
        .seed
        .unwrap_or_else(|| synth::mix(ringlog::clock::realtime_ns()));
    let opts = CreateOptions {
        user_tag: seed,
        ..CreateOptions::new(size, args.writers)
    };
    let ring = RingWriter::create_with(path, &opts)?;
    for i in 0..16u32 {
        ring.intern(NameKind::Route, &format!("route-{i}"), 0)?;
    }
    for s in 0..args.writers {
        ring.name_worker(s, &format!("bench-{s}"))?;
    }
    let max = args.max_records;
    let start = Instant::now();
    let handles = (0..args.writers)
        .map(|s| {
            let mut w = ring.shard(s)?;
            Ok(std::thread::spawn(move || {
                let t0 = Instant::now();
                'outer: while t0.elapsed() < duration {
                    for _ in 0..4096 {
                        let t = w.next_ticket();
                        if t >= max {
                            break 'outer;
                        }
                        match synth::item(seed, s, t) {
                            Item::Record(r) => w.write(&r),
                            Item::Event(e) => w.write_event(&e),
                        };
                    }
                }
                (w.next_ticket(), t0.elapsed())
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut records = 0u64;
    let mut busy = Duration::ZERO;
    for h in handles {
        let (n, t) = h
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
        records += n;
        busy += t;
    }
    let wall = start.elapsed().as_secs_f64();
    let ns_per_record = busy.as_nanos() as f64 / records.max(1) as f64;
    let report = json!({
        "file": path.display().to_string(),
        "writers": args.writers,
        "seed": seed,
        "slots_per_shard": ring.layout().slots_per_shard,
        "seconds": wall,
        "records": records,
        "ns_per_record": ns_per_record,
        "records_per_sec": records as f64 / wall,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{records} records by {} writer(s) in {wall:.2}s: {ns_per_record:.1} ns/record per writer, {:.1} M records/s",
            args.writers,
            records as f64 / wall / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(path: &std::path::Path, as_json: bool) -> Result<ExitCode> {
    let reader = RingReader::open(path).with_context(|| format!("verifying {}", path.display()))?;
    let v = synth::verify(&reader.view());
    let report = json!({
        "file": path.display().to_string(),
        "valid": v.valid,
        "corrupt": v.corrupt,
        "torn_skipped": v.torn_skipped,
        "lost": v.lost,
        "skips": {
            "empty": v.skips.empty,
            "in_progress": v.skips.in_progress,
            "torn": v.skips.torn,
            "overwritten": v.skips.overwritten,
            "stale": v.skips.stale,
            "corrupt": v.skips.corrupt,
        },
    });
    if as_json {
        println!("{report}");
    } else {
        println!(
            "valid {} corrupt {} torn_skipped {} lost {}",
            v.valid, v.corrupt, v.torn_skipped, v.lost
        );
    }
    Ok(if v.corrupt > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
