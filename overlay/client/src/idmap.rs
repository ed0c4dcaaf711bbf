//! Hash maps keyed by sequential ids (request and tunnel ids): a multiplicative hash, much
//! cheaper than SipHash. Ids are chosen by this library or the node, never by a remote attacker
//! who could aim at collisions, and a collision only costs probing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from ids to `V`.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of one `u64`.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
