//! The report: the method, the two runs side by side, the targets, the figures and where the
//! runs differ.

use std::collections::BTreeMap;

use serde_json::json;

use super::compare::{self, Paired};
use super::{Observed, Params, TICK};
use crate::engine::Sim;
use crate::metrics::quantile;
use crate::oracle::{EventStats, RequestStats};
use crate::realstack::Script;
use crate::report::{CdfChart, Frame, ReportWriter, TargetRow, Verdict};
use crate::scenario::common::{finish, pct, share_target, zero_target};
use crate::scenario::{Outcome, Scenario};

/// Loopback crossings on a request's path in the real stack: the request from the client to
/// its node, its delivery to the service, the reply to the service's node, the outcome to the
/// client. Turmoil carries each one tick late; the simulator has no loopback.
pub(super) const REQUEST_CROSSINGS: u64 = 4;
/// Loopback crossings on an event's path: publisher to its node, node to the recipient.
pub(super) const EVENT_CROSSINGS: u64 = 2;

/// What the report reads of one run.
struct Side<'a> {
    o: &'a Observed,
    /// The request oracle over the workload.
    q: RequestStats,
    /// The event oracle over the workload.
    e: EventStats,
    /// Latencies of replies, µs, sorted.
    lat: Vec<u64>,
    /// Delivery delays of expected event deliveries, µs, sorted.
    delays: Vec<u64>,
    /// Join times of the hosts that joined (all but host 0), µs, sorted.
    joins: Vec<u64>,
    /// Hosts whose node was never seen ready.
    never_ready: usize,
    /// Core counters from the start to the workload (joins and settling) and over the
    /// workload and drain.
    settle: BTreeMap<&'static str, u64>,
    work: BTreeMap<&'static str, u64>,
}

impl<'a> Side<'a> {
    fn new(o: &'a Observed, p: &Params) -> Self {
        let (from, to) = (
            petal_core::Time::ZERO + p.work_from(),
            petal_core::Time::ZERO + p.work_until(),
        );
        let q = o.apps.request_stats(from, to, o.end);
        let settle = std::time::Duration::from_secs(p.event_settle_s);
        let grace = std::time::Duration::from_secs(p.event_grace_s);
        let e = o.apps.event_stats(None, from, to, settle, grace);
        let mut lat: Vec<u64> = o
            .apps
            .requests
            .iter()
            .filter(|r| r.start >= from && r.start < to)
            .filter_map(|r| match r.outcome {
                Some((crate::apps::OutcomeKind::Reply, t)) => {
                    Some(t.as_micros().saturating_sub(r.start.as_micros()))
                }
                _ => None,
            })
            .collect();
        lat.sort_unstable();
        let mut delays: Vec<u64> = e.delays.iter().map(|d| d.2).collect();
        delays.sort_unstable();
        let mut joins: Vec<u64> = (1..o.boot_at.len())
            .filter_map(|h| Some(o.ready_at[h]?.saturating_since(o.boot_at[h])))
            .map(crate::micros_u64)
            .collect();
        joins.sort_unstable();
        let empty = BTreeMap::new();
        let at = |k: usize| o.samples.get(k).unwrap_or(&empty);
        Side {
            q,
            e,
            lat,
            delays,
            never_ready: o.ready_at.iter().filter(|r| r.is_none()).count(),
            joins,
            settle: at(0).clone(),
            work: compare::delta(at(0), at(1)),
            o,
        }
    }
}

/// Samples minus `crossings` ticks each (the real stack's loopback crossings taken off).
fn corrected(samples: &[u64], crossings: u64) -> Vec<u64> {
    let off = crossings * crate::micros_u64(TICK);
    samples.iter().map(|v| v.saturating_sub(off)).collect()
}

/// Quantile `q` of µs samples, in ms.
fn q_ms(samples: &[u64], q: f64) -> Option<f64> {
    quantile(samples, q).map(|v| v as f64 / 1000.0)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
}

fn signed_pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:+.1} %", x * 100.0))
}

