//! `hist`, `spikes`, `why` and `export`: streaming passes over the ring
//! (memory bounded by groups and time buckets, never by records), printed
//! as aligned tables or JSON.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ringlog::analyze::hist::{Hist, MIN_SUPPORT, QUANTILES};
use ringlog::analyze::spikes::{Detector, Params, Spike};
use ringlog::analyze::why::{Attribution, Report, Threshold, Windows};
use ringlog::analyze::{Dim, phase_name};
use ringlog::units::{format_ns, parse_duration_ns};
use ringlog::{Event, NameTable, RingReader, RingView};
use serde_json::{Value, json};

use crate::select::{Select, Selection, label, scan};
use crate::table::Table;

pub(crate) fn open(path: &Path) -> Result<RingReader> {
    RingReader::open(path).with_context(|| format!("opening {}", path.display()))
}

fn dims(by: &str) -> Result<Vec<Dim>> {
    by.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Dim::parse(s).with_context(|| {
                format!("--by {s}: not a dimension (route, cluster, endpoint, type, arm, worker, status, reason, generation, phase, policy, peer)")
            })
        })
        .collect()
}

pub(crate) fn wall(view: &RingView<'_>, mono: u64) -> String {
    ringlog::clock::rfc3339(view.header().wall_ns(mono))
}

/// `ringlog hist --by DIM[,DIM]`.
pub fn hist(path: &Path, json_out: bool, sel: &Select, by: &str) -> Result<()> {
    let reader = open(path)?;
    let view = reader.view();
    let names = view.names();
    let s = sel.resolve(&view, &names)?;
    let by = dims(by)?;
    let h = scan(
        &view,
        &s,
        || Hist::new(by.clone()),
        |h, r, shard| h.add(r, shard),
        |_, _, _| {},
    );
    let groups = h.finish();
    if json_out {
        let rows: Vec<Value> = groups
            .iter()
            .map(|g| {
                let key: serde_json::Map<String, Value> = by
                    .iter()
                    .zip(&g.key)
                    .map(|(d, v)| (d.name().to_string(), json!(label(&names, *d, *v))))
                    .collect();
                let qs: serde_json::Map<String, Value> = QUANTILES
                    .iter()
                    .zip(&g.quantiles)
                    .zip(&g.support)
                    .map(|((q, v), sup)| {
                        (
                            qname(*q),
                            json!({
                                "ns": v.map(|x| x.ns),
                                "exact": v.map(|x| x.exact),
                                "support": sup,
                                "low_support": *sup < MIN_SUPPORT,
                            }),
                        )
                    })
                    .collect();
                json!({ "group": key, "records": g.records, "requests": g.requests,
                        "rate_per_s": g.rate, "quantiles": qs, "max_ns": g.max_ns })
            })
            .collect();
        println!(
            "{}",
            json!({ "by": by.iter().map(|d| d.name()).collect::<Vec<_>>(), "span_ns": h.span_ns(), "groups": rows })
        );
        return Ok(());
    }
    let mut head: Vec<String> = by.iter().map(|d| d.name().to_string()).collect();
    head.extend(
        [
            "records", "requests", "req/s", "p50", "p90", "p99", "p99.9", "max",
        ]
        .map(String::from),
    );
    let mut t = Table::new(head);
    let mut thin = false;
    for g in &groups {
        let mut row: Vec<String> = by
            .iter()
            .zip(&g.key)
            .map(|(d, v)| label(&names, *d, *v))
            .collect();
        row.push(g.records.to_string());
        row.push(format!("{:.0}", g.requests));
        row.push(format!("{:.1}", g.rate));
        for (q, sup) in g.quantiles.iter().zip(&g.support) {
            let mut cell = q.map_or("-".into(), |x| format_ns(x.ns));
            if *sup < MIN_SUPPORT && q.is_some() {
                cell.push('*');
                thin = true;
            }
            row.push(cell);
        }
        row.push(format_ns(g.max_ns));
        t.row(row);
    }
    t.print();
    if thin {
        println!("* rests on fewer than {MIN_SUPPORT} kept records at or above it");
    }
    Ok(())
}

