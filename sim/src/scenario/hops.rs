//! `pastry-hops`: grow an overlay one node at a time to each size, then route random lookups
//! and compare hop counts with log16 N and with the Pastry paper.

use std::path::Path;

use serde::Deserialize;
use serde_json::json;

use super::common::{advance_ms, finish, grow, lookup_burst, pct, with_nodes};
use super::{Outcome, Progress, Scenario};
use crate::engine::{RowProximity, Sim};
use crate::metrics::{Metrics, quantile};
use crate::report::{CdfChart, Frame, ReportWriter, TargetRow, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Network sizes to measure, ascending; the overlay grows through each.
    sizes: Vec<u64>,
    /// Lookups routed at each size.
    lookups: u64,
    /// Simulated time between two joins.
    join_spacing_ms: u64,
    /// Quiet time after growing to a size, before measuring.
    settle_ms: u64,
    /// Extra times after the last join (seconds) at which a smaller burst of lookups measures
    /// stretch again: how routes converge as maintenance runs.
    #[serde(default)]
    convergence_s: Vec<u64>,
    /// Lookups of each convergence burst, and routed through ideal tables.
    #[serde(default = "default_sample_lookups")]
    sample_lookups: u64,
}

fn default_sample_lookups() -> u64 {
    10_000
}

/// The stretch targets (mean; and median at every size), judged at the main
/// measurement (`settle_ms` after the last join).
const STRETCH_TARGETS: [(u64, f64); 2] = [(10_000, 1.5), (100_000, 1.6)];
const STRETCH_MEDIAN_TARGET: f64 = 1.4;

/// Rowstron and Druschel (2001), b = 4, |L| = 16, 100,000 nodes: hop distribution (%).
const PAPER_100K: [(usize, f64); 6] = [
    (0, 0.0),
    (1, 0.06),
    (2, 1.6),
    (3, 16.4),
    (4, 64.5),
    (5, 17.5),
];
/// The paper's mean hops at 1,000 and 100,000 nodes.
const PAPER_MEAN: [(u64, f64); 2] = [(1_000, 2.5), (100_000, 4.0)];

