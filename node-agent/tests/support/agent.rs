//! Shared by the agent integration tests (included with `#[path]`): start
//! the real `node-agent` binary on a generated config (killed on drop),
//! `tailmesh-bench upstream` instances, a raw HTTP/1.1 client, and reading
//! the agent's trace records back with `ringlog tail --json`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_node-agent");

/// The value on the line of metrics `text` that starts with `line_start`
/// (name and labels, then a space); one scrape can give several.
pub fn metric_in<T: std::str::FromStr>(text: &str, line_start: &str) -> T {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_start} not in metrics:\n{text}"))
}

/// Runs `cmd` to the end; it must succeed (its stderr is the message).
pub fn output_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A workspace binary next to the agent (built by `cargo test --workspace`).
pub fn sibling(name: &str) -> PathBuf {
    let p = Path::new(AGENT).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p {})",
        p.display(),
        if name == "ringlog" {
            "ringlog-cli"
        } else {
            name
        }
    );
    p
}

/// `--io` for agents the tests start: `TAILMESH_TEST_IO` (test.sh runs the
/// agent tests once per driver), default `auto`; none if the test passes
/// its own.
pub fn io_flag(extra: &[&str]) -> Vec<String> {
    if extra.contains(&"--io") {
        return Vec::new();
    }
    let io = std::env::var("TAILMESH_TEST_IO").unwrap_or_else(|_| "auto".into());
    vec!["--io".into(), io]
}

/// Debian's python3 with python3-seccomp (./test.sh installs it): the
/// interpreter the seccomp wrappers of the tests run under.
pub fn seccomp_python() -> &'static str {
    let py = "/usr/bin/python3";
    let probe = Command::new(py)
        .args(["-c", "import seccomp"])
        .status()
        .expect("run /usr/bin/python3");
    assert!(
        probe.success(),
        "python3-seccomp is required for this test: apt-get install -y python3-seccomp (./test.sh does)"
    );
    py
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `tailmesh-bench upstream`, killed when dropped.
pub struct Upstream {
    child: Child,
    pub port: u16,
}

impl Upstream {
    pub fn start(extra: &[&str]) -> Upstream {
        Upstream::start_via(&[], extra)
    }

    /// The upstream's process id (the wrapper execs it, so this is the
    /// upstream itself).
    #[allow(dead_code)] // not every test binary that includes this uses it
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Like [`Upstream::start`], run through `wrapper` (a command that
    /// execs its arguments, e.g. `nice -n 19`).
    pub fn start_via(wrapper: &[&str], extra: &[&str]) -> Upstream {
        let bench = sibling("tailmesh-bench");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bench);
                c
            }
            None => Command::new(&bench),
        };
        let mut child = cmd
            .args(["upstream", "--listen", "127.0.0.1:0", "--workers", "1"])
            .args(["--exit-after", "300s"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn upstream");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let addr = v["listening"][0].as_str().unwrap();
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Upstream { child, port }
    }

    pub fn served(&self) -> u64 {
        let r = request(self.port, "GET /_bench/stats HTTP/1.1\r\nHost: t\r\n\r\n");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["served"].as_u64().unwrap()
    }
}

