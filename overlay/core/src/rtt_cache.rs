//! [`RttCache`]: measured round-trip times of candidates that are not (or no longer) tracked,
//! bounded, the oldest entry of a set going first.
//!
//! It is the largest table a node keeps, so it is laid out for memory and for one cache line
//! a lookup: a set-associative table of 8-byte entries, [`WAYS`] to a set (one 64-byte line),
//! a power of two of sets. An entry packs a 40-bit tag of the candidate's id and its round
//! trip in microseconds (24 bits, so at most 16.8 s; longer ones are kept as that, and a probe
//! times out long before). The tag's low bits pick the set, so the table doubles (and halves)
//! by its tags alone. A set keeps its entries oldest first, packed from its start; a new
//! entry in a full set evicts that set's oldest, unless the table may still double. Its bound
//! is the largest power of two of full sets within `max_rtt_cache` (one set of
//! `max_rtt_cache` entries below [`WAYS`]).
//!
//! The earlier layout kept each candidate's full id (24-byte entries and a hash index, about
//! 30 bytes an entry, 3.9 KB for 128) and one global age order. At 128 entries a node that
//! hears of hundreds of candidates at once (a fleet started together) forgot measured
//! candidates before hearing of them again and probed them again: in two `cold-start` runs
//! (1,000 nodes, the first two seeds) 38-41 % of the probes went to a node the prober had probed
//! before in the same run. 512 entries of 8 bytes take 4 KB, and with them such repeats
//! fell to 7-8 % and the two runs' messages in their first 5 s by 26-27 %.
//!
//! A tag is not the id: an absent candidate whose tag equals a cached one's gets that one's
//! round trip. The tag hashes the id, folded to 64 bits (its halves xored), with a per-node
//! key (drawn from the node's seed). Ids with the same fold share a tag under every key, but
//! node ids are hashes of public keys, so finding one whose fold equals another's takes about
//! 2^64 key pairs; other ids match only by chance, under a key no other node knows. Within a
//! set the tags share their set bits, which leaves 34 bits at 64 sets, so such a false match
//! has a chance of about 8 / 2^34 (5 x 10^-10) a lookup. Its worst effect is a routing-table
//! slot that holds a farther node than it could (round trips only choose among correct
//! entries).

use petal_protocol::NodeId;

/// Entries in a set: one 64-byte cache line of 8-byte entries.
pub(crate) const WAYS: usize = 8;

/// Bits of an entry that hold the round trip.
const RTT_BITS: u32 = 24;
const RTT_MAX: u64 = (1 << RTT_BITS) - 1;

/// See the module documentation. An empty entry is 0 (tags are never 0).
#[derive(Debug, Default)]
pub(crate) struct RttCache {
    sets: Box<[[u64; WAYS]]>,
    /// Entries held.
    len: u32,
    /// The hash key of the tags.
    key: u64,
}

fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The low bits of `x` (a tag: the set index).
fn low(x: u64) -> usize {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "only the low bits pick the set"
    )]
    {
        x as usize
    }
}

fn rtt_of(entry: u64) -> u32 {
    (entry & RTT_MAX) as u32
}

/// Entries used in `set` (they are packed from its start).
fn used(set: &[u64; WAYS]) -> usize {
    set.iter().position(|&e| e == 0).unwrap_or(WAYS)
}

impl RttCache {
    /// An empty cache whose tags hash with `key`.
    pub(crate) fn new(key: u64) -> Self {
        Self {
            key,
            ..Self::default()
        }
    }

    /// The id's tag: 40 bits, never 0.
    fn tag(&self, id: &NodeId) -> u64 {
        #[expect(clippy::cast_possible_truncation, reason = "folding the halves")]
        let folded = (id.0 as u64) ^ ((id.0 >> 64) as u64);
        (mix(folded ^ self.key) >> RTT_BITS).max(1)
    }

    fn set_of(&self, tag: u64) -> usize {
        low(tag) & (self.sets.len().wrapping_sub(1))
    }

