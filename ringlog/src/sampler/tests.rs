//! Statistical and behavioural tests of the sampler.

use super::*;
use crate::record::p_of;
use crate::synth::mix;
use proptest::prelude::*;

fn cfg(types: Vec<TypeRule>, budget: u64, forced: u64) -> SamplerConfig {
    SamplerConfig {
        default: TypeRule::rate(0.01),
        types,
        max_records_per_sec: budget,
        max_forced_per_sec: forced,
    }
}

/// Feeds `n` requests at `rate_per_sec` and returns (kept count, sum of
/// weights, count per keep reason).
fn run(
    s: &mut Sampler,
    n: u64,
    rate_per_sec: u64,
    seed: u64,
    mut dur: impl FnMut(u64) -> (u64, bool),
) -> (u64, f64) {
    let gap = 1_000_000_000 / rate_per_sec.max(1);
    let (mut kept, mut weight) = (0u64, 0.0f64);
    for i in 0..n {
        let (d, err) = dur(i);
        let dec = s.decide(i * gap, 0, mix(seed ^ i), d, err);
        if dec.keep {
            kept += 1;
            weight += 1.0 / p_of(dec.sample_p);
        }
    }
    (kept, weight)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The kept share of plain traffic is within 5 sigma of p, and the
    /// weights add up to the traffic seen.
    #[test]
    fn kept_share_matches_p(p in 0.001f64..1.0, seed in any::<u64>()) {
        let mut s = Sampler::new(&cfg(vec![TypeRule::rate(p)], 0, 0), 0);
        let n = 40_000u64;
        let (kept, weight) = run(&mut s, n, 10_000, seed, |_| (1_000_000, false));
        let pq = p_of(code_of(p).unwrap());
        let sigma = (n as f64 * pq * (1.0 - pq)).sqrt().max(1.0);
        prop_assert!((kept as f64 - n as f64 * pq).abs() <= 5.0 * sigma,
            "kept {kept} of {n} at p {pq}");
        let wsigma = sigma / pq;
        prop_assert!((weight - n as f64).abs() <= 5.0 * wsigma + 1.0,
            "weights {weight} vs {n}");
    }

    /// With every rule active, the budget adapting and the flood cap
    /// demoting, re-weighted counts stay unbiased overall and per class.
    #[test]
    fn reweighted_counts_are_unbiased(p in 0.05f64..0.5, seed in any::<u64>()) {
        let rule = TypeRule { p, keep_errors: true, keep_slower_than_ns: Some(20_000_000),
                              keep_above_quantile: Some(0.99) };
        let mut s = Sampler::new(&cfg(vec![rule], 2_000, 500), 0);
        let n = 200_000u64;
        let classify = |i: u64| {
            let h = mix(i.wrapping_mul(0x9e37) ^ seed);
            let err = h.is_multiple_of(50);                   // 2% errors
            let d = if h.is_multiple_of(97) { 30_000_000 }     // ~1% slow by the static rule
                    else { 1_000_000 + (h >> 40) % 4_000_000 };
            (d, err)
        };
        let gap = 1_000_000_000 / 100_000;
        // Horvitz-Thompson: the weight sums estimate the counts; their
        // variance is estimated by the sum of w * (w - 1) over kept records.
        let (mut w_all, mut w_err, mut n_err) = (0.0f64, 0.0f64, 0u64);
        let (mut var_all, mut var_err) = (0.0f64, 0.0f64);
        let mut demoted = 0u64;
        for i in 0..n {
            let (d, err) = classify(i);
            n_err += u64::from(err);
            let dec = s.decide(i * gap, 0, mix(seed.rotate_left(7) ^ i), d, err);
            demoted += u64::from(dec.demoted);
            if dec.keep {
                let w = 1.0 / p_of(dec.sample_p);
                w_all += w;
                var_all += w * (w - 1.0);
                if err {
                    w_err += w;
                    var_err += w * (w - 1.0);
                }
            }
        }
        prop_assert!(demoted > 0, "the flood cap never engaged; the test is too weak");
        prop_assert!(s.level() > 0, "the budget never engaged; the test is too weak");
        let bound = 4.5 * var_all.sqrt() + 1.0;
        prop_assert!((w_all - n as f64).abs() <= bound,
            "total weight {w_all} vs {n} (4.5 sigma = {bound:.0})");
        let bound = 4.5 * var_err.sqrt() + 1.0;
        prop_assert!((w_err - n_err as f64).abs() <= bound,
            "error weight {w_err} vs {n_err} (4.5 sigma = {bound:.0})");
    }
}

