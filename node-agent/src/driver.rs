//! I/O drivers: thin loops that move bytes between sockets and the sans-IO
//! [`crate::proxy::Session`]. `epoll` (on mio) runs everywhere; `uring`
//! needs io_uring. Every decision they share lives once in
//! [`core::flow`]; this module holds the rest both use: listener and
//! upstream sockets, the slot table, send queues and the io_uring probe.

pub mod core;
pub mod epoll;
pub mod spare;
pub mod uring;

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// A driver's connection table: slots reused through a free list, so an
/// index stays valid while its connection lives. Reads and writes go
/// through the `Vec` it dereferences to.
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<T>,
    free: Vec<usize>,
}

impl<T: Default> Slab<T> {
    /// An empty table.
    pub fn new() -> Slab<T> {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// A free slot's index (holding `T::default()`), reused first.
    pub fn alloc(&mut self) -> usize {
        match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(T::default());
                self.slots.len() - 1
            }
        }
    }

    /// Takes slot `i`'s value out and frees the slot for reuse.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        let v = std::mem::take(self.slots.get_mut(i)?);
        self.free.push(i);
        Some(v)
    }

    /// Frees slot `i` (already emptied) for reuse.
    pub fn release(&mut self, i: usize) {
        self.free.push(i);
    }
}

impl<T: Default> Default for Slab<T> {
    fn default() -> Slab<T> {
        Slab::new()
    }
}

impl<T> std::ops::Deref for Slab<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.slots
    }
}

impl<T> std::ops::DerefMut for Slab<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.slots
    }
}

/// The accessors of [`core::flow::Driver`] that read the same in both
/// drivers (the shared state, and the links):
/// their slot tables name a downstream's upstream `Slot::Down(d).up` and an
/// upstream's downstream `Slot::Up(u).owner`. Expands inside an
/// `impl Driver for Worker` whose `Worker` has `slab: Slab<Slot>`.
macro_rules! slot_links {
    () => {
        fn core(&mut self) -> &mut Core {
            &mut self.core
        }

        fn up_of(&self, i: usize) -> Option<usize> {
            match self.slab.get(i) {
                Some(Slot::Down(d)) => d.up,
                _ => None,
            }
        }

        fn set_up_of(&mut self, i: usize, j: Option<usize>) {
            if let Some(Slot::Down(d)) = self.slab.get_mut(i) {
                d.up = j;
            }
        }

        fn owner_of(&self, j: usize) -> Option<usize> {
            match self.slab.get(j) {
                Some(Slot::Up(u)) => u.owner,
                _ => None,
            }
        }

        fn set_owner(&mut self, j: usize, owner: Option<usize>) {
            if let Some(Slot::Up(u)) = self.slab.get_mut(j) {
                u.owner = owner;
            }
        }

        fn close_up_when_flushed(&mut self, j: usize) {
            if let Some(Slot::Up(u)) = self.slab.get_mut(j) {
                u.close_when_flushed = true;
            }
        }

        fn wake(&mut self, i: usize) {
            self.core.todo.push(i);
        }
    };
}
pub(crate) use slot_links;

