//! The epoll driver's primitives for the shared decisions in
//! [`crate::driver::core::flow`]: reading a few facts off its slots and
//! turning "send", "open", "close" into socket calls. Nothing here decides.

use std::io;
use std::net::Shutdown;

use super::{Slot, Worker};
use crate::driver::core::Core;
use crate::driver::core::flow::{Driver, TimerSlot, UpFacts, UpTarget};
use crate::driver::core::secure;
use crate::driver::send_chunks;
use crate::metrics::Driver as Counter;
use crate::proxy::{Chunk, Connect, Session};
use crate::tls::conn::TlsConn;

impl Driver for Worker {
    type Src<'a> = &'a [u8];

    fn no_src<'a>() -> &'a [u8] {
        &[]
    }

    crate::driver::slot_links!();

    fn parts(&mut self, i: usize) -> (&mut Core, Option<&mut Session>) {
        let session = match self.slab.get_mut(i) {
            Some(Slot::Down(d)) => Some(&mut d.session),
            _ => None,
        };
        (&mut self.core, session)
    }

    fn timer_slot(&mut self, i: usize) -> Option<TimerSlot<'_>> {
        match self.slab.get_mut(i) {
            Some(Slot::Down(d)) => Some(TimerSlot {
                session: &mut d.session,
                serial: d.serial,
                armed: &mut d.armed,
            }),
            _ => None,
        }
    }

    fn backlog(&self, i: usize) -> Option<(bool, bool)> {
        match self.slab.get(i) {
            Some(Slot::Down(d)) => Some((d.owes_bytes(), !self.up_queue_empty(d.up))),
            _ => None,
        }
    }

    fn down_idle(&self, i: usize) -> bool {
        matches!(self.slab.get(i), Some(Slot::Down(d)) if d.q.is_empty())
    }

    fn up_target(&self, j: usize) -> Option<&UpTarget> {
        match self.slab.get(j) {
            Some(Slot::Up(u)) => Some(&u.target),
            _ => None,
        }
    }

    fn up_facts(&self, j: usize) -> Option<UpFacts> {
        match self.slab.get(j) {
            Some(Slot::Up(u)) => Some(UpFacts {
                addr: u.target.addr,
                idle_ns: u.target.idle_ns,
                connected: u.connected,
                clean: u.q.is_empty() && !u.eof,
                shut_wr: u.shut_wr,
                eof: u.eof,
                tx_pending: !u.q.is_empty(),
                group: u.target.group(),
                tls: u.target.tls,
            }),
            _ => None,
        }
    }

    fn send_down(&mut self, i: usize, chunks: &mut Vec<Chunk>, src: &[u8]) {
        let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
            chunks.clear();
            return;
        };
        if let Some(t) = &mut d.tls {
            secure::seal(t, chunks, src);
        }
        let w: Option<&mut dyn io::Write> = d.writable.then_some(&mut d.sock);
        match send_chunks(w, &mut d.q, chunks, src) {
            Ok(sent) => {
                if sent.blocked {
                    d.writable = false;
                }
                let st = self.core.stats();
                st.driver(Counter::QueuedBytes, sent.queued as u64);
                st.driver(Counter::ShortSends, u64::from(sent.short));
            }
            Err(_) => d.close = true,
        }
        self.sync_interest(i);
    }

    fn send_up(&mut self, j: usize, chunks: &mut Vec<Chunk>, src: &[u8]) {
        let Some(Slot::Up(u)) = self.slab.get_mut(j) else {
            chunks.clear();
            return;
        };
        if let Some(t) = &mut u.tls {
            secure::seal(t, chunks, src);
        }
        let w: Option<&mut dyn io::Write> = (u.connected && u.writable).then_some(&mut u.sock);
        match send_chunks(w, &mut u.q, chunks, src) {
            Ok(sent) => {
                if sent.blocked {
                    u.writable = false;
                }
                let st = self.core.stats();
                st.driver(Counter::QueuedBytes, sent.queued as u64);
                st.driver(Counter::ShortSends, u64::from(sent.short));
            }
            // Reported as the upstream's failure on its next read.
            Err(_) => u.readable = true,
        }
        self.sync_interest(j);
    }

    fn mark_down(&mut self, i: usize, shut_wr: bool, close: bool) {
        if let Some(Slot::Down(d)) = self.slab.get_mut(i) {
            d.shut_wr |= shut_wr;
            d.close |= close;
        }
    }

    fn down_marked_close(&self, i: usize) -> bool {
        matches!(self.slab.get(i), Some(Slot::Down(d)) if d.close)
    }

    fn shut_down_now(&mut self, i: usize) {
        if let Some(Slot::Down(d)) = self.slab.get_mut(i)
            && d.shut_wr
        {
            let _ = d.sock.shutdown(Shutdown::Write);
        }
    }

    fn mark_up_shut(&mut self, j: usize) {
        if let Some(Slot::Up(u)) = self.slab.get_mut(j) {
            u.shut_wr = true;
        }
    }

    fn abort_on_close(&mut self, i: usize) {
        if let Some(Slot::Down(d)) = self.slab.get(i) {
            crate::driver::abort_on_close(&d.sock);
        }
    }

    fn open_up(&mut self, c: &Connect, target: UpTarget) -> Option<usize> {
        self.open_upstream(c, target)
    }

    fn drop_down(&mut self, i: usize) -> Option<usize> {
        match self
            .slab
            .get_mut(i)
            .map(|s| std::mem::replace(s, Slot::Free))
        {
            Some(Slot::Down(mut d)) => {
                let _ = self.poll.registry().deregister(&mut d.sock);
                self.slab.release(i);
                Some(d.session.listener())
            }
            Some(other) => {
                self.slab[i] = other;
                None
            }
            None => None,
        }
    }

    fn drop_up(&mut self, j: usize) -> bool {
        self.drop_upstream(j)
    }

    fn take_due(&mut self, i: usize, serial: u64, t: u64) -> bool {
        match self.slab.get_mut(i) {
            Some(Slot::Down(d)) if d.serial == serial && d.armed == Some(t) => {
                d.armed = None;
                true
            }
            _ => false,
        }
    }

    fn timer_live(&self, i: usize, serial: u64, t: u64) -> bool {
        matches!(self.slab.get(i), Some(Slot::Down(d)) if d.serial == serial && d.armed == Some(t))
    }

    fn downs(&self) -> Vec<usize> {
        (0..self.slab.len())
            .filter(|&i| matches!(self.slab[i], Slot::Down(_)))
            .collect()
    }

    fn ups(&self) -> Vec<usize> {
        (0..self.slab.len())
            .filter(|&i| matches!(self.slab[i], Slot::Up(_)))
            .collect()
    }

    fn stop_accepting(&mut self) {
        Worker::stop_accepting(self);
    }

    fn resume_accepts(&mut self) {
        let listeners: Vec<usize> = (0..self.slab.len())
            .filter(|&i| matches!(self.slab[i], Slot::Listener(..)))
            .collect();
        for li in listeners {
            self.accept(li);
        }
    }

    fn listeners(&self) -> Vec<(usize, std::net::SocketAddr)> {
        self.slab
            .iter()
            .filter_map(|s| match s {
                Slot::Listener(l, idx) => l.local_addr().ok().map(|a| (*idx, a)),
                _ => None,
            })
            .collect()
    }

    fn add_listener(&mut self, idx: usize, sock: std::net::TcpListener) -> std::io::Result<()> {
        Worker::add_listener(self, idx, sock)
    }

    fn copy_src(bytes: &[u8]) -> &[u8] {
        bytes
    }

    fn tls(&mut self, k: usize) -> Option<&mut TlsConn> {
        match self.slab.get_mut(k) {
            Some(Slot::Down(d)) => d.tls.as_deref_mut(),
            Some(Slot::Up(u)) => u.tls.as_deref_mut(),
            _ => None,
        }
    }

    fn set_tls(&mut self, j: usize, t: Box<TlsConn>) {
        if let Some(Slot::Up(u)) = self.slab.get_mut(j) {
            u.tls = Some(t);
        }
    }

    fn push_raw(&mut self, k: usize, bytes: Vec<u8>) {
        match self.slab.get_mut(k) {
            Some(Slot::Down(d)) => d.q.push(bytes),
            Some(Slot::Up(u)) => u.q.push(bytes),
            _ => return,
        }
        self.sync_interest(k);
    }

    fn local_addr(&self, i: usize) -> Option<std::net::SocketAddr> {
        match self.slab.get(i) {
            Some(Slot::Down(d)) => d.sock.local_addr().ok(),
            _ => None,
        }
    }

    fn close_listener(&mut self, idx: usize) {
        for i in 0..self.slab.len() {
            if matches!(&self.slab[i], Slot::Listener(_, k) if *k == idx) {
                self.close_listener_slot(i);
            }
        }
    }
}
