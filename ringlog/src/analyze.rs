//! Offline analysis of a ring: weighted histograms by dimension, P999 spike
//! detection and slow-tail attribution. Everything here is sans-IO: it takes
//! decoded records and events (in time order, as [`crate::RingView::snapshot`]
//! yields them) and keeps bounded state, never a Vec of every record.

pub mod filter;
pub mod hist;
pub mod qhist;
pub mod spikes;
pub mod why;

pub use filter::{Filter, FilterError};
pub use qhist::{Quantile, WHist};

use crate::record::{PHASES, Phase, Record};

/// A dimension records can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Dim {
    /// Route name id.
    Route,
    /// Cluster name id.
    Cluster,
    /// Endpoint name id.
    Endpoint,
    /// Request type id.
    Type,
    /// Canary arm of the route: `route << 8 | arm`, 0 for single-target
    /// routes.
    Arm,
    /// Worker (shard index).
    Worker,
    /// HTTP status (0 for L4).
    Status,
    /// Local reason code.
    Reason,
    /// Config generation.
    Generation,
    /// The phase that took longest.
    Phase,
    /// The agent's own decision on the request ([`policy_value`]): none,
    /// rate limited, delayed by smoothing, breaker open, overflow, retried.
    Policy,
    /// Peer identity name id (mTLS; 0 for plaintext).
    Peer,
}

/// Names of [`Dim::Policy`] values, by value.
pub const POLICY_NAMES: [&str; 6] = [
    "none",
    "rate_limited",
    "delayed",
    "breaker_open",
    "overflow",
    "retried",
];

/// A record's [`Dim::Policy`] value: what the agent's own policies did to
/// it (a rejection first, then a delay, then a retry).
#[inline]
pub fn policy_value(r: &Record) -> u64 {
    use crate::record::{Flags, Reason};
    match r.reason {
        Reason::RateLimited => 1,
        Reason::BreakerOpen => 3,
        Reason::Overflow => 4,
        _ if r.flags.has(Flags::RATE_LIMITED) => 2,
        _ if r.retries > 0 => 5,
        _ => 0,
    }
}

impl Dim {
    /// Every dimension, in report order; `ALL[d as usize] == d`.
    pub const ALL: [Dim; 12] = [
        Dim::Route,
        Dim::Cluster,
        Dim::Endpoint,
        Dim::Type,
        Dim::Arm,
        Dim::Worker,
        Dim::Status,
        Dim::Reason,
        Dim::Generation,
        Dim::Phase,
        Dim::Policy,
        Dim::Peer,
    ];

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Dim::Route => "route",
            Dim::Cluster => "cluster",
            Dim::Endpoint => "endpoint",
            Dim::Type => "type",
            Dim::Arm => "arm",
            Dim::Worker => "worker",
            Dim::Status => "status",
            Dim::Reason => "reason",
            Dim::Generation => "generation",
            Dim::Phase => "phase",
            Dim::Policy => "policy",
            Dim::Peer => "peer",
        }
    }

    /// Parses a dimension name (a few aliases accepted).
    pub fn parse(s: &str) -> Option<Dim> {
        Some(match s.trim() {
            "route" => Dim::Route,
            "cluster" => Dim::Cluster,
            "endpoint" | "ep" => Dim::Endpoint,
            "type" | "request_type" => Dim::Type,
            "arm" | "canary" => Dim::Arm,
            "worker" | "shard" => Dim::Worker,
            "status" => Dim::Status,
            "reason" => Dim::Reason,
            "generation" | "gen" => Dim::Generation,
            "phase" => Dim::Phase,
            "policy" | "decision" => Dim::Policy,
            "peer" | "identity" => Dim::Peer,
            _ => return None,
        })
    }

    /// This record's value of the dimension; `shard` is the worker.
    #[inline]
    pub fn value(self, r: &Record, shard: u32) -> u64 {
        match self {
            Dim::Route => u64::from(r.route),
            Dim::Cluster => u64::from(r.cluster),
            Dim::Endpoint => u64::from(r.endpoint),
            Dim::Type => u64::from(r.req_type),
            Dim::Arm if r.arm == 0 => 0,
            Dim::Arm => u64::from(r.route) << 8 | u64::from(r.arm),
            Dim::Worker => u64::from(shard),
            Dim::Status => u64::from(r.status),
            Dim::Reason => u64::from(r.reason.code()),
            Dim::Generation => u64::from(r.generation),
            Dim::Phase => dominant_phase(r) as u64,
            Dim::Policy => policy_value(r),
            Dim::Peer => u64::from(r.peer),
        }
    }
}

