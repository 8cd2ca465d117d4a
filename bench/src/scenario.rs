//! `tailmesh-bench scenario`: writes a ring file of synthetic mesh traffic
//! with a known culprit (`ringlog::scenario`), for trying `ringlog why` and
//! `report` by hand and for the analysis benchmarks (a 1 GiB ring holds
//! ~16 M records).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ringlog::scenario::{Culprit, Scenario};
use ringlog::units::parse_size;
use ringlog::{RingReader, RingWriter};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ring file to create (replaced if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Ring size, e.g. 64MiB or 1GiB.
    #[arg(long, default_value = "64MiB")]
    size: String,
    /// Culprit kind: route, endpoint, type, arm, worker, phase or none.
    #[arg(long, default_value = "endpoint")]
    culprit: String,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Requests per second before sampling (about half are kept).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seconds of traffic (the fault starts 62-80 s in; keep it >= 90).
    #[arg(long, default_value_t = 90)]
    seconds: u64,
}

fn culprit(s: &str) -> Result<Option<Culprit>> {
    if s == "none" {
        return Ok(None);
    }
    // Each kind is named by the dimension that should find it.
    match Culprit::ALL.into_iter().find(|c| c.dim().name() == s) {
        Some(c) => Ok(Some(c)),
        None => bail!("--culprit {s}: route, endpoint, type, arm, worker, phase, policy or none"),
    }
}

pub fn run(a: &Args) -> Result<()> {
    if a.seconds < 90 {
        bail!(
            "--seconds {}: at least 90 (the fault starts up to 80 s in)",
            a.seconds
        );
    }
    let mut sc = Scenario::random(a.seed, culprit(&a.culprit)?);
    sc.rate = a.rate.max(1);
    sc.seconds = a.seconds;
    let size = parse_size(&a.size).context("--size")?;
    let _ = std::fs::remove_file(&a.out);
    let t0 = Instant::now();
    let truth = {
        let w = RingWriter::create(&a.out, size, sc.workers)
            .with_context(|| format!("creating {}", a.out.display()))?;
        sc.write(&w)?
    };
    let secs = t0.elapsed().as_secs_f64();
    let reader = RingReader::open(&a.out)?;
    let view = reader.view();
    let (written, overwritten) = (0..view.shards())
        .map(|s| view.shard_stats(s))
        .fold((0, 0), |(w, o), st| {
            (w + st.head - st.events, o + st.overwritten)
        });
    println!(
        "{}",
        json!({
            "file": a.out.display().to_string(),
            "records": written - overwritten,
            "overwritten": overwritten,
            "seconds_to_write": secs,
            "fault": sc.fault.map(|f| json!({
                "culprit": format!("{:?}", f.culprit), "share": f.share,
                "affected": f.affected, "start_s": f.start_s, "len_s": f.len_s })),
            "truth": truth.map(|t| json!({ "dim": t.dim.name(), "value": t.value,
                "from_mono_ns": t.from_ns, "to_mono_ns": t.to_ns })),
        })
    );
    Ok(())
}
