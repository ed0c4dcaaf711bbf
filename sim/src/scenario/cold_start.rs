//! `cold-start`: a whole fleet starts at once, as after a power cut or a `docker compose up`.
//!
//! Every node is started within a short window with seeds drawn at random among the other
//! nodes (so seeds form chains and cycles, and some point at nodes that never start), through
//! the engine's seed model (`Sim::start_with_seeds`, which follows the daemon's driver). Each
//! run is judged at a fixed time after the first start: every started node ready, every leaf
//! set exactly right (one ring per connected component of the seed graph: nodes with no seed
//! path between them cannot know of each other), then one lookup and one request from every
//! node, each of which must be answered (lookups by the right node, requests by exactly one
//! reply). The scenario repeats this over many master seeds; every run must pass.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use petal_core::{Key, Time};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use super::common::{finish, ms_quantiles, pct, zero_target};
use super::pool::map_in_order;
use super::{Outcome, Progress, Scenario, Threads};
use crate::apps::AppSpec;
use crate::engine::{Sim, SimConfig, derive_seed};
use crate::metrics::Metrics;
use crate::report::{CdfChart, ReportWriter, TargetRow, Verdict};

/// Parameters of a cold start.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColdStartParams {
    /// Nodes in the fleet (started or not).
    pub nodes: u32,
    /// Nodes that never start (seeds that are down).
    pub down: u32,
    /// Every node starts at a uniformly random time within this window.
    pub start_window_ms: u64,
    /// Fewest seeds a node is given.
    pub seeds_min: u32,
    /// Most seeds a node is given.
    pub seeds_max: u32,
    /// Members of the cluster `svc` in the largest component (each other component gets one).
    pub members: u32,
    /// When, after the first start, every node must be ready with a correct leaf set.
    pub judge_ms: u64,
    /// Timeout of the requests sent at the judge time.
    pub timeout_ms: u32,
    /// Runs, each with its own master seed derived from the scenario's.
    pub runs: u32,
}

/// What one run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ColdStartRun {
    /// The run's master seed.
    pub seed: u64,
    /// Nodes started.
    pub started: u32,
    /// Connected components of the seed graph among started nodes.
    pub components: u32,
    /// Started nodes ready at the judge time.
    pub ready: u32,
    /// Fraction of ready nodes with a correct leaf set at the judge time.
    pub leaf_correct: f64,
    /// When every started node was ready, in ms after the first start.
    pub all_ready_ms: Option<u64>,
    /// When every leaf set was last seen becoming correct (sampled every 20 ms), in ms after the
    /// first start; `None` if not correct at the judge time.
    pub leaf_sets_ms: Option<u64>,
    /// When every node had been answered its first request (each ready node's client asks
    /// every 200 ms from the time it is ready), in ms after the first start.
    pub all_served_ms: Option<u64>,
    /// Lookups started at the judge time, answered, and delivered at the right node.
    pub lookups: (u64, u64, u64),
    /// Requests sent at the judge time and judged; replies; other outcomes (missing, faults,
    /// timeouts, several or wrong).
    pub requests: (u64, u64, u64),
    /// Over every request of the run (the probes while starting included): second or wrong
    /// outcomes, and stray application events.
    pub violations: u64,
    /// Rings founded because the contacts formed a cycle of joiners; joins that failed.
    pub founded: u64,
    /// Join attempts retried after a timeout, over all nodes.
    pub join_retries: u64,
    /// Joiners refused by a node not yet in a ring, over all nodes.
    pub joins_refused: u64,
    /// Engine events and node-to-node messages of the run.
    pub events: u64,
    /// Node-to-node messages delivered in the run.
    pub messages: u64,
}

impl ColdStartRun {
    /// True when everything the run judges passed.
    pub fn passed(&self) -> bool {
        self.ready == self.started
            && self.leaf_correct == 1.0
            && self.lookups.0 == u64::from(self.started)
            && self.lookups.1 == self.lookups.0
            && self.lookups.2 == self.lookups.0
            && self.requests.0 == u64::from(self.started)
            && self.requests.1 == self.requests.0
            && self.requests.2 == 0
            && self.violations == 0
    }
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        parent[x as usize] = parent[parent[x as usize] as usize];
        x = parent[x as usize];
    }
    x
}

