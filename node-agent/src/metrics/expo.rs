//! A scrape as metric families of the `prometheus` crate's data model,
//! encoded by its `TextEncoder`: the agent builds the families from its
//! own lock-free counters at scrape time ([`AgentCollector`], a custom
//! collector in a registry of its own) and never writes the exposition
//! format by hand.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::worker::Shared;

/// Metric families being built; every name gets the `tailmesh_` prefix.
#[derive(Debug, Default)]
pub struct Expo {
    families: Vec<MetricFamily>,
}

impl Expo {
    /// Starts family `tailmesh_{name}` of `kind` (`counter`, `gauge` or
    /// `histogram`); the values that follow belong to it.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let mut f = MetricFamily::default();
        f.set_name(format!("tailmesh_{name}"));
        f.set_help(help.to_string());
        f.set_field_type(match kind {
            "counter" => MetricType::COUNTER,
            "histogram" => MetricType::HISTOGRAM,
            _ => MetricType::GAUGE,
        });
        self.families.push(f);
    }

    fn push(&mut self, labels: &[(&str, &str)], fill: impl FnOnce(&mut Metric, MetricType)) {
        let Some(f) = self.families.last_mut() else {
            return;
        };
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name((*k).to_string());
                    l.set_value((*v).to_string());
                    l
                })
                .collect(),
        );
        fill(&mut m, f.get_field_type());
        f.mut_metric().push(m);
    }

    /// A value of the current counter or gauge family.
    pub fn value(&mut self, labels: &[(&str, &str)], v: f64) {
        self.push(labels, |m, kind| {
            if kind == MetricType::COUNTER {
                let mut c = Counter::default();
                c.set_value(v);
                m.set_counter(c);
            } else {
                let mut g = Gauge::default();
                g.set_value(v);
                m.set_gauge(g);
            }
        });
    }

    /// A histogram of the current family: cumulative counts per upper
    /// bound (the `+Inf` bucket is the count), the sum and the count.
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        self.push(labels, |m, _| {
            let mut h = Histogram::default();
            h.set_bucket(
                buckets
                    .iter()
                    .map(|&(le, n)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(le);
                        b.set_cumulative_count(n);
                        b
                    })
                    .collect(),
            );
            h.set_sample_sum(sum);
            h.set_sample_count(count);
            m.set_histogram(h);
        });
    }

    /// The families (for a collector).
    pub fn into_families(self) -> Vec<MetricFamily> {
        // Families without values are left out, as the text format would
        // show a bare HELP/TYPE.
        self.families
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

/// Every agent metric, gathered at scrape time from the workers' counters
/// and the running snapshot.
#[derive(Debug)]
pub struct AgentCollector {
    shared: Arc<Shared>,
}

impl Collector for AgentCollector {
    fn desc(&self) -> Vec<&Desc> {
        // Families and label values follow the config (routes, clusters),
        // so they are not declared up front (an unchecked collector).
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sh = &self.shared;
        let snap = sh.snapshot.load();
        let stats: Vec<&super::WorkerStats> = sh.stats.iter().collect();
        let facts = super::Facts::of(sh, snap.generation);
        let mut o = Expo::default();
        super::render(&stats, &facts, &mut o);
        super::render_traffic(&stats, &snap, &mut o);
        super::policy::render(&snap, &mut o);
        super::process::render(&mut o);
        o.into_families()
    }
}

/// The agent's registry: one collector over `shared`.
pub fn registry(shared: Arc<Shared>) -> Result<Registry, prometheus::Error> {
    let r = Registry::new();
    r.register(Box::new(AgentCollector { shared }))?;
    Ok(r)
}

/// Gathers `registry` and encodes it in the text format.
pub fn scrape(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Encodes families built outside a registry (tests).
pub fn encode(families: &[MetricFamily]) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(families, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
