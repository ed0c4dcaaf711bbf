//! The Pastry overlay: where the node stands in the ring ([`Phase`]), its leaf set and routing
//! table, the liveness of the nodes in them, the messages it routes and the lookups it
//! started. [`Overlay`] owns all of it; its fields are private to this module and its children,
//! which add the behaviour by concern:
//! - `liveness`: pings, suspicion, death, re-probes, proximity probes;
//! - `routing`: the next hop, hop acknowledgements and rerouting, delivery, lookups;
//! - `join`: joining through contacts, refusals, cycles of joiners;
//! - `membership`: announces, leaf-set exchange, repair, introductions, leave;
//! - `search`: a joiner's search for the node nearest to it;
//! - `prefetch`: hints for a driver that knows its next inputs ahead.
//!
//! These are one owner rather than four: the leaf set, the routing table and the liveness of
//! their members are one consistency domain (every member is tracked and not dead, every
//! tracked node is in a table), which a split would turn into a protocol between machines.
//! The messaging modules (`group`, `ask`, `tunnel`, `local`) reach the overlay only through
//! the methods of [`Node`] defined here and in the child modules (`next_hop`, `forward`,
//! `info_of`, `is_ready`, ...).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use petal_protocol::{NodeId, NodeInfo};

use crate::budget::Owner;
use crate::config::Config;
use crate::id_map::{SortedIdMap, TimedIdMap};
use crate::leaf_set::LeafSet;
use crate::node::{Node, TimerKey};
use crate::probe_map::ProbeMap;
use crate::routing_table::RoutingTable;
use crate::rtt_cache::RttCache;
use crate::time::Time;

pub(crate) mod join;
mod liveness;
pub(crate) mod membership;
mod prefetch;
mod routing;
mod search;

use join::JoinState;
use liveness::{Dead, Peer, Probe};
pub(crate) use membership::heard_of;
pub(crate) use routing::HopMsg;
use routing::{PendingHop, PendingLookup};

/// Where the node is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Created, not started.
    Idle,
    /// Joining through a bootstrap node.
    Joining(Box<JoinState>),
    /// Part of the ring.
    Ready,
    /// Left gracefully; ignores all input.
    Left,
}

