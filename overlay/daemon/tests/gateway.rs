//! `petald --gateway`: the HTTP gateway in the daemon, with a token file: a request over HTTP
//! reaches a relay-v1 service, a request without the token is refused, and a bad token file
//! stops the start with its reason.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_client::{ServiceHandler, register};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Upper;

impl ServiceHandler for Upper {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request.to_ascii_uppercase().into())
    }
}

/// POSTs `body` to `path` at `addr` (with `auth` as the bearer token); status and body.
async fn post(addr: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    within(
        Duration::from_secs(10),
        "an answer",
        s.read_to_string(&mut out),
    )
    .await
    .unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("petald-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn the_daemon_serves_requests_over_http_to_token_holders() {
    let tokens = temp(
        "tokens.toml",
        "[[token]]\nname = \"app\"\nsecret = \"gateway-test-secret-1\"\nclusters = [\"up\"]\nallow = [\"request\"]\n",
    );
    let gw = format!("127.0.0.1:{}", free_port(lo(1), false));
    let admin = format!("127.0.0.1:{}", free_port(lo(1), false));
    let mut spec = Spec::alone();
    spec.extra = vec![
        "--gateway".into(),
        gw.clone(),
        "--gateway-tokens".into(),
        tokens.display().to_string(),
        "--admin".into(),
        admin.clone(),
    ];
    let d = Daemon::start(&spec).await;
    assert!(
        d.wait_log("gateway listening", Duration::from_secs(5))
            .await
    );
    let _svc = register(d.port, "up", Upper).await.unwrap();
    let ok = post(
        &gw,
        "/v1/clusters/up/request",
        Some("gateway-test-secret-1"),
        "shout",
    )
    .await;
    assert_eq!(ok, (200, "SHOUT".to_string()));
    let (status, body) = post(&gw, "/v1/clusters/up/request", None, "shout").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    // The admin API's metrics count the gateway's work.
    let metrics = get(&admin, "/metrics").await;
    assert!(
        metrics.contains("petal_gateway_requests_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("petal_gateway_refused_total 1\n"),
        "{metrics}"
    );
}

/// The body of a GET of `path` at `addr`.
async fn get(addr: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    within(
        Duration::from_secs(10),
        "an answer",
        s.read_to_string(&mut out),
    )
    .await
    .unwrap();
    out
}

#[test]
fn a_bad_token_file_stops_the_start_with_its_reason() {
    let tokens = temp(
        "bad.toml",
        "[[token]]\nname = \"x\"\nsecret = \"short\"\nallow = [\"request\"]\n",
    );
    let out = Command::new(PETALD)
        .args(["--dev", "--no-discovery", "--admin", "off", "--port", "0"])
        .args(["--listen", "127.0.0.1:0", "--gateway", "127.0.0.1:0"])
        .args(["--gateway-tokens", tokens.to_str().unwrap()])
        .env("PETAL_NETWORK_KEY", TEST_NETWORK_KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("gateway's tokens") && err.contains("16 or more"),
        "{err}"
    );
}
