//! Starting an exchange: a parsed request head is routed (its rate
//! limit, endpoint pick and breaker admission on the way) and sent toward
//! its upstream, or an L4 connection is sent to its destination.

use ringlog::Reason;
use ringlog::record::Flags;

use super::attempt::Attempt;
use super::{Exchange, Framed, ReqBody, Resp, Session, policy};
use crate::http1::chunked::Decoder;
use crate::http1::request::{Body, RequestHead};
use crate::http1::rewrite;
use crate::proxy::{Chunk, Connect, Cx, Out, UpOp};
use crate::snapshot::{ClusterRt, Pick, RequestView, Target};

impl Session {
    /// Routes a parsed head and starts forwarding it.
    pub(super) fn start_exchange(
        &mut self,
        cx: &mut Cx<'_>,
        head: &RequestHead<'_>,
        out: &mut Out,
    ) {
        let snap = cx.snap;
        let header = |n: &str| head.header(n);
        let view = RequestView {
            host: head.header("host"),
            path: head.target,
            method: head.method,
            header: &header,
        };
        let req = match head.body {
            Body::None | Body::Length(0) => ReqBody::Done,
            Body::Length(n) => ReqBody::Body(Framed::Len(n)),
            Body::Chunked => ReqBody::Body(Framed::Chunked(Decoder::new())),
        };
        let mut ex = self.new_exchange(cx.now, req);
        ex.record.generation = snap.generation;
        ex.record.req_type = snap.request_type(&view);
        ex.head_method = head.method.eq_ignore_ascii_case("HEAD");
        ex.connect_method = head.method.eq_ignore_ascii_case("CONNECT");
        ex.upgrade = head.tunnel && !ex.connect_method;
        ex.http10 = head.minor == 0;
        ex.close_after = head.close;
        let route = snap
            .route(self.listener, &view)
            .and_then(|r| Some((r, snap.routes.get(r)?)));
        let rt = route.map(|(_, rt)| rt);
        let edits = rt.and_then(|r| r.edits.as_ref());
        let mut up_head = Vec::with_capacity(head.len + 128);
        let ids = &mut *cx.ids;
        let e = edits.map(|e| &**e);
        let meta = rewrite::upstream_head(head, self.client, e, || ids.next_id(), &mut up_head);
        ex.hash = meta.sampling_hash;
        ex.edits = edits.filter(|e| !e.response.is_empty()).cloned();
        if !self.authorized(cx, route.map(|(r, _)| r)) {
            ex.record.route = rt.map_or(0, |r| r.id);
            self.deny(ex, cx, out);
            return;
        }
        if ex.connect_method && !rt.is_some_and(|r| r.allow_connect) {
            // A tunnel nobody allowed would carry later requests past
            // routing and the records. The client may already be sending
            // tunnel bytes: close.
            ex.record.route = rt.map_or(0, |r| r.id);
            ex.close_after = true;
            let msg = "CONNECT is not allowed on this route";
            self.local(ex, cx.now, 405, Reason::MethodNotAllowed, msg, out);
            return;
        }
        let any_method = rt.is_some_and(|r| r.retry_any_method);
        let replayable = matches!(ex.req, ReqBody::Done)
            && !ex.upgrade
            && !ex.connect_method
            && (any_method || idempotent(head.method));
        let mut delay = 0;
        let target = match route {
            Some((r, rt)) => {
                ex.record.route = rt.id;
                if let Some(limit) = &rt.limit {
                    let Some((limited, wait)) = self.rate_limit(ex, limit, &view, cx.now, out)
                    else {
                        return;
                    };
                    (ex, delay) = (limited, wait);
                }
                let pick = snap.pick(r, &view, meta.sampling_hash, cx.rr, self.client, cx.now);
                let Some((p, t)) = pick.and_then(|p| Some((p, snap.target(p)?))) else {
                    let msg = "no endpoint available in the selected cluster";
                    self.local(ex, cx.now, 503, Reason::NoHealthyEndpoint, msg, out);
                    return;
                };
                if let Some(c) = snap.clusters.get(p.cluster) {
                    let Some(admitted) = self.admit_attempt(ex, c, p, &t, cx.now, out) else {
                        return;
                    };
                    ex = admitted;
                    if let Some(rp) = &c.retry {
                        rp.request(cx.now);
                        if replayable {
                            let st = policy::RetryState::new(rp.clone(), p);
                            ex.policed().retry = Some(st);
                        }
                    }
                }
                t
            }
            None => match self.orig_dst {
                Some(addr) => Target::passthrough(addr),
                None => {
                    let msg = "no route matches this request";
                    self.local(ex, cx.now, 404, Reason::NoRoute, msg, out);
                    return;
                }
            },
        };
        if head.header("host").is_none() {
            // An HTTP/1.0 request may lack Host; HTTP/1.1 upstream requires
            // it. Name the destination the request was routed to.
            let mut host = Vec::with_capacity(48);
            crate::http1::write_addr(target.addr, &mut host);
            rewrite::add_field(&mut up_head, b"host", &host);
        }
        if replayable {
            // One small copy of the rewritten head per such request: the
            // price of answering a stale pooled connection with a retry
            // instead of a 502.
            ex.replay = Some(up_head.clone());
        }
        if let Some(m) = rt.and_then(|r| r.mirror.as_ref()) {
            super::mirror::begin(&mut ex, m, snap, &up_head, cx.now, out);
        }
        if delay > 0 {
            // Smoothed: nothing goes out (and nothing more is read from
            // the client) until the rate limit releases it.
            ex.policed().deferred = Some(policy::Deferred {
                until: cx.now.saturating_add(delay),
                head: up_head,
                target,
                hold: policy::Hold::RateLimit,
            });
            self.ex = Some(ex);
            return;
        }
        dispatch(&mut ex, cx, up_head, target, out);
        self.ex = Some(ex);
    }

