//! Latency and error accounting for the load generator: HdrHistograms per
//! request type and overall (corrected: from the intended send time; and
//! uncorrected: from the actual send), timeline buckets (a second each unless asked otherwise), error
//! counts by kind, and their rendering as a table or JSON.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Highest latency tracked: one hour, in ns.
const MAX_NS: u64 = 3_600_000_000_000;

/// Error kinds, in display order.
pub const ERROR_KINDS: [&str; 7] = [
    "connect",
    "reset",
    "timeout",
    "protocol",
    "closed",
    "status_5xx",
    "status_4xx",
];

#[allow(clippy::expect_used)] // provably infallible, see below
fn hist(sigfig: u8) -> Histogram<u64> {
    // HdrHistogram rejects only low < 1, high < 2 * low or sigfig > 5; the
    // bounds are constants that satisfy all three and callers pass 2 or 3.
    Histogram::new_with_bounds(1, MAX_NS, sigfig.min(5))
        .expect("constant histogram bounds are valid")
}

/// One bucket of the timeline.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Latency of requests whose intended send fell in this bucket.
    pub latency: Histogram<u64>,
    /// Errors among them.
    pub errors: u64,
}

/// Everything one thread (or all, merged) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Per request type, corrected latency.
    pub by_type: Vec<Histogram<u64>>,
    /// All types, corrected latency.
    pub all: Histogram<u64>,
    /// All types, latency from the actual send.
    pub uncorrected: Histogram<u64>,
    /// How late sends left relative to their intended time (open loop).
    pub send_lag: Histogram<u64>,
    /// Errors by kind ([`ERROR_KINDS`] order).
    pub errors: [u64; ERROR_KINDS.len()],
    /// Timeline, one entry per `step` since the start.
    pub timeline: Vec<Bucket>,
    /// Width of a timeline bucket.
    pub step: std::time::Duration,
}

impl Stats {
    /// Empty stats for `types` request types, with timeline buckets of
    /// `step`.
    pub fn new(types: usize, step: std::time::Duration) -> Stats {
        Stats {
            by_type: (0..types).map(|_| hist(3)).collect(),
            all: hist(3),
            uncorrected: hist(3),
            send_lag: hist(2),
            errors: [0; ERROR_KINDS.len()],
            timeline: Vec::new(),
            step,
        }
    }

    /// Timeline bucket `i`; none past a day (or past 100,000 buckets).
    fn bucket(&mut self, i: usize) -> Option<&mut Bucket> {
        let day = (24 * 3600 * 1_000_000_000u128 / self.step.as_nanos().max(1)) as usize;
        if i > day.min(100_000) {
            return None;
        }
        while self.timeline.len() <= i {
            self.timeline.push(Bucket {
                latency: hist(2),
                errors: 0,
            });
        }
        self.timeline.get_mut(i)
    }

    /// Records one completed request.
    pub fn record(&mut self, ty: usize, corrected_ns: u64, uncorrected_ns: u64, at: usize) {
        let c = corrected_ns.clamp(1, MAX_NS);
        let _ = self.all.record(c);
        let _ = self.uncorrected.record(uncorrected_ns.clamp(1, MAX_NS));
        if let Some(h) = self.by_type.get_mut(ty) {
            let _ = h.record(c);
        }
        if let Some(s) = self.bucket(at) {
            let _ = s.latency.record(c);
        }
    }

    /// Counts one error of kind index `kind`.
    pub fn error(&mut self, kind: usize, at: usize) {
        if let Some(e) = self.errors.get_mut(kind) {
            *e += 1;
        }
        if let Some(s) = self.bucket(at) {
            s.errors += 1;
        }
    }

    /// Adds another thread's stats.
    pub fn merge(&mut self, o: &Stats) {
        for (a, b) in self.by_type.iter_mut().zip(&o.by_type) {
            let _ = a.add(b);
        }
        let _ = self.all.add(&o.all);
        let _ = self.uncorrected.add(&o.uncorrected);
        let _ = self.send_lag.add(&o.send_lag);
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        for (i, s) in o.timeline.iter().enumerate() {
            if let Some(d) = self.bucket(i) {
                let _ = d.latency.add(&s.latency);
                d.errors += s.errors;
            }
        }
    }