/// Why a driver stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// Setting up the poller or a listener failed.
    #[error("{what}")]
    Setup {
        /// What was being set up.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Binds one worker's SO_REUSEPORT listener on `addr` (non-blocking).
pub fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    // Accepted sockets inherit these from the listener (the kernel clones
    // the listening socket), which spares three setsockopt calls per
    // accepted connection; `accepted_sockets_inherit_the_client_options`
    // checks that they do.
    tune_downstream(&sock);
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// Receive buffer of upstream sockets and send buffer of client sockets
/// (the kernel doubles the value). Left to autotuning, a response whose
/// client does not read fills the agent's upstream receive buffer up to
/// `tcp_rmem` max (32 MiB on some hosts) and the client's send buffer up
/// to `tcp_wmem` max (4 MiB): a few hundred such clients move gigabytes
/// through the agent, push the host's TCP into memory pressure and stall
/// every connection on it. Fixed buffers bound what each stalled client
/// costs (about 1 MiB of kernel memory). The price, measured on io_uring
/// (docs/BENCHMARKS.md): one L4 bulk connection moves ~1.5 GB/s instead of
/// ~1.8 on loopback (64 KiB halved it; 1 MiB matched autotuning but let
/// 200 stalled clients move 800 MB through the agent as they connected).
/// Clients are pods on the same node (microsecond RTT), where 512 KiB in
/// flight is plenty.
pub const SOCKET_BUF: usize = 256 * 1024;

/// Socket options for client connections, set on the listener whose
/// accepted sockets inherit them: no Nagle, a bounded send buffer
/// ([`SOCKET_BUF`]) of which at most [`NOTSENT_LOWAT`] may be unsent.
fn tune_downstream(sock: &impl std::os::fd::AsFd) {
    let s = SockRef::from(sock);
    let _ = s.set_tcp_nodelay(true);
    let _ = s.set_send_buffer_size(SOCKET_BUF);
    let _ = s.set_tcp_notsent_lowat(NOTSENT_LOWAT);
}

/// Unsent bytes a client socket takes (`TCP_NOTSENT_LOWAT`): a send stops
/// there, and the socket polls writable again below half of it. Bytes in
/// flight are bounded by the client's window, so a client that stops
/// reading holds its receive window plus this much of the host's memory
/// rather than the whole send buffer: 200 such clients of large bodies
/// moved 2x the bytes through the worker as they connected with the send
/// buffer alone (legitimate p99 beside them 120-150 ms instead of 70-85).
/// 32 KiB rather than 64: the 200 moved 22.1 MB instead of 28.4 MB in
/// their first 1.5 s, and L4 bulk kept its GB/s (1.60, 1.67 vs 1.57, 1.44
/// in alternating runs).
pub const NOTSENT_LOWAT: u32 = 32 * 1024;

/// A non-blocking upstream socket, not connected yet. `mark` (if not 0)
/// is set as SO_MARK so the redirect rules can skip the agent's own
/// traffic.
pub fn upstream_socket(addr: SocketAddr, mark: u32) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    sock.set_recv_buffer_size(SOCKET_BUF)?;
    if mark != 0 {
        sock.set_mark(mark)?;
    }
    Ok(sock)
}

/// An upstream socket with a non-blocking connect started.
pub fn connect_upstream(addr: SocketAddr, mark: u32) -> io::Result<std::net::TcpStream> {
    let sock = upstream_socket(addr, mark)?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(sock.into())
}

/// Makes closing `sock` send a RST and drop unsent bytes (SO_LINGER 0)
/// instead of leaving an orphan that keeps its send buffer while it tries
/// to deliver to a peer that does not read.
pub fn abort_on_close(sock: &impl std::os::fd::AsFd) {
    let _ = SockRef::from(sock).set_linger(Some(std::time::Duration::ZERO));
}

/// The pre-REDIRECT destination of a connection accepted on a transparent
/// listener (`SO_ORIGINAL_DST`, or its IPv6 twin).
pub fn original_dst(stream: &impl std::os::fd::AsFd, local: SocketAddr) -> Option<SocketAddr> {
    let s = SockRef::from(stream);
    let got = if local.is_ipv4() {
        s.original_dst_v4()
    } else {
        s.original_dst_v6()
    };
    got.ok().and_then(|a| a.as_socket())
}

/// Bytes waiting to be sent on one socket, in order.
#[derive(Debug, Default)]
pub struct SendQueue {
    bufs: VecDeque<Vec<u8>>,
    /// Bytes of the front buffer already sent.
    front_sent: usize,
    len: usize,
}

/// Most slices handed to one vectored write.
const MAX_IOV: usize = 16;

impl SendQueue {
    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends an owned buffer.
    pub fn push(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.bufs.push_back(bytes);
        }
    }

    /// Writes as much as the socket takes. `Ok(true)`: the queue is empty.
    pub fn flush(&mut self, w: &mut impl Write) -> io::Result<bool> {
        while !self.bufs.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, b) in self.bufs.iter().take(MAX_IOV).enumerate() {
                let start = if i == 0 { self.front_sent } else { 0 };
                slices[i] = IoSlice::new(b.get(start..).unwrap_or_default());
                n += 1;
            }
            match w.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.consume(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.bufs.front() else {
                return;
            };
            let left = front.len() - self.front_sent;
            if n < left {
                self.front_sent += n;
                return;
            }
            n -= left;
            self.front_sent = 0;
            if let Some(v) = self.bufs.pop_front() {
                spare::give(v);
            }
        }
    }
}

