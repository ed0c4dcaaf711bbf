//! The admin API against real nodes on loopback, spoken to over raw HTTP/1.1 (so that bad
//! clients can be played too): every endpoint, the token, bad input, and Prometheus' own
//! checker on the metrics.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use petal_admin::{AdminOptions, StartError};
use petal_node::{NodeHandle, TokioNet};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn options(n: u64, seeds: Vec<SocketAddr>) -> petal_node::Options {
    common::options(n, 0x5a, seeds)
}

async fn two_nodes() -> (NodeHandle, NodeHandle) {
    let a = petal_node::spawn(TokioNet, options(1, vec![]))
        .await
        .unwrap();
    let b = petal_node::spawn(TokioNet, options(2, vec![a.info().addr]))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (sa, sb) = (a.stats().await.unwrap(), b.stats().await.unwrap());
        if sa.ready && sb.ready && sa.leaf_set >= 1 && sb.leaf_set >= 1 && sa.links >= 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no ring of two");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (a, b)
}

fn local() -> AdminOptions {
    AdminOptions::new("127.0.0.1:0".parse().unwrap(), "9.9.9-test")
}

/// One answer: status, head, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `raw` (a whole request) and reads the answer until the server closes.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Answer {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let raw =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    exchange(addr, raw.as_bytes()).await
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, None).await
}

#[tokio::test]
async fn every_endpoint_shows_the_nodes_state() {
    let (a, b) = two_nodes().await;
    let admin = petal_admin::start(a.stats_source(), local()).await.unwrap();
    let at = admin.local_addr();
    let app = petal_client::Connection::connect_addr(a.relay_addrs()[0])
        .await
        .unwrap();
    app.subscribe("news", |_: Bytes| {}).await.unwrap();

    let h = get(at, "/healthz").await;
    assert_eq!((h.status, h.body.as_str()), (200, "ok"));
    let r = get(at, "/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready"));

    let node = get(at, "/v1/node").await.json();
    assert_eq!(node["id"], a.info().id.to_string());
    assert_eq!(node["peer_addr"], a.info().addr.to_string());
    assert_eq!(node["version"], "9.9.9-test");
    assert_eq!(node["ready"], true);
    assert_eq!(node["encrypted"], true);
    assert_eq!(node["discovery"]["state"], "off");
    assert_eq!(node["identity_registry"], "overlay");
    assert!(node["store_keys"].as_u64().is_some() && node["store_bytes"].as_u64().is_some());
    assert_eq!(node["links"], 1);
    assert_eq!(node["sessions"], 1);
    assert!(node["uptime_s"].as_f64().unwrap() > 0.0);

    let peers = get(at, "/v1/peers").await.json();
    let peers = peers.as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["id"], b.info().id.to_string());
    assert_eq!(peers[0]["state"], "up");
    assert_eq!(peers[0]["direction"], "inbound");
    assert!(peers[0]["bytes_in"].as_u64().unwrap() > 0);

    let leaf = get(at, "/v1/leafset").await.json();
    let ids: Vec<&Value> = leaf["left"]
        .as_array()
        .unwrap()
        .iter()
        .chain(leaf["right"].as_array().unwrap())
        .map(|e| &e["id"])
        .collect();
    assert!(
        ids.contains(&&Value::from(b.info().id.to_string())),
        "{leaf}"
    );
    assert!(get(at, "/v1/routes").await.json().is_array());

    // The subscription shows in the topic's tree and in the session.
    let topics = get(at, "/v1/topics").await.json();
    let news = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "news")
        .unwrap_or_else(|| panic!("{topics}"));
    assert_eq!(news["members"].as_array().unwrap().len(), 1);
    assert_eq!(
        news.get("held_ms"),
        Some(&Value::Null),
        "shown, and null: no child was declared dead: {news}"
    );
    assert!(
        get(at, "/v1/clusters")
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let sessions = get(at, "/v1/sessions").await.json();
    assert_eq!(sessions[0]["topics"], serde_json::json!(["news"]));
    assert!(
        get(at, "/v1/tunnels")
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );

    let m = get(at, "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(
        m.head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4")
    );
    for line in [
        "petal_ready 1",
        "petal_links 1",
        "petal_sessions 1",
        "# TYPE petal_request_duration_seconds histogram",
        "# TYPE petal_requests_total counter",
        "petal_drops_total{reason=\"slow_client\"} 0",
        "# TYPE petal_core_messages_sent_total counter",
    ] {
        assert!(
            m.body.lines().any(|l| l == line),
            "no {line:?} in\n{}",
            m.body
        );
    }

    // The OpenAPI document names every path the router serves.
    let doc = get(at, "/v1/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/node",
        "/v1/peers",
        "/v1/leafset",
        "/v1/routes",
        "/v1/clusters",
        "/v1/topics",
        "/v1/tunnels",
        "/v1/sessions",
        "/v1/openapi.json",
    ] {
        assert!(doc["paths"][p]["get"].is_object(), "{p} missing");
        assert!(get(at, p).await.status == 200, "{p}");
    }

    // DNS rebinding: without a token, a request for another host name is refused.
    let raw = b"GET /v1/node HTTP/1.1\r\nHost: evil.example:55558\r\nConnection: close\r\n\r\n";
    let rebound = exchange(at, raw).await;
    assert_eq!(rebound.status, 403);
    assert!(
        rebound.json()["error"]
            .as_str()
            .unwrap()
            .contains("localhost")
    );
    for host in ["127.0.0.1:1234", "[::1]:55558", "LOCALHOST", "127.0.0.2"] {
        let raw = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(exchange(at, raw.as_bytes()).await.status, 200, "{host}");
    }

    // Bad requests: clear errors, JSON.
    let nf = get(at, "/v1/nothing").await;
    assert_eq!(nf.status, 404);
    assert_eq!(nf.json()["error"], "no such path");
    assert_eq!(request(at, "POST", "/v1/node", None).await.status, 405);

    drop(app);
    a.shutdown().await;
    // The process still runs; the node does not.
    assert_eq!(get(at, "/healthz").await.status, 200);
    assert_eq!(get(at, "/readyz").await.status, 503);
    // Views come from a copy of the node's tables reused for 500 ms: then the node is asked
    // again, and it is gone.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get(at, "/v1/node").await.status, 503);
    admin.stop();
    b.shutdown().await;
}

