//! The `store-churn` report: outcomes by operation, reads and their staleness, conditional
//! writes, lost writes after the churn, repair traffic; targets per churn rate.

use std::path::Path;

use serde_json::json;

use super::oracle::{Judged, Kind};
use super::{Params, Run};
use crate::metrics::quantile;
use crate::report::{CdfChart, Frame, ReportWriter, TargetRow};
use crate::scenario::common::{finish, ms_quantiles, pct, share_target, zero_target};
use crate::scenario::{Outcome, Scenario};

/// The levels a run must reach: shares of reads that are fresh and of operations that
/// succeed. With 10-minute sessions the store is judged as a stable service; with 1-minute
/// sessions (every node replaced about five times in the run) at the levels it reaches there,
/// so that a regression shows as a miss.
fn levels(median_s: u64) -> (f64, f64) {
    if median_s >= 600 {
        (0.999, 0.999)
    } else {
        (0.99, 0.99)
    }
}

fn ms_q(samples: &[u64], q: f64) -> String {
    quantile(samples, q).map_or("-".into(), |v| format!("{:.1} ms", v as f64 / 1000.0))
}

fn secs_q(samples: &[u64], q: f64) -> String {
    quantile(samples, q).map_or("-".into(), |v| format!("{:.2} s", v as f64 / 1e6))
}

/// The targets of one run.
fn targets(r: &Run) -> Vec<TargetRow> {
    let j = &r.judged;
    let label = format!("{} s sessions", r.median_s);
    let (fresh, ok) = levels(r.median_s);
    let succeeded: u64 = j.by_kind.iter().map(|k| k.0).sum();
    vec![
        zero_target(
            format!("operations without exactly one outcome, {label}"),
            r.judged.missing + r.judged.duplicates + r.strays,
            format!(
                "{} missing, {} second outcomes, {} for operations never issued",
                j.missing, j.duplicates, r.strays
            ),
        ),
        share_target(
            format!("operations that succeeded, {label}"),
            ok,
            succeeded,
            j.judged,
        ),
        share_target(format!("reads fresh, {label}"), fresh, j.fresh, j.reads),
        zero_target(
            format!("expired values returned, {label}"),
            j.expired,
            String::new(),
        ),
        zero_target(
            format!("values no client wrote returned, {label}"),
            j.fabricated,
            String::new(),
        ),
        zero_target(
            format!("conditional writes that won twice on one version, {label}"),
            j.cas_double,
            String::new(),
        ),
        zero_target(
            format!("acknowledged writes lost (not excused), {label}"),
            j.lost - j.lost_excused,
            format!(
                "{} lost of {} keys, {} excused",
                j.lost, j.final_keys, j.lost_excused
            ),
        ),
    ]
}

