//! Config parsing and validation tests.

use super::*;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

fn problems(yaml: &str) -> Vec<String> {
    match parse(yaml, false) {
        Err(ConfigError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
        Err(e) => vec![format!("other error: {e}")],
        Ok(_) => Vec::new(),
    }
}

#[test]
fn shipped_examples_validate() {
    let cfg = load(&examples().join("local.yaml")).unwrap_or_else(|e| panic!("local.yaml: {e}"));
    assert!(!cfg.clusters.is_empty() && !cfg.routes.is_empty());
    // DESIGN's example validates as a whole: every field it uses is
    // enforced now (a field the agent ignored would be refused instead).
    let text = std::fs::read_to_string(examples().join("design-example.yaml")).unwrap();
    let p = problems(&text);
    assert!(p.is_empty(), "{}", p.join("\n"));
    // The schema itself reads it, and JSON of the same snapshot
    // round-trips.
    let cfg: Config = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(cfg.routes[1].to[1].weight, 5);
    assert_eq!(cfg.clusters[0].lb, schema::Lb::P2cEwma);
    assert_eq!(cfg.ring.size, schema::Size(64 << 20));
    assert_eq!(cfg.sampling.keep_slower_than, Some(schema::Dur(5_000_000)));
    let json = serde_json::to_string(&cfg).unwrap();
    let back: Config = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cfg);
}

#[test]
fn every_problem_names_key_field_and_reason() {
    let yaml = r#"
version: 2
listeners:
  - { name: a, bind: "nonsense", default_route: missing }
  - { name: a, bind: "127.0.0.1:1" }
clusters:
  - name: c
    endpoints:
      - { addr: "10.0.0.1:80", weight: 0 }
      - { addr: "10.0.0.1:80" }
    health_check: { http_path: healthz, interval: 1s, timeout: 2s, rise: 0, fall: 1 }
    breaker: { consecutive_failures: 5, error_rate: 1.5, min_requests: 1, window: 10s, open_for: 30s,
               half_open_probes: 1, max_concurrent: 10, max_pending: 10 }
    retry: { attempts: 20, on: [teapot] }
routes:
  - name: r
    match: { path_prefix: api }
    to: [ { cluster: nope }, { cluster: c, subset: { version: v9 } } ]
    hash_on: "ip"
    rate_limit: { rps: 0, burst: 0 }
request_types:
  - { name: t, sample: 2 }
sampling: { default: -1, keep_above_quantile: 1 }
ring: { size: 1000 }
"#;
    let p = problems(yaml);
    let expect = [
        "(top): version: 2 is not supported",
        "listeners[a]: name: duplicate name",
        "listeners[a]: bind: \"nonsense\" is not IP:PORT",
        "listeners[a]: default_route: no route named \"missing\"",
        "clusters[c]: endpoints[0].weight: must be at least 1",
        "clusters[c]: endpoints[1].addr: 10.0.0.1:80 is listed twice",
        "clusters[c]: health_check.http_path: must start with /",
        "clusters[c]: health_check.timeout: must be shorter than the interval",
        "clusters[c]: health_check.rise/fall: must be at least 1",
        "clusters[c]: breaker.error_rate: 1.5 is not in (0, 1]",
        "clusters[c]: retry.attempts: 20 is more than 10",
        "clusters[c]: retry.on[0]: \"teapot\"",
        "routes[r]: match.path_prefix: \"api\" must start with /",
        "routes[r]: to[0].cluster: no cluster named \"nope\"",
        "routes[r]: to[1].subset: matches no endpoint of cluster \"c\"",
        "routes[r]: hash_on: \"ip\": expected header:NAME",
        "routes[r]: rate_limit.rps: 0 is not a number in (0, 1e9]",
        "routes[r]: rate_limit.burst: must be at least 1",
        "request_types[t]: sample: 2 is not between 0 and 1",
        "sampling: default: -1 is not between 0 and 1",
        "sampling: keep_above_quantile: 1 is not strictly between 0 and 1",
        "ring: size: 1000 bytes is below the 1MiB minimum",
    ];
    for e in expect {
        assert!(
            p.iter().any(|x| x.starts_with(e)),
            "missing {e:?} in:\n{}",
            p.join("\n")
        );
    }
    assert_eq!(
        p.len(),
        expect.len(),
        "unexpected extra problems:\n{}",
        p.join("\n")
    );
}

