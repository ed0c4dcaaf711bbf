//! The replicated key-value store: each key lives on the `k` nodes closest to the hash of its
//! name (its *replicas*; the closest is its *home*), all in the home's leaf set, as in PAST and
//! DHash.
//!
//! - **Operations** ([`Node::kv`]): get, put and delete, each optionally conditional on the
//!   key's current version (compare-and-set), puts with a time to live. The operation is routed
//!   to the key's home, which coordinates it and answers the origin node directly; the origin
//!   enforces the timeout and reports exactly one [`crate::Event::KvDone`].
//! - **Versions** are hybrid logical clock readings of the home that wrote them (wall-clock
//!   milliseconds, a counter, the node's id as tie-break): plain puts and deletes are last
//!   writer wins; every version a node sees moves its clock forward, so a home's new version
//!   is above every version it has seen of the key.
//! - **Quorums**: a write is stored at the home, sent to the other replicas and acknowledged
//!   once `W` replicas (home included) hold it; a read asks the others and answers with the
//!   newest of the first `R` answers (home included), repairing the stale replicas it saw. A
//!   conditional write reads first, then writes; writes to one key run one at a time at its
//!   home, so two conditional writes at one home cannot both succeed on one version.
//! - **Repair** (`sync`): every `store_sync_interval`, and soon after the leaf set changed,
//!   a node sends each replica it shares keys with a digest of them (16 bucket hashes); the
//!   buckets that differ are compared key by key and the newer entries copied both ways. Keys
//!   a node no longer holds (a closer node joined) are handed to their replicas and dropped
//!   once every one acknowledged them.
//! - **Expiry**: a value with a time to live is never returned after it expires (each replica
//!   checks on read and drops it on its next sweep); a deletion leaves a tombstone for
//!   `store_tombstone_ttl`, so that a stale replica cannot bring the value back.
//!
//! The state is allocated on first use (a node that never stores a key pays one pointer).

mod external;
mod home;
mod identity;
mod lease;
mod sync;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use petal_protocol::{
    Key, NodeId, NodeInfo, StoreEntry, StoreOp, StoreOpKind, StoreResult, Version,
};

pub use external::MemoryRegistry;
pub use identity::{IdResult, REGISTRY_PREFIX, registry_key};
pub use petal_protocol::{Change, watch_topic};

use crate::app::{ConnId, ConnIndex};
use crate::node::{Node, TimerKey};
use crate::time::Time;

/// The low 64 bits of a ring id or key.
#[expect(
    clippy::cast_possible_truncation,
    reason = "keeping the low 64 bits is the point"
)]
pub(crate) const fn low64(x: u128) -> u64 {
    x as u64
}

/// The ring key of the stored key called `name`: the key of its watch topic
/// ([`petal_protocol::watch_topic`]), so that the home of a key is the root of its watchers'
/// tree.
pub fn key_of(name: &str) -> Key {
    crate::GroupKind::Topic.key(&petal_protocol::watch_topic(name))
}

/// Fixed cost counted per stored entry besides its name and value (map node, version, expiry).
const ENTRY_OVERHEAD: u64 = 64;
/// Most writes queued at a home behind an earlier write of the same key.
const MAX_QUEUED_PER_KEY: usize = 64;
/// Versions more than this far ahead of the local wall clock are refused (a peer cannot move
/// the clock to its end, after which no write of a key could ever win).
const MAX_DRIFT_MS: u64 = 24 * 3600 * 1000;

/// Most bytes of entries one `StoreWrite` carries (repairs and handoffs are split).
const MAX_BATCH_BYTES: usize = 256 << 10;

/// Counters of the store's work on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Operations issued here, and how they ended.
    pub ops_issued: u64,
    /// Operations issued here that timed out.
    pub ops_timed_out: u64,
    /// Operations this node coordinated as a key's home.
    pub coordinated: u64,
    /// Coordinated operations that failed for lack of a quorum.
    pub quorum_failures: u64,
    /// Conditional writes refused because the version differed.
    pub conflicts: u64,
    /// Entries written here (as home or replica), newer than what was held.
    pub entries_written: u64,
    /// Entries refused because the store was full.
    pub entries_refused: u64,
    /// Entries copied to a stale replica by a read or by anti-entropy.
    pub entries_repaired: u64,
    /// Entries handed to their replicas and dropped here (this node no longer holds them).
    pub entries_handed_off: u64,
    /// Entries dropped because they expired (values with a time to live, old tombstones).
    pub entries_expired: u64,
    /// Anti-entropy digests sent.
    pub syncs_sent: u64,
}

