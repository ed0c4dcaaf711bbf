//! Identity addressing on top of the store: a connection registers identities
//! ([`Node::id_register`]); a message sent to an identity ([`Node::id_send`]) reaches the
//! connections that hold it, wherever they are attached; [`Node::id_who`] lists the nodes.
//!
//! The registry of identity `x` is the stored key `petal-id/x`, whose value lists the nodes
//! that hold `x`, one line each: `<node id hex> <address> <expiry ms>`. A node holding `x`
//! keeps its line under a lease (`identity_lease`): it renews it every third of a lease with a
//! compare-and-set (read, then write on the version read; a conflict reads again), and removes
//! it the same way when its last local holder lets go. A node that dies stops renewing: its
//! line expires within one lease, and the entry's time to live is the latest line's expiry.
//!
//! Sending reads the registry and delivers to each listed node directly ([`Message::IdDeliver`],
//! acknowledged); a node that no longer holds the identity says so, and when no node took the
//! message the sender reads the registry again (the identity moved) until the send's timeout.
//! A message reaches each holding connection at most once (a retried copy is recognised by its
//! sender's node id and delivery id).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use petal_protocol::{Message, NodeId, NodeInfo, StoreOpKind, StoreResult};

use super::Owner;
use crate::app::{AppError, ConnId, ConnIndex, Name};
use crate::node::{Event, Node, TimerKey};
use crate::time::Time;

/// Keys under this prefix are identity registries (applications may read them only).
pub const REGISTRY_PREFIX: &str = "petal-id/";

/// The stored key of identity `identity`'s registry.
pub fn registry_key(identity: &str) -> String {
    format!("{REGISTRY_PREFIX}{identity}")
}

/// Most identities one connection may hold.
const MAX_CONN_IDENTITIES: usize = 64;
/// Most registry reads one send makes (the identity moving under it).
const MAX_SEND_ATTEMPTS: u32 = 8;
/// Delivered messages remembered, to take a retried copy once.
const RECENT: usize = 4096;
/// Pause before reading the registry again after every listed node refused a message.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

pub use petal_protocol::IdResult;

/// A node's line in an identity's registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) node: NodeInfo,
    pub(super) expires_ms: u64,
}

/// Most nodes a registry entry lists (more are left out: a registry written by hand cannot
/// make a send fan out without bound).
const MAX_LINES: usize = 256;

/// The lines of a registry entry: one per node (the latest expiry), at most [`MAX_LINES`].
pub(super) fn parse_lines(value: &[u8]) -> Vec<Line> {
    let mut by_node: BTreeMap<NodeId, Line> = BTreeMap::new();
    for l in raw_lines(value) {
        let e = by_node.entry(l.node.id).or_insert(l);
        if l.expires_ms > e.expires_ms {
            *e = l;
        }
        if by_node.len() >= MAX_LINES {
            break;
        }
    }
    by_node.into_values().collect()
}

fn raw_lines(value: &[u8]) -> Vec<Line> {
    let Ok(text) = std::str::from_utf8(value) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            let id = u128::from_str_radix(w.next()?, 16).ok()?;
            let addr: SocketAddr = w.next()?.parse().ok()?;
            let expires_ms = w.next()?.parse().ok()?;
            Some(Line {
                node: NodeInfo {
                    id: NodeId(id),
                    addr,
                },
                expires_ms,
            })
        })
        .collect()
}

pub(super) fn encode_lines(lines: &[Line]) -> Bytes {
    let mut s = String::new();
    for l in lines {
        s.push_str(&format!("{} {} {}\n", l.node.id, l.node.addr, l.expires_ms));
    }
    Bytes::from(s)
}

/// This node's lease of one identity.
#[derive(Clone, Debug, Default)]
pub(super) struct Lease {
    /// When the line is renewed next (`Time::MAX`: a step is under way).
    pub(super) renew_at: Time,
    /// A read or a write of the registry is under way.
    pub(super) busy: bool,
    /// The last step read the registry (the next result is the write's).
    pub(super) writing: bool,
    /// The line is to be removed (no local holder left).
    pub(super) remove: bool,
    /// The line is in the registry (a write succeeded since the last removal).
    pub(super) listed: bool,
    /// Conflicts in a row.
    pub(super) conflicts: u32,
    /// What the write under way does: list this node (true) or remove its line.
    pub(super) write_lists: bool,
    /// Registrations waiting for the line to be in the registry.
    pub(super) waiting: Vec<u64>,
}

