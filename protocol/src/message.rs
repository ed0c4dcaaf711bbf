//! Node-to-node messages of the Pastry overlay.
//!
//! These are the typed values that `petal-core` emits and consumes. Drivers turn them into
//! bytes with [`crate::codec`]; the discrete-event simulator may pass them as values and count
//! their [`crate::codec::encoded_len`] instead.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::id::{Key, NodeId};
use crate::store::{StoreEntry, StoreOp, StoreResult, Version};

/// A node as other nodes know it: its ring id and the address its peer links listen on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// Position on the ring.
    pub id: NodeId,
    /// Where to open a peer link to it.
    pub addr: SocketAddr,
}

/// A sibling offered to a child that its parent drops from a group tree (Scribe's bottleneck
/// remover), with the parent's measured round trip to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sibling {
    /// The sibling.
    pub info: NodeInfo,
    /// The parent's round trip to it, in microseconds (`u32::MAX`: not measured).
    pub rtt_us: u32,
}

/// What a [`Message::Discover`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Only an answer: the round trip is the point.
    Probe,
    /// The receiver's leaf set.
    LeafSet,
    /// One routing-table row of the receiver.
    Row(u8),
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
    /// Answer to a [`Message::Ping`] that is a ping itself: the sender answers `nonce` and
    /// wants its own round trip to the receiver measured, which answers `ping` with a
    /// [`Message::Pong`]. Both ends measure the round trip in three messages instead of the
    /// four of two separate pings (a node pinged by a stranger probes it in turn).
    PongPing {
        /// The nonce of the ping being answered.
        nonce: u64,
        /// The nonce the receiver echoes in its pong.
        ping: u64,
    },
    /// A message routed hop by hop towards the node numerically closest to `key`. Boxed, as
    /// is [`Message::Descend`]: the two largest variants would otherwise make every message
    /// (a ping too) 136 bytes, copied whole at every move through an outbox or event queue.
    Route(Box<RouteMsg>),
    /// Hop-level acknowledgement of a [`Message::Route`]: the next hop took it.
    RouteAck {
        /// The `hop_seq` of the acknowledged route message.
        hop_seq: u64,
    },
    /// Several [`Message::RouteAck`]s to one node in one frame (at most
    /// [`codec::MAX_LIST_LEN`](crate::codec::MAX_LIST_LEN)): a driver that writes a batch of
    /// messages to a link merges the batch's acknowledgements into one, as a node that took a
    /// burst of routed messages from a peer acknowledges them all at once.
    RouteAcks {
        /// The `hop_seq`s of the acknowledged messages, in the order they were taken.
        hop_seqs: Vec<u64>,
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
    /// A node that is not part of a ring yet (starting, or joining itself) refuses to be a
    /// joiner's contact: the joiner tries another contact. `contacts` are the refusing node's
    /// own join contacts, which the joiner may try (a chain of joiners is skipped at once, and a
    /// joiner that finds itself among them learns that its contacts form a cycle).
    JoinBusy {
        /// The refusing node's join contacts.
        contacts: Vec<NodeInfo>,
    },
    /// A node that is not in the ring yet (its nearest-neighbour search before joining) asks a
    /// node for part of its state, or only for an answer (a round-trip probe). Unlike every other
    /// message it is no evidence that the sender may be routed to: the receiver answers with
    /// [`Message::DiscoverReply`] and keeps no state about the sender.
    Discover {
        /// Echoed in the reply.
        nonce: u64,
        /// What the sender wants back.
        want: Want,
    },
    /// Answer to [`Message::Discover`]; a node that is not in a ring answers with no entries.
    DiscoverReply {
        /// The nonce of the request being answered.
        nonce: u64,
        /// Rows of the sender's routing table up to its deepest non-empty one.
        rows: u8,
        /// What was asked for: the leaf set or the row's entries (empty for a probe).
        entries: Vec<NodeInfo>,
    },
    /// One-way liveness signal to the sender's counter-clockwise leaf-set neighbour, which
    /// watches it: a neighbour that falls silent is probed (MSPastry's heartbeats).
    Heartbeat,
    /// The sender declared `node` dead: a receiver that tracks it probes it at once and drops
    /// it if that probe goes unanswered (suspicion, not death, so one node's mistake cannot
    /// remove a live node from the others' tables).
    Suspect {
        /// The node the sender found dead.
        node: NodeId,
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
    /// Child to parent in a group tree: adds the sender as a child, or refreshes it, with the
    /// load of its subtree and the last event it has seen (the parent replays newer buffered
    /// events). Idempotent; sent periodically.
    Graft {
        /// The group (topic or cluster key).
        group: Key,
        /// Members and load of the sender's subtree.
        load: Load,
        /// The last event the sender has seen.
        seen: EventSeq,
        /// The sender asks for everything it missed, at once: it was in this tree before and
        /// now grafts on a new parent (or again after losing its parent), or it saw a gap.
        /// Replayed then even when it has seen nothing yet. A first graft says false (a new
        /// subscriber is not handed older events), and so does a periodic refresh (the parent
        /// replays only events old enough not to be still in flight to it).
        rejoin: bool,
        /// Height of the sender's subtree (0: no children). Grows without bound around a cycle
        /// of parents, which is how a cycle is found and cut.
        height: u8,
    },
    /// Drops a tree edge: from a child, "remove me"; from a parent, "I am not your parent".
    Prune {
        /// The group.
        group: Key,
    },
    /// From a parent over its child cap to the child it drops (the one farthest away): the
    /// child re-attaches through the sibling that gives it the shortest path to this parent.
    Redirect {
        /// The group.
        group: Key,
        /// The parent's other children, with its round trips to them.
        siblings: Vec<Sibling>,
    },
    /// An event (publish or broadcast) flowing down a group tree from its root.
    Cast(Box<CastMsg>),
    /// A request or tunnel open travelling down a cluster's tree towards the member chosen for
    /// it. Acknowledged hop by hop with [`Message::RouteAck`].
    Descend(Box<DescendMsg>),
    /// The outcome of a request, sent by the member's node straight to the requester's node.
    Reply {
        /// The requester's request id.
        id: u64,
        /// What the member answered.
        result: ReplyResult,
    },
    /// A member accepted a tunnel: sent by its node straight to the opener's node.
    TunnelAccept {
        /// The opener's tunnel id.
        tunnel: u64,
        /// The acceptor's tunnel id (the opener addresses its traffic with it).
        peer_tunnel: u64,
        /// What the acceptor's node takes.
        params: TunnelParams,
    },
    /// A chunk of a tunnel message.
    TunnelData {
        /// The receiver's tunnel id.
        tunnel: u64,
        /// The sender's tunnel id (a chunk must name both ends of its tunnel).
        sender_tunnel: u64,
        /// Chunk sequence number on this tunnel direction, from 0.
        seq: u64,
        /// The whole message's length on its first chunk, 0 on continuation chunks.
        size: u64,
        /// The chunk (at most the receiver's chunk limit).
        payload: Bytes,
    },
    /// Window for the receiver to send on a tunnel, cumulative: what the sender has consumed
    /// of everything it received on the tunnel so far (each chunk's bytes plus a fixed cost
    /// per chunk). A lost, repeated or reordered allow is made good by any later one; sent
    /// periodically, it is also the tunnel's keepalive.
    TunnelAllow {
        /// The receiver's tunnel id.
        tunnel: u64,
        /// The sender's tunnel id.
        sender_tunnel: u64,
        /// Window consumed so far, in total.
        consumed: u64,
    },
    /// Closes a tunnel: gracefully (empty reason) or on failure.
    TunnelClose {
        /// The receiver's tunnel id.
        tunnel: u64,
        /// Why; empty when graceful.
        reason: String,
    },
    /// A key's home answers a store operation, straight to the operation's origin node.
    StoreReply {
        /// The origin's id for the operation.
        op: u64,
        /// The outcome (boxed: a found value is the largest).
        result: Box<StoreResult>,
    },
    /// Entries for a replica to store (it keeps each one unless it has a newer version): from
    /// a home (a write, acknowledged), from a replica that found the receiver stale (repair,
    /// `nonce` 0: no acknowledgement) or from a node handing off keys it no longer holds.
    StoreWrite {
        /// Echoed in the [`Message::StoreAck`]; 0 asks for none.
        nonce: u64,
        /// The entries.
        entries: Vec<StoreEntry>,
    },
    /// Answer to a [`Message::StoreWrite`] that asked for one.
    StoreAck {
        /// The write's nonce.
        nonce: u64,
        /// False when the receiver refused an entry (its store is full).
        stored: bool,
    },
    /// A home asks a replica for its entry of `key` (a quorum read).
    StoreRead {
        /// Echoed in the [`Message::StoreValue`].
        nonce: u64,
        /// The key.
        key: Key,
    },
    /// Answer to a [`Message::StoreRead`]: the replica's entry, if it has one.
    StoreValue {
        /// The read's nonce.
        nonce: u64,
        /// The entry (a tombstone too); boxed, as it is large.
        entry: Option<Box<StoreEntry>>,
    },
    /// Anti-entropy between two replicas: a digest of the entries the sender holds that the
    /// receiver should hold too, as [`STORE_BUCKETS`] hashes (entries fall into buckets by
    /// key). The receiver answers the buckets that differ with a [`Message::StoreKeys`].
    StoreSync {
        /// One hash per bucket, [`STORE_BUCKETS`] of them.
        buckets: Vec<u64>,
    },
    /// The keys and versions a replica holds in the buckets named by `buckets` (a bit per
    /// bucket), of the entries it shares with the receiver: the receiver sends back what the
    /// sender lacks or holds older, and, with `reply`, its own list for the same buckets.
    StoreKeys {
        /// The buckets listed, one bit each.
        buckets: u32,
        /// Keys and versions in those buckets.
        keys: Vec<(Key, Version)>,
        /// The receiver should answer with its own list.
        reply: bool,
    },
    /// A message for the local connections that hold `identity` on the receiving node, sent
    /// straight by the sender's node (which found the receiver in the identity's registry).
    IdDeliver {
        /// The sender's id for this delivery (answered by [`Message::IdAck`]; with the sender's
        /// node id, it names the message, so a retried copy is delivered once).
        id: u64,
        /// The identity.
        identity: String,
        /// The message.
        payload: Bytes,
    },
    /// Answer to [`Message::IdDeliver`]: whether a local connection held the identity.
    IdAck {
        /// The delivery's id.
        id: u64,
        /// True when the message reached a connection that holds the identity.
        delivered: bool,
    },
}

/// Buckets of a [`Message::StoreSync`] digest.
pub const STORE_BUCKETS: usize = 16;

/// The load of a group subtree, reported up the tree for load-balanced request placement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Load {
    /// Members (cluster connections or topic subscribers) in the subtree.
    pub members: u32,
    /// Summed capacity of the members that currently take requests.
    pub capacity: u32,
    /// Requests delivered in the subtree and not answered yet.
    pub inflight: u32,
}