/// Replaces the faults of the `tailmesh-bench upstream` on `port` (JSON,
/// `{}` clears them).
pub fn faults(port: u16, body: &str) {
    let raw = format!(
        "PUT /_bench/faults HTTP/1.1\r\nHost: t\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = request(port, &raw);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running agent, killed when dropped (unless it already exited).
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub admin: u16,
    pub admin_ip: String,
    pub dir: tempfile::TempDir,
}

/// A one-cluster config: listener `api` on `port` routing everything to
/// cluster `c` with `endpoints` (ports on 127.0.0.1), every request kept.
pub fn config(port: u16, endpoints: &[u16], request_timeout: &str, ring: &Path) -> String {
    config_with(
        port,
        endpoints,
        request_timeout,
        ring,
        "  - { name: market, match: { headers: { x-order-type: market } }, sample: 1.0 }\n",
        "{ default: 1.0, keep_errors: true, max_records_per_sec: 0 }",
    )
}

/// Like [`config`], with these `request_types` entries (YAML lines) and
/// this `sampling` map.
pub fn config_with(
    port: u16,
    endpoints: &[u16],
    request_timeout: &str,
    ring: &Path,
    types: &str,
    sampling: &str,
) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|p| format!("{{ addr: \"127.0.0.1:{p}\" }}"))
        .collect();
    format!(
        r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
clusters:
  - name: c
    endpoints: [ {} ]
    timeouts: {{ connect: 1s, request: {request_timeout}, idle: 60s }}
routes:
  - {{ name: r, match: {{ path_prefix: / }}, to: [ {{ cluster: c }} ] }}
request_types:
{types}sampling: {sampling}
ring: {{ path: "{}", size: 4MiB }}
"#,
        eps.join(", "),
        ring.display()
    )
}

impl Agent {
    /// Starts the agent on a config made by `make(listen_port, ring_path)`.
    pub fn start(make: impl Fn(u16, &Path) -> String, extra: &[&str]) -> Agent {
        Agent::start_via(&[], make, extra)
    }

    /// Like [`Agent::start`], run through `wrapper` (a command that execs
    /// its arguments, e.g. a seccomp filter).
    pub fn start_via(
        wrapper: &[&str],
        make: impl Fn(u16, &Path) -> String,
        extra: &[&str],
    ) -> Agent {
        Agent::start_full(wrapper, "127.0.0.1", make, extra)
    }

