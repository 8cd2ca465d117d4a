//! Hostile clients beside a legitimate open-loop load, bounded in time,
//! against the real agent (both drivers via ./test.sh): 1,000 slowloris
//! connections, 200 clients pulling 32 MiB each and never reading, and a
//! connection flood past `max_connections`. One legitimate open-loop load
//! at ~30% of capacity runs through calm and attack periods in turn, three
//! of each. The legitimate load must see no error (its p99 in the calm and
//! in the attack periods is printed, with the agent's long loop turns, its
//! CPU and the host's steal in each); the attackers must be closed by the
//! limits that apply to them, and their buffers returned.
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

/// `tailmesh-bench load` against the agent: its JSON report. The
/// generator runs 10 nice levels above its caller (as root; `nice` warns
/// and runs it as is otherwise), so at -20 beside the hostile test's
/// -11: on a 2-core host the attack's first ~50 ms keep both cores busy
/// (the agent's worker and the bulk upstream), and an open-loop generator
/// that cannot run counts its own lateness against every request (0
/// samples of it in 30 ms of `perf` buckets there). What is measured is
/// how the agent shares its worker.
fn load(port: u16, args: &[&str]) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{port}/legit");
    let out = output_ok(
        Command::new("nice")
            .args(["-n", "-10"])
            .arg(sibling("tailmesh-bench"))
            .args(["load", "--url", &url, "--json", "--timeout", "5s"])
            .args(args),
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Timeline bucket width: the slow windows are reported at this grain.
const STEP: Duration = Duration::from_millis(20);
/// Warm-up before the first calm period, in neither half.
const WARMUP: Duration = Duration::from_secs(1);

/// `args` plus a timeline of `STEP` buckets written to `path`, split into
/// calm (A) and attack (B) periods of `ROUND` after `WARMUP`.
fn with_timeline(args: &[&str], path: &std::path::Path) -> Vec<String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    args.iter()
        .map(ToString::to_string)
        .chain([
            "--timeline-step".into(),
            ms(STEP),
            "--alternate".into(),
            ms(ROUND),
            "--alternate-skip".into(),
            ms(WARMUP),
            "--timeline".into(),
            path.display().to_string(),
        ])
        .collect()
}

/// Which half a timeline bucket is in: 0 calm, 1 attack, None warm-up.
fn half_of(bucket: usize) -> Option<usize> {
    let (step, skip, period) = (STEP.as_millis(), WARMUP.as_millis(), ROUND.as_millis());
    let at = bucket as u128 * step;
    at.checked_sub(skip).map(|t| (t / period % 2) as usize)
}

/// A half's slowest `STEP` windows (by their slowest request), how many
/// windows held a request slower than twice the calm p99, and the host's
/// own stalls (the generator's canary: a top-priority thread woken 5 ms
/// or more late), reported beside the latencies, not taken from them.
fn slowest_windows(half: usize, timeline: &std::path::Path, p99_calm: u64) -> String {
    let text = std::fs::read_to_string(timeline).unwrap();
    let mut rows: Vec<(f64, u64, u64)> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| half_of(*i) == Some(half))
        .map(|(_, l)| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["second"].as_f64().unwrap(),
                v["max_ns"].as_u64().unwrap(),
                v["host_stall_ns"].as_u64().unwrap(),
            )
        })
        .collect();
    let over = rows.iter().filter(|r| r.1 > 2 * p99_calm).count();
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
        "{}, {over} of {} {STEP:?} windows held a request slower than 2x the calm p99; \
         host stalls of 5 ms or more in {stalled}, longest {:.1} ms; slowest: {}",
        ["calm", "under attack"][half],
        rows.len(),
        longest as f64 / 1e6,
        worst.join(", ")
    )
}

/// Loop turns so far that worked longer than 1, 5, 25 and 100 ms
/// (`tailmesh_loop_turn_seconds`): whether a slow window was the agent's.
/// One scrape, so that the count and the buckets agree.
fn long_turns(agent: &Agent) -> [u64; 4] {
    let text = agent.metrics();
    let count: u64 = metric_in(&text, "tailmesh_loop_turn_seconds_count ");
    ["0.001", "0.005", "0.025", "0.1"].map(|le| {
        count
            - metric_in::<u64>(
                &text,
                &format!("tailmesh_loop_turn_seconds_bucket{{le=\"{le}\"}} "),
            )
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

/// The host's CPU time so far, all CPUs, in clock ticks: (stolen by the
/// hypervisor, in all). On this VM the steal changes over tens of
/// seconds with the hypervisor's other tenants.
fn host_steal() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap())
        .collect();
    (cpu.get(7).copied().unwrap_or(0), cpu.iter().sum())
}

/// The host's TCP counters that show a segment delayed or dropped on
/// loopback, in this order (`nstat` names, TcpExt unless `Tcp`).
const TCP_COUNTERS: [&str; 6] = [
    "RetransSegs",
    "TCPLossProbes",
    "TCPTimeouts",
    "ListenOverflows",
    "TCPBacklogDrop",
    "TCPRcvQDrop",
];

/// [`TCP_COUNTERS`] so far, from /proc/net/snmp and /proc/net/netstat:
/// each holds pairs of lines, one of names and one of values, that start
/// with the same prefix.
fn tcp_counters() -> [u64; TCP_COUNTERS.len()] {
    let mut out = [0u64; TCP_COUNTERS.len()];
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let (Some(("Tcp" | "TcpExt", names)), Some((_, values))) =
                (names.split_once(": "), values.split_once(": "))
            else {
                continue;
            };
            for (name, value) in names.split(' ').zip(values.split(' ')) {
                if let Some(i) = TCP_COUNTERS.iter().position(|c| *c == name) {
                    out[i] = value.parse().unwrap_or(0);
                }
            }
        }
    }
    out
}

