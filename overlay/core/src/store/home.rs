//! The home's side of an operation: reading from and writing to the key's replicas, quorums,
//! compare-and-set, one write at a time per key, the one answer to the origin.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use petal_protocol::{
    Key, Message, NodeInfo, StoreEntry, StoreOp, StoreOpKind, StoreResult, Version,
};

use super::{Coord, MAX_QUEUED_PER_KEY, Phase, Queued, Then, answer, current, key_of};
use crate::node::{Node, TimerKey};
use crate::time::Time;

impl Node {
    /// A store operation reached the home of its key (this node owns the key).
    pub(crate) fn home_store_op(&mut self, now: Time, key: Key, origin: NodeInfo, op: StoreOp) {
        if key_of(&op.name) != key {
            let failed = StoreResult::Failed("the key does not match its name".into());
            self.reply_store(now, origin, op.id, failed);
            return;
        }
        // The origin checks these too; a peer that does not is refused here, before anything
        // is stored that the replicas would refuse (and repair would push again and again).
        let too_big = matches!(&op.kind, StoreOpKind::Put { value, .. }
            if value.len() > self.cfg.store_max_value);
        if op.name.is_empty() || op.name.len() > self.cfg.store_max_key || too_big {
            let failed = StoreResult::Failed("key or value over the store's limits".into());
            self.reply_store(now, origin, op.id, failed);
            return;
        }
        let deadline = now + Duration::from_millis(u64::from(op.timeout_ms));
        let writes = !matches!(op.kind, StoreOpKind::Get);
        let max_ops = self.cfg.store_max_ops;
        let (cap, window) = (self.cfg.max_recent_asks, self.cfg.dedup_window);
        let store = self.store_mut();
        if !store.seen.insert(now, (origin.id, op.id), cap, window) {
            // A copy of an operation taken already: its origin has (or will have) the one
            // answer of the first.
            return;
        }
        if store.ops() >= max_ops {
            let failed = StoreResult::Failed("too many store operations at the key's home".into());
            self.reply_store(now, origin, op.id, failed);
            return;
        }
        if writes {
            if let Some(q) = store.busy.get_mut(&key) {
                if q.len() >= MAX_QUEUED_PER_KEY {
                    let failed = StoreResult::Failed("too many writes queued for this key".into());
                    self.reply_store(now, origin, op.id, failed);
                } else {
                    q.push_back(Queued {
                        origin,
                        op,
                        deadline,
                    });
                }
                return;
            }
            store.busy.insert(key, VecDeque::new());
        }
        self.start_coord(now, key, origin, op, deadline);
    }

    /// Starts coordinating `op` (a write holds its key already).
    fn start_coord(&mut self, now: Time, key: Key, origin: NodeInfo, op: StoreOp, until: Time) {
        let me = self.me.id;
        let replicas: Vec<NodeInfo> = self
            .replicas_of(key)
            .into_iter()
            .filter(|&id| id != me)
            .filter_map(|id| self.info_of(id))
            .collect();
        let writes = !matches!(op.kind, StoreOpKind::Get);
        let (read, write) = match op.kind {
            StoreOpKind::Get => (Some(Then::Answer), None),
            StoreOpKind::Put {
                value,
                ttl_ms,
                expect: Some(expect),
            } => (
                Some(Then::Write {
                    expect,
                    value: Some(value),
                    ttl_ms,
                }),
                None,
            ),
            StoreOpKind::Delete {
                expect: Some(expect),
            } => (
                Some(Then::Write {
                    expect,
                    value: None,
                    ttl_ms: 0,
                }),
                None,
            ),
            StoreOpKind::Put {
                value,
                ttl_ms,
                expect: None,
            } => (None, Some((Some(value), ttl_ms))),
            StoreOpKind::Delete { expect: None } => (None, Some((None, 0))),
            _ => {
                let failed = StoreResult::Failed("unknown store operation".into());
                self.reply_store(now, origin, op.id, failed);
                if writes {
                    self.release_key(now, key);
                }
                return;
            }
        };
        let nonce = self.nonce();
        let deadline = until.min(now + self.cfg.store_replica_timeout);
        let coord = Coord {
            origin,
            op: op.id,
            key,
            name: op.name.into(),
            replicas,
            answered: Vec::new(),
            need: 1,
            phase: Phase::Write {
                version: Version::NONE,
            },
            deadline,
            until,
            holds_key: writes,
        };
        let store = self.store_mut();
        store.coords.insert(nonce, coord);
        store.stats.coordinated += 1;
        self.set_timer(deadline, TimerKey::StoreCoord(nonce));
        match (read, write) {
            (Some(then), _) => self.begin_read(now, nonce, then),
            (None, Some((value, ttl_ms))) => {
                self.begin_write(now, nonce, value, ttl_ms, Version::NONE);
            }
            (None, None) => {}
        }
    }

