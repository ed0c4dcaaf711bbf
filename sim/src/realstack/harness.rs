//! The turmoil simulation: one host per node (the node and its applications), the step loop,
//! and the faults (crash, restart, partition, heal) applied between steps.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use petal_core::Time;
use petal_node::{Entropy, Identity, LinkSecurity, NetworkKey};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::{FaultKind, PartitionMode, RunConfig, SeedPattern};
use super::net::TurmoilNet;
use super::record::{Recorder, Shared, sim_now};
use super::script::Script;
use super::workload::{self, AppCtx, RELAY_ADDR};

/// Port of every node's peer listener.
pub const PEER_PORT: u16 = 7000;

/// How often each host samples its node's and connections' counters.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Turmoil's epoch: fixed, so that nothing depends on the machine's clock.
const EPOCH_S: u64 = 1_700_000_000;

/// Host name of node `i`.
pub fn host_name(i: u32) -> String {
    format!("n{i}")
}

/// A seed for `what` of host `host`'s incarnation `inc`, derived from the master seed.
pub(super) fn derive(master: u64, what: u64, host: u32, inc: u32) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(master);
    rng.set_stream(what);
    rng.set_word_pos(u128::from(host) << 40 | u128::from(inc) << 8);
    rng.random()
}

const SEED_CORE: u64 = 1;
const SEED_WORKLOAD: u64 = 2;
const SEED_HANDLER: u64 = 3;
const SEED_CHAIN: u64 = 5;

/// The result of a run: the records, the fault windows and the cost.
#[derive(Debug)]
pub struct RunResult {
    /// What the applications saw, and the harness's log.
    pub rec: Recorder,
    /// When the workload started and stopped, and when the run ended.
    pub work_from: Time,
    /// See [`RunResult::work_from`].
    pub work_until: Time,
    /// See [`RunResult::work_from`].
    pub end: Time,
    /// Crashes: (time, host).
    pub crashes: Vec<(Time, u32)>,
    /// Restarts: (time, host).
    pub restarts: Vec<(Time, u32)>,
    /// Partitions: (from, to, hosts cut off from the others).
    pub partitions: Vec<(Time, Time, Vec<u32>)>,
    /// Hosts down at the end.
    pub down_at_end: Vec<u32>,
    /// The trace hash (see [`Recorder::trace_hash`]).
    pub trace_hash: String,
    /// Wall-clock time the simulation took.
    pub wall: Duration,
    /// Turmoil steps run.
    pub steps: u64,
}

