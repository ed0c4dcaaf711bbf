//! A scenario's report: Markdown built block by block, written with the results as JSON.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::bar::{BarChart, bar_chart};
use super::plot::{CdfChart, LineChart, cdf_chart, line_chart};

/// Whether a measurement met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The measurement meets the target.
    Met,
    /// The measurement misses the target.
    Missed,
    /// A figure reported for information, with no pass/fail target.
    Info,
}

impl Verdict {
    /// [`Verdict::Met`] if `met`, else [`Verdict::Missed`].
    pub fn from_met(met: bool) -> Self {
        if met { Self::Met } else { Self::Missed }
    }

    /// How the verdict reads in a report table.
    pub fn label(self) -> &'static str {
        match self {
            Self::Met => "✅ met",
            Self::Missed => "❌ missed",
            Self::Info => "ℹ️ info",
        }
    }
}

/// One row of a targets table: what was aimed for, what was measured, and the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRow {
    /// What is measured, e.g. "mean hops at 10^4 nodes".
    pub name: String,
    /// The target, e.g. "≤ log16(N) = 3.3".
    pub target: String,
    /// The measured value, e.g. "2.9".
    pub measured: String,
    /// Whether `measured` meets `target`.
    pub verdict: Verdict,
}

impl TargetRow {
    /// A row from its four parts.
    pub fn new(
        name: impl Into<String>,
        target: impl Into<String>,
        measured: impl Into<String>,
        verdict: Verdict,
    ) -> Self {
        Self {
            name: name.into(),
            target: target.into(),
            measured: measured.into(),
            verdict,
        }
    }
}

/// How many target rows a report holds, by verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCounts {
    /// Rows with [`Verdict::Met`].
    pub met: usize,
    /// Rows with [`Verdict::Missed`].
    pub missed: usize,
    /// Rows with [`Verdict::Info`].
    pub info: usize,
}

impl TargetCounts {
    /// True when no target was missed.
    pub fn all_met(&self) -> bool {
        self.missed == 0
    }

    /// A one-line summary for an index, e.g. "✅ 3/3 targets met" or "❌ 2/3 targets met".
    pub fn summary(&self) -> String {
        let judged = self.met + self.missed;
        if judged == 0 {
            return "no targets".to_string();
        }
        let mark = if self.all_met() { "✅" } else { "❌" };
        format!("{mark} {}/{judged} targets met", self.met)
    }
}

/// Builds one scenario's report and writes it into the scenario's report directory.
///
/// The report reads top to bottom in the order blocks are added, below a title (the scenario
/// name) and the description. Charts rendered through the writer land in the same directory and
/// are linked by file name, so the directory can be moved or committed as it is. Nothing that
/// varies between runs (time, host, absolute paths) is ever written.
#[derive(Debug, Clone)]
pub struct ReportWriter {
    dir: PathBuf,
    name: String,
    description: String,
    blocks: Vec<String>,
    targets: Vec<TargetRow>,
}

