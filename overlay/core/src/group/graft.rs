//! Grafts and prunes arriving from other nodes, and the group tables' invariants.

use std::collections::BTreeMap;

use petal_protocol::{CastMsg, EventSeq, Key, Load, Message, NodeId, NodeInfo};

use super::{Child, DroppedChildren, FOSTER_CYCLE_HEIGHT, Group};
use crate::app::GroupKind;
use crate::node::Node;
use crate::time::{Time, micros};

impl Node {
    pub(crate) fn on_graft(
        &mut self,
        now: Time,
        from: NodeInfo,
        key: Key,
        (load, height): (Load, u8),
        seen: EventSeq,
        rejoin: bool,
    ) {
        // A joining node that has announced itself is on other nodes' routes already: it keeps
        // the children that graft on it (dropping them would cut their subtrees off until their
        // next refresh) and grafts onward once it is ready (`start_groups`).
        if !self.is_ready() && !self.is_joining() {
            return;
        }
        // Other nodes' grafts take at most 7/8 of `max_groups`: the rest stays for local
        // members, so that peers cannot lock this node's applications out of new groups.
        let remote_max = self.cfg.max_groups - self.cfg.max_groups.div_ceil(8);
        if !self.groups.trees.contains_key(&key) && self.groups.len() >= remote_max {
            self.stats.group_drops += 1;
            self.send(from, Message::Prune { group: key });
            return;
        }
        let max_children = self.cfg.max_group_children;
        if let std::collections::btree_map::Entry::Vacant(e) = self.groups.trees.entry(key) {
            e.insert(Group::new(GroupKind::Topic));
            self.arm_group_refresh(now, self.cfg.group_refresh_interval);
        }
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        let fresh = g.parent.is_none() && !g.root;
        if fresh && g.is_empty() && g.seen == EventSeq::default() {
            // A new forwarder starts from its first child's position, so that its own graft
            // asks its parent to replay what the child missed.
            g.seen = seen;
            g.grafted = rejoin;
        }
        if g.parent.is_some_and(|p| p.id == from.id) {
            // A cycle: our parent thinks we are its parent. One of us routes on stale state, or
            // we stay on a sibling that now routes through us: refuse (the prune also tells
            // our parent we left it), and a node on a sibling goes back to its next hop.
            self.stats.group_cycles_refused += 1;
            let fostered = g.foster.take().is_some();
            if fostered {
                g.parent = None;
            }
            self.send(from, Message::Prune { group: key });
            if fostered {
                self.maintain_group(now, key);
            }
            return;
        }
        // A subtree this high is on a cycle (see `FOSTER_CYCLE_HEIGHT`).
        let unfoster = height >= FOSTER_CYCLE_HEIGHT && g.foster.take().is_some();
        if unfoster {
            self.stats.group_cycles_refused += 1;
        }
        let over = !g.children.contains_key(&from.id) && g.children.len() >= max_children;
        let known = g
            .children
            .insert(
                from.id,
                Child {
                    addr: from.addr,
                    load,
                    height,
                    heard: now,
                    seen,
                },
            )
            .is_some();
        // A child we already had that only refreshes may simply not have received what is in
        // flight to it: then only events older than a refresh interval count as missed.
        let settled = Time::from_micros(
            now.as_micros()
                .saturating_sub(micros(self.cfg.group_refresh_interval)),
        );
        // Replay what the child missed: in its epoch, what is newer than its last event; from
        // another epoch (it moved here from an old tree), everything we hold of ours. The buffer
        // may also hold events of a third epoch, one this node left (a new root took over):
        // those are not replayed, as the child may have taken them already and would take them
        // again. A first graft that has seen nothing is a new subscriber: it gets what comes
        // next.
        let replay: Vec<CastMsg> = if seen == EventSeq::default() && !rejoin {
            Vec::new()
        } else {
            let ours = g.seen.epoch;
            replay_of(g, key, |t| {
                let s = t.seq;
                (!known || rejoin || t.at <= settled)
                    && ((s.epoch == seen.epoch && s.seq > seen.seq)
                        || (seen.epoch != ours && s.epoch == ours))
            })
        };
        if !known && self.rtt_us(from.id).is_none() {
            // Measure a new child, so that the child shed when the tree is full is the one
            // farthest away rather than one not measured yet.
            self.probe(now, from);
        }
        if over && self.shed_child(key, from.id) {
            // Over the cap, and the graft's sender is the child farthest away: redirected.
            if unfoster {
                self.maintain_group(now, key);
            }
            return;
        }
        for cast in replay {
            self.stats.group_replayed += 1;
            self.send(from, Message::cast(cast));
        }
        if fresh || unfoster {
            self.maintain_group(now, key);
        } else {
            self.report_if_changed(now, key);
        }
        self.place_parked(now, key);
    }