/// The overlay state of one node (see the module docs).
#[derive(Debug)]
pub(crate) struct Overlay {
    phase: Phase,
    leaf: LeafSet,
    rt: RoutingTable,
    /// Every node in the leaf set or routing table, with its address and liveness, and when
    /// its timer fires (next ping, or the outstanding ping's timeout). Hearing from the peer
    /// does not move that deadline: the timer then finds the peer heard recently and moves
    /// itself (a peer that talks to us is never pinged, at no cost per message).
    peers: TimedIdMap<Peer>,
    /// The earliest peer deadline `(due, id)` (ties: the smallest id), or `None` for no
    /// peer; itself `None` when a change may have moved it (recomputed by a scan). Peer
    /// deadlines live here rather than in the timer heap: every ping cycle moves one, and
    /// each move left a stale heap entry to pop and look up.
    peer_next: Option<Option<(Time, NodeId)>>,
    dead: SortedIdMap<Dead>,
    /// The earliest time of the next re-probe of a dead node (see
    /// [`crate::Config::dead_probe_spacing`]).
    dead_probe_free: Time,
    /// Outstanding probes, by candidate. Hashed, not sorted: a joining or growing node has
    /// hundreds out at once, and every probe sent and answered inserted into or removed from
    /// the middle of the sorted arrays (memmove was 5 % of a `cold-start` run's time). Open
    /// addressing over the ids' bits rather than `hashbrown`, so that a driver can prefetch
    /// the slot a look-up starts at (see [`ProbeMap`]). Nothing iterates it but the invariant
    /// check. Emptied, it gives its room back.
    probes: ProbeMap<Probe>,
    /// The probes' deadlines `(deadline, id)` in the order they were set, which is their time
    /// order (every probe waits `ping_timeout`). They live here rather than in the timer heap:
    /// probes are most of a joining or growing node's timers, nearly all answered before
    /// their deadline, and each left a stale heap entry to sift in and out. An entry whose
    /// probe is gone or holds another deadline is stale, skipped at the front.
    probe_deadlines: VecDeque<(Time, NodeId)>,
    /// The earliest live probe deadline as last found (`Some(None)`: no probe out), or `None`
    /// when a change to the probes may have moved it. Every step of a driver asks for the
    /// next timer, and checking the front entry is a lookup in the probes' map, which a
    /// growing node keeps large and out of cache (5 % of a `cold-start` run's time).
    probe_next: Option<Option<Time>>,
    /// Measured round-trip times of candidates that are not (or no longer) tracked.
    rtt_cache: RttCache,
    /// Forwarded messages awaiting their next hop's acknowledgement, by hop sequence number.
    /// Boxed: a B-tree leaf holds 11 entries however few are in use, and most nodes hold one
    /// or two hops at a time (the simulator's bytes per node at 10^5).
    hops: BTreeMap<u64, Box<PendingHop>>,
    /// Lookups started here, by lookup id.
    lookups: BTreeMap<u64, PendingLookup>,
    /// When the next routing-table row refresh is due.
    row_maintenance_at: Time,
    /// Bumped on every leaf-set change (to tell whether a message taught us anything, or
    /// whether a member may have entered).
    leaf_version: u64,
    leaf_exchange_at: Time,
    /// The side the next periodic leaf-set exchange goes to (alternating: right when true).
    exchange_right: bool,
    /// The node's offset on the timer grid, in microseconds (kept by `Node`; here beside the
    /// flag above, where it takes no room of its own).
    pub(crate) tick_phase_us: u32,
    /// When the next heartbeat goes to the counter-clockwise neighbour.
    heartbeat_at: Time,
    /// Until when join replies are taken while ready: answers to the join that the last
    /// [`Node::introduce`] routed through another ring (see `on_join_reply`).
    introduced_until: Time,
    /// Nodes that refused our introduction because they were joining: (info, introductions
    /// so far, when the next is due), at most `max_join_contacts`.
    reintroduce: BTreeMap<NodeId, (NodeInfo, u32, Time)>,
}

impl Overlay {
    /// `rtt_key` keys the round-trip cache's tags (see [`RttCache`]).
    pub(crate) fn new(me: NodeId, cfg: &Config, rtt_key: u64) -> Self {
        Self {
            phase: Phase::Idle,
            leaf: LeafSet::new(me, cfg.leaf_set_size / 2),
            rt: RoutingTable::new(me),
            peers: TimedIdMap::default(),
            peer_next: Some(None),
            dead: SortedIdMap::default(),
            dead_probe_free: Time::ZERO,
            probes: ProbeMap::default(),
            probe_deadlines: VecDeque::new(),
            probe_next: None,
            rtt_cache: RttCache::new(rtt_key),
            hops: BTreeMap::new(),
            lookups: BTreeMap::new(),
            row_maintenance_at: Time::MAX,
            leaf_version: 0,
            leaf_exchange_at: Time::MAX,
            exchange_right: false,
            tick_phase_us: 0,
            heartbeat_at: Time::MAX,
            introduced_until: Time::ZERO,
            reintroduce: BTreeMap::new(),
        }
    }

    /// Takes a pending hop out. The table is dropped whole once empty: an emptied `BTreeMap`
    /// keeps its last node (11 entries' room), and most nodes forward a message now and then
    /// and hold none most of the time.
    pub(crate) fn remove_hop(&mut self, hop_seq: u64) -> Option<routing::PendingHop> {
        let h = self.hops.remove(&hop_seq).map(|h| *h);
        if self.hops.is_empty() {
            self.hops = BTreeMap::new();
        }
        h
    }

    /// Takes a pending lookup out, dropping the emptied table as [`Overlay::remove_hop`] does.
    pub(crate) fn remove_lookup(&mut self, id: u64) -> Option<routing::PendingLookup> {
        let l = self.lookups.remove(&id);
        if self.lookups.is_empty() {
            self.lookups = BTreeMap::new();
        }
        l
    }

