//! A hash map keyed by node ids with a fixed hasher: O(1) lookups on the hot path (every
//! message looks its sender up) without the per-process random seed that would make iteration
//! order, and so simulations, differ from run to run.
//!
//! Iteration order is still an artefact of the table's layout, so code that acts on every entry
//! sorts the keys first (see `sorted_keys`).

use std::hash::BuildHasherDefault;

use petal_protocol::NodeId;
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

    /// Prefetches the id a search looks at first (a hint: see [`crate::Node::prefetch_state`]).
    pub(crate) fn prefetch_middle(&self) {
        if !self.ids.is_empty() {
            prefetch_index::prefetch_index(&self.ids, self.ids.len() / 2);
        }
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
        match self.find(id) {
            Ok(i) => Some(std::mem::replace(&mut self.values[i], value)),
            Err(i) => {
                if self.ids.len() == self.ids.capacity() {
                    // Grow by a quarter (amortised O(1) still), not by doubling.
                    let more = self.ids.len() / 4 + 4;
                    self.ids.reserve_exact(more);
                    self.values.reserve_exact(more);
                }
                self.ids.insert(i, id);
                self.values.insert(i, value);
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, id: &NodeId) -> Option<V> {
        let i = self.find(*id).ok()?;
        self.ids.remove(i);
        let value = self.values.remove(i);
        if self.ids.capacity() > 2 * self.ids.len() + 8 {
            // Give back what a burst of entries left behind.
            let keep = self.ids.len() + self.ids.len() / 4 + 4;
            self.ids.shrink_to(keep);
            self.values.shrink_to(keep);
        }
        Some(value)
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
    }
}
