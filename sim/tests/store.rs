//! The replicated store and identities in the discrete-event simulator: values survive crashes
//! of their replicas one after another with every message through the codec, and a small
//! `store-churn` and a small `identity-churn` (the scenarios' own oracles) meet every target at
//! both churn rates.

use bytes::Bytes;
use petal_core::{StoreOpKind, StoreResult, Time};
use petal_sim::apps::AppSpec;
use petal_sim::scenario::{Progress, Scenario};
use petal_sim::topology::TopologyConfig;
use petal_sim::{Sim, SimConfig};

fn advance(sim: &mut Sim, ms: u64) {
    let t = sim.now();
    sim.run_until(Time::from_micros(t.as_micros() + ms * 1000));
}

/// The outcome of operation `op`, if it came (and asserts it came once).
fn outcome(sim: &Sim, op: u64) -> Option<StoreResult> {
    let all: Vec<&StoreResult> = sim
        .apps
        .kv_done
        .iter()
        .filter(|d| d.2 == op)
        .map(|d| &d.3)
        .collect();
    assert!(all.len() <= 1, "op {op}: {all:?}");
    all.first().map(|r| (*r).clone())
}

#[test]
fn stored_values_survive_replica_crashes_with_every_message_through_the_codec() {
    let mut cfg = SimConfig::new(3, TopologyConfig::default());
    cfg.check_invariants = true;
    cfg.wire_check = true;
    let mut sim = Sim::new(cfg);
    for _ in 0..40 {
        sim.add_node();
        advance(&mut sim, 40);
    }
    advance(&mut sim, 10_000);
    let clients: Vec<usize> = (0..40)
        .map(|i| sim.add_app(i, AppSpec::client()).unwrap())
        .collect();
    let mut op = 0;
    for k in 0..100u64 {
        op += 1;
        let put = StoreOpKind::Put {
            value: Bytes::from(k.to_be_bytes().to_vec()),
            ttl_ms: 0,
            expect: None,
        };
        assert!(sim.kv(clients[(k % 40) as usize], op, &format!("k{k}"), put, 5_000));
        advance(&mut sim, 20);
    }
    advance(&mut sim, 2_000);
    for o in 1..=op {
        assert!(
            matches!(outcome(&sim, o), Some(StoreResult::Written(_))),
            "put {o}"
        );
    }
    // Ten nodes crash, 12 s apart (time to find each dead and repair); node 0 stays.
    for victim in 1..=10 {
        sim.crash(victim * 3);
        advance(&mut sim, 12_000);
    }
    let mut gets = Vec::new();
    for k in 0..100u64 {
        op += 1;
        assert!(sim.kv(clients[0], op, &format!("k{k}"), StoreOpKind::Get, 5_000));
        gets.push((k, op));
        advance(&mut sim, 10);
    }
    advance(&mut sim, 6_000);
    for (k, o) in gets {
        match outcome(&sim, o) {
            Some(StoreResult::Found { value, .. }) => assert_eq!(&value[..], &k.to_be_bytes()),
            other => panic!("k{k}: {other:?}"),
        }
    }
    assert_eq!(sim.apps.stray_events, 0);
}

/// Runs scenario `toml` (named `name`) in a scratch directory; asserts that it met every
/// target and returns its results.
fn run_small(name: &str, toml: &str) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("petal-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, toml).unwrap();
    let sc = Scenario::load(&file).expect("scenario");
    let outcome = sc.run(&dir.join("out"), &Progress::hidden()).expect("run");
    let results = std::fs::read_to_string(dir.join("out/results.json")).expect("results");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        outcome.missed.is_empty(),
        "missed: {:?}\n{results}",
        outcome.missed
    );
    serde_json::from_str(&results).unwrap()
}

#[test]
fn a_small_store_churn_meets_every_target() {
    let toml = r#"
name = "store-churn-small"
description = "A small store-churn for the test suite."
kind = "store-churn"
seed = 2
[topology]
kind = "transit-stub"
[sim]
wire_check = true
[params]
nodes = 120
median_session_s = [600, 60]
duration_s = 60
join_spacing_ms = 20
settle_s = 10
preload_s = 5
drain_s = 20
keys = 300
ops_per_s = 100
get_share = 0.5
put_share = 0.3
cas_share = 0.15
ttl_share = 0.2
ttl_s = [2, 20]
value_size = 32
timeout_ms = 5000
repair_window_s = 15
"#;
    let v = run_small("store-churn-small", toml);
    for run in v["runs"].as_array().unwrap() {
        assert!(run["judged"].as_u64().unwrap() > 2_000, "{run}");
        assert!(run["final_keys"].as_u64().unwrap() > 250, "{run}");
        assert!(run["cas_won"].as_u64().unwrap() > 0, "{run}");
    }
}

#[test]
fn a_small_identity_churn_meets_every_target() {
    let toml = r#"
name = "identity-churn-small"
description = "A small identity-churn for the test suite."
kind = "identity-churn"
seed = 3
[topology]
kind = "transit-stub"
[sim]
wire_check = true
[params]
nodes = 100
median_session_s = [600, 60]
duration_s = 60
join_spacing_ms = 20
settle_s = 10
drain_s = 10
users = 60
move_every_s = 20.0
online_s = 30.0
offline_s = 10.0
reconnect_ms = 1000
sends_per_s = 40.0
timeout_ms = 5000
live_before_ms = 2000
"#;
    let v = run_small("identity-churn-small", toml);
    for run in v["runs"].as_array().unwrap() {
        assert!(run["judged_live"].as_u64().unwrap() > 1_000, "{run}");
        assert!(run["judged_dead"].as_u64().unwrap() > 50, "{run}");
        assert!(run["moves"].as_u64().unwrap() > 50, "{run}");
    }
}
