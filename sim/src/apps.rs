//! Simulated applications on the simulated nodes, and the oracles that judge what they saw.
//!
//! An application is one connection registered with its node: a cluster member (answering
//! requests after a service time, accepting tunnels and echoing what comes through them) or a
//! plain client; either may subscribe to topics. Workloads call [`Sim`]'s application methods
//! (`add_app`, `request`, `publish`, `broadcast`, `open_tunnel`, ...); every request, event
//! and tunnel is recorded with a global id carried in its payload, so the oracles can check
//! afterwards that each request had exactly one outcome and that a reply answered that request,
//! that stable members and subscribers got every event exactly once, and that tunnels delivered
//! every byte in order (or failed with a reason).

use std::collections::BTreeMap;

use bytes::Bytes;
use petal_core::{ConnId, Event, GroupKind, Outcome, Time};
use petal_protocol::ReplyResult;
use rand::Rng;

use crate::engine::{Ev, Sim};

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
    tunnel_ends: BTreeMap<(u32, u64), TunnelEndState>,
    /// Events for connections the oracle does not know or no longer alive, outcomes of
    /// requests never issued, tunnel events for tunnels never opened (must stay 0). Second
    /// outcomes and confirms are charged to their own request or tunnel instead.
    pub stray_events: u64,
    /// When each node crashed or left.
    pub deaths: BTreeMap<u32, Vec<Time>>,
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

impl Sim {
    /// Registers a new application on node `node` (alive and started). Returns its index.
    pub fn add_app(&mut self, node: u32, spec: AppSpec) -> Option<usize> {
        if !self.is_alive(node) {
            return None;
        }
        let now = self.now();
        self.apps.next_conn += 1;
        let conn = ConnId(self.apps.next_conn);
        let cluster = spec.cluster.clone();
        let ok = self
            .node_mut(node)
            .register(now, conn, cluster.as_deref(), spec.capacity)
            .is_ok();
        if !ok {
            return None;
        }
        let idx = self.apps.list.len();
        self.apps.list.push(App {
            node,
            conn,
            spec,
            since: now,
            until: None,
            served: 0,
            busy: 0,
            waiting: std::collections::VecDeque::new(),
            topics: BTreeMap::new(),
        });
        self.apps.by_conn.insert((node, conn), idx);
        self.after_step(node);
        Some(idx)
    }

    /// Unregisters application `app` (its connection closes).
    pub fn remove_app(&mut self, app: usize) {
        let a = &self.apps.list[app];
        if a.until.is_some() {
            return;
        }
        let (node, conn) = (a.node, a.conn);
        let now = self.now();
        self.apps.list[app].until = Some(now);
        if self.is_alive(node) {
            let _ = self.node_mut(node).unregister(now, conn);
            self.after_step(node);
        }
    }

    /// Marks every application of node `node` gone (its node crashed or left).
    pub(crate) fn apps_gone(&mut self, node: u32) {
        let now = self.now();
        self.apps.deaths.entry(node).or_default().push(now);
        for a in self.apps.list.iter_mut().filter(|a| a.node == node) {
            if a.until.is_none() {
                a.until = Some(now);
            }
        }
        self.apps.pending.retain(|&(n, _), _| n != node);
        self.apps.tunnel_ends.retain(|&(n, _), _| n != node);
    }

    /// Subscribes application `app` to `topic`.
    pub fn subscribe(&mut self, app: usize, topic: &str) -> bool {
        let (node, conn) = (self.apps.list[app].node, self.apps.list[app].conn);
        if self.apps.list[app].until.is_some() {
            return false;
        }
        let now = self.now();
        let ok = matches!(self.node_mut(node).subscribe(now, conn, topic), Ok(true));
        if ok {
            self.apps.list[app].topics.insert(topic.to_owned(), now);
        }
        self.after_step(node);
        ok
    }

    /// Unsubscribes application `app` from `topic`.
    pub fn unsubscribe(&mut self, app: usize, topic: &str) {
        let (node, conn) = (self.apps.list[app].node, self.apps.list[app].conn);
        if self.apps.list[app].until.is_some() {
            return;
        }
        let now = self.now();
        let _ = self.node_mut(node).unsubscribe(now, conn, topic);
        self.apps.list[app].topics.remove(topic);
        self.after_step(node);
    }

