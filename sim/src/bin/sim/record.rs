//! One scenario run in this process: its report, its `perf.json`, and the record of it that
//! goes into the index and the summary table (handed to the parent process in a suite).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use petal_sim::report::TargetCounts;
use petal_sim::scenario::{Progress, Scenario, Threads};
use serde::{Deserialize, Serialize};

use crate::index::Indexed;

/// What one scenario run reports to the index and to the summary table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct Record {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) targets: TargetCounts,
    /// The names of the targets missed.
    #[serde(default)]
    pub(crate) missed: Vec<String>,
    pub(crate) wall_s: f64,
    /// User and system CPU time of the run (all its threads); `None` where the system does
    /// not say.
    pub(crate) cpu_s: Option<f64>,
    pub(crate) messages: u64,
    /// The most independent runs that ran at once (1 for a scenario of one simulation).
    pub(crate) threads: usize,
    pub(crate) peak_rss_bytes: Option<u64>,
    pub(crate) bytes_per_node: Option<u64>,
}

impl Record {
    /// The scenario's line in the index.
    pub(crate) fn indexed(&self) -> Indexed {
        Indexed {
            name: self.name.clone(),
            description: self.description.clone(),
            summary: self.targets.summary(),
        }
    }

    /// Simulated messages per CPU second.
    pub(crate) fn messages_per_cpu_s(&self) -> Option<f64> {
        self.cpu_s
            .filter(|&c| c > 0.0)
            .map(|c| self.messages as f64 / c)
    }
}

/// Runs `s` in this process with its report in `out/<name>/`, writes its `perf.json` and
/// returns its record.
pub(crate) fn run_here(
    s: &Scenario,
    out: &Path,
    progress: &Progress,
    threads: &Threads,
) -> anyhow::Result<Record> {
    let dir = out.join(&s.name);
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    eprintln!("== {} (seed {})", s.name, s.seed);
    let outcome = s
        .run_on(&dir, progress, threads)
        .with_context(|| format!("scenario {} (seed {})", s.name, s.seed))?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let peak_rss_bytes = peak_rss_bytes();
    let nodes = outcome
        .perf
        .get("nodes")
        .and_then(serde_json::Value::as_u64)
        .filter(|&n| n > 0);
    let record = Record {
        name: s.name.clone(),
        description: s.description.clone(),
        targets: outcome.targets,
        missed: outcome.missed.clone(),
        wall_s: wall,
        cpu_s,
        messages: outcome.messages,
        threads: threads.peak().max(1),
        peak_rss_bytes,
        bytes_per_node: peak_rss_bytes.zip(nodes).map(|(rss, n)| rss / n),
    };
    let mut perf = serde_json::json!({
        "note": "wall-clock figures of the run that wrote this report; machine-dependent, unlike report.md and results.json",
        "wall_s": wall,
        "events": outcome.events,
        "events_per_s": outcome.events as f64 / wall.max(1e-9),
        "messages": outcome.messages,
        "messages_per_s": outcome.messages as f64 / wall.max(1e-9),
        "threads": record.threads,
    });
    if let Some(m) = perf.as_object_mut() {
        m.extend(outcome.perf.clone());
        if let Some(cpu) = record.cpu_s {
            m.insert("cpu_s".into(), cpu.into());
        }
        if let Some(rate) = record.messages_per_cpu_s() {
            m.insert("messages_per_cpu_s".into(), rate.into());
        }
        if let Some(rss) = record.peak_rss_bytes {
            m.insert("peak_rss_bytes".into(), rss.into());
        }
        if let Some(b) = record.bytes_per_node {
            m.insert("bytes_per_node".into(), b.into());
        }
    }
    std::fs::write(
        dir.join("perf.json"),
        serde_json::to_string_pretty(&perf)? + "\n",
    )?;
    eprintln!(
        "   {}: {}; {:.1} s wall, {} events ({:.2} M/s), {} messages ({:.2} M/s); results {}",
        s.name,
        outcome.targets.summary(),
        wall,
        outcome.events,
        outcome.events as f64 / wall.max(1e-9) / 1e6,
        outcome.messages,
        outcome.messages as f64 / wall.max(1e-9) / 1e6,
        outcome.results_hash.get(..16).unwrap_or_default()
    );
    Ok(record)
}

/// The expected cost of a scenario, in seconds of one core, from a `perf.json` of an earlier
/// run: its `cpu_s` (what the work took, however many threads shared it), else its `wall_s`.
pub(crate) fn expected_cost_s(perf_json: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(perf_json).ok()?;
    let perf: serde_json::Value = serde_json::from_str(&text).ok()?;
    perf.get("cpu_s")
        .or_else(|| perf.get("wall_s"))
        .and_then(serde_json::Value::as_f64)
}

/// Clock ticks per second of the times in `/proc/<pid>/stat` (Linux's `USER_HZ`, which is
/// 100 on every architecture this runs on; `sysconf(_SC_CLK_TCK)` would need unsafe code).
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of this process so far, every thread included (Linux:
/// `utime` and `stime` of `/proc/self/stat`); `None` where the system does not say.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_seconds_of_stat(&stat)
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds.
fn cpu_seconds_of_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces; the fields after it
    // start with the state (field 3), so utime (field 14) and stime (15) are the 12th and 13th.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// This process's peak resident set size (Linux: `VmHWM` in /proc/self/status); `None` where
/// the system does not say. Each scenario of a directory runs in its own process, so this is
/// the scenario's own peak.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (sim (x) y) R 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 3 0 100";
        assert_eq!(cpu_seconds_of_stat(stat), Some(3.25));
        assert_eq!(cpu_seconds_of_stat("4242 (sim) R 1 2"), None);
    }

    #[test]
    fn this_process_says_its_cpu_time_on_linux() {
        if Path::new("/proc/self/stat").exists() {
            assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
        }
    }
}
