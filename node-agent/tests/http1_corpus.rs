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