    /// Publishes a `size`-byte event on `topic` from node `node`. Returns its global id.
    pub fn publish(&mut self, node: u32, topic: &str, size: usize) -> Option<u64> {
        self.cast(node, GroupKind::Topic, topic, size)
    }

    /// Broadcasts a `size`-byte message to `cluster` from node `node`. Returns its global id.
    pub fn broadcast(&mut self, node: u32, cluster: &str, size: usize) -> Option<u64> {
        self.cast(node, GroupKind::Cluster, cluster, size)
    }

    fn cast(&mut self, node: u32, kind: GroupKind, name: &str, size: usize) -> Option<u64> {
        if !self.is_alive(node) {
            return None;
        }
        let now = self.now();
        let gid = self.apps.events.len() as u64;
        let payload = gid_payload(gid, size);
        let r = match kind {
            GroupKind::Topic => self.node_mut(node).publish(now, name, payload),
            GroupKind::Cluster => self.node_mut(node).broadcast(now, name, payload),
        };
        if r.is_err() {
            return None;
        }
        self.apps.events.push(EventRecord {
            kind,
            name: name.to_owned(),
            node,
            at: now,
            deliveries: BTreeMap::new(),
        });
        self.after_step(node);
        Some(gid)
    }

    /// Sends a request from application `app` to `cluster`. Returns its global id.
    pub fn request(
        &mut self,
        app: usize,
        cluster: &str,
        timeout_ms: u32,
        size: usize,
    ) -> Option<u64> {
        let (node, conn) = (self.apps.list[app].node, self.apps.list[app].conn);
        if self.apps.list[app].until.is_some() || !self.is_alive(node) {
            return None;
        }
        let now = self.now();
        let gid = self.apps.requests.len() as u64;
        self.node_mut(node)
            .request(now, conn, gid, cluster, gid_payload(gid, size), timeout_ms)
            .ok()?;
        self.apps.requests.push(RequestRecord {
            app,
            start: now,
            deadline: now + std::time::Duration::from_millis(u64::from(timeout_ms)),
            outcome: None,
            outcomes: 0,
            deliveries: 0,
            served_by: None,
            hops: None,
            wrong_reply: false,
        });
        self.apps.pending.insert((node, gid), gid as usize);
        self.after_step(node);
        Some(gid)
    }

    /// Opens a tunnel from application `app` to `cluster` that will carry `messages` messages
    /// of `size` bytes each way; the acceptor spends `read_delay_us` on each message, one
    /// after another (a slow reader). Returns its global id.
    pub fn open_tunnel(
        &mut self,
        app: usize,
        cluster: &str,
        timeout_ms: u32,
        messages: u32,
        size: usize,
        read_delay_us: u64,
    ) -> Option<usize> {
        let (node, conn) = (self.apps.list[app].node, self.apps.list[app].conn);
        if self.apps.list[app].until.is_some() || !self.is_alive(node) {
            return None;
        }
        let now = self.now();
        let gid = self.apps.tunnels.len();
        // The opener's name for its tunnel: apart from the acceptors' (offer ids, below 2^63).
        let id = OPENER_IDS | gid as u64;
        self.node_mut(node)
            .tunnel_open(now, conn, id, cluster, timeout_ms)
            .ok()?;
        self.apps.tunnels.push(TunnelRecord {
            opener: app,
            acceptor: None,
            start: now,
            end_at: None,
            messages,
            // Every chunk carries a whole header: no tail chunk shorter than it.
            size: if size % 65_536 < CHUNK_HEADER {
                size + CHUNK_HEADER
            } else {
                size
            },
            echoed: 0,
            corrupt: false,
            confirms: 0,
            acceptors: 0,
            end: TunnelEnd::Running,
            read_delay_us,
        });
        self.apps.tunnel_ends.insert(
            (node, id),
            TunnelEndState {
                record: gid,
                opener: true,
                app,
                ..TunnelEndState::default()
            },
        );
        self.after_step(node);
        Some(gid)
    }

