//! Hostile clients beside a legitimate open-loop load, bounded in time,
//! against the real agent (both drivers via ./test.sh): 1,000 slowloris
//! connections, 200 clients pulling 32 MiB each and never reading, and a
//! connection flood past `max_connections`, in three rounds starting one
//! second into a legitimate open-loop load at ~30% of capacity. The
//! legitimate load must see no error (its p99 with and without the attack
//! is printed, with the agent's long loop turns and CPU in each phase);
//! the attackers must be closed by the limits that apply to them, and
//! their buffers returned.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const SLOWLORIS: usize = 1000;
const NON_READERS: usize = 200;
const FLOOD: usize = 300;
/// Room for the attackers plus the legitimate load, not for the flood.
const MAX_CONNECTIONS: usize = SLOWLORIS + NON_READERS + 100;
const HEADER_READ_S: u64 = 2;
const WRITE_S: u64 = 3;

fn raise_nofile(n: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    if cur.current.is_some_and(|c| c >= n) {
        return;
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(n),
            maximum: cur.maximum,
        },
    )
    .expect("raising RLIMIT_NOFILE for 3,000 test connections");
}

/// `tailmesh-bench load` against the agent: (rps, p99 ns, errors). The
/// generator runs 10 nice levels above its caller (as root; `nice` warns
/// and runs it as is otherwise), so at -20 beside the hostile test's
/// -11: on a 2-core host the attack's first ~50 ms keep both cores busy
/// (the agent's worker and the bulk upstream), and an open-loop generator
/// that cannot run counts its own lateness against every request (0
/// samples of it in 30 ms of `perf` buckets there). What is measured is
/// how the agent shares its worker.
fn load(port: u16, args: &[&str]) -> (f64, u64, u64) {
    let url = format!("http://127.0.0.1:{port}/legit");
    let out = Command::new("nice")
        .args(["-n", "-10"])
        .arg(sibling("tailmesh-bench"))
        .args(["load", "--url", &url, "--json", "--timeout", "5s"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (
        v["rps"].as_f64().unwrap(),
        v["latency_ns"]["p99"].as_u64().unwrap(),
        v["errors_total"].as_u64().unwrap(),
    )
}

/// `args` plus a timeline of 20 ms buckets written to `path`.
fn with_timeline(args: &[&str], path: &std::path::Path) -> Vec<String> {
    args.iter()
        .map(ToString::to_string)
        .chain(["--timeline-step", "20ms", "--timeline"].map(String::from))
        .chain([path.display().to_string()])
        .collect()
}

/// A run's slowest 20 ms windows (by their slowest request), how many
/// windows held a request slower than twice the p99 alone, and the host's
/// own stalls (the generator's canary: a top-priority thread woken 5 ms
/// or more late), reported beside the latencies, not taken from them.
fn slowest_windows(label: &str, timeline: &std::path::Path, p99_alone: u64) -> String {
    let text = std::fs::read_to_string(timeline).unwrap();
    let mut rows: Vec<(f64, u64, u64)> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["second"].as_f64().unwrap(),
                v["max_ns"].as_u64().unwrap(),
                v["host_stall_ns"].as_u64().unwrap(),
            )
        })
        .collect();
    let over = rows.iter().filter(|r| r.1 > 2 * p99_alone).count();
    let stalled = rows.iter().filter(|r| r.2 >= 5_000_000).count();
    let longest = rows.iter().map(|r| r.2).max().unwrap_or(0);
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    let worst: Vec<String> = rows
        .iter()
        .take(5)
        .map(|(at, max, host)| {
            format!(
                "{at:.2}s: {:.1} ms (host {:.1})",
                *max as f64 / 1e6,
                *host as f64 / 1e6
            )
        })
        .collect();
    format!(
        "{label}, {over} of {} 20 ms windows held a request slower than 2x the p99 alone; \
         host stalls of 5 ms or more in {stalled}, longest {:.1} ms; slowest: {}",
        rows.len(),
        longest as f64 / 1e6,
        worst.join(", ")
    )
}

