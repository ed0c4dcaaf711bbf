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

/// The keys of `map` in ascending order (for deterministic iteration).
pub(crate) fn sorted_keys<V>(map: &IdMap<V>) -> Vec<NodeId> {
    let mut keys: Vec<NodeId> = map.keys().copied().collect();
    keys.sort_unstable();
    keys
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
}
