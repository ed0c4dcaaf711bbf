//! Events on a group tree: published or broadcast to the root, numbered there, cast down the
//! tree, taken in order at every node (duplicates dropped, gaps replayed from the parent's
//! buffer) and delivered to the local members (copies numbered twice delivered once).

use bytes::Bytes;
use petal_protocol::{
    CastMsg, EventId, EventSeq, Key, Message, NodeId, NodeInfo, RouteMsg, Routed,
};
use rand::Rng;

use super::Taken;
use crate::app::{AppError, ConnId, GroupKind};
use crate::budget::Owner;
use crate::node::{Event, Node};
use crate::time::Time;

/// Members of a group that a delivering node lists on the stack (more take an allocation).
const FEW_MEMBERS: usize = 8;

impl Node {
    /// Publishes `payload` to group `key` (a topic's subscribers or a cluster's members): the
    /// event is routed to the group's root, which casts it down the tree.
    pub(crate) fn publish_to(
        &mut self,
        now: Time,
        key: Key,
        payload: Bytes,
    ) -> Result<(), AppError> {
        if !self.is_ready() && !self.is_joining() {
            return Err(AppError::NotRunning);
        }
        let cost = std::mem::size_of::<RouteMsg>() + payload.len();
        self.refuse_unless_fits(self.cause(), cost as u64)?;
        self.stats.events_published += 1;
        let nonce = self.nonce();
        let msg = RouteMsg {
            key,
            origin: self.me,
            hops: 0,
            hop_seq: 0,
            body: Routed::Publish { nonce, payload },
        };
        self.forward(now, Box::new(msg), Vec::new());
        Ok(())
    }

    /// A published event reached the root: number it and cast it down, unless a copy of it was
    /// numbered here lately.
    pub(crate) fn root_publish(&mut self, now: Time, key: Key, event: EventId, payload: Bytes) {
        self.root_publish_inner(now, key, event, payload);
        self.sync_group(key);
    }

    fn root_publish_inner(&mut self, now: Time, key: Key, event: EventId, payload: Bytes) {
        let window = self.cfg.dedup_window;
        if !self.groups.is_root(key) {
            // About to take the root's role, in a new epoch: what is held from the old one first.
            self.flush_held(now, key);
        }
        let Some(g) = self.groups.trees.get_mut(&key) else {
            self.stats.events_unheard += 1;
            return;
        };
        if g.delivered.contains(now, &event, window) {
            self.stats.events_copies_dropped += 1;
            return;
        }
        if !g.root {
            // We own the key but had a parent: the next refresh makes us root; until then the
            // event goes up the old tree's root would lose it, so take the role now.
            let old = g.parent.take();
            g.root = true;
            g.enter_epoch(self.rng.random::<u64>() | 1, 1);
            self.stats.group_roots_taken += 1;
            if let Some(p) = old {
                self.send(p, Message::Prune { group: key });
            }
        }
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        if g.seen.seq == u64::MAX {
            // The numbering is used up (a parent that numbered at the end of the space): a
            // new epoch, as a new root would start.
            g.enter_epoch(self.rng.random::<u64>() | 1, 1);
        }
        let seq = EventSeq {
            epoch: g.seen.epoch,
            seq: g.seen.seq.saturating_add(1),
        };
        self.take_event(
            now,
            None,
            CastMsg {
                group: key,
                seq,
                event,
                payload,
            },
        );
    }

    pub(crate) fn on_cast(&mut self, now: Time, from: NodeInfo, cast: CastMsg) {
        let key = cast.group;
        self.on_cast_inner(now, from, cast);
        self.sync_group(key);
    }

