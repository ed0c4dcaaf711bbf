//! The index of all reports: `README.md` at the root of the reports directory.

use std::path::Path;

use super::markdown::{link_target, markdown_table};

/// One scenario's line in the reports index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexEntry {
    /// Scenario name, which is also the name of its report directory under the reports root.
    pub name: String,
    /// What the scenario exercises, in a sentence.
    pub description: String,
    /// The outcome in a few words, e.g. [`TargetCounts::summary`](super::TargetCounts::summary).
    pub summary_line: String,
}

/// The index as Markdown: a table linking each entry's `<name>/report.md`, in the given order.
pub fn index_markdown(entries: &[IndexEntry]) -> String {
    let mut out = String::from(
        "# Simulation reports\n\n\
         Written by `cargo run --release --bin sim scenarios`: one directory per scenario with its \
         `report.md`, `results.json` and figures. Each run is reproducible from its scenario file \
         and seed.\n\n",
    );
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let label = entry.name.replace('[', "\\[").replace(']', "\\]");
            let link = link_target(&format!("{}/report.md", entry.name));
            vec![
                format!("[{label}]({link})"),
                entry.description.clone(),
                entry.summary_line.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("No scenario has been run yet.\n");
    } else {
        out.push_str(&markdown_table(
            &["Scenario", "Description", "Outcome"],
            &rows,
        ));
    }
    out
}

/// Writes [`index_markdown`] to `reports_root/README.md`, creating `reports_root` if needed.
pub fn write_index(reports_root: &Path, entries: &[IndexEntry]) -> anyhow::Result<()> {
    std::fs::create_dir_all(reports_root)?;
    std::fs::write(reports_root.join("README.md"), index_markdown(entries))?;
    Ok(())
}
