//! Following a ring as its writers commit (`tail -f`): per-shard cursors
//! that read what is new, merge it by time, and count what was overwritten
//! before it could be read.

use super::{Entry, PART_BLOCK, RingView, SkipStats, SlotRead};

/// Follows shards as new slots commit (`tail -f`).
#[derive(Debug, Clone)]
pub struct Follower {
    next: Vec<u64>,
    /// Tickets that were overwritten before this follower could read them.
    pub lost: u64,
    /// Slots skipped while following.
    pub skips: SkipStats,
}

impl Follower {
    /// Starts at the current end of every shard (only new slots).
    pub fn from_end(view: &RingView<'_>) -> Follower {
        Follower {
            next: (0..view.shards()).map(|s| view.range(s).1).collect(),
            lost: 0,
            skips: SkipStats::default(),
        }
    }

    /// Starts at the oldest slot still in the ring.
    pub fn from_start(view: &RingView<'_>) -> Follower {
        Follower {
            next: (0..view.shards()).map(|s| view.range(s).0).collect(),
            lost: 0,
            skips: SkipStats::default(),
        }
    }

    /// Starts so that the last `n` slots of every shard are returned first.
    pub fn from_last(view: &RingView<'_>, n: u64) -> Follower {
        Follower {
            next: (0..view.shards())
                .map(|s| {
                    let (first, end) = view.range(s);
                    end.saturating_sub(n).max(first)
                })
                .collect(),
            lost: 0,
            skips: SkipStats::default(),
        }
    }

    /// Starts so that the last `n` entries of every shard that `keep`
    /// accepts are returned first (walking back from each shard's end;
    /// what `tail -n N --where ...` needs, since a filter can leave far
    /// fewer than `n` matches among the last `n` slots).
    pub fn from_last_matching(
        view: &RingView<'_>,
        n: u64,
        keep: impl Fn(&Entry) -> bool,
    ) -> Follower {
        let next = (0..view.shards())
            .map(|shard| {
                let (first, end) = view.range(shard);
                // Back a block at a time, each block read forwards (the
                // direction memory and the page cache are fast in).
                let (mut at, mut found) = (end, 0u64);
                let mut hits = Vec::new();
                let mut skips = SkipStats::default();
                while at > first && found < n {
                    let lo = at.saturating_sub(PART_BLOCK).max(first);
                    hits.clear();
                    view.visit(shard, lo..at, &mut skips, &mut |e| {
                        if keep(e) {
                            hits.push(e.ticket);
                        }
                    });
                    let need = n - found;
                    if hits.len() as u64 >= need {
                        // The need-th match from this block's end (need is
                        // 1..=hits.len(), so the index is in bounds).
                        return hits[hits.len() - need as usize];
                    }
                    found += hits.len() as u64;
                    at = lo;
                }
                at
            })
            .collect();
        Follower {
            next,
            lost: 0,
            skips: SkipStats::default(),
        }
    }

    /// Appends newly committed entries (merged by time) to `out`, reading
    /// at most `max_per_shard` per shard; returns how many were appended.
    pub fn poll(&mut self, view: &RingView<'_>, out: &mut Vec<Entry>, max_per_shard: u64) -> usize {
        let before = out.len();
        self.poll_where(view, out, max_per_shard, |_| true);
        out.len() - before
    }

    /// Like [`Follower::poll`], but appends only the entries `keep`
    /// accepts (and merges only those). Returns how many slots it moved
    /// past, kept or not: 0 means it has caught up with the writers.
    pub fn poll_where(
        &mut self,
        view: &RingView<'_>,
        out: &mut Vec<Entry>,
        max_per_shard: u64,
        keep: impl Fn(&Entry) -> bool,
    ) -> u64 {
        let before = out.len();
        let mut moved = 0u64;
        for (shard, next) in (0u32..).zip(self.next.iter_mut()) {
            let (first, end) = view.range(shard);
            if *next < first {
                self.lost = self.lost.saturating_add(first - *next);
                *next = first;
            }
            let stop = end.min(next.saturating_add(max_per_shard));
            moved += stop.saturating_sub(*next);
            while *next < stop {
                let r = view.read(shard, *next);
                match r {
                    SlotRead::Item(item) => {
                        let e = Entry {
                            shard,
                            ticket: *next,
                            item,
                        };
                        if keep(&e) {
                            out.push(e);
                        }
                    }
                    // Every ticket below `end` was committed, so a write in
                    // progress there is the writer overwriting it: lost.
                    SlotRead::InProgress | SlotRead::Overwritten => {
                        self.lost = self.lost.saturating_add(1)
                    }
                    _ => self.skips.add(&r),
                }
                *next += 1;
            }
        }
        out[before..].sort_by_key(|e| e.item.time_key());
        moved
    }
}