/// An identity operation of a connection.
#[derive(Clone, Debug)]
struct IdOp {
    conn: ConnId,
    app: u64,
    deadline: Time,
    kind: IdOpKind,
    /// The last failure of the registry this operation saw (reported at its deadline
    /// instead of a bare timeout).
    error: Option<Box<str>>,
}

#[derive(Clone, Debug)]
enum IdOpKind {
    Register {
        identity: Box<str>,
    },
    Who {
        identity: Box<str>,
        /// When to read the registry again after a failed read (`Time::MAX`: not waiting).
        retry_at: Time,
    },
    Send {
        identity: Box<str>,
        payload: Bytes,
        /// Registry reads so far.
        attempts: u32,
        /// Nodes asked and not answered yet.
        waiting: BTreeSet<NodeId>,
        /// Nodes that delivered.
        delivered: u32,
        /// When to read the registry again, or to stop waiting for silent nodes.
        retry_at: Time,
    },
}

/// The identities part of the store's state.
#[derive(Debug, Default)]
pub(super) struct Identities {
    /// Local connections holding each identity.
    pub(super) held: BTreeMap<Box<str>, BTreeSet<ConnId>>,
    /// Leases of the identities held here (and of those being removed).
    pub(super) leases: BTreeMap<Box<str>, Lease>,
    /// Operations by node id.
    ops: BTreeMap<u64, IdOp>,
    /// Each connection's ids for its operations.
    names: ConnIndex,
    /// When the lease timer is armed (`Time::MAX`: not armed).
    pub(super) lease_timer_at: Time,
    /// Messages delivered here lately: (sender's node, delivery id).
    recent: VecDeque<(NodeId, u64)>,
    recent_set: BTreeSet<(NodeId, u64)>,
}

impl Node {
    pub(super) fn ids(&mut self) -> &mut Identities {
        &mut self.store_mut().ids
    }

