//! Tunnels against a scripted fake node: opening both ways, credit, chunking, reassembly,
//! partial messages, timeouts, close.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Peer, client, client_with, service, timely};
use petal_client::{Connection, Error, Options, ServiceHandler, Tunnel};
use petal_protocol::relay::{ClientPacket, NodePacket};
use tokio::sync::mpsc;

const BUFFER: u64 = 64 << 20;

/// Opens a tunnel through the fake node, which confirms with `chunk_limit` and grants
/// `credit`. Checks the client's own grant.
async fn open(conn: &Connection, peer: &mut Peer, chunk_limit: u64, credit: u64) -> (Tunnel, u64) {
    let c = conn.clone();
    let opening = tokio::spawn(async move { c.tunnel("svc", Duration::from_millis(700)).await });
    let id = match peer.recv().await {
        Some(ClientPacket::TunInit {
            id,
            cluster,
            timeout_ms,
        }) => {
            assert_eq!((cluster.as_str(), timeout_ms), ("svc", 700));
            id
        }
        other => panic!("expected TUN_INIT, got {other:?}"),
    };
    peer.send(NodePacket::TunConfirm {
        id,
        chunk_limit: Some(chunk_limit),
    })
    .await;
    peer.send(NodePacket::TunAllow { id, space: credit }).await;
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::TunAllow { id, space: BUFFER })
    );
    let tunnel = timely(opening).await.expect("join").expect("open");
    assert_eq!(tunnel.id(), id);
    assert_eq!(tunnel.chunk_limit(), chunk_limit);
    (tunnel, id)
}

/// Reads one chunk of tunnel `id`.
async fn chunk(peer: &mut Peer, id: u64) -> (u64, Bytes) {
    match peer.recv().await {
        Some(ClientPacket::TunTransfer {
            id: got,
            size,
            payload,
        }) => {
            assert_eq!(got, id);
            (size, payload)
        }
        other => panic!("expected a chunk, got {other:?}"),
    }
}

#[tokio::test]
async fn open_timeout() {
    let (conn, mut peer) = client().await;
    let c = conn.clone();
    let opening = tokio::spawn(async move { c.tunnel("svc", Duration::from_millis(10)).await });
    let Some(ClientPacket::TunInit { id, .. }) = peer.recv().await else {
        panic!("init")
    };
    peer.send(NodePacket::TunConfirm {
        id,
        chunk_limit: None,
    })
    .await;
    let result = timely(opening).await.expect("join");
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
}

#[tokio::test]
async fn send_never_exceeds_credit() {
    let (conn, mut peer) = client().await;
    let (tunnel, id) = open(&conn, &mut peer, 100, 250).await;
    let message: Bytes = (0..1000u32).map(|i| i as u8).collect::<Vec<_>>().into();
    let m = message.clone();
    let sending = tokio::spawn(async move {
        tunnel.send(m, Duration::from_secs(2)).await.expect("send");
        tunnel
    });
    let mut granted = 250u64;
    let mut spent = 0u64;
    let mut got = BytesMut::new();
    let mut first = true;
    while got.len() < message.len() {
        // Read everything the current credit allows, then check the client stops.
        while granted - spent >= 100 {
            let (size, payload) = chunk(&mut peer, id).await;
            assert_eq!(size, if first { 1000 } else { 0 });
            first = false;
            assert!(payload.len() <= 100);
            spent += payload.len() as u64;
            assert!(
                spent <= granted,
                "client sent {spent} bytes with {granted} granted"
            );
            got.extend_from_slice(&payload);
            if got.len() == message.len() {
                break;
            }
        }
        if got.len() == message.len() {
            break;
        }
        assert!(
            peer.quiet_for(Duration::from_millis(15)).await,
            "sent beyond its credit"
        );
        peer.send(NodePacket::TunAllow { id, space: 150 }).await;
        granted += 150;
    }
    assert_eq!(got.freeze(), message);
    let _tunnel = timely(sending).await.expect("join");
}

