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
//! - **Links**: one TCP stream per peer pair, started by a hello naming both sides; frames are
//!   the foundation's codec. A link's writer queue is bounded (`link_queue`); what does not
//!   fit is dropped and counted (the overlay retransmits what matters). When both sides dial at
//!   once, both keep the link dialed by the smaller node id.
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
//! - `driver`: the node task; `link`: peer links; `relay`: relay sessions; `session`: the node
//!   task's side of sessions (ids, translation to core commands and back).

pub mod link;
pub mod net;

mod driver;
mod relay;
mod session;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use petal_core::{Config, Node, Stats};
use petal_protocol::relay::DEFAULT_PORT;
use petal_protocol::{NodeId, NodeInfo};
use tokio::sync::{mpsc, oneshot};

pub use net::{Listener, Net, TokioNet};

use driver::{Driver, Input};

/// How a node runs. [`Options::new`] gives the daemon's defaults.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where local applications connect (relay v1). The daemon listens on 127.0.0.1 and `[::1]`;
    /// boot fails only when every listen fails.
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
    /// This node's id.
    pub id: NodeId,
    /// Seed of the core's random generator.
    pub seed: u64,
    /// Deadline of a relay or link handshake.
    pub handshake_timeout: Duration,
    /// Deadline of a TCP dial.
    pub dial_timeout: Duration,
    /// After a failed dial, messages to that address are dropped for this long.
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
    /// Frames queued per peer link (and while it is being dialed).
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
}

impl Options {
    /// Defaults for a node with id `id` (relay on port 55555, peers on an OS-chosen port).
    pub fn new(id: NodeId) -> Self {
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
            id,
            seed: id.get() as u64,
            handshake_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(3),
            dial_backoff: Duration::from_secs(1),
            join_wait: Duration::from_secs(3),
            close_linger: Duration::from_secs(2),
            link_keepalive: Duration::from_secs(1),
            link_idle_timeout: Duration::from_secs(5),
            link_queue: 16 * 1024,
            max_frame: max_message + (1 << 20),
            max_message,
            session_queue_bytes: 32 << 20,
            session_max_bytes: 256 << 20,
            input_queue: 8 * 1024,
        }
    }
}

/// Counters of the runtime (the core keeps its own in [`Stats`]).
#[derive(Debug, Default)]
pub struct RuntimeStats {
    /// Relay sessions attached.
    pub sessions_opened: AtomicU64,
    /// Relay handshakes that failed, were denied or timed out.
    pub handshakes_failed: AtomicU64,
    /// Connections closed for a protocol violation.
    pub relay_violations: AtomicU64,
    /// Application commands the core refused (the client got a timeout or nothing).
    pub relay_refused: AtomicU64,
    /// Broadcasts, events and request deliveries dropped for clients that do not read.
    pub relay_dropped: AtomicU64,
    /// Replies that came after their request's timeout (discarded).
    pub late_replies: AtomicU64,
    /// Peer dials started.
    pub link_dials: AtomicU64,
    /// Peer dials that failed.
    pub link_dial_failures: AtomicU64,
    /// Links that came up.
    pub links_up: AtomicU64,
    /// Node-to-node messages dropped (queue full, dial failed or backing off).
    pub link_drops: AtomicU64,
    /// Seed dials that failed.
    pub seed_failures: AtomicU64,
    /// Sessions closed because their client fell more than `session_max_bytes` behind.
    pub slow_closed: AtomicU64,
    /// Times a peer link backed up and sessions stopped reading their clients.
    pub backpressure: AtomicU64,
}

impl RuntimeStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters' current values.
    pub fn snapshot(&self) -> RuntimeCounters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RuntimeCounters {
            sessions_opened: g(&self.sessions_opened),
            handshakes_failed: g(&self.handshakes_failed),
            relay_violations: g(&self.relay_violations),
            relay_refused: g(&self.relay_refused),
            relay_dropped: g(&self.relay_dropped),
            late_replies: g(&self.late_replies),
            link_dials: g(&self.link_dials),
            link_dial_failures: g(&self.link_dial_failures),
            links_up: g(&self.links_up),
            link_drops: g(&self.link_drops),
            seed_failures: g(&self.seed_failures),
            slow_closed: g(&self.slow_closed),
            backpressure: g(&self.backpressure),
        }
    }
}

