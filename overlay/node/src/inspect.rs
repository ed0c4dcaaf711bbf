//! What a running node shows about itself: the data of the admin API (`petald --admin`).
//!
//! [`crate::NodeHandle::inspect`] asks the node task for an [`Inspection`], which it builds
//! between two inputs from its own tables (a copy: the reader never holds the node's state, and
//! the node task never waits for a reader). Building one walks the leaf set, the routing table,
//! the links, the sessions, the group trees and the tunnels: cheap for a node's tables, and
//! only done on request.

use std::net::SocketAddr;
use std::time::Duration;

use petal_core::{GroupInfo, NodeId, TunnelInfo};

use crate::StatsSnapshot;

/// Upper bounds of the request-duration histogram's buckets, in microseconds (one more bucket
/// takes everything above the last).
pub const REQUEST_DURATION_BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000, 30_000_000,
];

/// Request durations as the node saw them: from a client's REQUEST to the REPLY the node sent it
/// (reply, fault or timeout), bucketed by [`REQUEST_DURATION_BOUNDS_US`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurationHistogram {
    /// Requests per bucket (not cumulative); the last is above the last bound.
    pub counts: [u64; REQUEST_DURATION_BOUNDS_US.len() + 1],
    /// Sum of the durations, in microseconds.
    pub sum_us: u64,
}

impl DurationHistogram {
    /// Counts one duration.
    pub fn observe(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = REQUEST_DURATION_BOUNDS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Whether LAN discovery runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryStatus {
    /// Not configured (seeds only).
    Off,
    /// Beacons are sent and heard on this group.
    Running {
        /// The multicast group and port.
        group: std::net::SocketAddrV4,
    },
    /// The socket could not be opened (no multicast route or interface); the node serves
    /// without discovery and tries again with back-off.
    Retrying {
        /// The multicast group and port.
        group: std::net::SocketAddrV4,
        /// The last error.
        error: String,
    },
}

/// One peer link (or a dial under way).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The peer.
    pub peer: NodeId,
    /// Its advertised address, as the core knows it.
    pub addr: Option<SocketAddr>,
    /// Up (false: being dialed).
    pub up: bool,
    /// This node dialed it (the link the pair keeps is the one its lower id dialed).
    pub dialed_by_us: bool,
    /// How long the link has been up.
    pub age: Duration,
    /// The round trip the core measured, if it did.
    pub rtt: Option<Duration>,
    /// Bytes queued for the link's writer, against the peer's share of the memory budget.
    pub queued_bytes: u64,
    /// Bytes read from the socket.
    pub bytes_in: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    /// Frames of the core received (link keepalives not counted; a batch's acknowledgements
    /// travel as one frame).
    pub messages_in: u64,
    /// Frames written (link keepalives counted).
    pub messages_out: u64,
}

/// A node in this node's tables (leaf set or routing table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// The node.
    pub id: NodeId,
    /// Its address, as the core knows it.
    pub addr: Option<SocketAddr>,
    /// The round trip the core measured, if it did.
    pub rtt: Option<Duration>,
}

/// One routing-table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Row (the length of the prefix it shares with this node's id, in hex digits).
    pub row: u8,
    /// Column (its digit at that position).
    pub column: u8,
    /// The node.
    pub peer: PeerEntry,
}

/// One attached application connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The connection's number on this node.
    pub conn: u64,
    /// How long it has been attached.
    pub age: Duration,
    /// Bytes queued for it (not yet written to the client).
    pub queued_bytes: u64,
    /// Broadcasts, events and request deliveries dropped because it did not read.
    pub dropped: u64,
    /// Its requests awaiting their outcome.
    pub pending_requests: usize,
}

/// Depths of the node's queues now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueDepths {
    /// Inputs from peer links, timers and discovery waiting for the node task.
    pub node_inputs: usize,
    /// Inputs from application sessions waiting for the node task.
    pub app_inputs: usize,
    /// Bytes queued for peer links, in all.
    pub link_bytes: u64,
    /// Bytes queued for application sessions, in all.
    pub session_bytes: u64,
}

/// A node's state at one moment, as operators see it.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The node's id.
    pub id: NodeId,
    /// The address other nodes dial.
    pub peer_addr: SocketAddr,
    /// Where applications connect.
    pub relay_addrs: Vec<SocketAddr>,
    /// Since the node started.
    pub uptime: Duration,
    /// Peer links are encrypted and authenticated (Noise); false only for measurements.
    pub encrypted: bool,
    /// LAN discovery.
    pub discovery: DiscoveryStatus,
    /// Joining a ring now.
    pub joining: bool,
    /// Counters and sizes.
    pub stats: StatsSnapshot,
    /// Peer links and dials, by peer id.
    pub links: Vec<LinkInfo>,
    /// Leaf-set members below this node's id, nearest first.
    pub leaf_left: Vec<PeerEntry>,
    /// Leaf-set members above this node's id, nearest first.
    pub leaf_right: Vec<PeerEntry>,
    /// Routing-table entries, by row and column.
    pub routes: Vec<RouteEntry>,
    /// Cluster and topic trees this node is part of.
    pub groups: Vec<GroupInfo>,
    /// Tunnel ends on this node.
    pub tunnels: Vec<TunnelInfo>,
    /// Attached applications, by connection number.
    pub sessions: Vec<SessionInfo>,
    /// Durations of the requests of this node's applications.
    pub request_durations: DurationHistogram,
    /// Queue depths.
    pub queues: QueueDepths,
    /// Where identity registries live: `overlay` (the store), or the external registry
    /// ([`crate::Registry::describe`]).
    pub identity_registry: String,
    /// Store keys this node holds (as home or replica; tombstones included) and their bytes.
    pub store: (usize, u64),
}
