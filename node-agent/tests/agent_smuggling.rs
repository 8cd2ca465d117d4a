//! A differential request-smuggling suite: 75 probes (CL/TE conflicts and
//! obfuscations, Connection-named fields, chunk-line oddities,
//! CONNECT/Upgrade, pipelining, header oddities) and a race of attackers
//! and a victim sharing the upstream pool, sent through the agent (the
//! driver ./test.sh picks) and, as the yardstick, through HAProxy and
//! nginx, each in front of a deliberately lenient upstream that logs every
//! request it parses (support/lenient.rs).
//!
//! Every probe hides a request (`/smuggledN`) where a parser that frames
//! the message differently would find it. The agent must let 0 requests
//! the client did not send reach the upstream, and every client must get
//! exactly its own responses (an answer is the agent's own, or the echo of
//! a request that client sent, in order). The peers' figures are printed,
//! not asserted: they are the yardstick.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/lenient.rs"]
mod lenient;
#[path = "support/agent.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lenient::Lenient;
use support::*;

/// One probe: raw bytes (a second part is sent 200 ms later, when the
/// first may have opened a tunnel) and the request lines the client means.
struct Probe {
    name: String,
    first: Vec<u8>,
    later: Vec<u8>,
    intended: Vec<String>,
}

fn smuggled(k: usize) -> String {
    format!("GET /smuggled{k} HTTP/1.1\r\nHost: svc\r\n\r\n")
}

/// Fills a probe template for probe `k`: `{k}` its number, `{S}` its
/// hidden request, `{n}` / `{x}` that request's length in decimal / hex,
/// `{n5}` the length of `0\r\n\r\n` plus it.
fn expand(t: &str, k: usize) -> String {
    let s = smuggled(k);
    t.replace("{k}", &k.to_string())
        .replace("{n5}", &(s.len() + 5).to_string())
        .replace("{n}", &s.len().to_string())
        .replace("{x}", &format!("{:x}", s.len()))
        .replace("{S}", &s)
}