#[tokio::test]
async fn one_mib_message_is_chunked() {
    let (conn, mut peer) = client().await;
    let (tunnel, id) = open(&conn, &mut peer, 65536, 4 << 20).await;
    let message: Bytes = (0..1u32 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let m = message.clone();
    let sending = tokio::spawn(async move { tunnel.send(m, Duration::from_secs(2)).await });
    let mut got = BytesMut::new();
    let mut chunks = 0;
    while got.len() < message.len() {
        let (size, payload) = chunk(&mut peer, id).await;
        assert_eq!(size, if chunks == 0 { 1 << 20 } else { 0 });
        assert!(payload.len() <= 65536);
        got.extend_from_slice(&payload);
        chunks += 1;
    }
    assert_eq!(chunks, 16);
    assert_eq!(got.freeze(), message);
    timely(sending).await.expect("join").expect("send");
}

#[tokio::test]
async fn reassembles_and_regrants_on_consume() {
    let (conn, mut peer) = client().await;
    let (tunnel, id) = open(&conn, &mut peer, 65536, 4 << 20).await;
    let message: Bytes = (0..300u32).map(|i| i as u8).collect::<Vec<_>>().into();
    peer.send(NodePacket::TunTransfer {
        id,
        size: 300,
        payload: message.slice(0..100),
    })
    .await;
    peer.send(NodePacket::TunTransfer {
        id,
        size: 0,
        payload: message.slice(100..250),
    })
    .await;
    peer.send(NodePacket::TunTransfer {
        id,
        size: 0,
        payload: message.slice(250..),
    })
    .await;
    peer.send(NodePacket::TunTransfer {
        id,
        size: 5,
        payload: Bytes::from("after"),
    })
    .await;
    // Nothing is granted back until the application takes the message.
    assert!(peer.quiet_for(Duration::from_millis(20)).await);
    assert_eq!(timely(tunnel.recv()).await.expect("recv"), message);
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::TunAllow { id, space: 300 })
    );
    assert_eq!(timely(tunnel.recv()).await.expect("recv"), "after");
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::TunAllow { id, space: 5 })
    );
}

#[tokio::test]
async fn partial_message_is_dropped_and_regranted() {
    let (conn, mut peer) = client().await;
    let (tunnel, id) = open(&conn, &mut peer, 65536, 4 << 20).await;
    peer.send(NodePacket::TunTransfer {
        id,
        size: 100,
        payload: Bytes::from(vec![1; 40]),
    })
    .await;
    peer.send(NodePacket::TunTransfer {
        id,
        size: 10,
        payload: Bytes::from(vec![2; 10]),
    })
    .await;
    // The abandoned 40 bytes come back at once, before any recv.
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::TunAllow { id, space: 40 })
    );
    assert_eq!(
        timely(tunnel.recv()).await.expect("recv"),
        Bytes::from(vec![2; 10])
    );
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::TunAllow { id, space: 10 })
    );
}

#[tokio::test]
async fn send_timeout_leaves_tunnel_usable() {
    let (conn, mut peer) = client().await;
    let (tunnel, id) = open(&conn, &mut peer, 50, 100).await;
    let message = Bytes::from(vec![7u8; 300]);
    let result = timely(tunnel.send(message, Duration::from_millis(30))).await;
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert_eq!(chunk(&mut peer, id).await.0, 300);
    assert_eq!(chunk(&mut peer, id).await.0, 0);
    assert!(peer.quiet_for(Duration::from_millis(15)).await);
    // More credit: the next message starts afresh with a first chunk.
    peer.send(NodePacket::TunAllow { id, space: 100 }).await;
    timely(tunnel.send(Bytes::from(vec![8u8; 20]), Duration::from_secs(1)))
        .await
        .expect("send after a timeout");
    let (size, payload) = chunk(&mut peer, id).await;
    assert_eq!((size, payload), (20, Bytes::from(vec![8u8; 20])));
    assert!(matches!(
        tunnel.send(Bytes::new(), Duration::from_secs(1)).await,
        Err(Error::Invalid(_))
    ));
}