    /// Reads the key here and asks the other replicas for theirs.
    fn begin_read(&mut self, now: Time, nonce: u64, then: Then) {
        let wall = self.wall_ms(now);
        let quorum = self.cfg.store_read_quorum;
        let me = self.me.id;
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let Some(key) = store.coords.get(&nonce).map(|c| c.key) else {
            return;
        };
        let local = store.get(key, wall);
        let Some(c) = store.coords.get_mut(&nonce) else {
            return;
        };
        c.need = quorum.min(c.replicas.len() + 1);
        c.answered = vec![me];
        c.phase = Phase::Read {
            then,
            best: local,
            seen: Vec::new(),
        };
        let replicas = c.replicas.clone();
        for r in replicas {
            self.send(r, Message::StoreRead { nonce, key });
        }
        self.check_coord(now, nonce);
    }

    /// Writes a new version here and sends it to the other replicas. The version is above
    /// `floor` (the newest a conditional write read) and every version this node has seen.
    fn begin_write(
        &mut self,
        now: Time,
        nonce: u64,
        value: Option<Bytes>,
        ttl_ms: u64,
        floor: Version,
    ) {
        let wall = self.wall_ms(now);
        let tombstone_ms =
            u64::try_from(self.cfg.store_tombstone_ttl.as_millis()).unwrap_or(u64::MAX);
        let (max_bytes, quorum) = (self.cfg.store_max_bytes, self.cfg.store_write_quorum);
        let me = self.me.id;
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let Some((key, name)) = store.coords.get(&nonce).map(|c| (c.key, c.name.clone())) else {
            return;
        };
        store.observe(floor, wall);
        let version = Version {
            hlc: store.tick(wall),
            node: super::low64(me.get()),
        };
        let expires_ms = match &value {
            Some(_) if ttl_ms > 0 => wall.saturating_add(ttl_ms),
            Some(_) => 0,
            None => wall.saturating_add(tombstone_ms),
        };
        let entry = StoreEntry {
            key,
            name: name.into(),
            version,
            expires_ms,
            value,
        };
        let stored = store.apply(&entry, max_bytes, wall);
        let Some(c) = store.coords.get_mut(&nonce) else {
            return;
        };
        c.need = quorum.min(c.replicas.len() + 1);
        c.answered = if stored { vec![me] } else { Vec::new() };
        c.phase = Phase::Write { version };
        let replicas = c.replicas.clone();
        for r in replicas {
            self.send(
                r,
                Message::StoreWrite {
                    nonce,
                    entries: vec![entry.clone()],
                },
            );
        }
        self.arm_store_sync(now);
        self.check_coord(now, nonce);
    }

    /// Finishes coordination `nonce` once its quorum answered.
    pub(super) fn check_coord(&mut self, now: Time, nonce: u64) {
        let done = self
            .store
            .as_ref()
            .and_then(|s| s.coords.get(&nonce))
            .is_some_and(|c| c.answered.len() >= c.need);
        if done {
            self.finish_coord(now, nonce);
        }
    }

    /// The replicas' time is up: finish with what answered.
    pub(crate) fn on_store_coord_timeout(&mut self, now: Time, nonce: u64) {
        self.finish_coord(now, nonce);
    }

