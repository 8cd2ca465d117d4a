//! The worker's provided-buffer ring: fixed-size receive buffers the kernel
//! picks from when a multishot recv completes, so an idle connection holds
//! no buffer. A buffer given to the kernel is never touched by us until a
//! completion hands it back; it is returned to the ring only when nothing
//! refers to it any more (the session has consumed it and every send that
//! forwards bytes straight from it has completed).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// One buffer group per ring; its id.
pub const GROUP: u16 = 0;

/// The buffer memory and the ring of entries shared with the kernel.
#[derive(Debug)]
pub struct Bufs {
    /// Buffer memory: `count * size` bytes, written by the kernel. Kept as
    /// a raw allocation (never a Rust reference while the kernel may write).
    mem: *mut u8,
    mem_layout: Layout,
    size: usize,
    count: u16,
    /// Page-aligned ring of `count` entries, shared with the kernel.
    ring: *mut BufRingEntry,
    layout: Layout,
    /// Our copy of the ring tail.
    tail: u16,
    /// Holders per buffer id; 0 means the kernel owns it.
    refs: Vec<u16>,
    /// Buffers out of the ring (refs > 0).
    in_use: usize,
}

/// Why the buffer ring could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BufsError {
    /// The entry count must be a power of two between 1 and 32768.
    #[error("buffer count {0} is not a power of two in 1..=32768")]
    Count(u16),
    /// Allocation failed.
    #[error("allocating the buffer ring")]
    Alloc,
}

impl Bufs {
    /// `count` buffers of `size` bytes, every one touched now so the memory
    /// is resident from the start (RSS does not grow with traffic).
    pub fn new(count: u16, size: usize) -> Result<Bufs, BufsError> {
        if count == 0 || !count.is_power_of_two() || count > 32768 {
            return Err(BufsError::Count(count));
        }
        let bytes = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        let layout =
            Layout::from_size_align(bytes.max(4096), 4096).map_err(|_| BufsError::Alloc)?;
        // SAFETY: the layout has a non-zero size (at least one page).
        let ring = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if ring.is_null() {
            return Err(BufsError::Alloc);
        }
        let total = usize::from(count) * size;
        let mem_layout =
            Layout::from_size_align(total.max(1), 4096).map_err(|_| BufsError::Alloc)?;
        // SAFETY: non-zero size.
        let mem = unsafe { alloc_zeroed(mem_layout) };
        if mem.is_null() {
            // SAFETY: allocated just above with `layout`.
            unsafe { dealloc(ring.cast(), layout) };
            return Err(BufsError::Alloc);
        }
        for off in (0..total).step_by(4096) {
            // SAFETY: `off < total`, inside the allocation; nothing else has
            // seen it yet. Touching makes it resident before any traffic.
            unsafe { mem.add(off).write_volatile(0) };
        }
        let mut b = Bufs {
            mem,
            mem_layout,
            size,
            count,
            ring,
            layout,
            tail: 0,
            refs: vec![0; usize::from(count)],
            in_use: 0,
        };
        for bid in 0..count {
            b.push_entry(bid);
        }
        b.publish();
        Ok(b)
    }

    /// Ring address and entry count for `register_buf_ring_with_flags`.
    pub fn ring_addr(&self) -> (u64, u16) {
        (self.ring as u64, self.count)
    }

    /// The first `len` bytes of buffer `bid` (filled by a completion).
    pub fn data(&self, bid: u16, len: usize) -> &[u8] {
        if bid >= self.count || self.refs[usize::from(bid)] == 0 {
            return &[];
        }
        // SAFETY: `bid < count`, so the range lies inside the allocation.
        // The buffer has a holder (refs > 0): a completion handed it to us
        // and it is not in the ring, so the kernel does not write it while
        // the returned slice (tied to `&self`) lives.
        unsafe {
            std::slice::from_raw_parts(
                self.mem.add(usize::from(bid) * self.size),
                len.min(self.size),
            )
        }
    }

    /// A completion handed `bid` to us: one holder (the reader).
    pub fn take(&mut self, bid: u16) {
        if let Some(r) = self.refs.get_mut(usize::from(bid)) {
            if *r == 0 {
                self.in_use += 1;
            }
            *r = 1;
        }
    }

