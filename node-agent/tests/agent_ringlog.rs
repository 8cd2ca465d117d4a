//! End to end: the real agent, three `tailmesh-bench upstream`s and the load
//! generator; one endpoint is made slow for 5 s through its control
//! endpoint. `ringlog spikes` must find the window within 1 s of the
//! injection and `ringlog why` must name that endpoint first. Meanwhile
//! `ringlog tail -f` follows the file the agent is writing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "support/agent.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Agent, Upstream, config_with, request, sibling};

const SEC: u64 = 1_000_000_000;

/// Three request types sampled like the demo config; slow ones kept.
const TYPES: &str =
    "  - { name: market, match: { headers: { x-order-type: market } }, sample: 1.0 }
  - { name: limit,  match: { headers: { x-order-type: limit } },  sample: 0.1 }
  - { name: cancel, match: { headers: { x-order-type: cancel } }, sample: 0.5 }
";
const SAMPLING: &str =
    "{ default: 0.01, keep_errors: true, keep_slower_than: 50ms, max_records_per_sec: 0 }";

fn ringlog(args: &[&str], ring: &std::path::Path) -> serde_json::Value {
    let out = Command::new(sibling("ringlog"))
        .args(args)
        .args(["--json", "--ring"])
        .arg(ring)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Per second after `t0`: kept records, records slower than 16 ms (a fifth
/// of the old fault) and the slowest, so a failure shows what the baseline saw.
fn series(records: &[serde_json::Value], t0: u64) -> String {
    let mut by_sec: std::collections::BTreeMap<i64, (u64, u64, u64)> = Default::default();
    for r in records.iter().filter(|r| r["kind"] == "record") {
        let (Some(start), Some(total)) = (r["start_mono_ns"].as_u64(), r["total_ns"].as_u64())
        else {
            continue;
        };
        let sec = (start as i64 - t0 as i64).div_euclid(SEC as i64);
        let e = by_sec.entry(sec).or_default();
        e.0 += 1;
        e.1 += u64::from(total > 16_000_000);
        e.2 = e.2.max(total);
    }
    by_sec
        .iter()
        .map(|(s, (n, slow, max))| {
            format!(
                "  {s:>3}s kept {n:>5} over16ms {slow:>4} max {:.1}ms\n",
                *max as f64 / 1e6
            )
        })
        .collect()
}

#[test]
fn spikes_and_why_find_the_endpoint_made_slow() {
    let ups: Vec<Upstream> = (0..3).map(|_| Upstream::start(&[])).collect();
    let ports: Vec<u16> = ups.iter().map(|u| u.port).collect();
    let agent = Agent::start(
        |port, ring| config_with(port, &ports, "5s", ring, TYPES, SAMPLING),
        &[],
    );
    let ring = agent.ring();

    // Follow the ring while the agent writes it.
    let mut follow = Command::new(sibling("ringlog"))
        .args(["tail", "-f", "-n", "0", "--json", "--ring"])
        .arg(&ring)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let tail_out = follow.stdout.take().unwrap();
    let counter = std::thread::spawn(move || {
        BufReader::new(tail_out)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains("\"request_type\""))
            .count()
    });

    // The fault: endpoint 2 gets +150 ms from 8 s to 13 s after this PUT.
    let body = r#"{"latency":"150ms","latency_window":{"after":"8s","for":"5s"}}"#;
    let t_put = ringlog::clock::mono_ns();
    let r = request(
        ports[1],
        &format!(
            "PUT /_bench/faults HTTP/1.1\r\nHost: t\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (from, to) = (t_put + 8 * SEC, t_put + 13 * SEC);

    let load = Command::new(sibling("tailmesh-bench"))
        .args([
            "load",
            "--url",
            &format!("http://127.0.0.1:{}/", agent.port),
        ])
        .args(["--rate", "800", "--duration", "17s", "--connections", "96"])
        .args(["--timeout", "3s", "--type", "market:40:x-order-type=market"])
        .args(["--type", "limit:40:x-order-type=limit"])
        .args(["--type", "cancel:20:x-order-type=cancel"])
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    std::thread::sleep(Duration::from_millis(300)); // tail -f polls every 100 ms
    let _ = follow.kill();
    let _ = follow.wait();
    let followed = counter.join().unwrap();
    assert!(followed > 1000, "tail -f printed {followed} records");

    // Factor 5: under a debug build on a busy 2-core box a 1 s bucket's
    // p99.9 can double by noise next to the window; the fault is ~100x.
    // CI once found no spike with a +80 ms fault (cause unknown: a slow
    // baseline is the likely one); a failure now prints the series.
    let sp = ringlog(&["spikes", "--factor", "5"], &ring);
    let spikes = sp["spikes"].as_array().unwrap();
    let hit = spikes
        .iter()
        .find(|s| {
            let (a, b) = (
                s["start_mono_ns"].as_u64().unwrap(),
                s["end_mono_ns"].as_u64().unwrap(),
            );
            a.abs_diff(from) <= SEC && b.abs_diff(to) <= SEC
        })
        .unwrap_or_else(|| {
            panic!(
                "no spike within 1 s of {from}..{to}: {sp}\nper second since the PUT:\n{}",
                series(&agent.records(), t_put)
            )
        });
    println!("injected {from}..{to}, found {hit}");

    let why = ringlog(&["why", "--factor", "5"], &ring);
    let slow = format!("127.0.0.1:{}", ports[1]);
    let first = why["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["dims"][0] != "phase")
        .unwrap_or_else(|| panic!("no finding: {why}"));
    assert_eq!(first["dims"][0], "endpoint", "{why}");
    assert_eq!(first["values"][0], slow.as_str(), "{why}");
    let verdict = why["verdict"].as_str().unwrap();
    assert!(
        verdict.contains(&slow) && verdict.contains("first_byte"),
        "{verdict}"
    );
    println!("{verdict}");
}
