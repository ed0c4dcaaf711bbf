//! Membership: candidate intake with proximity, introductions (merging rings), periodic
//! leaf-set exchange, leaf-set and lazy routing-table repair, graceful leave. The join itself
//! is in `join`.

use std::collections::BTreeSet;

use petal_protocol::{Message, NodeId, NodeInfo, RouteMsg, Routed};
use rand::Rng;

use super::Phase;
use crate::node::{Event, Node, TimerKey};
use crate::time::Time;

/// The fault a requester gets for a request whose member's node left before the member
/// answered (see [`Node::leave`]).
pub const LEAVING_FAULT: &str = "petal: the member's node left before the member answered";

/// How a node came to be offered to [`Node::learn_as`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Heard {
    /// In another node's message (a leaf set, a join reply, a routing-table row).
    SecondHand,
    /// It sent us a message itself.
    Direct,
    /// It announced itself to its leaf set, us among them.
    Announce,
    /// It pinged us, with this nonce (it has us as a candidate, or tracks us). When it is a
    /// candidate of ours to probe, the pong that answers is the probe ([`Message::PongPing`]):
    /// three messages instead of the four of a ping each way. Measured while growing a
    /// `pastry-hops` overlay from 1,000 to 10,000 nodes (seed 1), pinged nodes probing their
    /// pinger made 45 % of all probes, and the exchange cut the run's messages by 13 % with
    /// every result but the event count unchanged.
    Pinged(u64),
}

/// What hearing a message from its sender says of the sender ([`Node::heard_from`]), or
/// `None` for the messages that are not evidence of life: a leave, a refusal (from a node not
/// in a ring), and the messages of a joiner's nearest-node search (the searcher may not be
/// routed to; an answer to it is measured by the search).
pub(crate) fn heard_of(msg: &Message) -> Option<Heard> {
    Some(match msg {
        Message::Leave { .. }
        | Message::JoinBusy { .. }
        | Message::Discover { .. }
        | Message::DiscoverReply { .. } => return None,
        Message::Announce { .. } => Heard::Announce,
        Message::Ping { nonce } => Heard::Pinged(*nonce),
        _ => Heard::Direct,
    })
}

impl Node {
    /// Offers a node heard of in another node's message as a candidate for the leaf set and
    /// the routing table. Second-hand news of a node we believe dead is not taken, only checked
    /// (see [`Node::dead_rumour`]).
    pub(crate) fn learn(&mut self, now: Time, info: NodeInfo) {
        self.learn_as(now, info, Heard::SecondHand);
    }

    /// [`Node::learn`] for each of a batch of candidates, in order.
    pub(crate) fn learn_all(&mut self, now: Time, infos: Vec<NodeInfo>) {
        self.overlay.warm(&infos);
        for e in infos {
            self.learn(now, e);
        }
    }

