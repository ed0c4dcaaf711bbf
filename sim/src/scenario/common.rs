//! Helpers shared by the runners: time stepping, lookup workloads, result hashing.

use petal_core::{Key, Time};
use rand::Rng;
use sha2::{Digest, Sha256};

use super::app_workload::{Workload, WorkloadParams};
use crate::engine::Sim;
use crate::report::ReportWriter;

use super::Outcome;

/// Advances simulated time by `ms` milliseconds.
pub(crate) fn advance_ms(sim: &mut Sim, ms: u64) {
    let t = sim.now().as_micros() + ms * 1000;
    sim.run_until(Time::from_micros(t));
}

/// Grows the overlay to `nodes` nodes, one join every `join_spacing_ms`, then lets it settle
/// for `settle_ms`: the preamble of every runner that measures a settled overlay.
/// `on_join(sim)` runs after each join (for progress).
pub(crate) fn grow(
    sim: &mut Sim,
    nodes: u64,
    join_spacing_ms: u64,
    settle_ms: u64,
    mut on_join: impl FnMut(&Sim),
) {
    while (sim.node_count() as u64) < nodes {
        sim.add_node();
        advance_ms(sim, join_spacing_ms);
        on_join(sim);
    }
    advance_ms(sim, settle_ms);
}

/// The messaging runners' preamble after [`grow`]: every ready node gets its application
/// (`workload`), then the workload ticks for `warmup_s` while the trees form.
pub(super) fn warm_up(
    sim: &mut Sim,
    workload: &WorkloadParams,
    warmup_s: u64,
) -> anyhow::Result<Workload> {
    let mut wl = Workload::new(workload.clone())?;
    wl.populate(sim);
    wl.start(sim.now());
    for _ in 0..warmup_s * 1000 / STEP_MS {
        let t = sim.now();
        wl.tick(sim, t);
        advance_ms(sim, STEP_MS);
    }
    Ok(wl)
}

/// The messaging runners' time step, milliseconds.
pub(crate) const STEP_MS: u64 = 10;

/// What one window of messaging (a phase, or a time bucket) saw.
pub(crate) struct Window {
    pub requests: crate::oracle::RequestStats,
    pub events: crate::oracle::EventStats,
    pub tunnels: crate::oracle::TunnelStats,
}

/// Per-second delivery of consecutive 1 s `buckets` in percent, for a chart: requests
/// answered and events delivered, skipping seconds in which nothing was judged.
pub(crate) fn delivery_series(buckets: &[Window]) -> [Vec<(f64, f64)>; 2] {
    let series = |f: &dyn Fn(&Window) -> Option<f64>| -> Vec<(f64, f64)> {
        buckets
            .iter()
            .enumerate()
            .filter_map(|(s, b)| f(b).map(|v| (s as f64, v * 100.0)))
            .collect()
    };
    [
        series(&|b| (b.requests.judged > 0).then(|| b.requests.answered_ratio())),
        series(&|b| (b.events.expected > 0).then(|| b.events.delivered_ratio())),
    ]
}

/// The JSON of consecutive 1 s `buckets`: judged requests and expected events with their ratios.
pub(crate) fn per_second_json(buckets: &[Window]) -> Vec<serde_json::Value> {
    buckets
        .iter()
        .enumerate()
        .map(|(s, b)| {
            serde_json::json!({
                "t_s": s,
                "requests_judged": b.requests.judged,
                "requests_answered_ratio": b.requests.answered_ratio(),
                "events_expected": b.events.expected,
                "events_delivered_ratio": b.events.delivered_ratio(),
            })
        })
        .collect()
}

/// Exponential session length with the given median, in microseconds.
#[expect(
    clippy::cast_possible_truncation,
    reason = "a non-negative float of microseconds, far below u64::MAX; the fraction is dropped on purpose"
)]
pub(crate) fn session_us(sim: &mut Sim, median_s: u64) -> u64 {
    let u: f64 = sim.rng().random_range(f64::EPSILON..1.0);
    (-(u.ln()) * median_s as f64 / std::f64::consts::LN_2 * 1e6) as u64
}

/// Time to the next arrival of a Poisson process at `rate_per_us`, in microseconds.
#[expect(
    clippy::cast_possible_truncation,
    reason = "a non-negative float of microseconds, far below u64::MAX; the fraction is dropped on purpose"
)]
pub(crate) fn exp_us(sim: &mut Sim, rate_per_us: f64) -> u64 {
    let u: f64 = sim.rng().random_range(f64::EPSILON..1.0);
    (-(u.ln()) / rate_per_us) as u64
}

