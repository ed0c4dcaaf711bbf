//! `rpc-load`: a stable overlay with clusters of 1 to 100 members and an open-loop (Poisson)
//! request load from every node: latency distribution, hops, outcomes by kind, and fairness of
//! the load balancing (equal capacities, and shares proportional to capacity).

use std::path::Path;

use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use super::common::{
    advance_ms, finish, grow, ms_quantiles, node_counters, pct, share_target, with_nodes,
    zero_target,
};
use super::{Outcome, Progress, Scenario};
use crate::apps::AppSpec;
use crate::engine::Sim;
use crate::metrics::quantile;
use crate::report::{CdfChart, Frame, ReportWriter, TargetRow, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSpec {
    name: String,
    members: u32,
    /// Capacities assigned round-robin to the members (1 = one request at a time).
    capacities: Vec<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    nodes: u64,
    join_spacing_ms: u64,
    settle_s: u64,
    clusters: Vec<ClusterSpec>,
    /// Requests per second over all clusters (Poisson arrivals, uniform over clusters).
    rate_per_s: f64,
    duration_s: u64,
    timeout_ms: u32,
    /// Service time of one request at a member.
    service_us: u64,
    request_bytes: usize,
}

/// The fairness a cluster's load balancing must reach (Jain's index).
const JAIN_MIN: f64 = 0.95;
const JAIN_TARGET: &str = "Jain ≥ 0.95";

/// A target row on Jain's index `value`, or `none` when no cluster qualified.
fn jain_target(name: &str, value: Option<f64>, none: TargetRow) -> TargetRow {
    match value {
        Some(f) => TargetRow::new(
            name,
            JAIN_TARGET,
            format!("{f:.4}"),
            Verdict::from_met(f >= JAIN_MIN),
        ),
        None => none,
    }
}

pub(super) fn run(
    sc: &Scenario,
    node: petal_core::Config,
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    let p: Params = sc.params()?;
    anyhow::ensure!(!p.clusters.is_empty(), "at least one cluster");
    anyhow::ensure!(p.rate_per_s > 0.0, "rate_per_s must be positive");
    let mut sim = sc.new_sim(sc.seed, &node)?;
    progress.set_len(p.nodes + p.duration_s);
    grow(
        &mut sim,
        p.nodes,
        p.join_spacing_ms,
        p.settle_s * 1000,
        |sim| {
            if sim.node_count() % 100 == 1 {
                progress.set(sim.node_count() as u64 - 1, "joining".into());
            }
        },
    );
    // Members on distinct random nodes per cluster; one client on every node.
    let n = crate::count_u32(sim.node_count());
    for c in &p.clusters {
        anyhow::ensure!(
            !c.capacities.is_empty() && c.members <= n,
            "cluster {}: capacities and at most one member per node",
            c.name
        );
        let mut nodes: Vec<u32> = (0..n).collect();
        for k in 0..c.members as usize {
            let j = sim.rng().random_range(k..nodes.len());
            nodes.swap(k, j);
            let mut spec = AppSpec::member(&c.name, p.service_us);
            spec.capacity = c.capacities[k % c.capacities.len()];
            sim.add_app(nodes[k], spec)
                .ok_or_else(|| anyhow::anyhow!("member not registered"))?;
        }
    }
    let clients: Vec<usize> = (0..n)
        .map(|i| {
            sim.add_app(i, AppSpec::client())
                .ok_or_else(|| anyhow::anyhow!("client not registered on node {i}"))
        })
        .collect::<anyhow::Result<_>>()?;
    // Load reports reach the roots within a refresh.
    advance_ms(&mut sim, 3_000);
    let from = sim.now();
    let end_us = from.as_micros() + p.duration_s * 1_000_000;
    let mut next_us = from.as_micros() as f64;
    let mut per_cluster: Vec<Vec<u64>> = vec![Vec::new(); p.clusters.len()];
    while sim.now().as_micros() < end_us {
        let step_end = (sim.now().as_micros() + 10_000).min(end_us);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "arrival times in µs, non-negative and far below u64::MAX; the fraction is dropped on purpose"
        )]
        while (next_us as u64) < step_end {
            let at = petal_core::Time::from_micros(next_us as u64);
            sim.run_until(at.max(sim.now()));
            let c = sim.rng().random_range(0..p.clusters.len());
            let client = clients[sim.rng().random_range(0..clients.len())];
            if let Some(gid) =
                sim.request(client, &p.clusters[c].name, p.timeout_ms, p.request_bytes)
            {
                per_cluster[c].push(gid);
            }
            let u: f64 = sim.rng().random_range(f64::EPSILON..1.0);
            next_us += -u.ln() / p.rate_per_s * 1e6;
        }
        sim.run_until(petal_core::Time::from_micros(step_end));
        let s = (sim.now().as_micros() - from.as_micros()) / 1_000_000;
        progress.set(p.nodes + s, "requests".into());
    }
    let to = sim.now();
    advance_ms(&mut sim, u64::from(p.timeout_ms) + 2_000);
    progress.finish();
    write_report(sc, &p, &sim, from, to, &per_cluster, out)
}

