//! [`RttCache`]: measured round-trip times of candidates that are not (or no longer) tracked,
//! bounded, the oldest entry going first.
//!
//! It is the largest table a node keeps (full at its bound, `max_rtt_cache`, 128 by default,
//! in `pastry-hops` at 10^3 nodes already, against about 60 tracked peers), so it is laid out
//! for memory: the entries sit densely in one vector, in no particular order, and a hash table
//! of `u16` positions (fixed, seedless hasher) finds an entry by id. An entry costs its 24
//! bytes (id, round trip, insertion number) plus about 6 bytes of index, where a hash map of
//! entries costs its 24 bytes plus a control byte for up to twice as many slots as entries.
//! A lookup reads the index's control group, its slot and then the entry: one cache line
//! more than the map, for about a third less memory. (Entries kept the candidate's address
//! until it was found that nothing read it: 40 bytes each.)
//!
//! Nothing depends on the entries' order: lookups are by id, and eviction takes the smallest
//! insertion number (the node-level test `the_rtt_cache_forgets_its_oldest_entry_first` holds
//! the order).
//!
//! A full cache evicts at every new entry, and finding the oldest is a scan of every entry
//! (the largest single cost of a 10^4-node `pastry-hops` run in a profile: 6 % of its time).
//! One scan therefore notes where the [`OLDEST`] oldest entries are; the evictions after it
//! take them in order, and scan again only when they are used up. A removal that moves a
//! noted entry (the last entry fills the hole) moves its note too, so a noted entry not found
//! where it was noted (same insertion number) has left, and the next noted one is taken
//! instead. Every entry not noted is younger than those noted (new entries get larger
//! numbers), so the entry evicted is still exactly the oldest. (Before a removal's move was
//! followed, every such mismatch meant a new scan: 4 % of a `cold-start` run's time.)

use std::hash::BuildHasher;

use hashbrown::HashTable;
use petal_protocol::NodeId;

use crate::id_map::IdHasher;

/// One measured candidate, in 24 bytes. No address: a candidate is offered again with the
/// address of the message that names it, and enters a table with that one.
#[derive(Clone, Debug)]
pub(crate) struct CachedRtt {
    pub(crate) id: NodeId,
    pub(crate) rtt_us: u32,
    /// Insertion number (FIFO eviction); it fits beside `rtt_us` in the entry's padding.
    seq: u32,
}

/// Entries one eviction scan notes (see the module documentation).
const OLDEST: usize = 4;

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct RttCache {
    entries: Vec<CachedRtt>,
    /// Positions in `entries`, hashed by the entry's id (`u16`: `Config::validate` bounds
    /// `max_rtt_cache` below 2^16 - 1, so every position, the one entry over the bound an
    /// insertion holds included, fits).
    index: HashTable<u16>,
    /// The insertion number the next new entry gets.
    next_seq: u32,
    /// The oldest entries at the last eviction scan, oldest first, from `oldest_at` on: their
    /// positions in `entries` and insertion numbers.
    oldest_pos: [u32; OLDEST],
    oldest_seqs: [u32; OLDEST],
    oldest_at: u8,
    oldest_len: u8,
}

fn hash(id: &NodeId) -> u64 {
    std::hash::BuildHasherDefault::<IdHasher>::default().hash_one(id)
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "a position is below the entry count, and 2^32 entries of 24 bytes (103 GB) \
              cannot be held; `Config::validate` does not bound `max_rtt_cache` itself"
)]
fn pos(i: usize) -> u32 {
    i as u32
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "a position is at most `max_rtt_cache`, below 2^16 - 1 (`Config::validate`)"
)]
fn slot(i: usize) -> u16 {
    debug_assert!(i < usize::from(u16::MAX));
    i as u16
}

