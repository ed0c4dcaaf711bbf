//! Brokerless (embedded) mode: applications in the node's process get petal-client's
//! `Connection` and `Service` from `NodeHandle::connect` / `register`, without a socket or
//! the relay codec, and keep every guarantee they have over TCP: every pattern works, embedded
//! and TCP applications reach each other across nodes, bad packets are refused alone, a full
//! input queue keeps order and loses nothing, closes and the node's shutdown answer everything,
//! and an application far behind on its replies is cut off alone.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_client::{Connection, Error, Options, ServiceHandler, Tunnel};
use petal_protocol::relay::RelayError;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(5);

/// Echoes requests (a request "fault" fails, "big" answers past the node's message limit,
/// "long fault" fails with a text past the string limit, "hang" never answers), forwards
/// broadcasts, echoes tunnel messages.
#[derive(Clone)]
struct Echo {
    broadcasts: mpsc::UnboundedSender<Bytes>,
    drops: mpsc::UnboundedSender<String>,
}

fn echo() -> (
    Echo,
    mpsc::UnboundedReceiver<Bytes>,
    mpsc::UnboundedReceiver<String>,
) {
    let (broadcasts, b) = mpsc::unbounded_channel();
    let (drops, d) = mpsc::unbounded_channel();
    (Echo { broadcasts, drops }, b, d)
}

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        match &request[..] {
            b"fault" => Err("no such thing".into()),
            b"big" => Ok(Bytes::from(vec![1u8; (16 << 20) + 1])),
            b"long fault" => Err("é".repeat(40_000)),
            b"hang" => std::future::pending().await,
            _ => Ok(request),
        }
    }

    fn handle_broadcast(&self, message: Bytes) {
        let _ = self.broadcasts.send(message);
    }

    fn handle_tunnel(&self, tunnel: Tunnel) {
        tokio::spawn(async move {
            while let Ok(m) = tunnel.recv().await {
                if tunnel.send(m, T).await.is_err() {
                    break;
                }
            }
        });
    }

    fn handle_drop(&self, reason: String) {
        let _ = self.drops.send(reason);
    }
}

async fn sessions(n: &petal_node::NodeHandle) -> usize {
    n.inspect().await.unwrap().sessions.len()
}

async fn wait_sessions(n: &petal_node::NodeHandle, want: usize) {
    let deadline = tokio::time::Instant::now() + T;
    while sessions(n).await != want {
        assert!(tokio::time::Instant::now() < deadline, "sessions stay");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Subscribes `c` to `topic`, events into a channel.
async fn subscribe(c: &Connection, topic: &str) -> mpsc::UnboundedReceiver<Bytes> {
    let (tx, rx) = mpsc::unbounded_channel();
    c.subscribe(topic, move |e: Bytes| {
        let _ = tx.send(e);
    })
    .await
    .unwrap();
    rx
}

/// Publishes until the subscriber hears (the subscription travels to the topic's root).
async fn publish_until_heard(p: &Connection, topic: &str, rx: &mut mpsc::UnboundedReceiver<Bytes>) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        p.publish(topic, "warm").await.unwrap();
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
            assert_eq!(&e[..], b"warm");
            while rx.try_recv().is_ok() {}
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no event heard");
    }
}