    /// Drops the routing state (after a failed join or a leave; the timers are dropped by
    /// the caller). The phase, lookups and maintenance times stay as they are.
    fn reset(&mut self, me: NodeId, cfg: &Config) {
        self.reintroduce.clear();
        self.hops.clear();
        self.probes = ProbeMap::default();
        self.probe_deadlines = VecDeque::new();
        self.probe_next = None;
        self.rtt_cache.clear();

        self.dead.clear();
        self.peers.clear();
        self.peer_next = Some(None);
        self.leaf = LeafSet::new(me, cfg.leaf_set_size / 2);
        self.leaf_version += 1;
        self.rt = RoutingTable::new(me);
    }

    /// Adds the heap bytes of the overlay's tables to `m` (see [`crate::MemoryUse`]).
    pub(crate) fn memory(&self, m: &mut crate::MemoryUse) {
        use crate::memory::btree_bytes;
        m.leaf_set += self.leaf.heap_bytes();
        m.routing_table += self.rt.heap_bytes();
        m.peers += self.peers.heap_bytes();
        m.rtt_cache += self.rtt_cache.heap_bytes();
        m.probes += self.probes.heap_bytes() + crate::memory::deque_bytes(&self.probe_deadlines);
        m.dead += self.dead.heap_bytes()
            + self
                .dead
                .iter()
                .filter_map(|(_, d)| d.children.as_deref())
                .map(crate::group::DroppedChildren::heap_bytes)
                .sum::<usize>();
        m.routes += btree_bytes(&self.hops)
            + self.hops.len() * std::mem::size_of::<PendingHop>()
            + btree_bytes(&self.lookups)
            + btree_bytes(&self.reintroduce)
            + match &self.phase {
                Phase::Joining(j) => std::mem::size_of::<JoinState>() + j.heap_bytes(),
                _ => 0,
            };
    }

    /// True when the owner of timer `key` (one of this module's) still holds deadline `t`.
    pub(crate) fn timer_live(&self, key: TimerKey, t: Time) -> bool {
        let ready = self.phase == Phase::Ready;
        match key {
            TimerKey::Dead(id) => self.dead.get(&id).is_some_and(|d| d.due == t),
            TimerKey::Reintroduce(id) => self.reintroduce.get(&id).is_some_and(|r| r.2 == t),
            TimerKey::Probe(id) => self.probe_live(t, id),
            TimerKey::Hop(seq) => self.hops.get(&seq).is_some_and(|h| h.deadline == t),
            TimerKey::Lookup(id) => self.lookups.get(&id).is_some_and(|l| l.deadline == t),
            TimerKey::Join => {
                matches!(&self.phase, Phase::Joining(j) if j.deadline == t || j.reannounce_at == t)
            }
            TimerKey::LeafExchange => ready && self.leaf_exchange_at == t,
            TimerKey::Heartbeat => ready && self.heartbeat_at == t,
            TimerKey::RowMaintenance => ready && self.row_maintenance_at == t,
            _ => false,
        }
    }

    /// Takes probe `id` out; the map's room goes back once few probes are left (all of it
    /// when none is).
    pub(crate) fn remove_probe(&mut self, id: &NodeId) -> Option<Probe> {
        let p = self.probes.remove(id)?;
        if self.probe_next == Some(Some(p.deadline)) {
            // It may have been the front entry (a probe with another deadline cannot be: the
            // front one's probe holds the front deadline).
            self.probe_next = None;
        }
        if self.probes.capacity() > 4 * self.probes.len() + 16 {
            self.probes.shrink_to(2 * self.probes.len());
        }
        Some(p)
    }

    fn probe_live(&self, t: Time, id: NodeId) -> bool {
        self.probes.get(&id).is_some_and(|p| p.deadline == t)
    }

    /// Notes probe `id`'s deadline `t` (after every deadline noted before: see
    /// `probe_deadlines`).
    pub(crate) fn push_probe_deadline(&mut self, t: Time, id: NodeId) {
        debug_assert!(self.probe_deadlines.back().is_none_or(|&(b, _)| b <= t));
        if self.probe_deadlines.len() > 4 * self.probes.len() + 64 {
            // Probes answered fast leave stale entries behind the live ones at the front:
            // drop them (in order), so that the queue stays proportional to the probes out.
            let probes = &self.probes;
            self.probe_deadlines
                .retain(|&(d, p)| probes.get(&p).is_some_and(|x| x.deadline == d));
            self.probe_next = None;
        }
        self.probe_deadlines.push_back((t, id));
        if self.probe_next == Some(None) {
            // The new entry is the front one.
            self.probe_next = None;
        }
    }