fn count(m: &BTreeMap<&'static str, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}

/// Everything compared, computed once.
struct Compared<'a> {
    des: Side<'a>,
    real: Side<'a>,
    /// The real stack's latencies and delays with the loopback crossings taken off.
    real_lat: Vec<u64>,
    real_delays: Vec<u64>,
    requests: Paired,
    deliveries: Paired,
    /// Relative gaps `(corrected real - simulator) / simulator`.
    median: Option<f64>,
    p90: Option<f64>,
    event_median: Option<f64>,
    overlay_hops: [Option<f64>; 2],
    tree_hops: [Option<f64>; 2],
    /// The script's pair delays, µs, sorted.
    pair_delays: Vec<u64>,
}

impl<'a> Compared<'a> {
    fn new(p: &Params, script: &Script, des: &'a Observed, real: &'a Observed) -> Self {
        let (des, real) = (Side::new(des, p), Side::new(real, p));
        let real_lat = corrected(&real.lat, REQUEST_CROSSINGS);
        let real_delays = corrected(&real.delays, EVENT_CROSSINGS);
        let gap = |a: &[u64], b: &[u64], q| compare::rel(q_ms(a, q), q_ms(b, q));
        Compared {
            median: gap(&des.lat, &real_lat, 0.5),
            p90: gap(&des.lat, &real_lat, 0.9),
            event_median: gap(&des.delays, &real_delays, 0.5),
            overlay_hops: [&des, &real]
                .map(|s| compare::per(&s.work, "routes_forwarded", "routes_delivered")),
            tree_hops: [&des, &real]
                .map(|s| compare::per(&s.work, "asks_forwarded", "requests_delivered")),
            requests: compare::pair_requests(&des.o.apps, &real.o.apps),
            deliveries: compare::pair_deliveries(&des.o.apps, &real.o.apps),
            real_lat,
            real_delays,
            pair_delays: pair_delays(script, p.nodes),
            des,
            real,
        }
    }
}

mod prose;

