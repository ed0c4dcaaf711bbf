//! Model-based property tests of the messaging layer: cluster requests (request/reply with
//! timeouts) and tunnels (open, accept, chunked credit-throttled data, close), driven through a
//! few real [`Node`]s over a tiny deterministic network.
//!
//! The network is a priority queue of messages keyed by (delivery time, sequence number) with a
//! fixed latency per pair of nodes (so each link is FIFO, as an authenticated stream is). The
//! driver follows the crate's drive contract to the letter: inputs, then `poll_transmit` and
//! `poll_event` until empty, then `poll_timeout`; `check_invariants` runs after every step.
//! Applications are modelled next to the nodes: connections register (cluster members or plain
//! clients), issue requests whose payload names the request, answer them (reply, fault, never,
//! or twice), open and accept tunnels, stream messages whose bytes are a function of their
//! sender and index, read them at random rates, close, and nodes crash.
//!
//! Properties (what applications rely on):
//! 1. each request issued on a live node gets exactly one outcome; a reply or fault only if a
//!    member answered that very request (its payload names it and the member echoes it), never
//!    after its deadline; a timeout exactly at its deadline; a member's first answer within the
//!    timeout is accepted, a second one refused; on a healthy ring (no crash or departure yet,
//!    a member for a second) a request with a long timeout and a prompt answer never times out;
//! 2. no event is reported for a connection after it was unregistered (nor for a connection of
//!    another node);
//! 3. on each tunnel the receiver gets exactly the messages sent, in order, chunk by chunk
//!    (sizes on first chunks, every byte checked), first chunks only within the credit it
//!    granted; or the tunnel closes with a reason, and only for a cause (the far node crashed,
//!    the far connection left, the far end failed or never opened with it); a graceful close
//!    reaches the far end, with an empty reason, after all data sent before it; while the far
//!    application has not closed, a writer's credit never exceeds `tunnel_buffer +
//!    tunnel_window` plus what the far application read, so a non-reading receiver stalls the
//!    writer; a crash of the far node closes the tunnel within `tunnel_idle_timeout` plus one
//!    keepalive period (and one timer grain); at the end, with everyone reading, every open
//!    tunnel has delivered everything and every tunnel closes;
//! 4. same-node tunnels behave the same;
//! 5. every node keeps its invariants after every step.
//!
//! Set `PETAL_MODEL_STATS=1` to print what the runs covered.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use petal_core::{AppError, Config, ConnId, Event, Message, Node, NodeId, NodeInfo, Outcome, Time};
use petal_protocol::ReplyResult;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CLUSTER: &str = "c";
const CHUNK: u64 = 64 * 1024;
/// Credit a fast reader keeps granted.
const FAST_CREDIT: u64 = 256 * 1024;
/// How late a request's timeout may be reported (the driver fires timers exactly on time).
const TIMEOUT_SLACK: Duration = Duration::from_millis(1);
/// Longest one-way latency of the test network.
const MAX_LATENCY_MS: u64 = 20;
/// Openers name their tunnels `OPENER_IDS | n`; acceptors by the offer's id.
const OPENER_IDS: u64 = 1 << 63;

// ---------------------------------------------------------------------------------------------
// Inputs

#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Reply after this many ms.
    Reply(u32),
    /// Fault after this many ms.
    Fault(u32),
    /// Never answer.
    Stall,
    /// Reply after the first delay, then again after the second (the second must fail).
    Twice(u32, u32),
}

#[derive(Clone, Debug)]
enum Op {
    Wait(u32),
    Register {
        node: usize,
        capacity: Option<u32>,
    },
    Unregister(usize),
    Request {
        conn: usize,
        timeout_ms: u32,
        answer: Answer,
    },
    Broadcast(usize),
    Crash(usize),
    Open {
        conn: usize,
        timeout_ms: u32,
    },
    Send {
        end: usize,
        sizes: Vec<u64>,
    },
    Close(usize),
}

#[derive(Clone, Debug)]
struct Case {
    ids: Vec<u128>,
    /// Connections registered before the operations: (node, capacity if a member).
    setup: Vec<(usize, Option<u32>)>,
    latencies: Vec<u64>,
    /// Small tunnel windows (buffer, window) instead of the defaults.
    small: Option<(u64, u64)>,
    seed: u64,
    ops: Vec<Op>,
}

fn wait() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..50).prop_map(Op::Wait),
        3 => (50u32..2_000).prop_map(Op::Wait),
        1 => (2_000u32..14_000).prop_map(Op::Wait),
    ]
}

fn timeout_ms() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..50, 50u32..2_000, Just(2_000u32)]
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => (0u32..300).prop_map(Answer::Reply),
        2 => (0u32..300).prop_map(Answer::Fault),
        1 => (300u32..2_500).prop_map(Answer::Reply),
        1 => Just(Answer::Stall),
        2 => (0u32..300, 0u32..300).prop_map(|(a, b)| Answer::Twice(a, b)),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 1u64..200,
        3 => 200u64..70_000,
        1 => prop::sample::select(vec![CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK]),
        2 => 70_000u64..300_000,
        1 => 1_000_000u64..3_000_000,
    ]
}

fn register() -> impl Strategy<Value = Op> {
    (any::<usize>(), prop::option::weighted(0.6, 1u32..=4))
        .prop_map(|(node, capacity)| Op::Register { node, capacity })
}

/// Request-heavy operations (about one crash per case).
fn cluster_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        16 => wait(),
        8 => register(),
        4 => any::<usize>().prop_map(Op::Unregister),
        40 => (any::<usize>(), timeout_ms(), answer())
            .prop_map(|(conn, timeout_ms, answer)| Op::Request { conn, timeout_ms, answer }),
        4 => any::<usize>().prop_map(Op::Broadcast),
        1 => any::<usize>().prop_map(Op::Crash),
    ]
}

/// Tunnel-heavy operations, with some requests alongside (about one crash per case).
fn tunnel_op() -> impl Strategy<Value = Op> {
    let open_timeout = prop_oneof![1 => 1u32..50, 3 => 50u32..=2_000];
    prop_oneof![
        16 => wait(),
        6 => register(),
        3 => any::<usize>().prop_map(Op::Unregister),
        6 => (any::<usize>(), timeout_ms(), answer())
            .prop_map(|(conn, timeout_ms, answer)| Op::Request { conn, timeout_ms, answer }),
        1 => any::<usize>().prop_map(Op::Crash),
        12 => (any::<usize>(), open_timeout).prop_map(|(conn, timeout_ms)| Op::Open { conn, timeout_ms }),
        24 => (any::<usize>(), prop::collection::vec(size(), 1..4))
            .prop_map(|(end, sizes)| Op::Send { end, sizes }),
        8 => any::<usize>().prop_map(Op::Close),
    ]
}

