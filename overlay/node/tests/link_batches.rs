//! What one read queues for a peer link goes to the link's writer as one batch, and the
//! acknowledgements of a burst of routed messages travel together (`Message::RouteAcks`): a
//! node that takes a publisher's stream towards a topic's root answers a read with one frame
//! of acknowledgements, not one per message.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_core::GroupKind;
use petal_node::NodeHandle;
use petal_node::inspect::LinkInfo;
use petal_protocol::relay::{ClientPacket, NodePacket};

/// The link from `from` to `to`, as `from` shows it.
async fn link(from: &NodeHandle, to: &NodeHandle) -> LinkInfo {
    let i = from.inspect().await.expect("the node runs");
    i.links
        .into_iter()
        .find(|l| l.peer == to.info().id && l.up)
        .expect("the link is up")
}

/// A client of `a` writes 2,000 publishes at once to a topic whose root is `b`: each is routed
/// a -> b and acknowledged hop by hop. The subscriber at `b` must get every event once, in
/// order; `b` must acknowledge them in far fewer frames than events (one per message before
/// batches: 2,000 or more), and `a` must see every hop acknowledged (no hop timeout, no
/// reroute: hops whose acknowledgement `a` did not take time out within the second the test
/// waits).
#[tokio::test]
async fn a_burst_of_routed_publishes_is_acknowledged_in_few_frames() {
    let a = node(0x1000_0000_0000_0000_0000_0000_0000_0000, vec![]).await;
    let b = node(
        0x9000_0000_0000_0000_0000_0000_0000_0000,
        vec![a.info().addr],
    )
    .await;
    wait_ready(&[&a, &b], 1).await;
    let topic = (0..)
        .map(|i| format!("burst-{i}"))
        .find(|t| {
            b.info()
                .id
                .closer_than(a.info().id, GroupKind::Topic.key(t))
        })
        .expect("some topic's root is b");
    let publish = |event: Bytes| ClientPacket::Publish {
        topic: topic.clone(),
        event,
    };
    let event = |event: Bytes| NodePacket::Publish {
        topic: topic.as_str().into(),
        event,
    };
    let mut sub = Raw::attach(relay_addr(&b), "").await;
    sub.send(ClientPacket::Subscribe {
        topic: topic.clone(),
    })
    .await;
    sub.assert_nothing_queued().await;
    let mut publisher = Raw::attach(relay_addr(&a), "").await;
    publisher.send(publish(Bytes::from_static(b"warm"))).await;
    sub.expect(event(Bytes::from_static(b"warm"))).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let acks_before = link(&b, &a).await.messages_out;
    let before = a.inspect().await.expect("a runs").stats;
    let b_drops = b.inspect().await.expect("b runs").stats.runtime.link_drops;
    let events: Vec<Bytes> = (0..2000u32)
        .map(|i| Bytes::from(i.to_be_bytes().to_vec()))
        .collect();
    let mut flood = Vec::new();
    for e in &events {
        flood.extend(encode(&publish(e.clone())));
    }
    publisher.send_bytes(&flood).await;
    for e in &events {
        sub.expect(event(e.clone())).await;
    }
    // Past the hop timeout (`hop_ack_timeout`, 600 ms while a's round trip to b is unknown;
    // three round trips, at least 50 ms, once it is): an unacknowledged hop has timed out.
    sub.expect_silence(Duration::from_millis(1000)).await;

    let frames = link(&b, &a).await.messages_out - acks_before;
    assert!(
        frames < events.len() as u64 / 10,
        "b wrote {frames} frames to a for {} routed publishes",
        events.len()
    );
    let after = a.inspect().await.expect("a runs").stats;
    assert_eq!(
        after.core.hop_timeouts, before.core.hop_timeouts,
        "hops timed out"
    );
    assert_eq!(after.core.reroutes, before.core.reroutes, "hops rerouted");
    assert_eq!(after.runtime.link_drops, before.runtime.link_drops);
    let b_after = b.inspect().await.expect("b runs").stats.runtime.link_drops;
    assert_eq!(b_after, b_drops, "b dropped messages to a");
    a.shutdown().await;
    b.shutdown().await;
}
