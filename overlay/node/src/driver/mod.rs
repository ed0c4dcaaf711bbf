//! The node task: the one task that owns the petal-core [`Node`]. Everything else (peer links,
//! relay sessions, listeners) talks to it through one bounded input channel; it answers through
//! per-link and per-session queues. It never awaits anything but its input and its timer, so a
//! slow peer or client cannot stall it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use petal_core::{Node, SeedTiming, Seeds, Time};
use petal_protocol::{Message, NodeId, NodeInfo};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::link;
use crate::net::Net;
use crate::session::{SessionOpen, Sessions};
use crate::{Options, RuntimeStats, StatsSnapshot};

mod drain;
mod inspect;
mod links;
mod outbound;
mod poll;

use links::LinkState;
pub(crate) use links::{LinkOpened, start_link};

/// How long a node discovery introduced is not introduced again (unless it restarted).
const REINTRODUCE_AFTER: Duration = Duration::from_secs(60);
/// Most introductions remembered.
const MAX_INTRODUCED: usize = 4096;
/// The first delay after a failed dial before the address is dialed again (then doubling up to
/// `Options::dial_backoff`).
const FIRST_DIAL_BACKOFF: Duration = Duration::from_millis(50);

/// What the node task receives.
pub(crate) enum Input {
    /// Frames that arrived on link `link` from `from`.
    Peer {
        from: NodeInfo,
        link: u64,
        msgs: Vec<Message>,
        /// What the batch holds of the link's input share (given back once handled).
        charge: crate::budget::Charge,
    },
    /// A link finished its handshake.
    LinkUp {
        peer: NodeInfo,
        link: u64,
        /// The address we dialed (`None` for inbound links).
        dialed: Option<SocketAddr>,
        tx: mpsc::UnboundedSender<crate::link::LinkOut>,
        /// The id the dialer expected at that address (`None` for seeds and inbound links).
        expected: Option<NodeId>,
        /// What the link carries (counted by its tasks).
        traffic: Arc<crate::link::LinkTraffic>,
    },
    /// Discovery heard a ready node's beacon; `news` when it is the first beacon heard from
    /// that node (or from a new process of it).
    Discovered { info: NodeInfo, news: bool },
    /// A dial failed before its handshake finished.
    DialFailed {
        expected: Option<NodeId>,
        addr: SocketAddr,
        why: String,
    },
    /// A link ended.
    LinkDown {
        peer: NodeId,
        link: u64,
        why: String,
    },
    /// A relay session finished its handshake and asks to attach.
    SessionOpen(SessionOpen),
    /// Relay packets from an attached session, in order.
    Session {
        conn: u64,
        packets: Vec<petal_protocol::relay::ClientPacket>,
        /// What the batch holds of the session's input share (given back once handled).
        charge: crate::budget::Charge,
    },
    /// A session ended: `graceful` after the client's CLOSE, else a drop or a violation.
    SessionClosed { conn: u64, graceful: bool },
    /// A session's reader handed over everything its client had written when the node began
    /// to shut down.
    SessionDrained { conn: u64 },
    /// A snapshot of the counters.
    Stats(oneshot::Sender<StatsSnapshot>),
    /// A snapshot of the node for the admin API.
    Inspect(oneshot::Sender<Box<crate::inspect::Inspection>>),
    /// Graceful shutdown: answer everything, leave the ring, then reply.
    Shutdown(oneshot::Sender<()>),
    /// The external registry's answer to the core's registry operation `op`.
    Registry {
        op: u64,
        result: petal_protocol::StoreResult,
    },
}

