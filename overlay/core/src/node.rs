//! The Pastry node: the parent of the sub-machines (see the crate docs' map of who owns what),
//! the drive API (`handle_*` in, `poll_*` out), message dispatch, and the outputs they share:
//! the timer heap, the outbox, the event queue and the loopback of messages to itself.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use petal_protocol::{Message, NodeId, NodeInfo, StoreResult};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::app::ConnId;
use crate::ask::Asks;
use crate::config::{Config, ConfigError};
use crate::group::Groups;
use crate::local::Locals;
use crate::memory::MemoryUse;
use crate::overlay::{Overlay, heard_of};
use crate::stats::Stats;
use crate::time::{Time, micros};
use crate::tunnel::Tunnels;

pub use crate::event::Event;

/// A message for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The destination node (a driver must not deliver it to another id at that address).
    pub to: NodeInfo,
    /// The message.
    pub msg: Message,
}

/// Frees a drained queue's buffer: a node's queues are empty between inputs, and 10^5 nodes in
/// one process would otherwise each hold the capacity of their largest burst (a join announces
/// to the whole leaf set at once: about 12 KB of transmits), or at least a few entries (a
/// transmit is 120 bytes). Allocating the buffer again on the next input costs less than the
/// cache misses of keeping it (measured: no slower at 10^4 nodes, 2 % less memory).
fn release_burst<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > QUEUE_KEEP {
        q.shrink_to(QUEUE_KEEP);
    }
}

/// Capacity a drained queue keeps (see `release_burst`).
const QUEUE_KEEP: usize = 0;

/// The earlier of two optional deadlines (`None`: none).
fn earlier(a: Option<Time>, b: Option<Time>) -> Option<Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// SplitMix64: a fixed mixing of `seed` into a well-spread 64-bit value.
pub(crate) fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a timer entry is for. Each owner stores its deadline so that it can be rescheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
///
/// Tracked peers' deadlines (next ping, ping timeout) are not here: the overlay keeps them with
/// its peers and [`Node::handle_timeout`] merges them in, before any heap entry of the same
/// time (they sort first, as `Peer` did when it was this enum's first variant).
pub(crate) enum TimerKey {
    /// A dead node's next re-probe or forget time.
    Dead(NodeId),
    /// Another introduction to a node that refused ours because it was still joining.
    Reintroduce(NodeId),
    /// A proximity or revival probe's timeout (by probed node).
    Probe(NodeId),
    /// A forwarded message's hop-ack timeout (by hop sequence number).
    Hop(u64),
    /// A lookup's timeout (by lookup id).
    Lookup(u64),
    /// The join's timeout.
    Join,
    /// The periodic leaf-set exchange.
    LeafExchange,
    /// The periodic heartbeat to the counter-clockwise neighbour.
    Heartbeat,
    /// The periodic routing-table row refresh.
    RowMaintenance,
    /// The periodic refresh of every group tree.
    GroupRefresh,
    /// A check, soon after the leaf set changed, of every group's route to its root.
    GroupRoutes,
    /// The earliest choice of a sibling by a child its parent dropped (bottleneck remover).
    GroupRedirects,
    /// A request's timeout at its requester (by request id).
    Request(u64),
    /// A delivered request's expiry at its member's node (by delivery id).
    Delivery(u64),
    /// The earliest expiry of the asks parked at this root.
    ParkedAsks,
    /// A tunnel's open or offer deadline (by tunnel id).
    Tunnel(u64),
    /// Tunnel keepalives and idle checks.
    TunnelTick,
    /// A store operation's timeout at its origin (by operation id).
    StoreOp(u64),
    /// A home's wait for its replicas (by coordination nonce).
    StoreCoord(u64),
    /// The store's periodic repair.
    StoreSync,
    /// An identity operation's deadline (by operation id).
    IdOp(u64),
    /// An identity send's next step: stop waiting for silent nodes, or read the registry
    /// again (by operation id).
    IdRetry(u64),
    /// The earliest renewal of an identity lease.
    IdLease,
}

