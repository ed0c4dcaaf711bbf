//! Applications on three nodes on loopback: broadcasts and events reach every node's members
//! and subscribers, a tunnel between nodes carries megabytes in order, requests spread over
//! members on different nodes, and a member's node going away (shut down or crashed) still
//! leaves each pending request exactly one REPLY.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_node::TokioNet;
use petal_protocol::relay::{ClientPacket, NodePacket, ReplyOutcome};
use tokio::time::Instant;

/// Reads packets until `quiet` passes without one; returns them.
async fn drain(r: &mut Raw, quiet: Duration) -> Vec<NodePacket> {
    let mut out = Vec::new();
    while let Ok(Some(p)) = r.recv_within(quiet).await {
        out.push(p);
    }
    out
}

/// Repeats `send` (with a fresh tag each time) every 20 ms until each of `rs` has received a
/// packet matching `warm`; then lets the stragglers arrive and throws them away.
async fn warm_up(
    sender: &mut Raw,
    rs: &mut [&mut Raw],
    send: impl Fn(u64) -> ClientPacket,
    warm: impl Fn(&NodePacket) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut done = vec![false; rs.len()];
    let mut tag = 0;
    while done.iter().any(|d| !d) {
        assert!(Instant::now() < deadline, "warm-up never reached {done:?}");
        tag += 1;
        sender.send(send(tag)).await;
        for (i, r) in rs.iter_mut().enumerate() {
            while let Ok(Some(p)) = r.recv_within(Duration::from_millis(20) / 3).await {
                assert!(warm(&p), "unexpected {p:?} during the warm-up");
                done[i] = true;
            }
        }
    }
    for r in rs.iter_mut() {
        for p in drain(r, Duration::from_millis(100)).await {
            assert!(warm(&p), "unexpected {p:?} during the warm-up");
        }
    }
}

