//! The discrete-event run of the script: the engine's nodes (ids and core seeds of the real
//! hosts, placed already), started with seeds as the daemon is, the simulated applications
//! attached as the real ones attach, and the script's operations at their times. Time moves
//! in steps of one tick, the real run's polling resolution.

use std::time::Duration;

use petal_core::Time;

use super::{Observed, Params, TICK, compare};
use crate::apps::AppSpec;
use crate::engine::Sim;
use crate::realstack::{REQUEST_HANDLERS, Script, ScriptOpKind, cluster_name, topic_name};

/// The real applications' pause between attempts to attach to a node that is not ready yet
/// (`realstack`'s `ATTACH_RETRY`).
const ATTACH_RETRY: Duration = Duration::from_millis(250);

/// The applications of one host, and where they are in attaching.
#[derive(Clone, Copy, Default)]
struct Host {
    /// The client application, once attached.
    client: Option<usize>,
    /// The next attempt to attach both applications (`None` once attached).
    attach_at: Option<Time>,
}

/// Runs the script on `sim`, whose nodes are placed and down; `progress` gets the simulated
/// time every second.
pub(super) fn run(
    sim: &mut Sim,
    p: &Params,
    script: &Script,
    progress: &mut dyn FnMut(Duration),
) -> anyhow::Result<Observed> {
    let wall = std::time::Instant::now();
    let n = p.nodes;
    let boot_at: Vec<Time> = (0..n).map(|h| p.boot_at(h)).collect();
    let mut ready_at: Vec<Option<Time>> = vec![None; n as usize];
    let mut hosts = vec![Host::default(); n as usize];
    let mut ops = script.ops.iter().peekable();
    let mut samples_at = script.samples_at.iter().peekable();
    let mut samples = Vec::new();
    let mut not_issued = 0;
    let end = Time::ZERO + p.end();
    let mut now = Time::ZERO;
    while now < end {
        sim.run_until(now);
        for h in 0..n {
            let hi = h as usize;
            if boot_at[hi] == now {
                sim.start_with_seeds(h, if h == 0 { vec![] } else { vec![0] });
                hosts[hi].attach_at = Some(now);
            }
            if sim.is_alive(h) && ready_at[hi].is_none() && sim.node(h).is_ready() {
                ready_at[hi] = Some(now);
            }
            if hosts[hi].attach_at == Some(now) {
                hosts[hi] = attach(sim, p, script, h, now, ready_at[hi].is_some())?;
            }
        }
        while let Some(op) = ops.next_if(|o| Time::ZERO + o.at <= now) {
            let h = op.host;
            let issued = match op.kind {
                ScriptOpKind::Request(k) => hosts[h as usize].client.and_then(|app| {
                    let timeout = u32::try_from(p.request_timeout_ms).unwrap_or(u32::MAX);
                    sim.request(app, &cluster_name(k), timeout, p.request_size)
                }),
                ScriptOpKind::Publish(k) => sim.publish(h, &topic_name(k), p.event_size),
                ScriptOpKind::Broadcast(k) => sim.broadcast(h, &cluster_name(k), p.event_size),
            };
            not_issued += u64::from(issued.is_none());
        }
        if samples_at.next_if(|&&t| Time::ZERO + t <= now).is_some() {
            samples.push(compare::sum_core(
                (0..crate::count_u32(sim.node_count())).map(|i| sim.node(i).stats()),
            ));
        }
        let next = now + TICK;
        if next.as_micros() / 1_000_000 != now.as_micros() / 1_000_000 {
            progress(next.saturating_since(Time::ZERO));
        }
        now = next;
    }
    sim.run_until(end);
    Ok(Observed {
        apps: std::mem::take(&mut sim.apps),
        boot_at,
        ready_at,
        samples,
        runtime: Vec::new(),
        end,
        errors: 0,
        unexpected_replies: 0,
        not_issued,
        trace_hash: format!("{:016x}", sim.trace_hash()),
        work: sim.metrics.events,
        wall: wall.elapsed(),
    })
}

/// An attempt to attach host `h`'s applications at `now`: the service (a member of
/// `svc-(h mod clusters)`), then the client with its subscriptions, when the node is ready;
/// otherwise another attempt [`ATTACH_RETRY`] later.
fn attach(
    sim: &mut Sim,
    p: &Params,
    script: &Script,
    h: u32,
    now: Time,
    ready: bool,
) -> anyhow::Result<Host> {
    if !ready {
        return Ok(Host {
            client: None,
            attach_at: Some(now + ATTACH_RETRY),
        });
    }
    let mut service = AppSpec::member(&cluster_name(h % p.clusters), p.service_ms * 1000);
    // petal-client runs up to REQUEST_HANDLERS handlers at once; the node's own capacity
    // weight (1 for every relay member) matters only relative to the other members', so
    // equal weights of REQUEST_HANDLERS make the same choices.
    service.capacity = REQUEST_HANDLERS;
    sim.add_app(h, service)
        .ok_or_else(|| anyhow::anyhow!("the service of host {h} was refused"))?;
    let client = sim
        .add_app(h, AppSpec::client())
        .ok_or_else(|| anyhow::anyhow!("the client of host {h} was refused"))?;
    for &t in &script.subscriptions[h as usize] {
        anyhow::ensure!(
            sim.subscribe(client, &topic_name(t)),
            "host {h} could not subscribe to topic {t}"
        );
    }
    Ok(Host {
        client: Some(client),
        attach_at: None,
    })
}