/// One Pastry node as a sans-IO state machine. See the crate documentation for the drive
/// contract.
#[derive(Debug)]
pub struct Node {
    /// Shared, read-only: a process running many nodes (the simulator) keeps one copy.
    pub(crate) cfg: Arc<Config>,
    pub(crate) me: NodeInfo,
    pub(crate) rng: ChaCha8Rng,
    /// The Pastry overlay: leaf set, routing table, liveness, routes, join.
    pub(crate) overlay: Overlay,
    /// Deadlines by time. Entries are never removed early: an entry whose owner no longer
    /// holds that deadline is stale and skipped (see `timer_live`), which keeps rescheduling
    /// to one push. Compacted when stale entries pile up.
    timers: BinaryHeap<Reverse<(Time, TimerKey)>>,
    next_nonce: u64,
    /// Group trees (Scribe).
    pub(crate) groups: Groups,
    /// Local application connections.
    pub(crate) locals: Locals,
    /// Requests and their one outcome.
    pub(crate) asks: Asks,
    /// Tunnel ends.
    pub(crate) tunnels: Tunnels,
    /// Messages this node sent to itself (both ends of a request or tunnel here), handled in
    /// order at the end of the current input.
    loopback: Vec<Message>,
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
    pub(crate) stats: Stats,
    /// What the node holds of its memory budget, and who pays.
    pub(crate) held: crate::budget::Held,
    /// The replicated store's state, allocated on first use.
    pub(crate) store: Option<Box<crate::store::Store>>,
}

impl Node {
    /// A node with identity `me`, not yet started. `seed` feeds its random generator (ping
    /// phases, repair choices), so equal seeds give equal behaviour. The configuration is
    /// taken by value or shared (`Arc<Config>`: many nodes in one process keep one copy).
    pub fn new(me: NodeInfo, cfg: impl Into<Arc<Config>>, seed: u64) -> Result<Self, ConfigError> {
        let cfg = cfg.into();
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let grid = micros(cfg.timer_granularity).max(1);
        let tick_phase_us = rand::Rng::random_range(&mut rng, 0..grid);
        let mut overlay = Overlay::new(me.id, &cfg, splitmix(seed ^ 0x7274_742d_6b65_7973));
        overlay.tick_phase_us = u32::try_from(tick_phase_us).unwrap_or(u32::MAX);
        Ok(Self {
            overlay,
            cfg,
            me,
            rng,
            timers: BinaryHeap::new(),
            // Ids (requests, tunnels, nonces) start at a point drawn from the seed, so that a
            // node restarted with the same id does not reuse the ids of its past life (a late
            // reply must not match a new request).
            next_nonce: splitmix(seed) >> 2,
            groups: Groups::new(),
            locals: Locals::default(),
            asks: Asks::new(),
            tunnels: Tunnels::new(),
            loopback: Vec::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            held: crate::budget::Held::default(),
            store: None,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me.id
    }

    /// This node's id and address.
    pub fn info(&self) -> NodeInfo {
        self.me
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Drops all routing state and timers (after a failed join or a leave).
    pub(crate) fn reset_state(&mut self) {
        self.timers.clear();
        // Parked asks wait on this node's place in the ring, which is gone.
        let (unparked, held) = self.asks.unpark_all();
        self.stats.asks_unplaced += unparked as u64;
        for (owner, cost) in held {
            self.unhold(owner, cost);
        }
        // Application state outlives the overlay state: re-arm its timers, forget the trees.
        let mut armed = self.asks.deadlines();
        armed.extend(self.tunnels.rearm());
        for (t, k) in armed {
            self.timers.push(Reverse((t, k)));
        }
        let freed = self.groups.forget_trees();
        self.unhold(crate::budget::Owner::NODE, freed);
        self.reset_overlay();
    }

    /// Counters of what the node did.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Where this node's bytes are, by part (see [`MemoryUse`]).
    pub fn memory(&self) -> MemoryUse {
        let mut m = MemoryUse {
            node: std::mem::size_of::<Node>(),
            timers: self.timers.capacity() * std::mem::size_of::<Reverse<(Time, TimerKey)>>(),
            queues: self.held.heap_bytes()
                + crate::memory::vec_bytes(&self.loopback)
                + crate::memory::deque_bytes(&self.outbox)
                + crate::memory::deque_bytes(&self.events),
            messaging: self.groups.heap_bytes()
                + self.locals.heap_bytes()
                + self.asks.heap_bytes()
                + self.tunnels.heap_bytes()
                + self.store_heap_bytes(),
            ..MemoryUse::default()
        };
        self.overlay.memory(&mut m);
        m
    }

    /// `t` rounded up to this node's timer grid.
    pub(crate) fn quantize(&self, t: Time) -> Time {
        let g = micros(self.cfg.timer_granularity).max(1);
        let us = t.as_micros();
        if us == u64::MAX {
            return t;
        }
        let phase = u64::from(self.overlay.tick_phase_us);
        let shifted = us.saturating_sub(phase);
        Time::from_micros((shifted.div_ceil(g) * g).saturating_add(phase).max(us))
    }

    /// Founds a new ring: the node is ready at once, alone.
    pub fn start_first(&mut self, now: Time) {
        assert!(self.is_idle(), "start_first on a started node");
        self.become_ready(now);
    }

    /// Next transmit to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.outbox.pop_front();
        if t.is_none() {
            release_burst(&mut self.outbox);
        }
        t
    }

    /// Lends the node `buf`'s room for the outbox of its next input, when both are empty: a
    /// driver that drains every node after each input can keep one buffer for all of them,
    /// where each node would allocate one for an input and free it when drained (see
    /// `release_burst`). The driver takes it back with [`Node::reclaim_outbox`].
    pub fn lend_outbox(&mut self, buf: &mut VecDeque<Transmit>) {
        if self.outbox.is_empty() && buf.is_empty() {
            std::mem::swap(&mut self.outbox, buf);
        }
    }

    /// Moves every queued transmit, in order, to the end of `out` (what
    /// [`Node::poll_transmit`] would return, one after another) and frees the outbox's
    /// buffer; an empty `out` takes the queue's buffer with it (the one lent, if any).
    pub fn reclaim_outbox(&mut self, out: &mut VecDeque<Transmit>) {
        if out.is_empty() {
            std::mem::swap(&mut self.outbox, out);
        } else {
            out.extend(self.outbox.drain(..));
        }
        release_burst(&mut self.outbox);
    }

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() {
            release_burst(&mut self.events);
        }
        e
    }

    /// When [`Node::handle_timeout`] must be called next (`None`: no timer is armed).
    pub fn poll_timeout(&mut self) -> Option<Time> {
        self.compact_timers();
        let mut next = None;
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if self.timer_live(t, key) {
                next = Some(t);
                break;
            }
            self.timers.pop();
        }
        let peer = self.overlay.next_peer_due().map(|(t, _)| t);
        let probe = self.overlay.next_probe_time();
        earlier(earlier(next, peer), probe)
    }