/// The probes, as (name, first bytes, bytes sent 200 ms later, request
/// lines the client means) templates; `k` numbers them so a hidden request
/// names its probe.
fn probes() -> Vec<Probe> {
    const POST: &str = "POST /p{k} HTTP/1.1\r\nHost: svc\r\n";
    let te_forms: [(&str, &str); 16] = [
        ("te-plain", "Transfer-Encoding: chunked"),
        ("te-case", "Transfer-Encoding: Chunked"),
        ("te-lead-space", "Transfer-Encoding:  chunked"),
        ("te-tab", "Transfer-Encoding:\tchunked"),
        ("te-trail-space", "Transfer-Encoding: chunked "),
        ("te-xchunked", "Transfer-Encoding: xchunked"),
        ("te-chunk", "Transfer-Encoding: chunk"),
        (
            "te-identity-chunked",
            "Transfer-Encoding: identity, chunked",
        ),
        (
            "te-chunked-identity",
            "Transfer-Encoding: chunked, identity",
        ),
        ("te-gzip-chunked", "Transfer-Encoding: gzip, chunked"),
        ("te-twice", "Transfer-Encoding: chunked, chunked"),
        ("te-quoted", "Transfer-Encoding: \"chunked\""),
        ("te-space-colon", "Transfer-Encoding : chunked"),
        ("te-obs-fold", "Transfer-Encoding:\r\n chunked"),
        (
            "te-two-fields",
            "Transfer-Encoding: x\r\nTransfer-Encoding: chunked",
        ),
        ("te-underscore", "Transfer_Encoding: chunked"),
    ];
    let mut rows: Vec<(String, String, String, Vec<String>)> = Vec::new();
    let mut row = |name: String, first: String, later: &str, intended: &[&str]| {
        let intended = intended.iter().map(ToString::to_string).collect();
        rows.push((name, first, later.to_string(), intended));
    };
    // CL.TE: a front end that frames by Content-Length forwards the hidden
    // request as body; one that frames by chunks ends the body at 0.
    for (name, te) in te_forms {
        let first = format!("{POST}Content-Length: {{n5}}\r\n{te}\r\n\r\n0\r\n\r\n{{S}}");
        row(format!("cl-te/{name}"), first, "", &["POST /p{k}"]);
    }
    // TE.CL: the hidden request sits in a chunk; Content-Length covers only
    // the chunk-size line. (Not with `Transfer_Encoding`: that is no
    // framing field, so Content-Length frames the message and what follows
    // is a request the client did pipeline; a vertical tab takes its place.)
    for (name, te) in te_forms {
        let (name, te) = match name {
            "te-underscore" => ("te-vtab", "Transfer-Encoding:\x0bchunked"),
            _ => (name, te),
        };
        let first = format!("{POST}Content-Length: 4\r\n{te}\r\n\r\n{{x}}\r\n{{S}}\r\n0\r\n\r\n");
        row(format!("te-cl/{name}"), first, "", &["POST /p{k}"]);
    }
    // Content-Length oddities, the hidden request in what one reading
    // counts as body and another does not.
    for (name, cl) in [
        (
            "cl-dup-differing",
            "Content-Length: 0\r\nContent-Length: {n}",
        ),
        ("cl-list", "Content-Length: 0, {n}"),
        ("cl-plus", "Content-Length: +{n}"),
        ("cl-hex", "Content-Length: 0x{x}"),
        ("cl-space-colon", "Content-Length : {n}"),
        ("cl-inner-space", "Content-Length: 0 {n}"),
        ("cl-exp", "Content-Length: {n}e0"),
        ("cl-negative", "Content-Length: -{n}"),
    ] {
        row(
            format!("cl/{name}"),
            format!("{POST}{cl}\r\n\r\n{{S}}"),
            "",
            &["POST /p{k}"],
        );
    }
    // Connection naming framing or target fields.
    for (name, conn) in [
        ("conn-cl", "Connection: content-length"),
        ("conn-cl-case", "Connection: Content-Length"),
        ("conn-cl-list", "Connection: keep-alive, CONTENT-LENGTH"),
        (
            "conn-cl-second-field",
            "Connection: keep-alive\r\nConnection: content-length",
        ),
        ("conn-host", "Connection: host"),
        ("conn-close-cl", "Connection: close, content-length"),
    ] {
        let first = format!("{POST}Content-Length: {{n}}\r\n{conn}\r\n\r\n{{S}}");
        row(format!("connection/{name}"), first, "", &["POST /p{k}"]);
    }
    let first = format!(
        "{POST}Transfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n{{x}}\r\n{{S}}\r\n0\r\n\r\n"
    );
    row("connection/conn-te".into(), first, "", &["POST /p{k}"]);
    // Chunk-line oddities: a misread chunk boundary exposes the hidden
    // request carried in the next chunk.
    for (name, odd) in [
        ("chunk-trailing-ws", "3 \t\r\nabc\r\n"),
        ("chunk-ws-before-ext", "3 ;x=1\r\nabc\r\n"),
        ("chunk-bare-lf", "3\nabc\r\n"),
        ("chunk-0x", "0x3\r\nabc\r\n"),
        ("chunk-negative", "-3\r\nabc\r\n"),
        ("chunk-17-digits", "00000000000000003\r\nabc\r\n"),
        ("chunk-overflow", "fffffffffffffffff\r\nabc\r\n"),
        ("chunk-no-crlf-after-data", "3\r\nabcXX"),
        ("chunk-quoted-crlf-ext", "3;x=\"a\r\nb\"\r\nabc\r\n"),
        ("chunk-nul-ext", "3;x\0\r\nabc\r\n"),
    ] {
        let first =
            format!("{POST}Transfer-Encoding: chunked\r\n\r\n{odd}{{x}}\r\n{{S}}\r\n0\r\n\r\n");
        row(format!("chunk/{name}"), first, "", &["POST /p{k}"]);
    }
    // The rest, one template each.
    let fixed: [(&str, &str, &str, &[&str]); 18] = [
        // CONNECT and Upgrade: a tunnel nobody allowed carries the next
        // request past routing.
        (
            "tunnel/connect-path",
            "CONNECT /p{k} HTTP/1.1\r\nHost: svc\r\n\r\n",
            "{S}",
            &[],
        ),
        (
            "tunnel/connect-not-allowed",
            "CONNECT db.internal:5432 HTTP/1.1\r\nHost: svc\r\n\r\n",
            "{S}",
            &[],
        ),
        (
            "tunnel/unsolicited-101",
            "GET /101?p{k} HTTP/1.1\r\nHost: svc\r\n\r\n",
            "{S}",
            &["GET /101?p{k}"],
        ),
        (
            "tunnel/101-with-body",
            "POST /101?p{k} HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc",
            "{S}",
            &["POST /101?p{k}"],
        ),
        (
            "tunnel/connect-early-bytes",
            "CONNECT /p{k} HTTP/1.1\r\nHost: svc\r\n\r\n{S}",
            "",
            &[],
        ),
        // Pipelining: each client request gets its own answer, in order,
        // even when the upstream sends more than it framed.
        (
            "pipeline/extra-upstream-bytes",
            "GET /extra?p{k} HTTP/1.1\r\nHost: svc\r\n\r\nGET /p{k}/2 HTTP/1.1\r\nHost: svc\r\n\r\n",
            "",
            &["GET /extra?p{k}", "GET /p{k}/2"],
        ),
        (
            "pipeline/get-with-body",
            "GET /p{k} HTTP/1.1\r\nHost: svc\r\nContent-Length: {n}\r\n\r\n{S}",
            "",
            &["GET /p{k}"],
        ),
        (
            "pipeline/three-in-one-write",
            "GET /p{k}/1 HTTP/1.1\r\nHost: svc\r\n\r\nPOST /p{k}/2 HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\n\r\nhiGET /p{k}/3 HTTP/1.1\r\nHost: svc\r\n\r\n",
            "",
            &["GET /p{k}/1", "POST /p{k}/2", "GET /p{k}/3"],
        ),
        (
            "pipeline/chunked-then-get",
            "POST /p{k}/1 HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /p{k}/2 HTTP/1.1\r\nHost: svc\r\n\r\n",
            "",
            &["POST /p{k}/1", "GET /p{k}/2"],
        ),
        // After a complete chunked body, what follows is the client's next
        // request (a trailer never frames the message).
        (
            "pipeline/trailer-with-length",
            "POST /p{k} HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 37\r\n\r\nGET /p{k}/2 HTTP/1.1\r\nHost: svc\r\n\r\n",
            "",
            &["POST /p{k}", "GET /p{k}/2"],
        ),
        // Header oddities around framing and the target.
        (
            "header/http10-te",
            "POST /p{k} HTTP/1.0\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n{x}\r\n{S}\r\n0\r\n\r\n",
            "",
            &["POST /p{k}"],
        ),
        (
            "header/bare-cr-te",
            "POST /p{k} HTTP/1.1\r\nHost: svc\r\nX: a\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n{x}\r\n{S}\r\n0\r\n\r\n",
            "",
            &["POST /p{k}"],
        ),
        (
            "header/nul-in-cl",
            "POST /p{k} HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\0{n}\r\n\r\n{S}",
            "",
            &["POST /p{k}"],
        ),
        (
            "header/lf-only-line",
            "POST /p{k} HTTP/1.1\r\nHost: svc\nContent-Length: {n}\r\n\r\n{S}",
            "",
            &["POST /p{k}"],
        ),
        (
            "header/duplicate-host",
            "GET /p{k} HTTP/1.1\r\nHost: svc\r\nHost: admin.internal\r\n\r\n",
            "",
            &["GET /p{k}"],
        ),
        (
            "header/te-in-name-suffix",
            "POST /p{k} HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding-X: chunked\r\nContent-Length: {n}\r\n\r\n{S}",
            "",
            &["POST /p{k}"],
        ),
        (
            "header/expect-then-te",
            "POST /p{k} HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{x}\r\n{S}\r\n0\r\n\r\n",
            "",
            &["POST /p{k}"],
        ),
        (
            "header/space-in-method",
            "GET /p{k} HTTP/1.1\r\nHost: svc\r\n\r\nG ET /smuggled{k} HTTP/1.1\r\nHost: svc\r\n\r\n",
            "",
            &["GET /p{k}"],
        ),
    ];
    for (name, first, later, intended) in fixed {
        row(name.into(), first.into(), later, intended);
    }
    rows.into_iter()
        .enumerate()
        .map(|(i, (name, first, later, intended))| {
            let k = i + 1;
            Probe {
                name,
                first: expand(&first, k).into_bytes(),
                later: expand(&later, k).into_bytes(),
                intended: intended.iter().map(|t| expand(t, k)).collect(),
            }
        })
        .collect()
}

