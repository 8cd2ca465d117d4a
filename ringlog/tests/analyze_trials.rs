//! `why` against a known culprit, over randomised trials.
//!
//! Each trial writes a ring file from [`ringlog::scenario::Scenario::random`]
//! (a culprit route, endpoint, request type, canary arm, worker or phase
//! carrying 0.5-10% of sampled traffic), finds the spike with the spike
//! detector, explains it, and checks where the culprit ranks. The same ring
//! also holds a calm window (30-38 s in, no fault): an A/A check that `why`
//! finds nothing there. Prints the confusion figures per culprit kind.
//!
//! Ranking: for a phase culprit, among every finding; for the others, among
//! findings that are not a phase (the phase breakdown answers "where in the
//! request"; the ranking answers "which traffic").
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use ringlog::analyze::Dim;
use ringlog::analyze::spikes::{Detector, Params};
use ringlog::analyze::why::{Attribution, Report, Threshold, Windows};
use ringlog::scenario::{Culprit, Scenario, T0_NS};
use ringlog::{Item, RingReader, RingView, RingWriter};

const SEC: u64 = 1_000_000_000;
/// Trials per culprit kind (6 kinds).
const PER_KIND: u64 = 50;

fn records(view: &RingView<'_>, mut f: impl FnMut(&ringlog::Record, u32)) {
    for e in view.snapshot() {
        if let Item::Record(r) = &e.item {
            f(r, e.shard);
        }
    }
}

fn why(view: &RingView<'_>, from: u64, to: u64, base: u64) -> Option<Report> {
    let w = Windows {
        from_ns: from,
        to_ns: to,
        base_from_ns: from.saturating_sub(base),
        base_to_ns: from,
        quantile: 0.999,
    };
    let mut th = Threshold::new(w);
    records(view, |r, _| th.add(r));
    let (tau, wq) = th.finish()?;
    let mut at = Attribution::new(w, tau);
    records(view, |r, s| at.add(r, s));
    Some(at.finish(wq))
}

#[derive(Default, Debug)]
struct Tally {
    trials: u64,
    missed_spike: u64,
    first: u64,
    top3: u64,
    aa_quiet: u64,
}

