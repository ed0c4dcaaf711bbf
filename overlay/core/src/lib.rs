//! # petal-core
//!
//! Petal's node logic as a sans-IO state machine: the Pastry overlay (routing table, leaf set,
//! join, routing, failure detection, repair, leave) and, on top of it, messaging for local
//! applications: clusters (load-balanced requests with exactly one outcome, broadcasts),
//! publish/subscribe topics and tunnels. It reads no clock, opens no socket, spawns no task and
//! draws randomness only from its own seeded generator, so the same inputs give the same
//! outputs, in the daemon and in the simulators alike.
//!
//! ## Drive contract
//! A driver owns one [`Node`] and loops:
//! 1. feed inputs: [`Node::handle_message`] for every message that arrived (with the sender's
//!    [`NodeInfo`], which an authenticated link or the simulator provides), and
//!    [`Node::handle_timeout`] once the time from [`Node::poll_timeout`] has come; commands
//!    ([`Node::start_first`], [`Node::join`], [`Node::introduce`], [`Node::lookup`],
//!    [`Node::leave`], and the application commands below) likewise;
//! 2. drain outputs: [`Node::poll_transmit`] until `None` (send each message to its `to`, never
//!    to another id at that address), and [`Node::poll_event`] until `None`. A driver of many
//!    nodes may instead lend each input's node one buffer ([`Node::lend_outbox`]) and take the
//!    transmits back in it ([`Node::reclaim_outbox`]), as the simulator does;
//! 3. re-read [`Node::poll_timeout`] and sleep until then or until the next input.
//!
//! Every input takes `now`, a [`Time`] that must never go backwards. Queues are bounded by
//! [`Config`]; what overflows is dropped and counted in [`Stats`].
//!
//! ## Routing
//! A message for key `k` goes (1) to the numerically closest leaf-set member when `k` lies in
//! the leaf set's range, else (2) to the routing-table entry that shares one more digit with
//! `k`, else (3) to any known node that shares as long a prefix and is numerically closer.
//! Each hop is acknowledged; a hop that stays silent is suspected and the message is rerouted
//! around it.
//!
//! ## Proximity
//! A routing-table slot holds only a node whose round-trip time this node measured itself, and
//! a measured candidate replaces the entry only when it is nearer (proximity neighbour
//! selection; `check_invariants` asserts that every entry is measured). Before it joins, a node
//! searches the ring for the node nearest to it, starting from the one node it knows (its
//! leaf set, then its rows from the deepest up, then row 0 again while it finds nearer nodes,
//! each step measured by its own probes) and joins through that one, so that its table starts
//! from near nodes; see the `search` module. On the join path the node at hop `h` sends row `h`
//! and the rows below up to the prefix it shares with the joiner; once ready, the joiner asks
//! every entry of every row for that row (constrained gossip: each learns the newcomer, and
//! its answer holds nodes near it), and every `routing_maintenance_interval` it asks one random
//! entry of every row again. Candidates are probed (a joiner that has not announced itself
//! probes with `Discover`, which the receiver answers without learning it); recent round trips
//! are kept in a bounded cache so that a candidate offered again is not probed again.
//!
//! ## Failure detection
//! Each node sends a one-way heartbeat every `heartbeat_interval` to its counter-clockwise
//! leaf-set neighbour and watches its clockwise one, which it probes after a heartbeat
//! interval and a quarter of silence (MSPastry's scheme: one message per node and interval is
//! enough to find every crash). Other leaf-set members are pinged after `leaf_ping_interval`
//! of silence, routing-table members after `routing_ping_interval`; any message from a peer
//! counts. A missed pong makes the peer suspected (not used for routing, pinged again at once);
//! `suspicion_misses` misses in a row make it dead: it leaves every table, the leaf set is
//! repaired from the farthest members' leaf sets and the routing-table row from a row
//! neighbour, and a node that found a leaf-set neighbour dead sends `Suspect` to the rest of
//! its leaf set, whose members probe it once. A pong waits four measured round trips (within
//! `ping_timeout_min..=ping_timeout`). A driver whose link to a peer ends says so
//! ([`Node::link_lost`]): the peer is probed at once, and a dial that fails for that probe
//! ([`Node::unreachable`]) makes it dead at once, so a crashed process is found in one dial.
//! Dead nodes are re-probed with backoff for `dead_forget_after`, so restarted nodes and the
//! far side of a healed partition are found again. Liveness timers are rounded up to a
//! per-node grid (`timer_granularity`), so that one wake-up serves many peers.
//!
//! ## Join
//! After its nearest-node search (see Proximity), the joiner routes a join towards its own id
//! through a contact ([`Node::join`], more with [`Node::contact`]) and stays invisible (it sends
//! no pings, and its probes are `Discover` messages that nobody learns it from; it only answers
//! what reaches it) until the closest node's reply arrives with the leaf set; then
//! it announces itself and becomes ready once every leaf-set member has acknowledged, so that no
//! node routes to it before it can serve. Routed messages that reach it in between are held
//! (bounded) and delivered when it is ready. A node that is not in a ring refuses to be a
//! contact (`JoinBusy`, naming its own contacts); every attempt is bounded by the contact's
//! measured round-trip time, and a driver that cannot reach a contact says so
//! ([`Node::unreachable`]) so the joiner moves on at once; a cycle of joiners elects its smallest id as the founder; see the
//! `join` module for the whole argument.
//!
//! ## Introductions: merging rings
//! Nodes that started apart (each founded its ring, or joined within its own group) form
//! separate rings. When the driver learns of a node out of band (a LAN discovery beacon, a seed
//! dialed again) it calls [`Node::introduce`] ([`Node::knows`] tells which nodes to skip). The
//! introducing node routes a join for its own id through the stranger's ring, which brings back
//! its true neighbours there (the node closest to its id sends its leaf set), and exchanges leaf
//! sets with the stranger. A node that enters a leaf set second-hand is sent that leaf set, so
//! the merge spreads from the meeting point along the ring in both directions, a leaf set's
//! width per exchange, until every leaf set is the merged ring's. When to dial seeds (and so
//! when a node serving alone finds its ring) is [`Seeds`], a small sans-IO schedule that the
//! daemon's driver and the simulator share.
//!
//! ## Messaging
//! Local applications are connections ([`ConnId`], one per relay session) that the driver
//! registers ([`Node::register`]: a plain client, or a member of a named cluster with a
//! relative capacity) and unregisters when they close. Clusters and topics are *groups*; each
//! group has a Scribe-style tree rooted at the node that owns the group's key
//! ([`GroupKind::key`]), made of the overlay routes from its members' nodes to the root.
//! - **Publish/subscribe and broadcast** ([`Node::subscribe`], [`Node::publish`],
//!   [`Node::broadcast`]): the event is routed to the root, numbered there and cast down the
//!   tree; every node takes events in order, drops what it has seen, and a node that moved to a
//!   new parent or saw a gap gets the missing events replayed from a small per-group buffer.
//!   Delivered as [`Event::Published`] / [`Event::Broadcast`].
//! - **Requests** ([`Node::request`]): routed to the cluster's root, then down its tree to one
//!   member chosen by load (capacity-weighted power of two choices over members and subtrees,
//!   whose load is reported up with every graft; stalled or saturated members only as a last
//!   resort), hop by hop with acknowledgements. The member's node answers the requester's node
//!   directly; the requester's node decides the one outcome ([`Event::RequestDone`]: reply,
//!   fault or timeout) and drops anything later.
//! - **Tunnels** ([`Node::tunnel_open`]): opened like a request, then an ordered, chunked,
//!   credit-throttled stream straight between the two nodes (or within one node), with
//!   graceful close, failure with a reason, and bounded buffers end to end.
//!
//! The core owns every connection's work: each command names the connection it acts for, and
//! requests and tunnels go by the connection's own ids (a relay client's ids, unique per
//! connection: the core refuses one in use), so a driver keeps no table of its own. A request
//! delivered to a member is answered by that member's connection only ([`Node::reply`]);
//! an offered tunnel is accepted (and named) or refused by the connection it was offered to;
//! [`Node::pending`] lists what a closing connection must still be answered for.
//!
//! Group trees repair themselves: a child grafts on its next hop towards the key every
//! `group_refresh_interval` (moving when the route moved), a dead parent makes its children
//! graft elsewhere at once, a silent child is forgotten after `group_child_timeout`.
//!
//! ## Store
//! A replicated key-value store ([`Node::kv`]; see the [`store`] module): each key lives on the
//! `store_replicas` nodes closest to its hash, the closest coordinating; writes acknowledged by
//! a quorum, reads from a quorum with read repair, compare-and-set, time to live, versions
//! from a hybrid logical clock, repair by digests and handoff as the leaf set changes. One
//! outcome per operation ([`Event::KvDone`]).
//!
//! ## Layout: who owns what
//! [`Node`] is a parent of sub-machines, in the style of quinn-proto's `Connection` (which
//! owns its streams and packet spaces) and libp2p's composed behaviours. Each sub-machine is a
//! struct whose fields are private to its module: no other module can read or write them,
//! only call the methods it offers. `Node` holds them side by side and passes between them
//! what one needs of another (a return value, a closure such as "is this connection
//! registered?"), so every piece of state has one owner and one room to change it in.
//!
//! ```text
//!                      Node  (drive API, dispatch, shared outputs)
//!   cfg, me, rng, stats; private: timers, outbox, events, loopback, nonce, timer grid
//!        |
//!        +-- overlay: Overlay   overlay/      phase, leaf set, routing table, peers and their
//!        |                                    liveness, dead set, probes, RTT cache, pending
//!        |                                    hops, lookups, maintenance times
//!        |       liveness.rs  routing.rs  join.rs  membership.rs   (behaviour by concern)
//!        +-- groups: Groups     group/        Scribe trees: parent, children, members and
//!        |                                    their load, event numbering, replay buffers
//!        +-- asks: Asks         ask.rs        requests issued here (by connection), deliveries
//!        |                                    to local members, asks parked at a root
//!        +-- tunnels: Tunnels   tunnel/       tunnel ends (by connection), windows, queues
//!        +-- locals: Locals     local.rs      registered connections and their groups
//!        +-- store: Store       store/        stored entries, operations issued and
//!                                             coordinated, repair and handoff (boxed, on
//!                                             first use)
//! ```
//!
//! Behaviour that spans owners is an `impl Node` block in the module of the owner it mostly
//! changes, calling the others' methods: `ask` chooses a member from `Groups::options` and
//! tracks the descent hop through the overlay's `track_hop`; `group` grafts on the overlay's
//! `next_hop`; the overlay tells the others of a dead peer (`groups_on_peer_dead`,
//! `tunnels_on_peer_dead`, `reroute_hops_to`). Timers are one heap in `Node`; each
//! timer key belongs to one owner, which says whether an entry is still live
//! (`timer_live`) and what it must re-arm after a reset. The most frequent deadlines, the
//! tracked peers' pings, are not in the heap: the overlay keeps them with its peers and hands
//! `Node` the earliest, which fires before heap entries of the same time. `check_invariants`
//! asks each owner for its own, and `Node` checks what spans them.
//!
//! Per-node state is kept compact because the simulator holds 10^5 to 10^6 nodes in one
//! process (and a daemon's tables grow with its ring): ids are 8-byte aligned, per-peer tables
//! are sorted id arrays (`id_map::SortedIdMap`), addresses of peers and cached candidates take
//! 16 bytes (`addr::PeerAddr`), and nodes of one process share one `Arc<Config>`. Messages
//! are 72 bytes (the routed and descending ones are boxed), and so is what moves through the
//! outbox; a forwarded message is kept for its acknowledgement in the box it arrived in, and
//! the hop and lookup tables are dropped whole once empty (an emptied `BTreeMap` keeps a node
//! with room for 11 entries).
//!
//! The path of a request, for example: `Node::request` (in `local`) checks the connection
//! with `Locals` and its id with `Asks`, `Asks` records it and arms its timer, the ask is
//! routed by the overlay (`forward`, one tracked hop per node) to the cluster's root, where
//! `ask` descends it (`Groups::options`, power of two choices) to a member's node; there
//! `Asks` records the delivery and `Groups` counts the member's load, the member answers with
//! `Node::reply`, and the reply goes straight to the requester's node, where `Asks` decides
//! the one outcome ([`Event::RequestDone`]).
//!
//! Other modules: [`time`] ([`Time`], microseconds as a value), [`config`] ([`Config`], every
//! limit and timer), [`leaf_set`] and [`routing_table`] (the two routing structures, owned by
//! the overlay), [`app`] (what applications see: [`ConnId`], [`GroupKind`], [`Outcome`],
//! [`AppError`]), [`stats`] ([`Stats`] counters).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::too_many_lines)
)]

mod addr;
pub mod app;
mod ask;
mod budget;
pub mod config;
mod event;
mod group;
mod id_map;
pub mod leaf_set;
mod local;
mod memory;
pub mod node;
mod overlay;
mod probe_map;
mod recent;
pub mod routing_table;
mod rtt_cache;
pub mod seeds;
pub mod settings;
pub mod stats;
pub mod store;
pub mod time;
mod tunnel;

pub use app::{AppError, ConnId, GroupKind, Outcome};
pub use budget::MemoryBudget;
pub use config::{Config, ConfigError};
pub use group::GroupInfo;
pub use leaf_set::LeafSet;
pub use local::{GroupView, Pending};
pub use memory::MemoryUse;
pub use node::{Event, Node, Transmit};
pub use overlay::join::JoinProgress;
pub use overlay::membership::LEAVING_FAULT;
pub use petal_protocol::{
    Key, Message, NodeId, NodeInfo, StoreEntry, StoreOpKind, StoreResult, Version,
};
pub use routing_table::RoutingTable;
pub use seeds::{SeedTiming, Seeds};
pub use stats::Stats;
pub use store::StoreStats;
pub use time::Time;
pub use tunnel::{TunnelInfo, TunnelPhase};
