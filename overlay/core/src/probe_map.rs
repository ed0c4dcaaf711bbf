//! A map from node ids by open addressing over the ids' own bits, for the outstanding
//! proximity probes ([`crate::overlay`]'s `probes`).
//!
//! A joining or growing node has hundreds of probes out, and every candidate it weighs is
//! looked up in them (most often absent), every probe sent inserted and every answer removed.
//! The map was a `hashbrown` table, whose look-up was the largest single wait for memory in a
//! `cold-start` profile: the table is large, cold, and where an id's bucket lies cannot be
//! known before the look-up runs. Here the slot a look-up starts at is a function of the id
//! and the table's size alone, so a driver that knows its next inputs can prefetch it (see
//! [`ProbeMap::prefetch`]).
//!
//! Linear probing, at most half full (a miss, the common look-up, reads about two and a half
//! slots on average), deletions by backward shift (no tombstones), so its state is a function
//! of its contents and the order they came in. Ids are random, but a hostile peer could
//! choose ids that share a home slot: the map is bounded by `max_probes`, so a look-up reads
//! at most one slot more than that. Nothing iterates it but invariant checks; the order they see is
//! the table's, deterministic for a given history.

use petal_protocol::NodeId;

/// The fewest slots of a non-empty table.
const MIN_SLOTS: usize = 8;

/// One slot: an entry when `used`. Laid out as written, the flag last: a prefetch of a slot
/// names its first byte and its flag, which lie on the last line it touches.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct Slot<V> {
    id: NodeId,
    value: V,
    used: bool,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub(crate) struct ProbeMap<V> {
    /// Empty, or a power of two of slots at least [`MIN_SLOTS`].
    slots: Box<[Slot<V>]>,
    len: usize,
}

impl<V> Default for ProbeMap<V> {
    fn default() -> Self {
        Self {
            slots: Box::default(),
            len: 0,
        }
    }
}

/// The slot id `id` starts its search at, in a table of `2^bits` slots: the top bits of the
/// two halves folded and multiplied (Fibonacci hashing), so that ids alike in their low or
/// high bits alone still spread.
fn home(id: NodeId, bits: u32) -> usize {
    let v = id.get();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "folding the two 64-bit halves together: dropping their high bits is the point"
    )]
    let folded = (v as u64) ^ ((v >> 64) as u64);
    let h = folded.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the top `bits` bits of a u64, and `bits` is at most the log of a slice's length"
    )]
    let i = (h >> (64 - bits)) as usize;
    i
}

impl<V: Copy + Default> ProbeMap<V> {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries it can hold before it grows.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len() / 2
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val::<[Slot<V>]>(&self.slots)
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn bits(&self) -> u32 {
        self.slots.len().trailing_zeros()
    }

    /// Where `id` is (`Ok`), or the free slot its search ended at (`Err`). The table must
    /// have slots.
    fn find(&self, id: NodeId) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = home(id, self.bits());
        loop {
            let s = &self.slots[i];
            if !s.used {
                return Err(i);
            }
            if s.id == id {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// `id`'s value.
    pub(crate) fn get(&self, id: &NodeId) -> Option<&V> {
        if self.len == 0 {
            return None;
        }
        self.find(*id).ok().map(|i| &self.slots[i].value)
    }

    /// True when `id` has an entry.
    pub(crate) fn contains_key(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    /// Sets `id`'s value, giving back the one it replaced. Only a new entry grows the table.
    pub(crate) fn insert(&mut self, id: NodeId, value: V) -> Option<V> {
        let mut at = if self.len == 0 {
            None
        } else {
            Some(self.find(id))
        };
        if let Some(Ok(i)) = at {
            return Some(std::mem::replace(&mut self.slots[i].value, value));
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.rebuild((self.slots.len() * 2).max(MIN_SLOTS));
            at = None;
        }
        let Err(i) = at.unwrap_or_else(|| self.find(id)) else {
            unreachable!("an id found absent above");
        };
        self.slots[i] = Slot {
            id,
            value,
            used: true,
        };
        self.len += 1;
        None
    }

    /// Takes `id`'s entry out. The entries after it in its run move back into the gap
    /// (backward-shift deletion), so that every entry stays reachable from its home slot
    /// without markers of deleted ones. An emptied table gives its room back.
    pub(crate) fn remove(&mut self, id: &NodeId) -> Option<V> {
        if self.len == 0 {
            return None;
        }
        let mut gap = self.find(*id).ok()?;
        let value = self.slots[gap].value;
        self.len -= 1;
        if self.len == 0 {
            self.slots = Box::default();
            return Some(value);
        }
        let (mask, bits) = (self.mask(), self.bits());
        let mut i = gap;
        loop {
            i = (i + 1) & mask;
            let s = self.slots[i];
            if !s.used {
                break;
            }
            // The entry at `i` may fill the gap when its home is not after the gap on the
            // way round to `i` (cyclically: home in (gap, i] means it must stay).
            let h = home(s.id, bits);
            let stays = if gap < i {
                gap < h && h <= i
            } else {
                gap < h || h <= i
            };
            if !stays {
                self.slots[gap] = s;
                gap = i;
            }
        }
        self.slots[gap] = Slot::default();
        Some(value)
    }

    /// Shrinks the table to the fewest slots that hold `min` entries (and those it holds).
    pub(crate) fn shrink_to(&mut self, min: usize) {
        let want = (min.max(self.len) * 2).next_power_of_two().max(MIN_SLOTS);
        if want < self.slots.len() {
            self.rebuild(want);
        }
    }

    /// Moves every entry into a new table of `n` slots (a power of two), in the old table's
    /// order.
    fn rebuild(&mut self, n: usize) {
        debug_assert!(n.is_power_of_two() && n >= MIN_SLOTS && self.len * 2 <= n);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); n].into_boxed_slice());
        for s in old.iter().filter(|s| s.used) {
            let Err(i) = self.find(s.id) else {
                unreachable!("an id held twice");
            };
            self.slots[i] = *s;
        }
    }

