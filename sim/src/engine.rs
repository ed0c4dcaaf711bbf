//! The discrete-event engine: one event queue driving many `petal-core` nodes directly.
//!
//! Messages are passed as values (no encoding) and cost `codec::encoded_len` bytes in the
//! traffic counters; with `wire_check` every message is also encoded and decoded, to prove the
//! simulated traffic is what the wire would carry. Delays come from a [`Topology`], loss and
//! partitions from the engine's own seeded generator. Everything derives from one master seed.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use petal_core::{Config, Event, Key, Node, NodeId, NodeInfo, Time, Transmit};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::apps::Apps;
use crate::metrics::Metrics;
use crate::queue::EventQueue;

/// Width of an event-queue bucket.
const QUEUE_BUCKET_US: u64 = 1_000;
/// Buckets in the event queue's ring (its horizon is their number times their width).
const QUEUE_BUCKETS: usize = 4_096;
use crate::topology::{Topology, TopologyConfig};

#[path = "seeds.rs"]
mod seeds;

#[path = "events.rs"]
mod events;
#[path = "leaf_sets.rs"]
mod leaf_sets;
#[path = "memory.rs"]
mod memory;
pub(crate) use events::{Ev, Queued};
#[path = "network.rs"]
mod network;
#[path = "proximity.rs"]
mod proximity;
pub use proximity::RowProximity;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The master seed every other seed derives from.
    pub seed: u64,
    /// Configuration of every node.
    pub node: Config,
    /// The network's delay model.
    pub topology: TopologyConfig,
    /// Probability that any one message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice (the copy with its own delay). Links
    /// between nodes are authenticated streams, which never duplicate: this models the copies
    /// a transport of datagrams could make, to test what the core does with them.
    pub duplicate: f64,
    /// Each message is delayed by a further uniform random time up to this many microseconds
    /// (0: links are FIFO). Reorders the messages of a link.
    pub reorder_us: u64,
    /// Encode and decode every message (slower; proves wire fidelity).
    pub wire_check: bool,
    /// Live nodes sampled to pick the nearest as a joiner's bootstrap (1: a random ready node,
    /// as a joiner that knows one node of the ring; the joiner searches for its nearest node
    /// itself, see `Config::join_search`; more stand in for an oracle of proximity).
    pub bootstrap_sample: usize,
    /// Call `check_invariants` on a node after every step (slow; for tests).
    pub check_invariants: bool,
    /// Width of the time buckets of the metrics' time series.
    pub bucket_us: u64,
}

impl SimConfig {
    /// Defaults around a master seed.
    pub fn new(seed: u64, topology: TopologyConfig) -> Self {
        Self {
            seed,
            node: Config::default(),
            topology,
            loss: 0.0,
            duplicate: 0.0,
            reorder_us: 0,
            wire_check: false,
            bootstrap_sample: 1,
            check_invariants: false,
            bucket_us: 1_000_000,
        }
    }
}

/// Derives an independent seed for stream `name` (and index) from the master seed.
pub fn derive_seed(master: u64, name: &str, index: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ master;
    for b in name.bytes().chain(index.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finaliser
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The simulated address of node `index`.
pub fn addr_of(index: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(0x0a00_0000 | (index & 0x00ff_ffff)),
        7000 + (index >> 24) as u16,
    ))
}

fn index_of(addr: SocketAddr) -> Option<u32> {
    match addr {
        SocketAddr::V4(a) => {
            let ip = u32::from(*a.ip());
            let hi = u32::from(a.port().checked_sub(7000)?);
            (ip >> 24 == 10).then_some((ip & 0x00ff_ffff) | (hi << 24))
        }
        SocketAddr::V6(_) => None,
    }
}

/// One copy of an event sent between nodes: (from, to, event id, is a cast, send time).
pub type EventCopy = (u32, u32, u64, bool, Time);

/// One simulated node and the engine's bookkeeping about it.
struct Slot {
    node: Node,
    alive: bool,
    /// The time of this node's queued timer event, if one is queued.
    timer_at: Option<Time>,
    crashed_at: Option<Time>,
    /// The seed driver of a node started with seeds (`seeds.rs`).
    seeds: Option<Box<seeds::SeedDriver>>,
}