/// One answer as a client reads it.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// Reads responses until the connection closes or is quiet for `idle`.
fn read_answers(s: &mut TcpStream, idle: Duration) -> Vec<Answer> {
    s.set_read_timeout(Some(idle)).unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let mut out = Vec::new();
    let mut rest = &raw[..];
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).to_string();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        rest = &rest[end + 4..];
        let header = |n: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(n)
                    .then(|| v.trim().to_string())
            })
        };
        let body: Vec<u8> = if (100..200).contains(&status) {
            if status == 101 {
                let b = rest.to_vec();
                rest = &[];
                b
            } else {
                continue;
            }
        } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let n = n.min(rest.len());
            let b = rest[..n].to_vec();
            rest = &rest[n..];
            b
        } else if header("transfer-encoding").is_some() {
            let mut b = Vec::new();
            loop {
                let Some(l) = rest.windows(2).position(|w| w == b"\r\n") else {
                    rest = &[];
                    break;
                };
                let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..l]).trim(), 16)
                    .unwrap_or(0);
                rest = &rest[l + 2..];
                if size == 0 {
                    rest = rest.get(2..).unwrap_or_default();
                    break;
                }
                let n = size.min(rest.len());
                b.extend_from_slice(&rest[..n]);
                rest = rest.get(n + 2..).unwrap_or_default();
            }
            b
        } else {
            let b = rest.to_vec();
            rest = &[];
            b
        };
        out.push(Answer {
            status,
            body: String::from_utf8_lossy(&body).to_string(),
        });
    }
    out
}

