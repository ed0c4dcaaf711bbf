//! Every limit and timer of a node, in one place.

use std::time::Duration;

/// Configuration of a Pastry node. [`Config::default`] gives the values the reference reports
/// use; every field is a named limit (see ARCHITECTURE.md, principle 5).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Leaf-set size `L` (both sides together); must be even and at least 2.
    pub leaf_set_size: usize,
    /// How often a node sends a one-way heartbeat to its counter-clockwise leaf-set neighbour.
    /// Each node watches its clockwise neighbour: after `heartbeat_interval` and a quarter of
    /// silence it probes it (MSPastry's scheme: one message per node and interval finds every
    /// crash). Group parents are watched on the same interval.
    pub heartbeat_interval: Duration,
    /// How long another leaf-set member may stay silent before it is pinged. Any message from a
    /// peer counts; a crash is normally found sooner by its watcher, which tells the leaf set
    /// (`Suspect`). 5 s: with 30 s, 0.45 % of lookups failed under 1-minute churn (`churn`
    /// scenario, 135 of 29,882) against 1 of 29,926 with 5 s, for 4 more messages per node and
    /// second under 10-minute churn (9.5 against 5.5).
    pub leaf_ping_interval: Duration,
    /// How long a routing-table member (not in the leaf set) may stay silent before it is
    /// pinged (routes through a dead entry are rerouted by hop acknowledgements meanwhile).
    /// 30 s: against 120 s, 1-minute churn gets 98.48 % consistent lookups instead of 97.83 %
    /// and `churn-messaging` 99.94 % of requests answered instead of 99.77 %, for 1.3 more
    /// messages per node and second under 10-minute churn (10.8 against 9.5).
    pub routing_ping_interval: Duration,
    /// How long a ping waits for its pong before it counts as missed, at most; with the peer's
    /// round trip measured, four round trips but at least `ping_timeout_min`.
    pub ping_timeout: Duration,
    /// The shortest wait for a pong (see `ping_timeout`).
    pub ping_timeout_min: Duration,
    /// Consecutive missed pings that make a suspected peer dead. A first miss makes the peer
    /// suspected and triggers immediate re-probes, so death is declared after
    /// `suspicion_misses` timeouts in a row.
    pub suspicion_misses: u32,
    /// How often a node sends its leaf set to its nearest neighbour on each side.
    pub leaf_exchange_interval: Duration,
    /// When the leaf set takes in a node learned second-hand (from another node's leaf set or
    /// a join reply), the next exchange comes within this, instead of at the next interval:
    /// rings that are merging or forming (a fleet starting) pass news along in a few short
    /// gaps, while a stable ring, joins (announced to every neighbour) and deaths (repaired by
    /// their own exchanges) cost two messages per node per interval.
    pub leaf_exchange_min: Duration,
    /// The longest a join attempt may go without progress (the bound derived from round-trip
    /// times is capped here): then the join is retried through the next contact, or, when only
    /// announce acknowledgements are missing, the announces are sent again.
    pub join_timeout: Duration,
    /// How long a join attempt waits for the contact's first answer when no round-trip time
    /// to a contact has been measured yet.
    pub join_contact_timeout: Duration,
    /// Once a contact's round-trip time is measured, an attempt must make progress (a join
    /// reply, an announce acknowledgement) within this many round trips...
    pub join_rtt_factor: u32,
    /// ...but never less than this (a loaded node may take a while to answer).
    pub join_progress_min: Duration,
    /// How long a joiner waits before trying its contacts again after every one refused
    /// because it is not in a ring yet.
    pub join_busy_retry: Duration,
    /// Before its first join attempt, a joiner searches the ring for the node nearest to it
    /// (by its own round-trip probes, starting from its bootstrap node) and joins through that
    /// one, so that its routing table starts from near nodes (proximity neighbour selection).
    pub join_search: bool,
    /// Most contacts a joiner keeps (its own and those named by refusing contacts).
    pub max_join_contacts: usize,
    /// Join attempts that time out before the join is reported failed (and no sooner than
    /// `join_attempts` × `join_timeout` after it started).
    pub join_attempts: u32,
    /// Hop acknowledgement timeout when the next hop's round-trip time is unknown.
    pub hop_ack_timeout: Duration,
    /// Lower bound of the hop acknowledgement timeout computed from a measured round-trip time
    /// (the timeout is `max(hop_ack_timeout_min, 3 x rtt)`).
    pub hop_ack_timeout_min: Duration,
    /// How many other next hops a routed message tries after hop-ack timeouts before it is dropped.
    ///
    /// 8 by default. Right after a partition, half of a node's routing-table entries are on the
    /// other side and stay there until a ping or a route finds them silent; a route toward a
    /// region that the node has not routed to since can meet several of them in a row. With 4,
    /// `copies-messaging` lost whole events that way 7 and 12 s into its split (the publisher's
    /// first hop and all four reroutes went across it, traced), and delivered 98.85 % of the
    /// split's events; with 8, 99.31 % (`partition-messaging`: 99.77 -> 99.92 %).
    pub max_reroutes: u32,
    /// Most routed messages awaiting a hop acknowledgement at once; beyond, forwarding drops
    /// (counted in `routes_dropped`).
    pub max_pending_hops: usize,
    /// Overlay hops after which a routed message is dropped (a loop guard).
    pub max_hops: u8,
    /// How long the origin of a lookup waits for its reply before retrying.
    pub lookup_timeout: Duration,
    /// Lookup attempts before the lookup is reported failed.
    pub lookup_attempts: u32,
    /// Most lookups this node has outstanding at once.
    pub max_pending_lookups: usize,
    /// Most proximity probes (pings to routing candidates) outstanding at once.
    pub max_probes: usize,
    /// Proximity sampling: a candidate for a routing-table slot already held by a measured
    /// entry is probed only when a hash of its id and this node's, taken modulo
    /// `probe_one_in`, is 0, so that a node measures about one such challenger in
    /// `probe_one_in` (always the same ones). Empty slots take any candidate. 1 (the default)
    /// probes every challenger: the probes of a 1,000-node fleet's cold start are most of its
    /// messages, and sampling them trades route stretch for traffic (`churn-tradeoff`
    /// measures both).
    pub probe_one_in: u32,
    /// Most routed deliveries buffered while the node is still joining.
    pub max_join_buffer: usize,
    /// Dead nodes remembered (and re-probed, so that healed partitions merge) at most.
    pub max_dead: usize,
    /// First re-probe delay of a dead node; doubles up to [`Config::dead_probe_max`].
    pub dead_probe_min: Duration,
    /// Longest delay between re-probes of a dead node.
    pub dead_probe_max: Duration,
    /// How long a dead node is remembered and re-probed.
    pub dead_forget_after: Duration,
    /// Shortest gap between two re-probes of dead nodes by one node, whatever their number:
    /// a re-probe that falls due sooner is skipped until its next backoff step. Without it each crash cost
    /// every node that remembered it a ping every `dead_probe_max` for `dead_forget_after`
    /// (about 500 unanswered pings per crash in `churn`), and the cost grew with the churn
    /// rate. A partition still heals fast: each of its nodes re-probes the other side in turn,
    /// and one answer merges the rings.
    pub dead_probe_spacing: Duration,
    /// A node remembered dead for longer than this, named as alive by another node, is probed
    /// at once (see `Node::dead_rumour`); sooner after its death, a mention is taken for a
    /// stale table.
    pub dead_rumour_after: Duration,
    /// Liveness timers (pings, ping timeouts, re-probes) are rounded up to this grid (with a
    /// per-node phase), so that one wake-up serves many peers.
    pub timer_granularity: Duration,
    /// How often a random routing-table row is refreshed from one of its members (its entries
    /// are candidates, probed for proximity).
    pub routing_maintenance_interval: Duration,
    /// Round-trip times of recently probed candidates remembered at most (1 to 65,534): the
    /// cache holds the largest power of two of 8-entry sets within this bound, 8 bytes an
    /// entry (512 by default: 4 KiB). Below 512, a fleet of 1,000 nodes started at once
    /// probed again candidates it had forgotten (see `rtt_cache`).
    pub max_rtt_cache: usize,
    /// Most transmits queued in the node before the driver drains them; beyond, sends drop
    /// (counted).
    pub max_outbox: usize,
    /// Most events queued before the driver drains them; beyond, events drop (counted).
    pub max_events: usize,
    /// How often each group-tree member re-grafts on its parent (refresh, load report, and the move to a new parent when the route to the root changed).
    pub group_refresh_interval: Duration,
    /// How long a parent keeps a child that stopped grafting.
    pub group_child_timeout: Duration,
    /// Most group trees a node takes part in. Other nodes' grafts may make it take part in at
    /// most 7/8 of them (rounded down); the rest is kept for groups of its local members.
    pub max_groups: usize,
    /// Most children a node keeps in one group tree: a graft beyond it drops the child farthest
    /// away, which re-attaches through the sibling closest to it (Scribe's bottleneck remover).
    pub max_group_children: usize,
    /// Recent events kept per group for replays to children that missed them.
    pub group_replay_events: usize,
    /// Bytes of recent events kept per group at most.
    pub group_replay_bytes: usize,
    /// How long a node that found a gap in a group's events (and asked its parent for a
    /// replay) holds the events after it before it gives up on the missing ones. 0 (the
    /// default): none are held; the first event past a gap is left to the replay (which
    /// brings it too) and a second one gives the gap up. Links between nodes
    /// are ordered streams, where a gap means events lost (a parent that changed), not late:
    /// holding then only delays, and in `partition-messaging` it cost 0.18 % of the
    /// deliveries after the heal (not understood yet). A transport that reorders needs it
    /// (`copies-messaging` sets 1 s).
    pub event_gap_wait: Duration,
    /// How long a node remembers the identity of each event it delivered to local members (or
    /// numbered, as a group's root) and of each request or tunnel open it delivered, so that a
    /// copy of it (rerouted while the first was only late, numbered by two roots) is taken at
    /// most once. A copy arriving later than this after the first, or after the newer
    /// identities fill the bound (`group_dedup_events`, `max_recent_asks`), is taken again:
    /// longer than any copy lingers (a link closes after 5 s of silence; a route gives up after
    /// its reroutes).
    pub dedup_window: Duration,
    /// Most event identities a group remembers (per group, on nodes with local members and
    /// at the root).
    pub group_dedup_events: usize,
    /// Most delivered requests and tunnel opens a node remembers (see `dedup_window`).
    pub max_recent_asks: usize,
    /// Most local application connections.
    pub max_conns: usize,
    /// Most requests issued here awaiting their outcome.
    pub max_pending_requests: usize,
    /// Most requests one connection may have awaiting their outcome (so that one connection
    /// cannot take the node's whole table).
    pub max_conn_requests: u32,
    /// Most tunnel ends one connection may have.
    pub max_conn_tunnels: usize,
    /// Most requests delivered to local members awaiting their reply.
    pub max_deliveries: usize,
    /// Longest an ask (request or tunnel open) waits at its cluster's root when the tree has no
    /// member yet (a fleet starting, a root that just moved), bounded by the ask's own timeout:
    /// it is placed as soon as a member or subtree grafts.
    pub ask_park_timeout: Duration,
    /// Most asks waiting at this node for a member of their cluster.
    pub max_parked_asks: usize,
    /// In-flight requests that make a member saturated (chosen only when no member has room).
    pub max_member_inflight: u32,
    /// How long an expired, unanswered delivery keeps its member stalled.
    pub stall_forget_after: Duration,
    /// Most tunnel ends on a node.
    pub max_tunnels: usize,
    /// Largest tunnel chunk, in bytes.
    pub tunnel_chunk_limit: usize,
    /// Bytes an application may have queued on one tunnel in its node (its initial send credit).
    pub tunnel_buffer: u64,
    /// Bytes a node may send on one tunnel that the far node has not yet handed to its
    /// application, each chunk counting 64 bytes more than its payload (so the window also
    /// bounds how many chunks a node holds).
    pub tunnel_window: u64,
    /// How often an idle open tunnel sends a keepalive.
    pub tunnel_keepalive_interval: Duration,
    /// Silence after which an open tunnel fails.
    pub tunnel_idle_timeout: Duration,
    /// Bytes that peers and local applications can make this node hold, in all (see
    /// [`crate::MemoryBudget`]): routed messages awaiting acknowledgement, parked asks, group
    /// events held or kept for replays, tunnel chunks in both directions; a driver that shares
    /// the budget adds its link and session queues. 1 GiB: a fixed figure, not derived from the
    /// machine, so that the same configuration behaves the same everywhere.
    pub memory_budget: u64,
    /// Most of the budget one peer or one local connection may hold (1/8 of the default
    /// budget): one sender that floods, or one application that stops reading, meets its share
    /// while the rest of the budget stays for the others.
    pub memory_share: u64,
    /// Replicas of each stored key (`k`): the key's home and the nodes next closest to the
    /// key, all in the home's leaf set (so at most `leaf_set_size / 2 + 1`).
    pub store_replicas: usize,
    /// Replicas that must store a write before it is acknowledged (`W`; all of them when the
    /// ring has fewer nodes).
    pub store_write_quorum: usize,
    /// Replicas a read asks before it answers with the newest version they hold (`R`; with
    /// `R + W > k` a read sees every write acknowledged before it started, while the key's
    /// replicas stay in place).
    pub store_read_quorum: usize,
    /// How long a home waits for its replicas' answers (bounded by the operation's timeout).
    pub store_replica_timeout: Duration,
    /// How often replicas compare digests of the keys they share and repair what differs, and
    /// hand off keys they no longer hold (anti-entropy).
    pub store_sync_interval: Duration,
    /// How soon after its leaf set changed a node that holds keys runs that repair (a new
    /// replica gets its keys; a dead one's keys are copied to the next node).
    pub store_handoff_delay: Duration,
    /// How long a deletion is remembered (as a tombstone), so that a replica that missed it
    /// cannot bring the value back: longer than any replica stays stale.
    pub store_tombstone_ttl: Duration,
    /// Longest key name, in bytes.
    pub store_max_key: usize,
    /// Largest value, in bytes.
    pub store_max_value: usize,
    /// Bytes of names and values a node stores at most (as home or replica); writes beyond it
    /// are refused.
    pub store_max_bytes: u64,
    /// Most store operations under way at a node: issued here and awaiting their answer, plus
    /// those it coordinates as a key's home (and queues behind another write of the same key).
    pub store_max_ops: usize,
    /// How long a node's line in an identity's registry lives without renewal (renewed every
    /// third of it): a node that dies stops being listed within one lease.
    pub identity_lease: Duration,
    /// How long a sender waits for a listed node to take a message to an identity before it
    /// gives that node up (and reads the registry again when no node took it).
    pub identity_ack_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            leaf_set_size: 16,
            heartbeat_interval: Duration::from_millis(1000),
            leaf_ping_interval: Duration::from_secs(5),
            routing_ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_millis(500),
            ping_timeout_min: Duration::from_millis(200),
            suspicion_misses: 2,
            leaf_exchange_interval: Duration::from_secs(5),
            leaf_exchange_min: Duration::from_millis(100),
            join_timeout: Duration::from_secs(2),
            join_contact_timeout: Duration::from_millis(500),
            join_rtt_factor: 8,
            join_progress_min: Duration::from_millis(250),
            join_busy_retry: Duration::from_millis(50),
            join_search: true,
            max_join_contacts: 16,
            join_attempts: 10,
            hop_ack_timeout: Duration::from_millis(600),
            hop_ack_timeout_min: Duration::from_millis(50),
            max_reroutes: 8,
            max_pending_hops: 4096,
            max_hops: 64,
            lookup_timeout: Duration::from_secs(3),
            lookup_attempts: 3,
            max_pending_lookups: 65_536,
            max_probes: 256,
            probe_one_in: 1,
            max_join_buffer: 1024,
            max_dead: 512,
            dead_probe_min: Duration::from_secs(2),
            dead_probe_max: Duration::from_secs(10),
            dead_forget_after: Duration::from_secs(300),
            dead_probe_spacing: Duration::from_secs(5),
            dead_rumour_after: Duration::from_secs(10),
            timer_granularity: Duration::from_millis(100),
            routing_maintenance_interval: Duration::from_secs(60),
            max_rtt_cache: 512,
            max_outbox: 65_536,
            max_events: 65_536,
            group_refresh_interval: Duration::from_secs(1),
            group_child_timeout: Duration::from_millis(3500),
            max_groups: 65_536,
            max_group_children: 64,
            group_replay_events: 64,
            group_replay_bytes: 1 << 20,
            event_gap_wait: Duration::ZERO,
            dedup_window: Duration::from_secs(60),
            group_dedup_events: 4096,
            max_recent_asks: 16_384,
            max_conns: 65_536,
            max_pending_requests: 65_536,
            max_conn_requests: 16_384,
            max_conn_tunnels: 1024,
            max_deliveries: 65_536,
            ask_park_timeout: Duration::from_secs(2),
            max_parked_asks: 4096,
            max_member_inflight: 1024,
            stall_forget_after: Duration::from_secs(60),
            max_tunnels: 65_536,
            tunnel_chunk_limit: 65_536,
            tunnel_buffer: 4 << 20,
            tunnel_window: 4 << 20,
            tunnel_keepalive_interval: Duration::from_secs(2),
            tunnel_idle_timeout: Duration::from_secs(10),
            memory_budget: 1 << 30,
            memory_share: 128 << 20,
            store_replicas: 3,
            store_write_quorum: 2,
            store_read_quorum: 2,
            store_replica_timeout: Duration::from_secs(1),
            store_sync_interval: Duration::from_secs(10),
            store_handoff_delay: Duration::from_secs(1),
            store_tombstone_ttl: Duration::from_secs(600),
            store_max_key: 1024,
            store_max_value: 256 << 10,
            store_max_bytes: 256 << 20,
            store_max_ops: 16_384,
            identity_lease: Duration::from_secs(10),
            identity_ack_timeout: Duration::from_secs(1),
        }
    }
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub &'static str);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks the relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            self.heartbeat_interval,
            self.ping_timeout_min,
            self.leaf_ping_interval,
            self.routing_ping_interval,
            self.ping_timeout,
            self.leaf_exchange_interval,
            self.leaf_exchange_min,
            self.join_timeout,
            self.join_contact_timeout,
            self.join_progress_min,
            self.join_busy_retry,
            self.hop_ack_timeout,
            self.hop_ack_timeout_min,
            self.lookup_timeout,
            self.dead_probe_min,
            self.dead_probe_spacing,
            self.timer_granularity,
            self.routing_maintenance_interval,
            self.group_refresh_interval,
            self.stall_forget_after,
            self.tunnel_keepalive_interval,
            self.store_replica_timeout,
            self.store_sync_interval,
            self.identity_lease,
            self.identity_ack_timeout,
        ];
        let checks: [(bool, &'static str); 20] = [
            (
                self.store_replicas >= 1
                    && self.store_replicas <= self.leaf_set_size / 2 + 1
                    && (1..=self.store_replicas).contains(&self.store_write_quorum)
                    && (1..=self.store_replicas).contains(&self.store_read_quorum),
                "store_replicas must be in 1..=leaf_set_size/2+1, the quorums in 1..=store_replicas",
            ),
            (
                self.store_tombstone_ttl > self.store_sync_interval * 2
                    && self.store_max_key >= 1
                    && self.store_max_ops >= 1,
                "store_tombstone_ttl must exceed two store sync intervals; store_max_key and store_max_ops must be >= 1",
            ),
            (
                self.memory_share <= self.memory_budget
                    && self.memory_share >= self.tunnel_chunk_limit as u64 + 64,
                "memory_share must be at most memory_budget and hold a tunnel chunk",
            ),
            (
                self.max_join_contacts >= 1 && self.join_rtt_factor >= 1,
                "max_join_contacts and join_rtt_factor must be >= 1",
            ),
            (
                self.group_child_timeout > self.group_refresh_interval * 2,
                "group_child_timeout must exceed two group refresh intervals",
            ),
            (
                self.tunnel_idle_timeout > self.tunnel_keepalive_interval * 2,
                "tunnel_idle_timeout must exceed two keepalive intervals",
            ),
            (
                self.tunnel_chunk_limit >= 1
                    && self.tunnel_buffer >= self.tunnel_chunk_limit as u64
                    && self.tunnel_window >= self.tunnel_chunk_limit as u64 + 64
                    && self.max_member_inflight >= 1,
                "tunnel buffers must hold a chunk; max_member_inflight must be >= 1",
            ),
            (
                self.leaf_set_size >= 2 && self.leaf_set_size % 2 == 0,
                "leaf_set_size must be even and >= 2",
            ),
            (self.leaf_set_size <= 256, "leaf_set_size must be <= 256"),
            (self.suspicion_misses >= 1, "suspicion_misses must be >= 1"),
            (self.join_attempts >= 1, "join_attempts must be >= 1"),
            (
                self.max_group_children >= 2,
                "max_group_children must be >= 2 (a dropped child needs a sibling)",
            ),
            (self.lookup_attempts >= 1, "lookup_attempts must be >= 1"),
            (self.max_hops >= 8, "max_hops must be >= 8"),
            (
                positive.iter().all(|d| !d.is_zero()),
                "every interval and timeout must be positive",
            ),
            (
                self.leaf_exchange_min <= self.leaf_exchange_interval,
                "leaf_exchange_min must be <= leaf_exchange_interval",
            ),
            (
                self.dead_probe_min <= self.dead_probe_max
                    && self.ping_timeout_min <= self.ping_timeout,
                "dead_probe_min must be <= dead_probe_max, ping_timeout_min <= ping_timeout",
            ),
            (
                self.max_dead >= 1
                    && self.max_probes >= 1
                    && self.max_rtt_cache >= 1
                    && self.probe_one_in >= 1,
                "max_dead, max_probes, max_rtt_cache and probe_one_in must be >= 1",
            ),
            (
                self.max_rtt_cache < usize::from(u16::MAX),
                "max_rtt_cache must be below 65,535",
            ),
            (
                self.max_outbox >= 64 && self.max_events >= 64 && self.max_pending_hops >= 1,
                "queues too small to work",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, why)) => Err(ConfigError(why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The round-trip cache indexes its entries with 16-bit positions: a bound that does not
    /// fit is refused with a reason, not truncated.
    #[test]
    fn a_round_trip_cache_bound_over_16_bits_is_refused() {
        let mut cfg = Config {
            max_rtt_cache: 65_534,
            ..Config::default()
        };
        assert!(cfg.validate().is_ok());
        cfg.max_rtt_cache = 65_535;
        assert_eq!(
            cfg.validate(),
            Err(ConfigError("max_rtt_cache must be below 65,535"))
        );
        cfg.max_rtt_cache = 0;
        assert!(cfg.validate().is_err());
    }
}
