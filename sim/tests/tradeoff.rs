//! `churn-tradeoff`: every variant meets the same churn as `churn` with the same seed, so the
//! variant that keeps the defaults reproduces `churn`'s figures; slower leaf-set and
//! routing-table pings send fewer maintenance messages.

use petal_sim::scenario::{Progress, Scenario};

const PARAMS: &str = r#"
seed = 9
[topology]
kind = "transit-stub"
[params]
nodes = 60
median_session_s = [30]
duration_s = 20
lookups_per_s = 20
join_spacing_ms = 20
settle_s = 5
"#;

fn json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap()
}

#[test]
fn the_defaults_variant_is_the_churn_run_and_slower_pings_cost_less() {
    let churn: Scenario = toml::from_str(&format!(
        "name = \"tiny-churn\"\ndescription = \"d\"\nkind = \"churn\"\n{PARAMS}"
    ))
    .unwrap();
    let tradeoff: Scenario = toml::from_str(&format!(
        "name = \"tiny-tradeoff\"\ndescription = \"d\"\nkind = \"churn-tradeoff\"\n{PARAMS}\n\
         [[params.variants]]\nname = \"slow\"\n\
         node = {{ leaf_ping_interval_ms = 60000, routing_ping_interval_ms = 300000 }}\n\
         [[params.variants]]\nname = \"defaults\"\n"
    ))
    .unwrap();
    let base = std::env::temp_dir().join(format!("petal-tradeoff-{}", std::process::id()));
    churn.run(&base.join("churn"), &Progress::hidden()).unwrap();
    let outcome = tradeoff
        .run(&base.join("tradeoff"), &Progress::hidden())
        .unwrap();
    let c = &json(&base.join("churn"))["runs"][0];
    let t = json(&base.join("tradeoff"));
    let (slow, defaults) = (&t["variants"][0], &t["variants"][1]);
    assert_eq!(defaults["defaults"], true);
    assert_eq!(slow["defaults"], false);
    let d = &defaults["runs"][0];
    for k in [
        "consistency",
        "success",
        "leaf_set_correctness_mean",
        "maintenance_msgs_per_node_s",
        "maintenance_bytes_per_node_s",
        "false_deaths",
    ] {
        assert_eq!(d[k], c[k], "{k}: the defaults variant is the churn run");
    }
    let (m_slow, m_def) = (
        slow["runs"][0]["maintenance_msgs_per_node_s"]
            .as_f64()
            .unwrap(),
        d["maintenance_msgs_per_node_s"].as_f64().unwrap(),
    );
    assert!(
        m_slow < m_def * 0.8,
        "slower pings: {m_slow:.2} msg/s against {m_def:.2}"
    );
    // One verdict: whether a variant beats the defaults on every figure.
    assert_eq!(outcome.targets.met + outcome.targets.missed, 1);
    assert!(base.join("tradeoff/consistency.png").exists());
    let _ = std::fs::remove_dir_all(&base);
}
