//! Requests and tunnel opens to a cluster: routed to the cluster's root, then down its tree to
//! one member chosen by load, hop by hop with acknowledgements (a silent child is avoided and
//! another subtree chosen). The member's node answers the requester's node directly.
//!
//! ## Choice by load
//! At each tree node the options are the local members and the child subtrees, each with a
//! capacity (the sum of its members' capacities, reported up the tree with every graft) and an
//! in-flight count (exact for local members, as last reported for subtrees). Two options are
//! drawn at random with probability proportional to capacity and the one with the lower
//! in-flight/capacity ratio wins (power of two choices; a tie keeps the first draw). Shares are
//! thus proportional to capacity when load is light, and a busy subtree sheds load. A member
//! with `max_member_inflight` requests in flight is saturated and a member whose request
//! expired unanswered is stalled (it reports no capacity): either is chosen only when no
//! better option is left.
//!
//! ## Asks that arrive before their tree
//! An ask that reaches its cluster's root while the tree has no member (a fleet starting, a
//! root that just moved and whose tree has not re-grafted yet) waits there, parked, instead of
//! being dropped: for at most `ask_park_timeout` and never longer than its own timeout, at most
//! `max_parked_asks` per node. The first graft or local member of that cluster places the
//! parked asks; if the route moves on (another node now owns the key, or a suspected owner
//! answered again) they are routed on.
//!
//! ## Exactly one outcome
//! Only the requester's node decides a request's outcome: the first reply wins, its timer gives
//! a timeout, and anything later is dropped. The member's node expires its delivery at the same
//! timeout (late replies are dropped there too, and mark the member stalled). A member's node
//! delivers a copy of an ask (rerouted while the first was only late) at most once, by the
//! requester's id and its own (`Config::dedup_window`); a copy that reaches another member's
//! node is delivered there too, and its reply is dropped at the requester as a second one.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use petal_protocol::{Ask, AskKind, DescendMsg, Key, Message, NodeId, NodeInfo, ReplyResult};
use rand::Rng;

use crate::app::{AppError, ConnId, ConnIndex, Outcome};
use crate::budget::Owner;
use crate::node::{Event, Node, TimerKey};
use crate::overlay::HopMsg;
use crate::recent::Recent;
use crate::time::Time;

/// A request issued by a local connection, awaiting its outcome.
#[derive(Clone, Debug)]
struct PendingRequest {
    conn: ConnId,
    /// The connection's own id for it.
    app: u64,
    deadline: Time,
}

/// A request delivered to a local member, awaiting its reply.
#[derive(Clone, Debug)]
struct Delivery {
    conn: ConnId,
    group: Key,
    requester: NodeInfo,
    id: u64,
    deadline: Time,
    /// The deadline passed: the requester has timed out; kept (stalling its member) until the
    /// member answers or `stall_forget_after` passes.
    expired: bool,
}

/// The request/reply state of a node: requests issued by its connections (until their one
/// outcome), requests delivered to its members (until answered or expired) and asks parked at
/// this root. Private to this module; the rest of the node goes through the methods below.
#[derive(Debug)]
pub(crate) struct Asks {
    /// Requests issued here, by request id.
    requests: BTreeMap<u64, PendingRequest>,
    /// Each connection's pending requests: its own id -> the request id.
    by_conn: ConnIndex,
    /// Requests delivered to local members, by delivery id.
    deliveries: BTreeMap<u64, Delivery>,
    /// Asks waiting here, at their cluster's root, for a member.
    parked: ParkedAsks,
    /// Asks delivered to local members lately, by requester, the requester's id and whether a
    /// tunnel: a copy of one is not delivered again (see `Config::dedup_window`). Boxed on
    /// first use: most nodes of a large ring never deliver an ask.
    delivered: Option<Box<Recent<(NodeId, u64, bool)>>>,
}

