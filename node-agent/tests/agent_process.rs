//! Process-level behaviour of the real agent: graceful drain on SIGTERM,
//! the drain timeout, and `--io auto` falling back to epoll when a seccomp
//! filter blocks io_uring.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let up = Upstream::start(&["--latency", "400ms"]);
    let p = up.port;
    let mut agent = Agent::start(move |port, ring| config(port, &[p], "5s", ring), &[]);
    let port = agent.port;
    let clients: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(port);
                let req = format!("GET /inflight/{i} HTTP/1.1\r\nHost: t\r\n\r\n");
                s.write_all(req.as_bytes()).unwrap();
                read_response(&mut s, &mut Vec::new())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let t0 = Instant::now();
    let pid = rustix::process::Pid::from_child(&agent.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    // New connections are refused soon after the signal.
    let mut refused = false;
    while t0.elapsed() < Duration::from_millis(300) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut ok = 0;
    for c in clients {
        let r = c.join().unwrap().expect("in-flight response completes");
        assert_eq!(r.status, 200, "{}", r.head);
        assert!(!r.body.is_empty());
        ok += 1;
    }
    let status = agent.terminate(Duration::from_secs(5));
    assert!(status.success(), "exit {status}: {}", agent.log());
    assert!(refused, "the listener stayed open while draining");
    assert_eq!(ok, 8);
    let recs = agent.records();
    assert_eq!(assert_phases_sum(&recs), 8);
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "event" && r["event"] == "drain"),
        "no drain event"
    );
    eprintln!(
        "8 in-flight responses completed; exit {status} after {:?}",
        t0.elapsed()
    );
}

#[test]
fn drain_timeout_bounds_the_wait() {
    let up = Upstream::start(&["--latency", "20s"]);
    let p = up.port;
    let mut agent = Agent::start(
        move |port, ring| config(port, &[p], "60s", ring),
        &["--drain-timeout", "300ms"],
    );
    let mut s = connect(agent.port);
    s.write_all(b"GET /stuck HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    let status = agent.terminate(Duration::from_secs(5));
    let took = t0.elapsed();
    assert!(status.success(), "exit {status}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

fn no_uring_wrapper() -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/no_uring.py");
    vec![seccomp_python().to_string(), script.to_string()]
}

#[test]
fn io_auto_falls_back_to_epoll_when_seccomp_blocks_io_uring() {
    let wrapper = no_uring_wrapper();
    let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let up = Upstream::start(&[]);
    let p = up.port;
    let agent = Agent::start_via(
        &w,
        move |port, ring| config(port, &[p], "5s", ring),
        &["--io", "auto"],
    );
    let r = request(agent.port, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    let m = agent.metrics();
    assert!(m.contains("tailmesh_io_fallback 1"), "{m}");
    assert!(
        m.contains("tailmesh_io_backend{backend=\"epoll\"} 1"),
        "{m}"
    );
    let log = agent.log();
    assert!(log.contains("falling back to epoll"), "{log}");
    assert_eq!(
        log.matches("falling back").count(),
        1,
        "one log line: {log}"
    );
    let recs = agent.records();
    let ev = recs
        .iter()
        .find(|r| r["kind"] == "event" && r["event"] == "io_fallback")
        .expect("an io_fallback event in the ring");
    eprintln!("fallback event: {ev}");
    // --io uring under the same filter refuses to start, with the reason.
    let out = std::process::Command::new(&wrapper[0])
        .arg(&wrapper[1])
        .arg(AGENT)
        .args(["--config"])
        .arg(agent.dir.path().join("agent.yaml"))
        .args([
            "--io",
            "uring",
            "--admin",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("io_uring is not available"), "{err}");
}

/// 10,000 idle keep-alive client connections (each has finished one
/// request) add at most 30 MiB to the agent's RSS.
#[test]
fn ten_thousand_idle_keep_alive_connections_fit_in_30_mib() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    const CONNS: usize = 10_000;
    // 10,000 sockets in this process and 10,000 in the agent (which
    // inherits the limit): raise the soft fd limit if it is lower.
    let lim = getrlimit(Resource::Nofile);
    let want = (CONNS + 2_000) as u64;
    if lim.current.is_some_and(|c| c < want) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: lim.maximum,
            },
        )
        .expect("raising the soft RLIMIT_NOFILE to 12000 (the hard limit is lower)");
    }
    let up = Upstream::start(&[]);
    let p = up.port;
    let agent = Agent::start(move |port, ring| config(port, &[p], "5s", ring), &[]);
    // Warm: one connection, one request (pools and buffers exist).
    let _ = request(agent.port, "GET /warm HTTP/1.1\r\nHost: t\r\n\r\n");
    let pid = agent.child.id();
    let before = vm(pid, "VmRSS:");
    let mut conns = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let mut s = connect(agent.port);
        s.write_all(b"GET /idle HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut Vec::new()).unwrap();
        assert_eq!(r.status, 200);
        conns.push(s);
    }
    let m = agent.metrics();
    let line = format!("tailmesh_active_connections{{side=\"downstream\"}} {CONNS}");
    assert!(m.contains(&line), "{line} not in metrics");
    let after = vm(pid, "VmRSS:");
    let added = after.saturating_sub(before);
    eprintln!(
        "{CONNS} idle keep-alive connections: RSS {before} -> {after} B, added {:.1} MiB ({} B each)",
        added as f64 / (1 << 20) as f64,
        added / CONNS as u64
    );
    assert!(added <= 30 << 20, "added {added} bytes");
}

/// `tailmesh_loop_turn_seconds` times each turn from its wake-up, so
/// under a steady load the turns add up to a real share of the agent's
/// CPU time (epoll: nearly all of it; io_uring, whose sends and receives
/// run inside the next wait's submission: about a fifth). It used to time
/// a turn from the last clock read in it, which every request moves on:
/// in this test, 53,475 turns summed to 0.004 s beside 0.87 s of CPU.
#[test]
fn loop_turns_are_timed_from_their_wake_up() {
    let up = Upstream::start(&[]);
    let p = up.port;
    let agent = Agent::start(move |port, ring| config(port, &[p], "5s", ring), &[]);
    let url = format!("http://127.0.0.1:{}/turns", agent.port);
    output_ok(
        std::process::Command::new(sibling("tailmesh-bench"))
            .args(["load", "--url", &url, "--connections", "8"])
            .args(["--duration", "1s", "--json"]),
    );
    let text = agent.metrics();
    let turns: f64 = metric_in(&text, "tailmesh_loop_turn_seconds_sum ");
    let count: u64 = metric_in(&text, "tailmesh_loop_turn_seconds_count ");
    let cpu: f64 = metric_in(&text, "tailmesh_process_cpu_seconds_total ");
    eprintln!("{count} loop turns summed to {turns:.3} s; agent CPU {cpu:.2} s");
    assert!(cpu >= 0.1, "the load kept the agent busy for only {cpu} s");
    assert!(
        turns >= 0.05 * cpu,
        "loop turns summed to {turns} s beside {cpu} s of CPU"
    );
}
