//! The Prometheus and Grafana files in deploy/ against the real Debian
//! `prometheus` (./test.sh installs it): the alert rules and the scrape
//! config pass `promtool check`, the rules' unit tests pass, a live scrape
//! of a real agent passes `promtool check metrics`, and a real Prometheus
//! scraping a real agent under load returns at least one series for every
//! query of every panel of deploy/grafana/tailmesh-node.json (variables
//! substituted) and for both dashboard variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn tool(name: &str) -> PathBuf {
    let p = PathBuf::from("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: ./test.sh installs the Debian package prometheus",
        p.display()
    );
    p
}

fn ok(out: std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn alert_rules_and_the_scrape_config_check_and_the_rule_tests_pass() {
    let dir = deploy().join("prometheus");
    let promtool = tool("promtool");
    let run = |args: &[&str]| {
        Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let said = ok(run(&["check", "rules", "alerts.yml"]));
    assert!(said.contains("SUCCESS: 9 rules found"), "{said}");
    ok(run(&["test", "rules", "alerts_test.yml"]));
    ok(run(&["check", "config", "prometheus.yml"]));
    // The checks can fail: a rule with a broken expression is refused.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.yml");
    let text = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    std::fs::write(&broken, text.replace("== 1", "== == 1")).unwrap();
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: tailmesh\n    static_configs: [ {{ targets: [\"{target}\"] }} ]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("spawn prometheus");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The result vector of an instant query (panics on an API error).
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let out = Command::new("curl")
            .args(["-sfG", "--max-time", "5", "--data-urlencode"])
            .arg(format!("query={q}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .expect("curl");
        if !out.status.success() {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    fn label_values(&self, label: &str, matcher: &str) -> Vec<String> {
        let out = Command::new("curl")
            .args(["-sfG", "--max-time", "5", "--data-urlencode"])
            .arg(format!("match[]={matcher}"))
            .arg(format!(
                "http://127.0.0.1:{}/api/v1/label/{label}/values",
                self.port
            ))
            .output()
            .expect("curl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent_config(port: u16, up: u16, ring: &Path) -> String {
    format!(
        r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
clusters:
  - name: c
    endpoints: [ {{ addr: "127.0.0.1:{up}" }} ]
    breaker: {{}}
    outlier: {{ consecutive_5xx: 5 }}
    retry: {{ attempts: 1, on: ["503"] }}
routes:
  - {{ name: limited, match: {{ path_prefix: /limited }}, to: [ {{ cluster: c }} ], rate_limit: {{ rps: 20, burst: 5 }} }}
  - {{ name: r, to: [ {{ cluster: c }} ] }}
sampling: {{ default: 0.1, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 4MiB }}
"#,
        ring.display()
    )
}

#[test]
fn every_dashboard_query_returns_series_from_a_real_prometheus_scraping_a_real_agent() {
    let up = Upstream::start(&[]);
    let upp = up.port;
    let agent = Agent::start(move |port, ring| agent_config(port, upp, ring), &[]);
    let target = format!("127.0.0.1:{}", agent.admin);

    // Steady load on both routes (bounded in time and count).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, port) = (stop.clone(), agent.port);
        std::thread::spawn(move || {
            let mut c = connect(port);
            let mut carry = Vec::new();
            for i in 0..200_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let path = if i % 4 == 0 { "/limited/x" } else { "/x" };
                c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                    .unwrap();
                read_response(&mut c, &mut carry).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // A live scrape is valid exposition.
    std::thread::sleep(Duration::from_millis(500));
    let mut check = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(agent.metrics().as_bytes())
        .unwrap();
    ok(check.wait_with_output().unwrap());

    let prom = Prometheus::start(&target);
    let t0 = Instant::now();
    loop {
        let n = prom.query("count_over_time(tailmesh_workers[1m])");
        if n.first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse::<u32>().ok())
            >= Some(8)
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "prometheus did not scrape 8 samples"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/tailmesh-node.json")).unwrap(),
    )
    .unwrap();
    let subst = |q: &str| {
        q.replace("$node", &target.replace('.', "\\\\."))
            .replace("$route", ".+")
            .replace("$__rate_interval", "5s")
    };
    // The variables: the agent is a node, both routes are routes.
    assert!(
        prom.label_values("instance", "tailmesh_workers")
            .contains(&target)
    );
    let routes = prom.label_values("route", "tailmesh_route_requests_total");
    assert!(
        routes.contains(&"r".to_string()) && routes.contains(&"limited".to_string()),
        "{routes:?}"
    );
    let mut empty = Vec::new();
    let mut queries = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let q = subst(t["expr"].as_str().unwrap());
            queries += 1;
            if prom.query(&q).is_empty() {
                empty.push(format!("{}: {q}", panel["title"]));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    eprintln!("{queries} dashboard queries evaluated against a real Prometheus");
    assert!(queries >= 20);
    assert!(
        empty.is_empty(),
        "queries with no series:\n{}",
        empty.join("\n")
    );
}