    /// True when the owner of `key` still holds deadline `t`.
    fn timer_live(&self, t: Time, key: TimerKey) -> bool {
        match key {
            TimerKey::Dead(_)
            | TimerKey::Reintroduce(_)
            | TimerKey::Probe(_)
            | TimerKey::Hop(_)
            | TimerKey::Lookup(_)
            | TimerKey::Join
            | TimerKey::LeafExchange
            | TimerKey::Heartbeat
            | TimerKey::RowMaintenance => self.overlay.timer_live(key, t),
            TimerKey::GroupRefresh | TimerKey::GroupRoutes | TimerKey::GroupRedirects => {
                self.is_ready() && self.groups.timer_live(key, t)
            }
            TimerKey::Request(_) | TimerKey::Delivery(_) | TimerKey::ParkedAsks => {
                self.asks.timer_live(key, t)
            }
            TimerKey::Tunnel(_) | TimerKey::TunnelTick => self.tunnels.timer_live(key, t),
            TimerKey::StoreOp(_)
            | TimerKey::StoreCoord(_)
            | TimerKey::StoreSync
            | TimerKey::IdOp(_)
            | TimerKey::IdRetry(_)
            | TimerKey::IdLease => self.store_timer_live(key, t),
        }
    }

    /// Owners that may hold a deadline: the bound on live timer entries.
    fn timer_owners(&self) -> usize {
        self.overlay.timer_owners()
            + self.asks.timer_owners()
            + self.tunnels.timer_owners()
            + self.store_timer_owners()
            + 3
    }

