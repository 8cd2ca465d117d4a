//! `ringlog spikes`, `why`, `hist` and `export` on a written ring with a
//! known culprit: endpoint `10.0.3.7:8080` turns slow (upstream first byte)
//! for 5 s in the middle of 90 s of traffic, with a config push just before.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;

use ringlog::{Event, EventKind, NameKind, Record, RingWriter};
use serde_json::Value;

#[path = "support/run.rs"]
mod support;
use support::ringlog as run;

const BIN: &str = env!("CARGO_BIN_EXE_ringlog");
const SEC: u64 = 1_000_000_000;
/// Monotonic start of the synthetic traffic.
const T0: u64 = 1_000 * SEC;

fn write_ring(path: &std::path::Path) {
    let w = RingWriter::create(path, 64 << 20, 2).unwrap();
    let route = w.intern(NameKind::Route, "orders", 1).unwrap();
    let eps: Vec<u16> = (0..4)
        .map(|i| {
            w.intern(NameKind::Endpoint, &format!("10.0.3.{}:8080", 5 + i), 1)
                .unwrap()
        })
        .collect();
    let market = w.intern(NameKind::RequestType, "market", 1).unwrap();
    w.name_worker(0, "worker-0").unwrap();
    w.name_worker(1, "worker-1").unwrap();
    let mut shards = [w.shard(0).unwrap(), w.shard(1).unwrap()];
    // 90 s at 1000 req/s; endpoint index 2 (10.0.3.7) slow during 60-65 s.
    for i in 0..90_000u64 {
        let x = ringlog::synth::mix(i);
        let t = T0 + i * 1_000_000;
        let e = (x % 4) as usize;
        let mut phases = [20_000, 0, 0, 900_000 + x % 300_000, 30_000, 10_000];
        if e == 2 && (T0 + 60 * SEC..T0 + 65 * SEC).contains(&t) {
            phases[3] = 25_000_000 + x % 15_000_000;
        }
        let r = Record {
            start_ns: t,
            total_ns: phases.iter().sum(),
            phases_ns: phases,
            route,
            endpoint: eps[e],
            req_type: market,
            status: 200,
            generation: if t < T0 + 59 * SEC { 41 } else { 42 },
            sample_p: ringlog::record::P_ONE,
            ..Record::default()
        };
        let s = (x >> 20) as usize % 2;
        shards[s].write(&r);
        if i == 59_000 {
            let mut ev = Event::new(EventKind::ConfigApplied, t);
            ev.generation = 42;
            shards[0].write_event(&ev);
        }
    }
}

