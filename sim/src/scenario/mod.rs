//! Scenario files (TOML) and their runners.
//!
//! A scenario file names a runner (`kind`), a master seed, the topology, node-config overrides
//! and the runner's parameters:
//! ```toml
//! name = "churn"
//! description = "1,000 nodes under Poisson churn"
//! kind = "churn"
//! seed = 1
//! [topology]
//! kind = "transit-stub"
//! [node]
//! leaf_set_size = 16
//! [params]
//! nodes = 1000
//! ```
//! Runners measure through the engine's [`crate::metrics`] and oracles only, and write
//! `report.md`, `results.json` and PNG plots into the scenario's report directory; wall-clock
//! figures (run time, events per second) go to `perf.json` apart, because they are the only
//! output that is not a function of (scenario, seed, commit).
//!
//! # Writing a runner
//! A runner is a short file: its `Params` (deserialized with `Scenario::params`), a `run`
//! that drives the simulator, and a `write_report` made of one small function per section.
//! The shared pieces:
//! - setup: `Scenario::new_sim(seed, &node)` builds the engine; `common::grow` joins `nodes`
//!   one at a time and lets them settle (every runner's preamble); `common::warm_up` starts the
//!   messaging workload on every ready node and lets its trees form; `common::advance_ms`,
//!   `common::lookup_burst` and `common::STEP_MS` step time;
//! - judging: the oracles of [`crate::oracle`] per window (`common::Window`), and
//!   `common::messaging_targets`, `share_target` and `zero_target` for the target rows;
//! - the report: a [`crate::report::ReportWriter`] collects headings, paragraphs, tables,
//!   target verdicts and figures in order (`Frame::new(title, x, y).lines()` or `.bars(..)`,
//!   [`crate::report::CdfChart`]; `common::delivery_series` for per-second delivery), and
//!   `common::finish` writes `report.md` and `results.json` and returns the [`Outcome`];
//!   `common::per_second_json`, `messaging_window_json` and `ms_quantiles` shape the JSON.
//!
//! - independent runs (a scenario made of several simulations that share nothing, each
//!   seeded by its index): `pool::map_in_order` runs them on the [`Threads`] budget the
//!   runner is given and returns their results in run order, so the report is the same on any
//!   number of threads; each run reports its own part of the [`Progress`]
//!   (`Progress::set_part`).
//!
//! Then add the kind to [`Scenario::run_on`]'s match and a TOML file to `scenarios/`.

mod app_workload;
mod churn;
mod churn_messaging;
mod churn_tradeoff;
mod cold_start;
mod common;
mod fidelity;
mod hops;
mod identity_churn;
mod partition;
mod partition_messaging;
mod pool;
mod progress;
mod pubsub_fanout;
mod rpc_load;
mod store_churn;
mod turmoil;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::report::TargetCounts;
use crate::topology::TopologyConfig;

pub use cold_start::{ColdStartParams, ColdStartRun, run_cold_start};
pub use pool::{Threads, available_parallelism};
pub use progress::{CHILD_LINE_PREFIX, ChildLine, Progress};

/// A scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name; also the report directory's name.
    pub name: String,
    /// What it exercises, in a sentence.
    pub description: String,
    /// Which runner: `pastry-hops`, `churn`, `partition`, `rpc-load`, `pubsub-fanout`,
    /// `churn-messaging`, `partition-messaging`, `cold-start`, `store-churn`, `identity-churn` (discrete-event simulator), `turmoil` (the
    /// real stack on simulated hosts and TCP) or `fidelity` (one workload on both, compared).
    pub kind: String,
    /// Master seed (overridable with `--seed`).
    pub seed: u64,
    /// Too long for the suite (`pastry-hops-1m`): `sim <directory>` skips it unless `--all`
    /// is given or `--filter` matches its name; `sim <file>` runs it.
    #[serde(default)]
    pub optional: bool,
    /// Network model.
    #[serde(default)]
    pub topology: TopologyConfig,
    /// Overrides of the node configuration.
    #[serde(default)]
    pub node: NodeOverrides,
    /// Simulator settings.
    #[serde(default)]
    pub sim: SimOverrides,
    /// Runner parameters (checked by the runner).
    #[serde(default)]
    pub params: toml::Table,
}

