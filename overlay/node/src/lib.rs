//! # petal-node
//!
//! The async runtime of a Petal node: it owns one sans-IO [`petal_core::Node`] and drives it
//! with real sockets and timers: node-to-node links to its peers, and the Iris relay protocol
//! v1 for the applications on its machine. The network is a small [`Net`] trait with a tokio
//! implementation ([`TokioNet`], the daemon's) and a turmoil implementation in the simulator, so
//! the same runtime runs under deterministic simulation.
//!
//! ## Tasks and queues
//! ```text
//!  relay listener --accept--> session task (handshake, decode) --+
//!  peer listener  --accept--> link reader (decode frames)      --+--> node task (owns the core)
//!  node task --dial--> link reader/writer                        |      |
//!                                                                      +--> link writer queues (bounded)
//!                                                                      +--> session writer queues
//! ```
//! - The **node task** is the only owner of the core. It waits on one bounded input channel and
//!   its timer (`select!` is biased: inputs first), takes up to 512 inputs per wake-up, then
//!   drains the core's transmits and events. It never awaits a socket.
//! - **Backpressure**: sessions feed the node task through their own bounded channel, which it
//!   stops reading while a peer link's queue or the core's table of unacknowledged hops is
//!   more than three quarters full (until all are at most half full). Session readers then
//!   wait and TCP pushes back on the applications, so a flooding publisher slows down instead
//!   of having its messages dropped. The node task drains the core after every input, so its
//!   bounded event and transmit queues never overflow within one wake-up.
//! - **Links**: one TCP stream per peer pair, opened by the Noise handshake of [`secure`]
//!   (the network key as pre-shared key; both sides' ids proven by their static keys), then the
//!   foundation's frames inside authenticated, encrypted records; a record that fails
//!   authentication closes the link. Inbound handshakes are bounded in number (per source
//!   address, and in all: the oldest is cancelled for a new one) and have a deadline. A link's
//!   writer queue is bounded (`link_queue`); what does not fit is dropped and counted (the
//!   overlay retransmits what matters); what one read queues for a link goes as one batch.
//!   Both sides dialing at once keep the link dialed by the smaller node id. Links to nodes
//!   outside the core's tables close after `link_idle_close` without core traffic.
//! - **Discovery** ([`discovery`]): multicast beacons sealed with a key derived from the network
//!   key ([`beacon`]) announce the node on its LAN (fast at start and after news, slow
//!   otherwise); nodes heard, and seeds re-dialed later, are introduced to the core, so rings
//!   that formed apart merge.
//! - **Sessions**: one task per application connection. The handshake has its own deadline
//!   (`handshake_timeout`). Broadcasts, events and request deliveries for a client that does not
//!   read are dropped past `session_queue_bytes` (counted, logged); replies and tunnel traffic
//!   are never dropped (their amount is bounded by the core's per-connection tables and by the
//!   client's own tunnel credit), so every REQUEST gets exactly one REPLY; a client that
//!   falls more than `session_max_bytes` behind in all is cut off (counted, logged).
//!
//! ## Time and determinism
//! The runtime reads time only through `tokio::time` (simulated under turmoil); clippy bans the
//! OS clock in this crate. The core's randomness comes from [`Options::seed`].
//!
//! ## Layout
//! - [`net`]: the [`Net`] trait and [`TokioNet`].
//! - [`secure`]: identities, the network key, the link handshake and record layer.
//! - [`beacon`], [`discovery`]: the discovery beacon and the task that sends and hears them.
//! - `accept`: the listeners' accept loops and the gate bounding their handshakes.
//! - `embedded`: brokerless mode, applications in this process attached without a socket
//!   ([`NodeHandle::connect`], [`NodeHandle::register`]: petal-client's own types).
//! - `driver`: the node task; `link`: peer links; `relay`: relay sessions; `session`: the node
//!   task's side of sessions (translation to core commands and back; the core owns every
//!   connection's requests, deliveries and tunnels, by the client's own ids, so sessions keep
//!   no tables of their own). The driver drains the core once per input: delivering events
//!   never calls back into the core, and what they ask of it (a session cut off, a failed join)
//!   is done after the drain.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::too_many_lines)
)]