pub(super) fn write(
    sc: &Scenario,
    p: &Params,
    script: &Script,
    sim: &Sim,
    des: &Observed,
    real: &Observed,
    out: &std::path::Path,
) -> anyhow::Result<Outcome> {
    let c = Compared::new(p, script, des, real);
    let mut w = ReportWriter::new(out, &sc.name, &sc.description);
    prose::method(&mut w, p, script, sim);
    outcomes_table(&mut w, &c);
    latency_tables(&mut w, &c);
    counters_table(&mut w, &c);
    join_and_links(&mut w, &c);
    w.heading("Targets");
    w.paragraph(&format!(
        "Outcomes must agree exactly: the workload has no fault, so both runs must answer every \
         request once and make every expected delivery once. Latencies are judged with the \
         loopback ticks taken off: the medians must agree within {:.0} % and the 90th \
         percentiles within {:.0} % ({:.0} % of the simulator's median is {} ms, under the median \
         link's {} ms, so a systematic extra hop or wait would show). \
         Hops and messages as the cores count them must agree within {:.0} %; join times ({} \
         samples) within {:.0} %.",
        p.latency_tolerance * 100.0,
        p.tail_tolerance * 100.0,
        p.latency_tolerance * 100.0,
        ms(q_ms(&c.des.lat, 0.5).map(|m| m * p.latency_tolerance)),
        ms(q_ms(&c.pair_delays, 0.5)),
        p.count_tolerance * 100.0,
        c.des.joins.len(),
        p.join_tolerance * 100.0,
    ));
    w.targets(&targets(p, &c));
    figures(&mut w, &c)?;
    prose::differences(&mut w, &c);
    let results = results_json(sc, p, script, sim, &c, &w);
    // Work done in both runs: the simulator's events and turmoil's steps; the messages the
    // cores sent in both, to the last sample.
    let sent = |o: &Observed| o.samples.last().map_or(0, |m| count(m, "messages_sent"));
    let mut outcome = finish(&w, &results, des.work + real.work, sent(des) + sent(real))?;
    outcome.perf = json!({
        "simulator_wall_s": des.wall.as_secs_f64(),
        "simulator_events": des.work,
        "real_stack_wall_s": real.wall.as_secs_f64(),
        "turmoil_steps": real.work,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    Ok(outcome)
}

/// The pair delays of the script (each unordered pair once), µs, sorted.
fn pair_delays(script: &Script, nodes: u32) -> Vec<u64> {
    let mut v: Vec<u64> = (0..nodes)
        .flat_map(|a| (a + 1..nodes).map(move |b| (a, b)))
        .map(|(a, b)| script.delay_us(nodes, a, b))
        .collect();
    v.sort_unstable();
    v
}

fn outcomes_table(w: &mut ReportWriter, c: &Compared<'_>) {
    w.heading("Side by side");
    w.subheading("Outcomes of the operations issued during the workload");
    let row = |name: &str, f: &dyn Fn(&Side<'_>) -> u64| {
        vec![
            name.to_string(),
            f(&c.des).to_string(),
            f(&c.real).to_string(),
        ]
    };
    let rows = vec![
        row("requests issued", &|s| s.q.issued),
        row("judged", &|s| s.q.judged),
        row("replies", &|s| s.q.replies),
        row("faults", &|s| s.q.faults),
        row("timeouts", &|s| s.q.timeouts),
        row("no outcome", &|s| s.q.missing),
        row("more than one outcome", &|s| s.q.multiple),
        row("wrong reply", &|s| s.q.wrong),
        row("delivered to a member twice", &|s| s.q.redelivered),
        row("scheduled but not issued", &|s| s.o.not_issued),
        row("replies the client library dropped as unexpected", &|s| {
            s.o.unexpected_replies
        }),
        row("application errors", &|s| s.o.errors),
        row("stray application events", &|s| s.o.apps.stray_events),
        row("events and broadcasts published", &|s| s.e.events),
        row("expected deliveries (event, stable recipient)", &|s| {
            s.e.expected
        }),
        row("delivered exactly once", &|s| s.e.once),
        row("missing", &|s| s.e.missing),
        row("delivered more than once (to anyone)", &|s| s.e.duplicates),
    ];
    w.table(&["", "simulator", "real stack"], &rows);
}

fn latency_tables(w: &mut ReportWriter, c: &Compared<'_>) {
    w.subheading("Latency (ms of simulated time)");
    let rows_for = |name: &str, d: &[u64], r: &[u64], rc: &[u64]| -> Vec<Vec<String>> {
        [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)]
            .iter()
            .map(|&(label, q)| {
                vec![
                    format!("{name} {label}"),
                    ms(q_ms(d, q)),
                    ms(q_ms(r, q)),
                    ms(q_ms(rc, q)),
                    signed_pct(compare::rel(q_ms(d, q), q_ms(rc, q))),
                ]
            })
            .collect()
    };
    let mut rows = rows_for("request", &c.des.lat, &c.real.lat, &c.real_lat);
    rows.extend(rows_for(
        "event delivery",
        &c.des.delays,
        &c.real.delays,
        &c.real_delays,
    ));
    let ks =
        |a: &[u64], b: &[u64]| compare::ks_distance(a, b).map_or("-".into(), |d| format!("{d:.3}"));
    rows.push(vec![
        "request KS distance to the simulator".into(),
        "-".into(),
        ks(&c.des.lat, &c.real.lat),
        ks(&c.des.lat, &c.real_lat),
        "-".into(),
    ]);
    w.table(
        &[
            "",
            "simulator",
            "real stack",
            "real, loopback taken off",
            "corrected vs simulator",
        ],
        &rows,
    );
    w.paragraph(&format!(
        "Request latency is from the call to its outcome at the requesting application; an event's \
         delay from the publish call to the recipient's handler (expected deliveries only). The \
         correction takes {REQUEST_CROSSINGS} ms off every real request and {EVENT_CROSSINGS} ms \
         off every real delivery."
    ));
    let paired_row = |name: &str, pr: &Paired, crossings: u64| {
        let off = i64::try_from(crossings * crate::micros_u64(TICK)).unwrap_or(i64::MAX);
        let mut d = pr.diffs_us.clone();
        d.sort_unstable();
        let within = d.iter().filter(|&&x| (x - off).abs() <= 1000).count();
        let exact = d.iter().filter(|&&x| x == off).count();
        let q = |q| quantile(&d, q).map_or("-".into(), |v| format!("{:+.1}", v as f64 / 1000.0));
        vec![
            name.to_string(),
            d.len().to_string(),
            format!("{} / {} / {}", q(0.1), q(0.5), q(0.9)),
            pct(exact as f64 / d.len().max(1) as f64, 1),
            pct(within as f64 / d.len().max(1) as f64, 1),
            format!("{} / {}", pr.one_sided, pr.unmatched),
        ]
    };
    w.subheading("Paired: the same request or delivery in both runs");
    w.table(
        &[
            "",
            "pairs",
            "real − simulator p10 / p50 / p90 (ms)",
            "exactly the loopback crossings",
            "within 1 ms of them",
            "answered in one run only / unmatched",
        ],
        &[
            paired_row("requests", &c.requests, REQUEST_CROSSINGS),
            paired_row(
                "requests served by the same host's member in both",
                &Paired {
                    diffs_us: c.requests.same_member_diffs_us.clone(),
                    ..Paired::default()
                },
                REQUEST_CROSSINGS,
            ),
            paired_row("event deliveries", &c.deliveries, EVENT_CROSSINGS),
        ],
    );
}

fn counters_table(w: &mut ReportWriter, c: &Compared<'_>) {
    w.subheading("Hops and messages (petal-core's counters, summed over the nodes)");
    let keys = [
        "messages_sent",
        "pings_sent",
        "routes_forwarded",
        "routes_delivered",
        "asks_forwarded",
        "requests_delivered",
        "requests_answered",
        "events_forwarded",
        "events_delivered",
        "hop_timeouts",
        "reroutes",
        "join_retries",
        "proximity_swaps",
        "group_parent_changes",
    ];
    let mut rows: Vec<Vec<String>> = keys
        .iter()
        .map(|&k| {
            let (d, r) = (count(&c.des.work, k), count(&c.real.work, k));
            vec![
                k.replace('_', " "),
                count(&c.des.settle, k).to_string(),
                count(&c.real.settle, k).to_string(),
                d.to_string(),
                r.to_string(),
                signed_pct(compare::rel(Some(d as f64), Some(r as f64))),
            ]
        })
        .collect();
    let ratio = |name: &str, v: [Option<f64>; 2], settle: [Option<f64>; 2]| {
        let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
        vec![
            name.to_string(),
            f(settle[0]),
            f(settle[1]),
            f(v[0]),
            f(v[1]),
            signed_pct(compare::rel(v[0], v[1])),
        ]
    };
    let settle = |num, den| [&c.des, &c.real].map(|s| compare::per(&s.settle, num, den));
    rows.push(ratio(
        "overlay hops per routed message",
        c.overlay_hops,
        settle("routes_forwarded", "routes_delivered"),
    ));
    rows.push(ratio(
        "tree hops per request",
        c.tree_hops,
        settle("asks_forwarded", "requests_delivered"),
    ));
    w.table(
        &[
            "counter",
            "joins and settling: simulator",
            "real stack",
            "workload and drain: simulator",
            "real stack",
            "real vs simulator",
        ],
        &rows,
    );
    let hops: Vec<u8> = c.des.q.hops.clone();
    let mean = hops.iter().map(|&h| f64::from(h)).sum::<f64>() / hops.len().max(1) as f64;
    w.paragraph(&format!(
        "Per request, which only the simulator records (overlay hops to the cluster's root plus \
         tree hops down to the member): mean {mean:.2} over {} delivered requests. Routed messages \
         include joins, publishes and the trees' grafts besides requests.",
        hops.len()
    ));
}

fn join_and_links(w: &mut ReportWriter, c: &Compared<'_>) {
    w.subheading("Joins and links");
    let row = |s: &Side<'_>| {
        vec![
            ms(q_ms(&s.joins, 0.5)),
            ms(q_ms(&s.joins, 0.9)),
            ms(q_ms(&s.joins, 1.0)),
            s.never_ready.to_string(),
        ]
    };
    let mut rows = Vec::new();
    for (name, s) in [("simulator", &c.des), ("real stack", &c.real)] {
        let mut r = vec![name.to_string()];
        r.extend(row(s));
        rows.push(r);
    }
    w.table(
        &["", "join time p50 (ms)", "p90", "max", "never ready"],
        &rows,
    );
    let rt = |k: usize, key: &str| c.real.o.runtime.get(k).map_or(0, |m| count(m, key));
    w.paragraph(&format!(
        "A join is timed from the host's boot to the first tick its node reports itself ready \
         (host 0 founds the ring and is left out). Real peer links: {} dials and {} links up \
         before the workload, {} dials and {} links up during it (runtime counters; the \
         simulator has no links).",
        rt(0, "link_dials"),
        rt(0, "links_up"),
        rt(1, "link_dials").saturating_sub(rt(0, "link_dials")),
        rt(1, "links_up").saturating_sub(rt(0, "links_up")),
    ));
}