    pub(super) fn lease_ms(&self) -> u64 {
        u64::try_from(self.cfg.identity_lease.as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn registry_timeout_ms(&self) -> u32 {
        u32::try_from(self.cfg.identity_ack_timeout.as_millis() * 2).unwrap_or(u32::MAX)
    }

    /// Checks a connection's identity command and returns the node's id for it.
    fn id_op_start(
        &mut self,
        conn: ConnId,
        op: u64,
        identity: &str,
        timeout_ms: u32,
    ) -> Result<u64, AppError> {
        self.running()?;
        if !self.locals.contains(conn) {
            return Err(AppError::UnknownConn);
        }
        if identity.is_empty() || registry_key(identity).len() > self.cfg.store_max_key {
            return Err(AppError::Invalid(
                "identity empty or longer than store_max_key allows",
            ));
        }
        if timeout_ms == 0 {
            return Err(AppError::Invalid("zero timeout"));
        }
        let max_conn = self.cfg.max_conn_requests as usize;
        let max_ops = self.cfg.store_max_ops;
        let id = self.nonce();
        let store = self.store_mut();
        let (in_use, count) = store.ids.names.lookup(conn, op);
        if in_use {
            return Err(AppError::Invalid(
                "identity operation id in use on this connection",
            ));
        }
        if count >= max_conn || store.ops() + store.ids.ops.len() >= max_ops {
            return Err(AppError::Full("identity operations"));
        }
        Ok(id)
    }

    fn id_op_insert(&mut self, now: Time, id: u64, conn: ConnId, app: u64, t: u32, kind: IdOpKind) {
        let deadline = now + Duration::from_millis(u64::from(t));
        let ids = self.ids();
        ids.ops.insert(
            id,
            IdOp {
                conn,
                app,
                deadline,
                kind,
                error: None,
            },
        );
        ids.names.insert(conn, app, id);
        self.set_timer(deadline, TimerKey::IdOp(id));
    }

    /// Registers `identity` for `conn`: messages sent to it reach `conn` once the registry
    /// lists this node ([`IdResult::Registered`], or a failure, as [`Event::IdDone`] for `op`).
    pub fn id_register(
        &mut self,
        now: Time,
        conn: ConnId,
        op: u64,
        identity: &str,
        timeout_ms: u32,
    ) -> Result<(), AppError> {
        let id = self.id_op_start(conn, op, identity, timeout_ms)?;
        let held = self.store.as_ref().map_or(0, |s| {
            s.ids.held.values().filter(|c| c.contains(&conn)).count()
        });
        if held >= MAX_CONN_IDENTITIES {
            return Err(AppError::Full("identities of this connection"));
        }
        let kind = IdOpKind::Register {
            identity: identity.into(),
        };
        self.id_op_insert(now, id, conn, op, timeout_ms, kind);
        let ids = self.ids();
        ids.held.entry(identity.into()).or_default().insert(conn);
        let lease = ids.leases.entry(identity.into()).or_default();
        lease.remove = false;
        if lease.listed && !lease.busy {
            self.id_done(id, IdResult::Registered);
        } else {
            lease.waiting.push(id);
            self.lease_kick(now, identity);
        }
        self.drain_loopback(now);
        Ok(())
    }

    /// `conn` stops holding `identity`. Returns whether it held it. The registry forgets this
    /// node once no local connection holds the identity.
    pub fn id_unregister(
        &mut self,
        now: Time,
        conn: ConnId,
        identity: &str,
    ) -> Result<bool, AppError> {
        self.running()?;
        let held = self.drop_holder(now, conn, identity);
        self.drain_loopback(now);
        Ok(held)
    }

    fn drop_holder(&mut self, now: Time, conn: ConnId, identity: &str) -> bool {
        let Some(store) = self.store.as_mut() else {
            return false;
        };
        let Some(conns) = store.ids.held.get_mut(identity) else {
            return false;
        };
        let had = conns.remove(&conn);
        if conns.is_empty() {
            store.ids.held.remove(identity);
            if let Some(l) = store.ids.leases.get_mut(identity) {
                l.remove = true;
                self.lease_kick(now, identity);
            }
        }
        had
    }

    /// Sends `payload` to the connections holding `identity`, wherever they are attached; the
    /// outcome ([`IdResult::Sent`], [`IdResult::Unknown`], ...) comes as [`Event::IdDone`].
    pub fn id_send(
        &mut self,
        now: Time,
        conn: ConnId,
        op: u64,
        identity: &str,
        payload: Bytes,
        timeout_ms: u32,
    ) -> Result<(), AppError> {
        if payload.len() > self.cfg.store_max_value {
            return Err(AppError::Invalid("message larger than store_max_value"));
        }
        let id = self.id_op_start(conn, op, identity, timeout_ms)?;
        let kind = IdOpKind::Send {
            identity: identity.into(),
            payload,
            attempts: 0,
            waiting: BTreeSet::new(),
            delivered: 0,
            retry_at: Time::MAX,
        };
        self.id_op_insert(now, id, conn, op, timeout_ms, kind);
        self.read_registry(now, id, identity);
        self.drain_loopback(now);
        Ok(())
    }

    /// Lists the nodes that hold `identity` ([`IdResult::Holders`] or [`IdResult::Unknown`]).
    pub fn id_who(
        &mut self,
        now: Time,
        conn: ConnId,
        op: u64,
        identity: &str,
        timeout_ms: u32,
    ) -> Result<(), AppError> {
        let id = self.id_op_start(conn, op, identity, timeout_ms)?;
        let kind = IdOpKind::Who {
            identity: identity.into(),
            retry_at: Time::MAX,
        };
        self.id_op_insert(now, id, conn, op, timeout_ms, kind);
        self.read_registry(now, id, identity);
        self.drain_loopback(now);
        Ok(())
    }

    /// Reads identity operation `id`'s registry.
    fn read_registry(&mut self, now: Time, id: u64, identity: &str) {
        let t = self.registry_timeout_ms();
        let read = self.nonce();
        let name = registry_key(identity);
        self.issue_op(now, read, Owner::Lookup(id), &name, StoreOpKind::Get, t);
    }

    /// The registry read of identity operation `id` answered.
    pub(super) fn on_lookup_result(&mut self, now: Time, id: u64, result: StoreResult) {
        let wall = self.wall_ms(now);
        if !self
            .store
            .as_ref()
            .is_some_and(|s| s.ids.ops.contains_key(&id))
        {
            return;
        }
        let lines: Vec<Line> = match &result {
            StoreResult::Found { value, .. } => parse_lines(value)
                .into_iter()
                .filter(|l| l.expires_ms > wall)
                .collect(),
            StoreResult::NotFound => Vec::new(),
            _ => {
                // The read failed or timed out: try again while the operation has time. An
                // external registry's reason is kept, to be reported at the deadline.
                let failed = matches!(result, StoreResult::Failed(_));
                if let StoreResult::Failed(why) = &result
                    && self.external_registry()
                {
                    let why = why.as_str().into();
                    if let Some(op) = self.ids().ops.get_mut(&id) {
                        op.error = Some(why);
                    }
                }
                let Some(op) = self.store.as_ref().and_then(|s| s.ids.ops.get(&id)) else {
                    return;
                };
                if matches!(op.kind, IdOpKind::Send { .. } | IdOpKind::Who { .. }) {
                    self.retry_send_later(now, id, failed);
                }
                return;
            }
        };
        // The registry answered: an earlier failure is no longer the story.
        if let Some(op) = self.ids().ops.get_mut(&id) {
            op.error = None;
        }
        let Some(op) = self.store.as_ref().and_then(|s| s.ids.ops.get(&id)) else {
            return;
        };
        match &op.kind {
            IdOpKind::Who { .. } => {
                let r = if lines.is_empty() {
                    IdResult::Unknown
                } else {
                    IdResult::Holders(lines.iter().map(|l| l.node).collect())
                };
                self.id_done(id, r);
            }
            IdOpKind::Send {
                identity, payload, ..
            } => {
                if lines.is_empty() {
                    self.id_done(id, IdResult::Unknown);
                    return;
                }
                let (identity, payload) = (identity.to_string(), payload.clone());
                let wait = now + self.cfg.identity_ack_timeout;
                let mut asked = BTreeSet::new();
                for l in &lines {
                    // The send's own id names the message on every attempt, so a holder that
                    // took an earlier copy (its acknowledgement late or lost) takes it once.
                    asked.insert(l.node.id);
                    let msg = Message::IdDeliver {
                        id,
                        identity: identity.clone(),
                        payload: payload.clone(),
                    };
                    self.send_or_loop(now, l.node, msg);
                }
                if let Some(IdOp {
                    kind:
                        IdOpKind::Send {
                            waiting,
                            attempts,
                            retry_at,
                            ..
                        },
                    ..
                }) = self.ids().ops.get_mut(&id)
                {
                    *waiting = asked;
                    *attempts += 1;
                    *retry_at = wait;
                }
                self.set_timer(wait, TimerKey::IdRetry(id));
            }
            IdOpKind::Register { .. } => {}
        }
    }

    /// A message for the identity's local holders.
    pub(crate) fn on_id_deliver(
        &mut self,
        now: Time,
        from: NodeInfo,
        id: u64,
        identity: String,
        payload: Bytes,
    ) {
        let holders: Vec<ConnId> = self
            .store
            .as_ref()
            .and_then(|s| s.ids.held.get(identity.as_str()))
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default();
        if holders.is_empty() {
            self.send_or_loop(
                now,
                from,
                Message::IdAck {
                    id,
                    delivered: false,
                },
            );
            return;
        }
        let ids = self.ids();
        let first = ids.recent_set.insert((from.id, id));
        if first {
            ids.recent.push_back((from.id, id));
            if ids.recent.len() > RECENT
                && let Some(old) = ids.recent.pop_front()
            {
                ids.recent_set.remove(&old);
            }
            let name: Name = identity.as_str().into();
            for conn in holders {
                self.emit(Event::IdMessage {
                    conn,
                    identity: name.clone(),
                    payload: payload.clone(),
                });
            }
        }
        self.send_or_loop(
            now,
            from,
            Message::IdAck {
                id,
                delivered: true,
            },
        );
    }

    /// A holder's answer to a delivery.
    pub(crate) fn on_id_ack(&mut self, now: Time, from: NodeInfo, id: u64, delivered: bool) {
        let op_id = id;
        let Some(IdOp {
            kind:
                IdOpKind::Send {
                    waiting,
                    delivered: n,
                    ..
                },
            ..
        }) = self.ids().ops.get_mut(&op_id)
        else {
            return;
        };
        if !waiting.remove(&from.id) {
            return;
        }
        *n += u32::from(delivered);
        if waiting.is_empty() {
            let n = *n;
            if n > 0 {
                self.id_done(op_id, IdResult::Sent { nodes: n });
            } else {
                // Every listed node let go of the identity: it moved. Read again shortly.
                self.retry_send_later(now, op_id, false);
            }
        }
    }

    /// Reads a send's registry again after a pause (bounded by its attempts); a presence
    /// query's at once after a timeout, after the pause after a failure (a registry that
    /// fails at once must not be asked in a loop).
    fn retry_send_later(&mut self, now: Time, id: u64, failed: bool) {
        let at = now + RETRY_PAUSE;
        if let Some(IdOp {
            kind: IdOpKind::Send {
                retry_at, waiting, ..
            },
            ..
        }) = self.ids().ops.get_mut(&id)
        {
            waiting.clear();
            *retry_at = at;
        } else if let Some(IdOp {
            kind: IdOpKind::Who { retry_at, .. },
            ..
        }) = self.ids().ops.get_mut(&id)
        {
            if failed {
                *retry_at = at;
            } else {
                // A presence query reads once more at once (its own timeout bounds it).
                if let Some(identity) = self.op_identity(id) {
                    self.read_registry(now, id, &identity);
                }
                return;
            }
        }
        self.set_timer(at, TimerKey::IdRetry(id));
    }

    fn op_identity(&self, id: u64) -> Option<String> {
        match &self.store.as_ref()?.ids.ops.get(&id)?.kind {
            IdOpKind::Send { identity, .. } | IdOpKind::Who { identity, .. } => {
                Some(identity.to_string())
            }
            IdOpKind::Register { .. } => None,
        }
    }

    /// A send's wait is over: nodes that stayed silent are given up; with no delivery, the
    /// registry is read again (the identity may have moved).
    pub(crate) fn on_id_retry(&mut self, now: Time, id: u64) {
        if let Some(IdOp {
            kind: IdOpKind::Who { retry_at, .. },
            ..
        }) = self.store.as_mut().and_then(|s| s.ids.ops.get_mut(&id))
        {
            *retry_at = Time::MAX;
            if let Some(identity) = self.op_identity(id) {
                self.read_registry(now, id, &identity);
            }
            return;
        }
        let Some(IdOp {
            kind:
                IdOpKind::Send {
                    waiting,
                    delivered,
                    attempts,
                    retry_at,
                    ..
                },
            ..
        }) = self.store.as_mut().and_then(|s| s.ids.ops.get_mut(&id))
        else {
            return;
        };
        *retry_at = Time::MAX;
        waiting.clear();
        let (n, attempts) = (*delivered, *attempts);
        if n > 0 {
            self.id_done(id, IdResult::Sent { nodes: n });
        } else if attempts >= MAX_SEND_ATTEMPTS {
            self.id_done(
                id,
                IdResult::Failed("no listed node took the message".into()),
            );
        } else if let Some(identity) = self.op_identity(id) {
            self.read_registry(now, id, &identity);
        }
    }

    /// Notes a registry failure on the registrations waiting for `identity`'s lease.
    pub(super) fn note_lease_error(&mut self, identity: &str, why: &str) {
        let ids = self.ids();
        let waiting = ids
            .leases
            .get(identity)
            .map(|l| l.waiting.clone())
            .unwrap_or_default();
        for id in waiting {
            if let Some(op) = ids.ops.get_mut(&id) {
                op.error = Some(why.into());
            }
        }
    }

    /// Ends identity operation `id` with its one outcome.
    pub(super) fn id_done(&mut self, id: u64, result: IdResult) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let Some(op) = store.ids.ops.remove(&id) else {
            return;
        };
        store.ids.names.remove(op.conn, op.app);
        for lease in store.ids.leases.values_mut() {
            lease.waiting.retain(|w| *w != id);
        }
        self.emit(Event::IdDone {
            conn: op.conn,
            op: op.app,
            result,
        });
    }

    /// An identity operation's deadline.
    pub(crate) fn on_id_timeout(&mut self, now: Time, id: u64) {
        let failed = self.store.as_ref().and_then(|s| match s.ids.ops.get(&id) {
            Some(IdOp {
                conn,
                kind: IdOpKind::Register { identity },
                ..
            }) => Some((*conn, identity.to_string())),
            _ => None,
        });
        let error = self
            .store
            .as_ref()
            .and_then(|s| s.ids.ops.get(&id))
            .and_then(|o| o.error.clone());
        let result = match error {
            // The registry said why it could not answer: more useful than a timeout.
            Some(why) => IdResult::Failed(format!("identity registry: {why}")),
            None => IdResult::TimedOut,
        };
        self.id_done(id, result);
        // The connection was told it does not hold the identity: it does not.
        if let Some((conn, identity)) = failed {
            self.drop_holder(now, conn, &identity);
        }
    }

    /// A connection closed: it holds nothing more and its operations end unheard.
    pub(super) fn identities_forget_conn(&mut self, now: Time, conn: ConnId) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let ops: Vec<u64> = store.ids.names.of(conn).map(|(_, id)| id).collect();
        for id in &ops {
            store.ids.ops.remove(id);
        }
        store.ids.names.remove_conn(conn);
        for lease in store.ids.leases.values_mut() {
            lease.waiting.retain(|w| !ops.contains(w));
        }
        let held: Vec<String> = store
            .ids
            .held
            .iter()
            .filter(|(_, c)| c.contains(&conn))
            .map(|(k, _)| k.to_string())
            .collect();
        for identity in held {
            self.drop_holder(now, conn, &identity);
        }
    }