/// What this node holds of one key.
#[derive(Clone, Debug)]
struct Stored {
    name: Box<str>,
    version: Version,
    /// Wall-clock milliseconds (0: never).
    expires_ms: u64,
    /// `None`: a deletion (tombstone).
    value: Option<Bytes>,
}

impl Stored {
    fn cost(&self) -> u64 {
        ENTRY_OVERHEAD + self.name.len() as u64 + self.value.as_ref().map_or(0, |v| v.len() as u64)
    }

    /// True once nothing of the entry is kept: a tombstone past its expiry, or a value past
    /// its expiry plus `tombstone_ms` (it was a tombstone since it expired).
    fn gone(&self, wall_ms: u64, tombstone_ms: u64) -> bool {
        let end = match self.value {
            Some(_) => self.expires_ms.saturating_add(tombstone_ms),
            None => self.expires_ms,
        };
        self.expires_ms != 0 && end <= wall_ms
    }

    fn entry(&self, key: Key) -> StoreEntry {
        StoreEntry {
            key,
            name: self.name.to_string(),
            version: self.version,
            expires_ms: self.expires_ms,
            value: self.value.clone(),
        }
    }
}

/// What `e` is at wall-clock `wall_ms`: itself while its value lives; once the value
/// expired, a tombstone of the same version (so that no older version a stale replica holds
/// can come back) until `tombstone_ms` later; then nothing.
fn settle(mut e: StoreEntry, wall_ms: u64, tombstone_ms: u64) -> Option<StoreEntry> {
    if e.value.is_some() && e.expires_ms != 0 && e.expires_ms <= wall_ms {
        e.value = None;
        e.expires_ms = e.expires_ms.saturating_add(tombstone_ms);
    }
    (e.value.is_some() || e.expires_ms == 0 || e.expires_ms > wall_ms).then_some(e)
}

/// An operation issued here, awaiting its answer.
#[derive(Clone, Debug)]
struct Issued {
    owner: Owner,
    deadline: Time,
    /// Sent to the driver's registry ([`crate::Event::RegistryOp`]), not into the overlay.
    external: bool,
}

/// Who issued a store operation, and so who hears its outcome.
#[derive(Clone, Debug)]
pub(super) enum Owner {
    /// A connection, under its own id for it ([`crate::Event::KvDone`]).
    App(ConnId, u64),
    /// This node's lease of an identity it holds (its registry entry).
    Lease(Box<str>),
    /// An identity operation's read of the registry (by identity operation id).
    Lookup(u64),
}

/// What a home does with an operation once its read phase is over.
#[derive(Clone, Debug)]
enum Then {
    /// Answer a get.
    Answer,
    /// A conditional write: write if the newest version is `expect`.
    Write {
        expect: Version,
        /// The value (`None`: a delete).
        value: Option<Bytes>,
        ttl_ms: u64,
    },
}

/// An operation this node coordinates as the key's home.
#[derive(Clone, Debug)]
struct Coord {
    origin: NodeInfo,
    /// The origin's id for the operation.
    op: u64,
    key: Key,
    name: Box<str>,
    /// The other replicas asked.
    replicas: Vec<NodeInfo>,
    /// Who answered (home included), so that a repeated answer counts once.
    answered: Vec<NodeId>,
    /// Answers needed (home included).
    need: usize,
    phase: Phase,
    deadline: Time,
    /// The origin's deadline: no phase waits past it.
    until: Time,
    /// This is the write under way for its key (later writes of the key queue behind it).
    holds_key: bool,
}

#[derive(Clone, Debug)]
enum Phase {
    /// Reading: the newest entry so far, and the version each other replica answered with
    /// (those older than the newest are repaired).
    Read {
        then: Then,
        best: Option<StoreEntry>,
        seen: Vec<(NodeInfo, Version)>,
    },
    /// Writing `version`: acknowledgements counted in `answered`.
    Write { version: Version },
}

