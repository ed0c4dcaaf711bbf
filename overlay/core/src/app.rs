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
    pub fn key(self, name: &str) -> Key {
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
