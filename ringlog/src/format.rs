//! File format v1: constants, header word indices and the layout arithmetic
//! shared by the writer and the reader.
//!
//! Everything in the file is little-endian and addressed as 64-bit words, so
//! a reader can load every field atomically while a writer is active. The
//! sections follow each other, each 64-byte aligned:
//!
//! ```text
//! [ header: 256 B ][ name table: name_capacity x 128 B ]
//! [ shard meta: shard_count x (128 + type_slots x 64) B ]
//! [ slots: shard_count x slots_per_shard x 64 B ]
//! ```
//!
//! `docs/RINGLOG.md` describes every byte; keep the two in step.

/// `b"TAILRING"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TAILRING");
/// The only format version this crate writes and reads.
pub const VERSION: u32 = 2;
/// Size of one record or event slot, one cache line.
pub const RECORD_SIZE: u32 = 64;
/// Words per slot.
pub const SLOT_WORDS: usize = 8;
/// Header size in bytes.
pub const HEADER_SIZE: u64 = 256;
/// Size of one name-table entry in bytes.
pub const NAME_ENTRY_SIZE: u64 = 128;
/// Longest name a name-table entry holds, in bytes.
pub const NAME_MAX_LEN: usize = 112;
/// Fixed part of a shard's meta block (two cache lines) before the per-type counters.
pub const SHARD_META_FIXED: u64 = 128;
/// Bytes of sampler counters per request type (one cache line, 8 counters).
pub const TYPE_COUNTERS_SIZE: u64 = 64;
/// Upper bound on shards a reader accepts (guards against absurd headers).
pub const MAX_SHARDS: u32 = 4096;
/// Upper bound on per-type counter slots a reader accepts.
pub const MAX_TYPE_SLOTS: u32 = 1024;
/// Upper bound on name-table entries a reader accepts.
pub const MAX_NAME_CAPACITY: u64 = 1 << 20;

/// Header word indices (each word is a little-endian u64).
pub mod hdr {
    /// [`super::MAGIC`].
    pub const MAGIC: usize = 0;
    /// low 32 bits: version, high 32 bits: record size.
    pub const VERSION_RECSIZE: usize = 1;
    /// low 32 bits: shard count, high 32 bits: type counter slots per shard.
    pub const SHARDS_TYPES: usize = 2;
    /// Slots per shard, a power of two.
    pub const SLOTS_PER_SHARD: usize = 3;
    /// Name-table capacity in entries.
    pub const NAME_CAPACITY: usize = 4;
    /// Byte offset of the name table.
    pub const NAMES_OFFSET: usize = 5;
    /// Byte offset of the first shard meta block.
    pub const SHARD_META_OFFSET: usize = 6;
    /// Size in bytes of one shard meta block.
    pub const SHARD_META_SIZE: usize = 7;
    /// Byte offset of the first shard's slots.
    pub const SLOTS_OFFSET: usize = 8;
    /// Total file size in bytes.
    pub const FILE_SIZE: usize = 9;
    /// CLOCK_MONOTONIC reading (ns) taken together with [`REALTIME_ANCHOR`].
    pub const MONO_ANCHOR: usize = 10;
    /// CLOCK_REALTIME reading (ns since the Unix epoch).
    pub const REALTIME_ANCHOR: usize = 11;
    /// Writer process id.
    pub const WRITER_PID: usize = 12;
    /// Writer start time, ns since the Unix epoch.
    pub const WRITER_START: usize = 13;
    /// Random id of this file instance; changes whenever the file is recreated.
    pub const INSTANCE: usize = 14;
    /// Free for the application (the ring bench stores its seed here).
    pub const USER_TAG: usize = 15;
    /// 0 while the writer initialises the file, [`super::STATE_READY`] after.
    pub const STATE: usize = 16;
    /// Number of committed name-table entries.
    pub const NAMES_USED: usize = 17;
}

/// Value of the header's state word once the file is fully initialised.
pub const STATE_READY: u64 = 1;

/// Word indices inside a shard meta block.
pub mod meta {
    /// Next ticket the writer will use (= records + events committed so far).
    pub const HEAD: usize = 0;
    /// Committed records later overwritten by the wrap (exact).
    pub const OVERWRITTEN: usize = 1;
    /// Events committed on this shard.
    pub const EVENTS: usize = 2;
    /// Sampler halving level currently in force (0 = configured rates).
    pub const SAMPLER_LEVEL: usize = 8;
    /// Word index where the per-type counters start.
    pub const TYPES: usize = 16;
}