/// A write waiting at its home for an earlier write of the same key.
#[derive(Clone, Debug)]
struct Queued {
    origin: NodeInfo,
    op: StoreOp,
    deadline: Time,
}

/// A handoff under way: entries sent to one replica, by nonce.
#[derive(Clone, Debug)]
struct HandoffBatch {
    to: NodeId,
    keys: Vec<(Key, Version)>,
}

/// The store's state on one node (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Store {
    entries: BTreeMap<Key, Stored>,
    /// Bytes of `entries` as counted against `store_max_bytes`.
    bytes: u64,
    /// The hybrid logical clock: the greatest reading issued or seen.
    hlc: u64,
    /// Operations issued here, by node id.
    issued: BTreeMap<u64, Issued>,
    /// Each connection's ids for its operations.
    names: ConnIndex,
    /// Operations coordinated here, by nonce.
    coords: BTreeMap<u64, Coord>,
    /// Keys with a write under way at this home, and the writes queued behind it.
    busy: BTreeMap<Key, VecDeque<Queued>>,
    /// Handoffs under way (by nonce), and for each key handed off the replicas that have not
    /// acknowledged it yet, with the version handed.
    handoffs: BTreeMap<u64, HandoffBatch>,
    handing: BTreeMap<Key, (Version, BTreeSet<NodeId>)>,
    /// When the next repair runs (`Time::MAX`: none armed).
    sync_at: Time,
    /// How long deletions (and expired values) are kept as tombstones, in milliseconds.
    tombstone_ms: u64,
    /// Unix time in milliseconds at [`Time`] zero (see [`Node::set_wall_clock`]).
    wall_offset_ms: u64,
    /// Identities held by local connections, their leases and operations.
    ids: identity::Identities,
    /// Identity registries live in the driver's registry (see [`Node::set_external_registry`]).
    external_registry: bool,
    /// Operations this node took as a key's home lately (origin, its id): a copy rerouted
    /// while the first was only late is not run twice (a plain put run again after another
    /// client's write would undo it).
    seen: crate::recent::Recent<(NodeId, u64)>,
    stats: StoreStats,
}

impl Store {
    fn new(tombstone_ms: u64) -> Self {
        Self {
            sync_at: Time::MAX,
            tombstone_ms,
            ..Self::default()
        }
    }

    /// Operations under way (issued here, coordinated here, queued here).
    fn ops(&self) -> usize {
        self.issued.len() + self.coords.len() + self.busy.values().map(VecDeque::len).sum::<usize>()
    }

    /// Moves the clock past `v` (every version seen), unless `v` is implausibly far ahead of
    /// the wall clock (then false: the caller refuses it).
    fn observe(&mut self, v: Version, wall_ms: u64) -> bool {
        if v.millis() > wall_ms.saturating_add(MAX_DRIFT_MS) {
            return false;
        }
        self.hlc = self.hlc.max(v.hlc);
        true
    }

    /// A new clock reading at wall-clock `wall_ms`: above every reading issued or seen.
    fn tick(&mut self, wall_ms: u64) -> u64 {
        self.hlc = self
            .hlc
            .saturating_add(1)
            .max(wall_ms.saturating_mul(1 << 16));
        self.hlc
    }

    /// Stores `e` unless this node holds the same or a newer version. Returns whether it holds
    /// `e`'s version (or a newer one) now: false only when the store is full.
    fn apply(&mut self, e: &StoreEntry, max_bytes: u64, wall_ms: u64) -> bool {
        if !self.observe(e.version, wall_ms) {
            return false;
        }
        let old = self.entries.get(&e.key);
        if old.is_some_and(|o| o.version >= e.version) {
            return true;
        }
        let Some(e) = settle(e.clone(), wall_ms, self.tombstone_ms) else {
            // Nothing to keep: the entry is over everywhere (and an older one here must not
            // outlive it).
            if let Some(o) = self.entries.remove(&e.key) {
                self.bytes -= o.cost();
            }
            return true;
        };
        let new = Stored {
            name: e.name.as_str().into(),
            version: e.version,
            expires_ms: e.expires_ms,
            value: e.value,
        };
        let freed = old.map_or(0, Stored::cost);
        if self.bytes - freed + new.cost() > max_bytes {
            self.stats.entries_refused += 1;
            return false;
        }
        self.bytes = self.bytes - freed + new.cost();
        self.entries.insert(e.key, new);
        self.stats.entries_written += 1;
        true
    }

