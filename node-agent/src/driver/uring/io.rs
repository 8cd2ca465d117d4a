//! One socket's io_uring state: what was received and not yet consumed
//! (provided buffers), what waits to be sent (owned bytes, or ranges of a
//! receive buffer forwarded as they arrived), the one send in flight with
//! its `msghdr`/`iovec`, and how many operations still owe a completion.
//!
//! A socket's state lives in a `Box` that is dropped only when no
//! operation on it is in flight, so every pointer handed to the kernel
//! (the `msghdr`, its `iovec`s, the sockaddr and timespec of a connect)
//! stays valid until its completion arrives.

use std::collections::VecDeque;

use io_uring::types::Timespec;

use super::bufs::Bufs;
use crate::driver::core::budget;
use crate::driver::spare;

/// Most buffers a send takes at once.
const MAX_IOV: usize = 8;

/// Bytes waiting to be sent.
#[derive(Debug)]
pub enum Tx {
    /// Owned bytes (a rewritten head, a local response, a copy); `.1` sent.
    Owned(Vec<u8>, usize),
    /// `start..end` of receive buffer `bid`, held until sent.
    Buf {
        /// Buffer id.
        bid: u16,
        /// Next byte to send.
        start: usize,
        /// End of the range.
        end: usize,
    },
}

impl Tx {
    fn len(&self) -> usize {
        match self {
            Tx::Owned(v, sent) => v.len() - sent,
            Tx::Buf { start, end, .. } => end - start,
        }
    }
}

/// Received bytes not yet consumed.
#[derive(Debug)]
pub enum Rx {
    /// `len` bytes in provided buffer `bid`.
    Ring(u16, usize),
    /// A copy, made to give a buffer back while its consumer was stalled.
    Owned(Vec<u8>),
}

/// The recv a socket has armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvOp {
    /// None: the pump arms one when it wants bytes.
    Idle,
    /// A multishot recv: one CQE per buffer while bytes arrive. For
    /// request and response traffic: armed once, it costs nothing per
    /// message.
    Multi,
    /// A single-shot recv of one buffer, for a socket that moves bulk
    /// bytes. (A multishot recv on a socket with a full receive buffer
    /// takes up to 33 buffers in one go, before the driver can see that
    /// their consumer is stalled: 200 stalled downloads took 140 MB out
    /// of their sockets that way, and starved everyone else of buffers.)
    Once,
    /// Being cancelled (its last CQE is due).
    Cancelling,
}

/// What a socket's last receive showed, which decides its next recv
/// (the core's [`budget::Pace`], and the ring's own case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// A fresh upstream connection, whose first response may be small or
    /// large: a single-shot recv of at most [`budget::FIRST_READ`] bytes,
    /// not held back by the budget.
    Fresh,
    /// Short receives (requests, small responses): a multishot recv.
    Small,
    /// The last receive filled what it asked for: a single-shot recv of
    /// one buffer that counts against the turn's bulk budget.
    Bulk,
    /// The recv found the buffer ring empty: a single-shot recv (a
    /// multishot one could take a buffer per 32 KiB waiting), not held
    /// back by the budget, since it may be a request head.
    Starved,
}

impl Pace {
    /// The bytes a recv at this pace asks for, given buffers of `buf`
    /// bytes: the core's first read for a fresh connection, else a whole
    /// buffer.
    pub fn recv_len(self, buf: usize) -> usize {
        match self {
            Pace::Fresh => budget::Pace::Fresh.read_len(buf),
            Pace::Small | Pace::Bulk | Pace::Starved => buf,
        }
    }
}

impl From<budget::Pace> for Pace {
    fn from(p: budget::Pace) -> Pace {
        match p {
            budget::Pace::Fresh => Pace::Fresh,
            budget::Pace::Small => Pace::Small,
            budget::Pace::Bulk => Pace::Bulk,
        }
    }
}

impl RecvOp {
    /// A recv is armed and not being cancelled.
    pub fn armed(self) -> bool {
        matches!(self, RecvOp::Multi | RecvOp::Once)
    }
}

/// A socket and its operations.
#[derive(Debug)]
pub struct Io {
    /// The socket (closed when the state is dropped).
    pub sock: socket2::Socket,
    /// Received bytes not yet consumed, in order.
    pub rx: VecDeque<Rx>,
    /// Waiting to be sent, in order.
    pub tx: VecDeque<Tx>,
    /// A send is in flight.
    pub sending: bool,
    /// The peer's socket buffer was full: no send until a POLLOUT poll (in
    /// flight) says it is writable again. Sends never wait in the kernel
    /// themselves, so a peer that stops reading never pins the provided
    /// buffers a send forwards from.
    pub blocked: bool,
    /// Bytes the send in flight covers.
    sending_len: usize,
    /// A zero-copy send reported this result; its buffers stay held until
    /// the kernel's notification that it is done with them.
    pub zc_sent: Option<i32>,
    /// The recv armed on the socket, if any.
    pub recv: RecvOp,
    /// Which recv the socket gets next.
    pub pace: Pace,
    /// The recv stopped on an empty buffer ring (re-armed next turn).
    pub starved: bool,
    /// The peer closed its side (recv returned 0).
    pub eof: bool,
    /// A receive or send failed.
    pub err: bool,
    /// The eof / error has been reported to the session.
    pub reported: bool,
    /// Operations whose completion is still due.
    pub inflight: u32,
    /// Shut down the write side once `tx` is empty.
    pub shut_wr: bool,
    /// Being closed: freed when `inflight` reaches 0.
    pub closing: bool,
    iov: [libc::iovec; MAX_IOV],
    msg: libc::msghdr,
    /// Connect target and its timeout (pointed to by the connect SQEs).
    pub addr: Option<socket2::SockAddr>,
    /// Timeout for a linked connect.
    pub ts: Timespec,
    /// TLS (a TLS or mesh listener's or cluster's connection).
    pub tls: Option<Box<crate::tls::conn::TlsConn>>,
}

