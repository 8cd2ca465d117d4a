//! Request copies to shadow clusters (a route's `mirror`), carried out
//! by the shared core: each copy gets a connection of its own, owned by no
//! client, bounded in number per worker and closed at its deadline.

use super::flow::{Driver, UpTarget, close_up};
use crate::metrics::Driver as Counter;
use crate::proxy::{Chunk, Connect};

/// Sends a request copy to its shadow endpoint on a connection of its
/// own, owned by no client: its response is discarded (the first bytes
/// close it, as on an idle pooled connection) and it is closed at its
/// deadline anyway. Dropped (counted) past [`MIRROR_MAX`] copies in
/// flight per worker, at the shadow cluster's `max_connections`, or if
/// the socket cannot be made: a copy never waits and never fails the
/// primary.
pub fn start<D: Driver>(d: &mut D, m: crate::proxy::MirrorCopy) {
    let core = d.core();
    let breaker = m
        .connect
        .cluster
        .and_then(|k| core.snap.clusters.get(k))
        .map(|c| c.breaker.clone());
    if core.mirrors.len() >= MIRROR_MAX {
        core.stats().driver(Counter::MirrorDropped, 1);
        return;
    }
    let slot = match breaker.map(|b| b.open_connection()) {
        Some(None) => {
            d.core().stats().driver(Counter::MirrorDropped, 1);
            return;
        }
        Some(slot) => slot,
        None => None,
    };
    let deadline = d.core().now.saturating_add(m.timeout_ns.max(1_000_000));
    let target = UpTarget::new(&m.connect, slot).mirror(deadline);
    let Ok((dial, tls)) = super::secure::client_for(d.core(), &m.connect) else {
        d.core().stats().driver(Counter::MirrorDropped, 1);
        return;
    };
    let Some(j) = d.open_up(
        &Connect {
            addr: dial,
            ..m.connect
        },
        target,
    ) else {
        d.core().stats().driver(Counter::MirrorDropped, 1);
        return;
    };
    if let Some(t) = tls {
        super::secure::attach(d, j, t);
    }
    let core = d.core();
    core.ups += 1;
    core.mirrors.push((j, deadline));
    core.stats().driver(Counter::MirrorSent, 1);
    d.send_up(j, &mut vec![Chunk::Owned(m.bytes)], D::no_src());
    d.wake(j);
}

/// Most request copies in flight per worker.
pub const MIRROR_MAX: usize = 256;

/// Closes the copies whose deadline passed; forgets those already closed.
pub fn expire<D: Driver>(d: &mut D) {
    let now = d.core().now;
    let mut list = std::mem::take(&mut d.core().mirrors);
    list.retain(|&(j, deadline)| {
        if d.up_target(j).is_none_or(|t| t.mirror_until() != deadline) {
            return false;
        }
        if now >= deadline {
            close_up(d, j);
            return false;
        }
        true
    });
    d.core().mirrors = list;
}
