//! A whole fleet started at once (issue 11): every node serves within a bound, whatever the
//! seeds look like. The same judgements as the `cold-start` and `turmoil-cold-start-*`
//! scenarios (their report targets), over several master seeds each, so that a failure that
//! happens in one run of two cannot pass unnoticed.

use std::path::Path;

use petal_sim::scenario::{Progress, Scenario};

fn scenario(file: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(file);
    Scenario::load(&path).expect("scenario loads")
}

fn run_all_met(sc: &Scenario, out: &Path) {
    let o = sc.run(out, &Progress::hidden()).expect("scenario runs");
    let report = std::fs::read_to_string(out.join(&sc.name).join("report.md")).unwrap_or_default();
    assert!(
        o.targets.all_met(),
        "{} (seed {}): {}\n{report}",
        sc.name,
        sc.seed,
        o.targets.summary()
    );
}

/// 300 nodes started within 200 ms with one to three random seeds each (chains, cycles,
/// seeds that never start), ten runs of different seeds: in every run, 5 s after the first
/// start, every node is ready with a correct leaf set and answers a lookup and a request.
#[test]
fn discrete_event_fleet_started_at_once_converges_within_5_s() {
    let mut sc = scenario("cold-start.toml");
    sc.params.insert("nodes".into(), toml::Value::Integer(300));
    sc.params.insert("down".into(), toml::Value::Integer(6));
    sc.params.insert("runs".into(), toml::Value::Integer(10));
    let dir = tempdir();
    run_all_met(&sc, &dir);
}

/// The real stack (petal-node's runtime over turmoil's TCP): 32 hosts booting at the same
/// instant, seeded in chains or with discovery only; every request, broadcast, publish and
/// tunnel from 3 s after the boot on works, for ten seeds each.
#[test]
fn real_stack_fleet_started_at_once_serves_every_pattern_within_3_s() {
    let dir = tempdir();
    for file in [
        "turmoil-cold-start-chains.toml",
        "turmoil-cold-start-discovery.toml",
    ] {
        for seed in 1..=10 {
            let mut sc = scenario(file);
            sc.seed = seed;
            run_all_met(&sc, &dir);
        }
    }
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "petal-cold-start-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
