//! The `ringlog` binary against real ring files: `stat --json` reports what
//! was written, `tail --json` prints names resolved, `tail -f` follows a
//! file while it is being written, and bad files fail with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringlog::{Event, EventKind, NameKind, Record, RingWriter, Sampler, SamplerConfig, TypeRule};

const BIN: &str = env!("CARGO_BIN_EXE_ringlog");

#[path = "support/run.rs"]
mod support;
use support::ringlog;

fn record(route: u16, ep: u16, ty: u16, i: u64) -> Record {
    Record {
        start_ns: 1_000_000 + i * 1000,
        total_ns: 500,
        phases_ns: [100, 100, 0, 200, 100, 0],
        route,
        endpoint: ep,
        req_type: ty,
        status: 200,
        sample_p: ringlog::record::P_ONE,
        ..Record::default()
    }
}

#[test]
fn stat_and_tail_report_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ring");
    let w = RingWriter::create(&path, 1 << 20, 2).unwrap();
    let route = w.intern(NameKind::Route, "orders", 1).unwrap();
    let ep = w.intern(NameKind::Endpoint, "10.0.0.7:8080", 1).unwrap();
    let ty = w.intern(NameKind::RequestType, "market", 1).unwrap();
    w.name_worker(0, "worker-0").unwrap();
    let mut s0 = w.shard(0).unwrap();
    let cfg = SamplerConfig {
        default: TypeRule::rate(1.0),
        types: vec![],
        max_records_per_sec: 0,
        max_forced_per_sec: 0,
    };
    let mut sampler = Sampler::new(&cfg, 0);
    for i in 0..100 {
        let d = sampler.decide(i, ty, i, 500, false);
        s0.count(ty, &d);
        s0.write(&record(route, ep, ty, i));
    }
    s0.write_event(&Event::new(EventKind::ConfigApplied, 2_000_000));

    let stat = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&ringlog(&[&["stat", "--json"], args].concat(), &path)).unwrap()
    };
    let j = stat(&[]);
    assert_eq!(j["records_in_ring"], 100);
    assert_eq!(j["events_in_ring"], 1);
    assert_eq!(j["written"], 101);
    assert_eq!(j["shards"], 2);
    let market = j["sampler"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["request_type"] == "market")
        .unwrap();
    assert_eq!(market["counters"]["seen"], 100);
    assert_eq!(market["counters"]["kept_sampled"], 100);
    assert_eq!(market["counters"]["dropped"], 0);
    assert!(j.get("selected").is_none(), "{j}");

    // --since / --where narrow what `selected` counts (the rest stays the
    // whole ring). The newest entry is the event at 2 ms, so -950us starts
    // at 1.05 ms: records 50..100 and the event.
    let j = stat(&["--since", "-950us"]);
    assert_eq!(j["records_in_ring"], 100);
    assert_eq!(j["selected"]["records"], 50, "{j}");
    assert_eq!(j["selected"]["events"], 1, "{j}");
    let j = stat(&["--where", "endpoint=10.0.0.7:8080,total>400ns"]);
    assert_eq!(j["selected"]["records"], 100, "{j}");
    assert_eq!(j["selected"]["requests"], 100.0, "{j}");
    let j = stat(&["--where", "status>=500"]);
    assert_eq!(j["selected"]["records"], 0, "{j}");

    let out = Command::new(BIN)
        .args(["tail", "-n", "3", "--json", "--ring"])
        .arg(&path)
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["kind"], "event");
    assert_eq!(lines[2]["event"], "config_applied");
    assert_eq!(lines[0]["route"], "orders");
    assert_eq!(lines[0]["endpoint"], "10.0.0.7:8080");
    assert_eq!(lines[0]["request_type"], "market");
    assert_eq!(lines[0]["worker"], "worker-0");
    let phases: u64 = lines[0]["phases_ns"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(phases, lines[0]["total_ns"].as_u64().unwrap());

    let text = Command::new(BIN)
        .args(["tail", "-n", "1", "--ring"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("EVENT config_applied"));
}

/// `tail -n N --where F` prints the newest N entries that match F, even
/// when they are sparse among the newest slots (and merges both shards).
#[test]
fn tail_n_counts_matching_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.ring");
    let w = RingWriter::create(&path, 1 << 20, 2).unwrap();
    let busy = w.intern(NameKind::Route, "busy", 1).unwrap();
    let rare = w.intern(NameKind::Route, "rare", 1).unwrap();
    let mut shards = [w.shard(0).unwrap(), w.shard(1).unwrap()];
    // 4000 records; every 100th is `rare` (40 in all), alternating shards.
    for i in 0..4000u64 {
        let route = if i % 100 == 7 { rare } else { busy };
        shards[(i / 100 % 2) as usize].write(&record(route, 0, 0, i));
    }
    let tail = |args: &[&str]| -> Vec<serde_json::Value> {
        ringlog(&[&["tail", "--json"], args].concat(), &path)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let got = tail(&["-n", "25", "--where", "route=rare"]);
    assert_eq!(got.len(), 25);
    assert!(got.iter().all(|v| v["route"] == "rare"));
    // The newest 25 of the 40, oldest first.
    let starts: Vec<u64> = got
        .iter()
        .map(|v| v["start_mono_ns"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (15..40).map(|k| 1_000_000 + (k * 100 + 7) * 1000).collect();
    assert_eq!(starts, want);
    // Asking for more than exist gives all of them.
    assert_eq!(tail(&["-n", "100", "--where", "route=rare"]).len(), 40);
    // Without a filter: the newest slots, as before.
    let plain = tail(&["-n", "3"]);
    assert_eq!(plain.len(), 3);
    assert_eq!(plain[2]["start_mono_ns"], 1_000_000 + 3999 * 1000);
}

#[test]
fn tail_follows_a_file_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.ring");
    let w = RingWriter::create(&path, 1 << 20, 1).unwrap();
    let route = w.intern(NameKind::Route, "live", 1).unwrap();
    let mut child = Command::new(BIN)
        .args(["tail", "-f", "-n", "0", "--json", "--ring"])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            got.push(line);
            if got.len() == 50 {
                break;
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(300)); // tail is polling
    let mut sw = w.shard(0).unwrap();
    for i in 0..50 {
        sw.write(&record(route, 0, 0, i));
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), 50, "tail -f printed {} of 50 records", got.len());
    let tickets: Vec<u64> = got
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["ticket"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(tickets, (0..50).collect::<Vec<_>>());
}

#[test]
fn bad_file_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk");
    std::fs::write(&path, vec![7u8; 4096]).unwrap();
    let out = Command::new(BIN)
        .args(["stat", "--ring"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a tailmesh ring file"), "{err}");
}
