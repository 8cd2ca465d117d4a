//! The load generator against an upstream with known injected latency:
//! percentiles land where the injected distribution puts them, open loop
//! corrects for coordinated omission, per-type histograms separate a slow
//! type, and wrk (an independent client) agrees with the upstream's count.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "support/harness.rs"]
mod harness;

/// Timing tests share two cores: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

use std::process::Command;

use harness::{Upstream, load, ms};

fn run_with_delayed_fraction(fraction: f64) -> serde_json::Value {
    let up = Upstream::start(&[]);
    up.faults(&format!(
        r#"{{"latency":"20ms","latency_fraction":{fraction}}}"#
    ));
    let j = load(&[
        "--url",
        &up.url("/"),
        "--rate",
        "1000",
        "--connections",
        "64",
        "--duration",
        "3s",
    ]);
    let l = &j["latency_ns"];
    println!(
        "{fraction}: p50 {} p90 {} p95 {} p99 {} ms",
        ms(&l["p50"]),
        ms(&l["p90"]),
        ms(&l["p95"]),
        ms(&l["p99"])
    );
    assert_eq!(j["errors_total"], 0);
    assert!(
        (2900..=3000).contains(&j["requests"].as_u64().unwrap()),
        "{}",
        j["requests"]
    );
    j
}

#[test]
fn percentiles_match_injected_latency() {
    let _serial = serial();
    // 3% of requests take 20 ms more: the 97th percentile is the boundary,
    // so p95 must be below 20 ms and p99 at or above it (and not far above).
    let j = run_with_delayed_fraction(0.03);
    let l = &j["latency_ns"];
    assert!(ms(&l["p95"]) < 20.0, "p95 {}", ms(&l["p95"]));
    assert!(ms(&l["p99"]) >= 20.0, "p99 {}", ms(&l["p99"]));
    assert!(
        ms(&l["p99"]) < 26.0,
        "p99 {} ms too far above the injected 20 ms",
        ms(&l["p99"])
    );
    // 10% delayed moves the boundary to p90: p50 below 20 ms, p95 at or above.
    let j = run_with_delayed_fraction(0.10);
    let l = &j["latency_ns"];
    assert!(ms(&l["p50"]) < 20.0, "p50 {}", ms(&l["p50"]));
    assert!(
        ms(&l["p95"]) >= 20.0 && ms(&l["p95"]) < 26.0,
        "p95 {}",
        ms(&l["p95"])
    );
}

