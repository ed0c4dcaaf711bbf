//! Routing: the next-hop choice (leaf set, then prefix, then the rare case), hop-by-hop
//! acknowledgements with rerouting around silent hops, delivery, and lookups.

use std::time::Duration;

use petal_protocol::id::DIGITS;
use petal_protocol::{EventId, Key, Message, NodeId, NodeInfo, RouteMsg, Routed};

use super::Phase;
use crate::budget::Owner;
use crate::node::{Event, Node, TimerKey};
use crate::time::Time;

/// What a pending hop carries: a routed message, or an ask descending a cluster tree (boxed,
/// as in [`Message`]: a pending hop is 64 bytes, not 176).
#[derive(Clone, Debug)]
pub(crate) enum HopMsg {
    Route(Box<RouteMsg>),
    Descend(Box<petal_protocol::DescendMsg>),
}

/// A message forwarded to `to`, kept until `to` acknowledges it.
#[derive(Clone, Debug)]
pub(crate) struct PendingHop {
    pub(crate) msg: HopMsg,
    pub(crate) to: NodeId,
    /// Next hops that already failed this message.
    pub(crate) avoid: Vec<NodeId>,
    pub(crate) deadline: Time,
    /// Who the bytes it holds are charged to (see `crate::budget`).
    pub(crate) owner: Owner,
}

impl HopMsg {
    /// The bytes it holds against the memory budget.
    pub(crate) fn cost(&self) -> u64 {
        match self {
            HopMsg::Route(m) => m.heap_bytes() as u64,
            HopMsg::Descend(m) => m.heap_bytes() as u64,
        }
    }
}

/// A lookup started here.
#[derive(Clone, Debug)]
pub(crate) struct PendingLookup {
    pub(crate) key: Key,
    pub(crate) attempts: u32,
    pub(crate) deadline: Time,
}

impl Node {
    /// True when `id` may be used as a next hop: tracked, not suspected, not to be avoided.
    fn usable(&self, id: NodeId, avoid: &[NodeId], exclude: Option<NodeId>) -> bool {
        Some(id) != exclude
            && !avoid.contains(&id)
            && self.overlay.peers.get(&id).is_some_and(|p| p.misses == 0)
    }

    /// The next hop for `key`, or `None` when this node is the destination.
    pub fn next_hop(&self, key: Key) -> Option<NodeId> {
        self.next_hop_avoiding(key, &[], None)
    }

    /// The next hop for `key` that is not in `avoid` and is not `exclude` (a joiner never
    /// routes its own join: neighbours may know it before it is ready).
    fn next_hop_avoiding(
        &self,
        key: Key,
        avoid: &[NodeId],
        exclude: Option<NodeId>,
    ) -> Option<NodeId> {
        let me = self.me.id;
        // 1. Within the leaf set's range: straight to the numerically closest.
        if self.overlay.leaf.covers(key) {
            let best = self
                .overlay
                .leaf
                .closest(key, |id| !self.usable(id, avoid, exclude));
            return (best != me).then_some(best);
        }
        // 2. The routing-table entry sharing one more digit.
        if let Some(next) = self.overlay.rt.next_for(key) {
            if self.usable(next, avoid, exclude) {
                return Some(next);
            }
        }
        // 3. The rare case: any known node with at least as long a prefix, numerically closer.
        let l = me.shared_prefix_len(key);
        let mut best = me;
        for id in self.overlay.leaf.members().chain(self.overlay.rt.entries()) {
            if id.shared_prefix_len(key) >= l
                && id.closer_than(best, key)
                && self.usable(id, avoid, exclude)
            {
                best = id;
            }
        }
        (best != me).then_some(best)
    }

    pub(crate) fn on_route(&mut self, now: Time, from: NodeInfo, msg: Box<RouteMsg>) {
        if !self.is_ready() && msg.body == Routed::Join && msg.origin.id == from.id {
            // A joiner chose this node as its contact, but it is not in a ring yet.
            self.refuse_join(from);
            return;
        }
        self.send(
            from,
            Message::RouteAck {
                hop_seq: msg.hop_seq,
            },
        );
        self.forward(now, msg, Vec::new());
    }

