//! The reports index (`index.json` and `README.md` in the output folder), written by one
//! process only: the one the user started.

use std::path::Path;

use petal_sim::report::{IndexEntry, write_index};
use serde::{Deserialize, Serialize};

/// One scenario's line in `index.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Indexed {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) summary: String,
}

/// The index in `out`, or an empty one when there is none (or it does not parse).
pub(crate) fn read_index(out: &Path) -> Vec<Indexed> {
    std::fs::read_to_string(out.join("index.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// The index with `fresh` entries replacing those of the same name, sorted by name: the
/// same whatever order the fresh entries came in.
pub(crate) fn merge(mut index: Vec<Indexed>, fresh: &[Indexed]) -> Vec<Indexed> {
    index.retain(|e| fresh.iter().all(|f| f.name != e.name));
    index.extend(fresh.iter().cloned());
    index.sort_by(|a, b| a.name.cmp(&b.name));
    index
}

/// Merges `fresh` into the index of `out` and writes `index.json` and `README.md`.
pub(crate) fn update(out: &Path, fresh: &[Indexed]) -> anyhow::Result<()> {
    let index = merge(read_index(out), fresh);
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("index.json"),
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
    write_index(out, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, summary: &str) -> Indexed {
        Indexed {
            name: name.into(),
            description: format!("about {name}"),
            summary: summary.into(),
        }
    }

    #[test]
    fn fresh_entries_replace_old_ones_in_any_order() {
        let old = vec![entry("rpc-load", "old"), entry("churn", "old")];
        let fresh = [entry("partition", "new"), entry("churn", "new")];
        let mut reversed = fresh.clone();
        reversed.reverse();
        let merged = merge(old.clone(), &fresh);
        assert_eq!(merged, merge(old, &reversed));
        assert_eq!(
            merged,
            vec![
                entry("churn", "new"),
                entry("partition", "new"),
                entry("rpc-load", "old")
            ]
        );
    }

    #[test]
    fn the_written_index_reads_back() {
        let dir = std::env::temp_dir().join(format!("petal-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        update(&dir, &[entry("b", "x")]).unwrap();
        update(&dir, &[entry("a", "y"), entry("b", "z")]).unwrap();
        assert_eq!(read_index(&dir), vec![entry("a", "y"), entry("b", "z")]);
        assert!(
            std::fs::read_to_string(dir.join("README.md"))
                .unwrap()
                .contains("about a")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
