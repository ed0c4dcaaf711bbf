//! Group trees (Scribe-style) for topics and clusters: membership of local connections,
//! grafting and pruning, periodic refresh and repair, and events cast down the tree.
//!
//! A group's root is the node that owns the group's key. Every node in the tree keeps as parent
//! its next hop towards the key (`next_hop`), so the tree is the union of the overlay routes
//! from its members to the root, and it follows the overlay as it changes: each refresh
//! re-reads the next hop and moves the node to its new parent when the route moved (a node
//! that joined closer to the key, a dead parent). A child grafts itself on its parent every
//! `group_refresh_interval` with its subtree's load and the last event it has seen; a parent
//! forgets a child that stayed silent for `group_child_timeout`.
//!
//! Events are published by routing them to the root, which numbers them ([`EventSeq`]: an epoch
//! chosen when the node became root and a counter) and casts them down. A node takes events in
//! order only: one it has seen is dropped (no duplicate deliveries, no loops), and a gap makes
//! it ask its parent to replay from a small per-group buffer (a graft carrying what it has
//! seen), once; the events after the gap are held meanwhile (a link that reorders delivers the
//! missing ones soon) and taken in order once it fills, or after `event_gap_wait` without it.
//! A node that grafts onto a new parent is replayed what it missed the same way.
//!
//! Order by sequence drops copies within one numbering. Copies of one publish can also be
//! numbered twice: a hop that timed out while its message was only late is rerouted, and both
//! copies reach a root (the same one, or two when a partition made two). Each publish carries
//! an identity ([`EventId`]: its publisher and a nonce) that its casts keep: a root does not
//! number an identity it numbered lately, and a node does not deliver one it delivered lately
//! (see `recent`); it still casts the copy on, so that its children's sequences have no gap.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use petal_protocol::{CastMsg, EventId, EventSeq, Key, Load, Message, NodeId, NodeInfo};
use rand::Rng;

use crate::app::{AppError, ConnId, GroupKind, Name};
use crate::ask::{Choice, Option3};
use crate::budget::Owner;
use crate::id_map::IdMap;
use crate::local::GroupView;
use crate::node::{Node, TimerKey};
use crate::recent::Recent;
use crate::time::{Time, micros};

mod cast;
mod graft;
mod info;
mod remover;

pub use info::GroupInfo;

/// A local member of a group: a cluster member or a topic subscriber.
#[derive(Clone, Debug, Default)]
struct Member {
    /// Relative request capacity (clusters; 0 for topics).
    capacity: u32,
    /// Requests delivered and not answered.
    inflight: u32,
    /// Requests that expired unanswered and are still remembered: while non-zero the member
    /// is stalled and gets new requests only when no other member can take them.
    stalled: u32,
}

/// A child in a group tree, as last reported by itself.
#[derive(Clone, Debug)]
struct Child {
    addr: std::net::SocketAddr,
    load: Load,
    /// Height of its subtree as it last reported it.
    height: u8,
    heard: Time,
    /// The last event it had taken when it last grafted (what a revived child is replayed
    /// from, see `Node::groups_on_peer_revived`).
    seen: EventSeq,
}

/// The child entries a node dropped when it declared their node dead, by group: put back if
/// that node turns out alive (see `Node::groups_on_peer_revived`).
#[derive(Clone, Debug)]
pub(crate) struct DroppedChildren(Vec<(Key, Child)>);

impl DroppedChildren {
    /// The entries, by group.
    fn entries(&self) -> impl Iterator<Item = &(Key, Child)> {
        self.0.iter()
    }

    /// Heap bytes, its box included.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.0.capacity() * std::mem::size_of::<(Key, Child)>()
    }
}

