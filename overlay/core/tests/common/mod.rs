//! A tiny deterministic network of real [`Node`]s, driven through the public API only: a
//! queue of messages keyed by (delivery time, sequence number) with one fixed latency (so every
//! link is FIFO, as an authenticated stream is), timers fired exactly when
//! [`Node::poll_timeout`] says, outputs drained after every input, `check_invariants` after
//! every step. Shared by the merge and join tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use petal_core::{Config, ConnId, Event, Key, Message, Node, NodeId, NodeInfo, Time};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One-way latency of every link.
pub(crate) const LATENCY: Duration = Duration::from_millis(1);
/// How often convergence is checked while the rings merge.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(1);

pub(crate) struct Net {
    pub half: usize,
    pub nodes: Vec<Node>,
    pub infos: Vec<NodeInfo>,
    pub by_id: BTreeMap<NodeId, usize>,
    /// Nodes whose messages (both ways) are dropped and whose timers do not run.
    pub down: Vec<bool>,
    /// A partition: messages between nodes on different sides (`false` / `true`) are lost.
    /// The nodes run on.
    pub cut: Option<Vec<bool>>,
    pub now: Time,
    pub seq: u64,
    /// (delivery time, sequence) -> (from, to, message).
    pub queue: BTreeMap<(Time, u64), (usize, usize, Message)>,
    /// Lookups under way: (node, lookup id) -> key.
    pub lookups: BTreeMap<(usize, u64), Key>,
    /// Answered lookups: (node, key, owner).
    pub answered: Vec<(usize, Key, NodeId)>,
    pub failed: usize,
    pub rng: ChaCha8Rng,
    /// Transmits to a node's former address are allowed (a node moved).
    pub allow_stale: bool,
    /// Broadcasts delivered: (node, connection, payload).
    pub broadcasts: Vec<(usize, ConnId, bytes::Bytes)>,
    /// One-way delay of each pair (`delays[i][j]`) instead of [`LATENCY`] for all; fixed per
    /// pair, so links stay FIFO.
    pub delays: Option<Vec<Vec<Duration>>>,
    /// Pairs (i, j) whose dials from i to j fail: what i sends to j is lost until j has sent
    /// something to i (j's connection then carries both ways, as a driver's link does).
    pub dial_fails: std::collections::BTreeSet<(usize, usize)>,
    /// Pairs (i, j) whose next dial from i to j fails once, as a reset dial does: the message
    /// is lost and i's driver tells its core at once ([`petal_core::Node::unreachable`]).
    pub dial_fails_once: std::collections::BTreeSet<(usize, usize)>,
    /// Pairs (smaller, larger) between which a message went: they have a link.
    pub linked: std::collections::BTreeSet<(usize, usize)>,
    /// Messages lost because an end was down or a partition lay between: (due time, from, to,
    /// kind index).
    pub lost: Vec<(Time, usize, usize, usize)>,
    /// Application events (requests, their outcomes, tunnels, ...): (time, node, event).
    pub app_events: Vec<(Time, usize, Event)>,
    /// What the network does to each message sent (default: delivers it once, in order).
    pub tamper: Option<TamperFn>,
    /// The nodes' external identity registry, when they use one: answers each
    /// [`Event::RegistryOp`] at once (unless `registry_down`).
    pub registry: Option<petal_core::store::MemoryRegistry>,
    /// The external registry does not answer (its operations time out at the nodes).
    pub registry_down: bool,
    /// The external registry answers every operation with this failure.
    pub registry_fails: Option<String>,
    /// Registry operations asked for: (node, the node's id for it, operation).
    pub registry_ops: Vec<(usize, u64, petal_core::StoreOpKind)>,
    /// When set, the one outbox buffer lent to the node of each message and timer and taken
    /// back with its transmits ([`Node::lend_outbox`], [`Node::reclaim_outbox`]), as the
    /// simulator drives its nodes; `None`: transmits are polled one at a time.
    pub lent: Option<std::collections::VecDeque<petal_core::Transmit>>,
}

/// Decides what the network does to a message sent at a time.
pub(crate) type TamperFn = Box<dyn FnMut(Time, &Message) -> Tamper>;