    /// [`Node::learn`], saying how the node was heard of. True when a pong went out (the
    /// candidate pinged us and the answer probes it: see [`Heard::Pinged`]).
    pub(crate) fn learn_as(&mut self, now: Time, info: NodeInfo, heard: Heard) -> bool {
        let direct = heard != Heard::SecondHand;
        let id = info.id;
        if id == self.me.id {
            return false;
        }
        if !direct && self.overlay.dead.contains_key(&id) {
            self.dead_rumour(now, info);
            return false;
        }
        let offered = self.overlay.leaf.offer(id);
        if offered.entered {
            // A new neighbour means our neighbours' views likely differ from ours too: exchange
            // soon. Only an announcer told its other neighbours itself; a node heard of
            // second-hand, or one that spoke to us for another reason (an introduction, a leaf
            // set, a routed message), may be known to us alone.
            self.leaf_changed(now, heard != Heard::Announce);
            self.track(now, info);
            for e in offered.evicted.into_iter().flatten() {
                self.untrack_if_unused(e);
            }
            self.on_leaf_joined(id, direct);
        }
        // A routing-table slot takes a candidate only once its round trip is measured, and
        // then only if it is empty or held by a node measured farther (proximity neighbour
        // selection). A tracked peer (a leaf-set member) is measured by its first ping, which
        // comes within a second; any other candidate is probed.
        //
        // A round trip remembered from an earlier probe (the RTT cache) says how near a node
        // is, not that it is still there: it is used as it is when the node spoke to us now or
        // is tracked (pinged anyway). Named by another node, a remembered candidate that would
        // lose its slot is left alone (no probe: the cache's point), and one that would take
        // it is probed again, so that a dead node, or one across a partition, is not put in
        // a slot on a stale mention (a check of life, made whatever `probe_one_in` samples:
        // the candidate was measured already). Measured in `copies-messaging`: admitting such
        // mentions on the cached round trip alone lost 0.3 points of the events during the
        // split, in 7 of 8 seeds.
        let Some(slot) = self.overlay.rt.slot_of(id) else {
            return false;
        };
        if self.overlay.rt.get(slot) == Some(id) {
            return false;
        }
        // One search of the tracked peers for both questions (`rtt_us` asks them in turn), and
        // none for most candidates: a tracked node is in the leaf set or the routing table
        // (the overlay's invariant), and the table holds `id` only at `slot`, checked above,
        // so a candidate that neither was a member nor entered is not tracked.
        let peer_rtt = if offered.entered || offered.member {
            self.overlay.peers.get(&id).map(|p| p.rtt.get())
        } else {
            debug_assert!(
                !self.overlay.peers.contains_key(&id),
                "{id:?} tracked, in no table"
            );
            None
        };
        let tracked = peer_rtt.is_some();
        let rtt = match peer_rtt {
            Some(rtt) => rtt,
            None => self.overlay.rtt_cache.get(&id),
        };
        match rtt {
            Some(rtt) if direct || tracked => self.offer_slot(now, info, rtt),
            Some(rtt) if !self.would_take(slot, rtt) => {}
            None if tracked => {}
            None if self.sampled_out(slot, id) => {}
            _ => {
                let answering = match heard {
                    Heard::Pinged(nonce) => Some(nonce),
                    _ => None,
                };
                return self.probe_answering(now, info, answering);
            }
        }
        false
    }

    /// True when a candidate measured at `rtt_us` would take `slot` (see [`Node::offer_slot`]).
    fn would_take(&self, slot: crate::routing_table::Slot, rtt_us: u32) -> bool {
        match self.overlay.rt.get(slot) {
            None => true,
            Some(inc) => self.rtt_us(inc).is_some_and(|b| rtt_us < b),
        }
    }

    /// True when `probe_one_in` leaves candidate `id` for `slot` unprobed: the slot's entry is
    /// measured and the candidate's hash class is not the one probed (see
    /// [`crate::Config::probe_one_in`]).
    fn sampled_out(&self, slot: crate::routing_table::Slot, id: NodeId) -> bool {
        let n = u64::from(self.cfg.probe_one_in);
        if n <= 1 {
            return false;
        }
        let held = self
            .overlay
            .rt
            .get(slot)
            .is_some_and(|e| self.rtt_us(e).is_some());
        let x = (id.0 ^ self.me.id.0).to_le_bytes();
        let (lo, hi) = x.split_at(8);
        let fold = |h: &[u8]| u64::from_le_bytes(h.try_into().unwrap_or_default());
        held && crate::node::splitmix(fold(lo) ^ fold(hi)) % n != 0
    }

    /// Introduces a node that the driver found out of band (a LAN discovery beacon, a seed
    /// dialed again later), so that two rings that formed apart merge into one.
    ///
    /// Nothing happens when `info` is this node, when this node is not ready, or when `info` is
    /// already in its tables ([`Node::knows`]). A node remembered as dead is introduced again: a
    /// beacon is fresh evidence. Otherwise the stranger gets two messages:
    /// 1. a join for this node's id, routed through the stranger's ring as a joiner's would be
    ///    (excluding this node as a next hop): the nodes on the path send their routing-table
    ///    rows and the node closest to this id in that ring its leaf set, which hold this
    ///    node's true neighbours in the other ring (a ready node learns the join replies that
    ///    arrive within `join_timeout` of an introduction as candidates). In rings larger than the leaf set the two introduced nodes are rarely
    ///    neighbours, and without this nothing brings true neighbours together;
    /// 2. this node's leaf set, asking for the stranger's: the stranger learns this node
    ///    directly and answers with its leaf set, whose members this node learns.
    ///
    /// Every node that enters a leaf set second-hand is then sent that leaf set, which spreads
    /// the merge along the ring in both directions. The stranger enters this node's tables only
    /// once it answers. Counted in [`crate::Stats::introductions`].
    pub fn introduce(&mut self, now: Time, info: NodeInfo) {
        if info.id == self.me.id || !self.is_ready() || self.knows(info.id) {
            return;
        }
        self.send_introduction(now, info);
    }

