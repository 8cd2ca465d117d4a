//! The malformed / smuggling corpus through the real agent: every request
//! gets its expected status with `x-tailmesh-reason`, and a raw-socket
//! upstream proves that not one byte of a rejected request reached it. The
//! valid controls (`200-*`) must reach it, so the test can fail both ways.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::*;

/// Accepts connections, counts every byte, answers 200 once the client
/// has been quiet for 100 ms, then closes.
fn raw_upstream() -> (u16, Arc<AtomicU64>, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (conns, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (c2, b2) = (conns.clone(), bytes.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            c2.fetch_add(1, Ordering::SeqCst);
            let b3 = b2.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let mut buf = [0u8; 65536];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            b3.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        Err(_) => break,
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            });
        }
    });
    (port, conns, bytes)
}

#[test]
fn rejected_requests_never_reach_the_upstream() {
    let (up, conns, bytes) = raw_upstream();
    let agent = Agent::start(move |port, ring| config(port, &[up], "5s", ring), &[]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/requests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (controls, malformed): (Vec<_>, Vec<_>) = files
        .iter()
        .partition(|f| f.file_name().unwrap().to_string_lossy().starts_with("200"));
    assert!(malformed.len() >= 40, "only {} malformed", malformed.len());
    let mut wrong = Vec::new();
    for f in &malformed {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let want: u16 = name[..3].parse().unwrap();
        let raw = std::fs::read(f).unwrap();
        let mut s = connect(agent.port);
        s.write_all(&raw).unwrap();
        match read_response(&mut s, &mut Vec::new()) {
            Ok(r) if r.status == want && r.header("x-tailmesh-reason").is_some() => {}
            Ok(r) => wrong.push(format!("{name}: expected {want}, got {}", r.head)),
            Err(e) => wrong.push(format!("{name}: expected {want}, got {e}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        (conns.load(Ordering::SeqCst), bytes.load(Ordering::SeqCst)),
        (0, 0),
        "bytes of rejected requests reached the upstream"
    );
    eprintln!(
        "{} malformed requests: 0 connections, 0 bytes upstream",
        malformed.len()
    );
    // The controls do reach it.
    for f in &controls {
        let raw = std::fs::read(f).unwrap();
        let mut s = connect(agent.port);
        s.write_all(&raw).unwrap();
        let r = read_response(&mut s, &mut Vec::new()).unwrap();
        assert_eq!(r.status, 200, "{}: {}", f.display(), r.head);
    }
    assert_eq!(conns.load(Ordering::SeqCst), controls.len() as u64);
    assert!(bytes.load(Ordering::SeqCst) > 0);
    // Each rejection is a record with its reason.
    let recs = agent.records_at_least(malformed.len() + controls.len());
    assert_phases_sum(&recs);
    let rejected = recs
        .iter()
        .filter(|r| r["kind"] == "record" && r["status"].as_u64().unwrap() >= 400)
        .count();
    assert_eq!(rejected, malformed.len());
}
