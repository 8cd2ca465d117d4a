//! `--since`, `--until` and `--where`, shared by the analysis commands, and
//! name <-> id helpers for dimensions.

use anyhow::{Context, Result, bail};
use std::sync::atomic::{AtomicUsize, Ordering};

use ringlog::analyze::{Dim, Filter, Merge};
use ringlog::{Header, Item, NameKind, NameTable, Record, RingView};

/// Selection flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Select {
    /// Start: relative to the newest entry (`-5m`, `-30s`) or absolute
    /// (`2026-11-22T12:03:00Z`, or `12:03:00` on the newest entry's UTC day).
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,
    /// End, same forms as --since.
    #[arg(long, allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Conditions that must all hold, e.g. `route=orders,status>=500,total>10ms`.
    #[arg(long = "where", value_name = "FILTER")]
    pub filter: Option<String>,
}

/// A resolved selection: monotonic range and filter.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Start (monotonic ns, inclusive).
    pub from: u64,
    /// End (monotonic ns, exclusive).
    pub to: u64,
    /// Record filter.
    pub filter: Filter,
}

impl Selection {
    /// Whether a record is selected (by start time and filter).
    #[inline]
    pub fn keep(&self, r: &Record, shard: u32) -> bool {
        r.start_ns >= self.from && r.start_ns < self.to && self.filter.keep(r, shard)
    }

    /// Whether an event is selected (by time; `--where` is for records).
    #[inline]
    pub fn keep_event(&self, e: &ringlog::Event) -> bool {
        e.time_ns >= self.from && e.time_ns < self.to
    }

    /// Whether an entry (record or event) is selected, for `tail` and
    /// `export`: a `--where` filter is on record fields, so it excludes
    /// events (otherwise `tail -n 3 --where route=x` could print three
    /// events and no record of route x).
    pub fn keep_entry(&self, e: &ringlog::Entry) -> bool {
        match &e.item {
            Item::Record(r) => self.keep(r, e.shard),
            Item::Event(x) => self.filter.is_empty() && self.keep_event(x),
        }
    }
}

/// The newest entry time (monotonic ns) in the ring, 0 if empty.
pub fn newest(view: &RingView<'_>) -> u64 {
    let mut t = 0;
    for s in 0..view.shards() {
        let (first, end) = view.range(s);
        // The last few slots are enough: entries commit in end order per shard.
        for ticket in end.saturating_sub(64).max(first)..end {
            if let ringlog::SlotRead::Item(i) = view.read(s, ticket) {
                t = t.max(i.time_key());
            }
        }
    }
    t
}

impl Select {
    /// Resolves against `view`.
    pub fn resolve(&self, view: &RingView<'_>, names: &NameTable) -> Result<Selection> {
        let h = view.header();
        let end = newest(view);
        let from = match &self.since {
            Some(s) => time(s, h, end).with_context(|| format!("--since {s}"))?,
            None => 0,
        };
        let to = match &self.until {
            Some(s) => time(s, h, end).with_context(|| format!("--until {s}"))?,
            None => u64::MAX,
        };
        if from >= to {
            bail!("--since is not before --until");
        }
        Ok(Selection {
            from,
            to,
            filter: self.filter(names)?,
        })
    }

    /// The `--where` filter alone, with names looked up in `names`.
    pub fn filter(&self, names: &NameTable) -> Result<Filter> {
        match &self.filter {
            Some(f) => Filter::parse(f, &|d, n| ids(names, d, n)).context("--where"),
            None => Ok(Filter::default()),
        }
    }
}

/// A time argument as monotonic ns: `-DUR` before `end`, RFC 3339 UTC, or
/// `HH:MM:SS[.frac]` on `end`'s UTC day.
pub fn time(s: &str, h: &Header, end: u64) -> Result<u64> {
    let s = s.trim();
    if let Some(rel) = s.strip_prefix('-') {
        let d = ringlog::units::parse_duration_ns(rel)?;
        return Ok(end.saturating_sub(d));
    }
    let wall = if s.contains('T') {
        parse_rfc3339(s)?
    } else {
        let day = h.wall_ns(end) / 86_400_000_000_000 * 86_400_000_000_000;
        day + parse_clock(s)?
    };
    // wall -> mono with the header's anchors.
    Ok(if wall >= h.realtime_anchor {
        h.mono_anchor.saturating_add(wall - h.realtime_anchor)
    } else {
        h.mono_anchor.saturating_sub(h.realtime_anchor - wall)
    })
}

fn parse_clock(s: &str) -> Result<u64> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let parts: Vec<&str> = hms.split(':').collect();
    if parts.len() != 3 {
        bail!("`{s}`: expected HH:MM:SS");
    }
    let n = |x: &str, max: u64| -> Result<u64> {
        let v: u64 = x
            .parse()
            .with_context(|| format!("`{s}`: `{x}` is not a number"))?;
        if v > max {
            bail!("`{s}`: `{x}` out of range");
        }
        Ok(v)
    };
    let secs = n(parts[0], 23)? * 3600 + n(parts[1], 59)? * 60 + n(parts[2], 60)?;
    let mut ns = 0u64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            bail!("`{s}`: bad fraction");
        }
        ns = format!("{digits:0<9}").parse().unwrap_or(0);
    }
    Ok(secs * 1_000_000_000 + ns)
}