/// This node's part of one group tree.
#[derive(Clone, Debug)]
struct Group {
    kind: GroupKind,
    /// The name, known when a local connection is a member.
    name: Option<Name>,
    parent: Option<NodeInfo>,
    root: bool,
    children: BTreeMap<NodeId, Child>,
    members: BTreeMap<ConnId, Member>,
    /// The last event taken (delivered and cast on).
    seen: EventSeq,
    /// The `seen.seq` at which a replay was already asked for (one ask per gap).
    gap_asked: Option<u64>,
    /// Events from the parent past a gap in `seen`'s epoch, by sequence, with their sender:
    /// taken in order as the gap fills (at most `group_replay_events`).
    ahead: BTreeMap<u64, (NodeId, CastMsg)>,
    /// Since when the current gap has been open (set while `ahead` holds events).
    ahead_since: Option<Time>,
    /// Recent events with the time this node took them, oldest first, for replays to
    /// children (bounded in count and bytes).
    recent: VecDeque<Taken>,
    recent_bytes: usize,
    /// What `recent` and `ahead` are charged to the memory budget (see `Node::sync_group`).
    charged: u64,
    /// Identities of the events delivered to local members here, or numbered here as the
    /// root (bounded by `group_dedup_events` and `dedup_window`): a copy of one of them,
    /// however it was numbered, is neither delivered nor numbered again.
    delivered: Recent<EventId>,
    /// Epochs this node left lately, each with the last event it took there (at most
    /// `LEFT_EPOCHS`): back in one of them, it resumes there and takes nothing twice.
    left: Vec<EventSeq>,
    /// Members of the subtree as last reported to the parent: a change is reported at once
    /// (a triggered graft), so that requests are not steered into an emptied subtree.
    reported_members: u32,
    /// The subtree's height as last reported to the parent, reported at once when it changes.
    reported_height: u8,
    /// This node has grafted in this tree before (its later grafts ask for replays even when
    /// it has seen no event), or, for a forwarder, its first child's graft was a rejoin. A
    /// tree without it takes no first event from a node other than its parent (see
    /// `Node::on_cast`).
    grafted: bool,
    /// The next hop that dropped this node for being over its child cap (see `remover`): while
    /// the route still goes through it, this node stays on the sibling it chose instead.
    foster: Option<NodeId>,
    /// A redirect being decided: the siblings offered, waiting for their probes.
    redirect: Option<Box<remover::Pending>>,
    /// Kept until then even with no member and no child: a child was dropped when its node
    /// was declared dead, and goes back if that node answers while its entry is fresh (see
    /// `Node::groups_on_peer_revived`); meanwhile the tree takes events, for its replay. That
    /// node's answer ends its part of the hold (`Node::rehold_groups`).
    held_until: Time,
}

/// An event a node took, kept for replays.
#[derive(Clone, Debug)]
struct Taken {
    seq: EventSeq,
    event: EventId,
    payload: Bytes,
    /// When this node took it.
    at: Time,
}

/// Epochs a group remembers having left.
const LEFT_EPOCHS: usize = 4;

/// Subtree heights are reported up to this, no higher. Around a cycle of parents heights grow
/// with every lap of the triggered reports until they stop here (so they cannot storm).
const MAX_TREE_HEIGHT: u8 = 64;

/// A child that reports a subtree this high is on a cycle (far above any real tree: a route has
/// at most `max_hops` hops, and each redirect by a full parent adds one level): a node that stays
/// on a sibling instead of its next hop goes back to its next hop, which cuts any cycle that a
/// redirect made. Nothing is refused for its height, so a child that lies about it can only send
/// its fostered ancestors back to their next hops.
const FOSTER_CYCLE_HEIGHT: u8 = 48;