/// The node-config fields a scenario may set (times in milliseconds).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOverrides {
    /// `L`.
    pub leaf_set_size: Option<usize>,
    /// Heartbeat interval (to the counter-clockwise neighbour).
    pub heartbeat_interval_ms: Option<u64>,
    /// Leaf-set ping interval.
    pub leaf_ping_interval_ms: Option<u64>,
    /// Routing-table ping interval.
    pub routing_ping_interval_ms: Option<u64>,
    /// Ping timeout.
    pub ping_timeout_ms: Option<u64>,
    /// Misses that make a peer dead.
    pub suspicion_misses: Option<u32>,
    /// Leaf-set exchange interval (the longest gap).
    pub leaf_exchange_interval_ms: Option<u64>,
    /// Leaf-set exchange gap after a change (the shortest).
    pub leaf_exchange_min_ms: Option<u64>,
    /// Wait before a joiner tries its contacts again after all refused.
    pub join_busy_retry_ms: Option<u64>,
    /// Lookup timeout.
    pub lookup_timeout_ms: Option<u64>,
    /// Lookup attempts.
    pub lookup_attempts: Option<u32>,
    /// Routing-table row refresh interval.
    pub routing_maintenance_interval_ms: Option<u64>,
    /// Group-tree refresh interval.
    pub group_refresh_interval_ms: Option<u64>,
    /// How long a parent keeps a silent child.
    pub group_child_timeout_ms: Option<u64>,
    /// Most children a node keeps in one group tree (the bottleneck remover's cap).
    pub max_group_children: Option<usize>,
    /// How long events past a gap are held for the gap to fill (0: not held).
    pub event_gap_wait_ms: Option<u64>,
    /// Proximity sampling: about one challenger for a held routing-table slot in this many is
    /// probed.
    pub probe_one_in: Option<u32>,
}