    pub(crate) fn on_prune(&mut self, now: Time, from: NodeInfo, key: Key) {
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        let child = g.children.remove(&from.id).is_some();
        let parent = g.parent.is_some_and(|p| p.id == from.id);
        if parent {
            // Our parent refused or dropped us: graft again on the next refresh (not now, so
            // that two nodes with inconsistent routes do not ping-pong).
            g.parent = None;
        }
        if !child && !parent {
            // From neither (a copy of a prune, or one for casts sent before it left): nothing
            // changed.
            return;
        }
        if g.is_empty() {
            self.maintain_group(now, key);
        } else {
            self.report_if_changed(now, key);
        }
    }

    /// Node `id` is in none of this node's trees any more (it started again: see
    /// `Node::on_announce`): its child entries go, and the trees report their new load.
    pub(crate) fn groups_forget_child(&mut self, now: Time, id: NodeId) {
        let keys: Vec<Key> = self
            .groups
            .trees
            .iter_mut()
            .filter_map(|(key, g)| g.children.remove(&id).map(|_| *key))
            .collect();
        for key in keys {
            if self.groups.trees.get(&key).is_some_and(Group::is_empty) {
                self.maintain_group(now, key);
            } else {
                self.report_if_changed(now, key);
            }
        }
    }

    /// Group tree invariants: bounds respected, no node is its own parent or child, the
    /// replay buffer within its bounds and ordered.
    pub(crate) fn check_group_invariants(&self) {
        assert!(
            self.groups.len() <= self.cfg.max_groups,
            "groups over bound"
        );
        assert!(
            !self.is_ready() || self.groups.len() == 0 || self.groups.refresh_at != Time::MAX,
            "a node in a tree without its refresh timer"
        );
        for (key, g) in &self.groups.trees {
            assert!(
                g.children.len() <= self.cfg.max_group_children,
                "children over bound"
            );
            assert!(
                !g.children.contains_key(&self.me.id),
                "own child in {key:?}"
            );
            assert!(
                g.parent.is_none_or(|p| p.id != self.me.id),
                "own parent in {key:?}"
            );
            assert!(!(g.root && g.parent.is_some()), "root with a parent");
            assert!(
                g.recent.len() <= self.cfg.group_replay_events,
                "replay over bound"
            );
            assert_eq!(
                g.recent_bytes,
                g.recent.iter().map(|t| t.payload.len()).sum::<usize>(),
                "replay byte count"
            );
            assert!(
                g.recent
                    .iter()
                    .zip(g.recent.iter().skip(1))
                    .all(|(a, b)| a.seq.epoch != b.seq.epoch || a.seq.seq < b.seq.seq),
                "replay buffer out of order"
            );
            assert!(
                g.delivered.len() <= self.cfg.group_dedup_events,
                "event identities over bound"
            );
            assert!(
                g.ahead.len() <= self.cfg.group_replay_events,
                "held events over bound"
            );
            assert!(
                g.ahead.keys().all(|s| *s > g.seen.seq.saturating_add(1)),
                "a held event that is not past a gap"
            );
            assert_eq!(
                g.ahead_since.is_some(),
                !g.ahead.is_empty(),
                "gap wait without held events"
            );
            if g.name.is_some() {
                assert!(!g.members.is_empty(), "named group without members");
            }
        }
    }
}

impl Node {
    /// Asks parked here for a tree are routed on if another node owns their key now.
    pub(crate) fn route_parked_on(&mut self, now: Time) {
        for key in self.asks.parked_groups() {
            if self.next_hop(key).is_some() {
                self.place_parked(now, key);
            }
        }
    }

    /// A parent whose peer died: every group that hung from it grafts elsewhere at once. Its
    /// child entries are dropped; with `keep` (it did not leave) they are returned, to be kept
    /// with the dead peer (see `Node::groups_on_peer_revived`), and their trees are held while
    /// the entries are fresh, however empty, or until that peer answers.
    pub(crate) fn groups_on_peer_dead(
        &mut self,
        now: Time,
        dead: NodeId,
        keep: bool,
    ) -> Option<Box<DroppedChildren>> {
        let keys: Vec<Key> = self
            .groups
            .trees
            .iter()
            .filter(|(_, g)| g.parent.is_some_and(|p| p.id == dead))
            .map(|(k, _)| *k)
            .collect();
        for key in &keys {
            if let Some(g) = self.groups.trees.get_mut(key) {
                g.parent = None;
            }
        }
        let mut dropped = Vec::new();
        let timeout = self.cfg.group_child_timeout;
        for (key, g) in &mut self.groups.trees {
            if let Some(c) = g.children.remove(&dead) {
                if keep {
                    g.held_until = g.held_until.max(c.heard + timeout);
                    dropped.push((*key, c));
                }
            }
        }
        for key in keys {
            self.stats.group_repairs += 1;
            self.maintain_group(now, key);
        }
        (!dropped.is_empty()).then(|| Box::new(DroppedChildren(dropped)))
    }

