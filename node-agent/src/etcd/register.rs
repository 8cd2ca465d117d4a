//! `node-agent register`: an endpoint's membership as a leased key,
//! `endpoints/<cluster>/<addr>`. The key lives as long as the lease: it is
//! kept alive every TTL/3; if the lease is lost (etcd restarted, the
//! keepalive went unanswered for a TTL, the lease expired) a new one is
//! granted and the key put again; on stop the lease is revoked, so the
//! endpoint leaves at once. An instance that dies without revoking leaves
//! when its lease expires.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::PutOptions;
use tokio::time::{Instant, sleep};

use super::{Backoff, EtcdError, Settings};

/// One endpoint to register.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Where etcd is.
    pub settings: Settings,
    /// The cluster it joins.
    pub cluster: String,
    /// `HOST:PORT`.
    pub addr: String,
    /// Endpoint labels (`version`, `zone`, ...).
    pub labels: BTreeMap<String, String>,
    /// Endpoint weight.
    pub weight: u32,
    /// Lease time to live, seconds (at least 2).
    pub ttl_s: i64,
}

impl Registration {
    /// The key it keeps alive.
    pub fn key(&self) -> String {
        super::keys::key_of(
            &self.settings.prefix,
            "endpoints",
            &format!("{}/{}", self.cluster, self.addr),
        )
    }

    fn value(&self) -> String {
        serde_json::json!({ "weight": self.weight, "labels": self.labels }).to_string()
    }
}

/// How a lease session ended.
enum Ended {
    Stopped,
    Lost(String),
}

/// Keeps the registration alive until `stop` resolves, then revokes it.
pub async fn run(reg: &Registration, stop: impl std::future::Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let mut backoff = Backoff::default();
    loop {
        match session(reg, &mut backoff, stop.as_mut()).await {
            Ended::Stopped => return,
            Ended::Lost(why) => {
                let delay = backoff.next_delay();
                eprintln!(
                    "node-agent register: {} lost ({why}); again in {delay:?}",
                    reg.key()
                );
                tokio::select! {
                    () = sleep(delay) => {}
                    () = stop.as_mut() => return,
                }
            }
        }
    }
}

async fn session(
    reg: &Registration,
    backoff: &mut Backoff,
    mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Ended {
    let lost = |e: EtcdError| Ended::Lost(e.to_string());
    let mut client = match reg.settings.connect().await {
        Ok(c) => c,
        Err(e) => return lost(e),
    };
    let err = |e| Ended::Lost(format!("{e}"));
    let lease = match client.lease_grant(reg.ttl_s, None).await {
        Ok(l) => l.id(),
        Err(e) => return err(e),
    };
    let key = reg.key();
    if let Err(e) = client
        .put(
            key.as_str(),
            reg.value(),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
    {
        return err(e);
    }
    let (mut keeper, mut answers) = match client.lease_keep_alive(lease).await {
        Ok(k) => k,
        Err(e) => return err(e),
    };
    eprintln!(
        "node-agent register: {key} registered (lease {lease:x}, ttl {}s)",
        reg.ttl_s
    );
    backoff.reset();
    let ttl = Duration::from_secs(reg.ttl_s.unsigned_abs());
    let mut tick = tokio::time::interval(ttl / 3);
    let mut answered = Instant::now();
    loop {
        tokio::select! {
            () = stop.as_mut() => {
                match client.lease_revoke(lease).await {
                    Ok(_) => eprintln!("node-agent register: {key} revoked"),
                    Err(e) => eprintln!("node-agent register: revoking {key}: {e} (it expires within {}s)", reg.ttl_s),
                }
                return Ended::Stopped;
            }
            _ = tick.tick() => {
                if answered.elapsed() > ttl {
                    return Ended::Lost(format!("no keepalive answer for {:?}", answered.elapsed()));
                }
                if let Err(e) = keeper.keep_alive().await {
                    return err(e);
                }
            }
            msg = answers.message() => match msg {
                Ok(Some(r)) if r.ttl() > 0 => answered = Instant::now(),
                Ok(Some(_)) => return Ended::Lost("the lease expired".into()),
                Ok(None) => return Ended::Lost("the keepalive stream ended".into()),
                Err(e) => return err(e),
            },
        }
    }
}
