//! Node-to-node messages of the Pastry overlay.
//!
//! These are the typed values that `petal-core` emits and consumes. Drivers turn them into
//! bytes with [`crate::codec`]; the discrete-event simulator may pass them as values and count
//! their [`crate::codec::encoded_len`] instead.

use std::net::SocketAddr;

use crate::id::{Key, NodeId};

/// A node as other nodes know it: its ring id and the address its peer links listen on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// Position on the ring.
    pub id: NodeId,
    /// Where to open a peer link to it.
    pub addr: SocketAddr,
}

/// A node-to-node message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Liveness and round-trip probe; answered by [`Message::Pong`] with the same nonce.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Answer to a [`Message::Ping`].
    Pong {
        /// The nonce of the ping being answered.
        nonce: u64,
    },
    /// A message routed hop by hop towards the node numerically closest to `key`.
    Route(RouteMsg),
    /// Hop-level acknowledgement of a [`Message::Route`]: the next hop took it.
    RouteAck {
        /// The `hop_seq` of the acknowledged route message.
        hop_seq: u64,
    },
    /// Routing state sent to a joining node by each node on its join path.
    JoinReply {
        /// Routing-table entries the joiner may use (it places them by their ids).
        entries: Vec<NodeInfo>,
        /// The sender's leaf set, sent by the final node of the path (the joiner's closest).
        leaf: Vec<NodeInfo>,
        /// True from the final node of the join path: the joiner has all it needs.
        last: bool,
    },
    /// A joining node announces itself to the nodes of its state; they add it, and leaf-set
    /// members (asked with `reply`) answer with [`Message::AnnounceAck`].
    Announce {
        /// The receiver should answer with its leaf set.
        reply: bool,
    },
    /// Answer to [`Message::Announce`] carrying the answering node's leaf set.
    AnnounceAck {
        /// The sender's leaf set after it added the announcer.
        leaf: Vec<NodeInfo>,
    },
    /// Periodic leaf-set exchange between leaf-set neighbours (the main repair mechanism).
    LeafSet {
        /// The sender's leaf set.
        leaf: Vec<NodeInfo>,
        /// The receiver should answer with its own leaf set.
        reply: bool,
    },
    /// Asks for a routing-table row (lazy routing-table repair).
    RowRequest {
        /// The row asked for.
        row: u8,
    },
    /// The entries of a routing-table row.
    RowReply {
        /// The row.
        row: u8,
        /// Its entries (placed by id).
        entries: Vec<NodeInfo>,
    },
    /// Graceful leave: the sender goes away; its leaf set helps receivers repair theirs.
    Leave {
        /// The leaving node's leaf set.
        leaf: Vec<NodeInfo>,
    },
    /// Answer to a routed lookup, sent straight from the key's owner to the lookup's origin.
    LookupReply {
        /// The origin's lookup id.
        lookup: u64,
        /// The node that owns the key.
        owner: NodeInfo,
        /// Overlay hops the lookup took.
        hops: u8,
    },
}

/// A message in transit towards the owner of `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMsg {
    /// Destination key.
    pub key: Key,
    /// The node that started the route (answers go straight to it).
    pub origin: NodeInfo,
    /// Overlay hops taken so far.
    pub hops: u8,
    /// Per-hop sequence number, acknowledged by [`Message::RouteAck`].
    pub hop_seq: u64,
    /// What is being routed.
    pub body: Routed,
}

/// The payload of a [`RouteMsg`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Routed {
    /// A join request for `origin` (its id is the key).
    Join,
    /// A lookup: the owner answers the origin with [`Message::LookupReply`].
    Lookup {
        /// The origin's id for this lookup.
        lookup: u64,
    },
}

impl Message {
    /// Names of the message kinds, indexed by [`Message::kind_index`].
    pub const KINDS: [&'static str; 13] = [
        "ping",
        "pong",
        "route-join",
        "route-lookup",
        "route-ack",
        "join-reply",
        "announce",
        "announce-ack",
        "leaf-set",
        "row-request",
        "row-reply",
        "leave",
        "lookup-reply",
    ];

    /// The index of this message's kind in [`Message::KINDS`] (for counters kept in arrays).
    pub fn kind_index(&self) -> usize {
        match self {
            Message::Ping { .. } => 0,
            Message::Pong { .. } => 1,
            Message::Route(r) => match r.body {
                Routed::Join => 2,
                Routed::Lookup { .. } => 3,
            },
            Message::RouteAck { .. } => 4,
            Message::JoinReply { .. } => 5,
            Message::Announce { .. } => 6,
            Message::AnnounceAck { .. } => 7,
            Message::LeafSet { .. } => 8,
            Message::RowRequest { .. } => 9,
            Message::RowReply { .. } => 10,
            Message::Leave { .. } => 11,
            Message::LookupReply { .. } => 12,
        }
    }

    /// A short static name of the message kind, for metrics and traces.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }

    /// True for messages that exist to keep the overlay up (everything but routed lookups and
    /// their replies), so that maintenance traffic can be measured apart from payload traffic.
    pub fn is_maintenance(&self) -> bool {
        !matches!(
            self,
            Message::Route(RouteMsg {
                body: Routed::Lookup { .. },
                ..
            }) | Message::LookupReply { .. }
        )
    }
}
