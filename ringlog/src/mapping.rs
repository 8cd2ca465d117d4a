//! A shared file mapping seen as a slice of `AtomicU64`.
//!
//! The ring file is shared between a writer process and any number of
//! readers, so no Rust reference to plain bytes of it may exist: another
//! process can change them at any time. Every access goes through
//! `&[AtomicU64]`, which makes concurrent and even hostile modification
//! merely racy, never undefined behaviour. This is the only place in the crate
//! that turns the raw mapping into a slice.

use std::fs::File;
use std::io;
use std::sync::atomic::AtomicU64;

use memmap2::{MmapOptions, MmapRaw};

/// A read-only or read-write shared mapping of a whole file.
#[derive(Debug)]
pub(crate) struct Mapping {
    raw: MmapRaw,
    words: usize,
}

impl Mapping {
    /// Maps `len` bytes of `file` shared and writable. `len` must be a
    /// multiple of 8 and no longer than the file.
    pub(crate) fn writable(file: &File, len: u64) -> io::Result<Mapping> {
        let raw = MmapOptions::new().len(to_usize(len)?).map_raw(file)?;
        Ok(Mapping {
            words: raw.len() / 8,
            raw,
        })
    }

    /// Maps the first `len` bytes of `file` read-only; the tail beyond the
    /// last whole word is not addressable.
    pub(crate) fn read_only(file: &File, len: u64) -> io::Result<Mapping> {
        let raw = MmapOptions::new()
            .len(to_usize(len)?)
            .map_raw_read_only(file)?;
        Ok(Mapping {
            words: raw.len() / 8,
            raw,
        })
    }

    /// The mapping as atomic words.
    #[inline(always)]
    pub(crate) fn words(&self) -> &[AtomicU64] {
        if self.words == 0 {
            return &[];
        }
        // SAFETY: `raw` is a live mapping of at least `words * 8` bytes that
        // stays mapped for as long as `self` (and so the returned borrow)
        // lives. mmap returns page-aligned memory, so the pointer is aligned
        // for AtomicU64. AtomicU64 has the same size as u64 and allows shared
        // mutation, so other processes writing the file concurrently is a
        // race between atomics, not UB. The slice of a read-only mapping only
        // reaches the reader, which does nothing but 8-byte Relaxed loads
        // (acquire ordering comes from fences, see `slot::load_acquire`):
        // the one kind of atomic access std permits on read-only memory.
        unsafe { std::slice::from_raw_parts(self.raw.as_ptr().cast::<AtomicU64>(), self.words) }
    }

    /// Flushes dirty pages to the file asynchronously.
    pub(crate) fn flush_async(&self) -> io::Result<()> {
        self.raw.flush_async()
    }
}

fn to_usize(len: u64) -> io::Result<usize> {
    usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large to map"))
}
