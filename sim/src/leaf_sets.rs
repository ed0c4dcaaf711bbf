//! The leaf-set oracle: which ready nodes hold exactly the leaf set the live ring gives them.

use petal_core::NodeId;

use super::Sim;

impl Sim {
    /// Fraction of ready nodes whose leaf set is exactly right: each side holds the `L/2`
    /// nearest ready nodes on that side (within the node's partition group while the network
    /// is partitioned, see [`Sim::partition`]). Alive nodes that are still joining are left out
    /// of the comparison (knowing a joiner early is the join protocol at work).
    pub fn leaf_set_correctness(&self) -> f64 {
        if self.ready.is_empty() {
            return 1.0;
        }
        self.leaf_sets_correct(false) as f64 / self.ready.len() as f64
    }

    /// True when every ready node's leaf set is exactly right ([`Sim::leaf_set_correctness`]
    /// is 1), found without checking past the first wrong one.
    pub fn leaf_sets_all_correct(&self) -> bool {
        self.leaf_sets_correct(true) == self.ready.len()
    }

    /// Ready nodes whose leaf set is exactly right (see [`Sim::leaf_set_correctness`]); with
    /// `until_wrong`, the count stops at the first wrong one.
    ///
    /// The ready nodes are laid out once in id order, so that a node's expected neighbours are
    /// the entries that follow and precede it around the ring, and whether a member is ready
    /// is a binary search. (Range scans of the ordered map of ready nodes for every node made
    /// this oracle 6 % of a `cold-start` run's instructions.)
    fn leaf_sets_correct(&self, until_wrong: bool) -> usize {
        let half = self.cfg.node.leaf_set_size / 2;
        let ring: Vec<(NodeId, u32)> = self.ready.iter().map(|(&id, &i)| (id, i)).collect();
        let ring = &ring;
        let n = ring.len();
        let group = |i: u32| {
            self.groups
                .as_ref()
                .and_then(|g| g.get(i as usize).copied())
        };
        let ready = |id: NodeId| ring.binary_search_by_key(&id, |e| e.0).is_ok();
        let mut correct = 0usize;
        let mut expected_r = Vec::with_capacity(half);
        let mut expected_l = Vec::with_capacity(half);
        for (p, &(_, i)) in ring.iter().enumerate() {
            let mine = group(i);
            // The other ready nodes of the node's partition group, going clockwise or
            // counter-clockwise around the ring from it.
            let around = |clockwise: bool| {
                (1..n)
                    .map(move |d| ring[if clockwise { p + d } else { p + n - d } % n])
                    .filter(|e| group(e.1) == mine)
                    .map(|e| e.0)
                    .take(half)
            };
            expected_r.clear();
            expected_r.extend(around(true));
            expected_l.clear();
            expected_l.extend(around(false));
            let leaf = self.slots[i as usize].node.leaf_set();
            let keep = |k: &&NodeId| ready(**k) || !self.is_joining_alive(**k);
            let ok = leaf.right().iter().filter(keep).eq(expected_r.iter())
                && leaf.left().iter().filter(keep).eq(expected_l.iter());
            correct += usize::from(ok);
            if until_wrong && !ok {
                break;
            }
        }
        correct
    }

    fn is_joining_alive(&self, id: NodeId) -> bool {
        self.by_id.get(&id).is_some_and(|&i| {
            let s = &self.slots[i as usize];
            s.alive && s.node.is_joining()
        })
    }
}
