//! `ringlog report --out FILE.html`: one self-contained HTML page (inline
//! CSS and SVG; no script, no network, no external asset) that tells the
//! story of a ring: latency p50/p99/p99.9 per bucket with the spikes shaded,
//! request and error rates, each spike's attribution tables and verdict, and
//! the slowest requests.
//!
//! One streaming pass collects the per-bucket series, the spikes and the
//! slowest records (a bounded heap); each explained spike then costs the two
//! passes of `why`. Memory is bounded by buckets and spikes, not records.

mod page;
mod svg;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ringlog::Record;
use ringlog::analyze::Merge;
use ringlog::analyze::spikes::{Detector, Params, Point, Spike};
use ringlog::units::parse_duration_ns;

use crate::analyze::{SpikeArgs, Why, explain_window, open, verdict};
use crate::select::{Select, scan};

/// `report` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Where to write the HTML page.
    #[arg(long)]
    pub out: PathBuf,
    /// Explain only spike N (as numbered by `spikes`).
    #[arg(long)]
    pub spike: Option<usize>,
    /// Explain at most this many spikes (the largest, by peak / baseline).
    #[arg(long, default_value_t = 5)]
    pub max_spikes: usize,
    /// Baseline for each spike's `why`: this long before it.
    #[arg(long = "baseline-window", default_value = "60s")]
    pub baseline_window: String,
    /// Slowest requests listed.
    #[arg(long, default_value_t = 25)]
    pub top: usize,
    #[command(flatten)]
    pub spikes: SpikeArgs,
}

/// A kept record ordered by duration (then start), for the top-N heap.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Slow {
    /// The record.
    pub r: Record,
    /// Its shard (worker).
    pub shard: u32,
}

impl Ord for Slow {
    fn cmp(&self, o: &Slow) -> std::cmp::Ordering {
        (self.r.total_ns, self.r.start_ns, self.shard).cmp(&(o.r.total_ns, o.r.start_ns, o.shard))
    }
}

impl PartialOrd for Slow {
    fn partial_cmp(&self, o: &Slow) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// The `n` slowest records seen (a min-heap of the current top).
struct TopSlow {
    n: usize,
    heap: BinaryHeap<Reverse<Slow>>,
}

impl Merge for TopSlow {
    fn merge(&mut self, o: TopSlow) {
        for Reverse(x) in o.heap {
            self.add(&x.r, x.shard);
        }
    }
}

impl TopSlow {
    fn add(&mut self, r: &Record, shard: u32) {
        if self.n == 0 {
            return;
        }
        if self.heap.len() == self.n {
            match self.heap.peek() {
                Some(Reverse(min)) if min.r.total_ns >= r.total_ns => return,
                _ => {
                    self.heap.pop();
                }
            }
        }
        self.heap.push(Reverse(Slow { r: *r, shard }));
    }