impl Io {
    /// State for `sock`.
    pub fn new(sock: socket2::Socket) -> Io {
        // SAFETY: msghdr and iovec are plain C structs for which all-zero
        // bytes are a valid (empty) value.
        let (msg, iov) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        Io {
            sock,
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            sending: false,
            blocked: false,
            sending_len: 0,
            zc_sent: None,
            recv: RecvOp::Idle,
            pace: Pace::Small,
            starved: false,
            eof: false,
            err: false,
            reported: false,
            inflight: 0,
            shut_wr: false,
            closing: false,
            iov,
            msg,
            addr: None,
            ts: Timespec::new(),
            tls: None,
        }
    }

    /// Nothing queued or in flight to send.
    pub fn tx_idle(&self) -> bool {
        self.tx.is_empty() && !self.sending
    }

    /// Bytes queued to send, the send in flight included.
    pub fn tx_bytes(&self) -> usize {
        self.tx.iter().map(Tx::len).sum()
    }

    /// Copies the queued ranges of receive buffers that no send in flight
    /// covers into owned memory and gives the buffers back: a peer that
    /// does not read must not keep the worker's shared buffers. Copies at
    /// most `left` buffers and counts them off it.
    pub fn spill_tx(&mut self, bufs: &mut Bufs, left: &mut usize) {
        let skip = if self.sending { MAX_IOV } else { 0 };
        for t in self.tx.iter_mut().skip(skip) {
            if *left == 0 {
                return;
            }
            if let Tx::Buf { bid, start, end } = *t {
                *left -= 1;
                let copy = bufs
                    .data(bid, end)
                    .get(start..)
                    .unwrap_or_default()
                    .to_vec();
                *t = Tx::Owned(copy, 0);
                bufs.release(bid);
            }
        }
    }

    /// Copies received buffers not yet consumed into owned memory and gives
    /// them back (their consumer is stalled behind a slow peer). Copies at
    /// most `left` buffers and counts them off it.
    pub fn spill_rx(&mut self, bufs: &mut Bufs, left: &mut usize) {
        for r in self.rx.iter_mut() {
            if *left == 0 {
                return;
            }
            if let Rx::Ring(bid, len) = *r {
                *left -= 1;
                // (A stalled reader's buffers; copied once, then owned.)
                *r = Rx::Owned(bufs.data(bid, len).to_vec());
                bufs.release(bid);
            }
        }
    }

    /// Bytes of the send in flight.
    pub fn sending_len(&self) -> usize {
        self.sending_len
    }

    /// Fills the `msghdr` for the next send and returns a pointer to it,
    /// or None if there is nothing to send (or a send is in flight).
    pub fn prepare_send(&mut self, bufs: &Bufs) -> Option<*const libc::msghdr> {
        if self.sending || self.tx.is_empty() {
            return None;
        }
        let mut n = 0;
        let mut total = 0;
        for t in self.tx.iter().take(MAX_IOV) {
            let bytes: &[u8] = match t {
                Tx::Owned(v, sent) => v.get(*sent..).unwrap_or_default(),
                Tx::Buf { bid, start, end } => {
                    bufs.data(*bid, *end).get(*start..).unwrap_or_default()
                }
            };
            self.iov[n] = libc::iovec {
                iov_base: bytes.as_ptr().cast_mut().cast(),
                iov_len: bytes.len(),
            };
            total += bytes.len();
            n += 1;
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = n;
        self.sending = true;
        self.sending_len = total;
        Some(&raw const self.msg)
    }

    /// A send completed with `n` bytes: drops what went out, releasing
    /// receive buffers whose forwarded range is done. Returns true if the
    /// send was short.
    pub fn sent(&mut self, mut n: usize, bufs: &mut Bufs) -> bool {
        self.sending = false;
        let short = n < self.sending_len;
        while n > 0 {
            let Some(front) = self.tx.front_mut() else {
                break;
            };
            let len = front.len();
            if n < len {
                match front {
                    Tx::Owned(_, sent) => *sent += n,
                    Tx::Buf { start, .. } => *start += n,
                }
                break;
            }
            n -= len;
            match self.tx.pop_front() {
                Some(Tx::Buf { bid, .. }) => {
                    bufs.release(bid);
                }
                Some(Tx::Owned(v, _)) => spare::give(v),
                None => {}
            }
        }
        short
    }

    /// Gives every held buffer back (the socket is being freed).
    pub fn release_all(&mut self, bufs: &mut Bufs) {
        for r in self.rx.drain(..) {
            if let Rx::Ring(bid, _) = r {
                bufs.release(bid);
            }
        }
        for t in self.tx.drain(..) {
            if let Tx::Buf { bid, .. } = t {
                bufs.release(bid);
            }
        }
    }
}
