//! Simulated applications on the simulated nodes, and the oracles that judge what they saw.
//!
//! An application is one connection registered with its node: a cluster member (answering
//! requests after a service time, accepting tunnels and echoing what comes through them) or a
//! plain client; either may subscribe to topics. Workloads call [`Sim`](crate::engine::Sim)'s application methods
//! (`add_app`, `request`, `publish`, `broadcast`, `open_tunnel`, ...); every request, event
//! and tunnel is recorded with a global id carried in its payload, so the oracles can check
//! afterwards that each request had exactly one outcome and that a reply answered that request,
//! that stable members and subscribers got every event exactly once, and that tunnels delivered
//! every byte in order (or failed with a reason).

mod api;
pub use api::IdCommand;
mod events;

use std::collections::BTreeMap;

use bytes::Bytes;
use petal_core::{ConnId, GroupKind, Time};

/// How a simulated application behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct AppSpec {
    /// The cluster it is a member of (`None`: a plain client).
    pub cluster: Option<String>,
    /// Its relative request capacity, and the requests it handles at once: more wait in its
    /// own queue, first come first served.
    pub capacity: u32,
    /// How long it takes to answer a request, in microseconds.
    pub service_us: u64,
    /// Probability that it answers with a fault instead of a reply.
    pub fault_ratio: f64,
    /// It never answers requests (a stuck service).
    pub stalled: bool,
}

impl AppSpec {
    /// A plain client.
    pub fn client() -> Self {
        Self {
            cluster: None,
            capacity: 1,
            service_us: 0,
            fault_ratio: 0.0,
            stalled: false,
        }
    }

    /// A member of `cluster` with capacity 1 answering after `service_us`.
    pub fn member(cluster: &str, service_us: u64) -> Self {
        Self {
            cluster: Some(cluster.to_owned()),
            service_us,
            ..Self::client()
        }
    }
}

/// One simulated application.
#[derive(Clone, Debug)]
pub struct App {
    /// Its node.
    pub node: u32,
    /// Its connection id on that node.
    pub conn: ConnId,
    /// Its behaviour.
    pub spec: AppSpec,
    /// When it registered.
    pub since: Time,
    /// When it went away (unregistered, or its node crashed or left).
    pub until: Option<Time>,
    /// Requests it answered.
    pub served: u64,
    /// Requests being handled now.
    pub busy: u32,
    /// Requests waiting for a handler: (delivery, request id).
    pub waiting: std::collections::VecDeque<(u64, u64)>,
    /// Topics it subscribes to, with the time it subscribed.
    pub topics: BTreeMap<String, Time>,
}

/// How a request ended, as its requester saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutcomeKind {
    /// A reply.
    Reply,
    /// A fault from the member's handler.
    Fault,
    /// A timeout.
    Timeout,
}

/// One request, from issue to outcome.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// The requesting application.
    pub app: usize,
    /// When it was issued.
    pub start: Time,
    /// Its deadline.
    pub deadline: Time,
    /// Its first outcome and when it came.
    pub outcome: Option<(OutcomeKind, Time)>,
    /// Outcomes reported to the requester (must be at most one; every later one is counted
    /// here too, never dropped).
    pub outcomes: u32,
    /// Times it was delivered to a member.
    pub deliveries: u32,
    /// Members that got it, and the overlay plus tree hops of the first delivery.
    pub served_by: Option<usize>,
    /// Hops of the first delivery.
    pub hops: Option<u8>,
    /// A reply or fault that did not answer this request (an oracle violation).
    pub wrong_reply: bool,
}

/// One published event or broadcast.
#[derive(Clone, Debug)]
pub struct EventRecord {
    /// Topic or cluster.
    pub kind: GroupKind,
    /// Its name.
    pub name: String,
    /// The publishing node.
    pub node: u32,
    /// When it was published.
    pub at: Time,
    /// Deliveries by application: how many times, and when first.
    pub deliveries: BTreeMap<usize, (u32, Time)>,
}

/// How a tunnel ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Still running.
    Running,
    /// Every message went through and came back, in order; closed gracefully.
    Completed,
    /// It did not open in time.
    OpenFailed,
    /// It closed with this reason (or, with an empty reason, before its data was through).
    Failed(String),
}

