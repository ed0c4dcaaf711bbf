//! Broadcast, subscribe and publish on one node, at the packet and byte level: who gets what,
//! how fast, and how duplicate or bogus subscriptions are treated.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_protocol::relay::{ClientPacket, NodePacket};
use tokio::time::Instant;

fn broadcast(cluster: &str, msg: &'static [u8]) -> ClientPacket {
    ClientPacket::Broadcast {
        cluster: cluster.into(),
        message: Bytes::from_static(msg),
    }
}

fn publish(topic: &str, ev: &'static [u8]) -> ClientPacket {
    ClientPacket::Publish {
        topic: topic.into(),
        event: Bytes::from_static(ev),
    }
}

fn subscribe(topic: &str) -> ClientPacket {
    ClientPacket::Subscribe {
        topic: topic.into(),
    }
}

fn event(topic: &str, ev: &'static [u8]) -> NodePacket {
    NodePacket::Publish {
        topic: topic.into(),
        event: Bytes::from_static(ev),
    }
}

#[tokio::test]
async fn broadcast_reaches_every_member_connection_sender_included_and_nobody_else() {
    let n = node(0x10, vec![]).await;
    let addr = relay_addr(&n);
    let mut m1 = Raw::attach(addr, "bc").await;
    let mut m2 = Raw::attach(addr, "bc").await;
    let mut m3 = Raw::attach(addr, "bc").await;
    let mut other = Raw::attach(addr, "bc2").await;
    let mut plain = Raw::attach(addr, "").await;

    // From a member: every member, the sender too, gets `03 msg`, byte for byte.
    m1.send_bytes(b"\x03\x02bc\x05hello").await;
    for m in [&mut m1, &mut m2, &mut m3] {
        assert_eq!(m.read_exact(7).await, b"\x03\x05hello");
    }
    // From a plain client: the members get it, the sender does not.
    plain.send(broadcast("bc", b"from plain")).await;
    for m in [&mut m1, &mut m2, &mut m3] {
        m.expect(NodePacket::Broadcast {
            message: Bytes::from_static(b"from plain"),
        })
        .await;
    }
    // From a member of another cluster, with an empty message (legal).
    other.send(broadcast("bc", b"")).await;
    for m in [&mut m1, &mut m2, &mut m3] {
        m.expect(NodePacket::Broadcast {
            message: Bytes::new(),
        })
        .await;
    }
    // Non-members got nothing at all; each member got each broadcast exactly once.
    for r in [&mut other, &mut plain, &mut m1, &mut m2, &mut m3] {
        r.assert_nothing_queued().await;
    }
    // A broadcast to a cluster with no member goes nowhere and harms nobody.
    plain.send(broadcast("nobody", b"x")).await;
    for r in [&mut other, &mut plain, &mut m1, &mut m2, &mut m3] {
        r.assert_nothing_queued().await;
    }
    n.shutdown().await;
}

#[tokio::test]
async fn publish_reaches_every_subscriber_publisher_included_within_milliseconds() {
    let n = node(0x11, vec![]).await;
    let addr = relay_addr(&n);
    let mut s1 = Raw::attach(addr, "").await;
    let mut s2 = Raw::attach(addr, "svc").await;
    let mut publisher = Raw::attach(addr, "").await;
    let mut not_sub = Raw::attach(addr, "").await;
    for r in [&mut s1, &mut s2, &mut publisher] {
        r.send(subscribe("topic1")).await;
    }
    not_sub.send(subscribe("topic2")).await;
    // Each subscription is in place once its own marker came back.
    for r in [&mut s1, &mut s2, &mut publisher, &mut not_sub] {
        r.assert_nothing_queued().await;
    }

    publisher.send_bytes(b"\x08\x06topic1\x02ev").await;
    for r in [&mut s1, &mut s2, &mut publisher] {
        assert_eq!(r.read_exact(11).await, b"\x08\x06topic1\x02ev");
    }
    for r in [&mut s1, &mut s2, &mut publisher, &mut not_sub] {
        r.assert_nothing_queued().await;
    }

    // Latency: a publish to oneself and to the other subscribers arrives within a few ms (the
    // reference node: about 1 ms).
    let mut times = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        publisher.send(publish("topic1", b"t")).await;
        for r in [&mut publisher, &mut s1, &mut s2] {
            r.expect(event("topic1", b"t")).await;
        }
        times.push(t0.elapsed());
    }
    times.sort();
    assert!(
        times[times.len() / 2] < Duration::from_millis(5),
        "median publish latency {:?} (all: {times:?})",
        times[times.len() / 2]
    );
    n.shutdown().await;
}