pub(crate) struct Driver<N: Net> {
    pub(crate) node: Node,
    /// The node-wide memory budget, shared by the core, link queues and session queues.
    pub(crate) budget: Arc<petal_core::MemoryBudget>,
    /// Dials under way (at most `Options::max_dials`).
    dials: usize,
    net: N,
    opts: Arc<Options>,
    start: Instant,
    inputs: mpsc::Sender<Input>,
    links: BTreeMap<NodeId, LinkState>,
    /// Addresses whose last dial failed: not re-dialed (messages to them dropped) before the
    /// given time; the delay that was applied (it doubles with each failure in a row, from
    /// [`FIRST_DIAL_BACKOFF`] up to `Options::dial_backoff`, and is forgotten once a link to the
    /// address comes up).
    dial_backoff: BTreeMap<SocketAddr, (Instant, Duration)>,
    next_link: u64,
    pub(crate) sessions: Sessions,
    pub(crate) stats: Arc<RuntimeStats>,
    /// Set while some peer link's queue (or the core's table of unacknowledged hops) is more
    /// than three quarters full, until all are at most half full: the node task then takes no
    /// application input (backpressure).
    congested: bool,
    /// Set while one read is handled: what it queues for each up link goes out as one batch at
    /// its end (see `outbound`).
    holding_links: bool,
    /// The links with a batch under way.
    dirty_links: Vec<NodeInfo>,
    joined: bool,
    seeds_pending: bool,
    /// What links need to open (identity, security, randomness).
    keys: Arc<link::LinkKeys>,
    /// Shared with discovery: whether the core is ready (beacons say so).
    pub(crate) ready: Arc<AtomicBool>,
    /// The seeds and when to dial them (the schedule the simulator's fleets follow too).
    seeds: Seeds<SocketAddr>,
    /// Nodes introduced to the core recently, by id and address (not again before the given
    /// time). Keyed by address too: a beacon replayed from another address must not hold back
    /// the real one.
    introduced: BTreeMap<(NodeId, SocketAddr), Instant>,
    /// When a link last carried a message of the core, either way (link keepalives do not
    /// count), as of `coarse_now`.
    link_used: BTreeMap<NodeId, Instant>,
    /// The time at the start of the current input (one clock read per input).
    coarse_now: Instant,
    /// Where applications connect (the bound addresses), for the admin API.
    pub(crate) relay_addrs: Vec<SocketAddr>,
    /// Whether LAN discovery runs (set by its task).
    pub(crate) discovery: Arc<std::sync::Mutex<crate::inspect::DiscoveryStatus>>,
    /// Application inputs waiting, as of the top of the current turn of the loop.
    app_queue: usize,
    /// When idle links are next looked for.
    next_reap: Instant,
    /// The core's join retries already logged.
    join_retries_logged: u64,
    /// The core reported a failed join: serve as a ring of one (done after event delivery).
    join_failed: bool,
    /// A shutdown under way, waiting for the sessions to hand over what they read.
    stopping: Option<Stopping>,
}

/// A shutdown waiting for sessions' readers (see [`Input::SessionDrained`]).
struct Stopping {
    /// Who asked for the shutdown (answered once the node is down).
    done: Vec<oneshot::Sender<()>>,
    waiting: std::collections::BTreeSet<u64>,
    deadline: Instant,
}

/// The longest a shutdown waits for sessions to hand over what their clients already wrote.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);

impl<N: Net> Driver<N> {
    pub(crate) fn new(
        node: Node,
        net: N,
        opts: Arc<Options>,
        inputs: mpsc::Sender<Input>,
        stats: Arc<RuntimeStats>,
    ) -> Self {
        let mut node = node;
        if let Some(ms) = opts.wall_clock_ms {
            node.set_wall_clock(ms);
        }
        if opts.registry.is_some() {
            node.set_external_registry(true);
        }
        let budget = Arc::new(petal_core::MemoryBudget::new(node.config().memory_budget));
        node.set_memory_budget(budget.clone());
        let sessions = Sessions::new(opts.clone(), stats.clone(), budget.clone());
        let keys = Arc::new(link::LinkKeys {
            identity: opts.identity.clone(),
            security: opts.security.clone(),
            entropy: opts.entropy,
            deadline: opts.handshake_timeout,
        });
        let now = Instant::now();
        Driver {
            keys,
            ready: Arc::new(AtomicBool::new(false)),
            seeds: Seeds::new(
                opts.seeds.iter().copied(),
                Time::from_micros(0),
                SeedTiming {
                    max_retry: opts.seed_retry,
                    dial_patience: opts.dial_timeout + Duration::from_secs(1),
                    ..SeedTiming::default()
                },
            ),
            introduced: BTreeMap::new(),
            link_used: BTreeMap::new(),
            coarse_now: now,
            next_reap: now + opts.link_idle_close,
            join_retries_logged: 0,
            join_failed: false,
            stopping: None,
            node,
            budget,
            dials: 0,
            net,
            opts,
            start: Instant::now(),
            inputs,
            links: BTreeMap::new(),
            dial_backoff: BTreeMap::new(),
            next_link: 1,
            sessions,
            stats,
            joined: false,
            seeds_pending: false,
            congested: false,
            holding_links: false,
            dirty_links: Vec::new(),
            relay_addrs: Vec::new(),
            discovery: Arc::new(std::sync::Mutex::new(crate::inspect::DiscoveryStatus::Off)),
            app_queue: 0,
        }
    }

