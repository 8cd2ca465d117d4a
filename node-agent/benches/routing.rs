//! Routing decision costs: a pick (arm, then endpoint) for every `lb`, a
//! two-arm route split by weighted rendezvous on a sticky key, picks with
//! an endpoint out of rotation and with locality tiers, and route
//! matching against 10 and 1,000 routes (indexed by host), and building a
//! 1,000-route, 200-cluster snapshot from etcd keys.
//! Run: `cargo bench -p node-agent --bench routing`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failure report

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use node_agent::snapshot::{RequestView, Snapshot};

fn snapshot(lb: &str, arms: &str, extra: &str) -> Snapshot {
    let yaml = format!(
        r#"
version: 1
clusters:
  - name: c
    lb: {lb}
    {extra}
    endpoints:
      - {{ addr: "10.0.0.1:80", weight: 3, labels: {{ v: "1", zone: a, region: r }} }}
      - {{ addr: "10.0.0.2:80", weight: 1, labels: {{ v: "1", zone: a, region: r }} }}
      - {{ addr: "10.0.0.3:80", weight: 2, labels: {{ v: "1", zone: b, region: r }} }}
      - {{ addr: "10.0.0.4:80", weight: 1, labels: {{ v: "2", zone: a, region: r }} }}
      - {{ addr: "10.0.0.5:80", weight: 1, labels: {{ v: "2", zone: b, region: r }} }}
node: {{ zone: a, region: r }}
routes:
  - name: r
    to: {arms}
    hash_on: "header:x-user"
"#
    );
    let cfg = node_agent::config::parse(&yaml, false).unwrap();
    let mut n = 0;
    Snapshot::build(cfg, 1, |_, _| {
        n += 1;
        Ok(n)
    })
    .unwrap()
}

fn user(n: &str) -> Option<&'static [u8]> {
    (n == "x-user").then_some(&b"user-4711"[..])
}

fn no_header(_: &str) -> Option<&'static [u8]> {
    None
}

fn picks(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    let client: IpAddr = [10, 1, 0, 1].into();
    let one = "[ { cluster: c } ]";
    let two = r#"[ { cluster: c, subset: { v: "1" }, weight: 95 }, { cluster: c, subset: { v: "2" }, weight: 5 } ]"#;
    let out = "outlier: {}";
    let local = "locality: { prefer: zone }";
    for (name, lb, arms, sticky, extra, eject) in [
        ("round_robin", "round_robin", one, false, "", false),
        ("weighted_random", "weighted_random", one, false, "", false),
        ("ring_hash", "ring_hash", one, true, "", false),
        ("p2c_ewma", "p2c_ewma", one, false, "", false),
        ("score_weighted", "score_weighted", one, false, "", false),
        (
            "two_arms_sticky_round_robin",
            "round_robin",
            two,
            true,
            "",
            false,
        ),
        (
            "round_robin_one_ejected",
            "round_robin",
            one,
            false,
            out,
            true,
        ),
        ("p2c_ewma_one_ejected", "p2c_ewma", one, false, out, true),
        (
            "round_robin_locality",
            "round_robin",
            one,
            false,
            local,
            false,
        ),
        (
            "round_robin_locality_one_out",
            "round_robin",
            one,
            false,
            local,
            true,
        ),
    ] {
        let snap = snapshot(lb, arms, extra);
        let live = &snap.clusters[0].live;
        for e in 0..5 {
            // Latency samples, so p2c compares real costs.
            live.endpoints[e].begin();
            let rtt = 1_000_000 + e as u64 * 100_000;
            let _ = live.end(e, 1, rtt, node_agent::snapshot::live::Outcome::Success);
        }
        if eject {
            live.set_healthy(0, false);
        }
        let header: &'static dyn Fn(&str) -> Option<&'static [u8]> =
            if sticky { &user } else { &no_header };
        let req = RequestView {
            host: None,
            path: "/",
            method: "GET",
            header,
        };
        let mut rr = Vec::new();
        let mut h = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
                black_box(snap.pick(0, &req, black_box(h), &mut rr, client, 1))
            })
        });
    }
    g.finish();
}

/// A table of `n` routes, one per host, each also on a path prefix.
fn table(n: usize) -> Snapshot {
    let mut yaml = String::from(
        "version: 1\nclusters: [ { name: c, endpoints: [ { addr: \"10.0.0.1:80\" } ] } ]\nroutes:\n",
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "  - {{ name: r{i}, match: {{ host: svc{i}.local, path_prefix: /api }}, to: [ {{ cluster: c }} ] }}\n"
        ));
    }
    let cfg = node_agent::config::parse(&yaml, false).unwrap();
    let mut k = 0;
    Snapshot::build(cfg, 1, |_, _| {
        k += 1;
        Ok(k)
    })
    .unwrap()
}

fn matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_match");
    for n in [10usize, 1000] {
        let snap = table(n);
        // A realistic mix: each request for one of the hosts, in turn.
        let hosts: Vec<String> = (0..n).map(|i| format!("svc{i}.local:8080")).collect();
        let mut i = 0;
        g.bench_function(format!("{n}_routes"), |b| {
            b.iter(|| {
                i = (i + 7) % n;
                let none = |_: &str| None;
                let req = RequestView {
                    host: Some(hosts[i].as_bytes()),
                    path: "/api/orders/42",
                    method: "GET",
                    header: &none,
                };
                black_box(snap.route(0, &req))
            })
        });
    }
    g.finish();
}

/// A config of 200 clusters (5 endpoints each) and 1,000 routes (host,
/// prefix and header matches, some regexes, weighted arms), as etcd keys.
fn big_keys() -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut kvs = std::collections::BTreeMap::new();
    for c in 0..200 {
        let eps: Vec<String> = (0..5)
            .map(|e| {
                format!(
                    r#"{{"addr":"10.{}.{}.{e}:80","labels":{{"v":"{}"}}}}"#,
                    c / 250,
                    c % 250,
                    e % 2
                )
            })
            .collect();
        kvs.insert(
            format!("/p/clusters/c{c}"),
            format!(
                r#"{{"lb":"p2c_ewma","endpoints":[{}],"breaker":{{}}}}"#,
                eps.join(",")
            )
            .into_bytes(),
        );
    }
    for r in 0..1000 {
        let m = if r % 10 == 0 {
            format!(r#"{{"path_regex":"^/r{r}/[0-9]+$"}}"#)
        } else {
            format!(r#"{{"host":"svc{r}.local","path_prefix":"/api","headers":{{"x-t":"v{r}"}}}}"#)
        };
        let value = format!(
            r#"{{"match":{m},"to":[{{"cluster":"c{}","subset":{{"v":"0"}},"weight":90}},{{"cluster":"c{}","weight":10}}],"rate_limit":{{"rps":1000,"burst":100}}}}"#,
            r % 200,
            (r + 1) % 200
        );
        kvs.insert(format!("/p/routes/r{r:04}"), value.into_bytes());
    }
    kvs
}

/// Building and validating a 1,000-route, 200-cluster snapshot (target:
/// 20 ms), from etcd keys through the whole pipeline.
fn building(c: &mut Criterion) {
    let kvs = big_keys();
    let mut g = c.benchmark_group("snapshot_build");
    g.sample_size(20);
    g.bench_function("1000_routes_200_clusters_from_etcd_keys", |b| {
        b.iter(|| {
            let a = node_agent::etcd::build("/p/", &kvs, None).unwrap();
            let mut n = 0;
            black_box(
                Snapshot::build(a.config, 2, |_, _| {
                    n += 1;
                    Ok(n)
                })
                .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = picks, matching, building
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