    /// Total errors.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// Quantiles reported for every histogram.
pub const QUANTILES: [(&str, f64); 6] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
    ("max", 1.0),
];

/// Quantiles of `h` as JSON (ns).
pub fn quantiles_json(h: &Histogram<u64>) -> Value {
    let mut m = serde_json::Map::new();
    for (name, q) in QUANTILES {
        let v = if q >= 1.0 {
            h.max()
        } else {
            h.value_at_quantile(q)
        };
        m.insert(name.to_string(), json!(v));
    }
    m.insert("p95".into(), json!(h.value_at_quantile(0.95)));
    m.insert("mean".into(), json!(h.mean().round() as u64));
    Value::Object(m)
}

/// The whole report as JSON.
pub fn to_json(
    stats: &Stats,
    names: &[String],
    elapsed_s: f64,
    mode: &str,
    rate: Option<f64>,
) -> Value {
    let count = stats.all.len();
    let types: serde_json::Map<String, Value> = names
        .iter()
        .zip(&stats.by_type)
        .map(|(n, h)| {
            (n.clone(), json!({ "requests": h.len(), "rps": h.len() as f64 / elapsed_s, "latency_ns": quantiles_json(h) }))
        })
        .collect();
    let errors: BTreeMap<&str, u64> = ERROR_KINDS.iter().copied().zip(stats.errors).collect();
    json!({
        "mode": mode,
        "rate": rate,
        "seconds": elapsed_s,
        "requests": count,
        "rps": count as f64 / elapsed_s,
        "latency_ns": quantiles_json(&stats.all),
        "uncorrected_latency_ns": quantiles_json(&stats.uncorrected),
        "send_lag_ns": quantiles_json(&stats.send_lag),
        "types": types,
        "errors": errors,
        "errors_total": stats.error_total(),
    })
}