    /// Sends the two messages of an introduction (see [`Node::introduce`]).
    fn send_introduction(&mut self, now: Time, info: NodeInfo) {
        self.stats.introductions += 1;
        // The join goes first: over a FIFO link the stranger routes it before it learns our
        // leaf set, so that the route stays within its own ring.
        self.send_self_join(now, info);
        let leaf = self.leaf_infos();
        self.send(info, Message::LeafSet { leaf, reply: true });
    }

    /// Routes a join for this node's own id through `via` (never to this node): the nodes on
    /// the way answer with their rows and the node closest to this id with its leaf set, which
    /// this ready node learns for `join_timeout`.
    fn send_self_join(&mut self, now: Time, via: NodeInfo) {
        self.overlay.introduced_until = now + self.cfg.join_timeout;
        let join = RouteMsg {
            key: self.me.id.as_key(),
            origin: self.me,
            hops: 0,
            hop_seq: 0,
            body: Routed::Join,
        };
        self.send(via, Message::route(join));
    }

    /// One leaf set from `via` moved half of ours or more at once: our neighbours were far
    /// from our true ones (we were in a ring that merged into another, and nobody there knows
    /// us yet). Walking closer by leaf-set exchanges gains at most half a leaf set per round;
    /// a join for our own id routed through the ring finds our true neighbours in one route.
    /// At most one at a time (per `join_timeout`). Counted in
    /// [`crate::Stats::relocations`].
    fn relocate(&mut self, now: Time, via: NodeInfo) {
        if !self.is_ready() || now <= self.overlay.introduced_until {
            return;
        }
        self.stats.relocations += 1;
        self.send_self_join(now, via);
    }

    /// A node we introduced ourselves to refused our join: it is not in a ring yet (a seed that
    /// is still joining). Its own join may well end in another ring than ours, and once it
    /// answers anything it is in our tables, so the driver would not introduce it again:
    /// introduce it again later ourselves, with a doubling delay from `join_busy_retry`, until
    /// it stops refusing (at most `MAX_REINTRODUCTIONS` times).
    pub(crate) fn reintroduce_later(&mut self, now: Time, info: NodeInfo) {
        const MAX_REINTRODUCTIONS: u32 = 8;
        let tries = self.overlay.reintroduce.get(&info.id).map_or(0, |r| r.1);
        if tries >= MAX_REINTRODUCTIONS {
            return;
        }
        if tries == 0 && self.overlay.reintroduce.len() >= self.cfg.max_join_contacts {
            // Full: forget a node whose last introduction was not refused, if any.
            let done = self
                .overlay
                .reintroduce
                .iter()
                .find(|(_, r)| r.2 == Time::MAX)
                .map(|(id, _)| *id);
            match done {
                Some(id) => self.overlay.reintroduce.remove(&id),
                None => return,
            };
        }
        let due = now + self.cfg.join_busy_retry * 2u32.pow(tries + 1);
        self.overlay
            .reintroduce
            .insert(info.id, (info, tries + 1, due));
        self.set_timer(due, TimerKey::Reintroduce(info.id));
    }

    pub(crate) fn on_reintroduce(&mut self, now: Time, id: NodeId) {
        let Some(r) = self.overlay.reintroduce.get_mut(&id) else {
            return;
        };
        // Not pending any more; a refusal schedules the next one.
        r.2 = Time::MAX;
        let info = r.0;
        if self.is_ready() {
            self.send_introduction(now, info);
        }
    }

    /// True when `id` is in this node's tables (leaf set or routing table): a driver may skip
    /// introducing it. False for this node's own id and for nodes only remembered as dead.
    pub fn knows(&self, id: NodeId) -> bool {
        self.overlay.peers.contains_key(&id)
    }

