//! `store-churn`: the replicated key-value store on a steady population under Poisson churn
//! (exponential sessions with a given median, a new node for each crash): clients on every
//! node get, put (some with a time to live), compare-and-set and delete a fixed set of keys
//! while nodes come and go; an oracle judges every outcome (see `oracle`), and after the churn
//! every key is read once more to find acknowledged writes that were lost.

mod oracle;
mod report;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use petal_core::store::key_of;
use petal_core::{StoreOpKind, StoreStats, Time};
use rand::Rng;
use serde::Deserialize;

use super::common::{Churn, STEP_MS, advance_ms, exp_us, grow};
use super::pool::map_in_order;
use super::{Outcome, Progress, Scenario, Threads};
use crate::apps::AppSpec;
use crate::engine::{Sim, derive_seed};
use oracle::{Judged, Kind, Op, Oracle};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    nodes: u64,
    /// One run per median session time, in seconds.
    median_session_s: Vec<u64>,
    /// Churn phase length (the measured window).
    duration_s: u64,
    join_spacing_ms: u64,
    /// Overlay settling before the clients start.
    settle_s: u64,
    /// Writes before the churn starts (every key written once, spread over this time).
    preload_s: u64,
    /// After the churn phase: no churn, no new work; then every key is read once more.
    drain_s: u64,
    /// Keys (`k0`, `k1`, ...).
    keys: usize,
    /// Operations per second over the whole network (Poisson).
    ops_per_s: f64,
    /// Shares of gets, puts and conditional puts; deletes take the rest.
    get_share: f64,
    put_share: f64,
    cas_share: f64,
    /// Share of puts with a time to live, drawn uniformly from `ttl_s`.
    ttl_share: f64,
    ttl_s: [u64; 2],
    value_size: usize,
    timeout_ms: u32,
    /// An acknowledged write lost after `k` of its key's replicas crashed within this long of
    /// each other is excused (the store promises nothing then).
    repair_window_s: u64,
}

/// The clients: one application per ready node, added as nodes become ready.
struct Clients {
    /// Node -> its client application.
    app_of: BTreeMap<u32, usize>,
    /// Nodes added during the churn, not ready yet.
    waiting: Vec<u32>,
}

impl Clients {
    fn adopt(&mut self, sim: &mut Sim, node: u32) -> bool {
        if sim.node(node).is_ready() {
            if let Some(app) = sim.add_app(node, AppSpec::client()) {
                self.app_of.insert(node, app);
            }
            return true;
        }
        false
    }

    fn adopt_ready(&mut self, sim: &mut Sim) {
        let waiting = std::mem::take(&mut self.waiting);
        for n in waiting {
            if sim.is_alive(n) && !self.adopt(sim, n) {
                self.waiting.push(n);
            }
        }
    }

    /// A random live client.
    fn pick(&self, sim: &mut Sim) -> Option<usize> {
        for _ in 0..8 {
            let n = sim.random_ready()?;
            if let Some(&app) = self.app_of.get(&n)
                && sim.apps.list[app].until.is_none()
            {
                return Some(app);
            }
        }
        None
    }
}

/// The store's counters summed over every node (alive or not).
fn store_totals(sim: &Sim) -> StoreStats {
    let mut t = StoreStats::default();
    for i in 0..sim.node_count() {
        let s = sim.node(u32::try_from(i).unwrap_or(u32::MAX)).store_stats();
        t.entries_repaired += s.entries_repaired;
        t.entries_handed_off += s.entries_handed_off;
        t.syncs_sent += s.syncs_sent;
        t.entries_expired += s.entries_expired;
        t.quorum_failures += s.quorum_failures;
        t.coordinated += s.coordinated;
    }
    t
}

