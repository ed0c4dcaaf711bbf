//! `churn-tradeoff`: the `churn` runs repeated under several liveness settings (heartbeat, leaf-set
//! and routing-table ping intervals, ...) and proximity sampling (`probe_one_in`), to show what
//! maintenance traffic buys: lookup consistency, leaf-set correctness, crash detection and
//! route stretch against messages per node and second.
//! Each variant sets node-config fields over the defaults (the scenario's own `[node]` table
//! is not used); every variant runs each churn rate with the seed `churn` uses for it, so the
//! variant without overrides reproduces the `churn` report's figures.

use std::path::Path;

use serde::Deserialize;
use serde_json::json;

use super::churn::{self, Summary};
use super::common::{finish, pct};
use super::pool::map_in_order;
use super::{NodeOverrides, Outcome, Progress, Scenario, Threads};
use crate::engine::derive_seed;
use crate::report::{Frame, ReportWriter, TargetRow, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Variant {
    /// Its name in tables and legends.
    name: String,
    /// Node-config fields set over the defaults (none: the defaults themselves).
    #[serde(default)]
    node: NodeOverrides,
}

/// One variant at one churn rate.
struct Point {
    variant: usize,
    median_s: u64,
    s: Summary,
}

pub(super) fn run(
    sc: &Scenario,
    out: &Path,
    progress: &Progress,
    threads: &Threads,
) -> anyhow::Result<Outcome> {
    let mut table = sc.params.clone();
    let variants = table
        .remove("variants")
        .ok_or_else(|| anyhow::anyhow!("churn-tradeoff: `variants` missing"))?;
    let variants = Vec::<Variant>::deserialize(variants)?;
    let p = churn::Params::deserialize(toml::Value::Table(table))?;
    let configs = variants
        .iter()
        .map(|v| v.node.apply())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let defaults = configs
        .iter()
        .position(|c| *c == petal_core::Config::default());
    anyhow::ensure!(
        defaults.is_some() && !p.median_session_s.is_empty(),
        "churn-tradeoff: one variant must keep the defaults, and one churn rate is needed"
    );
    let rates = p.median_session_s.len();
    let n = variants.len() * rates;
    progress.set_len(n as u64 * (p.duration_s + 1));
    let done = map_in_order(threads, n, |k| {
        let (v, j) = (k / rates, k % rates);
        let median_s = p.median_session_s[j];
        let mut sim = sc.new_sim(derive_seed(sc.seed, "churn-run", j as u64), &configs[v])?;
        let r = churn::churn_run(&mut sim, &p, median_s, progress, k);
        let s = churn::summary(&p, &r);
        Ok((
            Point {
                variant: v,
                median_s,
                s,
            },
            sim.metrics.events,
            sim.metrics.messages,
        ))
    })?;
    progress.finish();
    let events = done.iter().map(|d| d.1).sum();
    let messages = done.iter().map(|d| d.2).sum();
    let points: Vec<Point> = done.into_iter().map(|d| d.0).collect();
    let d = defaults.unwrap_or(0);
    write_report(
        sc,
        &p,
        &variants,
        &configs,
        d,
        &points,
        out,
        (events, messages),
    )
}

/// True when `a` is better than `d` at every churn rate: fewer maintenance messages, and
/// consistency, success and leaf-set correctness no worse, median detection within the
/// target (1.5 s) or no slower, no more live nodes declared dead, mean route stretch no
/// longer (a NaN figure, from a run without samples, never beats anything).
fn dominates(a: &[&Point], d: &[&Point]) -> bool {
    a.iter().zip(d).all(|(a, d)| {
        let (a, d) = (&a.s, &d.s);
        a.maint_mps < d.maint_mps
            && a.consistency >= d.consistency
            && a.success >= d.success
            && a.leaf_mean >= d.leaf_mean
            && a.det50 <= d.det50.max(1.5)
            && a.false_deaths <= d.false_deaths
            && a.stretch_mean <= d.stretch_mean
    })
}

fn settings(c: &petal_core::Config) -> String {
    format!(
        "heartbeat {} s, leaf pings {} s, route pings {} s, leaf exchange {} s, probes 1 in {}",
        c.heartbeat_interval.as_secs_f64(),
        c.leaf_ping_interval.as_secs_f64(),
        c.routing_ping_interval.as_secs_f64(),
        c.leaf_exchange_interval.as_secs_f64(),
        c.probe_one_in
    )
}

#[expect(clippy::too_many_arguments, reason = "one report, its parts named")]
fn write_report(
    sc: &Scenario,
    p: &churn::Params,
    variants: &[Variant],
    configs: &[petal_core::Config],
    defaults: usize,
    points: &[Point],
    out: &Path,
    (events, messages): (u64, u64),
) -> anyhow::Result<Outcome> {
    let mut w = ReportWriter::new(out, &sc.name, &sc.description);
    w.heading("Results");
    w.paragraph(&format!(
        "The `churn` workload (see its report for the method) under {} settings, each at median \
         sessions of {} s. Every setting runs a churn rate with the same seed, so it meets the same topology, \
         node ids, crash times and arrivals; \"{}\" is the default configuration. Maintenance counts every \
         message but lookups' own and their replies. \"Probes 1 in n\": a node probes about one candidate in n \
         for a routing-table slot already held by a measured entry (`probe_one_in`; 1 probes them all). \
         Stretch: delay of each delivered lookup's overlay route over the direct delay, mean / median. The \
         figures draw two families of settings, each through the defaults: liveness intervals (every \
         candidate probed) and proximity sampling (default intervals); a variant that changes both is in \
         the table only.",
        variants.len(),
        p.median_session_s
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        variants[defaults].name
    ));
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|pt| {
            vec![
                variants[pt.variant].name.clone(),
                settings(&configs[pt.variant]),
                format!("{} s", pt.median_s),
                format!("{:.2}", pt.s.maint_mps),
                format!("{:.0}", pt.s.maint_bps),
                pct(pt.s.consistency, 3),
                pct(pt.s.success, 3),
                pct(pt.s.leaf_mean, 2),
                format!("{:.2} s", pt.s.det50),
                pt.s.false_deaths.to_string(),
                format!("{:.2} / {:.2}", pt.s.stretch_mean, pt.s.stretch_p50),
            ]
        })
        .collect();
    w.table(
        &[
            "variant",
            "settings",
            "median session",
            "maintenance msg/s per node",
            "B/s per node",
            "consistency",
            "success",
            "leaf sets right (mean)",
            "detection p50",
            "live nodes declared dead",
            "stretch",
        ],
        &rows,
    );
    let of = |v: usize| -> Vec<&Point> { points.iter().filter(|pt| pt.variant == v).collect() };
    let better: Vec<&str> = (0..variants.len())
        .filter(|&v| v != defaults && dominates(&of(v), &of(defaults)))
        .map(|v| variants[v].name.as_str())
        .collect();
    w.targets(&[TargetRow::new(
        "no setting measured beats the defaults on every figure at every churn rate",
        "none",
        if better.is_empty() {
            "none".to_string()
        } else {
            better.join(", ")
        },
        Verdict::from_met(better.is_empty()),
    )]);
    charts(&mut w, p, configs, defaults, points)?;
    let json_variants: Vec<serde_json::Value> = variants
        .iter()
        .zip(configs)
        .enumerate()
        .map(|(v, (var, c))| {
            json!({
                "name": var.name,
                "defaults": v == defaults,
                "heartbeat_interval_ms": c.heartbeat_interval.as_millis(),
                "leaf_ping_interval_ms": c.leaf_ping_interval.as_millis(),
                "routing_ping_interval_ms": c.routing_ping_interval.as_millis(),
                "leaf_exchange_interval_ms": c.leaf_exchange_interval.as_millis(),
                "probe_one_in": c.probe_one_in,
                "runs": of(v).iter().map(|pt| json!({
                    "median_session_s": pt.median_s,
                    "maintenance_msgs_per_node_s": pt.s.maint_mps,
                    "maintenance_bytes_per_node_s": pt.s.maint_bps,
                    "consistency": pt.s.consistency,
                    "success": pt.s.success,
                    "leaf_set_correctness_mean": pt.s.leaf_mean,
                    "detection_p50_s": pt.s.det50,
                    "false_deaths": pt.s.false_deaths,
                    "stretch_mean": pt.s.stretch_mean,
                    "stretch_p50": pt.s.stretch_p50,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let results = json!({ "scenario": sc.name, "seed": sc.seed, "variants": json_variants });
    finish(&w, &results, events, messages)
}

/// The figures: each figure of a run against its maintenance traffic, one curve per family of
/// settings and churn rate.
fn charts(
    w: &mut ReportWriter,
    p: &churn::Params,
    configs: &[petal_core::Config],
    defaults: usize,
    points: &[Point],
) -> anyhow::Result<()> {
    for (file, title, y, get, percent) in [
        (
            "consistency.png",
            "Lookup consistency against maintenance traffic",
            "% of lookups delivered at the right node",
            (|s: &Summary| s.consistency * 100.0) as fn(&Summary) -> f64,
            true,
        ),
        (
            "leaf_sets.png",
            "Leaf-set correctness against maintenance traffic",
            "% of ready nodes with exactly the right leaf set (mean)",
            |s: &Summary| s.leaf_mean * 100.0,
            true,
        ),
        (
            "detection.png",
            "Crash detection against maintenance traffic",
            "median seconds from a crash to its first declaration",
            |s: &Summary| s.det50,
            false,
        ),
        (
            "stretch.png",
            "Route stretch against maintenance traffic",
            "mean stretch of delivered lookups (overlay delay / direct delay)",
            |s: &Summary| s.stretch_mean,
            false,
        ),
    ] {
        let mut c = Frame::new(title, "maintenance messages per node and second", y).lines();
        if percent {
            c = c.percent();
        }
        // Two families of settings, each a curve through the defaults: liveness intervals
        // (every candidate probed) and proximity sampling (default intervals).
        let liveness = |v: usize| configs[v].probe_one_in == 1;
        let sampling = |v: usize| {
            v == defaults
                || (configs[v].probe_one_in > 1 && {
                    let mut c = configs[v].clone();
                    c.probe_one_in = 1;
                    c == configs[defaults]
                })
        };
        for &median_s in &p.median_session_s {
            for (family, member) in [
                ("liveness settings", &liveness as &dyn Fn(usize) -> bool),
                ("probe sampling", &sampling),
            ] {
                let mut xy: Vec<(f64, f64)> = points
                    .iter()
                    .filter(|pt| pt.median_s == median_s && member(pt.variant))
                    .map(|pt| (pt.s.maint_mps, get(&pt.s)))
                    .collect();
                if xy.len() < 2 {
                    continue;
                }
                xy.sort_by(|a, b| a.0.total_cmp(&b.0));
                c = c.series(format!("{family}, median session {median_s} s"), xy);
            }
        }
        w.line_chart(file, &c)?;
    }
    Ok(())
}