impl ReportWriter {
    /// A report for scenario `scenario_name`, to be written into `dir` (created when needed).
    pub fn new(dir: &Path, scenario_name: &str, description: &str) -> Self {
        Self {
            dir: dir.to_path_buf(),
            name: scenario_name.to_string(),
            description: description.to_string(),
            blocks: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// The directory the report is written into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a section heading (level 2; the scenario name is the only level-1 heading).
    pub fn heading(&mut self, text: &str) -> &mut Self {
        self.push(format!("## {}", one_line(text)))
    }

    /// Adds a subsection heading (level 3).
    pub fn subheading(&mut self, text: &str) -> &mut Self {
        self.push(format!("### {}", one_line(text)))
    }

    /// Adds a paragraph of Markdown text, as given.
    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        self.push(text.trim().to_string())
    }

    /// Adds a table; see [`markdown_table`] for how cells are written.
    pub fn table<H: AsRef<str>>(&mut self, headers: &[H], rows: &[Vec<String>]) -> &mut Self {
        self.push(markdown_table(headers, rows))
    }

    /// Adds an image; `file_name` is relative to the report directory, e.g. `hops.png`.
    pub fn image(&mut self, file_name: &str, alt: &str) -> &mut Self {
        let alt = one_line(alt).replace('[', "\\[").replace(']', "\\]");
        self.push(format!("![{alt}]({})", link_target(file_name)))
    }

    /// Adds a table of targets and verdicts, and counts them for [`ReportWriter::target_counts`].
    pub fn targets(&mut self, rows: &[TargetRow]) -> &mut Self {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.target.clone(),
                    r.measured.clone(),
                    r.verdict.label().into(),
                ]
            })
            .collect();
        self.targets.extend_from_slice(rows);
        self.table(&["Metric", "Target", "Measured", "Verdict"], &cells)
    }

    /// Every target row added so far, e.g. to include in the results JSON.
    pub fn target_rows(&self) -> &[TargetRow] {
        &self.targets
    }

    /// The verdicts of every target row added so far.
    pub fn target_counts(&self) -> TargetCounts {
        let mut counts = TargetCounts::default();
        for row in &self.targets {
            match row.verdict {
                Verdict::Met => counts.met += 1,
                Verdict::Missed => counts.missed += 1,
                Verdict::Info => counts.info += 1,
            }
        }
        counts
    }

    /// Renders `chart` to `file_name` in the report directory and adds it, titled, as an image.
    pub fn line_chart(&mut self, file_name: &str, chart: &LineChart) -> anyhow::Result<&mut Self> {
        line_chart(&self.chart_path(file_name)?, chart)?;
        Ok(self.image(file_name, &chart.frame.title))
    }

    /// Renders `chart` to `file_name` in the report directory and adds it, titled, as an image.
    pub fn bar_chart(&mut self, file_name: &str, chart: &BarChart) -> anyhow::Result<&mut Self> {
        bar_chart(&self.chart_path(file_name)?, chart)?;
        Ok(self.image(file_name, &chart.frame.title))
    }

    /// Renders `chart` to `file_name` in the report directory and adds it, titled, as an image.
    pub fn cdf_chart(&mut self, file_name: &str, chart: &CdfChart) -> anyhow::Result<&mut Self> {
        cdf_chart(&self.chart_path(file_name)?, chart)?;
        Ok(self.image(file_name, &chart.frame.title))
    }

    /// The report as Markdown, ending in exactly one newline.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("# {}\n", one_line(&self.name));
        let description = self.description.trim();
        for block in std::iter::once(description).chain(self.blocks.iter().map(String::as_str)) {
            let block = block.trim_end();
            if !block.is_empty() {
                out.push('\n');
                out.push_str(block);
                out.push('\n');
            }
        }
        out
    }

    /// Writes `report.md` and `results.json` (`results` as pretty JSON) into the report directory.
    pub fn finish(&self, results: &serde_json::Value) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(self.dir.join("report.md"), self.to_markdown())?;
        let mut json = serde_json::to_string_pretty(results)?;
        json.push('\n');
        std::fs::write(self.dir.join("results.json"), json)?;
        Ok(())
    }

    fn push(&mut self, block: String) -> &mut Self {
        self.blocks.push(block);
        self
    }

    /// Where a chart named `file_name` goes; the name must stay inside the report directory.
    fn chart_path(&self, file_name: &str) -> anyhow::Result<PathBuf> {
        let relative = Path::new(file_name);
        anyhow::ensure!(
            !file_name.is_empty()
                && relative
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))),
            "chart file name {file_name:?} must be a relative path inside the report directory"
        );
        Ok(self.dir.join(relative))
    }
}

/// A Markdown table with `headers` and `rows`, ending in a newline (empty without headers).
///
/// Cells are trimmed, `|` is escaped and line breaks become `<br>`, so any text fits in a cell.
/// Short rows are padded with empty cells; rows longer than the header widen the table. Columns
/// are padded to a common width so the source reads as a table too.
pub fn markdown_table<H: AsRef<str>>(headers: &[H], rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).fold(headers.len(), usize::max);
    if headers.is_empty() || columns == 0 {
        return String::new();
    }
    let cells = |source: &mut dyn Iterator<Item = &str>| -> Vec<String> {
        let mut row: Vec<String> = source.map(table_cell).collect();
        row.resize(columns, String::new());
        row
    };
    let header = cells(&mut headers.iter().map(AsRef::as_ref));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cells(&mut r.iter().map(String::as_str)))
        .collect();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            std::iter::once(&header)
                .chain(&body)
                .map(|row| row[c].chars().count())
                .fold(3, usize::max)
        })
        .collect();
    let line = |row: &[String]| -> String {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    let mut out = line(&header);
    out.push_str(&line(&rule));
    for row in &body {
        out.push_str(&line(row));
    }
    out
}

/// Text made safe for one table cell.
fn table_cell(text: &str) -> String {
    let text = text.trim().replace("\r\n", "\n").replace('|', "\\|");
    text.split('\n')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("<br>")
}

/// Text folded onto one line (for headings and alt text).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A relative `/`-separated path as a Markdown link target: characters that would end or break
/// the link are percent-encoded.
pub(crate) fn link_target(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            ' ' => out.push_str("%20"),
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            '\\' => out.push_str("%5C"),
            _ => out.push(c),
        }
    }
    out
}