#[tokio::test]
async fn close_waits_for_ack() {
    let (conn, mut peer) = client().await;
    let (tunnel, id) = open(&conn, &mut peer, 65536, 4 << 20).await;
    let tunnel = std::sync::Arc::new(tunnel);
    let t = tunnel.clone();
    let closing = tokio::spawn(async move { t.close().await });
    assert_eq!(peer.recv().await, Some(ClientPacket::TunClose { id }));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!closing.is_finished(), "close must wait for the ack");
    peer.send(NodePacket::TunClose {
        id,
        reason: String::new(),
    })
    .await;
    timely(closing).await.expect("join").expect("close");
    assert!(tunnel.is_closed());
    assert!(matches!(tunnel.recv().await, Err(Error::Closed(_))));
    assert!(matches!(
        tunnel.send(&b"x"[..], Duration::from_secs(1)).await,
        Err(Error::Closed(_))
    ));
    drop(tunnel);
    assert!(
        peer.quiet_for(Duration::from_millis(15)).await,
        "no second TUN_CLOSE"
    );
}

#[tokio::test]
async fn remote_close_delivers_buffered_then_reason() {
    let (conn, mut peer) = client().await;
    let (tunnel, id) = open(&conn, &mut peer, 65536, 4 << 20).await;
    peer.send(NodePacket::TunTransfer {
        id,
        size: 3,
        payload: Bytes::from("end"),
    })
    .await;
    peer.send(NodePacket::TunClose {
        id,
        reason: "bye".into(),
    })
    .await;
    assert_eq!(timely(tunnel.recv()).await.expect("buffered"), "end");
    match timely(tunnel.recv()).await {
        Err(Error::Closed(reason)) => assert_eq!(reason, "bye"),
        other => panic!("expected closed, got {other:?}"),
    }
    // Closing after the far end closed ends at once, without a packet.
    timely(tunnel.close()).await.expect("close");
    drop(tunnel);
    assert!(peer.quiet_for(Duration::from_millis(15)).await);
}

#[tokio::test]
async fn dropping_a_tunnel_closes_it() {
    let (conn, mut peer) = client().await;
    let (tunnel, id) = open(&conn, &mut peer, 65536, 4 << 20).await;
    drop(tunnel);
    assert_eq!(peer.recv().await, Some(ClientPacket::TunClose { id }));
}

#[tokio::test]
async fn break_ends_tunnels() {
    let (conn, mut peer) = client().await;
    let (tunnel, _) = open(&conn, &mut peer, 65536, 0).await;
    let tunnel = std::sync::Arc::new(tunnel);
    let t = tunnel.clone();
    let receiving = tokio::spawn(async move { t.recv().await });
    let t = tunnel.clone();
    let sending = tokio::spawn(async move { t.send(&b"x"[..], Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    peer.hang_up().await;
    assert!(matches!(
        timely(receiving).await.expect("join"),
        Err(Error::Broken(_))
    ));
    assert!(matches!(
        timely(sending).await.expect("join"),
        Err(Error::Broken(_))
    ));
}

#[tokio::test]
async fn node_exceeding_credit_closes_the_tunnel() {
    let mut options = Options::default();
    options.tunnel_buffer = 100;
    let (conn, mut peer) = client_with(options).await;
    let c = conn.clone();
    let opening = tokio::spawn(async move { c.tunnel("svc", Duration::from_secs(1)).await });
    let Some(ClientPacket::TunInit { id, .. }) = peer.recv().await else {
        panic!("init")
    };
    peer.send(NodePacket::TunConfirm {
        id,
        chunk_limit: Some(65536),
    })
    .await;
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::TunAllow { id, space: 100 })
    );
    let tunnel = timely(opening).await.expect("join").expect("open");
    peer.send(NodePacket::TunTransfer {
        id,
        size: 60,
        payload: Bytes::from(vec![0; 60]),
    })
    .await;
    // 60 outstanding + 60 more exceeds the 100 granted.
    peer.send(NodePacket::TunTransfer {
        id,
        size: 60,
        payload: Bytes::from(vec![1; 60]),
    })
    .await;
    assert_eq!(peer.recv().await, Some(ClientPacket::TunClose { id }));
    assert_eq!(
        timely(tunnel.recv()).await.expect("first message"),
        Bytes::from(vec![0; 60])
    );
    assert!(matches!(timely(tunnel.recv()).await, Err(Error::Broken(_))));
}

struct Acceptor(mpsc::UnboundedSender<Tunnel>);

impl ServiceHandler for Acceptor {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }

    fn handle_tunnel(&self, tunnel: Tunnel) {
        let _ = self.0.send(tunnel);
    }
}

