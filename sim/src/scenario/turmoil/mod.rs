//! `turmoil`: the real stack (petal-node's runtime, petal-client applications) on simulated
//! hosts and TCP ([`crate::realstack`]), with crashes, restarts, partitions and heals, judged by
//! the discrete-event simulator's oracles over what the applications observed.
//!
//! Requests, events and tunnels are judged over the whole workload and, separately, outside
//! the fault windows (from each crash, restart or partition until `fault_guard_s` after it or
//! after its heal), where the overlay is expected to be whole: there every judged request is
//! answered, every stable recipient gets every event exactly once and every tunnel completes.

mod faults;
mod report;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{Outcome, Progress, Scenario};
use crate::realstack::{Fault, PartitionMode, RunConfig, SeedPattern, WorkloadParams};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Hosts (one node and two applications each).
    nodes: u32,
    /// Host `i` boots `i * join_spacing_ms` after the start.
    join_spacing_ms: u64,
    /// From the start until the workload begins.
    settle_s: u64,
    /// The workload's length (fault times count from its start).
    run_s: u64,
    /// After the workload, for outstanding work to end.
    drain_s: u64,
    /// Turmoil's tick in microseconds (default 1000; a whole number of milliseconds, see
    /// `RunConfig::tick`).
    #[serde(default = "default_tick_us")]
    tick_us: u64,
    /// One-way latency range between hosts, milliseconds.
    latency_ms: [u64; 2],
    /// Event oracle: a recipient must be present this long before an event...
    event_settle_s: u64,
    /// ... and this long after it.
    event_grace_s: u64,
    /// A fault's window lasts until this long after it (after the heal, for a partition).
    fault_guard_s: u64,
    /// Target: fraction of judged requests outside fault windows answered.
    answered_target: f64,
    /// Targets inside fault windows (required when there are faults): fraction of judged
    /// requests answered...
    #[serde(default)]
    fault_answered_target: Option<f64>,
    /// ... fraction of expected event deliveries made exactly once...
    #[serde(default)]
    fault_events_target: Option<f64>,
    /// ... and the longest time to recovery, seconds: from a fault (a partition: its heal)
    /// until the last request issued in its window that was not answered.
    #[serde(default)]
    recovery_target_s: Option<f64>,
    workload: WorkloadParams,
    #[serde(default)]
    faults: Vec<Fault>,
    /// `drop` (default: segments between the sides are lost) or `hold` (delivered at the heal).
    #[serde(default)]
    partition_mode: PartitionMode,
    /// Nodes find each other by multicast discovery beacons, with no seeds.
    #[serde(default)]
    discovery: bool,
    /// `first` (default: every host seeds to host 0) or `chain` (host k seeds to a random
    /// earlier host).
    #[serde(default)]
    seeds: SeedPattern,
}

fn default_tick_us() -> u64 {
    1000
}

pub(super) fn run(
    sc: &Scenario,
    node: petal_core::Config,
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    let p: Params = sc.params()?;
    for (name, v) in [
        ("answered_target", Some(p.answered_target)),
        ("fault_answered_target", p.fault_answered_target),
        ("fault_events_target", p.fault_events_target),
    ] {
        anyhow::ensure!(
            v.is_none_or(|v| (0.0..=1.0).contains(&v)),
            "{name} must be in [0, 1]"
        );
    }
    anyhow::ensure!(
        p.faults.is_empty()
            || (p.fault_answered_target.is_some()
                && p.fault_events_target.is_some()
                && p.recovery_target_s.is_some()),
        "a scenario with faults sets fault_answered_target, fault_events_target and recovery_target_s"
    );
    let cfg = RunConfig {
        seed: sc.seed,
        nodes: p.nodes,
        core: node.clone(),
        join_spacing: Duration::from_millis(p.join_spacing_ms),
        settle: Duration::from_secs(p.settle_s),
        run: Duration::from_secs(p.run_s),
        drain: Duration::from_secs(p.drain_s),
        tick: Duration::from_micros(p.tick_us),
        latency: p.latency_ms.map(Duration::from_millis),
        workload: p.workload.clone(),
        faults: p.faults.clone(),
        partition_mode: p.partition_mode,
        discovery: p.discovery,
        seeds: p.seeds,
        script: None,
    };
    progress.set_len(cfg.end().as_secs());
    let r = crate::realstack::run_with_progress(&cfg, &mut |t| {
        progress.set(t.as_secs(), "simulated seconds".into());
    })?;
    progress.finish();
    report::write_report(sc, &p, &cfg, &r, out)
}