#[test]
fn spikes_and_why_find_the_slow_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("r.ring");
    write_ring(&ring);

    let sp: Value = serde_json::from_str(&run(&["spikes", "--json"], &ring)).unwrap();
    let spikes = sp["spikes"].as_array().unwrap();
    assert_eq!(spikes.len(), 1, "{sp}");
    let s = &spikes[0];
    let start = s["start_mono_ns"].as_u64().unwrap();
    let end = s["end_mono_ns"].as_u64().unwrap();
    // Within one bucket of the injection.
    assert!(start.abs_diff(T0 + 60 * SEC) <= SEC, "{s}");
    assert!(end.abs_diff(T0 + 65 * SEC) <= SEC, "{s}");

    let why: Value = serde_json::from_str(&run(&["why", "--json"], &ring)).unwrap();
    assert_eq!(why["finding"], true, "{why}");
    let first_non_phase = why["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["dims"][0] != "phase")
        .unwrap();
    assert_eq!(first_non_phase["values"][0], "10.0.3.7:8080", "{why}");
    assert!(first_non_phase["excess_share"].as_f64().unwrap() > 0.9);
    let verdict = why["verdict"].as_str().unwrap();
    assert!(
        verdict.contains("10.0.3.7:8080") && verdict.contains("first_byte"),
        "{verdict}"
    );
    assert!(verdict.contains("config_applied"), "{verdict}");

    // Text output says the same for people.
    let text = run(&["why"], &ring);
    assert!(text.contains("endpoint=10.0.3.7:8080"), "{text}");

    // report --json says what it wrote and each spike's verdict.
    let page = dir.path().join("r.html");
    let rep: Value = serde_json::from_str(&run(
        &["report", "--json", "--out", page.to_str().unwrap()],
        &ring,
    ))
    .unwrap();
    assert_eq!(rep["spikes"], 1, "{rep}");
    assert_eq!(
        rep["bytes"].as_u64().unwrap(),
        std::fs::metadata(&page).unwrap().len()
    );
    assert!(
        rep["explained"][0]["verdict"]
            .as_str()
            .unwrap()
            .contains("10.0.3.7:8080"),
        "{rep}"
    );

    // tail --where keeps only matching records: a filter on record fields
    // excludes events, so -n counts records only.
    let tailed = run(
        &[
            "tail",
            "-n",
            "2000",
            "--json",
            "--where",
            "endpoint=10.0.3.7:8080",
        ],
        &ring,
    );
    let recs: Vec<Value> = tailed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("request_type").is_some())
        .collect();
    assert!(recs.len() > 100, "{}", recs.len());
    assert!(recs.iter().all(|v| v["endpoint"] == "10.0.3.7:8080"));
    assert_eq!(recs.len(), tailed.lines().count(), "no event lines");
    let three = run(
        &[
            "tail",
            "-n",
            "3",
            "--json",
            "--where",
            "endpoint=10.0.3.7:8080",
        ],
        &ring,
    );
    let kinds: Vec<String> = three
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].to_string())
        .collect();
    assert_eq!(kinds, ["\"record\""; 3]);
    // Without a filter, events stay on the timeline.
    let all = run(&["tail", "-n", "1000000", "--json"], &ring);
    assert!(
        all.lines().any(|l| l.contains("\"kind\":\"event\"")),
        "the scenario writes events"
    );

    // A window with no fault: no finding.
    let calm: Value = serde_json::from_str(&run(
        &["why", "--json", "--from", "-60s", "--to", "-55s"],
        &ring,
    ))
    .unwrap();
    assert_eq!(calm["finding"], false, "{calm}");
}

#[test]
fn hist_export_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("r.ring");
    write_ring(&ring);
    let h: Value =
        serde_json::from_str(&run(&["hist", "--json", "--by", "endpoint"], &ring)).unwrap();
    let groups = h["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 4);
    let total: f64 = groups.iter().map(|g| g["requests"].as_f64().unwrap()).sum();
    assert!((total - 90_000.0).abs() < 1e-6, "{total}");
    let slow = groups
        .iter()
        .find(|g| g["group"]["endpoint"] == "10.0.3.7:8080")
        .unwrap();
    assert!(
        slow["quantiles"]["p99.9"]["ns"].as_u64().unwrap() > 20_000_000,
        "{slow}"
    );
    // --where and --since narrow the records.
    let f: Value = serde_json::from_str(&run(
        &[
            "hist",
            "--json",
            "--by",
            "route",
            "--where",
            "endpoint=10.0.3.7:8080,total>10ms",
        ],
        &ring,
    ))
    .unwrap();
    let n = f["groups"][0]["records"].as_u64().unwrap();
    assert!(n > 1000 && n < 1400, "{n}");
    let last: Value =
        serde_json::from_str(&run(&["hist", "--json", "--since", "-10s"], &ring)).unwrap();
    let n = last["groups"][0]["records"].as_u64().unwrap();
    assert!((9_900..=10_001).contains(&n), "{n}");
    let csv = run(&["export", "--format", "csv", "--since", "-1s"], &ring);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("kind,time,shard,route"));
    assert!(
        lines.len() > 900 && lines[1].starts_with("record,"),
        "{}",
        lines.len()
    );
    assert!(
        lines.iter().all(|l| l.split(',').count() == 19),
        "csv columns"
    );
    // Errors name the problem.
    let bad = Command::new(BIN)
        .args(["hist", "--where", "colour=red", "--ring"])
        .arg(&ring)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("colour=red"));
}

