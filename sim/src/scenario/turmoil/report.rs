//! The turmoil report: setup, results by window, targets, counters and figures.

use std::collections::BTreeMap;
use std::time::Duration;

use petal_core::Time;
use serde_json::json;

use super::Params;
use super::faults::{Faults, quiet_timeouts};
use crate::apps::{Apps, TunnelEnd};
use crate::realstack::{FaultKind, PartitionMode, RunConfig, RunResult, SeedPattern};
use crate::report::{CdfChart, Frame, ReportWriter, TargetRow, Verdict};
use crate::scenario::common::{
    Window, core_counters, delivery_series, finish, pct, per_second_json, share_target, zero_target,
};
use crate::scenario::{Outcome, Scenario};

/// What the run measured, cut into the windows the report judges.
struct Measured<'a> {
    p: &'a Params,
    r: &'a RunResult,
    f: Faults,
    /// Whole workload, outside fault windows, inside them.
    phases: [(&'static str, Window); 3],
    /// One window per second of the workload.
    buckets: Vec<Window>,
    /// The records outside every fault window.
    quiet_apps: Apps,
}

impl<'a> Measured<'a> {
    fn new(p: &'a Params, r: &'a RunResult) -> Self {
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
        Measured {
            p,
            r,
            f,
            phases,
            buckets,
            quiet_apps,
        }
    }

    /// Seconds from the workload's start to `t`.
    fn since(&self, t: Time) -> f64 {
        t.saturating_since(self.r.work_from).as_secs_f64()
    }
}

/// The state of the run at its end, beyond the windows' judgements.
struct EndState<'a> {
    /// Tunnels still running whose opener lives: nothing ended them (a hang).
    hung: usize,
    errors: u64,
    stray: u64,
    /// Live nodes at the end.
    up: usize,
    want_leaf: usize,
    /// The last sample of each live node (at most 1 s old).
    last: Vec<&'a petal_node::StatsSnapshot>,
    /// Live nodes ready with a full leaf set.
    converged: usize,
    unexpected_replies: u64,
    unexpected_confirms: u64,
    recoveries: Vec<(String, Duration)>,
}

impl<'a> EndState<'a> {
    fn new(m: &Measured<'a>, cfg: &RunConfig) -> Self {
        let (p, r, f) = (m.p, m.r, &m.f);
        let apps = &r.rec.apps;
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
        // What the client library saw that no outcome shows: a second REPLY for a request (the
        // library hands the first to its caller and drops the rest), a second tunnel confirm.
        let (unexpected_replies, unexpected_confirms) =
            r.rec.client_stats.values().fold((0u64, 0u64), |(a, b), s| {
                (a + s.unexpected_replies, b + s.unexpected_confirms)
            });
        EndState {
            hung,
            errors,
            stray,
            up,
            want_leaf,
            last,
            converged,
            unexpected_replies,
            unexpected_confirms,
            recoveries: f.recoveries(apps, r.end),
        }
    }
}