#[tokio::test]
async fn broadcast_reaches_members_on_every_node_and_nobody_else() {
    let [a, b, c] = three_nodes().await;
    let mut members = Vec::new();
    let mut others = Vec::new();
    for n in [&a, &b, &c] {
        members.push(Raw::attach(relay_addr(n), "bc").await);
        others.push(Raw::attach(relay_addr(n), "").await);
    }
    let mut sender = Raw::attach(relay_addr(&a), "").await;
    let warm = |p: &NodePacket| matches!(p, NodePacket::Broadcast { message } if message.starts_with(b"warm"));
    {
        let mut rs: Vec<&mut Raw> = members.iter_mut().collect();
        warm_up(
            &mut sender,
            &mut rs,
            |t| ClientPacket::Broadcast {
                cluster: "bc".into(),
                message: format!("warm {t}").into_bytes().into(),
            },
            warm,
        )
        .await;
    }
    // From a plain client on A, and from the member on B (which gets its own too): each member
    // on each node gets each broadcast exactly once.
    sender
        .send(ClientPacket::Broadcast {
            cluster: "bc".into(),
            message: Bytes::from_static(b"one"),
        })
        .await;
    members[1]
        .send(ClientPacket::Broadcast {
            cluster: "bc".into(),
            message: Bytes::from_static(b"two"),
        })
        .await;
    for (i, m) in members.iter_mut().enumerate() {
        let mut got: Vec<NodePacket> = vec![m.next().await, m.next().await];
        got.sort_by_key(|p| format!("{p:?}"));
        assert_eq!(
            got,
            vec![
                NodePacket::Broadcast {
                    message: Bytes::from_static(b"one")
                },
                NodePacket::Broadcast {
                    message: Bytes::from_static(b"two")
                },
            ],
            "member on node {i}"
        );
        m.expect_silence(Duration::from_millis(50)).await;
    }
    // The plain clients on every node, the sender included, never got anything.
    for r in others.iter_mut().chain([&mut sender]) {
        r.expect_silence(Duration::from_millis(10)).await;
    }
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn publish_reaches_subscribers_on_every_node_publisher_included() {
    let [a, b, c] = three_nodes().await;
    let mut subs = Vec::new();
    let mut others = Vec::new();
    for n in [&a, &b, &c] {
        let mut s = Raw::attach(relay_addr(n), "").await;
        s.send(ClientPacket::Subscribe {
            topic: "news".into(),
        })
        .await;
        subs.push(s);
        let mut o = Raw::attach(relay_addr(n), "").await;
        o.send(ClientPacket::Subscribe {
            topic: "other".into(),
        })
        .await;
        others.push(o);
    }
    let mut outsider = Raw::attach(relay_addr(&b), "").await;
    let warm = |p: &NodePacket| matches!(p, NodePacket::Publish { topic, event } if &**topic == "news" && event.starts_with(b"warm"));
    {
        let mut rs: Vec<&mut Raw> = subs.iter_mut().collect();
        warm_up(
            &mut outsider,
            &mut rs,
            |t| ClientPacket::Publish {
                topic: "news".into(),
                event: format!("warm {t}").into_bytes().into(),
            },
            warm,
        )
        .await;
    }
    // From the subscriber on C: every subscriber, C's too, gets `08 04 news 02 ev` once.
    subs[2].send_bytes(b"\x08\x04news\x02ev").await;
    for (i, s) in subs.iter_mut().enumerate() {
        assert_eq!(
            s.next().await,
            NodePacket::Publish {
                topic: "news".into(),
                event: Bytes::from_static(b"ev")
            },
            "subscriber on node {i}"
        );
        s.expect_silence(Duration::from_millis(50)).await;
    }
    for r in others.iter_mut().chain([&mut outsider]) {
        r.expect_silence(Duration::from_millis(10)).await;
    }
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_tunnel_between_nodes_carries_4_mib_in_order() {
    let [a, b, c] = three_nodes().await;
    let mut svc = Raw::attach(relay_addr(&c), "tun").await;
    let mut opener = Raw::attach(relay_addr(&a), "").await;
    warm_cluster(&mut opener, &mut svc, "tun").await;
    open_tunnel(&mut opener, 1, "tun", &mut svc, 2, 64 << 20, 64 << 20).await;

    // 4 MiB from A to C in 16 messages of 256 KiB, sent within the node's credit.
    let sender = tokio::spawn(async move {
        let mut tx = TunSender::new(1);
        for i in 0..16 {
            tx.send(&mut opener, &pattern(i, 256 << 10), 65536).await;
        }
        opener
    });
    let t0 = Instant::now();
    for i in 0..16 {
        let got = recv_message(&mut svc, 2).await;
        assert!(
            got == pattern(i, 256 << 10),
            "message {i} altered or out of order"
        );
    }
    let mut opener = sender.await.unwrap();
    let up = t0.elapsed();
    // And 1 MiB back.
    let back = pattern(99, 1 << 20);
    TunSender::new(2).send(&mut svc, &back, 65536).await;
    assert!(recv_message(&mut opener, 1).await == back[..]);
    eprintln!("4 MiB across nodes in {up:?}");

    opener.send(ClientPacket::TunClose { id: 1 }).await;
    loop {
        match opener.next().await {
            NodePacket::TunAllow { id: 1, .. } => {}
            p => {
                assert_eq!(
                    p,
                    NodePacket::TunClose {
                        id: 1,
                        reason: String::new()
                    }
                );
                break;
            }
        }
    }
    loop {
        match svc.next().await {
            NodePacket::TunAllow { id: 2, .. } => {}
            p => {
                assert_eq!(
                    p,
                    NodePacket::TunClose {
                        id: 2,
                        reason: String::new()
                    }
                );
                break;
            }
        }
    }
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// A member that answers every request with its name, until its connection ends; returns
/// how many it answered.
fn answering(mut svc: Raw, name: &'static str) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok(Some(p)) = svc.recv_within(Duration::from_secs(10)).await {
            let id = match p {
                NodePacket::Request { id, .. } => id,
                NodePacket::Close { .. } => break,
                p => panic!("{name} got {p:?}"),
            };
            svc.send(ClientPacket::Reply {
                id,
                result: Ok(Bytes::from_static(name.as_bytes())),
            })
            .await;
            n += 1;
        }
        n
    })
}

