//! Replays the checked-in corpus of malformed and smuggling requests
//! (`tests/corpus/requests/STATUS-name.http`) through the request parser and
//! the chunked decoder: each must get exactly its expected status, and the
//! valid controls (`200-*`) must pass, so the test can fail both ways.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use node_agent::http1::{Limits, chunked, request};

/// The status the agent would answer with (200 = forwarded).
fn verdict(raw: &[u8]) -> u16 {
    let mut slots = request::header_slots();
    let head = match request::parse(raw, &Limits::default(), &mut slots) {
        Err(r) => return r.status,
        Ok(None) => return 0, // incomplete: the test corpus has only complete requests
        Ok(Some(h)) => h,
    };
    let rest = &raw[head.len..];
    match head.body {
        request::Body::Chunked => {
            let mut d = chunked::Decoder::new();
            match d.feed(rest) {
                Err(r) => r.status,
                Ok(n) if d.done() && n == rest.len() => 200,
                Ok(_) => 400, // bytes after the body, or an unterminated body
            }
        }
        request::Body::Length(n) if n as usize != rest.len() => 400,
        _ => 200,
    }
}

#[test]
fn every_corpus_request_gets_its_expected_status() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/requests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let malformed = files
        .iter()
        .filter(|f| !f.file_name().unwrap().to_string_lossy().starts_with("200"))
        .count();
    assert!(
        malformed >= 40,
        "corpus has only {malformed} malformed requests"
    );
    let mut wrong = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let want: u16 = name[..3].parse().unwrap();
        let got = verdict(&std::fs::read(f).unwrap());
        if got != want {
            wrong.push(format!("{name}: expected {want}, got {got}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} wrong:\n{}",
        wrong.len(),
        files.len(),
        wrong.join("\n")
    );
    println!(
        "{} requests, {malformed} malformed, all answered as expected",
        files.len()
    );
}

#[test]
fn fuzz_corpora_replay_without_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut n = 0;
    for (target, run) in [
        (
            "request_head",
            (|d: &[u8]| {
                let _ = node_agent::fuzzing::request_head(d);
            }) as fn(&[u8]),
        ),
        ("chunked", |d: &[u8]| {
            let _ = node_agent::fuzzing::chunked_body(d);
        }),
        ("request_head", |d: &[u8]| {
            let _ = node_agent::fuzzing::session_stream(d);
        }),
        ("policy", |d: &[u8]| {
            let _ = node_agent::fuzzing::policy_events(d);
        }),
        ("routing", |d: &[u8]| {
            let _ = node_agent::fuzzing::routing(d);
        }),
        ("etcd_keys", |d: &[u8]| {
            let _ = node_agent::fuzzing::etcd_keys(d);
        }),
        ("mesh_header", |d: &[u8]| {
            let _ = node_agent::fuzzing::mesh_header(d);
        }),
    ] {
        let dir = root.join(target);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .collect();
        assert!(files.len() >= 5, "{target} corpus too small");
        for f in files {
            run(&std::fs::read(f.unwrap().path()).unwrap());
            n += 1;
        }
    }
    println!("{n} fuzz corpus inputs replayed");
}

/// The policy fuzz entry on pseudo-random event sequences and config
/// texts (the cargo-fuzz target `policy` explores further).
#[test]
fn policy_fuzz_entry_holds_its_invariants_on_random_inputs() {
    let mut x = 0x853c_49e6_748f_ea9b_u64;
    let mut admitted = 0;
    for len in 0..3000usize {
        let data: Vec<u8> = (0..len % 700)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut odd = data.clone();
        if let Some(b) = odd.first_mut() {
            *b |= 1;
        }
        admitted += node_agent::fuzzing::policy_events(&odd);
    }
    // Config texts with policy sections, valid and not.
    for text in [
        "version: 1\nclusters: [ { name: c, breaker: { window: 0s } } ]\n",
        "version: 1\nclusters: [ { name: c, breaker: {} } ]\nroutes: [ { name: r, to: [ { cluster: c } ], rate_limit: { rps: 1e300, burst: 18446744073709551615, smooth: true, key: \"cookie:a\" } } ]\n",
        "version: 1\nroutes: [ { name: r, to: [], rate_limit: { rps: -1, burst: 0, key: \"query:\" } } ]\n",
    ] {
        let mut d = vec![0u8];
        d.extend_from_slice(text.as_bytes());
        node_agent::fuzzing::policy_events(&d);
    }
    assert!(admitted > 1000, "the sequences admit requests: {admitted}");
}

