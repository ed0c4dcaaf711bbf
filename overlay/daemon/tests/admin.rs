//! `petald --admin`: the admin HTTP API as an operator starts it (the API itself is tested in
//! `overlay/admin/tests/api.rs`): it serves where told, refuses to listen beyond loopback
//! without a token, names a taken port, and is off when asked.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, PETALD, Spec, TEST_NETWORK_KEY, free_port, lo};

/// `GET path` over a fresh connection: (status, body).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_string(),
    ))
}

fn with_admin(extra: &[&str]) -> Spec {
    let mut spec = Spec::alone();
    spec.extra = extra.iter().map(ToString::to_string).collect();
    spec
}

#[tokio::test]
async fn the_admin_api_serves_where_told() {
    let at = SocketAddr::from((lo(1), free_port(lo(1), false)));
    let d = Daemon::start(&with_admin(&["--admin", &at.to_string()])).await;
    assert!(
        d.wait_log("admin API listening", Duration::from_secs(5))
            .await
    );
    assert_eq!(get(at, "/healthz", None), Some((200, "ok".into())));
    assert_eq!(get(at, "/readyz", None), Some((200, "ready".into())));
    let (status, metrics) = get(at, "/metrics", None).unwrap();
    assert_eq!(status, 200);
    assert!(metrics.lines().any(|l| l == "petal_ready 1"), "{metrics}");
    let (_, node) = get(at, "/v1/node", None).unwrap();
    assert!(
        node.contains(&format!("\"relay_addrs\":[\"127.0.0.1:{}\"", d.port)),
        "{node}"
    );
}

#[tokio::test]
async fn a_token_file_guards_a_wide_bind_and_none_is_refused() {
    let port = free_port(lo(1), false);
    // Without a token, a bind beyond loopback is refused at start, with what to do.
    let out = Command::new(PETALD)
        .args([
            "--dev",
            "--no-discovery",
            "--port",
            "0",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--admin", &format!("0.0.0.0:{port}")])
        .env("PETAL_NETWORK_KEY", TEST_NETWORK_KEY)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--admin-token-file"), "{err}");

    let dir = std::env::temp_dir().join(format!("petald-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "a-long-enough-admin-token\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Daemon::start(&with_admin(&[
        "--admin",
        &format!("0.0.0.0:{port}"),
        "--admin-token-file",
        token_file.to_str().unwrap(),
    ]))
    .await;
    assert!(
        d.wait_log("admin API listening", Duration::from_secs(5))
            .await
    );
    let at = SocketAddr::from((lo(1), port));
    assert_eq!(get(at, "/v1/node", None).map(|r| r.0), Some(401));
    assert_eq!(
        get(at, "/v1/node", Some("a-long-enough-admin-token")).map(|r| r.0),
        Some(200)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_taken_admin_port_is_named_and_off_means_off() {
    let taken = std::net::TcpListener::bind((lo(1), 0)).unwrap();
    let at = taken.local_addr().unwrap();
    let out = Command::new(PETALD)
        .args([
            "--dev",
            "--no-discovery",
            "--port",
            "0",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--admin", &at.to_string()])
        .env("PETAL_NETWORK_KEY", TEST_NETWORK_KEY)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {at} for the admin API")),
        "{err}"
    );
    // Checked before the node starts: it never joined anything.
    assert!(!err.contains("node started"), "{err}");
    drop(taken);

    // `admin = "off"` in the config file: nothing listens, and the log says nothing of it.
    let dir = std::env::temp_dir().join(format!("petald-admin-off-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("petald.toml");
    std::fs::write(&config, "admin = \"off\"\n").unwrap();
    let d = Daemon::start(&with_admin(&["--config", config.to_str().unwrap()])).await;
    // (The harness adds no `--admin off` when a config is given: the file turned it off.
    // Left at its default the API would log that it listens, or that its port is taken, and
    // both come before "petald ready", which Daemon::start waited for.)
    assert!(!d.log().contains("admin API"), "{}", d.log());
    let _ = std::fs::remove_dir_all(&dir);
}
