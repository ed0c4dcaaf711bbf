//! The JSON documents of the `/v1/...` endpoints, built from a node's [`Inspection`].
//!
//! Ids and keys are 32 hex digits, durations are milliseconds (`f64`, microsecond precision)
//! named `*_ms`, byte counts `*_bytes`. The OpenAPI document (`/v1/openapi.json`) is derived
//! from these types.

use std::time::Duration;

use petal_core::{GroupInfo, GroupKind, TunnelPhase};
use petal_node::Inspection;
use petal_node::inspect::{DiscoveryStatus, LinkInfo, PeerEntry, RouteEntry, SessionInfo};
use serde::Serialize;
use utoipa::ToSchema;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rtt_ms(d: Option<Duration>) -> Option<f64> {
    d.map(ms)
}

/// `GET /v1/node`: who this node is and how it runs.
#[derive(Serialize, ToSchema, Debug)]
pub struct NodeView {
    /// The node's id (32 hex digits).
    pub id: String,
    /// The address other nodes dial.
    pub peer_addr: String,
    /// Where local applications connect (relay protocol v1).
    pub relay_addrs: Vec<String>,
    /// The daemon's version.
    pub version: String,
    /// Seconds since the node started.
    pub uptime_s: f64,
    /// Peer links are encrypted and authenticated (Noise); false only in measurement mode.
    pub encrypted: bool,
    /// LAN discovery.
    pub discovery: DiscoveryView,
    /// Part of a ring (joined, or serving alone).
    pub ready: bool,
    /// Joining a ring now.
    pub joining: bool,
    /// Peer links up.
    pub links: usize,
    /// Distinct leaf-set members.
    pub leaf_set: usize,
    /// Routing-table entries.
    pub routes: usize,
    /// Attached applications.
    pub sessions: usize,
    /// Bytes held against the memory budget.
    pub memory_used_bytes: u64,
    /// The memory budget.
    pub memory_budget_bytes: u64,
    /// Store keys held here (as home or replica; deletions kept as tombstones included).
    pub store_keys: usize,
    /// Bytes of their names and values (counted against `store_max_bytes`).
    pub store_bytes: u64,
    /// Where identity registries live: `overlay`, or the Redis of `--session-store` (its URL
    /// without a password).
    pub identity_registry: String,
}

/// Whether LAN discovery runs.
#[derive(Serialize, ToSchema, Debug)]
pub struct DiscoveryView {
    /// `off` (seeds only), `running`, or `retrying` (cannot open its socket; the node serves
    /// without it and tries again with back-off).
    pub state: &'static str,
    /// The multicast group and port.
    pub group: Option<String>,
    /// Why it cannot start (when retrying).
    pub error: Option<String>,
}

impl From<&DiscoveryStatus> for DiscoveryView {
    fn from(d: &DiscoveryStatus) -> Self {
        match d {
            DiscoveryStatus::Off => Self {
                state: "off",
                group: None,
                error: None,
            },
            DiscoveryStatus::Running { group } => Self {
                state: "running",
                group: Some(group.to_string()),
                error: None,
            },
            DiscoveryStatus::Retrying { group, error } => Self {
                state: "retrying",
                group: Some(group.to_string()),
                error: Some(error.clone()),
            },
        }
    }
}

impl NodeView {
    /// The view of `i`, for a daemon of version `version`.
    pub fn new(i: &Inspection, version: &str) -> Self {
        Self {
            id: i.id.to_string(),
            peer_addr: i.peer_addr.to_string(),
            relay_addrs: i.relay_addrs.iter().map(ToString::to_string).collect(),
            version: version.to_string(),
            uptime_s: i.uptime.as_secs_f64(),
            encrypted: i.encrypted,
            discovery: (&i.discovery).into(),
            ready: i.stats.ready,
            joining: i.joining,
            links: i.stats.links,
            leaf_set: i.stats.leaf_set,
            routes: i.routes.len(),
            sessions: i.stats.sessions,
            memory_used_bytes: i.stats.memory_used,
            memory_budget_bytes: i.stats.memory_budget,
            store_keys: i.store.0,
            store_bytes: i.store.1,
            identity_registry: i.identity_registry.clone(),
        }
    }
}

