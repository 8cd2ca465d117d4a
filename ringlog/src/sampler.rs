//! Per-request-type sampling (sans-IO: every call takes `now`).
//!
//! For each finished request the agent asks [`Sampler::decide`] whether to
//! keep a record. The rules, in order:
//! 1. `keep_errors`: failed requests are kept (weight 1).
//! 2. `keep_slower_than`: requests at least that slow are kept (weight 1).
//! 3. `keep_above_quantile`: requests at or above a rolling per-type
//!    estimate of that quantile are kept (weight 1).
//! 4. Everything else is kept with probability `p` (weight 1/p).
//!
//! Rules 1-3 share a flood cap per 100 ms slice; beyond it a request is
//! *demoted* to rule 4, so it is still kept with a known probability and the
//! weights stay unbiased. Rule 4 is held to `max_records_per_sec` by an
//! adaptive level: when a slice keeps more than its share, every type's rate
//! halves (level + 1); when a slice keeps under a quarter of its share, the
//! rate doubles back (level - 1).
//!
//! The probabilistic decision is `hash >> 48 <= code`, with the inclusion
//! probability `(code + 1) / 65536` stored in the record, so weights are
//! exact. It depends only on the trace-id hash and the rate: every node
//! decides the same for the same id, and the ids kept at a lower rate are a
//! subset of those kept at a higher one.

mod quantile;

use crate::record::{KeepReason, P_ONE};
use quantile::RollingQuantile;

/// Length of a budget slice.
const SLICE_NS: u64 = 100_000_000;
/// Slices per second.
const SLICES_PER_SEC: u64 = 1_000_000_000 / SLICE_NS;
/// Halving level cap.
const MAX_LEVEL: u32 = 16;

/// Sampling rules of one request type.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeRule {
    /// Probability to keep a fast success, 0..=1.
    pub p: f64,
    /// Keep every failed request.
    pub keep_errors: bool,
    /// Keep every request at least this slow (ns).
    pub keep_slower_than_ns: Option<u64>,
    /// Keep every request above this rolling quantile (e.g. 0.99).
    pub keep_above_quantile: Option<f64>,
}

impl TypeRule {
    /// A rule with only a rate.
    pub fn rate(p: f64) -> TypeRule {
        TypeRule {
            p,
            keep_errors: false,
            keep_slower_than_ns: None,
            keep_above_quantile: None,
        }
    }
}

/// Sampler configuration: a rule per request type id (index), a default.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Rule for type ids without their own.
    pub default: TypeRule,
    /// Rules by request type id; id 0 is conventionally the default type.
    pub types: Vec<TypeRule>,
    /// Budget for probabilistically kept records per second (0 = none).
    pub max_records_per_sec: u64,
    /// Cap for records kept by rules 1-3 per second (0 = none).
    pub max_forced_per_sec: u64,
}

/// The sampler's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Keep a record.
    pub keep: bool,
    /// Why (meaningful when kept).
    pub reason: KeepReason,
    /// Inclusion probability code for the record: p = (code + 1) / 65536.
    pub sample_p: u16,
    /// Matched rules 1-3 but was over the flood cap.
    pub demoted: bool,
}

/// Per-type state, hot fields first: the common path reads `code`,
/// `sampled`, `keep_errors`, `slow_ns` and `q_threshold` and nothing else.
#[derive(Debug, Clone)]
struct TypeState {
    /// Rate in force at the current level, as a code.
    code: u16,
    /// False when p = 0 (never sampled; rules 1-3 still apply).
    sampled: bool,
    keep_errors: bool,
    /// `keep_slower_than`, or u64::MAX when off.
    slow_ns: u64,
    /// Rolling quantile threshold, or u64::MAX when off or not warmed up.
    q_threshold: u64,
    /// Configured rate as a code.
    base_code: u16,
    /// Target quantile and its estimator, when `keep_above_quantile` is set.
    quantile: Option<(f64, RollingQuantile)>,
}

/// The sampler of one worker.
#[derive(Debug, Clone)]
pub struct Sampler {
    types: Vec<TypeState>,
    default: TypeState,
    level: u32,
    slice_start: u64,
    second_start: u64,
    slice_budget: u64,
    slice_forced_cap: u64,
    slice_kept: u64,
    slice_forced: u64,
}

/// Converts a probability to the code whose (code + 1) / 65536 is nearest
/// (a positive rate never rounds to zero; 0 means "never").
pub fn code_of(p: f64) -> Option<u16> {
    if p.is_nan() || p <= 0.0 {
        return None;
    }
    let c = (p.min(1.0) * 65536.0).round() - 1.0;
    Some(c.clamp(0.0, f64::from(P_ONE)) as u16)
}

impl TypeState {
    fn new(rule: &TypeRule) -> TypeState {
        let code = code_of(rule.p);
        TypeState {
            code: code.unwrap_or(0),
            sampled: code.is_some(),
            keep_errors: rule.keep_errors,
            slow_ns: rule.keep_slower_than_ns.unwrap_or(u64::MAX),
            q_threshold: u64::MAX,
            base_code: code.unwrap_or(0),
            quantile: rule
                .keep_above_quantile
                .map(|q| (q, RollingQuantile::new())),
        }
    }