/// What [`send_chunks`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Bytes that went into the send queue.
    pub queued: usize,
    /// A write took less than offered.
    pub short: bool,
    /// The socket said it would block: it stays unwritable until its next
    /// writability event. (Bytes queued behind others without a write
    /// attempt do not make it so: the socket may still be writable, and
    /// an edge-triggered poller would never say so again.)
    pub blocked: bool,
}

/// Sends `chunks` (from [`crate::proxy::Out`]) on `w` if the queue is empty
/// and the socket writable, straight from their buffers; whatever the
/// socket does not take is queued (owned chunks moved, input ranges
/// copied).
pub fn send_chunks(
    w: Option<&mut dyn Write>,
    q: &mut SendQueue,
    chunks: &mut Vec<crate::proxy::Chunk>,
    input: &[u8],
) -> io::Result<Sent> {
    let mut sent = 0usize;
    let mut short = false;
    let mut blocked = false;
    if let Some(w) = w
        && q.is_empty()
        && chunks.len() <= MAX_IOV
    {
        let total: usize = chunks.iter().map(|c| c.bytes(input).len()).sum();
        loop {
            if sent >= total {
                break;
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            let mut skip = sent;
            for c in chunks.iter() {
                let b = c.bytes(input);
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                slices[n] = IoSlice::new(&b[skip..]);
                skip = 0;
                n += 1;
            }
            match w.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    sent += k;
                    if sent < total {
                        short = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut queued = 0;
    let mut skip = sent;
    for c in chunks.drain(..) {
        let len = c.bytes(input).len();
        if skip >= len {
            skip -= len;
            continue;
        }
        let rest = match c {
            crate::proxy::Chunk::Owned(mut v) if skip == 0 => {
                v.shrink_to_fit();
                v
            }
            other => other.bytes(input)[skip..].to_vec(),
        };
        skip = 0;
        queued += rest.len();
        q.push(rest);
    }
    Ok(Sent {
        queued,
        short,
        blocked,
    })
}

/// Whether io_uring can be set up here; on failure, the errno (EPERM under
/// seccomp or `kernel.io_uring_disabled`, ENOSYS without support).
pub fn probe_uring() -> Result<(), i32> {
    match io_uring::IoUring::new(2) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::ENOSYS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Chunk;

    /// A writer that takes at most `cap` bytes per call, then blocks.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let n = b.len().min(self.cap);
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn accepted_sockets_inherit_the_client_options() {
        let l = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        let (a, _) = loop {
            match l.accept() {
                Ok(x) => break x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let s = SockRef::from(&a);
        assert!(s.tcp_nodelay().unwrap());
        // The kernel doubles the asked size.
        assert_eq!(s.send_buffer_size().unwrap(), 2 * SOCKET_BUF);
        assert_eq!(s.tcp_notsent_lowat().unwrap(), NOTSENT_LOWAT);
    }

    #[test]
    fn partial_sends_queue_the_rest_in_order() {
        let input = b"0123456789";
        let mut w = Trickle {
            got: Vec::new(),
            cap: 4,
            calls_left: 2,
        };
        let mut q = SendQueue::default();
        let mut chunks = vec![
            Chunk::Owned(b"HEAD".to_vec()),
            Chunk::Input(2..8),
            Chunk::Owned(b"T".to_vec()),
        ];
        let sent = send_chunks(Some(&mut w), &mut q, &mut chunks, input).unwrap();
        assert_eq!(w.got, b"HEAD2345");
        assert_eq!((sent.queued, sent.short, sent.blocked), (3, true, true));
        w.calls_left = 10;
        assert!(q.flush(&mut w).unwrap());
        assert_eq!(w.got, b"HEAD234567T");
        assert!(q.is_empty());
        // Not writable: everything is queued.
        let mut chunks = vec![Chunk::Input(0..3)];
        let sent = send_chunks(None, &mut q, &mut chunks, input).unwrap();
        assert_eq!((sent.queued, sent.blocked, q.len()), (3, false, 3));
    }
}