impl Group {
    /// Moves to `epoch`, whose next event is `next`: remembers where this node stood in the
    /// epoch it leaves, and resumes where it stood in `epoch` if it was there before.
    fn enter_epoch(&mut self, epoch: u64, next: u64) {
        if self.seen.seq > 0 {
            let old = self.seen;
            self.left.retain(|s| s.epoch != old.epoch);
            if self.left.len() >= LEFT_EPOCHS {
                self.left.remove(0);
            }
            self.left.push(old);
        }
        let resume = self
            .left
            .iter()
            .position(|s| s.epoch == epoch)
            .map(|i| self.left.remove(i).seq);
        self.seen = EventSeq {
            epoch,
            seq: resume.unwrap_or(next.saturating_sub(1)),
        };
        self.gap_asked = None;
        // Events held past a gap of the epoch left: a replay brings them if it comes back.
        self.ahead.clear();
        self.ahead_since = None;
    }

    fn new(kind: GroupKind) -> Self {
        Self {
            kind,
            name: None,
            parent: None,
            root: false,
            children: BTreeMap::new(),
            members: BTreeMap::new(),
            seen: EventSeq::default(),
            gap_asked: None,
            ahead: BTreeMap::new(),
            ahead_since: None,
            recent: VecDeque::new(),
            recent_bytes: 0,
            charged: 0,
            delivered: Recent::default(),
            left: Vec::new(),
            reported_members: 0,
            reported_height: 0,
            grafted: false,
            foster: None,
            redirect: None,
            held_until: Time::ZERO,
        }
    }

    /// Members, capacity and in-flight requests of this node's subtree. Stalled members count
    /// as members without capacity.
    fn load(&self) -> Load {
        let mut load = Load::default();
        for m in self.members.values() {
            load.members = load.members.saturating_add(1);
            if m.stalled == 0 {
                load.capacity = load.capacity.saturating_add(m.capacity);
            }
            load.inflight = load.inflight.saturating_add(m.inflight);
        }
        for c in self.children.values() {
            load.members = load.members.saturating_add(c.load.members);
            load.capacity = load.capacity.saturating_add(c.load.capacity);
            load.inflight = load.inflight.saturating_add(c.load.inflight);
        }
        load
    }

    /// Height of this node's subtree: 0 without children, else one more than its highest
    /// child's (saturating).
    fn height(&self) -> u8 {
        self.children
            .values()
            .map(|c| c.height.saturating_add(1))
            .max()
            .unwrap_or(0)
            .min(MAX_TREE_HEIGHT)
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }
}

/// The group trees a node is part of, and the nodes that are its parents in them. Private to
/// this module; the rest of the node goes through the methods below.
#[derive(Debug)]
pub(crate) struct Groups {
    /// This node's part of each tree, by group key.
    trees: BTreeMap<Key, Group>,
    /// Nodes that are (or were until the last refresh) a parent in some tree: pinged as often
    /// as leaf-set members.
    parents: IdMap<()>,
    /// When the periodic refresh is due (`Time::MAX`: not armed).
    refresh_at: Time,
    /// When the check of every group's route is due (`Time::MAX`: not armed).
    routes_at: Time,
    /// When the earliest redirect choice is due (`Time::MAX`: none pending).
    redirect_at: Time,
}

impl Groups {
    pub(crate) fn new() -> Self {
        Self {
            trees: BTreeMap::new(),
            parents: IdMap::default(),
            refresh_at: Time::MAX,
            routes_at: Time::MAX,
            redirect_at: Time::MAX,
        }
    }

    /// Heap bytes of the tables, each tree's children, members, replay buffer, held events,
    /// remembered event identities, left epochs and pending redirect included (not the
    /// payloads, which are shared with the events in flight, nor the names, shared with the
    /// connections).
    pub(crate) fn heap_bytes(&self) -> usize {
        crate::memory::btree_bytes(&self.trees)
            + crate::memory::hash_bytes(&self.parents)
            + self
                .trees
                .values()
                .map(|g| {
                    crate::memory::deque_bytes(&g.recent)
                        + g.delivered.heap_bytes()
                        + crate::memory::btree_bytes(&g.ahead)
                        + crate::memory::btree_bytes(&g.children)
                        + crate::memory::btree_bytes(&g.members)
                        + g.left.capacity() * std::mem::size_of::<EventSeq>()
                        + g.redirect.as_ref().map_or(0, |r| r.heap_bytes())
                })
                .sum::<usize>()
    }