    fn on_cast_inner(&mut self, now: Time, from: NodeInfo, cast: CastMsg) {
        let (key, seq) = (cast.group, cast.seq);
        let Some(g) = self.groups.trees.get_mut(&key) else {
            // Not in this tree (any more): tell the sender to drop us.
            self.stats.events_stale += 1;
            self.send(from, Message::Prune { group: key });
            return;
        };
        let from_parent = g.parent.is_some_and(|p| p.id == from.id);
        if g.root && !from_parent {
            self.stats.events_stale += 1;
            return;
        }
        if seq.epoch != g.seen.epoch {
            // Another numbering: follow it when it comes from our parent (a new root), or when
            // we have seen nothing yet and grafted before (the first event may come from the
            // parent we just left, before it heard that we moved). A tree never grafted has no
            // such parent: what comes to it from elsewhere is for an earlier start of this
            // node (its old parent replaying to an entry it put back).
            if !from_parent && (g.seen != EventSeq::default() || !g.grafted) {
                self.stats.events_stale += 1;
                return;
            }
            // Events held past a gap of the epoch left are taken first: no replay of that
            // epoch will come.
            self.flush_held(now, key);
            let Some(g) = self.groups.trees.get_mut(&key) else {
                return;
            };
            // Where we stood in that epoch if we were there before: nothing is taken twice.
            g.enter_epoch(seq.epoch, seq.seq);
        }
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        if seq.seq <= g.seen.seq {
            self.stats.events_duplicate += 1;
            return;
        }
        if seq.seq > g.seen.seq.saturating_add(1) {
            if !from_parent {
                self.stats.events_stale += 1;
                return;
            }
            // A gap: ask the parent once to replay from what we have. Without
            // `event_gap_wait`, this event waits for that replay (it brings it too) and a
            // second one past the same gap gives the missing events up (links are ordered: they
            // were lost, with a parent that changed). With it, the missing events may still be
            // on their way (a transport that reorders): the events past the gap are held and
            // taken in order as it fills; a gap still open after the wait, or the oldest gap of
            // a full hold, is given up (`skip_gap`).
            let ask = g.gap_asked != Some(g.seen.seq);
            if ask {
                g.gap_asked = Some(g.seen.seq);
                let (load, seen, height) = (g.load(), g.seen, g.height());
                self.stats.event_gaps += 1;
                self.send(
                    from,
                    Message::Graft {
                        group: key,
                        load,
                        seen,
                        rejoin: true,
                        height,
                    },
                );
            }
            let Some(g) = self.groups.trees.get_mut(&key) else {
                return;
            };
            if self.cfg.event_gap_wait.is_zero() {
                if ask {
                    return;
                }
                self.stats.events_lost = self
                    .stats
                    .events_lost
                    .saturating_add(seq.seq.saturating_sub(g.seen.seq).saturating_sub(1));
            } else {
                g.ahead.entry(seq.seq).or_insert((from.id, cast));
                g.ahead_since.get_or_insert(now);
                self.stats.events_held += 1;
                if g.ahead.len() > self.cfg.group_replay_events {
                    self.skip_gap(now, key);
                } else {
                    self.skip_gap_if_stale(now, key);
                }
                return;
            }
        }
        self.take_event(now, Some(from.id), cast);
        self.take_held(now, key);
        if !from_parent {
            // In order, so taken; but the sender should no longer count us as its child.
            self.stats.events_stale += 1;
            self.send(from, Message::Prune { group: key });
        }
    }

    /// Takes the held events that are next in order (and drops those taken meanwhile).
    fn take_held(&mut self, now: Time, key: Key) {
        loop {
            let Some(g) = self.groups.trees.get_mut(&key) else {
                return;
            };
            let seen = g.seen.seq;
            while let Some(e) = g.ahead.first_entry().filter(|e| *e.key() <= seen) {
                e.remove();
                self.stats.events_duplicate += 1;
            }
            let Some(e) = g
                .ahead
                .first_entry()
                .filter(|e| *e.key() == seen.saturating_add(1))
            else {
                // Another gap (or none): its wait starts now.
                g.ahead_since = (!g.ahead.is_empty()).then_some(now);
                return;
            };
            let (from, cast) = e.remove();
            self.take_event(now, Some(from), cast);
        }
    }

    /// Gives up the gap before the first held event of group `key`: takes it and what follows
    /// it in order.
    pub(super) fn skip_gap(&mut self, now: Time, key: Key) {
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        let Some((seq, (from, cast))) = g.ahead.pop_first() else {
            g.ahead_since = None;
            return;
        };
        let missed = seq.saturating_sub(g.seen.seq).saturating_sub(1);
        self.stats.events_lost = self.stats.events_lost.saturating_add(missed);
        self.take_event(now, Some(from), cast);
        self.take_held(now, key);
    }

    /// Takes every held event of group `key` in order, giving up the gaps between them (the
    /// node leaves their epoch).
    pub(super) fn flush_held(&mut self, now: Time, key: Key) {
        while self
            .groups
            .trees
            .get(&key)
            .is_some_and(|g| !g.ahead.is_empty())
        {
            self.skip_gap(now, key);
        }
    }