pub(super) fn write_report(
    sc: &Scenario,
    p: &Params,
    cfg: &RunConfig,
    r: &RunResult,
    out: &std::path::Path,
) -> anyhow::Result<Outcome> {
    let m = Measured::new(p, r);
    let mut w = ReportWriter::new(out, &sc.name, &sc.description);
    setup_section(&mut w, p);
    let json_phases = results_section(&mut w, &m.phases);
    let end = EndState::new(&m, cfg);
    let targets = targets(&m, &end);
    recovery_table(&mut w, &m, &end.recoveries);
    w.targets(&targets);
    let stale = quiet_timeouts(&m.quiet_apps, &m.f, r.end);
    timeouts_and_errors(&mut w, r, &stale);
    let counters = counters_section(&mut w, r);
    figures(&mut w, p, &m)?;
    let results = results_json(sc, &m, &end, json_phases, &stale, &counters, &w);
    let messages: u64 = r
        .rec
        .node_stats
        .values()
        .map(|s| s.core.messages_sent)
        .sum();
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

/// The setup: hosts, seeds, latency, timing, workload, oracles and the faults.
fn setup_section(w: &mut ReportWriter, p: &Params) {
    w.heading("Setup");
    w.paragraph(&format!(
        "The real stack on simulated machines: {} turmoil hosts, each running petal-node's runtime (the \
         daemon's code, over turmoil's TCP: peer links on port 7000, Noise-encrypted under a network key \
         as in production, the relay on 127.0.0.1:55555) and two applications using petal-client over the \
         host's loopback. {} Host i boots {} ms × i after host 0 (0: every host at once). Applications retry attaching until their node accepts \
         them (a node holds an attach made before it has joined, and refuses one only before its relay \
         listens). One-way latency between hosts is \
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
}

/// The results table, one row per window; returns the windows' JSON.
fn results_section(
    w: &mut ReportWriter,
    phases: &[(&'static str, Window); 3],
) -> serde_json::Map<String, serde_json::Value> {
    w.heading("Results");
    let mut rows = Vec::new();
    let mut json_phases = serde_json::Map::new();
    for (name, ph) in phases {
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
                "{} / {} / {} / {} / {} / {} / {}",
                t.opened, t.completed, t.failed, t.open_failed, t.running, t.opener_gone, t.corrupt
            ),
        ]);
        json_phases.insert(
            name.replace(' ', "_"),
            crate::scenario::common::messaging_window_json(q, e, t),
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
            "tunnels opened / completed / failed / open failed / running / opener gone / corrupt",
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
    json_phases
}

/// The target rows: no violation in the whole workload, everything working outside fault
/// windows, the fault targets when there are faults, and the state at the end.
fn targets(m: &Measured<'_>, end: &EndState<'_>) -> Vec<TargetRow> {
    let (p, r) = (m.p, m.r);
    let (all, quiet, faulty) = (&m.phases[0].1, &m.phases[1].1, &m.phases[2].1);
    let EndState {
        hung,
        errors,
        stray,
        up,
        want_leaf,
        converged,
        unexpected_replies,
        unexpected_confirms,
        ..
    } = *end;
    let (last, recoveries) = (&end.last, &end.recoveries);
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
    targets
}

/// The time to recovery of each fault (none without faults).
fn recovery_table(w: &mut ReportWriter, m: &Measured<'_>, recoveries: &[(String, Duration)]) {
    let f = &m.f;
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
                    format!("{:.1}", m.since(*at)),
                    format!("{:.2}", d.as_secs_f64()),
                ]
            })
            .collect();
        w.table(&["fault", "service due back at (s)", "recovery (s)"], &rows);
    }
}

/// Timeouts outside fault windows, then application errors and retried attachments.
fn timeouts_and_errors(
    w: &mut ReportWriter,
    r: &RunResult,
    stale: &BTreeMap<(u32, Option<u32>, bool), u64>,
) {
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
            "Application errors: {}. Refused and retried attachments (expected while a node starts or restarts): {}.",
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
}

/// Counters of every node incarnation (last sample of each) and of every connection.
type Counters = [BTreeMap<&'static str, u64>; 3];

/// The counters table; returns the runtime, core and client counters.
fn counters_section(w: &mut ReportWriter, r: &RunResult) -> Counters {
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
    [runtime, core, client]
}

/// The request latency CDF and delivery per second.
fn figures(w: &mut ReportWriter, p: &Params, m: &Measured<'_>) -> anyhow::Result<()> {
    let (all, buckets) = (&m.phases[0].1, &m.buckets);
    w.heading("Figures");
    let lat: Vec<f64> = all
        .requests
        .latencies_us
        .iter()
        .map(|&us| us as f64 / 1000.0)
        .collect();
    w.cdf_chart(
        "request_latency_cdf.png",
        &CdfChart::new(
            "Request latency (answered requests, whole workload)",
            "milliseconds",
            &[("requests".to_string(), lat)],
        )
        // Faults leave a tail of slow answers (seconds, where most take milliseconds).
        .log_x(),
    )?;
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
    let [answered, delivered] = delivery_series(buckets);
    let c = Frame::new(title, "seconds after the workload starts", "%")
        .lines()
        .percent()
        .series("requests answered", answered)
        .series("events delivered once", delivered);
    w.line_chart("delivery_per_second.png", &c)?;
    w.paragraph(
        "Wall-clock cost (wall time per simulated second, turmoil steps per second) is in \
         `perf.json` beside this report: it depends on the machine, unlike this report and \
         `results.json`.",
    );
    Ok(())
}

/// The machine-readable results.
fn results_json(
    sc: &Scenario,
    m: &Measured<'_>,
    end: &EndState<'_>,
    json_phases: serde_json::Map<String, serde_json::Value>,
    stale: &BTreeMap<(u32, Option<u32>, bool), u64>,
    counters: &Counters,
    w: &ReportWriter,
) -> serde_json::Value {
    let (p, r, f, buckets) = (m.p, m.r, &m.f, &m.buckets);
    let since = |t: Time| m.since(t);
    let [runtime, core, client] = counters;
    let EndState {
        hung,
        stray,
        up,
        converged,
        unexpected_replies,
        unexpected_confirms,
        ref recoveries,
        ..
    } = *end;
    json!({
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
        "per_second": per_second_json(buckets),
        "targets": w.target_rows().iter().map(|t| json!({
            "metric": t.name, "target": t.target, "measured": t.measured, "verdict": t.verdict.label(),
        })).collect::<Vec<_>>(),
    })
}
