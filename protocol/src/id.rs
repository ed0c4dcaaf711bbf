//! Identifiers on the Pastry ring: [`NodeId`] and [`Key`], their digits and circular distance.
//!
//! Both live in the same 128-bit circular id space. A digit is `b = 4` bits, so an id has
//! [`DIGITS`] = 32 digits of base [`BASE`] = 16, most significant first.

use std::fmt;

use sha2::{Digest, Sha256};

/// Bits per digit (Pastry's `b`).
pub const DIGIT_BITS: u32 = 4;
/// Number of distinct digit values (`2^b`), the number of routing-table columns.
pub const BASE: usize = 1 << DIGIT_BITS;
/// Digits in an id (`128 / b`), the number of routing-table rows.
pub const DIGITS: usize = (128 / DIGIT_BITS) as usize;

/// A point of the 128-bit id ring. Shared by [`NodeId`] and [`Key`] so that nodes and keys
/// can be compared directly.
macro_rules! ring_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        ///
        /// Aligned to 8 bytes, not to a `u128`'s 16: every table of ids (routing-table rows,
        /// per-peer maps, timer entries) would otherwise pad each entry to a multiple of 16.
        /// Read the value with [`Self::get`] (or by copy: `{ id.0 }`); a reference to the
        /// field is refused by the compiler.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(C, packed(8))]
        pub struct $name(pub u128);

        impl $name {
            /// The raw 128-bit value.
            pub const fn get(self) -> u128 {
                self.0
            }

            /// Digit `i` (0 = most significant) in base 16.
            pub const fn digit(self, i: usize) -> u8 {
                debug_assert!(i < DIGITS);
                ((self.0 >> (128 - DIGIT_BITS as usize * (i + 1))) & 0xF) as u8
            }

            /// Big-endian bytes.
            pub const fn to_bytes(self) -> [u8; 16] {
                self.0.to_be_bytes()
            }

            /// From big-endian bytes.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(u128::from_be_bytes(bytes))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:08x}..)", stringify!($name), (self.0 >> 96) as u32)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", { self.0 })
            }
        }
    };
}

ring_id!(
    NodeId,
    "The identifier of a node: its position on the ring."
);
ring_id!(
    Key,
    "A key on the ring: where a named cluster or topic lives, or a lookup target."
);

impl Key {
    /// Maps a name (cluster, topic) to its key: the first 128 bits of SHA-256 of the UTF-8 name.
    /// The mapping is fixed forever: every node and every version agrees on it.
    pub fn from_name(name: &str) -> Self {
        let digest = Sha256::digest(name.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self::from_bytes(bytes)
    }
}

impl NodeId {
    /// This node id seen as a key (the same ring point).
    pub const fn as_key(self) -> Key {
        Key(self.0)
    }

    /// Length of the common prefix, in digits, of `self` and `key` (32 when equal).
    pub const fn shared_prefix_len(self, key: Key) -> usize {
        ((self.0 ^ key.0).leading_zeros() / DIGIT_BITS) as usize
    }

    /// Circular distance to `key`: the shorter way round the ring.
    pub const fn distance(self, key: Key) -> u128 {
        ring_distance(self.0, key.0)
    }

    /// Clockwise distance from `self` to `other` (how far `other` lies ahead of `self`).
    pub const fn cw_distance(self, other: NodeId) -> u128 {
        other.0.wrapping_sub(self.0)
    }

    /// True when `self` is strictly closer to `key` than `other` is, ties broken by the smaller
    /// id, so that every node agrees on a single owner for every key.
    pub fn closer_than(self, other: NodeId, key: Key) -> bool {
        let (a, b) = (self.distance(key), other.distance(key));
        a < b || (a == b && self.0 < other.0)
    }
}

/// Circular distance between two ring points.
pub const fn ring_distance(a: u128, b: u128) -> u128 {
    let d = a.wrapping_sub(b);
    let e = b.wrapping_sub(a);
    if d < e { d } else { e }
}

/// A fixed, seedless hasher for maps keyed by ids (node ids, request and tunnel ids): folds
/// the value to 64 bits and multiplies by an odd constant so that every bit reaches the top
/// bits a table probes with. No per-process random seed, so iteration order (and with it a
/// simulation) is the same from run to run; much cheaper than SipHash. Node ids are uniformly
/// random (they derive from public keys) and the other ids are chosen by their owner, so no
/// stronger mixing is needed: a collision only costs probing.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
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

    #[expect(
        clippy::cast_possible_truncation,
        reason = "folding the two 64-bit halves together: dropping the high bits of each is the point"
    )]
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64 ^ (v >> 64) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_most_significant_first() {
        let id = NodeId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(id.digit(0), 0);
        assert_eq!(id.digit(1), 1);
        assert_eq!(id.digit(15), 0xf);
        assert_eq!(id.digit(31), 0xf);
    }

    #[test]
    fn shared_prefix() {
        let a = NodeId(0xabc0 << 112);
        assert_eq!(a.shared_prefix_len(Key(0xabcf << 112)), 3);
        assert_eq!(a.shared_prefix_len(Key(0x1bc0 << 112)), 0);
        assert_eq!(a.shared_prefix_len(a.as_key()), 32);
    }

    #[test]
    fn distance_wraps() {
        assert_eq!(NodeId(1).distance(Key(u128::MAX)), 2);
        assert_eq!(NodeId(u128::MAX).distance(Key(1)), 2);
        assert_eq!(NodeId(10).distance(Key(4)), 6);
        assert_eq!(NodeId(0).distance(Key(1 << 127)), 1 << 127);
    }

    #[test]
    fn ties_break_towards_smaller_id() {
        let k = Key(10);
        assert!(NodeId(8).closer_than(NodeId(12), k));
        assert!(!NodeId(12).closer_than(NodeId(8), k));
        assert!(!NodeId(8).closer_than(NodeId(8), k));
    }

    #[test]
    fn ids_pack_to_eight_byte_alignment() {
        // Tables of ids (routing rows, peer maps, timer keys) rely on it.
        assert_eq!(std::mem::size_of::<NodeId>(), 16);
        assert_eq!(std::mem::align_of::<NodeId>(), 8);
        assert_eq!(std::mem::size_of::<Option<NodeId>>(), 24);
        let id = NodeId(u128::MAX - 5);
        assert_eq!(id.get(), u128::MAX - 5);
        assert!(NodeId(1 << 64) > NodeId(u128::from(u64::MAX)));
    }

    #[test]
    fn name_hash_is_fixed() {
        // SHA-256("") = e3b0c44298fc1c149afbf4c8996fb924...
        assert_eq!(Key::from_name("").get(), 0xe3b0c44298fc1c149afbf4c8996fb924);
        assert_ne!(Key::from_name("a"), Key::from_name("b"));
    }
}
