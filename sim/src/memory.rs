//! Where the simulation's bytes are: the nodes' own state by part ([`petal_core::MemoryUse`],
//! which the daemon's nodes have too) and the engine's bookkeeping per node.

use petal_core::MemoryUse;

use super::{Queued, Sim, Slot};

impl Sim {
    /// The memory of every alive node, summed by part.
    pub fn node_memory(&self) -> MemoryUse {
        let mut m = MemoryUse::default();
        for s in self.slots.iter().filter(|s| s.alive) {
            m.add(&s.node.memory());
        }
        m
    }

    /// The engine's own bytes that grow with the number of nodes: each slot's fields beside
    /// its node, the dense id list, the id and ready indexes (B-tree estimates), the ready
    /// list, and the seed drivers. Not counted: the event queue and the pending events, which
    /// grow with the traffic in flight, and the topology.
    pub fn engine_bytes(&self) -> usize {
        use std::mem::size_of;
        let btree = |len: usize, entry: usize| len.div_ceil(2) * 3 * entry;
        let slots = self.slots.capacity() * (size_of::<Slot>() - size_of::<petal_core::Node>());
        let seeds: usize = self
            .slots
            .iter()
            .filter_map(|s| s.seeds.as_ref())
            .map(|d| size_of_val(&**d))
            .sum();
        slots
            + seeds
            + self.ids.capacity() * size_of::<petal_core::NodeId>()
            + btree(self.by_id.len(), size_of::<(petal_core::NodeId, u32)>())
            + btree(self.ready.len(), size_of::<(petal_core::NodeId, u32)>())
            + self.ready_list.capacity() * size_of::<u32>()
            + self.ready_pos.capacity() * size_of::<usize>()
    }

    /// Bytes of the pending events' slab (grows with the traffic in flight).
    pub fn event_bytes(&self) -> usize {
        self.slab.capacity() * std::mem::size_of::<Queued>()
            + self.free.capacity() * std::mem::size_of::<u32>()
    }
}
