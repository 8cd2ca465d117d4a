//! The report's HTML: header, charts, one section per explained spike
//! (verdict, attribution table, phase breakdown, events) and the slowest
//! requests. Everything inline; text is escaped.

use std::fmt::Write;

use ringlog::analyze::phase_name;
use ringlog::record::PHASES;
use ringlog::units::format_ns;
use ringlog::{NameTable, RingView};

use super::svg::{Band, Chart, Scale, Series, chart};
use super::{Data, Explained, esc};
use crate::analyze::{finding_label, qname, signed, wall};

const CSS: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#212529;margin:24px auto;max-width:1080px;padding:0 16px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dee2e6;padding-bottom:4px}\
h3{font-size:15px;margin:18px 0 6px}.meta{color:#6c757d}\
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}\
th,td{padding:3px 10px;border-bottom:1px solid #e9ecef;text-align:left;white-space:nowrap}\
td.n,th.n{text-align:right}th{background:#f1f3f5;font-weight:600}\
.verdict{background:#fff4e6;border-left:4px solid #fd7e14;padding:10px 14px;margin:8px 0}\
.none{background:#f1f3f5;border-left:4px solid #adb5bd;padding:10px 14px}\
.bar{display:inline-block;height:9px;background:#fd7e14;vertical-align:middle;margin-right:6px}\
svg.chart{display:block;margin:8px 0;max-width:100%;height:auto}";

/// The whole page.
pub fn render(view: &RingView<'_>, names: &NameTable, d: &Data) -> String {
    let mut h = String::with_capacity(64 << 10);
    let span = match (d.points.first(), d.points.last()) {
        (Some(a), Some(b)) => format!(
            "{} .. {}",
            wall(view, a.start_ns),
            wall(view, b.start_ns + d.params.bucket_ns)
        ),
        _ => "no records".into(),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ringlog report: {}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{CSS}</style></head><body>\
         <h1>ringlog report</h1><p class=\"meta\">ring <code>{}</code> &middot; {} &middot; {} buckets of {} &middot; spikes: {} above {}x baseline</p>",
        esc(&d.ring),
        esc(&d.ring),
        esc(&span),
        d.points.len(),
        format_ns(d.params.bucket_ns),
        qname(d.params.quantile),
        d.params.factor
    );
    charts(&mut h, view, d);
    spike_table(&mut h, view, d);
    for e in &d.explained {
        explained(&mut h, view, names, e);
    }
    slowest(&mut h, view, names, d);
    h.push_str("</body></html>\n");
    h
}

fn clock(view: &RingView<'_>, mono: u64) -> String {
    let w = wall(view, mono);
    w.get(11..19).map_or(w.clone(), str::to_string)
}

fn charts(h: &mut String, view: &RingView<'_>, d: &Data) {
    if d.points.is_empty() {
        h.push_str("<p class=\"none\">No records in the selection.</p>");
        return;
    }
    let x0 = d.points.first().map_or(0, |p| p.start_ns) as f64;
    let x1 = d
        .points
        .last()
        .map_or(0, |p| p.start_ns + d.params.bucket_ns) as f64;
    let mid = |p: &ringlog::analyze::spikes::Point| (p.start_ns + d.params.bucket_ns / 2) as f64;
    // Break a line where buckets are missing.
    let line = |f: &dyn Fn(&ringlog::analyze::spikes::Point) -> Option<f64>| {
        let mut out = Vec::with_capacity(d.points.len());
        let mut prev: Option<u64> = None;
        for p in &d.points {
            if prev.is_some_and(|q| p.start_ns > q + d.params.bucket_ns) {
                out.push(None);
            }
            out.push(f(p).map(|y| (mid(p), y)));
            prev = Some(p.start_ns);
        }
        out
    };
    let bands: Vec<Band> = d
        .spikes
        .iter()
        .enumerate()
        .map(|(i, s)| Band {
            from: s.start_ns as f64,
            to: s.end_ns as f64,
            label: format!("#{}", i + 1),
            title: format!(
                "spike #{}: {} .. {}, peak {} vs baseline {}",
                i + 1,
                clock(view, s.start_ns),
                clock(view, s.end_ns),
                format_ns(s.peak_ns),
                format_ns(s.baseline_ns)
            ),
        })
        .collect();
    let xl = |x: f64| clock(view, x as u64);
    let frame = |title, id, scale, y_label| Chart {
        title,
        id,
        x0,
        x1,
        scale,
        x_label: &xl,
        y_label,
    };
    let nz = |v: u64| (v > 0).then_some(v as f64);
    let series = [
        Series {
            name: "p50",
            color: "#2b8a3e",
            points: line(&|p| nz(p.p50_ns)),
        },
        Series {
            name: "p99",
            color: "#1c7ed6",
            points: line(&|p| nz(p.p99_ns)),
        },
        Series {
            name: "p99.9",
            color: "#e8590c",
            points: line(&|p| nz(p.p999_ns)),
        },
    ];
    let ns = |y: f64| format_ns(y as u64);
    let lat = frame("Latency per bucket", "latency", Scale::Log, &ns);
    h.push_str(&chart(&lat, &series, &bands));
    let secs = d.params.bucket_ns as f64 / 1e9;
    let per_s = |y: f64| format!("{y:.0}");
    let rps = [Series {
        name: "req/s",
        color: "#5f3dc4",
        points: line(&|p| Some(p.requests / secs)),
    }];
    let rate = frame("Requests per second", "rps", Scale::Linear, &per_s);
    h.push_str(&chart(&rate, &rps, &bands));
    let pct = |y: f64| format!("{y:.1}%");
    let errs = [Series {
        name: "5xx or error flag",
        color: "#c92a2a",
        points: line(&|p| Some(100.0 * p.errors / p.requests.max(1e-9))),
    }];
    let err = frame("Error rate", "errors", Scale::Linear, &pct);
    h.push_str(&chart(&err, &errs, &bands));
}

fn spike_table(h: &mut String, view: &RingView<'_>, d: &Data) {
    let _ = write!(h, "<h2>Spikes</h2>");
    if d.spikes.is_empty() {
        let _ = write!(
            h,
            "<p class=\"none\">No spike: {} never exceeded its trailing baseline by the factor.</p>",
            qname(d.params.quantile)
        );
        return;
    }
    h.push_str("<table id=\"spikes\"><tr><th>#</th><th>start</th><th>end</th><th class=n>length</th><th class=n>peak</th><th class=n>baseline</th><th class=n>x</th><th class=n>requests</th><th class=n>affected</th></tr>");
    for (i, s) in d.spikes.iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.1}</td><td class=n>{:.0}</td><td class=n>{:.0}</td></tr>",
            i + 1,
            esc(&wall(view, s.start_ns)),
            esc(&wall(view, s.end_ns)),
            format_ns(s.end_ns - s.start_ns),
            format_ns(s.peak_ns),
            format_ns(s.baseline_ns),
            s.peak_ns as f64 / s.baseline_ns.max(1) as f64,
            s.requests,
            s.affected
        );
    }
    h.push_str("</table>");
}

fn explained(h: &mut String, view: &RingView<'_>, names: &NameTable, e: &Explained) {
    let _ = write!(
        h,
        "<h2 id=\"spike-{}\">Spike #{}: {} .. {}</h2>",
        e.n,
        e.n,
        esc(&clock(view, e.spike.start_ns)),
        esc(&clock(view, e.spike.end_ns))
    );
    let (w, verdict) = match &e.why {
        Ok(x) => x,
        Err(msg) => {
            let _ = write!(h, "<p class=\"none\">Not explained: {}</p>", esc(msg));
            return;
        }
    };
    let r = &w.report;
    let _ = write!(h, "<p class=\"verdict\">{}</p>", esc(verdict));
    if r.findings.is_empty() {
        h.push_str(
            "<p class=\"none\">No finding: no dimension value stands out in the slow tail.</p>",
        );
    } else {
        h.push_str("<h3>What the slow tail comes from</h3><table class=\"attribution\"><tr><th>value</th><th class=n>excess explained</th><th class=n>slow share</th><th class=n>baseline share</th><th class=n>RR</th><th class=n>RR 95% (corr.)</th><th class=n>slow records</th></tr>");
        for f in r.findings.iter().chain(&r.pairs).take(12) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=n><span class=bar style=\"width:{:.0}px\"></span>{:.0}%</td><td class=n>{:.1}%</td><td class=n>{:.1}%</td><td class=n>{:.1}</td><td class=n>{:.1}&ndash;{:.1}</td><td class=n>{}</td></tr>",
                esc(&finding_label(names, f)),
                (f.excess_share.clamp(0.0, 1.0) * 80.0),
                f.excess_share * 100.0,
                f.share_slow * 100.0,
                f.share_base * 100.0,
                f.rr,
                f.rr_low,
                f.rr_high,
                f.support
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h3>Phases: mean of the slow set vs the baseline</h3><table class=\"phases\"><tr><th>phase</th><th class=n>slow mean</th><th class=n>baseline mean</th><th class=n>excess</th></tr>");
    for i in 0..PHASES {
        let (a, b) = (r.phase_slow_ns[i], r.phase_base_ns[i]);
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            phase_name(i),
            format_ns(a as u64),
            format_ns(b as u64),
            esc(&signed(a - b))
        );
    }
    h.push_str("</table>");
    if !w.events.is_empty() {
        h.push_str("<h3>Agent events around the window</h3><table class=\"events\"><tr><th>time</th><th>event</th><th class=n>generation</th><th class=n>worker</th></tr>");
        for (ev, shard) in w.events.iter().take(30) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{shard}</td></tr>",
                esc(&wall(view, ev.time_ns)),
                esc(&ev.kind.name()),
                ev.generation
            );
        }
        h.push_str("</table>");
    }
}

