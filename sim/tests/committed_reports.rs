//! The committed reports are what the code produces: the cheap scenarios are run again and
//! their `results.json` and `report.md` must equal the committed ones byte for byte, and their
//! line in the reports index must carry the same verdict summary. A stale report (code changed,
//! reports not regenerated) or a hand-edited one fails here.
//!
//! The expensive scenarios (pastry-hops, cold-start, churn, churn-messaging, pubsub-fanout) are
//! not re-run: regenerate them with `cargo run --release --bin sim scenarios` whenever the core
//! or the simulator changes, as for these.

use std::path::{Path, PathBuf};

use petal_sim::scenario::{Progress, Scenario};

/// Scenarios cheap enough for every test run (seconds each in the test profile).
const CHEAP: &[&str] = &[
    "turmoil-smoke",
    "rpc-load",
    "partition",
    "partition-messaging",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn committed_summary(name: &str) -> String {
    let text = std::fs::read_to_string(root().join("reports/index.json")).expect("reports index");
    let index: serde_json::Value = serde_json::from_str(&text).expect("index json");
    index
        .as_array()
        .expect("an array")
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["summary"].as_str())
        .unwrap_or_else(|| panic!("{name} is missing from reports/index.json"))
        .to_string()
}

#[test]
fn cheap_committed_reports_match_a_fresh_run() {
    let base = std::env::temp_dir().join(format!("petal-committed-{}", std::process::id()));
    let mut stale = Vec::new();
    for name in CHEAP {
        let sc = Scenario::load(&root().join(format!("scenarios/{name}.toml"))).expect("scenario");
        let out = base.join(name);
        let outcome = sc.run(&out, &Progress::hidden()).expect("run");
        for f in ["results.json", "report.md"] {
            let fresh = std::fs::read(out.join(f)).expect("fresh file");
            let committed = std::fs::read(root().join("reports").join(name).join(f))
                .unwrap_or_else(|e| panic!("reports/{name}/{f}: {e}"));
            if fresh != committed {
                stale.push(format!("reports/{name}/{f}"));
            }
        }
        let summary = outcome.targets.summary();
        assert_eq!(
            committed_summary(name),
            summary,
            "reports/index.json's verdict for {name}"
        );
    }
    let _ = std::fs::remove_dir_all(&base);
    assert!(
        stale.is_empty(),
        "committed reports differ from a fresh run (regenerate them with \
         `cargo run --release --bin sim scenarios`): {stale:?}"
    );
}