/// What [`Net::tamper`] does to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tamper {
    /// Delivered as usual.
    Pass,
    /// Lost.
    Drop,
    /// Delivered, and a copy of it this much later.
    Duplicate(Duration),
    /// Delivered this much later than usual (after messages sent after it).
    Delay(Duration),
}

impl Net {
    /// `n` nodes with random ids drawn from `seed`, none started.
    pub(crate) fn new(seed: u64, n: usize) -> Self {
        Self::with_config(seed, n, Config::default())
    }

    /// `n` nodes with random ids drawn from `seed` and configuration `cfg`, none started.
    pub(crate) fn with_config(seed: u64, n: usize, cfg: Config) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut infos = Vec::new();
        let mut by_id = BTreeMap::new();
        while infos.len() < n {
            let id = NodeId(rng.random());
            if by_id.contains_key(&id) {
                continue;
            }
            let i = infos.len();
            by_id.insert(id, i);
            infos.push(NodeInfo {
                id,
                addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 7000)),
            });
        }
        let nodes = infos
            .iter()
            .enumerate()
            .map(|(i, &me)| Node::new(me, cfg.clone(), seed.wrapping_mul(1000) + i as u64).unwrap())
            .collect();
        Self {
            half: cfg.leaf_set_size / 2,
            nodes,
            infos,
            by_id,
            down: vec![false; n],
            now: Time::ZERO,
            seq: 0,
            queue: BTreeMap::new(),
            lookups: BTreeMap::new(),
            answered: Vec::new(),
            failed: 0,
            rng,
            allow_stale: false,
            broadcasts: Vec::new(),
            delays: None,
            dial_fails: std::collections::BTreeSet::new(),
            dial_fails_once: std::collections::BTreeSet::new(),
            linked: std::collections::BTreeSet::new(),
            lost: Vec::new(),
            app_events: Vec::new(),
            tamper: None,
            cut: None,
            registry: None,
            registry_down: false,
            registry_fails: None,
            registry_ops: Vec::new(),
            lent: None,
        }
    }

    /// Node `i`'s next transmit: polled, or from the lent buffer (taken back from the node
    /// whenever it runs dry, so that what the node sends while its transmits are handled, as
    /// after `unreachable`, follows them in order).
    fn next_transmit(&mut self, i: usize) -> Option<petal_core::Transmit> {
        let Some(buf) = self.lent.as_mut() else {
            return self.nodes[i].poll_transmit();
        };
        if buf.is_empty() {
            self.nodes[i].reclaim_outbox(buf);
        }
        buf.pop_front()
    }

    /// Lends node `i` the buffer for its next input, when the net lends one.
    fn lend(&mut self, i: usize) {
        if let Some(buf) = self.lent.as_mut() {
            self.nodes[i].lend_outbox(buf);
        }
    }

    /// The one-way delay from node `i` to node `j`.
    pub(crate) fn delay(&self, i: usize, j: usize) -> Duration {
        self.delays.as_ref().map_or(LATENCY, |d| d[i][j])
    }

    /// Drains node `i`'s outputs into the network.
    pub(crate) fn drain(&mut self, i: usize) {
        self.nodes[i].check_invariants();
        while let Some(tx) = self.next_transmit(i) {
            let j = self.by_id[&tx.to.id];
            assert!(
                self.allow_stale || tx.to.addr == self.infos[j].addr,
                "transmit to a wrong address"
            );
            assert_ne!(i, j, "node {i} sent a message to itself");
            let pair = (i.min(j), i.max(j));
            if self.dial_fails.contains(&(i, j)) && !self.linked.contains(&pair) {
                continue;
            }
            if !self.linked.contains(&pair) && self.dial_fails_once.remove(&(i, j)) {
                let now = self.now;
                self.nodes[i].unreachable(now, tx.to.id);
                continue;
            }
            self.linked.insert(pair);
            let now = self.now;
            let action = self
                .tamper
                .as_mut()
                .map_or(Tamper::Pass, |f| f(now, &tx.msg));
            let at = self.now + self.delay(i, j);
            match action {
                Tamper::Pass => {}
                Tamper::Drop => continue,
                Tamper::Duplicate(after) => {
                    self.seq += 1;
                    self.queue
                        .insert((at + after, self.seq), (i, j, tx.msg.clone()));
                }
                Tamper::Delay(by) => {
                    self.seq += 1;
                    self.queue.insert((at + by, self.seq), (i, j, tx.msg));
                    continue;
                }
            }
            self.seq += 1;
            self.queue.insert((at, self.seq), (i, j, tx.msg));
        }
        let mut registry = Vec::new();
        while let Some(ev) = self.nodes[i].poll_event() {
            match ev {
                Event::RegistryOp {
                    op,
                    name,
                    kind,
                    wall_ms,
                    ..
                } => registry.push((op, name, kind, wall_ms)),
                Event::LookupDone {
                    lookup, key, owner, ..
                } => {
                    let k = self.lookups.remove(&(i, lookup)).expect("a lookup of ours");
                    assert_eq!(k, key);
                    self.answered.push((i, key, owner.id));
                }
                Event::LookupFailed { lookup, .. } => {
                    self.lookups.remove(&(i, lookup));
                    self.failed += 1;
                }
                Event::Broadcast { conn, payload } => self.broadcasts.push((i, conn, payload)),
                ev @ (Event::Request { .. }
                | Event::RequestDone { .. }
                | Event::Published { .. }
                | Event::TunnelIncoming { .. }
                | Event::TunnelOfferClosed { .. }
                | Event::TunnelOpened { .. }
                | Event::TunnelOpenFailed { .. }
                | Event::TunnelCredit { .. }
                | Event::TunnelData { .. }
                | Event::TunnelClosed { .. }
                | Event::KvDone { .. }
                | Event::IdMessage { .. }
                | Event::IdDone { .. }) => {
                    self.app_events.push((self.now, i, ev));
                }
                _ => {}
            }
        }
        for (op, name, kind, wall) in registry {
            self.registry_ops.push((i, op, kind.clone()));
            if self.registry_down {
                continue;
            }
            let reg = self.registry.as_mut().expect("an external registry");
            let result = match &self.registry_fails {
                Some(why) => petal_core::StoreResult::Failed(why.clone()),
                None => reg.apply(wall, &name, kind),
            };
            let now = self.now;
            assert!(self.nodes[i].registry_result(now, op, result));
            self.drain(i);
        }
    }

    /// Runs messages and timers up to `end`.
    pub(crate) fn run_until(&mut self, end: Time) {
        loop {
            let t_timer = (0..self.nodes.len())
                .filter(|&i| !self.down[i])
                .filter_map(|i| self.nodes[i].poll_timeout())
                .min();
            let t_net = self.queue.keys().next().map(|k| k.0);
            let Some(t) = [t_timer, t_net].into_iter().flatten().min() else {
                break;
            };
            if t > end {
                break;
            }
            let t = t.max(self.now);
            self.now = t;
            if t_timer.is_some_and(|x| x <= t) {
                for i in 0..self.nodes.len() {
                    if !self.down[i] && self.nodes[i].poll_timeout().is_some_and(|x| x <= t) {
                        self.lend(i);
                        self.nodes[i].handle_timeout(t);
                        self.drain(i);
                    }
                }
            } else {
                let ((at, _), (from, to, msg)) = self.queue.pop_first().expect("present");
                let apart = self.cut.as_ref().is_some_and(|c| c[from] != c[to]);
                if self.down[from] || self.down[to] || apart {
                    self.lost.push((at, from, to, msg.kind_index()));
                    continue;
                }
                let info = self.infos[from];
                self.lend(to);
                self.nodes[to].handle_message(t, info, msg);
                self.drain(to);
            }
        }
        self.now = self.now.max(end);
    }

    pub(crate) fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    /// Forms a ring of `members`: the first founds it, the others join through it one by one.
    pub(crate) fn form_ring(&mut self, members: &[usize]) {
        let first = members[0];
        self.nodes[first].start_first(self.now);
        self.drain(first);
        for &i in &members[1..] {
            let boot = self.infos[first];
            self.nodes[i].join(self.now, boot);
            self.drain(i);
            let limit = self.now + Duration::from_secs(30);
            while !self.nodes[i].is_ready() {
                assert!(self.now < limit, "node {i} did not join");
                self.run_for(Duration::from_millis(50));
            }
        }
    }

    pub(crate) fn introduce(&mut self, i: usize, j: usize) {
        let info = self.infos[j];
        self.nodes[i].introduce(self.now, info);
        self.drain(i);
    }

    /// The true leaf set of `me` among `ids`: (left, right), nearest first.
    pub(crate) fn expected_leaf(&self, me: NodeId, ids: &[NodeId]) -> (Vec<NodeId>, Vec<NodeId>) {
        let mut right: Vec<NodeId> = ids.iter().copied().filter(|&x| x != me).collect();
        let mut left = right.clone();
        right.sort_by_key(|&x| me.cw_distance(x));
        left.sort_by_key(|&x| x.cw_distance(me));
        right.truncate(self.half);
        left.truncate(self.half);
        (left, right)
    }

    /// Members of `group` whose leaf set is not the true one among `group`.
    pub(crate) fn wrong_leaf_sets(&self, group: &[usize]) -> Vec<usize> {
        let ids: Vec<NodeId> = group.iter().map(|&i| self.infos[i].id).collect();
        group
            .iter()
            .copied()
            .filter(|&i| {
                let l = self.nodes[i].leaf_set();
                let (left, right) = self.expected_leaf(self.infos[i].id, &ids);
                l.left() != left.as_slice() || l.right() != right.as_slice()
            })
            .collect()
    }

    /// Runs until every member of `group` has its true leaf set (checked every
    /// [`CHECK_EVERY`]); returns the time that took, or panics after `limit`.
    pub(crate) fn converge(&mut self, group: &[usize], limit: Duration) -> Duration {
        let start = self.now;
        loop {
            let wrong = self.wrong_leaf_sets(group);
            if wrong.is_empty() {
                return self.now - start;
            }
            assert!(
                self.now - start < limit,
                "leaf sets still wrong after {limit:?} at nodes {wrong:?}"
            );
            self.run_for(CHECK_EVERY);
        }
    }

    /// The member of `group` numerically closest to `key`.
    pub(crate) fn owner(&self, group: &[usize], key: Key) -> NodeId {
        let mut best = self.infos[group[0]].id;
        for &i in group {
            let id = self.infos[i].id;
            if id.closer_than(best, key) {
                best = id;
            }
        }
        best
    }

    /// Keys worth routing: random ones and keys next to every member's id.
    pub(crate) fn test_keys(&mut self, group: &[usize], random: usize) -> Vec<Key> {
        let mut keys: Vec<Key> = (0..random).map(|_| Key(self.rng.random())).collect();
        for &i in group {
            let id = self.infos[i].id.0;
            keys.extend([Key(id), Key(id.wrapping_add(1)), Key(id.wrapping_sub(1))]);
        }
        keys
    }

    /// Walks `next_hop` from every member for every key: each walk must end at the owner
    /// without leaving the group and within a few hops.
    pub(crate) fn check_routes(&mut self, group: &[usize]) {
        let keys = self.test_keys(group, 50);
        for &start in group {
            for &key in &keys {
                let mut at = start;
                let mut hops = 0;
                while let Some(next) = self.nodes[at].next_hop(key) {
                    at = *self.by_id.get(&next).expect("a known node");
                    assert!(group.contains(&at), "route left the merged ring");
                    hops += 1;
                    assert!(hops <= 16, "route from {start} for {key:?} loops");
                }
                assert_eq!(
                    self.infos[at].id,
                    self.owner(group, key),
                    "route from node {start} for {key:?} ends at the wrong node"
                );
            }
        }
    }

    /// Real lookups from every member: every one is answered by the owner.
    pub(crate) fn check_lookups(&mut self, group: &[usize]) {
        let keys = self.test_keys(group, 5);
        self.answered.clear();
        let mut asked = 0;
        for &i in group {
            for k in 0..4 {
                let key = keys[(i * 7 + k * 13) % keys.len()];
                let id = self.nodes[i]
                    .lookup(self.now, key)
                    .expect("lookup accepted");
                self.lookups.insert((i, id), key);
                self.drain(i);
                asked += 1;
            }
        }
        self.run_for(Duration::from_secs(5));
        assert_eq!(self.failed, 0, "lookups failed");
        assert_eq!(self.answered.len(), asked, "every lookup answered");
        for &(i, key, owner) in &self.answered {
            assert_eq!(owner, self.owner(group, key), "lookup from {i} for {key:?}");
        }
    }
}