    /// The earliest probe deadline; stale entries at the front are dropped.
    pub(crate) fn next_probe_time(&mut self) -> Option<Time> {
        if let Some(next) = self.probe_next {
            debug_assert_eq!(next, self.probe_deadlines.front().map(|&(t, _)| t));
            return next;
        }
        // Most entries at the front are stale (their probes were answered) and each is a
        // look-up in the probes' map, most often a miss: the slots of the few entries behind
        // the one checked are prefetched, so that a run of stale ones waits once, not each.
        const AHEAD: usize = 4;
        for k in 1..=AHEAD {
            self.prefetch_probe_deadline(k);
        }
        while let Some(&(t, id)) = self.probe_deadlines.front() {
            if self.probe_live(t, id) {
                self.probe_next = Some(Some(t));
                return Some(t);
            }
            self.probe_deadlines.pop_front();
            self.prefetch_probe_deadline(AHEAD);
        }
        if self.probe_deadlines.capacity() > 0 {
            self.probe_deadlines = VecDeque::new();
        }
        self.probe_next = Some(None);
        None
    }

    /// Prefetches the probes' map slot of the `k`-th deadline entry, if there is one.
    fn prefetch_probe_deadline(&self, k: usize) {
        if let Some(&(_, id)) = self.probe_deadlines.get(k) {
            self.probes.prefetch(id);
        }
    }

    /// The earliest probe deadline as a timer `(deadline, Probe(id))`, ties going to the
    /// smallest id as in the timer heap.
    pub(crate) fn next_probe_due(&mut self) -> Option<(Time, TimerKey)> {
        let t = self.next_probe_time()?;
        let &(_, first) = self.probe_deadlines.front()?;
        let id = self
            .probe_deadlines
            .iter()
            .take_while(|&&(d, _)| d == t)
            .filter(|&&(d, id)| self.probe_live(d, id))
            .map(|&(_, id)| id)
            .fold(first, NodeId::min);
        Some((t, TimerKey::Probe(id)))
    }

    /// Takes the entry of probe `id` due at `t` out (the one `next_probe_due` named).
    pub(crate) fn take_probe_deadline(&mut self, t: Time, id: NodeId) {
        if let Some(i) = self
            .probe_deadlines
            .iter()
            .take_while(|&&(d, _)| d == t)
            .position(|&e| e == (t, id))
        {
            self.probe_deadlines.remove(i);
            self.probe_next = None;
        }
    }

    /// The earliest peer deadline and its peer (ties: the smallest id).
    pub(crate) fn next_peer_due(&mut self) -> Option<(Time, NodeId)> {
        if let Some(next) = self.peer_next {
            return next;
        }
        let next = self.peers.earliest();
        self.peer_next = Some(next);
        next
    }

    /// Moves peer `id`'s deadline to `due` (a guard in `Node::handle_timeout`).
    pub(crate) fn postpone_peer(&mut self, id: NodeId, due: Time) {
        self.set_peer_due(id, due);
    }

    /// Sets peer `id`'s deadline (the peer must be tracked).
    fn set_peer_due(&mut self, id: NodeId, due: Time) {
        if self.peers.set_due(id, due) {
            self.peer_due_moved(id, Some(due));
        }
    }

    /// Keeps `peer_next` right after peer `id`'s deadline became `due` (`None`: untracked).
    fn peer_due_moved(&mut self, id: NodeId, due: Option<Time>) {
        let Some(next) = self.peer_next else {
            return;
        };
        if next.is_some_and(|(_, first)| first == id) {
            // The earliest moved (later, or away): only a scan tells which is earliest now.
            self.peer_next = None;
        } else if let Some(due) = due
            && next.is_none_or(|first| (due, id) < first)
        {
            self.peer_next = Some(Some((due, id)));
        }
    }