    /// Like [`Agent::start_via`], with the admin listener on `admin_ip`.
    /// A port picked by [`free_port`] can be taken by someone else before
    /// the agent binds it; that one case is retried with new ports.
    pub fn start_full(
        wrapper: &[&str],
        admin_ip: &str,
        make: impl Fn(u16, &Path) -> String,
        extra: &[&str],
    ) -> Agent {
        for attempt in 1..=3 {
            match Agent::try_start(wrapper, admin_ip, &make, extra) {
                Ok(a) => return a,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    eprintln!("port taken before the agent bound it, retrying: {log}");
                }
                Err(log) => panic!("agent exited: {log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_start(
        wrapper: &[&str],
        admin_ip: &str,
        make: &impl Fn(u16, &Path) -> String,
        extra: &[&str],
    ) -> Result<Agent, String> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin = free_port();
        let cfg = dir.path().join("agent.yaml");
        std::fs::write(&cfg, make(port, &dir.path().join("ring"))).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(AGENT);
                c
            }
            None => Command::new(AGENT),
        };
        let child = cmd
            .arg("--config")
            .arg(&cfg)
            .args(["--admin", &format!("{admin_ip}:{admin}")])
            // One worker unless the test asks for more.
            .args(if extra.contains(&"--workers") {
                &[][..]
            } else {
                &["--workers", "1"][..]
            })
            .args(io_flag(extra))
            .args(extra)
            .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
            .spawn()
            .expect("spawn node-agent");
        let mut a = Agent {
            child,
            port,
            admin,
            admin_ip: admin_ip.to_string(),
            dir,
        };
        let t0 = Instant::now();
        loop {
            if let Ok(r) = try_request_at(admin_ip, admin, "GET /ready HTTP/1.1\r\nHost: t\r\n\r\n")
                && r.status == 200
            {
                return Ok(a);
            }
            if let Ok(Some(st)) = a.child.try_wait() {
                return Err(format!("{st}: {}", a.log()));
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "agent not ready: {}",
                a.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn ring(&self) -> PathBuf {
        self.dir.path().join("ring")
    }

    /// The body of admin `GET path`.
    pub fn admin_get(&self, path: &str) -> String {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = try_request_at(&self.admin_ip, self.admin, &raw).unwrap();
        String::from_utf8(r.body).unwrap()
    }

    pub fn metrics(&self) -> String {
        let raw = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
        let r = try_request_at(&self.admin_ip, self.admin, raw).unwrap();
        String::from_utf8(r.body).unwrap()
    }

    /// The value of the metric line that starts with `line_start` (name
    /// and labels, then a space).
    pub fn metric(&self, line_start: &str) -> u64 {
        metric_in(&self.metrics(), line_start)
    }

    /// `tailmesh_driver_events_total{event=NAME}`.
    pub fn driver_event(&self, name: &str) -> u64 {
        self.metric(&format!(
            "tailmesh_driver_events_total{{event=\"{name}\"}} "
        ))
    }

    /// Every record and event in the ring, via `ringlog tail --json`.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let out = output_ok(
            Command::new(sibling("ringlog"))
                .args(["tail", "--json", "-n", "1000000", "--ring"])
                .arg(self.ring()),
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Like [`Agent::records`], once at least `n` request records are in
    /// the ring (polled for up to 5 s). A record is written when its
    /// response has left the agent, which can be a moment after the client
    /// read it.
    pub fn records_at_least(&self, n: usize) -> Vec<serde_json::Value> {
        let t0 = Instant::now();
        loop {
            let recs = self.records();
            let have = recs.iter().filter(|r| r["kind"] == "record").count();
            if have >= n || t0.elapsed() > Duration::from_secs(5) {
                return recs;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status within `within`.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                t0.elapsed() < within,
                "agent did not exit after SIGTERM: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts every record's phases sum to its total within 1 µs.
pub fn assert_phases_sum(records: &[serde_json::Value]) -> usize {
    let mut n = 0;
    for r in records.iter().filter(|r| r["kind"] == "record") {
        let total = r["total_ns"].as_u64().unwrap();
        let sum: u64 = r["phases_ns"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert!(
            total.abs_diff(sum) <= 1000,
            "phases {sum} != total {total}: {r}"
        );
        n += 1;
    }
    n
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }
}

pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

pub fn request(port: u16, raw: &str) -> Response {
    try_request(port, raw).unwrap()
}

pub fn try_request(port: u16, raw: &str) -> std::io::Result<Response> {
    try_request_at("127.0.0.1", port, raw)
}

pub fn try_request_at(ip: &str, port: u16, raw: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect((ip, port))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(raw.as_bytes())?;
    read_response(&mut s, &mut Vec::new())
}

/// Reads one response (Content-Length, chunked, or until close). `carry`
/// holds bytes read past it (pipelining).
pub fn read_response(s: &mut TcpStream, carry: &mut Vec<u8>) -> std::io::Result<Response> {
    let mut buf = std::mem::take(carry);
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut r = Response {
        status,
        head,
        body: Vec::new(),
    };
    let mut rest = buf[head_end..].to_vec();
    let mut more = |rest: &mut Vec<u8>| -> std::io::Result<bool> {
        let n = s.read(&mut chunk)?;
        rest.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    };
    if let Some(len) = r.header("content-length") {
        let len: usize = len.parse().unwrap();
        while rest.len() < len {
            if !more(&mut rest)? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        *carry = rest.split_off(len);
        r.body = rest;
    } else if r.header("transfer-encoding").is_some() {
        // Keep the raw chunked body up to and including the last chunk.
        while !rest.windows(5).any(|w| w == b"0\r\n\r\n") {
            if !more(&mut rest)? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let end = rest.windows(5).position(|w| w == b"0\r\n\r\n").unwrap() + 5;
        *carry = rest.split_off(end);
        r.body = rest;
    } else if !(100..200).contains(&status) && status != 204 && status != 304 {
        while more(&mut rest)? {}
        r.body = rest;
    }
    Ok(r)
}

/// VmRSS or VmHWM of a process, in bytes.
pub fn vm(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field}"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}
