//! The example page `examples/web-chat` in a real browser: a test server serves it, headless
//! Chromium (Debian's `chromium`) loads it; the page subscribes to a topic over the gateway's
//! WebSocket and publishes with `fetch` (cross-origin, let in by the gateway's CORS origins).
//! The test checks that the page shows the messages another client publishes, and that the
//! other client receives the page's own. The page is read through the DevTools protocol.
//! Skipped when Chromium is missing, unless `PETAL_CHROMIUM=1` (CI) says it must run.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use petal_client::Connection;
use petal_gateway::GatewayOptions;
use petal_node::{Identity, LinkSecurity, NetworkKey, Options, TokioNet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const PAGE: &str = include_str!("../../../examples/web-chat/index.html");

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Kills the browser however the test ends.
struct Browser(Child, std::path::PathBuf);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Serves the page at `/` until the test ends; its address.
async fn serve_page() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    PAGE.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(PAGE.as_bytes()).await;
            });
        }
    });
    at
}

/// GET of a DevTools JSON endpoint.
async fn devtools_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    // DevTools keeps the connection open: read the head, then Content-Length bytes.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return serde_json::from_str(&body[..len]).ok();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_chat_page_shows_other_clients_messages_and_publishes_its_own() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("PETAL_CHROMIUM").as_deref() != Ok("1"),
            "PETAL_CHROMIUM=1 but no chromium is installed"
        );
        eprintln!("chromium not installed: skipped");
        return;
    };
    let mut o = Options::new(
        Identity::from_seed(7),
        LinkSecurity::Noise(NetworkKey::from_bytes([0x6b; 32])),
    );
    o.relay_addrs = vec!["127.0.0.1:0".parse().unwrap()];
    o.peer_listen = "127.0.0.1:0".parse().unwrap();
    let node = petal_node::spawn(TokioNet, o).await.unwrap();
    let relay = node.relay_addrs()[0].port();
    let page = serve_page().await;
    let mut go = GatewayOptions::new("127.0.0.1:0".parse().unwrap(), relay);
    go.cors_origins = vec![format!("http://{page}")];
    let gw = petal_gateway::start(go).await.unwrap();
    // Another client of the chat, on the relay protocol.
    let other = Connection::connect(relay).await.unwrap();
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    other
        .subscribe("lobby", move |e: Bytes| {
            let _ = tx.send(e);
        })
        .await
        .unwrap();
    let debug_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let profile = std::env::temp_dir().join(format!("petal-chromium-{}", std::process::id()));
    let url = format!(
        "http://{page}/?gateway=http://{}&topic=lobby&name=browser",
        gw.local_addr()
    );
    let _browser = Browser(
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .args(["--disable-dev-shm-usage", "--remote-allow-origins=*"])
            .arg(format!("--remote-debugging-port={debug_port}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromium"),
        profile,
    );
    // The page's DevTools WebSocket.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ws_url = loop {
        assert!(tokio::time::Instant::now() < deadline, "no DevTools page");
        if let Some(list) = devtools_json(debug_port, "/json/list").await
            && let Some(u) = list.as_array().and_then(|l| {
                l.iter()
                    .find(|p| {
                        p["type"] == "page"
                            && p["url"].as_str().is_some_and(|x| x.contains("topic=lobby"))
                    })
                    .and_then(|p| p["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            })
        {
            break u;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (mut cdp, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut id = 0;
    let mut eval = async |expr: &str| -> String {
        id += 1;
        let msg = serde_json::json!({"id": id, "method": "Runtime.evaluate", "params": {"expression": expr, "returnByValue": true}});
        cdp.send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        loop {
            let Some(Ok(Message::Text(t))) = cdp.next().await else {
                panic!("DevTools closed")
            };
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                return v["result"]["result"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
        }
    };
    // The page publishes "browser: hello" once subscribed: the other client hears it.
    let hello = tokio::time::timeout(Duration::from_secs(20), heard.recv())
        .await
        .unwrap_or_else(|_| panic!("the page did not publish"))
        .unwrap();
    assert_eq!(&hello[..], b"browser: hello");
    // The other client's messages show on the page (published until they do: the page's
    // subscription is in place once its WebSocket is open).
    let mut shown = String::new();
    while tokio::time::Instant::now() < deadline + Duration::from_secs(10) {
        other.publish("lobby", "rust: hi browser").await.unwrap();
        shown = eval("document.getElementById('messages').innerText").await;
        if shown.contains("rust: hi browser") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shown.contains("rust: hi browser"),
        "the page shows: {shown:?}"
    );
    let status = eval("document.getElementById('status').innerText").await;
    assert_eq!(status, "connected to lobby");
}