impl Asks {
    /// Heap bytes of the request and delivery tables (not the payloads they hold).
    pub(crate) fn heap_bytes(&self) -> usize {
        crate::memory::btree_bytes(&self.requests)
            + crate::memory::btree_bytes(&self.deliveries)
            + self
                .delivered
                .as_ref()
                .map_or(0, |r| std::mem::size_of_val(&**r) + r.heap_bytes())
    }

    pub(crate) fn new() -> Self {
        Self {
            requests: BTreeMap::new(),
            by_conn: ConnIndex::default(),
            deliveries: BTreeMap::new(),
            parked: ParkedAsks::new(),
            delivered: None,
        }
    }

    /// Requests issued here and not yet decided.
    pub(crate) fn pending(&self) -> usize {
        self.requests.len()
    }

    /// Whether `conn` has a pending request with its id `app`, and how many it has.
    pub(crate) fn conn_requests(&self, conn: ConnId, app: u64) -> (bool, usize) {
        self.by_conn.lookup(conn, app)
    }

    /// `conn`'s pending requests, by its ids, ascending.
    pub(crate) fn request_ids(&self, conn: ConnId) -> Vec<u64> {
        self.by_conn.of(conn).map(|(app, _)| app).collect()
    }

    /// Ids of every pending request.
    pub(crate) fn request_keys(&self) -> Vec<u64> {
        self.requests.keys().copied().collect()
    }

    /// Groups with asks parked here.
    pub(crate) fn parked_groups(&self) -> Vec<Key> {
        self.parked.groups()
    }

    /// True when asks are parked here.
    pub(crate) fn any_parked(&self) -> bool {
        self.parked.len() > 0
    }

    /// Forgets every parked ask (this node's place in the ring is gone); returns how many,
    /// and what each held of the memory budget.
    pub(crate) fn unpark_all(&mut self) -> (usize, Vec<(Owner, u64)>) {
        let held = self.parked_costs();
        (self.parked.clear(), held)
    }

    /// What each parked ask holds of the memory budget, and who pays.
    pub(crate) fn parked_costs(&self) -> Vec<(Owner, u64)> {
        self.parked
            .by_group
            .values()
            .flatten()
            .map(|(_, owner, msg)| (*owner, msg.heap_bytes() as u64))
            .collect()
    }

    /// Forgets the requests of, and the deliveries to, a connection that closed: returns how
    /// many of each there were.
    pub(crate) fn forget_conn(&mut self, conn: ConnId) -> (usize, usize) {
        // Through the connection's index, not a scan of every request.
        let ids: Vec<u64> = self.by_conn.of(conn).map(|(_, id)| id).collect();
        for id in &ids {
            self.requests.remove(id);
        }
        self.by_conn.remove_conn(conn);
        let requests = ids.len();
        let before = self.deliveries.len();
        self.deliveries.retain(|_, d| d.conn != conn);
        (requests, before - self.deliveries.len())
    }

    /// Takes every delivery to a requester on another node than `me`: (requester, the
    /// requester's request id, group, member connection, expired). Deliveries for local
    /// requesters stay.
    pub(crate) fn take_remote_deliveries(
        &mut self,
        me: NodeId,
    ) -> Vec<(NodeInfo, u64, Key, ConnId, bool)> {
        let mut taken = Vec::new();
        self.deliveries.retain(|_, d| {
            let remote = d.requester.id != me;
            if remote {
                taken.push((d.requester, d.id, d.group, d.conn, d.expired));
            }
            !remote
        });
        taken
    }

    /// Forgets every delivery (the node is leaving).
    pub(crate) fn forget_deliveries(&mut self) {
        self.deliveries.clear();
    }

    /// Removes a decided request and its connection's index entry.
    fn take_request(&mut self, id: u64) -> Option<PendingRequest> {
        let r = self.requests.remove(&id)?;
        self.by_conn.remove(r.conn, r.app);
        Some(r)
    }