pub(crate) fn qname(q: f64) -> String {
    match q {
        x if (x - 0.999).abs() < 1e-9 => "p99.9".into(),
        x => format!("p{}", (x * 100.0).round()),
    }
}

/// Spike-detection flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SpikeArgs {
    /// Quantile watched.
    #[arg(long, default_value_t = 0.999)]
    pub quantile: f64,
    /// Bucket width.
    #[arg(long, default_value = "1s")]
    pub bucket: String,
    /// A bucket is a spike when its quantile exceeds FACTOR x the baseline.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    /// Trailing baseline length.
    #[arg(long = "baseline", default_value = "60s")]
    pub baseline: String,
}

impl SpikeArgs {
    pub(crate) fn params(&self) -> Result<Params> {
        if !(0.0..1.0).contains(&self.quantile) || self.quantile <= 0.0 {
            bail!("--quantile {}: must be between 0 and 1", self.quantile);
        }
        if self.factor <= 1.0 {
            bail!("--factor {}: must be above 1", self.factor);
        }
        let bucket_ns = parse_duration_ns(&self.bucket)
            .context("--bucket")?
            .max(1_000_000);
        let base = parse_duration_ns(&self.baseline).context("--baseline")?;
        Ok(Params {
            quantile: self.quantile,
            bucket_ns,
            factor: self.factor,
            baseline_buckets: (base / bucket_ns).max(1) as usize,
        })
    }
}

/// Runs spike detection over the selection.
pub fn detect(
    view: &RingView<'_>,
    s: &Selection,
    p: Params,
) -> (Vec<ringlog::analyze::spikes::Point>, Vec<Spike>) {
    scan(
        view,
        s,
        || Detector::new(p),
        |d, r, _| d.add(r),
        |_, _, _| {},
    )
    .finish()
}

fn spike_json(view: &RingView<'_>, i: usize, sp: &Spike) -> Value {
    json!({ "n": i + 1, "start": wall(view, sp.start_ns), "end": wall(view, sp.end_ns),
            "start_mono_ns": sp.start_ns, "end_mono_ns": sp.end_ns,
            "peak_ns": sp.peak_ns, "baseline_ns": sp.baseline_ns,
            "requests": sp.requests, "affected": sp.affected })
}

/// `ringlog spikes`.
pub fn spikes(path: &Path, json_out: bool, sel: &Select, a: &SpikeArgs) -> Result<()> {
    let reader = open(path)?;
    let view = reader.view();
    let names = view.names();
    let s = sel.resolve(&view, &names)?;
    let p = a.params()?;
    let (_, found) = detect(&view, &s, p);
    if json_out {
        let rows: Vec<Value> = found
            .iter()
            .enumerate()
            .map(|(i, sp)| spike_json(&view, i, sp))
            .collect();
        println!(
            "{}",
            json!({ "quantile": p.quantile, "bucket_ns": p.bucket_ns, "factor": p.factor, "spikes": rows })
        );
        return Ok(());
    }
    if found.is_empty() {
        println!(
            "no spike: {} never exceeded {}x its trailing baseline",
            qname(p.quantile),
            p.factor
        );
        return Ok(());
    }
    let mut t = Table::new(
        [
            "#", "start", "end", "length", "peak", "baseline", "x", "requests", "affected",
        ]
        .map(String::from)
        .to_vec(),
    );
    for (i, sp) in found.iter().enumerate() {
        t.row(vec![
            (i + 1).to_string(),
            wall(&view, sp.start_ns),
            wall(&view, sp.end_ns),
            format_ns(sp.end_ns - sp.start_ns),
            format_ns(sp.peak_ns),
            format_ns(sp.baseline_ns),
            format!("{:.1}", sp.peak_ns as f64 / sp.baseline_ns.max(1) as f64),
            format!("{:.0}", sp.requests),
            format!("{:.0}", sp.affected),
        ]);
    }
    t.print();
    Ok(())
}

