//! A client that stops reading while the node owes it replies (which are never dropped) is
//! cut off once it is `session_max_bytes` behind; nobody else notices.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_protocol::relay::{ClientPacket, NodePacket};

#[tokio::test]
async fn a_client_far_behind_on_replies_is_cut_off_alone() {
    let mut o = options(0x51, vec![]);
    o.session_queue_bytes = 1 << 20;
    o.session_max_bytes = 2 << 20;
    let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    // An echo service that reads and answers everything.
    let mut svc = Raw::attach(addr, "echo").await;
    let echo = tokio::spawn(async move {
        while let Some(p) = svc.recv_within(Duration::from_secs(3)).await.ok().flatten() {
            if let NodePacket::Request { id, request, .. } = p {
                svc.send(ClientPacket::Reply {
                    id,
                    result: Ok(request),
                })
                .await;
            }
        }
    });
    // A client that asks for 24 MiB of replies and never reads one.
    let mut lazy = Raw::attach(addr, "").await;
    let payload = Bytes::from(vec![7u8; 64 * 1024]);
    for id in 0..384 {
        // Lossy: the node may cut the connection while the client is still writing.
        let p = ClientPacket::Request {
            id,
            cluster: "echo".into(),
            request: payload.clone(),
            timeout_ms: 10_000,
        };
        lazy.send_bytes_lossy(&encode(&p)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = n.stats().await.unwrap();
        if s.runtime.slow_closed == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lazy client was not cut off: {:?}",
            s.runtime
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    healthy.check().await;
    // What the lazy client can still read ends in EOF, and far fewer than all replies came.
    let rest = lazy.read_to_end().await;
    assert!(rest.len() < 384 * 64 * 1024, "{} bytes", rest.len());
    drop(echo);
    n.shutdown().await;
}

/// A TUN_INIT reusing the id of an open tunnel is refused with `0a id 01`; the open tunnel
/// keeps working.
#[tokio::test]
async fn a_tunnel_id_in_use_is_refused_and_the_tunnel_survives() {
    let n = node(0x52, vec![]).await;
    let addr = relay_addr(&n);
    let mut svc = Raw::attach(addr, "svc").await;
    let mut cli = Raw::attach(addr, "").await;
    open_tunnel(&mut cli, 5, "svc", &mut svc, 9, 1 << 20, 1 << 20).await;
    cli.send(ClientPacket::TunInit {
        id: 5,
        cluster: "svc".into(),
        timeout_ms: 2000,
    })
    .await;
    cli.expect(NodePacket::TunConfirm {
        id: 5,
        chunk_limit: None,
    })
    .await;
    svc.expect_silence(Duration::from_millis(100)).await;
    cli.send(ClientPacket::TunTransfer {
        id: 5,
        size: 3,
        payload: Bytes::from_static(b"abc"),
    })
    .await;
    svc.expect(NodePacket::TunTransfer {
        id: 9,
        size: 3,
        payload: Bytes::from_static(b"abc"),
    })
    .await;
    n.shutdown().await;
}

/// With a small memory budget, a subscriber that stops reading holds at most its share of it:
/// events past that are dropped for it (counted), a client owed replies past its share is cut
/// off, and the node's other clients are served throughout.
#[tokio::test]
async fn a_client_that_stops_reading_is_held_to_its_share_of_the_memory_budget() {
    let mut o = options(0x53, vec![]);
    o.core.memory_budget = 8 << 20;
    o.core.memory_share = 1 << 20;
    let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    let mut lazy = Raw::attach(addr, "").await;
    lazy.send(ClientPacket::Subscribe {
        topic: "news".into(),
    })
    .await;
    let mut publisher = Raw::attach(addr, "").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 32 MiB of events: far past what the socket buffers and the share take.
    let event = Bytes::from(vec![3u8; 64 * 1024]);
    let mut max_used = 0;
    for _ in 0..512 {
        publisher
            .send(ClientPacket::Publish {
                topic: "news".into(),
                event: event.clone(),
            })
            .await;
        let s = n.stats().await.unwrap();
        max_used = max_used.max(s.memory_used);
    }
    healthy.check().await;
    let s = n.stats().await.unwrap();
    assert!(
        s.runtime.memory_refused_sessions > 0,
        "events past the share were refused: {:?}",
        s.runtime
    );
    assert!(
        max_used <= 8 << 20,
        "the node held {max_used} bytes against a budget of 8 MiB"
    );
    // A client that asks for 16 MiB of replies and reads none is cut off at its share.
    let mut svc = Raw::attach(addr, "echo").await;
    let echo = tokio::spawn(async move {
        while let Some(p) = svc.recv_within(Duration::from_secs(3)).await.ok().flatten() {
            if let NodePacket::Request { id, request, .. } = p {
                svc.send(ClientPacket::Reply {
                    id,
                    result: Ok(request),
                })
                .await;
            }
        }
    });
    let mut greedy = Raw::attach(addr, "").await;
    for id in 0..256 {
        let p = ClientPacket::Request {
            id,
            cluster: "echo".into(),
            request: event.clone(),
            timeout_ms: 10_000,
        };
        greedy.send_bytes_lossy(&encode(&p)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let before = s.runtime.memory_refused_sessions;
    loop {
        let s = n.stats().await.unwrap();
        if s.runtime.memory_refused_sessions > before && s.sessions == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the greedy client was not cut off: {} sessions, {:?}",
            s.sessions,
            s.runtime
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        n.stats().await.unwrap().runtime.slow_closed,
        0,
        "closed by the budget, not by session_max_bytes"
    );
    healthy.check().await;
    drop((echo, lazy));
    n.shutdown().await;
}
