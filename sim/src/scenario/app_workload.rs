//! The application workload of the messaging scenarios under faults (`churn-messaging`,
//! `partition-messaging`): one simulated application per ready node, a member of one of the
//! clusters `svc-0`, `svc-1`, ... or a plain client, either subscribing to some of the topics
//! `topic-0`, `topic-1`, ...; and constant rates of requests, publishes, broadcasts and echo
//! tunnels, each from a random ready node's application to a random cluster or topic. Every
//! draw comes from the engine's seeded generator.

use std::time::Duration;

use petal_core::{GroupKind, Key, NodeId, Stats, Time};
use rand::Rng;
use serde::Deserialize;

use crate::apps::{AppSpec, Apps, EventRecord};
use crate::engine::Sim;
use crate::oracle::EventStats;

/// What the applications are and what they do (`[params.workload]` in a scenario file).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkloadParams {
    /// Clusters `svc-0..`.
    pub clusters: u32,
    /// Probability that a node's application is a member of a (random) cluster.
    pub member_ratio: f64,
    /// Topics `topic-0..`.
    pub topics: u32,
    /// Probability that an application subscribes to each topic.
    pub subscribe_ratio: f64,
    pub requests_per_s: f64,
    pub request_timeout_ms: u32,
    pub request_size: usize,
    /// A member's service time is drawn uniformly from this range (milliseconds, inclusive).
    pub service_ms: [u64; 2],
    pub publishes_per_s: f64,
    pub broadcasts_per_s: f64,
    pub event_size: usize,
    /// One tunnel opened every this many milliseconds.
    pub tunnel_every_ms: u64,
    /// Messages sent through each tunnel and echoed back.
    pub tunnel_messages: u32,
    pub tunnel_size: usize,
    pub tunnel_timeout_ms: u32,
}

impl WorkloadParams {
    /// One sentence on the workload, for reports.
    pub(super) fn describe(&self) -> String {
        format!(
            "Each ready node runs one application: with probability {} a member of one of {} clusters \
             (svc-0..svc-{}, service time {}-{} ms), else a plain client; each application subscribes to each \
             of {} topics with probability {}. Random applications issue {} requests per second (timeout {} ms) \
             to random clusters; random nodes publish {} events per second on random topics and broadcast {} \
             messages per second to random clusters; every {} ms an application opens a tunnel to a random \
             cluster and sends {} messages of {} bytes, each echoed back by the accepting member.",
            self.member_ratio,
            self.clusters,
            self.clusters.saturating_sub(1),
            self.service_ms[0],
            self.service_ms[1],
            self.topics,
            self.subscribe_ratio,
            self.requests_per_s,
            self.request_timeout_ms,
            self.publishes_per_s,
            self.broadcasts_per_s,
            self.tunnel_every_ms,
            self.tunnel_messages,
            self.tunnel_size,
        )
    }
}

/// Name of cluster `k`.
pub(super) fn cluster_name(k: u32) -> String {
    format!("svc-{k}")
}

/// Name of topic `k`.
pub(super) fn topic_name(k: u32) -> String {
    format!("topic-{k}")
}

/// The workload's state: which application runs on which node, nodes still waiting to be
/// ready, and the next time of each stream.
pub(super) struct Workload {
    p: WorkloadParams,
    /// The application of each node slot.
    app_of: Vec<Option<usize>>,
    /// Nodes added but not ready yet (they get their application when they are).
    waiting: Vec<u32>,
    /// Next request, publish, broadcast and tunnel, in microseconds.
    next_us: [f64; 4],
}

impl Workload {
    /// A workload with no application yet; its streams begin at [`Workload::start`].
    pub(super) fn new(p: WorkloadParams) -> anyhow::Result<Self> {
        anyhow::ensure!(p.clusters >= 1, "at least one cluster");
        anyhow::ensure!(
            (0.0..=1.0).contains(&p.member_ratio) && (0.0..=1.0).contains(&p.subscribe_ratio),
            "ratios must be in [0, 1]"
        );
        anyhow::ensure!(
            p.service_ms[0] <= p.service_ms[1],
            "service_ms must be [min, max]"
        );
        Ok(Self {
            p,
            app_of: Vec::new(),
            waiting: Vec::new(),
            next_us: [f64::INFINITY; 4],
        })
    }

    /// Starts the request, publish, broadcast and tunnel streams at `at`.
    pub(super) fn start(&mut self, at: Time) {
        self.next_us = [at.as_micros() as f64; 4];
    }

    /// Gives every ready node without an application one.
    pub(super) fn populate(&mut self, sim: &mut Sim) {
        let ready: Vec<u32> = sim.ready_nodes().collect();
        for i in ready {
            if self.app_of(i).is_none() {
                self.add_app(sim, i);
            }
        }
    }

