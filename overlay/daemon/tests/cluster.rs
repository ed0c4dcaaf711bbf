//! Three real `petald` processes on 127.0.0.1, .2 and .3 (the second and third join through
//! the first with `--seed`), with applications on different nodes: requests, broadcasts,
//! publishes, node-enforced timeouts and a 16 MiB tunnel echo cross the peer links.
//!
//! Registrations and subscriptions travel through the overlay, so each kind of traffic gets a
//! warm-up of at most 2 s first (retrying requests that time out, re-sending broadcasts and
//! events until every recipient got one); after it, every message must arrive exactly once.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use petal_client::{Connection, Error, Service, ServiceHandler, Tunnel, register};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const SECOND: Duration = Duration::from_secs(1);
const WARM_UP: Duration = Duration::from_secs(2);

/// A member of the test cluster: replies `<tag>: <request>`, reports broadcasts, echoes
/// tunnels.
struct Member {
    tag: &'static str,
    broadcasts: mpsc::UnboundedSender<Bytes>,
}

impl ServiceHandler for Member {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        let mut out = format!("{}: ", self.tag).into_bytes();
        out.extend_from_slice(&request);
        Ok(out.into())
    }

    fn handle_broadcast(&self, message: Bytes) {
        let _ = self.broadcasts.send(message);
    }

    fn handle_tunnel(&self, tunnel: Tunnel) {
        tokio::spawn(async move {
            while let Ok(message) = tunnel.recv().await {
                if tunnel.send(message, 10 * SECOND).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Answers after 25 ms.
struct Sleepy;

impl ServiceHandler for Sleepy {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        tokio::time::sleep(Duration::from_millis(25)).await;
        Ok(request)
    }
}

async fn member(port: u16, tag: &'static str) -> (Service, mpsc::UnboundedReceiver<Bytes>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = register(
        port,
        "across",
        Member {
            tag,
            broadcasts: tx,
        },
    )
    .await
    .expect("register");
    (svc, rx)
}

/// Receives from every receiver until each got one message starting with `prefix`, calling
/// `send` every 50 ms; fails after the warm-up time.
async fn warm_up<F, Fut>(what: &str, rxs: &mut [&mut mpsc::UnboundedReceiver<Bytes>], send: F)
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = ()>,
{
    let deadline = Instant::now() + WARM_UP;
    let mut got = vec![false; rxs.len()];
    let mut round = 0;
    while got.iter().any(|g| !g) {
        assert!(
            Instant::now() < deadline,
            "{what}: not every recipient reached within {WARM_UP:?} ({got:?})"
        );
        send(round).await;
        round += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (i, rx) in rxs.iter_mut().enumerate() {
            while let Ok(m) = rx.try_recv() {
                got[i] |= m.starts_with(b"warm-up");
            }
        }
    }
    // Late warm-up copies must not be mistaken for the real messages.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for rx in rxs.iter_mut() {
        while let Ok(m) = rx.try_recv() {
            assert!(m.starts_with(b"warm-up"), "{what}: unexpected {m:?}");
        }
    }
}

/// Collects `n` messages from `rx` (5 s at most), then checks that nothing more arrives for
/// 100 ms; returns them sorted.
async fn collect(what: &str, rx: &mut mpsc::UnboundedReceiver<Bytes>, n: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = within(5 * SECOND, what, rx.recv()).await.unwrap();
        out.push(m);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Ok(m) = rx.try_recv() {
        panic!("{what}: an extra message {m:?}");
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_requests_broadcasts_publishes_and_tunnels_across() {
    let t_start = Instant::now();
    let a = Daemon::start(&Spec::alone()).await;
    let joiner = |n| Spec {
        peer_ip: lo(n),
        seeds: vec![a.peer],
        ..Spec::alone()
    };
    let b = Daemon::start(&joiner(2)).await;
    let c = Daemon::start(&joiner(3)).await;
    for (name, d) in [("b", &b), ("c", &c)] {
        assert!(
            d.wait_log("joined the ring", 5 * SECOND).await,
            "node {name} did not join within 5 s"
        );
    }
    println!(
        "three daemons started and joined in {:?}",
        t_start.elapsed()
    );

    // Members of "across" on b and c; plain clients on a and b.
    let (svc_b, mut bc_b) = member(b.port, "b").await;
    let (svc_c, mut bc_c) = member(c.port, "c").await;
    let on_a = Connection::connect(a.port).await.expect("connect a");
    let on_b = Connection::connect(b.port).await.expect("connect b");

    // Requests: warm up until a member is known from a, then 5 requesters on a and 5 on b
    // send 25 requests each.
    let t0 = Instant::now();
    loop {
        match on_a
            .request("across", "warm-up", Duration::from_millis(200))
            .await
        {
            Ok(_) => break,
            Err(Error::Timeout) if t0.elapsed() < WARM_UP => {}
            Err(e) => panic!("no member reachable from a after {:?}: {e}", t0.elapsed()),
        }
    }
    println!("first request across answered after {:?}", t0.elapsed());
    let mut set = JoinSet::new();
    for (node, conn) in [("a", &on_a), ("b", &on_b)] {
        for r in 0..5 {
            let conn = conn.clone();
            set.spawn(async move {
                let mut by = BTreeMap::new();
                for j in 0..25 {
                    let request = format!("from {node}, requester {r}, request {j}");
                    let reply = conn
                        .request("across", request.clone(), SECOND)
                        .await
                        .unwrap_or_else(|e| panic!("{request}: {e}"));
                    let (tag, rest) = reply.split_at(3);
                    assert!(tag == b"b: " || tag == b"c: ", "{reply:?}");
                    assert_eq!(rest, request.as_bytes());
                    *by.entry(tag[0] as char).or_insert(0) += 1;
                }
                by
            });
        }
    }
    let mut by = BTreeMap::new();
    while let Some(r) = within(20 * SECOND, "requests across", set.join_next()).await {
        for (k, v) in r.unwrap() {
            *by.entry(k).or_insert(0) += v;
        }
    }
    println!("250 requests across: answered by {by:?}");
    let mut lat = Vec::new();
    for i in 0..100 {
        let t = Instant::now();
        on_a.request("across", vec![i as u8], SECOND)
            .await
            .expect("request");
        lat.push(t.elapsed());
    }
    let (median, max) = median_max(&mut lat);
    println!("request a -> member: median {median:?}, max {max:?}");

    // Timeouts across: a 25 ms member on c answers a 50 ms request from a, not a 12 ms one;
    // 1 ms requests time out.
    let _sleepy = register(c.port, "sleepy", Sleepy).await.expect("register");
    let t0 = Instant::now();
    while let Err(e) = on_a.request("sleepy", "warm-up", SECOND).await {
        assert!(
            matches!(e, Error::Timeout) && t0.elapsed() < WARM_UP,
            "sleepy member unreachable: {e}"
        );
    }
    for round in 0..3 {
        let r = on_a
            .request("sleepy", "long", Duration::from_millis(50))
            .await;
        assert_eq!(r.expect("50 ms across"), &b"long"[..], "round {round}");
        let r = on_a
            .request("sleepy", "short", Duration::from_millis(12))
            .await;
        assert!(matches!(r, Err(Error::Timeout)), "round {round}: {r:?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut set = JoinSet::new();
    for i in 0..8u8 {
        let on_a = on_a.clone();
        set.spawn(async move {
            let r = on_a
                .request("sleepy", vec![i], Duration::from_millis(1))
                .await;
            assert!(matches!(r, Err(Error::Timeout)), "1 ms request {i}: {r:?}");
        });
    }
    while let Some(r) = within(SECOND, "1 ms requests across", set.join_next()).await {
        r.unwrap();
    }

    // Broadcasts from a reach the members on b and c, each exactly once.
    warm_up("broadcast", &mut [&mut bc_b, &mut bc_c], |i| {
        let on_a = on_a.clone();
        async move {
            on_a.broadcast("across", format!("warm-up {i}"))
                .await
                .unwrap();
        }
    })
    .await;
    let sent: Vec<Bytes> = (0..25)
        .map(|i| format!("broadcast {i:02}").into())
        .collect();
    for m in &sent {
        on_a.broadcast("across", m.clone()).await.unwrap();
    }
    assert_eq!(collect("broadcasts at b", &mut bc_b, 25).await, sent);
    assert_eq!(collect("broadcasts at c", &mut bc_c, 25).await, sent);

    // Publishes from b reach subscribers on a, b (the publisher itself) and c.
    let mut subs = Vec::new();
    let mut ev_rx = Vec::new();
    for (name, port) in [("a", a.port), ("b", b.port), ("c", c.port)] {
        let conn = if name == "b" {
            on_b.clone()
        } else {
            Connection::connect(port).await.expect("connect")
        };
        let (tx, rx) = mpsc::unbounded_channel();
        conn.subscribe("news", move |ev: Bytes| {
            let _ = tx.send(ev);
        })
        .await
        .unwrap();
        subs.push(conn);
        ev_rx.push(rx);
    }
    {
        let mut rxs: Vec<&mut mpsc::UnboundedReceiver<Bytes>> = ev_rx.iter_mut().collect();
        warm_up("publish", &mut rxs, |i| {
            let on_b = on_b.clone();
            async move {
                on_b.publish("news", format!("warm-up {i}")).await.unwrap();
            }
        })
        .await;
    }
    let events: Vec<Bytes> = (0..25).map(|i| format!("event {i:02}").into()).collect();
    for e in &events {
        on_b.publish("news", e.clone()).await.unwrap();
    }
    for (name, rx) in ["a", "b", "c"].iter().zip(ev_rx.iter_mut()) {
        assert_eq!(
            collect(&format!("events at {name}"), rx, 25).await,
            events,
            "at {name}"
        );
    }

    // A tunnel from a to a member (on b or c): 16 MiB echoed in 64 KiB messages.
    let tunnel = Arc::new(
        within(SECOND, "opening a tunnel", on_a.tunnel("across", SECOND))
            .await
            .expect("tunnel"),
    );
    let messages: Vec<Bytes> = (0..256).map(|i| pattern(i, 64 << 10).into()).collect();
    let t0 = Instant::now();
    let sender = {
        let tunnel = tunnel.clone();
        let messages = messages.clone();
        tokio::spawn(async move {
            for (i, m) in messages.into_iter().enumerate() {
                tunnel
                    .send(m, 10 * SECOND)
                    .await
                    .unwrap_or_else(|e| panic!("tunnel send {i}: {e}"));
            }
        })
    };
    for (i, want) in messages.iter().enumerate() {
        let got = within(10 * SECOND, "tunnel echo", tunnel.recv())
            .await
            .unwrap_or_else(|e| panic!("tunnel recv {i}: {e}"));
        assert!(got == want, "tunnel message {i} came back different");
    }
    sender.await.unwrap();
    let took = t0.elapsed();
    println!("16 MiB echoed across nodes in 64 KiB messages: {took:?}");
    assert!(took < 10 * SECOND, "16 MiB across took {took:?}");
    within(SECOND, "closing the tunnel", tunnel.close())
        .await
        .expect("close");

    for conn in subs.iter().chain([&on_a]) {
        assert_eq!(conn.stats(), Default::default());
        conn.close().await.expect("close");
    }
    for s in [&svc_b, &svc_c] {
        assert_eq!(s.stats(), Default::default());
        s.close().await.expect("close");
    }
    println!("three-node test: {:?} in all", t_start.elapsed());
}

/// A `petald` killed with SIGKILL is found dead by both other nodes within 100 ms, with the
/// default liveness timers (heartbeats every second; without the hint from its closed links,
/// finding it would take a heartbeat period and two ping timeouts, over a second): each node's
/// link to it ends, the core probes it, and the dial for that probe is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_is_found_dead_within_100ms() {
    let debug = Spec {
        log: "info,petal_node::driver=debug".into(),
        ..Spec::alone()
    };
    let a = Daemon::start(&debug).await;
    let joiner = |n| Spec {
        peer_ip: lo(n),
        seeds: vec![a.peer],
        ..debug.clone()
    };
    let b = Daemon::start(&joiner(2)).await;
    let c = Daemon::start(&joiner(3)).await;
    for d in [&b, &c] {
        assert!(d.wait_log("joined the ring", 5 * SECOND).await);
    }
    // Every node has the others in its leaf set and the join's traffic is over.
    tokio::time::sleep(SECOND).await;
    assert!(!a.log().contains("peer declared dead") && !b.log().contains("peer declared dead"));
    let t0 = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &c.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());
    for (name, d) in [("a", &a), ("b", &b)] {
        assert!(
            d.wait_log("peer declared dead", Duration::from_millis(100))
                .await,
            "node {name} did not find the killed node dead within 100 ms:\n{}",
            d.log()
        );
    }
    println!(
        "SIGKILL: both nodes found the killed one dead within {:?}",
        t0.elapsed()
    );
}