    /// Trees this node is part of.
    pub(crate) fn len(&self) -> usize {
        self.trees.len()
    }

    /// True when `id` is this node's parent in some tree.
    pub(crate) fn is_parent(&self, id: NodeId) -> bool {
        self.parents.contains_key(&id)
    }

    /// True when this node is the root of group `key`'s tree.
    /// True when this node is part of the tree of group `key` (member, relay or root).
    pub(crate) fn has_tree(&self, key: Key) -> bool {
        self.trees.contains_key(&key)
    }

    pub(crate) fn is_root(&self, key: Key) -> bool {
        self.trees.get(&key).is_some_and(|g| g.root)
    }

    /// True when `conn` is a local member of group `key`.
    pub(crate) fn has_member(&self, key: Key, conn: ConnId) -> bool {
        self.trees
            .get(&key)
            .is_some_and(|g| g.members.contains_key(&conn))
    }

    /// Every local member of every group.
    pub(crate) fn members(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.trees.values().flat_map(|g| g.members.keys().copied())
    }

    /// This node's view of group `key`.
    pub(crate) fn view(&self, key: Key) -> Option<GroupView> {
        self.trees.get(&key).map(|g| GroupView {
            root: g.root,
            parent: g.parent.map(|p| p.id),
            fostered: g.foster.is_some() && g.parent.is_some(),
            children: g.children.keys().copied().collect(),
            members: g.members.len(),
            load: g.load(),
        })
    }