    /// An application event from node `i`.
    pub(crate) fn on_app_event(&mut self, i: u32, ev: Event) {
        let now = self.now();
        let Some(conn) = ev.conn() else {
            return;
        };
        let Some(app) = self.apps.app_of(i, conn) else {
            self.apps.stray_events += 1;
            return;
        };
        if self.apps.list[app].until.is_some() {
            self.apps.stray_events += 1;
            return;
        }
        match ev {
            Event::Request {
                delivery,
                payload,
                hops,
                ..
            } => {
                let Some(gid) = gid_of(&payload) else {
                    // Simulated requests carry their id: this one is not ours.
                    self.apps.stray_events += 1;
                    return;
                };
                if let Some(r) = self.apps.requests.get_mut(gid as usize) {
                    r.deliveries += 1;
                    if r.served_by.is_none() {
                        r.served_by = Some(app);
                        r.hops = Some(hops);
                    }
                }
                let a = &mut self.apps.list[app];
                if a.spec.stalled {
                    // A stuck service: takes requests, never answers.
                } else if a.busy < a.spec.capacity.max(1) {
                    a.busy += 1;
                    let at = now + std::time::Duration::from_micros(a.spec.service_us);
                    self.push(at, Ev::App(AppAction::Answer { app, delivery, gid }));
                } else {
                    a.waiting.push_back((delivery, gid));
                }
            }
            Event::RequestDone {
                request, outcome, ..
            } => {
                let Some(&gid) = self.apps.pending.get(&(i, request)) else {
                    // An outcome for a request this node never issued.
                    self.apps.stray_events += 1;
                    return;
                };
                let r = &mut self.apps.requests[gid];
                r.outcomes += 1;
                let kind = match &outcome {
                    Outcome::Reply(p) => {
                        r.wrong_reply |= gid_of(p) != Some(gid as u64);
                        OutcomeKind::Reply
                    }
                    Outcome::Fault(f) => {
                        r.wrong_reply |= *f != format!("fault {gid}");
                        OutcomeKind::Fault
                    }
                    Outcome::Timeout => OutcomeKind::Timeout,
                };
                if r.outcome.is_none() {
                    r.outcome = Some((kind, now));
                }
            }
            Event::Published { payload, .. } | Event::Broadcast { payload, .. } => {
                let Some(gid) = gid_of(&payload) else {
                    // Simulated events carry their id: this one is not ours.
                    self.apps.stray_events += 1;
                    return;
                };
                if let Some(e) = self.apps.events.get_mut(gid as usize) {
                    e.deliveries.entry(app).or_insert((0, now)).0 += 1;
                }
            }
            Event::TunnelIncoming { conn, offer } => {
                // The acceptor names its tunnel by the offer's id.
                let tunnel = offer;
                let _ = self.node_mut(i).tunnel_accept(now, conn, offer, tunnel);
                // Which record it belongs to is learnt from its first chunk.
                self.apps.tunnel_ends.insert(
                    (i, tunnel),
                    TunnelEndState {
                        record: usize::MAX,
                        app,
                        ..TunnelEndState::default()
                    },
                );
                let g = 64 << 20;
                let _ = self.node_mut(i).tunnel_allow(now, conn, tunnel, g);
            }
            Event::TunnelOpened { conn, tunnel } => {
                let Some(end) = self.apps.tunnel_ends.get_mut(&(i, tunnel)) else {
                    self.apps.stray_events += 1;
                    return;
                };
                let rec = end.record;
                self.apps.tunnels[rec].confirms += 1;
                if std::mem::replace(&mut end.opened, true) {
                    // A second confirm: counted above, the data is already on its way.
                    return;
                }
                let _ = self.node_mut(i).tunnel_allow(now, conn, tunnel, 64 << 20);
                let (n, size) = (self.apps.tunnels[rec].messages, self.apps.tunnels[rec].size);
                for k in 0..n {
                    self.queue_message(i, tunnel, rec as u64, k, size);
                }
                self.pump_tunnel(i, tunnel);
            }
            Event::TunnelOpenFailed { tunnel, .. } => {
                if let Some(end) = self.apps.tunnel_ends.remove(&(i, tunnel)) {
                    let t = &mut self.apps.tunnels[end.record];
                    t.end = TunnelEnd::OpenFailed;
                    t.end_at = Some(now);
                }
            }
            Event::TunnelCredit { tunnel, bytes, .. } => {
                if let Some(end) = self.apps.tunnel_ends.get_mut(&(i, tunnel)) {
                    end.credit += bytes;
                }
                self.pump_tunnel(i, tunnel);
            }
            Event::TunnelData {
                tunnel,
                size,
                payload,
                ..
            } => {
                let delay = self
                    .apps
                    .tunnel_ends
                    .get(&(i, tunnel))
                    .filter(|e| !e.opener)
                    .and_then(|_| {
                        let rec = gid_of(&payload)? as usize;
                        self.apps.tunnels.get(rec).map(|t| t.read_delay_us)
                    })
                    .unwrap_or(0);
                if delay == 0 {
                    self.take_chunk(i, tunnel, size, payload);
                } else {
                    // One message at a time: each first chunk costs the reader `delay` after
                    // it is done with the previous messages.
                    let Some(end) = self.apps.tunnel_ends.get_mut(&(i, tunnel)) else {
                        return;
                    };
                    let start = end.busy_until.map_or(now, |b| b.max(now));
                    let cost = if size != 0 { delay } else { 0 };
                    let at = start + std::time::Duration::from_micros(cost);
                    end.busy_until = Some(at);
                    self.push(
                        at,
                        Ev::App(AppAction::Take {
                            node: i,
                            tunnel,
                            size,
                            payload,
                        }),
                    );
                }
            }
            Event::TunnelClosed { tunnel, reason, .. } => {
                if let Some(end) = self.apps.tunnel_ends.remove(&(i, tunnel)) {
                    if end.record == usize::MAX {
                        return;
                    }
                    let t = &mut self.apps.tunnels[end.record];
                    if t.end == TunnelEnd::Running {
                        t.end_at = Some(now);
                        t.end = if !reason.is_empty() {
                            TunnelEnd::Failed(reason)
                        } else if t.echoed == t.messages && !t.corrupt {
                            TunnelEnd::Completed
                        } else if end.opener {
                            TunnelEnd::Failed("closed before the data was through".into())
                        } else {
                            // The acceptor sees the opener's graceful close.
                            return;
                        };
                    }
                }
            }
            _ => {}
        }
    }

