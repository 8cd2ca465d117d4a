//! Human units shared by the config, the CLIs and the bench: durations
//! (`250us`, `500ms`, `5s`, `1m`, `2h`) and sizes (`4096`, `64KiB`, `64MiB`,
//! `1GiB`, also `KB`/`MB`/`GB` as powers of ten).

/// A unit string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// Not a duration.
    #[error(
        "invalid duration {input:?}: expected a number with a unit ns, us, ms, s, m or h, e.g. 500ms"
    )]
    Duration {
        /// The input.
        input: String,
    },
    /// Not a size.
    #[error(
        "invalid size {input:?}: expected bytes or a number with KiB, MiB, GiB, KB, MB or GB, e.g. 64MiB"
    )]
    Size {
        /// The input.
        input: String,
    },
}

fn split(s: &str) -> (&str, &str) {
    let s = s.trim();
    let idx = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..idx], s[idx..].trim())
}

/// Parses a duration into ns.
pub fn parse_duration_ns(input: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Duration {
        input: input.to_string(),
    };
    let (num, unit) = split(input);
    let n: f64 = num.parse().map_err(|_| err())?;
    let mul = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(err()),
    };
    let v = n * mul;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(err());
    }
    Ok(v.round() as u64)
}

/// Parses a size into bytes.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Size {
        input: input.to_string(),
    };
    let (num, unit) = split(input);
    let n: f64 = num.parse().map_err(|_| err())?;
    let mul: f64 = match unit {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return Err(err()),
    };
    let v = n * mul;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 || v.fract() != 0.0 {
        return Err(err());
    }
    Ok(v as u64)
}

/// Formats ns with a unit that keeps three significant digits:
/// `850ns`, `12.3µs`, `4.10ms`, `2.50s`.
pub fn format_ns(ns: u64) -> String {
    let f = ns as f64;
    let (v, unit) = if ns < 1_000 {
        return format!("{ns}ns");
    } else if ns < 1_000_000 {
        (f / 1e3, "µs")
    } else if ns < 1_000_000_000 {
        (f / 1e6, "ms")
    } else {
        (f / 1e9, "s")
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// Formats bytes as the largest binary unit with a whole number.
pub fn format_size(bytes: u64) -> String {
    for (unit, div) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= div && bytes.is_multiple_of(div) {
            return format!("{}{unit}", bytes / div);
        }
    }
    if bytes >= 1 << 20 {
        return format!("{:.1}MiB", bytes as f64 / f64::from(1u32 << 20));
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration_ns("5s"), Ok(5_000_000_000));
        assert_eq!(parse_duration_ns("1m"), Ok(60_000_000_000));
        assert_eq!(parse_duration_ns("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_duration_ns("250us"), Ok(250_000));
        assert!(parse_duration_ns("5").is_err());
        assert!(parse_duration_ns("ms").is_err());
        assert!(parse_duration_ns("-1s").is_err());
        assert!(parse_duration_ns("1e999s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("1.5B").is_err());
        assert!(parse_size("12XB").is_err());
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_ns(850), "850ns");
        assert_eq!(format_ns(12_345), "12.3µs");
        assert_eq!(format_ns(4_100_000), "4.10ms");
        assert_eq!(format_ns(2_500_000_000), "2.50s");
    }
}