fn parse_rfc3339(s: &str) -> Result<u64> {
    let body = s.strip_suffix('Z').unwrap_or(s);
    let (date, clock) = body
        .split_once('T')
        .with_context(|| format!("`{s}`: expected YYYY-MM-DDTHH:MM:SSZ"))?;
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 {
        bail!("`{s}`: expected YYYY-MM-DD");
    }
    let y: i64 = d[0].parse().with_context(|| format!("`{s}`: year"))?;
    let m: u32 = d[1].parse().with_context(|| format!("`{s}`: month"))?;
    let day: u32 = d[2].parse().with_context(|| format!("`{s}`: day"))?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || y < 1970 {
        bail!("`{s}`: date out of range");
    }
    let days = days_from_civil(y, m, day);
    Ok(days as u64 * 86_400_000_000_000 + parse_clock(clock)?)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The name-table kind behind a dimension, if it has names.
pub fn kind(d: Dim) -> Option<NameKind> {
    match d {
        Dim::Route => Some(NameKind::Route),
        Dim::Cluster => Some(NameKind::Cluster),
        Dim::Endpoint => Some(NameKind::Endpoint),
        Dim::Type => Some(NameKind::RequestType),
        Dim::Worker => Some(NameKind::Worker),
        Dim::Peer => Some(NameKind::Peer),
        _ => None,
    }
}

/// Every id that `name` has for dimension `d`.
pub fn ids(names: &NameTable, d: Dim, name: &str) -> Vec<u64> {
    let Some(k) = kind(d) else {
        return Vec::new();
    };
    let mut out: Vec<u64> = names
        .entries()
        .iter()
        .filter(|e| e.kind == k && e.name == name)
        .map(|e| u64::from(e.id))
        .collect();
    if d == Dim::Type && name == "default" {
        out.push(0);
    }
    out
}

/// A dimension value for people.
pub fn label(names: &NameTable, d: Dim, v: u64) -> String {
    match d {
        Dim::Type => crate::show::type_name(names, v as u16),
        Dim::Status if v == 0 => "l4".into(),
        Dim::Status | Dim::Generation => v.to_string(),
        Dim::Reason => ringlog::Reason::from_code(v as u8).name().into_owned(),
        Dim::Phase => ringlog::analyze::phase_name(v as usize).to_string(),
        Dim::Policy => ringlog::analyze::POLICY_NAMES
            .get(v as usize)
            .map_or_else(|| v.to_string(), |n| (*n).to_string()),
        Dim::Arm if v == 0 => "none".into(),
        Dim::Arm => format!(
            "{}/arm{}",
            names.display(NameKind::Route, (v >> 8) as u32),
            v & 0xff
        ),
        _ => match kind(d) {
            Some(k) => names.display(k, v as u32),
            None => v.to_string(),
        },
    }
}

/// Threads a scan may use; 0 means every core (at most [`MAX_THREADS`]).
/// Set once from `--threads` before any scan.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Cap on the automatic thread count.
pub const MAX_THREADS: usize = 8;

/// Below this many slots a scan runs on one thread (starting threads costs
/// more than it saves).
const PARALLEL_MIN_SLOTS: u64 = 1 << 18;

/// Sets the thread count for scans (`--threads`; 0 = automatic).
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// How many parts a scan of `view` is cut into.
fn parts(view: &RingView<'_>) -> usize {
    let slots: u64 = (0..view.shards())
        .map(|s| {
            let (first, end) = view.range(s);
            end - first
        })
        .sum();
    if slots < PARALLEL_MIN_SLOTS {
        return 1;
    }
    match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS),
        n => n,
    }
}

/// Visits every selected record and every event in range, shard by shard
/// (the aggregations are order-free, so no time merge is paid for), and
/// returns the accumulator. Large rings are cut into one part per thread;
/// each part fills its own accumulator from `make`, and the parts are
/// merged in order at the end.
pub fn scan<A, M, R, E>(view: &RingView<'_>, sel: &Selection, make: M, rec: R, ev: E) -> A
where
    A: Merge + Send,
    M: Fn() -> A + Sync,
    R: Fn(&mut A, &Record, u32) + Sync,
    E: Fn(&mut A, &ringlog::Event, u32) + Sync,
{
    let part = |k: usize, n: usize| {
        let mut acc = make();
        view.for_each_unordered_part(k, n, |e| match &e.item {
            Item::Record(r) if sel.keep(r, e.shard) => rec(&mut acc, r, e.shard),
            Item::Event(x) if sel.keep_event(x) => ev(&mut acc, x, e.shard),
            _ => {}
        });
        acc
    };
    let n = parts(view);
    if n <= 1 {
        return part(0, 1);
    }
    std::thread::scope(|s| {
        // Parts 1.. on their own threads (or here, if a thread cannot be
        // started), part 0 on this one.
        let handles: Vec<_> = (1..n)
            .map(|k| {
                std::thread::Builder::new()
                    .name(format!("scan-{k}"))
                    .spawn_scoped(s, move || part(k, n))
                    .map_err(|_| k)
            })
            .collect();
        let mut acc = part(0, n);
        for h in handles {
            let other = match h {
                Ok(h) => match h.join() {
                    Ok(a) => a,
                    // A panic in a part is a bug; report it as this thread's.
                    Err(p) => std::panic::resume_unwind(p),
                },
                Err(k) => part(k, n),
            };
            acc.merge(other);
        }
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let wall = parse_rfc3339("2026-11-22T02:38:13.5Z").unwrap();
        assert_eq!(ringlog::clock::rfc3339(wall), "2026-11-22T02:38:13.500000Z");
        assert!(parse_rfc3339("2026-13-01T00:00:00Z").is_err());
        assert!(parse_clock("25:00:00").is_err());
    }
}