    /// True when the identity part still holds deadline `t` for `key`.
    pub(super) fn identity_timer_live(&self, key: TimerKey, t: Time) -> bool {
        let Some(s) = self.store.as_ref() else {
            return false;
        };
        match key {
            TimerKey::IdOp(id) => s.ids.ops.get(&id).is_some_and(|o| o.deadline == t),
            TimerKey::IdRetry(id) => s.ids.ops.get(&id).is_some_and(|o| {
                matches!(o.kind, IdOpKind::Send { retry_at, .. } | IdOpKind::Who { retry_at, .. } if retry_at == t)
            }),
            TimerKey::IdLease => s.ids.lease_timer_at == t,
            _ => false,
        }
    }

    pub(super) fn identity_timer_owners(&self) -> usize {
        self.store.as_ref().map_or(0, |s| 2 * s.ids.ops.len() + 1)
    }

    /// Identities local connections hold here, with their holders.
    pub fn identities(&self) -> Vec<(String, Vec<ConnId>)> {
        self.store.as_ref().map_or_else(Vec::new, |s| {
            s.ids
                .held
                .iter()
                .map(|(k, c)| (k.to_string(), c.iter().copied().collect()))
                .collect()
        })
    }

    pub(super) fn check_identity_invariants(&self) {
        let Some(s) = self.store.as_ref() else {
            return;
        };
        let ids = &s.ids;
        let named = ids
            .names
            .check(self.cfg.max_conn_requests as usize, |c, app, id| {
                ids.ops
                    .get(&id)
                    .is_some_and(|o| o.conn == c && o.app == app)
            });
        assert_eq!(named, ids.ops.len(), "identity operations named once");
        for (identity, conns) in &ids.held {
            assert!(!conns.is_empty(), "an identity held by nobody");
            assert!(
                ids.leases.contains_key(identity),
                "a held identity without a lease"
            );
            for c in conns {
                assert!(self.locals.contains(*c), "an identity of a gone connection");
            }
        }
        assert!(ids.recent.len() <= RECENT && ids.recent.len() == ids.recent_set.len());
    }
}
