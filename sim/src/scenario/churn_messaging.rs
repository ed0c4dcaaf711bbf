//! `churn-messaging`: the messaging workload (requests, publish/subscribe, broadcasts, tunnels)
//! on a steady population under Poisson churn (exponential sessions with a given median, a new
//! node for each crash); request outcomes, event delivery to stable recipients, tunnel
//! outcomes, delivery over time and group-tree repair.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use petal_core::{GroupKind, Time};
use serde::Deserialize;
use serde_json::json;

use super::app_workload::{RepairTracker, TREE_COUNTERS, WorkloadParams, tree_counters};
use super::common::{
    Levels, STEP_MS, advance_ms, exp_us, finish, grow, messaging_targets, ms_quantiles, pct,
    session_us, warm_up,
};
use super::pool::map_in_order;
use super::{Outcome, Progress, Scenario, Threads};
use crate::engine::{Sim, derive_seed};
use crate::metrics::quantile;
use crate::oracle::{EventStats, RequestStats, TunnelStats};
use crate::report::{CdfChart, Frame, ReportWriter};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    nodes: u64,
    /// One run per median session time, in seconds.
    median_session_s: Vec<u64>,
    /// Churn phase length (the measured window).
    duration_s: u64,
    join_spacing_ms: u64,
    /// Overlay settling before the applications start.
    settle_s: u64,
    /// Applications registered, trees forming, before churn and workload start.
    warmup_s: u64,
    /// After the churn phase: no churn, no new work, outstanding work ends.
    drain_s: u64,
    /// Event oracle: a recipient must be present this long before an event...
    event_settle_s: u64,
    /// ... and this long after it.
    event_grace_s: u64,
    /// Width of the delivery-over-time buckets.
    bucket_s: u64,
    workload: WorkloadParams,
}

/// Delivery in one time bucket: requests answered and events delivered, over those judged.
struct Bucket {
    t_s: u64,
    requests: RequestStats,
    events: EventStats,
}

struct Run {
    median_s: u64,
    requests: RequestStats,
    topics: EventStats,
    broadcasts: EventStats,
    events: EventStats,
    tunnels: TunnelStats,
    buckets: Vec<Bucket>,
    counters: [u64; TREE_COUNTERS.len()],
    repair: RepairTracker,
    crashes: u64,
    arrivals: u64,
    alive_mean: f64,
    apps: usize,
    stray_events: u64,
}

/// The levels each churn rate must reach. With 10-minute sessions (churn as measured in
/// deployed peer-to-peer systems) the service is judged as a stable one with rare losses; with
/// 1-minute sessions (every node replaced about five times in the run) requests and events
/// are lost while trees and leaf sets repair, and the levels are the ones the system reaches
/// there, so that a regression shows as a miss.
fn levels_for(median_s: u64) -> Levels {
    if median_s >= 600 {
        Levels {
            answered: 0.999,
            events: 0.999,
            tunnels: Some(1.0),
        }
    } else {
        Levels {
            answered: 0.99,
            events: 0.97,
            tunnels: Some(0.98),
        }
    }
}

pub(super) fn run(
    sc: &Scenario,
    node: petal_core::Config,
    out: &Path,
    progress: &Progress,
    threads: &Threads,
) -> anyhow::Result<Outcome> {
    let p: Params = sc.params()?;
    anyhow::ensure!(
        p.bucket_s >= 1 && p.duration_s >= p.bucket_s,
        "bucket_s in 1..=duration_s"
    );
    progress.set_len(p.median_session_s.len() as u64 * (p.duration_s + 1));
    // One simulation per churn rate, each seeded by its index: independent of the others.
    let done = map_in_order(threads, p.median_session_s.len(), |k| {
        let seed = derive_seed(sc.seed, "churn-messaging-run", k as u64);
        let mut sim = sc.new_sim(seed, &node)?;
        let run = churn_run(&mut sim, &p, p.median_session_s[k], progress, k)?;
        Ok((run, sim.metrics.events, sim.metrics.messages))
    })?;
    progress.finish();
    let events = done.iter().map(|d| d.1).sum();
    let messages = done.iter().map(|d| d.2).sum();
    let runs: Vec<Run> = done.into_iter().map(|d| d.0).collect();
    write_report(sc, &p, &node, &runs, out, (events, messages))
}