impl NodeOverrides {
    /// The default node config with these overrides applied, validated.
    pub fn apply(&self) -> anyhow::Result<petal_core::Config> {
        let mut c = petal_core::Config::default();
        let ms = Duration::from_millis;
        if let Some(v) = self.leaf_set_size {
            c.leaf_set_size = v;
        }
        if let Some(v) = self.heartbeat_interval_ms {
            c.heartbeat_interval = ms(v);
        }
        if let Some(v) = self.leaf_ping_interval_ms {
            c.leaf_ping_interval = ms(v);
        }
        if let Some(v) = self.routing_ping_interval_ms {
            c.routing_ping_interval = ms(v);
        }
        if let Some(v) = self.ping_timeout_ms {
            c.ping_timeout = ms(v);
        }
        if let Some(v) = self.suspicion_misses {
            c.suspicion_misses = v;
        }
        if let Some(v) = self.leaf_exchange_interval_ms {
            c.leaf_exchange_interval = ms(v);
        }
        if let Some(v) = self.leaf_exchange_min_ms {
            c.leaf_exchange_min = ms(v);
        }
        if let Some(v) = self.join_busy_retry_ms {
            c.join_busy_retry = ms(v);
        }
        if let Some(v) = self.lookup_timeout_ms {
            c.lookup_timeout = ms(v);
        }
        if let Some(v) = self.lookup_attempts {
            c.lookup_attempts = v;
        }
        if let Some(v) = self.routing_maintenance_interval_ms {
            c.routing_maintenance_interval = ms(v);
        }
        if let Some(v) = self.group_refresh_interval_ms {
            c.group_refresh_interval = ms(v);
        }
        if let Some(v) = self.group_child_timeout_ms {
            c.group_child_timeout = ms(v);
        }
        if let Some(v) = self.max_group_children {
            c.max_group_children = v;
        }
        if let Some(v) = self.event_gap_wait_ms {
            c.event_gap_wait = ms(v);
        }
        if let Some(v) = self.probe_one_in {
            c.probe_one_in = v;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Simulator settings a scenario may set.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimOverrides {
    /// Ready nodes sampled to pick the nearest as a joiner's bootstrap (default 1: a random
    /// node, as a deployment has; the joiner searches for its nearest itself).
    pub bootstrap_sample: Option<usize>,
    /// Probability that a message is lost (default 0).
    pub loss: Option<f64>,
    /// Probability that a message is delivered twice (default 0).
    pub duplicate: Option<f64>,
    /// Further random delay of each message, up to this many milliseconds: reorders the
    /// messages of a link (default 0).
    pub reorder_ms: Option<u64>,
    /// Encode and decode every message (default false).
    pub wire_check: Option<bool>,
}

/// What a finished run reports back to the `sim` binary.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Target verdicts of the report.
    pub targets: TargetCounts,
    /// The names of the targets missed, in report order.
    pub missed: Vec<String>,
    /// Hash of the results (for determinism checks).
    pub results_hash: String,
    /// Simulated events processed.
    pub events: u64,
    /// Simulated messages delivered.
    pub messages: u64,
    /// Extra wall-clock figures of the run for `perf.json` (machine-dependent, so never in
    /// the report or `results.json`); empty for most runners.
    pub perf: serde_json::Map<String, serde_json::Value>,
}

impl Scenario {
    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let s: Scenario =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(s)
    }

    /// Runs the scenario and writes its report into `out_dir`, its independent runs (if it has
    /// any) on as many threads as the machine has cores.
    pub fn run(&self, out_dir: &Path, progress: &Progress) -> anyhow::Result<Outcome> {
        self.run_on(out_dir, progress, &Threads::available())
    }

    /// Runs the scenario and writes its report into `out_dir`, its independent runs (those of
    /// `cold-start`, `churn` and `churn-messaging`) on the `threads` budget. The report and
    /// `results.json` are the same whatever the budget.
    pub fn run_on(
        &self,
        out_dir: &Path,
        progress: &Progress,
        threads: &Threads,
    ) -> anyhow::Result<Outcome> {
        let node = self.node.apply()?;
        match self.kind.as_str() {
            "pastry-hops" => hops::run(self, node, out_dir, progress),
            "churn" => churn::run(self, node, out_dir, progress, threads),
            "churn-tradeoff" => churn_tradeoff::run(self, out_dir, progress, threads),
            "partition" => partition::run(self, node, out_dir, progress),
            "cold-start" => cold_start::run(self, node, out_dir, progress, threads),
            "churn-messaging" => churn_messaging::run(self, node, out_dir, progress, threads),
            "store-churn" => store_churn::run(self, node, out_dir, progress, threads),
            "identity-churn" => identity_churn::run(self, node, out_dir, progress, threads),
            "partition-messaging" => partition_messaging::run(self, node, out_dir, progress),
            "rpc-load" => rpc_load::run(self, node, out_dir, progress),
            "pubsub-fanout" => pubsub_fanout::run(self, node, out_dir, progress),
            "turmoil" => turmoil::run(self, node, out_dir, progress),
            "fidelity" => fidelity::run(self, node, out_dir, progress),
            other => bail!("unknown scenario kind {other:?} in {}", self.name),
        }
    }

    /// The engine configuration for a run with master seed `seed`.
    pub(crate) fn sim_config(
        &self,
        seed: u64,
        node: &petal_core::Config,
    ) -> anyhow::Result<crate::engine::SimConfig> {
        let mut cfg = crate::engine::SimConfig::new(seed, self.topology.clone());
        cfg.node = node.clone();
        if let Some(b) = self.sim.bootstrap_sample {
            cfg.bootstrap_sample = b;
        }
        if let Some(l) = self.sim.loss {
            anyhow::ensure!((0.0..1.0).contains(&l), "loss must be in [0, 1)");
            cfg.loss = l;
        }
        if let Some(d) = self.sim.duplicate {
            anyhow::ensure!((0.0..1.0).contains(&d), "duplicate must be in [0, 1)");
            cfg.duplicate = d;
        }
        if let Some(r) = self.sim.reorder_ms {
            cfg.reorder_us = r * 1000;
        }
        if let Some(w) = self.sim.wire_check {
            cfg.wire_check = w;
        }
        Ok(cfg)
    }

    /// A discrete-event simulator for a run with master seed `seed`, holding no node yet.
    pub(crate) fn new_sim(
        &self,
        seed: u64,
        node: &petal_core::Config,
    ) -> anyhow::Result<crate::engine::Sim> {
        Ok(crate::engine::Sim::new(self.sim_config(seed, node)?))
    }

    /// Runner parameters as a typed struct.
    pub(crate) fn params<P: for<'de> Deserialize<'de>>(&self) -> anyhow::Result<P> {
        P::deserialize(toml::Value::Table(self.params.clone()))
            .with_context(|| format!("parameters of scenario {}", self.name))
    }
}
