//! `turmoil`: the real stack (petal-node's runtime, petal-client applications) on simulated
//! hosts and TCP ([`crate::realstack`]), with crashes, restarts, partitions and heals, judged by
//! the discrete-event simulator's oracles over what the applications observed.
//!
//! Requests, events and tunnels are judged over the whole workload and, separately, outside
//! the fault windows (from each crash, restart or partition until `fault_guard_s` after it or
//! after its heal), where the overlay is expected to be whole: there every judged request is
//! answered, every stable recipient gets every event exactly once and every tunnel completes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use petal_core::Time;
use serde::Deserialize;
use serde_json::json;

use super::common::{core_counters, finish, pct, share_target, zero_target};
use super::{Outcome, Progress, Scenario};
use crate::apps::{Apps, EventRecord, OutcomeKind, TunnelEnd};
use crate::oracle::{EventStats, RequestStats, TunnelStats};
use crate::realstack::{
    Fault, FaultKind, PartitionMode, RunConfig, RunResult, SeedPattern, WorkloadParams,
};
use crate::report::{LineChart, ReportWriter, TargetRow, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Hosts (one node and two applications each).
    nodes: u32,
    /// Host `i` boots `i * join_spacing_ms` after the start.
    join_spacing_ms: u64,
    /// From the start until the workload begins.
    settle_s: u64,
    /// The workload's length (fault times count from its start).
    run_s: u64,
    /// After the workload, for outstanding work to end.
    drain_s: u64,
    /// Turmoil's tick in microseconds (default 1000).
    #[serde(default = "default_tick_us")]
    tick_us: u64,
    /// One-way latency range between hosts, milliseconds.
    latency_ms: [u64; 2],
    /// Event oracle: a recipient must be present this long before an event...
    event_settle_s: u64,
    /// ... and this long after it.
    event_grace_s: u64,
    /// A fault's window lasts until this long after it (after the heal, for a partition).
    fault_guard_s: u64,
    /// Target: fraction of judged requests outside fault windows answered.
    answered_target: f64,
    /// Targets inside fault windows (required when there are faults): fraction of judged
    /// requests answered...
    #[serde(default)]
    fault_answered_target: Option<f64>,
    /// ... fraction of expected event deliveries made exactly once...
    #[serde(default)]
    fault_events_target: Option<f64>,
    /// ... and the longest time to recovery, seconds: from a fault (a partition: its heal)
    /// until the last request issued in its window that was not answered.
    #[serde(default)]
    recovery_target_s: Option<f64>,
    workload: WorkloadParams,
    #[serde(default)]
    faults: Vec<Fault>,
    /// `drop` (default: segments between the sides are lost) or `hold` (delivered at the heal).
    #[serde(default)]
    partition_mode: PartitionMode,
    /// Nodes find each other by multicast discovery beacons, with no seeds.
    #[serde(default)]
    discovery: bool,
    /// `first` (default: every host seeds to host 0) or `chain` (host k seeds to a random
    /// earlier host).
    #[serde(default)]
    seeds: SeedPattern,
}

fn default_tick_us() -> u64 {
    1000
}

/// What one window of the run saw.
struct Window {
    requests: RequestStats,
    events: EventStats,
    tunnels: TunnelStats,
}

/// When the overlay is not expected to be whole, and who was on which side of partitions.
struct Faults {
    windows: Vec<(Time, Time)>,
    /// Each fault: what it was, when service should be back from (the fault, or a
    /// partition's heal), and its window.
    faults: Vec<(String, Time, (Time, Time))>,
    /// Partitions: (from, to, hosts cut off).
    cuts: Vec<(Time, Time, Vec<u32>)>,
    settle: Duration,
    grace: Duration,
}

