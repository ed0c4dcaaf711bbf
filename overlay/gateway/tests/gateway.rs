//! The gateway against a real node on loopback, with real HTTP and WebSocket clients: every
//! pattern's answers (200, 202, 502, 504, 4xx), events as Server-Sent Events and over a
//! WebSocket (text, binary, base64), slow readers cut off and counted, tokens that reach only
//! what they were given, CORS, and body limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use petal_client::{Connection, ServiceHandler, register};
use petal_gateway::auth::Tokens;
use petal_gateway::{GatewayHandle, GatewayOptions, StartError};
use petal_node::{Identity, LinkSecurity, NetworkKey, NodeHandle, Options, TokioNet};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

async fn node() -> NodeHandle {
    let mut o = Options::new(
        Identity::from_seed(1),
        LinkSecurity::Noise(NetworkKey::from_bytes([0x6a; 32])),
    );
    o.relay_addrs = vec!["127.0.0.1:0".parse().unwrap()];
    o.peer_listen = "127.0.0.1:0".parse().unwrap();
    petal_node::spawn(TokioNet, o).await.unwrap()
}

fn port(n: &NodeHandle) -> u16 {
    n.relay_addrs()[0].port()
}

/// A gateway reaching `n` in memory (as petald's does); `f` adjusts its options.
async fn gateway(n: &NodeHandle, f: impl FnOnce(&mut GatewayOptions)) -> GatewayHandle {
    let mut o = GatewayOptions::new("127.0.0.1:0".parse().unwrap(), port(n));
    o.local = Some(n.local_connector());
    f(&mut o);
    petal_gateway::start(o).await.unwrap()
}

/// Replies `re: <request>`; fails requests that start with `fail`; sleeps on `slow`.
struct Svc;

impl ServiceHandler for Svc {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        if request.starts_with(b"fail") {
            return Err("it failed".into());
        }
        if request.starts_with(b"slow") {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let mut out = b"re: ".to_vec();
        out.extend_from_slice(&request);
        Ok(out.into())
    }
}

struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`).
async fn http(
    at: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut s = TcpStream::connect(at).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    // The gateway's address as the Host, unless the test gives one.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {at}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    Answer {
        status,
        head,
        body: out[split + 4..].to_vec(),
    }
}

async fn post(at: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    http(at, "POST", path, headers, body).await
}

#[tokio::test]
async fn requests_broadcasts_and_publishes_get_one_answer_each() {
    let n = node().await;
    let g = gateway(&n, |_| {}).await;
    let at = g.local_addr();
    let _svc = register(port(&n), "svc", Svc).await.unwrap();
    let r = post(at, "/v1/clusters/svc/request", &[], b"hello").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"re: hello"[..]));
    let r = post(at, "/v1/clusters/svc/request", &[], b"fail now").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "remote_fault");
    assert_eq!(r.json()["message"], "it failed");
    let r = post(
        at,
        "/v1/clusters/svc/request",
        &[("Petal-Timeout-Ms", "300")],
        b"slow",
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "timeout");
    // Nobody serves it: the node's timeout answers.
    let r = post(
        at,
        "/v1/clusters/nobody/request",
        &[("Petal-Timeout-Ms", "200")],
        b"x",
    )
    .await;
    assert_eq!(r.status, 504);
    for bad in ["0", "-1", "soon", "600001"] {
        let r = post(
            at,
            "/v1/clusters/svc/request",
            &[("Petal-Timeout-Ms", bad)],
            b"x",
        )
        .await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (400, Some("bad_timeout")),
            "{bad}"
        );
    }
    // A broadcast reaches the member, a publish the subscriber.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = Connection::connect(port(&n)).await.unwrap();
    sub.subscribe("news", move |e: Bytes| {
        let _ = tx.send(e);
    })
    .await
    .unwrap();
    let r = post(at, "/v1/topics/news/publish", &[], b"extra").await;
    assert_eq!(r.status, 202);
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"extra"[..]));
    let r = post(at, "/v1/clusters/svc/broadcast", &[], b"all").await;
    assert_eq!(r.status, 202);
    // Bad paths and methods: JSON errors too.
    let r = http(at, "GET", "/v1/clusters/svc/request", &[], b"").await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (405, Some("method"))
    );
    assert_eq!(
        http(at, "GET", "/nothing", &[], b"").await.json()["error"],
        "not_found"
    );
    assert_eq!(g.stats().requests.load(Ordering::Relaxed), 12);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let n = node().await;
    let g = gateway(&n, |o| o.max_body = 1000).await;
    let _svc = register(port(&n), "svc", Svc).await.unwrap();
    let r = post(
        g.local_addr(),
        "/v1/clusters/svc/request",
        &[],
        &[b'x'; 1001],
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (413, Some("too_large"))
    );
    let r = post(
        g.local_addr(),
        "/v1/clusters/svc/request",
        &[],
        &[b'x'; 1000],
    )
    .await;
    assert_eq!(r.status, 200);
}

/// Reads Server-Sent Events from `path` until `n` events came; (event type, data) each.
async fn sse(at: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(at).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {at}\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let status = line[9..12].parse().unwrap();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    (status, r)
}

/// The next event of a chunked event stream: (type, data); `None` at its end.
async fn next_event(r: &mut BufReader<TcpStream>) -> Option<(String, String)> {
    let (mut kind, mut data) = ("message".to_string(), None);
    let mut line = String::new();
    loop {
        line.clear();
        let read = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .expect("an event within 10 s")
            .ok()?;
        if read == 0 {
            return None;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if let Some(v) = l
            .strip_prefix("event: ")
            .or_else(|| l.strip_prefix("event:"))
        {
            kind = v.to_string();
        } else if let Some(v) = l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")) {
            assert!(data.is_none(), "one data line per event");
            data = Some(v.to_string());
        } else if l.is_empty() {
            if let Some(d) = data.take() {
                return Some((kind, d));
            }
        }
        // Chunk sizes and comments are skipped.
    }
}

#[tokio::test]
async fn events_come_as_server_sent_events_with_base64_for_other_bytes() {
    let n = node().await;
    let g = gateway(&n, |_| {}).await;
    let at = g.local_addr();
    let (status, mut r) = sse(at, "/v1/topics/news/events", &[]).await;
    assert_eq!(status, 200);
    let publisher = Connection::connect(port(&n)).await.unwrap();
    // The subscription is in place once a first event comes through.
    let first = async {
        loop {
            publisher.publish("news", "ping").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        e = next_event(&mut r) => assert_eq!(e, Some(("message".into(), "ping".into()))),
        () = first => {}
    }
    publisher.publish("news", "two words").await.unwrap();
    publisher.publish("news", "line\nbreak").await.unwrap();
    publisher
        .publish("news", vec![0u8, 1, 2, 255])
        .await
        .unwrap();
    publisher.publish("news", "").await.unwrap();
    publisher.publish("news", "done").await.unwrap();
    let mut got = Vec::new();
    while got.last() != Some(&("message".to_string(), "done".to_string())) {
        got.push(next_event(&mut r).await.expect("the stream goes on"));
    }
    got.retain(|e| e.1 != "ping");
    assert_eq!(
        got,
        vec![
            ("message".into(), "two words".into()),
            ("base64".into(), "bGluZQpicmVhaw==".into()),
            ("base64".into(), "AAEC/w==".into()),
            ("empty".into(), "-".into()),
            ("message".into(), "done".into()),
        ]
    );
    assert!(g.stats().events.load(Ordering::Relaxed) >= 5);
}

#[tokio::test]
async fn events_come_over_a_websocket_and_a_slow_reader_is_cut_off() {
    let n = node().await;
    let g = gateway(&n, |o| o.event_queue = 64).await;
    let at = g.local_addr();
    let url = format!("ws://{at}/v1/topics/chat/events");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let publisher = Connection::connect(port(&n)).await.unwrap();
    use tokio_tungstenite::tungstenite::Message;
    let first = async {
        loop {
            publisher.publish("chat", "ping").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        m = ws.next() => assert_eq!(m.unwrap().unwrap(), Message::Text("ping".into())),
        () = first => {}
    }
    publisher.publish("chat", vec![0u8, 159]).await.unwrap();
    publisher.publish("chat", "end").await.unwrap();
    let mut got = Vec::new();
    while got.last() != Some(&Message::Text("end".into())) {
        got.push(ws.next().await.unwrap().unwrap());
    }
    got.retain(|m| *m != Message::Text("ping".into()));
    assert_eq!(
        got,
        vec![
            Message::Binary(vec![0u8, 159].into()),
            Message::Text("end".into())
        ]
    );
    // A reader that stops reading: cut off with a reason once 64 events wait for it. (The
    // socket buffers hold some too; publish until the gateway gives up.)
    let big = vec![b'x'; 16 << 10];
    let mut sent = 0;
    while g.stats().slow_cut.load(Ordering::Relaxed) == 0 {
        publisher.publish("chat", big.clone()).await.unwrap();
        sent += 1;
        assert!(sent < 100_000, "never cut off");
        if sent % 64 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Reading now: the queued events, then the close with its reason.
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(f)))) => break f,
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.starts_with("slow reader"), "{}", close.reason);
    let _ = ws.close(None).await;
}

const TOKENS: &str = r#"
[[token]]
name = "frontend"
secret = "frontend-secret-0001"
clusters = ["svc"]
topics = ["pub/*"]
allow = ["request", "subscribe"]

[[token]]
name = "metered"
secret = "metered-secret-00001"
clusters = ["svc"]
allow = ["request"]
rate_per_s = 1
burst = 3
"#;

#[tokio::test]
async fn a_token_reaches_only_what_it_was_given() {
    let n = node().await;
    let tokens = Arc::new(Tokens::parse(TOKENS).unwrap());
    let g = gateway(&n, |o| o.tokens = Some(tokens)).await;
    let at = g.local_addr();
    let _svc = register(port(&n), "svc", Svc).await.unwrap();
    let front = [("Authorization", "Bearer frontend-secret-0001")];
    assert_eq!(
        post(at, "/v1/clusters/svc/request", &front, b"a")
            .await
            .status,
        200
    );
    // No token, an unknown one: 401 with a JSON body.
    let r = post(at, "/v1/clusters/svc/request", &[], b"a").await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    let r = post(
        at,
        "/v1/clusters/svc/request",
        &[("Authorization", "Bearer nope-nope-nope-nope")],
        b"a",
    )
    .await;
    assert_eq!(r.status, 401);
    // Each pattern and name it was not given: 403.
    for (method, path) in [
        ("POST", "/v1/clusters/other/request"),
        ("POST", "/v1/clusters/svc/broadcast"),
        ("POST", "/v1/topics/pub%2Fx/publish"),
        ("GET", "/v1/topics/private/events"),
    ] {
        let r = http(at, method, path, &front, b"").await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
    }
    let (status, _) = sse(at, "/v1/topics/pub%2Fnews/events", &front).await;
    assert_eq!(status, 200);
    let (status, _) = sse(at, "/v1/topics/pub%2Fnews/events", &[]).await;
    assert_eq!(status, 401);
    // A WebSocket without a token is refused too; browsers, which cannot set its headers,
    // give the token as `access_token`.
    let url = format!("ws://{at}/v1/topics/pub%2Fnews/events");
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("{other:?}"),
    }
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{url}?access_token=frontend-secret-0001"))
            .await
            .unwrap();
    close_and_expect_answer(&mut ws).await;
    // Tunnels and memberships it was not given.
    for path in ["/v1/clusters/svc/tunnel", "/v1/clusters/svc/serve"] {
        let url = format!("ws://{at}{path}?access_token=frontend-secret-0001");
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
            other => panic!("{path}: {other:?}"),
        }
    }
    // The metered token: its burst of 3, then 429 with Retry-After.
    let metered = [("Authorization", "Bearer metered-secret-00001")];
    for _ in 0..3 {
        assert_eq!(
            post(at, "/v1/clusters/svc/request", &metered, b"m")
                .await
                .status,
            200
        );
    }
    let r = post(at, "/v1/clusters/svc/request", &metered, b"m").await;
    assert_eq!(
        (r.status, r.header("retry-after").as_deref()),
        (429, Some("1"))
    );
    assert!(g.stats().refused.load(Ordering::Relaxed) >= 8);
}

#[tokio::test]
async fn a_gateway_beyond_loopback_needs_tokens() {
    let n = node().await;
    let o = GatewayOptions::new("0.0.0.0:0".parse().unwrap(), port(&n));
    assert!(matches!(
        petal_gateway::start(o).await,
        Err(StartError::NeedsTokens(_))
    ));
}

#[tokio::test]
async fn browsers_are_let_in_from_the_configured_origins_only() {
    let n = node().await;
    let g = gateway(&n, |o| o.cors_origins = vec!["https://app.example".into()]).await;
    let at = g.local_addr();
    let _svc = register(port(&n), "svc", Svc).await.unwrap();
    let pre = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "POST"),
    ];
    let r = http(at, "OPTIONS", "/v1/clusters/svc/request", &pre, b"").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert!(
        r.header("access-control-allow-headers")
            .unwrap()
            .contains("petal-timeout-ms")
    );
    let r = post(
        at,
        "/v1/clusters/svc/request",
        &[("Origin", "https://app.example")],
        b"c",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    // Another origin: refused before anything runs (a "simple" POST would otherwise run
    // unseen), its preflight refused, and a WebSocket from it refused.
    let r = post(
        at,
        "/v1/clusters/svc/request",
        &[("Origin", "https://evil.example")],
        b"c",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("origin"))
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    let evil = [
        ("Origin", "https://evil.example"),
        ("Access-Control-Request-Method", "POST"),
    ];
    assert_eq!(
        http(at, "OPTIONS", "/v1/clusters/svc/request", &evil, b"")
            .await
            .status,
        403
    );
    let mut req = format!("ws://{at}/v1/topics/t/events")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("{other:?}"),
    }
    let mut req = format!("ws://{at}/v1/topics/t/events")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", "https://app.example".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .unwrap();
}

/// Closes a WebSocket and checks that the gateway answers the close frame (the closing
/// handshake completes instead of the connection being dropped).
async fn close_and_expect_answer<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::Message;
    ws.close(None).await.unwrap();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no answer to the close within 5 s");
        match next {
            Some(Ok(Message::Close(_))) => return,
            // Messages already under way before the close.
            Some(Ok(Message::Binary(_) | Message::Text(_))) => {}
            other => panic!("the close was not answered: {other:?}"),
        }
    }
}

/// Answers a tunnel's first message `close` by closing it, `drop` by ending its member's
/// connection (the tunnel breaks), anything else by echoing it; then echoes on.
struct TunnelEnds {
    svc: Arc<std::sync::Mutex<Option<petal_client::Service>>>,
}

impl ServiceHandler for TunnelEnds {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }

    fn handle_tunnel(&self, tunnel: petal_client::Tunnel) {
        let svc = self.svc.clone();
        tokio::spawn(async move {
            while let Ok(m) = tunnel.recv().await {
                match &m[..] {
                    b"close" => {
                        let _ = tunnel.close().await;
                        return;
                    }
                    b"drop" => {
                        let s = svc.lock().unwrap().take();
                        drop(s);
                        return;
                    }
                    b"flood" => {
                        let m = Bytes::from(vec![7u8; 1024]);
                        while tunnel
                            .send(m.clone(), Duration::from_secs(10))
                            .await
                            .is_ok()
                        {}
                        return;
                    }
                    _ => {
                        if tunnel.send(m, Duration::from_secs(10)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// Registers a `TunnelEnds` member of cluster "ends" on `n`, which holds its own service in
/// `holder` (so that a "drop" word drops it).
async fn register_ends(
    n: &NodeHandle,
    holder: &Arc<std::sync::Mutex<Option<petal_client::Service>>>,
) {
    let ends = TunnelEnds {
        svc: holder.clone(),
    };
    let svc = register(port(n), "ends", ends).await.unwrap();
    *holder.lock().unwrap() = Some(svc);
}

/// A WebSocket tunnel to cluster "ends" through the gateway at `at`.
async fn ends_tunnel(
    at: std::net::SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{at}/v1/clusters/ends/tunnel");
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// A tunnel the far end closes gracefully ends the WebSocket with 1000; one that breaks (its
/// member's connection gone) with 1011 and the node's reason; a client that closes while the
/// far end streams gets its close answered.
#[tokio::test]
async fn a_websocket_tunnel_ends_with_the_code_of_how_the_tunnel_ended() {
    use tokio_tungstenite::tungstenite::Message;
    let n = node().await;
    let g = gateway(&n, |_| {}).await;
    let at = g.local_addr();
    let holder = Arc::new(std::sync::Mutex::new(None));
    register_ends(&n, &holder).await;
    for (say, code) in [("close", 1000), ("drop", 1011)] {
        let mut ws = ends_tunnel(at).await;
        ws.send(Message::Binary(b"echo".to_vec().into()))
            .await
            .unwrap();
        ws.send(Message::Binary(say.as_bytes().to_vec().into()))
            .await
            .unwrap();
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap()
            {
                Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], b"echo"),
                Some(Ok(Message::Close(Some(f)))) => break f,
                other => panic!("{say}: {other:?}"),
            }
        };
        assert_eq!(u16::from(close.code), code, "{say}: {close:?}");
        assert!(!close.reason.is_empty(), "{say}: {close:?}");
    }
    // The far end streams without pause; the client closes in the middle.
    register_ends(&n, &holder).await;
    for _ in 0..5 {
        let mut ws = ends_tunnel(at).await;
        ws.send(Message::Binary(b"flood".to_vec().into()))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Binary(b))) => assert_eq!(b.len(), 1024),
            other => panic!("flood: {other:?}"),
        }
        close_and_expect_answer(&mut ws).await;
    }
}

#[tokio::test]
async fn a_websocket_tunnel_carries_messages_both_ways_in_order() {
    use tokio_tungstenite::tungstenite::Message;
    let n = node().await;
    let g = gateway(&n, |_| {}).await;
    let at = g.local_addr();
    // Echoes every message (none of them is one of `TunnelEnds`' words).
    let ends = TunnelEnds {
        svc: Arc::default(),
    };
    let _svc = register(port(&n), "echo", ends).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{at}/v1/clusters/echo/tunnel"))
            .await
            .unwrap();
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let sent = vec![b"one".to_vec(), big, b"three".to_vec()];
    for m in &sent {
        ws.send(Message::Binary(m.clone().into())).await.unwrap();
    }
    ws.send(Message::Text("four".into())).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Binary(b))) => got.push(b.to_vec()),
            other => panic!("{other:?}"),
        }
    }
    let mut want = sent.clone();
    want.push(b"four".to_vec());
    assert!(
        got == want,
        "messages differ (lengths {:?})",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    close_and_expect_answer(&mut ws).await;
    // No member takes a tunnel: the upgrade is answered 504.
    let mut req = format!("ws://{at}/v1/clusters/nobody/tunnel")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Petal-Timeout-Ms", "200".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 504),
        other => panic!("{other:?}"),
    }
    // A plain GET of a WebSocket path says so.
    let r = http(at, "GET", "/v1/clusters/echo/tunnel", &[], b"").await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("websocket_required"))
    );
}

#[tokio::test]
async fn a_websocket_member_answers_requests_and_hears_broadcasts() {
    use tokio_tungstenite::tungstenite::Message;
    let n = node().await;
    let g = gateway(&n, |_| {}).await;
    let at = g.local_addr();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{at}/v1/clusters/web/serve"))
        .await
        .unwrap();
    // The member answers: upper case, a fault for "bad", bytes echoed.
    let member = tokio::spawn(async move {
        let mut broadcasts = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            match v["type"].as_str().unwrap() {
                "broadcast" => {
                    broadcasts.push(v["body"].as_str().unwrap().to_string());
                    if broadcasts.len() == 1 {
                        break;
                    }
                }
                "request" => {
                    let id = v["id"].as_u64().unwrap();
                    let answer = match (v["body"].as_str(), v["body_b64"].as_str()) {
                        (Some("bad"), _) => {
                            serde_json::json!({"type":"fault","id":id,"message":"bad input"})
                        }
                        (Some(b), _) => {
                            serde_json::json!({"type":"reply","id":id,"body":b.to_uppercase()})
                        }
                        (None, Some(b)) => serde_json::json!({"type":"reply","id":id,"body_b64":b}),
                        _ => panic!("{v}"),
                    };
                    ws.send(Message::Text(answer.to_string().into()))
                        .await
                        .unwrap();
                }
                other => panic!("{other}"),
            }
        }
        (ws, broadcasts)
    });
    // The membership takes a moment to be in place.
    let mut r = post(
        at,
        "/v1/clusters/web/request",
        &[("Petal-Timeout-Ms", "300")],
        b"hi",
    )
    .await;
    for _ in 0..50 {
        if r.status == 200 {
            break;
        }
        r = post(
            at,
            "/v1/clusters/web/request",
            &[("Petal-Timeout-Ms", "300")],
            b"hi",
        )
        .await;
    }
    assert_eq!((r.status, &r.body[..]), (200, &b"HI"[..]));
    let r = post(at, "/v1/clusters/web/request", &[], b"bad").await;
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (502, Some("bad input"))
    );
    let r = post(at, "/v1/clusters/web/request", &[], &[0, 159, 255]).await;
    assert_eq!((r.status, &r.body[..]), (200, &[0u8, 159, 255][..]));
    assert_eq!(
        post(at, "/v1/clusters/web/broadcast", &[], b"to all")
            .await
            .status,
        202
    );
    let (mut ws, broadcasts) = tokio::time::timeout(Duration::from_secs(10), member)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(broadcasts, vec!["to all".to_string()]);
    // The member leaves: requests find no member and time out (a request under way as it
    // leaves fails with "the member left").
    close_and_expect_answer(&mut ws).await;
    drop(ws);
    let mut status = 0;
    for _ in 0..50 {
        status = post(
            at,
            "/v1/clusters/web/request",
            &[("Petal-Timeout-Ms", "300")],
            b"hi",
        )
        .await
        .status;
        if status == 504 {
            break;
        }
    }
    assert_eq!(status, 504);
}

#[tokio::test]
async fn the_gateway_speaks_tls_with_the_given_certificate() {
    use tokio_rustls::rustls;
    let n = node().await;
    let _svc = register(port(&n), "svc", Svc).await.unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("petal-gateway-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls = petal_gateway::tls_config(&cert, &key).unwrap();
    let g = gateway(&n, |o| o.tls = Some(tls)).await;
    // A client that trusts the certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    #[allow(deprecated, reason = "the gateway's provider")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(g.local_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(b"POST /v1/clusters/svc/request HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 3\r\n\r\nsec")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("re: sec"), "{text}");
    // Plain HTTP to the TLS port gets no answer.
    let mut plain = TcpStream::connect(g.local_addr()).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));
    // Bad files say what is wrong.
    let e = petal_gateway::tls_config(&key, &key).unwrap_err();
    assert!(e.contains("no certificate"), "{e}");
    let e = petal_gateway::tls_config(&cert, &cert).unwrap_err();
    assert!(e.contains("private key"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_openapi_document_lists_every_path_the_gateway_serves() {
    let n = node().await;
    let tokens = Arc::new(Tokens::parse(TOKENS).unwrap());
    let g = gateway(&n, |o| o.tokens = Some(tokens)).await;
    // Served without a token.
    let r = http(g.local_addr(), "GET", "/v1/openapi.json", &[], b"").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let served = [
        "/v1/clusters/{cluster}/request",
        "/v1/clusters/{cluster}/broadcast",
        "/v1/topics/{topic}/publish",
        "/v1/topics/{topic}/events",
        "/v1/clusters/{cluster}/tunnel",
        "/v1/clusters/{cluster}/serve",
        "/v1/openapi.json",
    ];
    assert_eq!(paths.len(), served.len(), "{paths:?}");
    for p in served {
        assert!(paths.contains(&p), "{p} not documented");
        // And the gateway serves it (anything but 404).
        let concrete = p.replace("{cluster}", "c").replace("{topic}", "t");
        let post = ["request", "broadcast", "publish"]
            .iter()
            .any(|x| p.ends_with(x));
        let r = http(
            g.local_addr(),
            if post { "POST" } else { "GET" },
            &concrete,
            &[],
            b"",
        )
        .await;
        assert_ne!(r.status, 404, "{p}");
    }
}

#[tokio::test]
async fn a_gateway_reaches_its_node_over_tcp_too() {
    let n = node().await;
    let g = gateway(&n, |o| o.local = None).await;
    let at = g.local_addr();
    let _svc = register(port(&n), "svc", Svc).await.unwrap();
    let r = post(at, "/v1/clusters/svc/request", &[], b"tcp").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"re: tcp"[..]));
    let (status, mut events) = sse(at, "/v1/topics/t/events", &[]).await;
    assert_eq!(status, 200);
    let publisher = Connection::connect(port(&n)).await.unwrap();
    let first = async {
        loop {
            publisher.publish("t", "over tcp").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        e = next_event(&mut events) => assert_eq!(e, Some(("message".into(), "over tcp".into()))),
        () = first => {}
    }
}

#[tokio::test]
async fn a_slow_event_stream_reader_is_cut_off_with_a_reason() {
    let n = node().await;
    let g = gateway(&n, |o| o.event_queue = 64).await;
    let (status, mut r) = sse(g.local_addr(), "/v1/topics/flood/events", &[]).await;
    assert_eq!(status, 200);
    let publisher = Connection::connect(port(&n)).await.unwrap();
    let first = async {
        loop {
            publisher.publish("flood", "ping").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        e = next_event(&mut r) => assert!(e.is_some()),
        () = first => {}
    }
    // The reader stops reading while events pour in.
    let big = vec![b'y'; 16 << 10];
    let mut sent = 0;
    while g.stats().slow_cut.load(Ordering::Relaxed) == 0 {
        publisher.publish("flood", big.clone()).await.unwrap();
        sent += 1;
        assert!(sent < 100_000, "never cut off");
        if sent % 64 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Reading again: what was queued, then the error event, then the end.
    let last = loop {
        match next_event(&mut r).await {
            Some(e) if e.0 == "error" => break e,
            Some(_) => {}
            None => panic!("the stream ended without saying why"),
        }
    };
    assert!(last.1.starts_with("slow reader"), "{last:?}");
}

#[tokio::test]
async fn without_tokens_only_requests_to_this_machine_are_served() {
    let n = node().await;
    let g = gateway(&n, |_| {}).await;
    // A page that rebinds its own name to 127.0.0.1 sends its name as the Host.
    let r = post(
        g.local_addr(),
        "/v1/topics/t/publish",
        &[("Host", "evil.example")],
        b"x",
    )
    .await;
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("host")));
    for host in ["localhost:8080", "127.0.0.1", "[::1]:1"] {
        let r = post(
            g.local_addr(),
            "/v1/topics/t/publish",
            &[("Host", host)],
            b"x",
        )
        .await;
        assert_eq!(r.status, 202, "{host}");
    }
}

/// Sends a request head declaring `len` body bytes and `sent` of them; the answer's status
/// and how long it took.
async fn partial_body(
    at: SocketAddr,
    auth: Option<&str>,
    len: usize,
    sent: usize,
) -> (u16, Duration) {
    let mut s = TcpStream::connect(at).await.unwrap();
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST /v1/clusters/svc/request HTTP/1.1\r\nHost: {at}\r\n{auth}Content-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'x'; sent]).await.unwrap();
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    (text[9..12].parse().unwrap(), start.elapsed())
}

#[tokio::test]
async fn tokens_are_checked_before_the_body_is_read_and_slow_bodies_end() {
    let n = node().await;
    let tokens = Arc::new(Tokens::parse(TOKENS).unwrap());
    let g = gateway(&n, |o| {
        o.tokens = Some(tokens);
        o.header_timeout = Duration::from_millis(300);
    })
    .await;
    let _svc = register(port(&n), "svc", Svc).await.unwrap();
    // No token: refused at once, without waiting for the megabyte it announced.
    let (status, took) = partial_body(g.local_addr(), None, 1 << 20, 0).await;
    assert_eq!(status, 401);
    assert!(took < Duration::from_millis(250), "{took:?}");
    // A token, and a body that stops coming: 408 after the header timeout.
    let (status, took) = partial_body(g.local_addr(), Some("frontend-secret-0001"), 10, 1).await;
    assert_eq!(status, 408);
    assert!(took >= Duration::from_millis(250), "{took:?}");
}

#[tokio::test]
async fn websockets_keep_their_place_in_the_connection_limits() {
    use tokio_tungstenite::tungstenite::Message;
    let n = node().await;
    let g = gateway(&n, |o| o.max_connections_per_ip = 2).await;
    let url = format!("ws://{}/v1/topics/lim/events", g.local_addr());
    let (mut a, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (b, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // A third connection from the same address is closed at once.
    assert!(tokio_tungstenite::connect_async(&url).await.is_err());
    // One closes: its place is free again.
    a.send(Message::Close(None)).await.unwrap();
    while let Some(Ok(_)) = a.next().await {}
    drop(a);
    let mut ok = false;
    for _ in 0..100 {
        if let Ok((c, _)) = tokio_tungstenite::connect_async(&url).await {
            drop(c);
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the closed WebSocket's place was not freed");
    drop(b);
}

/// A WebSocket member that is slow to read still has its answers read: the gateway's writes to
/// it (requests and broadcasts, waiting on the member's TCP window) do not hold up the replies
/// it sends. Here the member stops reading after a request, the gateway's writes to it back up
/// behind 64 MiB of broadcasts, and then the member answers: the requester has its reply at
/// once, not when the gateway's write gives up.
#[tokio::test]
async fn a_member_slow_to_read_still_has_its_replies_read() {
    use tokio_tungstenite::tungstenite::Message;
    let n = node().await;
    let g = gateway(&n, |o| {
        o.write_timeout = Duration::from_secs(30);
        o.max_body = 512 << 10;
    })
    .await;
    let at = g.local_addr();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{at}/v1/clusters/web/serve"))
        .await
        .unwrap();
    // The member answers "ping" until a request "held" comes, then reads no more.
    let member = tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "request" {
                continue;
            }
            let id = v["id"].as_u64().unwrap();
            if v["body"] == "held" {
                return (ws, id);
            }
            let answer = serde_json::json!({"type":"reply","id":id,"body":"pong"});
            ws.send(Message::Text(answer.to_string().into()))
                .await
                .unwrap();
        }
        panic!("the member's socket ended");
    });
    let ping = || {
        post(
            at,
            "/v1/clusters/web/request",
            &[("Petal-Timeout-Ms", "300")],
            b"ping",
        )
    };
    let mut r = ping().await;
    for _ in 0..50 {
        if r.status == 200 {
            break;
        }
        r = ping().await;
    }
    assert_eq!((r.status, &r.body[..]), (200, &b"pong"[..]));
    let held = tokio::spawn(async move {
        let r = post(
            at,
            "/v1/clusters/web/request",
            &[("Petal-Timeout-Ms", "8000")],
            b"held",
        )
        .await;
        (r.status, r.body)
    });
    let (mut ws, id) = tokio::time::timeout(Duration::from_secs(10), member)
        .await
        .unwrap()
        .unwrap();
    // 64 MiB the member does not read: more than the sockets hold, so the gateway's write
    // waits; 16 MiB more wait in its queue, and the rest is dropped (broadcasts are best
    // effort), as are requests ("member busy"): a member that does not read cannot grow the
    // gateway's memory.
    let body = vec![b'x'; 256 << 10];
    for _ in 0..256 {
        assert_eq!(
            post(at, "/v1/clusters/web/broadcast", &[], &body)
                .await
                .status,
            202
        );
    }
    // 64 fit in the queue, and the sockets hold a few MiB (up to ~12 with loopback's default
    // maximum buffers): 178 dropped in each of 5 runs (none without the bound). The last
    // broadcasts may still be on their way to the member's handler.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let dropped = g.stats().member_drops.load(Ordering::Relaxed);
        if dropped >= 120 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{dropped} of 256 broadcasts dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = post(
        at,
        "/v1/clusters/web/request",
        &[("Petal-Timeout-Ms", "2000")],
        &body,
    )
    .await;
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (502, Some("member busy"))
    );
    let answer = serde_json::json!({"type":"reply","id":id,"body":"kept"});
    let sent = std::time::Instant::now();
    ws.send(Message::Text(answer.to_string().into()))
        .await
        .unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(15), held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, &body[..]), (200, &b"kept"[..]));
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the reply waited {took:?} for the gateway's write to the member"
    );
    // Reading again, the member gets what waited, then new broadcasts: every queued byte came
    // back to its queue (a leak would leave it full, and every broadcast dropped).
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m
                && t.contains("\"after\"")
            {
                return;
            }
        }
        panic!("the member's socket ended");
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "no broadcast reached the member after it read again"
        );
        post(at, "/v1/clusters/web/broadcast", &[], b"after").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.await.unwrap();
}