    /// True when the owner of timer `key` (one of this module's) still holds deadline `t`.
    pub(crate) fn timer_live(&self, key: TimerKey, t: Time) -> bool {
        match key {
            TimerKey::Request(id) => self.requests.get(&id).is_some_and(|r| r.deadline == t),
            TimerKey::Delivery(id) => self.deliveries.get(&id).is_some_and(|d| d.deadline == t),
            TimerKey::ParkedAsks => self.parked.timer_at == t,
            _ => false,
        }
    }

    /// Owners that may hold a deadline.
    pub(crate) fn timer_owners(&self) -> usize {
        self.requests.len() + self.deliveries.len() + 1
    }

    /// Every deadline that must stay armed (to re-arm them after the timers were dropped).
    pub(crate) fn deadlines(&self) -> Vec<(Time, TimerKey)> {
        self.requests
            .iter()
            .map(|(id, r)| (r.deadline, TimerKey::Request(*id)))
            .chain(
                self.deliveries
                    .iter()
                    .map(|(id, d)| (d.deadline, TimerKey::Delivery(*id))),
            )
            .collect()
    }

    /// Asserts this module's invariants: timers armed, bounds kept, the connection index
    /// exact, every request and delivery of a registered connection (`registered`).
    pub(crate) fn check_invariants(
        &self,
        cfg: &crate::Config,
        armed: &BTreeSet<(Time, TimerKey)>,
        registered: impl Fn(ConnId) -> bool,
    ) {
        assert!(
            self.delivered
                .as_ref()
                .is_none_or(|r| r.len() <= cfg.max_recent_asks),
            "delivered asks over bound"
        );
        for (id, r) in &self.requests {
            assert!(
                armed.contains(&(r.deadline, TimerKey::Request(*id))),
                "request timer lost"
            );
            assert!(registered(r.conn), "request of a gone connection");
            assert_eq!(
                self.by_conn.get(r.conn, r.app),
                Some(*id),
                "request missing from its connection's index"
            );
        }
        let indexed = self
            .by_conn
            .check(cfg.max_conn_requests as usize, |conn, app, id| {
                self.requests
                    .get(&id)
                    .is_some_and(|r| r.conn == conn && r.app == app)
            });
        assert_eq!(indexed, self.requests.len(), "pending requests miscounted");
        for (id, d) in &self.deliveries {
            assert!(
                armed.contains(&(d.deadline, TimerKey::Delivery(*id))),
                "delivery timer lost"
            );
        }
        assert!(
            self.requests.len() <= cfg.max_pending_requests,
            "requests over bound"
        );
        assert!(
            self.deliveries.len() <= cfg.max_deliveries,
            "deliveries over bound"
        );
        if self.parked.len() > 0 {
            assert!(
                armed.contains(&(self.parked.timer_at, TimerKey::ParkedAsks)),
                "parked-ask timer lost"
            );
        }
        assert!(
            self.parked.len() <= cfg.max_parked_asks,
            "parked asks over their bound"
        );
    }
}

/// Asks waiting at this node (the root of their cluster) for their tree to gain a member.
#[derive(Debug)]
struct ParkedAsks {
    /// By cluster key: each ask with the time it stops waiting and who pays for it.
    by_group: BTreeMap<Key, Vec<(Time, Owner, DescendMsg)>>,
    len: usize,
    /// The armed expiry timer (`Time::MAX`: none).
    timer_at: Time,
}

