//! `partition`: split the overlay into two halves for a while, then heal; what lookups see
//! during the split and how long until every leaf set is right again.

use std::path::Path;

use petal_core::{Key, Time};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use super::common::{finish, grow, pct, with_nodes};
use super::{Outcome, Progress, Scenario};
use crate::metrics::Metrics;
use crate::report::{Frame, ReportWriter, TargetRow, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    nodes: u64,
    join_spacing_ms: u64,
    settle_s: u64,
    /// Whole network before the split.
    before_s: u64,
    /// Length of the split.
    split_s: u64,
    /// Observation after the heal.
    after_s: u64,
    lookups_per_s: u64,
    /// Leaf-set correctness sampling period.
    sample_ms: u64,
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
    let start = sim.now().as_micros();
    sim.metrics = Metrics::new(1_000_000);
    let total_ms = (p.before_s + p.split_s + p.after_s) * 1000;
    progress.set_len(total_ms / 1000);
    let split_at = start + p.before_s * 1_000_000;
    let heal_at = split_at + p.split_s * 1_000_000;
    // Random halves, from the engine's generator.
    let side: Vec<u8> = (0..sim.node_count())
        .map(|_| sim.rng().random_range(0..2u8))
        .collect();
    let mut samples = Vec::new();
    let mut healed_at_ok: Option<f64> = None;
    let gap_us = 1_000_000 / p.lookups_per_s.max(1);
    let mut next_lookup = start;
    let mut next_sample = start;
    let mut split = false;
    let end = start + total_ms * 1000;
    while sim.now().as_micros() < end {
        let now = sim.now().as_micros();
        if !split && now >= split_at && now < heal_at {
            sim.partition(|i| side[i as usize]);
            split = true;
        }
        if split && now >= heal_at {
            sim.heal();
            split = false;
        }
        while next_lookup <= now {
            if let Some(from) = sim.random_ready() {
                let key = Key(sim.rng().random());
                sim.lookup(from, key);
            }
            next_lookup += gap_us;
        }
        if now >= next_sample {
            let ok = sim.leaf_set_correctness();
            let t = (now - start) as f64 / 1e6;
            samples.push((t, ok));
            if now >= heal_at && ok == 1.0 && healed_at_ok.is_none() {
                healed_at_ok = Some((now - heal_at) as f64 / 1e6);
            }
            if ok < 1.0 && now >= heal_at {
                healed_at_ok = None;
            }
            #[expect(
                clippy::cast_possible_truncation,
                reason = "whole seconds into the run, for the progress bar"
            )]
            progress.set(
                t as u64,
                (if split { "split" } else { "whole" }).to_string(),
            );
            next_sample += p.sample_ms * 1000;
        }
        sim.run_until(Time::from_micros(now + 10_000));
    }
    progress.finish();
    let phase_of = |i: usize| {
        let t = (i as u64) * 1_000_000;
        if t < split_at {
            "before"
        } else if t < heal_at {
            "split"
        } else {
            "after"
        }
    };
    let mut phases = std::collections::BTreeMap::<&str, crate::metrics::Bucket>::new();
    for (i, b) in sim.metrics.buckets.iter().enumerate() {
        phases.entry(phase_of(i)).or_default().add(b);
    }
    let mut w = ReportWriter::new(out, &sc.name, &sc.description);
    w.heading("Results");
    w.paragraph(&format!(
        "{} nodes; after {} s whole, the nodes are split into two random halves for {} s (messages between \
         halves are dropped), then healed and observed for {} s, with {} lookups per second throughout. \
         Consistency is judged against the whole ring; local consistency against the ready nodes on the \
         deliverer's side of the split. Leaf sets are sampled every {} ms.",
        p.nodes, p.before_s, p.split_s, p.after_s, p.lookups_per_s, p.sample_ms
    ));
    let mut rows = Vec::new();
    let mut json_phases = serde_json::Map::new();
    for name in ["before", "split", "after"] {
        let b = phases.get(name).cloned().unwrap_or_default();
        let ended = b.lookups_done + b.lookups_failed;
        rows.push(vec![
            name.to_string(),
            b.lookups_started.to_string(),
            pct(b.lookups_done as f64 / ended.max(1) as f64, 2),
            pct(b.consistent as f64 / b.delivered.max(1) as f64, 2),
            pct(b.consistent_local as f64 / b.delivered.max(1) as f64, 2),
        ]);
        json_phases.insert(name.to_string(), json!({
            "lookups_started": b.lookups_started, "lookups_done": b.lookups_done, "lookups_failed": b.lookups_failed,
            "deliveries": b.delivered, "consistent": b.consistent, "consistent_local": b.consistent_local,
        }));
    }
    w.table(
        &[
            "phase",
            "lookups",
            "answered",
            "consistent (whole ring)",
            "consistent (own side)",
        ],
        &rows,
    );
    let heal = healed_at_ok.map_or("never".to_string(), |s| format!("{s:.1} s"));
    w.targets(&[TargetRow::new(
        "every leaf set correct after the heal",
        "within 30 s",
        heal.clone(),
        Verdict::from_met(healed_at_ok.is_some_and(|s| s <= 30.0)),
    )]);
    let c = Frame::new("Leaf-set correctness", "seconds", "% of ready nodes")
        .lines()
        .percent()
        .series(
            "leaf sets correct",
            samples.iter().map(|&(t, v)| (t, v * 100.0)).collect(),
        );
    w.line_chart("leaf_sets.png", &c)?;
    let results = json!({
        "scenario": sc.name, "seed": sc.seed, "phases": json_phases,
        "heal_to_correct_s": healed_at_ok, "leaf_set_correctness": samples,
        "trace_hash": format!("{:016x}", sim.trace_hash()),
    });
    finish(&w, &results, sim.metrics.events, sim.metrics.messages)
        .map(|o| with_nodes(o, sim.node_count()))
}