fn churn_run(
    sim: &mut Sim,
    p: &Params,
    median_s: u64,
    progress: &Progress,
    part: usize,
) -> anyhow::Result<Run> {
    grow(sim, p.nodes, p.join_spacing_ms, p.settle_s * 1000, |_| {});
    let mut wl = warm_up(sim, &p.workload, p.warmup_s)?;
    let start = sim.now();
    let mut tracker = RepairTracker::new(sim, wl.group_keys());
    let counters_before = tree_counters(sim);
    let mut deaths: BTreeSet<(u64, u32)> = BTreeSet::new();
    for i in sim.ready_nodes().collect::<Vec<_>>() {
        let t = start.as_micros() + session_us(sim, median_s);
        deaths.insert((t, i));
    }
    // Poisson arrivals at the rate that keeps the population steady.
    let rate_per_us = p.nodes as f64 * std::f64::consts::LN_2 / median_s as f64 / 1e6;
    let mut next_arrival = start.as_micros() + exp_us(sim, rate_per_us);
    let (mut crashes, mut arrivals) = (0, 0);
    let (mut alive_sum, mut samples) = (0.0, 0u64);
    let end = start.as_micros() + p.duration_s * 1_000_000;
    let mut next_sample = start.as_micros();
    while sim.now().as_micros() < end {
        let now = sim.now().as_micros();
        while let Some(&(t, i)) = deaths.first() {
            if t > now {
                break;
            }
            deaths.pop_first();
            tracker.before_crash(sim, i);
            sim.crash(i);
            crashes += 1;
        }
        while next_arrival <= now {
            let i = sim.add_node();
            tracker.node_added(sim, i);
            wl.node_added(i);
            arrivals += 1;
            let t = now + session_us(sim, median_s);
            deaths.insert((t, i));
            next_arrival += exp_us(sim, rate_per_us).max(1);
        }
        wl.adopt_ready(sim);
        let t = sim.now();
        wl.tick(sim, t);
        tracker.poll(sim);
        if now >= next_sample {
            let secs = (now - start.as_micros()) / 1_000_000;
            alive_sum += sim.alive_count() as f64;
            samples += 1;
            progress.set_part(
                part,
                secs,
                format!("median session {median_s} s: {} alive", sim.alive_count()),
            );
            next_sample += 1_000_000;
        }
        sim.run_until(Time::from_micros(now + STEP_MS * 1000));
    }
    let end = Time::from_micros(end);
    // No more churn and no new work: what is outstanding ends (answered or timed out).
    for _ in 0..p.drain_s * 1000 / STEP_MS {
        wl.adopt_ready(sim);
        tracker.poll(sim);
        advance_ms(sim, STEP_MS);
    }
    let counters_after = tree_counters(sim);
    let mut counters = [0; TREE_COUNTERS.len()];
    for (c, (a, b)) in counters
        .iter_mut()
        .zip(counters_after.iter().zip(counters_before.iter()))
    {
        *c = a - b;
    }
    let now = sim.now();
    let (settle, grace) = (
        Duration::from_secs(p.event_settle_s),
        Duration::from_secs(p.event_grace_s),
    );
    let apps = &sim.apps;
    let buckets = (0..p.duration_s / p.bucket_s)
        .map(|b| {
            let from = start + Duration::from_secs(b * p.bucket_s);
            let to = from + Duration::from_secs(p.bucket_s);
            Bucket {
                t_s: b * p.bucket_s,
                requests: apps.request_stats(from, to, now),
                events: apps.event_stats(None, from, to, settle, grace),
            }
        })
        .collect();
    Ok(Run {
        median_s,
        requests: apps.request_stats(start, end, now),
        topics: apps.event_stats(Some(GroupKind::Topic), start, end, settle, grace),
        broadcasts: apps.event_stats(Some(GroupKind::Cluster), start, end, settle, grace),
        events: apps.event_stats(None, start, end, settle, grace),
        tunnels: apps.tunnel_stats(start, end),
        buckets,
        counters,
        repair: tracker,
        crashes,
        arrivals,
        alive_mean: alive_sum / samples.max(1) as f64,
        apps: apps.list.len(),
        stray_events: apps.stray_events,
    })
}