    /// This node's entry of `key` as it stands at `wall_ms` (an expired value as a tombstone;
    /// nothing once that is over).
    fn get(&self, key: Key, wall_ms: u64) -> Option<StoreEntry> {
        let s = self.entries.get(&key)?;
        settle(s.entry(key), wall_ms, self.tombstone_ms)
    }

    /// Drops what is over and turns expired values into tombstones (their bytes freed).
    fn sweep(&mut self, wall_ms: u64) {
        let tombstone_ms = self.tombstone_ms;
        let mut freed = 0;
        let mut dropped = 0;
        self.entries.retain(|_, s| {
            if s.gone(wall_ms, tombstone_ms) {
                freed += s.cost();
                dropped += 1;
                return false;
            }
            if s.value.is_some() && s.expires_ms != 0 && s.expires_ms <= wall_ms {
                freed += s.value.as_ref().map_or(0, |v| v.len() as u64);
                s.value = None;
                s.expires_ms = s.expires_ms.saturating_add(tombstone_ms);
            }
            true
        });
        self.bytes -= freed;
        self.stats.entries_expired += dropped;
    }

    fn heap_bytes(&self) -> usize {
        let value = |kind: &StoreOpKind| match kind {
            StoreOpKind::Put { value, .. } => value.len(),
            _ => 0,
        };
        let coords: usize = self
            .coords
            .values()
            .map(|c| {
                std::mem::size_of::<Coord>()
                    + match &c.phase {
                        Phase::Read {
                            then: Then::Write { value: Some(v), .. },
                            ..
                        } => v.len(),
                        _ => 0,
                    }
            })
            .sum();
        let queued: usize = self
            .busy
            .values()
            .flatten()
            .map(|q| std::mem::size_of::<Queued>() + q.op.name.len() + value(&q.op.kind))
            .sum();
        usize::try_from(self.bytes).unwrap_or(usize::MAX)
            + self.issued.len() * 64
            + coords
            + queued
            + self.handing.len() * 96
    }
}

/// The answer a read gives: the entry's value, or not found (absent, deleted, expired).
fn answer(best: Option<&StoreEntry>) -> StoreResult {
    match best {
        Some(StoreEntry {
            version,
            expires_ms,
            value: Some(value),
            ..
        }) => StoreResult::Found {
            version: *version,
            value: value.clone(),
            expires_ms: *expires_ms,
        },
        _ => StoreResult::NotFound,
    }
}

/// The version a conditional write compares with: the value's, or none.
fn current(best: Option<&StoreEntry>) -> Version {
    match best {
        Some(e) if e.value.is_some() => e.version,
        _ => Version::NONE,
    }
}

impl Node {
    /// Wall-clock milliseconds at `now`: the store's clock (expiry, versions).
    pub(crate) fn wall_ms(&self, now: Time) -> u64 {
        let offset = self.store.as_ref().map_or(0, |s| s.wall_offset_ms);
        (now.as_micros() / 1000).saturating_add(offset)
    }

    /// Sets the wall clock: `offset_ms` is the Unix time in milliseconds at [`Time`] zero.
    /// Versions and expiry times of stored keys use it, so nodes whose clocks agree order
    /// concurrent writes by time (a driver on a real machine sets it; a simulator whose nodes
    /// share one clock leaves it at 0).
    pub fn set_wall_clock(&mut self, offset_ms: u64) {
        self.store_mut().wall_offset_ms = offset_ms;
    }

    fn store_mut(&mut self) -> &mut Store {
        let tombstone_ms =
            u64::try_from(self.cfg.store_tombstone_ttl.as_millis()).unwrap_or(u64::MAX);
        self.store
            .get_or_insert_with(|| Box::new(Store::new(tombstone_ms)))
    }

    /// Counters of the store's work here.
    pub fn store_stats(&self) -> StoreStats {
        self.store
            .as_ref()
            .map_or_else(StoreStats::default, |s| s.stats)
    }