#[tokio::test]
async fn every_pattern_works_between_embedded_applications() {
    let n = node(0x11, vec![]).await;
    let (h, mut broadcasts, _) = echo();
    let svc = n.register("echo", h).await.unwrap();
    assert_eq!(svc.cluster(), "echo");
    let c = n.connect().await.unwrap();
    assert_eq!(sessions(&n).await, 2);

    assert_eq!(&c.request("echo", "hi", T).await.unwrap()[..], b"hi");
    assert!(
        matches!(c.request("echo", "fault", T).await, Err(Error::Remote(f)) if f == "no such thing")
    );
    assert!(matches!(
        c.request("nobody", "x", Duration::from_millis(50)).await,
        Err(Error::Timeout)
    ));
    c.broadcast("echo", "to all").await.unwrap();
    assert_eq!(
        &tokio::time::timeout(T, broadcasts.recv())
            .await
            .unwrap()
            .unwrap()[..],
        b"to all"
    );

    let mut events = subscribe(&c, "news").await;
    publish_until_heard(&svc, "news", &mut events).await;
    for i in 0..100u32 {
        svc.publish("news", Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    for i in 0..100u32 {
        let e = tokio::time::timeout(T, events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&e[..], &i.to_be_bytes(), "events in order, none lost");
    }

    // A tunnel carries a 1 MiB message and many small ones, in order, both ways.
    let tun = c.tunnel("echo", T).await.unwrap();
    let big = pattern(7, 1 << 20);
    tun.send(big.clone(), T).await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, tun.recv()).await.unwrap().unwrap(),
        big
    );
    for i in 0..500u32 {
        tun.send(Bytes::from(i.to_be_bytes().to_vec()), T)
            .await
            .unwrap();
    }
    for i in 0..500u32 {
        assert_eq!(&tun.recv().await.unwrap()[..], &i.to_be_bytes());
    }
    tun.close().await.unwrap();

    // Petal's extension: the store.
    c.kv_put("k", "v", None, T).await.unwrap();
    assert_eq!(&c.kv_get("k", T).await.unwrap().unwrap().value[..], b"v");

    c.close().await.unwrap();
    svc.close().await.unwrap();
    wait_sessions(&n, 0).await;
}

#[tokio::test]
async fn embedded_and_tcp_applications_reach_each_other_across_nodes() {
    let a = node(0x1000_0000_0000_0000_0000_0000_0000_0021, vec![]).await;
    let b = node(
        0x9000_0000_0000_0000_0000_0000_0000_0022,
        vec![a.info().addr],
    )
    .await;
    wait_ready(&[&a, &b], 1).await;
    // An embedded service at a, a TCP service at b.
    let (ha, _, _) = echo();
    let _sa = a.register("at-a", ha).await.unwrap();
    let (hb, _, _) = echo();
    let _sb = Options::default()
        .register_addr(relay_addr(&b), "at-b", hb)
        .await
        .unwrap();
    let embedded = a.connect().await.unwrap();
    let tcp = Connection::connect_addr(relay_addr(&b)).await.unwrap();
    for (who, c) in [("embedded", &embedded), ("tcp", &tcp)] {
        for cluster in ["at-a", "at-b"] {
            let got = request_until_answered(c, cluster).await;
            assert_eq!(&got[..], b"ping", "{who} -> {cluster}");
        }
    }
    // Events both ways.
    let mut at_a = subscribe(&embedded, "t1").await;
    publish_until_heard(&tcp, "t1", &mut at_a).await;
    let mut at_b = subscribe(&tcp, "t2").await;
    publish_until_heard(&embedded, "t2", &mut at_b).await;
    // A tunnel from the embedded client to the TCP service on the other node.
    let tun = embedded.tunnel("at-b", T).await.unwrap();
    let m = pattern(3, 300_000);
    tun.send(m.clone(), T).await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, tun.recv()).await.unwrap().unwrap(),
        m
    );
}

/// Requests until a member answers (the membership travels to the cluster's root first).
async fn request_until_answered(c: &Connection, cluster: &str) -> Bytes {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match c.request(cluster, "ping", Duration::from_millis(200)).await {
            Ok(r) => return r,
            Err(Error::Timeout) if tokio::time::Instant::now() < deadline => {}
            Err(e) => panic!("{cluster}: {e}"),
        }
    }
}

#[tokio::test]
async fn packets_past_the_limits_are_refused_alone() {
    let mut o = options(0x31, vec![]);
    o.max_message = 1 << 16;
    let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
    let (h, _, _) = echo();
    let _svc = n.register("echo", h).await.unwrap();
    let c = n.connect().await.unwrap();
    let big = Bytes::from(vec![0u8; (1 << 16) + 1]);
    let e = c.request("echo", big.clone(), T).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Protocol(RelayError::TooLong {
                what: "request",
                ..
            })
        ),
        "{e}"
    );
    let e = c.publish("t", big).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Protocol(RelayError::TooLong { what: "event", .. })
        ),
        "{e}"
    );
    let e = c
        .subscribe(&"x".repeat(70_000), |_: Bytes| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Protocol(RelayError::TooLong { what: "topic", .. })
        ),
        "{e}"
    );
    // A reply past the limit reaches the requester as a fault, at once.
    let e = c.request("echo", "big", T).await.unwrap_err();
    assert!(
        matches!(&e, Error::Remote(f) if f.contains("reply was refused")),
        "{e}"
    );
    // A fault text past the string limit (80,000 bytes) is cut to it, at a character boundary.
    let e = c.request("echo", "long fault", T).await.unwrap_err();
    assert!(
        matches!(&e, Error::Remote(f) if f.len() == 65_534 && f.chars().all(|c| c == 'é')),
        "{e:.80}"
    );
    // Nothing else was affected.
    assert_eq!(&c.request("echo", "ok", T).await.unwrap()[..], b"ok");
    assert!(!c.is_closed());
}

