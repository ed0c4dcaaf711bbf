//! How near the overlay's routes are to what proximity neighbour selection can give: per-row
//! nearness of routing-table entries, and the stretch of routes through ideal tables. Both
//! read the simulation without changing it (their random draws come from their own stream).

use petal_core::{Key, NodeId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Sim, derive_seed};

/// How near one routing-table row's entries are, over a sample of nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct RowProximity {
    /// The row.
    pub row: usize,
    /// Entries measured.
    pub entries: usize,
    /// Mean of (delay to the entry / delay to the nearest ready node that fits its slot).
    pub mean_ratio: f64,
    /// Share of entries that are the nearest ready node for their slot.
    pub nearest_share: f64,
}

/// The ids sharing the first `row + 1` digits with `id` (the slot `id` fills in a table at `row`).
fn slot_range(id: NodeId, row: usize) -> std::ops::RangeInclusive<NodeId> {
    let bits = 4 * (row + 1);
    let low = if bits >= 128 { 0 } else { u128::MAX >> bits };
    NodeId(id.0 & !low)..=NodeId(id.0 | low)
}

impl Sim {
    /// The nearest ready node (by delay from slot `i`'s node) among ids in `range`, other than
    /// `me`, with its delay.
    fn nearest_in(
        &self,
        i: u32,
        me: NodeId,
        range: std::ops::RangeInclusive<NodeId>,
    ) -> Option<(u64, u32)> {
        self.ready
            .range(range)
            .filter(|(k, _)| **k != me)
            .map(|(_, &j)| (self.topology.latency_us(i, j), j))
            .min()
    }

    /// How near the routing tables' entries are, per row, over about `sample` ready nodes
    /// spread evenly in id order (rows without entries are left out).
    pub fn routing_proximity(&self, sample: usize) -> Vec<RowProximity> {
        let mut rows: Vec<(usize, f64, usize)> = Vec::new();
        let step = (self.ready.len() / sample.max(1)).max(1);
        for (&id, &i) in self.ready.iter().step_by(step) {
            let rt = self.slots[i as usize].node.routing_table();
            for e in rt.entries() {
                let (Some((row, _)), Some(&ei)) = (rt.slot_of(e), self.by_id.get(&e)) else {
                    continue;
                };
                let best = self
                    .nearest_in(i, id, slot_range(e, row))
                    .map_or(1, |b| b.0.max(1));
                let got = self.topology.latency_us(i, ei).max(1);
                if rows.len() <= row {
                    rows.resize(row + 1, (0, 0.0, 0));
                }
                let r = &mut rows[row];
                r.0 += 1;
                r.1 += got as f64 / best as f64;
                r.2 += usize::from(got <= best);
            }
        }
        rows.iter()
            .enumerate()
            .filter(|(_, r)| r.0 > 0)
            .map(|(row, r)| RowProximity {
                row,
                entries: r.0,
                mean_ratio: r.1 / r.0 as f64,
                nearest_share: r.2 as f64 / r.0 as f64,
            })
            .collect()
    }

    /// Stretch of `lookups` random lookups (random ready origin, random key; drawn from their
    /// own stream, `stream`) routed through *ideal* routing tables: every node's leaf set as it
    /// is, and in every slot the nearest ready node that fits it (perfect proximity neighbour
    /// selection). Pastry's rule at each hop: the key within the leaf set's range goes to the
    /// numerically closest member, else to the ideal entry of the next row, else (no node fits
    /// that slot) to the node's own next hop. The floor that the tables' nearness is judged
    /// against; returns one stretch sample per lookup that ends at the key's owner.
    pub fn ideal_stretch(&self, lookups: u64, stream: u64) -> Vec<f64> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(derive_seed(self.cfg.seed, "ideal-stretch", stream));
        let ready: Vec<u32> = self.ready.values().copied().collect();
        let mut out = Vec::new();
        if ready.len() < 2 {
            return out;
        }
        for _ in 0..lookups {
            let origin = ready[rng.random_range(0..ready.len())];
            let key = Key(rng.random());
            let Some(owner) = self.owner_of(key) else {
                continue;
            };
            let (mut at, mut delay) = (origin, 0u64);
            for _ in 0..64 {
                let node = &self.slots[at as usize].node;
                let me = self.ids[at as usize];
                let next = if node.leaf_set().covers(key) {
                    let c = node.leaf_set().closest(key, |_| false);
                    (c != me).then(|| self.by_id.get(&c).copied()).flatten()
                } else {
                    let row = me.shared_prefix_len(key);
                    let ideal = (row < petal_protocol::id::DIGITS)
                        .then(|| self.nearest_in(at, me, slot_range(NodeId(key.0), row)))
                        .flatten()
                        .map(|(_, j)| j);
                    ideal.or_else(|| node.next_hop(key).and_then(|n| self.by_id.get(&n).copied()))
                };
                let Some(next) = next else {
                    break;
                };
                delay += self.topology.latency_us(at, next);
                at = next;
            }
            let direct = self.topology.latency_us(origin, owner);
            if at == owner && origin != owner && direct > 0 {
                out.push(delay as f64 / direct as f64);
            }
        }
        out
    }
}