    /// Panics unless the table is consistent: empty exactly when it holds nothing, else a
    /// power of two of at least [`MIN_SLOTS`] slots at most half used, `len` the slots used,
    /// and every entry found where it is (no free slot between its home and it).
    pub(crate) fn check_invariants(&self) {
        assert_eq!(
            self.slots.is_empty(),
            self.len == 0,
            "an empty map holds no room"
        );
        if self.slots.is_empty() {
            return;
        }
        assert!(self.slots.len().is_power_of_two() && self.slots.len() >= MIN_SLOTS);
        let used = self.slots.iter().filter(|s| s.used).count();
        assert_eq!(used, self.len, "len counts the slots used");
        assert!(self.len * 2 <= self.slots.len(), "at most half full");
        for (i, s) in self.slots.iter().enumerate().filter(|(_, s)| s.used) {
            assert_eq!(self.find(s.id), Ok(i), "entry {:?} unreachable", s.id);
        }
    }

    /// The entries, in the table's order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &V)> {
        self.slots
            .iter()
            .filter(|s| s.used)
            .map(|s| (&s.id, &s.value))
    }

    /// Prefetches the slot a look-up of `id` starts at (its first byte and its last line) and
    /// the last line of the slot after it, which a removal reads (the entries after a removed
    /// one in its run move back) and a look-up that finds its home taken. Nothing changes.
    pub(crate) fn prefetch(&self, id: NodeId) {
        if self.len == 0 {
            return;
        }
        let h = home(id, self.bits());
        let s = &self.slots[h];
        prefetch_index::prefetch_index(std::slice::from_ref(s), 0);
        prefetch_index::prefetch_index(std::slice::from_ref(&s.used), 0);
        let next = &self.slots[(h + 1) & self.mask()];
        prefetch_index::prefetch_index(std::slice::from_ref(&next.used), 0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_probe_slot_is_48_bytes_with_its_flag_last() {
        // A probe is three 8-byte fields (nonce, sent, deadline): `[u64; 3]`'s size and
        // alignment, which the overlay's liveness tests pin for `Probe` itself.
        type ProbeSlot = Slot<[u64; 3]>;
        assert_eq!(std::mem::size_of::<ProbeSlot>(), 48);
        assert_eq!(std::mem::offset_of!(ProbeSlot, used), 40);
    }

    #[test]
    fn ids_sharing_a_home_slot_are_all_found_and_removed() {
        // Ids that differ only in bits the fold cancels share every home slot.
        let ids: Vec<NodeId> = (0..40u128).map(|k| NodeId((k << 64) | k)).collect();
        let mut m = ProbeMap::default();
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(m.insert(*id, k), None);
        }
        assert!(
            ids.iter()
                .all(|id| home(*id, m.bits()) == home(ids[0], m.bits()))
        );
        for (k, id) in ids.iter().enumerate().step_by(3) {
            assert_eq!(m.remove(id), Some(k));
        }
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(m.get(id).copied(), (k % 3 != 0).then_some(k));
        }
    }

    /// The ids whose home slot is `home` in a table of `2^bits` slots, the first `n` of them.
    fn homed_at(home_slot: usize, bits: u32, n: usize) -> Vec<NodeId> {
        (1..u128::MAX)
            .map(NodeId)
            .filter(|id| home(*id, bits) == home_slot)
            .take(n)
            .collect()
    }

    #[test]
    fn a_run_that_wraps_round_the_table_closes_up_when_its_head_goes() {
        // Eight slots: two ids at home in the last slot and one at home in the first. In goes
        // a (slot 7), then b (home 7, wraps to 0), d (home 0, to 1), c (home 7, to 2).
        let ids = homed_at(7, 3, 3);
        let (a, b, c) = (ids[0], ids[1], ids[2]);
        let d = homed_at(0, 3, 1)[0];
        let mut m = ProbeMap::default();
        for (k, id) in [a, b, d, c].into_iter().enumerate() {
            assert_eq!(m.insert(id, k), None);
        }
        assert_eq!(m.slots.len(), 8);
        let at = |m: &ProbeMap<usize>, id| m.find(id).ok();
        assert_eq!([a, b, d, c].map(|id| at(&m, id)), [7, 0, 1, 2].map(Some));
        // Replacing a value in a half-full table does not grow it.
        assert_eq!(m.insert(d, 9), Some(2));
        assert_eq!(m.slots.len(), 8);
        // a's removal moves each entry after it back across the end of the table.
        assert_eq!(m.remove(&a), Some(0));
        m.check_invariants();
        assert_eq!([b, d, c].map(|id| at(&m, id)), [7, 0, 1].map(Some));
        assert_eq!([b, d, c].map(|id| m.get(&id).copied()), [1, 9, 3].map(Some));
        assert_eq!(m.get(&a), None);

        // Entries past the end whose homes lie between the gap and them stay: x (home 6, slot
        // 6), y (home 7, slot 7), z (home 0, slot 0), w (home 7, wraps to 1); x goes.
        let (x, y, z) = (
            homed_at(6, 3, 1)[0],
            homed_at(7, 3, 1)[0],
            homed_at(0, 3, 1)[0],
        );
        let w = homed_at(7, 3, 2)[1];
        let mut m = ProbeMap::default();
        for (k, id) in [x, y, z, w].into_iter().enumerate() {
            assert_eq!(m.insert(id, k), None);
        }
        assert_eq!([x, y, z, w].map(|id| at(&m, id)), [6, 7, 0, 1].map(Some));
        assert_eq!(m.remove(&x), Some(0));
        m.check_invariants();
        assert_eq!([y, z, w].map(|id| at(&m, id)), [7, 0, 1].map(Some));
    }

    #[test]
    fn an_emptied_map_gives_its_room_back() {
        let mut m = ProbeMap::default();
        assert_eq!(m.heap_bytes(), 0);
        m.insert(NodeId(7), 1u64);
        assert_eq!(m.heap_bytes(), MIN_SLOTS * std::mem::size_of::<Slot<u64>>());
        assert_eq!(m.remove(&NodeId(7)), Some(1));
        assert_eq!((m.len(), m.heap_bytes()), (0, 0));
        assert_eq!(m.remove(&NodeId(7)), None);
    }

    proptest! {
        /// Any sequence of inserts, removes and shrinks leaves the map holding exactly what a
        /// B-tree map given the same operations holds, at most half full. Ids are drawn from a
        /// few home slots' worth so that runs wrap round the table and collide.
        #[test]
        fn the_map_agrees_with_a_btree_map(
            ops in proptest::collection::vec((0u8..4, 0u128..48, any::<u32>()), 0..400)
        ) {
            let mut m = ProbeMap::default();
            let mut model = BTreeMap::new();
            for (op, k, v) in ops {
                // Half the ids share their high and low halves (and so a home slot).
                let id = if k % 2 == 0 {
                    NodeId((k << 64) | k)
                } else {
                    NodeId(k.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
                };
                match op {
                    0 | 1 => prop_assert_eq!(m.insert(id, v), model.insert(id, v)),
                    2 => prop_assert_eq!(m.remove(&id), model.remove(&id)),
                    _ => m.shrink_to(v as usize % 64),
                }
                prop_assert_eq!(m.len(), model.len());
                m.check_invariants();
                // Present or absent, every look-up agrees with the model's.
                prop_assert_eq!(m.get(&id), model.get(&id));
                let other = NodeId(id.get() ^ 1);
                prop_assert_eq!(m.get(&other), model.get(&other));
            }
            for (id, v) in &model {
                prop_assert_eq!(m.get(id), Some(v));
            }
            let mut held: Vec<(NodeId, u32)> = m.iter().map(|(k, v)| (*k, *v)).collect();
            held.sort_by_key(|e| e.0);
            prop_assert_eq!(held, model.into_iter().collect::<Vec<_>>());
        }
    }
}
