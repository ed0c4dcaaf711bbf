//! What a node shows of itself (`NodeHandle::inspect`, the admin API's data), checked against
//! what two nodes on loopback and their applications did.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_core::GroupKind;
use petal_node::DiscoveryStatus;
use petal_protocol::relay::{ClientPacket, NodePacket, ReplyOutcome};

#[tokio::test]
async fn inspection_shows_links_tables_groups_sessions_and_request_durations() {
    let a = node(0x1000_0000_0000_0000_0000_0000_0000_0000, vec![]).await;
    let b = node(
        0x9000_0000_0000_0000_0000_0000_0000_0000,
        vec![a.info().addr],
    )
    .await;
    wait_ready(&[&a, &b], 1).await;

    let mut svc = Raw::attach(relay_addr(&b), "svc").await;
    let mut sub = Raw::attach(relay_addr(&a), "").await;
    sub.send(ClientPacket::Subscribe {
        topic: "news".into(),
    })
    .await;
    let mut cli = Raw::attach(relay_addr(&a), "").await;
    let (id, got) = request_until_delivered(&mut cli, &mut svc, "svc").await;
    let Some(NodePacket::Request { id: d, .. }) = got else {
        panic!("{got:?}")
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    svc.send(ClientPacket::Reply {
        id: d,
        result: Ok(Bytes::from_static(b"pong")),
    })
    .await;
    assert!(matches!(
        cli.recv().await,
        Some(NodePacket::Reply {
            outcome: ReplyOutcome::Success(_),
            ..
        })
    ));

    let ia = a.inspect().await.expect("a runs");
    let ib = b.inspect().await.expect("b runs");
    assert_eq!(ia.id, a.info().id);
    assert_eq!(ia.peer_addr, a.info().addr);
    assert_eq!(ia.relay_addrs, a.relay_addrs());
    assert!(ia.encrypted);
    assert_eq!(ia.discovery, DiscoveryStatus::Off);
    assert!(ia.stats.ready && !ia.joining);
    // The one link, seen from both ends, carried traffic both ways; the joiner dialed it.
    let la = ia
        .links
        .iter()
        .find(|l| l.peer == b.info().id)
        .expect("link a-b");
    let lb = ib
        .links
        .iter()
        .find(|l| l.peer == a.info().id)
        .expect("link b-a");
    assert!(la.up && lb.up);
    assert!(lb.dialed_by_us && !la.dialed_by_us, "{la:?} {lb:?}");
    for l in [la, lb] {
        assert!(l.bytes_in > 0 && l.bytes_out > 0 && l.messages_in > 0 && l.messages_out > 0);
        assert!(l.age > Duration::ZERO && l.age < Duration::from_secs(60));
    }
    // Each is the other's leaf-set member (a ring of two: on both sides).
    let leaf_ids = |i: &petal_node::Inspection| -> Vec<_> {
        i.leaf_left
            .iter()
            .chain(&i.leaf_right)
            .map(|e| e.id)
            .collect()
    };
    assert!(leaf_ids(&ia).contains(&b.info().id));
    assert!(leaf_ids(&ib).contains(&a.info().id));
    let mut distinct = leaf_ids(&ia);
    distinct.sort();
    distinct.dedup();
    assert_eq!(ia.stats.leaf_set, distinct.len());
    for r in &ia.routes {
        assert!(r.row < 32 && r.column < 16, "{r:?}");
    }
    // a: two sessions; the subscriber is a member of the topic's tree, named.
    assert_eq!(ia.sessions.len(), 2);
    let news = ia
        .groups
        .iter()
        .find(|g| g.kind == GroupKind::Topic && g.name.as_deref() == Some("news"))
        .expect("the topic's tree at a");
    assert_eq!(news.members.len(), 1);
    // b: the service's cluster, named, with its one member.
    let svc_group = ib
        .groups
        .iter()
        .find(|g| g.kind == GroupKind::Cluster && g.name.as_deref() == Some("svc"))
        .expect("the cluster's tree at b");
    assert_eq!(svc_group.members.len(), 1);
    assert_eq!(ib.sessions.len(), 1);
    // Every request the node took has its duration: the timed-out warm-up ones (~200 ms) and
    // the answered one (>= the 20 ms the service waited).
    let h = &ia.request_durations;
    assert_eq!(h.count(), id);
    assert!(h.sum_us >= 20_000 + (id - 1) * 200_000, "{h:?}");
    assert_eq!(ib.request_durations.count(), 0);
    assert!(ia.tunnels.is_empty());
    assert!(ia.stats.core.requests_answered >= 1);
    for n in [a, b] {
        n.shutdown().await;
    }
}