#[test]
fn open_loop_corrects_for_coordinated_omission() {
    let _serial = serial();
    // The upstream stalls once for 500 ms, 1.5 s into the run. Requests
    // scheduled during the stall must be charged the time they queued.
    let up = Upstream::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let timeline = dir.path().join("t.jsonl");
    up.faults(r#"{"stall":{"after":"1500ms","for":"500ms"}}"#);
    let j = load(&[
        "--url",
        &up.url("/"),
        "--rate",
        "1000",
        "--connections",
        "10",
        "--duration",
        "3s",
        "--timeline",
        timeline.to_str().unwrap(),
    ]);
    let c = &j["latency_ns"];
    let u = &j["uncorrected_latency_ns"];
    println!(
        "corrected p99 {} p99.9 {} max {}; uncorrected p99 {}",
        ms(&c["p99"]),
        ms(&c["p99.9"]),
        ms(&c["max"]),
        ms(&u["p99"])
    );
    assert!(
        ms(&c["max"]) >= 450.0,
        "max {} misses the stall",
        ms(&c["max"])
    );
    assert!(
        ms(&c["p99.9"]) >= 400.0,
        "p99.9 {} misses the queueing",
        ms(&c["p99.9"])
    );
    // ~500 of 3000 requests were scheduled in the stall, so even p99 is high.
    assert!(ms(&c["p99"]) >= 300.0, "p99 {}", ms(&c["p99"]));
    // Measured from the actual send, only the few in flight at the stall see it.
    assert!(
        ms(&u["p99"]) < ms(&c["p99"]) / 2.0,
        "uncorrected p99 {} vs corrected {}",
        ms(&u["p99"]),
        ms(&c["p99"])
    );
    // The timeline shows the spike after second 0, and second 0 clean
    // (the load starts a few ms after the faults, so the stall begins
    // just before 1.5 s of load time).
    let secs: Vec<serde_json::Value> = std::fs::read_to_string(&timeline)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(secs.len() >= 3, "{} timeline seconds", secs.len());
    assert!(
        ms(&secs[0]["p99_ns"]) < 100.0,
        "second 0 p99 {}",
        ms(&secs[0]["p99_ns"])
    );
    let spike = secs
        .iter()
        .skip(1)
        .map(|s| ms(&s["max_ns"]))
        .fold(0.0, f64::max);
    assert!(spike >= 400.0, "timeline max after second 0 is {spike}");
}

#[test]
fn request_mix_and_per_type_histograms() {
    let _serial = serial();
    let up = Upstream::start(&[]);
    up.faults(r#"{"latency":"20ms","latency_match":"x-order-type: limit"}"#);
    let j = load(&[
        "--url",
        &up.url("/"),
        "--rate",
        "600",
        "--connections",
        "32",
        "--duration",
        "2s",
        "--type",
        "market:60:x-order-type=market",
        "--type",
        "limit:30:x-order-type=limit",
        "--type",
        "cancel:10:x-order-type=cancel",
    ]);
    let t = &j["types"];
    let n = |k: &str| t[k]["requests"].as_f64().unwrap();
    let total = n("market") + n("limit") + n("cancel");
    assert!(
        (n("market") / total - 0.6).abs() < 0.06,
        "market share {}",
        n("market") / total
    );
    assert!(
        (n("limit") / total - 0.3).abs() < 0.06,
        "limit share {}",
        n("limit") / total
    );
    assert!(
        ms(&t["limit"]["latency_ns"]["p50"]) >= 20.0,
        "limit p50 {}",
        ms(&t["limit"]["latency_ns"]["p50"])
    );
    assert!(
        ms(&t["market"]["latency_ns"]["p99"]) < 20.0,
        "market p99 {}",
        ms(&t["market"]["latency_ns"]["p99"])
    );
    assert!(ms(&t["cancel"]["latency_ns"]["p99"]) < 20.0);
}

#[test]
fn max_requests_bounds_the_run_and_errors_are_counted() {
    let _serial = serial();
    let up = Upstream::start(&[]);
    let j = load(&[
        "--url",
        &up.url("/"),
        "--connections",
        "4",
        "--duration",
        "10s",
        "--max-requests",
        "400",
    ]);
    assert_eq!(j["requests"], 400);
    up.faults(r#"{"error_fraction":1}"#);
    let j = load(&[
        "--url",
        &up.url("/"),
        "--connections",
        "2",
        "--duration",
        "1s",
        "--max-requests",
        "50",
    ]);
    assert_eq!(j["errors"]["status_5xx"], 50);
    // Nothing listening: connect errors, and the run still ends on time.
    drop(up);
    let t0 = std::time::Instant::now();
    let j = load(&[
        "--url",
        "http://127.0.0.1:1/",
        "--connections",
        "2",
        "--duration",
        "500ms",
    ]);
    assert!(j["errors"]["connect"].as_u64().unwrap() > 0);
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn wrk_agrees_with_the_upstream_count() {
    let _serial = serial();
    let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let wrk = wrk.expect("wrk is required (./test.sh installs it with apt-get install wrk)");
    let up = Upstream::start(&[]);
    let before = up.served();
    let out = Command::new(wrk)
        .args(["-t1", "-c8", "-d1s", &up.url("/")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let reqs: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read wrk output: {text}"));
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{text}"
    );
    let served = up.served() - before - 1; // minus the stats request itself... counted after
    assert!(reqs > 1000, "wrk made only {reqs} requests");
    // wrk stops counting at its deadline; up to one response per connection may be uncounted.
    assert!(
        served >= reqs && served <= reqs + 8,
        "upstream served {served}, wrk counted {reqs}"
    );
}
