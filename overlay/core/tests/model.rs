//! Model-based property tests: the routing table and the leaf set against simple reference
//! models, under random sequences of inserts and removals.

use std::collections::BTreeSet;

use petal_core::{LeafSet, RoutingTable};
use petal_protocol::{Key, NodeId};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Insert(u128),
    Remove(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    // Ids cluster sometimes (shared prefixes, wrap-around near 0) and sometimes spread.
    let id = prop_oneof![
        any::<u128>(),
        any::<u16>().prop_map(|x| u128::from(x) << 112),
        any::<u8>().prop_map(u128::from),
        any::<u8>().prop_map(|x| u128::MAX - u128::from(x)),
    ];
    prop::collection::vec(
        prop_oneof![3 => id.prop_map(Op::Insert), 1 => any::<usize>().prop_map(Op::Remove)],
        1..120,
    )
}

/// The model leaf set: the `half` nearest live ids on each side, by brute force.
fn model_sides(me: NodeId, live: &BTreeSet<u128>, half: usize) -> (Vec<NodeId>, Vec<NodeId>) {
    let mut cw: Vec<NodeId> = live
        .iter()
        .map(|&x| NodeId(x))
        .filter(|&x| x != me)
        .collect();
    let mut ccw = cw.clone();
    cw.sort_by_key(|&x| me.cw_distance(x));
    ccw.sort_by_key(|&x| x.cw_distance(me));
    cw.truncate(half);
    ccw.truncate(half);
    (ccw, cw)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// With every offered node kept until removed, the leaf set equals the model's nearest
    /// `half` on each side as long as removals are followed by re-offering the live set (which
    /// is what repair does).
    #[test]
    fn leaf_set_matches_model(me in any::<u128>(), half in 1usize..9, ops in ops()) {
        let me = NodeId(me);
        let mut leaf = LeafSet::new(me, half);
        let mut live = BTreeSet::new();
        for op in ops {
            match op {
                Op::Insert(x) => {
                    if NodeId(x) != me {
                        live.insert(x);
                    }
                    leaf.insert(NodeId(x));
                }
                Op::Remove(i) => {
                    if live.is_empty() { continue; }
                    let x = *live.iter().nth(i % live.len()).unwrap();
                    live.remove(&x);
                    leaf.remove(NodeId(x));
                    for &y in &live {
                        leaf.insert(NodeId(y));
                    }
                }
            }
            leaf.check_invariants();
            let (left, right) = model_sides(me, &live, half);
            prop_assert_eq!(leaf.left(), left.as_slice());
            prop_assert_eq!(leaf.right(), right.as_slice());
        }
        // With fewer than `2 * half` other nodes alive, the two sides must share a node, so the
        // leaf set knows the whole ring and must cover every key. (With exactly `2 * half` the
        // sides may just meet; the node cannot tell that no one lies between them.)
        if live.len() < 2 * half {
            for k in [0u128, u128::MAX, me.0.wrapping_add(1 << 127), me.0 ^ (1 << 90)] {
                prop_assert!(leaf.covers(Key(k)), "small ring, key {:x} not covered", k);
            }
        }
        // The closest member to any key is the model's closest among {me} + leaf members,
        // and when the leaf set covers the key it is the globally closest live node.
        for k in [0u128, 1, u128::MAX, me.0 ^ 1, me.0.wrapping_add(1 << 100)] {
            let key = Key(k);
            let got = leaf.closest(key, |_| false);
            if leaf.covers(key) {
                let best = live.iter().map(|&x| NodeId(x)).chain([me]).fold(me, |b, x| if x.closer_than(b, key) { x } else { b });
                prop_assert_eq!(got, best);
            }
        }
    }

    /// The routing table holds at most one entry per slot, each in the slot its id dictates,
    /// and `next_for` always returns a node that shares a longer prefix with the key.
    #[test]
    fn routing_table_matches_model(me in any::<u128>(), ops in ops(), keys in prop::collection::vec(any::<u128>(), 1..20)) {
        let me = NodeId(me);
        let mut rt = RoutingTable::new(me);
        let mut model = std::collections::BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(x) => {
                    let id = NodeId(x);
                    if let Some(slot) = rt.slot_of(id) {
                        rt.set(id);
                        model.insert(slot, id);
                    }
                }
                Op::Remove(i) => {
                    if model.is_empty() { continue; }
                    let (&slot, &id) = model.iter().nth(i % model.len()).unwrap();
                    prop_assert!(rt.remove(id));
                    model.remove(&slot);
                }
            }
            rt.check_invariants();
            prop_assert_eq!(rt.len(), model.len());
            for (&slot, &id) in &model {
                prop_assert_eq!(rt.get(slot), Some(id));
            }
        }
        for k in keys {
            let key = Key(k);
            if let Some(next) = rt.next_for(key) {
                prop_assert!(next.shared_prefix_len(key) > me.shared_prefix_len(key));
            }
        }
    }
}