/// A copy of [`RuntimeStats`] (see there for each counter).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RuntimeCounters {
    pub sessions_opened: u64,
    pub handshakes_failed: u64,
    pub relay_violations: u64,
    pub relay_refused: u64,
    pub relay_dropped: u64,
    pub late_replies: u64,
    pub link_dials: u64,
    pub link_dial_failures: u64,
    pub links_up: u64,
    pub link_drops: u64,
    pub seed_failures: u64,
    pub slow_closed: u64,
    pub backpressure: u64,
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
    /// The core's counters.
    pub core: Stats,
    /// The runtime's counters.
    pub runtime: RuntimeCounters,
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    info: NodeInfo,
    relay_addrs: Vec<SocketAddr>,
    inputs: mpsc::Sender<Input>,
    accept_tasks: Vec<tokio::task::AbortHandle>,
    /// One clone per live session or link writer: shutdown waits for them to finish.
    alive: Arc<()>,
    linger: Duration,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

/// Starts a node on `net`: binds its listeners (errors come back here), then runs it in tasks
/// of the current tokio runtime.
pub async fn spawn<N: Net>(net: N, opts: Options) -> io::Result<NodeHandle> {
    if opts.session_max_bytes < opts.session_queue_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "session_max_bytes must be at least session_queue_bytes",
        ));
    }
    let mut peer_listener = net.bind(opts.peer_listen).await?;
    let peer_addr = peer_listener.local_addr()?;
    let advertise = opts.advertise.unwrap_or_else(|| {
        if peer_addr.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), peer_addr.port())
        } else {
            peer_addr
        }
    });
    let mut relays = Vec::new();
    let mut relay_addrs = Vec::new();
    let mut last_err = None;
    for addr in &opts.relay_addrs {
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
    let info = NodeInfo {
        id: opts.id,
        addr: advertise,
    };
    let node = Node::new(info, opts.core.clone(), opts.seed)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let opts = Arc::new(opts);
    let stats = Arc::new(RuntimeStats::default());
    let (tx, rx) = mpsc::channel(opts.input_queue);
    let alive = Arc::new(());
    // Sessions have their own channel, which the node task stops reading while peer links
    // are backed up: their readers then wait, and TCP pushes back on the applications.
    let (app_tx, app_rx) = mpsc::channel(opts.input_queue);
    let driver = Driver::new(node, net.clone(), opts.clone(), tx.clone(), stats.clone());
    tokio::spawn(driver.run(rx, app_rx));
    tracing::info!(id = %info.id, peers = %advertise, relay = ?relay_addrs, "node started");

    let mut accept_tasks = Vec::new();
    {
        let (inputs, opts, alive) = (tx.clone(), opts.clone(), alive.clone());
        accept_tasks.push(
            tokio::spawn(async move {
                let mut next = 1u64 << 63;
                loop {
                    let Ok((mut stream, from)) = peer_listener.accept().await else {
                        continue;
                    };
                    next += 1;
                    let (link, inputs, opts, alive) =
                        (next, inputs.clone(), opts.clone(), alive.clone());
                    tokio::spawn(async move {
                        let _alive = alive;
                        match link::handshake(&mut stream, info, opts.handshake_timeout).await {
                            Ok(peer) => {
                                driver::start_link(stream, peer, link, false, None, &opts, inputs)
                                    .await;
                            }
                            Err(e) => tracing::debug!(%from, error = %e, "inbound link refused"),
                        }
                    });
                }
            })
            .abort_handle(),
        );
    }
    let next_conn = Arc::new(AtomicU64::new(1));
    for mut l in relays {
        let (inputs, opts, stats, alive, next_conn) = (
            app_tx.clone(),
            opts.clone(),
            stats.clone(),
            alive.clone(),
            next_conn.clone(),
        );
        accept_tasks.push(
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = l.accept().await else {
                        continue;
                    };
                    let conn = next_conn.fetch_add(1, Ordering::Relaxed);
                    let (inputs, opts, stats, alive) =
                        (inputs.clone(), opts.clone(), stats.clone(), alive.clone());
                    tokio::spawn(async move {
                        let _alive = alive;
                        relay::serve(stream, conn, opts, stats, inputs).await;
                    });
                }
            })
            .abort_handle(),
        );
    }
    Ok(NodeHandle {
        info,
        relay_addrs,
        inputs: tx,
        accept_tasks,
        alive,
        linger: opts.close_linger,
    })
}

/// A cheap, cloneable way to read a node's counters from another task.
#[derive(Clone, Debug)]
pub struct StatsSource {
    inputs: mpsc::Sender<Input>,
}

impl StatsSource {
    /// A snapshot (`None` once the node has shut down).
    pub async fn get(&self) -> Option<StatsSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Stats(tx)).await.ok()?;
        rx.await.ok()
    }
}

impl NodeHandle {
    /// A handle for reading the counters from another task.
    pub fn stats_source(&self) -> StatsSource {
        StatsSource {
            inputs: self.inputs.clone(),
        }
    }

    /// The node's id and advertised peer address.
    pub fn info(&self) -> NodeInfo {
        self.info
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
