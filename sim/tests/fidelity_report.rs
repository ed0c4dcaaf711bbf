//! The committed `sim-vs-real` report is what the code produces: the scenario (a
//! discrete-event run and a turmoil run of the real stack) runs again and its `results.json`
//! and `report.md` must equal the committed ones byte for byte, with the same verdict in the
//! reports index. A test binary of its own, so that its turmoil run is the first of its
//! process, as in `sim`'s own run (turmoil runs leave library state behind them; see the
//! `sim` binary's docs).

use std::path::{Path, PathBuf};

use petal_sim::scenario::{Progress, Scenario};

const NAME: &str = "sim-vs-real";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

#[test]
fn the_committed_fidelity_report_matches_a_fresh_run() {
    let out = std::env::temp_dir().join(format!("petal-fidelity-{}", std::process::id()));
    let sc = Scenario::load(&root().join(format!("scenarios/{NAME}.toml"))).expect("scenario");
    let outcome = sc.run(&out, &Progress::hidden()).expect("run");
    let mut stale = Vec::new();
    for f in ["results.json", "report.md"] {
        let fresh = std::fs::read(out.join(f)).expect("fresh file");
        let committed = std::fs::read(root().join("reports").join(NAME).join(f))
            .unwrap_or_else(|e| panic!("reports/{NAME}/{f}: {e}"));
        if fresh != committed {
            stale.push(format!("reports/{NAME}/{f}"));
        }
    }
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("reports/index.json")).expect("reports index"),
    )
    .expect("index json");
    let committed_summary = index
        .as_array()
        .expect("an array")
        .iter()
        .find(|e| e["name"] == NAME)
        .and_then(|e| e["summary"].as_str())
        .map(str::to_string);
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(
        committed_summary,
        Some(outcome.targets.summary()),
        "reports/index.json's verdict for {NAME}"
    );
    assert!(
        stale.is_empty(),
        "committed reports differ from a fresh run (regenerate them with \
         `cargo run --release --bin sim scenarios/{NAME}.toml`): {stale:?}"
    );
}
