//! `partition-messaging`: the messaging workload (requests, publish/subscribe, broadcasts,
//! tunnels) while the network is whole, split into two random halves, and healed: request
//! outcomes per phase, event delivery (within the publisher's side during the split), and how
//! fast service is back after the heal.

use std::path::Path;
use std::time::Duration;

use petal_core::{GroupKind, Time};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use super::app_workload::{
    TREE_COUNTERS, Workload, WorkloadParams, cluster_name, event_stats_where, topic_name,
    tree_counters,
};
use super::common::{
    Levels, STEP_MS, Window, advance_ms, delivery_series, finish, grow, messaging_targets,
    network_faults_paragraph, pct, per_second_json, warm_up, with_nodes, zero_target,
};
use super::{Outcome, Progress, Scenario};
use crate::apps::EventRecord;
use crate::engine::Sim;
use crate::report::{Frame, ReportWriter, TargetRow, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    nodes: u64,
    join_spacing_ms: u64,
    /// Overlay settling before the applications start.
    settle_s: u64,
    /// Applications registered, trees forming, before the workload starts.
    warmup_s: u64,
    /// Whole network with the workload before the split.
    before_s: u64,
    /// Length of the split.
    split_s: u64,
    /// Observation after the heal.
    after_s: u64,
    /// After the run: no new work, outstanding work ends.
    drain_s: u64,
    /// Event oracle: a recipient must be present this long before an event...
    event_settle_s: u64,
    /// ... and this long after it.
    event_grace_s: u64,
    /// Service is back once each 1 s bucket has at least this fraction of requests answered
    /// (and every event reached every stable recipient).
    answered_threshold: f64,
    /// Target: service back within this long after the heal.
    recovery_bound_s: u64,
    /// Targets by phase (before, split, after): judged requests answered...
    answered_targets: [f64; 3],
    /// ... expected event deliveries made exactly once...
    events_targets: [f64; 3],
    /// ... and tunnels completed.
    tunnels_targets: [f64; 3],
    workload: WorkloadParams,
}

/// The index of phase `name` in the per-phase targets.
fn phase_index(name: &str) -> usize {
    match name {
        "before" => 0,
        "split" => 1,
        _ => 2,
    }
}

/// When the network split and healed, and who was on which side.
struct Split {
    start: Time,
    split_at: Time,
    heal_at: Time,
    end: Time,
    side: Vec<u8>,
}

impl Split {
    fn side_of(&self, n: u32) -> u8 {
        self.side.get(n as usize).copied().unwrap_or(0)
    }
}

