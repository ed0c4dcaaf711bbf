//! A hash map keyed by node ids with a fixed hasher: O(1) lookups on the hot path (every
//! message looks its sender up) without the per-process random seed that would make iteration
//! order, and so simulations, differ from run to run.
//!
//! Iteration order is still an artefact of the table's layout, so code that acts on every entry
//! sorts the keys first (see `sorted_keys`).

use std::cell::Cell;
use std::hash::BuildHasherDefault;

use petal_protocol::NodeId;

use crate::time::Time;
pub(crate) use petal_protocol::id::IdHasher;

/// A map from node ids with the fixed [`IdHasher`].
pub(crate) type IdMap<V> = hashbrown::HashMap<NodeId, V, BuildHasherDefault<IdHasher>>;

/// A map from node ids kept as two sorted vectors (ids, values): its memory is its entries
/// (a hash table of `n` entries holds up to twice as many slots), lookups are a binary search
/// over the dense id array, and iteration is in id order, so it needs no sorting to be
/// deterministic. For the per-peer tables of a node, which hold tens to a few hundred entries
/// and are read far more often than changed.
#[derive(Clone, Debug)]
pub(crate) struct SortedIdMap<V> {
    ids: Vec<NodeId>,
    values: Vec<V>,
}

impl<V> Default for SortedIdMap<V> {
    fn default() -> Self {
        Self {
            ids: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<V> SortedIdMap<V> {
    fn find(&self, id: NodeId) -> Result<usize, usize> {
        self.ids.binary_search(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn contains_key(&self, id: &NodeId) -> bool {
        self.find(*id).is_ok()
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&V> {
        self.find(*id).ok().map(|i| &self.values[i])
    }

    pub(crate) fn get_mut(&mut self, id: &NodeId) -> Option<&mut V> {
        self.find(*id).ok().map(|i| &mut self.values[i])
    }

    /// Inserts or replaces; returns the value replaced.
    pub(crate) fn insert(&mut self, id: NodeId, value: V) -> Option<V> {
        self.insert_full(id, value).1
    }

    /// Inserts or replaces; returns the entry's position and the value replaced.
    fn insert_full(&mut self, id: NodeId, value: V) -> (usize, Option<V>) {
        match self.find(id) {
            Ok(i) => (i, Some(std::mem::replace(&mut self.values[i], value))),
            Err(i) => {
                if self.ids.len() == self.ids.capacity() {
                    // Grow by a quarter (amortised O(1) still), not by doubling.
                    let more = self.ids.len() / 4 + 4;
                    self.ids.reserve_exact(more);
                    self.values.reserve_exact(more);
                }
                self.ids.insert(i, id);
                self.values.insert(i, value);
                (i, None)
            }
        }
    }

    #[inline]
    pub(crate) fn remove(&mut self, id: &NodeId) -> Option<V> {
        // (Checked here, inlined: the dead nodes' map is asked at every message, and is
        // nearly always empty.)
        if self.ids.is_empty() {
            return None;
        }
        self.remove_full(id).map(|(_, v)| v)
    }

    /// Removes `id`; returns the position it had and its value.
    fn remove_full(&mut self, id: &NodeId) -> Option<(usize, V)> {
        let i = self.find(*id).ok()?;
        self.ids.remove(i);
        let value = self.values.remove(i);
        if self.ids.capacity() > 2 * self.ids.len() + 8 {
            // Give back what a burst of entries left behind.
            let keep = self.ids.len() + self.ids.len() / 4 + 4;
            self.ids.shrink_to(keep);
            self.values.shrink_to(keep);
        }
        Some((i, value))
    }

    /// Heap bytes reserved (ids and values).
    pub(crate) fn heap_bytes(&self) -> usize {
        crate::memory::vec_bytes(&self.ids) + crate::memory::vec_bytes(&self.values)
    }

    pub(crate) fn clear(&mut self) {
        self.ids = Vec::new();
        self.values = Vec::new();
    }

    /// Ids in ascending order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &NodeId> {
        self.ids.iter()
    }

    /// Entries in ascending id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &V)> {
        self.ids.iter().zip(&self.values)
    }
}

/// A [`SortedIdMap`] whose entries each hold a deadline, kept in an array of its own beside
/// the values: finding the earliest deadline ([`TimedIdMap::earliest`]) reads 8 bytes an entry
/// instead of every whole value. For the tracked peers, whose earliest deadline is found again
/// each time it moves (every ping cycle): with the deadline inside the 48-byte values that
/// scan was the simulator's largest source of cache misses at 5,000 nodes and more.
///
/// A look-up first tries the position of the entry found last: one input usually looks one
/// peer up several times (a message's sender; a peer whose timer fired), and only the first
/// search then reads the ids. The position is a guess, checked before use (entries shift as
/// others come and go), so it never changes what a look-up finds.
///
/// Otherwise a look-up scans the ids' tags ([`tag`]: 2 bytes an entry, a few lines for a
/// node's peers) and compares the whole id only where the tag matches, instead of a binary
/// search through the ids (16 bytes an entry), each step of which waits for the line the
/// last one named: the tags' lines can be prefetched before the input (their addresses are
/// known), and the entry's id and value are then two misses that overlap. A node's peers
/// share their high bits with it (leaf-set members and the deep routing-table rows), so the
/// tag is the id's low bits.
#[derive(Clone, Debug)]
pub(crate) struct TimedIdMap<V> {
    map: SortedIdMap<V>,
    /// `dues[i]` is the deadline of the entry at position `i` of `map`.
    dues: Vec<Time>,
    /// `tags[i]` is the [`tag`] of the id at position `i` of `map`.
    tags: Vec<u16>,
    /// The position of the entry found last.
    last: Cell<u32>,
    /// The position of the earliest deadline when [`TimedIdMap::earliest`] last looked.
    earliest_at: Cell<u32>,
}

impl<V> Default for TimedIdMap<V> {
    fn default() -> Self {
        Self {
            map: SortedIdMap::default(),
            dues: Vec::new(),
            tags: Vec::new(),
            last: Cell::new(0),
            earliest_at: Cell::new(0),
        }
    }
}

/// Starts loading every line of `items` (a hint).
fn prefetch_all<T>(items: &[T]) {
    let Some(end) = items.len().checked_sub(1) else {
        return;
    };
    // An item a line apart each step (and the last one, for an unaligned end).
    let step = (64 / std::mem::size_of::<T>().max(1)).max(1);
    for i in (0..end).step_by(step).chain([end]) {
        prefetch_index::prefetch_index(items, i);
    }
}

/// The tag of an id in a [`TimedIdMap`]: its low 16 bits.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the low 16 bits are the tag"
)]
fn tag(id: NodeId) -> u16 {
    id.get() as u16
}

/// The position of `id` among `ids`, whose tags are `tags` (see [`TimedIdMap`]): the tags are
/// compared 16 at a time into a bit mask (a few vector instructions), the ids only where a
/// tag matches.
fn find_tagged(tags: &[u16], ids: &[NodeId], id: NodeId) -> Option<usize> {
    let t = tag(id);
    for (c, chunk) in tags.chunks(16).enumerate() {
        let mut hits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |m, (k, &x)| m | (u32::from(x == t) << k));
        while hits != 0 {
            let i = c * 16 + hits.trailing_zeros() as usize;
            if ids[i] == id {
                return Some(i);
            }
            hits &= hits - 1;
        }
    }
    None
}

impl<V> TimedIdMap<V> {
    /// Where `id` is: the last position found first, then by the tags. The last position's
    /// tag is compared before its id, so that a look-up of another id reads no id but those
    /// its tag matches (the tags' lines are the ones a driver prefetches).
    fn find(&self, id: NodeId) -> Option<usize> {
        let last = self.last.get() as usize;
        if self.tags.get(last) == Some(&tag(id)) && self.map.ids.get(last) == Some(&id) {
            return Some(last);
        }
        let found = find_tagged(&self.tags, &self.map.ids, id);
        debug_assert_eq!(found, self.map.find(id).ok());
        if let Some(i) = found {
            self.last.set(u32::try_from(i).unwrap_or(0));
        }
        found
    }