    /// The most sets and entries a set may hold under the bound `max`.
    fn shape(max: usize) -> (usize, usize) {
        if max < WAYS {
            (1, max.max(1))
        } else {
            let sets = max / WAYS;
            (1 << sets.ilog2(), WAYS)
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Where `id`'s entry is: (set, way).
    fn find(&self, tag: u64) -> Option<(usize, usize)> {
        if self.sets.is_empty() {
            return None;
        }
        let s = self.set_of(tag);
        let set = &self.sets[s];
        set.iter()
            .position(|&e| e != 0 && e >> RTT_BITS == tag)
            .map(|w| (s, w))
    }

    /// Prefetches the sets that `ids` fall in: a node learning a batch of candidates (a leaf
    /// set, a row) looks each up in turn, and each set is most often out of cache. Fetched
    /// together, their misses overlap instead of coming one after the other.
    pub(crate) fn warm<'a>(&self, ids: impl Iterator<Item = &'a NodeId>) {
        if self.sets.is_empty() {
            return;
        }
        for id in ids {
            prefetch_index::prefetch_index(&self.sets, self.set_of(self.tag(id)));
        }
    }

    /// The round trip cached for `id`.
    pub(crate) fn get(&self, id: &NodeId) -> Option<u32> {
        self.find(self.tag(id))
            .map(|(s, w)| rtt_of(self.sets[s][w]))
    }

    /// Takes `id`'s entry out, giving its round trip.
    pub(crate) fn remove(&mut self, id: &NodeId) -> Option<u32> {
        let (s, w) = self.find(self.tag(id))?;
        let set = &mut self.sets[s];
        let rtt = rtt_of(set[w]);
        set.copy_within(w + 1.., w);
        set[WAYS - 1] = 0;
        self.len -= 1;
        if self.len == 0 {
            self.sets = Box::default();
        } else {
            while self.len as usize * 4 <= self.sets.len() * WAYS && self.halve() {}
        }
        Some(rtt)
    }

    /// Records a measurement of `id`: a cached candidate keeps its place in its set's order
    /// and takes the new value; a new one goes last in its set, which first doubles the table
    /// when the set is full and the bound `max` allows, or else evicts the set's oldest.
    pub(crate) fn insert(&mut self, id: NodeId, rtt_us: u32, max: usize) {
        let tag = self.tag(&id);
        let entry = tag << RTT_BITS | u64::from(rtt_us).min(RTT_MAX);
        if let Some((s, w)) = self.find(tag) {
            self.sets[s][w] = entry;
            return;
        }
        let (max_sets, ways) = Self::shape(max);
        if self.sets.is_empty() {
            self.sets = vec![[0; WAYS]; 1].into_boxed_slice();
        }
        while used(&self.sets[self.set_of(tag)]) >= ways && self.sets.len() < max_sets {
            self.double();
        }
        let s = self.set_of(tag);
        let set = &mut self.sets[s];
        let n = used(set);
        if n >= ways {
            // Full: the set's oldest goes.
            set.copy_within(1..ways, 0);
            set[ways - 1] = entry;
        } else {
            set[n] = entry;
            self.len += 1;
        }
    }

    /// Twice the sets: each splits by its tags' next bit, keeping its order.
    fn double(&mut self) {
        let old = self.sets.len();
        let mut sets = vec![[0u64; WAYS]; old * 2].into_boxed_slice();
        for (s, set) in self.sets.iter().enumerate() {
            let (mut lo, mut hi) = (0, 0);
            for &e in set.iter().take_while(|&&e| e != 0) {
                if low(e >> RTT_BITS) & old == 0 {
                    sets[s][lo] = e;
                    lo += 1;
                } else {
                    sets[s + old][hi] = e;
                    hi += 1;
                }
            }
        }
        self.sets = sets;
    }

    /// Half the sets, when every pair that merges fits in one (the lower set's entries taken
    /// as the older). False when the table has one set or a pair does not fit.
    fn halve(&mut self) -> bool {
        let half = self.sets.len() / 2;
        if half == 0 || (0..half).any(|s| used(&self.sets[s]) + used(&self.sets[s + half]) > WAYS) {
            return false;
        }
        let mut sets = vec![[0u64; WAYS]; half].into_boxed_slice();
        for (s, set) in sets.iter_mut().enumerate() {
            let (a, b) = (used(&self.sets[s]), used(&self.sets[s + half]));
            set[..a].copy_from_slice(&self.sets[s][..a]);
            set[a..a + b].copy_from_slice(&self.sets[s + half][..b]);
        }
        self.sets = sets;
        true
    }

    /// Heap bytes reserved: the sets.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val::<[[u64; WAYS]]>(&self.sets)
    }