#[tokio::test]
async fn a_full_input_queue_keeps_order_and_loses_nothing() {
    let mut o = options(0x41, vec![]);
    // Hand-overs find the node's channel full all the time: the sessions' tasks take over.
    o.input_queue = 2;
    let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
    let (h, _, _) = echo();
    let _svc = n.register("echo", h).await.unwrap();
    let c = n.connect().await.unwrap();
    let mut events = subscribe(&c, "seq").await;
    let p = n.connect().await.unwrap();
    publish_until_heard(&p, "seq", &mut events).await;
    let answered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (c, answered) = (c.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..500u64 {
                let body = Bytes::from(format!("{t}-{i}"));
                let r = c.request("echo", body.clone(), T).await.unwrap();
                assert_eq!(r, body);
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..5_000u32 {
        p.publish("seq", Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    for i in 0..5_000u32 {
        let e = tokio::time::timeout(T, events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&e[..], &i.to_be_bytes(), "event {i} out of order or lost");
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(answered.load(Ordering::Relaxed), 4_000);
    assert_eq!(c.stats().dropped_events, 0);
}

#[tokio::test]
async fn dropped_connections_leave_and_shutdown_answers_everything() {
    let n = node(0x51, vec![]).await;
    // A dropped connection leaves the node (no close called).
    let c = n.connect().await.unwrap();
    assert_eq!(sessions(&n).await, 1);
    drop(c);
    wait_sessions(&n, 0).await;

    let (h, _, mut drops) = echo();
    let svc = n.register("echo", h).await.unwrap();
    let c = n.connect().await.unwrap();
    let tun = c.tunnel("echo", T).await.unwrap();
    // A request the service never answers: the node's shutdown answers it.
    let pending = tokio::spawn({
        let c = c.clone();
        async move { c.request("echo", "hang", Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let connector = n.local_connector();
    n.shutdown().await;
    let r = tokio::time::timeout(T, pending).await.unwrap().unwrap();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(tun.recv().await.is_err(), "the tunnel ended");
    let reason = tokio::time::timeout(T, drops.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(reason.contains("shutting down"), "{reason}");
    assert!(c.is_closed() && svc.is_closed());
    // Nothing attaches to a stopped node.
    let e = connector.connect(Options::default()).await.unwrap_err();
    assert!(
        matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::NotConnected),
        "{e}"
    );
}

#[tokio::test]
async fn an_attach_abandoned_during_its_handshake_leaves_the_node() {
    let n = node(0x61, vec![]).await;
    // Polled once: the attach is sent to the node, then its answer is not waited for.
    for _ in 0..3 {
        let (h, _, _) = echo();
        assert!(
            poll_once(n.register("gone", h)).await,
            "the register was cut short"
        );
        assert!(poll_once(n.connect()).await, "the connect was cut short");
    }
    // Attached after the abandoned ones (the node takes attaches in order): then only this
    // one remains.
    let c = n.connect().await.unwrap();
    wait_sessions(&n, 1).await;
    // No dead member holds the cluster: a request finds nobody (a timeout, not a loss).
    let e = c
        .request("gone", "x", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout), "{e}");
}

/// Polls `fut` once and drops it; true when it was still pending.
async fn poll_once<F: std::future::Future>(fut: F) -> bool {
    tokio::pin!(fut);
    tokio::select! {
        biased;
        _ = &mut fut => false,
        () = std::future::ready(()) => true,
    }
}

/// A cluster member that holds every request until `go` turns true, counting them, then
/// answers an empty one with 64 KiB and echoes any other.
#[derive(Clone)]
struct Gated {
    go: tokio::sync::watch::Receiver<bool>,
    seen: Arc<AtomicU64>,
}

impl ServiceHandler for Gated {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        let _ = self.go.clone().wait_for(|&go| go).await;
        Ok(if request.is_empty() {
            Bytes::from(vec![7u8; 64 * 1024])
        } else {
            request
        })
    }
}

/// An embedded application that stops reading while the node owes it replies (which are
/// never dropped) is cut off once it is `session_max_bytes` behind, as a TCP client is: every
/// request it has out fails at once instead of hanging, the node stays bounded, and another
/// application on the same node keeps working. The application's reader is stopped for real:
/// it runs on a one-thread runtime of its own, whose thread the test blocks while the replies
/// come, until the node has cut it off.
#[test]
fn an_embedded_application_far_behind_on_replies_is_cut_off_alone() {
    let node_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (go, gate) = tokio::sync::watch::channel(false);
    let seen = Arc::new(AtomicU64::new(0));
    let (n, _svc) = node_rt.block_on(async {
        let mut o = options(0x71, vec![]);
        o.session_queue_bytes = 1 << 20;
        o.session_max_bytes = 2 << 20;
        let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
        let member = Gated {
            go: gate,
            seen: seen.clone(),
        };
        // Every request handled at once (the gate holds them all).
        let mut member_options = petal_client::Options::default();
        member_options.request_handlers = 64;
        let svc = n
            .local_connector()
            .register(member_options, "gated", member)
            .await
            .unwrap();
        (n, svc)
    });
    let local = n.local_connector();
    let before = node_rt.block_on(n.stats()).unwrap().memory_used;
    // Told when the node has cut the application off (or given up waiting for it).
    let (cut_tx, cut_rx) = std::sync::mpsc::channel::<()>();
    let lazy = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = local
                .connect(petal_client::Options::default())
                .await
                .unwrap();
            // 64 empty requests, each answered with 64 KiB: 4 MiB of replies, twice the
            // session's limit. (Large requests would not do: requests, unlike replies, are
            // dropped for a member behind on its own queue.)
            let calls: Vec<_> = (0..64)
                .map(|_| {
                    let c = c.clone();
                    tokio::spawn(
                        async move { c.request("gated", "", Duration::from_secs(20)).await },
                    )
                })
                .collect();
            let deadline = tokio::time::Instant::now() + T;
            while seen.load(Ordering::Relaxed) < 64 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "requests not delivered"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Stop reading: this runtime's only thread blocks while the replies come, until
            // the node has cut the application off.
            go.send(true).unwrap();
            let cut = cut_rx.recv_timeout(Duration::from_secs(15));
            assert!(cut.is_ok(), "the node never cut the application off");
            for call in calls {
                let outcome = tokio::time::timeout(T, call)
                    .await
                    .expect("a request of the cut-off application hung")
                    .unwrap();
                assert!(outcome.is_err(), "a reply was delivered after the cut-off");
            }
            assert!(c.is_closed(), "the cut-off connection is closed");
        });
    });
    let cut_off = node_rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = n.stats().await.unwrap();
            if s.runtime.slow_closed == 1 {
                return Ok(s.memory_used);
            }
            if tokio::time::Instant::now() >= deadline || lazy.is_finished() {
                return Err(s.runtime);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let held = match cut_off {
        Ok(held) => held,
        Err(runtime) => {
            // The application's thread failed first (its panic shows), or the node never cut it.
            drop(cut_tx);
            lazy.join().unwrap();
            panic!("the embedded application was not cut off: {runtime:?}");
        }
    };
    // The unread replies counted against the node while the application held them.
    assert!(
        held > before + (1 << 20),
        "{held} bytes held at the cut-off, {before} before it"
    );
    cut_tx.send(()).unwrap();
    node_rt.block_on(async {
        // Nobody else noticed: a new application gets its replies from the same member.
        let other = n.connect().await.unwrap();
        let r = other.request("gated", "still here", T).await.unwrap();
        assert_eq!(&r[..], b"still here");
    });
    lazy.join().unwrap();
    node_rt.block_on(async {
        // The member's alone is left (the cut-off and the other application are gone), and
        // the replies it never read no longer count against the node's memory.
        wait_sessions(&n, 1).await;
        let used = n.stats().await.unwrap().memory_used;
        assert!(
            used <= before + (64 << 10),
            "{used} bytes held after the cut-off, {before} before it"
        );
        n.shutdown().await;
    });
}
