//! `identity-churn`: identity addressing on a steady population under Poisson churn. Users
//! hold identities (`u0`, `u1`, ...) on random nodes, move between nodes (the new registration
//! first, then the old connection closes), go offline and come back, and reconnect elsewhere
//! when their node crashes; clients on every node send to random identities. Judged: exactly
//! one outcome per send; every message to a user reachable around the send delivered to that
//! user (and to nobody else, and at most once per connection); no message delivered to a user
//! offline for longer than a lease.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use petal_core::Time;
use petal_core::store::IdResult;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use super::common::{
    Churn, STEP_MS, advance_ms, exp_us, finish, grow, ms_quantiles, pct, share_target, zero_target,
};
use super::pool::map_in_order;
use super::{Outcome, Progress, Scenario, Threads};
use crate::apps::{AppSpec, IdCommand};
use crate::engine::{Sim, derive_seed};
use crate::metrics::quantile;
use crate::report::{CdfChart, ReportWriter, TargetRow};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    nodes: u64,
    /// One run per median node session, in seconds.
    median_session_s: Vec<u64>,
    duration_s: u64,
    join_spacing_ms: u64,
    settle_s: u64,
    drain_s: u64,
    users: usize,
    /// Mean time between a user's moves while online (exponential).
    move_every_s: f64,
    /// Mean online and offline periods of a user (exponential).
    online_s: f64,
    offline_s: f64,
    /// A user whose node crashed reconnects elsewhere this long after.
    reconnect_ms: u64,
    sends_per_s: f64,
    timeout_ms: u32,
    /// A send is expected to reach its user when the user was reachable from this long before
    /// the send until its outcome.
    live_before_ms: u64,
}

/// One attachment of a user: its application, when its registration was acknowledged (None:
/// not yet, or never), when it ended.
#[derive(Clone, Debug)]
struct Stint {
    app: usize,
    acked: Option<Time>,
    end: Option<Time>,
}

#[derive(Clone, Debug, Default)]
struct User {
    stints: Vec<Stint>,
    /// Online (wants to be attached).
    online: bool,
    /// When the next move, or the next change between online and offline, is due.
    next_move: u64,
    next_toggle: u64,
    /// A reconnection is due at this time (its node crashed).
    reconnect_at: Option<u64>,
}

impl User {
    fn current(&self) -> Option<&Stint> {
        self.stints.iter().rev().find(|s| s.end.is_none())
    }
}

struct Send {
    user: usize,
    /// The sending application.
    app: usize,
    issued: Time,
    outcome: Option<(Time, IdResult)>,
    outcomes: u32,
}

struct Run {
    median_s: u64,
    crashes: u64,
    arrivals: u64,
    judged_live: u64,
    delivered_live: u64,
    judged_dead: u64,
    delivered_dead: u64,
    unknown_dead: u64,
    wrong: u64,
    duplicates: u64,
    missing_outcome: u64,
    second_outcome: u64,
    strays: u64,
    sends: u64,
    registrations: u64,
    registered: u64,
    register_us: Vec<u64>,
    send_us: Vec<u64>,
    moves: u64,
}

pub(super) fn run(
    sc: &Scenario,
    node: petal_core::Config,
    out: &Path,
    progress: &Progress,
    threads: &Threads,
) -> anyhow::Result<Outcome> {
    let p: Params = sc.params()?;
    anyhow::ensure!(p.users > 0, "users > 0");
    progress.set_len(p.median_session_s.len() as u64 * (p.duration_s + 1));
    let done = map_in_order(threads, p.median_session_s.len(), |k| {
        let seed = derive_seed(sc.seed, "identity-churn-run", k as u64);
        let mut sim = sc.new_sim(seed, &node)?;
        let run = churn_run(&mut sim, &p, &node, p.median_session_s[k], progress, k);
        Ok((run, sim.metrics.events, sim.metrics.messages))
    })?;
    progress.finish();
    let events = done.iter().map(|d| d.1).sum();
    let messages = done.iter().map(|d| d.2).sum();
    let runs: Vec<Run> = done.into_iter().map(|d| d.0).collect();
    write_report(sc, &p, &node, &runs, out, (events, messages))
}