    /// Where an ask for cluster `key` may go from here: its local members and its child
    /// subtrees (never one in `avoid`), each with its weight, load ratio and preference class
    /// (see `ask`). `None` when this node is not in the tree.
    pub(crate) fn options(
        &self,
        key: Key,
        avoid: &[NodeId],
        max_inflight: u32,
        suspected: impl Fn(NodeId) -> bool,
    ) -> Option<Vec<Option3>> {
        let g = self.trees.get(&key)?;
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
            let cap = u64::from(c.load.capacity);
            // The load a child last reported (what it has in flight now, not what we sent it
            // since: that would make every subtree look busier than a local member, whose
            // count is exact, and skew the shares).
            let inflight = f64::from(c.load.inflight);
            let (class, weight) = if suspected(*id) || cap == 0 {
                (2, u64::from(c.load.members))
            } else if inflight >= (cap as f64) * f64::from(max_inflight) {
                (1, cap)
            } else {
                (0, cap)
            };
            opts.push((Choice::Child(*id), weight, inflight / weight as f64, class));
        }
        Some(opts)
    }

    /// The address of child `child` in group `key`'s tree.
    pub(crate) fn child_addr(&self, key: Key, child: NodeId) -> Option<std::net::SocketAddr> {
        self.trees
            .get(&key)
            .and_then(|g| g.children.get(&child))
            .map(|c| c.addr)
    }

    fn member_mut(&mut self, key: Key, conn: ConnId) -> Option<&mut Member> {
        self.trees
            .get_mut(&key)
            .and_then(|g| g.members.get_mut(&conn))
    }

    /// Member `conn` of `key` was handed a request; false when it is no member.
    pub(crate) fn member_took(&mut self, key: Key, conn: ConnId) -> bool {
        let Some(m) = self.member_mut(key, conn) else {
            return false;
        };
        m.inflight = m.inflight.saturating_add(1);
        true
    }

    /// Member `conn` of `key` answered a request (`expired`: one that had expired, stalling
    /// it).
    pub(crate) fn member_answered(&mut self, key: Key, conn: ConnId, expired: bool) {
        if let Some(m) = self.member_mut(key, conn) {
            if expired {
                m.stalled = m.stalled.saturating_sub(1);
            } else {
                m.inflight = m.inflight.saturating_sub(1);
            }
        }
    }

    /// A request to member `conn` of `key` expired unanswered: the member is stalled.
    pub(crate) fn member_stalled(&mut self, key: Key, conn: ConnId) {
        if let Some(m) = self.member_mut(key, conn) {
            m.inflight = m.inflight.saturating_sub(1);
            m.stalled = m.stalled.saturating_add(1);
        }
    }

    /// An expired request to member `conn` of `key` is forgotten: one stall less.
    pub(crate) fn member_unstalled(&mut self, key: Key, conn: ConnId) {
        if let Some(m) = self.member_mut(key, conn) {
            m.stalled = m.stalled.saturating_sub(1);
        }
    }

    /// Every member's load is forgotten (the node is leaving: its deliveries are gone).
    pub(crate) fn clear_loads(&mut self) {
        for g in self.trees.values_mut() {
            for m in g.members.values_mut() {
                m.inflight = 0;
                m.stalled = 0;
            }
        }
    }

    /// What the trees are charged to the memory budget, in all; checks that each tree's charge
    /// is what it holds.
    pub(crate) fn charged(&self) -> u64 {
        self.trees
            .iter()
            .map(|(key, g)| {
                let held = g.recent_bytes as u64
                    + g.ahead
                        .values()
                        .map(|(_, c)| c.payload.len() as u64)
                        .sum::<u64>();
                assert_eq!(g.charged, held, "group {key:?} charged wrong");
                g.charged
            })
            .sum()
    }

    /// Forgets every tree's shape (after a failed join or a leave): only the local members
    /// stay, to graft again. Returns what the forgotten trees held of the memory budget.
    pub(crate) fn forget_trees(&mut self) -> u64 {
        self.routes_at = Time::MAX;
        self.refresh_at = Time::MAX;
        self.redirect_at = Time::MAX;
        self.parents.clear();
        for g in self.trees.values_mut() {
            g.parent = None;
            g.root = false;
            g.children.clear();
            g.foster = None;
            g.redirect = None;
        }
        let mut freed = 0;
        self.trees.retain(|_, g| {
            let keep = !g.members.is_empty();
            if !keep {
                freed += g.charged;
            }
            keep
        });
        freed
    }

    /// True when the owner of timer `key` (one of this module's) still holds deadline `t`.
    pub(crate) fn timer_live(&self, key: TimerKey, t: Time) -> bool {
        match key {
            TimerKey::GroupRefresh => self.refresh_at == t,
            TimerKey::GroupRoutes => self.routes_at == t,
            TimerKey::GroupRedirects => self.redirect_at == t,
            _ => false,
        }
    }
}

impl Node {
    /// Adds connection `conn` as a member of group `name` (a cluster member with request
    /// `capacity`, or a topic subscriber). Grafts this node onto the group's tree if needed.
    pub(crate) fn add_member(
        &mut self,
        now: Time,
        kind: GroupKind,
        name: &str,
        conn: ConnId,
        capacity: u32,
    ) -> Result<bool, AppError> {
        let key = kind.key(name);
        if !self.groups.trees.contains_key(&key) && self.groups.len() >= self.cfg.max_groups {
            self.stats.group_drops += 1;
            return Err(AppError::Full("groups"));
        }
        let g = self
            .groups
            .trees
            .entry(key)
            .or_insert_with(|| Group::new(kind));
        g.kind = kind;
        if g.name.is_none() {
            g.name = Some(Name::from(name));
        }
        if g.members.contains_key(&conn) {
            return Ok(false);
        }
        let fresh = g.members.is_empty() && g.children.is_empty() && g.parent.is_none();
        g.members.insert(
            conn,
            Member {
                capacity,
                ..Member::default()
            },
        );
        self.arm_group_refresh(now, self.cfg.group_refresh_interval);
        let graft = self
            .groups
            .trees
            .get(&key)
            .is_some_and(|g| fresh || !g.root && g.parent.is_none());
        if graft {
            self.maintain_group(now, key);
        } else {
            self.report_if_changed(now, key);
        }
        self.place_parked(now, key);
        Ok(true)
    }