fn case(
    nodes: std::ops::RangeInclusive<usize>,
    op: BoxedStrategy<Op>,
) -> impl Strategy<Value = Case> {
    // Windows hold at least one full chunk with its per-chunk cost (64 bytes).
    let small =
        prop::option::of((1u64..=4, 1u64..=4).prop_map(|(b, w)| (b * CHUNK, w * CHUNK + 64)));
    (
        prop::collection::btree_set(any::<u128>(), nodes),
        prop::collection::vec(
            (any::<usize>(), prop::option::weighted(0.6, 1u32..=4)),
            2..8,
        ),
        prop::collection::vec(1u64..=MAX_LATENCY_MS, 36),
        small,
        any::<u64>(),
        prop::collection::vec(op, 1..80),
    )
        .prop_map(|(ids, setup, latencies, small, seed, ops)| Case {
            ids: ids.into_iter().collect(),
            setup,
            latencies,
            small,
            seed,
            ops,
        })
}

// ---------------------------------------------------------------------------------------------
// Model

#[derive(Clone, Debug)]
struct ConnRec {
    node: usize,
    member: bool,
    registered: bool,
}

#[derive(Clone, Debug)]
struct ReqRec {
    conn: u64,
    timeout_ms: u32,
    deadline: Time,
    answer: Answer,
    /// A member answered it successfully: with a fault (true) or a reply (false).
    answered: Option<bool>,
    done: bool,
    /// Issued on a healthy ring (no crash or departure yet, a member registered for a second)
    /// with a long timeout and a prompt answer: it must not time out.
    must_succeed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Opening,
    Offered,
    Open,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Fast,
    Slow { bytes: u64, every_ms: u64 },
    Never,
}

type EndKey = (usize, u64);

#[derive(Clone, Debug)]
struct End {
    node: usize,
    conn: u64,
    opener: bool,
    st: St,
    peer: Option<EndKey>,
    opened_at: Time,
    /// Sizes of the messages the application queued for sending.
    msgs: Vec<u64>,
    /// Submission progress: message index and offset in it.
    next_msg: usize,
    next_off: u64,
    /// Credit left and credit granted in all.
    credit: u64,
    credit_total: u64,
    /// The application wants to close once everything is submitted; it called close.
    want_close: bool,
    app_closed: bool,
    read: Read,
    /// Credit granted to the node, bytes received.
    allowed: u64,
    received: u64,
    /// Reassembly: messages completed, offset in and size of the one in progress (0: none).
    in_msg: usize,
    in_off: u64,
    in_size: u64,
    reason: Option<String>,
    closed_at: Option<Time>,
    /// Its node crashed or its connection was unregistered: it hears nothing more.
    gone: bool,
}

impl End {
    fn new(node: usize, conn: u64, opener: bool, st: St, read: Read, now: Time) -> Self {
        Self {
            node,
            conn,
            opener,
            st,
            peer: None,
            opened_at: now,
            msgs: Vec::new(),
            next_msg: 0,
            next_off: 0,
            credit: 0,
            credit_total: 0,
            want_close: false,
            app_closed: false,
            read,
            allowed: 0,
            received: 0,
            in_msg: 0,
            in_off: 0,
            in_size: 0,
            reason: None,
            closed_at: None,
            gone: false,
        }
    }
}

#[derive(Clone, Debug)]
enum Action {
    Answer {
        node: usize,
        conn: u64,
        delivery: u64,
        tag: u64,
        fault: bool,
        second: bool,
        member_deadline: Time,
    },
    Accept(EndKey),
    Grant {
        key: EndKey,
        bytes: u64,
        every_ms: Option<u64>,
    },
    Pump(EndKey),
}

struct Packet {
    to: usize,
    from: usize,
    msg: Message,
}

/// What the runs covered (printed with `PETAL_MODEL_STATS=1`).
#[derive(Clone, Copy)]
enum Cov {
    Cases,
    Replies,
    Faults,
    Timeouts,
    SecondAnswers,
    Crashes,
    Unregisters,
    TunnelsOpened,
    SameNodeTunnels,
    OpenFailed,
    MessagesDelivered,
    BytesDelivered,
    GracefulPeerCloses,
    FailedCloses,
    CrashCloses,
    Stalls,
    HealthyRequests,
    Len,
}

thread_local! {
    static COVERAGE: [Cell<u64>; Cov::Len as usize] = Default::default();
}

fn cov(c: Cov, n: u64) {
    COVERAGE.with(|v| v[c as usize].set(v[c as usize].get() + n));
}

fn print_coverage(test: &str) {
    if std::env::var_os("PETAL_MODEL_STATS").is_none() {
        return;
    }
    let names = [
        "cases",
        "replies",
        "faults",
        "timeouts",
        "second answers refused",
        "crashes",
        "unregisters",
        "tunnels opened",
        "same-node tunnels",
        "opens failed",
        "tunnel messages delivered",
        "tunnel bytes delivered",
        "graceful closes seen by the far end",
        "tunnels failed",
        "tunnels closed by a crash",
        "writes blocked by a non-reading receiver",
        "requests on a healthy ring (all answered)",
    ];
    let mut line = format!("{test}:");
    for (i, name) in names.iter().enumerate() {
        line += &format!(" {name}={}", COVERAGE.with(|v| v[i].take()));
    }
    eprintln!("{line}");
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The seed of message `idx` sent on tunnel end `key`.
fn msg_seed(key: EndKey, idx: usize) -> u64 {
    mix(mix(mix(key.0 as u64) ^ key.1) ^ idx as u64)
}

/// Bytes `off..off + len` of the message with seed `seed`.
fn pattern(seed: u64, off: u64, len: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len as usize);
    let (mut p, end) = (off, off + len);
    while p < end {
        let w = mix(seed ^ (p / 8)).to_le_bytes();
        let start = (p % 8) as usize;
        let take = (8 - start as u64).min(end - p) as usize;
        v.extend_from_slice(&w[start..start + take]);
        p += take as u64;
    }
    v
}

fn reply_bytes(tag: u64) -> Bytes {
    Bytes::from(format!("reply to request {tag}"))
}

fn fault_text(tag: u64) -> String {
    format!("fault of request {tag}")
}

fn info(i: usize, id: u128) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 7000)),
    }
}

struct Sim {
    cfg: Config,
    nodes: Vec<Node>,
    infos: Vec<NodeInfo>,
    by_id: BTreeMap<NodeId, usize>,
    crashed: Vec<Option<Time>>,
    latency: Vec<Vec<Duration>>,
    now: Time,
    seq: u64,
    net: BTreeMap<(Time, u64), Packet>,
    actions: BTreeMap<(Time, u64), Action>,
    rng: ChaCha8Rng,
    conns: Vec<ConnRec>,
    /// (node, request id) -> tag (index into `reqs`).
    req_ids: BTreeMap<(usize, u64), u64>,
    reqs: Vec<ReqRec>,
    ends: BTreeMap<EndKey, End>,
    /// The acceptor's end whose accept is being handled (to pair the opener's end with it).
    accept_ctx: Option<EndKey>,
    /// Final phase: readers read fast, no new data.
    draining: bool,
    /// Scenario tests: every reader reads so, every offer is accepted after so many ms.
    forced_read: Option<Read>,
    forced_accept_ms: Option<u64>,
    /// A node crashed or a connection left (requests may then time out for that reason).
    disrupted: bool,
    /// When each connection registered.
    registered_at: Vec<Time>,
}