/// Starts `n` lookups of random keys from random ready nodes, in batches of `batch` every
/// `gap_ms`, then lets them finish for `drain_ms`.
pub(crate) fn lookup_burst(sim: &mut Sim, n: u64, batch: u64, gap_ms: u64, drain_ms: u64) {
    let mut left = n;
    while left > 0 {
        for _ in 0..batch.min(left) {
            if let Some(from) = sim.random_ready() {
                let key = Key(sim.rng().random());
                sim.lookup(from, key);
            }
        }
        left = left.saturating_sub(batch);
        advance_ms(sim, gap_ms);
    }
    advance_ms(sim, drain_ms);
}

/// Hex SHA-256 of a JSON value's canonical text.
#[expect(
    clippy::expect_used,
    reason = "serde_json writes any Value to a string (its errors are for I/O and non-string map keys)"
)]
pub(crate) fn hash_json(v: &serde_json::Value) -> String {
    let text = serde_json::to_string(v).expect("json serialises");
    let d = Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Formats a fraction as a percentage with `digits` decimals.
/// Formats a fraction as a percentage with `digits` decimals; `-` for NaN (a share of
/// nothing, see [`crate::oracle`]).
pub(crate) fn pct(x: f64, digits: usize) -> String {
    if x.is_nan() {
        return "-".to_string();
    }
    format!("{:.*} %", digits, x * 100.0)
}

/// The JSON of one window's messaging judgements: requests (with latency quantiles and
/// ratios), events and tunnels.
pub(crate) fn messaging_window_json(
    q: &crate::oracle::RequestStats,
    e: &crate::oracle::EventStats,
    t: &crate::oracle::TunnelStats,
) -> serde_json::Value {
    serde_json::json!({
        "requests": q,
        "request_latency": ms_quantiles(&q.latencies_us),
        "answered_ratio": q.answered_ratio(),
        "one_outcome_ratio": q.one_outcome_ratio(),
        "events": e,
        "events_delivered_ratio": e.delivered_ratio(),
        "tunnels": t,
    })
}

/// Quantiles of microsecond samples, in milliseconds.
pub(crate) fn ms_quantiles(samples: &[u64]) -> serde_json::Value {
    let q = |p| crate::metrics::quantile(samples, p).map(|v| v as f64 / 1000.0);
    serde_json::json!({
        "count": samples.len(),
        "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": q(1.0),
    })
}

/// Writes the report with its results and returns the run's outcome.
pub(crate) fn finish(
    w: &ReportWriter,
    results: &serde_json::Value,
    events: u64,
    messages: u64,
) -> anyhow::Result<Outcome> {
    w.finish(results)?;
    Ok(Outcome {
        targets: w.target_counts(),
        missed: w
            .target_rows()
            .iter()
            .filter(|r| r.verdict == crate::report::Verdict::Missed)
            .map(|r| r.name.clone())
            .collect(),
        results_hash: hash_json(results),
        events,
        messages,
        perf: serde_json::Map::new(),
    })
}

/// Records in the outcome's `perf.json` figures how many simulated nodes the run held (node
/// slots, alive or not: what its memory is spent on), so that `sim` can report bytes per node.
pub(crate) fn with_nodes(mut outcome: Outcome, nodes: usize) -> Outcome {
    outcome.perf.insert("nodes".into(), nodes.into());
    outcome
}

/// Messaging counters of `petal_core::Stats`, summed over every node (alive or not), by name:
/// what dropped, expired, was replayed or repaired inside the nodes.
pub(crate) fn node_counters(sim: &Sim) -> std::collections::BTreeMap<&'static str, u64> {
    core_counters((0..crate::count_u32(sim.node_count())).map(|i| sim.node(i).stats()))
}

