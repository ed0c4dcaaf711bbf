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
//! parked asks; if the route moves on (another node now owns the key) they are routed on.
//!
//! ## Exactly one outcome
//! Only the requester's node decides a request's outcome: the first reply wins, its timer gives
//! a timeout, and anything later is dropped. The member's node expires its delivery at the same
//! timeout (late replies are dropped there too, and mark the member stalled).

use std::collections::BTreeMap;

use bytes::Bytes;
use petal_protocol::{Ask, AskKind, DescendMsg, Key, Message, NodeId, NodeInfo, ReplyResult};
use rand::Rng;

use crate::app::{AppError, ConnId, GroupKind, Outcome};
use crate::node::{Event, Node, TimerKey};
use crate::routing::{HopMsg, PendingHop};
use crate::time::Time;

/// A request issued by a local connection, awaiting its outcome.
#[derive(Clone, Debug)]
pub(crate) struct PendingRequest {
    pub(crate) conn: ConnId,
    /// The connection's own id for it.
    pub(crate) app: u64,
    pub(crate) deadline: Time,
}

/// A request delivered to a local member, awaiting its reply.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub(crate) conn: ConnId,
    pub(crate) group: Key,
    pub(crate) requester: NodeInfo,
    pub(crate) id: u64,
    pub(crate) deadline: Time,
    /// The deadline passed: the requester has timed out; kept (stalling its member) until the
    /// member answers or `stall_forget_after` passes.
    pub(crate) expired: bool,
}

/// Asks waiting at this node (the root of their cluster) for their tree to gain a member.
#[derive(Debug)]
pub(crate) struct ParkedAsks {
    /// By cluster key: each ask with the time it stops waiting.
    by_group: BTreeMap<Key, Vec<(Time, DescendMsg)>>,
    len: usize,
    /// The armed expiry timer (`Time::MAX`: none).
    pub(crate) timer_at: Time,
}