/// An event on its way down a group tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CastMsg {
    /// The group.
    pub group: Key,
    /// Its place in the root's sequence.
    pub seq: EventSeq,
    /// Its identity, given by its publisher: a node that already delivered it (a copy
    /// numbered twice, by two roots or one) does not deliver it again.
    pub event: EventId,
    /// The application payload.
    pub payload: Bytes,
}

/// The identity of a published event: its publisher's node and a nonce unique on that node
/// (one incarnation of it). Copies of one publish, however they were routed and numbered,
/// share it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    /// The publishing node.
    pub origin: NodeId,
    /// Unique among that node's publishes.
    pub nonce: u64,
}

/// Position of an event in a group root's sequence: the root's epoch (new whenever a node
/// becomes root) and a counter within it. `seq == 0` means "nothing seen".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventSeq {
    /// Chosen at random by the root when it takes the role.
    pub epoch: u64,
    /// 1 for the first event of the epoch.
    pub seq: u64,
}

/// What a node takes on a tunnel, announced by each end when it opens: the other end sends
/// at most `window` (chunk bytes plus a fixed cost per chunk) not yet consumed, in chunks of at
/// most `chunk_limit` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelParams {
    /// The receive window.
    pub window: u64,
    /// The largest chunk taken.
    pub chunk_limit: u32,
}