/// [`node_counters`] over any set of nodes' `petal_core::Stats`.
pub(crate) fn core_counters<'a>(
    stats: impl IntoIterator<Item = &'a petal_core::Stats>,
) -> std::collections::BTreeMap<&'static str, u64> {
    let mut m = std::collections::BTreeMap::new();
    for s in stats {
        let fields: [(&'static str, u64); 33] = [
            ("introductions", s.introductions),
            ("revivals", s.revivals),
            ("dead_rumours", s.dead_rumours),
            ("requests_failed_on_leave", s.requests_failed_on_leave),
            ("asks_bounced", s.asks_bounced),
            ("routes_dropped", s.routes_dropped),
            ("hop_timeouts", s.hop_timeouts),
            ("reroutes", s.reroutes),
            ("outbox_drops", s.outbox_drops),
            ("event_drops", s.event_drops),
            ("asks_forwarded", s.asks_forwarded),
            ("asks_unplaced", s.asks_unplaced),
            ("asks_parked", s.asks_parked),
            ("requests_delivered", s.requests_delivered),
            ("deliveries_expired", s.deliveries_expired),
            ("replies_late", s.replies_late),
            ("group_repairs", s.group_repairs),
            ("group_parent_changes", s.group_parent_changes),
            ("group_roots_taken", s.group_roots_taken),
            ("group_children_expired", s.group_children_expired),
            ("group_children_restored", s.group_children_restored),
            ("group_cycles_refused", s.group_cycles_refused),
            ("group_replayed", s.group_replayed),
            ("events_unheard", s.events_unheard),
            ("events_duplicate", s.events_duplicate),
            ("events_copies_dropped", s.events_copies_dropped),
            ("asks_copies_dropped", s.asks_copies_dropped),
            ("events_stale", s.events_stale),
            ("event_gaps", s.event_gaps),
            ("events_lost", s.events_lost),
            ("tunnels_failed", s.tunnels_failed),
            ("tunnel_stale", s.tunnel_stale),
            ("group_drops", s.group_drops),
        ];
        for (k, v) in fields {
            *m.entry(k).or_insert(0) += v;
        }
    }
    m
}

/// How a target row reads its share: `"100 %"` or `"≥ 99.9 %"`.
fn share_label(min: f64) -> String {
    if min >= 1.0 {
        "100 %".to_string()
    } else {
        format!("≥ {}", pct(min, share_digits(min)))
    }
}

/// Decimals enough to show `min` (99.9 % needs one, 99.95 % two).
fn share_digits(min: f64) -> usize {
    (0..4)
        .find(|&d| {
            let scaled = min * 100.0 * 10f64.powi(i32::try_from(d).unwrap_or(i32::MAX));
            (scaled - scaled.round()).abs() < 1e-6
        })
        .unwrap_or(3)
}

/// A target that at least `min` of `judged` items succeeded (`ok` of them). A window in which
/// nothing was judged misses the target: it proves nothing, so it must not pass.
pub(crate) fn share_target(
    name: impl Into<String>,
    min: f64,
    ok: u64,
    judged: u64,
) -> crate::report::TargetRow {
    use crate::report::{TargetRow, Verdict};
    let target = share_label(min);
    if judged == 0 {
        return TargetRow::new(name, target, "nothing judged", Verdict::Missed);
    }
    let r = ok as f64 / judged as f64;
    TargetRow::new(
        name,
        target,
        format!("{} ({ok} of {judged})", pct(r, 3)),
        Verdict::from_met(r >= min),
    )
}

/// A target that a count of violations is 0, with what makes it up.
pub(crate) fn zero_target(
    name: impl Into<String>,
    count: u64,
    detail: String,
) -> crate::report::TargetRow {
    use crate::report::{TargetRow, Verdict};
    let measured = if detail.is_empty() {
        count.to_string()
    } else {
        format!("{count} ({detail})")
    };
    TargetRow::new(name, "0", measured, Verdict::from_met(count == 0))
}

/// The levels a window of messaging must reach (shares of judged items).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Levels {
    /// Judged requests answered (reply or fault).
    pub answered: f64,
    /// Expected (event, stable recipient) pairs delivered exactly once.
    pub events: f64,
    /// Tunnels completed, of those opened (`None`: reported only).
    pub tunnels: Option<f64>,
}

