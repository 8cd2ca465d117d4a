//! The upstream's injectable faults: the JSON schema accepted by
//! `--faults` and `PUT /_bench/faults`, its validation, and the per-request
//! decision (sans-IO: takes the time since the faults were applied and an
//! RNG).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::rng::Rng;

/// A duration written as `20ms`, `1.5s`, `250us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dur(pub Duration);

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ns = self.0.as_nanos();
        let text = if ns.is_multiple_of(1_000_000) {
            format!("{}ms", ns / 1_000_000)
        } else if ns.is_multiple_of(1000) {
            format!("{}us", ns / 1000)
        } else {
            format!("{ns}ns")
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        ringlog::units::parse_duration_ns(&s)
            .map(|ns| Dur(Duration::from_nanos(ns)))
            .map_err(serde::de::Error::custom)
    }
}

/// A window relative to the moment the faults were applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start, after the faults were applied.
    pub after: Dur,
    /// Length.
    #[serde(rename = "for")]
    pub length: Dur,
}

impl Window {
    fn contains(&self, since_applied: Duration) -> bool {
        since_applied >= self.after.0 && since_applied < self.after.0 + self.length.0
    }
    /// End of the window, relative to when the faults were applied.
    pub fn end(&self) -> Duration {
        self.after.0 + self.length.0
    }
}

/// Lognormal latency: `median * exp(sigma * Z)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lognormal {
    /// Median latency.
    pub median: Dur,
    /// Standard deviation of the log.
    pub sigma: f64,
}

/// Every injectable fault. All fields are optional; `{}` means healthy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Fixed latency added before the response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Dur>,
    /// Lognormal latency (instead of `latency`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_lognormal: Option<Lognormal>,
    /// Fraction of (matching) requests that get the latency; default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_fraction: Option<f64>,
    /// Latency only inside this window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_window: Option<Window>,
    /// Latency only for requests with this header, `"name: value"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_match: Option<String>,
    /// Responses to requests received inside this window are held until it ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall: Option<Window>,
    /// Fraction of requests answered with `error_status`.
    #[serde(skip_serializing_if = "is_zero")]
    pub error_fraction: f64,
    /// Status for injected errors (default 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_status: Option<u16>,
    /// Fraction of requests whose connection is reset instead of answered.
    #[serde(skip_serializing_if = "is_zero")]
    pub reset_fraction: f64,
    /// Send response bodies at this many bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_body_bytes_per_sec: Option<u64>,
    /// Close each connection after this many responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_after: Option<u64>,
    /// Stop accepting connections inside this window (connects queue, then stall).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_stall: Option<Window>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// Wait this long after the request before answering.
    pub delay: Duration,
    /// Status to answer with.
    pub status: u16,
    /// Reset the connection instead of answering.
    pub reset: bool,
    /// Pace the body at this rate.
    pub slow_body_bps: Option<u64>,
}

