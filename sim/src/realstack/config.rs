//! What a real-stack run is: hosts, timing, network, application workload and faults.

use std::time::Duration;

use serde::Deserialize;

use super::script::Script;

/// The applications' behaviour (`[params.workload]` of a turmoil scenario). Rates are totals
/// over the whole network; each host runs `rate / nodes` of each.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadParams {
    /// Clusters `svc-0..`; host `i`'s service is a member of `svc-(i mod clusters)`.
    pub clusters: u32,
    /// Topics `topic-0..`.
    pub topics: u32,
    /// Probability that a host's client subscribes to each topic.
    pub subscribe_ratio: f64,
    /// Requests per second, to random clusters.
    pub requests_per_s: f64,
    /// Timeout of each request (enforced by the requester's node).
    pub request_timeout_ms: u64,
    /// Bytes of each request (at least 8: the request's global id).
    pub request_size: usize,
    /// A request's service time is drawn uniformly from this range (milliseconds, inclusive).
    pub service_ms: [u64; 2],
    /// Probability that a service answers a request with a fault instead of a reply.
    #[serde(default)]
    pub fault_ratio: f64,
    /// Events published per second, on random topics.
    pub publishes_per_s: f64,
    /// Messages broadcast per second, to random clusters.
    pub broadcasts_per_s: f64,
    /// Bytes of each event or broadcast (at least 8).
    pub event_size: usize,
    /// Tunnels opened per second, to random clusters.
    pub tunnels_per_s: f64,
    /// Messages sent through each tunnel and echoed back.
    pub tunnel_messages: u32,
    /// Bytes of each tunnel message (at least 12).
    pub tunnel_size: usize,
    /// Deadline of a tunnel's open and of each send.
    pub tunnel_timeout_ms: u64,
}

impl WorkloadParams {
    /// One sentence on the workload, for reports.
    pub fn describe(&self) -> String {
        format!(
            "Every host runs two applications over its loopback relay connection: a service, member of one \
             of {} clusters (svc-0..svc-{}, host i in svc-(i mod {})), answering requests after {}-{} ms \
             (a fault instead with probability {}), echoing tunnels; and a client subscribing to each of {} \
             topics with probability {}. Over the whole network the clients issue {} requests per second \
             (timeout {} ms, {} bytes) to random clusters, publish {} events and broadcast {} messages per \
             second ({} bytes) to random topics and clusters, and open {} tunnels per second, each carrying \
             {} messages of {} bytes echoed back in order. Every arrival process is Poisson.",
            self.clusters,
            self.clusters.saturating_sub(1),
            self.clusters,
            self.service_ms[0],
            self.service_ms[1],
            self.fault_ratio,
            self.topics,
            self.subscribe_ratio,
            self.requests_per_s,
            self.request_timeout_ms,
            self.request_size,
            self.publishes_per_s,
            self.broadcasts_per_s,
            self.event_size,
            self.tunnels_per_s,
            self.tunnel_messages,
            self.tunnel_size,
        )
    }

    /// Checks the parameters.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.clusters >= 1, "at least one cluster");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.subscribe_ratio) && (0.0..=1.0).contains(&self.fault_ratio),
            "ratios must be in [0, 1]"
        );
        anyhow::ensure!(
            self.service_ms[0] <= self.service_ms[1],
            "service_ms must be [min, max]"
        );
        let rates = [
            self.requests_per_s,
            self.publishes_per_s,
            self.broadcasts_per_s,
            self.tunnels_per_s,
        ];
        anyhow::ensure!(
            rates.iter().all(|r| r.is_finite() && *r >= 0.0),
            "rates must be finite and non-negative"
        );
        anyhow::ensure!(
            self.request_size >= 8 && self.event_size >= 8 && self.tunnel_size >= 12,
            "payloads carry their id: request and event sizes >= 8, tunnel size >= 12"
        );
        anyhow::ensure!(
            self.tunnels_per_s == 0.0 || self.tunnel_messages >= 1,
            "tunnels carry at least one message"
        );
        Ok(())
    }
}

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// The hosts crash: node and applications stop at once, like a machine losing power.
    Crash,
    /// The crashed hosts start again: a fresh node with the same id and address (as the
    /// daemon, which keeps its id in its data directory) and fresh applications.
    Restart,
    /// The listed hosts are cut off from all the others (both ways) until the next heal.
    Partition,
    /// The partition ends.
    Heal,
}

/// What a partition does to the traffic between its sides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionMode {
    /// Segments between the sides are lost (`Sim::partition`). Turmoil's TCP does not
    /// retransmit, so a stream that loses a segment stalls for good, silently: a black hole, as
    /// when a middlebox drops a connection's state. Nodes must notice and replace such links.
    #[default]
    Drop,
    /// Segments between the sides are held and delivered at the heal (`Sim::hold` and
    /// `release`): what TCP's retransmission makes of a short partition. Dials still time out.
    Hold,
}

/// Whom each host's first boot is given as seeds (restarts always use the first three other
/// hosts that are up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedPattern {
    /// Host 0 starts the ring; every other host seeds to host 0.
    #[default]
    First,
    /// Host 0 has no seed; host `k` seeds to one earlier host drawn at random (from the run's
    /// seed), so seeds form chains, as in a fleet whose configuration was grown host by host.
    Chain,
}

