//! Snapshot unit tests: routing, picks, hash_on stickiness, config refusals.

use super::*;

fn snap(yaml: &str) -> Snapshot {
    let cfg = crate::config::parse(yaml, false).unwrap();
    let mut next = 0u16;
    Snapshot::build(cfg, 1, |_, _| {
        next += 1;
        Ok(next)
    })
    .unwrap()
}

const CFG: &str = r#"
version: 1
listeners:
  - { name: api, bind: "127.0.0.1:18000", protocol: http, default_route: fallback }
clusters:
  - name: a
    endpoints:
      - { addr: "127.0.0.1:1", labels: { version: v1 } }
      - { addr: "127.0.0.1:2", labels: { version: v1 } }
      - { addr: "127.0.0.1:3", labels: { version: v2 } }
  - name: b
    endpoints: [ { addr: "127.0.0.1:4" } ]
routes:
  - name: orders
    match: { host: orders.svc, path_prefix: /api }
    to:
      - { cluster: a, subset: { version: v1 }, weight: 90 }
      - { cluster: a, subset: { version: v2 }, weight: 10 }
    hash_on: "header:x-user-id"
  - name: canary
    match: { headers: { x-canary: "true" } }
    to: [ { cluster: b } ]
  - name: fallback
    match: { path_prefix: /nothing-matches-this }
    to: [ { cluster: b } ]
request_types:
  - { name: market, match: { headers: { x-order-type: market } }, sample: 1.0 }
"#;

fn view<'a>(
    host: Option<&'a [u8]>,
    path: &'a str,
    header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
) -> RequestView<'a> {
    RequestView {
        host,
        path,
        method: "GET",
        header,
    }
}

#[test]
fn host_path_header_and_default_routes() {
    let s = snap(CFG);
    let none = |_: &str| None;
    assert_eq!(
        s.route(0, &view(Some(b"Orders.SVC:8080"), "/api/x", &none)),
        Some(0)
    );
    assert_eq!(
        s.route(0, &view(Some(b"orders.svc"), "/other", &none)),
        Some(2)
    );
    let canary = |n: &str| (n == "x-canary").then_some(&b"true"[..]);
    assert_eq!(s.route(0, &view(None, "/", &canary)), Some(1));
    assert_eq!(s.route(7, &view(None, "/", &none)), None);
    let market = |n: &str| (n == "x-order-type").then_some(&b" market"[..]);
    assert!(s.request_type(&view(None, "/", &market)) > 0);
    assert_eq!(s.request_type(&view(None, "/", &none)), 0);
}

#[test]
fn weighted_arms_and_round_robin() {
    let s = snap(CFG);
    let none = |_: &str| None;
    let req = view(None, "/api", &none);
    let mut rr = Vec::new();
    let mut per_ep = [0u32; 3];
    for h in 0..1000u64 {
        let p = s
            .pick(
                0,
                &req,
                h.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                &mut rr,
                ip(),
                1,
            )
            .unwrap();
        per_ep[p.endpoint] += 1;
    }
    // v1 (90%) alternates between endpoints 0 and 1; v2 gets about 10%.
    assert!(per_ep[0].abs_diff(per_ep[1]) <= 1, "{per_ep:?}");
    assert!((50..=150).contains(&per_ep[2]), "{per_ep:?}");
    // The hash_on header makes the arm sticky per user.
    let user = |n: &str| (n == "x-user-id").then_some(&b"u-42"[..]);
    let req = view(None, "/api", &user);
    let first = s.pick(0, &req, 1, &mut rr, ip(), 1).unwrap().endpoint == 2;
    for h in 0..50 {
        assert_eq!(
            s.pick(0, &req, h, &mut rr, ip(), 1).unwrap().endpoint == 2,
            first
        );
    }
}

