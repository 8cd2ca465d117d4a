//! TLS in the shared core, written once for both drivers: ciphertext a
//! driver read is opened here and the plaintext handed to the session
//! (after the handshake, the peer identity and, on a mesh listener, the
//! transport header), ciphertext the connection owes goes back to the
//! driver's queue, and the client side of TLS clusters is set up when an
//! upstream opens. A driver only holds the [`TlsConn`] beside its socket
//! and seals outgoing chunks with [`seal`].

use std::net::SocketAddr;

use rustls::pki_types::ServerName;

use super::Core;
use super::flow::{self, Driver};
use crate::driver::spare;
use crate::metrics::TlsResult;
use crate::proxy::{Chunk, Connect};
use crate::snapshot::tls::ClusterTlsRt;
use crate::tls::conn::{Input, TlsConn};
use crate::tls::header::{Header, StreamProtocol};
use crate::tls::{HandshakeFailure, TlsError};

/// Replaces `chunks` (plaintext, input ranges of `src`) by one chunk of
/// ciphertext.
pub fn seal(t: &mut TlsConn, chunks: &mut Vec<Chunk>, src: &[u8]) {
    for c in chunks.drain(..) {
        match c {
            Chunk::Owned(v) => t.seal(&v),
            Chunk::Input(r) => t.seal(src.get(r).unwrap_or_default()),
        }
    }
    if let Some(wire) = output(t) {
        chunks.push(Chunk::Owned(wire));
    }
}

/// The ciphertext `t` owes its peer, in a spare buffer (None: nothing).
fn output(t: &mut TlsConn) -> Option<Vec<u8>> {
    if !t.wants_output() {
        return None;
    }
    let mut wire = spare::take();
    t.output(&mut wire);
    if wire.is_empty() {
        spare::give(wire);
        return None;
    }
    Some(wire)
}

/// Moves what slot `k`'s TLS owes its peer to the driver's queue.
pub fn flush<D: Driver>(d: &mut D, k: usize) {
    if let Some(wire) = d.tls(k).and_then(output) {
        d.push_raw(k, wire);
        d.wake(k);
    }
}

/// How a failed input counts.
fn failure(e: &TlsError) -> TlsResult {
    match e {
        TlsError::Handshake(f, _) => TlsResult::Failed(*f),
        TlsError::Header(_) => TlsResult::BadHeader,
        _ => TlsResult::Failed(HandshakeFailure::Protocol),
    }
}

/// Counts a completed handshake (`client`: this agent dialled) and
/// returns the ring name id of the peer's identity.
fn established(
    core: &mut Core,
    client: bool,
    resumed: bool,
    id: Option<&crate::tls::spiffe::SpiffeId>,
) -> u16 {
    let result = if resumed {
        TlsResult::Resumed
    } else {
        TlsResult::Ok
    };
    core.stats().tls(client, result);
    core.peer_name(id)
}

/// What opening ciphertext on a TLS slot gave.
struct Opened {
    /// The handshake was still going on before this input.
    handshaking: bool,
    /// What the connection made of it.
    res: Result<Input, TlsError>,
    /// The handshake resumed a session.
    resumed: bool,
    /// The plaintext (the core's reused buffer: hand it back with
    /// [`Core::put_plain`]).
    plain: Vec<u8>,
}

/// Opens `cipher` on slot `k` and moves what the connection owes its peer
/// to the driver's queue. None if `k` has no TLS.
fn open<D: Driver>(d: &mut D, k: usize, cipher: &[u8]) -> Option<Opened> {
    let mut plain = d.core().take_plain();
    let now = d.core().now;
    let Some(t) = d.tls(k) else {
        d.core().put_plain(plain);
        return None;
    };
    let handshaking = t.handshaking();
    let res = t.input(now, cipher, &mut plain);
    let resumed = t.resumed();
    flush(d, k);
    Some(Opened {
        handshaking,
        res,
        resumed,
        plain,
    })
}