/// One peer link (or a dial under way): an element of `GET /v1/peers`.
#[derive(Serialize, ToSchema, Debug)]
pub struct PeerView {
    /// The peer's id.
    pub id: String,
    /// Its address, as this node knows it.
    pub addr: Option<String>,
    /// `up` or `dialing`.
    pub state: &'static str,
    /// `outbound` (this node dialed) or `inbound`.
    pub direction: &'static str,
    /// Round trip measured by the overlay's probes.
    pub rtt_ms: Option<f64>,
    /// Seconds since the link came up.
    pub age_s: f64,
    /// Bytes read from the socket.
    pub bytes_in: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    /// Overlay messages received.
    pub messages_in: u64,
    /// Messages written.
    pub messages_out: u64,
    /// Bytes queued for the link.
    pub queued_bytes: u64,
}

impl From<&LinkInfo> for PeerView {
    fn from(l: &LinkInfo) -> Self {
        Self {
            id: l.peer.to_string(),
            addr: l.addr.map(|a| a.to_string()),
            state: if l.up { "up" } else { "dialing" },
            direction: if l.dialed_by_us {
                "outbound"
            } else {
                "inbound"
            },
            rtt_ms: rtt_ms(l.rtt),
            age_s: l.age.as_secs_f64(),
            bytes_in: l.bytes_in,
            bytes_out: l.bytes_out,
            messages_in: l.messages_in,
            messages_out: l.messages_out,
            queued_bytes: l.queued_bytes,
        }
    }
}

/// A node in this node's tables.
#[derive(Serialize, ToSchema, Debug)]
pub struct EntryView {
    /// Its id.
    pub id: String,
    /// Its address, as this node knows it.
    pub addr: Option<String>,
    /// Round trip measured by the overlay's probes.
    pub rtt_ms: Option<f64>,
}

impl From<&PeerEntry> for EntryView {
    fn from(e: &PeerEntry) -> Self {
        Self {
            id: e.id.to_string(),
            addr: e.addr.map(|a| a.to_string()),
            rtt_ms: rtt_ms(e.rtt),
        }
    }
}

/// `GET /v1/leafset`: the nodes with the nearest ids on each side, nearest first.
#[derive(Serialize, ToSchema, Debug)]
pub struct LeafSetView {
    /// This node's id.
    pub id: String,
    /// Members with smaller ids (counter-clockwise on the ring).
    pub left: Vec<EntryView>,
    /// Members with larger ids (clockwise).
    pub right: Vec<EntryView>,
}

/// One routing-table entry: an element of `GET /v1/routes`.
#[derive(Serialize, ToSchema, Debug)]
pub struct RouteView {
    /// The row: how many leading hex digits it shares with this node's id.
    pub row: u8,
    /// The column: its digit at that position.
    pub column: u8,
    /// The node.
    #[serde(flatten)]
    pub entry: EntryView,
}

impl From<&RouteEntry> for RouteView {
    fn from(r: &RouteEntry) -> Self {
        Self {
            row: r.row,
            column: r.column,
            entry: (&r.peer).into(),
        }
    }
}

/// This node's part of a cluster's or topic's tree: an element of `GET /v1/clusters` and
/// `GET /v1/topics`.
#[derive(Serialize, ToSchema, Debug)]
pub struct GroupView {
    /// The name (null when this node only relays the tree and knows its key alone).
    pub name: Option<String>,
    /// The tree's key (the hash of its name).
    pub key: String,
    /// `root`, `inner` (parent and children), `leaf` (a parent, no children) or `detached`
    /// (no parent yet: grafting).
    pub role: &'static str,
    /// The parent's id.
    pub parent: Option<String>,
    /// The parent was chosen after a full node dropped this one (bottleneck remover).
    pub fostered: bool,
    /// The children's ids.
    pub children: Vec<String>,
    /// Local member connections (cluster services or subscribers).
    pub members: Vec<u64>,
    /// Members in the subtree, as reported up.
    pub subtree_members: u32,
    /// Requests delivered in the subtree and not yet answered.
    pub subtree_inflight: u32,
    /// Milliseconds more the tree is kept even with no member and no child: a child was
    /// dropped when its node was declared dead, and would go back (with a replay of the events
    /// it missed) if that node answered within this time; its answer ends its part. Null when not
    /// held: a tree with no member and no child goes.
    pub held_ms: Option<f64>,
}