fn write_report(
    sc: &Scenario,
    p: &Params,
    sim: &Sim,
    from: petal_core::Time,
    to: petal_core::Time,
    per_cluster: &[Vec<u64>],
    out: &Path,
) -> anyhow::Result<Outcome> {
    let all = sim.apps.request_stats(from, to, sim.now());
    let mut w = ReportWriter::new(out, &sc.name, &sc.description);
    w.heading("Results");
    w.paragraph(&format!(
        "{} nodes over a {} topology; clusters of {} members on distinct random nodes (a member \
         handles as many requests at once as its capacity, each taking {} µs, and queues the rest); \
         a client on every node. For {} s, requests arrive as a Poisson process at {} per second in \
         total, each from a random client to a random cluster, with a {} ms timeout. Latency is \
         from issue to outcome at the requester, in simulated time; hops are overlay hops to the \
         cluster's root plus tree hops down to the member.",
        p.nodes,
        sim.topology().kind(),
        p.clusters
            .iter()
            .map(|c| c.members.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        p.service_us,
        p.duration_s,
        p.rate_per_s,
        p.timeout_ms
    ));
    let cl = Clusters::new(sim, p, from, to, per_cluster);
    cl.tables(&mut w);
    let mut lat_all = all.latencies_us.clone();
    lat_all.sort_unstable();
    all_requests_table(&mut w, &all, &lat_all);
    targets_section(
        &mut w,
        sim,
        &all,
        cl.min_equal_fairness,
        cl.min_weighted_fairness,
    );
    w.cdf_chart(
        "latency_cdf.png",
        &CdfChart::new(
            "Request latency by cluster size",
            "ms (simulated)",
            cl.latency_by_size(),
        ),
    )?;
    let max_hops = all.hops.iter().copied().max().unwrap_or(0) as usize;
    let total = all.hops.len().max(1) as f64;
    let dist: Vec<f64> = (0..=max_hops)
        .map(|h| 100.0 * all.hops.iter().filter(|&&x| x as usize == h).count() as f64 / total)
        .collect();
    let bars = Frame::new(
        "Hops of delivered requests (to the root, then down the tree)",
        "hops",
        "% of requests",
    )
    .bars((0..=max_hops).map(|h| h.to_string()).collect())
    .group("requests", dist.clone());
    w.bar_chart("hops.png", &bars)?;
    let mean_hops = all.hops.iter().map(|&h| f64::from(h)).sum::<f64>() / total;
    w.paragraph(&format!("Mean hops per delivered request: {mean_hops:.2}."));
    let results = json!({
        "scenario": sc.name, "seed": sc.seed,
        "topology": sim.topology().summary(),
        "requests": all, "latency": ms_quantiles(&lat_all),
        "p999_ms": quantile(&lat_all, 0.999).map(|v| v as f64 / 1000.0),
        "hops_mean": mean_hops, "hop_distribution_pct": dist,
        "clusters": cl.json_clusters,
        "stray_events": sim.apps.stray_events,
        "node_counters": node_counters(sim),
        "trace_hash": format!("{:016x}", sim.trace_hash()),
    });
    finish(&w, &results, sim.metrics.events, sim.metrics.messages)
        .map(|o| with_nodes(o, sim.node_count()))
}

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |x| format!("{:.1} ms", x as f64 / 1000.0))
}