struct SizeResult {
    n: u64,
    metrics: Metrics,
    leaf_ok: f64,
    rt_entries: f64,
    state: f64,
    events: u64,
    /// Nearness of the routing tables' entries, per row (at the main measurement).
    proximity: Vec<RowProximity>,
    /// Stretch of the same kind of lookups through ideal tables (at the main measurement).
    ideal: Vec<f64>,
    /// (seconds since the last join, lookups, stretch mean, stretch p50), the main
    /// measurement included.
    convergence: Vec<(f64, u64, f64, f64)>,
    /// Bytes per node by part at the main measurement (see `memory_parts`).
    memory: Vec<(&'static str, f64)>,
}

/// The nodes' memory by part and the engine's per node, each divided by the alive nodes.
fn memory_parts(sim: &Sim) -> Vec<(&'static str, f64)> {
    let m = sim.node_memory();
    let n = sim.alive_count().max(1) as f64;
    let parts = [
        ("node struct", m.node),
        ("leaf set", m.leaf_set),
        ("routing table", m.routing_table),
        ("tracked peers", m.peers),
        ("round-trip cache", m.rtt_cache),
        ("probes", m.probes),
        ("dead", m.dead),
        ("routes, lookups, join", m.routes),
        ("timers", m.timers),
        ("queues", m.queues),
        ("messaging", m.messaging),
        ("node total", m.total()),
        ("engine bookkeeping", sim.engine_bytes()),
        ("events in flight", sim.event_bytes()),
    ];
    parts.iter().map(|&(k, v)| (k, v as f64 / n)).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Routes `lookups` lookups with fresh metrics and returns those; the sim's event and message
/// totals keep counting.
fn measured_burst(sim: &mut Sim, lookups: u64) -> Metrics {
    let before = (sim.metrics.events, sim.metrics.messages);
    sim.metrics = Metrics::new(sim.metrics.bucket_us());
    lookup_burst(sim, lookups, 1000, 50, 5_000);
    let m = std::mem::replace(&mut sim.metrics, Metrics::new(1_000_000));
    sim.metrics.events = before.0 + m.events;
    sim.metrics.messages = before.1 + m.messages;
    m
}

pub(super) fn run(
    sc: &Scenario,
    node: petal_core::Config,
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    let p: Params = sc.params()?;
    anyhow::ensure!(p.sizes.windows(2).all(|w| w[0] < w[1]), "sizes must ascend");
    let mut sim = sc.new_sim(sc.seed, &node)?;
    let total = *p.sizes.last().unwrap_or(&0);
    progress.set_len(total + p.sizes.len() as u64 * p.lookups);
    let mut results = Vec::new();
    let mut done_lookups = 0;
    for &n in &p.sizes {
        grow(&mut sim, n, p.join_spacing_ms, 0, |sim| {
            if sim.node_count() % 1000 == 0 {
                progress.set(
                    sim.node_count() as u64 + done_lookups,
                    format!("joining, {} ready", sim.ready_count()),
                );
            }
        });
        let last_join = sim.now().as_micros();
        // Checkpoints in ms after the last join; `None` marks the main measurement.
        let mut checkpoints: Vec<(u64, bool)> =
            p.convergence_s.iter().map(|s| (s * 1000, false)).collect();
        checkpoints.push((p.settle_ms, true));
        checkpoints.sort_unstable();
        let mut main = None;
        let mut convergence = Vec::new();
        for (at_ms, is_main) in checkpoints {
            let since_ms = (sim.now().as_micros() - last_join) / 1000;
            advance_ms(&mut sim, at_ms.saturating_sub(since_ms));
            let since_s = (sim.now().as_micros() - last_join) as f64 / 1e6;
            progress.set(
                sim.node_count() as u64 + done_lookups,
                format!("{n} nodes: lookups at {since_s:.0} s"),
            );
            if !is_main {
                let m = measured_burst(&mut sim, p.sample_lookups);
                convergence.push((
                    since_s,
                    p.sample_lookups,
                    mean(&m.stretch),
                    quantile(&m.stretch, 0.5).unwrap_or(f64::NAN),
                ));
                continue;
            }
            let leaf_ok = sim.leaf_set_correctness();
            let ready: Vec<u32> = sim.ready_nodes().collect();
            let per_node = |f: &dyn Fn(u32) -> usize| {
                ready.iter().map(|&i| f(i) as f64).sum::<f64>() / ready.len().max(1) as f64
            };
            let rt_entries = per_node(&|i| sim.node(i).routing_table().len());
            let state = per_node(&|i| sim.node(i).state_size());
            let proximity = sim.routing_proximity(1000);
            let memory = memory_parts(&sim);
            let ideal = sim.ideal_stretch(p.sample_lookups, n);
            let metrics = measured_burst(&mut sim, p.lookups);
            convergence.push((
                since_s,
                p.lookups,
                mean(&metrics.stretch),
                quantile(&metrics.stretch, 0.5).unwrap_or(f64::NAN),
            ));
            main = Some((
                leaf_ok, rt_entries, state, proximity, ideal, metrics, memory,
            ));
        }
        done_lookups += p.lookups;
        let Some((leaf_ok, rt_entries, state, proximity, ideal, metrics, memory)) = main else {
            anyhow::bail!("no main measurement");
        };
        results.push(SizeResult {
            n,
            leaf_ok,
            rt_entries,
            state,
            events: metrics.events,
            metrics,
            proximity,
            ideal,
            convergence,
            memory,
        });
    }
    progress.finish();
    write_report(sc, &p, &sim, &results, out)
}

fn distribution(m: &Metrics) -> Vec<f64> {
    let total: u64 = m.hops.iter().sum();
    (0..=8)
        .map(|h| 100.0 * *m.hops.get(h).unwrap_or(&0) as f64 / total.max(1) as f64)
        .collect()
}

fn write_report(
    sc: &Scenario,
    p: &Params,
    sim: &Sim,
    rs: &[SizeResult],
    out: &Path,
) -> anyhow::Result<Outcome> {
    let mut w = ReportWriter::new(out, &sc.name, &sc.description);
    let mut rows = Vec::new();
    let mut json_sizes = Vec::new();
    for r in rs {
        let t = r.metrics.totals();
        let consistency = t.consistent as f64 / t.delivered.max(1) as f64;
        let success = t.lookups_done as f64 / t.lookups_started.max(1) as f64;
        let stretch50 = quantile(&r.metrics.stretch, 0.5).unwrap_or(f64::NAN);
        let stretch_mean = mean(&r.metrics.stretch);
        let ideal_mean = mean(&r.ideal);
        let ideal50 = quantile(&r.ideal, 0.5).unwrap_or(f64::NAN);
        let log16 = (r.n as f64).ln() / 16f64.ln();
        rows.push(vec![
            r.n.to_string(),
            format!("{:.3}", r.metrics.mean_hops()),
            format!("{log16:.2}"),
            pct(success, 3),
            pct(consistency, 3),
            format!("{stretch_mean:.2} / {stretch50:.2}"),
            format!("{ideal_mean:.2} / {ideal50:.2}"),
            format!("{:.1}", r.rt_entries),
            format!("{:.1}", r.state),
            pct(r.leaf_ok, 1),
        ]);
        json_sizes.push(json!({
            "nodes": r.n,
            "mean_hops": r.metrics.mean_hops(),
            "log16_n": log16,
            "hop_distribution_pct": distribution(&r.metrics),
            "lookups_started": t.lookups_started,
            "lookups_done": t.lookups_done,
            "deliveries": t.delivered,
            "consistent": t.consistent,
            "stretch_mean": stretch_mean,
            "stretch_p50": stretch50,
            "stretch_p90": quantile(&r.metrics.stretch, 0.9),
            "ideal_tables": {
                "lookups": r.ideal.len(),
                "stretch_mean": ideal_mean,
                "stretch_p50": ideal50,
            },
            "routing_proximity": r.proximity.iter().map(|x| json!({
                "row": x.row,
                "entries": x.entries,
                "delay_over_nearest_mean": x.mean_ratio,
                "nearest_share": x.nearest_share,
            })).collect::<Vec<_>>(),
            "convergence": r.convergence.iter().map(|c| json!({
                "since_last_join_s": c.0,
                "lookups": c.1,
                "stretch_mean": c.2,
                "stretch_p50": c.3,
            })).collect::<Vec<_>>(),
            "routing_table_entries_mean": r.rt_entries,
            "state_nodes_mean": r.state,
            "leaf_set_correctness": r.leaf_ok,
            "events": r.events,
            "memory_bytes_per_node": r.memory.iter()
                .map(|&(k, v)| (k.to_string(), json!((v * 10.0).round() / 10.0)))
                .collect::<serde_json::Map<_, _>>(),
        }));
    }
    w.heading("Results");
    w.paragraph(&format!(
        "Nodes join one at a time ({} ms apart) over a {} topology, each given one random ready node; \
         the joiner searches the ring for the node nearest to it by its own probes and joins through that one \
         (proximity neighbour selection, no distance oracle). {} ms after the last join, {} lookups of random keys start from random nodes. \
         Hops are counted at the delivering node; stretch is the overlay route's delay over the direct delay \
         between origin and owner. *Ideal tables* routes {} lookups of the same kind, at the same moment, \
         through the same leaf sets but with the nearest ready node in every routing-table slot (perfect \
         proximity neighbour selection, computed by the simulator): the floor for this topology, where every \
         overlay hop also pays two access links.",
        p.join_spacing_ms, sim.topology().kind(), p.settle_ms, p.lookups, p.sample_lookups
    ));
    w.table(
        &[
            "N",
            "mean hops",
            "log16 N",
            "answered",
            "consistent",
            "stretch mean / p50",
            "ideal tables: stretch",
            "RT entries",
            "state (nodes)",
            "leaf sets correct",
        ],
        &rows,
    );
    let targets = targets(rs);
    w.targets(&targets);
    proximity_section(&mut w, rs);
    memory_section(&mut w, rs);
    figures(&mut w, rs)?;
    let results = json!({
        "scenario": sc.name,
        "seed": sc.seed,
        "topology": sim.topology().summary(),
        "sizes": json_sizes,
        "trace_hash": format!("{:016x}", sim.trace_hash()),
    });
    finish(&w, &results, sim.metrics.events, sim.metrics.messages)
        .map(|o| with_nodes(o, sim.node_count()))
}

/// The scenario's targets: consistency at every size, hops and their distribution against the
/// paper, stretch against the targets.
fn targets(rs: &[SizeResult]) -> Vec<TargetRow> {
    let mut targets = Vec::new();
    for r in rs {
        let t = r.metrics.totals();
        targets.push(TargetRow::new(
            format!("lookup consistency at {} nodes (stable)", r.n),
            "100 %",
            pct(t.consistent as f64 / t.delivered.max(1) as f64, 3),
            Verdict::from_met(t.consistent == t.delivered && t.lookups_done == t.lookups_started),
        ));
    }
    // Above 100,000 nodes (`pastry-hops-1m`) the paper's table has no row: the bound is
    // Pastry's own, ceil(log16 N) expected hops, and we ask for log16 N itself.
    for r in rs.iter().filter(|r| r.n > 100_000) {
        let mean = r.metrics.mean_hops();
        let log16 = (r.n as f64).log(16.0);
        targets.push(TargetRow::new(
            format!("mean hops at {} nodes", r.n),
            format!("≤ log16 N = {log16:.2}"),
            format!("{mean:.3}"),
            Verdict::from_met(mean <= log16),
        ));
    }
    if let Some(r) = rs.iter().find(|r| r.n == 100_000) {
        let mean = r.metrics.mean_hops();
        targets.push(TargetRow::new(
            "mean hops at 100,000 nodes",
            "≤ 4.0",
            format!("{mean:.3}"),
            Verdict::from_met(mean <= 4.0),
        ));
        let d = distribution(&r.metrics);
        let worst = PAPER_100K
            .iter()
            .map(|&(h, pp)| (d[h] - pp).abs())
            .fold(0.0, f64::max);
        targets.push(TargetRow::new(
            "hop distribution at 100,000 vs paper",
            "every bucket within 3 points",
            format!("largest gap {worst:.2} points"),
            Verdict::from_met(worst <= 3.0),
        ));
    }
    for (n, target) in STRETCH_TARGETS {
        if let Some(r) = rs.iter().find(|r| r.n == n) {
            let m = mean(&r.metrics.stretch);
            targets.push(TargetRow::new(
                format!("mean stretch at {n} nodes"),
                format!("≤ {target}"),
                format!("{m:.2} (ideal tables {:.2})", mean(&r.ideal)),
                Verdict::from_met(m <= target),
            ));
        }
    }
    if let Some(r) = rs.iter().find(|r| r.n == 100_000).or(rs.last()) {
        let m = quantile(&r.metrics.stretch, 0.5).unwrap_or(f64::NAN);
        targets.push(TargetRow::new(
            format!("median stretch at {} nodes", r.n),
            format!("≤ {STRETCH_MEDIAN_TARGET}"),
            format!(
                "{m:.2} (ideal tables {:.2})",
                quantile(&r.ideal, 0.5).unwrap_or(f64::NAN)
            ),
            Verdict::from_met(m <= STRETCH_MEDIAN_TARGET),
        ));
    }
    targets
}

/// How near the routing tables' entries are, row by row, and how stretch converges.
/// Bytes per node by part, one column per size.
fn memory_section(w: &mut ReportWriter, rs: &[SizeResult]) {
    let Some(first) = rs.first() else {
        return;
    };
    w.heading("Memory per node");
    w.paragraph(
        "Where a node's bytes are at the main measurement, averaged over the alive nodes: the \
         `Node` struct (every part's inline fields) and its tables' heap capacity \
         (`petal_core::Node::memory`, which a daemon's node reports too), then the engine's \
         bookkeeping per node and its pending events. Capacities, without the allocator's \
         rounding: the process's peak resident memory per node (`perf.json`, \
         `bytes_per_node`) is larger, and includes the topology and the measurements.",
    );
    let mut header = vec!["part".to_string()];
    header.extend(rs.iter().map(|r| format!("bytes at N = {}", r.n)));
    let rows: Vec<Vec<String>> = first
        .memory
        .iter()
        .enumerate()
        .map(|(i, &(name, _))| {
            let mut row = vec![name.to_string()];
            row.extend(rs.iter().map(|r| format!("{:.0}", r.memory[i].1)));
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    w.table(&header, &rows);
}

fn proximity_section(w: &mut ReportWriter, rs: &[SizeResult]) {
    w.heading("Proximity of the routing tables");
    w.paragraph(
        "Per row, over about 1,000 nodes spread over the id space at the main measurement: each entry's delay \
         from its node over the delay to the nearest ready node that fits the same slot, and the share of \
         entries that are that nearest node. Row 0 decides the first hop, the one proximity can make short.",
    );
    let mut rows = Vec::new();
    for r in rs {
        for x in &r.proximity {
            rows.push(vec![
                r.n.to_string(),
                x.row.to_string(),
                x.entries.to_string(),
                format!("{:.2}", x.mean_ratio),
                pct(x.nearest_share, 1),
            ]);
        }
    }
    w.table(
        &["N", "row", "entries", "delay / nearest (mean)", "nearest"],
        &rows,
    );
    w.paragraph(
        "Stretch against time since the last join (the main measurement included; the others route fewer lookups): \
         routing-table maintenance keeps bringing nearer nodes into the tables.",
    );
    let mut rows = Vec::new();
    for r in rs {
        for c in &r.convergence {
            rows.push(vec![
                r.n.to_string(),
                format!("{:.0}", c.0),
                c.1.to_string(),
                format!("{:.2} / {:.2}", c.2, c.3),
            ]);
        }
    }
    w.table(
        &["N", "s since last join", "lookups", "stretch mean / p50"],
        &rows,
    );
}

/// The hop distribution, mean hops against size, and route stretch.
fn figures(w: &mut ReportWriter, rs: &[SizeResult]) -> anyhow::Result<()> {
    let cats: Vec<String> = (0..=8).map(|h| h.to_string()).collect();
    let mut bars = Frame::new("Hop distribution", "hops", "% of lookups").bars(cats);
    for r in rs {
        bars = bars.group(format!("N = {}", r.n), distribution(&r.metrics));
    }
    let mut paper = vec![0.0; 9];
    for (h, v) in PAPER_100K {
        paper[h] = v;
    }
    bars = bars.group("paper, N = 100,000", paper);
    w.bar_chart("hop_distribution.png", &bars)?;
    let chart = Frame::new("Mean hops against network size", "log10 N", "mean hops")
        .lines()
        .series(
            "Petal (measured)",
            rs.iter()
                .map(|r| ((r.n as f64).log10(), r.metrics.mean_hops()))
                .collect(),
        )
        .series(
            "log16 N",
            rs.iter()
                .map(|r| ((r.n as f64).log10(), (r.n as f64).ln() / 16f64.ln()))
                .collect(),
        )
        .series(
            "Pastry paper",
            PAPER_MEAN
                .iter()
                .map(|&(n, h)| ((n as f64).log10(), h))
                .collect(),
        );
    w.line_chart("mean_hops.png", &chart)?;
    let stretch: Vec<(String, Vec<f64>)> = rs
        .iter()
        .map(|r| (format!("N = {}", r.n), r.metrics.stretch.clone()))
        .collect();
    w.cdf_chart(
        "stretch_cdf.png",
        &CdfChart::new(
            "Route stretch (overlay delay / direct delay)",
            "stretch",
            stretch,
        )
        .clip_at(0.999),
    )?;
    let mut conv = Frame::new(
        "Mean stretch against time since the last join",
        "seconds since the last join",
        "mean stretch",
    )
    .lines();
    for r in rs {
        conv = conv.series(
            format!("N = {}", r.n),
            r.convergence.iter().map(|c| (c.0, c.2)).collect(),
        );
        let (first, last) = (
            r.convergence.first().map_or(0.0, |c| c.0),
            r.convergence.last().map_or(0.0, |c| c.0),
        );
        conv = conv.series(
            format!("N = {}, ideal tables", r.n),
            vec![(first, mean(&r.ideal)), (last, mean(&r.ideal))],
        );
    }
    w.line_chart("stretch_convergence.png", &conv)?;
    Ok(())
}
