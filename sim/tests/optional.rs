//! A scenario marked `optional = true` (too long for the suite: `pastry-hops-1m`) is skipped
//! when `sim` runs a directory, and runs with `--all`, with a `--filter` that matches it, or when
//! its file is given. Judged on two tiny scenarios in a scratch directory.

use std::path::Path;
use std::process::{Command, Output};

const SIM: &str = env!("CARGO_BIN_EXE_sim");

/// A tiny rpc-load scenario named `name`, optional or not.
fn scenario(name: &str, optional: bool) -> String {
    format!(
        r#"
name = "{name}"
description = "A tiny scenario for the optional-scenario test."
kind = "rpc-load"
seed = 5
optional = {optional}
[topology]
kind = "transit-stub"
[params]
nodes = 12
join_spacing_ms = 20
settle_s = 3
rate_per_s = 20.0
duration_s = 1
timeout_ms = 1000
service_us = 100
request_bytes = 16
[[params.clusters]]
name = "one"
members = 2
capacities = [1]
"#
    )
}

fn run(target: &Path, out: &Path, extra: &[&str]) -> Output {
    let out_arg = out.to_str().expect("utf-8 path");
    let output = Command::new(SIM)
        .arg(target)
        .args(["--out", out_arg, "--quiet", "--jobs", "1"])
        .args(extra)
        .output()
        .expect("run the sim binary");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn ran(out: &Path, name: &str) -> bool {
    out.join(name).join("results.json").is_file()
}

#[test]
fn optional_scenarios_run_only_when_asked_for() {
    let dir = std::env::temp_dir().join(format!("petal-optional-{}", std::process::id()));
    let scenarios = dir.join("scenarios");
    std::fs::create_dir_all(&scenarios).expect("scratch dir");
    std::fs::write(scenarios.join("tiny.toml"), scenario("tiny", false)).expect("write");
    std::fs::write(scenarios.join("tiny-big.toml"), scenario("tiny-big", true)).expect("write");

    let plain = dir.join("plain");
    let out = run(&scenarios, &plain, &[]);
    assert!(ran(&plain, "tiny"));
    assert!(!ran(&plain, "tiny-big"), "an optional scenario is skipped");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("skipping tiny-big"),
        "the skip is said; stderr:\n{stderr}"
    );

    let all = dir.join("all");
    run(&scenarios, &all, &["--all"]);
    assert!(
        ran(&all, "tiny") && ran(&all, "tiny-big"),
        "--all runs both"
    );

    let filtered = dir.join("filtered");
    run(&scenarios, &filtered, &["--filter", "big"]);
    assert!(ran(&filtered, "tiny-big") && !ran(&filtered, "tiny"));

    let file = dir.join("file");
    run(&scenarios.join("tiny-big.toml"), &file, &[]);
    assert!(ran(&file, "tiny-big"), "its own file runs it");

    let _ = std::fs::remove_dir_all(&dir);
}