/// What one run measured.
struct Run {
    median_s: u64,
    judged: Judged,
    /// Operations issued during the churn.
    issued: u64,
    /// Outcomes for operations never issued.
    strays: u64,
    crashes: u64,
    arrivals: u64,
    alive_mean: f64,
    /// Per second of churn: entries copied by repair and handoff, digests sent.
    repair_per_s: Vec<(u64, u64)>,
    /// Keys whose `k` closest ready nodes all hold the final version, of keys with a value.
    replicated: (u64, u64),
    totals: StoreStats,
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
        p.get_share + p.put_share + p.cas_share <= 1.0 && p.keys > 0 && p.ttl_s[0] <= p.ttl_s[1],
        "op shares must sum to at most 1, keys > 0, ttl_s ordered"
    );
    progress.set_len(p.median_session_s.len() as u64 * (p.duration_s + 1));
    let done = map_in_order(threads, p.median_session_s.len(), |k| {
        let seed = derive_seed(sc.seed, "store-churn-run", k as u64);
        let mut sim = sc.new_sim(seed, &node)?;
        let run = churn_run(&mut sim, &p, &node, p.median_session_s[k], progress, k);
        Ok((run, sim.metrics.events, sim.metrics.messages))
    })?;
    progress.finish();
    let events = done.iter().map(|d| d.1).sum();
    let messages = done.iter().map(|d| d.2).sum();
    let runs: Vec<Run> = done.into_iter().map(|d| d.0).collect();
    report::write(sc, &p, &node, &runs, out, (events, messages))
}

/// Issues one random operation from a random client.
fn issue(sim: &mut Sim, p: &Params, clients: &Clients, o: &mut Oracle, write_only: Option<usize>) {
    let Some(app) = clients.pick(sim) else {
        return;
    };
    let (kind, key) = match write_only {
        Some(key) => (Kind::Put, key),
        None => {
            let x: f64 = sim.rng().random();
            let key = sim.rng().random_range(0..p.keys);
            let kind = if x < p.get_share {
                Kind::Get
            } else if x < p.get_share + p.put_share {
                Kind::Put
            } else if x < p.get_share + p.put_share + p.cas_share {
                Kind::Cas
            } else {
                Kind::Delete
            };
            (kind, key)
        }
    };
    let id = o.ops.len() as u64 + 1;
    let ttl_ms = if kind == Kind::Put && sim.rng().random::<f64>() < p.ttl_share {
        sim.rng().random_range(p.ttl_s[0]..=p.ttl_s[1]) * 1000
    } else {
        0
    };
    // A conditional write expects what a client that read the key would have seen: the
    // newest acknowledged version (none when the newest is a deletion or absent).
    let expect = (kind == Kind::Cas).then(|| o.latest_value_version(key));
    let value = || {
        let mut v = vec![0u8; p.value_size.max(8)];
        v[..8].copy_from_slice(&id.to_be_bytes());
        Bytes::from(v)
    };
    let op = match kind {
        Kind::Get => StoreOpKind::Get,
        Kind::Put | Kind::Cas => StoreOpKind::Put {
            value: value(),
            ttl_ms,
            expect,
        },
        Kind::Delete => StoreOpKind::Delete { expect: None },
    };
    let now = sim.now();
    if sim.kv(app, id, &format!("k{key}"), op, p.timeout_ms) {
        o.push(Op {
            kind,
            key,
            app,
            issued: now,
            ttl_ms,
            expect,
            outcome: None,
            outcomes: 0,
            final_read: false,
        });
    }
}

