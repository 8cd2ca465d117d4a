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

/// The probes; `k` numbers them so a hidden request names its probe.
fn probes() -> Vec<Probe> {
    let mut out = Vec::new();
    let mut add = |name: &str, first: String, later: String, intended: &[&str]| {
        out.push(Probe {
            name: name.to_string(),
            first: first.into_bytes(),
            later: later.into_bytes(),
            intended: intended.iter().map(ToString::to_string).collect(),
        });
    };
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
    let mut k = 0;
    let mut next = || {
        k += 1;
        k
    };
    // CL.TE: a front end that frames by Content-Length forwards the hidden
    // request as body; one that frames by chunks ends the body at 0.
    let mut plan: Vec<(String, String, String, Vec<String>)> = Vec::new();
    for (name, te) in te_forms {
        let k = next();
        let body = format!("0\r\n\r\n{}", smuggled(k));
        plan.push((
            format!("cl-te/{name}"),
            format!(
                "POST /p{k} HTTP/1.1\r\nHost: svc\r\nContent-Length: {}\r\n{te}\r\n\r\n{body}",
                body.len()
            ),
            String::new(),
            vec![format!("POST /p{k}")],
        ));
    }
    // TE.CL: the hidden request sits in a chunk; Content-Length covers only
    // the chunk-size line. (Not with `Transfer_Encoding`: that is no
    // framing field, so Content-Length frames the message and what follows
    // is a request the client did pipeline; a vertical tab takes its place.)
    let te_cl_forms = te_forms.map(|(name, te)| {
        if name == "te-underscore" {
            ("te-vtab", "Transfer-Encoding:\x0bchunked")
        } else {
            (name, te)
        }
    });
    for (name, te) in te_cl_forms {
        let k = next();
        let s = smuggled(k);
        plan.push((
            format!("te-cl/{name}"),
            format!(
                "POST /p{k} HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\n{te}\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n",
                s.len()
            ),
            String::new(),
            vec![format!("POST /p{k}")],
        ));
    }
    // Content-Length oddities, the hidden request in what one reading
    // counts as body and another does not.
    let cl_forms: [(&str, &str); 8] = [
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
    ];
    for (name, cl) in cl_forms {
        let k = next();
        let s = smuggled(k);
        let cl = cl
            .replace("{n}", &s.len().to_string())
            .replace("{x}", &format!("{:x}", s.len()));
        plan.push((
            format!("cl/{name}"),
            format!("POST /p{k} HTTP/1.1\r\nHost: svc\r\n{cl}\r\n\r\n{s}"),
            String::new(),
            vec![format!("POST /p{k}")],
        ));
    }
    // Connection naming framing or target fields.
    let conn_forms: [(&str, &str); 7] = [
        ("conn-cl", "Connection: content-length"),
        ("conn-cl-case", "Connection: Content-Length"),
        ("conn-cl-list", "Connection: keep-alive, CONTENT-LENGTH"),
        (
            "conn-cl-second-field",
            "Connection: keep-alive\r\nConnection: content-length",
        ),
        ("conn-host", "Connection: host"),
        ("conn-te", "Connection: transfer-encoding"),
        ("conn-close-cl", "Connection: close, content-length"),
    ];
    for (name, conn) in conn_forms {
        let k = next();
        let s = smuggled(k);
        let first = if name == "conn-te" {
            format!(
                "POST /p{k} HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n{conn}\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n",
                s.len()
            )
        } else {
            format!(
                "POST /p{k} HTTP/1.1\r\nHost: svc\r\nContent-Length: {}\r\n{conn}\r\n\r\n{s}",
                s.len()
            )
        };
        plan.push((
            format!("connection/{name}"),
            first,
            String::new(),
            vec![format!("POST /p{k}")],
        ));
    }
    // Chunk-line oddities: a misread chunk boundary exposes the hidden
    // request carried in the next chunk.
    let chunk_forms: [(&str, &str); 10] = [
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
    ];
    for (name, odd) in chunk_forms {
        let k = next();
        let s = smuggled(k);
        plan.push((
            format!("chunk/{name}"),
            format!(
                "POST /p{k} HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n{odd}{:x}\r\n{s}\r\n0\r\n\r\n",
                s.len()
            ),
            String::new(),
            vec![format!("POST /p{k}")],
        ));
    }
    // CONNECT and Upgrade: a tunnel nobody allowed carries the next
    // request past routing.
    let k = next();
    plan.push((
        "tunnel/connect-path".into(),
        format!("CONNECT /p{k} HTTP/1.1\r\nHost: svc\r\n\r\n"),
        smuggled(k),
        vec![],
    ));
    let k = next();
    plan.push((
        "tunnel/connect-not-allowed".into(),
        "CONNECT db.internal:5432 HTTP/1.1\r\nHost: svc\r\n\r\n".to_string(),
        smuggled(k),
        vec![],
    ));
    let k = next();
    plan.push((
        "tunnel/unsolicited-101".into(),
        format!("GET /101?p{k} HTTP/1.1\r\nHost: svc\r\n\r\n"),
        smuggled(k),
        vec![format!("GET /101?p{k}")],
    ));
    let k = next();
    plan.push((
        "tunnel/101-with-body".into(),
        format!("POST /101?p{k} HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc"),
        smuggled(k),
        vec![format!("POST /101?p{k}")],
    ));
    let k = next();
    plan.push((
        "tunnel/connect-early-bytes".into(),
        format!("CONNECT /p{k} HTTP/1.1\r\nHost: svc\r\n\r\n{}", smuggled(k)),
        String::new(),
        vec![],
    ));
    // Pipelining: each client request gets its own answer, in order, even
    // when the upstream sends more than it framed.
    let k = next();
    plan.push((
        "pipeline/extra-upstream-bytes".into(),
        format!(
            "GET /extra?p{k} HTTP/1.1\r\nHost: svc\r\n\r\nGET /p{k}/2 HTTP/1.1\r\nHost: svc\r\n\r\n"
        ),
        String::new(),
        vec![format!("GET /extra?p{k}"), format!("GET /p{k}/2")],
    ));
    let k = next();
    plan.push((
        "pipeline/get-with-body".into(),
        format!(
            "GET /p{k} HTTP/1.1\r\nHost: svc\r\nContent-Length: {}\r\n\r\n{}",
            smuggled(k).len(),
            smuggled(k)
        ),
        String::new(),
        vec![format!("GET /p{k}")],
    ));
    let k = next();
    plan.push((
        "pipeline/three-in-one-write".into(),
        format!(
            "GET /p{k}/1 HTTP/1.1\r\nHost: svc\r\n\r\nPOST /p{k}/2 HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\n\r\nhiGET /p{k}/3 HTTP/1.1\r\nHost: svc\r\n\r\n"
        ),
        String::new(),
        vec![format!("GET /p{k}/1"), format!("POST /p{k}/2"), format!("GET /p{k}/3")],
    ));
    let k = next();
    plan.push((
        "pipeline/chunked-then-get".into(),
        format!(
            "POST /p{k}/1 HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /p{k}/2 HTTP/1.1\r\nHost: svc\r\n\r\n"
        ),
        String::new(),
        vec![format!("POST /p{k}/1"), format!("GET /p{k}/2")],
    ));
    let k = next();
    let next_req = format!("GET /p{k}/2 HTTP/1.1\r\nHost: svc\r\n\r\n");
    plan.push((
        "pipeline/trailer-with-length".into(),
        format!(
            "POST /p{k} HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: {}\r\n\r\n{next_req}",
            next_req.len()
        ),
        String::new(),
        // After a complete chunked body, what follows is the client's
        // next request (a trailer never frames the message).
        vec![format!("POST /p{k}"), format!("GET /p{k}/2")],
    ));
    // Header oddities around framing and the target.
    let k = next();
    plan.push((
        "header/http10-te".into(),
        format!(
            "POST /p{k} HTTP/1.0\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            smuggled(k).len(),
            smuggled(k)
        ),
        String::new(),
        vec![format!("POST /p{k}")],
    ));
    let k = next();
    plan.push((
        "header/bare-cr-te".into(),
        format!(
            "POST /p{k} HTTP/1.1\r\nHost: svc\r\nX: a\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            smuggled(k).len(),
            smuggled(k)
        ),
        String::new(),
        vec![format!("POST /p{k}")],
    ));
    let k = next();
    plan.push((
        "header/nul-in-cl".into(),
        format!(
            "POST /p{k} HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\0{}\r\n\r\n{}",
            smuggled(k).len(),
            smuggled(k)
        ),
        String::new(),
        vec![format!("POST /p{k}")],
    ));
    let k = next();
    plan.push((
        "header/lf-only-line".into(),
        format!(
            "POST /p{k} HTTP/1.1\r\nHost: svc\nContent-Length: {}\r\n\r\n{}",
            smuggled(k).len(),
            smuggled(k)
        ),
        String::new(),
        vec![format!("POST /p{k}")],
    ));
    let k = next();
    plan.push((
        "header/duplicate-host".into(),
        format!("GET /p{k} HTTP/1.1\r\nHost: svc\r\nHost: admin.internal\r\n\r\n"),
        String::new(),
        vec![format!("GET /p{k}")],
    ));
    let k = next();
    plan.push((
        "header/te-in-name-suffix".into(),
        format!(
            "POST /p{k} HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding-X: chunked\r\nContent-Length: {}\r\n\r\n{}",
            smuggled(k).len(),
            smuggled(k)
        ),
        String::new(),
        vec![format!("POST /p{k}")],
    ));
    let k = next();
    plan.push((
        "header/expect-then-te".into(),
        format!(
            "POST /p{k} HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            smuggled(k).len(),
            smuggled(k)
        ),
        String::new(),
        vec![format!("POST /p{k}")],
    ));
    let k = next();
    plan.push((
        "header/space-in-method".into(),
        format!(
            "GET /p{k} HTTP/1.1\r\nHost: svc\r\n\r\nG ET /smuggled{k} HTTP/1.1\r\nHost: svc\r\n\r\n"
        ),
        String::new(),
        vec![format!("GET /p{k}")],
    ));
    for (name, first, later, intended) in plan {
        let i: Vec<&str> = intended.iter().map(String::as_str).collect();
        add(&name, first, later, &i);
    }
    out
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

fn hardening_config(port: u16, up: u16, ring: &Path) -> String {
    format!(
        r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
clusters:
  - name: c
    endpoints: [ {{ addr: "127.0.0.1:{up}" }} ]
routes:
  - {{ name: r, to: [ {{ cluster: c }} ] }}
ring: {{ path: "{}", size: 4MiB }}
"#,
        ring.display()
    )
}

#[test]
fn no_probe_smuggles_a_request_and_every_client_gets_its_own_answers() {
    let up = Lenient::start();
    let p = up.port;
    let agent = Agent::start(move |port, ring| hardening_config(port, p, ring), &[]);
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
