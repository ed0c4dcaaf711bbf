//! A suite: each scenario in a process of its own (this binary, re-executed with `--child`
//! and one file), several at once, longest first; this process draws their progress, gathers
//! their records and alone writes the index.
//!
//! A child talks to this process through its stdout ([`ChildLine`]s: progress, how many
//! independent runs it has, its record at the end; any other line is a log line) and its
//! stderr (log lines); this process talks to it through its stdin (`threads N`: the child may
//! now run N of its independent runs at once).
//!
//! Threads: `--jobs N` is the number of cores to use. At most N children run at once, each
//! starting with a budget of one thread. Once no scenario waits to start, the cores of the
//! children that finished are handed, one at a time, to the running children that have
//! independent runs left to share (fewest threads first, then the longest expected), so that
//! the busy threads never outnumber N and the last long scenario gets the whole machine.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Sender};

use anyhow::Context;
use indicatif::ProgressBar;
use petal_sim::scenario::{ChildLine, Scenario};

use crate::record::{Record, expected_cost_s};
use crate::view::View;

/// One scenario of the suite.
pub(crate) struct Job {
    pub(crate) scenario: Scenario,
    pub(crate) path: PathBuf,
}

/// How the suite runs.
pub(crate) struct Options {
    /// Cores to use: children at once, and busy threads in all.
    pub(crate) jobs: usize,
    /// The most threads one child may be given.
    pub(crate) threads_max: usize,
    pub(crate) seed: Option<u64>,
    pub(crate) out: PathBuf,
}

/// What the suite did.
pub(crate) struct Ran {
    /// The records of the scenarios that ran to their end.
    pub(crate) records: Vec<Record>,
    /// Why scenarios failed (or never started after a failure).
    pub(crate) failures: Vec<String>,
}

enum Event {
    Child {
        job: usize,
        line: ChildLine,
    },
    Log {
        line: String,
    },
    Exited {
        job: usize,
        status: std::io::Result<ExitStatus>,
    },
}

struct Running {
    stdin: Option<ChildStdin>,
    cost_s: f64,
    budget: usize,
    width: usize,
    bar: Option<ProgressBar>,
    record: Option<Record>,
}

/// Runs every job, each in its own child process, at most `opts.jobs` at once. After a
/// scenario fails, no other starts; the running ones finish.
pub(crate) fn run(opts: &Options, jobs: &[Job], view: &View) -> anyhow::Result<Ran> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let costs: Vec<Option<f64>> = jobs
        .iter()
        .map(|j| expected_cost(&opts.out, &j.scenario.name))
        .collect();
    let mut queue: VecDeque<usize> = schedule(&costs).into();
    let (tx, rx) = mpsc::channel();
    let mut running: BTreeMap<usize, Running> = BTreeMap::new();
    let mut ran = Ran {
        records: Vec::new(),
        failures: Vec::new(),
    };
    loop {
        while ran.failures.is_empty() && running.len() < opts.jobs {
            let Some(j) = queue.pop_front() else { break };
            match start(&exe, opts, &jobs[j], view.has_bars(), j, &tx) {
                Ok(stdin) => {
                    let bar = view.bar(&jobs[j].scenario.name);
                    let cost_s = costs[j].unwrap_or(0.0);
                    running.insert(j, Running::new(stdin, cost_s, bar));
                }
                Err(e) => ran.failures.push(format!("{e:#}")),
            }
        }
        if queue.is_empty() || !ran.failures.is_empty() {
            share_spare_cores(&mut running, opts);
        }
        if running.is_empty() {
            break;
        }
        let Ok(event) = rx.recv() else { break };
        match event {
            Event::Log { line } => view.log(&line),
            Event::Child { job, line } => {
                if let Some(r) = running.get_mut(&job) {
                    r.take(line, view);
                }
            }
            Event::Exited { job, status } => {
                let Some(r) = running.remove(&job) else {
                    continue;
                };
                if let Some(bar) = &r.bar {
                    view.remove(bar);
                }
                let s = &jobs[job].scenario;
                match (status, r.record) {
                    (Ok(st), Some(record)) if st.success() => ran.records.push(record),
                    (status, _) => {
                        let how = status.map_or_else(|e| e.to_string(), |st| st.to_string());
                        let why = format!("scenario {} (seed {}) failed: {how}", s.name, s.seed);
                        view.log(&why);
                        ran.failures.push(why);
                    }
                }
            }
        }
    }
    if !queue.is_empty() {
        let names: Vec<&str> = queue
            .iter()
            .map(|&j| jobs[j].scenario.name.as_str())
            .collect();
        ran.failures
            .push(format!("not run after the failure: {}", names.join(", ")));
    }
    Ok(ran)
}

impl Running {
    fn new(stdin: Option<ChildStdin>, cost_s: f64, bar: Option<ProgressBar>) -> Self {
        Self {
            stdin,
            cost_s,
            budget: 1,
            width: 1,
            bar,
            record: None,
        }
    }

    /// A child line of this child.
    fn take(&mut self, line: ChildLine, view: &View) {
        match line {
            ChildLine::Progress { pos, len, msg } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(len);
                    bar.set_position(pos);
                    bar.set_message(msg);
                }
            }
            ChildLine::Width { runs } => self.width = runs,
            ChildLine::Done { result } => match serde_json::from_value(result) {
                Ok(record) => self.record = Some(record),
                Err(e) => view.log(&format!("a child's record does not parse: {e}")),
            },
        }
    }
}