impl ParkedAsks {
    pub(crate) fn new() -> Self {
        Self {
            by_group: BTreeMap::new(),
            len: 0,
            timer_at: Time::MAX,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Forgets every parked ask; returns how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.len;
        self.by_group.clear();
        self.len = 0;
        self.timer_at = Time::MAX;
        n
    }

    /// The groups with parked asks.
    pub(crate) fn groups(&self) -> Vec<Key> {
        self.by_group.keys().copied().collect()
    }

    fn take(&mut self, key: Key) -> Vec<(Time, DescendMsg)> {
        let asks = self.by_group.remove(&key).unwrap_or_default();
        self.len -= asks.len();
        asks
    }

    fn earliest(&self) -> Option<Time> {
        self.by_group.values().flatten().map(|(t, _)| *t).min()
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
type Option3 = (Choice, u64, f64, u8);

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
        if self.requests.len() >= self.cfg.max_pending_requests {
            self.stats.request_drops += 1;
            return Err(AppError::Full("pending requests"));
        }
        let id = self.nonce();
        let deadline = now + std::time::Duration::from_millis(u64::from(timeout_ms));
        self.requests.insert(
            id,
            PendingRequest {
                conn,
                app,
                deadline,
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.requests.insert(app, id);
        }
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

    fn request_done(&mut self, r: &PendingRequest) {
        if let Some(c) = self.conns.get_mut(&r.conn) {
            c.requests.remove(&r.app);
        }
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
        self.forward(now, msg, Vec::new());
    }

    pub(crate) fn on_request_timeout(&mut self, id: u64) {
        if let Some(r) = self.requests.remove(&id) {
            self.request_done(&r);
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
        let Some(r) = self.requests.remove(&id) else {
            self.stats.replies_late += 1;
            return;
        };
        self.request_done(&r);
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
                if self.hops.len() >= self.cfg.max_pending_hops {
                    self.stats.asks_unplaced += 1;
                    return None;
                }
                let Some(c) = self
                    .groups
                    .get(&msg.group)
                    .and_then(|g| g.children.get(&child))
                else {
                    return Some(msg);
                };
                let to = NodeInfo {
                    id: child,
                    addr: c.addr,
                };
                let hop_seq = self.nonce();
                let out = DescendMsg {
                    hops: msg.hops.saturating_add(1),
                    hop_seq,
                    ..msg.clone()
                };
                let deadline = now + self.hop_timeout(child);
                self.hops.insert(
                    hop_seq,
                    PendingHop {
                        msg: HopMsg::Descend(msg),
                        to: child,
                        avoid,
                        deadline,
                    },
                );
                self.set_timer(deadline, TimerKey::Hop(hop_seq));
                self.stats.asks_forwarded += 1;
                self.send(to, Message::Descend(out));
            }
        }
        None
    }

    /// No option here: a subtree that emptied (or left the tree) while its parent was sending
    /// it the ask. Unless this node owns the cluster's key, the ask goes back to the root
    /// (routed through the overlay) for another descent; the hop bound ends any loop. At the
    /// root, a `fresh` ask (not one whose chosen subtrees all failed) waits for a member.
    fn unplaced(&mut self, now: Time, msg: DescendMsg, fresh: bool) {
        let root = self.groups.get(&msg.group).is_some_and(|g| g.root)
            || self.next_hop(msg.group).is_none();
        if root && fresh {
            self.park(now, msg, None);
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
        self.forward(now, route, Vec::new());
    }

    /// Parks an ask at this root until its tree has a member, until `until` (default: the
    /// ask's timeout or `ask_park_timeout` from now, whichever is sooner).
    fn park(&mut self, now: Time, msg: DescendMsg, until: Option<Time>) {
        if self.parked.len() >= self.cfg.max_parked_asks {
            self.stats.asks_unplaced += 1;
            return;
        }
        let until = until.unwrap_or_else(|| {
            let own = std::time::Duration::from_millis(u64::from(msg.ask.timeout_ms));
            now + own.min(self.cfg.ask_park_timeout)
        });
        if until <= now {
            self.stats.asks_unplaced += 1;
            return;
        }
        self.stats.asks_parked += 1;
        self.parked
            .by_group
            .entry(msg.group)
            .or_default()
            .push((until, msg));
        self.parked.len += 1;
        if until < self.parked.timer_at {
            self.parked.timer_at = until;
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
        let asks = self.parked.take(key);
        if asks.is_empty() {
            return;
        }
        let moved = self.next_hop(key).is_some();
        for (until, msg) in asks {
            if moved {
                self.route_ask(now, msg);
            } else if let Some(msg) = self.try_descend(now, msg, Vec::new()) {
                self.park(now, msg, Some(until));
            }
        }
    }

    /// The earliest parked ask's time is up: drops every ask whose time is up.
    pub(crate) fn on_parked_timer(&mut self, now: Time) {
        self.parked.timer_at = Time::MAX;
        let mut expired = 0;
        for asks in self.parked.by_group.values_mut() {
            let before = asks.len();
            asks.retain(|(until, _)| *until > now);
            expired += before - asks.len();
        }
        self.parked.by_group.retain(|_, asks| !asks.is_empty());
        self.parked.len -= expired;
        self.stats.asks_unplaced += expired as u64;
        if let Some(t) = self.parked.earliest() {
            self.parked.timer_at = t;
            self.set_timer(t, TimerKey::ParkedAsks);
        }
    }

    /// Chooses where an ask for group `key` goes from here (see the module docs), never to a
    /// node in `avoid`.
    pub(crate) fn choose(&mut self, key: Key, avoid: &[NodeId]) -> Option<Choice> {
        let max_inflight = self.cfg.max_member_inflight;
        let g = self.groups.get(&key)?;
        let mut opts: Vec<Option3> = Vec::new();
        // Only a cluster's members take requests and tunnels: a topic's subscribers never do,
        // whatever a peer sends down that topic's tree.
        let members = g.members.iter().filter(|_| g.kind == GroupKind::Cluster);
        for (conn, m) in members {
            let class = if m.stalled > 0 {
                2
            } else if m.inflight >= max_inflight {
                1
            } else {
                0
            };
            let cap = u64::from(m.capacity.max(1));
            opts.push((
                Choice::Member(*conn),
                cap,
                f64::from(m.inflight) / cap as f64,
                class,
            ));
        }
        for (id, c) in &g.children {
            if avoid.contains(id) || c.load.members == 0 {
                continue;
            }
            let suspected = self.peers.get(id).is_some_and(|p| p.misses > 0);
            let cap = u64::from(c.load.capacity);
            // The load a child last reported (what it has in flight now, not what we sent it
            // since: that would make every subtree look busier than a local member, whose
            // count is exact, and skew the shares).
            let inflight = f64::from(c.load.inflight);
            let (class, weight) = if suspected || cap == 0 {
                (2, u64::from(c.load.members))
            } else if inflight >= (cap as f64) * f64::from(max_inflight) {
                (1, cap)
            } else {
                (0, cap)
            };
            opts.push((Choice::Child(*id), weight, inflight / weight as f64, class));
        }
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

    /// Hands an ask to local member `conn`.
    fn deliver_ask(&mut self, now: Time, conn: ConnId, msg: DescendMsg) {
        match msg.ask.kind {
            AskKind::Request { payload } => {
                if self.deliveries.len() >= self.cfg.max_deliveries {
                    self.stats.asks_unplaced += 1;
                    return;
                }
                let Some(m) = self
                    .groups
                    .get_mut(&msg.group)
                    .and_then(|g| g.members.get_mut(&conn))
                else {
                    self.stats.asks_unplaced += 1;
                    return;
                };
                m.inflight = m.inflight.saturating_add(1);
                let delivery = self.nonce();
                let deadline =
                    now + std::time::Duration::from_millis(u64::from(msg.ask.timeout_ms));
                self.deliveries.insert(
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
                self.stats.requests_delivered += 1;
                self.emit(Event::Request {
                    conn,
                    delivery,
                    payload,
                    timeout_ms: msg.ask.timeout_ms,
                    hops: msg.hops,
                });
            }
            AskKind::Tunnel => self.tunnel_incoming(now, conn, msg),
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
            .deliveries
            .get(&delivery)
            .is_none_or(|d| d.conn != conn)
        {
            return Err(AppError::UnknownId);
        }
        let Some(d) = self.deliveries.remove(&delivery) else {
            return Err(AppError::UnknownId);
        };
        if let Some(m) = self
            .groups
            .get_mut(&d.group)
            .and_then(|g| g.members.get_mut(&d.conn))
        {
            if d.expired {
                m.stalled = m.stalled.saturating_sub(1);
            } else {
                m.inflight = m.inflight.saturating_sub(1);
            }
        }
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
        let Some(d) = self.deliveries.get_mut(&delivery) else {
            return;
        };
        let (group, conn) = (d.group, d.conn);
        if d.expired {
            // Never answered: forget it, and un-stall its member.
            self.deliveries.remove(&delivery);
            if let Some(m) = self
                .groups
                .get_mut(&group)
                .and_then(|g| g.members.get_mut(&conn))
            {
                m.stalled = m.stalled.saturating_sub(1);
            }
            return;
        }
        d.expired = true;
        d.deadline = now + forget;
        let deadline = d.deadline;
        self.set_timer(deadline, TimerKey::Delivery(delivery));
        self.stats.deliveries_expired += 1;
        if let Some(m) = self
            .groups
            .get_mut(&group)
            .and_then(|g| g.members.get_mut(&conn))
        {
            m.inflight = m.inflight.saturating_sub(1);
            m.stalled = m.stalled.saturating_add(1);
        }
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
        if avoid.len() as u32 > self.cfg.max_reroutes + 1 {
            self.stats.asks_unplaced += 1;
            return;
        }
        self.stats.reroutes += 1;
        self.descend(now, msg, avoid);
    }
}