fn churn_run(
    sim: &mut Sim,
    p: &Params,
    node: &petal_core::Config,
    median_s: u64,
    progress: &Progress,
    part: usize,
) -> Run {
    grow(sim, p.nodes, p.join_spacing_ms, p.settle_s * 1000, |_| {});
    let mut clients = Clients {
        app_of: BTreeMap::new(),
        waiting: Vec::new(),
    };
    for n in sim.ready_nodes().collect::<Vec<_>>() {
        clients.adopt(sim, n);
    }
    let mut o = Oracle::new(p.keys, node.store_replicas);
    // Preload: every key written once.
    let spacing_us = (p.preload_s * 1_000_000 / p.keys as u64).max(1);
    for key in 0..p.keys {
        issue(sim, p, &clients, &mut o, Some(key));
        o.collect(sim);
        let t = sim.now().as_micros() + spacing_us;
        sim.run_until(Time::from_micros(t));
    }
    advance_ms(sim, 2_000);
    o.collect(sim);
    let start = sim.now();
    o.start = start;
    let mut churn = Churn::start(sim, p.nodes, median_s);
    let ops_per_us = p.ops_per_s / 1e6;
    let mut next_op = start.as_micros() + exp_us(sim, ops_per_us);
    let (mut alive_sum, mut samples) = (0.0, 0u64);
    let end = start.as_micros() + p.duration_s * 1_000_000;
    let mut next_sample = start.as_micros();
    let mut repair_per_s = Vec::new();
    let mut last = store_totals(sim);
    while sim.now().as_micros() < end {
        let now = sim.now().as_micros();
        churn.step(
            sim,
            now,
            |sim, i| o.before_crash(sim, i),
            |_, i| clients.waiting.push(i),
        );
        clients.adopt_ready(sim);
        while next_op <= now {
            issue(sim, p, &clients, &mut o, None);
            next_op += exp_us(sim, ops_per_us).max(1);
        }
        o.collect(sim);
        if now >= next_sample {
            let secs = (now - start.as_micros()) / 1_000_000;
            alive_sum += sim.alive_count() as f64;
            samples += 1;
            let t = store_totals(sim);
            if secs > 0 {
                repair_per_s.push((
                    t.entries_repaired + t.entries_handed_off
                        - last.entries_repaired
                        - last.entries_handed_off,
                    t.syncs_sent - last.syncs_sent,
                ));
            }
            last = t;
            progress.set_part(
                part,
                secs,
                format!("median session {median_s} s: {} alive", sim.alive_count()),
            );
            next_sample += 1_000_000;
        }
        sim.run_until(Time::from_micros(now + STEP_MS * 1000));
    }
    o.end = sim.now();
    // No more churn and no new work: what is outstanding ends, replicas repair.
    for _ in 0..p.drain_s * 1000 / STEP_MS {
        clients.adopt_ready(sim);
        o.collect(sim);
        advance_ms(sim, STEP_MS);
    }
    // Every key once more, from random clients.
    o.final_from = o.ops.len();
    for key in 0..p.keys {
        let before = o.ops.len();
        for _ in 0..4 {
            if o.ops.len() > before {
                break;
            }
            final_read(sim, p, &clients, &mut o, key);
        }
    }
    advance_ms(sim, u64::from(p.timeout_ms) + 1_000);
    o.collect(sim);
    let replicated = o.replication(sim);
    let issued = o.ops[..o.final_from]
        .iter()
        .filter(|op| op.issued >= o.start && op.issued < o.end)
        .count() as u64;
    Run {
        median_s,
        judged: o.judge(sim, p),
        issued,
        strays: o.strays,
        crashes: churn.crashes,
        arrivals: churn.arrivals,
        alive_mean: alive_sum / samples.max(1) as f64,
        repair_per_s,
        replicated,
        totals: store_totals(sim),
    }
}

/// A read of `key` after the churn, to find lost writes.
fn final_read(sim: &mut Sim, p: &Params, clients: &Clients, o: &mut Oracle, key: usize) {
    let Some(app) = clients.pick(sim) else {
        return;
    };
    let id = o.ops.len() as u64 + 1;
    let now = sim.now();
    if sim.kv(app, id, &format!("k{key}"), StoreOpKind::Get, p.timeout_ms) {
        o.push(Op {
            kind: Kind::Get,
            key,
            app,
            issued: now,
            ttl_ms: 0,
            expect: None,
            outcome: None,
            outcomes: 0,
            final_read: true,
        });
    }
}

/// The ring key of key number `key`.
fn ring_key(key: usize) -> petal_core::Key {
    key_of(&format!("k{key}"))
}