    /// Fires every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        loop {
            // The next timer: the earlier of the heap's and the probes' (in `(time, key)`
            // order, as if the probes' were in the heap too); a peer's goes before either at
            // the same time.
            let heap = self.timers.peek().map(|&Reverse(e)| e);
            // (The probe's full key only when it may fire now: finding the smallest id among
            // equal deadlines is a scan.)
            let probe = match self.overlay.next_probe_time() {
                Some(p) if p <= now && heap.is_none_or(|(h, _)| p <= h) => {
                    self.overlay.next_probe_due()
                }
                _ => None,
            };
            let next = match (heap, probe) {
                (Some(h), Some(p)) => Some(h.min(p)),
                (h, p) => h.or(p),
            };
            if let Some((t, id)) = self.overlay.next_peer_due()
                && t <= now
                && next.is_none_or(|(h, _)| t <= h)
            {
                // Its entry is where the search for the earliest deadline found it (unless
                // entries moved since): spare its look-ups the search.
                self.recall_due_peer();
                self.on_peer_timer(now, id);
                if self.overlay.next_peer_due() == Some((t, id)) {
                    // Every path of `on_peer_timer` moves the deadline or untracks the peer; if
                    // one ever did not, this loop (and the driver's) would spin at `now`.
                    debug_assert!(false, "peer timer fired without moving");
                    self.overlay
                        .postpone_peer(id, self.quantize(now + self.cfg.heartbeat_interval));
                }
                continue;
            }
            let Some((t, key)) = next else {
                break;
            };
            if t > now {
                break;
            }
            if probe == next && heap != next {
                if let TimerKey::Probe(id) = key {
                    self.overlay.take_probe_deadline(t, id);
                }
            } else {
                self.timers.pop();
            }
            if !self.timer_live(t, key) {
                continue;
            }
            match key {
                TimerKey::Dead(id) => self.on_dead_timer(now, id),
                TimerKey::Reintroduce(id) => self.on_reintroduce(now, id),
                TimerKey::Probe(id) => self.on_probe_timeout(now, id),
                TimerKey::Hop(seq) => self.on_hop_timeout(now, seq),
                TimerKey::Lookup(id) => self.on_lookup_timeout(now, id),
                TimerKey::Join => self.on_join_timeout(now),
                TimerKey::LeafExchange => self.on_leaf_exchange(now),
                TimerKey::Heartbeat => self.on_heartbeat(now),
                TimerKey::RowMaintenance => self.on_row_maintenance(now),
                TimerKey::GroupRefresh => self.on_group_refresh(now),
                TimerKey::GroupRoutes => self.on_group_routes(now),
                TimerKey::GroupRedirects => self.on_group_redirects(now),
                TimerKey::Request(id) => self.on_request_timeout(id),
                TimerKey::Delivery(id) => self.on_delivery_timer(now, id),
                TimerKey::ParkedAsks => self.on_parked_timer(now),
                TimerKey::Tunnel(id) => self.on_tunnel_deadline(now, id),
                TimerKey::TunnelTick => self.on_tunnel_tick(now),
                TimerKey::StoreOp(id) => self.on_store_reply(now, id, StoreResult::TimedOut),
                TimerKey::StoreCoord(id) => self.on_store_coord_timeout(now, id),
                TimerKey::StoreSync => self.on_store_sync(now),
                TimerKey::IdOp(id) => self.on_id_timeout(now, id),
                TimerKey::IdRetry(id) => self.on_id_retry(now, id),
                TimerKey::IdLease => self.on_id_lease(now),
            }
        }
        self.drain_loopback(now);
        self.compact_timers();
    }

    /// A hint for a driver that knows its next inputs ahead (the simulator's event queue):
    /// starts loading, without waiting for it, the part of this node's own state that every
    /// input reads first (see [`Node::prefetch_message_from`] for the next step). Nothing
    /// changes: prefetch instructions, or nothing on targets without one.
    pub fn prefetch_state(&self) {
        self.overlay.prefetch_fields();
        prefetch_ref(&self.outbox);
        prefetch_ref(&self.timers);
        prefetch_ref(&self.stats);
        // The line of the counter that probes bump (the stats span ten lines).
        prefetch_ref(&self.stats.pings_sent);
        // Every message compares its sender with this node's own id first.
        prefetch_ref(&self.me);
    }

    /// A hint like [`Node::prefetch_state`]: starts loading what handling a message from
    /// `from` reads first (the tags by which the tracked peers are searched, `from`'s set in
    /// the round-trip cache, its routing-table slot, the leaf set's two ends and its slot in
    /// the probes' map) and the timer heap's earliest entry, which the driver's
    /// `poll_timeout` after it reads. Best called once `prefetch_state`'s loads have arrived.
    pub fn prefetch_message_from(&self, from: NodeId) {
        self.overlay.prefetch_from(from);
        if let Some(top) = self.timers.peek() {
            prefetch_ref(top);
        }
    }

    /// A hint like [`Node::prefetch_message_from`], for a timer event: starts loading the
    /// entry of the tracked peer whose ping timer is likely the one due.
    pub fn prefetch_timer(&self) {
        self.prefetch_due_peer();
        if let Some(top) = self.timers.peek() {
            prefetch_ref(top);
        }
    }

    /// Handles a message that arrived from `from`.
    pub fn handle_message(&mut self, now: Time, from: NodeInfo, msg: Message) {
        if self.has_left() || from.id == self.me.id {
            return;
        }
        // A join request relayed by its own joiner (its first hop): the joiner must not be used
        // for routing before it announces itself, and a node not in a ring refuses it.
        let joiner_hello = matches!(&msg, Message::Route(r)
            if r.origin.id == from.id && r.body == petal_protocol::Routed::Join);
        if self.is_idle() {
            if joiner_hello {
                self.stats.messages_received += 1;
                self.refuse_join(from);
            } else if let Message::Discover { nonce, want } = msg {
                self.stats.messages_received += 1;
                self.on_discover(from, nonce, want);
            }
            return;
        }
        self.stats.messages_received += 1;
        // Any message is evidence of life, except a joiner's first hop and those `heard_of`
        // names.
        let mut answered = false;
        if !joiner_hello && let Some(heard) = heard_of(&msg) {
            let tree = match &msg {
                Message::Graft { group, .. } | Message::Prune { group } => Some(*group),
                _ => None,
            };
            answered = self.heard_from(now, from, heard, tree);
        }
        // What this message makes the node hold is `from`'s to pay (its share of the budget).
        self.held.cause = crate::budget::Owner::peer(from.id);
        match msg {
            Message::Ping { nonce } if !answered => self.send(from, Message::Pong { nonce }),
            // (Answered by our probe of the pinger.)
            Message::Ping { .. } => {}
            Message::Pong { nonce } => self.on_pong(now, from, nonce),
            Message::PongPing { nonce, ping } => {
                self.on_pong(now, from, nonce);
                self.send(from, Message::Pong { nonce: ping });
            }
            Message::Route(r) => self.on_route(now, from, r),
            Message::RouteAck { hop_seq } => self.on_route_ack(from, hop_seq),
            Message::RouteAcks { hop_seqs } => {
                for hop_seq in hop_seqs {
                    self.on_route_ack(from, hop_seq);
                }
            }
            Message::JoinReply {
                entries,
                leaf,
                last,
            } => self.on_join_reply(now, from, entries, leaf, last),
            Message::JoinBusy { contacts } => self.on_join_busy(now, from, contacts),
            Message::Discover { nonce, want } => self.on_discover(from, nonce, want),
            // (`heard_from` took the heartbeat as evidence of life.)
            Message::Heartbeat => {}
            Message::Suspect { node } => self.on_suspect(now, node),
            Message::DiscoverReply {
                nonce,
                rows,
                entries,
            } => self.on_discover_reply(now, from, nonce, rows, entries),
            Message::Announce { reply } => self.on_announce(now, from, reply),
            Message::AnnounceAck { leaf } => self.on_announce_ack(now, from, leaf),
            Message::LeafSet { leaf, reply } => self.on_leaf_set(now, from, leaf, reply),
            Message::RowRequest { row } => self.on_row_request(from, row),
            Message::RowReply { entries, .. } => self.learn_all(now, entries),
            Message::Leave { leaf } => self.on_leave(now, from, leaf),
            Message::LookupReply {
                lookup,
                owner,
                hops,
            } if owner.id == from.id => self.on_lookup_reply(lookup, owner, hops),
            Message::LookupReply { .. } => self.stats.unknown_messages += 1,
            Message::Graft {
                group,
                load,
                seen,
                rejoin,
                height,
            } => self.on_graft(now, from, group, (load, height), seen, rejoin),
            Message::Prune { group } => self.on_prune(now, from, group),
            Message::Redirect { group, siblings } => self.on_redirect(now, from, group, siblings),
            Message::Cast(c) => self.on_cast(now, from, *c),
            Message::Descend(d) => self.on_descend(now, from, *d),
            other => self.handle_app_message(now, from, other),
        }
        self.drain_loopback(now);
        self.held.cause = crate::budget::Owner::NODE;
        self.compact_timers();
    }

    /// Messages between the two ends of a request or tunnel (from another node or from this
    /// node to itself).
    fn handle_app_message(&mut self, now: Time, from: NodeInfo, msg: Message) {
        match msg {
            Message::Reply { id, result } => self.on_reply(id, result),
            Message::TunnelAccept {
                tunnel,
                peer_tunnel,
                params,
            } => self.on_tunnel_accept(now, from, (tunnel, peer_tunnel), params),
            Message::TunnelData {
                tunnel,
                sender_tunnel,
                seq,
                size,
                payload,
            } => self.on_tunnel_data(now, from, (tunnel, sender_tunnel), seq, size, payload),
            Message::TunnelAllow {
                tunnel,
                sender_tunnel,
                consumed,
            } => self.on_tunnel_allow(now, from, (tunnel, sender_tunnel), consumed),
            Message::TunnelClose { tunnel, reason } => {
                self.on_tunnel_close(now, from, tunnel, reason)
            }
            Message::StoreReply { op, result } => self.on_store_reply(now, op, *result),
            other => self.handle_store_message(now, from, other),
        }
    }

    /// Messages between a key's home and its replicas.
    fn handle_store_message(&mut self, now: Time, from: NodeInfo, msg: Message) {
        match msg {
            Message::StoreWrite { nonce, entries } => {
                self.on_store_write(now, from, nonce, entries);
            }
            Message::StoreAck { nonce, stored } => self.on_store_ack(now, from, nonce, stored),
            Message::StoreRead { nonce, key } => self.on_store_read(now, from, nonce, key),
            Message::StoreValue { nonce, entry } => self.on_store_value(now, from, nonce, entry),
            Message::StoreSync { buckets } => self.on_store_digest(now, from, &buckets),
            Message::StoreKeys {
                buckets,
                keys,
                reply,
            } => self.on_store_keys(now, from, buckets, keys, reply),
            Message::IdDeliver {
                id,
                identity,
                payload,
            } => self.on_id_deliver(now, from, id, identity, payload),
            Message::IdAck { id, delivered } => self.on_id_ack(now, from, id, delivered),
            _ => self.stats.unknown_messages += 1,
        }
    }

    /// Sends `msg` to `to`, or, when `to` is this node, handles it at the end of the current
    /// input (in order with other such messages, never re-entrantly).
    pub(crate) fn send_or_loop(&mut self, _now: Time, to: NodeInfo, msg: Message) {
        if to.id == self.me.id {
            if self.loopback.len() >= self.cfg.max_outbox {
                self.stats.outbox_drops += 1;
                return;
            }
            self.loopback.push(msg);
        } else {
            self.send(to, msg);
        }
    }

    /// Handles the messages this node sent itself, then compacts the timers: every input
    /// ends here (an application's call that ends timer owners, such as a closed connection's
    /// deliveries, arms no timer of its own, so the heap must be compacted here too; found by
    /// the `core` fuzz target).
    #[inline]
    pub(crate) fn drain_loopback(&mut self, now: Time) {
        if !self.loopback.is_empty() {
            self.drain_loopback_now(now);
        }
        self.compact_timers();
    }

    /// [`Node::drain_loopback`]'s messages, out of line: most inputs send themselves none.
    #[inline(never)]
    fn drain_loopback_now(&mut self, now: Time) {
        // In order: what handling a batch sends to itself is the next batch. (A `Vec`, not a
        // deque: 8 bytes less in every node.)
        while !self.loopback.is_empty() {
            for msg in std::mem::take(&mut self.loopback) {
                let me = self.me;
                self.handle_app_message(now, me, msg);
            }
        }
    }

    /// Queues a message for the driver (bounded: beyond `max_outbox`, the send is dropped and
    /// counted).
    pub(crate) fn send(&mut self, to: NodeInfo, msg: Message) {
        if self.outbox.len() >= self.cfg.max_outbox {
            self.stats.outbox_drops += 1;
            return;
        }
        self.stats.messages_sent += 1;
        self.outbox.push_back(Transmit { to, msg });
    }

    /// Drops queued events for a connection that is gone.
    pub(crate) fn drop_events_of(&mut self, conn: ConnId) {
        self.events.retain(|e| e.conn() != Some(conn));
    }

    /// Queues an event for the driver (bounded like the outbox).
    ///
    /// Events that decide something for an application (a request's outcome, a delivered
    /// request, every tunnel event) are never dropped: their number is bounded by the request,
    /// delivery and tunnel tables and by the tunnels' windows; nor are a join's outcomes
    /// (`Joined`, `JoinFailed`: at most one per join), on which a driver acts (the daemon's
    /// serves as a ring of one after `JoinFailed`; a dropped one left it idle for good). Only
    /// the other overlay events and published or broadcast events (best effort) count against
    /// `max_events`.
    pub(crate) fn emit(&mut self, ev: Event) {
        let droppable = !matches!(ev, Event::Joined | Event::JoinFailed)
            && (matches!(
                ev,
                Event::Published { .. } | Event::Broadcast { .. } | Event::Delivered { .. }
            ) || ev.conn().is_none());
        if droppable && self.events.len() >= self.cfg.max_events {
            self.stats.event_drops += 1;
            return;
        }
        self.events.push_back(ev);
    }

    pub(crate) fn set_timer(&mut self, at: Time, key: TimerKey) {
        self.timers.push(Reverse((at, key)));
        self.compact_timers();
    }

    /// Drops stale timer entries once they outnumber the live owners (owners also vanish
    /// without a new timer: answered hops, lookups and probes). Runs at every
    /// [`Node::poll_timeout`], so the common case (nothing to do) is two comparisons.
    /// (The two comparisons inlined, the rest out of line: a call at each poll cost more
    /// than the comparisons.)
    #[inline(always)]
    fn compact_timers(&mut self) {
        let (len, capacity) = (self.timers.len(), self.timers.capacity());
        if len > 64 || capacity > 4 * len + 16 {
            self.compact_timers_now(len, capacity);
        }
    }

    /// [`Node::compact_timers`] once either bound may be passed.
    #[inline(never)]
    fn compact_timers_now(&mut self, len: usize, capacity: usize) {
        // The bound is at least 64 entries: below that, no need to count the owners.
        if len > 64 && len > self.timer_bound() {
            self.drop_stale_timers();
        } else if capacity > 4 * len + 16 {
            // A burst of timers (probes of many candidates) is over: give its room back (a
            // ready node holds two or three live entries; 32 bytes each).
            self.timers.shrink_to(2 * len + 4);
        }
    }

    /// Drops stale entries so that memory stays proportional to the live state (the collect
    /// reuses the old allocation: give back what the live entries do not need).
    #[cold]
    fn drop_stale_timers(&mut self) {
        let mut live: Vec<_> = std::mem::take(&mut self.timers)
            .into_iter()
            .filter(|&Reverse((t, k))| self.timer_live(t, k))
            .collect();
        live.shrink_to(2 * live.len());
        self.timers = live.into();
    }

    /// How many timer entries, live or stale, the heap may hold before it is compacted.
    fn timer_bound(&self) -> usize {
        4 * self.timer_owners() + 64
    }

    /// A fresh id for requests, tunnels and pings; never 0 (it starts below 2^62 and counts
    /// up by one).
    pub(crate) fn nonce(&mut self) -> u64 {
        self.next_nonce += 1;
        self.next_nonce
    }

    /// Asserts every internal invariant: leaf set and routing table structure, every member
    /// tracked, timers consistent with their owners, bounds respected.
    pub fn check_invariants(&self) {
        let armed: std::collections::BTreeSet<(Time, TimerKey)> =
            self.timers.iter().map(|r| r.0).collect();
        assert!(
            self.timers.len() <= self.timer_bound(),
            "stale timers pile up"
        );
        self.overlay.check_invariants(&self.cfg, &armed);
        assert!(
            self.outbox.len() <= self.cfg.max_outbox,
            "outbox over its bound"
        );
        assert!(self.loopback.is_empty(), "loopback left undrained");
        let registered = |c| self.locals.contains(c);
        self.asks.check_invariants(&self.cfg, &armed, registered);
        self.tunnels.check_invariants(&self.cfg, registered);
        self.check_group_invariants();
        self.check_local_invariants();
        self.check_budget_invariants();
        self.check_store_invariants();
    }
}

/// Prefetches the cache line that holds the start of `x` (a hint: nothing changes).
pub(crate) fn prefetch_ref<T>(x: &T) {
    prefetch_index::prefetch_index(std::slice::from_ref(x), 0);
}