#[test]
fn budget_holds_and_recovers() {
    let mut s = Sampler::new(&cfg(vec![TypeRule::rate(1.0)], 10_000, 0), 0);
    // 1M req/s for 3 s at p = 1: must settle at or below 10k kept/s.
    let gap = 1_000;
    let mut per_sec = [0u64; 3];
    for i in 0..3_000_000u64 {
        if s.decide(i * gap, 0, mix(i), 1_000_000, false).keep {
            per_sec[(i / 1_000_000) as usize] += 1;
        }
    }
    for (sec, &k) in per_sec.iter().enumerate().skip(1) {
        assert!(k <= 10_000 * 11 / 10, "second {sec}: kept {k} > budget");
        assert!(k >= 10_000 / 5, "second {sec}: kept {k}, far under budget");
    }
    let high = s.level();
    assert!(high >= 5, "level {high}");
    // Load drops to 1k req/s: the level walks back to 0.
    let t0 = 3_000_000 * gap;
    for i in 0..5_000u64 {
        s.decide(t0 + i * 1_000_000, 0, mix(i), 1_000_000, false);
    }
    assert_eq!(s.level(), 0);
}

#[test]
fn deterministic_and_nested() {
    let c = cfg(vec![TypeRule::rate(0.1), TypeRule::rate(0.02)], 0, 0);
    let mut a = Sampler::new(&c, 0);
    let mut b = Sampler::new(&c, 7);
    for i in 0..10_000u64 {
        let h = mix(i);
        let ka = a.decide(i, 0, h, 1000, false);
        assert_eq!(
            ka,
            b.decide(i + 7, 0, h, 1000, false),
            "same id, different decision"
        );
        if a.decide(i, 1, h, 1000, false).keep {
            assert!(ka.keep, "kept at 2% but not at 10%");
        }
    }
}

#[test]
fn rules_keep_with_weight_one() {
    let rule = TypeRule {
        p: 0.0,
        keep_errors: true,
        keep_slower_than_ns: Some(5_000_000),
        keep_above_quantile: None,
    };
    let mut s = Sampler::new(&cfg(vec![rule], 0, 0), 0);
    let d = s.decide(0, 0, 0, 1000, true);
    assert_eq!(
        (d.keep, d.reason, d.sample_p),
        (true, KeepReason::Error, P_ONE)
    );
    let d = s.decide(1, 0, 0, 5_000_000, false);
    assert_eq!((d.keep, d.reason), (true, KeepReason::Slow));
    let d = s.decide(2, 0, 0, 1000, false);
    assert!(!d.keep, "p = 0 must never sample");
    // Unknown type ids use the default rule (1%).
    let kept = (0..100_000u64)
        .filter(|&i| s.decide(3, 999, mix(i), 1000, false).keep)
        .count();
    assert!((700..1300).contains(&kept), "default rate gave {kept}");
}

#[test]
fn quantile_rule_keeps_the_tail() {
    let rule = TypeRule {
        p: 0.0,
        keep_errors: false,
        keep_slower_than_ns: None,
        keep_above_quantile: Some(0.99),
    };
    let mut s = Sampler::new(&cfg(vec![rule], 0, 0), 0);
    let mut kept_slow = 0;
    let mut kept_fast = 0;
    for i in 0..200_000u64 {
        let slow = i % 200 == 0; // 0.5% at 40 ms
        let d = if slow {
            40_000_000
        } else {
            1_000_000 + (mix(i) % 1_000_000)
        };
        let dec = s.decide(i * 50_000, 0, mix(i), d, false);
        if dec.keep {
            assert_eq!(dec.reason, KeepReason::AboveQuantile);
            if slow { kept_slow += 1 } else { kept_fast += 1 }
        }
    }
    // After warm-up every slow request is kept; few fast ones are.
    assert!(kept_slow >= 990, "kept {kept_slow} of 1000 slow");
    assert!(kept_fast < 200_000 / 50, "kept {kept_fast} fast");
}

#[test]
fn hashes_are_stable() {
    assert_eq!(hash_bytes(b"abc"), hash_bytes(b"abc"));
    assert_ne!(hash_bytes(b"abc"), hash_bytes(b"abd"));
    let mut id = [0u8; 16];
    id[15] = 1;
    assert_ne!(hash_trace_id(&id), hash_trace_id(&[0; 16]));
}