/// Ciphertext arrived on TLS downstream `i`.
pub fn down_input<D: Driver>(d: &mut D, i: usize, cipher: &[u8]) {
    let now = d.core().now;
    let Some(Opened {
        handshaking,
        res,
        resumed,
        mut plain,
    }) = open(d, i, cipher)
    else {
        return;
    };
    match res {
        Err(e) => {
            if handshaking || matches!(e, TlsError::Header(_)) {
                d.core().stats().tls(false, failure(&e));
                // Nothing was in flight: the alert goes out, then the
                // connection closes.
                d.mark_down(i, false, true);
                d.wake(i);
            } else {
                flow::kill_down(d, i);
            }
        }
        Ok(got) => {
            if let Some((ns, id)) = got.established {
                let name = established(d.core(), false, resumed, id.as_ref());
                if let Some(s) = d.session(i) {
                    s.on_tls_established(now, ns, id, name);
                }
            }
            if let Some(h) = got.header {
                let local = d.local_addr(i);
                let mut ok = true;
                flow::with_session(d, i, |s, cx, out| ok = s.on_mesh_header(cx, h, local, out));
                if !ok {
                    d.core().stats().tls(false, TlsResult::TargetRefused);
                    plain.clear();
                }
            }
            if !plain.is_empty() {
                flow::with_input(d, i, D::copy_src(&plain), |s, cx, o| {
                    s.on_down_data(cx, &plain, o)
                });
            }
        }
    }
    d.core().put_plain(plain);
}

/// Ciphertext arrived on TLS upstream `j`.
pub fn up_input<D: Driver>(d: &mut D, j: usize, cipher: &[u8]) {
    let now = d.core().now;
    let owner = d.owner_of(j);
    let Some(Opened {
        handshaking,
        res,
        resumed,
        plain,
    }) = open(d, j, cipher)
    else {
        return;
    };
    match res {
        Err(e) if handshaking => {
            d.core().stats().tls(true, failure(&e));
            flow::close_up(d, j);
            if let Some(o) = owner {
                flow::with_session(d, o, |s, cx, out| s.on_up_tls_failed(cx, out));
            }
        }
        // A broken record after the handshake: the upstream failed as by a
        // reset (an idle pooled connection is just closed).
        Err(_) => match owner {
            Some(o) => flow::up_eof(d, j, o, true),
            None => flow::close_up(d, j),
        },
        Ok(got) => {
            if let Some((ns, id)) = got.established {
                let name = established(d.core(), true, resumed, id.as_ref());
                if let Some(t) = d.tls(j) {
                    t.set_peer_name(name);
                }
                if let Some(o) = owner {
                    // The connection is ready for the exchange only now.
                    if let Some(s) = d.session(o) {
                        s.on_up_ready(now, false);
                        s.on_up_tls(ns, name);
                    }
                    d.wake(o);
                }
            }
            match owner {
                Some(o) if !plain.is_empty() => {
                    flow::with_input(d, o, D::copy_src(&plain), |s, cx, x| {
                        s.on_up_data(cx, &plain, x)
                    });
                }
                // Idle in the pool: a session ticket is fine, bytes no
                // request asked for end it.
                None if !plain.is_empty() => flow::idle_up_event(d, j),
                _ => {}
            }
        }
    }
    d.core().put_plain(plain);
}

/// What a new connection for `c` needs: the address to dial and its TLS
/// state (None: plaintext). Err: the cluster's TLS cannot be set up (no
/// identity loaded, or the snapshot changed under the connect).
pub fn client_for(
    core: &Core,
    c: &Connect,
) -> Result<(SocketAddr, Option<Box<TlsConn>>), TlsResult> {
    if c.tls == 0 {
        return Ok((c.addr, None));
    }
    let rt = c
        .cluster
        .and_then(|k| core.snap.clusters.get(k))
        .filter(|cl| cl.tls_tag == c.tls)
        .and_then(|cl| cl.tls.clone())
        .ok_or(TlsResult::Failed(HandshakeFailure::Protocol))?;
    let ip = ServerName::IpAddress(c.addr.ip().into());
    let t = match &*rt {
        ClusterTlsRt::Mesh { expect, .. } => {
            let identity = core
                .shared
                .identity
                .load_full()
                .ok_or(TlsResult::NoIdentity)?;
            let cfg = identity
                .client(expect)
                .map_err(|_| TlsResult::Failed(HandshakeFailure::Protocol))?;
            let header = Header {
                target: c.addr,
                protocol: if c.l4 {
                    StreamProtocol::Tcp
                } else {
                    StreamProtocol::Http
                },
            };
            TlsConn::client(cfg, ip, core.now, Some(header))
        }
        ClusterTlsRt::Simple { config, sni } => {
            let name = sni.clone().unwrap_or(ip);
            TlsConn::client(config.clone(), name, core.now, None)
        }
    }
    .map_err(|_| TlsResult::Failed(HandshakeFailure::Protocol))?;
    Ok((rt.dial(c.addr), Some(Box::new(t))))
}

/// Gives new upstream `j` its TLS state and queues the ClientHello.
pub fn attach<D: Driver>(d: &mut D, j: usize, t: Box<TlsConn>) {
    d.set_tls(j, t);
    flush(d, j);
}