    /// Owners that may hold a deadline in the timer heap (a join holds two: its attempt's
    /// bound and an early announce; a ready node its leaf exchange, heartbeat and row
    /// maintenance).
    pub(crate) fn timer_owners(&self) -> usize {
        self.dead.len() + self.hops.len() + self.lookups.len() + 4
    }

    /// Asserts the overlay's invariants: leaf set and routing table structure, every member
    /// tracked and alive, every tracked node in a table, timers armed, bounds kept.
    pub(crate) fn check_invariants(&self, cfg: &Config, armed: &BTreeSet<(Time, TimerKey)>) {
        self.leaf.check_invariants();
        self.rt.check_invariants();
        self.peers.check_invariants();
        self.probes.check_invariants();
        for id in self.leaf.members().chain(self.rt.entries()) {
            assert!(self.peers.contains_key(&id), "member {id:?} not tracked");
            assert!(!self.dead.contains_key(&id), "member {id:?} is also dead");
        }
        for id in self.rt.entries() {
            assert!(
                self.peers.get(&id).is_some_and(|p| p.rtt.get().is_some()),
                "routing-table entry {id:?} not measured"
            );
        }
        for id in self.peers.keys() {
            assert!(
                self.leaf.contains(*id) || self.rt.contains(*id),
                "tracked peer {id:?} in no table"
            );
        }
        if let Some(cached) = self.peer_next {
            assert_eq!(cached, self.peers.earliest(), "peer deadline cache stale");
        }
        for (id, d) in &self.dead {
            assert!(
                armed.contains(&(d.due, TimerKey::Dead(*id))),
                "dead timer lost"
            );
        }
        for (seq, h) in &self.hops {
            assert!(
                armed.contains(&(h.deadline, TimerKey::Hop(*seq))),
                "hop timer lost"
            );
        }
        for (id, l) in &self.lookups {
            assert!(
                armed.contains(&(l.deadline, TimerKey::Lookup(*id))),
                "lookup timer lost"
            );
        }
        for (id, p) in self.probes.iter() {
            assert!(
                self.probe_deadlines.contains(&(p.deadline, *id)),
                "probe deadline lost"
            );
        }
        if let Some(next) = self.probe_next {
            let front = self.probe_deadlines.front().copied();
            assert_eq!(
                next,
                front
                    .filter(|&(t, id)| self.probe_live(t, id))
                    .map(|(t, _)| t),
                "cached probe deadline stale"
            );
        }
        assert!(
            self.probe_deadlines
                .iter()
                .zip(self.probe_deadlines.iter().skip(1))
                .all(|(a, b)| a.0 <= b.0),
            "probe deadlines out of order"
        );
        assert!(self.dead.len() <= cfg.max_dead, "dead set over its bound");
        self.rtt_cache.check(cfg.max_rtt_cache);
        assert!(
            self.probes.len() <= cfg.max_probes,
            "probes over their bound"
        );
        assert!(
            self.hops.len() <= cfg.max_pending_hops,
            "pending hops over their bound"
        );
        if let Phase::Joining(j) = &self.phase {
            assert!(
                j.buffered.len() <= cfg.max_join_buffer,
                "join buffer over its bound"
            );
        }
    }
}

impl Node {
    /// True once the node is part of the ring (joined or founded it).
    pub fn is_ready(&self) -> bool {
        self.overlay.phase == Phase::Ready
    }

    /// True while a join is under way.
    pub fn is_joining(&self) -> bool {
        matches!(self.overlay.phase, Phase::Joining(_))
    }

    /// True once other nodes may know this node: it is ready, or joining and has announced
    /// itself. Before that it sends nothing but its join request, so that no node routes to a
    /// joiner that cannot yet serve (two joiners waiting on each other would deadlock).
    pub(crate) fn visible(&self) -> bool {
        match &self.overlay.phase {
            Phase::Ready => true,
            Phase::Joining(j) => j.announced,
            Phase::Idle | Phase::Left => false,
        }
    }

