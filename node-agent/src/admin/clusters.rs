//! `GET /clusters`: every cluster's endpoints as the data path sees them
//! now: in rotation or not (ejected until when, how often, failing health
//! checks), load, latency estimate, success rate, `score_weighted` score,
//! weight and labels.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::snapshot::Snapshot;

/// The JSON document at monotonic time `now`.
pub fn render(snap: &Snapshot, now: u64) -> Value {
    let clusters: Vec<Value> = snap
        .clusters
        .iter()
        .map(|c| {
            let cfg = snap.config.clusters.iter().find(|k| k.name == c.name);
            let live = &c.live;
            let endpoints: Vec<Value> = c
                .endpoints
                .iter()
                .zip(&live.endpoints)
                .map(|(e, l)| {
                    let conf = cfg.and_then(|k| {
                        k.endpoints.iter().find(|x| x.addr.parse().ok() == Some(e.addr))
                    });
                    let until = l.ejected_until();
                    json!({
                        "addr": e.addr.to_string(),
                        "weight": conf.map_or(1, |x| x.weight),
                        "labels": conf.map(|x| &x.labels),
                        "available": l.available(now),
                        "healthy": l.healthy(),
                        "ejected": l.ejected(now),
                        "ejected_for_ms": if l.ejected(now) { (until - now) / 1_000_000 } else { 0 },
                        "ejections": l.ejected_total.load(Ordering::Relaxed),
                        "ejection_level": l.ejection_level(),
                        "in_flight": l.in_flight(),
                        "ewma_ms": l.rtt(now, live.decay_ns) / 1e6,
                        "requests": l.requests.load(Ordering::Relaxed),
                        "failures": l.failures.load(Ordering::Relaxed),
                        "success_rate": l.success_rate(),
                        "score": live.scoring.is_some().then(|| l.score()),
                    })
                })
                .collect();
            json!({
                "name": c.name,
                "lb": cfg.map(|k| &k.lb),
                "breaker": c.breaker.state().name(),
                "upstream_connections": c.breaker.connections(),
                "ejected": live.ejected_count(),
                "panics": live.panics.load(Ordering::Relaxed),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "generation": snap.generation, "clusters": clusters })
}