/// A target that `gap` (a relative difference) is within `tolerance`.
fn within(name: &str, gap: Option<f64>, tolerance: f64, what: String) -> TargetRow {
    let target = format!("within ±{:.0} %", tolerance * 100.0);
    match gap {
        Some(g) => TargetRow::new(
            name,
            target,
            format!("{} ({what})", signed_pct(Some(g))),
            Verdict::from_met(g.abs() <= tolerance),
        ),
        None => TargetRow::new(name, target, "nothing to compare", Verdict::Missed),
    }
}

fn targets(p: &Params, c: &Compared<'_>) -> Vec<TargetRow> {
    let (d, r) = (&c.des, &c.real);
    let outcomes = |s: &Side<'_>| {
        [
            s.q.issued,
            s.q.judged,
            s.q.replies,
            s.q.faults,
            s.q.timeouts,
            s.q.missing,
            s.q.multiple,
            s.q.wrong,
        ]
    };
    let same = outcomes(d) == outcomes(r);
    let events = |s: &Side<'_>| [s.e.events, s.e.expected, s.e.once, s.e.duplicates];
    let ms_pair = |a: &[u64], b: &[u64], q| format!("{} vs {} ms", ms(q_ms(a, q)), ms(q_ms(b, q)));
    let hops = |v: [Option<f64>; 2]| {
        let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
        format!("{} vs {}", f(v[0]), f(v[1]))
    };
    let sent = [d, r].map(|s| count(&s.work, "messages_sent") as f64);
    let violations = |s: &Side<'_>| {
        s.q.missing + s.q.multiple + s.q.wrong + s.o.unexpected_replies + s.o.apps.stray_events
    };
    vec![
        share_target(
            "requests answered, simulator",
            1.0,
            d.q.replies + d.q.faults,
            d.q.judged,
        ),
        share_target(
            "requests answered, real stack",
            1.0,
            r.q.replies + r.q.faults,
            r.q.judged,
        ),
        zero_target(
            "requests without exactly one outcome, both runs",
            violations(d) + violations(r),
            format!("{} simulator, {} real stack", violations(d), violations(r)),
        ),
        TargetRow::new(
            "the same outcome counts (issued, judged, replies, faults, timeouts, none, 2+, wrong)",
            "equal",
            format!("{:?} vs {:?}", outcomes(d), outcomes(r)),
            Verdict::from_met(same),
        ),
        share_target(
            "expected event deliveries made exactly once, simulator",
            1.0,
            d.e.once,
            d.e.expected,
        ),
        share_target(
            "expected event deliveries made exactly once, real stack",
            1.0,
            r.e.once,
            r.e.expected,
        ),
        TargetRow::new(
            "the same event counts (published, expected, once, duplicates)",
            "equal",
            format!("{:?} vs {:?}", events(d), events(r)),
            Verdict::from_met(events(d) == events(r)),
        ),
        within(
            "request latency p50, real (loopback taken off) vs simulator",
            c.median,
            p.latency_tolerance,
            ms_pair(&d.lat, &c.real_lat, 0.5),
        ),
        within(
            "request latency p90, real (loopback taken off) vs simulator",
            c.p90,
            p.tail_tolerance,
            ms_pair(&d.lat, &c.real_lat, 0.9),
        ),
        within(
            "event delay p50, real (loopback taken off) vs simulator",
            c.event_median,
            p.latency_tolerance,
            ms_pair(&d.delays, &c.real_delays, 0.5),
        ),
        within(
            "overlay hops per routed message, workload",
            compare::rel(c.overlay_hops[0], c.overlay_hops[1]),
            p.count_tolerance,
            hops(c.overlay_hops),
        ),
        within(
            "tree hops per request, workload",
            compare::rel(c.tree_hops[0], c.tree_hops[1]),
            p.count_tolerance,
            hops(c.tree_hops),
        ),
        within(
            "messages sent by the cores, workload",
            compare::rel(Some(sent[0]), Some(sent[1])),
            p.count_tolerance,
            format!("{} vs {}", sent[0], sent[1]),
        ),
        within(
            "join time p50 (boot to ready), real vs simulator",
            compare::rel(q_ms(&d.joins, 0.5), q_ms(&r.joins, 0.5)),
            p.join_tolerance,
            ms_pair(&d.joins, &r.joins, 0.5),
        ),
        TargetRow::new(
            "request latency p50, raw (for reference)",
            "-",
            format!(
                "{} ({})",
                signed_pct(compare::rel(q_ms(&d.lat, 0.5), q_ms(&r.lat, 0.5))),
                ms_pair(&d.lat, &r.lat, 0.5)
            ),
            Verdict::Info,
        ),
    ]
}

