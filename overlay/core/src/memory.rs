//! [`MemoryUse`]: where a node's bytes are, by part, for reports (the simulator's bytes per
//! node) and for operators.

/// A node's memory by part, in bytes: the node's own struct (every field held inline), and
/// the heap capacity of its tables. Capacity, not length: what a table holds reserved counts.
/// Allocator rounding and headers are not included, so a process's resident size per node is
/// somewhat larger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// The `Node` struct itself (`size_of::<Node>()`), every part's inline fields included.
    pub node: usize,
    /// Leaf set: member ids.
    pub leaf_set: usize,
    /// Routing table: rows of ids.
    pub routing_table: usize,
    /// Tracked peers (leaf-set and routing-table members): ids, addresses, liveness and
    /// timer deadlines.
    pub peers: usize,
    /// Measured round trips of candidates not tracked.
    pub rtt_cache: usize,
    /// Outstanding proximity and revival probes.
    pub probes: usize,
    /// Nodes remembered as dead.
    pub dead: usize,
    /// Forwarded messages awaiting acknowledgement, lookups, the join, re-introductions.
    pub routes: usize,
    /// The timer heap.
    pub timers: usize,
    /// Outbox, event and loopback queues.
    pub queues: usize,
    /// Group trees, local connections, requests and tunnels.
    pub messaging: usize,
}

impl MemoryUse {
    /// The sum of every part.
    pub fn total(&self) -> usize {
        self.node
            + self.leaf_set
            + self.routing_table
            + self.peers
            + self.rtt_cache
            + self.probes
            + self.dead
            + self.routes
            + self.timers
            + self.queues
            + self.messaging
    }

    /// Adds `other`'s parts to these (to sum over many nodes).
    pub fn add(&mut self, other: &MemoryUse) {
        self.node += other.node;
        self.leaf_set += other.leaf_set;
        self.routing_table += other.routing_table;
        self.peers += other.peers;
        self.rtt_cache += other.rtt_cache;
        self.probes += other.probes;
        self.dead += other.dead;
        self.routes += other.routes;
        self.timers += other.timers;
        self.queues += other.queues;
        self.messaging += other.messaging;
    }
}

/// Heap bytes of a vector's reserved capacity.
pub(crate) fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Heap bytes of a deque's reserved capacity.
pub(crate) fn deque_bytes<T>(v: &std::collections::VecDeque<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// An estimate of a B-tree map's heap bytes: its entries in nodes that are, on average, about
/// two-thirds full (a leaf node holds up to 11 entries), plus a node's overhead per 11.
pub(crate) fn btree_bytes<K, V>(m: &std::collections::BTreeMap<K, V>) -> usize {
    let entry = std::mem::size_of::<K>() + std::mem::size_of::<V>();
    m.len().div_ceil(2) * 3 * entry + m.len().div_ceil(11) * 16
}

/// Heap bytes of a hash map (hashbrown's layout): one slot and one control byte per bucket,
/// plus a group of control bytes.
pub(crate) fn hash_bytes<K, V, S>(m: &hashbrown::HashMap<K, V, S>) -> usize {
    if m.capacity() == 0 {
        return 0;
    }
    let buckets = (m.capacity() * 8 / 7).next_power_of_two();
    buckets * (std::mem::size_of::<(K, V)>() + 1) + 16
}
