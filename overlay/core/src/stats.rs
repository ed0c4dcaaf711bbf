//! Counters a node keeps about itself; drivers export them as metrics and the simulator sums
//! them in reports.

/// What a node did since it started. Drops are always counted here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages queued for sending.
    pub messages_sent: u64,
    /// Messages handled.
    pub messages_received: u64,
    /// Messages of a kind this node does not handle.
    pub unknown_messages: u64,
    /// Sends dropped because the outbox was full.
    pub outbox_drops: u64,
    /// Events dropped because the event queue was full.
    pub event_drops: u64,
    /// Routed messages forwarded to a next hop.
    pub routes_forwarded: u64,
    /// Routed messages delivered here.
    pub routes_delivered: u64,
    /// Hop acknowledgements that did not come in time.
    pub hop_timeouts: u64,
    /// Routed messages sent to another next hop after a hop timeout.
    pub reroutes: u64,
    /// Routed messages dropped (no next hop left, hop limit, or buffers full).
    pub routes_dropped: u64,
    /// Peers declared dead.
    pub deaths_declared: u64,
    /// Dead nodes found alive again by a re-probe or a message.
    pub revivals: u64,
    /// Pings sent (liveness and probes).
    pub pings_sent: u64,
    /// Routing-table entries replaced by a closer (lower round-trip time) node.
    pub proximity_swaps: u64,
    /// Join restarts after a timeout.
    pub join_retries: u64,
    /// Lookup retries after a timeout.
    pub lookup_retries: u64,
}
