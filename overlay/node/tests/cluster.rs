//! Several nodes on loopback: they join through a seed and serve each other's applications.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_protocol::relay::{ClientPacket, NodePacket, ReplyOutcome};

#[tokio::test]
async fn three_nodes_converge_and_serve_requests_across() {
    let a = node(0x1000_0000_0000_0000_0000_0000_0000_0000, vec![]).await;
    let seed = a.info().addr;
    let b = node(0x5000_0000_0000_0000_0000_0000_0000_0000, vec![seed]).await;
    let c = node(0xa000_0000_0000_0000_0000_0000_0000_0000, vec![seed]).await;
    let t0 = tokio::time::Instant::now();
    wait_ready(&[&a, &b, &c], 2).await;
    eprintln!("converged in {:?}", t0.elapsed());
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "converged in {:?}",
        t0.elapsed()
    );

    let mut svc = Raw::attach(relay_addr(&c), "svc").await;
    let mut cli = Raw::attach(relay_addr(&a), "").await;
    // The member's registration travels to the cluster's root; retry until it is known.
    let mut id = 0;
    let got = loop {
        id += 1;
        cli.send(ClientPacket::Request {
            id,
            cluster: "svc".into(),
            request: Bytes::from_static(b"ping"),
            timeout_ms: 200,
        })
        .await;
        tokio::select! {
            p = svc.recv() => break p,
            p = cli.recv() => assert_eq!(p, Some(NodePacket::Reply { id, outcome: ReplyOutcome::Timeout })),
        }
        assert!(id < 20);
    };
    let Some(NodePacket::Request { id: d, request, .. }) = got else {
        panic!("{got:?}")
    };
    assert_eq!(&request[..], b"ping");
    svc.send(ClientPacket::Reply {
        id: d,
        result: Ok(Bytes::from_static(b"pong")),
    })
    .await;
    assert_eq!(
        cli.recv().await,
        Some(NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Success(Bytes::from_static(b"pong"))
        })
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
