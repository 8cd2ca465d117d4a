//! Spare byte buffers, kept per worker thread so that the owned send
//! buffers of a busy connection (TLS ciphertext above all: one or more
//! records for every buffer the peer sent) are reused instead of
//! allocated and freed for every send. Freeing them one by one let the
//! allocator give the top of the heap back to the kernel and fault it in
//! again a moment later; a reused buffer is also still in the cache.
//!
//! Each worker is one thread, so a thread-local list needs no lock. The
//! list is bounded in count and in the size of what it keeps.

use std::cell::RefCell;

/// Most buffers kept.
const KEEP: usize = 16;
/// Largest capacity kept (larger buffers go back to the allocator).
const MAX_CAP: usize = 256 * 1024;
/// Smallest capacity worth keeping.
const MIN_CAP: usize = 4 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer: the one given back last, or a new one.
pub fn take() -> Vec<u8> {
    SPARE
        .with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .unwrap_or_default()
}

/// Gives `v` back for reuse (dropped if the list is full or `v` is too
/// small or too large to be worth keeping).
pub fn give(mut v: Vec<u8>) {
    if !(MIN_CAP..=MAX_CAP).contains(&v.capacity()) {
        return;
    }
    v.clear();
    SPARE.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut()
            && s.len() < KEEP
        {
            s.push(v);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_comes_back_empty_and_the_list_is_bounded() {
        let mut v = Vec::with_capacity(8192);
        v.extend_from_slice(b"old bytes");
        let ptr = v.as_ptr();
        give(v);
        let back = take();
        assert!(back.is_empty());
        assert_eq!(back.as_ptr(), ptr);
        // Too small and too large buffers are not kept.
        give(Vec::with_capacity(16));
        give(Vec::with_capacity(MAX_CAP + 1));
        assert_eq!(take().capacity(), 0);
        for _ in 0..KEEP + 5 {
            give(Vec::with_capacity(MIN_CAP));
        }
        assert_eq!(SPARE.with(|s| s.borrow().len()), KEEP);
    }
}
