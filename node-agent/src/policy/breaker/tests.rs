//! Virtual-clock tests of every breaker transition and of the shared
//! form's concurrency limits.

use super::*;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

fn params() -> Params {
    Params {
        consecutive_failures: 3,
        error_rate: 2.0, // off unless a test turns it on
        min_requests: 10,
        window_ns: 10 * SEC,
        open_for_ns: SEC,
        half_open_probes: 2,
    }
}

/// Admits one request at `now` and records `o` for it.
fn run(b: &mut BreakerCore, now: u64, o: Outcome) -> (bool, Vec<Transition>) {
    let (t, moved) = b.admit(now);
    let mut ts: Vec<Transition> = moved.into_iter().collect();
    let Some(t) = t else {
        return (false, ts);
    };
    ts.extend(b.record(now, t, o, 0x8000));
    (true, ts)
}

#[test]
fn consecutive_failures_open_it_and_a_success_resets_the_run() {
    let mut b = BreakerCore::new(params());
    let now = 100 * SEC;
    run(&mut b, now, Outcome::Failure);
    run(&mut b, now, Outcome::Failure);
    run(&mut b, now, Outcome::Success);
    run(&mut b, now, Outcome::Failure);
    let (_, ts) = run(&mut b, now, Outcome::Failure);
    assert!(ts.is_empty());
    assert_eq!(b.state(), State::Closed);
    let (_, ts) = run(&mut b, now, Outcome::Failure);
    assert_eq!(
        ts,
        [Transition {
            from: State::Closed,
            to: State::Open,
            open_ns: SEC
        }]
    );
    // Open: rejected until open_for is over.
    assert!(!run(&mut b, now + SEC - 1, Outcome::Success).0);
}