/// What one proxy did with the suite.
#[derive(Debug, Default)]
struct Tally {
    /// Requests the upstream saw that no client sent.
    smuggled: Vec<String>,
    /// Answers a client got that were not its own.
    crossed: Vec<String>,
    /// Probes answered only by the proxy (refused).
    refused: usize,
}

/// Runs every probe against `port` (8 at a time) and the pool race, then
/// compares with what `up` logged.
fn run_suite(port: u16, up: &Lenient) -> Tally {
    let probes = Arc::new(probes());
    assert!(probes.len() >= 60, "only {} probes", probes.len());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(Mutex::new(0usize));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (probes, tally, next) = (probes.clone(), tally.clone(), next.clone());
            std::thread::spawn(move || {
                loop {
                    let idx = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    let Some(p) = probes.get(idx) else { return };
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    let _ = s.write_all(&p.first);
                    if !p.later.is_empty() {
                        std::thread::sleep(Duration::from_millis(200));
                        let _ = s.write_all(&p.later);
                    }
                    let answers = read_answers(&mut s, Duration::from_millis(600));
                    let mut want = p.intended.iter();
                    let mut own = 0;
                    let mut t = tally.lock().unwrap();
                    for a in &answers {
                        if (200..300).contains(&a.status) {
                            // An upstream answer: the echo of this
                            // client's next request, nothing else.
                            match want.next() {
                                Some(w) if *w == a.body => own += 1,
                                other => t.crossed.push(format!(
                                    "{}: got {:?}, expected {other:?}",
                                    p.name, a.body
                                )),
                            }
                        } else if a.status == 101 {
                            t.crossed.push(format!("{}: a tunnel was opened", p.name));
                        }
                    }
                    if own == 0 {
                        t.refused += 1;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // The race: attackers and a victim through the same upstream pool.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attack = {
        let k = 9999;
        let s = smuggled(k);
        format!(
            "POST /race HTTP/1.1\r\nHost: svc\r\nContent-Length: {}\r\nConnection: content-length\r\n\r\n{s}",
            s.len()
        )
    };
    let attackers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, a) = (stop.clone(), attack.clone());
            std::thread::spawn(move || {
                let t0 = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && t0.elapsed() < Duration::from_secs(10)
                {
                    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                        let _ = s.write_all(a.as_bytes());
                        let _ = read_answers(&mut s, Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();
    let mut s = connect(port);
    let mut carry = Vec::new();
    for i in 0..100 {
        s.write_all(format!("GET /victim/{i} HTTP/1.1\r\nHost: svc\r\n\r\n").as_bytes())
            .unwrap();
        match read_response(&mut s, &mut carry) {
            Ok(r) if String::from_utf8_lossy(&r.body) == format!("GET /victim/{i}") => {}
            Ok(r) => tally.lock().unwrap().crossed.push(format!(
                "race: victim request {i} got {:?}",
                String::from_utf8_lossy(&r.body)
            )),
            Err(e) => {
                tally
                    .lock()
                    .unwrap()
                    .crossed
                    .push(format!("race: victim request {i}: {e}"));
                break;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent: std::collections::HashSet<String> = probes
        .iter()
        .flat_map(|p| p.intended.iter().cloned())
        .chain((0..100).map(|i| format!("GET /victim/{i}")))
        .chain(["POST /race".to_string()])
        .collect();
    let mut t = Arc::try_unwrap(tally).unwrap().into_inner().unwrap();
    for line in up.lines() {
        if line.contains("smuggled") || !sent.contains(&line) {
            t.smuggled.push(line);
        }
    }
    t
}

/// Starts a peer proxy (haproxy or nginx) from the bench's config in
/// front of `up`; None if it is not installed.
fn start_peer(name: &str, up: u16, dir: &Path) -> Option<(Child, u16)> {
    let bin = [format!("/usr/sbin/{name}"), format!("/usr/bin/{name}")]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let (port, tcp) = (free_port(), free_port());
    let template = match name {
        "haproxy" => include_str!("../../bench/peers/haproxy.cfg"),
        _ => include_str!("../../bench/peers/nginx.conf"),
    };
    let cfg = template
        .replace("{http_port}", &port.to_string())
        .replace("{tcp_port}", &tcp.to_string())
        .replace("{upstream}", &format!("127.0.0.1:{up}"))
        .replace("{dir}", &dir.display().to_string());
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new(bin);
    if name == "haproxy" {
        cmd.arg("-db").arg("-f").arg(&path);
    } else {
        cmd.arg("-e")
            .arg(dir.join("nginx.err"))
            .arg("-c")
            .arg(&path);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{name} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((child, port))
}

#[test]
fn no_probe_smuggles_a_request_and_every_client_gets_its_own_answers() {
    let up = Lenient::start();
    let p = up.port;
    let agent = Agent::start(move |port, ring| config(port, &[p], "60s", ring), &[]);
    let ours = run_suite(agent.port, &up);
    let n = probes().len();
    eprintln!(
        "agent ({}): {n} probes + race: {} smuggled, {} crossed, {} refused {:?} {:?}",
        std::env::var("TAILMESH_TEST_IO").unwrap_or_else(|_| "auto".into()),
        ours.smuggled.len(),
        ours.crossed.len(),
        ours.refused,
        ours.smuggled,
        ours.crossed
    );
    // The yardstick: the same suite through HAProxy and nginx.
    let dir = tempfile::tempdir().unwrap();
    for peer in ["haproxy", "nginx"] {
        let up = Lenient::start();
        let Some((mut child, port)) = start_peer(peer, up.port, dir.path()) else {
            panic!("{peer} is not installed (./test.sh installs it)");
        };
        let t = run_suite(port, &up);
        eprintln!(
            "{peer}: {n} probes + race: {} smuggled, {} crossed, {} refused{}",
            t.smuggled.len(),
            t.crossed.len(),
            t.refused,
            if t.smuggled.is_empty() && t.crossed.is_empty() {
                String::new()
            } else {
                format!(" ({:?} / {:?})", t.smuggled, t.crossed)
            }
        );
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        ours.smuggled.is_empty(),
        "reached the upstream: {:?}",
        ours.smuggled
    );
    assert!(ours.crossed.is_empty(), "{:?}", ours.crossed);
}