    /// Measured round-trip time to a peer or recently probed candidate, in microseconds.
    pub fn rtt_us(&self, peer: NodeId) -> Option<u32> {
        match self.overlay.peers.get(&peer) {
            Some(p) => p.rtt.get(),
            None => self.overlay.rtt_cache.get(&peer),
        }
    }

    /// Remembers a candidate's round-trip time (bounded: the oldest entry goes first).
    pub(crate) fn cache_rtt(&mut self, info: NodeInfo, rtt_us: u32) {
        self.overlay
            .rtt_cache
            .insert(info.id, rtt_us, self.cfg.max_rtt_cache);
    }

    /// Distinct nodes this node keeps state about (leaf set and routing table).
    pub fn state_size(&self) -> usize {
        self.overlay.peers.len()
    }

    /// The address of a tracked peer.
    pub(crate) fn info_of(&self, id: NodeId) -> Option<NodeInfo> {
        self.overlay.peers.get(&id).map(|p| NodeInfo {
            id,
            addr: p.addr.get(),
        })
    }

    pub(crate) fn infos(&self, ids: impl Iterator<Item = NodeId>) -> Vec<NodeInfo> {
        // Room for every id at once: the untracked ones dropped are rare, and growing from
        // empty reallocated several times per list (a leaf set is sent with every exchange).
        let mut out = Vec::with_capacity(ids.size_hint().1.unwrap_or(0));
        out.extend(ids.filter_map(|id| self.info_of(id)));
        out
    }

    pub(crate) fn leaf_infos(&self) -> Vec<NodeInfo> {
        self.infos(self.overlay.leaf.members())
    }