#[test]
fn policy_fields_are_checked_together() {
    let yaml = r#"
version: 1
clusters:
  - name: c
    endpoints: [ { addr: "127.0.0.1:1" } ]
    breaker: { window: 1ms, open_for: 0s, half_open_probes: 0, max_pending: 0, failure_on: [5xx, teapot] }
  - name: d
    endpoints: [ { addr: "127.0.0.1:2" } ]
    breaker: {}
routes:
  - name: r
    to: [ { cluster: c } ]
    rate_limit: { rps: 10, burst: 5, max_delay: 1s, max_keys: 10, key: "body:x" }
  - name: s
    to: [ { cluster: d } ]
    rate_limit: { rps: 10, burst: 5, max_keys: 10 }
  - name: ok
    to: [ { cluster: d } ]
    rate_limit: { rps: 100, burst: 20, smooth: true, max_delay: 250ms, key: "query:user", max_keys: 1000 }
"#;
    let p = problems(yaml);
    let expect = [
        "clusters[c]: breaker.window: must be at least 10ms",
        "clusters[c]: breaker.open_for: must be positive",
        "clusters[c]: breaker.half_open_probes: must be at least 1",
        "clusters[c]: breaker.max_pending: must be at least 1",
        "clusters[c]: breaker.failure_on: \"teapot\": expected connect_failure",
        "routes[r]: rate_limit.key: \"body:x\": unknown key kind",
        "routes[r]: rate_limit.max_delay: applies to smooth: true only",
        "routes[s]: rate_limit.max_keys: applies to a keyed limit only",
    ];
    for e in expect {
        assert!(
            p.iter().any(|x| x.starts_with(e)),
            "missing {e:?} in:\n{}",
            p.join("\n")
        );
    }
    assert_eq!(p.len(), expect.len(), "{}", p.join("\n"));
    // `breaker: {}` takes the documented defaults.
    let cfg: Config = serde_saphyr::from_str(yaml).unwrap();
    let b = cfg.clusters[1].breaker.clone().unwrap();
    assert_eq!(
        (
            b.consecutive_failures,
            b.min_requests,
            b.half_open_probes,
            b.max_concurrent,
            b.max_pending,
            b.max_connections
        ),
        (5, 20, 3, 1024, 1024, 1024)
    );
    assert_eq!(
        (b.window, b.open_for),
        (schema::Dur(10_000_000_000), schema::Dur(30_000_000_000))
    );
    assert!(
        !cfg.routes[1].rate_limit.clone().unwrap().smooth,
        "smooth defaults to off"
    );
}

#[test]
fn syntax_and_type_errors_are_located_and_named() {
    let e = parse(
        "version: 1\nclusters:\n  - name: c\n    lb: fastest\n",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("fastest") && e.contains("yaml"), "{e}");
    assert!(e.contains('4') || e.contains("line"), "no location: {e}");
    let e = parse(
        "version: 1\nlisteners:\n  - { name: a, bind: x, colour: red }\n",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("colour"), "{e}");
    let e = parse(
        "version: 1\nclusters: [ { name: c, timeouts: { connect: soon } } ]\n",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("invalid duration"), "{e}");
    let e = parse("{\"version\": 1, \"ring\": {\"size\": \"lots\"}}", true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("json") && e.contains("invalid size"), "{e}");
    let e = parse("version: [", false).unwrap_err().to_string();
    assert!(e.contains("yaml"), "{e}");
}

#[test]
fn defaults_are_filled_in() {
    let cfg = parse("version: 1\n", false).unwrap();
    assert_eq!(cfg.sampling.default, 0.01);
    assert!(cfg.sampling.keep_errors);
    assert_eq!(
        cfg.ring.path,
        std::path::PathBuf::from("/var/run/tailmesh/ring")
    );
    let cfg = parse(
        "version: 1\nclusters: [ { name: c, endpoints: [ { addr: \"127.0.0.1:1\" } ] } ]\n",
        false,
    )
    .unwrap();
    let c = &cfg.clusters[0];
    assert_eq!(
        (c.lb, c.endpoints[0].weight, c.timeouts.connect),
        (schema::Lb::RoundRobin, 1, schema::Dur(1_000_000_000))
    );
}

#[test]
fn endpoint_weights_are_accepted_by_every_lb() {
    let base = "version: 1\nclusters:\n  - name: c\n    LBendpoints: [ { addr: \"10.0.0.1:80\", weight: 3 } ]\n";
    assert!(
        problems(&base.replace("LB", "")).is_empty(),
        "round_robin is weighted"
    );
    assert!(problems(&base.replace("LB", "lb: weighted_random\n    ")).is_empty());
}

#[test]
fn match_conditions_are_checked() {
    let yaml = r#"
version: 1
clusters: [ { name: c, endpoints: [ { addr: "127.0.0.1:1" } ] } ]
routes:
  - name: r
    match: { path_regex: "(unclosed", host: "a.*.b", methods: ["GE T"], path: "nope", headers_absent: ["bad name"] }
    to: [ { cluster: c } ]
  - name: ok
    match: { path_regex: "/u/[0-9]+", host: "*.svc", methods: [GET], query: { v: "2" }, query_present: [t], headers_regex: { x-u: "u-.*" } }
    to: [ { cluster: c } ]
"#;
    let p = problems(yaml);
    let expect = [
        "routes[r]: match.path: \"nope\" must start with /",
        "routes[r]: match.host: \"a.*.b\": a wildcard is only `*.suffix`",
        "routes[r]: match.headers.bad name: is not a valid header name",
        "routes[r]: match.methods: \"GE T\" is not a method",
        "routes[r]: match.path_regex: \"(unclosed\" is not a usable regex",
    ];
    for e in expect {
        assert!(
            p.iter().any(|x| x.starts_with(e)),
            "missing {e:?} in:\n{}",
            p.join("\n")
        );
    }
    assert_eq!(p.len(), expect.len(), "{}", p.join("\n"));
}

