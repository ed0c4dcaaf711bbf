//! `petald`'s configuration as an operator meets it: `--print-config` prints every limit and
//! timer and reads back the same, a value out of range stops the start with the key and the
//! range, `[limits]`/`[timers]` reach the running node, and `--log-format json` logs one JSON
//! object per line with the node's id on what the node logs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, PETALD, Spec, TEST_NETWORK_KEY};

fn petald(args: &[&str]) -> std::process::Output {
    Command::new(PETALD)
        .args(args)
        .env("PETAL_NETWORK_KEY", TEST_NETWORK_KEY)
        .env_remove("RUST_LOG")
        .output()
        .expect("running petald")
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("petald-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn print_config_lists_every_setting_and_reads_back_the_same() {
    let file = temp("in.toml");
    std::fs::write(
        &file,
        "port = 7000\nadmin = \"off\"\nsession_store = \"redis://10.0.0.5:6379/2\"\n[limits]\nlink_queue = 999\nmax_hops = 40\n\
         [timers]\nping_timeout = \"700ms\"\n",
    )
    .unwrap();
    let out = petald(&["--config", file.to_str().unwrap(), "--print-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "port = 7000",
        "admin = \"off\"",
        "link_queue = 999",
        "max_hops = 40",
        "ping_timeout = \"700ms\"",
        "[limits]",
        "[timers]",
        "memory_budget = 1073741824",
        "session_store = \"redis://10.0.0.5:6379/2\"",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    // The network key is never printed.
    assert!(!text.contains(&TEST_NETWORK_KEY[..16]));
    let printed = temp("printed.toml");
    std::fs::write(&printed, &text).unwrap();
    let again = petald(&["--config", printed.to_str().unwrap(), "--print-config"]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
    // A password in the session store's URL is not printed either.
    let out = petald(&[
        "--session-store",
        "redis://:hunter2@h:1/0",
        "--print-config",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "session_store = \"redis://:***@h:1/0\""),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
}

#[test]
fn a_value_out_of_range_stops_the_start_naming_key_and_range() {
    let file = temp("bad.toml");
    std::fs::write(&file, "[timers]\nlink_keepalive = \"3 fortnights\"\n").unwrap();
    let out = petald(&["--config", file.to_str().unwrap(), "--no-discovery"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("petald: [timers] link_keepalive = \"3 fortnights\": expected milliseconds"),
        "{err}"
    );
    std::fs::write(&file, "[limits]\nmax_conns = 0\n").unwrap();
    let out = petald(&["--config", file.to_str().unwrap(), "--no-discovery"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[limits] max_conns = 0 is out of range: 1..=16777216"),
        "{err}"
    );
    assert!(!err.contains("backtrace"), "{err}");
}

/// Gateway settings without the gateway would silently do nothing: the start stops instead,
/// from the command line and from the config file alike (`--print-config` reads the settings
/// the same way, and exits at once when they are accepted).
#[test]
fn gateway_settings_without_the_gateway_stop_the_start() {
    let tokens = temp("tokens.toml");
    let cases: [&[&str]; 3] = [
        &["--gateway-tokens", tokens.to_str().unwrap()],
        &["--gateway-cors", "*"],
        &["--gateway-tls-cert", "c.pem", "--gateway-tls-key", "k.pem"],
    ];
    for extra in cases {
        let mut args = vec!["--print-config", "--dev", "--no-discovery", "--port", "0"];
        args.extend(["--listen", "127.0.0.1:0"]);
        args.extend(extra);
        let out = petald(&args);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--gateway ADDR"), "{extra:?}: {err}");
    }
    let file = temp("cors.toml");
    std::fs::write(&file, "gateway_cors = [\"*\"]\n").unwrap();
    let out = petald(&["--config", file.to_str().unwrap(), "--print-config"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("which is off"), "{err}");
}

#[tokio::test]
async fn json_logs_carry_the_node_id_and_limits_reach_the_node() {
    let file = temp("json.toml");
    // A node that takes at most one application: the second is refused (DENY).
    std::fs::write(&file, "log_format = \"json\"\n[limits]\nmax_conns = 1\n").unwrap();
    let mut spec = Spec::alone();
    spec.extra = vec!["--config".into(), file.to_str().unwrap().into()];
    let d = Daemon::start(&spec).await;
    let relay = common::relay_addr(d.port);
    let first = petal_client::Connection::connect_addr(relay).await.unwrap();
    let second = petal_client::Connection::connect_addr(relay).await;
    assert!(second.is_err(), "a second application was admitted");
    drop(first);
    assert!(
        d.wait_log("relay attach refused", Duration::from_secs(5))
            .await
    );
    let log = d.log();
    let mut node_lines = 0;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["fields"]["message"] == "relay attach refused" {
            // Logged by the node task: inside the node's span.
            assert_eq!(v["span"]["name"], "node", "{line}");
            assert_eq!(v["span"]["id"].as_str().unwrap().len(), 32, "{line}");
            node_lines += 1;
        }
    }
    assert_eq!(node_lines, 1, "{log}");
}

/// The sample configuration in `deploy/` stays valid.
#[test]
fn the_sample_configuration_is_valid() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/petald.toml");
    let out = petald(&["--config", sample, "--print-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("data_dir = \"/var/lib/petal\""), "{text}");
}