impl From<&GroupInfo> for GroupView {
    fn from(g: &GroupInfo) -> Self {
        let role = match (g.root, g.parent.is_some(), g.children.is_empty()) {
            (true, _, _) => "root",
            (false, true, false) => "inner",
            (false, true, true) => "leaf",
            (false, false, _) => "detached",
        };
        Self {
            name: g.name.as_deref().map(str::to_string),
            key: g.key.to_string(),
            role,
            parent: g.parent.map(|p| p.to_string()),
            fostered: g.fostered,
            children: g.children.iter().map(ToString::to_string).collect(),
            members: g.members.iter().map(|c| c.0).collect(),
            subtree_members: g.load.members,
            subtree_inflight: g.load.inflight,
            held_ms: g.held_for.map(ms),
        }
    }
}

/// The trees of one kind.
pub fn groups(i: &Inspection, kind: GroupKind) -> Vec<GroupView> {
    i.groups
        .iter()
        .filter(|g| g.kind == kind)
        .map(GroupView::from)
        .collect()
}

/// One tunnel end: an element of `GET /v1/tunnels`.
#[derive(Serialize, ToSchema, Debug)]
pub struct TunnelView {
    /// The local connection holding it.
    pub conn: u64,
    /// The connection's id for it.
    pub id: u64,
    /// `opening`, `offered`, `open` or `closing`.
    pub phase: &'static str,
    /// The node of the far end.
    pub peer: Option<String>,
    /// Bytes queued to go out.
    pub queued_out_bytes: u64,
    /// Bytes received, not yet taken by the application.
    pub queued_in_bytes: u64,
}

impl From<&petal_core::TunnelInfo> for TunnelView {
    fn from(t: &petal_core::TunnelInfo) -> Self {
        Self {
            conn: t.conn.0,
            id: t.id,
            phase: match t.phase {
                TunnelPhase::Opening => "opening",
                TunnelPhase::Offered => "offered",
                TunnelPhase::Open => "open",
                TunnelPhase::Closing => "closing",
            },
            peer: t.peer.map(|p| p.to_string()),
            queued_out_bytes: t.queued_out_bytes,
            queued_in_bytes: t.queued_in_bytes,
        }
    }
}

/// One attached application: an element of `GET /v1/sessions`.
#[derive(Serialize, ToSchema, Debug)]
pub struct SessionView {
    /// The connection's number on this node.
    pub conn: u64,
    /// Seconds since it attached.
    pub age_s: f64,
    /// Bytes queued for it.
    pub queued_bytes: u64,
    /// Broadcasts, events and request deliveries dropped because it did not read.
    pub dropped: u64,
    /// Its requests awaiting an outcome.
    pub pending_requests: usize,
    /// Clusters it serves.
    pub clusters: Vec<String>,
    /// Topics it subscribes to.
    pub topics: Vec<String>,
}

/// Every session, with the clusters and topics each is a member of (one pass over the
/// memberships, however many sessions and groups).
pub fn sessions(i: &Inspection) -> Vec<SessionView> {
    let mut names: std::collections::BTreeMap<u64, (Vec<String>, Vec<String>)> =
        std::collections::BTreeMap::new();
    for g in &i.groups {
        let Some(name) = g.name.as_deref() else {
            continue;
        };
        for c in &g.members {
            let (clusters, topics) = names.entry(c.0).or_default();
            match g.kind {
                GroupKind::Cluster => clusters.push(name.to_string()),
                GroupKind::Topic => topics.push(name.to_string()),
            }
        }
    }
    i.sessions
        .iter()
        .map(|s: &SessionInfo| {
            let (clusters, topics) = names.remove(&s.conn).unwrap_or_default();
            SessionView {
                conn: s.conn,
                age_s: s.age.as_secs_f64(),
                queued_bytes: s.queued_bytes,
                dropped: s.dropped,
                pending_requests: s.pending_requests,
                clusters,
                topics,
            }
        })
        .collect()
}

/// An error document (every non-2xx answer of the API but the plain-text probes).
#[derive(Serialize, ToSchema, Debug)]
pub struct ErrorView {
    /// What went wrong.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_keep_microseconds() {
        assert!((ms(Duration::from_micros(1_500)) - 1.5).abs() < 1e-9);
        assert_eq!(rtt_ms(None), None);
    }
}