    /// Buffers held out of the ring now.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Another holder (a send forwarding bytes from it).
    pub fn hold(&mut self, bid: u16) {
        if let Some(r) = self.refs.get_mut(usize::from(bid)) {
            *r += 1;
        }
    }

    /// A holder is done; the last one gives the buffer back to the kernel.
    /// Returns true if it went back (call [`Bufs::publish`] after a batch).
    pub fn release(&mut self, bid: u16) -> bool {
        let Some(r) = self.refs.get_mut(usize::from(bid)) else {
            return false;
        };
        if *r == 0 {
            // Released more often than held: a driver bug. Never give the
            // kernel the same buffer twice (two recvs would share it).
            debug_assert!(false, "buffer {bid} released twice");
            return false;
        }
        *r -= 1;
        if *r == 0 {
            self.in_use -= 1;
            self.push_entry(bid);
            true
        } else {
            false
        }
    }

    fn push_entry(&mut self, bid: u16) {
        let mask = self.count - 1;
        let idx = usize::from(self.tail & mask);
        let addr = self.mem as u64 + (usize::from(bid) * self.size) as u64;
        // The entry is `struct io_uring_buf { u64 addr; u32 len; u16 bid;
        // u16 resv; }`, and entry 0's `resv` is the ring tail the kernel
        // reads: no `&mut` to an entry is ever made (it would alias that
        // shared field); the three fields are written through raw pointers.
        const _: () = assert!(std::mem::size_of::<BufRingEntry>() == 16);
        // SAFETY: `idx < count`, so the 16-byte entry lies inside the ring
        // allocation (count entries, page-aligned, so every field offset is
        // aligned for its type). The kernel only reads entries between its
        // head and the published tail; this one is past the published tail
        // until `publish`, so nobody reads these three fields while we
        // write them, and `resv` (offset 14) is not touched.
        unsafe {
            let e = self.ring.add(idx).cast::<u8>();
            e.cast::<u64>().write(addr);
            e.add(8).cast::<u32>().write(self.size as u32);
            e.add(12).cast::<u16>().write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every entry pushed so far visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: `ring` is the page-aligned base of an initialised ring (the
        // allocation is zeroed), as `BufRingEntry::tail` requires.
        let tail = unsafe { BufRingEntry::tail(self.ring) }.cast_mut();
        // SAFETY: the tail field is a u16 inside our allocation, aligned for
        // u16, and shared with the kernel only through atomic access. Release
        // orders the entry writes above before the new tail.
        let tail = unsafe { AtomicU16::from_ptr(tail) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for Bufs {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout. The ring owner
        // unregisters the group (or drops the io_uring) before dropping us.
        unsafe {
            dealloc(self.ring.cast(), self.layout);
            dealloc(self.mem, self.mem_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_go_back_only_when_the_last_holder_is_done() {
        let mut b = Bufs::new(8, 64).unwrap();
        assert_eq!(b.tail, 8);
        b.take(3);
        b.hold(3);
        assert!(!b.release(3), "a send still holds it");
        assert!(b.release(3));
        assert_eq!(b.tail, 9);
        assert!(
            b.data(3, 10).is_empty(),
            "back in the ring: not ours to read"
        );
        b.take(5);
        assert_eq!(b.data(5, 10).len(), 10);
        assert_eq!(b.data(5, 1000).len(), 64);
        assert!(Bufs::new(6, 64).is_err());
    }

    #[test]
    fn entries_are_written_without_touching_the_shared_tail() {
        let mut b = Bufs::new(4, 64).unwrap();
        let before = b.tail;
        b.take(2);
        assert!(b.release(2));
        assert_eq!(b.tail, before.wrapping_add(1));
        // The entry just written is the one at the old tail: bid 2, and the
        // tail field (entry 0's resv) was only changed by `publish`.
        b.publish();
        // SAFETY: test-only read of our own ring memory; no kernel here.
        let (bid, tail) = unsafe {
            let e = b.ring.add(usize::from(before & 3)).cast::<u8>();
            (
                e.add(12).cast::<u16>().read(),
                b.ring.cast::<u8>().add(14).cast::<u16>().read(),
            )
        };
        assert_eq!(bid, 2);
        assert_eq!(tail, b.tail);
    }
}
