//! Picking where a request goes on a snapshot: the route arm (weighted
//! rendezvous on the sticky key), the locality tier, the endpoint by the
//! cluster's `lb` on live endpoint state with endpoints out of rotation
//! passed over (panic mode when a whole arm is out), a retry's next
//! endpoint and a mirror copy's shadow endpoint.

use super::live::ClusterLive;
use super::{ArmRt, MirrorRt, Pick, RequestView, Snapshot, Target, lb};

impl Snapshot {
    /// Picks cluster and endpoint on `route` at `now`. `hash` splits
    /// between arms (replaced by a hash of the `hash_on` key when the
    /// request has one); `rr` holds the worker's per-arm counters (grown to
    /// `arm_count` here, so a new snapshot with more arms needs nothing
    /// from the caller). An endpoint out of rotation (ejected, failing
    /// health checks) is passed over unless every endpoint of the arm is
    /// out: then the pick ignores rotation (panic mode, counted). None
    /// when the chosen arm has no endpoint.
    pub fn pick(
        &self,
        route: usize,
        req: &RequestView<'_>,
        hash: u64,
        rr: &mut Vec<u32>,
        client: std::net::IpAddr,
        now: u64,
    ) -> Option<Pick> {
        if rr.len() < self.arm_count {
            rr.resize(self.arm_count, 0);
        }
        let r = self.routes.get(route)?;
        let hash = r
            .hash_key
            .as_ref()
            .and_then(|k| k.key_hash(req, client))
            .unwrap_or(hash);
        let (arm_no, arm) = if r.arms.len() <= 1 || r.total_weight == 0 {
            (0, r.arms.first()?)
        } else {
            lb::rendezvous(&r.arms, hash, |a| a.weight)?
        };
        let live = &self.clusters.get(arm.cluster)?.live;
        let counter = rr.get_mut(arm.slot)?;
        let i = choose_endpoint(arm, live, hash, counter, now)?;
        let arm_no = if r.arms.len() > 1 {
            (arm_no + 1).min(15) as u8
        } else {
            0
        };
        Some(Pick {
            route,
            cluster: arm.cluster,
            endpoint: *arm.endpoints.get(i)?,
            arm: arm_no,
            locality: arm
                .tiers
                .as_ref()
                .map_or(0, |t| t.tier_of.get(i).copied().unwrap_or(0)),
        })
    }

    /// Where retry number `n` of a request first sent per `p` goes at
    /// `now`: the next endpoint of the same route arm (so a canary's retry
    /// stays in the canary) in rotation, a different one than `p`'s where
    /// the arm has another.
    pub fn retry_pick(&self, p: Pick, n: usize, now: u64) -> Option<Pick> {
        let route = self.routes.get(p.route)?;
        let arm = route.arms.get(usize::from(p.arm.saturating_sub(1)))?;
        let live = &self.clusters.get(p.cluster)?.live;
        let eps = &arm.endpoints;
        let at = eps.iter().position(|&e| e == p.endpoint)?;
        let i = (at + n) % eps.len();
        let i = if live.any_out() {
            in_rotation(eps, i, |e| live.available(e, now)).unwrap_or(i)
        } else {
            i
        };
        Some(Pick {
            endpoint: *eps.get(i)?,
            locality: arm
                .tiers
                .as_ref()
                .map_or(0, |t| t.tier_of.get(i).copied().unwrap_or(0)),
            ..p
        })
    }

    /// Where a copy of a request with `hash` goes for mirror `m` at `now`:
    /// an endpoint of the shadow cluster in rotation (by the hash), with
    /// the cluster's own timeouts.
    pub fn mirror_target(&self, m: &MirrorRt, hash: u64, now: u64) -> Option<Target> {
        let c = self.clusters.get(m.cluster)?;
        let n = c.endpoints.len();
        if n == 0 {
            return None;
        }
        let first = (ringlog::synth::mix(hash) % n as u64) as usize;
        let i = (0..n)
            .map(|k| (first + k) % n)
            .find(|&e| c.live.available(e, now))?;
        let e = c.endpoints.get(i)?;
        Some(Target {
            addr: e.addr,
            cluster: c.id,
            cluster_ix: Some(m.cluster),
            endpoint: e.id,
            arm: 0,
            locality: 0,
            connect_timeout_ns: c.connect_timeout_ns,
            request_timeout_ns: c.request_timeout_ns,
            read_timeout_ns: c.read_timeout_ns,
            idle_timeout_ns: c.idle_timeout_ns,
            tls: c.tls_tag,
        })
    }
}