    /// Keys this node holds (as home or replica; tombstones included) and their bytes.
    pub fn store_size(&self) -> (usize, u64) {
        self.store
            .as_ref()
            .map_or((0, 0), |s| (s.entries.len(), s.bytes))
    }

    /// This node's entry of the key called `name`, if it holds one (expired ones left out):
    /// for tests and oracles, which compare replicas.
    pub fn store_entry(&self, now: Time, name: &str) -> Option<StoreEntry> {
        let wall = self.wall_ms(now);
        self.store.as_ref()?.get(key_of(name), wall)
    }

    /// Starts store operation `kind` on the key called `name` for connection `conn`, under the
    /// connection's id `op` (unique among its operations under way). Its one outcome comes as
    /// [`crate::Event::KvDone`]: the home's answer, or [`StoreResult::TimedOut`] after
    /// `timeout_ms`.
    pub fn kv(
        &mut self,
        now: Time,
        conn: ConnId,
        op: u64,
        name: &str,
        kind: petal_protocol::StoreOpKind,
        timeout_ms: u32,
    ) -> Result<(), crate::AppError> {
        use crate::AppError;
        self.running()?;
        if !self.locals.contains(conn) {
            return Err(AppError::UnknownConn);
        }
        if name.is_empty() || name.len() > self.cfg.store_max_key {
            return Err(AppError::Invalid(
                "key name empty or longer than store_max_key",
            ));
        }
        if let petal_protocol::StoreOpKind::Put { value, .. } = &kind
            && value.len() > self.cfg.store_max_value
        {
            return Err(AppError::Invalid("value larger than store_max_value"));
        }
        if !matches!(kind, petal_protocol::StoreOpKind::Get)
            && name.starts_with(identity::REGISTRY_PREFIX)
        {
            return Err(AppError::Invalid(
                "keys under petal-id/ are identity registries: read-only",
            ));
        }
        if timeout_ms == 0 {
            return Err(AppError::Invalid("zero timeout"));
        }
        let max_conn = self.cfg.max_conn_requests as usize;
        let max_ops = self.cfg.store_max_ops;
        let id = self.nonce();
        let store = self.store_mut();
        let (in_use, count) = store.names.lookup(conn, op);
        if in_use {
            return Err(AppError::Invalid(
                "store operation id in use on this connection",
            ));
        }
        if count >= max_conn || store.ops() >= max_ops {
            return Err(AppError::Full("store operations"));
        }
        store.names.insert(conn, op, id);
        self.held.cause = crate::budget::Owner::conn(conn);
        self.issue_op(now, id, Owner::App(conn, op), name, kind, timeout_ms);
        self.drain_loopback(now);
        self.held.cause = crate::budget::Owner::NODE;
        Ok(())
    }

    /// Issues store operation `id` for `owner` (arguments checked) and routes it to the key's
    /// home.
    pub(super) fn issue_op(
        &mut self,
        now: Time,
        id: u64,
        owner: Owner,
        name: &str,
        kind: petal_protocol::StoreOpKind,
        timeout_ms: u32,
    ) {
        let deadline = now + std::time::Duration::from_millis(u64::from(timeout_ms));
        let store = self.store_mut();
        let external = store.external_registry && name.starts_with(REGISTRY_PREFIX);
        store.issued.insert(
            id,
            Issued {
                owner,
                deadline,
                external,
            },
        );
        store.stats.ops_issued += 1;
        self.set_timer(deadline, TimerKey::StoreOp(id));
        if external {
            let wall_ms = self.wall_ms(now);
            self.emit(crate::Event::RegistryOp {
                op: id,
                name: name.to_owned(),
                kind,
                timeout_ms,
                wall_ms,
            });
            return;
        }
        let msg = petal_protocol::RouteMsg {
            key: key_of(name),
            origin: self.me,
            hops: 0,
            hop_seq: 0,
            body: petal_protocol::Routed::Store(Box::new(StoreOp {
                id,
                timeout_ms,
                name: name.to_owned(),
                kind,
            })),
        };
        self.forward(now, Box::new(msg), Vec::new());
    }

