//! Scribe's bottleneck remover: a node over its child cap in a tree (`max_group_children`) drops
//! the child farthest away and sends it the rest of its children ([`Message::Redirect`]) with
//! its round trips to them; the dropped child measures its own round trip to each and grafts
//! on the sibling that gives the shortest path back to the parent (its round trip to the
//! sibling plus the sibling's to the parent).
//!
//! The dropped child remembers which next hop sent it away (its `foster` origin): while its
//! route to the root still goes through that node, its refreshes keep grafting on the chosen
//! sibling instead of returning to the parent that is full. When the route moves, the parent
//! dies or the sibling prunes it, it grafts on its next hop again like any node.
//!
//! The siblings are children of the same parent, so the new parent's path to the root does not
//! pass through the dropped child's subtree when the choice is made; a node that a parent tells
//! about itself, about the dropped child's own children or about the parent is never chosen.

use petal_protocol::{Key, Message, NodeId, NodeInfo, Sibling};
use rand::seq::IndexedRandom;

use super::Group;
use crate::node::{Node, TimerKey};
use crate::time::Time;

/// Most siblings a [`Message::Redirect`] carries (a sample of them when the parent has more).
const REDIRECT_SIBLINGS: usize = 64;

/// A dropped child's choice in progress: the siblings it was offered, waiting for its probes.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    /// The next hop towards the root that dropped this node: the parent that dropped it, or
    /// when that one was a sibling it had chosen already, the next hop that dropped it first.
    from: NodeId,
    siblings: Vec<Sibling>,
    /// When the choice is made with the round trips measured by then.
    decide_at: Time,
}

impl Pending {
    /// Heap bytes, its box included.
    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.siblings.capacity() * std::mem::size_of::<Sibling>()
    }
}

impl Group {
    /// The child to drop when over the cap: the farthest away by this node's measured round
    /// trips (a child not measured yet counts as farthest; ties go to the higher id).
    fn farthest_child(&self, rtt: impl Fn(NodeId) -> Option<u32>) -> Option<NodeId> {
        self.children
            .keys()
            .copied()
            .max_by_key(|id| (rtt(*id).unwrap_or(u32::MAX), *id))
    }
}