/// Components of the seed graph among started nodes (undirected): each node's component
/// (`u32::MAX` for nodes that never start), and each component's size.
fn components(n: u32, down: &[bool], seeds: &[Vec<u32>]) -> (Vec<u32>, Vec<u32>) {
    let mut parent: Vec<u32> = (0..n).collect();
    for i in 0..n {
        for &s in &seeds[i as usize] {
            if !down[i as usize] && !down[s as usize] {
                let (a, b) = (find(&mut parent, i), find(&mut parent, s));
                parent[a as usize] = b;
            }
        }
    }
    let mut comp_of = vec![u32::MAX; n as usize];
    let mut comp_size: Vec<u32> = Vec::new();
    let mut roots = std::collections::BTreeMap::new();
    for i in (0..n).filter(|&i| !down[i as usize]) {
        let r = find(&mut parent, i);
        let next = crate::count_u32(roots.len());
        let c = *roots.entry(r).or_insert(next);
        if c as usize == comp_size.len() {
            comp_size.push(0);
        }
        comp_size[c as usize] += 1;
        comp_of[i as usize] = c;
    }
    (comp_of, comp_size)
}

/// Who starts when with which seeds, the seed graph's components, and the cluster's members.
struct Fleet {
    down: Vec<bool>,
    seeds: Vec<Vec<u32>>,
    /// Start times (µs) and nodes, in start order.
    starts: Vec<(u64, u32)>,
    comp_size: Vec<u32>,
    is_member: Vec<bool>,
}

impl Fleet {
    /// Adds the fleet's nodes to `sim` (none started) and draws the plan from the engine's
    /// generator; nodes in different components are judged as separate rings.
    fn plan(sim: &mut Sim, p: &ColdStartParams) -> anyhow::Result<Self> {
        let n = p.nodes;
        for _ in 0..n {
            sim.add_down_node();
        }
        // Which nodes never start, their seeds, their start times: all from the engine's generator.
        let mut order: Vec<u32> = (0..n).collect();
        for k in 0..p.down as usize {
            let j = sim.rng().random_range(k..order.len());
            order.swap(k, j);
        }
        let mut down = vec![false; n as usize];
        for &d in &order[..p.down as usize] {
            down[d as usize] = true;
        }
        let mut seeds: Vec<Vec<u32>> = Vec::with_capacity(n as usize);
        for i in 0..n {
            let k = sim.rng().random_range(p.seeds_min..=p.seeds_max);
            let mut mine = Vec::new();
            while mine.len() < k as usize {
                let s = sim.rng().random_range(0..n);
                if s != i && !mine.contains(&s) {
                    mine.push(s);
                }
            }
            seeds.push(mine);
        }
        let mut starts: Vec<(u64, u32)> = (0..n)
            .filter(|&i| !down[i as usize])
            .map(|i| (sim.rng().random_range(0..=p.start_window_ms * 1000), i))
            .collect();
        starts.sort_unstable();
        let (comp_of, comp_size) = components(n, &down, &seeds);
        anyhow::ensure!(
            comp_size.len() <= 255,
            "cold-start: more than 255 components"
        );
        let largest = crate::count_u32(
            (0..comp_size.len())
                .max_by_key(|&c| (comp_size[c], std::cmp::Reverse(c)))
                .unwrap_or(0),
        );
        // Nodes in different components never learn of each other: judge each as its own ring.
        let groups: Vec<u8> = comp_of.iter().map(|&c| c.min(254) as u8).collect();
        sim.partition(|i| groups[i as usize]);
        // The cluster's members: `members` random nodes of the largest component, and the first
        // node of every other component.
        let mut is_member = vec![false; n as usize];
        let mut in_largest: Vec<u32> = starts
            .iter()
            .map(|&(_, i)| i)
            .filter(|&i| comp_of[i as usize] == largest)
            .collect();
        in_largest.sort_unstable();
        for k in 0..(p.members as usize).min(in_largest.len()) {
            let j = sim.rng().random_range(k..in_largest.len());
            in_largest.swap(k, j);
            is_member[in_largest[k] as usize] = true;
        }
        let mut seen = vec![false; comp_size.len()];
        seen[largest as usize] = true;
        for i in 0..n {
            let c = comp_of[i as usize];
            if c != u32::MAX && !seen[c as usize] {
                seen[c as usize] = true;
                is_member[i as usize] = true;
            }
        }
        Ok(Fleet {
            down,
            seeds,
            starts,
            comp_size,
            is_member,
        })
    }
}