#[tokio::test]
async fn requests_spread_over_members_on_different_nodes() {
    let [a, b, c] = three_nodes().await;
    let mut cli = Raw::attach(relay_addr(&a), "").await;
    let on_b = Raw::attach(relay_addr(&b), "lb").await;
    let on_c = Raw::attach(relay_addr(&c), "lb").await;
    let tb = answering(on_b, "b");
    let tc = answering(on_c, "c");
    // Until both members have answered once (the cluster's tree knows both). Warming them one
    // at a time would stall the member not being read.
    let mut warm = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut id = 1_000_000;
    while warm.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "members never all reached: {warm:?}"
        );
        id += 1;
        cli.send(ClientPacket::Request {
            id,
            cluster: "lb".into(),
            request: Bytes::from_static(b"warm"),
            timeout_ms: 200,
        })
        .await;
        match cli.next().await {
            NodePacket::Reply {
                id: got,
                outcome: ReplyOutcome::Success(who),
            } if got == id => {
                warm.insert(who);
            }
            NodePacket::Reply { id: got, .. } if got == id => {}
            other => panic!("requester got {other:?}"),
        }
    }

    for id in 0..100 {
        cli.send(ClientPacket::Request {
            id,
            cluster: "lb".into(),
            request: Bytes::from_static(b"q"),
            timeout_ms: 2000,
        })
        .await;
    }
    let mut by = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Success(who),
        } = cli.next().await
        else {
            panic!("a request failed")
        };
        assert!(seen.insert(id), "two REPLYs for {id}");
        *by.entry(who).or_insert(0) += 1;
    }
    eprintln!("shares: {by:?}");
    assert!(by.get(&b"b"[..]).copied().unwrap_or(0) >= 10, "{by:?}");
    assert!(by.get(&b"c"[..]).copied().unwrap_or(0) >= 10, "{by:?}");
    cli.expect_silence(Duration::from_millis(50)).await;
    for n in [a, b, c] {
        n.shutdown().await;
    }
    tb.await.unwrap();
    tc.await.unwrap();
}

/// Sends requests 1..=10 from `cli` to `cluster` (500 ms timeouts); `svc` (on another node)
/// receives all ten and answers the first `answered`. Returns when it has them all.
async fn pending_requests(cli: &mut Raw, svc: &mut Raw, cluster: &str, answered: usize) {
    for id in 1..=10 {
        cli.send(ClientPacket::Request {
            id,
            cluster: cluster.into(),
            request: Bytes::from(id.to_string()),
            timeout_ms: 500,
        })
        .await;
    }
    for i in 0..10 {
        let NodePacket::Request { id, request, .. } = svc.next().await else {
            panic!("no delivery")
        };
        if i < answered {
            svc.send(ClientPacket::Reply {
                id,
                result: Ok(request),
            })
            .await;
        }
    }
}

/// Collects REPLYs to requests 1..=10 into `got` until it has `want` of them (1.5 s at most):
/// never a REPLY for an id not issued, never a second one for an id.
async fn collect_replies(cli: &mut Raw, got: &mut BTreeMap<u64, ReplyOutcome>, want: usize) {
    let deadline = Instant::now() + Duration::from_millis(1500);
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = cli
            .recv_within(left)
            .await
            .unwrap_or_else(|()| panic!("only {} REPLYs: {got:?}", got.len()))
            .expect("EOF");
        let NodePacket::Reply { id, outcome } = p else {
            panic!("{p:?}")
        };
        assert!((1..=10).contains(&id), "REPLY for id {id} never issued");
        assert!(got.insert(id, outcome).is_none(), "a second REPLY for {id}");
    }
}