/// `why` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct WhyArgs {
    /// Explain spike N (as numbered by `spikes`); default: the largest.
    #[arg(long)]
    pub spike: Option<usize>,
    /// Window start instead of a spike (same forms as --since).
    #[arg(long, allow_hyphen_values = true)]
    pub from: Option<String>,
    /// Window end.
    #[arg(long, allow_hyphen_values = true)]
    pub to: Option<String>,
    /// Baseline: this long before the window.
    #[arg(long = "baseline-window", default_value = "60s")]
    pub baseline_window: String,
    #[command(flatten)]
    pub spikes: SpikeArgs,
}

/// A finished `why` with what is needed to print it.
pub struct Why {
    /// The windows analysed.
    pub windows: Windows,
    /// The attribution.
    pub report: Report,
    /// Events overlapping the window (and the 5 s before it).
    pub events: Vec<(Event, u32)>,
}

/// Computes `why` for the selection.
pub fn explain(view: &RingView<'_>, s: &Selection, a: &WhyArgs) -> Result<Option<Why>> {
    let p = a.spikes.params()?;
    let base_len = parse_duration_ns(&a.baseline_window).context("--baseline-window")?;
    let (from, to) = match (&a.from, &a.to) {
        (Some(f), Some(t)) => {
            let end = crate::select::newest(view);
            let h = view.header();
            (
                crate::select::time(f, h, end)?,
                crate::select::time(t, h, end)?,
            )
        }
        (None, None) => {
            let (_, found) = detect(view, s, p);
            let pick = match a.spike {
                Some(n) => found
                    .get(n.wrapping_sub(1))
                    .with_context(|| format!("--spike {n}: there are {} spikes", found.len()))?,
                None => match found.iter().max_by(|x, y| {
                    (x.peak_ns as f64 / x.baseline_ns.max(1) as f64)
                        .total_cmp(&(y.peak_ns as f64 / y.baseline_ns.max(1) as f64))
                }) {
                    Some(sp) => sp,
                    None => return Ok(None),
                },
            };
            (pick.start_ns, pick.end_ns)
        }
        _ => bail!("--from and --to go together"),
    };
    if from >= to {
        bail!("the window is empty (--from is not before --to)");
    }
    explain_window(view, s, p.quantile, base_len, (from, to)).map(Some)
}

/// `why` for the window `from..to` (monotonic ns) against the `base_len` ns
/// before it.
pub fn explain_window(
    view: &RingView<'_>,
    s: &Selection,
    quantile: f64,
    base_len: u64,
    (from, to): (u64, u64),
) -> Result<Why> {
    let w = Windows {
        from_ns: from,
        to_ns: to,
        base_from_ns: from.saturating_sub(base_len),
        base_to_ns: from,
        quantile,
    };
    let th = scan(
        view,
        s,
        || Threshold::new(w),
        |th, r, _| th.add(r),
        |_, _, _| {},
    );
    let Some((tau, wq)) = th.finish() else {
        bail!(
            "no records in the baseline window before {}",
            wall(view, from)
        );
    };
    let ev_from = from.saturating_sub(5_000_000_000);
    let (at, mut events) = scan(
        view,
        s,
        || (Attribution::new(w, tau), Vec::new()),
        |(at, _), r, shard| at.add(r, shard),
        |(_, events), e, shard| {
            if e.time_ns >= ev_from && e.time_ns < to {
                events.push((*e, shard));
            }
        },
    );
    events.sort_by_key(|(e, shard)| (e.time_ns, *shard));
    Ok(Why {
        windows: w,
        report: at.finish(wq),
        events,
    })
}

