//! The shipped seccomp profile (deploy/seccomp/tailmesh.json, what the
//! DaemonSet names as its Localhost profile) lets the agent run on
//! io_uring: the real agent runs under the profile (loaded by libseccomp
//! through python3-seccomp) with `--io uring` and serves. As a control,
//! the same profile without the io_uring syscalls makes `--io auto` fall
//! back to epoll, so the filter really applies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use support::*;

const PROFILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/seccomp/tailmesh.json"
);
const APPLY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/seccomp_profile.py"
);

fn wrapper(profile: &str) -> Vec<String> {
    vec![
        seccomp_python().to_string(),
        APPLY.to_string(),
        profile.to_string(),
    ]
}

fn run_under(profile: &str, io: &str) -> Agent {
    let w = wrapper(profile);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    let up = Upstream::start(&[]);
    let p = up.port;
    let agent = Agent::start_via(
        &w,
        move |port, ring| config(port, &[p], "5s", ring),
        &["--io", io],
    );
    for _ in 0..20 {
        let r = request(agent.port, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200);
    }
    drop(up);
    agent
}

#[test]
fn the_shipped_seccomp_profile_runs_the_agent_on_io_uring() {
    let profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(PROFILE).unwrap()).unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    let agent = run_under(PROFILE, "uring");
    let m = agent.metrics();
    assert!(
        m.contains("tailmesh_io_backend{backend=\"uring\"} 1"),
        "{m}"
    );
    assert!(m.contains("tailmesh_io_fallback 0"), "{m}");
}

#[test]
fn without_its_io_uring_entries_the_profile_sends_the_agent_to_epoll() {
    let mut profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(PROFILE).unwrap()).unwrap();
    for rule in profile["syscalls"].as_array_mut().unwrap() {
        let names = rule["names"].as_array_mut().unwrap();
        names.retain(|n| !n.as_str().unwrap().starts_with("io_uring"));
    }
    let dir = tempfile::tempdir().unwrap();
    let stripped = dir.path().join("no-uring.json");
    std::fs::write(&stripped, profile.to_string()).unwrap();
    let agent = run_under(stripped.to_str().unwrap(), "auto");
    let m = agent.metrics();
    assert!(
        m.contains("tailmesh_io_backend{backend=\"epoll\"} 1"),
        "{m}"
    );
    assert!(m.contains("tailmesh_io_fallback 1"), "{m}");
}
