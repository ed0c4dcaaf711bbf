//! The store through Petal's relay extension: negotiated by the INIT version, refused (as an
//! unknown opcode, closing without a byte) to a plain v1 client, and working across nodes:
//! a value put at one node is read at another, conditional writes, deletes, time to live,
//! bad arguments answered with a failure, and exactly one KV_RESULT per operation.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_protocol::relay::{self, ClientPacket, NodePacket, ext::EXT_VERSION};
use petal_protocol::{StoreResult, Version};

/// Connects and handshakes with the extension's version; the node must echo it.
async fn attach_ext(addr: std::net::SocketAddr) -> Raw {
    let mut r = Raw::connect(addr).await;
    r.send(ClientPacket::Init {
        magic: relay::CLIENT_MAGIC.into(),
        version: EXT_VERSION.into(),
        cluster: String::new(),
    })
    .await;
    match r.recv().await {
        Some(NodePacket::Init { magic, version }) => {
            assert_eq!(magic, relay::RELAY_MAGIC);
            assert_eq!(version, EXT_VERSION, "the node grants the extension");
        }
        other => panic!("handshake answered with {other:?}"),
    }
    r
}

fn put(
    id: u64,
    key: &str,
    value: &'static [u8],
    ttl_ms: u64,
    expect: Option<Version>,
) -> ClientPacket {
    ClientPacket::KvPut {
        id,
        key: key.into(),
        value: Bytes::from_static(value),
        ttl_ms,
        expect,
        timeout_ms: 3_000,
    }
}

fn get(id: u64, key: &str) -> ClientPacket {
    ClientPacket::KvGet {
        id,
        key: key.into(),
        timeout_ms: 3_000,
    }
}

/// The KV_RESULT of operation `id` (the next packet).
async fn result(r: &mut Raw, id: u64) -> StoreResult {
    match r.next().await {
        NodePacket::KvResult { id: got, result } => {
            assert_eq!(got, id);
            result
        }
        other => panic!("expected KV_RESULT {id}, got {other:?}"),
    }
}

fn version(r: &StoreResult) -> Version {
    match r {
        StoreResult::Written(v) => *v,
        other => panic!("expected a write, got {other:?}"),
    }
}

#[tokio::test]
async fn a_plain_v1_client_gets_no_extension_and_its_store_packets_close_it() {
    let n = node(0x42, vec![]).await;
    let mut plain = Raw::attach(relay_addr(&n), "").await;
    plain.send(get(1, "k")).await;
    plain.expect_eof_no_bytes().await;
    // A client that negotiated it is served, with Unix-time versions from the daemon's clock
    // only when set (here none: the node's clock starts at 0).
    let mut ext = attach_ext(relay_addr(&n)).await;
    ext.send(get(1, "k")).await;
    assert_eq!(result(&mut ext, 1).await, StoreResult::NotFound);
    n.shutdown().await;
}

#[tokio::test]
async fn values_put_at_one_node_are_read_at_another() {
    let [a, b, c] = three_nodes().await;
    let mut ca = attach_ext(relay_addr(&a)).await;
    let mut cb = attach_ext(relay_addr(&b)).await;
    let mut cc = attach_ext(relay_addr(&c)).await;

    ca.send(put(1, "color", b"blue", 0, None)).await;
    let v1 = version(&result(&mut ca, 1).await);
    for (r, id) in [(&mut cb, 2), (&mut cc, 3)] {
        r.send(get(id, "color")).await;
        match result(r, id).await {
            StoreResult::Found { version, value, .. } => {
                assert_eq!((version, &value[..]), (v1, &b"blue"[..]));
            }
            other => panic!("{other:?}"),
        }
    }
    // Compare-and-set: a stale version conflicts, the current one wins.
    cb.send(put(4, "color", b"red", 0, Some(Version::NONE)))
        .await;
    assert_eq!(result(&mut cb, 4).await, StoreResult::Conflict(v1));
    cb.send(put(5, "color", b"red", 0, Some(v1))).await;
    let v2 = version(&result(&mut cb, 5).await);
    assert!(v2 > v1);
    // Delete, then not found anywhere.
    cc.send(ClientPacket::KvDelete {
        id: 6,
        key: "color".into(),
        expect: Some(v2),
        timeout_ms: 3_000,
    })
    .await;
    version(&result(&mut cc, 6).await);
    ca.send(get(7, "color")).await;
    assert_eq!(result(&mut ca, 7).await, StoreResult::NotFound);
    // A time to live.
    ca.send(put(8, "session", b"s", 300, None)).await;
    version(&result(&mut ca, 8).await);
    cb.send(get(9, "session")).await;
    assert!(matches!(
        result(&mut cb, 9).await,
        StoreResult::Found { .. }
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    cc.send(get(10, "session")).await;
    assert_eq!(result(&mut cc, 10).await, StoreResult::NotFound);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn bad_store_commands_get_one_failure_each() {
    let n = node(0x43, vec![]).await;
    let mut r = attach_ext(relay_addr(&n)).await;
    // An empty key and a key over the limit: one failure each, nothing else. (An id in use is
    // refused by the core: `overlay/core/tests/store.rs`.)
    r.send(get(1, "")).await;
    match result(&mut r, 1).await {
        StoreResult::Failed(why) => assert!(why.contains("key"), "{why}"),
        other => panic!("{other:?}"),
    }
    r.send(get(2, &"k".repeat(2_000))).await;
    assert!(matches!(result(&mut r, 2).await, StoreResult::Failed(_)));
    // An id may be used again once its operation has its outcome (here at once: the only
    // node is the key's home and its only replica).
    r.send(put(3, "k", b"v", 0, None)).await;
    let v1 = version(&result(&mut r, 3).await);
    r.send(put(3, "k", b"w", 0, None)).await;
    assert!(version(&result(&mut r, 3).await) > v1);
    r.assert_nothing_queued().await;
    n.shutdown().await;
}