/// The timeline as JSON lines: `second` (from the start, fractional for
/// buckets under a second), `time`, then the bucket's figures, with
/// `host_stall_ns`: how late the host woke the canary at worst in it.
pub fn timeline_lines(stats: &Stats, start_wall_ns: u64, stalls: &super::canary::Stalls) -> String {
    let mut out = String::new();
    let step_ns = u64::try_from(stats.step.as_nanos()).unwrap_or(u64::MAX);
    for (i, s) in stats.timeline.iter().enumerate() {
        let h = &s.latency;
        let offset_ns = (i as u64).saturating_mul(step_ns);
        let second = if step_ns % 1_000_000_000 == 0 {
            json!(offset_ns / 1_000_000_000)
        } else {
            json!(offset_ns as f64 / 1e9)
        };
        let line = json!({
            "second": second,
            "time": ringlog::clock::rfc3339(start_wall_ns.saturating_add(offset_ns)),
            "requests": h.len(),
            "errors": s.errors,
            "p50_ns": h.value_at_quantile(0.5),
            "p99_ns": h.value_at_quantile(0.99),
            "p999_ns": h.value_at_quantile(0.999),
            "max_ns": h.max(),
            "host_stall_ns": stalls.by_bucket.get(i).copied().unwrap_or(0),
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// The timeline's requests in two halves by intended send time: after
/// `skip` buckets, runs of `period` buckets alternate A, B, A, B...
pub fn alternating(stats: &Stats, skip: usize, period: usize) -> [Bucket; 2] {
    let mut halves = [(); 2].map(|()| Bucket {
        latency: hist(2),
        errors: 0,
    });
    for (i, b) in stats.timeline.iter().enumerate().skip(skip) {
        if let Some(h) = halves.get_mut((i - skip) / period.max(1) % 2) {
            let _ = h.latency.add(&b.latency);
            h.errors += b.errors;
        }
    }
    halves
}

/// [`alternating`] as JSON: `period_ns`, `skip_ns`, and `a` and `b`, each
/// with its `requests`, `errors` and `latency_ns` quantiles.
pub fn alternating_json(stats: &Stats, skip: usize, period: usize) -> Value {
    let step_ns = u64::try_from(stats.step.as_nanos()).unwrap_or(u64::MAX);
    let [a, b] = alternating(stats, skip, period).map(|h| {
        json!({
            "requests": h.latency.len(),
            "errors": h.errors,
            "latency_ns": quantiles_json(&h.latency),
        })
    });
    json!({
        "skip_ns": step_ns.saturating_mul(skip as u64),
        "period_ns": step_ns.saturating_mul(period as u64),
        "a": a,
        "b": b,
    })
}

/// [`alternating`] as two table rows.
pub fn alternating_table(stats: &Stats, skip: usize, period: usize) -> String {
    use ringlog::units::format_ns;
    let mut out = String::new();
    for (name, h) in ["A", "B"].iter().zip(alternating(stats, skip, period)) {
        out.push_str(&format!(
            "alternating {name}: {} requests, {} errors, p50 {} p99 {} p99.9 {} max {}\n",
            h.latency.len(),
            h.errors,
            format_ns(h.latency.value_at_quantile(0.5)),
            format_ns(h.latency.value_at_quantile(0.99)),
            format_ns(h.latency.value_at_quantile(0.999)),
            format_ns(h.latency.max()),
        ));
    }
    out
}

/// The report as an aligned table.
pub fn to_table(stats: &Stats, names: &[String], elapsed_s: f64, mode: &str) -> String {
    use ringlog::units::format_ns;
    let mut out = format!(
        "{mode}: {} requests in {elapsed_s:.2}s, {:.0} req/s, {} errors\n",
        stats.all.len(),
        stats.all.len() as f64 / elapsed_s,
        stats.error_total()
    );
    out.push_str(&format!(
        "{:<12} {:>10} {:>10}",
        "type", "requests", "req/s"
    ));
    for (n, _) in QUANTILES {
        out.push_str(&format!(" {n:>9}"));
    }
    out.push('\n');
    let mut row = |name: &str, h: &Histogram<u64>| {
        out.push_str(&format!(
            "{name:<12} {:>10} {:>10.0}",
            h.len(),
            h.len() as f64 / elapsed_s
        ));
        for (_, q) in QUANTILES {
            let v = if q >= 1.0 {
                h.max()
            } else {
                h.value_at_quantile(q)
            };
            out.push_str(&format!(
                " {:>9}",
                if h.is_empty() {
                    "-".to_string()
                } else {
                    format_ns(v)
                }
            ));
        }
        out.push('\n');
    };
    if names.len() > 1 {
        for (n, h) in names.iter().zip(&stats.by_type) {
            row(n, h);
        }
    }
    row("all", &stats.all);
    row("uncorrected", &stats.uncorrected);
    out.push_str("errors:");
    for (k, v) in ERROR_KINDS.iter().zip(stats.errors) {
        out.push_str(&format!(" {k} {v},"));
    }
    out.pop();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternating_halves_take_whole_periods_after_the_skip() {
        let mut s = Stats::new(1, std::time::Duration::from_millis(10));
        // Bucket i holds one request of (i + 1) ms; bucket 9 an error.
        for i in 0..10 {
            s.record(0, (i as u64 + 1) * 1_000_000, 1, i);
        }
        s.error(0, 9);
        // Skip 2 buckets, then periods of 3: A = 2,3,4 and 8,9; B = 5,6,7.
        let [a, b] = alternating(&s, 2, 3);
        assert_eq!((a.latency.len(), a.errors), (5, 1));
        assert_eq!((b.latency.len(), b.errors), (3, 0));
        assert!(a.latency.equivalent(a.latency.min(), 3_000_000));
        assert!(a.latency.equivalent(a.latency.max(), 10_000_000));
        assert!(b.latency.equivalent(b.latency.min(), 6_000_000));
        assert!(b.latency.equivalent(b.latency.max(), 8_000_000));
        let v = alternating_json(&s, 2, 3);
        assert_eq!(v["period_ns"], 30_000_000);
        assert_eq!(v["skip_ns"], 20_000_000);
        assert_eq!(v["b"]["requests"], 3);
    }
}