/// One fault, at a time counted from the start of the workload.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// When, in seconds after the workload starts. Negative: that long before it (clamped to
    /// the start of the run, before any host boots: e.g. groups that start apart).
    pub at_s: f64,
    /// What happens.
    pub action: FaultKind,
    /// Which hosts (by index; host 0 is the seed): the crashed or restarted hosts, or one side
    /// of a partition.
    #[serde(default)]
    pub nodes: Vec<u32>,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Master seed: node ids, core seeds, workload draws and turmoil's generator derive from it.
    pub seed: u64,
    /// Hosts, each running one node and its applications.
    pub nodes: u32,
    /// The nodes' core configuration.
    pub core: petal_core::Config,
    /// Host `i` boots `i * join_spacing` after the start (host 0 first: it is the seed).
    pub join_spacing: Duration,
    /// From the start until the workload begins (joins, trees forming).
    pub settle: Duration,
    /// How long the workload runs.
    pub run: Duration,
    /// After the workload: no new work; what is outstanding ends.
    pub drain: Duration,
    /// Turmoil's tick: simulated time per step; a whole number of milliseconds (turmoil runs
    /// each host for a tick by sleeping on its tokio runtime, whose timers round up to the
    /// millisecond: with a 100 µs tick the hosts' clocks ran ten times faster than the
    /// network's, and latencies came out ten times too short).
    pub tick: Duration,
    /// One-way latency range of a message between two hosts (turmoil's exponential
    /// distribution within it).
    pub latency: [Duration; 2],
    /// The applications.
    pub workload: WorkloadParams,
    /// Faults, at times after the workload starts.
    pub faults: Vec<Fault>,
    /// What partitions do to the traffic between their sides.
    pub partition_mode: PartitionMode,
    /// Nodes find each other by multicast discovery beacons (no seeds at all) instead of
    /// joining through seeds.
    pub discovery: bool,
    /// The seeds of each host's first boot (without discovery).
    pub seeds: SeedPattern,
    /// A fixed workload and per-link delays instead of the Poisson streams and `latency`
    /// (see [`Script`]); `None` for the usual run.
    pub script: Option<std::sync::Arc<Script>>,
}

impl RunConfig {
    /// When fault `f` happens, from the start of the run.
    pub fn fault_at(&self, f: &Fault) -> Duration {
        let from = self.work_from();
        if f.at_s >= 0.0 {
            from + Duration::from_secs_f64(f.at_s)
        } else {
            from.saturating_sub(Duration::from_secs_f64(-f.at_s))
        }
    }

    /// A small configuration with every pattern and no fault (tests start from it).
    pub fn small(seed: u64, nodes: u32) -> Self {
        RunConfig {
            seed,
            nodes,
            core: petal_core::Config::default(),
            join_spacing: Duration::from_millis(100),
            settle: Duration::from_secs(4),
            run: Duration::from_secs(4),
            drain: Duration::from_secs(3),
            tick: Duration::from_millis(1),
            latency: [Duration::from_millis(1), Duration::from_millis(10)],
            workload: WorkloadParams {
                clusters: 2,
                topics: 2,
                subscribe_ratio: 0.5,
                requests_per_s: 20.0,
                request_timeout_ms: 2000,
                request_size: 32,
                service_ms: [1, 5],
                fault_ratio: 0.1,
                publishes_per_s: 5.0,
                broadcasts_per_s: 3.0,
                event_size: 32,
                tunnels_per_s: 1.0,
                tunnel_messages: 5,
                tunnel_size: 2000,
                tunnel_timeout_ms: 2000,
            },
            faults: Vec::new(),
            partition_mode: PartitionMode::Drop,
            discovery: false,
            seeds: SeedPattern::First,
            script: None,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.workload.validate()?;
        anyhow::ensure!(self.nodes >= 1, "at least one host");
        anyhow::ensure!(self.nodes <= 250, "at most 250 hosts (one turmoil subnet)");
        anyhow::ensure!(!self.tick.is_zero(), "tick must be positive");
        anyhow::ensure!(
            self.tick.subsec_nanos() % 1_000_000 == 0,
            "tick must be a whole number of milliseconds: a host's tokio clock has millisecond \
             resolution, so each tick would advance it by a whole millisecond whatever the tick, \
             and the hosts' clocks would run ahead of the network's"
        );
        anyhow::ensure!(
            self.latency[0] <= self.latency[1],
            "latency must be [min, max]"
        );
        if let Some(s) = &self.script {
            s.validate(self.nodes, self.workload.clusters, self.workload.topics)?;
        }
        let mut partitioned = false;
        let mut last = f64::NEG_INFINITY;
        for f in &self.faults {
            anyhow::ensure!(f.at_s.is_finite(), "fault times must be finite");
            anyhow::ensure!(f.at_s >= last, "faults must be listed in time order");
            last = f.at_s;
            anyhow::ensure!(
                f.nodes.iter().all(|&n| n < self.nodes),
                "fault on a host that does not exist: {:?}",
                f.nodes
            );
            match f.action {
                FaultKind::Crash | FaultKind::Restart => {}
                FaultKind::Partition => {
                    anyhow::ensure!(!partitioned, "a partition must be healed before the next");
                    partitioned = true;
                }
                FaultKind::Heal => partitioned = false,
            }
        }
        Ok(())
    }

    /// When the workload starts (simulated time since the start).
    pub fn work_from(&self) -> Duration {
        self.settle
    }

    /// When the workload stops.
    pub fn work_until(&self) -> Duration {
        self.settle + self.run
    }

    /// When the run ends.
    pub fn end(&self) -> Duration {
        self.settle + self.run + self.drain
    }
}