impl Sim {
    fn new(case: &Case) -> Self {
        let mut cfg = Config::default();
        if let Some((buffer, window)) = case.small {
            cfg.tunnel_buffer = buffer;
            cfg.tunnel_window = window;
        }
        let n = case.ids.len();
        let infos: Vec<NodeInfo> = case
            .ids
            .iter()
            .enumerate()
            .map(|(i, &id)| info(i, id))
            .collect();
        let nodes = infos
            .iter()
            .enumerate()
            .map(|(i, &me)| Node::new(me, cfg.clone(), case.seed ^ mix(i as u64)).unwrap())
            .collect();
        // One fixed latency per unordered pair, drawn from the input.
        let pair = |i: usize, j: usize| {
            let (a, b) = (i.min(j), i.max(j));
            let k = a * n + b;
            Duration::from_millis(case.latencies[k % case.latencies.len()])
        };
        let latency = (0..n)
            .map(|i| (0..n).map(|j| pair(i, j)).collect())
            .collect();
        Self {
            by_id: infos.iter().enumerate().map(|(i, x)| (x.id, i)).collect(),
            cfg,
            nodes,
            infos,
            crashed: vec![None; n],
            latency,
            now: Time::ZERO,
            seq: 0,
            net: BTreeMap::new(),
            actions: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(case.seed),
            conns: Vec::new(),
            req_ids: BTreeMap::new(),
            reqs: Vec::new(),
            ends: BTreeMap::new(),
            accept_ctx: None,
            draining: false,
            forced_read: None,
            forced_accept_ms: None,
            disrupted: false,
            registered_at: Vec::new(),
        }
    }

    fn alive(&self, i: usize) -> bool {
        self.crashed[i].is_none()
    }

    fn conn_live(&self, conn: u64) -> bool {
        let c = &self.conns[conn as usize];
        c.registered && self.alive(c.node)
    }

    fn schedule(&mut self, at: Time, a: Action) {
        self.seq += 1;
        self.actions.insert((at, self.seq), a);
    }

    /// Brings the ring up: node 0 founds it, the others join through it one by one.
    fn bring_up(&mut self) {
        self.nodes[0].start_first(self.now);
        self.drain(0);
        for i in 1..self.nodes.len() {
            let boot = self.infos[0];
            self.nodes[i].join(self.now, boot);
            self.drain(i);
            let limit = self.now + Duration::from_secs(60);
            while !self.nodes[i].is_ready() {
                assert!(self.now < limit, "node {i} did not join");
                let t = self.now + Duration::from_millis(100);
                self.run_until(t);
            }
        }
        let t = self.now + Duration::from_secs(2);
        self.run_until(t);
        assert!(self.nodes.iter().all(Node::is_ready), "a node is not ready");
    }

    /// Runs the network, timers and scheduled actions up to `end`.
    fn run_until(&mut self, end: Time) {
        let mut same_time_steps = 0u32;
        loop {
            let mut t_timer = None;
            for i in 0..self.nodes.len() {
                if let Some(x) = self.nodes[i].poll_timeout().filter(|_| self.alive(i)) {
                    t_timer = Some(t_timer.map_or(x, |t: Time| t.min(x)));
                }
            }
            let t_net = self.net.keys().next().map(|k| k.0);
            let t_act = self.actions.keys().next().map(|k| k.0);
            let Some(t) = [t_timer, t_net, t_act].into_iter().flatten().min() else {
                break;
            };
            if t > end {
                break;
            }
            let t = t.max(self.now);
            if t == self.now {
                same_time_steps += 1;
                assert!(same_time_steps < 1_000_000, "time does not advance");
            } else {
                same_time_steps = 0;
            }
            self.now = t;
            if t_timer.is_some_and(|x| x <= t) {
                for i in 0..self.nodes.len() {
                    if self.alive(i) && self.nodes[i].poll_timeout().is_some_and(|x| x <= t) {
                        self.nodes[i].handle_timeout(t);
                        self.drain(i);
                    }
                }
            } else if t_net.is_some_and(|x| x <= t) {
                let (_, p) = self.net.pop_first().expect("present");
                if self.alive(p.to) {
                    if let Message::TunnelAccept { peer_tunnel, .. } = &p.msg {
                        self.accept_ctx = Some((p.from, *peer_tunnel));
                    }
                    let from = self.infos[p.from];
                    self.nodes[p.to].handle_message(t, from, p.msg);
                    self.drain(p.to);
                    self.accept_ctx = None;
                }
            } else {
                let (_, a) = self.actions.pop_first().expect("present");
                self.act(a);
            }
        }
        self.now = self.now.max(end);
        self.check_deadlines();
    }

    /// Drains node `i`'s outputs into the network and the model.
    fn drain(&mut self, i: usize) {
        self.nodes[i].check_invariants();
        while let Some(tx) = self.nodes[i].poll_transmit() {
            let j = *self
                .by_id
                .get(&tx.to.id)
                .unwrap_or_else(|| panic!("transmit to unknown node {:?}", tx.to.id));
            assert_eq!(
                tx.to.addr, self.infos[j].addr,
                "transmit to a wrong address"
            );
            assert_ne!(i, j, "node {i} sent a message to itself");
            // An acceptor's end learns its far end when the opener hears of the accept
            // (`TunnelOpened` names the opener's end by its connection's id; the accept on the
            // wire names it by the node's own id, which the model does not know).
            self.seq += 1;
            let at = self.now + self.latency[i][j];
            self.net.insert(
                (at, self.seq),
                Packet {
                    to: j,
                    from: i,
                    msg: tx.msg,
                },
            );
        }
        while let Some(ev) = self.nodes[i].poll_event() {
            self.on_event(i, ev);
        }
    }

    fn pick_read(&mut self) -> Read {
        if self.draining {
            return Read::Fast;
        }
        if let Some(read) = self.forced_read {
            return read;
        }
        match self.rng.random_range(0..10) {
            0..5 => Read::Fast,
            5..8 => Read::Slow {
                bytes: self.rng.random_range(1..=CHUNK * 2),
                every_ms: self.rng.random_range(10..=3_000),
            },
            _ => Read::Never,
        }
    }

    /// The first grants of a reader once its tunnel is open.
    fn start_reading(&mut self, key: EndKey) {
        let read = self.ends[&key].read;
        match read {
            Read::Fast => self.schedule(
                self.now,
                Action::Grant {
                    key,
                    bytes: FAST_CREDIT,
                    every_ms: None,
                },
            ),
            Read::Slow { bytes, every_ms } => self.schedule(
                self.now + Duration::from_millis(every_ms),
                Action::Grant {
                    key,
                    bytes,
                    every_ms: Some(every_ms),
                },
            ),
            Read::Never => {}
        }
    }