#[tokio::test]
async fn duplicate_subscribe_and_bogus_unsubscribe_are_ignored_and_counted() {
    let n = node(0x12, vec![]).await;
    let addr = relay_addr(&n);
    let mut s = Raw::attach(addr, "svc").await;
    let mut other = Raw::attach(addr, "").await;
    other.send(subscribe("t")).await;
    other.assert_nothing_queued().await;
    let before = n.stats().await.unwrap().core;

    s.send(subscribe("t")).await;
    s.send(subscribe("t")).await;
    s.send(ClientPacket::Unsubscribe {
        topic: "never-subscribed".into(),
    })
    .await;
    // The connection stays open and served (the reference node dropped it).
    s.self_request("svc", 1).await;
    s.assert_nothing_queued().await;
    let after = n.stats().await.unwrap().core;
    assert_eq!(after.duplicate_subscribes, before.duplicate_subscribes + 1);
    assert_eq!(after.bogus_unsubscribes, before.bogus_unsubscribes + 1);

    // Subscribed twice, it still gets each event once.
    other.send(publish("t", b"one")).await;
    s.expect(event("t", b"one")).await;
    other.expect(event("t", b"one")).await;
    s.assert_nothing_queued().await;

    // After UNSUBSCRIBE nothing more arrives (one unsubscribe undoes the doubled subscribe);
    // the other subscriber still gets the events.
    s.send(ClientPacket::Unsubscribe { topic: "t".into() })
        .await;
    s.assert_nothing_queued().await;
    other.send(publish("t", b"two")).await;
    other.expect(event("t", b"two")).await;
    s.send(publish("t", b"three")).await;
    other.expect(event("t", b"three")).await;
    s.assert_nothing_queued().await;
    other.assert_nothing_queued().await;

    // Unsubscribing again is bogus now: counted, ignored.
    s.send(ClientPacket::Unsubscribe { topic: "t".into() })
        .await;
    s.self_request("svc", 2).await;
    let last = n.stats().await.unwrap().core;
    assert_eq!(last.bogus_unsubscribes, before.bogus_unsubscribes + 2);
    n.shutdown().await;
}

#[tokio::test]
async fn a_topic_and_a_cluster_may_share_a_name() {
    let n = node(0x13, vec![]).await;
    let addr = relay_addr(&n);
    let mut member = Raw::attach(addr, "same").await;
    let mut sub = Raw::attach(addr, "").await;
    sub.send(subscribe("same")).await;
    sub.assert_nothing_queued().await;

    sub.send(broadcast("same", b"bc")).await;
    member
        .expect(NodePacket::Broadcast {
            message: Bytes::from_static(b"bc"),
        })
        .await;
    member.send(publish("same", b"ev")).await;
    sub.expect(event("same", b"ev")).await;
    member.assert_nothing_queued().await;
    sub.assert_nothing_queued().await;
    n.shutdown().await;
}

#[tokio::test]
async fn a_closed_subscriber_gets_nothing_and_harms_nobody() {
    let n = node(0x14, vec![]).await;
    let addr = relay_addr(&n);
    let mut keep = Raw::attach(addr, "").await;
    keep.send(subscribe("t")).await;
    keep.assert_nothing_queued().await;
    for _ in 0..5 {
        let mut gone = Raw::attach(addr, "bc").await;
        gone.send(subscribe("t")).await;
        gone.assert_nothing_queued().await;
        drop(gone);
    }
    let mut graceful = Raw::attach(addr, "bc").await;
    graceful.send(subscribe("t")).await;
    graceful.send(ClientPacket::Close).await;
    assert_eq!(graceful.read_to_end().await, b"\x02\x00");

    // Wait until the node has seen the drops (sessions go back to 1), then publish.
    let deadline = Instant::now() + Duration::from_secs(2);
    while n.stats().await.unwrap().sessions != 1 {
        assert!(Instant::now() < deadline, "dropped sessions linger");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    keep.send(publish("t", b"after")).await;
    keep.expect(event("t", b"after")).await;
    keep.send(broadcast("bc", b"to nobody")).await;
    keep.assert_nothing_queued().await;
    n.shutdown().await;
}

/// The node hands what one read of a client's packets queues for a session to its writer
/// together (a batch), but an answer to the client's own command goes out at once: it must not
/// pass the events queued before it. One write carries a publish, a request refused at once
/// (its id is in use) and another publish; the publisher, subscribed to its own topic, must
/// read them in that order. Then a write of 500 publishes reaches both subscribers in order,
/// each event once.
#[tokio::test]
async fn a_reads_output_keeps_its_order_around_answers_to_commands() {
    let n = node(0x17, vec![]).await;
    let addr = relay_addr(&n);
    let mut me = Raw::attach(addr, "").await;
    let mut other = Raw::attach(addr, "").await;
    for c in [&mut me, &mut other] {
        c.send(subscribe("order")).await;
        // The subscription is in place once its marker came back.
        c.assert_nothing_queued().await;
    }
    let request = ClientPacket::Request {
        id: 7,
        cluster: "nobody".into(),
        request: Bytes::from_static(b"x"),
        timeout_ms: 60_000,
    };
    me.send(request.clone()).await;
    let mut one_write = encode(&publish("order", b"before"));
    one_write.extend(encode(&request));
    one_write.extend(encode(&publish("order", b"after")));
    me.send_bytes(&one_write).await;
    me.expect(event("order", b"before")).await;
    me.expect(NodePacket::Reply {
        id: 7,
        outcome: petal_protocol::relay::ReplyOutcome::Timeout,
    })
    .await;
    me.expect(event("order", b"after")).await;
    for ev in [&b"before"[..], b"after"] {
        other
            .expect(NodePacket::Publish {
                topic: "order".into(),
                event: Bytes::copy_from_slice(ev),
            })
            .await;
    }

    let events: Vec<Bytes> = (0..500u32)
        .map(|i| Bytes::from(i.to_be_bytes().to_vec()))
        .collect();
    let mut flood = Vec::new();
    for e in &events {
        flood.extend(encode(&ClientPacket::Publish {
            topic: "order".into(),
            event: e.clone(),
        }));
    }
    other.send_bytes(&flood).await;
    for c in [&mut me, &mut other] {
        for e in &events {
            c.expect(NodePacket::Publish {
                topic: "order".into(),
                event: e.clone(),
            })
            .await;
        }
        c.expect_silence(Duration::from_millis(100)).await;
    }
    n.shutdown().await;
}