    /// A hint: starts loading the tags, whose lines a look-up reads (unless the position
    /// found last is the one).
    pub(crate) fn prefetch_tags(&self) {
        prefetch_all(&self.tags);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// A hint: starts loading the id and the value of the entry whose deadline
    /// [`TimedIdMap::earliest`] found last (a peer whose timer is likely the next to fire).
    pub(crate) fn prefetch_earliest(&self) {
        let at = self.earliest_at.get() as usize;
        if at < self.map.ids.len() {
            prefetch_index::prefetch_index(&self.map.ids, at);
            prefetch_index::prefetch_index(&self.map.values, at);
        }
    }

    /// Makes the next look-up try the position [`TimedIdMap::earliest`] found last first.
    pub(crate) fn recall_earliest(&self) {
        self.last.set(self.earliest_at.get());
    }

    pub(crate) fn contains_key(&self, id: &NodeId) -> bool {
        self.find(*id).is_some()
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&V> {
        self.find(*id).map(|i| &self.map.values[i])
    }

    pub(crate) fn get_mut(&mut self, id: &NodeId) -> Option<&mut V> {
        self.find(*id).map(|i| &mut self.map.values[i])
    }

    /// The entry of `id` and its deadline.
    pub(crate) fn get_with_due(&self, id: &NodeId) -> Option<(&V, Time)> {
        let i = self.find(*id)?;
        Some((&self.map.values[i], self.dues[i]))
    }

    /// Inserts or replaces `id` with its deadline; returns the value replaced.
    pub(crate) fn insert(&mut self, id: NodeId, value: V, due: Time) -> Option<V> {
        let (i, old) = self.map.insert_full(id, value);
        if old.is_some() {
            self.dues[i] = due;
        } else {
            if self.dues.len() == self.dues.capacity() {
                // Grow as the map's arrays do (by a quarter).
                let more = self.dues.len() / 4 + 4;
                self.dues.reserve_exact(more);
                self.tags.reserve_exact(more);
            }
            self.dues.insert(i, due);
            self.tags.insert(i, tag(id));
        }
        old
    }

    pub(crate) fn remove(&mut self, id: &NodeId) -> Option<V> {
        let (i, value) = self.map.remove_full(id)?;
        self.dues.remove(i);
        self.tags.remove(i);
        if self.dues.capacity() > 2 * self.dues.len() + 8 {
            let keep = self.dues.len() + self.dues.len() / 4 + 4;
            self.dues.shrink_to(keep);
            self.tags.shrink_to(keep);
        }
        Some(value)
    }

    /// Sets the deadline of `id`; false when `id` is absent.
    pub(crate) fn set_due(&mut self, id: NodeId, due: Time) -> bool {
        match self.find(id) {
            Some(i) => {
                self.dues[i] = due;
                true
            }
            None => false,
        }
    }

    /// Panics unless every entry has its deadline and its id's tag.
    pub(crate) fn check_invariants(&self) {
        assert_eq!(self.dues.len(), self.map.len(), "a deadline per entry");
        assert!(
            self.map
                .ids
                .iter()
                .map(|&id| tag(id))
                .eq(self.tags.iter().copied()),
            "a tag per entry, its id's"
        );
    }

    /// The earliest deadline and its id (ties: the smallest id), if any entry.
    pub(crate) fn earliest(&self) -> Option<(Time, NodeId)> {
        // Positions are in id order, so the first of equal deadlines has the smallest id.
        let mut best: Option<(Time, usize)> = None;
        for (i, &due) in self.dues.iter().enumerate() {
            if best.is_none_or(|(t, _)| due < t) {
                best = Some((due, i));
            }
        }
        best.map(|(t, i)| {
            self.earliest_at.set(u32::try_from(i).unwrap_or(0));
            (t, self.map.ids[i])
        })
    }

    /// Heap bytes reserved (ids, values, deadlines and tags).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.map.heap_bytes()
            + crate::memory::vec_bytes(&self.dues)
            + crate::memory::vec_bytes(&self.tags)
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.dues = Vec::new();
        self.tags = Vec::new();
    }

    /// Ids in ascending order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &NodeId> {
        self.map.keys()
    }

