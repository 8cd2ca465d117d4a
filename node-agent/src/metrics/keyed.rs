//! Per-worker request counts by route and by cluster, keyed by the ring's
//! name ids (stable across config generations), in a fixed open-addressed
//! table: the worker is the only writer, so inserting a key and bumping a
//! count are plain relaxed stores; a scrape reads keys with acquire and
//! sums the workers. The table is bounded ([`SLOTS`]): a name that finds
//! no slot within [`PROBES`] counts under the overflow row, which renders
//! as `_other`, so the label set stays bounded however many routes come
//! and go.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Slots per table (a power of two).
pub const SLOTS: usize = 1024;
/// Slots tried before a name counts as overflow.
const PROBES: usize = 8;
/// Status classes: L4, 1xx .. 5xx.
pub const CLASSES: usize = 6;

/// One table: name id + 1 per slot (0: free) and its counts per class.
#[derive(Debug)]
pub struct Keyed {
    keys: Box<[AtomicU32]>,
    counts: Box<[[AtomicU64; CLASSES]]>,
    overflow: [AtomicU64; CLASSES],
}

impl Default for Keyed {
    fn default() -> Keyed {
        Keyed {
            keys: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
            counts: (0..SLOTS)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            overflow: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

impl Keyed {
    /// Counts one request of status class `class` (0..6) for name `id`
    /// (0: none, not counted). Only the owning worker calls this.
    #[inline]
    pub fn add(&self, id: u16, class: usize) {
        if id == 0 {
            return;
        }
        let key = u32::from(id) + 1;
        let class = class.min(CLASSES - 1);
        let start = usize::from(id).wrapping_mul(0x9E37) & (SLOTS - 1);
        for p in 0..PROBES {
            let i = (start + p) & (SLOTS - 1);
            let k = self.keys[i].load(Ordering::Relaxed);
            if k == key {
                bump(&self.counts[i][class]);
                return;
            }
            if k == 0 {
                // Counts of a free slot are 0; the key is published after.
                bump(&self.counts[i][class]);
                self.keys[i].store(key, Ordering::Release);
                return;
            }
        }
        bump(&self.overflow[class]);
    }

    /// Calls `f(id, counts)` for every named slot, then `f(None, ..)` for
    /// the overflow row (reader side).
    pub fn each(&self, mut f: impl FnMut(Option<u16>, [u64; CLASSES])) {
        let read = |row: &[AtomicU64; CLASSES]| -> [u64; CLASSES] {
            std::array::from_fn(|c| row[c].load(Ordering::Relaxed))
        };
        for (i, k) in self.keys.iter().enumerate() {
            let k = k.load(Ordering::Acquire);
            if k != 0 {
                f(u16::try_from(k - 1).ok(), read(&self.counts[i]));
            }
        }
        f(None, read(&self.overflow));
    }
}

/// Sums the tables of every worker: (name id or None for overflow) →
/// counts per class.
pub fn sum<'a>(
    tables: impl Iterator<Item = &'a Keyed>,
) -> std::collections::BTreeMap<Option<u16>, [u64; CLASSES]> {
    let mut out = std::collections::BTreeMap::new();
    for t in tables {
        t.each(|id, counts| {
            let row: &mut [u64; CLASSES] = out.entry(id).or_insert([0; CLASSES]);
            for (a, b) in row.iter_mut().zip(counts) {
                *a = a.wrapping_add(b);
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_on_their_name_and_a_full_neighbourhood_overflows() {
        let t = Keyed::default();
        t.add(5, 2);
        t.add(5, 2);
        t.add(5, 5);
        t.add(0, 2);
        t.add(7, 0);
        let a = Keyed::default();
        a.add(5, 2);
        let s = sum([&t, &a].into_iter());
        assert_eq!(s[&Some(5)], [0, 0, 3, 0, 0, 1]);
        assert_eq!(s[&Some(7)], [1, 0, 0, 0, 0, 0]);
        assert_eq!(s[&None], [0; CLASSES]);
        // Ids that all start at the same slot: past PROBES they overflow.
        let o = Keyed::default();
        let same: Vec<u16> = (1..u16::MAX)
            .filter(|&id| usize::from(id).wrapping_mul(0x9E37) & (SLOTS - 1) == 0)
            .take(PROBES + 3)
            .collect();
        assert_eq!(same.len(), PROBES + 3);
        for &id in &same {
            o.add(id, 2);
        }
        let s = sum(std::iter::once(&o));
        assert_eq!(s[&None][2], 3, "three of the colliding names overflow");
    }
}