impl ParkedAsks {
    fn new() -> Self {
        Self {
            by_group: BTreeMap::new(),
            len: 0,
            timer_at: Time::MAX,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Forgets every parked ask; returns how many there were.
    fn clear(&mut self) -> usize {
        let n = self.len;
        self.by_group.clear();
        self.len = 0;
        self.timer_at = Time::MAX;
        n
    }

    /// The groups with parked asks.
    fn groups(&self) -> Vec<Key> {
        self.by_group.keys().copied().collect()
    }

    fn take(&mut self, key: Key) -> Vec<(Time, Owner, DescendMsg)> {
        let asks = self.by_group.remove(&key).unwrap_or_default();
        self.len -= asks.len();
        asks
    }

    fn earliest(&self) -> Option<Time> {
        self.by_group.values().flatten().map(|(t, _, _)| *t).min()
    }
}

/// Where a request goes next from this tree node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    Member(ConnId),
    Child(NodeId),
}

/// One candidate of a choice: who, capacity weight, load ratio, and preference class
/// (0 = has capacity, 1 = saturated, 2 = stalled).
pub(crate) type Option3 = (Choice, u64, f64, u8);

impl Node {
    /// Issues request `app` of `conn` to cluster `key`.
    pub(crate) fn start_request(
        &mut self,
        now: Time,
        conn: ConnId,
        app: u64,
        key: Key,
        payload: Bytes,
        timeout_ms: u32,
    ) -> Result<(), AppError> {
        if self.asks.requests.len() >= self.cfg.max_pending_requests {
            self.stats.request_drops += 1;
            return Err(AppError::Full("pending requests"));
        }
        // Its first hop holds it until acknowledged: refused now when it would not fit (a
        // budget shared with the driver can still refuse it there, by a later charge).
        let cost = std::mem::size_of::<petal_protocol::RouteMsg>() + payload.len();
        self.refuse_unless_fits(Owner::conn(conn), cost as u64)?;
        let id = self.nonce();
        let deadline = now + std::time::Duration::from_millis(u64::from(timeout_ms));
        self.asks.requests.insert(
            id,
            PendingRequest {
                conn,
                app,
                deadline,
            },
        );
        self.asks.by_conn.insert(conn, app, id);
        self.set_timer(deadline, TimerKey::Request(id));
        self.stats.requests_sent += 1;
        self.start_ask(
            now,
            key,
            Ask {
                id,
                timeout_ms,
                kind: AskKind::Request { payload },
            },
        );
        Ok(())
    }

    /// Routes an ask towards the root of cluster `key`.
    pub(crate) fn start_ask(&mut self, now: Time, key: Key, ask: Ask) {
        let msg = petal_protocol::RouteMsg {
            key,
            origin: self.me,
            hops: 0,
            hop_seq: 0,
            body: petal_protocol::Routed::Ask(ask),
        };
        self.forward(now, Box::new(msg), Vec::new());
    }

    pub(crate) fn on_request_timeout(&mut self, id: u64) {
        if let Some(r) = self.asks.take_request(id) {
            self.stats.requests_timed_out += 1;
            self.emit(Event::RequestDone {
                conn: r.conn,
                request: r.app,
                outcome: Outcome::Timeout,
            });
        }
    }

    pub(crate) fn on_reply(&mut self, id: u64, result: ReplyResult) {
        // Late, duplicate or unknown replies find nothing and are dropped.
        let Some(r) = self.asks.take_request(id) else {
            self.stats.replies_late += 1;
            return;
        };
        let outcome = match result {
            ReplyResult::Ok(b) => {
                self.stats.requests_answered += 1;
                Outcome::Reply(b)
            }
            ReplyResult::Fault(f) => {
                self.stats.requests_faulted += 1;
                Outcome::Fault(f)
            }
        };
        self.emit(Event::RequestDone {
            conn: r.conn,
            request: r.app,
            outcome,
        });
    }

    /// An ask reached the root of its cluster (this node owns the key): start the descent.
    pub(crate) fn root_ask(
        &mut self,
        now: Time,
        key: Key,
        requester: NodeInfo,
        hops: u8,
        ask: Ask,
    ) {
        let msg = DescendMsg {
            group: key,
            requester,
            hops,
            hop_seq: 0,
            ask,
        };
        self.descend(now, msg, Vec::new());
    }

