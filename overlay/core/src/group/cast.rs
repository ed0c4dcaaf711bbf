//! Events on a group tree: published or broadcast to the root, numbered there, cast down the
//! tree, taken in order at every node (duplicates dropped, gaps replayed from the parent's
//! buffer) and delivered to the local members.

use bytes::Bytes;
use petal_protocol::{EventSeq, Key, Message, NodeId, NodeInfo, RouteMsg, Routed};
use rand::Rng;

use crate::app::{AppError, ConnId, GroupKind};
use crate::node::{Event, Node};
use crate::time::Time;

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
        self.stats.events_published += 1;
        let msg = RouteMsg {
            key,
            origin: self.me,
            hops: 0,
            hop_seq: 0,
            body: Routed::Publish { payload },
        };
        self.forward(now, Box::new(msg), Vec::new());
        Ok(())
    }

    /// A published event reached the root: number it and cast it down.
    pub(crate) fn root_publish(&mut self, now: Time, key: Key, payload: Bytes) {
        let Some(g) = self.groups.trees.get_mut(&key) else {
            self.stats.events_unheard += 1;
            return;
        };
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
        let Some(g) = self.groups.trees.get(&key) else {
            return;
        };
        let seq = EventSeq {
            epoch: g.seen.epoch,
            seq: g.seen.seq + 1,
        };
        self.take_event(now, key, None, seq, payload);
    }

    pub(crate) fn on_cast(
        &mut self,
        now: Time,
        from: NodeInfo,
        key: Key,
        seq: EventSeq,
        payload: Bytes,
    ) {
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
            // we have seen nothing yet (the first event may come from the parent we just
            // left, before it heard that we moved).
            if !from_parent && g.seen != EventSeq::default() {
                self.stats.events_stale += 1;
                return;
            }
            // Where we stood in that epoch if we were there before: nothing is taken twice.
            g.enter_epoch(seq.epoch, seq.seq);
        }
        if seq.seq <= g.seen.seq {
            self.stats.events_duplicate += 1;
            return;
        }
        if seq.seq > g.seen.seq + 1 {
            // A gap: ask the parent once to replay from what we have; if it cannot, move on.
            if from_parent && g.gap_asked != Some(g.seen.seq) {
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
                return;
            }
            if !from_parent {
                self.stats.events_stale += 1;
                return;
            }
            self.stats.events_lost = self
                .stats
                .events_lost
                .saturating_add(seq.seq.saturating_sub(g.seen.seq).saturating_sub(1));
        }
        self.take_event(now, key, Some(from.id), seq, payload);
        if !from_parent {
            // In order, so taken; but the sender should no longer count us as its child.
            self.stats.events_stale += 1;
            self.send(from, Message::Prune { group: key });
        }
    }

    /// Takes event `seq`: remembers it for replays, delivers it to local members and casts it
    /// to every child but `from`.
    fn take_event(
        &mut self,
        now: Time,
        key: Key,
        from: Option<NodeId>,
        seq: EventSeq,
        payload: Bytes,
    ) {
        let (max_n, max_bytes) = (self.cfg.group_replay_events, self.cfg.group_replay_bytes);
        let Some(g) = self.groups.trees.get_mut(&key) else {
            return;
        };
        g.seen = seq;
        g.gap_asked = None;
        g.recent.push_back((seq, payload.clone(), now));
        g.recent_bytes += payload.len();
        while g.recent.len() > max_n || g.recent_bytes > max_bytes {
            let Some((_, p, _)) = g.recent.pop_front() else {
                break;
            };
            g.recent_bytes -= p.len();
        }
        let kind = g.kind;
        let name = g.name.clone();
        let conns: Vec<ConnId> = g.members.keys().copied().collect();
        let children: Vec<NodeInfo> = g
            .children
            .iter()
            .filter(|(id, _)| Some(**id) != from)
            .map(|(id, c)| NodeInfo {
                id: *id,
                addr: c.addr,
            })
            .collect();
        for conn in conns {
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
                Message::Cast {
                    group: key,
                    seq,
                    payload: payload.clone(),
                },
            );
        }
    }
}
