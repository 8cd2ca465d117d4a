//! L4 passthrough through the real agent (`tcp` listener): bytes arrive
//! intact both ways under backpressure, half-close works from either side,
//! each connection leaves one L4 record, and the epoll driver splices
//! (or copies with `TAILMESH_EPOLL_SPLICE=0`). The peer is an in-test TCP
//! server on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use support::{Agent, assert_phases_sum};

/// What the in-test upstream does with each connection.
#[derive(Clone, Copy)]
enum Peer {
    /// Echo every byte; after the client's FIN, finish and send FIN.
    Echo,
    /// Send `GREETING` and FIN at once, then read what the client still
    /// sends on its half and hand it to the test.
    SpeakFirst,
}

const GREETING: &[u8] = b"hello from upstream\n";

/// Starts the upstream; returns its port and a channel of what the
/// `SpeakFirst` peer received.
fn upstream(peer: Peer) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let tx = tx.clone();
            thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                match peer {
                    Peer::Echo => loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = s.shutdown(Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                if s.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    },
                    Peer::SpeakFirst => {
                        s.write_all(GREETING).unwrap();
                        s.shutdown(Shutdown::Write).unwrap();
                        let mut got = Vec::new();
                        let _ = s.read_to_end(&mut got);
                        let _ = tx.send(got);
                    }
                }
            });
        }
    });
    (port, rx)
}

fn l4_config(port: u16, upstream: u16, ring: &std::path::Path) -> String {
    format!(
        "version: 1\n\
         listeners:\n  - {{ name: l4, bind: \"127.0.0.1:{port}\", protocol: tcp, default_route: r }}\n\
         clusters:\n  - {{ name: c, endpoints: [ {{ addr: \"127.0.0.1:{upstream}\" }} ] }}\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, to: [ {{ cluster: c }} ] }}\n\
         sampling: {{ default: 1.0, max_records_per_sec: 0 }}\n\
         ring: {{ path: \"{}\", size: 8MiB }}\n",
        ring.display()
    )
}

/// A deterministic, non-repeating byte stream for connection `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn metric(agent: &Agent, needle: &str) -> u64 {
    agent
        .metrics()
        .lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Sends `len` pattern bytes on each of `conns` connections at once, reads
/// the echo while sending, half-closes, and checks every byte came back.
fn echo_through(agent: &Agent, conns: usize, len: usize) {
    let workers: Vec<_> = (0..conns)
        .map(|c| {
            let port = agent.port;
            thread::spawn(move || {
                let data = pattern(c as u64 + 1, len);
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut w = s.try_clone().unwrap();
                let sent = data.clone();
                let writer = thread::spawn(move || {
                    // Odd-sized writes so pipe and socket boundaries vary.
                    for part in sent.chunks(77_777) {
                        w.write_all(part).unwrap();
                    }
                    w.shutdown(Shutdown::Write).unwrap();
                });
                let mut back = Vec::with_capacity(len);
                s.read_to_end(&mut back).unwrap();
                writer.join().unwrap();
                assert_eq!(back.len(), data.len(), "connection {c}: length");
                assert!(back == data, "connection {c}: bytes differ");
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

fn backend(agent: &Agent) -> String {
    let m = agent.metrics();
    m.lines()
        .find(|l| l.starts_with("tailmesh_io_backend{") && l.ends_with(" 1"))
        .and_then(|l| l.split('"').nth(1))
        .unwrap_or("unknown")
        .to_string()
}

#[test]
fn l4_echo_intact_with_half_close_and_records() {
    let (up, _) = upstream(Peer::Echo);
    let agent = Agent::start(|port, ring| l4_config(port, up, ring), &[]);
    echo_through(&agent, 3, 24 << 20);
    let spliced = metric(
        &agent,
        "tailmesh_driver_events_total{event=\"spliced_bytes\"}",
    );
    match backend(&agent).as_str() {
        // Both directions of 3 x 24 MiB went through pipes.
        "epoll" => assert!(spliced >= 2 * 3 * (24 << 20), "spliced {spliced}"),
        "uring" => assert_eq!(spliced, 0),
        other => panic!("backend {other}"),
    }
    // One record per connection, flagged L4, phases summing to the total.
    let mut recs = Vec::new();
    for _ in 0..50 {
        recs = agent.records();
        if recs.iter().filter(|r| r["kind"] == "record").count() >= 3 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let l4: Vec<_> = recs.into_iter().filter(|r| r["kind"] == "record").collect();
    assert_eq!(l4.len(), 3, "{l4:?}");
    for r in &l4 {
        let flags = r["flags"].as_array().unwrap();
        assert!(flags.iter().any(|f| f == "l4"), "{r}");
        assert!(r["phases_ns"]["first_byte"].as_u64().unwrap() > 0, "{r}");
    }
    assert_phases_sum(&l4);
}

#[test]
fn l4_upstream_closes_first_and_client_bytes_still_arrive() {
    let (up, got) = upstream(Peer::SpeakFirst);
    // Runs on the driver under test (TAILMESH_TEST_IO): io_uring used to
    // drop the tail here when the released upstream saw its own EOF.
    let agent = Agent::start(|port, ring| l4_config(port, up, ring), &[]);
    speak_first_through(&agent, &got);
}

/// The upstream greets and half-closes first; the client then sends 3 MiB
/// on its half, which must all arrive.
fn speak_first_through(agent: &Agent, got: &std::sync::mpsc::Receiver<Vec<u8>>) {
    let mut s = TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The upstream's greeting and FIN come through first ...
    let mut greeting = Vec::new();
    s.read_to_end(&mut greeting).unwrap();
    assert_eq!(greeting, GREETING);
    // ... and the client can still send on its half.
    let tail = pattern(9, 3 << 20);
    s.write_all(&tail).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let received = got.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(received.len(), tail.len());
    assert!(received == tail, "bytes differ");
}

#[test]
fn epoll_copy_loop_when_splice_is_off() {
    let (up, _) = upstream(Peer::Echo);
    let agent = Agent::start_full(
        &["env", "TAILMESH_EPOLL_SPLICE=0"],
        "127.0.0.1",
        |port, ring| l4_config(port, up, ring),
        &["--io", "epoll"],
    );
    echo_through(&agent, 2, 8 << 20);
    let spliced = metric(
        &agent,
        "tailmesh_driver_events_total{event=\"spliced_bytes\"}",
    );
    assert_eq!(spliced, 0);
    assert_eq!(backend(&agent), "epoll");
    let (up2, got) = upstream(Peer::SpeakFirst);
    let agent2 = Agent::start_full(
        &["env", "TAILMESH_EPOLL_SPLICE=0"],
        "127.0.0.1",
        |port, ring| l4_config(port, up2, ring),
        &["--io", "epoll"],
    );
    speak_first_through(&agent2, &got);
}
