//! The replicas' side: storing writes and answering reads for a home, and repair between
//! replicas (digests by bucket, key lists for the buckets that differ, copies of the newer
//! entries both ways), sweeps of expired entries, and the handoff of keys this node no
//! longer holds.

use std::collections::{BTreeMap, BTreeSet};

use petal_protocol::codec::MAX_LIST_LEN;
use petal_protocol::{Key, Message, NodeId, NodeInfo, STORE_BUCKETS, StoreEntry, Version};

use super::{HandoffBatch, MAX_BATCH_BYTES, Phase, key_of, low64};
use crate::node::{Node, TimerKey, splitmix};
use crate::time::Time;

/// The digest bucket of `key`.
fn bucket(key: Key) -> usize {
    (key.get() as usize) % STORE_BUCKETS
}

/// A key and version's share of its bucket's hash (buckets XOR their entries' shares).
fn share(key: Key, v: Version) -> u64 {
    let k = key.get();
    splitmix(low64(k) ^ low64(k >> 64).rotate_left(29) ^ splitmix(v.hlc ^ v.node.rotate_left(17)))
}

impl Node {
    /// Entries for this node to store: a home's write (acknowledged when `nonce` is not 0),
    /// a repair or a handoff. Entries over the limits, or whose key is not their name's, are
    /// refused.
    pub(crate) fn on_store_write(
        &mut self,
        now: Time,
        from: NodeInfo,
        nonce: u64,
        entries: Vec<StoreEntry>,
    ) {
        let wall = self.wall_ms(now);
        let (max_key, max_value) = (self.cfg.store_max_key, self.cfg.store_max_value);
        let max_bytes = self.cfg.store_max_bytes;
        let store = self.store_mut();
        let mut stored = true;
        for e in &entries {
            let valid = e.name.len() <= max_key
                && e.value.as_ref().is_none_or(|v| v.len() <= max_value)
                && key_of(&e.name) == e.key;
            stored &= valid && store.apply(e, max_bytes, wall);
        }
        if nonce != 0 {
            self.send(from, Message::StoreAck { nonce, stored });
        }
        self.arm_store_sync(now);
    }