    /// Forgets every entry (the key stays).
    pub(crate) fn clear(&mut self) {
        *self = Self::new(self.key);
    }

    /// Asserts the layout: entries packed in their own sets, no tag twice, the count, and
    /// the bound `max`.
    pub(crate) fn check(&self, max: usize) {
        let (max_sets, ways) = Self::shape(max);
        assert!(self.sets.len() <= max_sets, "RTT cache over its bound");
        assert!(
            self.sets.is_empty() || self.sets.len().is_power_of_two(),
            "RTT cache sets"
        );
        let mut n = 0;
        for (s, set) in self.sets.iter().enumerate() {
            let k = used(set);
            assert!(k <= ways, "RTT cache set over its ways");
            assert!(set[k..].iter().all(|&e| e == 0), "RTT cache set not packed");
            for (w, &e) in set[..k].iter().enumerate() {
                assert_eq!(
                    self.set_of(e >> RTT_BITS),
                    s,
                    "RTT cache entry in another set"
                );
                assert!(
                    set[..w].iter().all(|&f| f >> RTT_BITS != e >> RTT_BITS),
                    "RTT cache tag twice"
                );
            }
            n += k;
        }
        assert_eq!(n, self.len as usize, "RTT cache count");
        assert!(n <= max, "RTT cache over its bound");
        assert_eq!(
            self.len == 0,
            self.sets.is_empty(),
            "RTT cache kept empty sets"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> NodeId {
        NodeId(u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
    }

    #[test]
    fn removal_keeps_every_other_entry_findable() {
        let mut c = RttCache::new(7);
        for n in 1..=40 {
            c.insert(id(n), n * 10, 100);
        }
        c.check(100);
        for n in (1..=40).step_by(3) {
            assert_eq!(c.remove(&id(n)), Some(n * 10));
            c.check(100);
        }
        for n in 1..=40 {
            let want = (n % 3 != 1).then_some(n * 10);
            assert_eq!(c.get(&id(n)), want, "node {n}");
        }
        assert!(c.remove(&id(1)).is_none());
    }

    /// At its bound the cache is full sets, exactly the largest power of two of them that
    /// fits: 512 entries in 4 KiB for the default bound.
    #[test]
    fn a_cache_at_its_bound_holds_full_sets() {
        let mut c = RttCache::new(1);
        for n in 1..=10_000 {
            c.insert(id(n), n, 512);
        }
        c.check(512);
        assert_eq!(c.len(), 512);
        assert_eq!(c.heap_bytes(), 4096);
        // The newest entry of each set is the last one inserted there: the most recent
        // insertions are all present.
        assert!((9_990..=10_000).all(|n| c.get(&id(n)) == Some(n)));
        let mut d = RttCache::new(1);
        for n in 1..=10_000 {
            d.insert(id(n), n, 100);
        }
        d.check(100);
        assert_eq!(
            (d.len(), d.heap_bytes()),
            (64, 512),
            "8 sets of 8 within 100"
        );
    }

    #[test]
    fn round_trips_past_24_bits_are_kept_at_the_most() {
        let mut c = RttCache::new(3);
        c.insert(id(1), u32::MAX, 8);
        c.insert(id(2), 0, 8);
        assert_eq!(c.get(&id(1)), Some((1 << 24) - 1));
        assert_eq!(c.get(&id(2)), Some(0));
    }

    proptest::proptest! {
        /// Up to one set (a bound below 8): the cache is exactly first in, first out, under
        /// any mix of inserts, re-inserts (which keep their place) and removals.
        #[test]
        fn one_set_evicts_the_oldest_entry(
            ops in proptest::collection::vec((proptest::bool::weighted(0.7), 1u32..24), 1..400),
            max in 1usize..=8,
            key: u64,
        ) {
            let mut c = RttCache::new(key);
            // The model: (node, round trip), oldest first.
            let mut model: Vec<(u32, u32)> = Vec::new();
            for (i, (insert, n)) in (0u32..).zip(ops) {
                if insert {
                    c.insert(id(n), i, max);
                    match model.iter_mut().find(|e| e.0 == n) {
                        Some(e) => e.1 = i,
                        None => model.push((n, i)),
                    }
                    if model.len() > max {
                        model.remove(0);
                    }
                } else {
                    let had = model.iter().position(|e| e.0 == n);
                    proptest::prop_assert_eq!(c.remove(&id(n)), had.map(|i| model[i].1));
                    if let Some(i) = had {
                        model.remove(i);
                    }
                }
                c.check(max);
                for k in 1..24 {
                    let want = model.iter().find(|e| e.0 == k).map(|e| e.1);
                    proptest::prop_assert_eq!(c.get(&id(k)), want, "node {}", k);
                }
            }
        }

        /// Any bound: a cached entry has the last round trip measured, a removed one is gone,
        /// the newest insertion is always there, and nothing is evicted while the table has
        /// fewer sets than the bound allows.
        #[test]
        fn entries_are_right_and_kept_until_the_table_is_at_its_bound(
            ops in proptest::collection::vec((proptest::bool::weighted(0.8), 1u32..600), 1..1500),
            max in 8usize..300,
            key: u64,
        ) {
            let mut c = RttCache::new(key);
            let (max_sets, _) = RttCache::shape(max);
            // The entries present, with their last round trip.
            let mut model: std::collections::BTreeMap<u32, u32> = Default::default();
            for (i, (insert, n)) in (0u32..).zip(ops) {
                if insert {
                    c.insert(id(n), i, max);
                    model.insert(n, i);
                    proptest::prop_assert_eq!(c.get(&id(n)), Some(i));
                    let before = model.len();
                    model.retain(|k, _| c.get(&id(*k)).is_some());
                    proptest::prop_assert!(before - model.len() <= 1, "one eviction at most");
                    if model.len() < before {
                        proptest::prop_assert_eq!(
                            c.sets.len(),
                            max_sets,
                            "evicted below the bound"
                        );
                    }
                } else {
                    proptest::prop_assert_eq!(c.remove(&id(n)), model.remove(&n));
                    proptest::prop_assert_eq!(c.get(&id(n)), None);
                }
                c.check(max);
                proptest::prop_assert_eq!(c.len(), model.len());
                for (k, v) in &model {
                    proptest::prop_assert_eq!(c.get(&id(*k)), Some(*v));
                }
            }
        }

        /// Through every doubling, each set keeps its entries in insertion order: what a full
        /// set at the bound evicts is the oldest entry of that set (re-inserts keep their
        /// place).
        #[test]
        fn doubling_keeps_each_sets_order(
            ops in proptest::collection::vec(1u32..2000, 1..3000),
            max in 8usize..300,
            key: u64,
        ) {
            let mut c = RttCache::new(key);
            // (node, first insertion number) of the entries present.
            let mut model: Vec<(u32, u32)> = Vec::new();
            for (i, n) in (0u32..).zip(ops) {
                c.insert(id(n), i, max);
                if !model.iter().any(|e| e.0 == n) {
                    model.push((n, i));
                }
                let gone: Vec<(u32, u32)> =
                    model.iter().copied().filter(|e| c.get(&id(e.0)).is_none()).collect();
                proptest::prop_assert!(gone.len() <= 1);
                if let Some(&(g, seq)) = gone.first() {
                    let set = c.set_of(c.tag(&id(g)));
                    proptest::prop_assert_eq!(
                        set,
                        c.set_of(c.tag(&id(n))),
                        "evicted from another set"
                    );
                    let oldest = model
                        .iter()
                        .filter(|e| c.set_of(c.tag(&id(e.0))) == set)
                        .map(|e| e.1)
                        .min();
                    proptest::prop_assert_eq!(Some(seq), oldest, "not the set's oldest");
                    model.retain(|e| e.0 != g);
                }
                c.check(max);
            }
        }
    }

    #[test]
    fn a_filled_and_emptied_cache_gives_its_room_back() {
        let mut c = RttCache::new(5);
        for n in 1..=200 {
            c.insert(id(n), 1, 1000);
        }
        assert!(c.heap_bytes() >= 200 * 8);
        for n in 1..=195 {
            c.remove(&id(n));
            c.check(1000);
        }
        assert_eq!(c.len(), 5);
        assert!(
            c.heap_bytes() <= 2 * 64,
            "{} bytes for 5 entries",
            c.heap_bytes()
        );
        for n in 196..=200 {
            c.remove(&id(n));
        }
        assert_eq!(c.heap_bytes(), 0);
    }
}