fn secs_q(samples: &[u64], q: f64) -> String {
    quantile(samples, q).map_or("-".into(), |v| format!("{:.2} s", v as f64 / 1e6))
}

fn write_report(
    sc: &Scenario,
    p: &Params,
    node: &petal_core::Config,
    runs: &[Run],
    out: &Path,
    (events, messages): (u64, u64),
) -> anyhow::Result<Outcome> {
    let mut w = ReportWriter::new(out, &sc.name, &sc.description);
    w.heading("Results");
    w.paragraph(&format!(
        "{} nodes join ({} ms apart) and settle for {} s; then every ready node gets its application and \
         the trees form for {} s. For the next {} s nodes crash after exponential sessions with the given \
         median and new nodes arrive as a Poisson process at the rate that keeps the population steady; a \
         new node gets its application as soon as it is ready. {} Afterwards churn and new work stop for \
         {} s so that everything outstanding ends. Requests are judged when their requester lived until \
         1 s past the deadline: each must have exactly one outcome (a reply, a fault or a timeout) and a \
         reply must answer that very request. Events (publishes and broadcasts) are judged for the \
         recipients (subscribers or members) present from {} s before the event to {} s after it, when \
         the publishing node lived that long too; each must get it exactly once. Tree repair: when a node \
         crashes, each live child that hung from it in a cluster or topic tree is an orphan until it hangs \
         from a live new parent that lists it as a child (or becomes the root); orphans that die or leave \
         the tree first are censored.",
        p.nodes,
        p.join_spacing_ms,
        p.settle_s,
        p.warmup_s,
        p.duration_s,
        p.workload.describe(),
        p.drain_s,
        p.event_settle_s,
        p.event_grace_s,
    ));
    let rows = Rows::new(runs);
    tables(&mut w, runs, &rows);
    reading(&mut w, node, &p.workload, runs);
    w.targets(&rows.targets);
    figures(&mut w, p, runs)?;
    let results = json!({ "scenario": sc.name, "seed": sc.seed, "runs": rows.json_runs });
    finish(&w, &results, events, messages)
}

/// The report's tables, a row (or three) per run, with the targets and JSON of each run.
#[derive(Default)]
struct Rows {
    targets: Vec<crate::report::TargetRow>,
    json_runs: Vec<serde_json::Value>,
    req_rows: Vec<Vec<String>>,
    ev_rows: Vec<Vec<String>>,
    tun_rows: Vec<Vec<String>>,
    tree_rows: Vec<Vec<String>>,
}

impl Rows {
    fn new(runs: &[Run]) -> Self {
        let mut rows = Rows::default();
        for r in runs {
            rows.add(r);
        }
        rows
    }

    fn add(&mut self, r: &Run) {
        let Rows {
            targets,
            json_runs,
            req_rows,
            ev_rows,
            tun_rows,
            tree_rows,
        } = self;
        let name = format!("{} s", r.median_s);
        let q = &r.requests;
        let lat = |x| {
            quantile(&q.latencies_us, x).map_or("-".into(), |v| format!("{:.1} ms", v as f64 / 1e3))
        };
        req_rows.push(vec![
            name.clone(),
            q.issued.to_string(),
            q.judged.to_string(),
            q.replies.to_string(),
            q.faults.to_string(),
            q.timeouts.to_string(),
            q.missing.to_string(),
            q.multiple.to_string(),
            q.wrong.to_string(),
            pct(q.answered_ratio(), 3),
            pct(q.one_outcome_ratio(), 3),
            format!("{} / {}", lat(0.5), lat(0.99)),
        ]);
        for (kind, e) in [
            ("publishes", &r.topics),
            ("broadcasts", &r.broadcasts),
            ("all events", &r.events),
        ] {
            ev_rows.push(vec![
                name.clone(),
                kind.to_string(),
                e.events.to_string(),
                e.expected.to_string(),
                e.once.to_string(),
                e.missing.to_string(),
                pct(e.delivered_ratio(), 3),
            ]);
        }
        let t = &r.tunnels;
        let reasons = t
            .reasons
            .iter()
            .map(|(k, v)| format!("{v} × {k}"))
            .collect::<Vec<_>>()
            .join("; ");
        tun_rows.push(vec![
            name.clone(),
            t.opened.to_string(),
            t.completed.to_string(),
            format!(
                "{}{}",
                t.failed,
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!(" ({reasons})")
                }
            ),
            t.open_failed.to_string(),
            t.running.to_string(),
            t.opener_gone.to_string(),
            t.corrupt.to_string(),
        ]);
        let rp = &r.repair;
        let counter = |n: &str| {
            TREE_COUNTERS
                .iter()
                .position(|(k, _)| *k == n)
                .map_or(0, |i| r.counters[i])
        };
        tree_rows.push(vec![
            name.clone(),
            format!("{} / {}", r.crashes, r.arrivals),
            rp.orphans.to_string(),
            format!(
                "{} / {} / {}",
                rp.repairs_us.len(),
                rp.censored,
                rp.unrepaired()
            ),
            format!(
                "{} / {} / {}",
                secs_q(&rp.repairs_us, 0.5),
                secs_q(&rp.repairs_us, 0.9),
                secs_q(&rp.repairs_us, 1.0)
            ),
            counter("group_repairs").to_string(),
            counter("group_parent_changes").to_string(),
            counter("event_gaps").to_string(),
            counter("events_lost").to_string(),
            counter("group_replayed").to_string(),
        ]);
        targets.extend(messaging_targets(
            &format!("{name} median session"),
            q,
            &r.events,
            t,
            r.stray_events,
            levels_for(r.median_s),
        ));
        json_runs.push(run_json(r));
    }
}

