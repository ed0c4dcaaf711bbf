//! The leaf-set oracle: which ready nodes hold exactly the leaf set the live ring gives them.

use std::collections::VecDeque;

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
    /// One pass over the ready nodes of each partition group in id order, with a window of the
    /// `L/2` nodes before and after the one judged (wrapping around the ring): no map lookups
    /// for the expected neighbours, and memory for the window only (a copy of the ready set
    /// would cost `pastry-hops` at 10^5 nodes more than its 16 KiB-per-node budget spares). A
    /// leaf set equal to the expected one is right without looking its members up. (Range
    /// scans of the map for every node made this oracle 6 % of a `cold-start` run's
    /// instructions.)
    fn leaf_sets_correct(&self, until_wrong: bool) -> usize {
        let half = self.cfg.node.leaf_set_size / 2;
        let group = |i: u32| {
            self.groups
                .as_ref()
                .and_then(|g| g.get(i as usize).copied())
        };
        // The partition groups present (none while whole).
        let mut present = [false; 257];
        for &i in self.ready.values() {
            present[group(i).map_or(256, usize::from)] = true;
        }
        let groups = (0..=256usize)
            .filter(|&k| present[k])
            .map(|k| u8::try_from(k).ok());
        let mut correct = 0;
        for g in groups {
            let members = || self.ready.iter().filter(move |e| group(*e.1) == g);
            let m = members().count();
            // The window: the `half` members before the one judged, it, and the `half` after;
            // in a group of at most `2 half + 1` the others are all its neighbours on both
            // sides, in ring order from it.
            let (before, after) = if m > 2 * half + 1 {
                (half, half)
            } else {
                (m - 1, m - 1)
            };
            let mut window: VecDeque<(&NodeId, &u32)> = members().rev().take(before).collect();
            window.make_contiguous().reverse();
            window.extend(members().cycle().take(after + 1));
            let mut feed = members().cycle().skip(after + 1);
            for _ in 0..m {
                let i = *window[before].1;
                let right = window.range(before + 1..).map(|e| *e.0).take(half);
                let left = window.range(..before).rev().map(|e| *e.0).take(half);
                let leaf = self.slots[i as usize].node.leaf_set();
                let ok = self.side_right(leaf.right(), right) && self.side_right(leaf.left(), left);
                correct += usize::from(ok);
                if until_wrong && !ok {
                    return correct;
                }
                window.pop_front();
                window.extend(feed.next());
            }
        }
        correct
    }

    /// True when one side of a leaf set (`held`, nearest first) is the `expected` ready nodes,
    /// alive nodes still joining left out.
    fn side_right(&self, held: &[NodeId], expected: impl Iterator<Item = NodeId> + Clone) -> bool {
        held.iter().copied().eq(expected.clone())
            || held
                .iter()
                .filter(|&k| self.ready.contains_key(k) || !self.is_joining_alive(*k))
                .copied()
                .eq(expected)
    }

    fn is_joining_alive(&self, id: NodeId) -> bool {
        self.by_id.get(&id).is_some_and(|&i| {
            let s = &self.slots[i as usize];
            s.alive && s.node.is_joining()
        })
    }
}