/// One tunnel, with its echo workload: the opener sends `messages` messages of `size` bytes;
/// the acceptor echoes each; the opener checks every echo and closes when all came back.
#[derive(Clone, Debug)]
pub struct TunnelRecord {
    /// The opening application.
    pub opener: usize,
    /// The accepting application.
    pub acceptor: Option<usize>,
    /// When it was opened.
    pub start: Time,
    /// When it ended.
    pub end_at: Option<Time>,
    /// Messages to send.
    pub messages: u32,
    /// Size of each.
    pub size: usize,
    /// Echoes received, in order.
    pub echoed: u32,
    /// Data that arrived out of order, corrupted or duplicated (an oracle violation).
    pub corrupt: bool,
    /// Times the opener was told the tunnel opened (must be at most one).
    pub confirms: u32,
    /// Acceptor ends that took this tunnel's data (must be at most one: a doubled open
    /// request that reached two members, or one member twice, shows here).
    pub acceptors: u32,
    /// How it ended.
    pub end: TunnelEnd,
    /// The acceptor reads slowly: each message takes it `read_delay_us`, one after another.
    pub read_delay_us: u64,
}

/// One end of a tunnel as its application drives it.
#[derive(Clone, Debug, Default)]
struct TunnelEndState {
    record: usize,
    /// Credit from the node to send.
    credit: u64,
    /// Chunks waiting for credit: (size field, bytes).
    outq: std::collections::VecDeque<(u64, Bytes)>,
    /// The message being reassembled: expected size and bytes so far.
    partial: Option<(u64, Vec<u8>)>,
    /// Messages received whole (acceptor: to echo; opener: echoes).
    received: u32,
    opener: bool,
    /// The opener was told the tunnel opened.
    opened: bool,
    /// The application at this end.
    app: usize,
    /// A slow reader is busy with earlier messages until then.
    busy_until: Option<Time>,
}

/// Every application and every record the oracles read.
#[derive(Debug, Default)]
pub struct Apps {
    /// Applications by index.
    pub list: Vec<App>,
    by_conn: BTreeMap<(u32, ConnId), usize>,
    next_conn: u64,
    /// Requests by global id.
    pub requests: Vec<RequestRecord>,
    /// Requests by (requesting node, node's request id), kept after their outcome so that a
    /// second outcome is still charged to its request.
    pending: BTreeMap<(u32, u64), usize>,
    /// Events by global id.
    pub events: Vec<EventRecord>,
    /// Tunnels by global id.
    pub tunnels: Vec<TunnelRecord>,
    /// When each tunnel (by global id) last moved at its opener: opened, confirmed, or an
    /// echo counted. Apart from the records, which the real stack's trace hash covers.
    pub tunnel_progress: Vec<Time>,
    tunnel_ends: BTreeMap<(u32, u64), TunnelEndState>,
    /// Events for connections the oracle does not know or no longer alive, outcomes of
    /// requests never issued, tunnel events for tunnels never opened (must stay 0). Second
    /// outcomes and confirms are charged to their own request or tunnel instead.
    pub stray_events: u64,
    /// When each node crashed or left.
    pub deaths: BTreeMap<u32, Vec<Time>>,
    /// Outcomes of store operations, in the order they came: (time, node, the connection's
    /// operation id, result). Judged by the scenario that issued them.
    pub kv_done: Vec<(Time, u32, u64, petal_core::StoreResult)>,
    /// Outcomes of identity operations: (time, node, the connection's operation id, result).
    pub id_done: Vec<(Time, u32, u64, petal_core::store::IdResult)>,
    /// Messages to identities delivered to applications: (time, application, identity,
    /// payload).
    pub id_messages: Vec<(Time, usize, String, bytes::Bytes)>,
}

/// Header of every tunnel chunk: tunnel id, message index, chunk offset.
const CHUNK_HEADER: usize = 20;
/// Openers name their tunnels `OPENER_IDS | record`; acceptors by the offer's id, which the
/// core draws below 2^63: the two never meet in `tunnel_ends`.
const OPENER_IDS: u64 = 1 << 63;

impl Apps {
    fn app_of(&self, node: u32, conn: ConnId) -> Option<usize> {
        self.by_conn.get(&(node, conn)).copied()
    }

    /// Applications alive now.
    pub fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        self.list
            .iter()
            .enumerate()
            .filter(|(_, a)| a.until.is_none())
            .map(|(i, _)| i)
    }
}

/// What the engine does for applications at a later time.
#[derive(Debug)]
pub(crate) enum AppAction {
    /// A member answers a delivered request.
    Answer { app: usize, delivery: u64, gid: u64 },
    /// An application takes a received tunnel chunk (slow readers).
    Take {
        node: u32,
        tunnel: u64,
        size: u64,
        payload: Bytes,
    },
}

fn gid_payload(gid: u64, size: usize) -> Bytes {
    let mut v = vec![0u8; size.max(8)];
    v[..8].copy_from_slice(&gid.to_be_bytes());
    Bytes::from(v)
}

fn gid_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}