    /// The core's clock: microseconds since the task started (tokio time, simulated under
    /// turmoil).
    #[expect(
        clippy::cast_possible_truncation,
        reason = "u64 microseconds since the task started last 584,000 years"
    )]
    pub(crate) fn now(&self) -> Time {
        Time::from_micros(self.start.elapsed().as_micros() as u64)
    }

    fn instant(&self, t: Time) -> Instant {
        self.start + Duration::from_micros(t.as_micros())
    }

    /// Runs until shutdown. `rx` carries peer-link input and control, `app_rx` application
    /// sessions' input (held while [`Self::app_input_held`]).
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        mut app_rx: mpsc::Receiver<Input>,
    ) {
        let now = self.now();
        if self.seeds.is_empty() {
            self.node.start_first(now);
            self.joined = true;
            tracing::info!(id = %self.node.id(), "no seeds: serving as a ring of one");
        } else {
            self.seeds_pending = true;
            self.dial_seeds();
        }
        let mut busy = poll::BusyPoll::new(self.opts.busy_poll);
        let sleep = tokio::time::sleep_until(self.start + Duration::from_secs(3600));
        tokio::pin!(sleep);
        let join_deadline = self.start + self.opts.join_wait;
        let mut armed: Option<Instant> = None;
        loop {
            self.coarse_now = Instant::now();
            self.app_queue = app_rx.len();
            self.flush();
            let now = self.now();
            if self.seeds_pending && Instant::now() >= join_deadline {
                self.give_up_seeds("no seed answered");
            }
            let mut wake = self.node.poll_timeout().map(|t| self.instant(t));
            if self.congested {
                // Re-check the links every millisecond until they drain.
                self.uncongest_if_drained();
                let soon = Instant::now() + Duration::from_millis(1);
                if self.congested {
                    wake = Some(wake.map_or(soon, |w| w.min(soon)));
                }
            }
            if self.seeds_pending {
                wake = Some(wake.map_or(join_deadline, |w| w.min(join_deadline)));
            }
            if Instant::now() >= self.next_reap {
                self.reap_idle_links();
            }
            wake = Some(wake.map_or(self.next_reap, |w| w.min(self.next_reap)));
            if let Some(deadline) = self.stopping.as_ref().map(|s| s.deadline) {
                if self.finish_shutdown_if_drained(&mut app_rx) {
                    return;
                }
                wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
            }
            if !self.seeds.is_empty() {
                if now >= self.seeds.poll_timeout() {
                    self.retry_seeds(now);
                }
                let at = self.instant(self.seeds.poll_timeout());
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
            if let Some(w) = wake {
                if w <= Instant::now() {
                    self.node.handle_timeout(now);
                    continue;
                }
                if armed != Some(w) {
                    sleep.as_mut().reset(w);
                    armed = Some(w);
                }
            }
            if busy.on()
                && rx.is_empty()
                && (app_rx.is_empty() || self.app_input_held())
                && busy.keep_polling()
            {
                // Give the CPU to any other thread that wants it, then the runtime a turn (its
                // I/O driver is polled without sleeping, the readers run), and look again,
                // instead of sleeping until a wake-up.
                std::thread::yield_now();
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                biased;
                input = rx.recv() => {
                    let Some(input) = input else { return };
                    self.handle(input);
                    // Take what else is waiting (one wake-up for many inputs), draining the
                    // core after each: its event and transmit queues are bounded, and a batch
                    // of inputs can produce more than they hold.
                    self.drain_more(&mut rx, &mut app_rx);
                    busy.handled();
                }
                input = app_rx.recv(), if !self.app_input_held() => {
                    let Some(input) = input else { return };
                    self.handle(input);
                    self.drain_more(&mut rx, &mut app_rx);
                    busy.handled();
                }
                // (A timer opens no polling window: a congested node wakes every millisecond.)
                () = &mut sleep, if wake.is_some() => {
                    armed = None;
                    let now = self.now();
                    self.node.handle_timeout(now);
                }
            }
        }
    }

    /// True while application input waits in its channel: while the links are congested, and
    /// before the core has started (seeds still being dialled), when it would refuse every
    /// session ("the node is not running"); the sessions are served once the node joins
    /// through a seed or, after `join_wait`, serves as a ring of one. While shutting down it
    /// is read however busy the links are: it holds the replies the shutdown waits for.
    fn app_input_held(&self) -> bool {
        let started = self.node.is_ready() || self.node.is_joining();
        self.stopping.is_none() && (self.congested || !started)
    }

    /// Takes what else is waiting (one wake-up for many inputs), peer input first, draining
    /// the core after each input: its event and transmit queues are bounded, and a batch of
    /// inputs can produce more than they hold. (A shutdown is finished by `run`.)
    fn drain_more(&mut self, rx: &mut mpsc::Receiver<Input>, app_rx: &mut mpsc::Receiver<Input>) {
        for _ in 0..512 {
            self.flush();
            let next = match rx.try_recv() {
                Ok(input) => input,
                Err(_) if self.app_input_held() => break,
                Err(_) => match app_rx.try_recv() {
                    Ok(input) => input,
                    Err(_) => break,
                },
            };
            self.handle(next);
        }
    }

    /// Handles one input.
    fn handle(&mut self, input: Input) {
        let now = self.now();
        self.coarse_now = self.start + Duration::from_micros(now.as_micros());
        match input {
            Input::Peer {
                from,
                link,
                msgs,
                charge,
            } => {
                // Frames of a link that was replaced still count: the peer sent them to us.
                let _ = link;
                self.link_used.insert(from.id, self.coarse_now);
                self.hold_output();
                for msg in msgs {
                    log_join_message("received", from, &msg);
                    self.node.handle_message(now, from, msg);
                    self.flush();
                }
                self.release_output();
                // Handled: the link's reader may read on.
                drop(charge);
            }
            Input::LinkUp {
                peer,
                link,
                dialed,
                tx,
                expected,
                traffic,
            } => {
                if dialed.is_some() {
                    self.dials = self.dials.saturating_sub(1);
                }
                self.link_up(peer, link, dialed, tx, expected, traffic);
            }
            Input::Discovered { info, news } => self.discovered(info, news),
            Input::DialFailed {
                expected,
                addr,
                why,
            } => {
                self.dials = self.dials.saturating_sub(1);
                self.dial_failed(expected, addr, &why);
            }
            Input::LinkDown { peer, link, why } => self.link_down(peer, link, &why),
            Input::SessionOpen(open) => self.sessions.open(&mut self.node, now, open),
            Input::Session {
                conn,
                packets,
                charge,
            } => {
                // What the packets queue for sessions and links goes out once, after the last.
                self.hold_output();
                for packet in packets {
                    self.sessions.packet(&mut self.node, now, conn, packet);
                    // One publish to a large local audience fills the event queue: drain.
                    self.flush();
                }
                self.release_output();
                drop(charge);
                self.check_core_congestion();
            }
            Input::SessionClosed { conn, graceful } => {
                self.sessions.closed(&mut self.node, now, conn, graceful);
                if let Some(s) = &mut self.stopping {
                    s.waiting.remove(&conn);
                }
            }
            Input::Stats(reply) => {
                let _ = reply.send(self.snapshot());
            }
            // A reader that gave up (its timeout passed) gets no copy made for nothing.
            Input::Inspect(reply) if !reply.is_closed() => {
                let _ = reply.send(Box::new(self.inspect()));
            }
            Input::Inspect(_) => {}
            Input::SessionDrained { conn } => {
                if let Some(s) = &mut self.stopping {
                    s.waiting.remove(&conn);
                }
            }
            Input::Registry { op, result } => {
                self.node.registry_result(now, op, result);
            }
            Input::Shutdown(done) => {
                if let Some(s) = &mut self.stopping {
                    // Answered with the first, once the node is down.
                    s.done.push(done);
                    return;
                }
                // First what services already wrote (their replies): each session's reader
                // hands it over, then the node answers the rest and leaves (`run`).
                let waiting = self.sessions.drain_all().into_iter().collect();
                self.stopping = Some(Stopping {
                    done: vec![done],
                    waiting,
                    deadline: Instant::now() + SHUTDOWN_DRAIN,
                });
            }
        }
    }

    /// A seed answered: it is a contact of the core. A node not started joins through it, a
    /// joining node keeps it as another contact (a seed that is itself joining refuses, and
    /// the core moves on), a ready node introduces it if its ring does not know it (the far
    /// side of a partition, or a group that started apart: the rings merge). Only seeds are
    /// contacts: a node that dialed us is most likely joining through us.
    fn seed_linked(&mut self, addr: SocketAddr, peer: NodeInfo) {
        self.seeds.answered(&addr, peer.id);
        let now = self.now();
        if self.node.is_ready() {
            if !self.node.knows(peer.id) {
                RuntimeStats::add(&self.stats.peers_discovered, 1);
                tracing::info!(%addr, id = %peer.id, "a seed outside our ring; merging");
            }
        } else if !self.joined {
            tracing::info!(via = %peer.id, addr = %peer.addr, "joining the ring");
        } else {
            tracing::debug!(via = %peer.id, addr = %peer.addr, "another join contact");
        }
        self.seeds_pending = false;
        self.joined = true;
        self.node.contact(now, peer);
    }

    /// Dials again the seeds whose node the core does not know, on the schedule of
    /// [`Seeds::handle_timeout`] (nodes keep looking for peers: a seed that came up late is
    /// found within 100 ms during the first 5 s; groups that started apart, or were
    /// partitioned, merge). A seed is settled when the core knows its node, when it is this
    /// node, and, while joining, when a link to it is up: the core has it among its contacts
    /// and tries it every round over that link, so dialing again would only replace the link.
    fn retry_seeds(&mut self, now: Time) {
        let joining = self.node.is_joining();
        let (node, links) = (&self.node, &self.links);
        self.seeds.handle_timeout(now, |id| {
            node.knows(id)
                || id == node.id()
                || (joining && matches!(links.get(&id), Some(LinkState::Up { .. })))
        });
        self.dial_seeds();
    }

    /// Dials the seeds the schedule hands out.
    fn dial_seeds(&mut self) {
        while let Some(addr) = self.seeds.poll_dial() {
            self.dial(None, addr);
        }
    }

    /// A beacon named a ready node: introduce it to the core unless the core knows it. A node
    /// heard before is introduced again only after [`REINTRODUCE_AFTER`]: in a large LAN most
    /// nodes of our own ring are in none of our tables, and re-introducing each at every
    /// beacon would cost a routed join and a leaf-set exchange per beacon (nodes that vanish
    /// and come back are the core's business: it re-probes the dead).
    fn discovered(&mut self, info: NodeInfo, news: bool) {
        if info.id == self.node.id() || !self.node.is_ready() || self.node.knows(info.id) {
            return;
        }
        // Only nodes that would be our leaf-set neighbours (or any while our leaf set is not
        // full): two rings that meet have such pairs, and one introduction between them is
        // enough; the rest of our own ring is not worth a routed join per beacon.
        if !self.node.leaf_set().would_accept(info.id) {
            return;
        }
        let now_i = Instant::now();
        let key = (info.id, info.addr);
        if !news && self.introduced.get(&key).is_some_and(|t| *t > now_i) {
            return;
        }
        if self.introduced.len() >= MAX_INTRODUCED {
            self.introduced.retain(|_, t| *t > now_i);
            while self.introduced.len() >= MAX_INTRODUCED {
                // Still full: forget the entry that expires first.
                let first = self
                    .introduced
                    .iter()
                    .min_by_key(|(k, t)| (**t, **k))
                    .map(|(k, _)| *k);
                match first {
                    Some(k) => self.introduced.remove(&k),
                    None => break,
                };
            }
        }
        self.introduced.insert(key, now_i + REINTRODUCE_AFTER);
        RuntimeStats::add(&self.stats.peers_discovered, 1);
        tracing::debug!(id = %info.id, addr = %info.addr, "discovered a node");
        let now = self.now();
        self.node.introduce(now, info);
    }

    /// Seed `addr` cannot be joined through (while joining): once every seed failed, serve
    /// alone now rather than at the join deadline (seeds are retried later anyway).
    fn seed_failed(&mut self, addr: SocketAddr, why: &str) {
        if self.seeds.failed(&addr) {
            self.give_up_seeds(why);
        }
    }

    fn give_up_seeds(&mut self, why: &str) {
        self.seeds_pending = false;
        if !self.joined {
            self.joined = true;
            tracing::warn!(%why, "could not join through the seeds; serving as a ring of one");
            let now = self.now();
            self.node.start_first(now);
        }
    }

    /// Starts congestion when the core's table of unacknowledged hops is three quarters full
    /// (its acknowledgements lag: more application input would be dropped there).
    fn check_core_congestion(&mut self) {
        if !self.congested && self.node.pending_hops() * 4 > self.node.config().max_pending_hops * 3
        {
            RuntimeStats::add(&self.stats.backpressure, 1);
            self.congested = true;
        }
    }

    /// Ends congestion once every link is at most half full and the core's hop table too.
    fn uncongest_if_drained(&mut self) {
        if self.node.pending_hops() * 2 > self.node.config().max_pending_hops {
            return;
        }
        let half = self.opts.link_queue / 2;
        let drained = self.links.values().all(|l| match l {
            LinkState::Up { out, .. } => out.queued() <= half,
            LinkState::Dialing { .. } => true,
        });
        if drained {
            self.congested = false;
        }
    }

    /// Holds what one read (a client's packets, a peer's frames) queues for sessions and peer
    /// links, to hand each its share as one batch at [`Driver::release_output`].
    fn hold_output(&mut self) {
        self.sessions.hold();
        self.holding_links = true;
    }

    /// Hands each session and link what the read queued for it.
    fn release_output(&mut self) {
        self.sessions.release();
        self.release_links();
    }

    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            id: self.node.id(),
            ready: self.node.is_ready(),
            leaf_set: self.node.leaf_set().members().count(),
            links: self
                .links
                .values()
                .filter(|l| matches!(l, LinkState::Up { .. }))
                .count(),
            sessions: self.sessions.len(),
            memory_used: self.budget.used(),
            memory_budget: self.budget.limit(),
            core: self.node.stats().clone(),
            runtime: self.stats.snapshot(),
        }
    }

    /// Shuts down once every session handed over what its client wrote, or the drain's
    /// deadline passed: first handles what the sessions' readers queued (replies among it, also
    /// when links are congested and application input is otherwise not read). True when done.
    fn finish_shutdown_if_drained(&mut self, app_rx: &mut mpsc::Receiver<Input>) -> bool {
        let Some(s) = &self.stopping else {
            return false;
        };
        if !s.waiting.is_empty() && Instant::now() < s.deadline {
            return false;
        }
        while let Ok(input) = app_rx.try_recv() {
            self.handle(input);
            self.flush();
        }
        let Some(s) = self.stopping.take() else {
            return false;
        };
        self.flush();
        let now = self.now();
        self.shutdown(now);
        for done in s.done {
            let _ = done.send(());
        }
        true
    }

    fn shutdown(&mut self, now: Time) {
        tracing::info!("shutting down: answering pending work and leaving the ring");
        // Requests from other nodes that local members hold fail at their requesters now
        // (closing the sessions would abandon them to their timeouts).
        self.node.fail_held_requests(now);
        while let Some(t) = self.node.poll_transmit() {
            self.transmit(t.to, t.msg);
        }
        self.sessions.shutdown(&mut self.node, now);
        self.node.leave(now);
        // Events from leave (outcomes of requests of sessions already answered) go nowhere;
        // the leave messages go to the peers.
        while let Some(t) = self.node.poll_transmit() {
            self.transmit(t.to, t.msg);
        }
        while self.node.poll_event().is_some() {}
        // Dropping the links lets their writers send what is queued and close.
        self.links.clear();
    }
}

/// Logs (at debug) a message of a join's path: a routed join, a join reply, a refusal. A join
/// that stalls is then traced node by node in the daemons' logs.
pub(super) fn log_join_message(what: &str, peer: NodeInfo, msg: &Message) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    match msg {
        Message::Route(r) if r.body == petal_protocol::Routed::Join => {
            tracing::debug!(peer = %peer.id, origin = %r.origin.id, hops = r.hops, "join {what}");
        }
        Message::JoinReply { last, leaf, .. } => {
            tracing::debug!(peer = %peer.id, last, leaf = leaf.len(), "join reply {what}");
        }
        Message::JoinBusy { contacts } => {
            tracing::debug!(peer = %peer.id, contacts = contacts.len(), "join refusal {what}");
        }
        _ => {}
    }
}
