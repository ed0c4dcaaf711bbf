//! Plain-client behaviour against a scripted fake node: handshake, requests, topics, close,
//! breaks.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{FakeNode, client, timely};
use petal_client::{Connection, Error};
use petal_protocol::relay::{ClientPacket, NodePacket, RELAY_MAGIC, ReplyOutcome};
use tokio::sync::mpsc;

#[tokio::test]
async fn handshake_accept_sends_plain_init() {
    let (conn, mut peer) = client().await;
    assert!(!conn.is_closed());
    // Nothing else is sent until the application asks.
    assert!(peer.quiet_for(Duration::from_millis(20)).await);
}

#[tokio::test]
async fn handshake_deny_reports_reason() {
    let node = FakeNode::new().await;
    let (conn, ()) = tokio::join!(Connection::connect_addr(node.addr), async {
        let (mut peer, _) = node.accept().await;
        peer.send(NodePacket::Deny {
            magic: RELAY_MAGIC.into(),
            reason: "go away".into(),
        })
        .await;
        peer.hang_up().await;
    });
    match conn {
        Err(Error::Denied(reason)) => assert_eq!(reason, "go away"),
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn handshake_eof_is_handshake_error() {
    let node = FakeNode::new().await;
    let (conn, ()) = tokio::join!(Connection::connect_addr(node.addr), async {
        let (peer, _) = node.accept().await;
        peer.hang_up().await;
    });
    assert!(matches!(conn, Err(Error::Handshake(_))), "{conn:?}");
}

#[tokio::test]
async fn handshake_over_generic_stream() {
    let node = FakeNode::new().await;
    let stream = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("dial");
    let (conn, _peer) = tokio::join!(Connection::with_stream(stream), async {
        let (mut peer, _) = node.accept().await;
        peer.accept_init().await;
        peer
    });
    let conn = conn.expect("connect");
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn request_outcomes_map_to_results() {
    let (conn, mut peer) = client().await;
    let node = tokio::spawn(async move {
        for outcome in [
            ReplyOutcome::Success(Bytes::from("pong")),
            ReplyOutcome::Fault("boom".into()),
            ReplyOutcome::Timeout,
        ] {
            match peer.recv().await {
                Some(ClientPacket::Request {
                    id,
                    cluster,
                    request,
                    timeout_ms,
                }) => {
                    assert_eq!(cluster, "svc");
                    assert_eq!(request, Bytes::from("ping"));
                    assert_eq!(timeout_ms, 1500);
                    peer.send(NodePacket::Reply { id, outcome }).await;
                }
                other => panic!("expected a request, got {other:?}"),
            }
        }
        peer
    });
    let t = Duration::from_millis(1500);
    assert_eq!(
        timely(conn.request("svc", "ping", t)).await.expect("reply"),
        "pong"
    );
    match timely(conn.request("svc", "ping", t)).await {
        Err(Error::Remote(fault)) => assert_eq!(fault, "boom"),
        other => panic!("expected a fault, got {other:?}"),
    }
    assert!(matches!(
        timely(conn.request("svc", "ping", t)).await,
        Err(Error::Timeout)
    ));
    node.await.expect("node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_get_their_own_replies() {
    let (conn, mut peer) = client().await;
    const TASKS: usize = 8;
    const EACH: usize = 100;
    let node = tokio::spawn(async move {
        // Collect every request, then answer in reverse order: matching must go by id.
        let mut got = Vec::new();
        let mut ids = std::collections::HashSet::new();
        while got.len() < TASKS * EACH {
            match peer.recv().await {
                Some(ClientPacket::Request { id, request, .. }) => {
                    assert!(ids.insert(id), "duplicate id {id}");
                    got.push((id, request));
                }
                other => panic!("expected a request, got {other:?}"),
            }
        }
        for (id, request) in got.into_iter().rev() {
            let mut reply = b"re:".to_vec();
            reply.extend_from_slice(&request);
            peer.send(NodePacket::Reply {
                id,
                outcome: ReplyOutcome::Success(reply.into()),
            })
            .await;
        }
        peer
    });
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let calls = (0..EACH).map(|i| {
                let conn = conn.clone();
                async move {
                    let body = format!("{t}-{i}");
                    let reply = conn
                        .request("svc", body.clone(), Duration::from_secs(1))
                        .await;
                    assert_eq!(reply.expect("reply"), format!("re:{body}"));
                }
            });
            for call in calls.collect::<Vec<_>>() {
                tokio::spawn(call);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let _peer = timely(node).await.expect("node");
    // Every request got its reply: nothing ignored.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(conn.stats().ignored_packets, 0);
}

#[tokio::test]
async fn broadcast_publish_subscribe_packets() {
    let (conn, mut peer) = client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    conn.subscribe("news", move |event: Bytes| {
        let _ = tx.send(event);
    })
    .await
    .expect("subscribe");
    assert!(matches!(
        conn.subscribe("news", |_: Bytes| {}).await,
        Err(Error::AlreadySubscribed(_))
    ));
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::Subscribe {
            topic: "news".into()
        })
    );

    conn.publish("news", "ev1").await.expect("publish");
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::Publish {
            topic: "news".into(),
            event: Bytes::from("ev1")
        })
    );
    conn.broadcast("svc", "hello all").await.expect("broadcast");
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: Bytes::from("hello all")
        })
    );

    // Deliveries: the subscribed topic reaches the handler, another topic is ignored.
    peer.send(NodePacket::Publish {
        topic: "other".into(),
        event: Bytes::from("x"),
    })
    .await;
    peer.send(NodePacket::Publish {
        topic: "news".into(),
        event: Bytes::from("ev1"),
    })
    .await;
    assert_eq!(timely(rx.recv()).await.expect("event"), "ev1");

    conn.unsubscribe("news").await.expect("unsubscribe");
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::Unsubscribe {
            topic: "news".into()
        })
    );
    assert!(matches!(
        conn.unsubscribe("news").await,
        Err(Error::NotSubscribed(_))
    ));
    peer.send(NodePacket::Publish {
        topic: "news".into(),
        event: Bytes::from("late"),
    })
    .await;
    // The handler is gone (its channel closes) and never sees the late event.
    let late = tokio::time::timeout(Duration::from_millis(30), rx.recv()).await;
    assert!(matches!(late, Err(_) | Ok(None)), "{late:?}");
    timely(async {
        while conn.stats().ignored_packets < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(conn.stats().ignored_packets, 2);
}

#[tokio::test]
async fn many_events_all_delivered() {
    let (conn, mut peer) = client().await;
    let seen = Arc::new(Mutex::new(HashMap::<Bytes, usize>::new()));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let s = seen.clone();
    conn.subscribe("t", move |event: Bytes| {
        *s.lock().expect("lock").entry(event).or_default() += 1;
        let _ = done_tx.send(());
    })
    .await
    .expect("subscribe");
    let _ = peer.recv().await;
    for i in 0..500 {
        peer.send(NodePacket::Publish {
            topic: "t".into(),
            event: Bytes::from(format!("{i}")),
        })
        .await;
    }
    for _ in 0..500 {
        timely(done.recv()).await.expect("event");
    }
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 500);
    assert!(seen.values().all(|&n| n == 1));
}