/// The simulator.
pub struct Sim {
    cfg: SimConfig,
    /// `cfg.node`, shared by every node (one copy instead of one per node).
    node_cfg: std::sync::Arc<Config>,
    now: Time,
    seq: u64,
    /// Pending events by (time, insertion order); payloads live in `slab` so that the queue
    /// moves 24-byte entries, not messages.
    queue: EventQueue,
    slab: Vec<Queued>,
    free: Vec<u32>,
    /// Every node ever created, by id (ids are unique; a restart keeps its id).
    by_id: BTreeMap<NodeId, u32>,
    slots: Vec<Slot>,
    /// Every slot's node id, densely (16 bytes a node): a delivery names its sender and a send
    /// checks its destination without touching either node's state, which is cold by then.
    ids: Vec<NodeId>,
    topology: Topology,
    net_rng: ChaCha8Rng,
    id_rng: ChaCha8Rng,
    /// Ready and alive nodes by id (the oracle's view of the ring).
    ready: BTreeMap<NodeId, u32>,
    /// The same nodes as a list, for uniform sampling.
    ready_list: Vec<u32>,
    ready_pos: Vec<usize>,
    /// Partition group of each node; messages between groups are dropped.
    groups: Option<Vec<u8>>,
    /// Outstanding lookups: (origin, lookup id) -> (start time, key).
    lookups: BTreeMap<(u32, u64), (Time, Key)>,
    /// Everything measured.
    pub metrics: Metrics,
    /// Simulated applications and what they saw.
    pub apps: Apps,
    /// When set, every event copy sent between nodes (casts down a tree, publishes routed to
    /// a root) as (from, to, event id, is a cast, send time): for link stress, forwarding load
    /// and the delay from the root.
    pub event_log: Option<Vec<EventCopy>>,
    trace: u64,
    scratch: Vec<u8>,
    /// The one outbox buffer lent to the node of each message and timer event (see
    /// `Node::lend_outbox`); empty between events.
    outbox: VecDeque<Transmit>,
}