    /// A scheduled application action.
    pub(crate) fn on_app_action(&mut self, action: AppAction) {
        let now = self.now();
        match action {
            AppAction::Answer { app, delivery, gid } => {
                let a = &mut self.apps.list[app];
                if a.until.is_some() {
                    return;
                }
                // The handler is free: it takes the next waiting request.
                match a.waiting.pop_front() {
                    Some((d, g)) => {
                        let at = now + std::time::Duration::from_micros(a.spec.service_us);
                        self.push(
                            at,
                            Ev::App(AppAction::Answer {
                                app,
                                delivery: d,
                                gid: g,
                            }),
                        );
                    }
                    None => a.busy -= 1,
                }
                let a = &self.apps.list[app];
                let (node, ratio) = (a.node, a.spec.fault_ratio);
                let fault = ratio > 0.0 && self.rng().random_bool(ratio);
                let result = if fault {
                    ReplyResult::Fault(format!("fault {gid}"))
                } else {
                    ReplyResult::Ok(gid_payload(gid, 8))
                };
                let conn = self.apps.list[app].conn;
                if self
                    .node_mut(node)
                    .reply(now, conn, delivery, result)
                    .is_ok()
                {
                    self.apps.list[app].served += 1;
                }
                self.after_step(node);
            }
            AppAction::Take {
                node,
                tunnel,
                size,
                payload,
            } => {
                if self.is_alive(node) {
                    self.take_chunk(node, tunnel, size, payload);
                }
            }
        }
    }

