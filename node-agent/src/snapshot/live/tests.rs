//! Virtual-clock tests of the endpoint state: the peak-EWMA estimate, each
//! ejection trigger, return on schedule, growing ejections and their
//! decay, and `max_ejection_percent`.

use super::*;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn params() -> OutlierParams {
    OutlierParams {
        consecutive_5xx: 5,
        consecutive_gateway: 0,
        interval_ns: 10 * S,
        base_ns: 30 * S,
        max_ns: 300 * S,
        max_percent: 10,
        sr_min_hosts: 5,
        sr_volume: 100,
        sr_stdev_factor: 1.9,
    }
}

#[test]
fn the_estimate_takes_peaks_at_once_averages_dips_and_decays() {
    let e = EndpointLive::default();
    assert_eq!(e.rtt(S, 10 * S), 0.0, "no sample yet");
    assert_eq!(e.cost(S, 10 * S), 0.0, "tried at once");
    e.begin();
    assert_eq!(
        e.cost(S, 10 * S),
        UNMEASURED_BUSY,
        "not flooded before it answers"
    );
    e.end(S, 2 * MS, Outcome::Success, 10 * S);
    assert_eq!(e.rtt(S, 10 * S), 2e6, "the first sample is the estimate");
    e.begin();
    e.end(S + MS, 40 * MS, Outcome::Success, 10 * S);
    assert_eq!(e.rtt(S + MS, 10 * S), 40e6, "a peak replaces it");
    e.begin();
    // One decay period later the estimate has decayed to 1/e, and a
    // faster sample is averaged in with weight 1 − 1/e.
    e.end(11 * S + MS, 2 * MS, Outcome::Success, 10 * S);
    let w = 1.0 / std::f64::consts::E;
    let want = 40e6 * w * w + 2e6 * (1.0 - w);
    assert!((e.rtt(11 * S + MS, 10 * S) - want).abs() < 1.0);
    // Unmeasured, it decays toward 0 so a once-slow endpoint is tried again.
    let later = e.rtt(31 * S + MS, 10 * S);
    assert!(
        (later - want / std::f64::consts::E.powi(2)).abs() < 1.0,
        "{later}"
    );
    // A failure counts as at least the penalty; the cost weighs load.
    e.begin();
    e.end(32 * S, MS, Outcome::Http5xx, 10 * S);
    assert_eq!(e.rtt(32 * S, 10 * S), FAILURE_PENALTY_NS);
    e.begin();
    e.begin();
    assert_eq!(e.cost(32 * S, 10 * S), FAILURE_PENALTY_NS * 3.0);
    e.abandon();
    e.abandon();
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn five_5xx_in_a_row_eject_for_the_base_time_then_it_returns() {
    let c = ClusterLive::new(3, Some(params()), 10 * S);
    let mut t = S;
    for k in 0..4 {
        c.endpoints[0].begin();
        assert_eq!(c.end(0, t, MS, Outcome::Http5xx), None, "{k}");
        t += MS;
    }
    // A success in between starts the count again.
    c.endpoints[0].begin();
    c.end(0, t, MS, Outcome::Success);
    for _ in 0..4 {
        c.endpoints[0].begin();
        assert_eq!(c.end(0, t, MS, Outcome::Gateway), None);
    }
    c.endpoints[0].begin();
    let ej = c.end(0, t, MS, Outcome::Http5xx);
    assert_eq!(
        ej,
        Some(Change::Ejected {
            endpoint: 0,
            ms: 30_000,
            cause: CAUSE_5XX
        })
    );
    assert!(c.any_out() && !c.available(0, t) && c.available(1, t));
    assert_eq!(c.ejected_count(), 1);
    let mut changes = Vec::new();
    c.tick(t + 30 * S - MS, &mut changes);
    assert!(changes.is_empty() && !c.available(0, t + 30 * S - MS));
    c.tick(t + 30 * S + TICK_NS, &mut changes);
    assert_eq!(changes, vec![Change::Restored { endpoint: 0 }]);
    assert!(!c.any_out() && c.available(0, t + 30 * S + TICK_NS));
    // The second ejection lasts twice as long.
    let t = t + 31 * S;
    for _ in 0..5 {
        c.endpoints[0].begin();
        if let Some(Change::Ejected { ms, .. }) = c.end(0, t, MS, Outcome::Http5xx) {
            assert_eq!(ms, 60_000);
        }
    }
    assert!(c.endpoints[0].ejected(t));
    assert_eq!(c.endpoints[0].ejected_total.load(Ordering::Relaxed), 2);
}

#[test]
fn consecutive_gateway_failures_eject_on_their_own_count() {
    let p = OutlierParams {
        consecutive_5xx: 0,
        consecutive_gateway: 3,
        ..params()
    };
    let c = ClusterLive::new(2, Some(p), 10 * S);
    for _ in 0..5 {
        c.endpoints[1].begin();
        assert_eq!(c.end(1, S, MS, Outcome::Http5xx), None, "5xx do not count");
    }
    let mut got = None;
    for _ in 0..3 {
        c.endpoints[1].begin();
        got = c.end(1, S, MS, Outcome::Gateway);
    }
    assert!(matches!(
        got,
        Some(Change::Ejected {
            endpoint: 1,
            cause: CAUSE_GATEWAY,
            ..
        })
    ));
}

#[test]
fn max_ejection_percent_caps_ejections_but_one_always_may_go() {
    let c = ClusterLive::new(20, Some(params()), 10 * S);
    let mut ejected = 0;
    for i in 0..20 {
        for _ in 0..5 {
            c.endpoints[i].begin();
            if c.end(i, S, MS, Outcome::Http5xx).is_some() {
                ejected += 1;
            }
        }
    }
    assert_eq!((ejected, c.ejected_count()), (2, 2), "10% of 20");
    let small = ClusterLive::new(3, Some(params()), 10 * S);
    let mut ejected = 0;
    for i in 0..3 {
        for _ in 0..5 {
            small.endpoints[i].begin();
            ejected += usize::from(small.end(i, S, MS, Outcome::Http5xx).is_some());
        }
    }
    assert_eq!(ejected, 1, "10% of 3 rounds down, but one may go");
}

#[test]
fn the_success_rate_detector_ejects_the_outlier_each_interval() {
    let c = ClusterLive::new(6, Some(params()), 10 * S);
    let mut changes = Vec::new();
    c.tick(S, &mut changes); // starts the interval clock
    for i in 0..6 {
        for k in 0..200 {
            // Endpoint 5 fails half its requests, not in a row.
            let bad = i == 5 && k % 2 == 0;
            let o = if bad {
                Outcome::Http5xx
            } else {
                Outcome::Success
            };
            c.endpoints[i].begin();
            assert_eq!(c.end(i, 2 * S, MS, o), None);
        }
    }
    c.tick(5 * S, &mut changes);
    assert!(changes.is_empty(), "not before the interval");
    c.tick(11 * S, &mut changes);
    assert_eq!(
        changes,
        vec![Change::Ejected {
            endpoint: 5,
            ms: 30_000,
            cause: CAUSE_SUCCESS_RATE
        }]
    );
    // Windows restarted: the next interval has no volume, nothing more.
    changes.clear();
    c.tick(22 * S, &mut changes);
    assert!(changes.is_empty(), "{changes:?}");
    // Too few endpoints with volume: the detector stays quiet.
    let few = ClusterLive::new(4, Some(params()), 10 * S);
    few.tick(S, &mut changes);
    for i in 0..4 {
        for k in 0..200 {
            few.endpoints[i].begin();
            let o = if i == 3 && k % 2 == 0 {
                Outcome::Http5xx
            } else {
                Outcome::Success
            };
            few.end(i, 2 * S, MS, o);
        }
    }
    few.tick(12 * S, &mut changes);
    assert!(changes.is_empty());
}

#[test]
fn the_ejection_multiplier_decays_one_per_clean_interval() {
    let c = ClusterLive::new(3, Some(params()), 10 * S);
    let mut changes = Vec::new();
    c.tick(S, &mut changes);
    for _ in 0..5 {
        c.endpoints[0].begin();
        c.end(0, S, MS, Outcome::Http5xx);
    }
    assert_eq!(c.endpoints[0].ejection_level(), 1);
    // Back after 30 s; the first interval after that decays the level.
    c.tick(31 * S + TICK_NS, &mut changes);
    assert_eq!(changes, vec![Change::Restored { endpoint: 0 }]);
    c.tick(42 * S, &mut changes);
    assert_eq!(c.endpoints[0].ejection_level(), 0);
}

#[test]
fn health_verdicts_move_endpoints_out_and_back() {
    let c = ClusterLive::new(2, None, 10 * S);
    assert!(!c.any_out());
    assert!(c.set_healthy(1, false));
    assert!(!c.set_healthy(1, false), "no change, no count");
    assert!(c.any_out() && !c.available(1, S));
    assert!(c.set_healthy(1, true));
    assert!(!c.any_out() && c.available(1, S));
}

#[test]
fn health_checks_flip_after_fall_and_rise_runs_and_queue_the_flip() {
    let c = ClusterLive::new(2, None, 10 * S).with_health(2, 3);
    assert!(c.watched());
    let mut changes = Vec::new();
    c.health_result(0, false);
    c.health_result(0, false);
    c.health_result(0, true); // a pass breaks the run
    c.health_result(0, false);
    c.health_result(0, false);
    assert!(c.available(0, S));
    c.health_result(0, false);
    assert!(!c.available(0, S), "three failures in a row");
    c.tick(S, &mut changes);
    assert_eq!(
        changes,
        vec![Change::Health {
            endpoint: 0,
            up: false,
            run: 3
        }]
    );
    c.health_result(0, true);
    assert!(!c.available(0, S));
    c.health_result(0, true);
    assert!(c.available(0, S), "two passes in a row");
    changes.clear();
    c.tick(2 * S, &mut changes);
    assert_eq!(changes.len(), 1);
    let ev = changes[0].event(2 * S, 7, 9);
    assert_eq!((ev.kind, ev.to, ev.a), (EventKind::EndpointHealth, 1, 2));
}

#[test]
fn scores_weigh_success_rate_and_latency_every_second() {
    let c = ClusterLive::new(3, None, 10 * S).with_scores(vec![1, 1, 2], 100 * MS);
    assert!(c.watched());
    assert_eq!(c.endpoints[2].score(), 2.0, "the weight until scored");
    for _ in 0..10 {
        c.endpoints[0].begin();
        c.end(0, S, 10 * MS, Outcome::Success);
        c.endpoints[1].begin();
        c.end(1, S, 10 * MS, Outcome::Http5xx);
        c.endpoints[2].begin();
        c.end(2, S, 110 * MS, Outcome::Success);
    }
    let mut changes = Vec::new();
    c.tick(S, &mut changes);
    let rtt0 = c.endpoints[0].rtt(S, 10 * S);
    let want0 = 1.0 * (0.5 + 0.5 * 1.0) * (-rtt0 / 1e8).exp();
    assert!((c.endpoints[0].score() - want0).abs() < 1e-9);
    // Half the smoothed success rate gone, and the failure penalty's
    // latency (250 ms = 2.5 τ).
    let want1 = 0.5 * (-c.endpoints[1].rtt(S, 10 * S) / 1e8).exp();
    assert!((c.endpoints[1].score() - want1).abs() < 1e-9);
    assert!(c.endpoints[1].score() < c.endpoints[0].score() / 10.0);
    // Twice the weight but 100 ms slower: e^-1.1 of it.
    let s2 = c.endpoints[2].score();
    assert!(
        s2 < 2.0 * (-1.0f64).exp() && s2 > c.endpoints[0].score() * 0.5,
        "{s2}"
    );
    // Not again within the second.
    c.endpoints[0].begin();
    c.end(0, S + MS, 500 * MS, Outcome::Success);
    let before = c.endpoints[0].score();
    c.tick(S + 500 * MS, &mut changes);
    assert_eq!(c.endpoints[0].score(), before);
    c.tick(2 * S, &mut changes);
    assert!(c.endpoints[0].score() < before);
}
