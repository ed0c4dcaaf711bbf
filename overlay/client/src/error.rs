//! The library's error type.

use petal_protocol::relay::RelayError;

/// Everything that can go wrong talking to the node.
///
/// Errors about the connection as a whole ([`Error::Closed`], [`Error::Broken`]) are returned by
/// every call still waiting when it ends and by every later call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Dialling the node or the first write of the handshake failed.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// The node ended the connection during the handshake or answered it with something other
    /// than an accept or a denial (the text says what).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The node refused the handshake, with this reason (e.g. a version mismatch).
    #[error("connection denied by the node: {0}")]
    Denied(String),
    /// The node answered a request (`05 id 01`), a tunnel open (`0a id 01`) with a timeout, or a
    /// tunnel send did not get the credit it needed within its timeout.
    #[error("timed out")]
    Timeout,
    /// The service that handled the request answered with this fault text.
    #[error("remote fault: {0}")]
    Remote(String),
    /// The connection or tunnel was closed: by this side, or by the node / far end with this
    /// reason (`""` for a graceful tunnel close by the far end).
    #[error("closed: {0}")]
    Closed(String),
    /// The connection broke (EOF without a close, an IO error or a protocol violation), or a
    /// tunnel was abandoned because the node broke its rules; the text says what happened.
    #[error("connection broken: {0}")]
    Broken(String),
    /// The node sent bytes that are not relay protocol v1 during the handshake.
    #[error("protocol violation: {0}")]
    Protocol(#[from] RelayError),
    /// `subscribe` was called for a topic this connection is already subscribed to.
    #[error("already subscribed to topic {0:?}")]
    AlreadySubscribed(String),
    /// `unsubscribe` was called for a topic this connection is not subscribed to.
    #[error("not subscribed to topic {0:?}")]
    NotSubscribed(String),
    /// A conditional store write found another version of the key: the current one
    /// ([`Version::NONE`](petal_protocol::Version::NONE): the key has no value).
    #[error("conflict: the key's version is {0}")]
    Conflict(petal_protocol::Version),
    /// The store could not do the operation (quorum not reached, limits); the node says why.
    #[error("store: {0}")]
    Store(String),
    /// No live node holds the identity a message was sent to.
    #[error("unknown identity")]
    UnknownIdentity,
    /// The node does not offer what was asked (the store on a node without Petal's relay
    /// extension).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// An argument was rejected before anything was sent (an empty cluster name for a service,
    /// an empty tunnel message, which the wire format cannot express).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
}

/// How a connection (or a tunnel) ended; cloned into every waiter's error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Closed on purpose, with a reason.
    Closed(String),
    /// Broken, with a description.
    Broken(String),
}

impl Ended {
    /// The error that calls waiting on the ended object return.
    pub(crate) fn to_error(&self) -> Error {
        match self {
            Ended::Closed(reason) => Error::Closed(reason.clone()),
            Ended::Broken(what) => Error::Broken(what.clone()),
        }
    }
}