/// Counter indices inside one request type's 8-word counter block.
pub mod counter {
    /// Requests the sampler saw.
    pub const SEEN: usize = 0;
    /// Kept by the probabilistic rate.
    pub const KEPT_SAMPLED: usize = 1;
    /// Kept because the request failed (`keep_errors`).
    pub const KEPT_ERROR: usize = 2;
    /// Kept because slower than `keep_slower_than`.
    pub const KEPT_SLOW: usize = 3;
    /// Kept because above the rolling `keep_above_quantile` estimate.
    pub const KEPT_QUANTILE: usize = 4;
    /// Kept because the caller forced it.
    pub const KEPT_FORCED: usize = 5;
    /// Errors or slow requests beyond the flood cap, sampled like fast ones.
    pub const FLOOD_DEMOTED: usize = 6;
    // Word 7 is reserved (0). Sampled-out requests are not counted
    // separately: dropped = seen - all kept counters.
}

/// The shape of a ring file: everything derivable from four parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Number of shards (one per writer thread).
    pub shards: u32,
    /// Slots per shard, a power of two.
    pub slots_per_shard: u64,
    /// Name-table entries.
    pub name_capacity: u64,
    /// Per-type sampler counter blocks per shard.
    pub type_slots: u32,
}

impl Layout {
    /// Byte offset of the name table.
    pub fn names_offset(&self) -> u64 {
        HEADER_SIZE
    }
    /// Byte offset of shard 0's meta block.
    pub fn shard_meta_offset(&self) -> u64 {
        self.names_offset() + self.name_capacity * NAME_ENTRY_SIZE
    }
    /// Size of one shard meta block.
    pub fn shard_meta_size(&self) -> u64 {
        SHARD_META_FIXED + u64::from(self.type_slots) * TYPE_COUNTERS_SIZE
    }
    /// Byte offset of shard 0's first slot.
    pub fn slots_offset(&self) -> u64 {
        self.shard_meta_offset() + u64::from(self.shards) * self.shard_meta_size()
    }
    /// Total file size in bytes, or `None` on overflow.
    pub fn file_size(&self) -> Option<u64> {
        let ring = u64::from(self.shards)
            .checked_mul(self.slots_per_shard)?
            .checked_mul(u64::from(RECORD_SIZE))?;
        let fixed = HEADER_SIZE
            .checked_add(self.name_capacity.checked_mul(NAME_ENTRY_SIZE)?)?
            .checked_add(u64::from(self.shards).checked_mul(self.shard_meta_size())?)?;
        fixed.checked_add(ring)
    }
    /// Word index of a shard's meta block.
    pub fn meta_word(&self, shard: u32) -> usize {
        word(self.shard_meta_offset() + u64::from(shard) * self.shard_meta_size())
    }
    /// Word index of a shard's first slot.
    pub fn slots_word(&self, shard: u32) -> usize {
        word(self.slots_offset() + u64::from(shard) * self.slots_per_shard * u64::from(RECORD_SIZE))
    }
    /// Word index of a name-table entry.
    pub fn name_word(&self, index: u64) -> usize {
        word(self.names_offset() + index * NAME_ENTRY_SIZE)
    }

    /// The largest layout whose file fits in `max_bytes`, or `None` if even
    /// one slot per shard does not fit.
    pub fn fit(max_bytes: u64, shards: u32, name_capacity: u64, type_slots: u32) -> Option<Layout> {
        let mut layout = Layout {
            shards,
            slots_per_shard: 1,
            name_capacity,
            type_slots,
        };
        if layout.file_size()? > max_bytes {
            return None;
        }
        while let Some(bigger) = layout.slots_per_shard.checked_mul(2) {
            let candidate = Layout {
                slots_per_shard: bigger,
                ..layout
            };
            match candidate.file_size() {
                Some(size) if size <= max_bytes => layout = candidate,
                _ => break,
            }
        }
        Some(layout)
    }
}

/// Byte offset to word index. Offsets in a layout are multiples of 64, and a
/// layout that passed validation fits in the mapped file, so in `usize`.
fn word(byte_offset: u64) -> usize {
    usize::try_from(byte_offset / 8).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_cache_line_aligned() {
        let l = Layout {
            shards: 3,
            slots_per_shard: 1024,
            name_capacity: 100,
            type_slots: 7,
        };
        for off in [
            l.names_offset(),
            l.shard_meta_offset(),
            l.slots_offset(),
            l.shard_meta_size(),
        ] {
            assert_eq!(off % 64, 0, "offset {off} not aligned");
        }
        assert_eq!(l.file_size(), Some(l.slots_offset() + 3 * 1024 * 64));
    }

    #[test]
    fn fit_picks_largest_power_of_two() {
        let l = Layout::fit(64 << 20, 2, 1024, 64).unwrap();
        assert!(l.slots_per_shard.is_power_of_two());
        assert!(l.file_size().unwrap() <= 64 << 20);
        let next = Layout {
            slots_per_shard: l.slots_per_shard * 2,
            ..l
        };
        assert!(next.file_size().unwrap() > 64 << 20);
        assert!(Layout::fit(100, 2, 1024, 64).is_none());
    }

    #[test]
    fn magic_spells_tailring() {
        assert_eq!(&MAGIC.to_le_bytes(), b"TAILRING");
    }
}
