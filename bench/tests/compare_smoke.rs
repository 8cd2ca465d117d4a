//! A short `tailmesh-bench compare` over direct, nginx-origin, haproxy (http
//! and tcp) and nginx with the real Debian peers: every row has figures,
//! no errors, and the L4 bulk rows are present.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tailmesh-bench");

#[test]
fn compare_smoke_has_figures_for_every_target() {
    let out = Command::new(BIN)
        .args([
            "compare",
            "--seconds",
            "1",
            "--rounds",
            "1",
            "--connections",
            "16",
            "--bulk-bytes",
            "16MiB",
            "--targets",
            "direct,nginx-origin,agent-uring,agent-epoll,haproxy,haproxy-tcp,nginx",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = j["targets"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "direct",
            "nginx-origin",
            "agent-uring",
            "agent-epoll",
            "haproxy",
            "haproxy-tcp",
            "nginx"
        ],
        "a proxy missing?"
    );
    for r in rows {
        let name = &r["target"];
        assert!(
            r["rps"].as_f64().unwrap() > 100.0,
            "{name}: rps {}",
            r["rps"]
        );
        assert!(
            r["cpu_us_per_req"].as_f64().unwrap() > 0.0,
            "{name}: cpu {}",
            r["cpu_us_per_req"]
        );
        assert_eq!(r["errors"], 0, "{name}: errors");
        for k in ["closed_latency_ns", "open_latency_ns"] {
            assert!(
                r[k]["p50"].as_u64().unwrap() > 0
                    && r[k]["p99"].as_u64().unwrap() >= r[k]["p50"].as_u64().unwrap(),
                "{name} {k}"
            );
        }
    }
    let hap = rows.iter().find(|r| r["target"] == "haproxy").unwrap();
    assert!((hap["cpu_vs_haproxy"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert!(hap["cpu_vs_nginx"].as_f64().unwrap() > 0.0);
    for t in ["direct", "haproxy"] {
        let b = &rows.iter().find(|r| r["target"] == t).unwrap()["bulk"];
        assert!(
            b["cpu_s_per_gb"].as_f64().unwrap() > 0.0 && b["gb_per_s"].as_f64().unwrap() > 0.0,
            "{t} bulk {b}"
        );
    }
    assert!(j["machine"]["cores"].as_u64().unwrap() >= 1);
    let skipped = j["skipped"].as_array().unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
}