#[tokio::test]
async fn graceful_close_waits_for_ack_and_fails_pending() {
    let (conn, mut peer) = client().await;
    let c = conn.clone();
    let pending = tokio::spawn(async move { c.request("svc", "x", Duration::from_secs(5)).await });
    assert!(matches!(
        peer.recv().await,
        Some(ClientPacket::Request { .. })
    ));
    let c = conn.clone();
    let closing = tokio::spawn(async move { c.close().await });
    assert_eq!(peer.recv().await, Some(ClientPacket::Close));
    // Nothing follows CLOSE.
    assert!(matches!(
        conn.publish("t", "x").await,
        Err(Error::Closed(_))
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!closing.is_finished(), "close must wait for the ack");
    peer.send(NodePacket::Close {
        reason: String::new(),
    })
    .await;
    assert_eq!(
        peer.recv().await,
        None,
        "the client sends nothing after CLOSE"
    );
    peer.hang_up().await;
    timely(closing).await.expect("join").expect("close ok");
    assert!(matches!(
        timely(pending).await.expect("join"),
        Err(Error::Closed(_))
    ));
    assert!(conn.is_closed());
    assert!(matches!(
        conn.request("svc", "x", Duration::from_secs(1)).await,
        Err(Error::Closed(_))
    ));
}

#[tokio::test]
async fn break_fails_pending_requests() {
    let (conn, mut peer) = client().await;
    let mut calls = Vec::new();
    for _ in 0..3 {
        let c = conn.clone();
        calls.push(tokio::spawn(async move {
            c.request("svc", "x", Duration::from_secs(5)).await
        }));
    }
    for _ in 0..3 {
        assert!(matches!(
            peer.recv().await,
            Some(ClientPacket::Request { .. })
        ));
    }
    peer.hang_up().await;
    for call in calls {
        let result = timely(call).await.expect("join");
        assert!(matches!(result, Err(Error::Broken(_))), "{result:?}");
    }
    assert!(conn.is_closed());
    assert!(matches!(conn.close().await, Err(Error::Broken(_))));
}

#[tokio::test]
async fn node_close_with_reason() {
    let (conn, mut peer) = client().await;
    let c = conn.clone();
    let pending = tokio::spawn(async move { c.request("svc", "x", Duration::from_secs(5)).await });
    assert!(matches!(
        peer.recv().await,
        Some(ClientPacket::Request { .. })
    ));
    peer.send(NodePacket::Close {
        reason: "node shutting down".into(),
    })
    .await;
    match timely(pending).await.expect("join") {
        Err(Error::Closed(reason)) => assert_eq!(reason, "node shutting down"),
        other => panic!("expected closed, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_from_node_breaks_connection() {
    let (conn, mut peer) = client().await;
    let c = conn.clone();
    let pending = tokio::spawn(async move { c.request("svc", "x", Duration::from_secs(5)).await });
    assert!(matches!(
        peer.recv().await,
        Some(ClientPacket::Request { .. })
    ));
    // A second INIT after the handshake is a violation.
    peer.accept_init().await;
    let result = timely(pending).await.expect("join");
    assert!(matches!(result, Err(Error::Broken(_))), "{result:?}");
}

#[tokio::test]
async fn dropping_last_handle_closes() {
    let (conn, mut peer) = client().await;
    drop(conn);
    assert_eq!(peer.recv().await, Some(ClientPacket::Close));
}

#[tokio::test]
async fn abandoned_request_reply_is_ignored() {
    let (conn, mut peer) = client().await;
    let c = conn.clone();
    let call = tokio::spawn(async move { c.request("svc", "x", Duration::from_secs(5)).await });
    let Some(ClientPacket::Request { id, .. }) = peer.recv().await else {
        panic!("request")
    };
    call.abort();
    let _ = call.await;
    peer.send(NodePacket::Reply {
        id,
        outcome: ReplyOutcome::Timeout,
    })
    .await;
    // The connection still works.
    let c = conn.clone();
    let next = tokio::spawn(async move { c.request("svc", "y", Duration::from_secs(5)).await });
    let Some(ClientPacket::Request { id: id2, .. }) = peer.recv().await else {
        panic!("request")
    };
    assert_ne!(id, id2);
    peer.send(NodePacket::Reply {
        id: id2,
        outcome: ReplyOutcome::Success(Bytes::from("ok")),
    })
    .await;
    assert_eq!(timely(next).await.expect("join").expect("reply"), "ok");
    assert_eq!(conn.stats().ignored_packets, 1);
    // An abandoned request's reply is expected: not an unexpected reply.
    assert_eq!(conn.stats().unexpected_replies, 0);
}

#[tokio::test]
async fn second_reply_is_counted_as_unexpected() {
    let (conn, mut peer) = client().await;
    let c = conn.clone();
    let call = tokio::spawn(async move { c.request("svc", "x", Duration::from_secs(5)).await });
    let Some(ClientPacket::Request { id, .. }) = peer.recv().await else {
        panic!("request")
    };
    for body in ["first", "second"] {
        peer.send(NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Success(Bytes::from(body)),
        })
        .await;
    }
    // A reply for an id never sent is unexpected too.
    peer.send(NodePacket::Reply {
        id: id + 1000,
        outcome: ReplyOutcome::Timeout,
    })
    .await;
    assert_eq!(timely(call).await.expect("join").expect("reply"), "first");
    timely(async {
        while conn.stats().unexpected_replies < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let stats = conn.stats();
    assert_eq!((stats.unexpected_replies, stats.ignored_packets), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_stay_whole_and_ordered_under_backpressure() {
    let mut options = petal_client::Options::default();
    options.write_buffer = 64 * 1024;
    let (conn, mut peer) = common::client_with(options).await;
    const TASKS: usize = 10;
    const EACH: usize = 20;
    const SIZE: usize = 20_000;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let event = vec![(t * EACH + i) as u8; SIZE];
                conn.publish(&format!("t{t}"), event)
                    .await
                    .expect("publish");
            }
        }));
    }
    // Let the socket buffers fill up so that writers hit `Pending` and hand over.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut next = [0usize; TASKS];
    for _ in 0..TASKS * EACH {
        match peer.recv().await {
            Some(ClientPacket::Publish { topic, event }) => {
                let t: usize = topic[1..].parse().expect("task");
                let i = next[t];
                next[t] += 1;
                assert_eq!(event.len(), SIZE);
                assert!(
                    event.iter().all(|&b| b == (t * EACH + i) as u8),
                    "task {t} event {i}"
                );
            }
            other => panic!("expected a publish, got {other:?}"),
        }
    }
    for t in tasks {
        timely(t).await.expect("task");
    }
    assert_eq!(next, [EACH; TASKS]);
}

#[tokio::test]
async fn connect_by_port_tries_ipv4_then_ipv6() {
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let Ok(listener) = tokio::net::TcpListener::bind(addr).await else {
            continue; // no IPv6 loopback here
        };
        let port = listener.local_addr().expect("addr").port();
        let node = async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (mut rd, mut wr) = stream.into_split();
            let mut buf = bytes::BytesMut::new();
            let limits = petal_protocol::relay::Limits::default();
            loop {
                if let Some(p) = ClientPacket::decode(&mut buf, &limits).expect("valid") {
                    assert!(matches!(p, ClientPacket::Init { .. }));
                    break;
                }
                tokio::io::AsyncReadExt::read_buf(&mut rd, &mut buf)
                    .await
                    .expect("read");
            }
            let mut out = Vec::new();
            NodePacket::Init {
                magic: RELAY_MAGIC.into(),
                version: "v1.0-draft2".into(),
            }
            .encode(&mut out);
            tokio::io::AsyncWriteExt::write_all(&mut wr, &out)
                .await
                .expect("write");
            (rd, wr)
        };
        let (conn, _node) = tokio::join!(Connection::connect(port), node);
        let conn = conn.unwrap_or_else(|e| panic!("connect via {addr}: {e}"));
        assert!(!conn.is_closed());
    }
}
