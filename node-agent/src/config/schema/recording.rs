//! The recording parts of the schema: `request_types` (what drives
//! sampling and attribution), `sampling` and the `ring` file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Dur, Match, Size, yes};

/// A request type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestType {
    /// Unique name.
    pub name: String,
    /// What it matches.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Sampling probability of fast successes.
    pub sample: f64,
}

/// Sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// Rate for requests of no listed type.
    #[serde(default = "one_percent")]
    pub default: f64,
    /// Keep every failed request.
    #[serde(default = "yes")]
    pub keep_errors: bool,
    /// Keep every request at least this slow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_slower_than: Option<Dur>,
    /// Keep requests above this rolling per-type quantile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_above_quantile: Option<f64>,
    /// Budget of sampled records per second (per node).
    #[serde(default = "budget_default")]
    pub max_records_per_sec: u64,
}

fn one_percent() -> f64 {
    0.01
}
fn budget_default() -> u64 {
    50_000
}

impl Default for Sampling {
    fn default() -> Sampling {
        Sampling {
            default: one_percent(),
            keep_errors: true,
            keep_slower_than: None,
            keep_above_quantile: None,
            max_records_per_sec: budget_default(),
        }
    }
}

/// The flight recorder file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ring {
    /// Path of the ring file.
    #[serde(default = "ring_path")]
    pub path: PathBuf,
    /// Size of the ring file.
    #[serde(default = "ring_size")]
    pub size: Size,
}

fn ring_path() -> PathBuf {
    PathBuf::from("/var/run/tailmesh/ring")
}
fn ring_size() -> Size {
    Size(64 << 20)
}

impl Default for Ring {
    fn default() -> Ring {
        Ring {
            path: ring_path(),
            size: ring_size(),
        }
    }
}