impl Node {
    /// Group `key` holds more children than its cap (the graft of `from` just took it over):
    /// drops the farthest child and redirects it to its siblings. True when the child dropped
    /// is `from` itself.
    pub(super) fn shed_child(&mut self, key: Key, from: NodeId) -> bool {
        let Some(g) = self.groups.trees.get(&key) else {
            return false;
        };
        let Some(victim) = g.farthest_child(|id| self.rtt_us(id)) else {
            return false;
        };
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return false;
        };
        let Some(dropped) = g.children.remove(&victim) else {
            return false;
        };
        let mut candidates: Vec<NodeInfo> = g
            .children
            .iter()
            .map(|(id, c)| NodeInfo {
                id: *id,
                addr: c.addr,
            })
            .collect();
        if candidates.len() > REDIRECT_SIBLINGS {
            candidates = candidates
                .choose_multiple(&mut self.rng, REDIRECT_SIBLINGS)
                .copied()
                .collect();
        }
        let siblings = candidates
            .into_iter()
            .map(|info| Sibling {
                info,
                rtt_us: self.rtt_us(info.id).unwrap_or(u32::MAX),
            })
            .collect();
        self.stats.group_redirects_sent += 1;
        self.send(
            NodeInfo {
                id: victim,
                addr: dropped.addr,
            },
            Message::Redirect {
                group: key,
                siblings,
            },
        );
        victim == from
    }

    /// Our parent in `key`'s tree is full and dropped us: probe the siblings it offered and
    /// choose among them when the probes are answered (or time out).
    pub(crate) fn on_redirect(
        &mut self,
        now: Time,
        from: NodeInfo,
        key: Key,
        mut siblings: Vec<Sibling>,
    ) {
        let me = self.me.id;
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        if g.parent.is_none_or(|p| p.id != from.id) {
            // Not (or no longer) our parent: a stale redirect.
            return;
        }
        g.parent = None;
        let route_hop = g.foster.take().unwrap_or(from.id);
        siblings.retain(|s| {
            s.info.id != me && s.info.id != from.id && !g.children.contains_key(&s.info.id)
        });
        siblings.truncate(REDIRECT_SIBLINGS);
        self.stats.group_redirected += 1;
        if siblings.is_empty() {
            // Nothing to go to: graft on the next hop again at the next refresh.
            return;
        }
        let decide_at = now + self.cfg.ping_timeout;
        let unmeasured: Vec<NodeInfo> = siblings
            .iter()
            .map(|s| s.info)
            .filter(|s| self.rtt_us(s.id).is_none())
            .collect();
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        g.redirect = Some(Box::new(Pending {
            from: route_hop,
            siblings,
            decide_at,
        }));
        if unmeasured.is_empty() {
            self.choose_foster(now, key);
            return;
        }
        for info in unmeasured {
            self.probe(now, info);
        }
        if decide_at < self.groups.redirect_at {
            self.groups.redirect_at = decide_at;
            self.set_timer(decide_at, TimerKey::GroupRedirects);
        }
    }

    /// The redirect timer: every choice due by now is made; the timer is re-armed for the next.
    pub(crate) fn on_group_redirects(&mut self, now: Time) {
        self.groups.redirect_at = Time::MAX;
        let due: Vec<Key> = self
            .groups
            .trees
            .iter()
            .filter(|(_, g)| g.redirect.as_ref().is_some_and(|r| r.decide_at <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.choose_foster(now, key);
        }
        let next = self
            .groups
            .trees
            .values()
            .filter_map(|g| g.redirect.as_ref().map(|r| r.decide_at))
            .min();
        if let Some(t) = next {
            self.groups.redirect_at = t;
            self.set_timer(t, TimerKey::GroupRedirects);
        }
    }

    /// Probes every sibling this node stays on that is not a tracked peer (one in neither its
    /// leaf set nor its routing table, which its pings do not watch): called at each group
    /// refresh, so that a sibling that died or left is found out within a refresh and a probe.
    pub(crate) fn watch_fosters(&mut self, now: Time) {
        let untracked: Vec<NodeInfo> = self
            .groups
            .trees
            .values()
            .filter(|g| g.foster.is_some())
            .filter_map(|g| g.parent)
            .filter(|p| !self.knows(p.id))
            .collect();
        for p in untracked {
            self.probe(now, p);
        }
    }

    /// A probe of `id` went unanswered: every group that stays on it as a sibling goes back to
    /// its next hop.
    pub(crate) fn foster_lost(&mut self, now: Time, id: NodeId) {
        let keys: Vec<Key> = self
            .groups
            .trees
            .iter()
            .filter(|(_, g)| g.foster.is_some() && g.parent.is_some_and(|p| p.id == id))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(g) = self.groups.trees.get_mut(&key) {
                g.foster = None;
                g.parent = None;
            }
            self.stats.group_repairs += 1;
            self.maintain_group(now, key);
        }
    }

    /// Grafts on the sibling with the shortest measured path back to the parent that dropped
    /// this node (a random one when none could be measured).
    fn choose_foster(&mut self, now: Time, key: Key) {
        let Some(pending) = self
            .groups
            .trees
            .get_mut(&key)
            .and_then(|g| g.redirect.take())
        else {
            return;
        };
        let best = pending
            .siblings
            .iter()
            .filter_map(|s| {
                let mine = u64::from(self.rtt_us(s.info.id)?);
                let theirs = if s.rtt_us == u32::MAX {
                    0
                } else {
                    u64::from(s.rtt_us)
                };
                Some((mine + theirs, s.info.id, s.info))
            })
            .min_by_key(|(d, id, _)| (*d, *id))
            .map(|(_, _, info)| info);
        let Some(to) = best.or_else(|| pending.siblings.choose(&mut self.rng).map(|s| s.info))
        else {
            return;
        };
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        if g.parent.is_some() || g.root {
            // The tree moved on meanwhile (a refresh found a new route).
            return;
        }
        g.foster = Some(pending.from);
        self.stats.group_fostered += 1;
        self.graft_on(now, key, to);
    }
}
