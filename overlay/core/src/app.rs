//! What local applications see: connection ids, group names and keys, request outcomes and the
//! errors of the application-facing commands.

use std::sync::Arc;

use bytes::Bytes;
use petal_protocol::Key;

/// A local application connection, as numbered by the driver (one per relay session).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Whether a group is a cluster (members take requests, tunnels and broadcasts) or a topic
/// (subscribers take published events). The two live in separate key spaces, so a cluster and
/// a topic may share a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKind {
    /// A named cluster of service connections.
    Cluster,
    /// A publish/subscribe topic.
    Topic,
}

impl GroupKind {
    /// The ring key of the group called `name`: the hash of a kind prefix and the name.
    ///
    /// Every publish, broadcast, request and tunnel names its group, and applications name the
    /// same few groups again and again, so the keys of recent names are remembered (a small
    /// direct-mapped table per thread: a pure function's memo, the same key either way) instead
    /// of hashing the name with SHA-256 each time.
    pub fn key(self, name: &str) -> Key {
        /// Names longer than this are hashed every time (the table holds short names only).
        const MAX_CACHED: usize = 128;
        const SLOTS: usize = 64;
        type Slot = Option<(GroupKind, Box<str>, Key)>;
        thread_local! {
            static RECENT: std::cell::RefCell<Vec<Slot>> =
                std::cell::RefCell::new(vec![None; SLOTS]);
        }
        if name.len() > MAX_CACHED {
            return self.hash(name);
        }
        // Picks the slot only (the name itself is compared): eight bytes a step, the kind
        // mixed in last.
        let h = name.as_bytes().chunks(8).fold(0_u64, |h, chunk| {
            let mut word = [0_u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95)
        });
        let h = (h.rotate_left(5) ^ self as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
        let slot = usize::from(h.to_le_bytes()[7]) % SLOTS;
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some((kind, cached, key)) = &recent[slot]
                && *kind == self
                && **cached == *name
            {
                return *key;
            }
            let key = self.hash(name);
            recent[slot] = Some((self, name.into(), key));
            key
        })
    }

    fn hash(self, name: &str) -> Key {
        let prefix = match self {
            GroupKind::Cluster => "petal/cluster/",
            GroupKind::Topic => "petal/topic/",
        };
        Key::from_name(&format!("{prefix}{name}"))
    }
}

/// The outcome of a request, reported exactly once to the requesting connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The member's reply.
    Reply(Bytes),
    /// The member's handler failed with this text.
    Fault(String),
    /// No answer within the request's timeout (no member, member or nodes gone, or too slow).
    Timeout,
}

/// Why the node refused an application command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The node has not started, or has left.
    #[error("the node is not running")]
    NotRunning,
    /// The connection is not registered (or was unregistered).
    #[error("unknown connection")]
    UnknownConn,
    /// The connection is already registered.
    #[error("connection already registered")]
    DuplicateConn,
    /// A bounded table is full (its name is given); the command is dropped and counted.
    #[error("too many {0}")]
    Full(&'static str),
    /// The argument is invalid (what is wrong is named).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The id names no pending item (already answered, expired, or never issued).
    #[error("unknown or expired id")]
    UnknownId,
}

/// A group name shared by the events that carry it (cheap to clone per delivery).
pub type Name = Arc<str>;

/// Each connection's names for its requests or tunnels: its own id -> the node's id. A
/// connection with nothing under way has no entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnIndex(
    std::collections::BTreeMap<ConnId, std::collections::BTreeMap<u64, u64>>,
);

impl ConnIndex {
    /// Whether `conn` names something `app`, and how many things it names.
    pub(crate) fn lookup(&self, conn: ConnId, app: u64) -> (bool, usize) {
        self.0
            .get(&conn)
            .map_or((false, 0), |m| (m.contains_key(&app), m.len()))
    }

    /// The node's id for `conn`'s `app`.
    pub(crate) fn get(&self, conn: ConnId, app: u64) -> Option<u64> {
        self.0.get(&conn).and_then(|m| m.get(&app)).copied()
    }

    /// `conn`'s names with the node's ids, by its names, ascending.
    pub(crate) fn of(&self, conn: ConnId) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0
            .get(&conn)
            .into_iter()
            .flatten()
            .map(|(app, id)| (*app, *id))
    }

    pub(crate) fn insert(&mut self, conn: ConnId, app: u64, id: u64) {
        self.0.entry(conn).or_default().insert(app, id);
    }

    pub(crate) fn remove(&mut self, conn: ConnId, app: u64) {
        if let Some(m) = self.0.get_mut(&conn) {
            m.remove(&app);
            if m.is_empty() {
                self.0.remove(&conn);
            }
        }
    }

    /// Forgets every name of `conn`.
    pub(crate) fn remove_conn(&mut self, conn: ConnId) {
        self.0.remove(&conn);
    }

    /// Asserts the index's shape: no empty entry, at most `max` names per connection, and
    /// every name pointing at an item that `names` confirms (connection, name, node's id);
    /// returns the number of names.
    pub(crate) fn check(&self, max: usize, names: impl Fn(ConnId, u64, u64) -> bool) -> usize {
        let mut total = 0;
        for (conn, m) in &self.0 {
            assert!(!m.is_empty() && m.len() <= max, "connection over its bound");
            for (app, id) in m {
                assert!(names(*conn, *app, *id), "index names another item");
            }
            total += m.len();
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remembered keys are the hashes themselves: for names that share slots, for both
    /// kinds under one name, for names too long to remember, asked in any order and again.
    #[test]
    fn remembered_keys_are_the_hashes() {
        let long = "n".repeat(300);
        let mut names: Vec<String> = (0..500).map(|i| format!("topic-{i}")).collect();
        names.extend([String::new(), "a".into(), long]);
        for round in 0..3 {
            for name in names.iter().rev().skip(round) {
                for kind in [GroupKind::Topic, GroupKind::Cluster] {
                    assert_eq!(kind.key(name), kind.hash(name), "{kind:?} {name}");
                }
            }
        }
        assert_ne!(GroupKind::Topic.key("x"), GroupKind::Cluster.key("x"));
        assert_eq!(
            GroupKind::Topic.key("x"),
            Key::from_name("petal/topic/x"),
            "the key is the hash of the prefixed name"
        );
    }
}