    pub(crate) fn on_descend(&mut self, now: Time, from: NodeInfo, msg: DescendMsg) {
        self.send(
            from,
            Message::RouteAck {
                hop_seq: msg.hop_seq,
            },
        );
        self.descend(now, msg, vec![from.id]);
    }

    /// Takes the ask one step down the tree: to a local member, or to a child subtree.
    pub(crate) fn descend(&mut self, now: Time, msg: DescendMsg, avoid: Vec<NodeId>) {
        let fresh = avoid.is_empty();
        if let Some(msg) = self.try_descend(now, msg, avoid) {
            self.unplaced(now, msg, fresh);
        }
    }

    /// [`Self::descend`], returning the ask when this node has no option for it.
    fn try_descend(
        &mut self,
        now: Time,
        msg: DescendMsg,
        avoid: Vec<NodeId>,
    ) -> Option<DescendMsg> {
        if msg.hops >= self.cfg.max_hops {
            self.stats.asks_unplaced += 1;
            return None;
        }
        let Some(choice) = self.choose(msg.group, &avoid) else {
            return Some(msg);
        };
        match choice {
            Choice::Member(conn) => self.deliver_ask(now, conn, msg),
            Choice::Child(child) => {
                if self.hops_full() {
                    self.stats.asks_unplaced += 1;
                    return None;
                }
                let Some(addr) = self.groups.child_addr(msg.group, child) else {
                    return Some(msg);
                };
                let to = NodeInfo { id: child, addr };
                let hop_seq = self.nonce();
                let out = DescendMsg {
                    hops: msg.hops.saturating_add(1),
                    hop_seq,
                    ..msg.clone()
                };
                if !self.track_hop(now, hop_seq, HopMsg::Descend(Box::new(msg)), child, avoid) {
                    // Refused by the memory budget (counted there).
                    self.stats.asks_unplaced += 1;
                    return None;
                }
                self.stats.asks_forwarded += 1;
                self.send(to, Message::descend(out));
            }
        }
        None
    }

    /// No option here: a subtree that emptied (or left the tree) while its parent was sending
    /// it the ask. Unless this node owns the cluster's key, the ask goes back to the root
    /// (routed through the overlay) for another descent; the hop bound ends any loop. At the
    /// root, a `fresh` ask (not one whose chosen subtrees all failed) waits for a member.
    fn unplaced(&mut self, now: Time, msg: DescendMsg, fresh: bool) {
        let root = self.groups.is_root(msg.group) || self.next_hop(msg.group).is_none();
        if root && fresh {
            let owner = self.cause();
            self.park(now, msg, None, owner);
            return;
        }
        if root {
            self.stats.asks_unplaced += 1;
            return;
        }
        self.stats.asks_bounced += 1;
        self.route_ask(now, msg);
    }

    /// Routes an ask that left its tree back towards its cluster's root.
    fn route_ask(&mut self, now: Time, msg: DescendMsg) {
        let route = petal_protocol::RouteMsg {
            key: msg.group,
            origin: msg.requester,
            hops: msg.hops.saturating_add(1),
            hop_seq: 0,
            body: petal_protocol::Routed::Ask(msg.ask),
        };
        self.forward(now, Box::new(route), Vec::new());
    }

    /// Parks an ask at this root until its tree has a member, until `until` (default: the
    /// ask's timeout or `ask_park_timeout` from now, whichever is sooner).
    fn park(&mut self, now: Time, msg: DescendMsg, until: Option<Time>, owner: Owner) {
        if self.asks.parked.len() >= self.cfg.max_parked_asks {
            self.stats.asks_unplaced += 1;
            return;
        }
        let until_given = until;
        let until = until.unwrap_or_else(|| {
            let own = std::time::Duration::from_millis(u64::from(msg.ask.timeout_ms));
            now + own.min(self.cfg.ask_park_timeout)
        });
        if until <= now {
            self.stats.asks_unplaced += 1;
            return;
        }
        if !self.hold(owner, msg.heap_bytes() as u64) {
            // Refused by the memory budget or the sender's share (counted there).
            self.stats.asks_unplaced += 1;
            return;
        }
        if until_given.is_none() {
            // Counted once per ask and root: a re-park after a failed placement is the same wait.
            self.stats.asks_parked += 1;
        }
        self.asks
            .parked
            .by_group
            .entry(msg.group)
            .or_default()
            .push((until, owner, msg));
        self.asks.parked.len += 1;
        if until < self.asks.parked.timer_at {
            self.asks.parked.timer_at = until;
            self.set_timer(until, TimerKey::ParkedAsks);
        }
    }