impl Sim {
    /// An empty network.
    pub fn new(cfg: SimConfig) -> Self {
        let topology = Topology::new(&cfg.topology, derive_seed(cfg.seed, "topology", 0));
        Self {
            net_rng: ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, "network", 0)),
            id_rng: ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, "ids", 0)),
            metrics: Metrics::new(cfg.bucket_us),
            apps: Apps::default(),
            event_log: None,
            node_cfg: std::sync::Arc::new(cfg.node.clone()),
            cfg,
            now: Time::ZERO,
            seq: 0,
            queue: EventQueue::new(QUEUE_BUCKET_US, QUEUE_BUCKETS),
            slab: Vec::new(),
            free: Vec::new(),
            by_id: BTreeMap::new(),
            slots: Vec::new(),
            ids: Vec::new(),
            topology,
            ready: BTreeMap::new(),
            ready_list: Vec::new(),
            ready_pos: Vec::new(),
            groups: None,
            lookups: BTreeMap::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            scratch: Vec::new(),
            outbox: VecDeque::new(),
        }
    }

    /// Simulated time now.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The engine's configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Number of node slots ever created.
    pub fn node_count(&self) -> usize {
        self.slots.len()
    }

    /// Ready, alive nodes.
    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }

    /// Alive nodes (ready or joining).
    pub fn alive_count(&self) -> usize {
        self.slots.iter().filter(|s| s.alive).count()
    }

    /// A hash of every event processed so far (time, node, message kind): equal seeds give
    /// equal hashes.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// The node in slot `i`.
    pub fn node(&self, i: u32) -> &Node {
        &self.slots[i as usize].node
    }

    /// True when slot `i` is alive.
    pub fn is_alive(&self, i: u32) -> bool {
        self.slots[i as usize].alive
    }

    /// Indices of ready, alive nodes in id order.
    pub fn ready_nodes(&self) -> impl Iterator<Item = u32> + '_ {
        self.ready.values().copied()
    }

    /// A uniformly random ready node, from the engine's generator.
    pub fn random_ready(&mut self) -> Option<u32> {
        if self.ready_list.is_empty() {
            return None;
        }
        let i = self.net_rng.random_range(0..self.ready_list.len());
        Some(self.ready_list[i])
    }

    /// A random value from the engine's generator (for workloads).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.net_rng
    }

    /// Adds a node now: it founds the ring if no node is ready, else joins through the nearest
    /// of `bootstrap_sample` random ready nodes. Returns its slot.
    pub fn add_node(&mut self) -> u32 {
        let index = self.new_slot(true);
        self.start(index);
        index
    }

    /// Creates the slot of a new node with a fresh unique id (not started); returns its index.
    fn new_slot(&mut self, alive: bool) -> u32 {
        let index = self.topology.add_node();
        assert_eq!(
            index as usize,
            self.slots.len(),
            "topology and engine disagree"
        );
        let mut id = NodeId(self.id_rng.random());
        while self.by_id.contains_key(&id) {
            id = NodeId(self.id_rng.random());
        }
        let node = self.fresh_node(index, id);
        if self.slots.len() == self.slots.capacity() {
            // Grow by a quarter, not by doubling: a slot is a whole node (about 1.7 KB), and a
            // doubled vector of 10^5 or 10^6 of them would be mostly empty.
            self.slots.reserve_exact(self.slots.len() / 4 + 16);
        }
        self.slots.push(Slot {
            node,
            alive,
            timer_at: None,
            crashed_at: None,
            seeds: None,
        });
        self.ids.push(id);
        self.ready_pos.push(usize::MAX);
        self.by_id.insert(id, index);
        index
    }

    /// The id and address of slot `i`'s node (from the dense id table).
    pub(crate) fn info_at(&self, i: u32) -> NodeInfo {
        NodeInfo {
            id: self.ids[i as usize],
            addr: addr_of(i),
        }
    }

    #[expect(
        clippy::expect_used,
        reason = "the scenario validated the node config before the first node was made"
    )]
    fn fresh_node(&self, index: u32, id: NodeId) -> Node {
        let info = NodeInfo {
            id,
            addr: addr_of(index),
        };
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the id's low 64 bits mix into the node's seed; the rest is dropped on purpose"
        )]
        let seed = derive_seed(self.cfg.seed, "node", u64::from(index) ^ (id.0 as u64));
        Node::new(info, self.node_cfg.clone(), seed).expect("node config validated by scenario")
    }

    fn start(&mut self, index: u32) {
        let now = self.now;
        match self.pick_bootstrap(index) {
            None => self.slots[index as usize].node.start_first(now),
            Some(b) => {
                let info = self.slots[b as usize].node.info();
                self.slots[index as usize].node.join(now, info);
            }
        }
        self.after_step(index);
    }

    fn pick_bootstrap(&mut self, index: u32) -> Option<u32> {
        if self.ready_list.is_empty() {
            return None;
        }
        let mut best: Option<(u64, u32)> = None;
        for _ in 0..self.cfg.bootstrap_sample.max(1) {
            let c = self.ready_list[self.net_rng.random_range(0..self.ready_list.len())];
            let d = self.topology.latency_us(index, c);
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, c));
            }
        }
        best.map(|(_, c)| c)
    }

    /// Crashes node `i` now: it stops, silently.
    pub fn crash(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        if !slot.alive {
            return;
        }
        slot.alive = false;
        slot.crashed_at = Some(self.now);
        self.unready(i);
        self.metrics.crashes += 1;
        // Its lookups die with it (a restarted node reuses lookup ids), and its applications.
        self.lookups.retain(|&(origin, _), _| origin != i);
        self.apps_gone(i);
    }

    /// Restarts a crashed node with the same id and address and fresh state; it joins again.
    pub fn restart(&mut self, i: u32) {
        if self.slots[i as usize].alive {
            return;
        }
        let id = self.slots[i as usize].node.id();
        let node = self.fresh_node(i, id);
        let slot = &mut self.slots[i as usize];
        slot.node = node;
        slot.alive = true;
        slot.timer_at = None;
        slot.crashed_at = None;
        self.start(i);
    }

    /// Node `i` leaves gracefully now.
    pub fn leave(&mut self, i: u32) {
        if !self.slots[i as usize].alive {
            return;
        }
        let now = self.now;
        self.slots[i as usize].node.leave(now);
        self.after_step(i);
        self.slots[i as usize].alive = false;
        self.unready(i);
        self.metrics.leaves += 1;
        self.lookups.retain(|&(origin, _), _| origin != i);
        self.apps_gone(i);
    }

    /// Splits the network: node `i` is in group `group_of(i)`; messages between groups drop.
    pub fn partition(&mut self, group_of: impl Fn(u32) -> u8) {
        self.groups = Some(
            (0..crate::count_u32(self.slots.len()))
                .map(group_of)
                .collect(),
        );
    }

    /// Heals any partition.
    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// Starts a lookup of `key` at node `i` (if it is ready); returns whether it started.
    pub fn lookup(&mut self, i: u32, key: Key) -> bool {
        if !self.slots[i as usize].alive {
            return false;
        }
        let now = self.now;
        let Some(id) = self.slots[i as usize].node.lookup(now, key) else {
            return false;
        };
        self.lookups.insert((i, id), (now, key));
        self.metrics.lookup_started(now);
        self.after_step(i);
        true
    }

    fn unready(&mut self, i: u32) {
        let id = self.slots[i as usize].node.id();
        if self.ready.get(&id) == Some(&i) {
            self.ready.remove(&id);
        }
        let pos = self.ready_pos[i as usize];
        if pos != usize::MAX {
            self.ready_list.swap_remove(pos);
            if let Some(&moved) = self.ready_list.get(pos) {
                self.ready_pos[moved as usize] = pos;
            }
            self.ready_pos[i as usize] = usize::MAX;
        }
    }

    fn make_ready(&mut self, i: u32) {
        let id = self.slots[i as usize].node.id();
        self.ready.insert(id, i);
        if self.ready_pos[i as usize] == usize::MAX {
            self.ready_pos[i as usize] = self.ready_list.len();
            self.ready_list.push(i);
        }
    }

    /// The ready, alive node numerically closest to `key` (the oracle's owner).
    pub fn owner_of(&self, key: Key) -> Option<u32> {
        let k = NodeId(key.0);
        let after = self
            .ready
            .range(k..)
            .next()
            .or_else(|| self.ready.iter().next());
        let before = self
            .ready
            .range(..k)
            .next_back()
            .or_else(|| self.ready.iter().next_back());
        match (after, before) {
            (Some((&a, &ia)), Some((&b, &ib))) => Some(if a.closer_than(b, key) { ia } else { ib }),
            _ => None,
        }
    }

    /// The `k` ready, alive nodes numerically closest to `key`, closest first (the oracle's
    /// replica set of a stored key).
    pub fn closest_ready(&self, key: Key, k: usize) -> Vec<u32> {
        let at = NodeId(key.0);
        let mut near: Vec<(NodeId, u32)> = self
            .ready
            .range(at..)
            .chain(self.ready.range(..at))
            .take(k)
            .chain(
                self.ready
                    .range(..at)
                    .rev()
                    .chain(self.ready.range(at..).rev())
                    .take(k),
            )
            .map(|(&id, &i)| (id, i))
            .collect();
        near.sort_by(|a, b| {
            if a.0 == b.0 {
                std::cmp::Ordering::Equal
            } else if a.0.closer_than(b.0, key) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        near.dedup_by_key(|e| e.0);
        near.truncate(k);
        near.into_iter().map(|(_, i)| i).collect()
    }

    /// The ready node closest to `key` among those of partition group `group`.
    fn owner_in_group(&self, key: Key, group: u8) -> Option<u32> {
        let groups = self.groups.as_ref()?;
        let k = NodeId(key.0);
        let in_group = |e: &(&NodeId, &u32)| groups.get(*e.1 as usize) == Some(&group);
        let after = self
            .ready
            .range(k..)
            .chain(self.ready.range(..k))
            .find(in_group);
        let before = self
            .ready
            .range(..k)
            .rev()
            .chain(self.ready.range(k..).rev())
            .find(in_group);
        match (after, before) {
            (Some((&a, &ia)), Some((&b, &ib))) => Some(if a.closer_than(b, key) { ia } else { ib }),
            _ => None,
        }
    }

    fn dispatch(&mut self, ev: Ev, to: u32, from: u32) {
        let now = self.now;
        match ev {
            Ev::Deliver(msg) => {
                let from = self.info_at(from);
                let slot = &mut self.slots[to as usize];
                self.metrics.events += 1;
                if !slot.alive {
                    self.metrics.dropped_dead += 1;
                    return;
                }
                if let Some(g) = &self.groups {
                    if g.get(to as usize) != g.get(index_of(from.addr).unwrap_or(0) as usize) {
                        self.metrics.dropped_partition += 1;
                        return;
                    }
                }
                self.metrics.messages += 1;
                self.trace = fnv(self.trace, &[now.as_micros(), u64::from(to)]);
                self.trace = fnv_bytes(self.trace, msg.kind().as_bytes());
                slot.node.lend_outbox(&mut self.outbox);
                slot.node.handle_message(now, from, msg);
                self.after_step(to);
            }
            Ev::Timer { node } => {
                let slot = &mut self.slots[node as usize];
                if !slot.alive || slot.timer_at != Some(now) {
                    return;
                }
                self.metrics.events += 1;
                slot.timer_at = None;
                slot.node.lend_outbox(&mut self.outbox);
                slot.node.handle_timeout(now);
                self.after_step(node);
            }
            Ev::App(action) => {
                self.metrics.events += 1;
                self.on_app_action(action);
            }
            Ev::Dial { node, seed } => self.on_dial(node, seed),
            Ev::SeedRetry { node } => self.on_seed_retry(node),
        }
    }

    /// Drains a node's outputs and re-arms its timer.
    pub(crate) fn after_step(&mut self, i: u32) {
        let now = self.now;
        if self.cfg.check_invariants {
            self.slots[i as usize].node.check_invariants();
        }
        self.slots[i as usize].node.reclaim_outbox(&mut self.outbox);
        while let Some(t) = self.outbox.pop_front() {
            self.transmit(i, t.to, t.msg);
        }
        while let Some(ev) = self.slots[i as usize].node.poll_event() {
            self.on_node_event(i, ev);
        }
        let slot = &mut self.slots[i as usize];
        if !slot.alive {
            return;
        }
        if let Some(t) = slot.node.poll_timeout() {
            if slot.timer_at.is_none_or(|cur| t < cur) {
                let at = t.max(now);
                slot.timer_at = Some(at);
                self.push(at, Ev::Timer { node: i });
            }
        }
    }

    fn on_node_event(&mut self, i: u32, ev: Event) {
        let now = self.now;
        match ev {
            Event::Joined => {
                self.make_ready(i);
                self.metrics.joins += 1;
            }
            Event::JoinFailed => self.metrics.join_failures += 1,
            Event::Delivered {
                key,
                origin,
                hops,
                lookup,
            } => {
                let consistent = self.owner_of(key) == Some(i);
                let local = match &self.groups {
                    None => consistent,
                    Some(g) => self.owner_in_group(key, g[i as usize]) == Some(i),
                };
                let origin_index = index_of(origin.addr).unwrap_or(0);
                let stretch = self
                    .lookups
                    .get(&(origin_index, lookup))
                    .and_then(|&(start, _)| {
                        let direct = self.topology.latency_us(origin_index, i);
                        (direct > 0 && origin_index != i)
                            .then(|| (now.as_micros() - start.as_micros()) as f64 / direct as f64)
                    });
                self.metrics
                    .delivered(now, (consistent, local), hops, stretch);
            }
            Event::LookupDone { lookup, .. } => {
                if let Some((start, _)) = self.lookups.remove(&(i, lookup)) {
                    self.metrics
                        .lookup_done(now, now.as_micros() - start.as_micros());
                }
            }
            Event::LookupFailed { lookup, .. } => {
                self.lookups.remove(&(i, lookup));
                self.metrics.lookup_failed(now);
            }
            Event::PeerDead { peer } => {
                if self.ready.contains_key(&peer) {
                    // Declared dead while alive and ready: a false positive.
                    self.metrics.false_deaths += 1;
                } else if let Some(d) = self.crashed_index(peer) {
                    let slot = &mut self.slots[d as usize];
                    if let Some(t) = slot.crashed_at.take() {
                        self.metrics
                            .detections_us
                            .push(now.as_micros() - t.as_micros());
                    }
                }
            }
            other => self.on_app_event(i, other),
        }
    }

    /// Node `i`, for application commands (the caller drains it with `after_step`).
    pub(crate) fn node_mut(&mut self, i: u32) -> &mut Node {
        &mut self.slots[i as usize].node
    }

    fn crashed_index(&self, peer: NodeId) -> Option<u32> {
        let &i = self.by_id.get(&peer)?;
        let s = &self.slots[i as usize];
        (!s.alive && s.crashed_at.is_some()).then_some(i)
    }
}

fn fnv_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn fnv(mut h: u64, words: &[u64]) -> u64 {
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