/// The simulation and its bookkeeping.
struct World<'a> {
    p: &'a Params,
    users: Vec<User>,
    /// Application -> user (for the applications users hold identities on).
    user_of: BTreeMap<usize, usize>,
    /// Register operations: op id -> (user, stint index).
    registers: BTreeMap<u64, (usize, usize, Time)>,
    sends: Vec<Send>,
    /// Send op ids start above this (register ids below).
    next_op: u64,
    /// Node -> its sending client.
    senders: BTreeMap<u32, usize>,
    cursor_done: usize,
    cursor_msgs: usize,
    /// (send, application) deliveries.
    deliveries: BTreeMap<usize, Vec<(usize, Time)>>,
    strays: u64,
    moves: u64,
}

const SEND_IDS: u64 = 1 << 40;

impl World<'_> {
    fn identity(u: usize) -> String {
        format!("u{u}")
    }

    /// Attaches user `u` at a random ready node.
    fn attach(&mut self, sim: &mut Sim, u: usize) {
        let Some(n) = sim.random_ready() else {
            return;
        };
        let Some(app) = sim.add_app(n, AppSpec::client()) else {
            return;
        };
        self.user_of.insert(app, u);
        self.next_op += 1;
        let op = self.next_op;
        let stint = self.users[u].stints.len();
        self.users[u].stints.push(Stint {
            app,
            acked: None,
            end: None,
        });
        let identity = Self::identity(u);
        if sim.id_command(app, op, IdCommand::Register(&identity), self.p.timeout_ms) {
            self.registers.insert(op, (u, stint, sim.now()));
        }
    }

    /// Ends stint `i` of user `u` (its connection closes).
    fn detach(&mut self, sim: &mut Sim, u: usize, i: usize) {
        let s = &mut self.users[u].stints[i];
        if s.end.is_none() {
            s.end = Some(sim.now());
            sim.remove_app(s.app);
        }
    }

    fn collect(&mut self, sim: &mut Sim) {
        let done: Vec<_> = sim.apps.id_done[self.cursor_done..].to_vec();
        self.cursor_done = sim.apps.id_done.len();
        for (t, _, op, result) in done {
            if op > SEND_IDS {
                let Some(s) = usize::try_from(op - SEND_IDS - 1)
                    .ok()
                    .and_then(|i| self.sends.get_mut(i))
                else {
                    self.strays += 1;
                    continue;
                };
                s.outcomes += 1;
                if s.outcome.is_none() {
                    s.outcome = Some((t, result));
                }
                continue;
            }
            let Some((u, i, _)) = self.registers.get(&op).copied() else {
                self.strays += 1;
                continue;
            };
            if result == IdResult::Registered && self.users[u].stints[i].end.is_none() {
                self.users[u].stints[i].acked = Some(t);
                // A move: the older attachments let go now that the new one is listed.
                let older: Vec<usize> = (0..i)
                    .filter(|&j| self.users[u].stints[j].end.is_none())
                    .collect();
                for j in older {
                    self.detach(sim, u, j);
                }
            }
        }
        for (t, app, _, payload) in &sim.apps.id_messages[self.cursor_msgs..] {
            let id = payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(u64::MAX, u64::from_be_bytes);
            match usize::try_from(id).ok().filter(|&i| i < self.sends.len()) {
                Some(s) => self.deliveries.entry(s).or_default().push((*app, *t)),
                None => self.strays += 1,
            }
        }
        self.cursor_msgs = sim.apps.id_messages.len();
    }

    /// Users whose attachment died with their node reconnect later; others act on schedule.
    fn tick(&mut self, sim: &mut Sim, rng_now: u64) {
        for u in 0..self.users.len() {
            // A crashed node took the user's connection.
            if let Some(cur) = self.users[u].current() {
                let app = cur.app;
                if let Some(until) = sim.apps.list[app].until {
                    let i = self.users[u].stints.len() - 1;
                    if self.users[u].stints[i].end.is_none() {
                        self.users[u].stints[i].end = Some(until);
                    }
                    if self.users[u].online {
                        self.users[u].reconnect_at = Some(rng_now + self.p.reconnect_ms * 1000);
                    }
                }
            }
            if let Some(at) = self.users[u].reconnect_at
                && at <= rng_now
            {
                self.users[u].reconnect_at = None;
                if self.users[u].online && self.users[u].current().is_none() {
                    self.attach(sim, u);
                }
            }
            if self.users[u].next_toggle <= rng_now {
                let online = !self.users[u].online;
                self.users[u].online = online;
                let mean = if online {
                    self.p.online_s
                } else {
                    self.p.offline_s
                };
                self.users[u].next_toggle = rng_now + exp_us(sim, 1.0 / (mean * 1e6)).max(1);
                if online {
                    self.attach(sim, u);
                } else {
                    let open: Vec<usize> = (0..self.users[u].stints.len())
                        .filter(|&j| self.users[u].stints[j].end.is_none())
                        .collect();
                    for j in open {
                        self.detach(sim, u, j);
                    }
                }
            }
            if self.users[u].online && self.users[u].next_move <= rng_now {
                self.users[u].next_move =
                    rng_now + exp_us(sim, 1.0 / (self.p.move_every_s * 1e6)).max(1);
                if self.users[u].current().is_some_and(|s| s.acked.is_some()) {
                    self.moves += 1;
                    self.attach(sim, u);
                }
            }
        }
    }

    fn send(&mut self, sim: &mut Sim) {
        let Some(n) = sim.random_ready() else {
            return;
        };
        let sender = match self.senders.get(&n) {
            Some(&a) if sim.apps.list[a].until.is_none() => a,
            _ => match sim.add_app(n, AppSpec::client()) {
                Some(a) => {
                    self.senders.insert(n, a);
                    a
                }
                None => return,
            },
        };
        let u = sim.rng().random_range(0..self.users.len());
        let idx = self.sends.len();
        let mut payload = vec![0u8; 16];
        payload[..8].copy_from_slice(&(idx as u64).to_be_bytes());
        let op = SEND_IDS + idx as u64 + 1;
        let identity = Self::identity(u);
        let now = sim.now();
        if sim.id_command(
            sender,
            op,
            IdCommand::Send(&identity, Bytes::from(payload)),
            self.p.timeout_ms,
        ) {
            self.sends.push(Send {
                user: u,
                app: sender,
                issued: now,
                outcome: None,
                outcomes: 0,
            });
        }
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
    let mut w = World {
        p,
        users: vec![User::default(); p.users],
        user_of: BTreeMap::new(),
        registers: BTreeMap::new(),
        sends: Vec::new(),
        next_op: 0,
        senders: BTreeMap::new(),
        cursor_done: 0,
        cursor_msgs: 0,
        deliveries: BTreeMap::new(),
        strays: 0,
        moves: 0,
    };
    let start_us = sim.now().as_micros();
    for u in 0..p.users {
        // Every user starts online, attached; schedules drawn per user.
        w.users[u].online = true;
        w.users[u].next_toggle = start_us + exp_us(sim, 1.0 / (p.online_s * 1e6)).max(1);
        w.users[u].next_move = start_us + exp_us(sim, 1.0 / (p.move_every_s * 1e6)).max(1);
        w.attach(sim, u);
    }
    advance_ms(sim, 3_000);
    w.collect(sim);
    let start = sim.now();
    let mut churn = Churn::start(sim, p.nodes, median_s);
    let sends_per_us = p.sends_per_s / 1e6;
    let mut next_send = start.as_micros() + exp_us(sim, sends_per_us);
    let end = start.as_micros() + p.duration_s * 1_000_000;
    let mut next_sample = start.as_micros();
    while sim.now().as_micros() < end {
        let now = sim.now().as_micros();
        churn.step(sim, now, |_, _| {}, |_, _| {});
        w.collect(sim);
        w.tick(sim, now);
        while next_send <= now {
            w.send(sim);
            next_send += exp_us(sim, sends_per_us).max(1);
        }
        if now >= next_sample {
            progress.set_part(
                part,
                (now - start.as_micros()) / 1_000_000,
                format!("median session {median_s} s: {} alive", sim.alive_count()),
            );
            next_sample += 1_000_000;
        }
        sim.run_until(Time::from_micros(now + STEP_MS * 1000));
    }
    let end = Time::from_micros(end);
    for _ in 0..p.drain_s * 1000 / STEP_MS {
        w.collect(sim);
        advance_ms(sim, STEP_MS);
    }
    w.collect(sim);
    judge(
        &w,
        sim,
        node,
        median_s,
        start,
        end,
        (churn.crashes, churn.arrivals),
    )
}