/// What the start-up phase saw, until the judge time.
struct Boot {
    /// Each node's client application, once its node was ready.
    client: Vec<Option<usize>>,
    /// When each node was first served, µs after the first start.
    served_at: Vec<Option<u64>>,
    all_ready_ms: Option<u64>,
    leaf_ok_since: Option<u64>,
}

/// Starts the fleet and runs until the judge time: applications attach once their node
/// serves, and each client asks every 200 ms until first answered.
fn boot(sim: &mut Sim, fleet: &Fleet, p: &ColdStartParams) -> Boot {
    let Fleet {
        seeds,
        starts,
        is_member,
        ..
    } = fleet;
    let n = p.nodes;
    let t0 = starts.first().map_or(0, |s| s.0);
    let judge_us = t0 + p.judge_ms * 1000;
    let mut client: Vec<Option<usize>> = vec![None; n as usize];
    let mut served_at: Vec<Option<u64>> = vec![None; n as usize];
    let mut next_ask: Vec<u64> = vec![0; n as usize];
    let mut probes: Vec<(u32, u64)> = Vec::new();
    let mut next_start = 0usize;
    let mut all_ready_ms = None;
    let mut leaf_ok_since: Option<u64> = None;
    let step_us = 20_000u64;
    let mut t = 0u64;
    while t < judge_us {
        t = (t + step_us).min(judge_us);
        while next_start < starts.len() && starts[next_start].0 <= t {
            let (at, i) = starts[next_start];
            sim.run_until(Time::from_micros(at.max(sim.now().as_micros())));
            sim.start_with_seeds(i, seeds[i as usize].clone());
            next_start += 1;
        }
        sim.run_until(Time::from_micros(t));
        // Applications connect once their node serves: a member and a client that asks every
        // 200 ms until it has been answered once (time to first service).
        for &(_, i) in &starts[..next_start] {
            if client[i as usize].is_none() && sim.node(i).is_ready() {
                if is_member[i as usize] {
                    sim.add_app(i, AppSpec::member("svc", 100));
                }
                client[i as usize] = sim.add_app(i, AppSpec::client());
            }
        }
        for &(_, i) in &starts[..next_start] {
            if let Some(c) = client[i as usize] {
                if served_at[i as usize].is_none() && next_ask[i as usize] <= t {
                    if let Some(g) = sim.request(c, "svc", 1_000, 16) {
                        probes.push((i, g));
                    }
                    next_ask[i as usize] = t + 200_000;
                }
            }
        }
        for &(i, g) in &probes {
            let r = &sim.apps.requests[crate::to_usize(g)];
            if served_at[i as usize].is_none()
                && matches!(r.outcome, Some((crate::apps::OutcomeKind::Reply, _)))
            {
                let at = r.outcome.map(|o| o.1.as_micros()).unwrap_or(t);
                served_at[i as usize] = Some(at.saturating_sub(t0));
            }
        }
        let started = next_start == starts.len();
        if started && all_ready_ms.is_none() && sim.ready_count() == starts.len() {
            all_ready_ms = Some((t - t0) / 1000);
        }
        let ok = started && sim.ready_count() == starts.len() && sim.leaf_sets_all_correct();
        match (ok, leaf_ok_since) {
            (true, None) => leaf_ok_since = Some((t - t0) / 1000),
            (false, _) => leaf_ok_since = None,
            _ => {}
        }
    }
    Boot {
        client,
        served_at,
        all_ready_ms,
        leaf_ok_since,
    }
}

