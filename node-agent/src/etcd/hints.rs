//! Shared breaker hints (`breaker: { shared: true }`, with `--etcd`).
//! When a shared breaker opens on this node, the node puts
//! `breakers/<cluster>/<node>` under a lease as long as the open period;
//! the key vanishes on its own when the lease ends. Another node that sees
//! a new such key sends its closed breaker for that cluster straight to
//! half-open probing ([`crate::policy::breaker::BreakerCore::hint`]). A
//! hint never blocks anything: with etcd down, breakers stay local.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use etcd_client::{Client, PutOptions};

use crate::worker::Shared;

/// How often this node's shared breakers are checked for an opening.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Hints seen and published.
#[derive(Debug)]
pub struct Hints {
    node: String,
    /// (cluster, node) hints of other nodes in the last applied key set.
    seen: BTreeSet<(String, String)>,
    /// Clusters whose current opening is published.
    published: HashSet<String>,
}

impl Hints {
    /// Hints for the node named `node`.
    pub fn new(node: String) -> Hints {
        Hints {
            node,
            seen: BTreeSet::new(),
            published: HashSet::new(),
        }
    }

    /// The hints in the current key set: each new one from another node
    /// moves that cluster's shared breaker to half-open.
    pub fn seen(&mut self, shared: &Shared, hints: &[(String, String)]) {
        let now_set: BTreeSet<(String, String)> = hints
            .iter()
            .filter(|(_, node)| *node != self.node)
            .cloned()
            .collect();
        let snap = shared.snapshot.load();
        let now = ringlog::clock::mono_ns();
        for (cluster, node) in now_set.difference(&self.seen) {
            let Some(i) =
                snap.config.clusters.iter().position(|c| {
                    c.name == *cluster && c.breaker.as_ref().is_some_and(|b| b.shared)
                })
            else {
                continue;
            };
            let Some(rt) = snap.clusters.get(i) else {
                continue;
            };
            if let Some(t) = rt.breaker.hint() {
                shared.control_event(t.event(rt.id, now));
                eprintln!(
                    "node-agent: cluster {cluster}: breaker opened on node {node}; probing half-open here"
                );
            }
        }
        self.seen = now_set;
    }

    /// Publishes the openings of this node's shared breakers since the
    /// last check. Each put runs as a task of its own, so a slow etcd
    /// never holds up the watch; a put that fails is logged and that
    /// opening's hint is lost (hints are best effort).
    pub fn publish(&mut self, shared: &Shared, prefix: &str, client: &Client) {
        let snap = shared.snapshot.load_full();
        for (cfg, rt) in snap.config.clusters.iter().zip(&snap.clusters) {
            let Some(b) = cfg.breaker.as_ref().filter(|b| b.shared) else {
                continue;
            };
            if rt.breaker.state() != crate::policy::breaker::State::Open {
                self.published.remove(&cfg.name);
                continue;
            }
            if self.published.contains(&cfg.name) {
                continue;
            }
            let ttl = i64::try_from(b.open_for.0.div_ceil(1_000_000_000))
                .unwrap_or(i64::MAX)
                .max(2);
            let key =
                super::keys::key_of(prefix, "breakers", &format!("{}/{}", cfg.name, self.node));
            let value = serde_json::json!({ "node": self.node, "open_for_s": ttl }).to_string();
            self.published.insert(cfg.name.clone());
            let mut client = client.clone();
            tokio::spawn(async move {
                let put = async {
                    let lease = client.lease_grant(ttl, None).await?;
                    let opts = PutOptions::new().with_lease(lease.id());
                    client.put(key.as_str(), value, Some(opts)).await
                };
                match put.await {
                    Ok(_) => eprintln!("node-agent: breaker open; published {key} for {ttl}s"),
                    Err(e) => eprintln!("node-agent: publishing {key}: {e}"),
                }
            });
        }
    }
}