/// Adds to `sum` how far each counter grew from `from` to `to`.
fn add_growth<const N: usize>(sum: &mut [u64; N], from: &[u64; N], to: &[u64; N]) {
    for ((s, a), b) in sum.iter_mut().zip(from).zip(to) {
        *s += b.saturating_sub(*a);
    }
}

/// What the agent and the host had used at one period boundary.
#[derive(Clone, Copy)]
struct Snapshot {
    turns: [u64; 4],
    cpu_s: f64,
    bulk_cpu_s: f64,
    steal: (u64, u64),
    tcp: [u64; TCP_COUNTERS.len()],
}

impl Snapshot {
    fn take(agent: &Agent, bulk: &Upstream) -> Snapshot {
        Snapshot {
            turns: long_turns(agent),
            cpu_s: cpu_seconds(agent.child.id()),
            bulk_cpu_s: cpu_seconds(bulk.pid()),
            steal: host_steal(),
            tcp: tcp_counters(),
        }
    }
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
/// flood 1.5 s later; waits until the agent closed them (the write timeout
/// ends the non-readers) or `end` came, and returns at `end`, so that the
/// attack periods keep their place in the legitimate load.
fn attack_round(agent: &Agent, end: Instant) -> Round {
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
    while write_timeouts() - writes_before < NON_READERS as u64 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let write_timeouts = write_timeouts() - writes_before;
    drop(non_readers);
    drop(flood);
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    Round {
        lived,
        flood_closed,
        refused,
        write_timeouts,
        absorbed,
    }
}

/// Attack rounds in one legitimate load, each after a calm period as
/// long: three, so that each p99 rests on three periods' requests, not
/// one. A single 8 s run's p99 came down to the 4-6 stalls of the shared
/// host that happened to fall into it: one build measured 0.7-6.6x.
/// Calm and attack take turns because the host drifts: when the test ran
/// 22 s alone and then 22 s under attack, the hypervisor took 7.7% of the
/// CPU in the first and 14.7% in the second in one run (`steal` in
/// /proc/stat), and one build measured 1.2-6.6x.
const ROUNDS: u32 = 3;

/// One period: an attack, its timeouts, and the calm after them (the
/// single-attack test's 7 s after its start); or as long without one.
const ROUND: Duration = Duration::from_secs(7);

/// [`ROUNDS`], or `HOSTILE_ROUNDS` (bench/hostile-repeat.sh `--rounds`):
/// a longer run rests each p99 on more of the host's rare stalls, so its
/// ratio varies less from run to run. ./test.sh keeps three.
fn rounds() -> u32 {
    std::env::var("HOSTILE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(ROUNDS)
}

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
    let max_rps = load(port, &["--connections", "8", "--duration", "2s"])["rps"]
        .as_f64()
        .unwrap();
    let rate = ((max_rps * 0.3) as u64).max(100).to_string();
    // One load: the warm-up, then calm and attack periods in turn, each
    // `ROUND` long. The generator splits its requests into the calm (A)
    // and attack (B) halves by intended send time.
    let rounds_n = rounds();
    let periods = 2 * rounds_n;
    let duration = format!("{}ms", (WARMUP + ROUND * periods).as_millis());
    let legit = [
        "--rate",
        rate.as_str(),
        "--connections",
        "64",
        "--duration",
        duration.as_str(),
    ];
    let timeline = tempfile::NamedTempFile::new().unwrap();
    let legit_run = {
        let legit = with_timeline(&legit, timeline.path());
        std::thread::spawn(move || {
            let args: Vec<&str> = legit.iter().map(String::as_str).collect();
            load(port, &args)
        })
    };
    // The generator sends from 20 ms after it starts; its exec takes a
    // few more.
    let start = Instant::now() + Duration::from_millis(25) + WARMUP;
    rustix::process::setpriority_process(None, 19).expect("nice 19 for the attackers");
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    // HOSTILE_NULL=1 (bench/hostile-repeat.sh --null): the same load and
    // periods with no attacker, so the ratio the host's noise alone gives
    // is measured the same way (never set by ./test.sh).
    let null_run = std::env::var_os("HOSTILE_NULL").is_some();
    if null_run {
        eprintln!("null run: HOSTILE_NULL is set, the attack periods have no attacker");
    }
    let mut marks = vec![Snapshot::take(&agent, &bulk)];
    let mut rounds = Vec::new();
    for period in 0..periods {
        let end = start + ROUND * (period + 1);
        if period % 2 == 1 && !null_run {
            rounds.push(attack_round(&agent, end));
        } else {
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
        }
        marks.push(Snapshot::take(&agent, &bulk));
    }
    // The bulk budget spread the 200 downloads' start over many turns.
    let deferred = agent.driver_event("bulk_deferred");
    let report = legit_run.join().unwrap();
    let half = |h: &str, field: &str| report["alternating"][h][field].clone();
    let (p99_calm, p99_attack) = (
        half("a", "latency_ns")["p99"].as_u64().unwrap(),
        half("b", "latency_ns")["p99"].as_u64().unwrap(),
    );
    let (errors_calm, errors_attack) = (
        half("a", "errors").as_u64().unwrap(),
        half("b", "errors").as_u64().unwrap(),
    );
    let bufs_held = agent.metric("tailmesh_uring_buffers_in_use ");
    let open_now = agent.metric("tailmesh_active_connections{side=\"downstream\"} ");
    let timers_deferred = agent.driver_event("timers_deferred");
    let accepts_deferred = agent.driver_event("accepts_deferred");

    // HOSTILE_TIMELINE=FILE keeps the legitimate load's timeline (one
    // JSON line per `STEP`) for a closer look (bench/hostile-repeat.sh).
    if let Some(keep) = std::env::var_os("HOSTILE_TIMELINE") {
        std::fs::copy(timeline.path(), &keep).unwrap();
    }
    // HOSTILE_RING=FILE keeps the agent's flight recorder, for `ringlog`.
    if let Some(keep) = std::env::var_os("HOSTILE_RING") {
        std::fs::copy(agent.ring(), &keep).unwrap();
    }
    eprintln!("{}", slowest_windows(0, timeline.path(), p99_calm));
    eprintln!("{}", slowest_windows(1, timeline.path(), p99_calm));
    // Per half: long loop turns, the agent's CPU, the host's steal and
    // its TCP counters.
    let mut turns = [[0u64; 4]; 2];
    let mut cpu = [0f64; 2];
    let mut bulk_cpu = [0f64; 2];
    let mut steal = [(0u64, 0u64); 2];
    let mut tcp = [[0u64; TCP_COUNTERS.len()]; 2];
    for (k, w) in marks.windows(2).enumerate() {
        let h = k % 2;
        add_growth(&mut tcp[h], &w[0].tcp, &w[1].tcp);
        add_growth(&mut turns[h], &w[0].turns, &w[1].turns);
        cpu[h] += w[1].cpu_s - w[0].cpu_s;
        bulk_cpu[h] += w[1].bulk_cpu_s - w[0].bulk_cpu_s;
        steal[h].0 += w[1].steal.0 - w[0].steal.0;
        steal[h].1 += w[1].steal.1 - w[0].steal.1;
    }
    let pct = |(s, t): (u64, u64)| 100.0 * s as f64 / t.max(1) as f64;
    eprintln!(
        "agent loop turns longer than 1 / 5 / 25 / 100 ms: calm {:?}, under attack {:?}; \
         agent CPU: {:.2} s calm, {:.2} s under attack; the attackers' bulk upstream's CPU: \
         {:.2} s under attack; host CPU stolen by the hypervisor: {:.1}% calm, {:.1}% under \
         attack",
        turns[0],
        turns[1],
        cpu[0],
        cpu[1],
        bulk_cpu[1],
        pct(steal[0]),
        pct(steal[1]),
    );
    // On loopback a segment is retransmitted after a full queue dropped
    // it, or when a timer fired before the peer's ACK (a tail loss probe,
    // an RTO). Host-wide: the attackers' sockets count too.
    let counts = |h: usize| -> String {
        let pairs = TCP_COUNTERS.iter().zip(tcp[h]);
        pairs
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "host TCP (all sockets, the attackers' too): calm {}; under attack {}",
        counts(0),
        counts(1)
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
        "legit load at {rate} rps (capacity {max_rps:.0}) for {duration}, {rounds_n} calm and \
         {rounds_n} attack periods of {ROUND:?} in turn: p99 {:.2} ms calm, {:.2} ms under \
         attack; errors {errors_calm} / {errors_attack}; \
         buffers held {bufs_held}; downstream open {open_now}; bulk reads deferred {deferred}; \
         timers deferred {timers_deferred}; turns that deferred accepts {accepts_deferred}",
        p99_calm as f64 / 1e6,
        p99_attack as f64 / 1e6,
    );
    assert_eq!(
        (
            errors_calm,
            errors_attack,
            report["errors_total"].as_u64().unwrap()
        ),
        (0, 0, 0),
        "the legitimate load saw errors"
    );
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
    assert!(
        null_run || deferred > 0,
        "the bulk budget never held a read back"
    );
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