/// A request or tunnel open on its way down a cluster tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescendMsg {
    /// The cluster's key.
    pub group: Key,
    /// The requesting node (replies go straight to it).
    pub requester: NodeInfo,
    /// Tree hops taken so far (a bound stops loops).
    pub hops: u8,
    /// Per-hop sequence number, acknowledged by [`Message::RouteAck`].
    pub hop_seq: u64,
    /// What is asked.
    pub ask: Ask,
}

/// A request or a tunnel open, as routed to a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    /// The requester's id for it (request id or opening tunnel id).
    pub id: u64,
    /// The requester's timeout, in milliseconds (the original, not what remains).
    pub timeout_ms: u32,
    /// A request's payload, or a tunnel open.
    pub kind: AskKind,
}

/// What an [`Ask`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AskKind {
    /// A request with its payload.
    Request {
        /// The application payload.
        payload: Bytes,
    },
    /// A tunnel open, with what the opener's node takes; the accepting node answers with
    /// [`Message::TunnelAccept`].
    Tunnel(TunnelParams),
}

/// A member's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyResult {
    /// The handler's reply.
    Ok(Bytes),
    /// The handler's error text.
    Fault(String),
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
    /// An event for the group whose key is the route's key; its root casts it down the tree.
    Publish {
        /// Unique among the origin's publishes: with the origin's id, the event's
        /// [`EventId`].
        nonce: u64,
        /// The application payload.
        payload: Bytes,
    },
    /// A request or tunnel open for the cluster whose key is the route's key; its root starts
    /// the descent towards a member.
    Ask(Ask),
    /// A store operation for the key's home (the route's key is the hash of its name).
    Store(Box<StoreOp>),
}