/// `ringlog why`.
pub fn why(path: &Path, json_out: bool, sel: &Select, a: &WhyArgs) -> Result<()> {
    let reader = open(path)?;
    let view = reader.view();
    let names = view.names();
    let s = sel.resolve(&view, &names)?;
    let Some(w) = explain(&view, &s, a)? else {
        if json_out {
            println!(
                "{}",
                json!({ "finding": false, "verdict": "no spike found: nothing to explain" })
            );
        } else {
            println!("no spike found: nothing to explain (give a window with --from/--to)");
        }
        return Ok(());
    };
    let verdict = verdict(&view, &names, &w);
    if json_out {
        println!("{}", why_json(&view, &names, &w, &verdict));
        return Ok(());
    }
    print_why(&view, &names, &w, &verdict);
    Ok(())
}

pub(crate) fn finding_label(names: &NameTable, f: &ringlog::analyze::why::Finding) -> String {
    f.dims
        .iter()
        .zip(&f.values)
        .map(|(d, v)| format!("{}={}", d.name(), label(names, *d, *v)))
        .collect::<Vec<_>>()
        .join(" x ")
}

/// JSON form of a `why`.
pub fn why_json(view: &RingView<'_>, names: &NameTable, w: &Why, verdict: &str) -> Value {
    let r = &w.report;
    let f = |x: &ringlog::analyze::why::Finding| {
        json!({ "dims": x.dims.iter().map(|d| d.name()).collect::<Vec<_>>(),
                "values": x.dims.iter().zip(&x.values).map(|(d, v)| label(names, *d, *v)).collect::<Vec<_>>(),
                "label": finding_label(names, x),
                "share_slow": x.share_slow, "share_baseline": x.share_base,
                "rr": x.rr, "rr_low": x.rr_low, "rr_high": x.rr_high,
                "excess_share": x.excess_share, "support": x.support })
    };
    json!({
        "window": { "from": wall(view, w.windows.from_ns), "to": wall(view, w.windows.to_ns),
                    "from_mono_ns": w.windows.from_ns, "to_mono_ns": w.windows.to_ns },
        "baseline": { "from": wall(view, w.windows.base_from_ns), "to": wall(view, w.windows.base_to_ns) },
        "quantile": w.windows.quantile,
        "baseline_q_ns": r.baseline_q_ns, "window_q_ns": r.window_q_ns,
        "window_requests": r.window_requests, "slow_requests": r.slow_requests, "expected_slow": r.expected_slow,
        "finding": r.has_finding(),
        "findings": r.findings.iter().map(f).collect::<Vec<_>>(),
        "pairs": r.pairs.iter().map(f).collect::<Vec<_>>(),
        "dimensions": r.dims.iter().map(|d| json!({ "dim": d.dim.name(), "js_bits": d.js })).collect::<Vec<_>>(),
        "phases": (0..ringlog::record::PHASES).map(|i| json!({ "phase": phase_name(i), "slow_mean_ns": r.phase_slow_ns[i], "baseline_mean_ns": r.phase_base_ns[i] })).collect::<Vec<_>>(),
        "events": w.events.iter().map(|(e, shard)| json!({ "time": wall(view, e.time_ns), "event": e.kind.name(), "generation": e.generation, "revision": (e.kind == ringlog::EventKind::ConfigApplied).then_some(e.b), "worker": shard })).collect::<Vec<_>>(),
        "verdict": verdict,
    })
}

/// When the finding is one of the agent's own decisions, the sentence that
/// says so: throttling is not the upstream being slow.
fn own_decision(f: &ringlog::analyze::why::Finding) -> Option<&'static str> {
    let at = f.dims.iter().position(|d| *d == Dim::Policy)?;
    Some(match f.values.get(at)? {
        1 => " The agent rejected them itself: a route's rate limit (429 rate_limited).",
        2 => {
            " The agent held them itself: a route's smoothing rate limit delayed them (the wait is their queue phase), not a slow upstream."
        }
        3 => {
            " The agent refused them itself: a cluster's circuit breaker was open (503 breaker_open)."
        }
        4 => " The agent refused them itself: a cluster's concurrency limit (503 overflow).",
        5 => " They were retried: failed attempts and backoff are in their connect phase.",
        _ => return None,
    })
}