impl Faults {
    /// Parses and validates JSON; the error names the field and the reason.
    pub fn from_json(text: &str) -> Result<Faults, String> {
        let f: Faults = serde_json::from_str(text).map_err(|e| format!("faults: {e}"))?;
        f.validate()?;
        Ok(f)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), String> {
        let frac = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("faults.{name}: {v} is not between 0 and 1"))
            }
        };
        frac("error_fraction", self.error_fraction)?;
        frac("reset_fraction", self.reset_fraction)?;
        if let Some(f) = self.latency_fraction {
            frac("latency_fraction", f)?;
        }
        if let Some(s) = self.error_status.filter(|s| !(100..=599).contains(s)) {
            return Err(format!("faults.error_status: {s} is not an HTTP status"));
        }
        if let Some(l) = self
            .latency_lognormal
            .filter(|l| !(l.sigma >= 0.0 && l.sigma <= 10.0))
        {
            return Err(format!(
                "faults.latency_lognormal.sigma: {} is not between 0 and 10",
                l.sigma
            ));
        }
        if self.latency.is_some() && self.latency_lognormal.is_some() {
            return Err("faults: set latency or latency_lognormal, not both".into());
        }
        if self.slow_body_bytes_per_sec == Some(0) {
            return Err("faults.slow_body_bytes_per_sec: must be positive".into());
        }
        if self.close_after == Some(0) {
            return Err("faults.close_after: must be positive".into());
        }
        if let Some(m) = &self.latency_match
            && !m.contains(':')
        {
            return Err(format!(
                "faults.latency_match: {m:?} is not \"name: value\""
            ));
        }
        Ok(())
    }

    /// The (lower-cased name, value) of `latency_match`.
    pub fn match_header(&self) -> Option<(String, String)> {
        let m = self.latency_match.as_ref()?;
        let (n, v) = m.split_once(':')?;
        Some((n.trim().to_ascii_lowercase(), v.trim().to_string()))
    }

    /// Decides for one request received `since` after the faults were
    /// applied; `matched` says whether it carries the `latency_match` header.
    pub fn decide(&self, since: Duration, matched: bool, rng: &mut Rng) -> Action {
        let mut a = Action {
            delay: Duration::ZERO,
            status: 200,
            reset: false,
            slow_body_bps: self.slow_body_bytes_per_sec,
        };
        if self.reset_fraction > 0.0 && rng.chance(self.reset_fraction) {
            a.reset = true;
            return a;
        }
        if self.error_fraction > 0.0 && rng.chance(self.error_fraction) {
            a.status = self.error_status.unwrap_or(503);
        }
        let in_window = self.latency_window.is_none_or(|w| w.contains(since));
        let matches = self.latency_match.is_none() || matched;
        let selected = in_window && matches && rng.chance(self.latency_fraction.unwrap_or(1.0));
        if selected {
            if let Some(d) = self.latency {
                a.delay = d.0;
            } else if let Some(l) = self.latency_lognormal {
                let secs = l.median.0.as_secs_f64() * (l.sigma * rng.normal()).exp();
                a.delay = Duration::from_secs_f64(secs.min(3600.0));
            }
        }
        if let Some(w) = self.stall.filter(|w| w.contains(since)) {
            a.delay = a.delay.max(w.end() - since);
        }
        a
    }

    /// Until when (relative to applied) accepting is paused, if it is now.
    pub fn accept_paused(&self, since: Duration) -> Option<Duration> {
        self.accept_stall
            .filter(|w| w.contains(since))
            .map(|w| w.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_and_validates_with_field_names() {
        let f = Faults::from_json(r#"{"latency":"20ms","latency_fraction":0.1,"latency_window":{"after":"1s","for":"5s"}}"#).unwrap();
        assert_eq!(f.latency, Some(Dur(ms(20))));
        assert!(
            Faults::from_json(r#"{"error_fraction":2}"#)
                .unwrap_err()
                .contains("error_fraction")
        );
        assert!(
            Faults::from_json(r#"{"latency":"fast"}"#)
                .unwrap_err()
                .contains("invalid duration")
        );
        assert!(
            Faults::from_json(r#"{"bogus":1}"#)
                .unwrap_err()
                .contains("bogus")
        );
        assert!(
            Faults::from_json(r#"{"latency_match":"nocolon"}"#)
                .unwrap_err()
                .contains("latency_match")
        );
        let round = serde_json::to_string(&f).unwrap();
        assert_eq!(Faults::from_json(&round).unwrap(), f);
    }

    #[test]
    fn fractions_windows_matches_and_stalls() {
        let mut rng = Rng::new(3);
        let f = Faults {
            latency: Some(Dur(ms(20))),
            latency_fraction: Some(0.1),
            ..Faults::default()
        };
        let delayed = (0..20_000)
            .filter(|_| f.decide(ms(0), false, &mut rng).delay == ms(20))
            .count();
        assert!((1700..2300).contains(&delayed), "{delayed}");

        let w = Window {
            after: Dur(ms(100)),
            length: Dur(ms(50)),
        };
        let f = Faults {
            latency: Some(Dur(ms(5))),
            latency_window: Some(w),
            ..Faults::default()
        };
        assert_eq!(f.decide(ms(99), false, &mut rng).delay, ms(0));
        assert_eq!(f.decide(ms(100), false, &mut rng).delay, ms(5));
        assert_eq!(f.decide(ms(150), false, &mut rng).delay, ms(0));

        let f = Faults {
            latency: Some(Dur(ms(5))),
            latency_match: Some("x-order-type: limit".into()),
            ..Faults::default()
        };
        assert_eq!(f.decide(ms(0), false, &mut rng).delay, ms(0));
        assert_eq!(f.decide(ms(0), true, &mut rng).delay, ms(5));
        assert_eq!(
            f.match_header(),
            Some(("x-order-type".into(), "limit".into()))
        );

        let f = Faults {
            stall: Some(w),
            ..Faults::default()
        };
        assert_eq!(f.decide(ms(120), false, &mut rng).delay, ms(30));
        assert_eq!(f.decide(ms(10), false, &mut rng).delay, ms(0));

        let f = Faults {
            error_fraction: 1.0,
            error_status: Some(500),
            ..Faults::default()
        };
        assert_eq!(f.decide(ms(0), false, &mut rng).status, 500);
        let f = Faults {
            reset_fraction: 1.0,
            ..Faults::default()
        };
        assert!(f.decide(ms(0), false, &mut rng).reset);
        let f = Faults {
            accept_stall: Some(w),
            ..Faults::default()
        };
        assert_eq!(f.accept_paused(ms(120)), Some(ms(150)));
        assert_eq!(f.accept_paused(ms(160)), None);
    }

    #[test]
    fn lognormal_median_holds() {
        let mut rng = Rng::new(9);
        let f = Faults {
            latency_lognormal: Some(Lognormal {
                median: Dur(ms(10)),
                sigma: 0.8,
            }),
            ..Faults::default()
        };
        let mut v: Vec<Duration> = (0..10_001)
            .map(|_| f.decide(ms(0), false, &mut rng).delay)
            .collect();
        v.sort();
        let med = v[5000].as_secs_f64() * 1000.0;
        assert!((9.0..11.0).contains(&med), "median {med} ms");
    }
}