    /// A measured round-trip time to `info` arrived from a probe: remembered, and offered to
    /// the routing table ([`Node::offer_slot`]).
    pub(crate) fn consider_with_rtt(&mut self, now: Time, info: NodeInfo, rtt_us: u32) {
        match self.overlay.peers.get_mut(&info.id) {
            Some(p) => {
                if p.rtt.get().is_none() {
                    p.rtt = super::liveness::Rtt::new(rtt_us);
                }
            }
            None => self.cache_rtt(info, rtt_us),
        }
        self.offer_slot(now, info, rtt_us);
    }

    /// A node measured at `rtt_us` takes its routing-table slot when the slot is empty or held
    /// by a node measured farther (every entry is measured: see `learn_as`).
    pub(crate) fn offer_slot(&mut self, now: Time, info: NodeInfo, rtt_us: u32) {
        if self.overlay.dead.contains_key(&info.id) {
            return;
        }
        let Some(slot) = self.overlay.rt.slot_of(info.id) else {
            return;
        };
        match self.overlay.rt.get(slot) {
            None => {
                self.overlay.rt.set(info.id);
                self.track(now, info);
            }
            Some(inc) if inc == info.id => {}
            Some(inc) => {
                if self.rtt_us(inc).is_some_and(|b| rtt_us < b) {
                    self.swap_in(now, info, inc);
                }
            }
        }
    }

    fn swap_in(&mut self, now: Time, info: NodeInfo, incumbent: NodeId) {
        self.overlay.rt.set(info.id);
        self.track(now, info);
        self.untrack_if_unused(incumbent);
        self.stats.proximity_swaps += 1;
    }

    fn on_leaf_joined(&mut self, id: NodeId, direct: bool) {
        match &self.overlay.phase {
            Phase::Joining(j) if j.announced => self.announce_to(id, true),
            Phase::Ready if !direct => {
                // Tell a newly learned neighbour about us and our view (speeds up convergence
                // after joins and healed partitions).
                if let Some(info) = self.info_of(id) {
                    let leaf = self.leaf_infos();
                    self.send(info, Message::LeafSet { leaf, reply: false });
                }
            }
            _ => {}
        }
    }

    /// The leaf set changed: count the version, check the group trees' routes, and, when
    /// `exchange_soon`, exchange leaf sets within `leaf_exchange_min`.
    pub(crate) fn leaf_changed(&mut self, now: Time, exchange_soon: bool) {
        self.overlay.leaf_version += 1;
        if !self.is_ready() {
            return;
        }
        // The clockwise neighbour may be another node now: it is watched on the short interval.
        if let Some(&r) = self.overlay.leaf.right().first() {
            self.ping_soon(now, r);
        }
        self.groups_routes_changed(now);
        self.store_leaf_changed(now);
        if !exchange_soon {
            return;
        }
        let soon = now + self.cfg.leaf_exchange_min;
        if self.overlay.leaf_exchange_at > soon {
            self.overlay.leaf_exchange_at = soon;
            self.set_timer(soon, TimerKey::LeafExchange);
        }
    }

    pub(crate) fn on_leaf_exchange(&mut self, now: Time) {
        if !self.is_ready() {
            return;
        }
        let next = now + self.cfg.leaf_exchange_interval;
        self.overlay.leaf_exchange_at = next;
        self.set_timer(next, TimerKey::LeafExchange);
        // One side per period, alternating: each neighbour pair still exchanges every period
        // (each node asks one of its two), at half the messages of asking both.
        self.overlay.exchange_right = !self.overlay.exchange_right;
        let nearest = if self.overlay.exchange_right {
            (None, self.overlay.leaf.right().first().copied())
        } else {
            (self.overlay.leaf.left().first().copied(), None)
        };
        self.exchange_leaf_set(nearest);
    }