    fn on_event(&mut self, i: usize, ev: Event) {
        if let Some(conn) = ev.conn() {
            let c = self
                .conns
                .get(conn.0 as usize)
                .unwrap_or_else(|| panic!("event for unknown {conn:?}: {ev:?}"));
            assert_eq!(c.node, i, "event for {conn:?} on the wrong node: {ev:?}");
            assert!(
                c.registered,
                "event for unregistered {conn:?}: {ev:?} at {:?}",
                self.now
            );
        }
        match ev {
            Event::Request {
                conn,
                delivery,
                payload,
                timeout_ms,
                ..
            } => {
                assert!(
                    self.conns[conn.0 as usize].member,
                    "request for a non-member"
                );
                let tag = u64::from_le_bytes(payload[..8].try_into().expect("tagged payload"));
                let r = &self.reqs[tag as usize];
                assert_eq!(payload.len(), 8 + (tag % 7) as usize, "payload changed");
                assert_eq!(timeout_ms, r.timeout_ms, "timeout changed");
                let member_deadline = self.now + Duration::from_millis(u64::from(timeout_ms));
                let base = Action::Answer {
                    node: i,
                    conn: conn.0,
                    delivery,
                    tag,
                    fault: false,
                    second: false,
                    member_deadline,
                };
                let with = |fault, second| match base.clone() {
                    Action::Answer {
                        node,
                        conn,
                        delivery,
                        tag,
                        member_deadline,
                        ..
                    } => Action::Answer {
                        node,
                        conn,
                        delivery,
                        tag,
                        fault,
                        second,
                        member_deadline,
                    },
                    _ => unreachable!(),
                };
                let ms = |x: u32| Duration::from_millis(u64::from(x));
                match r.answer {
                    Answer::Reply(d) => self.schedule(self.now + ms(d), with(false, false)),
                    Answer::Fault(d) => self.schedule(self.now + ms(d), with(true, false)),
                    Answer::Stall => {}
                    Answer::Twice(a, b) => {
                        self.schedule(self.now + ms(a), with(false, false));
                        self.schedule(self.now + ms(a) + ms(b), with(false, true));
                    }
                }
            }
            Event::RequestDone {
                conn,
                request,
                outcome,
            } => {
                let tag = *self
                    .req_ids
                    .get(&(i, request))
                    .unwrap_or_else(|| panic!("outcome of unknown request {request}"));
                let now = self.now;
                let r = &mut self.reqs[tag as usize];
                assert_eq!(r.conn, conn.0, "outcome for another connection");
                assert!(!r.done, "second outcome for request {tag}: {outcome:?}");
                r.done = true;
                if r.must_succeed && !self.disrupted {
                    cov(Cov::HealthyRequests, 1);
                }
                match outcome {
                    Outcome::Reply(b) => {
                        assert_eq!(b, reply_bytes(tag), "reply of another request");
                        assert_eq!(r.answered, Some(false), "reply nobody sent: {tag}");
                        assert!(now <= r.deadline, "reply after the deadline");
                        cov(Cov::Replies, 1);
                    }
                    Outcome::Fault(f) => {
                        assert_eq!(f, fault_text(tag), "fault of another request");
                        assert_eq!(r.answered, Some(true), "fault nobody sent: {tag}");
                        assert!(now <= r.deadline, "fault after the deadline");
                        cov(Cov::Faults, 1);
                    }
                    Outcome::Timeout => {
                        assert!(
                            !r.must_succeed || self.disrupted,
                            "request {tag} timed out on a healthy ring"
                        );
                        assert!(now >= r.deadline, "timeout before the deadline");
                        assert!(now <= r.deadline + TIMEOUT_SLACK, "timeout too late");
                        cov(Cov::Timeouts, 1);
                    }
                }
            }
            Event::Broadcast { conn, .. } => {
                assert!(
                    self.conns[conn.0 as usize].member,
                    "broadcast to a non-member"
                );
            }
            Event::Published { .. } => panic!("publish without subscriptions"),
            Event::TunnelIncoming { conn, offer } => {
                assert!(self.conns[conn.0 as usize].member, "tunnel to a non-member");
                // The acceptor names its tunnel by the offer's id.
                let key = (i, offer);
                assert!(!self.ends.contains_key(&key), "tunnel id reused");
                let read = self.pick_read();
                self.ends
                    .insert(key, End::new(i, conn.0, false, St::Offered, read, self.now));
                let accept = if self.draining {
                    Some(0)
                } else if self.forced_accept_ms.is_some() {
                    self.forced_accept_ms
                } else {
                    match self.rng.random_range(0..10) {
                        0..6 => Some(self.rng.random_range(0..50)),
                        6..9 => Some(self.rng.random_range(50..2_500)),
                        _ => None,
                    }
                };
                if let Some(ms) = accept {
                    self.schedule(self.now + Duration::from_millis(ms), Action::Accept(key));
                }
            }
            Event::TunnelOpened { conn, tunnel } => {
                let key = (i, tunnel);
                let ctx = self.accept_ctx.expect("tunnel opened outside an accept");
                let now = self.now;
                let e = self.ends.get_mut(&key).expect("opened an unknown tunnel");
                assert!(e.opener && e.conn == conn.0, "opened the wrong tunnel");
                assert_eq!(e.st, St::Opening, "opened twice");
                e.st = St::Open;
                e.opened_at = now;
                e.peer = Some(ctx);
                let acceptor = self.ends.get_mut(&ctx).expect("accepted by an unknown end");
                assert!(acceptor.peer.is_none() || acceptor.peer == Some(key));
                acceptor.peer = Some(key);
                cov(Cov::TunnelsOpened, 1);
                if ctx.0 == i {
                    cov(Cov::SameNodeTunnels, 1);
                }
                self.start_reading(key);
            }
            Event::TunnelOpenFailed { conn, tunnel } => {
                let e = self
                    .ends
                    .get_mut(&(i, tunnel))
                    .expect("unknown tunnel failed");
                assert!(e.opener && e.conn == conn.0, "failed the wrong tunnel");
                assert_eq!(e.st, St::Opening, "open failed after the open");
                e.st = St::Closed;
                e.reason = Some("open failed".into());
                cov(Cov::OpenFailed, 1);
            }
            Event::TunnelCredit {
                conn,
                tunnel,
                bytes,
            } => {
                let key = (i, tunnel);
                let bound = self.cfg.tunnel_buffer + self.cfg.tunnel_window;
                let e = self.ends.get(&key).expect("credit on an unknown tunnel");
                assert_eq!(e.conn, conn.0);
                assert_eq!(e.st, St::Open, "credit on a tunnel that is not open");
                // Credit is bounded by what the far application read, until it closes: then
                // its node drops what still arrives and returns the window at once.
                let far = e.peer.and_then(|p| self.ends.get(&p));
                let total = e.credit_total + bytes;
                if let Some(far_read) =
                    far.map_or(Some(0), |p| (!p.app_closed).then_some(p.received))
                {
                    assert!(
                        total <= bound + far_read,
                        "credit {total} beyond buffer + window {bound} + read {far_read}"
                    );
                }
                let e = self.ends.get_mut(&key).expect("present");
                e.credit += bytes;
                e.credit_total = total;
                self.schedule(self.now, Action::Pump(key));
            }
            Event::TunnelData {
                conn,
                tunnel,
                size,
                payload,
            } => self.on_data(i, conn, tunnel, size, payload),
            Event::TunnelClosed {
                conn,
                tunnel,
                reason,
            } => self.on_closed(i, conn, tunnel, reason),
            Event::TunnelOfferClosed { conn, offer } => {
                let e = self.ends.get(&(i, offer)).expect("unknown offer closed");
                assert_eq!(e.st, St::Offered, "offer closed after its accept");
                self.on_closed(i, conn, offer, "offer closed".into());
            }
            _ => {}
        }
    }