    /// Forwards `msg` one hop, or delivers it here.
    pub(crate) fn forward(&mut self, now: Time, msg: Box<RouteMsg>, avoid: Vec<NodeId>) {
        if msg.hops >= self.cfg.max_hops {
            self.stats.routes_dropped += 1;
            return;
        }
        if msg.body == Routed::Join && msg.origin.id == self.me.id {
            // Our own join came back to us: some node already knows us; ignore it (the join
            // continues from the replies under way, or is retried).
            return;
        }
        if msg.origin.id == self.me.id {
            if let Phase::Joining(j) = &mut self.overlay.phase {
                if !j.announced {
                    // A joiner stays unknown until it announces itself: any message it sent
                    // now would put it in the next hop's tables, which would then route other
                    // joins to it before it can answer them (two such joiners held each
                    // other's joins for ever in a fleet start). Its applications' messages
                    // wait with the ones routed to it and go out once it is ready.
                    if j.buffered.len() < self.cfg.max_join_buffer {
                        self.stats.routes_held += 1;
                        j.buffered.push(*msg);
                    } else {
                        self.stats.routes_dropped += 1;
                    }
                    return;
                }
            }
        }
        let exclude = (msg.body == Routed::Join).then_some(msg.origin.id);
        let Some(next) = self.next_hop_avoiding(msg.key, &avoid, exclude) else {
            self.deliver(now, msg);
            return;
        };
        let Some(to) = self.info_of(next) else {
            self.stats.routes_dropped += 1;
            return;
        };
        if msg.body == Routed::Join && avoid.is_empty() {
            // A node on the join path hands the joiner its rows.
            self.send_join_state(&msg, false);
        }
        let hop_seq = self.nonce();
        let out = Box::new(RouteMsg {
            hops: msg.hops.saturating_add(1),
            hop_seq,
            ..(*msg).clone()
        });
        if self.hops_full() || !self.track_hop(now, hop_seq, HopMsg::Route(msg), next, avoid) {
            // No room to track the hop (the table or the memory budget): drop (counted)
            // rather than forward unprotected.
            self.stats.routes_dropped += 1;
            return;
        }
        self.stats.routes_forwarded += 1;
        self.send(to, Message::Route(out));
    }

    /// True when no more forwarded messages can be tracked (`max_pending_hops`).
    pub(crate) fn hops_full(&self) -> bool {
        self.overlay.hops.len() >= self.cfg.max_pending_hops
    }

    /// Tracks message `msg`, sent as hop `hop_seq` to `to`, until `to` acknowledges it; on
    /// its timeout it is rerouted avoiding `to` (and the hops in `avoid`). False (the message
    /// dropped) when the memory budget refuses what it holds: the caller must not send it.
    #[must_use]
    pub(crate) fn track_hop(
        &mut self,
        now: Time,
        hop_seq: u64,
        msg: HopMsg,
        to: NodeId,
        avoid: Vec<NodeId>,
    ) -> bool {
        let owner = self.cause();
        if !self.hold(owner, msg.cost()) {
            return false;
        }
        let deadline = now + self.hop_timeout(to);
        self.overlay.hops.insert(
            hop_seq,
            Box::new(PendingHop {
                msg,
                to,
                avoid,
                deadline,
                owner,
            }),
        );
        self.set_timer(deadline, TimerKey::Hop(hop_seq));
        true
    }

    /// Takes pending hop `hop_seq` out, giving back what it held.
    pub(crate) fn take_hop(&mut self, hop_seq: u64) -> Option<PendingHop> {
        let h = self.overlay.remove_hop(hop_seq)?;
        self.unhold(h.owner, h.msg.cost());
        Some(h)
    }

    /// Forwarded messages waiting for their next hop's acknowledgement (bounded by
    /// `max_pending_hops`; a driver can push back on its applications as it fills).
    pub fn pending_hops(&self) -> usize {
        self.overlay.hops.len()
    }