    /// [`Self::skip_gap`] once the gap has stayed open for `event_gap_wait`.
    pub(super) fn skip_gap_if_stale(&mut self, now: Time, key: Key) {
        let wait = self.cfg.event_gap_wait;
        if self
            .groups
            .trees
            .get(&key)
            .and_then(|g| g.ahead_since)
            .is_some_and(|t| now.saturating_since(t) >= wait)
        {
            self.skip_gap(now, key);
        }
    }

    /// Takes event `cast`: remembers it for replays, delivers it to local members (unless a
    /// copy of it was delivered here lately) and casts it to every child but `from`.
    fn take_event(&mut self, now: Time, from: Option<NodeId>, cast: CastMsg) {
        let (max_n, max_bytes) = (self.cfg.group_replay_events, self.cfg.group_replay_bytes);
        let (dedup_n, window) = (self.cfg.group_dedup_events, self.cfg.dedup_window);
        let CastMsg {
            group: key,
            seq,
            event,
            payload,
            ..
        } = cast;
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        g.seen = seq;
        g.gap_asked = None;
        g.recent.push_back(Taken {
            seq,
            event,
            payload: payload.clone(),
            at: now,
        });
        g.recent_bytes += payload.len();
        while g.recent.len() > max_n || g.recent_bytes > max_bytes {
            let Some(t) = g.recent.pop_front() else {
                break;
            };
            g.recent_bytes -= t.payload.len();
        }
        // Only a node that delivers (or numbers) events remembers them: the others just pass
        // them on.
        let fresh = if g.root || !g.members.is_empty() {
            g.delivered.insert(now, event, dedup_n, window)
        } else {
            true
        };
        if !fresh {
            self.stats.events_copies_dropped += 1;
        }
        let kind = g.kind;
        let name = g.name.clone();
        // The local members, copied out (emitting needs `self`): on the stack for a few, so
        // that an event to one subscriber allocates nothing here.
        let mut few = [ConnId(0); FEW_MEMBERS];
        let mut many = Vec::new();
        let conns: &[ConnId] = if !fresh {
            &[]
        } else if g.members.len() <= FEW_MEMBERS {
            for (slot, conn) in few.iter_mut().zip(g.members.keys()) {
                *slot = *conn;
            }
            &few[..g.members.len()]
        } else {
            many.extend(g.members.keys().copied());
            &many
        };
        let children: Vec<NodeInfo> = g
            .children
            .iter()
            .filter(|(id, _)| Some(**id) != from)
            .map(|(id, c)| NodeInfo {
                id: *id,
                addr: c.addr,
            })
            .collect();
        for &conn in conns {
            self.stats.events_delivered += 1;
            let payload = payload.clone();
            match (kind, &name) {
                (GroupKind::Topic, Some(topic)) => self.emit(Event::Published {
                    conn,
                    topic: topic.clone(),
                    payload,
                }),
                _ => self.emit(Event::Broadcast { conn, payload }),
            }
        }
        for child in children {
            self.stats.events_forwarded += 1;
            self.send(
                child,
                Message::cast(CastMsg {
                    group: key,
                    seq,
                    event,
                    payload: payload.clone(),
                }),
            );
        }
    }
}

impl Node {
    /// Charges what group `key` holds (events kept for replays, events held past a gap) to the
    /// memory budget, as the node's own. When the budget has no room for what it grew by, the
    /// replay buffer gives up its oldest events (it is a cache), then the newest held events
    /// are dropped (their gap stays open for a replay); each refusal is counted.
    pub(crate) fn sync_group(&mut self, key: Key) {
        let mut refused = false;
        loop {
            let Some(g) = self.groups.trees.get_mut(&key) else {
                return;
            };
            let want = g.recent_bytes as u64
                + g.ahead
                    .values()
                    .map(|(_, c)| c.payload.len() as u64)
                    .sum::<u64>();
            let charged = g.charged;
            if want <= charged {
                g.charged = want;
                self.unhold(Owner::NODE, charged - want);
                return;
            }
            if self.try_hold(Owner::NODE, want - charged) {
                if let Some(g) = self.groups.trees.get_mut(&key) {
                    g.charged = want;
                }
                return;
            }
            if !refused {
                // One refusal per event the budget had no room for, however much it evicts.
                self.stats.memory_refused += 1;
                refused = true;
            }
            let Some(g) = self.groups.trees.get_mut(&key) else {
                return;
            };
            if let Some(t) = g.recent.pop_front() {
                g.recent_bytes -= t.payload.len();
            } else if g.ahead.pop_last().is_some() {
                if g.ahead.is_empty() {
                    g.ahead_since = None;
                }
            } else {
                return;
            }
        }
    }
}
