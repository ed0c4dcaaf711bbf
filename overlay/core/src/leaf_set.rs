//! The leaf set: the `L/2` numerically closest nodes on each side of this node.
//!
//! The two sides are kept independently, each sorted nearest first. In a ring of at most
//! `L + 1` nodes a node may sit on both sides (the sides are short, or full and reaching round to
//! each other); then the leaf set holds every node of the ring and [`LeafSet::covers`] is true
//! for every key.

use petal_protocol::{Key, NodeId};

/// Leaf set of one node.
#[derive(Clone, Debug)]
pub struct LeafSet {
    me: NodeId,
    half: usize,
    /// Counter-clockwise neighbours (smaller ids, wrapping), nearest first.
    left: Vec<NodeId>,
    /// Clockwise neighbours (larger ids, wrapping), nearest first.
    right: Vec<NodeId>,
}

impl LeafSet {
    /// An empty leaf set of `half` entries per side.
    pub fn new(me: NodeId, half: usize) -> Self {
        assert!(half > 0, "leaf set needs at least one entry per side");
        Self {
            me,
            half,
            left: Vec::with_capacity(half + 1),
            right: Vec::with_capacity(half + 1),
        }
    }

    /// Prefetches each side's farthest member, which an offer beyond a full side is compared
    /// with (a hint: nothing changes).
    pub(crate) fn prefetch_ends(&self) {
        for side in [&self.left, &self.right] {
            if let Some(last) = side.len().checked_sub(1) {
                prefetch_index::prefetch_index(side, last);
            }
        }
    }

    /// Entries per side (`L/2`).
    pub fn half(&self) -> usize {
        self.half
    }

    /// Counter-clockwise side, nearest first.
    pub fn left(&self) -> &[NodeId] {
        &self.left
    }

    /// Clockwise side, nearest first.
    pub fn right(&self) -> &[NodeId] {
        &self.right
    }

    /// True when `id` is on either side.
    pub fn contains(&self, id: NodeId) -> bool {
        self.left.contains(&id) || self.right.contains(&id)
    }

    /// True when neither side has an entry.
    pub fn is_empty(&self) -> bool {
        self.left.is_empty() && self.right.is_empty()
    }

