//! Self-verifying synthetic records, for the ring bench, the stress and crash
//! tests and the fuzz seed corpus.
//!
//! Every field of the item at (seed, shard, ticket) is a pure function of
//! those three numbers, so a verifier that knows the seed (stored in the
//! header's user tag) can check every accepted slot bit for bit: any torn,
//! misplaced or corrupted record shows up as a mismatch.

use crate::reader::{RingView, SkipStats, SlotRead};
use crate::record::{Event, EventKind, Flags, Item, KeepReason, Reason, Record};

/// SplitMix64's finaliser: a fast, well-mixed bijection on u64.
#[inline(always)]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One in this many tickets is an event.
const EVENT_EVERY: u64 = 257;

/// The item expected at `ticket` of `shard` for `seed`.
#[inline]
pub fn item(seed: u64, shard: u32, ticket: u64) -> Item {
    let h = mix(seed ^ mix(u64::from(shard) << 48 ^ ticket));
    let start_ns = ticket
        .wrapping_mul(1_000)
        .wrapping_add(1_000_000_000 + (h & 0x3ff));
    if ticket % EVENT_EVERY == EVENT_EVERY - 1 {
        let mut e = Event::new(EventKind::from_code((h % 9 + 1) as u16), start_ns);
        e.a = h;
        e.b = ticket;
        e.c = u64::from(shard);
        e.generation = (h >> 40) as u32;
        return Item::Event(e);
    }
    let mut phases_ns = [0u64; 6];
    let mut x = h;
    for p in &mut phases_ns {
        *p = x & 0xffff;
        x = x.rotate_right(11);
    }
    Item::Record(Record {
        peer: 0,
        locality: 0,
        start_ns,
        total_ns: phases_ns.iter().sum(),
        phases_ns,
        generation: (ticket >> 10) as u32,
        route: (h >> 16) as u16 & 0xf,
        cluster: (h >> 20) as u16 & 0x7,
        endpoint: (h >> 24) as u16 & 0x3f,
        req_type: (h >> 30) as u16 & 0x3,
        status: [200, 200, 200, 503][(h >> 33) as usize & 3],
        sample_p: (h >> 35) as u16,
        reason: Reason::from_code((h >> 51) as u8 & 0x7),
        flags: Flags((h >> 54) as u8 & 0x1f),
        retries: (h >> 59) as u8 & 0x3,
        arm: (h >> 57) as u8 & 0x3,
        keep: KeepReason::from_code((h >> 61) as u8 % 6),
    })
}

/// What a verification pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verify {
    /// Accepted slots whose content matched.
    pub valid: u64,
    /// Accepted slots whose content did not match, plus impossible slots.
    pub corrupt: u64,
    /// Slots skipped as in progress or torn.
    pub torn_skipped: u64,
    /// Records overwritten by the wrap (never readable again).
    pub lost: u64,
    /// Every skip by class.
    pub skips: SkipStats,
}

/// Verifies every slot of every shard of a file written with [`item`] and
/// the seed in the header's user tag.
pub fn verify(view: &RingView<'_>) -> Verify {
    let seed = view.header().user_tag;
    let mut v = Verify::default();
    for shard in 0..view.shards() {
        let (first, end) = view.range(shard);
        for ticket in first..end {
            match view.read(shard, ticket) {
                SlotRead::Item(got) => {
                    if got == canonical(item(seed, shard, ticket)) {
                        v.valid += 1;
                    } else {
                        v.corrupt += 1;
                    }
                }
                other => v.skips.add(&other),
            }
        }
        // Counters come from the file: a hostile file must not overflow them.
        v.lost = v.lost.saturating_add(view.shard_stats(shard).overwritten);
    }
    v.corrupt = v
        .corrupt
        .saturating_add(v.skips.corrupt)
        .saturating_add(v.skips.stale);
    v.torn_skipped = v.skips.in_progress + v.skips.torn;
    v.lost = v.lost.saturating_add(v.skips.overwritten);
    v
}

/// The item as it reads back after an encode/decode round trip.
pub fn canonical(i: Item) -> Item {
    Item::decode(&i.encode())
}
