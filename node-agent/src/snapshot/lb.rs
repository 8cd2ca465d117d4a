//! Endpoint choice inside a route arm, by the cluster's `lb`:
//! - `round_robin`: smooth weighted round robin (nginx's algorithm): one
//!   period of its order is computed when the snapshot is built, and the
//!   worker's counter for the arm walks it, so a pick is one index;
//! - `weighted_random`: an endpoint drawn with probability weight / total,
//!   from the request's hash and the worker's counter;
//! - `ring_hash`: consistent hashing of the route's hash (the `hash_on`
//!   key when the request has one) on a ring of virtual nodes, as many per endpoint
//!   as its share of the largest weight allows. Removing an endpoint moves
//!   only the keys that were on it;
//! - `p2c_ewma`: power of two choices: two different endpoints drawn from
//!   the worker's counter, the one with the lower cost (peak-EWMA latency
//!   times one more than its requests in flight) wins. linkerd's
//!   balancer; the costs live in [`super::live`], the comparison in
//!   [`super::Snapshot::pick`];
//! - `score_weighted`: an endpoint drawn with probability score / total,
//!   the scores recomputed every second from live stats
//!   ([`super::live::ClusterLive::tick`]).
//!
//! Everything here is a pure function of tables built with the snapshot,
//! the request's hash and the counter: no clock, no I/O.

use ringlog::synth::mix;

use crate::config::schema::Lb;

/// Weighted rendezvous hashing: the item whose `weight / -ln(u)` is
/// largest, with `u` in (0, 1) drawn from the key's hash and the item's
/// position. Each item wins a share of keys equal to its share of the
/// weight, a key stays with its item while weights do not change, and a
/// weight change moves only the keys it must (those the grown item now
/// wins, or the shrunk one lost). Items of weight 0 never win. Returns the
/// position and the item.
pub fn rendezvous<T>(items: &[T], hash: u64, weight: impl Fn(&T) -> u32) -> Option<(usize, &T)> {
    let mut best: Option<(f64, usize)> = None;
    for (i, item) in items.iter().enumerate() {
        let w = f64::from(weight(item));
        if w <= 0.0 {
            continue;
        }
        let h = mix(hash ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = w / -u.ln();
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, i));
        }
    }
    best.and_then(|(_, i)| Some((i, items.get(i)?)))
}

/// Longest period of a smooth weighted order; heavier weight sums are
/// scaled down to fit (shares then within 1 / this of the weights).
pub const MAX_PERIOD: u64 = 1 << 16;

/// One period of nginx's smooth weighted round robin over `weights`: each
/// step every endpoint gains its weight, the one with the most goes next
/// (the first on a tie) and gives back the total. Over a period each
/// endpoint comes up exactly weight times (after dividing by the common
/// divisor), spread out instead of in runs: weights 5, 1, 1 give
/// a a b a c a a.
pub fn smooth_order(weights: &[u32]) -> Vec<u32> {
    let g = weights
        .iter()
        .fold(0u64, |g, &w| gcd(g, u64::from(w.max(1))))
        .max(1);
    let mut w: Vec<u64> = weights.iter().map(|&x| u64::from(x.max(1)) / g).collect();
    let total: u64 = w.iter().sum();
    if total > MAX_PERIOD {
        for x in &mut w {
            *x = (*x * MAX_PERIOD / total).max(1);
        }
    }
    let total: i64 = w.iter().map(|&x| x as i64).sum();
    let mut current = vec![0i64; w.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &x) in current.iter_mut().zip(&w) {
            *c += x as i64;
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
        else {
            break;
        };
        current[best] -= total;
        seq.push(best as u32);
    }
    seq
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Virtual nodes of the heaviest endpoint on a hash ring. With 1,024
/// points an endpoint's share of the ring is within about 3% of its due
/// (relative, one standard deviation), so adding an endpoint moves little
/// more than its own share of keys. The count does not depend on how many
/// endpoints there are (that would move keys between the old ones) up to
/// [`RING_MAX_POINTS`].
pub const RING_VNODES_MAX: u64 = 1024;
/// The most points on one ring (16 bytes each): past 64 endpoints each
/// gets fewer virtual nodes (at least [`RING_VNODES_MIN`]).
pub const RING_MAX_POINTS: u64 = 65_536;
/// Fewest virtual nodes of the heaviest endpoint.
pub const RING_VNODES_MIN: u64 = 64;

/// How an arm chooses among its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chooser {
    /// In turn, weighted: one period of the smooth weighted order.
    RoundRobin {
        /// Endpoint positions, in pick order.
        seq: Vec<u32>,
    },
    /// Cumulative weights, in the arm's endpoint order.
    WeightedRandom {
        /// `cum[i]` is the sum of the weights of endpoints 0..=i.
        cum: Vec<u64>,
    },
    /// Sorted (point, endpoint position) pairs.
    RingHash {
        /// The ring.
        ring: Vec<(u64, u32)>,
    },
    /// Power of two choices on live costs ([`p2c_pair`] draws the pair).
    P2c,
    /// Weighted random on live scores ([`super::live`]).
    Score,
}