    /// Every member once (right side first, then left-only members).
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        // A node can sit on both sides only when the two arcs the sides span meet round the
        // ring (the node knows at most L other nodes: a small ring, or a node that knows few
        // yet); otherwise no left member needs looking for on the right (up to L/2 x L/2 id
        // comparisons for every leaf set sent).
        let apart = match (self.right.last(), self.left.last()) {
            (Some(&r), Some(&l)) => self
                .me
                .cw_distance(r)
                .checked_add(l.cw_distance(self.me))
                .is_some(),
            _ => true,
        };
        self.right.iter().copied().chain(
            self.left
                .iter()
                .copied()
                .filter(move |id| apart || !self.right.contains(id)),
        )
    }

    /// True when the leaf set may know every node of the ring (a side is not full).
    pub fn is_partial(&self) -> bool {
        self.left.len() < self.half || self.right.len() < self.half
    }

    /// Offers `id`; returns true when either side changed.
    pub fn insert(&mut self, id: NodeId) -> bool {
        self.insert_evicting(id).0
    }

    /// Offers `id`; returns whether either side changed and the ids each side pushed out (an
    /// evicted id may still sit on the other side).
    pub fn insert_evicting(&mut self, id: NodeId) -> (bool, [Option<NodeId>; 2]) {
        let o = self.offer(id);
        (o.entered, o.evicted)
    }

    /// Offers `id`: [`LeafSet::insert_evicting`], also saying whether `id` was a member
    /// already (found by the same searches).
    pub fn offer(&mut self, id: NodeId) -> Offered {
        if id == self.me {
            return Offered::default();
        }
        let me = self.me;
        let (cw, e1, m1) = insert_side(&mut self.right, self.half, id, |x| me.cw_distance(x));
        let (ccw, e2, m2) = insert_side(&mut self.left, self.half, id, |x| x.cw_distance(me));
        Offered {
            entered: cw | ccw,
            evicted: [e1, e2],
            member: m1 | m2,
        }
    }

    /// Heap bytes reserved for the members.
    pub fn heap_bytes(&self) -> usize {
        (self.left.capacity() + self.right.capacity()) * std::mem::size_of::<NodeId>()
    }

    /// True when `id` would enter the leaf set if offered.
    pub fn would_accept(&self, id: NodeId) -> bool {
        if id == self.me || self.contains(id) {
            return false;
        }
        let me = self.me;
        let fits = |side: &[NodeId], d: &dyn Fn(NodeId) -> u128| {
            side.len() < self.half || side.last().is_some_and(|&far| d(id) < d(far))
        };
        fits(&self.right, &|x| me.cw_distance(x)) || fits(&self.left, &|x| x.cw_distance(me))
    }

    /// Removes `id` from both sides; returns true when it was present.
    pub fn remove(&mut self, id: NodeId) -> bool {
        let before = self.left.len() + self.right.len();
        self.left.retain(|&x| x != id);
        self.right.retain(|&x| x != id);
        before != self.left.len() + self.right.len()
    }

    /// True when `key` lies within the range the leaf set spans, so that the numerically closest
    /// node to it is this node or a leaf-set member.
    pub fn covers(&self, key: Key) -> bool {
        if self.is_partial() {
            return true;
        }
        let (Some(&lo), Some(&hi)) = (self.left.last(), self.right.last()) else {
            return true;
        };
        // Both sides full but reaching round to each other (a ring of L/2 + 1 to L + 1 nodes):
        // the leaf set holds every node.
        if self.me.cw_distance(hi) >= self.me.cw_distance(lo) {
            return true;
        }
        // The arc from `lo` clockwise to `hi` contains this node.
        lo.cw_distance(NodeId(key.0)) <= lo.cw_distance(hi)
    }

    /// The member or this node closest to `key`, skipping ids for which `skip` is true.
    ///
    /// `skip` may be costly (a liveness lookup): it is asked about the closest member first and
    /// the full scan runs only when that one is skipped.
    pub fn closest(&self, key: Key, skip: impl Fn(NodeId) -> bool) -> NodeId {
        let best_by = |skip: &dyn Fn(NodeId) -> bool| {
            let mut best = self.me;
            for &id in self.right.iter().chain(self.left.iter()) {
                if id.closer_than(best, key) && !skip(id) {
                    best = id;
                }
            }
            best
        };
        let best = best_by(&|_| false);
        if best == self.me || !skip(best) {
            return best;
        }
        best_by(&skip)
    }

    /// Asserts the structural invariants.
    pub fn check_invariants(&self) {
        let me = self.me;
        for (side, d) in [
            (
                &self.right,
                &(|x: NodeId| me.cw_distance(x)) as &dyn Fn(NodeId) -> u128,
            ),
            (&self.left, &|x: NodeId| x.cw_distance(me)),
        ] {
            assert!(side.len() <= self.half, "leaf side over capacity");
            assert!(!side.contains(&me), "leaf set contains its own node");
            for w in side.windows(2) {
                assert!(d(w[0]) < d(w[1]), "leaf side not sorted or has duplicates");
            }
        }
    }
}

/// What offering a node to the leaf set did (see [`LeafSet::offer`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offered {
    /// It entered (one side or both).
    pub entered: bool,
    /// The members it pushed out of a full side, one a side at most (an evicted id may still
    /// sit on the other side).
    pub evicted: [Option<NodeId>; 2],
    /// It was a member already.
    pub member: bool,
}