fn slowest(h: &mut String, view: &RingView<'_>, names: &NameTable, d: &Data) {
    let _ = write!(h, "<h2>Slowest requests</h2>");
    if d.slowest.is_empty() {
        h.push_str("<p class=\"none\">No records.</p>");
        return;
    }
    h.push_str("<table id=\"slowest\"><tr><th>start</th><th class=n>worker</th><th>route</th><th>cluster</th><th>endpoint</th><th>type</th><th class=n>status</th><th>reason</th><th class=n>total</th>");
    for i in 0..PHASES {
        let _ = write!(h, "<th class=n>{}</th>", phase_name(i));
    }
    h.push_str("</tr>");
    for s in &d.slowest {
        let r = &s.r;
        let [route, cluster, endpoint] =
            crate::show::subject(names, r.route, r.cluster, r.endpoint).map(|n| esc(&n));
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td>{route}</td><td>{cluster}</td><td>{endpoint}</td><td>{}</td><td class=n>{}</td><td>{}</td><td class=n>{}</td>",
            esc(&wall(view, r.start_ns)),
            s.shard,
            esc(&crate::show::type_name(names, r.req_type)),
            r.status,
            esc(&r.reason.name()),
            format_ns(r.total_ns)
        );
        for p in r.phases_ns {
            let _ = write!(h, "<td class=n>{}</td>", format_ns(p));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}
