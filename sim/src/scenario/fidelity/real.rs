//! The turmoil run of the script: the real stack ([`crate::realstack`]) with the script's
//! delays on its links and its operations instead of the Poisson streams.

use std::sync::Arc;
use std::time::Duration;

use super::{Observed, Params, TICK, compare};
use crate::realstack::{PartitionMode, RunConfig, Script, SeedPattern, WorkloadParams};

/// The real applications' behaviour for the script: its groups, sizes, timeout and service
/// time; no faults and no tunnels (the rates are the script's, for the description only).
pub(super) fn workload(p: &Params) -> WorkloadParams {
    WorkloadParams {
        clusters: p.clusters,
        topics: p.topics,
        subscribe_ratio: p.subscribe_ratio,
        requests_per_s: p.requests_per_s,
        request_timeout_ms: p.request_timeout_ms,
        request_size: p.request_size,
        service_ms: [p.service_ms, p.service_ms],
        fault_ratio: 0.0,
        publishes_per_s: p.publishes_per_s,
        broadcasts_per_s: p.broadcasts_per_s,
        event_size: p.event_size,
        tunnels_per_s: 0.0,
        tunnel_messages: 1,
        tunnel_size: 12,
        tunnel_timeout_ms: 1000,
    }
}

/// Runs the script on the real stack; `progress` gets the simulated time every second.
pub(super) fn run(
    seed: u64,
    node: &petal_core::Config,
    p: &Params,
    script: Arc<Script>,
    progress: &mut dyn FnMut(Duration),
) -> anyhow::Result<Observed> {
    let (lo, hi) = script
        .delays_us
        .iter()
        .enumerate()
        .filter(|(i, _)| i / p.nodes as usize != i % p.nodes as usize)
        .fold((u64::MAX, 0), |(lo, hi), (_, &d)| (lo.min(d), hi.max(d)));
    let samples = script.samples_at.len();
    let cfg = RunConfig {
        seed,
        nodes: p.nodes,
        core: node.clone(),
        join_spacing: Duration::from_millis(p.join_spacing_ms),
        settle: p.work_from(),
        run: p.work_until() - p.work_from(),
        drain: p.end() - p.work_until(),
        tick: TICK,
        // Unused: every link has its own delay from the script.
        latency: [Duration::from_micros(lo), Duration::from_micros(hi)],
        workload: workload(p),
        faults: Vec::new(),
        partition_mode: PartitionMode::Drop,
        discovery: false,
        seeds: SeedPattern::First,
        script: Some(script),
    };
    let r = crate::realstack::run_with_progress(&cfg, progress)?;
    let rec = r.rec;
    // A host's software starts with the run and sleeps until its boot time before it spawns
    // its node (`realstack`'s recorded boot is the start of the software).
    let boot_at = (0..p.nodes).map(|h| p.boot_at(h)).collect();
    let ready_at = (0..p.nodes)
        .map(|h| rec.ready_at.get(&h).copied())
        .collect();
    let at = |k: usize| -> Vec<&petal_node::StatsSnapshot> {
        (0..p.nodes)
            .filter_map(|h| rec.samples.get(&(h, k)))
            .collect()
    };
    let runtime = (0..samples)
        .map(|k| compare::sum_runtime(at(k).into_iter().map(|s| &s.runtime)))
        .collect();
    let core = (0..samples)
        .map(|k| compare::sum_core(at(k).into_iter().map(|s| &s.core)))
        .collect();
    let unexpected_replies = rec
        .client_stats
        .values()
        .map(|s| s.unexpected_replies)
        .sum();
    Ok(Observed {
        errors: rec.errors.values().sum(),
        boot_at,
        ready_at,
        samples: core,
        runtime,
        end: r.end,
        unexpected_replies,
        not_issued: 0,
        trace_hash: r.trace_hash,
        work: r.steps,
        wall: r.wall,
        apps: rec.apps,
    })
}