/// Two different positions in 0..n (the same one when n is 1) for a
/// power-of-two-choices pick, drawn from `counter` (advanced) and `hash`.
pub fn p2c_pair(n: usize, hash: u64, counter: &mut u32) -> Option<(usize, usize)> {
    if n == 0 {
        return None;
    }
    let r = mix(hash ^ mix(u64::from(*counter) | 1 << 40));
    *counter = counter.wrapping_add(1);
    let a = (r % n as u64) as usize;
    if n == 1 {
        return Some((0, 0));
    }
    let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
    Some((a, b))
}

impl Chooser {
    /// The chooser for `lb` over endpoints with these `weights` and `keys`
    /// (a stable name per endpoint, its address, that places it on a ring).
    pub fn build(lb: &Lb, weights: &[u32], keys: &[String]) -> Chooser {
        match lb {
            Lb::P2cEwma => Chooser::P2c,
            Lb::ScoreWeighted => Chooser::Score,
            Lb::RoundRobin => Chooser::RoundRobin {
                seq: smooth_order(weights),
            },
            Lb::WeightedRandom => Chooser::WeightedRandom {
                cum: weights
                    .iter()
                    .scan(0u64, |acc, w| {
                        *acc += u64::from(*w).max(1);
                        Some(*acc)
                    })
                    .collect(),
            },
            Lb::RingHash => {
                let heaviest = u64::from(weights.iter().copied().max().unwrap_or(1).max(1));
                let per = (RING_MAX_POINTS / weights.len().max(1) as u64)
                    .clamp(RING_VNODES_MIN, RING_VNODES_MAX);
                let mut ring = Vec::new();
                for (pos, (w, key)) in (0u32..).zip(weights.iter().zip(keys)) {
                    let vnodes = (per * u64::from(*w) / heaviest).clamp(1, per);
                    for k in 0..vnodes {
                        let point = ringlog::sampler::hash_bytes(format!("{key}#{k}").as_bytes());
                        ring.push((point, pos));
                    }
                }
                ring.sort_unstable();
                Chooser::RingHash { ring }
            }
        }
    }

    /// Position (0..n) of the endpoint for a request with `hash`; `counter`
    /// is the worker's counter for this arm. None when `n` is 0.
    pub fn choose(&self, n: usize, hash: u64, counter: &mut u32) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let i = match self {
            Chooser::RoundRobin { seq } if !seq.is_empty() => {
                seq[*counter as usize % seq.len()] as usize
            }
            Chooser::RoundRobin { .. } | Chooser::P2c | Chooser::Score => *counter as usize % n,
            Chooser::WeightedRandom { cum } => {
                let total = cum.last().copied().unwrap_or(0);
                if total == 0 {
                    *counter as usize % n
                } else {
                    let x = mix(hash ^ mix(u64::from(*counter))) % total;
                    cum.partition_point(|&c| c <= x)
                }
            }
            Chooser::RingHash { ring } => {
                let key = mix(hash);
                let at = ring.partition_point(|&(p, _)| p < key);
                // Past the last point: wrap to the first.
                match ring.get(at).or(ring.first()) {
                    Some(&(_, pos)) => pos as usize,
                    None => *counter as usize % n,
                }
            }
        };
        *counter = counter.wrapping_add(1);
        (i < n).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    fn shares(c: &Chooser, n: usize, picks: u64) -> Vec<f64> {
        let mut counts = vec![0u64; n];
        let mut counter = 0;
        for h in 0..picks {
            let i = c.choose(n, mix(h ^ 0xabc), &mut counter).unwrap();
            counts[i] += 1;
        }
        counts.iter().map(|&x| x as f64 / picks as f64).collect()
    }

    #[test]
    fn round_robin_takes_turns() {
        let c = Chooser::build(&Lb::RoundRobin, &[1, 1, 1], &keys(3));
        let mut counter = 0;
        let got: Vec<usize> = (0..6)
            .map(|_| c.choose(3, 42, &mut counter).unwrap())
            .collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
        assert_eq!(c.choose(0, 42, &mut counter), None);
    }

