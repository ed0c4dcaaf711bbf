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
    /// For each partition group, a walk over its ready nodes in id order with a window of the
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

#[cfg(test)]
mod tests {
    use petal_core::{NodeId, Time};

    use crate::topology::{TopologyConfig, UniformConfig};
    use crate::{Sim, SimConfig};

    /// The oracle as it was written first (range scans of the ready map for every node): the
    /// reference the window must agree with.
    fn reference(sim: &Sim) -> usize {
        let half = sim.cfg.node.leaf_set_size / 2;
        let group = |i: u32| sim.groups.as_ref().and_then(|g| g.get(i as usize).copied());
        let mut correct = 0;
        for (&id, &i) in &sim.ready {
            let mine = group(i);
            let same = |e: &(&NodeId, &u32)| *e.0 != id && group(*e.1) == mine;
            let expected_r: Vec<NodeId> = sim
                .ready
                .range(NodeId(id.0.wrapping_add(1))..)
                .chain(sim.ready.range(..id))
                .filter(same)
                .map(|(k, _)| *k)
                .take(half)
                .collect();
            let expected_l: Vec<NodeId> = sim
                .ready
                .range(..id)
                .rev()
                .chain(sim.ready.range(id..).rev())
                .filter(same)
                .map(|(k, _)| *k)
                .take(half)
                .collect();
            let leaf = sim.slots[i as usize].node.leaf_set();
            let keep = |k: &&NodeId| sim.ready.contains_key(k) || !sim.is_joining_alive(**k);
            correct += usize::from(
                leaf.right().iter().filter(keep).eq(expected_r.iter())
                    && leaf.left().iter().filter(keep).eq(expected_l.iter()),
            );
        }
        correct
    }

    fn check(sim: &Sim, when: &str, wrong_seen: &mut bool) {
        let want = reference(sim);
        assert_eq!(sim.leaf_sets_correct(false), want, "{when}");
        assert_eq!(
            sim.leaf_sets_all_correct(),
            want == sim.ready.len(),
            "{when}"
        );
        *wrong_seen |= want < sim.ready.len();
    }

    fn advance(sim: &mut Sim, ms: u64) {
        let t = sim.now().as_micros() + ms * 1000;
        sim.run_until(Time::from_micros(t));
    }

    /// The window agrees with the reference at every step of a ring that grows from one node
    /// (groups of 1, 2, ... nodes, up to past twice the leaf-set side), has nodes crash (wrong
    /// and stale leaf sets), splits into three groups of which one has a single node, and heals.
    #[test]
    fn the_window_counts_what_range_scans_count() {
        let mut cfg = SimConfig::new(5, TopologyConfig::Uniform(UniformConfig::default()));
        cfg.node.leaf_set_size = 8;
        let mut sim = Sim::new(cfg);
        let mut wrong_seen = false;
        for k in 0..24 {
            sim.add_node();
            for _ in 0..4 {
                advance(&mut sim, 10);
                check(&sim, &format!("growing, node {k}"), &mut wrong_seen);
            }
        }
        advance(&mut sim, 10_000);
        check(&sim, "grown", &mut wrong_seen);
        for v in [3, 11, 17] {
            sim.crash(v);
            for _ in 0..20 {
                advance(&mut sim, 50);
                check(&sim, &format!("after crash of {v}"), &mut wrong_seen);
            }
        }
        sim.partition(|i| if i == 5 { 2 } else { u8::from(i % 2 == 0) });
        for s in 0..40 {
            advance(&mut sim, 100);
            check(&sim, &format!("split, step {s}"), &mut wrong_seen);
        }
        sim.heal();
        for s in 0..40 {
            advance(&mut sim, 100);
            check(&sim, &format!("healed, step {s}"), &mut wrong_seen);
        }
        assert!(wrong_seen, "some step had a wrong leaf set to judge");
    }
}
