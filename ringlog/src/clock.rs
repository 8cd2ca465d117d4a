//! Clock readings and wall-time conversion.
//!
//! Records carry CLOCK_MONOTONIC nanoseconds (cheap, never jumps). The file
//! header holds one monotonic and one realtime reading taken back to back,
//! so any record converts to wall time as `realtime_anchor + (t - mono_anchor)`.

use rustix::time::{ClockId, clock_gettime};

/// CLOCK_MONOTONIC in ns.
#[inline]
pub fn mono_ns() -> u64 {
    ts_ns(clock_gettime(ClockId::Monotonic))
}

/// CLOCK_REALTIME in ns since the Unix epoch.
pub fn realtime_ns() -> u64 {
    ts_ns(clock_gettime(ClockId::Realtime))
}

/// A (monotonic, realtime) pair read back to back; the pair with the
/// tightest bracket out of a few tries, so the anchor error is sub-µs.
pub fn anchor() -> (u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..5 {
        let m1 = mono_ns();
        let r = realtime_ns();
        let m2 = mono_ns();
        let width = m2.saturating_sub(m1);
        if width < best.0 {
            best = (width, m1 + width / 2, r);
        }
    }
    (best.1, best.2)
}

fn ts_ns(ts: rustix::time::Timespec) -> u64 {
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Converts monotonic ns to wall ns with the given anchors.
pub fn to_wall(mono: u64, mono_anchor: u64, realtime_anchor: u64) -> u64 {
    if mono >= mono_anchor {
        realtime_anchor.saturating_add(mono - mono_anchor)
    } else {
        realtime_anchor.saturating_sub(mono_anchor - mono)
    }
}

/// Formats wall ns since the epoch as RFC 3339 UTC with µs,
/// e.g. `2026-11-22T02:38:13.123456Z`.
pub fn rfc3339(wall_ns: u64) -> String {
    let secs = wall_ns / 1_000_000_000;
    let micros = (wall_ns % 1_000_000_000) / 1000;
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29T12:34:56.789012Z
        assert_eq!(
            rfc3339(951_827_696_789_012_345),
            "2000-02-29T12:34:56.789012Z"
        );
        // 2026-11-22T00:00:00Z
        assert_eq!(
            rfc3339(1_795_305_600_000_000_000),
            "2026-11-22T00:00:00.000000Z"
        );
    }

    #[test]
    fn anchor_is_consistent() {
        let (m, r) = anchor();
        let later_m = mono_ns();
        let later_r = realtime_ns();
        let predicted = to_wall(later_m, m, r);
        assert!(predicted.abs_diff(later_r) < 50_000_000, "anchor drifted");
        assert_eq!(to_wall(m - 5, m, r), r - 5);
    }
}