#[test]
fn cluster_lb_chooses_the_endpoint() {
    let yaml = |lb: &str| {
        CFG.replace(
            "  - name: a\n    endpoints:",
            &format!("  - name: a\n    lb: {lb}\n    endpoints:"),
        )
        .replace(
            "{ addr: \"127.0.0.1:2\", labels",
            "{ addr: \"127.0.0.1:2\", weight: 3, labels",
        )
    };
    let none = |_: &str| None;
    let req = view(None, "/api", &none);
    // weighted_random: inside v1, endpoint 1 (weight 3) gets 3/4.
    let s = snap(&yaml("weighted_random"));
    let mut rr = Vec::new();
    let mut per_ep = [0u32; 3];
    for h in 0..20_000u64 {
        let p = s.pick(0, &req, lb_mix(h), &mut rr, ip(), 1).unwrap();
        per_ep[p.endpoint] += 1;
    }
    let v1 = f64::from(per_ep[0] + per_ep[1]);
    assert!(
        (f64::from(per_ep[1]) / v1 - 0.75).abs() < 0.02,
        "{per_ep:?}"
    );
    // ring_hash with hash_on: a user sticks to one endpoint, and users
    // spread over every endpoint (both v1 ones and the v2 one).
    let s = snap(&yaml("ring_hash"));
    let mut seen = std::collections::BTreeSet::new();
    for u in 0..200 {
        let id = format!("user-{u}");
        let hdr = |n: &str| (n == "x-user-id").then_some(id.as_bytes());
        let req = view(None, "/api", &hdr);
        let first = s.pick(0, &req, 1, &mut rr, ip(), 1).unwrap().endpoint;
        for h in 0..20 {
            assert_eq!(
                s.pick(0, &req, h, &mut rr, ip(), 1).unwrap().endpoint,
                first
            );
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn every_hash_on_kind_sticks_and_splits_by_weight() {
    for (hash_on, key) in [
        ("header:x-user-id", "hdr"),
        ("cookie:session", "cookie"),
        ("query:user", "query"),
        ("source_ip", "ip"),
    ] {
        let s = snap(&CFG.replace("header:x-user-id", hash_on));
        let mut rr = Vec::new();
        let mut arms = [0u32; 2];
        for u in 0..2000u32 {
            let id = format!("u{u}");
            let cookie = format!("a=1; session={id}");
            let path = format!("/api?user={id}");
            let hdr = |n: &str| match (n, key) {
                ("x-user-id", "hdr") => Some(id.as_bytes()),
                ("cookie", "cookie") => Some(cookie.as_bytes()),
                _ => None,
            };
            let req = view(None, if key == "query" { &path } else { "/api" }, &hdr);
            let client: std::net::IpAddr = [10, 0, (u >> 8) as u8, u as u8].into();
            let mut arm = |h| s.pick(0, &req, h, &mut rr, client, 1).unwrap().arm;
            let first = arm(1);
            for h in 2..6 {
                assert_eq!(arm(h), first, "{hash_on}: user {u} moved");
            }
            arms[usize::from(first - 1)] += 1;
        }
        // 90/10 over 2000 users.
        assert!((140..=260).contains(&arms[1]), "{hash_on}: {arms:?}");
    }
}

#[test]
fn rendezvous_splits_by_weight_and_a_weight_change_moves_the_minimum() {
    let n = 100_000u64;
    let keys = (0..n).map(lb_mix);
    let pick = |w: &[u32], k: u64| lb::rendezvous(w, k, |w| *w).map(|(i, _)| i);
    let share = |w: &[u32]| {
        let hits = keys.clone().filter(|&k| pick(w, k) == Some(1)).count();
        hits as f64 / n as f64
    };
    // Within 1% of the weights.
    assert!((share(&[90, 10]) - 0.10).abs() < 0.01);
    assert!((share(&[1, 1]) - 0.5).abs() < 0.01);
    assert_eq!(share(&[5, 0]), 0.0, "weight 0 never wins");
    // 95/5 -> 75/25 and 95/5 -> 95/25: only keys that must move do.
    for (from, to) in [([95u32, 5], [75u32, 25]), ([95, 5], [95, 25])] {
        let moved = keys
            .clone()
            .filter(|&k| pick(&from, k) != pick(&to, k))
            .count();
        let moved = moved as f64 / n as f64;
        let must = (f64::from(to[1]) / f64::from(to[0] + to[1]))
            - (f64::from(from[1]) / f64::from(from[0] + from[1]));
        assert!(
            (moved - must).abs() < 0.01,
            "{from:?}->{to:?}: {moved} vs {must}"
        );
    }
}

fn ip() -> std::net::IpAddr {
    [10, 0, 0, 1].into()
}

fn lb_mix(h: u64) -> u64 {
    h.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

#[test]
fn invalid_config_is_refused() {
    let mut cfg = crate::config::parse(CFG, false).unwrap();
    cfg.routes[0].to[0].cluster = "missing".into();
    let e = Snapshot::build(cfg, 1, |_, _| Ok(1)).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

const THREE: &str = r#"
version: 1
listeners:
  - { name: api, bind: "127.0.0.1:18000", protocol: http, default_route: r }
clusters:
  - name: c
    lb: LB
    endpoints: [ { addr: "127.0.0.1:1" }, { addr: "127.0.0.1:2" }, { addr: "127.0.0.1:3" } ]
    outlier: { consecutive_5xx: 3 }
routes:
  - { name: r, to: [ { cluster: c } ] }
"#;

/// Runs `n` requests through `s`'s route 0 at 1 ms spacing with a virtual
/// clock from `t0`: each is answered after `rtt(endpoint)` with
/// `outcome(endpoint)`. Picks per endpoint.
fn drive(
    s: &Snapshot,
    t0: u64,
    n: u64,
    rtt: impl Fn(usize) -> u64,
    outcome: impl Fn(usize) -> live::Outcome,
) -> [u32; 3] {
    let none = |_: &str| None;
    let req = view(None, "/", &none);
    let mut rr = Vec::new();
    let mut per = [0u32; 3];
    let live = &s.clusters[0].live;
    for k in 0..n {
        let now = t0 + k * 1_000_000;
        let p = s.pick(0, &req, lb_mix(k), &mut rr, ip(), now).unwrap();
        per[p.endpoint] += 1;
        live.endpoints[p.endpoint].begin();
        let _ = live.end(p.endpoint, now, rtt(p.endpoint), outcome(p.endpoint));
    }
    per
}

#[test]
fn p2c_ewma_moves_load_off_a_slow_endpoint_and_back() {
    let s = snap(&THREE.replace("LB", "p2c_ewma"));
    let ok = |_| live::Outcome::Success;
    // All answer in 1 ms for a while (each gets measured)...
    let even = |_| 1_000_000;
    let per = drive(&s, 1_000_000_000, 2_000, even, ok);
    assert!(per.iter().all(|&n| n > 300), "{per:?}");
    // ... then endpoint 0 turns 20 ms slower: within 5 s it gets at most
    // 10% of the requests.
    let slow = |e: usize| if e == 0 { 21_000_000 } else { 1_000_000 };
    let per = drive(&s, 3_000_000_000, 5_000, slow, ok);
    let share = f64::from(per[0]) / 5_000.0;
    assert!(share <= 0.10, "slow endpoint kept {share}: {per:?}");
    // The fault clears: its estimate decays (10 s) and it is tried again.
    let per = drive(&s, 45_000_000_000, 5_000, even, ok);
    let share = f64::from(per[0]) / 5_000.0;
    assert!(share >= 0.25, "recovered share {share}: {per:?}");
}

#[test]
fn ejected_endpoints_get_no_requests_until_all_are_out_then_panic() {
    for lb in [
        "round_robin",
        "weighted_random",
        "ring_hash",
        "p2c_ewma",
        "score_weighted",
    ] {
        let s = snap(&THREE.replace("LB", lb));
        let live = &s.clusters[0].live;
        // Endpoint 1 fails: after three 5xx it is ejected, and no further
        // request reaches it.
        let fail1 = |e: usize| {
            if e == 1 {
                live::Outcome::Http5xx
            } else {
                live::Outcome::Success
            }
        };
        let per = drive(&s, 1_000_000_000, 3_000, |_| 1_000_000, fail1);
        assert!(per[1] <= 3, "{lb}: {per:?}");
        // (p2c_ewma's failure penalty keeps it away before the third.)
        let ejected = live.endpoints[1].ejected(2_000_000_000);
        assert!(ejected || lb == "p2c_ewma", "{lb}");
        assert_eq!(live.panics.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
    // With every endpoint out (max_ejection_percent lets one go; health
    // checks take the rest), picks spread over all and count as panics.
    let s = snap(&THREE.replace("LB", "round_robin"));
    let live = &s.clusters[0].live;
    for e in 0..3 {
        live.set_healthy(e, false);
    }
    let per = drive(
        &s,
        1_000_000_000,
        300,
        |_| 1_000_000,
        |_| live::Outcome::Success,
    );
    assert_eq!(per, [100, 100, 100]);
    assert_eq!(live.panics.load(std::sync::atomic::Ordering::Relaxed), 300);
}

#[test]
fn locality_tiers_keep_traffic_local_and_spill_by_the_1_4_rule() {
    let yaml = r#"
version: 1
listeners:
  - { name: api, bind: "127.0.0.1:18000", protocol: http, default_route: r }
clusters:
  - name: c
    locality: { prefer: zone }
    endpoints:
      - { addr: "127.0.0.1:1", labels: { zone: a, region: east } }
      - { addr: "127.0.0.1:2", labels: { zone: a, region: east } }
      - { addr: "127.0.0.1:3", labels: { zone: b, region: east } }
      - { addr: "127.0.0.1:4", labels: { zone: c, region: west } }
routes:
  - { name: r, to: [ { cluster: c } ] }
node: { zone: a, region: east }
"#;
    let s = snap(yaml);
    let none = |_: &str| None;
    let req = view(None, "/", &none);
    let mut rr = Vec::new();
    let mut tiers = [0u32; 3];
    let mut per = [0u32; 4];
    for h in 0..1000u64 {
        let p = s.pick(0, &req, lb_mix(h), &mut rr, ip(), 1).unwrap();
        per[p.endpoint] += 1;
        tiers[usize::from(p.locality)] += 1;
    }
    assert_eq!(tiers, [1000, 0, 0], "all local while healthy");
    assert_eq!(per[0] + per[1], 1000);
    // One of the two local endpoints fails its checks: 50% × 1.4 = 70%
    // stays in the zone, 30% spills to the region.
    let live = &s.clusters[0].live;
    live.set_healthy(0, false);
    let mut tiers = [0u32; 3];
    for h in 0..20_000u64 {
        let p = s.pick(0, &req, lb_mix(h), &mut rr, ip(), 1).unwrap();
        assert_ne!(p.endpoint, 0);
        tiers[usize::from(p.locality)] += 1;
    }
    let spilled = f64::from(tiers[1]) / 20_000.0;
    assert!((spilled - 0.3).abs() < 0.02 && tiers[2] == 0, "{tiers:?}");
    // The whole zone out: all to the region, none further.
    live.set_healthy(1, false);
    for h in 0..1000u64 {
        let p = s.pick(0, &req, lb_mix(h), &mut rr, ip(), 1).unwrap();
        assert_eq!((p.endpoint, p.locality), (2, 1));
    }
}

#[test]
fn score_weighted_follows_the_live_scores() {
    let s = snap(
        &THREE
            .replace("LB", "score_weighted")
            .replace("outlier: { consecutive_5xx: 3 }", ""),
    );
    let ok = |_| live::Outcome::Success;
    // Unscored: the weights (all 1).
    let per = drive(&s, 1_000_000_000, 3_000, |_| 1_000_000, ok);
    assert!(per.iter().all(|&n| (800..=1200).contains(&n)), "{per:?}");
    // Endpoint 0 answers 80 ms slower (0.8 τ) and fails every other time:
    // once scored its share drops well below a third.
    let rtt = |e: usize| if e == 0 { 81_000_000 } else { 1_000_000 };
    let flaky = |e: usize| {
        if e == 0 {
            live::Outcome::Http5xx
        } else {
            live::Outcome::Success
        }
    };
    drive(&s, 4_000_000_000, 2_000, rtt, flaky);
    let mut live_ticks = Vec::new();
    s.clusters[0].live.tick(6_100_000_000, &mut live_ticks);
    let per = drive(&s, 6_200_000_000, 3_000, rtt, flaky);
    let share = f64::from(per[0]) / 3_000.0;
    assert!(share < 0.10, "{share}: {per:?}");
}