impl RouteMsg {
    /// Bytes a queue holding this message (boxed) keeps alive: the box and the payload.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<RouteMsg>()
            + match &self.body {
                Routed::Publish { payload, .. }
                | Routed::Ask(Ask {
                    kind: AskKind::Request { payload },
                    ..
                }) => payload.len(),
                Routed::Store(op) => {
                    std::mem::size_of::<StoreOp>()
                        + op.name.len()
                        + match &op.kind {
                            crate::store::StoreOpKind::Put { value, .. } => value.len(),
                            _ => 0,
                        }
                }
                _ => 0,
            }
    }
}

impl DescendMsg {
    /// Bytes a queue holding this message (boxed) keeps alive: the box and the payload.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<DescendMsg>()
            + match &self.ask.kind {
                AskKind::Request { payload } => payload.len(),
                AskKind::Tunnel(_) => 0,
            }
    }
}

impl Message {
    /// A [`Message::Route`] of `msg`.
    pub fn route(msg: RouteMsg) -> Self {
        Message::Route(Box::new(msg))
    }

    /// A [`Message::Cast`] of `msg`.
    pub fn cast(msg: CastMsg) -> Self {
        Message::Cast(Box::new(msg))
    }

    /// A [`Message::Descend`] of `msg`.
    pub fn descend(msg: DescendMsg) -> Self {
        Message::Descend(Box::new(msg))
    }

    /// Names of the message kinds, indexed by [`Message::kind_index`].
    pub const KINDS: [&'static str; 42] = [
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
        "route-publish",
        "route-ask",
        "graft",
        "prune",
        "cast",
        "descend",
        "reply",
        "tunnel-accept",
        "tunnel-data",
        "tunnel-allow",
        "tunnel-close",
        "join-busy",
        "discover",
        "discover-reply",
        "heartbeat",
        "suspect",
        "redirect",
        "pong-ping",
        "route-store",
        "store-reply",
        "store-write",
        "store-ack",
        "store-read",
        "store-value",
        "store-sync",
        "store-keys",
        "id-deliver",
        "id-ack",
        "route-acks",
    ];