    /// Node `i` was just added: it gets its application once it is ready.
    pub(super) fn node_added(&mut self, i: u32) {
        self.waiting.push(i);
    }

    /// Gives the waiting nodes that became ready their applications (in the order they were
    /// added); forgets those that died.
    pub(super) fn adopt_ready(&mut self, sim: &mut Sim) {
        if self.waiting.is_empty() {
            return;
        }
        let mut still = Vec::new();
        for i in std::mem::take(&mut self.waiting) {
            if !sim.is_alive(i) {
                continue;
            }
            if sim.node(i).is_ready() {
                self.add_app(sim, i);
            } else {
                still.push(i);
            }
        }
        self.waiting = still;
    }

    /// The application on node `i`, if any.
    pub(super) fn app_of(&self, i: u32) -> Option<usize> {
        self.app_of.get(i as usize).copied().flatten()
    }

    fn add_app(&mut self, sim: &mut Sim, node: u32) {
        let member = sim.rng().random_bool(self.p.member_ratio);
        let spec = if member {
            let c = sim.rng().random_range(0..self.p.clusters);
            let ms = sim
                .rng()
                .random_range(self.p.service_ms[0]..=self.p.service_ms[1]);
            AppSpec::member(&cluster_name(c), ms * 1000)
        } else {
            AppSpec::client()
        };
        let Some(app) = sim.add_app(node, spec) else {
            return;
        };
        for t in 0..self.p.topics {
            if sim.rng().random_bool(self.p.subscribe_ratio) {
                sim.subscribe(app, &topic_name(t));
            }
        }
        if self.app_of.len() <= node as usize {
            self.app_of.resize(node as usize + 1, None);
        }
        self.app_of[node as usize] = Some(app);
    }

    /// A random ready node and its application.
    fn random_app(&self, sim: &mut Sim) -> Option<(u32, usize)> {
        let node = sim.random_ready()?;
        Some((node, self.app_of(node)?))
    }

    fn random_cluster(&self, sim: &mut Sim) -> String {
        cluster_name(sim.rng().random_range(0..self.p.clusters))
    }

    /// Issues every request, publish, broadcast and tunnel due by `now`.
    pub(super) fn tick(&mut self, sim: &mut Sim, now: Time) {
        let now = now.as_micros() as f64;
        let rates = [
            self.p.requests_per_s,
            self.p.publishes_per_s,
            self.p.broadcasts_per_s,
            if self.p.tunnel_every_ms == 0 {
                0.0
            } else {
                1000.0 / self.p.tunnel_every_ms as f64
            },
        ];
        for (k, rate) in rates.into_iter().enumerate() {
            if rate <= 0.0 {
                continue;
            }
            let gap = 1e6 / rate;
            while self.next_us[k] <= now {
                self.next_us[k] += gap;
                self.issue(sim, k);
            }
        }
    }

    fn issue(&mut self, sim: &mut Sim, stream: usize) {
        let p = &self.p;
        match stream {
            0 => {
                if let Some((_, app)) = self.random_app(sim) {
                    let c = self.random_cluster(sim);
                    sim.request(app, &c, p.request_timeout_ms, p.request_size);
                }
            }
            1 => {
                if p.topics == 0 {
                    return;
                }
                if let Some(node) = sim.random_ready() {
                    let t = topic_name(sim.rng().random_range(0..p.topics));
                    sim.publish(node, &t, p.event_size);
                }
            }
            2 => {
                if let Some(node) = sim.random_ready() {
                    let c = self.random_cluster(sim);
                    sim.broadcast(node, &c, p.event_size);
                }
            }
            _ => {
                if let Some((_, app)) = self.random_app(sim) {
                    let c = self.random_cluster(sim);
                    let (timeout, n, size) =
                        (p.tunnel_timeout_ms, p.tunnel_messages, p.tunnel_size);
                    sim.open_tunnel(app, &c, timeout, n, size, 0);
                }
            }
        }
    }

    /// Keys of every cluster and topic tree of the workload.
    pub(super) fn group_keys(&self) -> Vec<Key> {
        let clusters = (0..self.p.clusters).map(|k| GroupKind::Cluster.key(&cluster_name(k)));
        let topics = (0..self.p.topics).map(|k| GroupKind::Topic.key(&topic_name(k)));
        clusters.chain(topics).collect()
    }
}