fn figures(w: &mut ReportWriter, c: &Compared<'_>) -> anyhow::Result<()> {
    w.heading("Figures");
    let to_ms = |v: &[u64]| v.iter().map(|&x| x as f64 / 1000.0).collect::<Vec<f64>>();
    w.cdf_chart(
        "request_latency_cdf.png",
        &CdfChart::new(
            "Request latency: simulator and real stack",
            "ms (simulated)",
            vec![
                ("simulator".to_string(), to_ms(&c.des.lat)),
                ("real stack".to_string(), to_ms(&c.real.lat)),
                (
                    format!("real stack − {REQUEST_CROSSINGS} loopback ticks"),
                    to_ms(&c.real_lat),
                ),
            ],
        ),
    )?;
    w.cdf_chart(
        "event_delay_cdf.png",
        &CdfChart::new(
            "Event delivery delay: simulator and real stack",
            "ms (simulated)",
            vec![
                ("simulator".to_string(), to_ms(&c.des.delays)),
                ("real stack".to_string(), to_ms(&c.real.delays)),
                (
                    format!("real stack − {EVENT_CROSSINGS} loopback ticks"),
                    to_ms(&c.real_delays),
                ),
            ],
        ),
    )?;
    let (cats, req, ev) = diff_histogram(&c.requests, &c.deliveries);
    let bars = Frame::new(
        "Paired differences: real stack minus simulator, same request or delivery",
        "real − simulator (ms)",
        "% of pairs",
    )
    .bars(cats)
    .group("requests", req)
    .group("event deliveries", ev);
    w.bar_chart("paired_differences.png", &bars)?;
    w.cdf_chart(
        "join_time_cdf.png",
        &CdfChart::new(
            format!(
                "Join time (boot to ready), hosts 1 to {}",
                c.des.o.boot_at.len() - 1
            ),
            "ms (simulated)",
            vec![
                ("simulator".to_string(), to_ms(&c.des.joins)),
                ("real stack".to_string(), to_ms(&c.real.joins)),
            ],
        ),
    )?;
    Ok(())
}