#[test]
fn a_near_miss_name_gets_a_suggestion() {
    let yaml = r#"
version: 1
listeners:
  - { name: api, bind: "127.0.0.1:1", default_route: ordrs-route }
clusters:
  - { name: orders, endpoints: [ { addr: "127.0.0.1:2" } ] }
  - { name: payments, endpoints: [ { addr: "127.0.0.1:3" } ] }
routes:
  - { name: orders-route, to: [ { cluster: ordrs } ], mirror: { cluster: paymnts } }
  - { name: other, to: [ { cluster: zzzzzz } ] }
"#;
    let p = problems(yaml);
    let has = |s: &str| p.iter().any(|x| x.contains(s));
    assert!(
        has(
            r#"routes[orders-route]: to[0].cluster: no cluster named "ordrs" (did you mean "orders"?)"#
        ),
        "{p:?}"
    );
    assert!(has(r#"(did you mean "payments"?)"#), "{p:?}");
    assert!(
        has(r#"default_route: no route named "ordrs-route" (did you mean "orders-route"?)"#),
        "{p:?}"
    );
    // Nothing near: no suggestion.
    assert!(
        has(r#"no cluster named "zzzzzz""#) && !has(r#""zzzzzz" (did"#),
        "{p:?}"
    );
}

#[test]
fn tls_mistakes_name_their_key_and_field() {
    let yaml = r#"
version: 1
identity: { cert: a.crt, key: a.key, trust_bundle: b.pem, trust_domain: "Bad Domain" }
listeners:
  - name: mesh
    bind: "127.0.0.1:15008"
    mode: mesh
    tls: { cert: x, key: y }
  - name: web
    bind: "127.0.0.1:8443"
    tls: { cert: x, key: y, require_client_cert: true }
    authz:
      - { action: allow, from: ["spiffe://td/ns/*"] }
      - { action: deny, from: [], to: { route: rr, port: 0 } }
clusters:
  - name: m
    tls: { mode: mesh, identity: "*", ca: ca.pem }
  - name: s
    tls: { mode: simple, identity: "spiffe://td", cert: c.pem, sni: "bad name!" }
routes:
  - { name: r, to: [ { cluster: m } ] }
"#;
    let p = problems(yaml).join("\n");
    for want in [
        "identity: trust_domain: \"Bad Domain\" is not a trust domain name",
        "listeners[mesh]: tls: a mesh listener uses the node identity",
        "listeners[web]: tls.require_client_cert: needs `client_ca`",
        "listeners[web]: authz[0]: authz needs client identities",
        "listeners[web]: authz[0].from: `spiffe://td/ns/*` is not a SPIFFE ID",
        "listeners[web]: authz[1].from: must list at least one identity",
        "listeners[web]: authz[1].to.route: no route named \"rr\" (did you mean \"r\"?)",
        "listeners[web]: authz[1].to.port: must be 1-65535",
        "clusters[m]: tls.identity: `*` would accept any server",
        "clusters[m]: tls.ca: only for mode simple",
        "clusters[s]: tls.identity: only for mode mesh",
        "clusters[s]: tls.cert: `cert` and `key` go together",
        "clusters[s]: tls.sni: \"bad name!\" is not a DNS name or IP address",
    ] {
        assert!(p.contains(want), "missing {want:?} in:\n{p}");
    }
    // A mesh listener or cluster without an identity.
    let yaml = r#"
version: 1
listeners:
  - { name: mesh, bind: "127.0.0.1:15008", mode: mesh }
clusters:
  - name: m
    tls: { mode: mesh, identity: "spiffe://td" }
"#;
    let p = problems(yaml).join("\n");
    assert!(
        p.contains("listeners[mesh]: mode: a mesh listener needs the top-level `identity`"),
        "{p}"
    );
    assert!(
        p.contains("clusters[m]: tls.mode: mesh needs the top-level `identity`"),
        "{p}"
    );
}

#[test]
fn a_mesh_listener_binds_the_mesh_port_by_default_and_others_need_bind() {
    let yaml = r#"
version: 1
identity: { cert: c, key: k, trust_bundle: b, trust_domain: td }
listeners:
  - { name: mesh, mode: mesh }
  - { name: api }
"#;
    let p = problems(yaml).join("\n");
    assert!(p.contains("listeners[api]: bind: required: IP:PORT"), "{p}");
    assert!(!p.contains("listeners[mesh]"), "{p}");
    let cfg = parse_unvalidated(yaml, false).unwrap();
    assert_eq!(cfg.listeners[0].bind, "0.0.0.0:15008");
}