pub mod beacon;
pub mod discovery;
pub mod inspect;
pub mod link;
pub mod net;
pub mod registry;
pub mod secure;
pub mod settings;

mod accept;
mod budget;
mod driver;
mod embedded;
mod relay;
mod session;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use petal_core::{Config, Node, Stats};
use petal_protocol::relay::DEFAULT_PORT;
use petal_protocol::{NodeId, NodeInfo};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

pub use accept::{LocalConnector, limit_key};
pub use inspect::{DiscoveryStatus, Inspection};
pub use net::{Datagram, Listener, Net, TokioNet};
/// The client API embedded applications get ([`NodeHandle::connect`]), re-exported.
pub use petal_client as client;
pub use registry::{Registry, SharedMemoryRegistry};
pub use secure::{Entropy, Identity, LinkSecurity, NetworkKey};

use accept::HandshakeGate;
use driver::{Driver, Input};

/// How a node runs. [`Options::new`] gives the daemon's defaults.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where local applications connect (relay v1). The daemon listens on 127.0.0.1 and `[::1]`;
    /// boot fails only when every listen fails. Empty: no relay listener, applications attach
    /// in this process only (brokerless mode, [`NodeHandle::connect`]).
    pub relay_addrs: Vec<SocketAddr>,
    /// Where peer links are accepted.
    pub peer_listen: SocketAddr,
    /// The address peers dial; `None`: the peer listener's address (127.0.0.1 when it listens
    /// on every interface).
    pub advertise: Option<SocketAddr>,
    /// Nodes to join through. Empty: start a ring of one at once.
    pub seeds: Vec<SocketAddr>,
    /// The core's configuration.
    pub core: Config,
    /// This node's static key pair; its id derives from the public key.
    pub identity: Identity,
    /// How links are protected (Noise with the network key, or plaintext for measurements).
    pub security: LinkSecurity,
    /// Randomness of handshakes and beacons (the operating system's, or seeded in simulation).
    pub entropy: Entropy,
    /// LAN discovery by multicast beacons (`None`: seeds only).
    pub discovery: Option<discovery::Discovery>,
    /// How often, at most, seeds whose node the ring does not know are dialed again (every
    /// 100 ms during the first 5 s after the start, then doubling up to this), so that groups
    /// that started apart, or were partitioned, merge.
    pub seed_retry: Duration,
    /// Inbound link handshakes running at once, in all; a new connection beyond cancels the
    /// oldest handshake (a flood of silent connections cannot hold every slot until the
    /// deadline, starving real peers).
    pub max_link_handshakes: usize,
    /// Inbound link handshakes running at once from one IP address (an IPv6 /64 counts as one).
    pub max_link_handshakes_per_ip: usize,
    /// Relay (application) handshakes running at once; a new connection beyond cancels the
    /// oldest.
    pub max_relay_handshakes: usize,
    /// Seed of the core's random generator. [`Options::new`] draws it from the operating
    /// system: a node restarted with the same identity must not start its request, tunnel and
    /// probe ids where its past life did (a late reply would match a new request), and the
    /// core keys its round-trip cache's tags with it (a key other nodes must not know).
    /// Simulations set their own, one per incarnation.
    pub seed: u64,
    /// Deadline of a relay or link handshake.
    pub handshake_timeout: Duration,
    /// Deadline of a TCP dial.
    pub dial_timeout: Duration,
    /// Dials to peers under way at once, at most, for a message to a node outside the core's
    /// tables (nodes in its leaf set or routing table may use as many slots again, which
    /// strangers cannot take; seeds count but are dialed regardless): a message beyond is
    /// dropped (`dials_refused`), so that addresses supplied by peers cannot make the node open
    /// connections without bound.
    pub max_dials: usize,
    /// After a failed dial, messages to that address are dropped for a while (50 ms after the
    /// first failure, doubling with each failure in a row) and at most this long; a link that
    /// comes up to the address resets it.
    pub dial_backoff: Duration,
    /// With seeds: how long to wait for one to answer before serving alone.
    pub join_wait: Duration,
    /// After a close, how long a session's writer may take to deliver the last packets.
    pub close_linger: Duration,
    /// A link that has heard nothing from its peer for this long sends a keepalive.
    pub link_keepalive: Duration,
    /// A link that has heard nothing for this long is closed (and re-dialed when needed): a
    /// black-holed stream must not hold frames until TCP gives up.
    pub link_idle_timeout: Duration,
    /// A link that carried no message of the core for this long, to a node the core keeps in
    /// none of its tables, is closed (links to leaf-set and routing-table members stay).
    pub link_idle_close: Duration,
    /// Frames queued per peer link (and messages while it is being dialed).
    pub link_queue: usize,
    /// Largest node-to-node frame accepted.
    pub max_frame: usize,
    /// Largest message, request, reply or event an application may send.
    pub max_message: usize,
    /// Bytes of droppable traffic (broadcasts, events, request deliveries) queued per session.
    pub session_queue_bytes: usize,
    /// Bytes queued for a session in all (replies and tunnel data included) past which the
    /// node closes the connection: a client that stops reading cannot grow the node's memory.
    pub session_max_bytes: usize,
    /// Inputs queued for the node task.
    pub input_queue: usize,
    /// After handling input the node task looks for more this long before it sleeps (zero,
    /// the default: at once), sparing a sleeping thread's wake-up at the price of a CPU kept
    /// busy; in real time, not simulated (see the README's "Busy polling").
    pub busy_poll: Duration,
    /// Unix time in milliseconds when the node starts (the daemon reads the system clock);
    /// the store's versions and expiry times count from it. `None` (tests, the turmoil
    /// harness): the node's clock starts at 0, the same in every run.
    pub wall_clock_ms: Option<u64>,
    /// Where identity registries live (`None`: in the overlay's store; see [`registry`]). A
    /// registry's expiry times are wall-clock ones: set `wall_clock_ms` with it.
    pub registry: Option<Arc<dyn Registry>>,
}