#[tokio::test]
async fn inbound_tunnel_is_confirmed_and_works() {
    let (tx, mut tunnels) = mpsc::unbounded_channel();
    let (svc, mut peer) = service("svc", Acceptor(tx)).await;
    // Make the outbound counter move first: inbound ids come from the same counter.
    let c = svc.connection().clone();
    let opening = tokio::spawn(async move { c.tunnel("x", Duration::from_millis(5)).await });
    let Some(ClientPacket::TunInit { id: out_id, .. }) = peer.recv().await else {
        panic!("init")
    };
    peer.send(NodePacket::TunConfirm {
        id: out_id,
        chunk_limit: None,
    })
    .await;
    assert!(matches!(
        timely(opening).await.expect("join"),
        Err(Error::Timeout)
    ));

    peer.send(NodePacket::TunInit {
        build_id: 9,
        chunk_limit: 4,
    })
    .await;
    let tun_id = match peer.recv().await {
        Some(ClientPacket::TunConfirm {
            build_id: 9,
            tun_id,
        }) => tun_id,
        other => panic!("expected TUN_CONFIRM, got {other:?}"),
    };
    assert_ne!(tun_id, out_id);
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::TunAllow {
            id: tun_id,
            space: BUFFER
        })
    );
    let tunnel = timely(tunnels.recv()).await.expect("tunnel");
    assert_eq!(tunnel.id(), tun_id);
    peer.send(NodePacket::TunAllow {
        id: tun_id,
        space: 4 << 20,
    })
    .await;
    timely(tunnel.send(&b"hello"[..], Duration::from_secs(1)))
        .await
        .expect("send");
    assert_eq!(chunk(&mut peer, tun_id).await, (5, Bytes::from("hell")));
    assert_eq!(chunk(&mut peer, tun_id).await, (0, Bytes::from("o")));
    peer.send(NodePacket::TunTransfer {
        id: tun_id,
        size: 2,
        payload: Bytes::from("hi"),
    })
    .await;
    assert_eq!(timely(tunnel.recv()).await.expect("recv"), "hi");
}

#[tokio::test]
async fn default_tunnel_handler_closes_inbound_tunnels() {
    struct Plain;
    impl ServiceHandler for Plain {
        async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
            Ok(request)
        }
    }
    let (_svc, mut peer) = service("svc", Plain).await;
    peer.send(NodePacket::TunInit {
        build_id: 3,
        chunk_limit: 65536,
    })
    .await;
    let Some(ClientPacket::TunConfirm {
        build_id: 3,
        tun_id,
    }) = peer.recv().await
    else {
        panic!("confirm")
    };
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::TunAllow {
            id: tun_id,
            space: BUFFER
        })
    );
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::TunClose { id: tun_id })
    );
}

#[tokio::test]
async fn second_confirm_is_counted_as_unexpected() {
    let (conn, mut peer) = client().await;
    let (tunnel, id) = open(&conn, &mut peer, 1024, 1 << 20).await;
    peer.send(NodePacket::TunConfirm {
        id,
        chunk_limit: Some(1024),
    })
    .await;
    // And a confirm of a tunnel never opened.
    peer.send(NodePacket::TunConfirm {
        id: id + 1000,
        chunk_limit: Some(1024),
    })
    .await;
    timely(async {
        while conn.stats().unexpected_confirms < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(conn.stats().unexpected_confirms, 2);
    // The tunnel still works.
    tunnel
        .send(Bytes::from("after"), Duration::from_secs(1))
        .await
        .expect("send");
    assert_eq!(chunk(&mut peer, id).await, (5, Bytes::from("after")));
}