    /// Ends a phase of coordination `nonce`: the answer to the origin, or (a conditional
    /// write whose version matched) the write phase.
    fn finish_coord(&mut self, now: Time, nonce: u64) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let Some(c) = store.coords.remove(&nonce) else {
            return;
        };
        let quorum = c.answered.len() >= c.need;
        if !quorum {
            store.stats.quorum_failures += 1;
        }
        let (origin, op, key) = (c.origin, c.op, c.key);
        let result = match c.phase {
            Phase::Write { version } if quorum => {
                self.publish_change(now, key, version);
                StoreResult::Written(version)
            }
            Phase::Write { .. } => StoreResult::Failed(format!(
                "write quorum not reached: {} of {} replicas stored it",
                c.answered.len(),
                c.need
            )),
            Phase::Read { .. } if !quorum => StoreResult::Failed(format!(
                "read quorum not reached: {} of {} replicas answered",
                c.answered.len(),
                c.need
            )),
            Phase::Read { then, best, seen } => {
                self.repair_read(now, key, best.as_ref(), &seen);
                match then {
                    Then::Answer => answer(best.as_ref()),
                    Then::Write {
                        expect,
                        value,
                        ttl_ms,
                    } => {
                        let cur = current(best.as_ref());
                        if cur == expect {
                            let floor = best.as_ref().map_or(Version::NONE, |b| b.version);
                            let deadline = c.until.min(now + self.cfg.store_replica_timeout);
                            let store = self.store_mut();
                            let phase = Phase::Write {
                                version: Version::NONE,
                            };
                            store.coords.insert(
                                nonce,
                                Coord {
                                    deadline,
                                    phase,
                                    ..c
                                },
                            );
                            self.set_timer(deadline, TimerKey::StoreCoord(nonce));
                            self.begin_write(now, nonce, value, ttl_ms, floor);
                            return;
                        }
                        self.store_mut().stats.conflicts += 1;
                        StoreResult::Conflict(cur)
                    }
                }
            }
        };
        self.reply_store(now, origin, op, result);
        if c.holds_key {
            self.release_key(now, key);
        }
    }

    /// Copies the newest entry a read found to the replicas that answered older ones (and here).
    fn repair_read(
        &mut self,
        now: Time,
        key: Key,
        best: Option<&StoreEntry>,
        seen: &[(NodeInfo, Version)],
    ) {
        let Some(best) = best else {
            return;
        };
        let wall = self.wall_ms(now);
        let max_bytes = self.cfg.store_max_bytes;
        let store = self.store_mut();
        if store
            .get(key, wall)
            .is_none_or(|e| e.version < best.version)
        {
            store.apply(best, max_bytes, wall);
            self.arm_store_sync(now);
        }
        let store = self.store_mut();
        let stale: Vec<NodeInfo> = seen
            .iter()
            .filter(|(_, v)| *v < best.version)
            .map(|(r, _)| *r)
            .collect();
        store.stats.entries_repaired += stale.len() as u64;
        for r in stale {
            self.send(
                r,
                Message::StoreWrite {
                    nonce: 0,
                    entries: vec![best.clone()],
                },
            );
        }
    }

    /// The write of `key` under way here is over: start the next one queued behind it (those
    /// whose origin gave up meanwhile are dropped).
    fn release_key(&mut self, now: Time, key: Key) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let next = loop {
            let Some(q) = store.busy.get_mut(&key) else {
                return;
            };
            match q.pop_front() {
                Some(w) if w.deadline > now => break Some(w),
                Some(_) => {}
                None => break None,
            }
        };
        match next {
            Some(w) => self.start_coord(now, key, w.origin, w.op, w.deadline),
            None => {
                store.busy.remove(&key);
            }
        }
    }

    /// Sends the one answer to an operation's origin (here: handled at the end of this input).
    fn reply_store(&mut self, now: Time, origin: NodeInfo, op: u64, result: StoreResult) {
        let msg = Message::StoreReply {
            op,
            result: Box::new(result),
        };
        self.send_or_loop(now, origin, msg);
    }

    /// Publishes an acknowledged write of `key` on its watch topic, when someone watches (the
    /// watchers' tree reaches this node, the key's home and so the tree's root).
    fn publish_change(&mut self, now: Time, key: Key, version: Version) {
        if !self.groups.has_tree(key) {
            return;
        }
        let wall = self.wall_ms(now);
        let Some(e) = self.store.as_ref().and_then(|s| s.get(key, wall)) else {
            return;
        };
        if e.version != version {
            return;
        }
        let change = petal_protocol::Change {
            version,
            expires_ms: if e.value.is_some() { e.expires_ms } else { 0 },
            value: e.value,
        };
        let _ = self.publish_to(now, key, change.encode());
    }
}
