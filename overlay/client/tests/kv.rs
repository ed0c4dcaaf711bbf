//! The store's calls against a scripted fake node: what goes on the wire, how each answer
//! becomes a return value or an error, the extension's negotiation and the fallback to plain
//! v1 when a node (the original Iris node) denies it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::FakeNode;
use petal_client::{Connection, Entry, Error, StoreResult, Version};
use petal_protocol::relay::ext::EXT_VERSION;
use petal_protocol::relay::{ClientPacket, NodePacket, RELAY_MAGIC, VERSION};

const T: Duration = Duration::from_secs(2);

/// A client connected to a fake node that grants the extension.
async fn ext_client() -> (Connection, common::Peer) {
    let node = FakeNode::new().await;
    let (conn, peer) = tokio::join!(Connection::connect_addr(node.addr), async {
        let (mut peer, _) = node.accept().await;
        peer.accept_init_ext().await;
        peer
    });
    (conn.expect("connect"), peer)
}

#[tokio::test]
async fn each_answer_becomes_its_return_value() {
    let (conn, mut peer) = ext_client().await;
    let v = Version {
        hlc: 7 << 16,
        node: 3,
    };
    let node = async {
        // put with a TTL -> written
        match peer.recv().await {
            Some(ClientPacket::KvPut {
                id,
                key,
                value,
                ttl_ms,
                expect,
                timeout_ms,
            }) => {
                assert_eq!((key.as_str(), &value[..], ttl_ms), ("k", &b"v"[..], 1500));
                assert_eq!((expect, timeout_ms), (None, 2000));
                peer.send(NodePacket::KvResult {
                    id,
                    result: StoreResult::Written(v),
                })
                .await;
            }
            other => panic!("{other:?}"),
        }
        // get -> found, then not found
        for found in [true, false] {
            match peer.recv().await {
                Some(ClientPacket::KvGet { id, key, .. }) => {
                    assert_eq!(key, "k");
                    let result = if found {
                        StoreResult::Found {
                            version: v,
                            value: Bytes::from_static(b"v"),
                            expires_ms: 99,
                        }
                    } else {
                        StoreResult::NotFound
                    };
                    peer.send(NodePacket::KvResult { id, result }).await;
                }
                other => panic!("{other:?}"),
            }
        }
        // conditional put -> conflict; delete -> timed out; delete_if -> failed
        for result in [
            StoreResult::Conflict(v),
            StoreResult::TimedOut,
            StoreResult::Failed("write quorum not reached".into()),
        ] {
            let id = match peer.recv().await {
                Some(ClientPacket::KvPut { id, expect, .. }) => {
                    assert_eq!(expect, Some(Version::NONE));
                    id
                }
                Some(ClientPacket::KvDelete { id, .. }) => id,
                other => panic!("{other:?}"),
            };
            peer.send(NodePacket::KvResult { id, result }).await;
        }
        peer
    };
    let client = async {
        assert_eq!(
            conn.kv_put("k", "v", Some(Duration::from_millis(1500)), T)
                .await
                .unwrap(),
            v
        );
        assert_eq!(
            conn.kv_get("k", T).await.unwrap(),
            Some(Entry {
                value: Bytes::from_static(b"v"),
                version: v,
                expires_ms: 99
            })
        );
        assert_eq!(conn.kv_get("k", T).await.unwrap(), None);
        match conn.kv_put_if("k", "w", None, Version::NONE, T).await {
            Err(Error::Conflict(current)) => assert_eq!(current, v),
            other => panic!("{other:?}"),
        }
        assert!(matches!(conn.kv_delete("k", T).await, Err(Error::Timeout)));
        match conn.kv_delete_if("k", v, T).await {
            Err(Error::Store(why)) => assert!(why.contains("quorum")),
            other => panic!("{other:?}"),
        }
    };
    let (_peer, ()) = tokio::join!(node, client);
}

#[tokio::test]
async fn without_the_extension_the_store_is_unsupported_and_nothing_is_sent() {
    // A node that accepts with plain v1 did not grant the extension.
    let (conn, mut peer) = common::client().await;
    assert!(matches!(
        conn.kv_get("k", T).await,
        Err(Error::Unsupported(_))
    ));
    assert!(peer.quiet_for(Duration::from_millis(50)).await);
}

#[tokio::test]
async fn a_node_that_denies_the_extension_is_dialled_again_with_plain_v1() {
    let node = FakeNode::new().await;
    let (conn, ()) = tokio::join!(Connection::connect_addr(node.addr), async {
        // First: the extension's version, denied as the Iris node denies any other version.
        let (mut peer, _) = node.accept_any().await;
        peer.send(NodePacket::Deny {
            magic: RELAY_MAGIC.into(),
            reason: format!("Unsupported protocol. Client: {EXT_VERSION}. Iris: {VERSION}."),
        })
        .await;
        peer.hang_up().await;
        // Then plain v1, accepted.
        let (mut peer, version) = node.accept_any().await;
        assert_eq!(version, VERSION);
        peer.accept_init().await;
        std::mem::forget(peer);
    });
    let conn = conn.expect("connected with plain v1");
    assert!(matches!(
        conn.kv_get("k", T).await,
        Err(Error::Unsupported(_))
    ));
}
