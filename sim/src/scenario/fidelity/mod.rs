//! `fidelity`: one small workload run by both harnesses (the discrete-event simulator over
//! petal-core, and turmoil over the real stack: petal-node's runtime and petal-client
//! applications), reported side by side, so that the simulator's fidelity is a measured
//! figure rather than an assumption.
//!
//! ## Method
//! One description ([`plan::script`], a [`crate::realstack::Script`]) holds everything both
//! runs share: the hosts and their boot times (host `i` at `i × join_spacing`, host 0 founding
//! the ring, every other host seeded with host 0), the one-way delay of every pair of hosts (the
//! discrete-event simulator's topology, read once and given to turmoil link by link), the
//! subscriptions, and every request, publish and broadcast with its time and host. Both
//! harnesses also share the node ids (the real hosts' key-derived ids) and the cores' random
//! seeds, the service time and the applications' behaviour; the discrete-event side mirrors the
//! real applications' attach retries (every 250 ms from the boot) and petal-client's handler
//! pool (a member takes up to [`crate::realstack::REQUEST_HANDLERS`] requests at once). Each
//! side yields an [`Observed`]: the oracles' records, ready times and counters.
//!
//! Turmoil advances in ticks of one millisecond (the only tick it supports correctly: a host's
//! tokio clock has millisecond resolution, so a shorter tick advances the hosts' clocks faster
//! than the network's), delivers a message at the first tick at or after its delay, and carries
//! every segment on a host's loopback one tick late. The delays are therefore whole
//! milliseconds (checked), and the report states the loopback crossings of each path (four per
//! request, two per event) and compares latencies both raw and with that known constant taken
//! off.
//!
//! ## Layout
//! - `plan.rs`: the shared description (delay matrix, script).
//! - `des.rs`: the discrete-event run.
//! - `real.rs`: the turmoil run.
//! - `compare.rs`: the comparisons (pure: quantiles, pairing, counters, distances).
//! - `report.rs`: the report.

mod compare;
mod des;
mod plan;
mod real;
mod report;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use petal_core::Time;
use serde::Deserialize;

use super::{Outcome, Progress, Scenario};
use crate::apps::Apps;

/// Turmoil's tick, and the discrete-event run's polling step.
pub(super) const TICK: Duration = Duration::from_millis(1);

/// The scenario's parameters.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// Hosts, each a node with a service and a client application.
    nodes: u32,
    /// Host `i` boots `i × join_spacing_ms` after the start.
    join_spacing_ms: u64,
    /// From the start until the workload begins.
    settle_s: u64,
    /// The workload's length.
    run_s: u64,
    /// After the workload, for outstanding work to end (at least the request timeout + 1 s,
    /// for every request to be judged).
    drain_s: u64,
    /// Clusters `svc-0..`: host `i`'s service is a member of `svc-(i mod clusters)`.
    clusters: u32,
    /// Topics `topic-0..`.
    topics: u32,
    /// Probability that a host's client subscribes to each topic.
    subscribe_ratio: f64,
    /// Requests per second over the network (Poisson), random host to random cluster.
    requests_per_s: f64,
    /// Events published per second (Poisson), random host on a random topic.
    publishes_per_s: f64,
    /// Messages broadcast per second (Poisson), random host to a random cluster.
    broadcasts_per_s: f64,
    /// Timeout of every request.
    request_timeout_ms: u64,
    /// Bytes of every request.
    request_size: usize,
    /// Bytes of every event and broadcast.
    event_size: usize,
    /// A service's time to answer a request.
    service_ms: u64,
    /// Event oracle: a recipient must be present this long before an event...
    event_settle_s: u64,
    /// ... and this long after it.
    event_grace_s: u64,
    /// Target: the median and the median of event delays, corrected for the loopback
    /// crossings, agree within this fraction of the simulator's.
    latency_tolerance: f64,
    /// Target: the 90th percentiles likewise.
    tail_tolerance: f64,
    /// Target: hops per routed message, tree hops per request and the messages the cores
    /// sent during the workload agree within this fraction.
    count_tolerance: f64,
    /// Target: the median join time (boot to ready) agrees within this fraction.
    join_tolerance: f64,
}

impl Params {
    fn work_from(&self) -> Duration {
        Duration::from_secs(self.settle_s)
    }

