//! Hints for a driver that knows its next inputs ahead (the simulator): prefetches of what
//! handling them reads first. Nothing changes.

use petal_protocol::{NodeId, NodeInfo};

use super::Overlay;
#[cfg(doc)]
use crate::node::Node;

impl Overlay {
    /// Prefetches the fields every input reads first (see [`Node::prefetch_state`]).
    pub(crate) fn prefetch_fields(&self) {
        crate::node::prefetch_ref(&self.peers);
        crate::node::prefetch_ref(&self.rtt_cache);
        crate::node::prefetch_ref(&self.rt);
        crate::node::prefetch_ref(&self.phase);
        crate::node::prefetch_ref(&self.leaf);
        crate::node::prefetch_ref(&self.probes);
    }

    /// Prefetches what hearing from `from` reads first: the tags by which the tracked peers
    /// are searched (see [`crate::id_map::TimedIdMap`]), its set in the round-trip cache, its
    /// routing-table slot, the leaf set's ends and its slot in the probes' map (a pong answers
    /// a probe; a ping from a candidate is answered by one) (see
    /// [`Node::prefetch_message_from`]).
    pub(crate) fn prefetch_from(&self, from: NodeId) {
        self.peers.prefetch_tags();
        self.rtt_cache.warm(std::iter::once(&from));
        self.rt.prefetch(from);
        self.leaf.prefetch_ends();
        self.probes.prefetch(from);
    }

    /// Prefetches what learning a batch of candidates one by one reads that is most often out
    /// of cache: their sets in the round-trip cache (see
    /// [`crate::rtt_cache::RttCache::warm`]), their routing-table slots and their slots in the
    /// probes' map. Nothing changes. (Looking the batch up in the probes' map, when it was a
    /// `hashbrown` table that could not be prefetched, was measured slower: 1.4 % more CPU in
    /// `cold-start`.)
    pub(crate) fn warm(&self, infos: &[NodeInfo]) {
        self.rtt_cache.warm(infos.iter().map(|e| &e.id));
        for e in infos {
            self.rt.prefetch(e.id);
            self.probes.prefetch(e.id);
        }
    }
}