/// Runs one cold start with engine settings `cfg` (its seed is the run's master seed).
pub fn run_cold_start(cfg: SimConfig, p: &ColdStartParams) -> anyhow::Result<ColdStartRun> {
    anyhow::ensure!(
        p.nodes >= 2 && p.down < p.nodes && p.seeds_min >= 1 && p.seeds_min <= p.seeds_max,
        "cold-start: need 2+ nodes, fewer down than nodes, 1 <= seeds_min <= seeds_max"
    );
    anyhow::ensure!(
        p.seeds_max < p.nodes,
        "cold-start: seeds_max must be < nodes"
    );
    let seed = cfg.seed;
    let mut sim = Sim::new(cfg);
    let fleet = Fleet::plan(&mut sim, p)?;
    let boot = boot(&mut sim, &fleet, p);
    Ok(judge(&mut sim, &fleet, &boot, p, seed))
}

/// The judgement at the judge time: one lookup and one request from every started node.
fn judge(
    sim: &mut Sim,
    fleet: &Fleet,
    boot: &Boot,
    p: &ColdStartParams,
    seed: u64,
) -> ColdStartRun {
    let (down, starts) = (&fleet.down[..], &fleet.starts[..]);
    let Boot {
        ref client,
        ref served_at,
        all_ready_ms,
        leaf_ok_since,
    } = *boot;
    let ready = crate::count_u32(sim.ready_count());
    let leaf_correct = sim.leaf_set_correctness();
    // The judgement: one lookup and one request from every started node.
    let (before_events, before_messages) = (sim.metrics.events, sim.metrics.messages);
    sim.metrics = Metrics::new(1_000_000);
    let from = sim.now();
    let mut requests = Vec::new();
    for &(_, i) in starts {
        let key = Key(sim.rng().random());
        sim.lookup(i, key);
        if let Some(c) = client[i as usize] {
            if let Some(g) = sim.request(c, "svc", p.timeout_ms, 16) {
                requests.push(g);
            }
        }
    }
    let to = Time::from_micros(from.as_micros() + 1);
    sim.run_until(Time::from_micros(
        from.as_micros() + (u64::from(p.timeout_ms) + 2_000) * 1000,
    ));
    let mut b = crate::metrics::Bucket::default();
    for x in &sim.metrics.buckets {
        b.add(x);
    }
    let q = sim.apps.request_stats(from, to, sim.now());
    let all_served_ms = served_at
        .iter()
        .enumerate()
        .filter(|(i, _)| !down[*i])
        .map(|(_, s)| *s)
        .collect::<Option<Vec<u64>>>()
        .and_then(|v| v.into_iter().max())
        .map(|us| us / 1000);
    let (mut events, mut messages) = (sim.metrics.events, sim.metrics.messages);
    events += before_events;
    messages += before_messages;
    let mut founded = 0;
    let mut join_retries = 0;
    let mut joins_refused = 0;
    for &(_, i) in starts {
        let s = sim.node(i).stats();
        founded += s.join_founded;
        join_retries += s.join_retries;
        joins_refused += s.joins_refused;
    }
    ColdStartRun {
        seed,
        started: crate::count_u32(starts.len()),
        components: crate::count_u32(fleet.comp_size.len()),
        ready,
        leaf_correct,
        all_ready_ms,
        leaf_sets_ms: if leaf_correct == 1.0 {
            leaf_ok_since
        } else {
            None
        },
        all_served_ms,
        lookups: (b.lookups_started, b.lookups_done, b.consistent_local),
        requests: (
            q.judged,
            q.replies,
            q.judged - q.replies + q.multiple + q.wrong,
        ),
        violations: {
            let every = sim.apps.request_stats(Time::ZERO, Time::MAX, sim.now());
            every.multiple + every.wrong + sim.apps.stray_events
        },
        founded,
        join_retries,
        joins_refused,
        events,
        messages,
    }
}