    pub(crate) fn hop_timeout(&self, next: NodeId) -> Duration {
        match self.rtt_us(next) {
            Some(rtt) => {
                (Duration::from_micros(u64::from(rtt)) * 3).max(self.cfg.hop_ack_timeout_min)
            }
            None => self.cfg.hop_ack_timeout,
        }
    }

    pub(crate) fn on_route_ack(&mut self, from: NodeInfo, hop_seq: u64) {
        if self
            .overlay
            .hops
            .get(&hop_seq)
            .is_some_and(|h| h.to == from.id)
        {
            self.take_hop(hop_seq);
        }
    }

    pub(crate) fn on_hop_timeout(&mut self, now: Time, hop_seq: u64) {
        let Some(h) = self.take_hop(hop_seq) else {
            return;
        };
        self.stats.hop_timeouts += 1;
        // The silent hop is suspected: probe it now rather than at its next scheduled ping.
        if let Some(p) = self.overlay.peers.get_mut(&h.to) {
            if p.misses == 0 {
                p.misses = 1;
            }
            if !p.ping.is_out() {
                self.send_ping(now, h.to);
            }
        }
        self.retry_hop(now, h);
    }

    /// Sends a message whose hop failed another way, still charged to whoever it was charged
    /// to before (not to the input that found the failure).
    fn retry_hop(&mut self, now: Time, h: PendingHop) {
        let PendingHop {
            msg,
            to,
            mut avoid,
            owner,
            ..
        } = h;
        let msg = match msg {
            HopMsg::Route(m) => m,
            HopMsg::Descend(m) => {
                return self.as_cause(owner, |n| n.retry_descend(now, *m, avoid, to));
            }
        };
        avoid.push(to);
        if u32::try_from(avoid.len()).unwrap_or(u32::MAX) > self.cfg.max_reroutes {
            self.stats.routes_dropped += 1;
            return;
        }
        self.stats.reroutes += 1;
        self.as_cause(owner, |n| n.forward(now, msg, avoid));
    }

    /// Reroutes at once every message waiting for an ack from `dead`.
    pub(crate) fn reroute_hops_to(&mut self, now: Time, dead: NodeId) {
        let seqs: Vec<u64> = self
            .overlay
            .hops
            .iter()
            .filter(|(_, h)| h.to == dead)
            .map(|(s, _)| *s)
            .collect();
        for seq in seqs {
            if let Some(h) = self.take_hop(seq) {
                self.retry_hop(now, h);
            }
        }
    }

    fn deliver(&mut self, now: Time, msg: Box<RouteMsg>) {
        if msg.body == Routed::Join
            && matches!(&self.overlay.phase, Phase::Joining(_))
            && !self.overlay.leaf.is_empty()
        {
            // Another joiner's closest node is this one, which has a leaf set: answer now
            // rather than when ready, so that no joiner waits on another joiner's activation
            // (which may wait on acknowledgements for long in a fleet that starts at once).
            // Only a node that announced itself is normally routed to, but one whose join
            // started over after that is still in other nodes' tables: were it to wait, two
            // such joiners would hold each other's joins for ever. The join is also held and
            // routed on once this node is ready, so that the joiner, if still joining, then
            // learns the settled leaf set too.
            self.send_join_state(&msg, true);
        }
        if let Phase::Joining(j) = &mut self.overlay.phase {
            // Not serving keys yet: hold the message until the join completes.
            if j.buffered.len() < self.cfg.max_join_buffer {
                j.buffered.push(*msg);
            } else {
                self.stats.routes_dropped += 1;
            }
            return;
        }
        self.stats.routes_delivered += 1;
        let msg = *msg;
        match msg.body {
            Routed::Join => self.send_join_state(&msg, true),
            Routed::Lookup { lookup } => {
                self.emit(Event::Delivered {
                    key: msg.key,
                    origin: msg.origin,
                    hops: msg.hops,
                    lookup,
                });
                let reply = Message::LookupReply {
                    lookup,
                    owner: self.me,
                    hops: msg.hops,
                };
                if msg.origin.id == self.me.id {
                    self.on_lookup_reply(lookup, self.me, msg.hops);
                } else {
                    self.send(msg.origin, reply);
                }
            }
            Routed::Publish { nonce, payload } => {
                let event = EventId {
                    origin: msg.origin.id,
                    nonce,
                };
                self.root_publish(now, msg.key, event, payload);
            }
            Routed::Ask(ask) => self.root_ask(now, msg.key, msg.origin, msg.hops, ask),
            Routed::Store(op) => self.home_store_op(now, msg.key, msg.origin, *op),
            _ => self.stats.unknown_messages += 1,
        }
    }