/// One run's results as JSON.
fn run_json(r: &Run) -> serde_json::Value {
    let (q, t, rp) = (&r.requests, &r.tunnels, &r.repair);
    let counters: serde_json::Map<String, serde_json::Value> = TREE_COUNTERS
        .iter()
        .zip(r.counters.iter())
        .map(|((k, _), v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "median_session_s": r.median_s,
        "crashes": r.crashes,
        "arrivals": r.arrivals,
        "alive_mean": r.alive_mean,
        "applications": r.apps,
        "requests": q,
        "request_latency": ms_quantiles(&q.latencies_us),
        "answered_ratio": q.answered_ratio(),
        "one_outcome_ratio": q.one_outcome_ratio(),
        "stray_events": r.stray_events,
        "publishes": r.topics,
        "broadcasts": r.broadcasts,
        "events": r.events,
        "events_delivered_ratio": r.events.delivered_ratio(),
        "tunnels": t,
        "tree_counters": counters,
        "tree_repair": {
            "orphans": rp.orphans,
            "repaired": rp.repairs_us.len(),
            "censored": rp.censored,
            "unrepaired": rp.unrepaired(),
            "time": ms_quantiles(&rp.repairs_us),
        },
        "buckets": r.buckets.iter().map(|b| json!({
            "t_s": b.t_s,
            "requests_judged": b.requests.judged,
            "requests_answered_ratio": b.requests.answered_ratio(),
            "events_expected": b.events.expected,
            "events_delivered_ratio": b.events.delivered_ratio(),
        })).collect::<Vec<_>>(),
    })
}

