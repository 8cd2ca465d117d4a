//! Copies of requests for a route's shadow cluster: a share of the
//! route's forwarded requests (by a hash of the request id) is copied,
//! head and body, with `x-tailmesh-shadow: 1` added, and handed to the
//! driver as one [`MirrorCopy`] once the body is complete. A body over the
//! mirror's `max_body` is not copied (counted); so the copy of an exchange
//! never holds more than its head and `max_body` bytes. The primary never
//! waits for, and never hears of, its copy.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Exchange, Framed, ReqBody};
use crate::http1::rewrite;
use crate::proxy::{Connect, MirrorCopy, Out};
use crate::snapshot::{MirrorRt, Snapshot};

/// A copy being filled with the request body.
#[derive(Debug)]
pub(super) struct Filling {
    copy: MirrorCopy,
    /// Most bytes the copy may hold (head and `max_body`).
    limit: usize,
    mirror: Arc<MirrorRt>,
}

/// Starts the copy of `ex` (whose upstream head is `head`) if mirror `m`
/// takes it: handed over now for a request without a body, else kept on
/// the exchange for [`body`].
pub(super) fn begin(
    ex: &mut Exchange,
    m: &Arc<MirrorRt>,
    snap: &Snapshot,
    head: &[u8],
    now: u64,
    out: &mut Out,
) {
    if ex.upgrade || ex.connect_method || !m.takes(ex.hash) {
        return;
    }
    if let ReqBody::Body(Framed::Len(n)) = &ex.req
        && *n > m.max_body
    {
        m.skipped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Some(t) = snap.mirror_target(m, ex.hash, now) else {
        return;
    };
    let mut bytes = Vec::with_capacity(head.len() + 24);
    bytes.extend_from_slice(head);
    rewrite::add_field(&mut bytes, b"x-tailmesh-shadow", b"1");
    let copy = MirrorCopy {
        connect: Connect {
            addr: t.addr,
            cluster: t.cluster_ix,
            timeout_ns: t.connect_timeout_ns,
            fresh: true,
            idle_ns: t.idle_timeout_ns,
            tls: t.tls,
            l4: false,
        },
        timeout_ns: match t.request_timeout_ns {
            0 => t.read_timeout_ns,
            r => r,
        },
        bytes,
    };
    if matches!(ex.req, ReqBody::Done) {
        out.mirrors.push(copy);
        return;
    }
    let limit = copy
        .bytes
        .len()
        .saturating_add(usize::try_from(m.max_body).unwrap_or(usize::MAX));
    ex.mirror = Some(Box::new(Filling {
        copy,
        limit,
        mirror: m.clone(),
    }));
}

/// Body bytes of `ex` went upstream (`done`: the last of them): the copy
/// takes them too, and is handed over when complete; past its limit it is
/// dropped (counted).
pub(super) fn body(ex: &mut Exchange, bytes: &[u8], done: bool, out: &mut Out) {
    let Some(f) = ex.mirror.as_mut() else {
        return;
    };
    if f.copy.bytes.len().saturating_add(bytes.len()) > f.limit {
        f.mirror.skipped.fetch_add(1, Ordering::Relaxed);
        ex.mirror = None;
        return;
    }
    f.copy.bytes.extend_from_slice(bytes);
    if done && let Some(f) = ex.mirror.take() {
        out.mirrors.push(f.copy);
    }
}