pub(super) fn write(
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
        "{} nodes join ({} ms apart) and settle for {} s; every ready node gets a client, and the {} keys \
         (`k0`, `k1`, ...) are written once over {} s. For the next {} s nodes crash after exponential \
         sessions with the given median and new nodes arrive at the rate that keeps the population \
         steady (a new node gets a client once ready); clients issue {} operations per second in all, \
         from random nodes on random keys: {} gets, {} puts ({} of them with a time to live of {}-{} s), \
         {} conditional puts (expecting the newest acknowledged version) and the rest deletes, each \
         with a {} ms timeout. Afterwards churn and work stop for {} s, then every key is read once more. \
         The store keeps k = {} replicas, acknowledges writes after W = {}, reads from R = {}, and \
         repairs every {} ms and {} ms after a leaf-set change.",
        p.nodes,
        p.join_spacing_ms,
        p.settle_s,
        p.keys,
        p.preload_s,
        p.duration_s,
        p.ops_per_s,
        pct(p.get_share, 0),
        pct(p.put_share, 0),
        pct(p.ttl_share, 0),
        p.ttl_s[0],
        p.ttl_s[1],
        pct(p.cas_share, 0),
        p.timeout_ms,
        p.drain_s,
        node.store_replicas,
        node.store_write_quorum,
        node.store_read_quorum,
        node.store_sync_interval.as_millis(),
        node.store_handoff_delay.as_millis(),
    ));
    w.paragraph(
        "How each outcome is judged: an operation whose client lived until 1 s past its deadline must \
         have exactly one outcome. A read (a get answered with a value or \"not found\") is fresh when it \
         returns the newest version acknowledged before it started, or a newer one; otherwise it is \
         stale, and its staleness is how long before the read the first write it missed was \
         acknowledged. \"Not found\" is fresh when that newest write was a deletion or a value that may \
         have expired. A value returned after its time to live surely ran out (acknowledged at a, a + ttl \
         before the read started) is an expired value; a value no client wrote is fabricated. Two \
         conditional writes that both succeed on one expected version are a double win. After the \
         churn, a key whose newest acknowledged write does not come back lost it; the loss is excused \
         when k of the key's replicas (nodes among its k closest when they crashed) crashed within the \
         repair window of each other.",
    );
    outcome_table(&mut w, runs);
    read_table(&mut w, runs);
    after_table(&mut w, p, runs);
    let rows: Vec<TargetRow> = runs.iter().flat_map(targets).collect();
    w.targets(&rows);
    figures(&mut w, runs)?;
    let results = json!({
        "scenario": sc.name,
        "seed": sc.seed,
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
    });
    finish(&w, &results, events, messages)
}

fn outcome_table(w: &mut ReportWriter, runs: &[Run]) {
    let mut rows = Vec::new();
    for r in runs {
        let j = &r.judged;
        for (k, kind) in Kind::ALL.iter().enumerate() {
            let (ok, failed, timed_out) = j.by_kind[k];
            rows.push(vec![
                format!("{} s", r.median_s),
                kind.name().to_string(),
                (ok + failed + timed_out).to_string(),
                ok.to_string(),
                failed.to_string(),
                timed_out.to_string(),
                ms_q(&j.latency_us[k], 0.5),
                ms_q(&j.latency_us[k], 0.99),
            ]);
        }
    }
    w.paragraph("Outcomes of the operations judged, by kind (latency of the successful ones):");
    w.table(
        &[
            "sessions",
            "operation",
            "judged",
            "succeeded",
            "failed",
            "timed out",
            "p50",
            "p99",
        ],
        &rows,
    );
}

fn read_table(w: &mut ReportWriter, runs: &[Run]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let j = &r.judged;
            vec![
                format!("{} s", r.median_s),
                j.reads.to_string(),
                format!(
                    "{} ({})",
                    j.fresh,
                    pct(j.fresh as f64 / j.reads.max(1) as f64, 3)
                ),
                j.stale_us.len().to_string(),
                secs_q(&j.stale_us, 0.5),
                secs_q(&j.stale_us, 0.99),
                secs_q(&j.stale_us, 1.0),
                format!("{} won, {} conflicts", j.cas_won, j.cas_conflicts),
            ]
        })
        .collect();
    w.paragraph("Reads, and how stale the stale ones were; conditional puts:");
    w.table(
        &[
            "sessions",
            "reads",
            "fresh",
            "stale",
            "staleness p50",
            "p99",
            "max",
            "conditional puts",
        ],
        &rows,
    );
}