    fn queue_message(&mut self, node: u32, tunnel: u64, rec: u64, k: u32, size: usize) {
        let Some(end) = self.apps.tunnel_ends.get_mut(&(node, tunnel)) else {
            return;
        };
        let mut off = 0;
        while off < size {
            let len = (size - off).min(65_536);
            let mut v = vec![0u8; len];
            let mut h = [0u8; CHUNK_HEADER];
            h[..8].copy_from_slice(&rec.to_be_bytes());
            h[8..12].copy_from_slice(&k.to_be_bytes());
            h[12..20].copy_from_slice(&(off as u64).to_be_bytes());
            let n = h.len().min(v.len());
            v[..n].copy_from_slice(&h[..n]);
            let first = if off == 0 { size as u64 } else { 0 };
            end.outq.push_back((first, Bytes::from(v)));
            off += len;
        }
    }

    fn pump_tunnel(&mut self, node: u32, tunnel: u64) {
        let now = self.now();
        while let Some(end) = self.apps.tunnel_ends.get_mut(&(node, tunnel)) {
            let Some((size, chunk)) = end.outq.front() else {
                break;
            };
            if (chunk.len() as u64) > end.credit {
                break;
            }
            let (size, chunk) = (*size, chunk.clone());
            end.outq.pop_front();
            end.credit -= chunk.len() as u64;
            let conn = self.apps.list[end.app].conn;
            if self
                .node_mut(node)
                .tunnel_send(now, conn, tunnel, size, chunk)
                .is_err()
            {
                break;
            }
        }
        self.after_step(node);
    }

    /// The application takes one chunk: reassembles, checks, echoes (acceptor) or counts the
    /// echo (opener), and re-grants the node its credit.
    fn take_chunk(&mut self, node: u32, tunnel: u64, size: u64, payload: Bytes) {
        let now = self.now();
        let Some(end) = self.apps.tunnel_ends.get_mut(&(node, tunnel)) else {
            return;
        };
        let header = |p: &[u8]| -> Option<(u64, u32, u64)> {
            Some((
                u64::from_be_bytes(p.get(..8)?.try_into().ok()?),
                u32::from_be_bytes(p.get(8..12)?.try_into().ok()?),
                u64::from_be_bytes(p.get(12..20)?.try_into().ok()?),
            ))
        };
        let Some((rec, k, off)) = header(&payload) else {
            return;
        };
        if end.record == usize::MAX {
            end.record = rec as usize;
            if let Some(t) = self.apps.tunnels.get_mut(rec as usize) {
                t.acceptors += 1;
            }
        }
        let record = end.record;
        let mut corrupt = record != rec as usize;
        if size != 0 {
            corrupt |= end.partial.is_some() || off != 0;
            end.partial = Some((size, Vec::with_capacity(size as usize)));
        }
        let mut whole = None;
        match &mut end.partial {
            Some((want, got)) => {
                corrupt |= off != got.len() as u64 || k != end.received;
                got.extend_from_slice(&payload);
                if got.len() as u64 >= *want {
                    corrupt |= got.len() as u64 != *want;
                    whole = Some(got.len() as u64);
                }
            }
            None => corrupt = true,
        }
        if whole.is_some() {
            end.partial = None;
            end.received += 1;
        }
        let (opener, received, app) = (end.opener, end.received, end.app);
        let conn = self.apps.list[app].conn;
        if let Some(t) = self.apps.tunnels.get_mut(record) {
            t.corrupt |= corrupt;
            if !opener && t.acceptor.is_none() {
                t.acceptor = Some(app);
            }
        }
        let Some(len) = whole else {
            return;
        };
        let _ = self.node_mut(node).tunnel_allow(now, conn, tunnel, len);
        if opener {
            let t = &mut self.apps.tunnels[record];
            t.echoed = received;
            if t.echoed == t.messages {
                let _ = self.node_mut(node).tunnel_close(now, conn, tunnel);
            }
            self.after_step(node);
        } else {
            let size = self.apps.tunnels[record].size;
            self.queue_message(node, tunnel, record as u64, received - 1, size);
            self.pump_tunnel(node, tunnel);
        }
    }
}