    fn on_data(&mut self, i: usize, conn: ConnId, tunnel: u64, size: u64, payload: Bytes) {
        let key = (i, tunnel);
        let e = self.ends.get(&key).expect("data on an unknown tunnel");
        assert_eq!(e.conn, conn.0);
        assert_eq!(e.st, St::Open, "data on a tunnel that is not open");
        assert!(!e.app_closed, "data after the application closed");
        let peer = e.peer.expect("data before the far end is known");
        let sender = self.ends.get(&peer).expect("known far end");
        assert_eq!(sender.peer, Some(key), "data from an end paired elsewhere");
        let len = payload.len() as u64;
        assert!((1..=CHUNK).contains(&len), "chunk of {len} bytes");
        let (msg, off) = if e.in_size == 0 {
            assert_ne!(size, 0, "continuation chunk without a message");
            assert!(
                e.in_msg < sender.msgs.len(),
                "message {} never sent",
                e.in_msg
            );
            assert_eq!(size, sender.msgs[e.in_msg], "message size changed");
            let credit = e.allowed as i64 - e.received as i64;
            assert!(
                len as i64 <= credit,
                "first chunk of {len} beyond credit {credit}"
            );
            (e.in_msg, 0)
        } else {
            assert_eq!(size, 0, "new message inside message {}", e.in_msg);
            (e.in_msg, e.in_off)
        };
        let total = sender.msgs[msg];
        assert!(off + len <= total, "message {msg} overran its size");
        assert!(
            payload[..] == pattern(msg_seed(peer, msg), off, len)[..],
            "corrupt chunk at {off} of message {msg}"
        );
        let e = self.ends.get_mut(&key).expect("present");
        e.received += len;
        e.in_off = off + len;
        e.in_size = total;
        if e.in_off == total {
            e.in_msg += 1;
            e.in_off = 0;
            e.in_size = 0;
            cov(Cov::MessagesDelivered, 1);
        }
        cov(Cov::BytesDelivered, len);
        if e.read == Read::Fast {
            self.schedule(
                self.now,
                Action::Grant {
                    key,
                    bytes: len,
                    every_ms: None,
                },
            );
        }
    }

    fn on_closed(&mut self, i: usize, conn: ConnId, tunnel: u64, reason: String) {
        let key = (i, tunnel);
        let now = self.now;
        let e = self.ends.get(&key).expect("unknown tunnel closed").clone();
        assert_eq!(e.conn, conn.0);
        assert_ne!(e.st, St::Closed, "closed twice");
        let peer = e
            .peer
            .and_then(|p| self.ends.get(&p).map(|x| (p, x.clone())));
        if reason.is_empty() {
            if !e.app_closed {
                // The far end closed gracefully: everything it sent came first.
                assert_eq!(
                    e.st,
                    St::Open,
                    "graceful close of a tunnel that never opened"
                );
                let (_, p) = peer.expect("graceful close from an unknown end");
                assert!(
                    p.app_closed,
                    "graceful close the far application never asked for"
                );
                assert!(
                    e.in_size == 0 && e.in_msg == p.msgs.len(),
                    "graceful close after {} of {} messages (+{} bytes)",
                    e.in_msg,
                    p.msgs.len(),
                    e.in_off
                );
                cov(Cov::GracefulPeerCloses, 1);
            }
        } else {
            cov(Cov::FailedCloses, 1);
            // An accepted end whose opener had already given up (same node) has no far end:
            // it never opened with it, a cause in itself.
            if let (St::Open, Some((pk, p))) = (e.st, peer) {
                let far_crashed = self.crashed[pk.0];
                let cause = far_crashed.is_some()
                    || !self.conns[p.conn as usize].registered
                    || p.reason.as_ref().is_some_and(|r| !r.is_empty())
                    || p.peer != Some(key);
                assert!(
                    cause,
                    "tunnel {key:?} failed without cause ({reason}); far end {p:?}"
                );
                if let Some(c) = far_crashed {
                    cov(Cov::CrashCloses, 1);
                    if let Some(bound) = self.crash_bound(&e, c) {
                        assert!(now <= bound, "crash of the far node noticed too late");
                    }
                }
            }
        }
        let e = self.ends.get_mut(&key).expect("present");
        e.st = St::Closed;
        e.reason = Some(reason);
        e.closed_at = Some(now);
    }

    /// When an open end must have closed after its far node crashed at `crash` (None: no
    /// bound, its far end had closed gracefully before, so the end drains at its reader's pace).
    fn crash_bound(&self, e: &End, crash: Time) -> Option<Time> {
        let p = &self.ends[&e.peer?];
        if p.app_closed {
            return None;
        }
        let cfg = &self.cfg;
        let heard = (crash + Duration::from_millis(MAX_LATENCY_MS)).max(e.opened_at);
        Some(
            heard
                + cfg.tunnel_idle_timeout
                + cfg.tunnel_keepalive_interval
                + cfg.timer_granularity
                + Duration::from_millis(1),
        )
    }