/// Unkeyed hasher for maps whose keys no client chooses: a multiply-rotate
/// mix (FxHash-like), several times cheaper than SipHash per lookup. Used
/// for the aggregation maps (small ids from the ring file the operator
/// chose to read) and for the agent's upstream pool (config addresses); no
/// flooding resistance is needed for either.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHash(u64);

impl FastHash {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for FastHash {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.add(u64::from(x));
    }
    #[inline]
    fn write_u16(&mut self, x: u16) {
        self.add(u64::from(x));
    }
    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.add(u64::from(x));
    }
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }
    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.add(x as u64);
    }
}

/// A HashMap with [`FastHash`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FastHash>>;

/// A streaming accumulator that can be split over parts of the input (one
/// per thread, say) and put back together: merging the parts gives what one
/// accumulator fed every record would give, up to float rounding.
pub trait Merge {
    /// Adds everything `other` has seen.
    fn merge(&mut self, other: Self);
}

impl<A: Merge, B: Merge> Merge for (A, B) {
    fn merge(&mut self, other: Self) {
        self.0.merge(other.0);
        self.1.merge(other.1);
    }
}

impl<T> Merge for Vec<T> {
    fn merge(&mut self, mut other: Self) {
        self.append(&mut other);
    }
}

impl Merge for () {
    fn merge(&mut self, _: Self) {}
}

/// Merges the values of `other` into `into`, combining those under the same
/// key with `both`.
pub(crate) fn merge_map<K: Eq + std::hash::Hash, V>(
    into: &mut FastMap<K, V>,
    other: FastMap<K, V>,
    both: impl Fn(&mut V, V),
) {
    for (k, v) in other {
        match into.entry(k) {
            std::collections::hash_map::Entry::Occupied(mut e) => both(e.get_mut(), v),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(v);
            }
        }
    }
}

/// Index of the longest phase (ties: the earlier one).
#[inline]
pub fn dominant_phase(r: &Record) -> usize {
    let mut best = 0;
    for i in 1..PHASES {
        if r.phases_ns[i] > r.phases_ns[best] {
            best = i;
        }
    }
    best
}

/// Name of phase index `i`.
pub fn phase_name(i: usize) -> &'static str {
    Phase::ALL.get(i).map_or("?", |p| p.name())
}

#[cfg(test)]
mod tests {
    use super::Dim;

    #[test]
    fn policy_names_the_agents_own_decision() {
        use crate::record::{Flags, Reason, Record};
        let v = |reason, flags, retries| {
            let r = Record {
                reason,
                flags: Flags(flags),
                retries,
                ..Record::default()
            };
            super::POLICY_NAMES[super::policy_value(&r) as usize]
        };
        assert_eq!(v(Reason::None, 0, 0), "none");
        assert_eq!(
            v(Reason::RateLimited, Flags::RATE_LIMITED, 0),
            "rate_limited"
        );
        assert_eq!(v(Reason::None, Flags::RATE_LIMITED, 0), "delayed");
        assert_eq!(
            v(Reason::BreakerOpen, Flags::BREAKER_OPEN, 0),
            "breaker_open"
        );
        assert_eq!(v(Reason::Overflow, Flags::BREAKER_OPEN, 0), "overflow");
        assert_eq!(v(Reason::None, 0, 2), "retried");
        let f = crate::analyze::filter::Filter::parse("policy=delayed|retried", &|_, _| Vec::new());
        assert!(f.is_ok());
        assert!(crate::analyze::filter::Filter::parse("policy=slow", &|_, _| Vec::new()).is_err());
    }

    #[test]
    fn all_is_in_declaration_order() {
        for (i, d) in Dim::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
            assert_eq!(Dim::parse(d.name()), Some(*d));
        }
    }
}
