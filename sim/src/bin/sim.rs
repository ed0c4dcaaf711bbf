//! `sim`: runs scenario files and writes their reports.
//!
//! ```text
//! cargo run --release --bin sim scenarios                  # every scenario in scenarios/
//! cargo run --release --bin sim scenarios/churn.toml       # one file
//! cargo run --release --bin sim scenarios --filter churn   # names containing "churn"
//! cargo run --release --bin sim scenarios --seed 7         # another master seed
//! cargo run --release --bin sim scenarios --check            # exit 1 if a target is missed
//! ```
//!
//! Exit status: 0 when every scenario ran (targets missed or not: their reports say so), 1 on
//! an error, and with `--check` also 1 when any scenario missed a target (every report is
//! written first).
//!
//! Each scenario of a directory runs in a process of its own (this binary, re-executed with
//! the one file): the real stack under turmoil keeps state in its libraries that lives as long
//! as the process (a second run of `turmoil-faults` in one process gave another trace than the
//! first), so a scenario's report must not depend on which scenarios ran before it. A single
//! file runs in this process.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::too_many_lines)
)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use petal_sim::report::{IndexEntry, write_index};
use petal_sim::scenario::{Progress, Scenario};
use serde::{Deserialize, Serialize};

/// Runs Petal simulation scenarios and writes reports.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A scenario file, or a directory of them (every *.toml inside).
    target: PathBuf,
    /// Run only scenarios whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Override every scenario's master seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Where reports go.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Exit with status 1 when any scenario misses a target (after writing every report).
    #[arg(long)]
    check: bool,
    /// Internal: run as one scenario's own process (exit status 3: a target missed).
    #[arg(long, hide = true)]
    child: bool,
}

/// A child's exit status when its scenario missed a target.
const CHILD_MISSED: i32 = 3;

#[derive(Serialize, Deserialize, Clone)]
struct Indexed {
    name: String,
    description: String,
    summary: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let files = scenario_files(&args.target)?;
    let mut scenarios = Vec::new();
    let mut paths = Vec::new();
    for f in &files {
        let mut s = Scenario::load(f)?;
        if let Some(seed) = args.seed {
            s.seed = seed;
        }
        if args
            .filter
            .as_ref()
            .is_none_or(|flt| s.name.contains(flt.as_str()))
        {
            scenarios.push(s);
            paths.push(f.clone());
        }
    }
    if scenarios.is_empty() {
        bail!("no scenario matches in {}", args.target.display());
    }
    if scenarios.len() > 1 {
        return run_each_in_own_process(&args, &scenarios, &paths);
    }
    std::fs::create_dir_all(&args.out)?;
    let mut index = read_index(&args.out);
    let mut failed = Vec::new();
    let mut error = None;
    for s in &scenarios {
        let dir = args.out.join(&s.name);
        let progress = Progress::new(&s.name, 1, !args.quiet);
        let started = Instant::now();
        eprintln!("== {} (seed {})", s.name, s.seed);
        let outcome = match s
            .run(&dir, &progress)
            .with_context(|| format!("scenario {} (seed {})", s.name, s.seed))
        {
            Ok(o) => o,
            Err(e) => {
                // The scenarios that ran still get their index lines; then the error.
                error = Some(e);
                break;
            }
        };
        let wall = started.elapsed().as_secs_f64();
        let mut perf = serde_json::json!({
            "note": "wall-clock figures of the run that wrote this report; machine-dependent, unlike report.md and results.json",
            "wall_s": wall,
            "events": outcome.events,
            "events_per_s": outcome.events as f64 / wall.max(1e-9),
            "messages": outcome.messages,
            "messages_per_s": outcome.messages as f64 / wall.max(1e-9),
            "threads": 1,
        });
        if let Some(m) = perf.as_object_mut() {
            m.extend(outcome.perf.clone());
            if let Some(rss) = peak_rss_bytes() {
                m.insert("peak_rss_bytes".into(), rss.into());
                let nodes = m.get("nodes").and_then(serde_json::Value::as_u64);
                if let Some(n) = nodes.filter(|&n| n > 0) {
                    m.insert("bytes_per_node".into(), (rss / n).into());
                }
            }
        }
        std::fs::write(
            dir.join("perf.json"),
            serde_json::to_string_pretty(&perf)? + "\n",
        )?;
        let summary = outcome.targets.summary();
        eprintln!(
            "   {}: {summary}; {:.1} s wall, {} events ({:.2} M/s), {} messages ({:.2} M/s); results {}",
            s.name,
            wall,
            outcome.events,
            outcome.events as f64 / wall.max(1e-9) / 1e6,
            outcome.messages,
            outcome.messages as f64 / wall.max(1e-9) / 1e6,
            &outcome.results_hash[..16]
        );
        if !outcome.targets.all_met() {
            failed.push(s.name.clone());
        }
        index.retain(|e| e.name != s.name);
        index.push(Indexed {
            name: s.name.clone(),
            description: s.description.clone(),
            summary,
        });
    }
    index.sort_by(|a, b| a.name.cmp(&b.name));
    std::fs::write(
        args.out.join("index.json"),
        serde_json::to_string_pretty(&index)? + "\n",
    )?;
    let entries: Vec<IndexEntry> = index
        .iter()
        .map(|e| IndexEntry {
            name: e.name.clone(),
            description: e.description.clone(),
            summary_line: e.summary.clone(),
        })
        .collect();
    write_index(&args.out, &entries)?;
    if let Some(e) = error {
        return Err(e);
    }
    if !failed.is_empty() {
        if args.child {
            std::process::exit(CHILD_MISSED);
        }
        eprintln!("targets missed in: {}", failed.join(", "));
        if args.check {
            std::process::exit(1);
        }
    }
    Ok(())
}

/// Runs each scenario in a process of its own, one after another (each child writes its
/// report, its perf.json and its index line); stops at the first that fails to run.
fn run_each_in_own_process(
    args: &Args,
    scenarios: &[Scenario],
    paths: &[PathBuf],
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut failed = Vec::new();
    for (s, path) in scenarios.iter().zip(paths) {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg(path).arg("--out").arg(&args.out).arg("--child");
        if let Some(seed) = args.seed {
            cmd.arg("--seed").arg(seed.to_string());
        }
        if args.quiet {
            cmd.arg("--quiet");
        }
        let status = cmd
            .status()
            .with_context(|| format!("starting the process of scenario {}", s.name))?;
        match status.code() {
            Some(0) => {}
            Some(CHILD_MISSED) => failed.push(s.name.clone()),
            _ => bail!("scenario {} (seed {}) failed: {status}", s.name, s.seed),
        }
    }
    if !failed.is_empty() {
        eprintln!("targets missed in: {}", failed.join(", "));
        if args.check {
            std::process::exit(1);
        }
    }
    Ok(())
}

fn scenario_files(target: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if target.is_file() {
        return Ok(vec![target.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(target)
        .with_context(|| format!("reading {}", target.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn read_index(out: &Path) -> Vec<Indexed> {
    std::fs::read_to_string(out.join("index.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
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