    /// Deadlines that must have been met by now.
    fn check_deadlines(&self) {
        for (tag, r) in self.reqs.iter().enumerate() {
            if !r.done && self.conn_live(r.conn) {
                assert!(
                    self.now <= r.deadline + TIMEOUT_SLACK,
                    "request {tag} without outcome past its deadline"
                );
            }
        }
        for (key, e) in &self.ends {
            if e.gone || e.st != St::Open {
                continue;
            }
            if let Some(c) = e.peer.and_then(|p| self.crashed[p.0]) {
                if let Some(bound) = self.crash_bound(e, c) {
                    assert!(
                        self.now <= bound,
                        "tunnel {key:?} still open long after its far node crashed"
                    );
                }
            }
        }
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Answer {
                node,
                conn,
                delivery,
                tag,
                fault,
                second,
                member_deadline,
            } => {
                if !self.conn_live(conn) {
                    return;
                }
                let result = if fault {
                    ReplyResult::Fault(fault_text(tag))
                } else {
                    ReplyResult::Ok(reply_bytes(tag))
                };
                let r = self.nodes[node].reply(self.now, ConnId(conn), delivery, result);
                if second {
                    assert_eq!(r, Err(AppError::UnknownId), "second answer accepted");
                    cov(Cov::SecondAnswers, 1);
                } else if self.now < member_deadline {
                    assert_eq!(r, Ok(()), "answer in time refused");
                } else if self.now > member_deadline {
                    assert_eq!(r, Err(AppError::UnknownId), "expired answer accepted");
                }
                if r.is_ok() {
                    self.reqs[tag as usize].answered = Some(fault);
                }
                self.drain(node);
            }
            Action::Accept(key) => {
                if self.ends[&key].gone || self.ends[&key].st != St::Offered {
                    return;
                }
                let conn = ConnId(self.ends[&key].conn);
                let r = self.nodes[key.0].tunnel_accept(self.now, conn, key.1, key.1);
                assert_eq!(r, Ok(()), "accept of an offered tunnel refused");
                let e = self.ends.get_mut(&key).expect("present");
                e.st = St::Open;
                e.opened_at = self.now;
                self.accept_ctx = Some(key);
                self.drain(key.0);
                self.accept_ctx = None;
                self.start_reading(key);
            }
            Action::Grant {
                key,
                bytes,
                every_ms,
            } => {
                let e = &self.ends[&key];
                if e.gone || e.st != St::Open {
                    return;
                }
                let conn = ConnId(self.ends[&key].conn);
                let r = self.nodes[key.0].tunnel_allow(self.now, conn, key.1, bytes);
                assert_eq!(r, Ok(()), "credit to an open tunnel refused");
                self.ends.get_mut(&key).expect("present").allowed += bytes;
                self.drain(key.0);
                if let Some(ms) = every_ms {
                    if self.ends[&key].read != Read::Fast {
                        self.schedule(
                            self.now + Duration::from_millis(ms),
                            Action::Grant {
                                key,
                                bytes,
                                every_ms,
                            },
                        );
                    }
                }
            }
            Action::Pump(key) => self.pump(key),
        }
    }

    /// Submits queued messages within the node's credit; closes when asked and done.
    fn pump(&mut self, key: EndKey) {
        loop {
            let e = &self.ends[&key];
            if e.gone || e.st != St::Open || e.app_closed {
                return;
            }
            if e.next_msg == e.msgs.len() {
                if e.want_close {
                    self.close(key);
                }
                return;
            }
            let size = e.msgs[e.next_msg];
            let len = CHUNK.min(size - e.next_off);
            if e.credit < len {
                let never = e.peer.and_then(|p| self.ends.get(&p)).map(|p| p.read);
                if never == Some(Read::Never) && e.credit_total > 0 {
                    cov(Cov::Stalls, 1);
                }
                return;
            }
            let first = e.next_off == 0;
            let data = pattern(msg_seed(key, e.next_msg), e.next_off, len);
            let r = self.nodes[key.0].tunnel_send(
                self.now,
                ConnId(e.conn),
                key.1,
                if first { size } else { 0 },
                Bytes::from(data),
            );
            assert_eq!(r, Ok(()), "chunk within credit refused");
            let e = self.ends.get_mut(&key).expect("present");
            e.credit -= len;
            e.next_off += len;
            if e.next_off == size {
                e.next_msg += 1;
                e.next_off = 0;
            }
            self.drain(key.0);
        }
    }

    fn close(&mut self, key: EndKey) {
        let e = &self.ends[&key];
        let conn = ConnId(e.conn);
        let r = if e.st == St::Offered {
            self.nodes[key.0].tunnel_refuse(self.now, conn, key.1)
        } else {
            self.nodes[key.0].tunnel_close(self.now, conn, key.1)
        };
        assert_eq!(r, Ok(()), "close of a live tunnel refused");
        self.ends.get_mut(&key).expect("present").app_closed = true;
        self.drain(key.0);
    }

    /// A live, registered connection picked by `x`.
    fn pick_conn(&self, x: usize) -> Option<u64> {
        let live: Vec<u64> = (0..self.conns.len() as u64)
            .filter(|&c| self.conn_live(c))
            .collect();
        (!live.is_empty()).then(|| live[x % live.len()])
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        match *op {
            Op::Wait(ms) => {
                self.run_until(now + Duration::from_millis(u64::from(ms)));
            }
            Op::Register { node, capacity } => {
                let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.alive(i)).collect();
                if live.is_empty() {
                    return;
                }
                let i = live[node % live.len()];
                let conn = self.conns.len() as u64;
                let r = self.nodes[i].register(
                    now,
                    ConnId(conn),
                    capacity.map(|_| CLUSTER),
                    capacity.unwrap_or(0),
                );
                assert_eq!(r, Ok(()), "register refused");
                self.registered_at.push(now);
                self.conns.push(ConnRec {
                    node: i,
                    member: capacity.is_some(),
                    registered: true,
                });
                self.drain(i);
            }
            Op::Unregister(x) => {
                let Some(conn) = self.pick_conn(x) else {
                    return;
                };
                let i = self.conns[conn as usize].node;
                self.conns[conn as usize].registered = false;
                self.disrupted = true;
                for e in self.ends.values_mut().filter(|e| e.conn == conn) {
                    e.gone = true;
                }
                let r = self.nodes[i].unregister(now, ConnId(conn));
                assert_eq!(r, Ok(()), "unregister refused");
                cov(Cov::Unregisters, 1);
                self.drain(i);
            }
            Op::Request {
                conn,
                timeout_ms,
                answer,
            } => {
                let Some(conn) = self.pick_conn(conn) else {
                    return;
                };
                let i = self.conns[conn as usize].node;
                let tag = self.reqs.len() as u64;
                let mut payload = tag.to_le_bytes().to_vec();
                payload.resize(8 + (tag % 7) as usize, 0xa5);
                // The connection's own id for it: the tag (unique over the run).
                let id = tag;
                self.nodes[i]
                    .request(now, ConnId(conn), id, CLUSTER, payload.into(), timeout_ms)
                    .expect("request refused");
                assert!(
                    self.req_ids.insert((i, id), tag).is_none(),
                    "request id reused"
                );
                self.reqs.push(ReqRec {
                    conn,
                    timeout_ms,
                    deadline: now + Duration::from_millis(u64::from(timeout_ms)),
                    answer,
                    answered: None,
                    done: false,
                    must_succeed: !self.disrupted
                        && timeout_ms >= 1_000
                        && matches!(answer, Answer::Reply(d) | Answer::Fault(d) | Answer::Twice(d, _) if d <= 300)
                        && self.conns.iter().zip(&self.registered_at).any(|(c, &t)| {
                            c.member && now.saturating_since(t) >= Duration::from_secs(1)
                        }),
                });
                self.drain(i);
            }
            Op::Broadcast(conn) => {
                let Some(conn) = self.pick_conn(conn) else {
                    return;
                };
                let i = self.conns[conn as usize].node;
                self.nodes[i]
                    .broadcast(now, CLUSTER, Bytes::from_static(b"hello"))
                    .expect("broadcast refused");
                self.drain(i);
            }
            Op::Crash(node) => {
                let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.alive(i)).collect();
                if live.is_empty() {
                    return;
                }
                let i = live[node % live.len()];
                self.crashed[i] = Some(now);
                self.disrupted = true;
                for e in self.ends.values_mut().filter(|e| e.node == i) {
                    e.gone = true;
                }
                cov(Cov::Crashes, 1);
            }
            Op::Open { conn, timeout_ms } => {
                let Some(conn) = self.pick_conn(conn) else {
                    return;
                };
                let i = self.conns[conn as usize].node;
                // The opener's own id: apart from the offers' ids (the core draws them below
                // 2^63), unique over the run.
                let id = OPENER_IDS | self.ends.len() as u64;
                self.nodes[i]
                    .tunnel_open(now, ConnId(conn), id, CLUSTER, timeout_ms)
                    .expect("tunnel open refused");
                let read = self.pick_read();
                assert!(
                    self.ends
                        .insert((i, id), End::new(i, conn, true, St::Opening, read, now))
                        .is_none(),
                    "tunnel id reused"
                );
                self.drain(i);
            }
            Op::Send { end, ref sizes } => {
                let open: Vec<EndKey> = self
                    .ends
                    .iter()
                    .filter(|(_, e)| !e.gone && e.st == St::Open && !e.want_close && !e.app_closed)
                    .map(|(k, _)| *k)
                    .collect();
                if open.is_empty() {
                    return;
                }
                let key = open[end % open.len()];
                self.ends
                    .get_mut(&key)
                    .expect("present")
                    .msgs
                    .extend_from_slice(sizes);
                self.pump(key);
            }
            Op::Close(end) => {
                let live: Vec<EndKey> = self
                    .ends
                    .iter()
                    .filter(|(_, e)| !e.gone && e.st != St::Closed && !e.want_close)
                    .map(|(k, _)| *k)
                    .collect();
                if live.is_empty() {
                    return;
                }
                let key = live[end % live.len()];
                if self.ends[&key].st == St::Open {
                    self.ends.get_mut(&key).expect("present").want_close = true;
                    self.pump(key);
                } else {
                    self.close(key);
                }
            }
        }
    }

    /// The end of a run: readers read everything, writers finish, openers close; then every
    /// tunnel must have delivered everything and closed, every request must be decided.
    fn finish(&mut self) {
        self.draining = true;
        let keys: Vec<EndKey> = self.ends.keys().copied().collect();
        for key in &keys {
            let e = self.ends.get_mut(key).expect("present");
            let was = e.read;
            e.read = Read::Fast;
            // Top the credit up (continuation chunks may have taken it below zero).
            let credit = e.allowed as i64 - e.received as i64;
            if !e.gone && e.st == St::Open && was != Read::Fast && credit < FAST_CREDIT as i64 {
                self.schedule(
                    self.now,
                    Action::Grant {
                        key: *key,
                        bytes: (FAST_CREDIT as i64 - credit) as u64,
                        every_ms: None,
                    },
                );
            }
        }
        // Longer than the detection of a crashed far node, so that only live pairs stay open.
        let t = self.now + Duration::from_secs(15);
        self.run_until(t);
        for (key, e) in &self.ends {
            if e.gone || e.st != St::Open || e.app_closed {
                continue;
            }
            let Some(p) = e.peer.and_then(|p| self.ends.get(&p)) else {
                continue;
            };
            if p.gone || p.st != St::Open || p.peer != Some(*key) {
                continue;
            }
            assert_eq!(
                p.next_msg,
                p.msgs.len(),
                "writer stuck with credit to spare"
            );
            assert!(
                e.in_size == 0 && e.in_msg == p.msgs.len(),
                "tunnel {key:?} received {} of {} messages",
                e.in_msg,
                p.msgs.len()
            );
        }
        for key in &keys {
            let e = &self.ends[key];
            if !e.gone && e.st == St::Open && e.opener && !e.want_close {
                self.ends.get_mut(key).expect("present").want_close = true;
                self.pump(*key);
            }
        }
        let t = self.now + Duration::from_secs(15);
        self.run_until(t);
        for (key, e) in &self.ends {
            if !e.gone {
                let far = e.peer.and_then(|p| self.ends.get(&p));
                assert_eq!(
                    e.st,
                    St::Closed,
                    "tunnel {key:?} never closed: {e:?}; far end: {far:?}"
                );
            }
        }
        for (tag, r) in self.reqs.iter().enumerate() {
            if self.conn_live(r.conn) {
                assert!(r.done, "request {tag} never decided");
            }
        }
    }
}