    fn work_until(&self) -> Duration {
        Duration::from_secs(self.settle_s + self.run_s)
    }

    fn end(&self) -> Duration {
        Duration::from_secs(self.settle_s + self.run_s + self.drain_s)
    }

    fn boot_at(&self, host: u32) -> Time {
        Time::from_millis(self.join_spacing_ms * u64::from(host))
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.nodes >= 2, "at least two hosts");
        anyhow::ensure!(
            self.clusters >= 1 && self.topics >= 1,
            "a cluster and a topic"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.subscribe_ratio),
            "subscribe_ratio in [0, 1]"
        );
        anyhow::ensure!(
            self.drain_s * 1000 >= self.request_timeout_ms + 1000,
            "drain_s must cover the request timeout and the oracle's 1 s margin"
        );
        anyhow::ensure!(
            self.boot_at(self.nodes - 1) < Time::ZERO + self.work_from(),
            "every host must boot before the workload"
        );
        for (name, v) in [
            ("latency_tolerance", self.latency_tolerance),
            ("tail_tolerance", self.tail_tolerance),
            ("count_tolerance", self.count_tolerance),
            ("join_tolerance", self.join_tolerance),
        ] {
            anyhow::ensure!(v.is_finite() && v >= 0.0, "{name} must be non-negative");
        }
        Ok(())
    }
}

/// What one harness observed of the shared workload.
pub(super) struct Observed {
    /// The oracles' records: applications, requests, events.
    pub apps: Apps,
    /// When each host booted.
    pub boot_at: Vec<Time>,
    /// When each host's node was first seen ready (polled every tick).
    pub ready_at: Vec<Option<Time>>,
    /// Core counters summed over the nodes at each of the script's sample times.
    pub samples: Vec<BTreeMap<&'static str, u64>>,
    /// Runtime counters (peer links, relay sessions) likewise: the real stack only.
    pub runtime: Vec<BTreeMap<&'static str, u64>>,
    /// When the run ended.
    pub end: Time,
    /// Application errors that are not outcomes, and replies the client library received
    /// for requests that had their outcome already (the real stack only).
    pub errors: u64,
    /// See [`Observed::errors`].
    pub unexpected_replies: u64,
    /// Scheduled operations that could not be issued (the application was not attached).
    pub not_issued: u64,
    /// Trace hash of the run.
    pub trace_hash: String,
    /// Events processed (simulator) or turmoil steps.
    pub work: u64,
    /// Wall-clock time of the run (for `perf.json` only).
    pub wall: Duration,
}

pub(super) fn run(
    sc: &Scenario,
    node: petal_core::Config,
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    let p: Params = sc.params()?;
    p.validate()?;
    let mut sim = sc.new_sim(sc.seed, &node)?;
    // The simulator's nodes are the real hosts: their ids and the cores' seeds.
    let ids = crate::realstack::identities(sc.seed, p.nodes);
    for (h, id) in (0..p.nodes).zip(&ids) {
        sim.add_down_node_as(id.node_id(), crate::realstack::core_seed(sc.seed, h, 0));
    }
    let delays = plan::delay_matrix(p.nodes, |a, b| sim.topology().latency_us(a, b));
    if let Some((i, d)) = plan::off_tick(&delays, crate::micros_u64(TICK)) {
        anyhow::bail!(
            "the delay between hosts {} and {} is {d} µs, not a whole number of turmoil ticks \
             ({} µs): choose a topology whose delays are (e.g. transit-stub with \
             link_jitter_percent = 0 and whole-millisecond links and access delays)",
            i / p.nodes as usize,
            i % p.nodes as usize,
            TICK.as_micros()
        );
    }
    let script = Arc::new(plan::script(&p, delays, sc.seed));
    let end_s = p.end().as_secs();
    progress.set_len(2 * end_s);
    let des = des::run(&mut sim, &p, &script, &mut |t| {
        progress.set(t.as_secs(), "simulator".into());
    })?;
    let real = real::run(sc.seed, &node, &p, script.clone(), &mut |t| {
        progress.set(end_s + t.as_secs(), "real stack".into());
    })?;
    progress.finish();
    report::write(sc, &p, &script, &sim, &des, &real, out)
}
