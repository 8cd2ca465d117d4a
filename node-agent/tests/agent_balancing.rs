//! Load balancing on live endpoint state, end to end (both drivers via
//! ./test.sh), with the real agent and three fault-injecting
//! `tailmesh-bench upstream`s: `p2c_ewma` moves traffic off an endpoint
//! made 20 ms slower and back once it recovers; the outlier detector ejects
//! an endpoint answering 503, it gets no traffic while ejected and returns
//! on schedule, both on the ring (`ringlog tail`) and in `/clusters`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::*;

fn three_config(port: u16, ups: [u16; 3], ring: &std::path::Path, cluster: &str) -> String {
    format!(
        r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
clusters:
  - name: c
    endpoints:
      - {{ addr: "127.0.0.1:{}" }}
      - {{ addr: "127.0.0.1:{}" }}
      - {{ addr: "127.0.0.1:{}" }}
    {cluster}
routes:
  - {{ name: r, to: [ {{ cluster: c }} ] }}
sampling: {{ default: 0.01, keep_errors: true, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 8MiB }}
"#,
        ups[0],
        ups[1],
        ups[2],
        ring.display()
    )
}

fn three(cluster: &'static str) -> ([Upstream; 3], Agent) {
    let ups = [
        Upstream::start(&[]),
        Upstream::start(&[]),
        Upstream::start(&[]),
    ];
    let ports = [ups[0].port, ups[1].port, ups[2].port];
    let agent = Agent::start(move |p, ring| three_config(p, ports, ring, cluster), &[]);
    (ups, agent)
}

