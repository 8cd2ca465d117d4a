//! What TLS brings to a session: the client's verified identity and
//! handshake time (for records and authz), the mesh transport header that
//! names a mesh connection's destination, and the upstream's handshake
//! result.

use std::net::SocketAddr;
use std::sync::Arc;

use ringlog::Reason;
use ringlog::record::Flags;

use super::{Exchange, Mode, Session};
use crate::proxy::{Cx, Out};
use crate::tls::header::{Header, StreamProtocol};
use crate::tls::spiffe::SpiffeId;

/// The peer of a TLS downstream connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Peer {
    /// Its verified SPIFFE ID (None: no client certificate).
    pub id: Option<Arc<SpiffeId>>,
    /// Its ring name id (0: none).
    pub name: u16,
    /// The handshake, `(began, ns)`, not yet charged to an exchange.
    pub handshake: Option<(u64, u64)>,
}

/// What a TLS connection's session waits for before any request: the
/// handshake, then (mesh) the transport header. Either is bounded by the
/// listener's `header_read` timeout, as a request head is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TlsWait {
    /// Nothing (plaintext, or both arrived).
    #[default]
    No,
    /// The handshake; then the header if `header_next`.
    Handshake {
        /// A mesh listener's connection: the header comes next.
        header_next: bool,
    },
    /// The mesh transport header.
    Header,
}

impl Session {
    /// The connection is TLS: the handshake (and, with `header`, the mesh
    /// transport header) must arrive within `timeouts.header_read`.
    pub fn expect_tls(&mut self, header: bool) {
        self.tls_wait = TlsWait::Handshake {
            header_next: header,
        };
    }

    /// Whether the session waits for a handshake or a header.
    pub(super) fn awaits_tls(&self) -> bool {
        self.tls_wait != TlsWait::No
    }

    /// The client's TLS handshake completed at `now` after `ns`, with
    /// verified identity `id` (ring name id `name`).
    pub fn on_tls_established(&mut self, now: u64, ns: u64, id: Option<SpiffeId>, name: u16) {
        self.tls_wait = match self.tls_wait {
            TlsWait::Handshake { header_next: true } => TlsWait::Header,
            _ => TlsWait::No,
        };
        self.peer = Some(Box::new(Peer {
            id: id.map(Arc::new),
            name,
            handshake: Some((now.saturating_sub(ns), ns)),
        }));
    }

    /// A mesh connection's transport header arrived: the stream goes to
    /// `h.target` as `h.protocol`, like a transparent listener's original
    /// destination. `local` is the address the client dialled: the target
    /// must be on it (a peer cannot use this node as a relay elsewhere).
    /// False: refused, and the session closes.
    pub fn on_mesh_header(
        &mut self,
        cx: &mut Cx<'_>,
        h: Header,
        local: Option<SocketAddr>,
        out: &mut Out,
    ) -> bool {
        if local.is_none_or(|l| l.ip() != h.target.ip()) {
            self.closing = true;
            out.close_down = true;
            return false;
        }
        self.tls_wait = TlsWait::No;
        self.orig_dst = Some(h.target);
        match h.protocol {
            StreamProtocol::Http => self.mode = Mode::Http,
            StreamProtocol::Tcp => {
                self.mode = Mode::Tcp;
                self.start_l4(cx, out);
            }
        }
        self.commit();
        true
    }

    /// The destination port authz rules see: the original destination's
    /// (transparent and mesh listeners), else the listener's.
    pub(super) fn dst_port(&self, cx: &Cx<'_>) -> u16 {
        match self.orig_dst {
            Some(a) => a.port(),
            None => cx
                .snap
                .listeners
                .get(self.listener)
                .map_or(0, |l| l.bind.port()),
        }
    }

    /// Whether the listener's authz rules let this client reach `route`.
    pub(super) fn authorized(&self, cx: &Cx<'_>, route: Option<usize>) -> bool {
        let Some(l) = cx.snap.listeners.get(self.listener) else {
            return true;
        };
        if l.authz.is_empty() {
            return true;
        }
        let id = self.peer.as_ref().and_then(|p| p.id.as_deref());
        l.authz.allows(id, route, self.dst_port(cx))
    }

    /// A new exchange's record carries the peer, and the first one the
    /// handshake that preceded it.
    pub(super) fn stamp_peer(&mut self, ex: &mut Exchange) {
        if let Some(p) = &mut self.peer {
            ex.record.peer = p.name;
            if let Some((began, ns)) = p.handshake.take() {
                ex.marks.start = ex.marks.start.min(began);
                ex.marks.tls_down = ns;
            }
        }
    }

    /// The upstream's TLS handshake completed after `ns` with identity
    /// name `name` (0: none): the exchange that opened it records both.
    pub fn on_up_tls(&mut self, ns: u64, name: u16) {
        if let Some(ex) = &mut self.ex {
            ex.marks.tls_up = ex.marks.tls_up.saturating_add(ns);
            if name != 0 {
                ex.record.peer = name;
            }
        }
    }

    /// The upstream TLS handshake failed (or the upstream's identity was
    /// not the expected one): no connection, a 502 `tls_handshake` (a
    /// tunnel closes). A TLS failure after the handshake is a reset.
    pub fn on_up_tls_failed(&mut self, cx: &mut Cx<'_>, out: &mut Out) {
        let msg = "upstream TLS handshake failed";
        self.no_connection(cx, 502, Reason::TlsHandshake, 0, msg, out);
    }

    /// Refuses `ex` for authz: 403 on HTTP, a close on L4.
    pub(super) fn deny(&mut self, mut ex: Exchange, cx: &Cx<'_>, out: &mut Out) {
        if ex.tunnel {
            ex.record.reason = Reason::AuthzDenied;
            ex.record.flags.0 |= Flags::ERROR;
            ex.close_after = true;
            self.finish(ex, cx.now, out);
        } else {
            let msg = "the client identity may not reach this target";
            self.local(ex, cx.now, 403, Reason::AuthzDenied, msg, out);
        }
    }
}