/// The requests, events, tunnels and tree-repair tables.
fn tables(w: &mut ReportWriter, runs: &[Run], rows: &Rows) {
    let Rows {
        req_rows,
        ev_rows,
        tun_rows,
        tree_rows,
        ..
    } = rows;
    w.subheading("Requests");
    w.table(
        &[
            "median session",
            "issued",
            "judged",
            "replies",
            "faults",
            "timeouts",
            "missing",
            "multiple",
            "wrong",
            "answered",
            "exactly one outcome",
            "latency p50 / p99",
        ],
        req_rows,
    );
    w.subheading("Events");
    w.table(
        &[
            "median session",
            "kind",
            "events",
            "expected deliveries",
            "delivered once",
            "missing",
            "delivered",
        ],
        ev_rows,
    );
    let dups: Vec<String> = runs
        .iter()
        .map(|r| format!("{} with {} s sessions", r.events.duplicates, r.median_s))
        .collect();
    w.paragraph(&format!(
        "Deliveries beyond the first (duplicates, to anyone): {}.",
        dups.join(", ")
    ));
    w.subheading("Tunnels");
    w.table(
        &[
            "median session",
            "opened",
            "completed",
            "failed (reasons)",
            "open failed",
            "running at the end",
            "opener's node gone (not judged)",
            "corrupt",
        ],
        tun_rows,
    );
    w.subheading("Tree repair");
    w.table(
        &[
            "median session",
            "crashes / arrivals",
            "orphans",
            "repaired / censored / unrepaired",
            "repair time p50 / p90 / max",
            "group_repairs",
            "group_parent_changes",
            "event_gaps",
            "events_lost",
            "group_replayed",
        ],
        tree_rows,
    );
    w.paragraph(
        "The counters are petal-core's `Stats` summed over every node (crashed ones included) over the \
         churn phase and the drain: `group_repairs` counts trees re-grafted at once because the parent was \
         declared dead, `group_parent_changes` moves to a new parent when the route to the root changed, \
         `event_gaps` replays asked for after a gap in a tree's event sequence, `events_lost` events \
         skipped when a gap could not be replayed, `group_replayed` events replayed to a (re)grafting child. \
         The repair time runs from a parent's crash to its orphan hanging from a new parent; it includes the \
         time to declare the parent dead (or for a refresh to find a new route).",
    );
}

/// Why events go missing and how long repairs take, against the node configuration.
fn reading(w: &mut ReportWriter, node: &petal_core::Config, wp: &WorkloadParams, runs: &[Run]) {
    let per_tree =
        |rate: f64, trees: u32| node.group_replay_events as f64 / (rate / f64::from(trees.max(1)));
    let p90: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{} with {} s sessions",
                secs_q(&r.repair.repairs_us, 0.9),
                r.median_s
            )
        })
        .collect();
    w.paragraph(&format!(
        "Reading: an event goes missing when it is cast while its recipient's branch hangs from a crashed \
         parent and the branch's new parent no longer holds it when the branch grafts (`events_lost`). An \
         orphan moves once its parent is declared dead: group parents are pinged every {} s like leaf-set \
         members, so a dead parent is found out within about {} s (measured repair time p90: {}; a \
         repair can take longer when the new parent dies too), while the replay buffer of {} \
         events per tree holds about {:.0} s of a topic's events at this rate and {:.0} s of a cluster's \
         broadcasts.",
        node.leaf_ping_interval.as_secs_f64(),
        (node.leaf_ping_interval + node.ping_timeout * node.suspicion_misses).as_secs_f64(),
        p90.join(", "),
        node.group_replay_events,
        per_tree(wp.publishes_per_s, wp.topics),
        per_tree(wp.broadcasts_per_s, wp.clusters),
    ));
}

/// Delivery over time and the tree repair CDF.
fn figures(w: &mut ReportWriter, p: &Params, runs: &[Run]) -> anyhow::Result<()> {
    let mut c = Frame::new(
        format!("Delivery over time ({} s buckets)", p.bucket_s),
        "seconds of churn",
        "%",
    )
    .lines()
    .percent();
    for r in runs {
        let pts = |f: &dyn Fn(&Bucket) -> Option<f64>| -> Vec<(f64, f64)> {
            r.buckets
                .iter()
                .filter_map(|b| f(b).map(|v| (b.t_s as f64, v * 100.0)))
                .collect()
        };
        c = c.series(
            format!("requests answered, {} s sessions", r.median_s),
            pts(&|b| (b.requests.judged > 0).then(|| b.requests.answered_ratio())),
        );
        c = c.series(
            format!("events delivered, {} s sessions", r.median_s),
            pts(&|b| (b.events.expected > 0).then(|| b.events.delivered_ratio())),
        );
    }
    w.line_chart("delivery_over_time.png", &c.hline("target", 99.9))?;
    let rep: Vec<(String, Vec<f64>)> = runs
        .iter()
        .map(|r| {
            (
                format!("median session {} s", r.median_s),
                r.repair
                    .repairs_us
                    .iter()
                    .map(|&v| v as f64 / 1e6)
                    .collect(),
            )
        })
        .collect();
    w.cdf_chart(
        "tree_repair_cdf.png",
        &CdfChart::new(
            "Tree repair time",
            "seconds from a parent's crash to its orphan hanging from a new parent",
            rep,
        ),
    )?;
    Ok(())
}