    /// Where a peer's address is, if tracked (for drivers that map ids to links).
    pub fn peer_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.overlay.peers.get(&id).map(|p| p.addr.get())
    }

    /// True while the node serves applications (joining or part of the ring).
    pub(crate) fn is_running(&self) -> bool {
        matches!(self.overlay.phase, Phase::Ready | Phase::Joining(_))
    }

    /// True when the node has not started or has left.
    pub(crate) fn is_idle(&self) -> bool {
        self.overlay.phase == Phase::Idle
    }

    /// True once the node left the ring.
    pub(crate) fn has_left(&self) -> bool {
        self.overlay.phase == Phase::Left
    }

    /// True when tracked peer `id` missed its last ping (not used for routing meanwhile).
    pub(crate) fn is_suspected(&self, id: NodeId) -> bool {
        self.overlay.peers.get(&id).is_some_and(|p| p.misses > 0)
    }

    /// What each pending hop holds of the memory budget, and who pays.
    pub(crate) fn hop_costs(&self) -> Vec<(Owner, u64)> {
        self.overlay
            .hops
            .values()
            .map(|h| (h.owner, h.msg.cost()))
            .collect()
    }

    /// Drops the overlay state (after a failed join or a leave).
    pub(crate) fn reset_overlay(&mut self) {
        for (owner, cost) in self.hop_costs() {
            self.unhold(owner, cost);
        }
        self.overlay.reset(self.me.id, &self.cfg);
    }

    /// The leaf set.
    pub fn leaf_set(&self) -> &LeafSet {
        &self.overlay.leaf
    }

    /// The routing table.
    pub fn routing_table(&self) -> &RoutingTable {
        &self.overlay.rt
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use petal_protocol::{NodeId, NodeInfo};

    use crate::config::Config;
    use crate::node::Node;

    fn info(n: u128) -> NodeInfo {
        let addr: SocketAddr = format!("10.0.0.{n}:55556").parse().unwrap();
        NodeInfo {
            id: NodeId(n << 100),
            addr,
        }
    }

    #[test]
    fn the_rtt_cache_forgets_its_oldest_entry_first() {
        let cfg = Config {
            max_rtt_cache: 3,
            ..Config::default()
        };
        let mut node = Node::new(info(99), cfg, 1).unwrap();
        for n in 1..=3 {
            node.cache_rtt(info(n), 100 * n as u32);
        }
        // A new measurement of the oldest keeps its place (and takes the new value).
        node.cache_rtt(info(1), 50);
        assert_eq!(node.rtt_us(info(1).id), Some(50));
        node.cache_rtt(info(4), 400);
        assert_eq!(node.rtt_us(info(1).id), None, "oldest evicted");
        assert_eq!(node.rtt_us(info(2).id), Some(200));
        // One taken out (tracked again) and measured anew is the newest.
        node.overlay.rtt_cache.remove(&info(2).id);
        node.cache_rtt(info(2), 20);
        node.cache_rtt(info(5), 500);
        assert_eq!(node.rtt_us(info(3).id), None);
        assert_eq!(node.rtt_us(info(2).id), Some(20));
        assert_eq!(node.rtt_us(info(4).id), Some(400));
        assert_eq!(node.rtt_us(info(5).id), Some(500));
        node.cache_rtt(info(6), 600);
        assert_eq!(node.rtt_us(info(4).id), None);
        assert_eq!(node.rtt_us(info(2).id), Some(20));
        assert_eq!(node.overlay.rtt_cache.len(), 3);
    }

    /// A round trip remembered from an earlier probe admits a candidate to a routing-table
    /// slot only when the candidate itself spoke to us; named by another node, one that would
    /// take its slot is probed again (it may be dead, or across a partition), and one that
    /// would lose it is left alone, unprobed.
    #[test]
    fn a_remembered_round_trip_admits_only_a_node_heard_directly() {
        use super::membership::Heard;
        let at = |digit: u128, low: u128| NodeInfo {
            id: NodeId((digit << 124) + low),
            ..info(1)
        };
        let mut node = Node::new(at(8, 0), Config::default(), 1).unwrap();
        let t = crate::time::Time::from_micros(1_000_000);
        node.start_first(t);
        // A full leaf set of near nodes, so that the candidates below are not leaf members
        // (which are tracked and pinged anyway).
        for k in 1..=16 {
            node.learn_as(t, at(8, k), Heard::Direct);
            node.learn_as(t, at(7, (1 << 124) - k), Heard::Direct);
        }
        let (a, b, c, d) = (at(3, 0), at(5, 1), at(5, 1 << 120), at(0xb, 7));
        let slot = |n: &Node, x: NodeInfo| n.overlay.rt.get(n.overlay.rt.slot_of(x.id).unwrap());
        let probed = |n: &Node, x: NodeInfo| n.overlay.probes.contains_key(&x.id);
        // Empty slot, remembered candidate named by another node: probed again, not admitted.
        node.cache_rtt(a, 5_000);
        node.learn(t, a);
        assert_eq!(slot(&node, a), None);
        assert!(
            probed(&node, a),
            "a remembered candidate that would take a slot is re-probed"
        );
        // The same, heard directly: admitted on the remembered round trip, no probe.
        node.cache_rtt(d, 4_000);
        node.learn_as(t, d, Heard::Direct);
        assert_eq!(slot(&node, d), Some(d.id));
        assert!(!probed(&node, d));
        // A slot held by a node measured at 1 ms; a remembered challenger at 5 ms named by
        // another node is neither admitted nor probed.
        node.cache_rtt(b, 1_000);
        node.learn_as(t, b, Heard::Direct);
        assert_eq!(slot(&node, b), Some(b.id));
        node.cache_rtt(c, 5_000);
        node.learn(t, c);
        assert_eq!(slot(&node, c), Some(b.id));
        assert!(!probed(&node, c), "a remembered loser is not probed again");
        node.check_invariants();
    }

    /// A full event queue drops what can be lost (lookup outcomes, deliveries) but never the
    /// join's outcome: the daemon serves as a ring of one on `JoinFailed`, and a dropped one
    /// left the node idle for good.
    #[test]
    fn a_full_event_queue_still_takes_the_joins_outcome() {
        use crate::node::Event;
        let cfg = Config {
            max_events: 64,
            ..Config::default()
        };
        let mut node = Node::new(info(99), cfg, 1).unwrap();
        for n in 0..100 {
            node.emit(Event::PeerDead { peer: info(n).id });
        }
        assert_eq!(node.stats.event_drops, 36);
        node.emit(Event::JoinFailed);
        node.emit(Event::Joined);
        let mut tail = Vec::new();
        while let Some(ev) = node.poll_event() {
            tail.push(ev);
        }
        assert_eq!(tail.len(), 66);
        assert!(matches!(tail[64..], [Event::JoinFailed, Event::Joined]));
    }

    /// `Node::memory` counts what the tables reserve: a full round-trip cache holds the sets
    /// of 8-byte entries its bound allows (8 sets of 8 within 100) and no more, and the parts
    /// sum to the total the reports print.
    #[test]
    fn memory_counts_the_round_trip_cache_at_its_bound() {
        let cfg = Config {
            max_rtt_cache: 100,
            ..Config::default()
        };
        let mut node = Node::new(info(99), cfg, 1).unwrap();
        let empty = node.memory();
        assert_eq!(empty.rtt_cache, 0);
        for n in 0..250u32 {
            let id = NodeId((u128::from(n) + 1) << 64);
            node.cache_rtt(NodeInfo { id, ..info(1) }, 100 + n);
        }
        let m = node.memory();
        assert_eq!(m.rtt_cache, 64 * 8, "{m:?}");
        assert_eq!(
            m.total(),
            m.node
                + m.leaf_set
                + m.routing_table
                + m.peers
                + m.rtt_cache
                + m.probes
                + m.dead
                + m.routes
                + m.timers
                + m.queues
                + m.messaging
        );
        assert_eq!(m.node, std::mem::size_of::<Node>());
    }

    /// Probe deadlines live outside the timer heap: each probe still times out exactly at its
    /// deadline, an answered one never does, and `poll_timeout` names the earliest.
    #[test]
    fn a_probe_left_unanswered_times_out_at_its_deadline() {
        let mut node = Node::new(info(99), Config::default(), 1).unwrap();
        let wait = node.cfg.ping_timeout;
        let t0 = crate::Time::from_micros(1_000_000);
        node.start_first(t0);
        node.probe(t0, info(1));
        node.probe(t0, info(2));
        let t1 = t0 + std::time::Duration::from_millis(5);
        node.probe(t1, info(3));
        assert_eq!(node.overlay.probes.len(), 3);
        // Node 1 answers.
        let nonce = node.overlay.probes.get(&info(1).id).unwrap().nonce;
        node.handle_message(t1, info(1), petal_protocol::Message::Pong { nonce });
        assert!(!node.overlay.probes.contains_key(&info(1).id));
        assert!(node.poll_timeout().is_some_and(|t| t <= t0 + wait));
        node.handle_timeout(t0 + (wait - std::time::Duration::from_micros(1)));
        assert_eq!(node.overlay.probes.len(), 2, "nothing due yet");
        node.handle_timeout(t0 + wait);
        assert!(!node.overlay.probes.contains_key(&info(2).id), "timed out");
        assert!(node.overlay.probes.contains_key(&info(3).id));
        node.handle_timeout(t1 + wait);
        assert_eq!(node.overlay.probes.len(), 0);
        assert!(node.overlay.probe_deadlines.is_empty());
        node.check_invariants();
    }

    /// Probes answered fast, behind one that is not, leave stale deadlines in the queue: it is
    /// compacted, so it stays proportional to the probes out.
    #[test]
    fn answered_probes_do_not_pile_up_in_the_deadline_queue() {
        let mut node = Node::new(info(99), Config::default(), 1).unwrap();
        let t0 = crate::Time::from_micros(1_000_000);
        node.start_first(t0);
        // One probe never answered holds the front.
        node.probe(t0, info(1));
        for n in 0..10_000u64 {
            let now = t0 + std::time::Duration::from_micros(n + 1);
            let peer = NodeInfo {
                id: NodeId((u128::from(n) + 2) << 64),
                ..info(2)
            };
            node.probe(now, peer);
            let nonce = node.overlay.probes.get(&peer.id).unwrap().nonce;
            node.handle_message(now, peer, petal_protocol::Message::Pong { nonce });
            // (At most two probes are out: 4 x 2 + 64, and the one just added.)
            assert!(node.overlay.probe_deadlines.len() <= 73);
        }
        assert_eq!(node.overlay.probes.len(), 1);
        node.check_invariants();
    }
}