    /// Replies to a joiner with the rows it can use (and, from the last node, the leaf set).
    fn send_join_state(&mut self, msg: &RouteMsg, last: bool) {
        let joiner = msg.origin;
        if joiner.id == self.me.id {
            return;
        }
        let rows = self
            .me
            .id
            .shared_prefix_len(joiner.id.as_key())
            .min(DIGITS - 1);
        // As in Pastry, the node at hop `h` contributes row `h`, which it shares with the joiner
        // and which is close to it in the network (each hop is near the previous one); rows up to
        // the shared prefix add candidates that proximity probes then rank.
        let first = usize::from(msg.hops).min(rows);
        let entries = self.infos(
            (first..=rows)
                .flat_map(|r| self.overlay.rt.row(r))
                .collect::<Vec<_>>()
                .into_iter(),
        );
        let leaf = if last { self.leaf_infos() } else { Vec::new() };
        self.send(
            joiner,
            Message::JoinReply {
                entries,
                leaf,
                last,
            },
        );
    }

    /// Starts a lookup of `key`; its outcome comes as [`Event::LookupDone`] or
    /// [`Event::LookupFailed`]. Returns `None` when the node is not ready or has too many
    /// lookups outstanding.
    pub fn lookup(&mut self, now: Time, key: Key) -> Option<u64> {
        if !self.is_ready() || self.overlay.lookups.len() >= self.cfg.max_pending_lookups {
            return None;
        }
        let id = self.nonce();
        let deadline = now + self.cfg.lookup_timeout;
        self.overlay.lookups.insert(
            id,
            PendingLookup {
                key,
                attempts: 1,
                deadline,
            },
        );
        self.set_timer(deadline, TimerKey::Lookup(id));
        self.start_route(now, key, Routed::Lookup { lookup: id });
        Some(id)
    }

    fn start_route(&mut self, now: Time, key: Key, body: Routed) {
        let msg = RouteMsg {
            key,
            origin: self.me,
            hops: 0,
            hop_seq: 0,
            body,
        };
        self.forward(now, Box::new(msg), Vec::new());
    }

    pub(crate) fn on_lookup_timeout(&mut self, now: Time, id: u64) {
        let Some(l) = self.overlay.lookups.get_mut(&id) else {
            return;
        };
        if l.attempts >= self.cfg.lookup_attempts {
            let key = l.key;
            self.overlay.remove_lookup(id);
            self.emit(Event::LookupFailed { lookup: id, key });
            return;
        }
        l.attempts += 1;
        l.deadline = now + self.cfg.lookup_timeout;
        let (key, deadline) = (l.key, l.deadline);
        self.set_timer(deadline, TimerKey::Lookup(id));
        self.stats.lookup_retries += 1;
        self.start_route(now, key, Routed::Lookup { lookup: id });
    }

    pub(crate) fn on_lookup_reply(&mut self, lookup: u64, owner: NodeInfo, hops: u8) {
        // A late or duplicate reply finds no pending lookup and is dropped.
        let Some(l) = self.overlay.remove_lookup(lookup) else {
            return;
        };
        self.emit(Event::LookupDone {
            lookup,
            key: l.key,
            owner,
            hops,
            attempts: l.attempts,
        });
    }
}