fn time_of(d: Duration) -> Time {
    Time::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What every incarnation of a host needs.
struct HostPlan {
    cfg: Arc<RunConfig>,
    shared: Shared,
    identities: Arc<Vec<Identity>>,
    host: u32,
}

/// The software of one host: a node, its applications, their workload; then it idles until
/// the host crashes or the run ends.
async fn host_main(plan: Arc<HostPlan>) -> turmoil::Result {
    let (cfg, host) = (&plan.cfg, plan.host);
    let inc = plan.shared.with(|r| r.boot(host, sim_now()));
    if inc == 0 {
        tokio::time::sleep(cfg.join_spacing * host).await;
    }
    let me = turmoil::lookup(host_name(host));
    // Encrypted links as in production, with seeded keys and randomness (deterministic).
    let mut opts = petal_node::Options::new(
        plan.identities[host as usize].clone(),
        LinkSecurity::Noise(NetworkKey::from_bytes(network_key(cfg.seed))),
    );
    opts.entropy = Entropy::Seeded(derive(cfg.seed, SEED_CORE ^ 0x5eed, host, inc));
    opts.relay_addrs = vec![RELAY_ADDR];
    opts.peer_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PEER_PORT);
    opts.advertise = Some(SocketAddr::new(me, PEER_PORT));
    // The first boot joins through its seed (host 0, or a random earlier host for chains;
    // host 0 starts a ring of one); a restart through the first three other hosts that are up,
    // whichever answers first (a node whose seeds all fail starts a ring of its own).
    let seeds: Vec<u32> = if inc == 0 {
        match (host, cfg.seeds) {
            (0, _) => vec![],
            (_, SeedPattern::First) => vec![0],
            (_, SeedPattern::Chain) => {
                let mut rng = ChaCha8Rng::seed_from_u64(derive(cfg.seed, SEED_CHAIN, host, 0));
                vec![rng.random_range(0..host)]
            }
        }
    } else {
        plan.shared.with(|r| {
            r.host_apps
                .keys()
                .copied()
                .filter(|&h| h != host)
                .take(3)
                .collect()
        })
    };
    opts.seeds = seeds
        .iter()
        .map(|&h| SocketAddr::new(turmoil::lookup(host_name(h)), PEER_PORT))
        .collect();
    if cfg.discovery {
        // No configuration: every node starts a ring of its own and finds the others by
        // beacons (turmoil delivers multicast to the hosts that joined the group).
        opts.seeds.clear();
        opts.discovery = Some(petal_node::discovery::Discovery::default());
    }
    opts.core = cfg.core.clone();
    opts.seed = core_seed(cfg.seed, host, inc);
    let node = petal_node::spawn(TurmoilNet, opts).await?;

    let ctx = AppCtx {
        shared: plan.shared.clone(),
        params: Arc::new(cfg.workload.clone()),
        nodes: cfg.nodes,
        host,
        seed: derive(cfg.seed, SEED_HANDLER, host, inc),
        work_from: time_of(cfg.work_from()),
        work_until: time_of(cfg.work_until()),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(derive(cfg.seed, SEED_WORKLOAD, host, inc));
    let topics = match &cfg.script {
        Some(s) => {
            watch(s, &plan.shared, &node, host, inc);
            s.subscriptions[host as usize].clone()
        }
        None => workload::draw_topics(&cfg.workload, &mut rng),
    };
    let (service, service_app) = workload::start_service(&ctx).await;
    let (conn, client_app) = workload::start_client(&ctx, &topics).await;
    {
        // Counters, sampled while the host lives (the last sample survives a crash).
        let shared = plan.shared.clone();
        let conns = [
            (service_app, service.connection().clone()),
            (client_app, conn.clone()),
        ];
        tokio::spawn(async move {
            loop {
                if let Some(s) = node.stats().await {
                    shared.with(|r| r.node_stats.insert((host, inc), s));
                }
                shared.with(|r| {
                    for (app, c) in &conns {
                        r.client_stats.insert(*app, c.stats());
                    }
                });
                tokio::time::sleep(STATS_EVERY).await;
            }
        });
    }
    match &cfg.script {
        Some(s) => workload::drive_script(ctx, conn.clone(), client_app, s.ops_of(host)).await,
        None => workload::drive(ctx, conn.clone(), client_app, rng).await,
    }
    // Keep both applications: outstanding requests and tunnels finish during the drain.
    std::future::pending::<()>().await;
    drop((conn, service));
    Ok(())
}

/// What a [`Script`] asks of a host's first incarnation besides its workload: its ready time
/// (the node polled every `ready_poll` from its boot) and its counters at the sample times.
fn watch(
    script: &Arc<Script>,
    shared: &Shared,
    node: &petal_node::NodeHandle,
    host: u32,
    inc: u32,
) {
    if inc > 0 {
        return;
    }
    let (source, s) = (node.stats_source(), shared.clone());
    let poll = script.ready_poll;
    tokio::spawn(async move {
        while let Some(snap) = source.get().await {
            if snap.ready {
                let now = sim_now();
                s.with(|r| {
                    r.ready_at.entry(host).or_insert(now);
                });
                return;
            }
            tokio::time::sleep(poll).await;
        }
    });
    let (source, s) = (node.stats_source(), shared.clone());
    let at = script.samples_at.clone();
    tokio::spawn(async move {
        for (k, t) in at.into_iter().enumerate() {
            let now = sim_now();
            let due = Time::ZERO + t;
            if due > now {
                tokio::time::sleep(due - now).await;
            }
            let Some(snap) = source.get().await else {
                return;
            };
            s.with(|r| r.samples.insert((host, k), snap));
        }
    });
}

/// The seed of the core of host `host`'s incarnation `inc` in a run with master seed `seed`.
pub fn core_seed(seed: u64, host: u32, inc: u32) -> u64 {
    derive(seed, SEED_CORE, host, inc)
}

/// The static identity of every host, from the master seed (a host keeps its identity, thus
/// its node id, across restarts).
pub fn identities(seed: u64, nodes: u32) -> Vec<Identity> {
    let mut id_rng = ChaCha8Rng::seed_from_u64(seed);
    id_rng.set_stream(0);
    (0..nodes)
        .map(|_| Identity::from_seed(id_rng.random()))
        .collect()
}

/// Runs a whole simulation.
pub fn run(cfg: &RunConfig) -> anyhow::Result<RunResult> {
    run_with_progress(cfg, &mut |_| {})
}

/// The simulated network's key, from the run's seed.
fn network_key(seed: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    ChaCha8Rng::seed_from_u64(seed ^ 0x6b65_795f_6e65_7477).fill(&mut k);
    k
}

/// Runs a whole simulation, calling `progress` with the simulated time at each whole second.
pub fn run_with_progress(
    cfg: &RunConfig,
    progress: &mut dyn FnMut(Duration),
) -> anyhow::Result<RunResult> {
    cfg.validate()?;
    let cfg = Arc::new(cfg.clone());
    let shared = Shared::default();
    let identities = Arc::new(identities(cfg.seed, cfg.nodes));
    let mut sim = turmoil::Builder::new()
        .rng_seed(derive(cfg.seed, 4, 0, 0))
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_S))
        .tick_duration(cfg.tick)
        .simulation_duration(cfg.end() + Duration::from_secs(3600))
        .min_message_latency(cfg.latency[0])
        .max_message_latency(cfg.latency[1])
        .build();
    for host in 0..cfg.nodes {
        let plan = Arc::new(HostPlan {
            cfg: cfg.clone(),
            shared: shared.clone(),
            identities: identities.clone(),
            host,
        });
        sim.host(host_name(host), move || host_main(plan.clone()));
    }
    if let Some(script) = &cfg.script {
        // Every link gets its own fixed delay (the script's matrix) instead of the global
        // random range.
        for a in 0..cfg.nodes {
            for b in a + 1..cfg.nodes {
                let d = Duration::from_micros(script.delay_us(cfg.nodes, a, b));
                sim.set_link_latency(host_name(a), host_name(b), d);
            }
        }
    }

    let mut faults = cfg.faults.iter().peekable();
    let mut up = vec![true; cfg.nodes as usize];
    let (mut crashes, mut restarts, mut partitions) = (Vec::new(), Vec::new(), Vec::new());
    let mut cut: Option<(Time, Vec<u32>)> = None;
    let others =
        |side: &[u32]| -> Vec<u32> { (0..cfg.nodes).filter(|h| !side.contains(h)).collect() };
    let wall = std::time::Instant::now();
    let mut steps = 0u64;
    let end = cfg.end();
    while sim.elapsed() < end {
        let now = sim.elapsed();
        while let Some(f) = faults.next_if(|f| cfg.fault_at(f) <= now) {
            let t = time_of(now);
            let what = format!("{:?} {:?}", f.action, f.nodes);
            shared.with(|r| r.log.push((t, what)));
            match f.action {
                FaultKind::Crash => {
                    for &h in &f.nodes {
                        if up[h as usize] {
                            sim.crash(host_name(h));
                            up[h as usize] = false;
                            shared.with(|r| r.host_crashed(h, t));
                            crashes.push((t, h));
                        }
                    }
                }
                FaultKind::Restart => {
                    for &h in &f.nodes {
                        if !up[h as usize] {
                            sim.bounce(host_name(h));
                            up[h as usize] = true;
                            restarts.push((t, h));
                        }
                    }
                }
                FaultKind::Partition => {
                    for &a in &f.nodes {
                        for b in others(&f.nodes) {
                            match cfg.partition_mode {
                                PartitionMode::Drop => sim.partition(host_name(a), host_name(b)),
                                PartitionMode::Hold => sim.hold(host_name(a), host_name(b)),
                            }
                        }
                    }
                    cut = Some((t, f.nodes.clone()));
                }
                FaultKind::Heal => {
                    if let Some((from, side)) = cut.take() {
                        for &a in &side {
                            for b in others(&side) {
                                match cfg.partition_mode {
                                    PartitionMode::Drop => sim.repair(host_name(a), host_name(b)),
                                    PartitionMode::Hold => sim.release(host_name(a), host_name(b)),
                                }
                            }
                        }
                        partitions.push((from, t, side));
                    }
                }
            }
        }
        sim.step()
            .map_err(|e| anyhow::anyhow!("turmoil step failed: {e}"))?;
        steps += 1;
        if sim.elapsed().as_secs() != now.as_secs() {
            progress(sim.elapsed());
        }
    }
    if let Some((from, side)) = cut.take() {
        partitions.push((from, time_of(sim.elapsed()), side));
    }
    let wall = wall.elapsed();
    let end = time_of(sim.elapsed());
    // Stop every host before reading the records, inside turmoil's context (`Sim::crash`):
    // dropping the simulation outside it would run the sockets' destructors (and the client's,
    // which may write a last packet) where turmoil's thread-local world is not set.
    for h in 0..cfg.nodes {
        if up[h as usize] {
            sim.crash(host_name(h));
        }
    }
    drop(sim);
    let rec = shared.take();
    let trace_hash = rec.trace_hash();
    Ok(RunResult {
        rec,
        work_from: time_of(cfg.work_from()),
        work_until: time_of(cfg.work_until()),
        end,
        crashes,
        restarts,
        partitions,
        down_at_end: (0..cfg.nodes).filter(|&h| !up[h as usize]).collect(),
        trace_hash,
        wall,
        steps,
    })
}