/// The targets of one window of messaging, `label` naming the window ("10 min sessions",
/// "during the split"):
/// - judged requests answered, at least `levels.answered` (missed when none was judged);
/// - no request with a missing, second or wrong outcome (and no stray application event);
/// - expected event deliveries made exactly once, at least `levels.events`;
/// - no event delivered twice to anyone, stable recipient or not;
/// - tunnels completed, at least `levels.tunnels` of those judged (not those whose opener went
///   away before they ended: see [`crate::oracle::TunnelStats::opener_gone`]); none corrupt,
///   confirmed twice or accepted twice.
pub(crate) fn messaging_targets(
    label: &str,
    q: &crate::oracle::RequestStats,
    e: &crate::oracle::EventStats,
    t: &crate::oracle::TunnelStats,
    stray: u64,
    levels: Levels,
) -> Vec<crate::report::TargetRow> {
    let mut rows = vec![
        share_target(
            format!("requests answered, {label}"),
            levels.answered,
            q.replies + q.faults,
            q.judged,
        ),
        zero_target(
            format!("requests without exactly one outcome, {label}"),
            q.missing + q.multiple + q.wrong + stray,
            format!(
                "{} missing, {} multiple, {} wrong, {stray} stray",
                q.missing, q.multiple, q.wrong
            ),
        ),
        share_target(
            format!("events delivered once to stable recipients, {label}"),
            levels.events,
            e.once,
            e.expected,
        ),
        zero_target(
            format!("events delivered twice, {label}"),
            e.duplicates,
            format!("{} stable recipients got one twice", e.doubled),
        ),
    ];
    if let Some(min) = levels.tunnels {
        rows.push(share_target(
            format!("tunnels completed, {label}"),
            min,
            t.completed,
            t.judged(),
        ));
    }
    rows.push(zero_target(
        format!("tunnels corrupt or doubled, {label}"),
        t.violations(),
        format!(
            "{} corrupt, {} confirmed twice, {} accepted twice",
            t.corrupt, t.doubled_confirms, t.doubled_accepts
        ),
    ));
    rows
}

/// A sentence on the network's faults beyond delays and partitions (loss, duplicates,
/// reordering), when the scenario sets any, with what they did in the run.
pub(crate) fn network_faults_paragraph(sim: &crate::engine::Sim) -> Option<String> {
    let cfg = sim.config();
    let m = &sim.metrics;
    let mut parts = Vec::new();
    if cfg.loss > 0.0 {
        parts.push(format!(
            "loses {} of messages at random ({} lost)",
            pct(cfg.loss, 2),
            m.dropped_loss
        ));
    }
    if cfg.duplicate > 0.0 {
        parts.push(format!(
            "delivers {} of messages twice, the copy with its own delay ({} copies)",
            pct(cfg.duplicate, 2),
            m.duplicated
        ));
    }
    if cfg.reorder_us > 0 {
        parts.push(format!(
            "delays each message by a further 0-{} ms at random, so that the messages of a link \
             arrive out of order",
            cfg.reorder_us as f64 / 1000.0
        ));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "The network also {}. Links between nodes are authenticated streams, which never \
             duplicate or reorder; a transport of datagrams could, and the core must deliver \
             every event once and give every request one outcome all the same.",
            parts.join("; ")
        )
    })
}

/// Poisson churn on a steady population (the churn runners' driver): every ready node crashes
/// after an exponential session of median `median_s`, and new nodes arrive as a Poisson process
/// at the rate that keeps `nodes` alive; each new node's session is drawn as it arrives.
pub(crate) struct Churn {
    deaths: std::collections::BTreeSet<(u64, u32)>,
    next_arrival: u64,
    rate_per_us: f64,
    median_s: u64,
    /// Crashes so far.
    pub crashes: u64,
    /// Arrivals so far.
    pub arrivals: u64,
}

impl Churn {
    /// Draws the sessions of the nodes ready now and the first arrival.
    pub(crate) fn start(sim: &mut Sim, nodes: u64, median_s: u64) -> Self {
        let start = sim.now().as_micros();
        let mut deaths = std::collections::BTreeSet::new();
        for i in sim.ready_nodes().collect::<Vec<_>>() {
            deaths.insert((start + session_us(sim, median_s), i));
        }
        let rate_per_us = nodes as f64 * std::f64::consts::LN_2 / median_s as f64 / 1e6;
        let next_arrival = start + exp_us(sim, rate_per_us);
        Churn {
            deaths,
            next_arrival,
            rate_per_us,
            median_s,
            crashes: 0,
            arrivals: 0,
        }
    }

    /// Crashes the nodes whose session ended by `now` (`before_crash` runs first for each),
    /// then adds the nodes that arrived by then (`added` runs for each).
    pub(crate) fn step(
        &mut self,
        sim: &mut Sim,
        now: u64,
        mut before_crash: impl FnMut(&mut Sim, u32),
        mut added: impl FnMut(&mut Sim, u32),
    ) {
        while let Some(&(t, i)) = self.deaths.first() {
            if t > now {
                break;
            }
            self.deaths.pop_first();
            before_crash(sim, i);
            sim.crash(i);
            self.crashes += 1;
        }
        while self.next_arrival <= now {
            let i = sim.add_node();
            added(sim, i);
            self.arrivals += 1;
            self.deaths
                .insert((now + session_us(sim, self.median_s), i));
            self.next_arrival += exp_us(sim, self.rate_per_us).max(1);
        }
    }
}