/// Loop turns so far that worked longer than 5, 25 and 100 ms
/// (`tailmesh_loop_turn_seconds`): whether a slow window was the agent's.
fn long_turns(agent: &Agent) -> [u64; 3] {
    let count = agent.metric("tailmesh_loop_turn_seconds_count ");
    ["0.005", "0.025", "0.1"].map(|le| {
        count
            - agent.metric(&format!(
                "tailmesh_loop_turn_seconds_bucket{{le=\"{le}\"}} "
            ))
    })
}

/// CPU seconds process `pid` has used so far (user and system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / rustix::param::clock_ticks_per_second() as f64
}

/// Opens slowloris connections and feeds each one header byte a second;
/// returns how long each one lived until the agent closed it.
fn slowloris(port: u16, deadline: Duration) -> Vec<Option<Duration>> {
    let t0 = Instant::now();
    let mut conns: Vec<(TcpStream, Option<Duration>)> = (0..SLOWLORIS)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /slow HTTP/1.1\r\nX-a: ").unwrap();
            s.set_nonblocking(true).unwrap();
            (s, None)
        })
        .collect();
    let mut buf = [0u8; 512];
    while t0.elapsed() < deadline && conns.iter().any(|c| c.1.is_none()) {
        for (s, closed) in conns.iter_mut().filter(|c| c.1.is_none()) {
            let gone = match s.read(&mut buf) {
                Ok(_) => true, // 0 (closed) or the 408
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            if gone || s.write_all(b"a").is_err() {
                *closed = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    conns.into_iter().map(|c| c.1).collect()
}

/// The bulk route has its own upstream: the test measures what the
/// non-readers cost the agent, not a shared test upstream.
fn hostile_config(port: u16, up: u16, bulk: u16, ring: &std::path::Path) -> String {
    format!(
        r#"version: 1
listeners:
  - name: api
    bind: "127.0.0.1:{port}"
    protocol: http
    default_route: r
    max_connections: {MAX_CONNECTIONS}
    timeouts: {{ header_read: {HEADER_READ_S}s, write: {WRITE_S}s }}
clusters:
  - {{ name: c, endpoints: [ {{ addr: "127.0.0.1:{up}" }} ] }}
  - {{ name: bulk, endpoints: [ {{ addr: "127.0.0.1:{bulk}" }} ] }}
routes:
  - {{ name: bulk, match: {{ path_prefix: /_bench/bulk }}, to: [ {{ cluster: bulk }} ] }}
  - {{ name: r, to: [ {{ cluster: c }} ] }}
sampling: {{ default: 0.01, keep_errors: true }}
ring: {{ path: "{}", size: 8MiB }}
"#,
        ring.display()
    )
}

/// What one attack round saw.
struct Round {
    /// How long each slowloris connection lived (None: still open).
    lived: Vec<Option<Duration>>,
    flood_closed: usize,
    refused: u64,
    write_timeouts: u64,
    /// Bytes sent to clients in the round's first 1.5 s.
    absorbed: u64,
}

/// One attack: the non-readers and the slowloris connections at once, the
/// flood 1.5 s later; returns once the agent closed them (the write
/// timeout ends the non-readers) or `ROUND` passed, and takes `ROUND` in
/// all so that rounds keep their place in the legitimate load.
fn attack_round(agent: &Agent) -> Round {
    let t0 = Instant::now();
    let port = agent.port;
    let down_bytes = || agent.metric("tailmesh_bytes_total{direction=\"downstream\"} ");
    let write_timeouts =
        || agent.metric("tailmesh_local_responses_total{reason=\"write_timeout\"} ");
    let (bytes_before, writes_before) = (down_bytes(), write_timeouts());
    // A small receive buffer, as a real stalled client's would fill: 200
    // loopback sockets autotuned to megabytes each would put the whole
    // host's TCP under memory pressure and measure the kernel, not us.
    let non_readers: Vec<TcpStream> = (0..NON_READERS)
        .map(|_| {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.set_recv_buffer_size(16 * 1024).unwrap();
            let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
            sock.connect(&addr.into()).unwrap();
            let mut s: TcpStream = sock.into();
            s.write_all(b"GET /_bench/bulk?bytes=33554432 HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let loris = std::thread::spawn(move || slowloris(port, Duration::from_secs(HEADER_READ_S + 6)));
    // The flood, once the slowloris connections are in.
    std::thread::sleep(Duration::from_millis(1500));
    let absorbed = down_bytes() - bytes_before;
    let refused_before = agent.driver_event("conn_limit");
    let flood: Vec<TcpStream> = (0..FLOOD)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Closed by the agent: EOF or a reset. Still open: nothing to read.
    let flood_closed = flood
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            match (&**s).read(&mut [0u8; 8]) {
                Ok(n) => n == 0,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            }
        })
        .count();
    let refused = agent.driver_event("conn_limit") - refused_before;
    let lived = loris.join().unwrap();
    // The write timeout frees the non-readers and what they hold.
    while write_timeouts() - writes_before < NON_READERS as u64 && t0.elapsed() < ROUND {
        std::thread::sleep(Duration::from_millis(100));
    }
    let write_timeouts = write_timeouts() - writes_before;
    drop(non_readers);
    drop(flood);
    std::thread::sleep(ROUND.saturating_sub(t0.elapsed()));
    Round {
        lived,
        flood_closed,
        refused,
        write_timeouts,
        absorbed,
    }
}

/// Attack rounds in one legitimate load: three, so that the p99 under
/// attack rests on three attacks' worth of requests, not one. A single
/// 8 s run's p99 came down to the 4-6 stalls of the shared host that
/// happened to fall into it: one build measured 0.7-6.6x.
const ROUNDS: u32 = 3;
/// One round: the attack, its timeouts, and the calm after them (the
/// single-attack test's 7 s after its start).
const ROUND: Duration = Duration::from_secs(7);

#[test]
fn hostile_clients_are_closed_by_their_limits_beside_a_clean_load() {
    raise_nofile(8192);
    // The attackers run at the lowest priority (nice 19): the bulk
    // upstream that feeds the 200 downloads, and this thread with the
    // threads it starts once the legitimate load runs (1,200 connects,
    // the slowloris bytes, the flood). In a real attack they are other
    // machines; on this 2-core host, at normal priority, their own CPU
    // (the connects' loopback handshakes, the upstream's sends) was taken
    // from the agent, its upstream and the generator, and measured as the
    // agent's cost (p99 under attack 3.5-5.9x the p99 alone at normal
    // priority, 1.5-3.9x at nice 19, alternating runs of one build). The
    // agent still serves every byte and connection they make.
    let bulk = Upstream::start_via(&["nice", "-n", "19"], &["--sndbuf", "64KiB"]);
    // The measured side (the agent, its upstream and the test) runs at
    // nice -11, above the sandbox's own init (a tokio runtime at nice -10
    // that took 2-6 ms of a CPU at a time, ~20 times in 8 s, alone and
    // under attack alike: `perf sched` traces of both drivers). Started
    // from this thread, they inherit it; the generator goes to -20 (see
    // `load`). Without the privilege the test still runs, and says so.
    if let Err(e) = rustix::process::setpriority_process(None, -11) {
        eprintln!(
            "could not raise the measured side to nice -11 ({e}): host noise shows in both p99s"
        );
    }
    let up = Upstream::start(&[]);
    let (p, b) = (up.port, bulk.port);
    let agent = Agent::start(move |port, ring| hostile_config(port, p, b, ring), &[]);
    let port = agent.port;

    // Capacity (closed loop), then the legitimate load alone at ~30% of it.
    // The open-loop load has 64 connections: at ~20k requests/s, 8 (as
    // for the capacity) let a request take only 0.4 ms before the next one
    // has no connection and waits in the generator, so any stall of the
    // host became a backlog of the generator's own (p99 under attack 14-28
    // ms with 8, 3.5-8 ms with 64: alternating runs of one build).
    let (max_rps, _, _) = load(port, &["--connections", "8", "--duration", "2s"]);
    let rate = ((max_rps * 0.3) as u64).max(100).to_string();
    // One second of calm, then the rounds.
    let duration = format!("{}ms", 1000 + ROUND.as_millis() * u128::from(ROUNDS));
    let legit = [
        "--rate",
        rate.as_str(),
        "--connections",
        "64",
        "--duration",
        duration.as_str(),
    ];
    let turns_start = long_turns(&agent);
    let cpu_start = cpu_seconds(agent.child.id());
    let timeline_alone = tempfile::NamedTempFile::new().unwrap();
    let alone_args = with_timeline(&legit, timeline_alone.path());
    let (_, p99_alone, errors_alone) = load(
        port,
        &alone_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(errors_alone, 0);
    let turns_alone = long_turns(&agent);
    let cpu_alone = cpu_seconds(agent.child.id());

    // The same load again; one second into it, the attack rounds start.
    // Its timeline (20 ms buckets) shows where the slow requests were.
    let timeline = tempfile::NamedTempFile::new().unwrap();
    let legit_run = {
        let legit = with_timeline(&legit, timeline.path());
        std::thread::spawn(move || {
            let args: Vec<&str> = legit.iter().map(String::as_str).collect();
            load(port, &args)
        })
    };
    rustix::process::setpriority_process(None, 19).expect("nice 19 for the attackers");
    std::thread::sleep(Duration::from_secs(1));
    let rounds: Vec<Round> = (0..ROUNDS).map(|_| attack_round(&agent)).collect();
    // The bulk budget spread the 200 downloads' start over many turns.
    let deferred = agent.driver_event("bulk_deferred");
    let (_, p99_attack, errors_attack) = legit_run.join().unwrap();
    let turns_attack = long_turns(&agent);
    let cpu_attack = cpu_seconds(agent.child.id());
    let bufs_held = agent.metric("tailmesh_uring_buffers_in_use ");
    let open_now = agent.metric("tailmesh_active_connections{side=\"downstream\"} ");
    let timers_deferred = agent.driver_event("timers_deferred");
    let accepts_deferred = agent.driver_event("accepts_deferred");

    eprintln!(
        "{}",
        slowest_windows("alone", timeline_alone.path(), p99_alone)
    );
    eprintln!(
        "{}",
        slowest_windows("under attack", timeline.path(), p99_alone)
    );
    let diff = |a: [u64; 3], b: [u64; 3]| std::array::from_fn::<u64, 3, _>(|k| b[k] - a[k]);
    eprintln!(
        "agent loop turns longer than 5 / 25 / 100 ms: alone {:?}, under attack {:?}; \
         agent CPU over the {duration} load: {:.2} s alone, {:.2} s under attack",
        diff(turns_start, turns_alone),
        diff(turns_alone, turns_attack),
        cpu_alone - cpu_start,
        cpu_attack - cpu_alone
    );
    for (n, r) in rounds.iter().enumerate() {
        let closed: Vec<Duration> = r.lived.iter().flatten().copied().collect();
        let latest = closed.iter().max().copied().unwrap_or_default();
        eprintln!(
            "round {}: slowloris closed {}/{SLOWLORIS}, last after {latest:?}; flood: {}/{FLOOD} \
             closed at once, conn_limit +{}; write_timeout +{}; {:.1} MB sent to clients in its \
             first 1.5 s",
            n + 1,
            closed.len(),
            r.flood_closed,
            r.refused,
            r.write_timeouts,
            r.absorbed as f64 / 1e6,
        );
        assert_eq!(closed.len(), SLOWLORIS, "slowloris connections left open");
        assert!(
            latest <= Duration::from_secs(HEADER_READ_S + 2),
            "a slowloris connection lived {latest:?}"
        );
        assert!(
            r.refused > 0 && r.flood_closed > 0,
            "flood: {} closed, {} counted",
            r.flood_closed,
            r.refused
        );
        assert!(
            r.write_timeouts >= NON_READERS as u64,
            "{} write timeouts",
            r.write_timeouts
        );
    }
    eprintln!(
        "legit load at {rate} rps (capacity {max_rps:.0}) for {duration}, {ROUNDS} attack rounds: \
         p99 {:.2} ms alone, {:.2} ms under attack; errors {errors_alone} / {errors_attack}; \
         buffers held {bufs_held}; downstream open {open_now}; bulk reads deferred {deferred}; \
         timers deferred {timers_deferred}; turns that deferred accepts {accepts_deferred}",
        p99_alone as f64 / 1e6,
        p99_attack as f64 / 1e6,
    );
    assert_eq!(errors_attack, 0, "the legitimate load saw errors");
    // Not a latency target but a starvation check: a legitimate request
    // that had to wait for the attackers to be timed out (the 3 s write
    // timeout frees what they hold) would show here. (uring did, 3.1 s,
    // while non-readers' send queues pinned the provided buffers.)
    assert!(
        p99_attack < 1_000_000_000,
        "legitimate p99 {p99_attack} ns under attack: starved until the attackers' timeouts"
    );
    // Both p99s are reported, not asserted: a latency target belongs in a
    // benchmark (docs/BENCHMARKS.md, release build), and on a shared
    // 2-core host the first ~100 ms of the attack saturates both cores
    // (agent, upstream and load generator together), which the open-loop
    // generator counts against every request it could not send.
    assert!(bufs_held <= 16, "{bufs_held} receive buffers still held");
    assert!(deferred > 0, "the bulk budget never held a read back");
    // The attackers' connections are all gone (each round drops what is
    // left of its flood).
    assert!(
        open_now <= 16,
        "{open_now} downstream connections still open"
    );
}

/// With a low descriptor limit the agent keeps serving the connections it
/// has, counts the failed accepts (pausing instead of spinning), and
/// accepts again once descriptors free up.
#[test]
fn out_of_descriptors_pauses_accepting_and_recovers() {
    let up = Upstream::start(&[]);
    let p = up.port;
    // 64 descriptors, and a connection cap above that so accept(2) itself
    // runs out (the cap is not what stops it).
    let agent = Agent::start_via(
        &["prlimit", "--nofile=64:64", "--"],
        move |port, ring| config(port, &[p], "5s", ring),
        &["--max-connections", "10000"],
    );
    let mut first = connect(agent.port);
    first
        .write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut carry = Vec::new();
    assert_eq!(read_response(&mut first, &mut carry).unwrap().status, 200);
    // (The admin server shares the descriptor limit: read metrics only
    // while descriptors are free.)
    let turns_before = agent.driver_event("loop_turns");
    // Idle connections until the agent's descriptors run out; the kernel
    // still completes the handshakes into the listen backlog.
    let t0 = Instant::now();
    let idle: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(("127.0.0.1", agent.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    // The open connection is still served.
    first
        .write_all(b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut first, &mut carry).unwrap().status, 200);
    // Free descriptors: the waiting connections get accepted and served.
    drop(idle);
    let starved = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let r = request(agent.port, "GET /c HTTP/1.1\r\nHost: t\r\n\r\n");
    let errors = agent.driver_event("accept_errors");
    let turns = agent.driver_event("loop_turns") - turns_before;
    eprintln!(
        "accept errors {errors}; {turns} loop turns in {starved:?} out of descriptors and 0.5 s after"
    );
    assert_eq!(r.status, 200);
    assert!(errors > 0, "no accept error counted");
    // Paused, not spinning: a spin would turn the loop millions of times.
    assert!(turns < 5_000, "{turns} loop turns");
}