    #[test]
    fn round_robin_is_smooth_and_weighted() {
        // nginx's example: weights 5, 1, 1.
        assert_eq!(smooth_order(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        // Common divisors do not lengthen the period.
        assert_eq!(smooth_order(&[10, 2, 2]), smooth_order(&[5, 1, 1]));
        let c = Chooser::build(&Lb::RoundRobin, &[1, 3, 6], &keys(3));
        let s = shares(&c, 3, 100_000);
        for (got, want) in s.iter().zip([0.1, 0.3, 0.6]) {
            assert!((got - want).abs() < 0.01, "{s:?}");
        }
        // A huge weight sum is scaled to the period bound, shares kept.
        let big = smooth_order(&[1_000_000, 3_000_000, 1]);
        assert!(big.len() as u64 <= MAX_PERIOD + 3);
        let ones = big.iter().filter(|&&i| i == 1).count() as f64 / big.len() as f64;
        assert!((ones - 0.75).abs() < 0.01, "{ones}");
        assert!(big.contains(&2), "a weight-1 endpoint keeps a turn");
    }

    #[test]
    fn weighted_random_follows_the_weights() {
        let c = Chooser::build(&Lb::WeightedRandom, &[1, 3, 6], &keys(3));
        let s = shares(&c, 3, 100_000);
        for (got, want) in s.iter().zip([0.1, 0.3, 0.6]) {
            assert!((got - want).abs() < 0.01, "{s:?}");
        }
        // The same request hash still spreads (the counter moves it on).
        let mut counter = 0;
        let same: std::collections::BTreeSet<usize> = (0..200)
            .map(|_| c.choose(3, 7, &mut counter).unwrap())
            .collect();
        assert_eq!(same.len(), 3);
    }

    #[test]
    fn ring_hash_is_sticky_weighted_and_consistent() {
        let w = [1, 1, 2, 1];
        let c = Chooser::build(&Lb::RingHash, &w, &keys(4));
        // Sticky: the same key always lands on the same endpoint.
        let mut counter = 0;
        for h in 0..1000u64 {
            let a = c.choose(4, h, &mut counter);
            assert_eq!(a, c.choose(4, h, &mut counter));
        }
        // Roughly by weight (virtual nodes: within a few percent).
        let s = shares(&c, 4, 200_000);
        for (got, want) in s.iter().zip([0.2, 0.2, 0.4, 0.2]) {
            assert!((got - want).abs() < 0.06, "{s:?}");
        }
        // Consistent: take endpoint 1 away; only its keys move.
        let k = keys(4);
        let rest = [k[0].clone(), k[2].clone(), k[3].clone()];
        let c3 = Chooser::build(&Lb::RingHash, &[1, 2, 1], &rest);
        let (mut moved, mut stayed) = (0, 0);
        for h in 0..20_000u64 {
            let before = &k[c.choose(4, h, &mut counter).unwrap()];
            let after = &rest[c3.choose(3, h, &mut counter).unwrap()];
            if before == &k[1] {
                moved += 1;
            } else {
                assert_eq!(before, after, "key {h} moved without cause");
                stayed += 1;
            }
        }
        assert!(moved > 2_000 && stayed > 15_000, "{moved} {stayed}");
    }

    #[test]
    fn ring_hash_moves_at_most_the_new_share_when_an_endpoint_is_added() {
        let mut counter = 0;
        for n in [3usize, 4, 8] {
            let before = Chooser::build(&Lb::RingHash, &vec![1; n], &keys(n));
            let after = Chooser::build(&Lb::RingHash, &vec![1; n + 1], &keys(n + 1));
            let total = 50_000u64;
            let moved = (0..total)
                .filter(|&h| {
                    let a = before.choose(n, mix(h), &mut counter).unwrap();
                    let b = after.choose(n + 1, mix(h), &mut counter).unwrap();
                    // Endpoint names are the same positions (keys(n) is a
                    // prefix of keys(n + 1)).
                    a != b
                })
                .count() as f64
                / total as f64;
            let bound = 1.0 / (n + 1) as f64 + 0.02;
            assert!(
                moved <= bound,
                "{n} -> {}: {moved} moved, bound {bound}",
                n + 1
            );
        }
    }

    #[test]
    fn p2c_pairs_are_two_different_endpoints_spread_evenly() {
        let mut counter = 0;
        let mut seen = vec![0u32; 5];
        for h in 0..50_000u64 {
            let (a, b) = p2c_pair(5, mix(h), &mut counter).unwrap();
            assert_ne!(a, b);
            assert!(a < 5 && b < 5);
            seen[a] += 1;
            seen[b] += 1;
        }
        for s in seen {
            // Each of 5 is in 2/5 of the pairs: 20,000 ± 3%.
            assert!((19_400..=20_600).contains(&s), "{s}");
        }
        assert_eq!(p2c_pair(1, 7, &mut counter), Some((0, 0)));
        assert_eq!(p2c_pair(0, 7, &mut counter), None);
    }
}
