//! [`Event`]: what a node reports to its driver (overlay outcomes, and each application
//! connection's deliveries and outcomes).

use bytes::Bytes;
use petal_protocol::{Key, NodeId, NodeInfo, StoreResult};

use crate::app::{ConnId, Name, Outcome};

/// Something the node reports to its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The join finished: the node is part of the ring and serves keys.
    Joined,
    /// Every join attempt failed; the node is idle.
    JoinFailed,
    /// A lookup started here was answered.
    LookupDone {
        /// Its id (from [`Node::lookup`](crate::Node::lookup)).
        lookup: u64,
        /// The key looked up.
        key: Key,
        /// The node that owns the key.
        owner: NodeInfo,
        /// Overlay hops of the successful attempt.
        hops: u8,
        /// Attempts used (1 = first try).
        attempts: u32,
    },
    /// A lookup started here got no answer after every attempt.
    LookupFailed {
        /// Its id.
        lookup: u64,
        /// The key looked up.
        key: Key,
    },
    /// A routed lookup ended here: this node considers itself the key's owner.
    Delivered {
        /// The key.
        key: Key,
        /// Who started the lookup.
        origin: NodeInfo,
        /// Overlay hops taken.
        hops: u8,
        /// The origin's lookup id.
        lookup: u64,
    },
    /// A peer was declared dead after repeated missed pings.
    PeerDead {
        /// The peer.
        peer: NodeId,
    },
    /// A request for local member `conn`; answer with [`Node::reply`](crate::Node::reply) and the `delivery` id.
    Request {
        /// The member connection.
        conn: ConnId,
        /// This node's id for the delivery.
        delivery: u64,
        /// The request payload.
        payload: Bytes,
        /// The requester's timeout (the original, not what remains).
        timeout_ms: u32,
        /// Overlay hops to the cluster's root plus tree hops down to this node.
        hops: u8,
    },
    /// The one outcome of request `request` issued by `conn`.
    RequestDone {
        /// The requesting connection.
        conn: ConnId,
        /// The connection's own id for the request (given to [`Node::request`](crate::Node::request)).
        request: u64,
        /// Reply, fault or timeout.
        outcome: Outcome,
    },
    /// An event published on a topic that `conn` subscribes to.
    Published {
        /// The subscriber.
        conn: ConnId,
        /// The topic's name.
        topic: Name,
        /// The event.
        payload: Bytes,
    },
    /// A broadcast to the cluster that `conn` is a member of.
    Broadcast {
        /// The member.
        conn: ConnId,
        /// The message.
        payload: Bytes,
    },
    /// A tunnel to `conn`'s cluster was offered to `conn`: accept it with
    /// [`Node::tunnel_accept`](crate::Node::tunnel_accept) before the opener's timeout, naming it with an id of its own.
    TunnelIncoming {
        /// The member connection.
        conn: ConnId,
        /// This node's id for the offer.
        offer: u64,
    },
    /// An offer to `conn` ended before `conn` accepted it (the opener gave up or timed out,
    /// or its node died); accepting it now fails.
    TunnelOfferClosed {
        /// The member connection.
        conn: ConnId,
        /// The offer's id (from [`Event::TunnelIncoming`]).
        offer: u64,
    },
    /// A tunnel opened by `conn` was accepted; data may flow.
    TunnelOpened {
        /// The opening connection.
        conn: ConnId,
        /// The connection's id for it (given to [`Node::tunnel_open`](crate::Node::tunnel_open)).
        tunnel: u64,
    },
    /// A tunnel opened by `conn` was not accepted within its timeout (or was refused).
    TunnelOpenFailed {
        /// The opening connection.
        conn: ConnId,
        /// The connection's id for it (given to [`Node::tunnel_open`](crate::Node::tunnel_open)).
        tunnel: u64,
    },
    /// The node grants `conn` `bytes` more of credit to send on `tunnel` (cumulative).
    TunnelCredit {
        /// The connection.
        conn: ConnId,
        /// The connection's id for the tunnel.
        tunnel: u64,
        /// Bytes granted.
        bytes: u64,
    },
    /// A chunk arrived on `tunnel`, in order.
    TunnelData {
        /// The connection.
        conn: ConnId,
        /// The connection's id for the tunnel.
        tunnel: u64,
        /// The message's whole length on its first chunk, 0 on continuation chunks.
        size: u64,
        /// The chunk.
        payload: Bytes,
    },
    /// `tunnel` is closed: gracefully (empty reason; also the acknowledgement of a local
    /// close) or on failure. Nothing more comes on it.
    TunnelClosed {
        /// The connection.
        conn: ConnId,
        /// The connection's id for the tunnel.
        tunnel: u64,
        /// Why; empty when graceful.
        reason: String,
    },
    /// A message sent to an identity that `conn` holds ([`Node::id_send`](crate::Node::id_send)).
    IdMessage {
        /// The connection.
        conn: ConnId,
        /// The identity.
        identity: Name,
        /// The message.
        payload: Bytes,
    },
    /// The one outcome of identity operation `op` of `conn` ([`Node::id_register`](crate::Node::id_register),
    /// [`Node::id_send`](crate::Node::id_send), [`Node::id_who`](crate::Node::id_who)).
    IdDone {
        /// The connection.
        conn: ConnId,
        /// The connection's id for the operation.
        op: u64,
        /// What came of it.
        result: crate::store::IdResult,
    },
    /// The one outcome of store operation `op` issued by `conn` ([`Node::kv`](crate::Node::kv)).
    KvDone {
        /// The connection.
        conn: ConnId,
        /// The connection's id for the operation.
        op: u64,
        /// The key's home's answer, or [`StoreResult::TimedOut`].
        result: StoreResult,
    },
    /// An operation on an identity registry for the driver's registry to run (only when
    /// [`Node::set_external_registry`](crate::Node::set_external_registry) is on): the driver
    /// answers with [`Node::registry_result`](crate::Node::registry_result) under `op`, before
    /// `timeout_ms` (the node gives up then and ignores a later answer).
    RegistryOp {
        /// The node's id for the operation.
        op: u64,
        /// The registry's key (`petal-id/<identity>`).
        name: String,
        /// What to do, with the semantics of the overlay store: versions, compare-and-set
        /// ([`petal_protocol::Version::NONE`]: must be absent), time to live.
        kind: petal_protocol::StoreOpKind,
        /// How long the node waits for the answer.
        timeout_ms: u32,
        /// The node's wall clock (Unix ms, see [`Node::set_wall_clock`](crate::Node::set_wall_clock))
        /// when it asked: the clock of the entries' expiry times.
        wall_ms: u64,
    },
}

impl Event {
    /// The local connection an application event is for (`None` for overlay events).
    pub fn conn(&self) -> Option<ConnId> {
        match self {
            Event::Request { conn, .. }
            | Event::RequestDone { conn, .. }
            | Event::Published { conn, .. }
            | Event::Broadcast { conn, .. }
            | Event::TunnelIncoming { conn, .. }
            | Event::TunnelOfferClosed { conn, .. }
            | Event::TunnelOpened { conn, .. }
            | Event::TunnelOpenFailed { conn, .. }
            | Event::TunnelCredit { conn, .. }
            | Event::TunnelData { conn, .. }
            | Event::TunnelClosed { conn, .. }
            | Event::KvDone { conn, .. }
            | Event::IdMessage { conn, .. }
            | Event::IdDone { conn, .. } => Some(*conn),
            _ => None,
        }
    }
}