/// What the run saw: by phase and by second, the time service took to come back, who was on
/// which side, and the tree counters over the run.
struct Judged {
    phases: [(&'static str, Window); 3],
    buckets: Vec<Window>,
    recovery_s: Option<u64>,
    sides: Vec<(String, [u64; 2])>,
    counters: serde_json::Map<String, serde_json::Value>,
    /// Judged requests issued before the split without a reply: how many were still
    /// outstanding when it began, and how many there are.
    caught_by_split: (u64, u64),
}

pub(super) fn run(
    sc: &Scenario,
    node: petal_core::Config,
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    let p: Params = sc.params()?;
    let mut sim = sc.new_sim(sc.seed, &node)?;
    grow(
        &mut sim,
        p.nodes,
        p.join_spacing_ms,
        p.settle_s * 1000,
        |_| {},
    );
    let mut wl = warm_up(&mut sim, &p.workload, p.warmup_s)?;
    let counters_before = tree_counters(&sim);
    let split = split_and_heal(&mut sim, &mut wl, &p, progress);
    let counters_after = tree_counters(&sim);
    let counters: serde_json::Map<String, serde_json::Value> = TREE_COUNTERS
        .iter()
        .zip(counters_after.iter().zip(counters_before.iter()))
        .map(|((k, _), (a, b))| (k.to_string(), json!(a - b)))
        .collect();
    let judged = judge(&sim, &p, &split, counters);
    write_report(sc, &p, &sim, &judged, out)
}

/// Runs the workload with the network whole, split into random halves, and healed, then lets
/// outstanding work end.
fn split_and_heal(sim: &mut Sim, wl: &mut Workload, p: &Params, progress: &Progress) -> Split {
    let start = sim.now();
    let total_s = p.before_s + p.split_s + p.after_s;
    progress.set_len(total_s);
    let split_at = start + Duration::from_secs(p.before_s);
    let heal_at = split_at + Duration::from_secs(p.split_s);
    let end = heal_at + Duration::from_secs(p.after_s);
    // Random halves, from the engine's generator.
    let side: Vec<u8> = (0..sim.node_count())
        .map(|_| sim.rng().random_range(0..2u8))
        .collect();
    let mut split = false;
    while sim.now() < end {
        let now = sim.now();
        if !split && now >= split_at && now < heal_at {
            sim.partition(|i| side.get(i as usize).copied().unwrap_or(0));
            split = true;
        }
        if split && now >= heal_at {
            sim.heal();
            split = false;
        }
        wl.adopt_ready(sim);
        wl.tick(sim, now);
        let secs = (now.as_micros() - start.as_micros()) / 1_000_000;
        progress.set(secs, (if split { "split" } else { "whole" }).to_string());
        sim.run_until(Time::from_micros(now.as_micros() + STEP_MS * 1000));
    }
    // No new work: what is outstanding ends (answered or timed out).
    advance_ms(sim, p.drain_s * 1000);
    progress.finish();
    Split {
        start,
        split_at,
        heal_at,
        end,
        side,
    }
}

/// Judges the phases and seconds of the run, and finds when service was back.
fn judge(
    sim: &Sim,
    p: &Params,
    s: &Split,
    counters: serde_json::Map<String, serde_json::Value>,
) -> Judged {
    let (start, split_at, heal_at, end) = (s.start, s.split_at, s.heal_at, s.end);
    let total_s = p.before_s + p.split_s + p.after_s;
    let (settle, grace) = (
        Duration::from_secs(p.event_settle_s),
        Duration::from_secs(p.event_grace_s),
    );
    // An event whose delivery window meets the split counts its publisher's side only.
    let side_of = |n: u32| s.side_of(n);
    let counts = |e: &EventRecord, n: u32| {
        let restricted = e.at < heal_at && e.at + grace >= split_at;
        !restricted || side_of(e.node) == side_of(n)
    };
    let now = sim.now();
    let window = |from: Time, to: Time| Window {
        requests: sim.apps.request_stats(from, to, now),
        events: event_stats_where(&sim.apps, from, to, settle, grace, counts),
        tunnels: sim.apps.tunnel_stats(from, to),
    };
    let phases = [
        ("before", window(start, split_at)),
        ("split", window(split_at, heal_at)),
        ("after", window(heal_at, end)),
    ];
    let buckets: Vec<Window> = (0..total_s)
        .map(|s| {
            let from = start + Duration::from_secs(s);
            window(from, from + Duration::from_secs(1))
        })
        .collect();
    // Service is back from the first second after the heal from which every second meets both.
    // (A second with no judged request does not count against it.)
    let ok = |b: &Window| {
        (b.requests.judged == 0 || b.requests.answered_ratio() >= p.answered_threshold)
            && b.events.once == b.events.expected
    };
    let after = &buckets[crate::to_usize(p.before_s + p.split_s)..];
    let recovery_s = after
        .iter()
        .rposition(|b| !ok(b))
        .map_or(Some(0), |k| (k + 1 < after.len()).then_some(k as u64 + 1));

    Judged {
        phases,
        buckets,
        recovery_s,
        sides: sides_of_groups(sim, p, s),
        counters,
        caught_by_split: sim
            .apps
            .unanswered_outstanding_at(start, split_at, split_at, now),
    }
}

/// Who is where: members and subscribers by side.
fn sides_of_groups(sim: &Sim, p: &Params, s: &Split) -> Vec<(String, [u64; 2])> {
    let mut sides = Vec::new();
    let groups = (0..p.workload.clusters)
        .map(|k| (GroupKind::Cluster, cluster_name(k)))
        .chain((0..p.workload.topics).map(|k| (GroupKind::Topic, topic_name(k))));
    for (kind, name) in groups {
        let mut n = [0u64; 2];
        for a in sim.apps.list.iter().filter(|a| a.until.is_none()) {
            let member = match kind {
                GroupKind::Cluster => a.spec.cluster.as_deref() == Some(name.as_str()),
                GroupKind::Topic => a.topics.contains_key(&name),
            };
            if member {
                n[s.side_of(a.node) as usize] += 1;
            }
        }
        sides.push((name, n));
    }
    sides
}

fn write_report(
    sc: &Scenario,
    p: &Params,
    sim: &Sim,
    j: &Judged,
    out: &Path,
) -> anyhow::Result<Outcome> {
    let mut w = ReportWriter::new(out, &sc.name, &sc.description);
    w.heading("Results");
    w.paragraph(&format!(
        "{} nodes join ({} ms apart) and settle for {} s; then every ready node gets its application and \
         the trees form for {} s. {} The workload runs for {} s with the network whole, {} s split into two \
         random halves (messages between halves are dropped; every cluster and topic has members on both \
         sides, see below), and {} s after the heal; then new work stops for {} s so that everything \
         outstanding ends. Requests are judged when their requester lived until 1 s past the deadline: each \
         must have exactly one outcome (a reply, a fault or a timeout) and a reply must answer that very \
         request. Events are judged for the recipients present from {} s before to {} s after the event; \
         for an event published while split, or less than {} s before the split, only recipients on the \
         publisher's side count, otherwise all. Service is back after the heal from the first 1 s bucket \
         from which every bucket has at least {} of its requests answered and every event delivered to \
         every stable recipient on both sides.",
        p.nodes,
        p.join_spacing_ms,
        p.settle_s,
        p.warmup_s,
        p.workload.describe(),
        p.before_s,
        p.split_s,
        p.after_s,
        p.drain_s,
        p.event_settle_s,
        p.event_grace_s,
        p.event_grace_s,
        pct(p.answered_threshold, 1),
    ));
    if let Some(text) = network_faults_paragraph(sim) {
        w.paragraph(&text);
    }
    let (json_phases, mut targets) = phases_table(&mut w, p, &j.phases);
    let (caught, unanswered) = j.caught_by_split;
    if unanswered > 0 {
        w.paragraph(&format!(
            "Of the {unanswered} judged requests issued before the split that were not answered (timed out \
             or without an outcome), {caught} were still outstanding when it began: the split caught them in \
             flight. They count in the before phase all the same."
        ));
    }
    let side_rows: Vec<Vec<String>> = j
        .sides
        .iter()
        .map(|(name, n)| vec![name.clone(), n[0].to_string(), n[1].to_string()])
        .collect();
    w.subheading("Members and subscribers by side");
    w.table(&["cluster or topic", "side 0", "side 1"], &side_rows);
    let stray = sim.apps.stray_events;
    let recovery_s = j.recovery_s;
    let recovery = recovery_s.map_or("never".to_string(), |s| format!("{s} s"));
    targets.push(zero_target(
        "stray application events (for no known request, tunnel or live application)",
        stray,
        String::new(),
    ));
    targets.push(TargetRow::new(
        "service back after the heal",
        format!("within {} s", p.recovery_bound_s),
        recovery.clone(),
        Verdict::from_met(recovery_s.is_some_and(|s| s <= p.recovery_bound_s)),
    ));
    w.targets(&targets);
    let [answered, delivered] = delivery_series(&j.buckets);
    let c = Frame::new(
        format!(
            "Delivery per second (split from {} s to {} s)",
            p.before_s,
            p.before_s + p.split_s
        ),
        "seconds",
        "%",
    )
    .lines()
    .percent()
    .series("requests answered", answered)
    .series("events delivered (own side while split)", delivered)
    .hline(
        format!("threshold {}", pct(p.answered_threshold, 0)),
        p.answered_threshold * 100.0,
    );
    w.line_chart("delivery_per_second.png", &c)?;
    let results = json!({
        "scenario": sc.name, "seed": sc.seed, "phases": json_phases,
        "recovery_after_heal_s": recovery_s,
        "before_unanswered": unanswered,
        "before_unanswered_outstanding_at_split": caught,
        "stray_events": stray,
        "sides": j.sides.iter().map(|(name, n)| json!({"group": name, "side0": n[0], "side1": n[1]})).collect::<Vec<_>>(),
        "tree_counters": j.counters,
        "per_second": per_second_json(&j.buckets),
        "trace_hash": format!("{:016x}", sim.trace_hash()),
    });
    finish(&w, &results, sim.metrics.events, sim.metrics.messages)
        .map(|o| with_nodes(o, sim.node_count()))
}

/// The table of phases with its notes; returns the phases' JSON and targets.
fn phases_table(
    w: &mut ReportWriter,
    p: &Params,
    phases: &[(&'static str, Window); 3],
) -> (serde_json::Map<String, serde_json::Value>, Vec<TargetRow>) {
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut json_phases = serde_json::Map::new();
    for (name, ph) in phases {
        let (q, e, t) = (&ph.requests, &ph.events, &ph.tunnels);
        rows.push(vec![
            name.to_string(),
            q.issued.to_string(),
            q.judged.to_string(),
            q.replies.to_string(),
            q.faults.to_string(),
            q.timeouts.to_string(),
            format!("{} / {} / {}", q.missing, q.multiple, q.wrong),
            pct(q.answered_ratio(), 2),
            pct(q.one_outcome_ratio(), 2),
            format!("{} of {}", e.once, e.expected),
            pct(e.delivered_ratio(), 2),
            e.duplicates.to_string(),
            format!(
                "{} / {} / {} / {} / {}",
                t.opened, t.completed, t.failed, t.open_failed, t.corrupt
            ),
        ]);
        let k = phase_index(name);
        targets.extend(messaging_targets(
            ["before the split", "during the split", "after the heal"][k],
            q,
            e,
            t,
            0,
            Levels {
                answered: p.answered_targets[k],
                events: p.events_targets[k],
                tunnels: Some(p.tunnels_targets[k]),
            },
        ));
        json_phases.insert(
            name.to_string(),
            super::common::messaging_window_json(q, e, t),
        );
    }
    w.table(
        &[
            "phase",
            "requests",
            "judged",
            "replies",
            "faults",
            "timeouts",
            "missing / multiple / wrong",
            "answered",
            "exactly one outcome",
            "events delivered once",
            "event delivery",
            "duplicates",
            "tunnels opened / completed / failed / open failed / corrupt",
        ],
        &rows,
    );
    let reasons: Vec<String> = phases
        .iter()
        .flat_map(|(name, ph)| {
            ph.tunnels
                .reasons
                .iter()
                .map(move |(k, v)| format!("{name}: {v} × {k}"))
        })
        .collect();
    w.paragraph(
        "Events delivered once are over expected (event, recipient) pairs; duplicates are deliveries \
         beyond the first of the phase's events, to anyone. Tunnels: opened, completed (every message \
         echoed in order, closed gracefully), failed with a reason, failed to open, and corrupt.",
    );
    if !reasons.is_empty() {
        w.paragraph(&format!("Tunnel failure reasons: {}.", reasons.join("; ")));
    }
    (json_phases, targets)
}