    /// The periodic heartbeat to the counter-clockwise neighbour, which watches this node.
    pub(crate) fn on_heartbeat(&mut self, now: Time) {
        if !self.is_ready() {
            return;
        }
        let next = now + self.cfg.heartbeat_interval;
        self.overlay.heartbeat_at = next;
        self.set_timer(next, TimerKey::Heartbeat);
        if let Some(info) = self
            .overlay
            .leaf
            .left()
            .first()
            .and_then(|&l| self.info_of(l))
        {
            self.send(info, Message::Heartbeat);
        }
    }

    /// Sends our leaf set, asking for theirs, to one member on each side (once if the same).
    fn exchange_leaf_set(&mut self, (left, right): (Option<NodeId>, Option<NodeId>)) {
        let targets: BTreeSet<NodeId> = left.into_iter().chain(right).collect();
        let leaf = self.leaf_infos();
        for id in targets {
            if let Some(info) = self.info_of(id) {
                self.send(
                    info,
                    Message::LeafSet {
                        leaf: leaf.clone(),
                        reply: true,
                    },
                );
            }
        }
    }

    pub(crate) fn on_leaf_set(
        &mut self,
        now: Time,
        from: NodeInfo,
        leaf: Vec<NodeInfo>,
        reply: bool,
    ) {
        let version = self.overlay.leaf_version;
        let mut entered = 0;
        self.overlay.warm(&leaf);
        for e in leaf {
            let was = self.overlay.leaf.contains(e.id);
            let before = self.overlay.leaf_version;
            self.learn(now, e);
            // Every change of the leaf set bumps its version: unchanged, no need to look.
            entered += usize::from(
                !was && self.overlay.leaf_version != before && self.overlay.leaf.contains(e.id),
            );
        }
        if entered >= self.cfg.leaf_set_size / 2 && entered > 0 {
            self.relocate(now, from);
        }
        if reply && self.visible() {
            // (A joiner that has not announced itself stays silent: nobody may route to it.)
            let leaf = self.leaf_infos();
            self.send(from, Message::LeafSet { leaf, reply: false });
        } else if self.overlay.leaf_version != version
            && self.overlay.leaf.is_partial()
            && self.is_ready()
        {
            // An answer to a repair taught us something but a side is still short (several
            // neighbours gone at once): keep asking the new farthest members. This stops as soon
            // as an answer teaches nothing (also in rings smaller than the leaf set).
            self.repair_leaf_set();
        }
        self.check_activation(now);
    }

    /// After losing a leaf-set member: ask the farthest member on each side for its leaf set.
    pub(crate) fn repair_leaf_set(&mut self) {
        let farthest = (
            self.overlay.leaf.left().last().copied(),
            self.overlay.leaf.right().last().copied(),
        );
        self.exchange_leaf_set(farthest);
    }

    /// After losing a routing-table entry of `row`: ask another node of that row (or, when the
    /// row is empty, a leaf-set member) for its row (lazy repair).
    pub(crate) fn repair_row(&mut self, row: usize) {
        let mut candidates: Vec<NodeId> = self.overlay.rt.row(row).collect();
        if candidates.is_empty() {
            candidates = self.overlay.leaf.members().collect();
        }
        if candidates.is_empty() {
            return;
        }
        let pick = candidates[self.rng.random_range(0..candidates.len())];
        if let (Some(info), Ok(row)) = (self.info_of(pick), u8::try_from(row)) {
            self.stats.row_requests += 1;
            self.send(info, Message::RowRequest { row });
        }
    }

    /// Periodic routing-table maintenance (as FreePastry's): for every row that has entries,
    /// one random entry is asked for that row; the entries that come back are candidates,
    /// measured before they take a slot. Rows near the top hold near nodes whose own rows
    /// hold nodes near them, so the table keeps converging towards the nearest nodes as nodes
    /// join nearby, and empty slots fill as the ring grows.
    pub(crate) fn on_row_maintenance(&mut self, now: Time) {
        if !self.is_ready() {
            return;
        }
        self.overlay.row_maintenance_at = now + self.cfg.routing_maintenance_interval;
        self.set_timer(self.overlay.row_maintenance_at, TimerKey::RowMaintenance);
        for r in 0..self.overlay.rt.depth() {
            let members: Vec<NodeId> = self.overlay.rt.row(r).collect();
            if members.is_empty() {
                continue;
            }
            let pick = members[self.rng.random_range(0..members.len())];
            if let (Some(info), Ok(row)) = (self.info_of(pick), u8::try_from(r)) {
                self.stats.row_requests += 1;
                self.send(info, Message::RowRequest { row });
            }
        }
    }