/// Bins of the paired differences (whole ms, the extremes gathered into "≤ lo" and "≥ hi"),
/// and each kind's share per bin, in percent.
fn diff_histogram(requests: &Paired, deliveries: &Paired) -> (Vec<String>, Vec<f64>, Vec<f64>) {
    const LO: i64 = -4;
    const HI: i64 = 12;
    let bin = |us: i64| us.div_euclid(1000).clamp(LO, HI);
    let cats: Vec<String> = (LO..=HI)
        .map(|b| match b {
            LO => format!("≤{b}"),
            HI => format!("≥{b}"),
            _ => b.to_string(),
        })
        .collect();
    let shares = |p: &Paired| {
        let mut v = vec![0f64; cats.len()];
        for &d in &p.diffs_us {
            v[usize::try_from(bin(d) - LO).unwrap_or(0)] += 1.0;
        }
        let n = p.diffs_us.len().max(1) as f64;
        v.iter().map(|x| 100.0 * x / n).collect::<Vec<f64>>()
    };
    let (a, b) = (shares(requests), shares(deliveries));
    (cats, a, b)
}

/// How many requests took each number of hops (index = hops).
fn hop_counts(hops: &[u8]) -> Vec<u64> {
    let mut v = vec![0u64; hops.iter().copied().max().map_or(0, |m| usize::from(m) + 1)];
    for &h in hops {
        v[usize::from(h)] += 1;
    }
    v
}

