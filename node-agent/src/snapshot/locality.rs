//! Locality tiers of a route arm: with a cluster `locality: { prefer }`
//! and the node's own zone and region, the arm's endpoints fall into
//! tier 0 (same zone, or same region with `prefer: region`), tier 1 (same
//! region, other zone) and tier 2 (the rest). Traffic stays in the first
//! tier that has endpoints until its healthy share, times Envoy's
//! overprovisioning factor 1.4, drops below 100%: the remainder spills to
//! the next tier, and so on ([`loads`]). Pure tables and arithmetic, built
//! with the snapshot; the health shares come from the live state.

use super::lb::Chooser;
use crate::config::schema::{Endpoint, Lb, NodeLocality};

/// Envoy's overprovisioning factor: a tier keeps all its traffic while
/// at least 1/1.4 (71%) of it is healthy.
pub const OVERPROVISION: f64 = 1.4;

/// The most tiers (zone, region, any).
pub const TIERS: usize = 3;

/// One tier of an arm.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    /// Positions in the arm's endpoint list.
    pub members: Vec<usize>,
    /// How it chooses among them (the cluster's `lb` over their weights).
    pub chooser: Chooser,
}

/// An arm's endpoints by locality tier.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiers {
    /// Tier of each position in the arm's endpoint list.
    pub tier_of: Vec<u8>,
    /// Tiers 0, 1, 2 (some may be empty).
    pub tiers: Vec<Tier>,
    /// Spill to later tiers as the first loses health (else: only the
    /// first non-empty tier, unless it is empty).
    pub failover: bool,
}

impl Tiers {
    /// The tiers of endpoints `chosen` (an arm's subset, in order) for a
    /// node at `node`, preferring `prefer` (`zone` or `region`); None when
    /// the node's locality is unknown for that preference (every endpoint
    /// is then equal).
    pub fn build(
        lb: &Lb,
        chosen: &[&Endpoint],
        node: &NodeLocality,
        prefer: &str,
        failover: bool,
    ) -> Option<Tiers> {
        let is = |e: &Endpoint, k: &str, v: &Option<String>| {
            v.is_some() && e.labels.get(k) == v.as_ref()
        };
        // Tier 0 is the preferred match; with `prefer: zone` and no zone
        // known, the region tier is still tier 1.
        let (zone, region) = (&node.zone, &node.region);
        let tier_of: Vec<u8> = match prefer {
            "zone" if zone.is_some() || region.is_some() => chosen
                .iter()
                .map(|e| match (is(e, "zone", zone), is(e, "region", region)) {
                    (true, _) => 0,
                    (false, true) => 1,
                    (false, false) => 2,
                })
                .collect(),
            "region" if region.is_some() => chosen
                .iter()
                .map(|e| u8::from(!is(e, "region", region)))
                .collect(),
            _ => return None,
        };
        let tiers = (0..TIERS as u8)
            .map(|t| {
                let members: Vec<usize> = (0..chosen.len()).filter(|&i| tier_of[i] == t).collect();
                let weights: Vec<u32> = members.iter().map(|&i| chosen[i].weight).collect();
                let keys: Vec<String> = members.iter().map(|&i| chosen[i].addr.clone()).collect();
                Tier {
                    chooser: Chooser::build(lb, &weights, &keys),
                    members,
                }
            })
            .collect();
        Some(Tiers {
            tier_of,
            tiers,
            failover,
        })
    }

    /// The tier a request goes to: `healthy(t)` is the share (0..=1) of
    /// tier `t`'s endpoints in rotation, `draw` a uniform random number.
    /// Empty tiers take nothing.
    pub fn pick(&self, healthy: impl Fn(usize) -> f64, draw: u64) -> usize {
        let first = self
            .tiers
            .iter()
            .position(|t| !t.members.is_empty())
            .unwrap_or(0);
        if !self.failover {
            return first;
        }
        let mut share = [0.0; TIERS];
        for (t, s) in share.iter_mut().enumerate() {
            if self.tiers.get(t).is_some_and(|x| !x.members.is_empty()) {
                *s = healthy(t).clamp(0.0, 1.0);
            }
        }
        let load = loads(&share);
        let mut x = (draw >> 11) as f64 / (1u64 << 53) as f64;
        for (t, l) in load.iter().enumerate() {
            if x < *l {
                return t;
            }
            x -= l;
        }
        first
    }
}