    /// Entries with their deadlines, in ascending id order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &V, Time)> {
        self.map
            .iter()
            .zip(&self.dues)
            .map(|((id, v), &due)| (id, v, due))
    }
}

impl<V> std::ops::Index<&NodeId> for SortedIdMap<V> {
    type Output = V;

    #[expect(
        clippy::expect_used,
        reason = "indexing by an id that is absent is a bug of the caller, as with HashMap"
    )]
    fn index(&self, id: &NodeId) -> &V {
        self.get(id).expect("id present in the map")
    }
}

impl<'a, V> IntoIterator for &'a SortedIdMap<V> {
    type Item = (&'a NodeId, &'a V);
    type IntoIter = std::iter::Zip<std::slice::Iter<'a, NodeId>, std::slice::Iter<'a, V>>;

    fn into_iter(self) -> Self::IntoIter {
        self.ids.iter().zip(&self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_inserts_give_the_same_order() {
        let build = || {
            let mut m: IdMap<u32> = IdMap::default();
            for i in 0..1000u128 {
                m.insert(
                    NodeId(i.wrapping_mul(0x1234_5678_9abc_def1_0fed_cba9_8765_4321)),
                    i as u32,
                );
            }
            m.keys().copied().collect::<Vec<_>>()
        };
        assert_eq!(build(), build());
    }

    proptest::proptest! {
        /// Inserts, replacements and removals leave the sorted map equal to an ordered map,
        /// entry for entry and in order, and its room shrinks back after a burst.
        #[test]
        fn sorted_map_matches_a_btree_map(ops in proptest::collection::vec((0u8..3, 0u128..64, proptest::prelude::any::<u32>()), 0..600)) {
            let mut map: SortedIdMap<u32> = SortedIdMap::default();
            let mut model = std::collections::BTreeMap::new();
            for (op, id, v) in ops {
                let id = NodeId(id << 100 | id);
                match op {
                    0 | 1 => proptest::prop_assert_eq!(map.insert(id, v), model.insert(id, v)),
                    _ => proptest::prop_assert_eq!(map.remove(&id), model.remove(&id)),
                }
                proptest::prop_assert_eq!(map.len(), model.len());
                proptest::prop_assert_eq!(map.get(&id), model.get(&id));
                proptest::prop_assert_eq!(map.contains_key(&id), model.contains_key(&id));
                proptest::prop_assert!(map.ids.capacity() <= 2 * map.len() + 8 + map.len() / 4 + 4);
            }
            let got: Vec<_> = map.iter().map(|(k, v)| (*k, *v)).collect();
            let want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
            proptest::prop_assert_eq!(got, want);
            if let Some((k, v)) = model.iter().next() {
                proptest::prop_assert_eq!(map[k], *v);
                let e = map.get_mut(k).unwrap();
                *e = e.wrapping_add(1);
                proptest::prop_assert_eq!(map[k], v.wrapping_add(1));
            }
            map.clear();
            proptest::prop_assert_eq!(map.len(), 0);
        }

        /// The timed map holds what an ordered map of (value, deadline) holds, entry for entry
        /// and in order, and its earliest entry is the smallest (deadline, id) of the model.
        #[test]
        fn timed_map_matches_a_btree_map(ops in proptest::collection::vec((0u8..4, 0u128..64, 0u64..20), 0..600)) {
            let mut map: TimedIdMap<u64> = TimedIdMap::default();
            let mut model = std::collections::BTreeMap::new();
            // Ids in five tag classes (their low bits), about 13 ids each, so that look-ups
            // compare whole ids behind matching tags, across several 16-tag chunks.
            let id_of = |raw: u128| NodeId((raw << 100) | (raw % 5));
            for (op, id, t) in ops {
                let id = id_of(id);
                let due = Time::from_micros(t);
                match op {
                    0 | 1 => proptest::prop_assert_eq!(
                        map.insert(id, t * 7, due),
                        model.insert(id, (t * 7, due)).map(|(v, _)| v)
                    ),
                    2 => proptest::prop_assert_eq!(
                        map.set_due(id, due),
                        model.get_mut(&id).map(|e| e.1 = due).is_some()
                    ),
                    _ => proptest::prop_assert_eq!(map.remove(&id), model.remove(&id).map(|(v, _)| v)),
                }
                proptest::prop_assert_eq!(map.len(), model.len());
                proptest::prop_assert_eq!(map.get_with_due(&id), model.get(&id).map(|(v, d)| (v, *d)));
                let want = model.iter().map(|(k, (_, d))| (*d, *k)).min();
                proptest::prop_assert_eq!(map.earliest(), want);
                // Look-ups try the position found last, or the earliest's (`recall_earliest`),
                // stale once entries move: they still find exactly the model's entries.
                let other = id_of(((id.get() >> 100) + 17) % 64);
                proptest::prop_assert_eq!(map.get(&other), model.get(&other).map(|(v, _)| v));
                map.recall_earliest();
                proptest::prop_assert_eq!(map.get(&other), model.get(&other).map(|(v, _)| v));
                proptest::prop_assert_eq!(map.contains_key(&id), model.contains_key(&id));
                // The deadlines' and tags' room follows the map's own, entry for entry.
                proptest::prop_assert_eq!(map.dues.capacity(), map.map.ids.capacity());
                proptest::prop_assert_eq!(map.tags.capacity(), map.map.ids.capacity());
                map.check_invariants();
            }
            let got: Vec<_> = map.iter().map(|(k, v, d)| (*k, *v, d)).collect();
            let want: Vec<_> = model.iter().map(|(k, (v, d))| (*k, *v, *d)).collect();
            proptest::prop_assert_eq!(got, want);
            map.clear();
            proptest::prop_assert_eq!(map.earliest(), None);
        }
    }
}