    /// Group `key` may have gained a place for its parked asks (a graft, a local member), or
    /// its route moved: descends each one that can be placed, routes them on when another
    /// node owns the key now, and keeps the rest parked.
    pub(crate) fn place_parked(&mut self, now: Time, key: Key) {
        if !self.is_ready() {
            return;
        }
        let asks = self.asks.parked.take(key);
        if asks.is_empty() {
            return;
        }
        let moved = self.next_hop(key).is_some();
        for (until, owner, msg) in asks {
            self.unhold(owner, msg.heap_bytes() as u64);
            // Still the asker's to pay for, not the grafting node's.
            self.as_cause(owner, |n| {
                if moved {
                    n.route_ask(now, msg);
                } else if let Some(msg) = n.try_descend(now, msg, Vec::new()) {
                    n.park(now, msg, Some(until), owner);
                }
            });
        }
    }

    /// The earliest parked ask's time is up: drops every ask whose time is up.
    pub(crate) fn on_parked_timer(&mut self, now: Time) {
        self.asks.parked.timer_at = Time::MAX;
        let mut expired = 0;
        let mut freed = Vec::new();
        for asks in self.asks.parked.by_group.values_mut() {
            let before = asks.len();
            asks.retain(|(until, owner, msg)| {
                let keep = *until > now;
                if !keep {
                    freed.push((*owner, msg.heap_bytes() as u64));
                }
                keep
            });
            expired += before - asks.len();
        }
        for (owner, cost) in freed {
            self.unhold(owner, cost);
        }
        self.asks.parked.by_group.retain(|_, asks| !asks.is_empty());
        self.asks.parked.len -= expired;
        self.stats.asks_unplaced += expired as u64;
        if let Some(t) = self.asks.parked.earliest() {
            self.asks.parked.timer_at = t;
            self.set_timer(t, TimerKey::ParkedAsks);
        }
    }

    /// Chooses where an ask for group `key` goes from here (see the module docs), never to a
    /// node in `avoid`.
    pub(crate) fn choose(&mut self, key: Key, avoid: &[NodeId]) -> Option<Choice> {
        let suspected = |id: NodeId| self.is_suspected(id);
        let mut opts = self
            .groups
            .options(key, avoid, self.cfg.max_member_inflight, suspected)?;
        let best_class = opts.iter().map(|o| o.3).min()?;
        opts.retain(|o| o.3 == best_class);
        let a = self.pick_weighted(&opts);
        let b = self.pick_weighted(&opts);
        let (oa, ob) = (&opts[a], &opts[b]);
        Some(if ob.2 < oa.2 { ob.0 } else { oa.0 })
    }

    fn pick_weighted(&mut self, opts: &[Option3]) -> usize {
        let total: u64 = opts.iter().map(|o| o.1.max(1)).sum();
        let mut x = self.rng.random_range(0..total);
        for (i, o) in opts.iter().enumerate() {
            let w = o.1.max(1);
            if x < w {
                return i;
            }
            x -= w;
        }
        opts.len() - 1
    }