    /// Removes `conn` from group `key`; prunes this node from the tree when nothing is left.
    pub(crate) fn remove_member(&mut self, now: Time, key: Key, conn: ConnId) -> bool {
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return false;
        };
        let removed = g.members.remove(&conn).is_some();
        if g.members.is_empty() {
            g.name = None;
        }
        if removed && g.is_empty() {
            self.maintain_group(now, key);
        } else if removed {
            self.report_if_changed(now, key);
        }
        removed
    }

    /// Grafts at once (reporting the new load) when the subtree's member count changed since
    /// the last report.
    pub(crate) fn report_if_changed(&mut self, now: Time, key: Key) {
        let changed = self.groups.trees.get(&key).is_some_and(|g| {
            g.parent.is_some()
                && (g.load().members != g.reported_members || g.height() != g.reported_height)
        });
        if changed {
            self.maintain_group(now, key);
        }
    }

    /// Brings this node's place in one group tree up to date: leaves it when empty (unless
    /// held for a child declared dead, see `Group::held_until`), becomes root when it owns the
    /// key, else (re)grafts onto its next hop towards the key.
    pub(crate) fn maintain_group(&mut self, now: Time, key: Key) {
        if !self.is_ready() {
            return;
        }
        let next = self.next_hop(key).and_then(|n| self.info_of(n));
        if next.is_none() && !self.groups.is_root(key) {
            // About to become root, in a new epoch: what is held from the old one first.
            self.flush_held(now, key);
            self.sync_group(key);
        }
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        if g.is_empty() && now >= g.held_until {
            let parent = g.parent.take();
            let charged = g.charged;
            self.groups.trees.remove(&key);
            self.unhold(Owner::NODE, charged);
            if let Some(p) = parent {
                self.send(p, Message::Prune { group: key });
            }
            return;
        }
        match next {
            None => {
                let old = g.parent.take();
                g.foster = None;
                g.redirect = None;
                if !g.root {
                    g.root = true;
                    // A new root numbers events in a new epoch.
                    g.enter_epoch(self.rng.random::<u64>() | 1, 1);
                    self.stats.group_roots_taken += 1;
                }
                if let Some(p) = old {
                    self.send(p, Message::Prune { group: key });
                }
            }
            Some(next) => {
                if g.redirect.is_some() {
                    // Dropped by a full parent: the choice of a sibling is pending.
                    return;
                }
                let parent = match (g.foster, g.parent) {
                    // Still routed through the node that dropped us: stay on the sibling.
                    (Some(f), Some(p)) if f == next.id => p,
                    _ => {
                        g.foster = None;
                        next
                    }
                };
                self.graft_on(now, key, parent);
            }
        }
    }

    /// Grafts this node on `parent` in group `key`'s tree (a refresh when it is the parent
    /// already), pruning itself from a previous parent.
    fn graft_on(&mut self, now: Time, key: Key, parent: NodeInfo) {
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        g.root = false;
        let old = g.parent.replace(parent);
        // A refresh to the same parent asks for nothing; a node that was in the tree and
        // now grafts on a new parent (or again after losing its parent) asks for what it
        // missed.
        let moved = old.is_none_or(|p| p.id != parent.id);
        let (load, seen, rejoin, height) = (g.load(), g.seen, g.grafted && moved, g.height());
        g.reported_members = load.members;
        g.reported_height = height;
        g.grafted = true;
        if let Some(p) = old.filter(|p| p.id != parent.id) {
            self.stats.group_parent_changes += 1;
            self.send(p, Message::Prune { group: key });
        }
        self.send(
            parent,
            Message::Graft {
                group: key,
                load,
                seen,
                rejoin,
                height,
            },
        );
        self.watch_parent(now, parent.id);
    }

    /// Group parents are pinged as often as leaf-set members: a dead parent cuts off its whole
    /// subtree until it is declared dead, so it must be found out as fast as a neighbour.
    fn watch_parent(&mut self, now: Time, id: NodeId) {
        if self.groups.parents.insert(id, ()).is_some() {
            return;
        }
        self.ping_soon(now, id);
    }

    /// The leaf set changed: check every group's route to its root at once (coalesced over the
    /// current batch of inputs), so that a tree follows a ring that changed (rings merging, a
    /// closer node joining, a root gone) without waiting for the periodic refresh.
    pub(crate) fn groups_routes_changed(&mut self, now: Time) {
        let waiting = self.groups.len() > 0 || self.asks.any_parked();
        if self.is_ready() && waiting && self.groups.routes_at == Time::MAX {
            self.groups.routes_at = now;
            self.set_timer(now, TimerKey::GroupRoutes);
        }
    }

    /// Re-grafts every group whose root moved (or that has no parent): this node is root but
    /// no longer owns the key (rings merged, or a closer node joined), or owns it now. A group
    /// whose parent is merely no longer the next hop keeps it until the periodic refresh: the
    /// parent is still in the tree, and moving at every leaf-set change (constant under churn)
    /// loses the events in flight during each move.
    pub(crate) fn on_group_routes(&mut self, now: Time) {
        self.groups.routes_at = Time::MAX;
        let keys: Vec<Key> = self.groups.trees.keys().copied().collect();
        for key in keys {
            let owner = self.next_hop(key).is_none();
            let moved = self
                .groups
                .trees
                .get(&key)
                .is_some_and(|g| g.root != owner || (!owner && g.parent.is_none()));
            if moved {
                self.stats.group_route_changes += 1;
                self.maintain_group(now, key);
            }
        }
        self.route_parked_on(now);
    }

    /// The periodic refresh of every group: drops silent children, then maintains each group.
    pub(crate) fn on_group_refresh(&mut self, now: Time) {
        let timeout = self.cfg.group_child_timeout;
        let keys: Vec<Key> = self.groups.trees.keys().copied().collect();
        for key in keys {
            if let Some(g) = self.groups.trees.get_mut(&key) {
                let before = g.children.len();
                g.children
                    .retain(|_, c| now.saturating_since(c.heard) < timeout);
                self.stats.group_children_expired += (before - g.children.len()) as u64;
            }
            self.skip_gap_if_stale(now, key);
            self.sync_group(key);
            self.maintain_group(now, key);
        }
        self.watch_fosters(now);
        // Forget nodes that are no longer anyone's parent here (their pings slow down again).
        self.groups.parents.clear();
        for g in self.groups.trees.values() {
            if let Some(p) = g.parent {
                self.groups.parents.insert(p.id, ());
            }
        }
        // The refresh runs only while this node is in some tree.
        self.groups.refresh_at = Time::MAX;
        self.arm_group_refresh(now, self.cfg.group_refresh_interval);
    }

    /// Arms the periodic group refresh `after` from now, unless it is armed already, the node
    /// is in no tree or not ready.
    pub(crate) fn arm_group_refresh(&mut self, now: Time, after: std::time::Duration) {
        if self.groups.refresh_at == Time::MAX && self.groups.len() > 0 && self.is_ready() {
            self.groups.refresh_at = now + after;
            self.set_timer(self.groups.refresh_at, TimerKey::GroupRefresh);
        }
    }

    /// Starts the periodic refresh (when the node becomes ready) and grafts every group.
    pub(crate) fn start_groups(&mut self, now: Time) {
        let jitter = self
            .rng
            .random_range(0..micros(self.cfg.group_refresh_interval).max(1));
        self.groups.refresh_at = Time::MAX;
        self.arm_group_refresh(now, std::time::Duration::from_micros(jitter));
        let keys: Vec<Key> = self.groups.trees.keys().copied().collect();
        for key in keys {
            self.maintain_group(now, key);
        }
    }
}