    /// Node `from`, declared dead, answered again (a false death: a slow link or a busy host).
    /// The child entries dropped for it go back into their trees, where it still hangs from
    /// this node as far as it knows (at the address it answered from): without this its
    /// subtrees would get no events and no requests until its next periodic graft
    /// (`group_refresh_interval`). The events of the tree's current epoch in the replay buffer
    /// after the position its last graft reported are replayed to it, those cast to it before
    /// its death included (they may have been lost with its link; it drops a copy it has by its
    /// sequence). An entry keeps the
    /// time its node was last heard, so one that grafted elsewhere meanwhile expires as usual
    /// (`group_child_timeout`); a tree that is gone or full now does not take it back, nor the
    /// tree `tree` that the reviving message is a graft or prune for (its handling decides,
    /// from what the node says of that tree now). The hold each of these trees was under for it
    /// ends: what is left of it is the holds for other nodes still dead (see
    /// `Node::rehold_groups`).
    pub(crate) fn groups_on_peer_revived(
        &mut self,
        now: Time,
        from: NodeInfo,
        dropped: DroppedChildren,
        tree: Option<Key>,
    ) {
        let max_children = self.cfg.max_group_children;
        let keys: Vec<Key> = dropped.0.iter().map(|(k, _)| *k).collect();
        for (key, mut child) in dropped.0 {
            if tree == Some(key) {
                continue;
            }
            let Some(g) = self.groups.trees.get_mut(&key) else {
                continue;
            };
            if g.children.contains_key(&from.id)
                || g.children.len() >= max_children
                || now.saturating_since(child.heard) >= self.cfg.group_child_timeout
            {
                continue;
            }
            child.addr = from.addr;
            let (heard, seen) = (child.heard, child.seen);
            g.children.insert(from.id, child);
            // What it may have missed, of this tree's current epoch only: what is newer than
            // the position its last graft reported (events cast to it since may have been
            // lost with its link; a copy it has is dropped by its sequence); from another
            // epoch (it came from an old tree), all we hold of ours, as a graft would get; and
            // when that graft had seen nothing (a new subscriber), what was taken since it.
            let ours = g.seen.epoch;
            let missed = replay_of(g, key, |t| {
                t.seq.epoch == ours
                    && if seen == EventSeq::default() {
                        t.at >= heard
                    } else {
                        seen.epoch != ours || t.seq.seq > seen.seq
                    }
            });
            self.stats.group_children_restored += 1;
            for cast in missed {
                self.stats.group_replayed += 1;
                self.send(from, Message::cast(cast));
            }
            self.report_if_changed(now, key);
            self.place_parked(now, key);
        }
        self.rehold_groups(keys);
    }

    /// Node `from`, declared dead, is back as a new start of itself (it announced itself): its
    /// old entries are not put back, and the holds of their trees for it end.
    pub(crate) fn groups_on_peer_restarted(&mut self, dropped: &DroppedChildren) {
        self.rehold_groups(dropped.entries().map(|(k, _)| *k).collect());
    }

    /// Sets the hold of each group of `keys` to what the child entries kept with nodes still
    /// dead ask for: each until its node's last graft is `group_child_timeout` old (none: not
    /// held). One pass over the kept entries, however many keys.
    fn rehold_groups(&mut self, keys: Vec<Key>) {
        let timeout = self.cfg.group_child_timeout;
        let mut until: BTreeMap<Key, Time> = keys.into_iter().map(|k| (k, Time::ZERO)).collect();
        for (key, c) in self.overlay.dead_children().flat_map(|c| c.entries()) {
            if let Some(t) = until.get_mut(key) {
                *t = (*t).max(c.heard + timeout);
            }
        }
        for (key, t) in until {
            if let Some(g) = self.groups.trees.get_mut(&key) {
                g.held_until = t;
            }
        }
    }
}

/// The events in `g`'s replay buffer that `keep` selects, oldest first, as casts of tree `key`.
fn replay_of(g: &Group, key: Key, keep: impl Fn(&super::Taken) -> bool) -> Vec<CastMsg> {
    g.recent
        .iter()
        .filter(|t| keep(t))
        .map(|t| CastMsg {
            group: key,
            seq: t.seq,
            event: t.event,
            payload: t.payload.clone(),
        })
        .collect()
}