    fn into_sorted(self) -> Vec<Slow> {
        // Ascending order of Reverse(x) is descending order of x.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|x| x.0)
            .collect()
    }
}

/// One explained spike.
pub struct Explained {
    /// Its number, as `spikes` prints it (1-based).
    pub n: usize,
    /// The spike.
    pub spike: Spike,
    /// The attribution, or why there is none.
    pub why: std::result::Result<(Why, String), String>,
}

/// Everything the page shows.
pub struct Data {
    /// Ring path (shown in the title).
    pub ring: String,
    /// Per-bucket series.
    pub points: Vec<Point>,
    /// Spike detection parameters (bucket, quantile, factor).
    pub params: Params,
    /// Every spike found.
    pub spikes: Vec<Spike>,
    /// The ones explained.
    pub explained: Vec<Explained>,
    /// Slowest requests, slowest first.
    pub slowest: Vec<Slow>,
}

/// Which spikes to explain: `--spike N`, or the `max` largest (by peak over
/// baseline), in time order. Returns 0-based indexes.
fn choose(found: &[Spike], spike: Option<usize>, max: usize) -> Result<Vec<usize>> {
    if let Some(n) = spike {
        if n == 0 || n > found.len() {
            anyhow::bail!("--spike {n}: there are {} spikes", found.len());
        }
        return Ok(vec![n - 1]);
    }
    let ratio = |s: &Spike| s.peak_ns as f64 / s.baseline_ns.max(1) as f64;
    let mut idx: Vec<usize> = (0..found.len()).collect();
    idx.sort_by(|a, b| ratio(&found[*b]).total_cmp(&ratio(&found[*a])));
    idx.truncate(max);
    idx.sort_unstable();
    Ok(idx)
}

/// `ringlog report`.
pub fn run(path: &Path, json_out: bool, sel: &Select, a: &ReportArgs) -> Result<()> {
    let reader = open(path)?;
    let view = reader.view();
    let names = view.names();
    let s = sel.resolve(&view, &names)?;
    let p = a.spikes.params()?;
    let base_len = parse_duration_ns(&a.baseline_window).context("--baseline-window")?;
    let (det, top) = scan(
        &view,
        &s,
        || {
            let top = TopSlow {
                n: a.top,
                heap: BinaryHeap::with_capacity(a.top + 1),
            };
            (Detector::new(p), top)
        },
        |(det, top), r, shard| {
            det.add(r);
            top.add(r, shard);
        },
        |_, _, _| {},
    );
    let (points, found) = det.finish();
    let explained = choose(&found, a.spike, a.max_spikes)?
        .into_iter()
        .map(|i| {
            let sp = found[i].clone();
            let why = explain_window(&view, &s, p.quantile, base_len, (sp.start_ns, sp.end_ns))
                .map(|w| {
                    let v = verdict(&view, &names, &w);
                    (w, v)
                })
                .map_err(|e| format!("{e:#}"));
            Explained {
                n: i + 1,
                spike: sp,
                why,
            }
        })
        .collect();
    let data = Data {
        ring: path.display().to_string(),
        points,
        params: p,
        spikes: found,
        explained,
        slowest: top.into_sorted(),
    };
    let html = page::render(&view, &names, &data);
    // Written next to the target and renamed, so a reader never sees half.
    let tmp = a.out.with_extension("html.tmp");
    std::fs::write(&tmp, html.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    if json_out {
        let verdicts: Vec<serde_json::Value> = data
            .explained
            .iter()
            .map(|e| match &e.why {
                Ok((_, v)) => serde_json::json!({ "spike": e.n, "verdict": v }),
                Err(err) => serde_json::json!({ "spike": e.n, "error": err }),
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "out": a.out.display().to_string(), "bytes": html.len(),
                                "buckets": data.points.len(), "spikes": data.spikes.len(),
                                "explained": verdicts })
        );
        return Ok(());
    }
    println!(
        "wrote {} ({} buckets, {} spikes, {} explained, {} KiB)",
        a.out.display(),
        data.points.len(),
        data.spikes.len(),
        data.explained.len(),
        html.len().div_ceil(1024)
    );
    Ok(())
}

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(total: u64, start: u64) -> Record {
        Record {
            start_ns: start,
            total_ns: total,
            ..Record::default()
        }
    }

    #[test]
    fn top_slow_keeps_the_n_largest_slowest_first() {
        let mut t = TopSlow {
            n: 3,
            heap: BinaryHeap::new(),
        };
        for (i, v) in [5u64, 1, 9, 7, 3, 8].into_iter().enumerate() {
            t.add(&rec(v, i as u64), 0);
        }
        let got: Vec<u64> = t.into_sorted().iter().map(|s| s.r.total_ns).collect();
        assert_eq!(got, vec![9, 8, 7]);
    }

    #[test]
    fn choose_picks_the_largest_in_time_order() {
        let sp = |peak: u64| Spike {
            start_ns: 0,
            end_ns: 1,
            peak_ns: peak,
            baseline_ns: 10,
            requests: 1.0,
            affected: 1.0,
        };
        let found = [sp(30), sp(100), sp(25), sp(50)];
        assert_eq!(choose(&found, None, 2).unwrap(), vec![1, 3]);
        assert_eq!(choose(&found, Some(3), 2).unwrap(), vec![2]);
        assert!(choose(&found, Some(5), 2).is_err());
        assert!(choose(&found, Some(0), 2).is_err());
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
