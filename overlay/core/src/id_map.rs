//! A hash map keyed by node ids with a fixed hasher: O(1) lookups on the hot path (every
//! message looks its sender up) without the per-process random seed that would make iteration
//! order, and so simulations, differ from run to run.
//!
//! Iteration order is still an artefact of the table's layout, so code that acts on every entry
//! sorts the keys first (see `sorted_keys`).

use std::hash::{BuildHasherDefault, Hasher};

use petal_protocol::NodeId;

/// A fixed, seedless hasher: folds the value to 64 bits and multiplies by an odd constant so
/// that every bit reaches the top bits the table probes with. Node ids are uniformly random (in
/// Petal they derive from public keys), so no stronger mixing is needed.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 =
                (self.0.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64 ^ (v >> 64) as u64);
    }
}

/// A map from node ids with the fixed [`IdHasher`].
pub type IdMap<V> = hashbrown::HashMap<NodeId, V, BuildHasherDefault<IdHasher>>;

/// The keys of `map` in ascending order (for deterministic iteration).
pub fn sorted_keys<V>(map: &IdMap<V>) -> Vec<NodeId> {
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
