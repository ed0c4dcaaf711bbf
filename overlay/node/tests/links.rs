//! Peer links under hostile or broken peers: whatever arrives on the peer port, the node closes
//! that link only, within the handshake deadline, and keeps serving its peers and applications.
//! Peer links are Noise sessions: a stranger without the network key learns nothing (the node
//! writes no byte to it), a tampered record closes the link.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_node::secure::{self, Entropy, Established, Identity, NetworkKey};
use petal_protocol::Message;
use petal_protocol::codec;
use petal_protocol::relay::{ClientPacket, NodePacket, ReplyOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Everything the node writes on a peer connection after `send`, until it closes (2 s at
/// most); and how long that took.
async fn peer_session(addr: SocketAddr, send: &[u8]) -> (Vec<u8>, Duration) {
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

/// The first handshake message an initiator with `key` sends (length-prefixed).
fn first_message(key: &NetworkKey, seed: u64) -> Vec<u8> {
    let mut hs = secure::handshake_state(
        true,
        &Identity::from_seed(seed),
        key,
        Entropy::Seeded(seed),
        0,
    );
    let mut buf = vec![0u8; 1024];
    let n = hs.write_message(&[], &mut buf).unwrap();
    let mut out = (n as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&buf[..n]);
    out
}

/// A fake peer: a full handshake with the node at `addr` as node `seed` under `key`.
async fn fake_peer(addr: SocketAddr, seed: u64, key: &NetworkKey) -> (TcpStream, Established) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let e = secure::handshake(
        &mut s,
        true,
        &Identity::from_seed(seed),
        key,
        "127.0.0.1:9".parse().unwrap(),
        None,
        Entropy::Os,
        1,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    (s, e)
}

#[tokio::test]
async fn bad_peers_are_cut_off_and_the_nodes_keep_serving() {
    let [a, b, c] = three_nodes().await;
    let peer = b.info().addr;
    let mut rng = Rng(0x11_4b);
    let wrong = NetworkKey::from_bytes([0x33; 32]);
    let good_m1 = first_message(&test_key(), 0x99);
    // (what, bytes, waits for the deadline)
    let mut cases: Vec<(String, Vec<u8>, bool)> = vec![
        ("silence".into(), Vec::new(), true),
        ("half a first message".into(), good_m1[..20].to_vec(), true),
        // A first message is authenticated with the network key (psk0): refused at once,
        // before the node reveals anything, not even its static key.
        (
            "another network's key".into(),
            first_message(&wrong, 0x99),
            false,
        ),
        (
            "a first message too long".into(),
            vec![0xff, 0xff, 1, 2, 3],
            false,
        ),
        (
            "a first message with one bit flipped".into(),
            {
                let mut v = good_m1.clone();
                let last = v.len() - 1;
                v[last] ^= 1;
                v
            },
            false,
        ),
        (
            "the old plaintext hello".into(),
            b"PETALNK1".iter().copied().chain([0; 33]).collect(),
            false,
        ),
    ];
    for i in 0..20 {
        let len = 1 + rng.below(100) as usize;
        let mut bytes = rng.bytes(len);
        // A random length prefix under 1 KiB waits for its bytes (the deadline); the others
        // are refused at once. Keep both kinds.
        let waits = len < 2 || {
            let prefix = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
            prefix > len - 2 && prefix <= 1024
        };
        if i % 2 == 0 && len >= 2 {
            bytes[0] = 0;
            bytes[1] = (len - 2) as u8;
            cases.push((format!("noise {i}"), bytes, false));
        } else {
            cases.push((format!("noise {i}"), bytes, waits));
        }
    }
    // All at once, from many connections.
    let mut set = tokio::task::JoinSet::new();
    for (what, bytes, waits) in cases {
        set.spawn(async move {
            let (got, took) = peer_session(peer, &bytes).await;
            // Without a valid first message the node writes nothing at all.
            assert!(got.is_empty(), "{what}: the node wrote {got:02x?}");
            if waits {
                // Nothing to refuse: cut at the 500 ms handshake deadline.
                assert!(
                    took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
                    "{what}: closed after {took:?}"
                );
            } else {
                assert!(
                    took < Duration::from_millis(400),
                    "{what}: closed after {took:?}"
                );
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    // A first message replayed from another connection: the node answers it (it cannot know)
    // but the replayer cannot finish; cut at the deadline.
    let (got, took) = peer_session(peer, &good_m1).await;
    assert!(
        !got.is_empty() && took >= Duration::from_millis(450),
        "{took:?}"
    );
    // A peer that finishes the handshake, then sends a tampered record: cut off.
    let (mut s, mut e) = fake_peer(peer, 0x55, &test_key()).await;
    let mut rec = Vec::new();
    let mut frame = Vec::new();
    codec::encode(&Message::Ping { nonce: 1 }, &mut frame);
    e.sealer.seal(&frame, &mut rec).unwrap();
    rec[4] ^= 0x80;
    s.write_all(&rec).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest))
        .await
        .expect("a tampered record did not close the link")
        .ok();
    let st = b.stats().await.unwrap();
    assert!(st.runtime.link_auth_failures >= 1, "{:?}", st.runtime);
    assert!(st.runtime.link_handshakes_failed >= 5, "{:?}", st.runtime);

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

/// A peer that completes the handshake and then never answers is sent link keepalives and cut
/// off after the idle timeout; a peer that answers them keeps its link.
#[tokio::test]
async fn a_silent_peer_link_is_closed_after_the_idle_timeout() {
    use petal_node::link::LINK_NONCE;
    let mut o = options(0x77, vec![]);
    o.link_keepalive = Duration::from_millis(100);
    o.link_idle_timeout = Duration::from_millis(400);
    let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
    // Silent: the node pings, then closes.
    let (mut s, mut e) = fake_peer(n.info().addr, 0x78, &test_key()).await;
    let t0 = Instant::now();
    let mut frames = FramesIn::default();
    let mut seen = Vec::new();
    loop {
        let got = frames
            .next(&mut s, &mut e, t0 + Duration::from_secs(3))
            .await
            .expect("the silent link was not closed");
        if got.is_empty() {
            break;
        }
        seen.extend(got);
    }
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(350), "closed after {took:?}");
    assert_eq!(seen[0], Message::Ping { nonce: LINK_NONCE });
    // Answering: the link stays up past several idle timeouts.
    let (mut s, mut e) = fake_peer(n.info().addr, 0x79, &test_key()).await;
    let until = Instant::now() + Duration::from_millis(1500);
    let mut frames = FramesIn::default();
    while let Some(got) = frames.next(&mut s, &mut e, until).await {
        assert!(!got.is_empty(), "a link that answers keepalives was closed");
        if got.contains(&Message::Ping { nonce: LINK_NONCE }) {
            let pong = sealed(&mut e, &Message::Pong { nonce: LINK_NONCE });
            s.write_all(&pong).await.unwrap();
        }
    }
    n.shutdown().await;
}

/// A link that carries nothing for the core, to a node the core keeps in none of its tables,
/// is closed after `link_idle_close`, even though it answers keepalives: a node does not stay
/// linked to every node it ever exchanged a message with.
#[tokio::test]
async fn an_idle_link_to_a_stranger_is_closed() {
    use petal_node::link::LINK_NONCE;
    let mut o = options(0x7a, vec![]);
    o.link_keepalive = Duration::from_millis(100);
    o.link_idle_timeout = Duration::from_millis(400);
    o.link_idle_close = Duration::from_millis(600);
    let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
    let (mut s, mut e) = fake_peer(n.info().addr, 0x7b, &test_key()).await;
    let t0 = Instant::now();
    let mut frames = FramesIn::default();
    let closed = loop {
        match frames
            .next(&mut s, &mut e, t0 + Duration::from_secs(3))
            .await
        {
            None => break false,
            Some(got) if got.is_empty() => break true,
            Some(got) => {
                if got.contains(&Message::Ping { nonce: LINK_NONCE }) {
                    let pong = sealed(&mut e, &Message::Pong { nonce: LINK_NONCE });
                    s.write_all(&pong).await.unwrap();
                }
            }
        }
    };
    let took = t0.elapsed();
    assert!(closed, "the idle link stayed open for 3 s");
    assert!(took >= Duration::from_millis(550), "closed after {took:?}");
    let st = n.stats().await.unwrap();
    assert_eq!(st.runtime.links_idle_closed, 1, "{:?}", st.runtime);
    n.shutdown().await;
}

/// A peer that names 200 nodes, all at an address that accepts connections and never answers
/// a handshake, makes the node dial at most `max_dials` at once (twice that with the nodes
/// the core took into its tables); the rest are refused (counted), and the node keeps serving
/// its applications meanwhile.
#[tokio::test]
async fn addresses_from_a_peer_cannot_open_dials_without_bound() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tarpit = silent.local_addr().unwrap();
    let mut o = options(0x7c, vec![]);
    o.max_dials = 8;
    o.dial_timeout = Duration::from_secs(10);
    o.handshake_timeout = Duration::from_secs(10);
    let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
    let mut healthy = Healthy::new(relay_addr(&n)).await;
    let (mut s, mut e) = fake_peer(n.info().addr, 0x7d, &test_key()).await;
    let mut rng = Rng(0x7e);
    let entries: Vec<petal_protocol::NodeInfo> = (0..200)
        .map(|_| petal_protocol::NodeInfo {
            id: petal_protocol::NodeId(u128::from(rng.next()) << 64 | u128::from(rng.next())),
            addr: tarpit,
        })
        .collect();
    let mut frames = Vec::new();
    for chunk in entries.chunks(16) {
        codec::encode(
            &Message::RowReply {
                row: 0,
                entries: chunk.to_vec(),
            },
            &mut frames,
        );
        codec::encode(
            &Message::LeafSet {
                leaf: chunk.to_vec(),
                reply: false,
            },
            &mut frames,
        );
    }
    let mut rec = Vec::new();
    e.sealer.seal(&frames, &mut rec).unwrap();
    s.write_all(&rec).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = n.stats().await.unwrap();
    // At most 8 for strangers and 8 more for nodes the core took into its tables; one more
    // may be the fake peer's own address (127.0.0.1:9, refused at once).
    assert!(
        st.runtime.link_dials <= 2 * 8 + 1,
        "{} dials started at once: {:?}",
        st.runtime.link_dials,
        st.runtime
    );
    assert!(st.runtime.dials_refused > 0, "{:?}", st.runtime);
    healthy.check().await;
    drop((s, silent));
    n.shutdown().await;
}