fn overlaps(a: (Time, Time), b: (Time, Time)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

impl Faults {
    fn new(r: &RunResult, p: &Params) -> Self {
        let guard = Duration::from_secs(p.fault_guard_s);
        let mut faults: Vec<(String, Time, (Time, Time))> = Vec::new();
        for (what, list) in [("crash", &r.crashes), ("restart", &r.restarts)] {
            for &(t, host) in list {
                faults.push((format!("{what} n{host}"), t, (t, t + guard)));
            }
        }
        for (a, b, side) in &r.partitions {
            faults.push((
                format!("partition of {} hosts", side.len()),
                *b,
                (*a, *b + guard),
            ));
        }
        faults.sort_by_key(|f| (f.2, f.1));
        let mut windows: Vec<(Time, Time)> = faults.iter().map(|f| f.2).collect();
        windows.sort();
        Faults {
            windows,
            faults,
            cuts: r.partitions.clone(),
            settle: Duration::from_secs(p.event_settle_s),
            grace: Duration::from_secs(p.event_grace_s),
        }
    }

    fn quiet(&self, span: (Time, Time)) -> bool {
        !self.windows.iter().any(|&w| overlaps(w, span))
    }

    fn event_span(&self, e: &EventRecord) -> (Time, Time) {
        let from = Time::from_micros(
            e.at.as_micros()
                .saturating_sub(self.settle.as_micros() as u64),
        );
        (from, e.at + self.grace)
    }

    /// Whether recipient host `node` counts for event `e`: during a partition (and around it),
    /// only recipients on the publisher's side.
    fn counts(&self, e: &EventRecord, node: u32) -> bool {
        let span = self.event_span(e);
        self.cuts.iter().all(|(a, b, side)| {
            !overlaps((*a, *b), span) || side.contains(&e.node) == side.contains(&node)
        })
    }

    /// The records of `apps` that lie outside every fault window (`quiet`), or that touch
    /// one (`!quiet`).
    fn split_apps(&self, apps: &Apps, end: Time, quiet: bool) -> Apps {
        let mut q = Apps::default();
        q.list = apps.list.clone();
        q.deaths = apps.deaths.clone();
        q.requests = apps
            .requests
            .iter()
            .filter(|r| self.quiet((r.start, r.deadline)) == quiet)
            .cloned()
            .collect();
        q.events = apps
            .events
            .iter()
            .filter(|e| self.quiet(self.event_span(e)) == quiet)
            .cloned()
            .collect();
        q.tunnels = apps
            .tunnels
            .iter()
            .filter(|t| self.quiet((t.start, t.end_at.unwrap_or(end))) == quiet)
            .cloned()
            .collect();
        q
    }

    /// Time to recovery of each fault: from the fault (a partition: its heal) until the issue
    /// of the last judged request charged to it that was not answered (0 when that request
    /// came before it, or there was none), as of `now`. A request is charged to the latest
    /// fault that began before its deadline, if its issue falls in that fault's window.
    fn recoveries(&self, apps: &Apps, now: Time) -> Vec<(String, Duration)> {
        let charged_to = |r: &crate::apps::RequestRecord| {
            self.faults
                .iter()
                .map(|f| f.2.0)
                .filter(|a| *a <= r.deadline)
                .max()
        };
        self.faults
            .iter()
            .map(|(what, from, (a, b))| {
                let last = apps
                    .requests
                    .iter()
                    .filter(|r| r.start < *b && charged_to(r) == Some(*a))
                    .filter(|r| judged(apps, r, now))
                    .filter(|r| !matches!(r.outcome, Some((k, _)) if k != OutcomeKind::Timeout))
                    .map(|r| r.start)
                    .max();
                let rec = last.map_or(Duration::ZERO, |t| t.saturating_since(*from));
                (what.clone(), rec)
            })
            .collect()
    }
}

/// Whether the request oracle judges `r` as of `now`: its requester lived until a second past
/// its deadline.
fn judged(apps: &Apps, r: &crate::apps::RequestRecord, now: Time) -> bool {
    let horizon = r.deadline + Duration::from_secs(1);
    apps.list[r.app].until.is_none_or(|u| u > horizon) && horizon <= now
}

/// Timed-out judged requests of `quiet` (records outside fault windows), by (requester's
/// host, host of the member it reached, whether a partition separated them), judged as of
/// `now` (as the request oracle does).
fn quiet_timeouts(quiet: &Apps, f: &Faults, now: Time) -> BTreeMap<(u32, Option<u32>, bool), u64> {
    let mut m = BTreeMap::new();
    for r in &quiet.requests {
        if !judged(quiet, r, now) || !matches!(r.outcome, Some((OutcomeKind::Timeout, _))) {
            continue;
        }
        let from = quiet.list[r.app].node;
        let to = r.served_by.map(|a| quiet.list[a].node);
        let cut = to.is_some_and(|to| {
            f.cuts
                .iter()
                .any(|(_, _, side)| side.contains(&from) != side.contains(&to))
        });
        *m.entry((from, to, cut)).or_default() += 1;
    }
    m
}

pub(super) fn run(
    sc: &Scenario,
    node: petal_core::Config,
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    let p: Params = sc.params()?;
    for (name, v) in [
        ("answered_target", Some(p.answered_target)),
        ("fault_answered_target", p.fault_answered_target),
        ("fault_events_target", p.fault_events_target),
    ] {
        anyhow::ensure!(
            v.is_none_or(|v| (0.0..=1.0).contains(&v)),
            "{name} must be in [0, 1]"
        );
    }
    anyhow::ensure!(
        p.faults.is_empty()
            || (p.fault_answered_target.is_some()
                && p.fault_events_target.is_some()
                && p.recovery_target_s.is_some()),
        "a scenario with faults sets fault_answered_target, fault_events_target and recovery_target_s"
    );
    let cfg = RunConfig {
        seed: sc.seed,
        nodes: p.nodes,
        core: node.clone(),
        join_spacing: Duration::from_millis(p.join_spacing_ms),
        settle: Duration::from_secs(p.settle_s),
        run: Duration::from_secs(p.run_s),
        drain: Duration::from_secs(p.drain_s),
        tick: Duration::from_micros(p.tick_us),
        latency: p.latency_ms.map(Duration::from_millis),
        workload: p.workload.clone(),
        faults: p.faults.clone(),
        partition_mode: p.partition_mode,
        discovery: p.discovery,
        seeds: p.seeds,
    };
    progress.set_len(cfg.end().as_secs());
    let r = crate::realstack::run_with_progress(&cfg, &mut |t| {
        progress.set(t.as_secs(), "simulated seconds".into());
    })?;
    progress.finish();
    write_report(sc, &p, &cfg, &r, out)
}

fn write_report(
    sc: &Scenario,
    p: &Params,
    cfg: &RunConfig,
    r: &RunResult,
    out: &Path,
) -> anyhow::Result<Outcome> {
    let apps = &r.rec.apps;
    let f = Faults::new(r, p);
    let (from, to) = (r.work_from, r.work_until);
    let window = |a: &Apps, from: Time, to: Time| Window {
        requests: a.request_stats(from, to, r.end),
        events: a.event_stats_where(None, from, to, f.settle, f.grace, |e, n| f.counts(e, n)),
        tunnels: a.tunnel_stats(from, to),
    };
    let quiet_apps = f.split_apps(apps, r.end, true);
    let fault_apps = f.split_apps(apps, r.end, false);
    let phases = [
        ("whole workload", window(apps, from, to)),
        ("outside fault windows", window(&quiet_apps, from, to)),
        ("inside fault windows", window(&fault_apps, from, to)),
    ];
    let buckets: Vec<Window> = (0..p.run_s)
        .map(|s| {
            let a = from + Duration::from_secs(s);
            window(apps, a, a + Duration::from_secs(1))
        })
        .collect();
    let since = |t: Time| t.saturating_since(from).as_secs_f64();

    let mut w = ReportWriter::new(out, &sc.name, &sc.description);
    w.heading("Setup");
    w.paragraph(&format!(
        "The real stack on simulated machines: {} turmoil hosts, each running petal-node's runtime (the \
         daemon's code, over turmoil's TCP: peer links on port 7000, Noise-encrypted under a network key \
         as in production, the relay on 127.0.0.1:55555) and two applications using petal-client over the \
         host's loopback. {} Host i boots {} ms × i after host 0 (0: every host at once). Applications retry attaching until their node accepts \
         them (a node refuses applications until it has joined). One-way latency between hosts is \
         {}-{} ms (turmoil's exponential distribution), time advances in ticks of {} µs. The workload \
         starts {} s after the first boot, runs {} s, and outstanding work has {} s to end. {}",
        p.nodes,
        if p.discovery {
            "No node is given a seed: each starts a ring of its own and finds the others by \
             multicast discovery beacons (authenticated with the network key; fast at start and \
             after news, every 5 s otherwise), introducing what it hears, so rings merge."
        } else if p.seeds == SeedPattern::Chain {
            "Host 0 has no seed; host k is given one earlier host, drawn at random, as its seed \
             (seeds form chains)."
        } else {
            "Host 0 starts the ring; the others join through it."
        },
        p.join_spacing_ms,
        p.latency_ms[0],
        p.latency_ms[1],
        p.tick_us,
        p.settle_s,
        p.run_s,
        p.drain_s,
        p.workload.describe(),
    ));
    w.paragraph(&format!(
        "Oracles (the discrete-event simulator's, over what the applications observed): a request is \
         judged when its requester lived until 1 s past its deadline and must have exactly one outcome \
         (reply, fault or timeout), a reply or fault answering that very request. An event is expected \
         at every subscriber or member present from {} s before it to {} s after it (publisher alive \
         too); around a partition, only at those on the publisher's side. A tunnel must complete (every \
         echo back, in order, byte for byte) or end with a reason, never corrupt. Outside fault windows \
         (from a crash or restart until {} s after it; from a split until {} s after its heal; a \
         request, event or tunnel counts there when its whole span is clear of them) everything must \
         work.",
        p.event_settle_s, p.event_grace_s, p.fault_guard_s, p.fault_guard_s,
    ));
    if !p.faults.is_empty() {
        w.paragraph(match p.partition_mode {
            PartitionMode::Drop => {
                "Partitions drop the segments between the sides (turmoil's `partition`). Turmoil's TCP \
                 does not retransmit, so a stream that lost a segment stalls for good without an error, \
                 as a connection black-holed by a middlebox would: a node must notice such a link and \
                 dial a new one."
            }
            PartitionMode::Hold => {
                "Partitions hold the segments between the sides and deliver them at the heal (turmoil's \
                 `hold` and `release`), as TCP's retransmission would after a short partition; dials \
                 across still time out."
            }
        });
        let rows: Vec<Vec<String>> = p
            .faults
            .iter()
            .map(|f| {
                let hosts = f.nodes.iter().map(|h| format!("n{h}")).collect::<Vec<_>>();
                vec![
                    format!("{:.1}", f.at_s),
                    format!("{:?}", f.action).to_lowercase(),
                    if f.action == FaultKind::Heal {
                        "all".into()
                    } else {
                        hosts.join(", ")
                    },
                ]
            })
            .collect();
        w.subheading(
            "Faults (seconds after the workload starts; negative: before it, from the first boot)",
        );
        w.table(&["at (s)", "action", "hosts"], &rows);
    }

    w.heading("Results");
    let mut rows = Vec::new();
    let mut json_phases = serde_json::Map::new();
    for (name, ph) in &phases {
        let (q, e, t) = (&ph.requests, &ph.events, &ph.tunnels);
        rows.push(vec![
            name.to_string(),
            format!("{} / {}", q.issued, q.judged),
            format!("{} / {} / {}", q.replies, q.faults, q.timeouts),
            format!("{} / {} / {}", q.missing, q.multiple, q.wrong),
            pct(q.answered_ratio(), 2),
            format!("{} of {}", e.once, e.expected),
            e.duplicates.to_string(),
            format!(
                "{} / {} / {} / {} / {} / {}",
                t.opened, t.completed, t.failed, t.open_failed, t.running, t.corrupt
            ),
        ]);
        json_phases.insert(
            name.replace(' ', "_"),
            super::common::messaging_window_json(q, e, t),
        );
    }
    w.table(
        &[
            "window",
            "requests issued / judged",
            "replies / faults / timeouts",
            "missing / multiple / wrong",
            "answered",
            "events delivered once",
            "duplicates",
            "tunnels opened / completed / failed / open failed / running / corrupt",
        ],
        &rows,
    );
    let reasons: Vec<String> = phases[0]
        .1
        .tunnels
        .reasons
        .iter()
        .map(|(k, v)| format!("{v} × {k}"))
        .collect();
    if !reasons.is_empty() {
        w.paragraph(&format!("Tunnel failure reasons: {}.", reasons.join("; ")));
    }

    // Tunnels still running whose opener lives: nothing ended them (a hang).
    let hung = apps
        .tunnels
        .iter()
        .filter(|t| t.end == TunnelEnd::Running && apps.list[t.opener].until.is_none())
        .count();
    let errors: u64 = r.rec.errors.values().sum();
    let stray = apps.stray_events;
    // Live nodes at the end: ready, with a full leaf set (their last sample, at most 1 s old).
    let up = p.nodes as usize - r.down_at_end.len();
    let want_leaf = cfg.core.leaf_set_size.min(up.saturating_sub(1));
    let last: Vec<&petal_node::StatsSnapshot> = (0..p.nodes)
        .filter(|h| !r.down_at_end.contains(h))
        .filter_map(|h| r.rec.node_stats.range((h, 0)..=(h, u32::MAX)).next_back())
        .map(|(_, s)| s)
        .collect();
    let converged = last
        .iter()
        .filter(|s| s.ready && s.leaf_set >= want_leaf)
        .count();
    let (all, quiet, faulty) = (&phases[0].1, &phases[1].1, &phases[2].1);
    // What the client library saw that no outcome shows: a second REPLY for a request (the
    // library hands the first to its caller and drops the rest), a second tunnel confirm.
    let (unexpected_replies, unexpected_confirms) =
        r.rec.client_stats.values().fold((0u64, 0u64), |(a, b), s| {
            (a + s.unexpected_replies, b + s.unexpected_confirms)
        });
    let recoveries = f.recoveries(apps, r.end);
    let mut targets = vec![
        zero_target(
            "judged requests without exactly one outcome, whole workload",
            all.requests.missing + all.requests.multiple + all.requests.wrong + unexpected_replies,
            format!(
                "{} missing, {} multiple, {} wrong, {unexpected_replies} unexpected replies at the clients",
                all.requests.missing, all.requests.multiple, all.requests.wrong
            ),
        ),
        zero_target(
            "events delivered twice, whole workload",
            all.events.duplicates,
            format!("{} stable recipients got one twice", all.events.doubled),
        ),
        zero_target(
            "tunnels corrupt or doubled, whole workload",
            all.tunnels.violations() + unexpected_confirms,
            format!(
                "{} corrupt, {} confirmed twice, {} accepted twice",
                all.tunnels.corrupt,
                all.tunnels.doubled_confirms + unexpected_confirms,
                all.tunnels.doubled_accepts
            ),
        ),
        share_target(
            "judged requests answered (reply or fault), outside fault windows",
            p.answered_target,
            quiet.requests.replies + quiet.requests.faults,
            quiet.requests.judged,
        ),
        share_target(
            "stable recipients got every event exactly once, outside fault windows",
            1.0,
            quiet.events.once,
            quiet.events.expected,
        ),
        share_target(
            "tunnels completed, outside fault windows",
            1.0,
            quiet.tunnels.completed,
            quiet.tunnels.opened,
        ),
    ];
    if let (Some(answered), Some(events), Some(recovery)) = (
        p.fault_answered_target,
        p.fault_events_target,
        p.recovery_target_s,
    ) {
        targets.push(share_target(
            "judged requests answered (reply or fault), inside fault windows",
            answered,
            faulty.requests.replies + faulty.requests.faults,
            faulty.requests.judged,
        ));
        targets.push(share_target(
            "stable recipients got every event exactly once, inside fault windows",
            events,
            faulty.events.once,
            faulty.events.expected,
        ));
        let worst = recoveries
            .iter()
            .max_by_key(|(_, d)| *d)
            .map(|(what, d)| (what.clone(), d.as_secs_f64()));
        targets.push(match worst {
            Some((what, secs)) => TargetRow::new(
                "time to recovery, longest over the faults",
                format!("≤ {recovery} s"),
                format!("{secs:.2} s ({what})"),
                Verdict::from_met(secs <= recovery),
            ),
            None => TargetRow::new(
                "time to recovery, longest over the faults",
                format!("≤ {recovery} s"),
                "no fault happened",
                Verdict::Missed,
            ),
        });
    }
    targets.extend([
        TargetRow::new(
            "tunnels never ended although their opener lives",
            "0",
            hung.to_string(),
            Verdict::from_met(hung == 0),
        ),
        TargetRow::new(
            "application errors (broken connections, failed calls) and stray deliveries",
            "0",
            format!("{errors} errors, {stray} stray"),
            Verdict::from_met(errors == 0 && stray == 0),
        ),
        TargetRow::new(
            "live nodes ready with a full leaf set at the end",
            format!("{up} of {up} (leaf set >= {want_leaf})"),
            format!("{converged} of {up}"),
            Verdict::from_met(converged == up && last.len() == up),
        ),
        TargetRow::new(
            "encrypted peer links per live node at the end (mean / max)",
            "-",
            {
                let links: Vec<usize> = last.iter().map(|s| s.links).collect();
                let mean = links.iter().sum::<usize>() as f64 / links.len().max(1) as f64;
                format!("{mean:.1} / {}", links.iter().max().copied().unwrap_or(0))
            },
            Verdict::Info,
        ),
        TargetRow::new(
            "trace hash (same seed, same hash)",
            "-",
            r.trace_hash[..16].to_string(),
            Verdict::Info,
        ),
    ]);
    if !recoveries.is_empty() {
        w.subheading("Time to recovery");
        w.paragraph(
            "For each fault: from the fault (a partition: from its heal) until the issue of the \
             last judged request charged to it that was not answered; 0 when every request issued \
             after it was answered. A request is charged to the latest fault that began before \
             its deadline, when it was issued within that fault's window.",
        );
        let rows: Vec<Vec<String>> = recoveries
            .iter()
            .zip(&f.faults)
            .map(|((what, d), (_, at, _))| {
                vec![
                    what.clone(),
                    format!("{:.1}", since(*at)),
                    format!("{:.2}", d.as_secs_f64()),
                ]
            })
            .collect();
        w.table(&["fault", "service due back at (s)", "recovery (s)"], &rows);
    }
    w.targets(&targets);
    let stale = quiet_timeouts(&quiet_apps, &f, r.end);
    if !stale.is_empty() {
        w.subheading("Timeouts outside fault windows");
        w.paragraph(
            "Judged requests that timed out outside every fault window, by requester's host and the \
             host of the member the request reached (none: no member got it), and whether a partition \
             had separated the two.",
        );
        let rows: Vec<Vec<String>> = stale
            .iter()
            .map(|((from, to, cut), n)| {
                vec![
                    format!("n{from}"),
                    to.map_or("none".to_string(), |h| format!("n{h}")),
                    if *cut { "yes" } else { "no" }.to_string(),
                    n.to_string(),
                ]
            })
            .collect();
        w.table(
            &[
                "requester",
                "member reached",
                "separated by a partition",
                "timeouts",
            ],
            &rows,
        );
    }
    if !r.rec.errors.is_empty() || !r.rec.retries.is_empty() {
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{v} × {k}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        w.paragraph(&format!(
            "Application errors: {}. Refused and retried attachments (expected while a node joins): {}.",
            if r.rec.errors.is_empty() {
                "none".to_string()
            } else {
                list(&r.rec.errors)
            },
            if r.rec.retries.is_empty() {
                "none".to_string()
            } else {
                list(&r.rec.retries)
            },
        ));
    }

    // Counters of every node incarnation (last sample of each) and of every connection.
    let core = core_counters(r.rec.node_stats.values().map(|s| &s.core));
    let mut runtime: BTreeMap<&'static str, u64> = BTreeMap::new();
    for s in r.rec.node_stats.values() {
        let c = &s.runtime;
        for (k, v) in c.fields() {
            *runtime.entry(k).or_default() += v;
        }
    }
    let mut client: BTreeMap<&'static str, u64> = BTreeMap::new();
    for s in r.rec.client_stats.values() {
        for (k, v) in [
            ("dropped_requests", s.dropped_requests),
            ("expired_requests", s.expired_requests),
            ("dropped_broadcasts", s.dropped_broadcasts),
            ("dropped_events", s.dropped_events),
            ("ignored_packets", s.ignored_packets),
            ("unexpected_replies", s.unexpected_replies),
            ("unexpected_confirms", s.unexpected_confirms),
        ] {
            *client.entry(k).or_default() += v;
        }
    }
    w.subheading("Counters");
    w.paragraph(
        "Summed over every node incarnation (its last sample, taken every second) and every \
         application connection: the runtime's links and relay sessions, the core's drops and \
         repairs, the client library's drops. Non-zero values only.",
    );
    let counter_rows: Vec<Vec<String>> =
        [("runtime", &runtime), ("core", &core), ("client", &client)]
            .iter()
            .flat_map(|(layer, m)| {
                m.iter()
                    .filter(|(_, v)| **v > 0)
                    .map(move |(k, v)| vec![layer.to_string(), k.to_string(), v.to_string()])
            })
            .collect();
    w.table(&["layer", "counter", "value"], &counter_rows);

    w.heading("Figures");
    let lat: Vec<f64> = all
        .requests
        .latencies_us
        .iter()
        .map(|&us| us as f64 / 1000.0)
        .collect();
    w.cdf_chart(
        "request_latency_cdf.png",
        "Request latency (answered requests, whole workload)",
        "milliseconds",
        &[("requests".to_string(), lat)],
    )?;
    let series = |f: &dyn Fn(&Window) -> Option<f64>| -> Vec<(f64, f64)> {
        buckets
            .iter()
            .enumerate()
            .filter_map(|(s, b)| f(b).map(|v| (s as f64, v * 100.0)))
            .collect()
    };
    let fault_times: Vec<String> = p
        .faults
        .iter()
        .map(|f| format!("{} {}", format!("{:?}", f.action).to_lowercase(), f.at_s))
        .collect();
    let title = if fault_times.is_empty() {
        "Delivery per second".to_string()
    } else {
        format!("Delivery per second ({} s)", fault_times.join(", "))
    };
    let c = LineChart::new(title, "seconds after the workload starts", "%")
        .series(
            "requests answered",
            series(&|b| (b.requests.judged > 0).then(|| b.requests.answered_ratio())),
        )
        .series(
            "events delivered once",
            series(&|b| (b.events.expected > 0).then(|| b.events.delivered_ratio())),
        );
    w.line_chart("delivery_per_second.png", &c)?;
    w.paragraph(
        "Wall-clock cost (wall time per simulated second, turmoil steps per second) is in \
         `perf.json` beside this report: it depends on the machine, unlike this report and \
         `results.json`.",
    );

    let messages: u64 = r
        .rec
        .node_stats
        .values()
        .map(|s| s.core.messages_sent)
        .sum();
    let results = json!({
        "scenario": sc.name, "seed": sc.seed, "nodes": p.nodes,
        "trace_hash": r.trace_hash,
        "windows": json_phases,
        "fault_windows_s": f.windows.iter().map(|(a, b)| [since(*a), since(*b)]).collect::<Vec<_>>(),
        "log": r.rec.log.iter().map(|(t, what)| json!({"at_s": since(*t), "what": what})).collect::<Vec<_>>(),
        "hung_tunnels": hung,
        "recovery_s": recoveries.iter().zip(&f.faults).map(|((what, d), (_, at, _))| json!({
            "fault": what, "due_back_at_s": since(*at), "recovery_s": d.as_secs_f64(),
        })).collect::<Vec<_>>(),
        "unexpected_replies": unexpected_replies,
        "unexpected_confirms": unexpected_confirms,
        "quiet_timeouts": stale.iter().map(|((from, to, cut), n)| json!({
            "requester": from, "member": to, "separated_by_partition": cut, "count": n,
        })).collect::<Vec<_>>(),
        "errors": r.rec.errors,
        "retries": r.rec.retries,
        "stray_events": stray,
        "live_nodes": up,
        "converged_nodes": converged,
        "runtime_counters": runtime,
        "core_counters": core,
        "client_counters": client,
        "per_second": buckets.iter().enumerate().map(|(s, b)| json!({
            "t_s": s,
            "requests_judged": b.requests.judged,
            "requests_answered_ratio": b.requests.answered_ratio(),
            "events_expected": b.events.expected,
            "events_delivered_ratio": b.events.delivered_ratio(),
        })).collect::<Vec<_>>(),
        "targets": w.target_rows().iter().map(|t| json!({
            "metric": t.name, "target": t.target, "measured": t.measured, "verdict": t.verdict.label(),
        })).collect::<Vec<_>>(),
    });
    let mut outcome = finish(&w, &results, r.steps, messages)?;
    let sim_s = cfg.end().as_secs_f64();
    let wall_s = r.wall.as_secs_f64();
    outcome.perf = json!({
        "hosts": p.nodes,
        "simulated_s": sim_s,
        "harness_wall_s": wall_s,
        "wall_ms_per_simulated_s": wall_s * 1000.0 / sim_s.max(1e-9),
        "turmoil_steps": r.steps,
        "steps_per_wall_s": r.steps as f64 / wall_s.max(1e-9),
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    Ok(outcome)
}