/// Per-cluster outcomes: the table rows, shares against capacity, JSON and latency samples.
#[derive(Default)]
struct Clusters {
    rows: Vec<Vec<String>>,
    json_clusters: Vec<serde_json::Value>,
    /// Latency samples (ms) by cluster, with the cluster's size to order the legend by.
    cdfs: Vec<(u32, String, Vec<f64>)>,
    fairness_rows: Vec<Vec<String>>,
    min_equal_fairness: Option<f64>,
    min_weighted_fairness: Option<f64>,
}

impl Clusters {
    fn new(
        sim: &Sim,
        p: &Params,
        from: petal_core::Time,
        to: petal_core::Time,
        per_cluster: &[Vec<u64>],
    ) -> Self {
        let mut cl = Clusters::default();
        for (c, spec) in p.clusters.iter().enumerate() {
            cl.add(sim, spec, from, to, &per_cluster[c]);
        }
        cl
    }

    fn add(
        &mut self,
        sim: &Sim,
        spec: &ClusterSpec,
        from: petal_core::Time,
        to: petal_core::Time,
        requests: &[u64],
    ) {
        let Clusters {
            rows,
            json_clusters,
            cdfs,
            fairness_rows,
            min_equal_fairness,
            min_weighted_fairness,
        } = self;
        let gids: std::collections::BTreeSet<u64> = requests.iter().copied().collect();
        let mut lat: Vec<u64> = Vec::new();
        let (mut issued, mut replies, mut timeouts) = (0u64, 0u64, 0u64);
        for &g in &gids {
            let r = &sim.apps.requests[crate::to_usize(g)];
            issued += 1;
            match r.outcome {
                Some((crate::apps::OutcomeKind::Reply, t)) => {
                    replies += 1;
                    lat.push(t.as_micros() - r.start.as_micros());
                }
                Some((crate::apps::OutcomeKind::Timeout, _)) => timeouts += 1,
                _ => {}
            }
        }
        lat.sort_unstable();
        let fairness = sim.apps.fairness(&spec.name, from, to);
        let equal = spec.capacities.iter().all(|&x| x == spec.capacities[0]);
        if equal && spec.members > 1 {
            *min_equal_fairness = Some(
                min_equal_fairness.map_or(fairness.unwrap_or(0.0), |m: f64| {
                    m.min(fairness.unwrap_or(0.0))
                }),
            );
        }
        rows.push(vec![
            spec.name.clone(),
            spec.members.to_string(),
            issued.to_string(),
            pct(replies as f64 / issued.max(1) as f64, 3),
            ms(quantile(&lat, 0.5)),
            ms(quantile(&lat, 0.99)),
            ms(quantile(&lat, 0.999)),
            fairness.map_or("-".into(), |f| format!("{f:.4}")),
        ]);
        if !equal {
            let f = fairness.unwrap_or(0.0);
            *min_weighted_fairness = Some(min_weighted_fairness.map_or(f, |m: f64| m.min(f)));
            fairness_rows.extend(capacity_shares(sim, spec, &gids));
        }
        json_clusters.push(json!({
            "name": spec.name, "members": spec.members, "capacities": spec.capacities,
            "issued": issued, "replies": replies, "timeouts": timeouts,
            "latency": ms_quantiles(&lat), "p999_ms": quantile(&lat, 0.999).map(|v| v as f64 / 1000.0),
            "fairness_jain": fairness,
        }));
        let capacities = if equal {
            String::new()
        } else {
            let list: Vec<String> = spec.capacities.iter().map(u32::to_string).collect();
            format!(", capacities {}", list.join(" / "))
        };
        let plural = if spec.members == 1 { "" } else { "s" };
        cdfs.push((
            spec.members,
            format!("{} member{plural}{capacities}", spec.members),
            lat.iter().map(|&v| v as f64 / 1000.0).collect::<Vec<f64>>(),
        ));
    }

    /// The latency samples of each cluster, smallest cluster first.
    fn latency_by_size(&self) -> Vec<(String, Vec<f64>)> {
        let mut cdfs = self.cdfs.clone();
        cdfs.sort_by_key(|c| c.0);
        cdfs.into_iter().map(|(_, name, lat)| (name, lat)).collect()
    }