#[test]
fn half_open_admits_the_probes_only_and_their_successes_close_it() {
    let mut b = BreakerCore::new(params());
    let now = 100 * SEC;
    for _ in 0..3 {
        run(&mut b, now, Outcome::Failure);
    }
    let later = now + SEC;
    let (p1, moved) = b.admit(later);
    assert_eq!(moved.map(|t| t.to), Some(State::HalfOpen));
    let (p2, _) = b.admit(later);
    let (p3, _) = b.admit(later);
    assert!(p1.is_some() && p2.is_some() && p3.is_none());
    let (Some(p1), Some(p2)) = (p1, p2) else {
        unreachable!()
    };
    assert_eq!(b.record(later, p1, Outcome::Success, 0), None);
    let t = b.record(later, p2, Outcome::Success, 0);
    assert_eq!(
        t.map(|t| (t.from, t.to)),
        Some((State::HalfOpen, State::Closed))
    );
    // Closed with a clean slate: it takes three new failures to open.
    run(&mut b, later, Outcome::Failure);
    run(&mut b, later, Outcome::Failure);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn a_failed_probe_reopens_with_a_doubled_jittered_period_up_to_the_cap() {
    let mut b = BreakerCore::new(params());
    let mut now = 100 * SEC;
    for _ in 0..3 {
        run(&mut b, now, Outcome::Failure);
    }
    let mut last = SEC;
    let mut periods = Vec::new();
    for _ in 0..10 {
        now += last;
        let (t, moved) = b.admit(now);
        assert_eq!(moved.map(|t| t.to), Some(State::HalfOpen));
        let Some(t) = t else { unreachable!() };
        let Some(tr) = b.record(now, t, Outcome::Failure, 0x8000) else {
            unreachable!("a failed probe reopens")
        };
        assert_eq!((tr.from, tr.to), (State::HalfOpen, State::Open));
        periods.push(tr.open_ns);
        last = tr.open_ns;
    }
    // Jitter 0x8000 is the middle (x1.0): 2 s, 4 s, ... capped at 60 s.
    assert_eq!(
        &periods[..5],
        &[2 * SEC, 4 * SEC, 8 * SEC, 16 * SEC, 32 * SEC]
    );
    assert!(
        periods[5..].iter().all(|&p| p == MAX_BACKOFF_NS),
        "{periods:?}"
    );
    // Jitter spans ±25%.
    let mut lo = BreakerCore::new(params());
    let mut hi = BreakerCore::new(params());
    for c in [&mut lo, &mut hi] {
        for _ in 0..3 {
            run(c, now, Outcome::Failure);
        }
    }
    let probe = |c: &mut BreakerCore, rand| {
        let (t, _) = c.admit(now + SEC);
        c.record(
            now + SEC,
            t.unwrap_or(Ticket {
                epoch: 99,
                probe: true,
            }),
            Outcome::Failure,
            rand,
        )
        .map(|t| t.open_ns)
    };
    assert_eq!(probe(&mut lo, 0), Some(3 * SEC / 2));
    let high = probe(&mut hi, 0xffff).unwrap_or(0);
    assert!(
        high > 2 * SEC * 124 / 100 && high < 2 * SEC * 5 / 4,
        "{high}"
    );
}

#[test]
fn the_error_rate_opens_it_only_with_enough_requests_in_the_window() {
    let mut b = BreakerCore::new(Params {
        consecutive_failures: 0,
        error_rate: 0.5,
        ..params()
    });
    let now = 100 * SEC;
    // 4 failures of 6: over 50% but under min_requests.
    for o in [Outcome::Success, Outcome::Failure, Outcome::Failure] {
        run(&mut b, now, o);
        run(&mut b, now, o);
    }
    assert_eq!(b.state(), State::Closed);
    // Old outcomes leave the window: 11 s later it starts again.
    let later = now + 11 * SEC;
    for _ in 0..5 {
        run(&mut b, later, Outcome::Success);
    }
    for _ in 0..5 {
        run(&mut b, later, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Closed, "5 of 10 is not over 50%");
    let (_, ts) = run(&mut b, later, Outcome::Failure);
    assert_eq!(ts.first().map(|t| t.to), Some(State::Open));
}

#[test]
fn outcomes_from_an_earlier_phase_do_not_count() {
    let mut b = BreakerCore::new(params());
    let now = 100 * SEC;
    let (old, _) = b.admit(now);
    for _ in 0..3 {
        run(&mut b, now, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Open);
    // A request admitted before it opened fails late: no effect.
    let Some(old) = old else { unreachable!() };
    assert_eq!(b.record(now, old, Outcome::Failure, 0), None);
    assert_eq!(b.open_until(), now + SEC);
}

#[test]
fn an_abandoned_probe_frees_its_slot() {
    let mut b = BreakerCore::new(Params {
        half_open_probes: 1,
        ..params()
    });
    let now = 100 * SEC;
    for _ in 0..3 {
        run(&mut b, now, Outcome::Failure);
    }
    let (p, _) = b.admit(now + SEC);
    assert!(b.admit(now + SEC).0.is_none());
    b.abandon(p.unwrap_or(Ticket {
        epoch: 0,
        probe: false,
    }));
    assert!(b.admit(now + SEC).0.is_some());
}

#[test]
fn shared_breaker_limits_concurrency_and_pending_and_releases_on_drop() {
    let b = Arc::new(Breaker::new(params(), 2, 1, FailureOn::default()));
    let now = 100 * SEC;
    let (a, _) = b.admit(now);
    let (c, _) = b.admit(now);
    let (d, _) = b.admit(now);
    assert!(a.is_ok() && c.is_ok());
    assert_eq!(d.err(), Some(Refusal::Concurrent));
    let (Ok(mut a), Ok(mut c)) = (a, c) else {
        unreachable!()
    };
    assert_eq!(a.wait_for_connection(), Ok(()));
    assert_eq!(c.wait_for_connection(), Err(Refusal::Pending));
    a.connected();
    assert_eq!(c.wait_for_connection(), Ok(()));
    assert_eq!(b.load(), (2, 1));
    drop(c);
    assert_eq!(b.load(), (1, 0));
    assert_eq!(a.finish(now, Outcome::Success, 0), None);
    assert_eq!(b.load(), (0, 0));
    assert_eq!(b.stats.overflow_concurrent.load(Ordering::Relaxed), 1);
    assert_eq!(b.stats.overflow_pending.load(Ordering::Relaxed), 1);
}

#[test]
fn shared_breaker_opens_fails_fast_probes_and_closes() {
    let b = Arc::new(Breaker::new(params(), 100, 100, FailureOn::default()));
    let now = 100 * SEC;
    let mut moves = Vec::new();
    for _ in 0..3 {
        let (p, m) = b.admit(now);
        moves.extend(m);
        let Ok(p) = p else { unreachable!() };
        moves.extend(p.finish(now, Outcome::Failure, 0));
    }
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.admit(now + 1).0.err(), Some(Refusal::Open));
    for _ in 0..2 {
        let (p, m) = b.admit(now + SEC);
        moves.extend(m);
        let Ok(p) = p else { unreachable!() };
        moves.extend(p.finish(now + SEC, Outcome::Success, 0));
    }
    let states: Vec<State> = moves.iter().map(|t| t.to).collect();
    assert_eq!(states, [State::Open, State::HalfOpen, State::Closed]);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats.rejected_open.load(Ordering::Relaxed), 1);
    assert_eq!(
        b.stats.transitions[State::Closed as usize].load(Ordering::Relaxed),
        1
    );
}

/// Arbitrary event sequences: no panic, and the invariants hold (probes in
/// flight never exceed the limit, open_until is set exactly while open,
/// the shared counters return to zero).
#[test]
fn arbitrary_sequences_keep_the_invariants() {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..200 {
        let b = Arc::new(Breaker::new(
            Params {
                consecutive_failures: (x % 4) as u32,
                error_rate: (x % 7) as f64 / 5.0,
                min_requests: (x % 5) as u32,
                window_ns: (x % 3 + 1) * SEC,
                open_for_ns: (x % 2 + 1) * SEC / 2,
                half_open_probes: (x % 3) as u32,
            },
            4,
            2,
            FailureOn::default(),
        ));
        let mut now = SEC;
        let mut held: Vec<Pass> = Vec::new();
        for _ in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += x % (SEC / 4);
            match x % 5 {
                0 | 1 => {
                    if let (Ok(mut p), _) = b.admit(now) {
                        let _ = p.wait_for_connection();
                        held.push(p);
                    }
                }
                2 if !held.is_empty() => {
                    let p = held.swap_remove((x as usize / 5) % held.len());
                    let o = if x & 32 == 0 {
                        Outcome::Success
                    } else {
                        Outcome::Failure
                    };
                    let _ = p.finish(now, o, x);
                }
                3 if !held.is_empty() => {
                    let i = (x as usize / 5) % held.len();
                    held[i].connected();
                }
                _ => {
                    held.pop();
                }
            }
            let core = b
                .core
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Phase::HalfOpen { in_flight, .. } = core.phase {
                assert!(in_flight <= core.p.half_open_probes);
            }
            assert_eq!(core.state() == State::Open, core.open_until() != u64::MAX);
            let (f, p) = b.load();
            assert!(f <= 4 && p <= 2 && f as usize == held.len());
        }
        held.clear();
        assert_eq!(b.load(), (0, 0));
    }
}

#[test]
fn a_shared_hint_sends_a_closed_breaker_to_half_open_probing_only() {
    let mut b = BreakerCore::new(params());
    let now = 100 * SEC;
    let t = b.hint().expect("closed moves");
    assert_eq!((t.from, t.to), (State::Closed, State::HalfOpen));
    assert!(b.hint().is_none(), "half-open stays as it is");
    // Two probes pass, a third waits; both succeeding close it.
    let (a, _) = b.admit(now);
    let (c, _) = b.admit(now);
    assert!(a.is_some() && c.is_some() && b.admit(now).0.is_none());
    assert!(b.record(now, a.unwrap(), Outcome::Success, 0).is_none());
    let closed = b.record(now, c.unwrap(), Outcome::Success, 0).unwrap();
    assert_eq!(closed.to, State::Closed);
    // An open breaker ignores hints.
    for _ in 0..3 {
        run(&mut b, now, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Open);
    assert!(b.hint().is_none());
    let shared = Breaker::limits_only(1, 1, 1);
    assert!(shared.hint().is_none(), "limits-only breakers never trip");
}