/// Envoy's spill rule: each tier takes min(what is left, 1.4 × its
/// healthy share) of the traffic, in order; when the tiers together are
/// under 100% (all degraded) the loads are scaled up to 100%; with no
/// healthy endpoint anywhere everything goes to the first non-empty tier
/// (panic mode decides there). Loads are fractions summing to 1.
pub fn loads(healthy: &[f64; TIERS]) -> [f64; TIERS] {
    let cap = healthy.map(|h| (h * OVERPROVISION).min(1.0));
    let mut load = [0.0; TIERS];
    let mut left = 1.0;
    for t in 0..TIERS {
        load[t] = cap[t].min(left);
        left -= load[t];
    }
    let total: f64 = load.iter().sum();
    if total <= 0.0 {
        return [1.0, 0.0, 0.0];
    }
    if total < 1.0 {
        let sum: f64 = cap.iter().sum();
        return cap.map(|c| c / sum);
    }
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tier_keeps_its_traffic_down_to_71_percent_healthy_then_spills() {
        assert_eq!(loads(&[1.0, 1.0, 1.0]), [1.0, 0.0, 0.0]);
        // 80% healthy × 1.4 = 112%: still everything.
        assert_eq!(loads(&[0.8, 1.0, 1.0]), [1.0, 0.0, 0.0]);
        // 50% healthy × 1.4 = 70%: 30% spills to the next tier.
        let l = loads(&[0.5, 1.0, 1.0]);
        assert!((l[0] - 0.7).abs() < 1e-9 && (l[1] - 0.3).abs() < 1e-9 && l[2] == 0.0);
        // Tier 1 is degraded too: the rest goes further.
        let l = loads(&[0.5, 0.1, 1.0]);
        assert!(
            (l[1] - 0.14).abs() < 1e-9 && (l[2] - 0.16).abs() < 1e-9,
            "{l:?}"
        );
        // All degraded: scaled to 100% in proportion.
        let l = loads(&[0.25, 0.25, 0.0]);
        assert!((l[0] - 0.5).abs() < 1e-9 && (l[1] - 0.5).abs() < 1e-9);
        // Nothing healthy: the first tier (panic mode there).
        assert_eq!(loads(&[0.0, 0.0, 0.0]), [1.0, 0.0, 0.0]);
    }

    fn ep(addr: &str, zone: &str, region: &str) -> Endpoint {
        let labels = [("zone", zone), ("region", region)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Endpoint {
            addr: addr.into(),
            weight: 1,
            labels,
        }
    }

    #[test]
    fn endpoints_fall_into_zone_region_and_remote_tiers() {
        let eps = [
            ep("10.0.0.1:80", "a", "east"),
            ep("10.0.0.2:80", "b", "east"),
            ep("10.0.0.3:80", "c", "west"),
            ep("10.0.0.4:80", "a", "east"),
        ];
        let refs: Vec<&Endpoint> = eps.iter().collect();
        let node = NodeLocality {
            zone: Some("a".into()),
            region: Some("east".into()),
        };
        let t = Tiers::build(&Lb::RoundRobin, &refs, &node, "zone", true).unwrap();
        assert_eq!(t.tier_of, vec![0, 1, 2, 0]);
        assert_eq!(t.tiers[0].members, vec![0, 3]);
        let t = Tiers::build(&Lb::RoundRobin, &refs, &node, "region", true).unwrap();
        assert_eq!(t.tier_of, vec![0, 0, 1, 0]);
        let unknown = NodeLocality::default();
        assert!(Tiers::build(&Lb::RoundRobin, &refs, &unknown, "zone", true).is_none());
        // Draws follow the loads: half healthy in tier 0 spills 30%.
        let t = Tiers::build(&Lb::RoundRobin, &refs, &node, "zone", true).unwrap();
        let health = |k: usize| if k == 0 { 0.5 } else { 1.0 };
        let n = 100_000u64;
        let spilled = (0..n)
            .filter(|&i| t.pick(health, ringlog::synth::mix(i)) == 1)
            .count() as f64
            / n as f64;
        assert!((spilled - 0.3).abs() < 0.01, "{spilled}");
        let no_failover = Tiers {
            failover: false,
            ..t
        };
        assert_eq!(no_failover.pick(|_| 0.0, 12345), 0);
    }
}