    /// The clusters table, and the shares against capacity of mixed clusters.
    fn tables(&self, w: &mut ReportWriter) {
        let (rows, fairness_rows) = (&self.rows, &self.fairness_rows);
        w.table(
            &[
                "cluster",
                "members",
                "requests",
                "replied",
                "p50",
                "p99",
                "p99.9",
                "fairness (Jain, per capacity)",
            ],
            rows,
        );
        if !fairness_rows.is_empty() {
            w.subheading("Shares against capacity");
            w.table(
                &[
                    "cluster",
                    "capacity",
                    "members",
                    "share of capacity",
                    "share of requests",
                ],
                fairness_rows,
            );
        }
    }
}

/// Share of requests per capacity class of a mixed cluster against the share of capacity.
fn capacity_shares(
    sim: &Sim,
    spec: &ClusterSpec,
    gids: &std::collections::BTreeSet<u64>,
) -> Vec<Vec<String>> {
    let mut fairness_rows = Vec::new();
    let mut classes: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
    let members: Vec<usize> = (0..sim.apps.list.len())
        .filter(|&i| sim.apps.list[i].spec.cluster.as_deref() == Some(&spec.name))
        .collect();
    let total_cap: u64 = members
        .iter()
        .map(|&i| u64::from(sim.apps.list[i].spec.capacity))
        .sum();
    for &i in &members {
        let e = classes.entry(sim.apps.list[i].spec.capacity).or_default();
        e.0 += 1;
    }
    let served_total: u64 = gids
        .iter()
        .filter(|&&g| sim.apps.requests[crate::to_usize(g)].served_by.is_some())
        .count() as u64;
    for &g in gids {
        if let Some(m) = sim.apps.requests[crate::to_usize(g)].served_by {
            classes.entry(sim.apps.list[m].spec.capacity).or_default().1 += 1;
        }
    }
    for (cap, (count, served)) in &classes {
        fairness_rows.push(vec![
            spec.name.clone(),
            cap.to_string(),
            count.to_string(),
            pct(
                (u64::from(*cap) * count) as f64 / total_cap.max(1) as f64,
                1,
            ),
            pct(*served as f64 / served_total.max(1) as f64, 1),
        ]);
    }
    fairness_rows
}

/// The table of all requests.
fn all_requests_table(w: &mut ReportWriter, all: &crate::oracle::RequestStats, lat_all: &[u64]) {
    w.subheading("All requests");
    w.table(
        &[
            "issued",
            "judged",
            "replies",
            "faults",
            "timeouts",
            "no outcome",
            "2+ outcomes",
            "wrong reply",
            "p50",
            "p99",
            "p99.9",
        ],
        &[vec![
            all.issued.to_string(),
            all.judged.to_string(),
            all.replies.to_string(),
            all.faults.to_string(),
            all.timeouts.to_string(),
            all.missing.to_string(),
            all.multiple.to_string(),
            all.wrong.to_string(),
            ms(quantile(lat_all, 0.5)),
            ms(quantile(lat_all, 0.99)),
            ms(quantile(lat_all, 0.999)),
        ]],
    );
}

fn targets_section(
    w: &mut ReportWriter,
    sim: &Sim,
    all: &crate::oracle::RequestStats,
    fair: Option<f64>,
    weighted: Option<f64>,
) {
    w.targets(&[
        share_target(
            "requests answered (stable overlay)",
            1.0,
            all.replies + all.faults,
            all.judged,
        ),
        zero_target(
            "requests without exactly one outcome",
            all.missing + all.multiple + all.wrong + sim.apps.stray_events,
            format!(
                "{} missing, {} multiple, {} wrong, {} stray",
                all.missing, all.multiple, all.wrong, sim.apps.stray_events
            ),
        ),
        zero_target(
            "requests delivered to a member more than once (stable overlay)",
            all.redelivered,
            String::new(),
        ),
        jain_target(
            "fairness over equal-capacity members (lowest cluster)",
            fair,
            TargetRow::new(
                "fairness over equal-capacity members (lowest cluster)",
                JAIN_TARGET,
                "nothing judged (no cluster of 2+ equal members)",
                Verdict::Missed,
            ),
        ),
        jain_target(
            "shares proportional to capacity (Jain per unit of capacity, lowest mixed cluster)",
            weighted,
            TargetRow::new(
                "shares proportional to capacity (Jain per unit of capacity, lowest mixed cluster)",
                "-",
                "no cluster of mixed capacities",
                Verdict::Info,
            ),
        ),
    ]);
}