    /// Constrained gossip after a join: every entry of every row is asked for that row. Each
    /// learns this node first-hand (and measures it for its own table), and its answer holds
    /// nodes near it, so near this node too, which this node measures for its row.
    pub(crate) fn gossip_rows(&mut self) {
        for r in 0..self.overlay.rt.depth() {
            let row: Vec<NodeId> = self.overlay.rt.row(r).collect();
            let Ok(r) = u8::try_from(r) else {
                continue;
            };
            for id in row {
                if let Some(info) = self.info_of(id) {
                    self.stats.row_requests += 1;
                    self.send(info, Message::RowRequest { row: r });
                }
            }
        }
    }

    pub(crate) fn on_row_request(&mut self, from: NodeInfo, row: u8) {
        let ids: Vec<NodeId> = self.overlay.rt.row(usize::from(row)).collect();
        // Room for this node too, pushed last.
        let mut entries = Vec::with_capacity(ids.len() + 1);
        entries.extend(ids.into_iter().filter_map(|id| self.info_of(id)));
        entries.push(self.me);
        self.send(from, Message::RowReply { row, entries });
    }

    pub(crate) fn on_leave(&mut self, now: Time, from: NodeInfo, leaf: Vec<NodeInfo>) {
        self.declare_dead(now, from.id, true);
        self.overlay.warm(&leaf);
        for e in leaf {
            if e.id != from.id {
                self.learn(now, e);
            }
        }
    }

    /// Fails every request from another node that a local member holds unanswered, at its
    /// requester and at once, as a fault with the reason [`LEAVING_FAULT`], rather than at its
    /// timeout: the reply cannot come back once this node is gone. The requests are not moved
    /// to another member, which could run them a second time. (A local requester's request
    /// gets its timeout at once from [`Node::leave`] or from its driver.) [`Node::leave`] does
    /// this first; a driver that closes its connections before leaving (closing one abandons
    /// what its member holds) calls it before.
    pub fn fail_held_requests(&mut self, now: Time) {
        for (requester, id, group, conn, expired) in self.asks.take_remote_deliveries(self.me.id) {
            // The member is answered for (its in-flight count drops, as for a reply).
            self.groups.member_answered(group, conn, expired);
            if expired {
                continue;
            }
            self.stats.requests_failed_on_leave += 1;
            self.send_or_loop(
                now,
                requester,
                Message::Reply {
                    id,
                    result: petal_protocol::ReplyResult::Fault(LEAVING_FAULT.to_string()),
                },
            );
        }
        self.drain_loopback(now);
    }

    /// Leaves the ring gracefully: fails the requests its members hold
    /// ([`Node::fail_held_requests`]), tells every known peer (with the leaf set, for their
    /// repair), fails pending lookups, times out pending requests, closes tunnels with a reason,
    /// and stops. The node ignores all input afterwards.
    pub fn leave(&mut self, now: Time) {
        // First, so that a requester does not hear from this node after its leave.
        self.fail_held_requests(now);
        if self.overlay.phase == Phase::Ready {
            let leaf = self.leaf_infos();
            let peers: Vec<NodeInfo> = self.infos(self.overlay.peers.keys().copied());
            for p in peers {
                self.send(p, Message::Leave { leaf: leaf.clone() });
            }
        }
        let lookups = std::mem::take(&mut self.overlay.lookups);
        for (id, l) in lookups {
            self.emit(Event::LookupFailed {
                lookup: id,
                key: l.key,
            });
        }
        // Every pending request gets its outcome now, every tunnel its close with a reason.
        for id in self.asks.request_keys() {
            self.on_request_timeout(id);
        }
        for id in self.tunnels.ids() {
            self.fail_tunnel(now, id, "petal: the node is shutting down");
        }
        self.asks.forget_deliveries();
        self.groups.clear_loads();
        self.drain_loopback(now);
        self.overlay.phase = Phase::Left;
        self.reset_state();
    }
}