/// The differential check of the whole request path on every corpus
/// request and on random pipelined streams of valid requests: what goes
/// upstream re-frames as exactly the client's requests, never more.
#[test]
fn what_goes_upstream_reframes_as_the_clients_requests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/requests");
    let mut forwarded = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let raw = std::fs::read(f.unwrap().path()).unwrap();
        forwarded += node_agent::fuzzing::session_stream(&raw);
    }
    assert!(forwarded > 0, "no corpus request reached the upstream");
    // Pipelined streams of valid requests (split where their first byte
    // and length say): all of them go upstream, unchanged in method,
    // target and body.
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for round in 0..300 {
        let mut stream = Vec::new();
        let count = 1 + next(4);
        for i in 0..count {
            let body: Vec<u8> = (0..next(40)).map(|j| b'a' + (j % 26) as u8).collect();
            let target = format!("/r{round}/{i}");
            match next(3) {
                0 => stream.extend_from_slice(
                    format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
                ),
                1 => {
                    stream.extend_from_slice(
                        format!(
                            "POST {target} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    stream.extend_from_slice(&body);
                }
                _ => {
                    stream.extend_from_slice(
                        format!(
                            "PUT {target} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    for part in body.chunks(7) {
                        stream.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                        stream.extend_from_slice(part);
                        stream.extend_from_slice(b"\r\n");
                    }
                    stream.extend_from_slice(b"0\r\n\r\n");
                }
            }
        }
        let n = node_agent::fuzzing::session_stream(&stream);
        assert_eq!(
            n as u64,
            count,
            "round {round}: {}",
            String::from_utf8_lossy(&stream)
        );
    }
}

/// The routing fuzz entry's seeds exercise routing, not just refusals:
/// the shipped example configs and the seeded match strings route.
#[test]
fn routing_fuzz_seeds_route_requests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/routing");
    let mut picks = 0;
    let mut seeds = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        {
            seeds += 1;
            picks += node_agent::fuzzing::routing(&std::fs::read(path).unwrap());
        }
    }
    assert!(seeds >= 5 && picks > 100, "{seeds} seeds, {picks} picks");
}

/// The etcd_keys seeds build snapshots (they reach past validation), and
/// the one with a bad reference is rejected.
#[test]
fn etcd_keys_fuzz_seeds_build_snapshots() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/etcd_keys");
    let seed = |name: &str| std::fs::read(dir.join(name)).unwrap();
    for name in ["routes", "cluster_ep", "listeners", "sampling", "regex"] {
        assert!(node_agent::fuzzing::etcd_keys(&seed(name)) > 0, "{name}");
    }
    assert_eq!(node_agent::fuzzing::etcd_keys(&seed("bad")), 0);
}

/// The mesh_header seeds: the two valid headers parse, the broken ones
/// do not.
#[test]
fn mesh_header_fuzz_seeds_parse_as_named() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/mesh_header");
    let seed = |name: &str| std::fs::read(dir.join(name)).unwrap();
    for name in ["v4_http", "v6_tcp"] {
        assert_eq!(node_agent::fuzzing::mesh_header(&seed(name)), 1, "{name}");
    }
    for name in [
        "plaintext",
        "bad_len",
        "bad_family",
        "bad_proto",
        "port0",
        "short",
    ] {
        assert_eq!(node_agent::fuzzing::mesh_header(&seed(name)), 0, "{name}");
    }
}