fn results_json(
    sc: &Scenario,
    p: &Params,
    script: &Script,
    sim: &Sim,
    c: &Compared<'_>,
    w: &ReportWriter,
) -> serde_json::Value {
    let side = |s: &Side<'_>, lat: &[u64], delays: &[u64]| {
        json!({
            "requests": s.q,
            "events": s.e,
            "request_latency": crate::scenario::common::ms_quantiles(lat),
            "event_delay": crate::scenario::common::ms_quantiles(delays),
            "join_time": crate::scenario::common::ms_quantiles(&s.joins),
            "join_ms_by_host": (1..s.o.boot_at.len())
                .map(|h| s.o.ready_at[h].map(|t| t.saturating_since(s.o.boot_at[h]).as_secs_f64() * 1000.0))
                .collect::<Vec<_>>(),
            "never_ready": s.never_ready,
            "not_issued": s.o.not_issued,
            "errors": s.o.errors,
            "unexpected_replies": s.o.unexpected_replies,
            "stray_events": s.o.apps.stray_events,
            "counters_settle": s.settle,
            "counters_workload": s.work,
            "runtime_counters": s.o.runtime,
            "trace_hash": s.o.trace_hash,
        })
    };
    let paired = |pr: &Paired| {
        let mut d = pr.diffs_us.clone();
        d.sort_unstable();
        let q = |q| quantile(&d, q).map(|v| v as f64 / 1000.0);
        json!({
            "pairs": d.len(), "one_sided": pr.one_sided, "unmatched": pr.unmatched,
            "max_start_skew_us": pr.max_start_skew_us,
            "diff_p10_ms": q(0.1), "diff_p50_ms": q(0.5), "diff_p90_ms": q(0.9),
        })
    };
    json!({
        "scenario": sc.name, "seed": sc.seed,
        "nodes": p.nodes, "operations": script.ops.len(),
        "topology": sim.topology().summary(),
        "pair_delay_ms": crate::scenario::common::ms_quantiles(&pair_delays(script, p.nodes)),
        "simulator": side(&c.des, &c.des.lat, &c.des.delays),
        "real_stack": side(&c.real, &c.real.lat, &c.real.delays),
        "real_stack_corrected": {
            "loopback_crossings": {"request": REQUEST_CROSSINGS, "event": EVENT_CROSSINGS},
            "request_latency": crate::scenario::common::ms_quantiles(&c.real_lat),
            "event_delay": crate::scenario::common::ms_quantiles(&c.real_delays),
        },
        "gaps": {
            "request_p50": c.median, "request_p90": c.p90, "event_p50": c.event_median,
            "overlay_hops_per_route": c.overlay_hops, "tree_hops_per_request": c.tree_hops,
            "request_ks": compare::ks_distance(&c.des.lat, &c.real_lat),
        },
        "paired_requests": paired(&c.requests),
        "paired_deliveries": paired(&c.deliveries),
        "simulator_request_hops": hop_counts(&c.des.q.hops),
        "targets": w.target_rows(),
    })
}
