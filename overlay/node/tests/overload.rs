//! A publisher that floods as fast as TCP takes its bytes, with the subscriber on another node:
//! the node pushes back on the publisher (it stops reading it while a peer link is backed up)
//! instead of dropping what the link cannot take, so a reading subscriber gets every event.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_protocol::relay::{ClientPacket, NodePacket};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_across_nodes_is_pushed_back_not_dropped() {
    let [a, b, c] = three_nodes().await;
    let mut sub = Raw::attach(relay_addr(&b), "").await;
    sub.send(ClientPacket::Subscribe {
        topic: "flood".into(),
    })
    .await;
    let mut publisher = Raw::attach(relay_addr(&a), "").await;
    // Wait until the subscription works end to end.
    loop {
        publisher
            .send(ClientPacket::Publish {
                topic: "flood".into(),
                event: Bytes::from_static(b"warm"),
            })
            .await;
        if let Ok(Some(_)) = sub.recv_within(Duration::from_millis(200)).await {
            break;
        }
    }
    while let Ok(Some(_)) = sub.recv_within(Duration::from_millis(200)).await {}
    // 100,000 one-byte publishes written in large batches, as fast as the socket takes them.
    const N: u32 = 100_000;
    let writer = tokio::spawn(async move {
        let mut buf = Vec::new();
        for i in 0..N {
            ClientPacket::Publish {
                topic: "flood".into(),
                event: Bytes::copy_from_slice(&i.to_be_bytes()),
            }
            .encode(&mut buf);
            if buf.len() > 256 * 1024 {
                publisher.s.write_all(&buf).await.unwrap();
                buf.clear();
            }
        }
        publisher.s.write_all(&buf).await.unwrap();
        publisher
    });
    let mut next = 0u32;
    while next < N {
        match sub.recv_within(Duration::from_secs(10)).await {
            Ok(Some(NodePacket::Publish { event, .. })) => {
                let i = u32::from_be_bytes(event[..].try_into().unwrap());
                assert_eq!(i, next, "events out of order or lost");
                next += 1;
            }
            other => panic!("after {next} events: {other:?}"),
        }
    }
    let _publisher = writer.await.unwrap();
    for n in [&a, &b, &c] {
        let s = n.stats().await.unwrap();
        assert_eq!(s.runtime.link_drops, 0, "{:?}", s.runtime);
        assert_eq!(s.core.events_lost, 0);
    }
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