/// Offers `id` to one side: whether it entered, the member it pushed out, and whether it was
/// a member of that side already.
fn insert_side(
    side: &mut Vec<NodeId>,
    half: usize,
    id: NodeId,
    d: impl Fn(NodeId) -> u128,
) -> (bool, Option<NodeId>, bool) {
    let dist = d(id);
    // Most offers are of nodes beyond a full side: one comparison instead of a search (the
    // search would find `pos >= half`, or `id` itself at the end; distances from one point are
    // distinct, so an equal one is `id`).
    if side.len() >= half
        && let Some(&far) = side.last()
        && d(far) <= dist
    {
        return (false, None, d(far) == dist);
    }
    let pos = side.partition_point(|&x| d(x) < dist);
    if side.get(pos) == Some(&id) {
        return (false, None, true);
    }
    if pos >= half {
        return (false, None, false);
    }
    side.insert(pos, id);
    let evicted = if side.len() > half { side.pop() } else { None };
    (true, evicted, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_says_whether_the_node_was_a_member() {
        let mut l = LeafSet::new(NodeId(100), 2);
        let was = |l: &mut LeafSet, id| {
            let o = l.offer(NodeId(id));
            (o.entered, o.member)
        };
        for id in [105, 110, 95, 90] {
            assert_eq!(was(&mut l, id), (true, false), "{id} enters");
        }
        assert_eq!(l.right(), &[NodeId(105), NodeId(110)]);
        assert_eq!(l.left(), &[NodeId(95), NodeId(90)]);
        // The farthest member of a full side (found without a search), a nearer one, one of
        // the other side.
        for id in [110, 105, 90, 95] {
            assert_eq!(was(&mut l, id), (false, true), "{id} is a member");
        }
        // Beyond both full sides, and this node itself.
        assert_eq!(l.offer(NodeId(200)), Offered::default());
        assert_eq!(l.offer(NodeId(100)), Offered::default());
        // A nearer node pushes the farthest out of its side.
        let o = l.offer(NodeId(102));
        assert_eq!(
            o,
            Offered {
                entered: true,
                evicted: [Some(NodeId(110)), None],
                member: false
            }
        );
        l.check_invariants();
    }

    #[test]
    fn keeps_nearest_on_each_side() {
        let mut l = LeafSet::new(NodeId(100), 2);
        for id in [90, 95, 80, 105, 110, 120, 99] {
            l.insert(NodeId(id));
        }
        assert_eq!(l.right(), &[NodeId(105), NodeId(110)]);
        assert_eq!(l.left(), &[NodeId(99), NodeId(95)]);
        assert!(l.covers(Key(97)));
        assert!(!l.covers(Key(200)));
        assert_eq!(l.closest(Key(104), |_| false), NodeId(105));
        assert_eq!(l.closest(Key(101), |_| false), NodeId(100));
        l.check_invariants();
    }

    #[test]
    fn small_ring_puts_nodes_on_both_sides() {
        let mut l = LeafSet::new(NodeId(100), 4);
        l.insert(NodeId(50));
        l.insert(NodeId(150));
        assert_eq!(l.right(), &[NodeId(150), NodeId(50)]);
        assert_eq!(l.left(), &[NodeId(50), NodeId(150)]);
        assert!(l.is_partial());
        assert!(l.covers(Key(u128::MAX)));
        assert_eq!(l.members().count(), 2);
    }

    #[test]
    fn full_sides_that_overlap_cover_everything() {
        // Six nodes, three per side: both sides are full and hold the same five nodes.
        let mut l = LeafSet::new(NodeId(100), 3);
        for id in [50, 150, 200, 250, 300] {
            l.insert(NodeId(id));
        }
        assert!(!l.is_partial());
        for k in [0u128, 75, 120, 175, 275, 1 << 100] {
            assert!(l.covers(Key(k)), "key {k} not covered");
        }
    }

    proptest::proptest! {
        /// `members` names every node of either side exactly once, the right side first in
        /// its order, then the left side's others in theirs, in rings small enough for the
        /// sides to meet (2 to 12 nodes, 4 a side) and large (ids spread over the whole ring).
        #[test]
        fn members_are_both_sides_once(
            me in proptest::prelude::any::<u128>(),
            ids in proptest::collection::vec(proptest::prelude::any::<u128>(), 1..12),
            spread in proptest::prelude::any::<bool>(),
        ) {
            let mut l = LeafSet::new(NodeId(me), 4);
            for id in ids {
                // Without spread, ids near `me` (a small ring's worth of ids clustered).
                let id = if spread { id } else { me.wrapping_add(id % 64).wrapping_sub(32) };
                l.insert(NodeId(id));
            }
            let mut want: Vec<NodeId> = l.right().to_vec();
            want.extend(l.left().iter().filter(|id| !l.right().contains(id)));
            proptest::prop_assert_eq!(l.members().collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn wraps_around_zero() {
        let mut l = LeafSet::new(NodeId(2), 1);
        l.insert(NodeId(u128::MAX));
        l.insert(NodeId(5));
        assert_eq!(l.left(), &[NodeId(u128::MAX)]);
        assert_eq!(l.right(), &[NodeId(5)]);
        assert!(l.covers(Key(0)));
        assert!(!l.covers(Key(6)));
    }
}