    /// Hands an ask to local member `conn`, unless a copy of it was delivered here lately.
    fn deliver_ask(&mut self, now: Time, conn: ConnId, msg: DescendMsg) {
        let (cap, window) = (self.cfg.max_recent_asks, self.cfg.dedup_window);
        let tunnel = matches!(msg.ask.kind, AskKind::Tunnel(_));
        let id = (msg.requester.id, msg.ask.id, tunnel);
        if self
            .asks
            .delivered
            .as_mut()
            .is_some_and(|r| r.contains(now, &id, window))
        {
            self.stats.asks_copies_dropped += 1;
            return;
        }
        match msg.ask.kind {
            AskKind::Request { payload } => {
                if self.asks.deliveries.len() >= self.cfg.max_deliveries {
                    self.stats.asks_unplaced += 1;
                    return;
                }
                if !self.groups.member_took(msg.group, conn) {
                    self.stats.asks_unplaced += 1;
                    return;
                }
                let delivery = self.nonce();
                let deadline =
                    now + std::time::Duration::from_millis(u64::from(msg.ask.timeout_ms));
                self.asks.deliveries.insert(
                    delivery,
                    Delivery {
                        conn,
                        group: msg.group,
                        requester: msg.requester,
                        id: msg.ask.id,
                        deadline,
                        expired: false,
                    },
                );
                self.set_timer(deadline, TimerKey::Delivery(delivery));
                self.asks
                    .delivered
                    .get_or_insert_default()
                    .insert(now, id, cap, window);
                self.stats.requests_delivered += 1;
                self.emit(Event::Request {
                    conn,
                    delivery,
                    payload,
                    timeout_ms: msg.ask.timeout_ms,
                    hops: msg.hops,
                });
            }
            AskKind::Tunnel(_) => {
                self.asks
                    .delivered
                    .get_or_insert_default()
                    .insert(now, id, cap, window);
                self.tunnel_incoming(now, conn, msg);
            }
            _ => self.stats.unknown_messages += 1,
        }
    }

    /// Local member `conn` answers delivery `delivery`.
    pub(crate) fn answer(
        &mut self,
        now: Time,
        conn: ConnId,
        delivery: u64,
        result: ReplyResult,
    ) -> Result<(), AppError> {
        if self
            .asks
            .deliveries
            .get(&delivery)
            .is_none_or(|d| d.conn != conn)
        {
            return Err(AppError::UnknownId);
        }
        let Some(d) = self.asks.deliveries.remove(&delivery) else {
            return Err(AppError::UnknownId);
        };
        self.groups.member_answered(d.group, d.conn, d.expired);
        if d.expired {
            self.stats.replies_late += 1;
            return Err(AppError::UnknownId);
        }
        self.stats.replies_sent += 1;
        self.send_or_loop(now, d.requester, Message::Reply { id: d.id, result });
        Ok(())
    }

    pub(crate) fn on_delivery_timer(&mut self, now: Time, delivery: u64) {
        let forget = self.cfg.stall_forget_after;
        let Some(d) = self.asks.deliveries.get_mut(&delivery) else {
            return;
        };
        let (group, conn) = (d.group, d.conn);
        if d.expired {
            // Never answered: forget it, and un-stall its member.
            self.asks.deliveries.remove(&delivery);
            self.groups.member_unstalled(group, conn);
            return;
        }
        d.expired = true;
        d.deadline = now + forget;
        let deadline = d.deadline;
        self.set_timer(deadline, TimerKey::Delivery(delivery));
        self.stats.deliveries_expired += 1;
        self.groups.member_stalled(group, conn);
    }

    /// A descent hop went unacknowledged: choose again, avoiding the silent child.
    pub(crate) fn retry_descend(
        &mut self,
        now: Time,
        msg: DescendMsg,
        mut avoid: Vec<NodeId>,
        to: NodeId,
    ) {
        avoid.push(to);
        if u32::try_from(avoid.len()).unwrap_or(u32::MAX) > self.cfg.max_reroutes + 1 {
            self.stats.asks_unplaced += 1;
            return;
        }
        self.stats.reroutes += 1;
        self.descend(now, msg, avoid);
    }
}