    /// A replica stored (or refused) a write this node sent: a coordinated write's quorum, or
    /// a handoff's progress.
    pub(crate) fn on_store_ack(&mut self, now: Time, from: NodeInfo, nonce: u64, stored: bool) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if let Some(c) = store.coords.get_mut(&nonce) {
            let asked = c.replicas.iter().any(|r| r.id == from.id);
            if stored
                && asked
                && matches!(c.phase, Phase::Write { .. })
                && !c.answered.contains(&from.id)
            {
                c.answered.push(from.id);
            }
            self.check_coord(now, nonce);
            return;
        }
        if !stored || store.handoffs.get(&nonce).is_none_or(|b| b.to != from.id) {
            return;
        }
        let Some(batch) = store.handoffs.remove(&nonce) else {
            return;
        };
        let mut done = Vec::new();
        for (key, version) in batch.keys {
            if let Some((v, waiting)) = store.handing.get_mut(&key)
                && *v == version
            {
                waiting.remove(&from.id);
                if waiting.is_empty() {
                    store.handing.remove(&key);
                    done.push((key, version));
                }
            }
        }
        // Every replica has it: drop it here, unless it changed or this node holds it again.
        for (key, version) in done {
            if self.replicas_of(key).contains(&self.me.id) {
                continue;
            }
            let Some(store) = self.store.as_mut() else {
                return;
            };
            if store
                .entries
                .get(&key)
                .is_some_and(|s| s.version == version)
                && let Some(s) = store.entries.remove(&key)
            {
                store.bytes -= s.cost();
                store.stats.entries_handed_off += 1;
            }
        }
    }

    /// A home asks for this node's entry of `key`.
    pub(crate) fn on_store_read(&mut self, now: Time, from: NodeInfo, nonce: u64, key: Key) {
        let wall = self.wall_ms(now);
        let entry = self
            .store
            .as_ref()
            .and_then(|s| s.get(key, wall))
            .map(Box::new);
        self.send(from, Message::StoreValue { nonce, entry });
    }

    /// A replica's answer to a read this node coordinates.
    pub(crate) fn on_store_value(
        &mut self,
        now: Time,
        from: NodeInfo,
        nonce: u64,
        entry: Option<Box<StoreEntry>>,
    ) {
        let wall = self.wall_ms(now);
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let Some(c) = store.coords.get_mut(&nonce) else {
            return;
        };
        let key = c.key;
        let asked = c.replicas.iter().any(|r| r.id == from.id);
        let Phase::Read { best, seen, .. } = &mut c.phase else {
            return;
        };
        if !asked || c.answered.contains(&from.id) {
            return;
        }
        let tombstone_ms = store.tombstone_ms;
        let entry = entry
            .map(|e| *e)
            .filter(|e| {
                e.key == key && e.version.millis() <= wall.saturating_add(super::MAX_DRIFT_MS)
            })
            .and_then(|e| super::settle(e, wall, tombstone_ms));
        let version = entry.as_ref().map_or(Version::NONE, |e| e.version);
        seen.push((from, version));
        if let Some(e) = entry
            && best.as_ref().is_none_or(|b| b.version < e.version)
        {
            *best = Some(e);
        }
        c.answered.push(from.id);
        store.observe(version, wall);
        self.check_coord(now, nonce);
    }

    /// The leaf set changed: repair soon (a new replica gets its keys, a dead one's are
    /// copied on, keys this node no longer holds are handed off).
    pub(crate) fn store_leaf_changed(&mut self, now: Time) {
        let at = now + self.cfg.store_handoff_delay;
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if !store.entries.is_empty() && store.sync_at > at {
            store.sync_at = at;
            self.set_timer(at, TimerKey::StoreSync);
        }
    }

    /// Arms the periodic repair once this node holds a key.
    pub(super) fn arm_store_sync(&mut self, now: Time) {
        let at = now + self.cfg.store_sync_interval;
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if !store.entries.is_empty() && store.sync_at == Time::MAX {
            store.sync_at = at;
            self.set_timer(at, TimerKey::StoreSync);
        }
    }

    /// The periodic repair: sweep what expired, send each replica this node shares keys with
    /// a digest of them, and hand off the keys it no longer holds.
    pub(crate) fn on_store_sync(&mut self, now: Time) {
        let wall = self.wall_ms(now);
        let me = self.me.id;
        let ready = self.is_ready();
        let Some(store) = self.store.as_mut() else {
            return;
        };
        store.sync_at = Time::MAX;
        store.sweep(wall);
        let held: Vec<(Key, Version)> =
            store.entries.iter().map(|(k, s)| (*k, s.version)).collect();
        store.handoffs.clear();
        store.handing.clear();
        if !ready {
            self.arm_store_sync(now);
            return;
        }
        let mut digests: BTreeMap<NodeId, [u64; STORE_BUCKETS]> = BTreeMap::new();
        let mut handoff: BTreeMap<NodeId, Vec<(Key, Version)>> = BTreeMap::new();
        let mut handing = BTreeMap::new();
        for (k, v) in held {
            let reps = self.replicas_of(k);
            if reps.contains(&me) {
                for &r in reps.iter().filter(|&&r| r != me) {
                    digests.entry(r).or_insert([0; STORE_BUCKETS])[bucket(k)] ^= share(k, v);
                }
            } else {
                handing.insert(k, (v, reps.iter().copied().collect::<BTreeSet<_>>()));
                for r in reps {
                    handoff.entry(r).or_default().push((k, v));
                }
            }
        }
        for (peer, buckets) in digests {
            if let Some(info) = self.info_of(peer) {
                self.send(
                    info,
                    Message::StoreSync {
                        buckets: buckets.to_vec(),
                    },
                );
                self.store_mut().stats.syncs_sent += 1;
            }
        }
        self.store_mut().handing = handing;
        for (peer, keys) in handoff {
            if let Some(info) = self.info_of(peer) {
                self.send_entries(now, info, &keys, true);
            }
        }
        self.arm_store_sync(now);
    }

    /// Sends this node's entries of `keys` to `to`, in batches; each batch is a handoff
    /// awaiting acknowledgement when `handoff`.
    fn send_entries(&mut self, now: Time, to: NodeInfo, keys: &[(Key, Version)], handoff: bool) {
        let wall = self.wall_ms(now);
        let mut batch: Vec<StoreEntry> = Vec::new();
        let mut bytes = 0;
        let flush = |node: &mut Node, batch: &mut Vec<StoreEntry>| {
            if batch.is_empty() {
                return;
            }
            let entries = std::mem::take(batch);
            let nonce = if handoff { node.nonce() } else { 0 };
            if handoff {
                let keys = entries.iter().map(|e| (e.key, e.version)).collect();
                node.store_mut()
                    .handoffs
                    .insert(nonce, HandoffBatch { to: to.id, keys });
            } else {
                node.store_mut().stats.entries_repaired += entries.len() as u64;
            }
            node.send(to, Message::StoreWrite { nonce, entries });
        };
        for &(k, _) in keys {
            let Some(e) = self.store.as_ref().and_then(|s| s.get(k, wall)) else {
                continue;
            };
            bytes += e.heap_bytes() + 64;
            batch.push(e);
            if bytes >= MAX_BATCH_BYTES || batch.len() >= MAX_LIST_LEN {
                flush(self, &mut batch);
                bytes = 0;
            }
        }
        flush(self, &mut batch);
    }

    /// The keys and versions this node holds, of those it shares with `peer` (both are
    /// replicas in this node's view) and in the buckets of `mask`, expired ones left out.
    fn shared_keys(&self, now: Time, peer: NodeId, mask: u32) -> Vec<(Key, Version)> {
        let wall = self.wall_ms(now);
        let Some(store) = self.store.as_ref() else {
            return Vec::new();
        };
        store
            .entries
            .iter()
            .filter(|(k, s)| mask & (1 << bucket(**k)) != 0 && !s.gone(wall, store.tombstone_ms))
            .filter(|(k, _)| {
                let reps = self.replicas_of(**k);
                reps.contains(&peer) && reps.contains(&self.me.id)
            })
            .map(|(k, s)| (*k, s.version))
            .collect()
    }

    /// A replica's digest of the keys it shares with this node: answer the buckets that
    /// differ with this node's keys in them.
    pub(crate) fn on_store_digest(&mut self, now: Time, from: NodeInfo, buckets: &[u64]) {
        if buckets.len() != STORE_BUCKETS {
            return;
        }
        let mut mine = [0u64; STORE_BUCKETS];
        for (k, v) in self.shared_keys(now, from.id, u32::MAX) {
            mine[bucket(k)] ^= share(k, v);
        }
        let mask = (0..STORE_BUCKETS)
            .filter(|&b| mine[b] != buckets[b])
            .fold(0u32, |m, b| m | 1 << b);
        if mask != 0 {
            self.send_keys(now, from, mask, true);
        }
    }

    /// Sends this node's keys in the buckets of `mask` that it shares with `to`.
    fn send_keys(&mut self, now: Time, to: NodeInfo, mask: u32, reply: bool) {
        let mut keys = self.shared_keys(now, to.id, mask);
        // Beyond one message's list, the rest is left out: the peer copies those over again
        // (a waste, not a loss), and the next round compares again.
        keys.truncate(MAX_LIST_LEN);
        self.send(
            to,
            Message::StoreKeys {
                buckets: mask,
                keys,
                reply,
            },
        );
    }

    /// A replica's keys in the buckets that differ: copy it what it lacks or holds older, and
    /// (when asked) send this node's list so that it does the same.
    pub(crate) fn on_store_keys(
        &mut self,
        now: Time,
        from: NodeInfo,
        mask: u32,
        keys: Vec<(Key, Version)>,
        reply: bool,
    ) {
        let theirs: BTreeMap<Key, Version> = keys
            .into_iter()
            .filter(|(k, _)| mask & (1 << bucket(*k)) != 0)
            .collect();
        let push: Vec<(Key, Version)> = self
            .shared_keys(now, from.id, mask)
            .into_iter()
            .filter(|(k, v)| theirs.get(k).is_none_or(|t| t < v))
            .collect();
        self.send_entries(now, from, &push, false);
        if reply {
            self.send_keys(now, from, mask, false);
        }
    }
}