/// A named counter of [`Stats`].
pub(super) type Counter = (&'static str, fn(&Stats) -> u64);

/// The group-tree counters of [`Stats`] the messaging reports show, by name.
pub(super) const TREE_COUNTERS: [Counter; 11] = [
    ("group_repairs", |s| s.group_repairs),
    ("group_parent_changes", |s| s.group_parent_changes),
    ("group_roots_taken", |s| s.group_roots_taken),
    ("group_children_expired", |s| s.group_children_expired),
    ("group_children_restored", |s| s.group_children_restored),
    ("event_gaps", |s| s.event_gaps),
    ("events_lost", |s| s.events_lost),
    ("group_replayed", |s| s.group_replayed),
    ("events_duplicate", |s| s.events_duplicate),
    ("events_copies_dropped", |s| s.events_copies_dropped),
    ("asks_unplaced", |s| s.asks_unplaced),
];

/// [`TREE_COUNTERS`] summed over every node slot (alive or not: a crashed node's counters
/// stay as they were).
pub(super) fn tree_counters(sim: &Sim) -> [u64; TREE_COUNTERS.len()] {
    let mut out = [0; TREE_COUNTERS.len()];
    for i in 0..crate::count_u32(sim.node_count()) {
        let s = sim.node(i).stats();
        for (o, (_, f)) in out.iter_mut().zip(TREE_COUNTERS.iter()) {
            *o += f(s);
        }
    }
    out
}

/// A child whose tree parent crashed, waiting to hang from a new parent.
struct Orphan {
    child: u32,
    key: Key,
    dead: NodeId,
    crashed_at: Time,
}

/// Measures tree repair: when a node crashes, every live child that had it as parent in one of
/// the workload's trees is an orphan; it is repaired when it hangs from another live parent that
/// lists it as a child (or it became the root). Orphans that die or leave the tree first are
/// censored.
pub(super) struct RepairTracker {
    keys: Vec<Key>,
    /// Node slot by id (every node ever added).
    index_of: std::collections::BTreeMap<NodeId, u32>,
    pending: Vec<Orphan>,
    /// Orphans seen.
    pub orphans: u64,
    /// Repair times, microseconds.
    pub repairs_us: Vec<u64>,
    /// Orphans that died or left the tree before a new parent took them.
    pub censored: u64,
}

impl RepairTracker {
    /// A tracker of the trees `keys`, knowing every node of `sim` so far.
    pub(super) fn new(sim: &Sim, keys: Vec<Key>) -> Self {
        let mut t = Self {
            keys,
            index_of: Default::default(),
            pending: Vec::new(),
            orphans: 0,
            repairs_us: Vec::new(),
            censored: 0,
        };
        for i in 0..crate::count_u32(sim.node_count()) {
            t.node_added(sim, i);
        }
        t
    }

    /// Node `i` was added.
    pub(super) fn node_added(&mut self, sim: &Sim, i: u32) {
        self.index_of.insert(sim.node(i).id(), i);
    }

    /// Node `i` is about to crash: records its orphans.
    pub(super) fn before_crash(&mut self, sim: &Sim, i: u32) {
        if !sim.is_alive(i) {
            return;
        }
        let dead = sim.node(i).id();
        for &key in &self.keys {
            let Some(view) = sim.node(i).group_view(key) else {
                continue;
            };
            for c in view.children {
                let Some(&ci) = self.index_of.get(&c) else {
                    continue;
                };
                let hangs = sim.is_alive(ci)
                    && sim
                        .node(ci)
                        .group_view(key)
                        .is_some_and(|v| v.parent == Some(dead));
                if hangs {
                    self.orphans += 1;
                    self.pending.push(Orphan {
                        child: ci,
                        key,
                        dead,
                        crashed_at: sim.now(),
                    });
                }
            }
        }
    }

    /// Checks the waiting orphans (call after every step).
    pub(super) fn poll(&mut self, sim: &Sim) {
        let now = sim.now();
        let mut pending = std::mem::take(&mut self.pending);
        pending.retain(|o| {
            if !sim.is_alive(o.child) {
                self.censored += 1;
                return false;
            }
            let Some(v) = sim.node(o.child).group_view(o.key) else {
                self.censored += 1;
                return false;
            };
            let me = sim.node(o.child).id();
            let repaired = v.root
                || v.parent.filter(|&p| p != o.dead).is_some_and(|p| {
                    self.index_of.get(&p).is_some_and(|&pi| {
                        sim.is_alive(pi)
                            && sim
                                .node(pi)
                                .group_view(o.key)
                                .is_some_and(|pv| pv.children.contains(&me))
                    })
                });
            if repaired {
                self.repairs_us
                    .push(now.as_micros() - o.crashed_at.as_micros());
            }
            !repaired
        });
        self.pending = pending;
    }

    /// Orphans still waiting.
    pub(super) fn unrepaired(&self) -> u64 {
        self.pending.len() as u64
    }
}

/// [`Apps::event_stats_where`] over both kinds.
pub(super) fn event_stats_where(
    apps: &Apps,
    from: Time,
    to: Time,
    settle: Duration,
    grace: Duration,
    counts: impl Fn(&EventRecord, u32) -> bool,
) -> EventStats {
    apps.event_stats_where(None, from, to, settle, grace, counts)
}
