//! The endpoint side of an attempt: in flight on its endpoint from the
//! pick until it ends, when its latency and outcome go to the endpoint's
//! live state (the `p2c_ewma` costs and the outlier detector). An
//! ejection it causes becomes a ring event.

use std::sync::Arc;

use ringlog::Reason;
use ringlog::record::Event;

use crate::snapshot::live::{ClusterLive, Outcome};

/// One attempt on one endpoint.
#[derive(Debug)]
pub(super) struct Attempt {
    live: Arc<ClusterLive>,
    /// Position in the cluster.
    endpoint: usize,
    /// Name ids, for the ring.
    cluster_id: u16,
    endpoint_id: u16,
    /// When it started (monotonic ns).
    start: u64,
    /// Still counted in flight.
    open: bool,
}

impl Attempt {
    /// An attempt on endpoint `endpoint` of a cluster starts at `now`.
    pub fn begin(live: &Arc<ClusterLive>, endpoint: usize, ids: (u16, u16), now: u64) -> Attempt {
        if let Some(e) = live.endpoints.get(endpoint) {
            e.begin();
        }
        Attempt {
            live: live.clone(),
            endpoint,
            cluster_id: ids.0,
            endpoint_id: ids.1,
            start: now,
            open: true,
        }
    }

    /// Its connect is asked for at `now`: the latency counts from here
    /// (not from a rate limit's delay or a retry's backoff).
    pub fn connecting(&mut self, now: u64) {
        self.start = now;
    }

    /// It ended at `now` (`first_byte`: when the response began, 0 if it
    /// did not) with this status and reason; `tunnel`: an L4 connection
    /// or upgrade, which succeeded by connecting. An ending that says
    /// nothing about the endpoint (the client left, a local refusal)
    /// teaches nothing. The ejection it caused, as a ring event.
    pub fn end(
        mut self,
        now: u64,
        first_byte: u64,
        status: u16,
        reason: Reason,
        tunnel: bool,
    ) -> Option<Event> {
        let outcome = outcome(status, reason, tunnel)?;
        self.open = false;
        let until = if first_byte > 0 { first_byte } else { now };
        let rtt = until.saturating_sub(self.start);
        let change = self.live.end(self.endpoint, now, rtt, outcome)?;
        Some(change.event(now, self.cluster_id, self.endpoint_id))
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.open
            && let Some(e) = self.live.endpoints.get(self.endpoint)
        {
            e.abandon();
        }
    }
}

/// What an ending says about the endpoint.
fn outcome(status: u16, reason: Reason, tunnel: bool) -> Option<Outcome> {
    match reason {
        Reason::UpstreamConnect
        | Reason::UpstreamTimeout
        | Reason::UpstreamReset
        | Reason::UpstreamProtocol => Some(Outcome::Gateway),
        Reason::None if status >= 500 => Some(Outcome::Http5xx),
        Reason::None if status > 0 || tunnel => Some(Outcome::Success),
        _ => None,
    }
}