/// The one-paragraph verdict.
pub fn verdict(view: &RingView<'_>, names: &NameTable, w: &Why) -> String {
    let r = &w.report;
    let q = qname(w.windows.quantile);
    let mut s = format!(
        "{q} rose {} -> {} between {} and {}.",
        format_ns(r.baseline_q_ns),
        format_ns(r.window_q_ns),
        wall(view, w.windows.from_ns),
        wall(view, w.windows.to_ns)
    );
    let excess: Vec<f64> = (0..ringlog::record::PHASES)
        .map(|i| r.phase_slow_ns[i] - r.phase_base_ns[i])
        .collect();
    let total: f64 = excess.iter().filter(|x| **x > 0.0).sum();
    let top_phase = excess
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, x)| (phase_name(i), if total > 0.0 { x / total } else { 0.0 }));
    match r
        .findings
        .iter()
        .find(|f| f.dims != [Dim::Phase])
        .or(r.findings.first())
    {
        Some(f) => {
            if let Some((p, share)) = top_phase {
                s.push_str(&format!(
                    " {:.0}% of the excess latency is {p}",
                    share * 100.0
                ));
            }
            s.push_str(&format!(
                "; {} explains {:.0}% of the excess slow requests (slow {:.1}x as often as the rest, at least {:.1}x; {:.0}% of slow vs {:.0}% of baseline traffic).",
                finding_label(names, f),
                f.excess_share * 100.0,
                f.rr,
                f.rr_low,
                f.share_slow * 100.0,
                f.share_base * 100.0
            ));
            if let Some(why) = own_decision(f) {
                s.push_str(why);
            }
        }
        None => s.push_str(" No finding: no dimension value stands out in the slow tail."),
    }
    for (e, _) in w
        .events
        .iter()
        .filter(|(e, _)| !matches!(e.kind, ringlog::EventKind::RingFull))
        .take(3)
    {
        s.push_str(&format!(
            " Event {} (generation {}{}) at {}.",
            e.kind.name(),
            e.generation,
            revision(e),
            wall(view, e.time_ns)
        ));
    }
    s
}

fn print_why(view: &RingView<'_>, names: &NameTable, w: &Why, verdict: &str) {
    let r = &w.report;
    println!(
        "window {} .. {} (baseline from {}), {} slow = above {}",
        wall(view, w.windows.from_ns),
        wall(view, w.windows.to_ns),
        wall(view, w.windows.base_from_ns),
        qname(w.windows.quantile),
        format_ns(r.baseline_q_ns)
    );
    println!(
        "requests in window {:.0}, slow {:.0} (baseline rate predicts {:.1})\n",
        r.window_requests, r.slow_requests, r.expected_slow
    );
    if r.findings.is_empty() {
        println!("no finding");
    } else {
        let mut t = Table::new(
            [
                "value",
                "excess",
                "slow share",
                "base share",
                "RR",
                "RR 95% (corr.)",
                "slow recs",
            ]
            .map(String::from)
            .to_vec(),
        );
        for f in r.findings.iter().chain(&r.pairs).take(12) {
            t.row(vec![
                finding_label(names, f),
                format!("{:.0}%", f.excess_share * 100.0),
                format!("{:.1}%", f.share_slow * 100.0),
                format!("{:.1}%", f.share_base * 100.0),
                format!("{:.1}", f.rr),
                format!("{:.1}-{:.1}", f.rr_low, f.rr_high),
                f.support.to_string(),
            ]);
        }
        t.print();
    }
    println!();
    let mut t = Table::new(
        ["phase", "slow mean", "baseline mean", "excess"]
            .map(String::from)
            .to_vec(),
    );
    for i in 0..ringlog::record::PHASES {
        let (a, b) = (r.phase_slow_ns[i], r.phase_base_ns[i]);
        t.row(vec![
            phase_name(i).into(),
            format_ns(a as u64),
            format_ns(b as u64),
            signed(a - b),
        ]);
    }
    t.print();
    let dims: Vec<String> = r
        .dims
        .iter()
        .take(4)
        .map(|d| format!("{} {:.3}", d.dim.name(), d.js))
        .collect();
    println!("\ndimensions by divergence (JS bits): {}", dims.join(", "));
    if !w.events.is_empty() {
        println!("\nagent events:");
        for (e, shard) in w.events.iter().take(20) {
            println!(
                "  {} {} generation {}{} worker {shard}",
                wall(view, e.time_ns),
                e.kind.name(),
                e.generation,
                revision(e)
            );
        }
    }
    println!("\n{verdict}");
}