#[test]
fn why_names_the_injected_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let mut tallies: Vec<(Culprit, Tally)> = Culprit::ALL
        .iter()
        .map(|c| (*c, Tally::default()))
        .collect();
    let mut failures = Vec::new();
    for trial in 0..PER_KIND * Culprit::ALL.len() as u64 {
        let kind = Culprit::ALL[(trial % Culprit::ALL.len() as u64) as usize];
        let sc = Scenario::random(0x7a11_0000 + trial, Some(kind));
        let path = dir.path().join("t.ring");
        let truth = {
            let w = RingWriter::create(&path, 24 << 20, sc.workers).unwrap();
            sc.write(&w).unwrap().unwrap()
        };
        let reader = RingReader::open(&path).unwrap();
        let view = reader.view();
        let t = &mut tallies[(trial % Culprit::ALL.len() as u64) as usize].1;
        t.trials += 1;

        // A/A: a calm window of the same length, 30 s of baseline before.
        let len = truth.to_ns - truth.from_ns;
        let aa = why(&view, T0_NS + 30 * SEC, T0_NS + 30 * SEC + len, 30 * SEC).unwrap();
        if !aa.has_finding() {
            t.aa_quiet += 1;
        }

        // The spike: the detected window that overlaps the injection most.
        let mut det = Detector::new(Params::default());
        records(&view, |r, _| det.add(r));
        let (_, spikes) = det.finish();
        let overlap = |s: &ringlog::analyze::spikes::Spike| {
            s.end_ns
                .min(truth.to_ns)
                .saturating_sub(s.start_ns.max(truth.from_ns))
        };
        let Some(sp) = spikes
            .iter()
            .filter(|s| overlap(s) > 0)
            .max_by_key(|s| overlap(s))
        else {
            t.missed_spike += 1;
            failures.push(format!("{kind:?} seed {trial}: no spike ({sc:?})"));
            continue;
        };
        let rep = why(&view, sp.start_ns, sp.end_ns, 60 * SEC).unwrap();
        let ranked: Vec<_> = rep
            .findings
            .iter()
            .filter(|f| kind == Culprit::Phase || f.dims != [Dim::Phase])
            .collect();
        let rank = ranked
            .iter()
            .position(|f| f.dims == [truth.dim] && f.values == [truth.value]);
        match rank {
            Some(0) => {
                t.first += 1;
                t.top3 += 1;
            }
            Some(1 | 2) => t.top3 += 1,
            _ => {}
        }
        if rank != Some(0) {
            let top: Vec<String> = ranked
                .iter()
                .take(3)
                .map(|f| format!("{:?}={:?} excess {:.2}", f.dims, f.values, f.excess_share))
                .collect();
            failures.push(format!(
                "{kind:?} trial {trial}: rank {rank:?}, truth {:?}={}, top {top:?} ({sc:?})",
                truth.dim, truth.value
            ));
        }
    }
    let mut all = Tally::default();
    println!("culprit   trials  missed  #1     top-3  A/A quiet");
    for (c, t) in &tallies {
        println!(
            "{:<9} {:>6}  {:>6}  {:>5}  {:>5}  {:>5}",
            format!("{c:?}"),
            t.trials,
            t.missed_spike,
            t.first,
            t.top3,
            t.aa_quiet
        );
        all.trials += t.trials;
        all.missed_spike += t.missed_spike;
        all.first += t.first;
        all.top3 += t.top3;
        all.aa_quiet += t.aa_quiet;
    }
    let pct = |x: u64| 100.0 * x as f64 / all.trials as f64;
    println!(
        "all       {:>6}  {:>6}  {:>5}  {:>5}  {:>5}   (#1 {:.1}%, top-3 {:.1}%, A/A no finding {:.1}%)",
        all.trials,
        all.missed_spike,
        all.first,
        all.top3,
        all.aa_quiet,
        pct(all.first),
        pct(all.top3),
        pct(all.aa_quiet)
    );
    for f in failures.iter().take(20) {
        println!("  {f}");
    }
    assert!(all.trials >= 300);
    assert!(
        pct(all.first) >= 95.0,
        "culprit #1 in {:.1}%",
        pct(all.first)
    );
    assert!(
        pct(all.top3) >= 99.0,
        "culprit top-3 in {:.1}%",
        pct(all.top3)
    );
    assert!(
        pct(all.aa_quiet) >= 95.0,
        "A/A no finding in {:.1}%",
        pct(all.aa_quiet)
    );
}

/// A/A for the spike detector: calm scenarios (no fault; the usual 0.2%
/// of requests 3-10x slower) must show no spike at all in at least 97%
/// of the rings.
#[test]
fn spikes_stay_quiet_without_a_fault() {
    let dir = tempfile::tempdir().unwrap();
    let trials = 100u64;
    let mut quiet = 0;
    let mut noisy = Vec::new();
    for trial in 0..trials {
        let sc = Scenario::random(0x5a1e_0000 + trial, None);
        let path = dir.path().join("aa.ring");
        {
            let w = RingWriter::create(&path, 24 << 20, sc.workers).unwrap();
            sc.write(&w).unwrap();
        }
        let reader = RingReader::open(&path).unwrap();
        let view = reader.view();
        let mut det = Detector::new(Params::default());
        records(&view, |r, _| det.add(r));
        let (_, spikes) = det.finish();
        if spikes.is_empty() {
            quiet += 1;
        } else {
            noisy.push(format!(
                "seed {trial}: {} spike(s), first at {} s x{:.1} with {:.0} affected of {:.0}",
                spikes.len(),
                (spikes[0].start_ns - T0_NS) / SEC,
                spikes[0].peak_ns as f64 / spikes[0].baseline_ns.max(1) as f64,
                spikes[0].affected,
                spikes[0].requests
            ));
        }
    }
    let pct = 100.0 * quiet as f64 / trials as f64;
    println!("A/A spikes: {quiet}/{trials} calm rings with no spike ({pct:.1}%)");
    for n in noisy.iter().take(10) {
        println!("  {n}");
    }
    assert!(pct >= 97.0, "{pct:.1}% of calm rings without a spike");
}