    /// The outcome of an operation issued here: reported once (to its owner), then forgotten.
    pub(crate) fn on_store_reply(&mut self, now: Time, op: u64, result: StoreResult) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let Some(i) = store.issued.remove(&op) else {
            return;
        };
        if result == StoreResult::TimedOut {
            store.stats.ops_timed_out += 1;
        }
        match i.owner {
            Owner::App(conn, app) => {
                store.names.remove(conn, app);
                self.emit(crate::Event::KvDone {
                    conn,
                    op: app,
                    result,
                });
            }
            Owner::Lease(identity) => self.on_lease_result(now, &identity, result),
            Owner::Lookup(id) => self.on_lookup_result(now, id, result),
        }
    }

    /// Forgets the operations of a connection that closed (it hears nothing more).
    pub(crate) fn store_forget_conn(&mut self, now: Time, conn: ConnId) {
        if let Some(store) = self.store.as_mut() {
            let ids: Vec<u64> = store.names.of(conn).map(|(_, id)| id).collect();
            for id in ids {
                store.issued.remove(&id);
            }
            store.names.remove_conn(conn);
            self.identities_forget_conn(now, conn);
        }
    }

    /// True when the store's owner of `key` still holds deadline `t`.
    pub(crate) fn store_timer_live(&self, key: TimerKey, t: Time) -> bool {
        let Some(s) = self.store.as_ref() else {
            return false;
        };
        match key {
            TimerKey::StoreOp(id) => s.issued.get(&id).is_some_and(|i| i.deadline == t),
            TimerKey::StoreCoord(id) => s.coords.get(&id).is_some_and(|c| c.deadline == t),
            TimerKey::StoreSync => s.sync_at == t,
            TimerKey::IdOp(_) | TimerKey::IdRetry(_) | TimerKey::IdLease => {
                self.identity_timer_live(key, t)
            }
            _ => false,
        }
    }

    /// Owners in the store that may hold a deadline.
    pub(crate) fn store_timer_owners(&self) -> usize {
        self.store
            .as_ref()
            .map_or(0, |s| s.issued.len() + s.coords.len() + 1)
            + self.identity_timer_owners()
    }

    pub(crate) fn store_heap_bytes(&self) -> usize {
        self.store
            .as_ref()
            .map_or(0, |s| std::mem::size_of::<Store>() + s.heap_bytes())
    }

    /// The replicas of `key` in this node's view, closest first: this node and the nearest
    /// live members of its leaf set, `store_replicas` in all (fewer in a smaller ring).
    pub(crate) fn replicas_of(&self, key: Key) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = std::iter::once(self.me.id)
            .chain(
                self.leaf_set()
                    .members()
                    .filter(|&id| !self.is_suspected(id)),
            )
            .collect();
        ids.sort_unstable_by(|a, b| {
            if a.closer_than(*b, key) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        ids.dedup();
        ids.truncate(self.cfg.store_replicas);
        ids
    }

    /// Asserts the store's invariants: byte count, every issued operation named once by its
    /// connection (which is registered) and timed, bounds.
    pub(crate) fn check_store_invariants(&self) {
        let Some(s) = self.store.as_ref() else {
            return;
        };
        let bytes: u64 = s.entries.values().map(Stored::cost).sum();
        assert_eq!(bytes, s.bytes, "store byte count");
        let named = s
            .names
            .check(self.cfg.max_conn_requests as usize, |c, app, id| {
                s.issued
                    .get(&id)
                    .is_some_and(|i| matches!(i.owner, Owner::App(ic, ia) if ic == c && ia == app))
            });
        let apps = s
            .issued
            .values()
            .filter(|i| matches!(i.owner, Owner::App(..)))
            .count();
        assert_eq!(named, apps, "issued operations named once");
        for i in s.issued.values() {
            if let Owner::App(c, _) = i.owner {
                assert!(self.locals.contains(c), "operation of a gone connection");
            }
        }
        self.check_identity_invariants();
        for (k, q) in &s.busy {
            assert!(q.len() <= MAX_QUEUED_PER_KEY, "queue over its bound");
            assert!(
                s.coords.values().any(|c| c.key == *k && c.holds_key),
                "a busy key without its write"
            );
        }
    }
}
