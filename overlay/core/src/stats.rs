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
    /// Messages of this node's applications sent before it announced itself while joining,
    /// held and sent on once it is ready (or dropped with the join if it fails: those are
    /// counted in `routes_dropped` too). A joiner that has not announced itself sends nothing
    /// that would make it known.
    pub routes_held: u64,
    /// Routed messages dropped (no next hop left, hop limit, or buffers full).
    pub routes_dropped: u64,
    /// Charges refused by the memory budget or a peer's or connection's share of it
    /// ([`crate::Config::memory_budget`]): a routed message or parked ask dropped, a held event
    /// dropped or one not kept for replays, a tunnel failed, an application command refused.
    pub memory_refused: u64,
    /// Peers declared dead.
    pub deaths_declared: u64,
    /// Links the driver reported lost ([`crate::Node::link_lost`]).
    pub link_losses: u64,
    /// Suspected peers declared dead because the driver could not dial them.
    pub deaths_by_dial: u64,
    /// Dead nodes found alive again by a re-probe or a message.
    pub revivals: u64,
    /// Nodes remembered dead probed because another node named them as alive
    /// ([`crate::Config::dead_rumour_after`]).
    pub dead_rumours: u64,
    /// Requests delivered to this node's members and not answered when it left: failed at
    /// their requesters at once ([`crate::Node::leave`]).
    pub requests_failed_on_leave: u64,
    /// Pings sent (liveness and probes).
    pub pings_sent: u64,
    /// Routing-table entries replaced by a closer (lower round-trip time) node.
    pub proximity_swaps: u64,
    /// Join restarts after a timeout.
    pub join_retries: u64,
    /// Join attempts moved on because the driver could not reach their contact.
    pub join_contacts_unreachable: u64,
    /// Announces of a joining node sent again early because one was lost with a failed dial.
    pub join_reannounces: u64,
    /// Routing-table rows asked of other nodes (gossip after a join, periodic maintenance,
    /// repair).
    pub row_requests: u64,
    /// Nearest-neighbour searches started before a join.
    pub searches: u64,
    /// Times a search found a node nearer than the nearest so far.
    pub search_moves: u64,
    /// Joiners refused because this node was not in a ring yet.
    pub joins_refused: u64,
    /// Times this node founded a ring because its contacts were a cycle of joiners.
    pub join_founded: u64,
    /// Nodes introduced by the driver ([`crate::Node::introduce`]) and sent our leaf set.
    pub introductions: u64,
    /// Lookup retries after a timeout.
    pub lookup_retries: u64,
    /// Group joins or grafts refused because this node's group table was full.
    pub group_drops: u64,
    /// Times this node became the root of a group tree.
    pub group_roots_taken: u64,
    /// Times a group moved to a new parent (the route to its root changed).
    pub group_parent_changes: u64,
    /// Joins for its own id a ready node routed because one leaf set moved half of its own.
    pub relocations: u64,
    /// Groups re-grafted at once because a leaf-set change moved their root.
    pub group_route_changes: u64,
    /// Children dropped after staying silent.
    pub group_children_expired: u64,
    /// Children put back into their trees when their node, declared dead, answered again.
    pub group_children_restored: u64,
    /// Groups re-grafted at once because their parent died.
    pub group_repairs: u64,
    /// Grafts refused because the sender is this node's parent, and siblings left (after a
    /// redirect) because a child reported a cycle's subtree height (transient cycles).
    pub group_cycles_refused: u64,
    /// Children dropped (and redirected to their siblings) because a tree was over its child cap.
    pub group_redirects_sent: u64,
    /// Times this node was dropped by a full parent and redirected.
    pub group_redirected: u64,
    /// Times this node grafted on a sibling after a redirect.
    pub group_fostered: u64,
    /// Events replayed to a child from the recent-event buffer.
    pub group_replayed: u64,
    /// Events (publishes and broadcasts) sent by local applications.
    pub events_published: u64,
    /// Events that reached a root with no tree (nobody subscribed).
    pub events_unheard: u64,
    /// Events delivered to local members.
    pub events_delivered: u64,
    /// Events cast to children.
    pub events_forwarded: u64,
    /// Events dropped because they were already taken.
    pub events_duplicate: u64,
    /// Copies of an event numbered twice (a publish rerouted while its first copy was late)
    /// that were not delivered, or not numbered again at the root, because their identity was
    /// seen lately.
    pub events_copies_dropped: u64,
    /// Events from a node that is not this node's parent in that tree.
    pub events_stale: u64,
    /// Gaps in a tree's event sequence that asked the parent for a replay.
    pub event_gaps: u64,
    /// Events that arrived past a gap and were held until it filled or was given up.
    pub events_held: u64,
    /// Events skipped after a gap could not be replayed.
    pub events_lost: u64,
    /// Requests issued by local connections.
    pub requests_sent: u64,
    /// Requests refused because too many were pending.
    pub request_drops: u64,
    /// Requests answered with a reply.
    pub requests_answered: u64,
    /// Requests answered with a fault.
    pub requests_faulted: u64,
    /// Requests that timed out.
    pub requests_timed_out: u64,
    /// Requests forgotten because their connection went away.
    pub requests_abandoned: u64,
    /// Replies that came after their request's outcome (dropped).
    pub replies_late: u64,
    /// Replies sent by local members.
    pub replies_sent: u64,
    /// Requests delivered to local members.
    pub requests_delivered: u64,
    /// Deliveries whose member did not answer in time (stalling it).
    pub deliveries_expired: u64,
    /// Deliveries forgotten because their member went away.
    pub deliveries_abandoned: u64,
    /// Requests and tunnel opens sent down a cluster tree.
    pub asks_forwarded: u64,
    /// Requests and tunnel opens dropped for want of a member to take them.
    pub asks_unplaced: u64,
    /// Copies of a request or tunnel open delivered here lately that were not delivered again.
    pub asks_copies_dropped: u64,
    /// Requests and tunnel opens that reached their cluster's root before any member and
    /// waited there (see `Config::ask_park_timeout`); those never placed also count as
    /// unplaced.
    pub asks_parked: u64,
    /// Requests and tunnel opens sent back to the root because this subtree had no member.
    pub asks_bounced: u64,
    /// Subscribes to a topic already subscribed (ignored).
    pub duplicate_subscribes: u64,
    /// Unsubscribes from a topic not subscribed (ignored).
    pub bogus_unsubscribes: u64,
    /// Tunnels opened by local connections.
    pub tunnels_opened: u64,
    /// Tunnels that failed to open or closed on failure.
    pub tunnels_failed: u64,
    /// Tunnel opens refused because the tunnel table was full.
    pub tunnel_drops: u64,
    /// Tunnel messages for no open tunnel of their sender (dropped).
    pub tunnel_stale: u64,
    /// Tunnel chunks that arrived twice (dropped).
    pub tunnel_chunk_copies: u64,
    /// Tunnel chunks that arrived past a gap in their sequence, held until it filled.
    pub tunnel_chunks_held: u64,
    /// Tunnel payload bytes sent to far nodes.
    pub tunnel_bytes_sent: u64,
    /// Tunnel payload bytes handed to local applications.
    pub tunnel_bytes_received: u64,
}