fn after_table(w: &mut ReportWriter, p: &Params, runs: &[Run]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let j = &r.judged;
            let t = &r.totals;
            let node_s = r.alive_mean.max(1.0) * p.duration_s as f64;
            vec![
                format!("{} s", r.median_s),
                format!("{} / {}", r.crashes, r.arrivals),
                r.issued.to_string(),
                j.final_keys.to_string(),
                format!("{} ({} excused)", j.lost, j.lost_excused),
                j.unreadable.to_string(),
                format!("{} of {}", r.replicated.0, r.replicated.1),
                format!("{:.3}", t.entries_repaired as f64 / node_s),
                format!("{:.3}", t.entries_handed_off as f64 / node_s),
                format!("{:.3}", t.syncs_sent as f64 / node_s),
                t.quorum_failures.to_string(),
            ]
        })
        .collect();
    w.paragraph(&format!(
        "After the churn (every key read once more), and the repair work over the whole run (copies \
         by read repair and anti-entropy, entries handed off to a closer node, digests sent; per node \
         and second of churn; repair window for excused losses: {} s):",
        p.repair_window_s
    ));
    w.table(
        &[
            "sessions",
            "crashes / arrivals",
            "operations",
            "keys read back",
            "lost",
            "unreadable",
            "fully replicated",
            "repaired /node/s",
            "handed off /node/s",
            "digests /node/s",
            "quorum failures",
        ],
        &rows,
    );
}

fn figures(w: &mut ReportWriter, runs: &[Run]) -> anyhow::Result<()> {
    let mut c = Frame::new(
        "Repair traffic during the churn",
        "seconds of churn",
        "per second, whole network",
    )
    .lines();
    for r in runs {
        let pts = |f: &dyn Fn(&(u64, u64)) -> u64| -> Vec<(f64, f64)> {
            r.repair_per_s
                .iter()
                .enumerate()
                .map(|(i, x)| ((i + 1) as f64, f(x) as f64))
                .collect()
        };
        c = c.series(
            format!("entries copied, {} s sessions", r.median_s),
            pts(&|x| x.0),
        );
        c = c.series(
            format!("digests sent, {} s sessions", r.median_s),
            pts(&|x| x.1),
        );
    }
    w.line_chart("repair_traffic.png", &c)?;
    let stale: Vec<(String, Vec<f64>)> = runs
        .iter()
        .map(|r| {
            (
                format!("median session {} s", r.median_s),
                r.judged.stale_us.iter().map(|&v| v as f64 / 1e6).collect(),
            )
        })
        .collect();
    w.cdf_chart(
        "read_staleness_cdf.png",
        &CdfChart::new(
            "Staleness of stale reads",
            "seconds between the first missed write's acknowledgement and the read",
            stale,
        ),
    )?;
    Ok(())
}

fn run_json(r: &Run) -> serde_json::Value {
    let j: &Judged = &r.judged;
    let kinds: serde_json::Map<String, serde_json::Value> = Kind::ALL
        .iter()
        .enumerate()
        .map(|(k, kind)| {
            let (ok, failed, timed_out) = j.by_kind[k];
            (
                kind.name().to_string(),
                json!({
                    "succeeded": ok, "failed": failed, "timed_out": timed_out,
                    "latency": ms_quantiles(&j.latency_us[k]),
                }),
            )
        })
        .collect();
    json!({
        "median_session_s": r.median_s,
        "crashes": r.crashes,
        "arrivals": r.arrivals,
        "alive_mean": r.alive_mean,
        "operations_issued": r.issued,
        "judged": j.judged,
        "missing": j.missing,
        "duplicates": j.duplicates,
        "strays": r.strays,
        "by_kind": kinds,
        "reads": j.reads,
        "fresh": j.fresh,
        "stale": j.stale_us.len(),
        "staleness": ms_quantiles(&j.stale_us),
        "expired_returned": j.expired,
        "fabricated": j.fabricated,
        "cas_won": j.cas_won,
        "cas_conflicts": j.cas_conflicts,
        "cas_double": j.cas_double,
        "final_keys": j.final_keys,
        "lost": j.lost,
        "lost_excused": j.lost_excused,
        "unreadable": j.unreadable,
        "fully_replicated": r.replicated.0,
        "replicated_keys": r.replicated.1,
        "entries_repaired": r.totals.entries_repaired,
        "entries_handed_off": r.totals.entries_handed_off,
        "entries_expired": r.totals.entries_expired,
        "digests_sent": r.totals.syncs_sent,
        "quorum_failures": r.totals.quorum_failures,
        "repair_per_s": r.repair_per_s,
    })
}