pub(super) fn run(
    sc: &Scenario,
    node: petal_core::Config,
    out: &Path,
    progress: &Progress,
    threads: &Threads,
) -> anyhow::Result<Outcome> {
    let p: ColdStartParams = sc.params()?;
    progress.set_len(u64::from(p.runs));
    let done = AtomicU64::new(0);
    // Each run is a simulation of its own, seeded by its index: independent of the others.
    let runs = map_in_order(threads, p.runs as usize, |r| {
        let cfg = sc.sim_config(derive_seed(sc.seed, "cold-start", r as u64), &node)?;
        let run = run_cold_start(cfg, &p)?;
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        progress.set(n, format!("runs ({} threads)", threads.budget()));
        Ok(run)
    })?;
    progress.finish();
    write_report(sc, &p, &runs, out)
}

fn write_report(
    sc: &Scenario,
    p: &ColdStartParams,
    runs: &[ColdStartRun],
    out: &Path,
) -> anyhow::Result<Outcome> {
    let passed = runs.iter().filter(|r| r.passed()).count();
    let ms = |f: fn(&ColdStartRun) -> Option<u64>| -> Vec<u64> {
        runs.iter().filter_map(f).map(|v| v * 1000).collect()
    };
    let ready = ms(|r| r.all_ready_ms);
    let leaf = ms(|r| r.leaf_sets_ms);
    let served = ms(|r| r.all_served_ms);
    let mut w = ReportWriter::new(out, &sc.name, &sc.description);
    results_section(&mut w, p, runs, [&ready, &leaf, &served]);
    w.targets(&targets(p, runs));
    w.cdf_chart(
        "cold_start_cdf.png",
        &CdfChart::new(
            "Time after the first start, over runs",
            "ms",
            &[
                (
                    "every node ready".into(),
                    ready.iter().map(|&u| u as f64 / 1000.0).collect(),
                ),
                (
                    "every leaf set correct".into(),
                    leaf.iter().map(|&u| u as f64 / 1000.0).collect(),
                ),
                (
                    "every node served".into(),
                    served.iter().map(|&u| u as f64 / 1000.0).collect(),
                ),
            ],
        ),
    )?;
    let sum = |f: fn(&ColdStartRun) -> u64| runs.iter().map(f).sum::<u64>();
    let results = json!({
        "scenario": sc.name, "seed": sc.seed, "runs": runs.len(), "passed": passed,
        "all_ready": ms_quantiles(&ready), "leaf_sets_correct": ms_quantiles(&leaf),
        "all_served": ms_quantiles(&served), "per_run": runs,
    });
    finish(&w, &results, sum(|r| r.events), sum(|r| r.messages))
}