    /// Starts an L4 tunnel to the original destination or the listener's
    /// default route.
    pub(super) fn start_l4(&mut self, cx: &mut Cx<'_>, out: &mut Out) {
        let mut ex = self.new_exchange(cx.now, ReqBody::Done);
        ex.tunnel = true;
        ex.resp = Resp::UntilClose;
        ex.record.flags.0 |= Flags::L4;
        ex.record.generation = cx.snap.generation;
        ex.hash = ringlog::sampler::hash_bytes(&cx.now.to_le_bytes());
        let snap = cx.snap;
        let route = snap
            .listeners
            .get(self.listener)
            .and_then(|l| l.default_route);
        let authz_route = if self.orig_dst.is_some() { None } else { route };
        if !self.authorized(cx, authz_route) {
            ex.record.route = authz_route
                .and_then(|r| snap.routes.get(r))
                .map_or(0, |r| r.id);
            self.deny(ex, cx, out);
            return;
        }
        let target = match (self.orig_dst, route) {
            (Some(addr), _) => Some(Target::passthrough(addr)),
            (None, Some(r)) => {
                ex.record.route = snap.routes.get(r).map_or(0, |r| r.id);
                let none = |_: &str| None;
                let view = RequestView {
                    host: None,
                    path: "",
                    method: "",
                    header: &none,
                };
                let pick = snap.pick(r, &view, ex.hash, cx.rr, self.client, cx.now);
                match pick.and_then(|p| Some((p, snap.target(p)?))) {
                    Some((p, t)) => {
                        if let Some(c) = snap.clusters.get(p.cluster) {
                            let Some(admitted) = self.admit_attempt(ex, c, p, &t, cx.now, out)
                            else {
                                return;
                            };
                            ex = admitted;
                        }
                        Some(t)
                    }
                    None => None,
                }
            }
            (None, None) => None,
        };
        let Some(target) = target else {
            ex.record.reason = Reason::NoRoute;
            ex.record.flags.0 |= Flags::ERROR;
            ex.close_after = true;
            self.finish(ex, cx.now, out);
            return;
        };
        dispatch(&mut ex, cx, Vec::new(), target, out);
        self.ex = Some(ex);
    }
}

impl Session {
    /// Admits `ex` to cluster `c`'s breaker and limits (None: refused and
    /// answered) and starts its attempt on the picked endpoint.
    fn admit_attempt(
        &mut self,
        ex: Exchange,
        c: &ClusterRt,
        p: Pick,
        t: &Target,
        now: u64,
        out: &mut Out,
    ) -> Option<Exchange> {
        let mut ex = self.admit(ex, c, now, out)?;
        let ids = (t.cluster, t.endpoint);
        ex.attempt = Some(Attempt::begin(&c.live, p.endpoint, ids, now));
        Some(ex)
    }
}

/// Sends `head` toward `target` and asks for its connection, or, when
/// the target's cluster is at `max_connections` and the worker's pool
/// holds no idle connection that could serve it, queues `ex` for a
/// connection slot (see [`Session::await_slot`]).
pub(super) fn dispatch(
    ex: &mut Exchange,
    cx: &Cx<'_>,
    head: Vec<u8>,
    target: Target,
    out: &mut Out,
) {
    let full = target
        .cluster_ix
        .and_then(|k| cx.snap.clusters.get(k))
        .map(|c| &c.breaker)
        .filter(|b| !b.has_room() && !(cx.idle)(target.addr, b));
    if let Some(b) = full {
        Session::await_slot(ex, b, head, target, cx.now, out);
        return;
    }
    ex.uncommitted = Some((out.to_up.len(), out.up.len()));
    if !head.is_empty() {
        out.to_up.push(Chunk::Owned(head));
    }
    connect_to(ex, target, cx.now, out);
    ex.begin_attempt(cx.now);
}

/// Points `ex` at `target`: ids for its record, deadlines, and the connect
/// action.
pub(super) fn connect_to(ex: &mut Exchange, target: Target, now: u64, out: &mut Out) {
    if let Some(a) = &mut ex.attempt {
        a.connecting(now);
    }
    ex.record.cluster = target.cluster;
    ex.record.endpoint = target.endpoint;
    ex.record.arm = target.arm;
    ex.record.locality = target.locality;
    ex.connect_deadline = now.saturating_add(target.connect_timeout_ns);
    ex.request_deadline = match target.request_timeout_ns {
        0 => u64::MAX,
        t => now.saturating_add(t),
    };
    ex.read_ns = target.read_timeout_ns;
    let c = Connect {
        addr: target.addr,
        cluster: target.cluster_ix,
        timeout_ns: target.connect_timeout_ns,
        fresh: false,
        idle_ns: target.idle_timeout_ns,
        tls: target.tls,
        l4: ex.tunnel,
    };
    ex.connect = Some(c);
    out.up.push(UpOp::Connect(c));
}

/// Methods a client may send again without changing the outcome
/// (RFC 9110 section 9.2.2).
fn idempotent(method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}
