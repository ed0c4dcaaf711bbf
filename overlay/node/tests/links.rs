//! Peer links under hostile or broken peers: whatever arrives on the peer port, the node closes
//! that link only, within the handshake deadline, and keeps serving its peers and applications.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_node::link::encode_hello;
use petal_protocol::relay::{ClientPacket, NodePacket, ReplyOutcome};
use petal_protocol::{NodeId, NodeInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Everything the node writes on a peer connection after `send`, until it closes (2 s at
/// most); and how long that took.
async fn peer_session(addr: std::net::SocketAddr, send: &[u8]) -> (Vec<u8>, Duration) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(send).await;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got))
        .await
        .expect("the node kept a bad link open")
        .ok();
    (got, t0.elapsed())
}

#[tokio::test]
async fn bad_peers_are_cut_off_and_the_nodes_keep_serving() {
    let [a, b, c] = three_nodes().await;
    let peer = b.info().addr;
    let b_hello = encode_hello(b.info());
    let fake = NodeInfo {
        id: NodeId(0x7777),
        addr: "127.0.0.1:9".parse().unwrap(),
    };
    let with_hello = |tail: &[u8]| {
        let mut v = encode_hello(fake);
        v.extend_from_slice(tail);
        v
    };
    let mut rng = Rng(0x11_4b);
    let mut cases: Vec<(String, Vec<u8>, bool)> = vec![
        ("silence".into(), Vec::new(), true),
        (
            "half a hello".into(),
            encode_hello(fake)[..12].to_vec(),
            true,
        ),
        (
            "a wrong magic".into(),
            b"PETALNK0".iter().copied().chain([0; 33]).collect(),
            false,
        ),
        (
            "an unknown address family".into(),
            {
                let mut v = encode_hello(fake);
                v[24] = 9;
                v
            },
            false,
        ),
        (
            "a frame over max_frame".into(),
            with_hello(&[0x7f, 0xff, 0xff, 0xff]),
            false,
        ),
        (
            "a frame of an unknown version".into(),
            with_hello(&[0, 0, 0, 5, 0xff, 1, 2, 3, 4]),
            false,
        ),
        (
            "a hello naming the node itself".into(),
            encode_hello(b.info()),
            false,
        ),
    ];
    for i in 0..20 {
        let len = 1 + rng.below(100) as usize;
        cases.push((format!("noise {i}"), rng.bytes(len), false));
        cases.push((
            format!("hello then noise {i}"),
            with_hello(&rng.bytes(len)),
            false,
        ));
    }
    // All at once, from many connections.
    let mut set = tokio::task::JoinSet::new();
    for (what, bytes, waits) in cases {
        let b_hello = b_hello.clone();
        set.spawn(async move {
            let (got, took) = peer_session(peer, &bytes).await;
            // The node's own hello (it writes first), and nothing else.
            assert!(
                got.is_empty() || got == b_hello,
                "{what}: the node wrote {got:02x?}"
            );
            if waits {
                // Nothing to refuse: cut at the 500 ms handshake deadline.
                assert!(
                    took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
                    "{what}: closed after {took:?}"
                );
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }

    // The ring still works through B: a client on A reaches a member on B and on C.
    let mut cli = Raw::attach(relay_addr(&a), "").await;
    for (n, cluster) in [(&b, "on-b"), (&c, "on-c")] {
        let mut svc = Raw::attach(relay_addr(n), cluster).await;
        warm_cluster(&mut cli, &mut svc, cluster).await;
        cli.send(ClientPacket::Request {
            id: 1,
            cluster: cluster.into(),
            request: Bytes::from_static(b"x"),
            timeout_ms: 1000,
        })
        .await;
        let NodePacket::Request { id, .. } = svc.next().await else {
            panic!("no delivery")
        };
        svc.send(ClientPacket::Reply {
            id,
            result: Ok(Bytes::from_static(b"y")),
        })
        .await;
        cli.expect(NodePacket::Reply {
            id: 1,
            outcome: ReplyOutcome::Success(Bytes::from_static(b"y")),
        })
        .await;
    }
    let s = b.stats().await.unwrap();
    assert!(s.ready && s.leaf_set >= 2, "{s:?}");
    assert_eq!(s.links, 2, "B keeps links to A and C only: {s:?}");
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// A peer that completes the hello and then never answers is sent link keepalives and cut off
/// after the idle timeout; a peer that answers them keeps its link.
#[tokio::test]
async fn a_silent_peer_link_is_closed_after_the_idle_timeout() {
    use petal_node::link::{LINK_NONCE, read_hello};
    use petal_protocol::Message;
    use petal_protocol::codec;
    let mut o = options(0x77, vec![]);
    o.link_keepalive = Duration::from_millis(100);
    o.link_idle_timeout = Duration::from_millis(400);
    let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
    let me = NodeInfo {
        id: NodeId(0x78),
        addr: "127.0.0.1:9".parse().unwrap(),
    };
    // Silent: the node pings, then closes.
    let mut s = TcpStream::connect(n.info().addr).await.unwrap();
    s.write_all(&encode_hello(me)).await.unwrap();
    let _ = read_hello(&mut s).await.unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got))
        .await
        .expect("the silent link was not closed")
        .ok();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(350), "closed after {took:?}");
    let (first, _) = codec::decode(&got, 1 << 20).unwrap();
    assert_eq!(first, Message::Ping { nonce: LINK_NONCE });
    // Answering: the link stays up past several idle timeouts.
    let mut s = TcpStream::connect(n.info().addr).await.unwrap();
    s.write_all(&encode_hello(me)).await.unwrap();
    let _ = read_hello(&mut s).await.unwrap();
    let until = Instant::now() + Duration::from_millis(1500);
    let mut buf = bytes::BytesMut::new();
    while Instant::now() < until {
        let r = tokio::time::timeout_at(until, s.read_buf(&mut buf)).await;
        match r {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => panic!("a link that answers keepalives was closed"),
            Ok(Ok(_)) => {}
        }
        while let Ok((msg, used)) = codec::decode(&buf, 1 << 20) {
            let _ = buf.split_to(used);
            if msg == (Message::Ping { nonce: LINK_NONCE }) {
                let mut out = Vec::new();
                codec::encode(&Message::Pong { nonce: LINK_NONCE }, &mut out);
                s.write_all(&out).await.unwrap();
            }
        }
    }
    n.shutdown().await;
}