    fn set_level(&mut self, level: u32) {
        // code + 1 is the numerator over 65536; halve the numerator per level.
        let num = (u32::from(self.base_code) + 1) >> level;
        self.code = num.max(1).saturating_sub(1) as u16;
    }
}

impl Sampler {
    /// A sampler starting at `now_ns`.
    pub fn new(cfg: &SamplerConfig, now_ns: u64) -> Sampler {
        let per_slice = |per_sec: u64| {
            if per_sec == 0 {
                u64::MAX
            } else {
                per_sec.div_ceil(SLICES_PER_SEC).max(1)
            }
        };
        Sampler {
            types: cfg.types.iter().map(TypeState::new).collect(),
            default: TypeState::new(&cfg.default),
            level: 0,
            slice_start: now_ns,
            second_start: now_ns,
            slice_budget: per_slice(cfg.max_records_per_sec),
            slice_forced_cap: per_slice(cfg.max_forced_per_sec),
            slice_kept: 0,
            slice_forced: 0,
        }
    }

    /// The current halving level (0 = configured rates).
    pub fn level(&self) -> u32 {
        self.level
    }

    /// Decides for one finished request of type `req_type`.
    #[inline]
    pub fn decide(
        &mut self,
        now_ns: u64,
        req_type: u16,
        trace_hash: u64,
        duration_ns: u64,
        is_error: bool,
    ) -> Decision {
        if now_ns.wrapping_sub(self.slice_start) >= SLICE_NS {
            self.tick(now_ns);
        }
        let t = match self.types.get_mut(req_type as usize) {
            Some(t) => t,
            None => &mut self.default,
        };
        let hit = (is_error & t.keep_errors)
            | (duration_ns >= t.slow_ns)
            | (duration_ns >= t.q_threshold);
        if let Some((_, q)) = t.quantile.as_mut() {
            q.record(duration_ns);
        }
        let (code, sampled) = (t.code, t.sampled);
        let mut demoted = false;
        if hit {
            let reason = if is_error && t.keep_errors {
                KeepReason::Error
            } else if duration_ns >= t.slow_ns {
                KeepReason::Slow
            } else {
                KeepReason::AboveQuantile
            };
            if self.slice_forced < self.slice_forced_cap {
                self.slice_forced += 1;
                return Decision {
                    keep: true,
                    reason,
                    sample_p: P_ONE,
                    demoted: false,
                };
            }
            demoted = true;
        }
        if sampled && (trace_hash >> 48) as u16 <= code {
            self.slice_kept += 1;
            if self.slice_kept > self.slice_budget {
                self.raise_level(now_ns);
            }
            return Decision {
                keep: true,
                reason: KeepReason::Sampled,
                sample_p: code,
                demoted,
            };
        }
        Decision {
            keep: false,
            reason: KeepReason::None,
            sample_p: code,
            demoted,
        }
    }

    /// Forces a keep (e.g. a debug header), counted as such, weight 1.
    pub fn forced() -> Decision {
        Decision {
            keep: true,
            reason: KeepReason::Forced,
            sample_p: P_ONE,
            demoted: false,
        }
    }

    fn raise_level(&mut self, now_ns: u64) {
        if self.level < MAX_LEVEL {
            self.set_level(self.level + 1);
        }
        self.slice_start = now_ns;
        self.slice_kept = 0;
    }

    fn set_level(&mut self, level: u32) {
        self.level = level;
        for t in self
            .types
            .iter_mut()
            .chain(std::iter::once(&mut self.default))
        {
            t.set_level(level);
        }
    }

    #[cold]
    fn tick(&mut self, now_ns: u64) {
        if self.level > 0 && self.slice_kept.saturating_mul(4) < self.slice_budget {
            self.set_level(self.level - 1);
        }
        self.slice_start = now_ns;
        self.slice_kept = 0;
        self.slice_forced = 0;
        let decay = now_ns.wrapping_sub(self.second_start) >= 1_000_000_000;
        if decay {
            self.second_start = now_ns;
        }
        for t in self
            .types
            .iter_mut()
            .chain(std::iter::once(&mut self.default))
        {
            if let Some((target, q)) = t.quantile.as_mut() {
                q.refresh(*target);
                t.q_threshold = q.threshold().unwrap_or(u64::MAX);
                if decay {
                    q.decay();
                }
            }
        }
    }
}

/// Hashes arbitrary bytes (e.g. an `x-request-id`) to a well-mixed u64
/// (FNV-1a then a SplitMix64 finaliser). Stable across versions and nodes.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    crate::synth::mix(h)
}

/// The sampling hash of a W3C trace id (16 bytes): its low 8 bytes, mixed.
pub fn hash_trace_id(trace_id: &[u8; 16]) -> u64 {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    crate::synth::mix(u64::from_le_bytes(low))
}

#[cfg(test)]
mod tests;
