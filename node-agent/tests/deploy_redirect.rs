//! `deploy/iptables/tailmesh-redirect.sh` end to end, as root, with network
//! namespaces standing in for a node and two pods (veth pairs, the node
//! forwarding between them). The agent runs in the node namespace with a
//! transparent listener; the script installs the redirect rules there.
//! The client pod's requests to the server pod's address are then proxied
//! (the server sees the agent; routed, rate-limited and recorded by the
//! agent); `uninstall` leaves
//! the rules exactly as before (`iptables-save` diffed) and the client
//! goes direct again. Needs root, `ip`, `iptables` and `curl`
//! (./test.sh installs them; CI runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn out(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{} is required ({e}); ./test.sh installs it", args[0]))
}

fn run(args: &[&str]) -> String {
    let o = out(args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The namespaces, removed on drop (their veths go with them).
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A veth pair between namespace `a` (address `a_ip`) and `b` (`b_ip`);
/// `a` may be "" for the test's own namespace.
fn link(a: &str, a_if: &str, a_ip: &str, b: &str, b_if: &str, b_ip: &str) {
    let mut add = vec!["ip"];
    if !a.is_empty() {
        add.extend(["-n", a]);
    }
    add.extend([
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
    ]);
    run(&add);
    let ip = |ns: &str, args: &[&str]| {
        let mut v = vec!["ip"];
        if !ns.is_empty() {
            v.extend(["-n", ns]);
        }
        v.extend(args);
        run(&v);
    };
    ip(a, &["addr", "add", a_ip, "dev", a_if]);
    ip(a, &["link", "set", a_if, "up"]);
    ip(b, &["addr", "add", b_ip, "dev", b_if]);
    ip(b, &["link", "set", b_if, "up"]);
}

fn script() -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/iptables/tailmesh-redirect.sh");
    p.to_str().unwrap().to_string()
}

/// HTTP status of `GET url` from the client pod.
fn curl(client: &str, url: &str) -> String {
    let o = out(&[
        "ip",
        "netns",
        "exec",
        client,
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-m",
        "5",
        "-w",
        "%{http_code}",
        url,
    ]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_redirect_script_sends_pod_traffic_through_the_agent_and_uninstalls_cleanly() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (network namespaces and iptables); CI runs ./test.sh as root"
    );
    let id = std::process::id() % 10_000;
    let (node, client, server) = (
        format!("tmnode{id}"),
        format!("tmcli{id}"),
        format!("tmsrv{id}"),
    );
    let ns = Namespaces(vec![node.clone(), client.clone(), server.clone()]);
    for n in &ns.0 {
        let _ = Command::new("ip").args(["netns", "del", n]).status();
        run(&["ip", "netns", "add", n]);
        run(&["ip", "-n", n, "link", "set", "lo", "up"]);
    }
    // The test reaches the node (admin) over 10.80.0.0/30; pods are
    // 10.79.0.0/16, each behind its own veth with the node as gateway.
    link(
        "",
        &format!("tmr{id}"),
        "10.80.0.1/30",
        &node,
        "eth-root",
        "10.80.0.2/30",
    );
    link(
        &node,
        "veth-cli",
        "10.79.1.1/24",
        &client,
        "eth0",
        "10.79.1.2/24",
    );
    link(
        &node,
        "veth-srv",
        "10.79.2.1/24",
        &server,
        "eth0",
        "10.79.2.2/24",
    );
    run(&[
        "ip",
        "-n",
        &client,
        "route",
        "add",
        "default",
        "via",
        "10.79.1.1",
    ]);
    run(&[
        "ip",
        "-n",
        &server,
        "route",
        "add",
        "default",
        "via",
        "10.79.2.1",
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);

    let bench = sibling("tailmesh-bench");
    let _upstream = Killed(
        Command::new("ip")
            .args(["netns", "exec", &server])
            .arg(&bench)
            .args(["upstream", "--listen", "10.79.2.2:8080", "--workers", "1"])
            .args(["--name", "server", "--exit-after", "60s"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Python's own HTTP server answers with the address it sees the
    // request come from: the agent's (the node's) when proxied.
    let echo = r#"
import http.server as h

class E(h.BaseHTTPRequestHandler):
    def do_GET(self):
        b = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("content-length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def log_message(self, *a):
        pass

h.HTTPServer(("10.79.2.2", 8081), E).serve_forever()
"#;
    // (`ip netns exec` execs python itself: killing the child kills it.)
    let _peer_echo = Killed(
        Command::new("ip")
            .args(["netns", "exec", &server, "python3", "-c", echo])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let seen_from = |client: &str| {
        let o = out(&[
            "ip",
            "netns",
            "exec",
            client,
            "curl",
            "-s",
            "-m",
            "5",
            "http://10.79.2.2:8081/",
        ]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let wrapper = ["ip", "netns", "exec", node.as_str()];
    let agent = Agent::start_full(
        &wrapper,
        "10.80.0.2",
        |_, ring| {
            format!(
                r#"version: 1
listeners:
  - {{ name: outbound, bind: "0.0.0.0:15001", mode: transparent, protocol: http }}
clusters:
  - {{ name: server, endpoints: [ {{ addr: "10.79.2.2:8080" }} ] }}
routes:
  - {{ name: limited, match: {{ path_prefix: /limited }}, to: [ {{ cluster: server }} ], rate_limit: {{ rps: 0.01, burst: 2 }} }}
sampling: {{ default: 1.0, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 4MiB }}
"#,
                ring.display()
            )
        },
        &[],
    );
    // Direct first (no rules yet): the server answers, the agent sees
    // nothing.
    let t0 = Instant::now();
    while curl(&client, "http://10.79.2.2:8080/warm") != "200" {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "server not reachable"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    while seen_from(&client) != "10.79.1.2" {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the echo server sees the client"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let proxied = || agent.metric("tailmesh_requests_total{class=\"2xx\"} ");
    assert_eq!(proxied(), 0);

    let save = || run(&["ip", "netns", "exec", &node, "iptables-save", "-t", "nat"]);
    let strip = |s: String| -> String {
        // Counters and the generation comment differ between dumps.
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = strip(save());
    let sh = script();
    let install = [
        "ip",
        "netns",
        "exec",
        &node,
        "sh",
        &sh,
        "install",
        "--pod-cidr",
        "10.79.0.0/16",
        "--exclude-port",
        "22",
    ];
    run(&install);
    run(&install); // idempotent: still one set of rules
    let status = run(&["ip", "netns", "exec", &node, "sh", &sh, "status"]);
    assert_eq!(
        status.matches("-j REDIRECT --to-ports 15001").count(),
        1,
        "{status}"
    );
    assert_eq!(
        save().matches("-j TAILMESH_PREROUTING").count(),
        1,
        "one jump after two installs"
    );

    // Through the agent now: the server sees the agent (the node's
    // address on the server's link), not the client pod...
    assert_eq!(seen_from(&client), "10.79.2.1");
    // ... passthrough to the original destination ...
    for _ in 0..4 {
        assert_eq!(curl(&client, "http://10.79.2.2:8080/x"), "200");
    }
    assert_eq!(proxied(), 5);
    // ... and a route with a rate limit applies.
    let limited: Vec<String> = (0..3)
        .map(|_| curl(&client, "http://10.79.2.2:8080/limited"))
        .collect();
    assert_eq!(limited, ["200", "200", "429"]);
    let recs = agent.records_at_least(8);
    let routed = recs
        .iter()
        .filter(|r| r["kind"] == "record" && r["route"] == "limited")
        .count();
    assert_eq!(routed, 3);
    assert!(
        recs.iter()
            .any(|r| r["route"] == "limited" && r["endpoint"] == "10.79.2.2:8080"),
        "a record names the original destination"
    );

    // Uninstall: every rule gone, the client goes direct.
    run(&["ip", "netns", "exec", &node, "sh", &sh, "uninstall"]);
    assert_eq!(strip(save()), before);
    let st = out(&["ip", "netns", "exec", &node, "sh", &sh, "status"]);
    assert_eq!(st.status.code(), Some(1));
    assert_eq!(curl(&client, "http://10.79.2.2:8080/x"), "200");
    assert_eq!(seen_from(&client), "10.79.1.2");
    assert_eq!(proxied(), 7, "the agent saw no more requests");
    drop(agent);
    drop(ns);
}

/// A child process killed (and reaped) when dropped, even on a panic.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