    /// The index of this message's kind in [`Message::KINDS`] (for counters kept in arrays).
    pub fn kind_index(&self) -> usize {
        match self {
            Message::Ping { .. } => 0,
            Message::Pong { .. } => 1,
            Message::Route(r) => match r.body {
                Routed::Join => 2,
                Routed::Lookup { .. } => 3,
                Routed::Publish { .. } => 13,
                Routed::Ask(_) => 14,
                Routed::Store(_) => 31,
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
            Message::Graft { .. } => 15,
            Message::Prune { .. } => 16,
            Message::Cast { .. } => 17,
            Message::Descend(_) => 18,
            Message::Reply { .. } => 19,
            Message::TunnelAccept { .. } => 20,
            Message::TunnelData { .. } => 21,
            Message::TunnelAllow { .. } => 22,
            Message::TunnelClose { .. } => 23,
            Message::JoinBusy { .. } => 24,
            Message::Discover { .. } => 25,
            Message::DiscoverReply { .. } => 26,
            Message::Heartbeat => 27,
            Message::Suspect { .. } => 28,
            Message::Redirect { .. } => 29,
            Message::PongPing { .. } => 30,
            Message::StoreReply { .. } => 32,
            Message::StoreWrite { .. } => 33,
            Message::StoreAck { .. } => 34,
            Message::StoreRead { .. } => 35,
            Message::StoreValue { .. } => 36,
            Message::StoreSync { .. } => 37,
            Message::StoreKeys { .. } => 38,
            Message::IdDeliver { .. } => 39,
            Message::IdAck { .. } => 40,
            Message::RouteAcks { .. } => 41,
        }
    }

    /// The bytes this message holds besides its own inline size: payloads, node lists,
    /// reasons, boxed parts. What a queue holding it keeps alive, for memory budgets (an
    /// estimate: allocator rounding is not counted).
    pub fn heap_bytes(&self) -> usize {
        let nodes = |v: &Vec<NodeInfo>| v.len() * std::mem::size_of::<NodeInfo>();
        match self {
            Message::Route(r) => r.heap_bytes(),
            Message::Cast(c) => std::mem::size_of::<CastMsg>() + c.payload.len(),
            Message::Descend(d) => d.heap_bytes(),
            Message::Reply { result, .. } => match result {
                ReplyResult::Ok(b) => b.len(),
                ReplyResult::Fault(s) => s.len(),
            },
            Message::TunnelData { payload, .. } => payload.len(),
            Message::TunnelClose { reason, .. } => reason.len(),
            Message::JoinReply { entries, leaf, .. } => nodes(entries) + nodes(leaf),
            Message::JoinBusy { contacts: v }
            | Message::DiscoverReply { entries: v, .. }
            | Message::AnnounceAck { leaf: v }
            | Message::LeafSet { leaf: v, .. }
            | Message::RowReply { entries: v, .. }
            | Message::Leave { leaf: v } => nodes(v),
            Message::Redirect { siblings, .. } => siblings.len() * std::mem::size_of::<Sibling>(),
            Message::StoreReply { result, .. } => {
                std::mem::size_of::<StoreResult>()
                    + match &**result {
                        StoreResult::Found { value, .. } => value.len(),
                        StoreResult::Failed(text) => text.len(),
                        _ => 0,
                    }
            }
            Message::StoreWrite { entries, .. } => entries
                .iter()
                .map(|e| std::mem::size_of::<StoreEntry>() + e.heap_bytes())
                .sum(),
            Message::StoreValue { entry: Some(e), .. } => {
                std::mem::size_of::<StoreEntry>() + e.heap_bytes()
            }
            Message::StoreSync { buckets } => buckets.len() * 8,
            Message::RouteAcks { hop_seqs } => hop_seqs.len() * 8,
            Message::StoreKeys { keys, .. } => keys.len() * std::mem::size_of::<(Key, Version)>(),
            Message::IdDeliver {
                identity, payload, ..
            } => identity.len() + payload.len(),
            _ => 0,
        }
    }

    /// A short static name of the message kind, for metrics and traces.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }

    /// True for messages that exist to keep the overlay and its group trees up (pings, joins,
    /// leaf-set and routing-table upkeep, grafts and prunes), so that maintenance traffic can be
    /// measured apart from traffic that carries lookups, events, requests and tunnels.
    pub fn is_maintenance(&self) -> bool {
        match self {
            Message::Route(r) => r.body == Routed::Join,
            Message::LookupReply { .. }
            | Message::Cast { .. }
            | Message::Descend(_)
            | Message::Reply { .. }
            | Message::TunnelAccept { .. }
            | Message::TunnelData { .. }
            | Message::TunnelAllow { .. }
            | Message::TunnelClose { .. }
            | Message::StoreReply { .. }
            | Message::StoreWrite { .. }
            | Message::StoreAck { .. }
            | Message::StoreRead { .. }
            | Message::StoreValue { .. }
            | Message::IdDeliver { .. }
            | Message::IdAck { .. } => false,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message moves through outboxes and event queues by value: the large variants
    /// (routed messages, descents, casts) are boxed so that a ping costs what a ping is, and moves stay a few
    /// vector stores.
    #[test]
    fn a_message_stays_small() {
        assert!(
            std::mem::size_of::<Message>() <= 72,
            "Message is {} bytes",
            std::mem::size_of::<Message>()
        );
    }
}