/// Requests 1..=10 go from `cli` to `cluster`; its member `svc` answers the first `answered`
/// (their REPLYs arrive); then `kill` takes the member's node away. Each request gets exactly
/// one REPLY: the answered ones theirs, the others `unanswered` (a timeout when the node
/// crashed; the leaving node's fault when it shut down).
async fn one_reply_each_across(
    cli: &mut Raw,
    svc: &mut Raw,
    cluster: &str,
    answered: usize,
    kill: impl std::future::Future<Output = ()>,
    unanswered: ReplyOutcome,
) {
    pending_requests(cli, svc, cluster, answered).await;
    let mut got = BTreeMap::new();
    collect_replies(cli, &mut got, answered).await;
    assert!(
        got.values().all(|o| matches!(o, ReplyOutcome::Success(_))),
        "{got:?}"
    );
    kill.await;
    collect_replies(cli, &mut got, 10).await;
    cli.expect_silence(Duration::from_millis(200)).await;
    let unanswered_count = got.values().filter(|o| **o == unanswered).count();
    assert_eq!(unanswered_count, 10 - answered, "{got:?}");
}

#[tokio::test]
async fn a_member_node_shut_down_with_requests_pending_gives_each_one_reply() {
    let [a, b, c] = three_nodes().await;
    let mut cli = Raw::attach(relay_addr(&a), "").await;
    let mut svc = Raw::attach(relay_addr(&c), "gone").await;
    warm_cluster(&mut cli, &mut svc, "gone").await;
    let left = ReplyOutcome::Fault(petal_core::LEAVING_FAULT.into());
    one_reply_each_across(&mut cli, &mut svc, "gone", 4, c.shutdown(), left).await;
    // The others still serve: a member on B takes requests to the same cluster.
    let mut svc_b = Raw::attach(relay_addr(&b), "gone").await;
    warm_cluster(&mut cli, &mut svc_b, "gone").await;
    for n in [a, b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_member_node_crashing_with_requests_pending_gives_each_one_reply() {
    let a = node(0x1000_0000_0000_0000_0000_0000_0000_0000, vec![]).await;
    let seed = a.info().addr;
    let b = node(0x5000_0000_0000_0000_0000_0000_0000_0000, vec![seed]).await;
    // C runs on a runtime of its own, so that it can crash: every task and socket gone at once,
    // nothing said to anyone.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let c = rt
        .spawn(petal_node::spawn(
            TokioNet,
            options(0xa000_0000_0000_0000_0000_0000_0000_0000, vec![seed]),
        ))
        .await
        .unwrap()
        .unwrap();
    wait_ready(&[&a, &b, &c], 2).await;
    let mut cli = Raw::attach(relay_addr(&a), "").await;
    let mut svc = Raw::attach(relay_addr(&c), "crash").await;
    warm_cluster(&mut cli, &mut svc, "crash").await;
    let crash = async move {
        rt.shutdown_background();
        drop(c);
    };
    one_reply_each_across(&mut cli, &mut svc, "crash", 3, crash, ReplyOutcome::Timeout).await;
    // The member's connection died with its node.
    assert!(matches!(
        svc.recv_within(Duration::from_secs(1)).await,
        Ok(None)
    ));
    // A and B still serve each other.
    let mut svc_b = Raw::attach(relay_addr(&b), "after").await;
    warm_cluster(&mut cli, &mut svc_b, "after").await;
    for n in [a, b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_slow_reader_stalls_a_fast_writer_across_nodes_with_bounded_buffers() {
    let [a, b, c] = three_nodes().await;
    let mut svc = Raw::attach(relay_addr(&c), "sink").await;
    let mut opener = Raw::attach(relay_addr(&a), "").await;
    warm_cluster(&mut opener, &mut svc, "sink").await;
    // The reader grants no credit at first.
    open_tunnel(&mut opener, 1, "sink", &mut svc, 2, 64 << 20, 0).await;
    // The writer sends whatever credit its node grants, until no more comes.
    let mut credit: u64 = 4 << 20;
    let mut sent = 0u64;
    loop {
        while credit >= 65536 {
            opener
                .send(ClientPacket::TunTransfer {
                    id: 1,
                    size: 65536,
                    payload: pattern(sent, 65536),
                })
                .await;
            credit -= 65536;
            sent += 1;
        }
        let mut granted = false;
        while let Ok(p) = opener.recv_within(Duration::from_millis(100)).await {
            match p {
                Some(NodePacket::TunAllow { id: 1, space }) => {
                    credit += space;
                    granted = true;
                }
                other => panic!("writer got {other:?}"),
            }
        }
        if !granted {
            break;
        }
    }
    eprintln!("{sent} chunks of 64 KiB went before the writer stalled");
    // Held between the two nodes: at most the writer's node buffer and the reader's node
    // window (4 MiB each), however long the reader stalls.
    assert!(
        sent * 65536 <= (8 << 20) + 65536,
        "{sent} chunks went before the writer was stalled"
    );
    assert!(sent >= 64, "only {sent} chunks went");
    svc.expect_silence(Duration::from_millis(50)).await;
    // The reader reads at last: everything, in order; and the writer gets credit again.
    svc.send(ClientPacket::TunAllow {
        id: 2,
        space: 1 << 30,
    })
    .await;
    for i in 0..sent {
        assert!(
            recv_message(&mut svc, 2).await == pattern(i, 65536),
            "chunk {i} altered or out of order"
        );
    }
    let NodePacket::TunAllow { id: 1, .. } = opener.next().await else {
        panic!("the writer got no credit back")
    };
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_tunnel_whose_far_node_crashes_is_closed_with_a_reason() {
    // Fast failure detection, so that the test is short: heartbeats and pings every 100 ms,
    // dead after two missed pongs (50-100 ms timeouts).
    let fast = |id: u128, seeds| {
        let mut o = options(id, seeds);
        o.core.heartbeat_interval = Duration::from_millis(100);
        o.core.leaf_ping_interval = Duration::from_millis(100);
        o.core.ping_timeout = Duration::from_millis(100);
        o.core.ping_timeout_min = Duration::from_millis(50);
        o.core.timer_granularity = Duration::from_millis(10);
        o
    };
    let a = petal_node::spawn(TokioNet, fast(0x1000 << 112, vec![]))
        .await
        .unwrap();
    let seed = a.info().addr;
    let b = petal_node::spawn(TokioNet, fast(0x5000 << 112, vec![seed]))
        .await
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let c = rt
        .spawn(petal_node::spawn(TokioNet, fast(0xa000 << 112, vec![seed])))
        .await
        .unwrap()
        .unwrap();
    wait_ready(&[&a, &b, &c], 2).await;
    let mut svc = Raw::attach(relay_addr(&c), "far").await;
    let mut opener = Raw::attach(relay_addr(&a), "").await;
    warm_cluster(&mut opener, &mut svc, "far").await;
    open_tunnel(&mut opener, 1, "far", &mut svc, 2, 1 << 20, 1 << 20).await;
    opener
        .send(ClientPacket::TunTransfer {
            id: 1,
            size: 2,
            payload: Bytes::from_static(b"hi"),
        })
        .await;
    assert_eq!(recv_message(&mut svc, 2).await, b"hi");

    let t0 = Instant::now();
    rt.shutdown_background();
    drop(c);
    loop {
        match opener.next().await {
            NodePacket::TunAllow { id: 1, .. } => {}
            NodePacket::TunClose { id: 1, reason } => {
                assert!(!reason.is_empty(), "a crash reported as a graceful close");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    opener.expect_silence(Duration::from_millis(50)).await;
    for n in [a, b] {
        n.shutdown().await;
    }
}