impl Stats {
    /// Every counter with its name, in declaration order (what metrics exporters and reports
    /// iterate over).
    pub fn fields(&self) -> [(&'static str, u64); 79] {
        [
            ("messages_sent", self.messages_sent),
            ("messages_received", self.messages_received),
            ("unknown_messages", self.unknown_messages),
            ("outbox_drops", self.outbox_drops),
            ("event_drops", self.event_drops),
            ("routes_forwarded", self.routes_forwarded),
            ("routes_delivered", self.routes_delivered),
            ("hop_timeouts", self.hop_timeouts),
            ("reroutes", self.reroutes),
            ("routes_held", self.routes_held),
            ("routes_dropped", self.routes_dropped),
            ("memory_refused", self.memory_refused),
            ("deaths_declared", self.deaths_declared),
            ("link_losses", self.link_losses),
            ("deaths_by_dial", self.deaths_by_dial),
            ("revivals", self.revivals),
            ("dead_rumours", self.dead_rumours),
            ("requests_failed_on_leave", self.requests_failed_on_leave),
            ("pings_sent", self.pings_sent),
            ("proximity_swaps", self.proximity_swaps),
            ("join_retries", self.join_retries),
            ("join_contacts_unreachable", self.join_contacts_unreachable),
            ("join_reannounces", self.join_reannounces),
            ("row_requests", self.row_requests),
            ("searches", self.searches),
            ("search_moves", self.search_moves),
            ("joins_refused", self.joins_refused),
            ("join_founded", self.join_founded),
            ("introductions", self.introductions),
            ("lookup_retries", self.lookup_retries),
            ("group_drops", self.group_drops),
            ("group_roots_taken", self.group_roots_taken),
            ("group_parent_changes", self.group_parent_changes),
            ("relocations", self.relocations),
            ("group_route_changes", self.group_route_changes),
            ("group_children_expired", self.group_children_expired),
            ("group_children_restored", self.group_children_restored),
            ("group_repairs", self.group_repairs),
            ("group_cycles_refused", self.group_cycles_refused),
            ("group_redirects_sent", self.group_redirects_sent),
            ("group_redirected", self.group_redirected),
            ("group_fostered", self.group_fostered),
            ("group_replayed", self.group_replayed),
            ("events_published", self.events_published),
            ("events_unheard", self.events_unheard),
            ("events_delivered", self.events_delivered),
            ("events_forwarded", self.events_forwarded),
            ("events_duplicate", self.events_duplicate),
            ("events_copies_dropped", self.events_copies_dropped),
            ("events_stale", self.events_stale),
            ("event_gaps", self.event_gaps),
            ("events_held", self.events_held),
            ("events_lost", self.events_lost),
            ("requests_sent", self.requests_sent),
            ("request_drops", self.request_drops),
            ("requests_answered", self.requests_answered),
            ("requests_faulted", self.requests_faulted),
            ("requests_timed_out", self.requests_timed_out),
            ("requests_abandoned", self.requests_abandoned),
            ("replies_late", self.replies_late),
            ("replies_sent", self.replies_sent),
            ("requests_delivered", self.requests_delivered),
            ("deliveries_expired", self.deliveries_expired),
            ("deliveries_abandoned", self.deliveries_abandoned),
            ("asks_forwarded", self.asks_forwarded),
            ("asks_unplaced", self.asks_unplaced),
            ("asks_copies_dropped", self.asks_copies_dropped),
            ("asks_parked", self.asks_parked),
            ("asks_bounced", self.asks_bounced),
            ("duplicate_subscribes", self.duplicate_subscribes),
            ("bogus_unsubscribes", self.bogus_unsubscribes),
            ("tunnels_opened", self.tunnels_opened),
            ("tunnels_failed", self.tunnels_failed),
            ("tunnel_drops", self.tunnel_drops),
            ("tunnel_stale", self.tunnel_stale),
            ("tunnel_chunk_copies", self.tunnel_chunk_copies),
            ("tunnel_chunks_held", self.tunnel_chunks_held),
            ("tunnel_bytes_sent", self.tunnel_bytes_sent),
            ("tunnel_bytes_received", self.tunnel_bytes_received),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::Stats;

    /// A counter added to the struct but not to `fields` fails here (every field is a u64).
    #[test]
    fn fields_lists_every_counter_once() {
        let s = Stats::default();
        let f = s.fields();
        assert_eq!(f.len() * 8, std::mem::size_of::<Stats>());
        let mut names: Vec<&str> = f.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), f.len());
        let s = Stats {
            tunnel_bytes_received: 7,
            messages_sent: 3,
            ..Stats::default()
        };
        let f = s.fields();
        assert_eq!(f[0], ("messages_sent", 3));
        assert_eq!(f[f.len() - 1], ("tunnel_bytes_received", 7));
    }
}