impl RttCache {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn find(&self, id: &NodeId) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(hash(id), |&i| entries[i as usize].id == *id)
            .map(|&i| i as usize)
    }

    /// The round trip cached for `id`.
    pub(crate) fn get(&self, id: &NodeId) -> Option<u32> {
        self.find(id).map(|i| self.entries[i].rtt_us)
    }

    /// Takes `id`'s entry out.
    pub(crate) fn remove(&mut self, id: &NodeId) -> Option<CachedRtt> {
        let entries = &self.entries;
        let (i, _) = self
            .index
            .find_entry(hash(id), |&i| entries[i as usize].id == *id)
            .ok()?
            .remove();
        let i = i as usize;
        let last = self.entries.len() - 1;
        let gone = self.entries.swap_remove(i);
        if i != last {
            // The last entry moved into the hole: point its index slot at its new place, and
            // its noted place if it is one of the oldest.
            let moved = hash(&self.entries[i].id);
            if let Some(slot) = self.index.find_mut(moved, |&j| j as usize == last) {
                *slot = self::slot(i);
            }
            let seq = self.entries[i].seq;
            for k in usize::from(self.oldest_at)..usize::from(self.oldest_len) {
                if self.oldest_seqs[k] == seq {
                    self.oldest_pos[k] = pos(i);
                }
            }
        }
        if self.entries.capacity() > 2 * self.entries.len() + 8 {
            // Entries left (tracked again): give back the room of the largest fill.
            self.entries
                .shrink_to(self.entries.len() + self.entries.len() / 4 + 4);
            self.index
                .shrink_to(self.entries.len(), |&i| hash(&self.entries[i as usize].id));
        }
        Some(gone)
    }

    /// Records a measurement of `info`: a cached candidate keeps its place in the order, a new
    /// one goes last, and the oldest go while more than `max` are cached.
    pub(crate) fn insert(&mut self, id: NodeId, rtt_us: u32, max: usize) {
        if let Some(i) = self.find(&id) {
            self.entries[i].rtt_us = rtt_us;
        } else {
            if self.next_seq == u32::MAX {
                self.renumber();
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            if self.entries.len() == self.entries.capacity() {
                // Grow by a quarter (amortised O(1) still), not by doubling, and never past
                // the one entry over `max` that an insertion holds until it evicts.
                let room = (max + 1).saturating_sub(self.entries.len()).max(1);
                self.entries
                    .reserve_exact((self.entries.len() / 4 + 4).min(room));
            }
            let i = slot(self.entries.len());
            self.entries.push(CachedRtt { id, rtt_us, seq });
            let entries = &self.entries;
            self.index
                .insert_unique(hash(&id), i, |&j| hash(&entries[j as usize].id));
        }
        while self.entries.len() > max {
            let Some(oldest) = self.oldest() else {
                break;
            };
            self.remove(&oldest);
        }
    }

    /// The oldest entry's id: the first noted one still present, or a new scan's.
    fn oldest(&mut self) -> Option<NodeId> {
        while self.oldest_at < self.oldest_len {
            let k = usize::from(self.oldest_at);
            let (i, seq) = (self.oldest_pos[k] as usize, self.oldest_seqs[k]);
            self.oldest_at += 1;
            // A noted entry that moved was followed (`remove`), so one not at its noted place
            // has left: the next noted one is the oldest then.
            if let Some(c) = self.entries.get(i).filter(|c| c.seq == seq) {
                return Some(c.id);
            }
        }
        // Used up: scan.
        self.note_oldest();
        let k = usize::from(self.oldest_at);
        (self.oldest_len > 0).then(|| {
            self.oldest_at += 1;
            self.entries[self.oldest_pos[k] as usize].id
        })
    }

    /// Scans every entry for the [`OLDEST`] smallest insertion numbers.
    fn note_oldest(&mut self) {
        let mut seqs = [u32::MAX; OLDEST];
        let mut at = [0u32; OLDEST];
        let mut len = 0;
        for (i, c) in self.entries.iter().enumerate() {
            if len == OLDEST && c.seq >= seqs[OLDEST - 1] {
                continue;
            }
            // Insert in order (a few entries: a shift).
            let mut k = len.min(OLDEST - 1);
            while k > 0 && seqs[k - 1] > c.seq {
                seqs[k] = seqs[k - 1];
                at[k] = at[k - 1];
                k -= 1;
            }
            seqs[k] = c.seq;
            at[k] = pos(i);
            len = (len + 1).min(OLDEST);
        }
        self.oldest_seqs = seqs;
        self.oldest_pos = at;
        self.oldest_at = 0;
        #[expect(clippy::cast_possible_truncation, reason = "at most OLDEST (4)")]
        {
            self.oldest_len = len as u8;
        }
    }

    /// Numbers the entries 0.. in their order (once in 2^32 insertions).
    pub(crate) fn renumber(&mut self) {
        let mut order: Vec<(u32, usize)> = (0..self.entries.len())
            .map(|i| (self.entries[i].seq, i))
            .collect();
        order.sort_unstable();
        for (n, (_, i)) in (0u32..).zip(order) {
            self.entries[i].seq = n;
        }
        self.next_seq = pos(self.entries.len());
        // The noted numbers are stale.
        self.oldest_len = 0;
        self.oldest_at = 0;
    }

    /// Heap bytes reserved: the entries and the index (a `u16` and a control byte per bucket).
    pub(crate) fn heap_bytes(&self) -> usize {
        let buckets = if self.index.capacity() == 0 {
            0
        } else {
            (self.index.capacity() * 8 / 7).next_power_of_two()
        };
        crate::memory::vec_bytes(&self.entries) + buckets * 3 + usize::from(buckets > 0) * 16
    }

    pub(crate) fn clear(&mut self) {
        *self = Self {
            next_seq: self.next_seq,
            ..Self::default()
        };
    }

    /// Asserts that the index and the entries agree and that the bound and order hold.
    pub(crate) fn check(&self, max: usize) {
        assert!(self.entries.len() <= max, "RTT cache over its bound");
        assert_eq!(self.index.len(), self.entries.len(), "RTT cache index size");
        for (i, c) in self.entries.iter().enumerate() {
            assert_eq!(self.find(&c.id), Some(i), "RTT cache index");
            assert!(c.seq < self.next_seq, "RTT cache out of order");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petal_protocol::NodeInfo;
    use std::net::SocketAddr;

    fn info(n: u8) -> NodeInfo {
        let mut b = [0u8; 16];
        b[0] = n;
        b[15] = n.wrapping_mul(37);
        NodeInfo {
            id: NodeId::from_bytes(b),
            addr: SocketAddr::from(([127, 0, 0, n], 4000)),
        }
    }

    #[test]
    fn removal_keeps_every_other_entry_findable() {
        let mut c = RttCache::default();
        for n in 1..=40 {
            c.insert(info(n).id, u32::from(n) * 10, 100);
        }
        for n in (1..=40).step_by(3) {
            assert_eq!(
                c.remove(&info(n).id).map(|e| e.rtt_us),
                Some(u32::from(n) * 10)
            );
            c.check(100);
        }
        for n in 1..=40u8 {
            let want = (n % 3 != 1).then_some(u32::from(n) * 10);
            assert_eq!(c.get(&info(n).id), want, "node {n}");
        }
        assert!(c.remove(&info(1).id).is_none());
    }

    proptest::proptest! {
        /// Eviction through the noted oldest entries takes exactly what a scan for the
        /// smallest insertion number would, under any mix of inserts, re-inserts and removals.
        #[test]
        fn eviction_always_takes_the_oldest_entry(
            ops in proptest::collection::vec((proptest::bool::weighted(0.7), 1u8..24), 1..400),
            max in 1usize..10,
        ) {
            let mut c = RttCache::default();
            // The model: (node, insertion number), evicting the smallest number.
            let mut model: Vec<(u8, u64)> = Vec::new();
            let mut seq = 0u64;
            for (insert, n) in ops {
                if insert {
                    c.insert(info(n).id, u32::from(n), max);
                    if !model.iter().any(|e| e.0 == n) {
                        model.push((n, seq));
                        seq += 1;
                    }
                    while model.len() > max {
                        let oldest = model.iter().enumerate().min_by_key(|e| e.1.1).unwrap().0;
                        model.remove(oldest);
                    }
                } else {
                    let had = model.iter().position(|e| e.0 == n);
                    proptest::prop_assert_eq!(c.remove(&info(n).id).is_some(), had.is_some());
                    if let Some(i) = had {
                        model.remove(i);
                    }
                }
                c.check(max);
                for k in 1..24u8 {
                    let want = model.iter().any(|e| e.0 == k);
                    proptest::prop_assert_eq!(c.get(&info(k).id).is_some(), want, "node {}", k);
                }
            }
        }
    }

    #[test]
    fn a_filled_and_emptied_cache_gives_its_room_back() {
        let mut c = RttCache::default();
        for n in 1..=200 {
            c.insert(info(n).id, 1, 1000);
        }
        for n in 1..=195 {
            c.remove(&info(n).id);
        }
        c.check(1000);
        assert!(c.entries.capacity() <= 2 * c.len() + 8);
        assert_eq!(c.len(), 5);
    }
}