/// A ring big enough that the scans run on several threads: the answers
/// must be the ones a single thread gives (and find the injected culprit).
#[test]
fn threaded_scans_agree_with_one_thread() {
    use ringlog::scenario::{Culprit, Scenario};
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("big.ring");
    let mut sc = Scenario::random(0x07b2_ead5, Some(Culprit::Endpoint));
    sc.rate = 8_000;
    let w = RingWriter::create(&ring, 64 << 20, sc.workers).unwrap();
    let truth = sc.write(&w).unwrap().unwrap();
    drop(w);
    let st: Value = serde_json::from_str(&run(&["stat", "--json"], &ring)).unwrap();
    let kept = st["records_in_ring"].as_u64().unwrap();
    // More than the single-thread cut-off (2^18 slots).
    assert!(kept > 300_000, "{kept}");

    let both = |args: &[&str]| -> (Value, Value) {
        let mut one = vec!["--threads", "1"];
        one.extend_from_slice(args);
        let mut three = vec!["--threads", "3"];
        three.extend_from_slice(args);
        (
            serde_json::from_str(&run(&one, &ring)).unwrap(),
            serde_json::from_str(&run(&three, &ring)).unwrap(),
        )
    };

    let (a, b) = both(&["hist", "--json", "--by", "endpoint,type"]);
    let groups = |v: &Value| -> Vec<(String, u64, Value)> {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["group"].to_string(),
                    g["records"].as_u64().unwrap(),
                    g["quantiles"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(groups(&a), groups(&b));
    assert!(groups(&a).len() > 10);
    let total = |v: &Value| -> u64 {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["records"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total(&a), kept);

    let (a, b) = both(&["spikes", "--json"]);
    // Times and quantiles exactly; weighted sums up to float rounding.
    let spikes = |v: &Value| -> Vec<(Value, Value, Value, Value, f64, f64)> {
        v["spikes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let f = |k: &str| s[k].clone();
                let x = |k: &str| (s[k].as_f64().unwrap() * 1e6).round();
                (
                    f("start_mono_ns"),
                    f("end_mono_ns"),
                    f("peak_ns"),
                    f("baseline_ns"),
                    x("requests"),
                    x("affected"),
                )
            })
            .collect()
    };
    assert_eq!(spikes(&a), spikes(&b));
    let near = |sp: &Value| {
        sp["start_mono_ns"]
            .as_u64()
            .unwrap()
            .abs_diff(truth.from_ns)
            <= SEC
    };
    assert!(
        a["spikes"].as_array().unwrap().iter().any(near),
        "{a} vs {truth:?}"
    );

    let (a, b) = both(&["why", "--json"]);
    let labels = |v: &Value| -> Vec<(Value, Value)> {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["label"].clone(), f["support"].clone()))
            .collect()
    };
    assert_eq!(labels(&a), labels(&b));
    assert_eq!(a["baseline_q_ns"], b["baseline_q_ns"]);
    assert_eq!(a["events"], b["events"]);
    assert_eq!(a["findings"][0]["dims"][0], "endpoint", "{a}");

    // The report's slowest-requests table comes from per-thread heaps.
    let (r1, r3) = (dir.path().join("r1.html"), dir.path().join("r3.html"));
    for (t, out) in [("1", &r1), ("3", &r3)] {
        run(
            &["--threads", t, "report", "--out", out.to_str().unwrap()],
            &ring,
        );
    }
    let slowest = |p: &std::path::Path| -> String {
        let html = std::fs::read_to_string(p).unwrap();
        let at = html.find("Slowest").expect("slowest table");
        html[at..].to_string()
    };
    assert_eq!(slowest(&r1), slowest(&r3));
}