pub(crate) fn signed(x: f64) -> String {
    if x < 0.0 {
        format!("-{}", format_ns((-x) as u64))
    } else {
        format!("+{}", format_ns(x as u64))
    }
}

/// `ringlog export --format json|csv`.
pub fn export(path: &Path, sel: &Select, format: &str) -> Result<()> {
    let reader = open(path)?;
    let view = reader.view();
    let names = view.names();
    let s = sel.resolve(&view, &names)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let csv = match format {
        "csv" => true,
        "json" => false,
        other => bail!("--format {other}: json or csv"),
    };
    if csv {
        writeln!(
            out,
            "kind,time,shard,route,cluster,endpoint,request_type,status,reason,total_ns,queue_ns,connect_ns,tls_ns,first_byte_ns,transfer_ns,write_ns,weight,generation,event"
        )?;
    }
    let h = *view.header();
    for e in view.snapshot().filter(|e| s.keep_entry(e)) {
        let line = if csv {
            csv_line(&h, &names, &e)
        } else {
            crate::show::json(&h, &names, &e).to_string()
        };
        if writeln!(out, "{line}").is_err() {
            return Ok(());
        }
    }
    out.flush().ok();
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(h: &ringlog::Header, names: &NameTable, e: &ringlog::Entry) -> String {
    let names3 = |route, cluster, endpoint| {
        crate::show::subject(names, route, cluster, endpoint).map(|n| csv_field(&n))
    };
    match &e.item {
        ringlog::Item::Record(r) => {
            let p = r.phases_ns;
            let [route, cluster, endpoint] = names3(r.route, r.cluster, r.endpoint);
            format!(
                "record,{},{},{route},{cluster},{endpoint},{},{},{},{},{},{},{},{},{},{},{},{},",
                ringlog::clock::rfc3339(h.wall_ns(r.start_ns)),
                e.shard,
                csv_field(&crate::show::type_name(names, r.req_type)),
                r.status,
                r.reason.name(),
                r.total_ns,
                p[0],
                p[1],
                p[2],
                p[3],
                p[4],
                p[5],
                r.weight(),
                r.generation
            )
        }
        ringlog::Item::Event(x) => {
            let [route, cluster, endpoint] = names3(x.route, x.cluster, x.endpoint);
            format!(
                "event,{},{},{route},{cluster},{endpoint},,,,,,,,,,,,{},{}",
                ringlog::clock::rfc3339(h.wall_ns(x.time_ns)),
                e.shard,
                x.generation,
                x.kind.name()
            )
        }
    }
}

/// `, etcd revision N` for a config applied from etcd (its event's `b`),
/// so a spike can be tied to the rollout that caused it.
fn revision(e: &ringlog::record::Event) -> String {
    if e.kind == ringlog::EventKind::ConfigApplied && e.b > 0 {
        format!(", etcd revision {}", e.b)
    } else {
        String::new()
    }
}