/// `n` keep-alive clients send requests for `secs`; the statuses seen.
fn drive(port: u16, n: usize, secs: f64) -> Vec<u16> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(move || {
                    let mut c = connect(port);
                    let mut carry = Vec::new();
                    let mut got = Vec::new();
                    while Instant::now() < until {
                        c.write_all(b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                        got.push(read_response(&mut c, &mut carry).unwrap().status);
                    }
                    got
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// Requests each upstream served since `before`.
fn served_since(ups: &[Upstream; 3], before: [u64; 3]) -> [u64; 3] {
    let mut d = [0; 3];
    for i in 0..3 {
        d[i] = ups[i].served() - before[i];
    }
    d
}

fn served(ups: &[Upstream; 3]) -> [u64; 3] {
    [ups[0].served(), ups[1].served(), ups[2].served()]
}

#[test]
fn p2c_ewma_moves_traffic_off_a_slow_endpoint_and_back() {
    let (ups, agent) = three("lb: p2c_ewma\n    ewma_decay: 1s");
    drive(agent.port, 4, 1.0);
    faults(ups[0].port, r#"{"latency":"20ms"}"#);
    let before = served(&ups);
    let statuses = drive(agent.port, 4, 5.0);
    assert!(statuses.iter().all(|&s| s == 200));
    let d = served_since(&ups, before);
    let total: u64 = d.iter().sum();
    let share = d[0] as f64 / total as f64;
    assert!(share <= 0.10, "slow endpoint share {share:.3}: {d:?}");
    eprintln!(
        "20 ms slower endpoint: {:.1}% of {total} requests over 5 s",
        share * 100.0
    );
    // The fault clears: with a 1 s decay its 20 ms estimate is down to
    // about a tenth of a millisecond 5 s later, so it is tried again and
    // takes its share back.
    faults(ups[0].port, "{}");
    drive(agent.port, 4, 5.0);
    let before = served(&ups);
    drive(agent.port, 4, 2.0);
    let d = served_since(&ups, before);
    let total: u64 = d.iter().sum();
    let share = d[0] as f64 / total as f64;
    // Back in rotation: from none of the traffic to a real share. Quiet
    // runs measure 29-34% (an even third); a loaded 2-core CI host once
    // measured 9.8%: the estimate is peak-sensitive, so every scheduling
    // hiccup on an endpoint's answer pushes load off it for a while.
    // Never picked again would be 0%.
    assert!(share >= 0.05, "recovered share {share:.3}: {d:?}");
    eprintln!(
        "after the fault: {:.1}% of {total} requests: {d:?}",
        share * 100.0
    );
    let clusters: serde_json::Value = serde_json::from_str(&agent.admin_get("/clusters")).unwrap();
    let eps = clusters["clusters"][0]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 3);
    assert!(
        eps.iter().all(|e| e["ewma_ms"].as_f64().unwrap() < 20.0),
        "{clusters:#}"
    );
    assert_eq!(clusters["clusters"][0]["lb"], "p2c_ewma");
}

#[test]
fn an_endpoint_answering_503_is_ejected_and_returns_on_schedule() {
    let (ups, agent) =
        three("outlier: { consecutive_5xx: 3, base_ejection: 3s, max_ejection_percent: 34 }");
    faults(ups[1].port, r#"{"error_fraction":1.0,"error_status":503}"#);
    let before = served(&ups);
    let statuses = drive(agent.port, 2, 1.0);
    let d = served_since(&ups, before);
    let errors = statuses.iter().filter(|&&s| s == 503).count();
    // Round robin sent it every third request until its third 503 in a
    // row; none after that (two clients may have had one in flight).
    assert!((3..=5).contains(&errors), "{errors} 503s, served {d:?}");
    assert!(d[1] <= 5, "{d:?}");
    assert_eq!(
        agent.metric("tailmesh_outlier_ejected_endpoints{cluster=\"c\"} "),
        1
    );
    let clusters: serde_json::Value = serde_json::from_str(&agent.admin_get("/clusters")).unwrap();
    let ep = &clusters["clusters"][0]["endpoints"][1];
    assert_eq!(
        (ep["ejected"].as_bool(), ep["available"].as_bool()),
        (Some(true), Some(false)),
        "{ep}"
    );
    // It comes back after its 3 s ejection (which began near the start
    // of the 1 s drive; the return is checked every 100 ms) and serves.
    faults(ups[1].port, "{}");
    std::thread::sleep(Duration::from_millis(2600));
    let before = served(&ups);
    drive(agent.port, 2, 0.5);
    let d = served_since(&ups, before);
    assert!(d[1] > 0, "{d:?}");
    assert_eq!(
        agent.metric("tailmesh_outlier_ejected_endpoints{cluster=\"c\"} "),
        0
    );
    assert_eq!(
        agent.metric("tailmesh_outlier_ejections_total{cluster=\"c\"} "),
        1
    );
    // Both changes are on the timeline.
    let recs = agent.records();
    let kinds: Vec<_> = recs
        .iter()
        .filter(|r| r["kind"] == "event")
        .map(|r| r["event"].as_str().unwrap_or_default().to_string())
        .collect();
    let ejected = kinds.iter().position(|k| k == "endpoint_ejected");
    let restored = kinds.iter().position(|k| k == "endpoint_restored");
    assert!(ejected.is_some() && restored > ejected, "{kinds:?}");
}

#[test]
fn an_endpoint_failing_its_health_check_leaves_rotation_and_returns_after_rise() {
    let (ups, agent) = three(
        "health_check: { http_path: /check, interval: 200ms, timeout: 100ms, rise: 2, fall: 2 }",
    );
    let healthy = |i: usize| {
        let v: serde_json::Value = serde_json::from_str(&agent.admin_get("/clusters")).unwrap();
        v["clusters"][0]["endpoints"][i]["healthy"]
            .as_bool()
            .unwrap()
    };
    assert!(healthy(2));
    faults(ups[2].port, r#"{"error_fraction":1.0,"error_status":503}"#);
    // Out within interval × fall + 1 s.
    let t = Instant::now();
    while healthy(2) {
        assert!(
            t.elapsed() < Duration::from_millis(1400),
            "still in rotation"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = served(&ups);
    let statuses = drive(agent.port, 2, 0.5);
    let d = served_since(&ups, before);
    // Only the checks reach it now (the agent sends it no request).
    assert!(statuses.iter().all(|&s| s == 200), "{d:?}");
    assert!(d[2] <= 4, "{d:?}");
    assert_eq!(
        agent.metric("tailmesh_unhealthy_endpoints{cluster=\"c\"} "),
        1
    );
    // Back after `rise` passing checks.
    faults(ups[2].port, "{}");
    let t = Instant::now();
    while !healthy(2) {
        assert!(t.elapsed() < Duration::from_millis(1400), "not back");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = served(&ups);
    drive(agent.port, 2, 0.5);
    assert!(served_since(&ups, before)[2] > 10);
    assert!(agent.metric("tailmesh_health_checks_total{cluster=\"c\",result=\"fail\"} ") >= 2);
    // Both flips are on the timeline, once the workers ticked.
    drive(agent.port, 1, 0.2);
    let recs = agent.records();
    let flips: Vec<_> = recs
        .iter()
        .filter(|r| r["kind"] == "event" && r["event"] == "endpoint_health")
        .map(|r| r["to"].as_u64().unwrap_or(9))
        .collect();
    let events: Vec<_> = recs.iter().filter(|r| r["kind"] == "event").collect();
    assert_eq!(flips, vec![0, 1], "{events:?}");
}

#[test]
fn a_tcp_check_takes_a_dead_endpoint_out_of_rotation() {
    let (ups, agent) =
        three("health_check: { tcp: true, interval: 200ms, timeout: 100ms, rise: 1, fall: 2 }");
    let [a, b, c] = ups;
    drop(c); // the process is gone: connects are refused
    let t = Instant::now();
    loop {
        let v: serde_json::Value = serde_json::from_str(&agent.admin_get("/clusters")).unwrap();
        if v["clusters"][0]["endpoints"][2]["healthy"] == false {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_millis(1400),
            "still in rotation"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let statuses = drive(agent.port, 2, 0.5);
    assert!(
        statuses.iter().all(|&s| s == 200),
        "a dead endpoint got requests"
    );
    assert!(a.served() > 0 && b.served() > 0);
}

#[test]
fn locality_failover_when_the_local_zone_fails() {
    let ups = [
        Upstream::start(&[]),
        Upstream::start(&[]),
        Upstream::start(&[]),
    ];
    let p = [ups[0].port, ups[1].port, ups[2].port];
    let agent = Agent::start(
        move |port, ring| {
            format!(
                r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
clusters:
  - name: c
    locality: {{ prefer: zone }}
    health_check: {{ http_path: /check, interval: 200ms, timeout: 100ms, rise: 1, fall: 2 }}
    endpoints:
      - {{ addr: "127.0.0.1:{}", labels: {{ zone: a, region: east }} }}
      - {{ addr: "127.0.0.1:{}", labels: {{ zone: a, region: east }} }}
      - {{ addr: "127.0.0.1:{}", labels: {{ zone: b, region: east }} }}
routes:
  - {{ name: r, to: [ {{ cluster: c }} ] }}
sampling: {{ default: 1.0, keep_errors: true, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 8MiB }}
"#,
                p[0],
                p[1],
                p[2],
                ring.display()
            )
        },
        &["--zone", "a", "--region", "east"],
    );
    let before = served(&ups);
    drive(agent.port, 2, 0.5);
    let d = served_since(&ups, before);
    // Zone b only sees its health checks (about 3 in half a second).
    assert!(d[0] > 20 && d[1] > 20 && d[2] <= 5, "{d:?}");
    // The local zone fails: everything goes to zone b once the checks
    // say so, and every answer is still a 200.
    for u in &ups[..2] {
        faults(u.port, r#"{"error_fraction":1.0,"error_status":503}"#);
    }
    std::thread::sleep(Duration::from_millis(900));
    let before = served(&ups);
    let statuses = drive(agent.port, 2, 0.5);
    let d = served_since(&ups, before);
    assert!(statuses.iter().all(|&s| s == 200), "{d:?}");
    assert!(d[2] > 20, "{d:?}");
    // Its records say they were served outside the preferred locality.
    let recs = agent.records();
    let remote = recs
        .iter()
        .filter(|r| r["kind"] == "record" && r["locality"] == 1)
        .count();
    assert!(remote > 20, "{remote} records with locality 1");
}