/// The position in `arm`'s endpoint list of the endpoint a request goes
/// to at `now`: the locality tier first (when the arm has tiers), then the
/// cluster's `lb` among that tier's endpoints (`p2c_ewma` comparing two
/// live costs), then, if the choice is out of rotation, the next one in
/// rotation; with every endpoint out, the choice stands (panic mode,
/// counted).
fn choose_endpoint(
    arm: &ArmRt,
    live: &ClusterLive,
    hash: u64,
    counter: &mut u32,
    now: u64,
) -> Option<usize> {
    let eps = &arm.endpoints;
    let out = live.any_out();
    let ok = |k: usize| eps.get(k).is_some_and(|&e| live.available(e, now));
    let (members, chooser): (Option<&[usize]>, _) = match &arm.tiers {
        Some(t) => {
            let healthy = |tier: usize| {
                let m = t.tiers.get(tier).map_or(&[][..], |x| &x.members[..]);
                if !out || m.is_empty() {
                    return 1.0;
                }
                m.iter().filter(|&&k| ok(k)).count() as f64 / m.len() as f64
            };
            let tier = t
                .tiers
                .get(t.pick(healthy, ringlog::synth::mix(hash ^ TIER_SALT)))?;
            (Some(&tier.members[..]), &tier.chooser)
        }
        None => (None, &arm.chooser),
    };
    let n = members.map_or(eps.len(), <[usize]>::len);
    let at = |k: usize| members.map_or(Some(k), |m| m.get(k).copied());
    let i = match chooser {
        lb::Chooser::P2c => {
            let (a, b) = lb::p2c_pair(n, hash, counter)?;
            let cost = |k: usize| {
                let e = at(k)
                    .and_then(|k| eps.get(k))
                    .and_then(|&e| live.endpoints.get(e));
                // An endpoint out of rotation loses to any in it.
                let c = e.map_or(f64::MAX, |e| e.cost(now, live.decay_ns));
                (out && !e.is_some_and(|e| e.available(now)), c)
            };
            at(if cost(b) < cost(a) { b } else { a })?
        }
        lb::Chooser::Score => {
            let score = |k: usize| {
                at(k)
                    .and_then(|k| eps.get(k))
                    .and_then(|&e| live.endpoints.get(e))
                    .filter(|e| !out || e.available(now))
                    .map_or(0.0, |e| e.score())
            };
            let total: f64 = (0..n).map(score).sum();
            *counter = counter.wrapping_add(1);
            let draw = ringlog::synth::mix(hash ^ (u64::from(*counter) << 20));
            let mut x = (draw >> 11) as f64 / (1u64 << 53) as f64 * total;
            let mut pick = 0;
            for k in 0..n {
                let s = score(k);
                if x < s {
                    pick = k;
                    break;
                }
                x -= s;
                pick = k;
            }
            at(pick)?
        }
        c => at(c.choose(n, hash, counter)?)?,
    };
    if !out || ok(i) {
        return Some(i);
    }
    // Out of rotation: the next in rotation in its tier, else in the arm.
    let next = members
        .and_then(|m| {
            let from = m.iter().position(|&k| k == i)?;
            (1..m.len())
                .map(|d| m[(from + d) % m.len()])
                .find(|&k| ok(k))
        })
        .or_else(|| in_rotation(eps, i, |e| live.available(e, now)));
    Some(next.unwrap_or_else(|| {
        live.panics
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        i
    }))
}

/// Decorrelates the tier draw from the endpoint choice.
const TIER_SALT: u64 = 0x5a17_c0de_10ca_1e77;

/// The first position from `i` on (wrapping) whose endpoint `ok` says
/// is in rotation, if any.
fn in_rotation(eps: &[usize], i: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
    let n = eps.len();
    (0..n)
        .map(|k| (i + k) % n)
        .find(|&k| eps.get(k).is_some_and(|&e| ok(e)))
}