#[tokio::test]
async fn a_token_guards_everything_but_the_probes() {
    let (a, b) = two_nodes().await;
    let wide = AdminOptions::new("0.0.0.0:0".parse().unwrap(), "t");
    assert!(matches!(
        petal_admin::start(a.stats_source(), wide).await,
        Err(StartError::NeedsToken(_))
    ));
    let mut opts = local();
    opts.token = Some("s3cret-token-0123456789".into());
    let admin = petal_admin::start(a.stats_source(), opts).await.unwrap();
    let at = admin.local_addr();
    for path in ["/v1/node", "/metrics", "/v1/openapi.json", "/nothing"] {
        let no = request(at, "GET", path, None).await;
        assert_eq!(no.status, 401, "{path}");
        assert!(no.head.contains("www-authenticate: Bearer"), "{}", no.head);
        assert_eq!(request(at, "GET", path, Some("wrong")).await.status, 401);
    }
    let ok = request(at, "GET", "/v1/node", Some("s3cret-token-0123456789")).await;
    assert_eq!(ok.status, 200);
    // With a token, any host name (a wide bind is reached by its public names).
    let raw = b"GET /v1/node HTTP/1.1\r\nHost: node-a.example\r\nAuthorization: Bearer s3cret-token-0123456789\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange(at, raw).await.status, 200);
    assert_eq!(get(at, "/healthz").await.status, 200);
    assert_eq!(get(at, "/readyz").await.status, 200);
    admin.stop();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn bad_clients_affect_only_their_own_connection() {
    let (a, b) = two_nodes().await;
    let mut opts = local();
    opts.header_timeout = Duration::from_millis(300);
    let admin = petal_admin::start(a.stats_source(), opts).await.unwrap();
    let at = admin.local_addr();

    // A head over 16 KiB: refused with 431 (or the connection cut), the server unharmed.
    let huge = format!(
        "GET /v1/node HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let mut s = TcpStream::connect(at).await.unwrap();
    let _ = s.write_all(huge.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");

    // Silent clients hold a connection each, and are cut after the head timeout; others are
    // served meanwhile.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(at).await.unwrap());
    }
    // Half a request head, never finished.
    silent[0]
        .write_all(b"GET /v1/node HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert_eq!(get(at, "/v1/node").await.status, 200);
    for mut c in silent {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut b))
            .await
            .expect("a silent client is cut within 3 s");
        // Cut: end of stream, or a 408 then end of stream.
        let n = n.unwrap_or(0);
        assert!(n == 0 || b.starts_with(b"HTTP/1.1 408"), "{:?}", &b[..n]);
    }
    assert_eq!(get(at, "/healthz").await.status, 200);
    admin.stop();
    a.shutdown().await;
    b.shutdown().await;
}

/// One client address cannot take every connection slot: past its share its connections are
/// closed at once, while other addresses are served.
#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let (a, b) = two_nodes().await;
    let mut opts = local();
    opts.max_connections_per_ip = 4;
    let admin = petal_admin::start(a.stats_source(), opts).await.unwrap();
    let at = admin.local_addr();
    let from = |ip: [u8; 4]| async move {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from((ip, 0))).unwrap();
        s.connect(at).await.unwrap()
    };
    // Four silent connections from 127.0.0.2 hold its share.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(from([127, 0, 0, 2]).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A fifth from there is closed without an answer...
    let mut fifth = from([127, 0, 0, 2]).await;
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(2), fifth.read_to_end(&mut buf))
        .await
        .expect("closed at once");
    assert!(
        n.is_err() || buf.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    // ... while 127.0.0.1 is served, and 127.0.0.2 again once its connections end.
    assert_eq!(get(at, "/healthz").await.status, 200);
    drop(held);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut again = from([127, 0, 0, 2]).await;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    again.read_to_end(&mut buf).await.unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    admin.stop();
    a.shutdown().await;
    b.shutdown().await;
}

/// Prometheus' own checker (`promtool check metrics`, Debian package `prometheus`) accepts the
/// exposition. Skipped when promtool is missing, unless `PETAL_PROMTOOL=1` (CI) says it must
/// run.
#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let have = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var("PETAL_PROMTOOL").as_deref() != Ok("1"),
            "PETAL_PROMTOOL=1 but promtool is not installed"
        );
        eprintln!("promtool not installed: skipped");
        return;
    }
    let (a, b) = two_nodes().await;
    let admin = petal_admin::start(a.stats_source(), local()).await.unwrap();
    let m = get(admin.local_addr(), "/metrics").await;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), m.body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    admin.stop();
    a.shutdown().await;
    b.shutdown().await;
}
