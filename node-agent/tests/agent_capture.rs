//! Transparent capture for real: a network namespace, an iptables nat
//! REDIRECT of a client's connection to the agent's `outbound` listener,
//! and the request served through the agent to its original destination
//! (SO_ORIGINAL_DST). The agent marks its upstream sockets (SO_MARK 0x539)
//! and the rule skips that mark; without it the agent's own connection
//! would loop back into itself and the requests would fail.
//! Needs root, `ip` and `iptables` (./test.sh installs them; CI runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} is required for this test ({e}); ./test.sh installs it",
                args[0]
            )
        });
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace and its veth pair, removed on drop.
struct Netns {
    name: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn redirected_connection_is_proxied_to_its_original_destination() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (network namespaces and iptables); CI runs ./test.sh as root"
    );
    let id = std::process::id() % 100_000;
    let ns = Netns {
        name: format!("tmcap{id}"),
    };
    let (host_if, ns_if) = (format!("tmh{id}"), format!("tmn{id}"));
    let n = ns.name.as_str();
    let _ = Command::new("ip").args(["netns", "del", n]).status();
    run(&["ip", "netns", "add", n]);
    run(&["ip", "-n", n, "link", "set", "lo", "up"]);
    run(&[
        "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", n,
    ]);
    run(&["ip", "addr", "add", "10.78.0.1/30", "dev", &host_if]);
    run(&["ip", "link", "set", &host_if, "up"]);
    run(&["ip", "-n", n, "addr", "add", "10.78.0.2/30", "dev", &ns_if]);
    run(&["ip", "-n", n, "link", "set", &ns_if, "up"]);
    // The "service" the client thinks it talks to, inside the namespace.
    run(&["ip", "-n", n, "addr", "add", "10.77.0.1/24", "dev", &ns_if]);
    run(&[
        "ip",
        "netns",
        "exec",
        n,
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "10.77.0.1",
        "--dport",
        "8080",
        "-m",
        "mark",
        "!",
        "--mark",
        "0x539",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
    let bench = sibling("tailmesh-bench");
    let bench = bench.to_str().unwrap();
    let mut upstream = Command::new("ip")
        .args([
            "netns",
            "exec",
            n,
            bench,
            "upstream",
            "--listen",
            "10.77.0.1:8080",
        ])
        .args([
            "--workers",
            "1",
            "--name",
            "original-destination",
            "--exit-after",
            "60s",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let wrapper = ["ip", "netns", "exec", n];
    // The admin listener is on the veth address so this process reaches it.
    let agent = Agent::start_full(
        &wrapper,
        "10.78.0.2",
        |_, ring| {
            format!(
                r#"version: 1
listeners:
  - {{ name: outbound, bind: "0.0.0.0:15001", mode: transparent, protocol: auto }}
sampling: {{ default: 1.0, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 4MiB }}
"#,
                ring.display()
            )
        },
        &[],
    );
    // A client inside the namespace talks to 10.77.0.1:8080; iptables sends
    // it to the agent, which proxies to the original destination.
    let t0 = Instant::now();
    let out = loop {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                n,
                bench,
                "load",
                "--url",
                "http://10.77.0.1:8080/captured",
            ])
            .args([
                "--connections",
                "2",
                "--max-requests",
                "20",
                "--duration",
                "5s",
                "--json",
            ])
            .output()
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if j["requests"] == 20 || t0.elapsed() > Duration::from_secs(5) {
            break j;
        }
        std::thread::sleep(Duration::from_millis(100)); // upstream still starting
    };
    let _ = upstream.kill();
    let _ = upstream.wait();
    assert_eq!(out["requests"], 20, "{out}\n{}", agent.log());
    assert_eq!(out["errors_total"], 0, "{out}");
    let m = agent.metrics();
    assert!(
        m.contains("tailmesh_requests_total{class=\"2xx\"} 20"),
        "{m}"
    );
    let recs = agent.records();
    let served = recs
        .iter()
        .filter(|r| r["kind"] == "record" && r["status"] == 200)
        .count();
    assert_eq!(served, 20, "trace records of the captured requests");
    assert_phases_sum(&recs);
    eprintln!("20 captured requests proxied to 10.77.0.1:8080 through the agent");
}