/// Starts a job's process; its output comes as events on `tx`. Returns its stdin.
fn start(
    exe: &Path,
    opts: &Options,
    job: &Job,
    bars: bool,
    index: usize,
    tx: &Sender<Event>,
) -> anyhow::Result<Option<ChildStdin>> {
    let s = &job.scenario;
    let mut cmd = Command::new(exe);
    cmd.arg(&job.path)
        .arg("--out")
        .arg(&opts.out)
        .arg("--child")
        .args(["--threads", "1", "--jobs", &opts.threads_max.to_string()]);
    if let Some(seed) = opts.seed {
        cmd.arg("--seed").arg(seed.to_string());
    }
    if !bars {
        cmd.arg("--quiet");
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the process of scenario {}", s.name))?;
    let stdin = child.stdin.take();
    let tx = tx.clone();
    std::thread::Builder::new()
        .name(format!("watch-{}", s.name))
        .spawn(move || watch(index, child, &tx))
        .with_context(|| format!("watching the process of scenario {}", s.name))?;
    Ok(stdin)
}

/// Passes a child's output on as events until it exits, then says how it exited (after its
/// last line).
fn watch(job: usize, mut child: Child, tx: &Sender<Event>) {
    let stderr = child.stderr.take().and_then(|e| {
        let tx = tx.clone();
        std::thread::Builder::new()
            .spawn(move || {
                for_each_line(e, |line| {
                    let _ = tx.send(Event::Log { line });
                });
            })
            .ok()
    });
    if let Some(out) = child.stdout.take() {
        for_each_line(out, |line| {
            let event = match ChildLine::parse(&line) {
                Some(line) => Event::Child { job, line },
                None => Event::Log { line },
            };
            let _ = tx.send(event);
        });
    }
    if let Some(t) = stderr {
        let _ = t.join();
    }
    let status = child.wait();
    let _ = tx.send(Event::Exited { job, status });
}

/// Calls `f` with every line of `r` (without its line ending; bytes that are not UTF-8
/// replaced) until its end or an error.
pub(crate) fn for_each_line(r: impl Read, mut f: impl FnMut(String)) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while buf.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                    buf.pop();
                }
                f(String::from_utf8_lossy(&buf).into_owned());
            }
        }
    }
}

/// Hands the cores no child holds to the running children that can use more threads.
fn share_spare_cores(running: &mut BTreeMap<usize, Running>, opts: &Options) {
    let held: usize = running.values().map(|r| r.budget).sum();
    let mut spare = opts.jobs.saturating_sub(held);
    let mut raised = Vec::new();
    while spare > 0 {
        let taker = running
            .iter_mut()
            .filter(|(_, r)| r.budget < r.width.min(opts.threads_max))
            .min_by(|a, b| {
                (a.1.budget.cmp(&b.1.budget))
                    .then(b.1.cost_s.total_cmp(&a.1.cost_s))
                    .then(a.0.cmp(b.0))
            });
        let Some((&j, r)) = taker else { break };
        r.budget += 1;
        spare -= 1;
        raised.push(j);
    }
    for j in raised {
        if let Some(r) = running.get_mut(&j)
            && let Some(stdin) = &mut r.stdin
        {
            // A child that has just ended cannot read it; nothing is lost.
            let _ = writeln!(stdin, "threads {}", r.budget).and_then(|()| stdin.flush());
        }
    }
}

/// What a scenario is expected to cost, from the `perf.json` of an earlier run: the one in
/// the output folder, else the one of the reference run in `reports/`.
fn expected_cost(out: &Path, name: &str) -> Option<f64> {
    [out, Path::new("reports")]
        .iter()
        .find_map(|root| expected_cost_s(&root.join(name).join("perf.json")))
}

/// The order in which to start scenarios of these expected costs: those of unknown cost first
/// (they may be long), in the given order, then the others longest first. The order decides
/// only when each scenario runs, never what it writes.
pub(crate) fn schedule(costs: &[Option<f64>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| match (costs[a], costs[b]) {
        (None, None) => a.cmp(&b),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.total_cmp(&x).then(a.cmp(&b)),
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_costs_start_first_then_the_longest() {
        let costs = [Some(8.5), None, Some(490.0), Some(65.6), None, Some(8.5)];
        assert_eq!(schedule(&costs), vec![1, 4, 2, 3, 0, 5]);
        assert!(schedule(&[]).is_empty());
    }

    fn running(budget: usize, width: usize, cost_s: f64) -> Running {
        let mut r = Running::new(None, cost_s, None);
        r.budget = budget;
        r.width = width;
        r
    }

    #[test]
    fn spare_cores_go_to_children_that_can_use_them() {
        let opts = Options {
            jobs: 6,
            threads_max: 6,
            seed: None,
            out: PathBuf::new(),
        };
        let mut r: BTreeMap<usize, Running> = BTreeMap::new();
        r.insert(0, running(1, 1, 900.0)); // one simulation: no use for more
        r.insert(1, running(1, 100, 400.0));
        r.insert(2, running(1, 2, 50.0));
        share_spare_cores(&mut r, &opts);
        let budgets: Vec<usize> = r.values().map(|r| r.budget).collect();
        // 3 spare cores: one each to 1 and 2 (fewest first, longest first), then 2 is full.
        assert_eq!(budgets, vec![1, 3, 2]);
        // Nothing spare: nothing changes.
        share_spare_cores(&mut r, &opts);
        assert_eq!(r.values().map(|r| r.budget).sum::<usize>(), 6);
        // The maximum per child holds.
        let opts = Options {
            threads_max: 2,
            jobs: 8,
            ..opts
        };
        share_spare_cores(&mut r, &opts);
        assert_eq!(r[&1].budget, 3, "already over: never lowered, never raised");
    }

    #[test]
    fn lines_are_split_without_their_endings() {
        let mut lines = Vec::new();
        for_each_line(&b"one\r\ntwo\n\xffthree"[..], |l| lines.push(l));
        assert_eq!(lines, vec!["one", "two", "\u{fffd}three"]);
    }
}
