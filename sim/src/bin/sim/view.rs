//! What the user sees on stderr: log lines, one progress bar per running scenario (on a
//! terminal only), and the summary table at the end.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
use petal_sim::scenario::Progress;

use crate::record::Record;

/// The parent's stderr: log lines above the bars of the running scenarios.
pub(crate) struct View {
    /// `None` when no bar is drawn (not a terminal, or `--quiet`).
    multi: Option<MultiProgress>,
}

impl View {
    /// Bars only when `bars` (stderr is a terminal and the run is not quiet).
    pub(crate) fn new(bars: bool) -> Self {
        Self {
            multi: bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// Whether bars are drawn.
    pub(crate) fn has_bars(&self) -> bool {
        self.multi.is_some()
    }

    /// A new bar for scenario `name` below the others (`None` without bars).
    pub(crate) fn bar(&self, name: &str) -> Option<ProgressBar> {
        self.multi.as_ref().map(|m| m.add(Progress::bar(name, 1)))
    }

    /// Takes a finished scenario's bar off the screen.
    pub(crate) fn remove(&self, bar: &ProgressBar) {
        bar.finish_and_clear();
        if let Some(m) = &self.multi {
            m.remove(bar);
        }
    }

    /// A whole line on stderr, above the bars.
    pub(crate) fn log(&self, line: &str) {
        match &self.multi {
            Some(m) => m.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

/// The summary table of a run: one row per scenario (by name), then the totals, with the
/// whole run's wall time when known; nothing when no scenario ran to its end.
pub(crate) fn summary_table(records: &[Record], total_wall_s: Option<f64>) -> String {
    if records.is_empty() {
        return String::new();
    }
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows: Vec<[String; 8]> = vec![[
        "scenario".into(),
        "targets".into(),
        "wall s".into(),
        "CPU s".into(),
        "messages".into(),
        "msg/CPU-s".into(),
        "peak RSS".into(),
        "bytes/node".into(),
    ]];
    for r in &sorted {
        rows.push([
            r.name.clone(),
            targets(r.targets.met, r.targets.missed),
            format!("{:.1}", r.wall_s),
            r.cpu_s.map_or("-".into(), |c| format!("{c:.1}")),
            r.messages.to_string(),
            rate(r.messages_per_cpu_s()),
            r.peak_rss_bytes.map_or("-".into(), mib),
            r.bytes_per_node.map_or("-".into(), |b| b.to_string()),
        ]);
    }
    if sorted.len() > 1 {
        let cpu: Option<f64> = sorted.iter().map(|r| r.cpu_s).sum();
        let messages: u64 = sorted.iter().map(|r| r.messages).sum();
        rows.push([
            format!("all {}", sorted.len()),
            targets(
                sorted.iter().map(|r| r.targets.met).sum(),
                sorted.iter().map(|r| r.targets.missed).sum(),
            ),
            total_wall_s.map_or("-".into(), |w| format!("{w:.1}")),
            cpu.map_or("-".into(), |c| format!("{c:.1}")),
            messages.to_string(),
            rate(cpu.filter(|&c| c > 0.0).map(|c| messages as f64 / c)),
            sorted
                .iter()
                .filter_map(|r| r.peak_rss_bytes)
                .max()
                .map_or("-".into(), |b| format!("max {}", mib(b))),
            String::new(),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            // Names and verdicts to the left, figures to the right.
            if i < 2 {
                line.push_str(&format!("{cell}{pad}  "));
            } else {
                line.push_str(&format!("{pad}{cell}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn targets(met: usize, missed: usize) -> String {
    match (met + missed, missed) {
        (0, _) => "none".into(),
        (judged, 0) => format!("{met}/{judged} met"),
        (judged, _) => format!("{met}/{judged} met, {missed} MISSED"),
    }
}

fn rate(per_s: Option<f64>) -> String {
    per_s.map_or("-".into(), |r| format!("{:.2} M", r / 1e6))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;
    use petal_sim::report::TargetCounts;

    fn record(name: &str, missed: usize, cpu_s: Option<f64>) -> Record {
        Record {
            name: name.into(),
            description: String::new(),
            targets: TargetCounts {
                met: 3,
                missed,
                info: 1,
            },
            missed: Vec::new(),
            wall_s: 2.0,
            cpu_s,
            messages: 4_000_000,
            threads: 1,
            peak_rss_bytes: Some(64 << 20),
            bytes_per_node: None,
        }
    }

    #[test]
    fn the_table_has_a_row_per_scenario_by_name_and_the_totals() {
        let t = summary_table(
            &[record("rpc-load", 0, Some(2.0)), record("churn", 1, None)],
            Some(3.5),
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("scenario"), "{t}");
        assert!(lines[1].starts_with("churn") && lines[1].contains("3/4 met, 1 MISSED"));
        assert!(lines[2].starts_with("rpc-load") && lines[2].contains("2.00 M"));
        assert!(lines[3].starts_with("all 2") && lines[3].contains("6/7 met, 1 MISSED"));
        assert!(
            lines[3].contains("3.5") && lines[3].contains("max 64.0 MiB"),
            "{t}"
        );
        let one = summary_table(&[record("x", 0, Some(1.0))], None);
        assert_eq!(one.lines().count(), 2, "no total row for one scenario");
        assert_eq!(summary_table(&[], Some(1.0)), "");
    }
}
