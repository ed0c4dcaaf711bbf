//! The relay v1 server of one node, spoken to byte by byte.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_protocol::relay::{ClientPacket, NodePacket, ReplyOutcome};

#[tokio::test]
async fn accept_and_deny_bytes_are_the_reference_nodes() {
    let n = node(1, vec![]).await;
    let mut r = Raw::connect(relay_addr(&n)).await;
    r.send_bytes(b"\x00\x11iris-client-magic\x0bv1.0-draft2\x00")
        .await;
    let mut got = vec![0u8; 30];
    tokio::io::AsyncReadExt::read_exact(&mut r.s, &mut got)
        .await
        .unwrap();
    assert_eq!(got, b"\x00\x10iris-relay-magic\x0bv1.0-draft2");

    let mut r = Raw::connect(relay_addr(&n)).await;
    r.send_bytes(b"\x00\x11iris-client-magic\x04v0.9\x00").await;
    let want =
        b"\x01\x10iris-relay-magic\x36Unsupported protocol. Client: v0.9. Iris: v1.0-draft2.";
    assert_eq!(r.read_to_end().await, want.to_vec());

    for bad in [
        &b"\x00\x11iris-client-magiX\x0bv1.0-draft2\x00"[..],
        &b"\x7f"[..],
        &b"\x03\x00\x00"[..],
    ] {
        let mut r = Raw::connect(relay_addr(&n)).await;
        r.send_bytes(bad).await;
        assert_eq!(r.read_to_end().await, Vec::<u8>::new(), "{bad:?}");
    }
    n.shutdown().await;
}

#[tokio::test]
async fn request_reply_fault_and_timeout_on_one_node() {
    let n = node(2, vec![]).await;
    let mut svc = Raw::attach(relay_addr(&n), "echo").await;
    let mut cli = Raw::attach(relay_addr(&n), "").await;
    cli.send(ClientPacket::Request {
        id: 300,
        cluster: "echo".into(),
        request: Bytes::from_static(b"hi"),
        timeout_ms: 5000,
    })
    .await;
    let Some(NodePacket::Request {
        id,
        request,
        timeout_ms,
    }) = svc.recv().await
    else {
        panic!()
    };
    assert_eq!((&request[..], timeout_ms), (&b"hi"[..], 5000));
    svc.send(ClientPacket::Reply {
        id,
        result: Ok(Bytes::from_static(b"hi back")),
    })
    .await;
    assert_eq!(
        cli.recv().await,
        Some(NodePacket::Reply {
            id: 300,
            outcome: ReplyOutcome::Success(Bytes::from_static(b"hi back"))
        })
    );

    cli.send(ClientPacket::Request {
        id: 301,
        cluster: "echo".into(),
        request: Bytes::from_static(b"x"),
        timeout_ms: 5000,
    })
    .await;
    let Some(NodePacket::Request { id, .. }) = svc.recv().await else {
        panic!()
    };
    svc.send(ClientPacket::Reply {
        id,
        result: Err("boom".into()),
    })
    .await;
    assert_eq!(
        cli.recv().await,
        Some(NodePacket::Reply {
            id: 301,
            outcome: ReplyOutcome::Fault("boom".into())
        })
    );

    cli.send(ClientPacket::Request {
        id: 302,
        cluster: "nobody".into(),
        request: Bytes::from_static(b"x"),
        timeout_ms: 50,
    })
    .await;
    assert_eq!(
        cli.recv().await,
        Some(NodePacket::Reply {
            id: 302,
            outcome: ReplyOutcome::Timeout
        })
    );
    let _ = Duration::ZERO;
    n.shutdown().await;
}
