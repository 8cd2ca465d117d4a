//! Config reloads from the file, end to end (both drivers via ./test.sh):
//! a changed file is applied within a second without dropping a kept-alive
//! client connection, a broken one is rejected while the old config keeps
//! serving, a ring change is refused (it needs a restart), SIGHUP applies
//! the file again, and a rate limit's bucket survives a reload that does
//! not touch it. Both outcomes are on the ring and in metrics. Listeners
//! are added, moved and removed by a reload without dropping connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::*;

fn reload_config(port: u16, up: u16, ring: &std::path::Path, extra_route: &str) -> String {
    format!(
        r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
clusters:
  - {{ name: c, endpoints: [ {{ addr: "127.0.0.1:{up}" }} ] }}
routes:
  - {{ name: limited, match: {{ path_prefix: /limited }}, to: [ {{ cluster: c }} ], rate_limit: {{ rps: 0.01, burst: 1 }} }}
{extra_route}  - {{ name: r, to: [ {{ cluster: c }} ] }}
ring: {{ path: "{}", size: 4MiB }}
"#,
        ring.display()
    )
}

/// Replaces the agent's config file the way editors and ConfigMaps do:
/// a new file renamed over the old one.
fn replace(agent: &Agent, text: &str) {
    let dir = agent.dir.path();
    let tmp = dir.join(".agent.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("agent.yaml")).unwrap();
}

fn generation(agent: &Agent) -> u64 {
    agent.metric("tailmesh_config_generation ")
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(2), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_changed_file_is_applied_without_dropping_connections_and_a_bad_one_is_rejected() {
    let a = Upstream::start(&["--name", "a"]);
    let b = Upstream::start(&["--name", "b"]);
    let (pa, pb) = (a.port, b.port);
    let agent = Agent::start(move |port, ring| reload_config(port, pa, ring, ""), &[]);
    let port = agent.port;
    let ring = agent.ring();
    let mut c = connect(port);
    let mut carry = Vec::new();
    let mut get = |path: &str| {
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut c, &mut carry).unwrap();
        (r.status, r.header("x-upstream").unwrap_or_default())
    };
    assert_eq!(get("/x"), (200, "a".into()));
    assert_eq!(get("/limited").0, 200);
    assert_eq!(get("/limited").0, 429, "the bucket is empty now");
    assert_eq!(generation(&agent), 1);

    // Cluster c now points at b, and a route is added before r.
    let extra = "  - { name: added, match: { path_prefix: /added }, to: [ { cluster: c } ] }\n";
    let port_b = pb;
    replace(&agent, &reload_config(port, port_b, &ring, extra));
    wait_for("generation 2", || generation(&agent) == 2);
    // The same client connection goes on, now to b.
    assert_eq!(get("/x"), (200, "b".into()));
    assert_eq!(get("/added"), (200, "b".into()));
    // The rate limit was not touched: its bucket carried over, still empty.
    assert_eq!(get("/limited").0, 429);
    assert_eq!(agent.metric("tailmesh_config_reloads_total "), 1);

    // A broken file is rejected; generation 2 keeps serving.
    replace(
        &agent,
        "version: 1\nclusters: [ { name: c, endpoints: [ { addr: nonsense } ] } ]\n",
    );
    wait_for("a rejection", || {
        agent.metric("tailmesh_config_rejected_total ") == 1
    });
    assert_eq!(generation(&agent), 2);
    assert_eq!(get("/x"), (200, "b".into()));
    assert!(
        agent.log().contains("rejected, generation 2 keeps serving"),
        "{}",
        agent.log()
    );

    // A ring change needs a restart: refused.
    let moved = reload_config(port, port_b, &ring, extra).replace("size: 4MiB", "size: 8MiB");
    replace(&agent, &moved);
    wait_for("a second rejection", || {
        agent.metric("tailmesh_config_rejected_total ") == 2
    });
    assert!(agent.log().contains("needs a restart"), "{}", agent.log());
    // The same refused text again (an editor's second write, or one burst
    // of events the debounce split in two) is not rejected twice.
    replace(&agent, &moved);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.metric("tailmesh_config_rejected_total "), 2);
    assert_eq!(get("/x"), (200, "b".into()));

    // The good file back: the text generation 2 runs, so no new
    // generation. SIGHUP applies it again anyway.
    replace(&agent, &reload_config(port, port_b, &ring, extra));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(generation(&agent), 2);
    let pid = rustix::process::Pid::from_child(&agent.child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    wait_for("generation 3", || generation(&agent) == 3);
    assert_eq!(get("/x"), (200, "b".into()));

    // Applied and rejected configs are on the timeline.
    let recs = agent.records();
    let events: Vec<(String, u64)> = recs
        .iter()
        .filter(|r| r["kind"] == "event")
        .filter(|r| r["event"] == "config_applied" || r["event"] == "config_rejected")
        .map(|r| {
            (
                r["event"].as_str().unwrap().to_string(),
                r["generation"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [
        ("config_applied", 1),
        ("config_applied", 2),
        ("config_rejected", 2),
        ("config_rejected", 2),
        ("config_applied", 3),
    ]
    .iter()
    .map(|(e, g)| (e.to_string(), *g))
    .collect();
    assert_eq!(events, want);
}

fn listeners_config(ring: &std::path::Path, up: u16, listeners: &[(&str, u16)]) -> String {
    let ls: Vec<String> = listeners
        .iter()
        .map(|(n, p)| {
            format!(
                r#"  - {{ name: {n}, bind: "127.0.0.1:{p}", protocol: http, default_route: r }}"#
            )
        })
        .collect();
    format!(
        "version: 1\nlisteners:\n{}\nclusters:\n  - {{ name: c, endpoints: [ {{ addr: \"127.0.0.1:{up}\" }} ] }}\nroutes:\n  - {{ name: r, to: [ {{ cluster: c }} ] }}\nring: {{ path: \"{}\", size: 4MiB }}\n",
        ls.join("\n"),
        ring.display()
    )
}

#[test]
fn listeners_are_added_moved_and_removed_by_a_reload_without_dropping_connections() {
    let up = Upstream::start(&["--name", "a"]);
    let upp = up.port;
    let (p2, p3) = (free_port(), free_port());
    let agent = Agent::start(
        move |port, ring| listeners_config(ring, upp, &[("api", port)]),
        &["--workers", "2"],
    );
    let (p1, ring) = (agent.port, agent.ring());
    let keep = |port: u16| {
        let c = connect(port);
        (c, Vec::new())
    };
    let ask = |(c, carry): &mut (std::net::TcpStream, Vec<u8>)| -> u16 {
        c.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        read_response(c, carry).unwrap().status
    };
    let mut c1 = keep(p1);
    assert_eq!(ask(&mut c1), 200);

    // Added: `extra` on p2 accepts on every worker.
    replace(
        &agent,
        &listeners_config(&ring, upp, &[("api", p1), ("extra", p2)]),
    );
    wait_for("generation 2", || generation(&agent) == 2);
    wait_for("extra accepting", || {
        try_request(p2, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").is_ok()
    });
    for _ in 0..8 {
        assert_eq!(get_status(p2), 200);
    }
    assert_eq!(ask(&mut c1), 200, "api's connection is untouched");

    // Moved: api goes to p3; its open connection keeps working, p1 stops
    // accepting.
    let mut c2 = keep(p2);
    assert_eq!(ask(&mut c2), 200);
    replace(
        &agent,
        &listeners_config(&ring, upp, &[("api", p3), ("extra", p2)]),
    );
    wait_for("generation 3", || generation(&agent) == 3);
    wait_for("p1 closed", || {
        std::net::TcpStream::connect(("127.0.0.1", p1)).is_err()
    });
    assert_eq!(get_status(p3), 200);
    assert_eq!(ask(&mut c1), 200, "a moved listener's connection stays");
    assert_eq!(ask(&mut c2), 200);

    // Removed while a request is in flight on it: the request completes,
    // then the connection closes; p2 stops accepting.
    faults(upp, r#"{"latency":"600ms"}"#);
    c2.0.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    replace(&agent, &listeners_config(&ring, upp, &[("api", p3)]));
    wait_for("generation 4", || generation(&agent) == 4);
    assert_eq!(read_response(&mut c2.0, &mut c2.1).unwrap().status, 200);
    faults(upp, "{}");
    let mut rest = Vec::new();
    c2.0.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let n = std::io::Read::read_to_end(&mut c2.0, &mut rest);
    assert!(
        n.is_ok() && rest.is_empty(),
        "closed after its request: {n:?} {rest:?}"
    );
    wait_for("p2 closed", || {
        std::net::TcpStream::connect(("127.0.0.1", p2)).is_err()
    });
    assert_eq!(ask(&mut c1), 200);

    // A listener that cannot be bound is rejected; the config serves.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tp = taken.local_addr().unwrap().port();
    replace(
        &agent,
        &listeners_config(&ring, upp, &[("api", p3), ("busy", tp)]),
    );
    wait_for("a rejection", || {
        agent.metric("tailmesh_config_rejected_total ") == 1
    });
    assert!(
        agent.log().contains("listeners[busy]: binding"),
        "{}",
        agent.log()
    );
    assert_eq!(generation(&agent), 4);
    assert_eq!(get_status(p3), 200);
}

fn get_status(port: u16) -> u16 {
    request(port, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n").status
}