/// `t - d`, or zero.
fn earlier(t: Time, d: Duration) -> Time {
    Time::from_micros(
        t.as_micros()
            .saturating_sub(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
    )
}

/// Whether user `u` was reachable (a listed attachment, without a gap) over `[from, to]`.
fn reachable(user: &User, from: Time, to: Time) -> bool {
    let mut spans: Vec<(Time, Time)> = user
        .stints
        .iter()
        .filter_map(|s| Some((s.acked?, s.end.unwrap_or(Time::MAX))))
        .collect();
    spans.sort();
    let mut covered = from;
    for (a, b) in spans {
        if a > covered {
            break;
        }
        covered = covered.max(b);
        if covered >= to {
            return true;
        }
    }
    false
}

/// Whether user `u` had any attachment alive in `[from, to]`.
fn attached(user: &User, from: Time, to: Time) -> bool {
    user.stints.iter().any(|s| {
        let begin = s.acked.unwrap_or(Time::MAX);
        begin <= to && s.end.is_none_or(|e| e >= from)
    }) || user
        .stints
        .iter()
        .any(|s| s.acked.is_none() && s.end.is_none_or(|e| e >= from))
}

fn judge(
    w: &World<'_>,
    sim: &Sim,
    node: &petal_core::Config,
    median_s: u64,
    start: Time,
    end: Time,
    (crashes, arrivals): (u64, u64),
) -> Run {
    let p = w.p;
    let lease = node.identity_lease;
    let before = Duration::from_millis(p.live_before_ms);
    let timeout = Duration::from_millis(u64::from(p.timeout_ms));
    let mut r = Run {
        median_s,
        crashes,
        arrivals,
        judged_live: 0,
        delivered_live: 0,
        judged_dead: 0,
        delivered_dead: 0,
        unknown_dead: 0,
        wrong: 0,
        duplicates: 0,
        missing_outcome: 0,
        second_outcome: 0,
        strays: w.strays,
        sends: 0,
        registrations: w.registers.len() as u64,
        registered: 0,
        register_us: Vec::new(),
        send_us: Vec::new(),
        moves: w.moves,
    };
    for (u, i, t) in w.registers.values() {
        if let Some(a) = w.users[*u].stints[*i].acked {
            r.registered += 1;
            r.register_us.push(a.as_micros() - t.as_micros());
        }
    }
    for (idx, s) in w.sends.iter().enumerate() {
        if s.issued < start || s.issued >= end {
            continue;
        }
        // A sender that died before its deadline (and a second) hears nothing: not judged.
        let lived = sim.apps.list[s.app]
            .until
            .is_none_or(|u| u >= s.issued + timeout + Duration::from_secs(1));
        if !lived {
            continue;
        }
        r.sends += 1;
        r.second_outcome += u64::from(s.outcomes.saturating_sub(1));
        let Some((done, result)) = &s.outcome else {
            r.missing_outcome += 1;
            continue;
        };
        let user = &w.users[s.user];
        let got = w.deliveries.get(&idx).cloned().unwrap_or_default();
        let mut per_app: BTreeMap<usize, u32> = BTreeMap::new();
        for (app, _) in &got {
            *per_app.entry(*app).or_default() += 1;
            if w.user_of.get(app) != Some(&s.user) {
                r.wrong += 1;
            }
        }
        r.duplicates += per_app.values().map(|n| u64::from(n - 1)).sum::<u64>();
        let delivered = got
            .iter()
            .any(|(app, _)| w.user_of.get(app) == Some(&s.user));
        if reachable(user, earlier(s.issued, before), *done) {
            r.judged_live += 1;
            r.delivered_live += u64::from(delivered);
            if let IdResult::Sent { .. } = result {
                r.send_us.push(done.as_micros() - s.issued.as_micros());
            }
        } else if !attached(
            user,
            earlier(s.issued, lease + Duration::from_secs(2)),
            s.issued + timeout,
        ) {
            r.judged_dead += 1;
            r.delivered_dead += u64::from(delivered);
            r.unknown_dead += u64::from(*result == IdResult::Unknown);
        }
    }
    r
}

fn levels(median_s: u64) -> f64 {
    if median_s >= 600 { 0.999 } else { 0.99 }
}

fn targets(r: &Run) -> Vec<TargetRow> {
    let label = format!("{} s sessions", r.median_s);
    vec![
        zero_target(
            format!("sends without exactly one outcome, {label}"),
            r.missing_outcome + r.second_outcome + r.strays,
            format!(
                "{} missing, {} second, {} stray",
                r.missing_outcome, r.second_outcome, r.strays
            ),
        ),
        share_target(
            format!("messages to reachable users delivered, {label}"),
            levels(r.median_s),
            r.delivered_live,
            r.judged_live,
        ),
        zero_target(
            format!("messages delivered to users offline for over a lease, {label}"),
            r.delivered_dead,
            format!("of {} judged", r.judged_dead),
        ),
        zero_target(
            format!("messages delivered to the wrong user or twice to a connection, {label}"),
            r.wrong + r.duplicates,
            format!("{} wrong, {} twice", r.wrong, r.duplicates),
        ),
    ]
}

fn ms_q(v: &[u64], q: f64) -> String {
    quantile(v, q).map_or("-".into(), |x| format!("{:.1} ms", x as f64 / 1000.0))
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
        "{} nodes join ({} ms apart) and settle for {} s. {} users each hold an identity (`u0`, `u1`, ...) \
         on a random node; online for {} s and offline for {} s on average (exponential), they move to \
         another random node every {} s on average while online (registering there first, then closing \
         the old connection), and reconnect elsewhere {} ms after their node crashes. For {} s nodes \
         crash after exponential sessions with the given median and new ones arrive to keep the \
         population steady, while clients on random nodes send {} messages per second to random \
         identities ({} ms timeout). Identity leases last {} ms. A message is judged reachable when its \
         user was listed without a gap from {} ms before the send until its outcome (it must then reach \
         the user), and dead when the user had no attachment from a lease and 2 s before the send until \
         its deadline (it must then reach nobody). Sends are judged when their sender lived until 1 s past \
         their deadline.",
        p.nodes,
        p.join_spacing_ms,
        p.settle_s,
        p.users,
        p.online_s,
        p.offline_s,
        p.move_every_s,
        p.reconnect_ms,
        p.duration_s,
        p.sends_per_s,
        p.timeout_ms,
        node.identity_lease.as_millis(),
        p.live_before_ms,
    ));
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                format!("{} s", r.median_s),
                format!("{} / {}", r.crashes, r.arrivals),
                r.moves.to_string(),
                format!("{} of {}", r.registered, r.registrations),
                ms_q(&r.register_us, 0.5),
                r.sends.to_string(),
                format!(
                    "{} of {} ({})",
                    r.delivered_live,
                    r.judged_live,
                    pct(r.delivered_live as f64 / r.judged_live.max(1) as f64, 3)
                ),
                ms_q(&r.send_us, 0.5),
                ms_q(&r.send_us, 0.99),
                format!(
                    "{} judged, {} delivered, {} unknown",
                    r.judged_dead, r.delivered_dead, r.unknown_dead
                ),
            ]
        })
        .collect();
    w.table(
        &[
            "sessions",
            "crashes / arrivals",
            "moves",
            "registrations listed",
            "register p50",
            "sends",
            "to reachable users delivered",
            "send p50",
            "send p99",
            "to users offline > lease",
        ],
        &rows,
    );
    let all: Vec<TargetRow> = runs.iter().flat_map(targets).collect();
    w.targets(&all);
    let lat: Vec<(String, Vec<f64>)> = runs
        .iter()
        .map(|r| {
            (
                format!("median session {} s", r.median_s),
                r.send_us.iter().map(|&v| v as f64 / 1000.0).collect(),
            )
        })
        .collect();
    w.cdf_chart(
        "send_latency_cdf.png",
        &CdfChart::new(
            "Send latency to reachable users",
            "milliseconds from the send to its outcome",
            lat,
        ),
    )?;
    let results = json!({
        "scenario": sc.name,
        "seed": sc.seed,
        "runs": runs.iter().map(|r| json!({
            "median_session_s": r.median_s,
            "crashes": r.crashes,
            "arrivals": r.arrivals,
            "moves": r.moves,
            "registrations": r.registrations,
            "registered": r.registered,
            "register_latency": ms_quantiles(&r.register_us),
            "sends": r.sends,
            "judged_live": r.judged_live,
            "delivered_live": r.delivered_live,
            "judged_dead": r.judged_dead,
            "delivered_dead": r.delivered_dead,
            "unknown_dead": r.unknown_dead,
            "wrong": r.wrong,
            "duplicates": r.duplicates,
            "missing_outcome": r.missing_outcome,
            "second_outcome": r.second_outcome,
            "strays": r.strays,
            "send_latency": ms_quantiles(&r.send_us),
        })).collect::<Vec<_>>(),
    });
    finish(&w, &results, events, messages)
}