impl Options {
    /// Defaults for a node with this identity and link security (relay on port 55555, peers
    /// on an OS-chosen loopback port, no discovery).
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the fallback seed folds the id's halves: dropping high bits is the point"
    )]
    pub fn new(identity: Identity, security: LinkSecurity) -> Self {
        let id = identity.node_id();
        let max_message = 16 << 20;
        Options {
            relay_addrs: vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), DEFAULT_PORT),
            ],
            peer_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            advertise: None,
            seeds: Vec::new(),
            core: Config::default(),
            identity,
            security,
            entropy: Entropy::Os,
            discovery: None,
            seed_retry: Duration::from_secs(30),
            max_link_handshakes: 256,
            max_link_handshakes_per_ip: 8,
            max_relay_handshakes: 1024,
            // The operating system's; should it fail, the id and the process id (distinct
            // from one start to the next, though not secret).
            seed: secure::os_seed().unwrap_or_else(|_| {
                (id.get() as u64) ^ ((id.get() >> 64) as u64) ^ u64::from(std::process::id())
            }),
            handshake_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(3),
            max_dials: 64,
            dial_backoff: Duration::from_secs(1),
            join_wait: Duration::from_secs(3),
            close_linger: Duration::from_secs(2),
            link_keepalive: Duration::from_secs(1),
            link_idle_timeout: Duration::from_secs(5),
            link_idle_close: Duration::from_secs(60),
            link_queue: 16 * 1024,
            max_frame: max_message + (1 << 20),
            max_message,
            session_queue_bytes: 32 << 20,
            session_max_bytes: 256 << 20,
            input_queue: 8 * 1024,
            busy_poll: Duration::ZERO,
            wall_clock_ms: None,
            registry: None,
        }
    }

    /// Checks the settings that would make the node misbehave (zero periods, inverted
    /// bounds); [`spawn`] refuses such options.
    pub fn validate(&self) -> io::Result<()> {
        let bad = |what: &str| {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                what.to_string(),
            ))
        };
        let ms = Duration::from_millis(1);
        if self.session_max_bytes < self.session_queue_bytes {
            return bad("session_max_bytes must be at least session_queue_bytes");
        }
        if self.seed_retry < ms || self.link_idle_close < ms || self.link_keepalive < ms {
            return bad("seed_retry, link_idle_close and link_keepalive must be at least 1 ms");
        }
        if self.link_queue == 0 || self.input_queue == 0 || self.max_dials == 0 {
            return bad("link_queue, input_queue and max_dials must be positive");
        }
        // A frame holds a message or a tunnel chunk with its headers (names up to 64 KiB).
        let room = 128 << 10;
        if self.max_frame < self.max_message + room
            || self.max_frame < self.core.tunnel_chunk_limit + room
        {
            return bad(
                "max_frame must exceed max_message and tunnel_chunk_limit by at least 128 KiB",
            );
        }
        if self.link_keepalive * 2 > self.link_idle_timeout {
            return bad("link_idle_timeout must be at least twice link_keepalive");
        }
        if let Some(d) = &self.discovery
            && (d.fast_interval < ms || d.slow_interval < ms)
        {
            return bad("discovery intervals must be at least 1 ms");
        }
        // Deadlines are `now + period` on the runtime's clock, which has no room for centuries.
        let day = std::time::Duration::from_secs(86_400);
        let mut periods = vec![self.seed_retry, self.link_idle_close, self.link_keepalive];
        if let Some(d) = &self.discovery {
            periods.extend([d.fast_interval, d.fast_for, d.slow_interval]);
        }
        if periods.iter().any(|p| *p > day) {
            return bad(
                "seed_retry, link_idle_close, link_keepalive and discovery periods must be at most a day",
            );
        }
        Ok(())
    }

    /// This node's id (derived from its identity).
    pub fn id(&self) -> NodeId {
        self.identity.node_id()
    }
}