fn run(case: &Case) {
    cov(Cov::Cases, 1);
    let mut sim = Sim::new(case);
    sim.bring_up();
    for &(node, capacity) in &case.setup {
        sim.apply(&Op::Register { node, capacity });
    }
    sim.apply(&Op::Wait(100));
    for op in &case.ops {
        sim.apply(op);
    }
    sim.finish();
}

/// Runs `cases` cases (or `PROPTEST_CASES`) of `strategy`, then reports coverage if asked.
fn check(name: &str, cases: u32, strategy: impl Strategy<Value = Case>) {
    let mut config = ProptestConfig {
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&strategy, |case| {
        run(&case);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    print_coverage(name);
}

/// Requests and replies over 1 to 6 nodes with registrations, departures and crashes.
#[test]
fn cluster_requests() {
    check("cluster_requests", 128, case(1..=6, cluster_op().boxed()));
}

/// Tunnels over 1 to 6 nodes (with requests, departures and crashes alongside).
#[test]
fn tunnels() {
    check("tunnels", 128, case(1..=6, tunnel_op().boxed()));
}

/// Tunnels with both ends on one node.
#[test]
fn same_node_tunnels() {
    check("same_node_tunnels", 64, case(1..=1, tunnel_op().boxed()));
}

// ---------------------------------------------------------------------------------------------
// Scenarios: the same harness with fixed plans, for the points users rely on most.

/// A ring of `n` nodes (5 ms links) with a plain client (conn 0) on node 0 and a member of the
/// cluster (conn 1) on the last node, which accepts at once and reads as `read`.
fn scenario(n: usize, small: Option<(u64, u64)>, read: Read) -> Sim {
    let case = Case {
        ids: (1..=n as u64)
            .map(|i| u128::from(mix(i)) << 64 | u128::from(i))
            .collect(),
        setup: Vec::new(),
        latencies: vec![5; 36],
        small,
        seed: 7,
        ops: Vec::new(),
    };
    let mut sim = Sim::new(&case);
    sim.bring_up();
    sim.forced_read = Some(read);
    sim.forced_accept_ms = Some(0);
    sim.apply(&Op::Register {
        node: 0,
        capacity: None,
    });
    sim.apply(&Op::Register {
        node: n - 1,
        capacity: Some(1),
    });
    sim.apply(&Op::Wait(500));
    sim
}

/// Opens a tunnel from conn 0 and returns (opener end, acceptor end).
fn open_tunnel(sim: &mut Sim) -> (EndKey, EndKey) {
    sim.apply(&Op::Open {
        conn: 0,
        timeout_ms: 2_000,
    });
    sim.apply(&Op::Wait(200));
    let (&key, e) = sim.ends.iter().find(|(_, e)| e.opener).expect("opened");
    assert_eq!(e.st, St::Open, "tunnel not open");
    (key, e.peer.expect("paired"))
}

fn queue(sim: &mut Sim, key: EndKey, sizes: &[u64]) {
    sim.ends
        .get_mut(&key)
        .expect("present")
        .msgs
        .extend_from_slice(sizes);
    sim.pump(key);
}

/// A receiver that never reads stalls its writer at exactly `tunnel_buffer + tunnel_window`
/// bytes of credit; once it reads, everything arrives.
#[test]
fn non_reading_receiver_stalls_writer() {
    for (n, small) in [(2, None), (1, None), (3, Some((CHUNK, 2 * CHUNK + 128)))] {
        let mut sim = scenario(n, small, Read::Never);
        let (w, r) = open_tunnel(&mut sim);
        queue(&mut sim, w, &[1 << 20; 12]);
        let t = sim.now + Duration::from_secs(30);
        sim.run_until(t);
        // The window holds as many full chunks as fit with their per-chunk cost.
        let in_window = sim.cfg.tunnel_window / (CHUNK + 64) * CHUNK;
        let bound = sim.cfg.tunnel_buffer + in_window;
        assert_eq!(sim.ends[&w].credit_total, bound, "writer credit");
        assert_eq!(sim.ends[&r].received, 0);
        assert_eq!(sim.ends[&w].st, St::Open);
        assert_eq!(sim.ends[&r].st, St::Open);
        sim.finish();
        assert_eq!(sim.ends[&r].in_msg, 12);
        assert_eq!(sim.ends[&r].reason.as_deref(), Some(""));
    }
}

/// A graceful close reaches a slow reader after all the data, however long it takes to read
/// (here about a minute, well past `tunnel_idle_timeout`).
#[test]
fn graceful_close_waits_for_slow_reader() {
    for n in [2, 1] {
        let mut sim = scenario(
            n,
            None,
            Read::Slow {
                bytes: 16 * 1024,
                every_ms: 1_000,
            },
        );
        let (w, r) = open_tunnel(&mut sim);
        queue(&mut sim, w, &[100_000; 10]);
        sim.ends.get_mut(&w).expect("present").want_close = true;
        sim.pump(w);
        let t = sim.now + Duration::from_secs(120);
        sim.run_until(t);
        assert_eq!(sim.ends[&w].reason.as_deref(), Some(""));
        assert_eq!(sim.ends[&r].reason.as_deref(), Some(""), "n = {n}");
        assert_eq!(sim.ends[&r].in_msg, 10);
    }
}

/// Data that arrived before a graceful close is delivered even if the writer's node dies
/// afterwards: the close promised it.
#[test]
fn graceful_close_survives_writer_crash() {
    let mut sim = scenario(
        2,
        None,
        Read::Slow {
            bytes: 16 * 1024,
            every_ms: 1_000,
        },
    );
    let (w, r) = open_tunnel(&mut sim);
    queue(&mut sim, w, &[100_000; 5]);
    sim.ends.get_mut(&w).expect("present").want_close = true;
    sim.pump(w);
    sim.apply(&Op::Wait(1_000));
    assert_eq!(sim.ends[&w].reason.as_deref(), Some(""));
    sim.apply(&Op::Crash(0));
    let t = sim.now + Duration::from_secs(120);
    sim.run_until(t);
    assert_eq!(sim.ends[&r].reason.as_deref(), Some(""));
    assert_eq!(sim.ends[&r].in_msg, 5);
}

/// An open tunnel whose far node crashes closes with a reason, in bounded time.
#[test]
fn far_crash_closes_tunnel() {
    let mut sim = scenario(3, None, Read::Fast);
    let (w, r) = open_tunnel(&mut sim);
    queue(&mut sim, w, &[300_000; 3]);
    sim.apply(&Op::Wait(100));
    let crash = sim.now;
    sim.apply(&Op::Crash(2));
    let t = sim.now + Duration::from_secs(20);
    sim.run_until(t);
    let e = &sim.ends[&w];
    assert!(e.reason.as_ref().is_some_and(|x| !x.is_empty()));
    let bound = sim.crash_bound(e, crash).expect("bounded");
    assert!(e.closed_at.expect("closed") <= bound);
    assert!(sim.ends[&r].gone);
    sim.finish();
}

/// Both ends close while each still has data queued behind the other's window: both closes
/// complete (each end drops what still arrives, but must return its window so that the far
/// end can flush and close too).
#[test]
fn simultaneous_close_with_full_windows() {
    for n in [2, 1] {
        let mut sim = scenario(n, Some((2 * CHUNK, CHUNK + 64)), Read::Never);
        let (w, r) = open_tunnel(&mut sim);
        queue(&mut sim, w, &[3 * CHUNK]);
        queue(&mut sim, r, &[3 * CHUNK]);
        sim.apply(&Op::Wait(100));
        for key in [w, r] {
            sim.ends.get_mut(&key).expect("present").want_close = true;
            sim.pump(key);
        }
        let t = sim.now + Duration::from_secs(5);
        sim.run_until(t);
        assert_eq!(sim.ends[&w].reason.as_deref(), Some(""), "n = {n}");
        assert_eq!(sim.ends[&r].reason.as_deref(), Some(""), "n = {n}");
    }
}

/// A ring with one plain (non-member) connection on every node and no member of the cluster.
fn memberless(n: usize) -> Sim {
    let case = Case {
        ids: (1..=n as u64)
            .map(|i| u128::from(mix(i)) << 64 | u128::from(i))
            .collect(),
        setup: Vec::new(),
        latencies: vec![5; 36],
        small: None,
        seed: 11,
        ops: Vec::new(),
    };
    let mut sim = Sim::new(&case);
    sim.bring_up();
    for node in 0..n {
        sim.apply(&Op::Register {
            node,
            capacity: None,
        });
    }
    sim.apply(&Op::Wait(500));
    sim
}

/// A request sent before its cluster has any member waits at the cluster's root and is
/// answered by the first member that registers within its timeout (a fleet starting, a
/// service starting after its clients); with no member at all it times out at its own
/// timeout, exactly once. From every node, so that the requester is the root once too.
#[test]
fn a_request_waits_at_the_root_for_the_first_member() {
    let n = 4;
    let mut sim = memberless(n);
    for conn in 0..n {
        sim.apply(&Op::Request {
            conn,
            timeout_ms: 1_000,
            answer: Answer::Reply(0),
        });
    }
    sim.apply(&Op::Wait(300));
    assert!(
        sim.reqs.iter().all(|r| !r.done),
        "decided before any member"
    );
    sim.apply(&Op::Register {
        node: 2,
        capacity: Some(1),
    });
    sim.apply(&Op::Wait(200));
    for (tag, r) in sim.reqs.iter().enumerate() {
        assert!(
            r.done,
            "request {tag} not answered 200 ms after the member came"
        );
        assert_eq!(
            r.answered,
            Some(false),
            "request {tag} not answered by a reply"
        );
    }
    let parked: u64 = sim.nodes.iter().map(|x| x.stats().asks_parked).sum();
    assert_eq!(parked, n as u64, "each request parked once at the root");

    // No member ever: each times out at its own timeout (checked by `on_event`), and the
    // parked ask is dropped at the root by then.
    let mut sim = memberless(n);
    for conn in 0..n {
        sim.apply(&Op::Request {
            conn,
            timeout_ms: 700,
            answer: Answer::Reply(0),
        });
    }
    sim.apply(&Op::Wait(800));
    assert!(sim.reqs.iter().all(|r| r.done && r.answered.is_none()));
    let unplaced: u64 = sim.nodes.iter().map(|x| x.stats().asks_unplaced).sum();
    assert_eq!(
        unplaced, n as u64,
        "every parked ask dropped at its timeout"
    );
    sim.finish();
}

/// A tunnel opened before its cluster has any member waits at the root like a request, and
/// opens as soon as a member registers within its timeout.
#[test]
fn a_tunnel_open_waits_at_the_root_for_the_first_member() {
    let mut sim = memberless(4);
    sim.forced_accept_ms = Some(0);
    sim.apply(&Op::Open {
        conn: 1,
        timeout_ms: 1_000,
    });
    sim.apply(&Op::Wait(300));
    assert!(
        sim.ends.values().all(|e| e.st == St::Opening),
        "decided before any member"
    );
    sim.apply(&Op::Register {
        node: 3,
        capacity: Some(1),
    });
    sim.apply(&Op::Wait(200));
    let opener = sim.ends.values().find(|e| e.opener).expect("opened");
    assert_eq!(opener.st, St::Open, "not open 200 ms after the member came");
    assert_eq!(sim.ends.len(), 2, "one acceptor end");
    sim.finish();
}