/// The setup, the times to readiness, the failing runs and the totals over all runs.
fn results_section(
    w: &mut ReportWriter,
    p: &ColdStartParams,
    runs: &[ColdStartRun],
    [ready, leaf, served]: [&[u64]; 3],
) {
    let q = |v: &[u64], x: f64| {
        crate::metrics::quantile(v, x)
            .map_or("-".to_string(), |u| format!("{:.0}", u as f64 / 1000.0))
    };
    w.heading("Results");
    w.paragraph(&format!(
        "{} runs, each with its own seed: {} nodes of which {} never start (seeds that are down); \
         the others start at uniformly random times within {} ms, each with {} to {} seeds drawn \
         at random among the other nodes (chains, cycles, seeds that are down or not yet up), \
         through the engine's model of the daemon's seed handling (a dial to a node that is not \
         started is refused after one round trip; a node whose seeds all failed serves alone and \
         dials its seeds again after 100 ms, doubling). The cluster `svc` has {} members in the \
         largest component of the seed graph and one in every other component. A client on \
         every ready node asks `svc` every 200 ms until first answered. {} ms after the first \
         start every node must be ready with a correct leaf set (one ring per component), then \
         every node sends one lookup and one request ({} ms timeout), each of which must be \
         answered: lookups by the right node, requests by exactly one reply.",
        runs.len(),
        p.nodes,
        p.down,
        p.start_window_ms,
        p.seeds_min,
        p.seeds_max,
        p.members,
        p.judge_ms,
        p.timeout_ms
    ));
    w.table(
        &["after the first start (ms)", "p50", "p95", "max", "runs"],
        &[
            vec![
                "every node ready".into(),
                q(ready, 0.5),
                q(ready, 0.95),
                q(ready, 1.0),
                ready.len().to_string(),
            ],
            vec![
                "every leaf set correct".into(),
                q(leaf, 0.5),
                q(leaf, 0.95),
                q(leaf, 1.0),
                leaf.len().to_string(),
            ],
            vec![
                "every node served a request".into(),
                q(served, 0.5),
                q(served, 0.95),
                q(served, 1.0),
                served.len().to_string(),
            ],
        ],
    );
    let failing: Vec<String> = runs
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            format!(
                "seed {:#x}: {}/{} ready, leaf sets {}, lookups {}/{}/{}, requests {}/{} (+{} other)",
                r.seed,
                r.ready,
                r.started,
                pct(r.leaf_correct, 1),
                r.lookups.0,
                r.lookups.1,
                r.lookups.2,
                r.requests.0,
                r.requests.1,
                r.requests.2
            )
        })
        .collect();
    if !failing.is_empty() {
        w.paragraph(&format!("Failing runs: {}.", failing.join("; ")));
    }
    let sum = |f: fn(&ColdStartRun) -> u64| runs.iter().map(f).sum::<u64>();
    w.paragraph(&format!(
        "Over all runs: {} nodes started in {} seed-graph components; {} rings founded by a cycle \
         of joiners; {} joiners refused by a node not yet in a ring; {} join attempts retried \
         after a timeout.",
        sum(|r| u64::from(r.started)),
        sum(|r| u64::from(r.components)),
        sum(|r| r.founded),
        sum(|r| r.joins_refused),
        sum(|r| r.join_retries),
    ));
}

/// Every run passes each judgement, and no request has a second or wrong outcome.
fn targets(p: &ColdStartParams, runs: &[ColdStartRun]) -> Vec<TargetRow> {
    let all = |f: fn(&ColdStartRun) -> bool| runs.iter().filter(|r| f(r)).count();
    let n = runs.len();
    vec![
        TargetRow::new(
            format!(
                "every node ready, every leaf set correct within {} ms",
                p.judge_ms
            ),
            format!("{n} of {n} runs"),
            format!(
                "{} of {n}",
                all(|r| r.ready == r.started && r.leaf_correct == 1.0)
            ),
            Verdict::from_met(all(|r| r.ready == r.started && r.leaf_correct == 1.0) == n),
        ),
        TargetRow::new(
            "every node's lookup answered by the right node",
            format!("{n} of {n} runs"),
            format!(
                "{} of {n}",
                all(|r| r.lookups.0 == u64::from(r.started)
                    && r.lookups.1 == r.lookups.0
                    && r.lookups.2 == r.lookups.0)
            ),
            Verdict::from_met(
                all(|r| {
                    r.lookups.0 == u64::from(r.started)
                        && r.lookups.1 == r.lookups.0
                        && r.lookups.2 == r.lookups.0
                }) == n,
            ),
        ),
        TargetRow::new(
            "every node's request answered by exactly one reply",
            format!("{n} of {n} runs"),
            format!(
                "{} of {n}",
                all(|r| r.requests.0 == u64::from(r.started)
                    && r.requests.1 == r.requests.0
                    && r.requests.2 == 0)
            ),
            Verdict::from_met(
                all(|r| {
                    r.requests.0 == u64::from(r.started)
                        && r.requests.1 == r.requests.0
                        && r.requests.2 == 0
                }) == n,
            ),
        ),
        zero_target(
            "requests with a second or wrong outcome, stray events (all runs, probes included)",
            runs.iter().map(|r| r.violations).sum(),
            String::new(),
        ),
    ]
}