/// Declares the runtime's counters once: the atomic [`RuntimeStats`] and its plain copy
/// [`RuntimeCounters`].
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Counters of the runtime (the core keeps its own in [`Stats`]).
        #[derive(Debug, Default)]
        pub struct RuntimeStats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`RuntimeStats`] (see there for each counter).
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct RuntimeCounters {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl RuntimeCounters {
            /// Every counter with its name, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }

        impl RuntimeStats {
            /// The counters' current values.
            pub fn snapshot(&self) -> RuntimeCounters {
                RuntimeCounters {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Relay sessions attached.
    sessions_opened,
    /// Relay handshakes that failed, were denied, timed out, or were cancelled or refused
    /// because `max_relay_handshakes` ran.
    handshakes_failed,
    /// Connections closed for a protocol violation.
    relay_violations,
    /// Application commands the core refused (the client got a timeout or nothing).
    relay_refused,
    /// Broadcasts, events and request deliveries dropped for clients that do not read.
    relay_dropped,
    /// Events published on a topic and queued for a local subscriber.
    delivered_publishes,
    /// Broadcasts queued for a local cluster member.
    delivered_broadcasts,
    /// Requests queued for a local cluster member.
    delivered_requests,
    /// Replies that came after their request's timeout (discarded).
    late_replies,
    /// Identity registry operations run on the external registry (`Options::registry`).
    registry_ops,
    /// External registry operations that failed or timed out (the registry unreachable).
    registry_failures,
    /// Peer dials started.
    link_dials,
    /// Peer dials that failed (connect or handshake).
    link_dial_failures,
    /// Links that came up.
    links_up,
    /// Idle links to nodes outside the core's tables closed (see `Options::link_idle_close`).
    links_idle_closed,
    /// Node-to-node messages dropped (queue full, dial failed or backing off).
    link_drops,
    /// Seed dials that failed.
    seed_failures,
    /// Sessions closed because their client fell more than `session_max_bytes` behind.
    slow_closed,
    /// Times a peer link backed up and sessions stopped reading their clients.
    backpressure,
    /// Inbound link handshakes that failed (wrong network key, malformed, timed out).
    link_handshakes_failed,
    /// Inbound connections closed unanswered because too many handshakes ran from that IP
    /// address, plus handshakes cancelled (oldest first) to admit new ones when too many ran
    /// in all.
    link_handshakes_refused,
    /// Links closed because a record failed authentication (tampered, replayed, corrupt).
    link_auth_failures,
    /// Dials that reached a node other than the one expected at that address.
    link_id_mismatches,
    /// Discovery beacons sent.
    beacons_sent,
    /// Valid beacons received from other nodes.
    beacons_received,
    /// Datagrams on the discovery port refused (another network's, forged, malformed).
    beacons_rejected,
    /// Nodes learned from beacons or re-dialed seeds and introduced to the core.
    peers_discovered,
    /// Messages to peers dropped because their link's queue met the peer's share of the memory
    /// budget, or the node its budget (`Config::memory_share`, `memory_budget`).
    memory_refused_links,
    /// Packets for relay sessions refused by the node's memory budget: events and broadcasts
    /// dropped, or, for replies and tunnel data, the session closed.
    memory_refused_sessions,
    /// Dials not started because `Options::max_dials` were under way (the message for that
    /// peer dropped).
    dials_refused,
}

impl RuntimeStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// A node's state at one moment.
#[derive(Clone, Debug)]
pub struct StatsSnapshot {
    /// The node's id.
    pub id: NodeId,
    /// Whether it is part of a ring (joined, or alone).
    pub ready: bool,
    /// Leaf-set members.
    pub leaf_set: usize,
    /// Peer links up.
    pub links: usize,
    /// Relay sessions attached.
    pub sessions: usize,
    /// Bytes held against the node's memory budget now (core buffers, link and session
    /// queues).
    pub memory_used: u64,
    /// The node's memory budget (`Config::memory_budget`).
    pub memory_budget: u64,
    /// The core's counters.
    pub core: Stats,
    /// The runtime's counters.
    pub runtime: RuntimeCounters,
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    info: NodeInfo,
    /// Set by the node task while the core is ready.
    ready: Arc<AtomicBool>,
    relay_addrs: Vec<SocketAddr>,
    inputs: mpsc::Sender<Input>,
    accept_tasks: Vec<tokio::task::AbortHandle>,
    /// One clone per live session or link writer: shutdown waits for them to finish.
    alive: Arc<()>,
    linger: Duration,
    local: LocalConnector,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

/// Starts a node on `net`: binds its listeners (errors come back here), then runs it in tasks
/// of the current tokio runtime.
pub async fn spawn<N: Net>(net: N, opts: Options) -> io::Result<NodeHandle> {
    opts.validate()?;
    let peer_listener = net.bind(opts.peer_listen).await?;
    let peer_addr = peer_listener.local_addr()?;
    let advertise = opts.advertise.unwrap_or_else(|| {
        if peer_addr.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), peer_addr.port())
        } else {
            peer_addr
        }
    });
    let (relays, relay_addrs) = bind_relays(&net, &opts.relay_addrs).await?;
    let info = NodeInfo {
        id: opts.id(),
        addr: advertise,
    };
    // Every task of this node logs inside this span: logs of several nodes in one process
    // (tests, the turmoil harness, an embedded node) say which node spoke.
    // At the error level, so that it is on whenever any logging is.
    let span = tracing::error_span!("node", id = %info.id);
    let node = Node::new(info, opts.core.clone(), opts.seed)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let opts = Arc::new(opts);
    let stats = Arc::new(RuntimeStats::default());
    let (tx, rx) = mpsc::channel(opts.input_queue);
    let alive = Arc::new(());
    // Sessions have their own channel, which the node task stops reading while peer links
    // are backed up: their readers then wait, and TCP pushes back on the applications.
    let (app_tx, app_rx) = mpsc::channel(opts.input_queue);
    let mut driver = Driver::new(node, net.clone(), opts.clone(), tx.clone(), stats.clone());
    driver.relay_addrs.clone_from(&relay_addrs);
    let discovery_status = driver.discovery.clone();
    let budget = driver.budget.clone();
    let ready = driver.ready.clone();
    let ready_flag = driver.ready.clone();
    let keys = Arc::new(link::LinkKeys {
        identity: opts.identity.clone(),
        security: opts.security.clone(),
        entropy: opts.entropy,
        deadline: opts.handshake_timeout,
    });
    let mut accept_tasks = Vec::new();
    if let Some(d) = &opts.discovery {
        let boot = discovery_boot(&opts)?;
        let start = DiscoveryStart {
            opts: opts.clone(),
            info,
            ready,
            inputs: tx.clone(),
            stats: stats.clone(),
            boot,
            status: discovery_status,
        };
        match net.multicast(d.group, d.interface).await {
            Ok(socket) => {
                start.set_status(DiscoveryStatus::Running { group: d.group });
                let task = start.task(socket).run().instrument(span.clone());
                accept_tasks.push(tokio::spawn(task).abort_handle());
            }
            // No multicast route or interface (a namespace with only loopback, a locked-down
            // container): the node serves its applications and seeds at once, and tries again.
            Err(e) => {
                tracing::warn!(group = %d.group, error = %e,
                    "LAN discovery cannot start; serving without it and retrying (1 s, doubling up to 60 s)");
                start.set_status(DiscoveryStatus::Retrying {
                    group: d.group,
                    error: e.to_string(),
                });
                let retry = start.retry(net.clone(), e);
                accept_tasks.push(tokio::spawn(retry.instrument(span.clone())).abort_handle());
            }
        }
    }
    tokio::spawn(driver.run(rx, app_rx).instrument(span.clone()));
    tracing::info!(id = %info.id, peers = %advertise, relay = ?relay_addrs,
        encrypted = matches!(opts.security, LinkSecurity::Noise(_)),
        discovery = ?opts.discovery.as_ref().map(|d| d.group), "node started");

    let peers = accept::peer_links(
        peer_listener,
        advertise,
        keys,
        opts.clone(),
        stats.clone(),
        alive.clone(),
        tx.clone(),
        budget.clone(),
    );
    accept_tasks.push(tokio::spawn(peers.instrument(span.clone())).abort_handle());
    let next_conn = Arc::new(AtomicU64::new(1));
    // Relay handshakes in progress are bounded too (applications are local, so no per-address
    // limit): beyond, the oldest is cancelled.
    let relay_gate = Arc::new(HandshakeGate::new(opts.max_relay_handshakes, usize::MAX));
    for l in relays {
        let sessions = accept::relay_sessions(
            l,
            relay_gate.clone(),
            next_conn.clone(),
            opts.clone(),
            stats.clone(),
            alive.clone(),
            app_tx.clone(),
            budget.clone(),
        );
        accept_tasks.push(tokio::spawn(sessions.instrument(span.clone())).abort_handle());
    }
    let local = LocalConnector {
        next_conn,
        opts: opts.clone(),
        alive: Arc::downgrade(&alive),
        inputs: app_tx,
        budget,
        span: span.clone(),
    };
    Ok(NodeHandle {
        local,
        info,
        ready: ready_flag,
        relay_addrs,
        inputs: tx,
        accept_tasks,
        alive,
        linger: opts.close_linger,
    })
}

/// `tokio::spawn` inside the current span: a node's tasks log with its id.
pub(crate) fn spawn_here<F>(f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(f.in_current_span())
}

/// Binds the relay listeners: those that bind, and their addresses. Fails only when every one
/// fails (with the last error).
async fn bind_relays<N: Net>(
    net: &N,
    addrs: &[SocketAddr],
) -> io::Result<(Vec<N::Listener>, Vec<SocketAddr>)> {
    let mut relays = Vec::new();
    let mut relay_addrs = Vec::new();
    let mut last_err = None;
    for addr in addrs {
        match net.bind(*addr).await {
            Ok(l) => {
                relay_addrs.push(l.local_addr()?);
                relays.push(l);
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "relay listen failed");
                last_err = Some(e);
            }
        }
    }
    if relays.is_empty()
        && let Some(e) = last_err
    {
        return Err(e);
    }
    Ok((relays, relay_addrs))
}

/// The random boot id discovery beacons carry (a restarted process is told apart).
fn discovery_boot(opts: &Options) -> io::Result<u64> {
    let mut boot = [0u8; 8];
    opts.entropy.fill(u64::MAX, &mut boot)?;
    Ok(u64::from_be_bytes(boot))
}

/// What a discovery task needs besides its socket.
struct DiscoveryStart {
    opts: Arc<Options>,
    info: NodeInfo,
    ready: Arc<AtomicBool>,
    inputs: mpsc::Sender<Input>,
    stats: Arc<RuntimeStats>,
    boot: u64,
    /// What the admin API shows of discovery.
    status: Arc<std::sync::Mutex<DiscoveryStatus>>,
}

impl DiscoveryStart {
    fn set_status(&self, status: DiscoveryStatus) {
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
    }

    /// The discovery task on `socket`.
    fn task<D: net::Datagram>(self, socket: D) -> discovery::Task<D> {
        let key = match &self.opts.security {
            LinkSecurity::Noise(k) => k.clone(),
            // Plaintext links (measurements): beacons still need a key; everyone uses zeros.
            LinkSecurity::Plaintext => NetworkKey::from_bytes([0; 32]),
        };
        let d = self.opts.discovery.clone().unwrap_or_default();
        discovery::Task {
            socket,
            key: beacon::BeaconKey::new(key.as_bytes()),
            opts: d,
            me: self.info.id,
            port: self.info.addr.port(),
            boot: self.boot,
            ready: self.ready,
            entropy: self.opts.entropy,
            inputs: self.inputs,
            stats: self.stats,
        }
    }

    /// Tries to open the discovery socket again (after 1 s, doubling up to 60 s) until it
    /// opens, then runs discovery. Logs when it starts; a failure again is logged at debug.
    async fn retry<N: Net>(self, net: N, first: io::Error) {
        let Some(d) = self.opts.discovery.clone() else {
            return;
        };
        let mut delay = Duration::from_secs(1);
        let mut last = first.to_string();
        loop {
            tokio::time::sleep(delay).await;
            match net.multicast(d.group, d.interface).await {
                Ok(socket) => {
                    tracing::info!(group = %d.group, "LAN discovery started");
                    self.set_status(DiscoveryStatus::Running { group: d.group });
                    self.task(socket).run().await;
                    return;
                }
                Err(e) => {
                    let now = e.to_string();
                    self.set_status(DiscoveryStatus::Retrying {
                        group: d.group,
                        error: now.clone(),
                    });
                    if now != last {
                        tracing::warn!(group = %d.group, error = %e, "LAN discovery still cannot start");
                        last = now;
                    } else {
                        tracing::debug!(group = %d.group, error = %e, "LAN discovery still cannot start");
                    }
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

/// A cheap, cloneable way to read a node's counters from another task.
#[derive(Clone, Debug)]
pub struct StatsSource {
    inputs: mpsc::Sender<Input>,
    ready: Arc<AtomicBool>,
}

impl StatsSource {
    /// Whether the node is in a ring (joined, or serving alone) and running: read from a flag
    /// the node task keeps, without asking it (for readiness probes).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.inputs.is_closed()
    }

    /// A snapshot (`None` once the node has shut down).
    pub async fn get(&self) -> Option<StatsSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Stats(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Everything the admin API shows (`None` once the node has shut down): see
    /// [`inspect`].
    pub async fn inspect(&self) -> Option<Inspection> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Inspect(tx)).await.ok()?;
        rx.await.ok().map(|b| *b)
    }
}

impl NodeHandle {
    /// A handle for reading the counters from another task.
    pub fn stats_source(&self) -> StatsSource {
        StatsSource {
            inputs: self.inputs.clone(),
            ready: self.ready.clone(),
        }
    }

    /// The node's id and advertised peer address.
    pub fn info(&self) -> NodeInfo {
        self.info
    }

    /// Attaches applications to this node in this process, without sockets (brokerless mode;
    /// [`NodeHandle::connect`] and [`NodeHandle::register`] are shorthands).
    pub fn local_connector(&self) -> LocalConnector {
        self.local.clone()
    }

    /// Where applications connect (the bound addresses, with real ports).
    pub fn relay_addrs(&self) -> &[SocketAddr] {
        &self.relay_addrs
    }

    /// A snapshot of the node's state and counters (`None` once it has shut down).
    pub async fn stats(&self) -> Option<StatsSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Stats(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Everything the admin API shows (`None` once it has shut down): see [`inspect`].
    pub async fn inspect(&self) -> Option<Inspection> {
        self.stats_source().inspect().await
    }

    /// Graceful shutdown: every pending request of every application is answered (timeout),
    /// its tunnels closed with a reason, every session gets CLOSE with a reason; the node
    /// leaves the ring (its peers are told); then the sockets close. Returns when the last
    /// session has finished writing, or after the close linger.
    pub async fn shutdown(self) {
        for t in &self.accept_tasks {
            t.abort();
        }
        let (tx, rx) = oneshot::channel();
        if self.inputs.send(Input::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let deadline = tokio::time::Instant::now() + self.linger;
        while Arc::strong_count(&self.alive) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
