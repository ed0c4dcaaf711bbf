//! Hostile and broken relay clients: each attack runs on its own connections while a healthy
//! connection to the same node keeps being served (checked after the attack with a request it
//! answers itself and a publish to itself).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use petal_node::NodeHandle;
use petal_protocol::relay::{self, ClientPacket, Limits, NodePacket, ReplyOutcome};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Runs `f` on `cases` inputs, at most `parallel` at a time.
async fn run_cases<F, Fut>(cases: Vec<Vec<u8>>, parallel: usize, f: F)
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut set = JoinSet::new();
    for case in cases {
        if set.len() >= parallel {
            set.join_next().await.unwrap().unwrap();
        }
        set.spawn(f(case));
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// Waits until the node has forgotten every session but `n`.
async fn sessions_back_to(node: &NodeHandle, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let s = node.stats().await.unwrap().sessions;
        if s == n {
            return;
        }
        assert!(Instant::now() < deadline, "{s} sessions, want {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Attaches as a plain client, sends `bytes`, and asserts that the node closes the connection
/// without writing a byte.
async fn attached_then_silent_close(addr: SocketAddr, bytes: Vec<u8>) {
    let mut r = Raw::attach(addr, "").await;
    r.send_bytes_lossy(&bytes).await;
    let got = r.read_to_end().await;
    assert!(got.is_empty(), "{bytes:02x?} got {got:02x?}");
}

/// Sends `bytes` before any handshake, then EOF; the node must close without a byte.
async fn unattached_silent_close(addr: SocketAddr, bytes: Vec<u8>) {
    let mut r = Raw::connect(addr).await;
    r.send_bytes_lossy(&bytes).await;
    r.shutdown_write().await;
    let got = r.read_to_end().await;
    assert!(got.is_empty(), "{bytes:02x?} got {got:02x?}");
}

#[tokio::test]
async fn random_bytes_before_the_handshake_close_without_a_byte() {
    let n = node(0x30, vec![]).await;
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    let mut rng = Rng(0x5eed_0001);
    let init = encode(&init_packet(""));
    let mut cases = Vec::new();
    for i in 0..300 {
        let len = rng.below(200) as usize;
        let mut b = rng.bytes(len);
        match i % 3 {
            // Pure noise.
            0 => {}
            // Noise after INIT's opcode.
            1 => b.insert(0, relay::op::INIT),
            // An INIT with a corrupted magic, maybe cut short, maybe with noise after it.
            _ => {
                let mut v = init.clone();
                let at = 2 + rng.below(17) as usize;
                v[at] ^= 1 + rng.below(255) as u8;
                v.truncate(1 + rng.below(v.len() as u64) as usize);
                v.extend_from_slice(&b);
                b = v;
            }
        }
        // A genuine INIT with the right magic would be answered: not a case of this test.
        if let Ok(Some(ClientPacket::Init { magic, .. })) =
            ClientPacket::decode(&mut BytesMut::from(&b[..]), &Limits::default())
        {
            assert_ne!(magic, relay::CLIENT_MAGIC);
        }
        cases.push(b);
    }
    let before = n.stats().await.unwrap().runtime.handshakes_failed;
    run_cases(cases, 25, move |b| unattached_silent_close(addr, b)).await;
    healthy.check().await;
    sessions_back_to(&n, 1).await;
    let failed = n.stats().await.unwrap().runtime.handshakes_failed - before;
    assert_eq!(failed, 300);
    n.shutdown().await;
}

/// A random client packet with small random fields.
fn random_packet(rng: &mut Rng) -> ClientPacket {
    let s = |rng: &mut Rng| {
        let names = ["", "a", "svc", "topic", "x\u{e9}"];
        names[rng.below(names.len() as u64) as usize].to_string()
    };
    let b = |rng: &mut Rng| {
        let len = rng.below(40) as usize;
        Bytes::from(rng.bytes(len))
    };
    let id = |rng: &mut Rng| rng.below(4);
    match rng.below(13) {
        0 => ClientPacket::Broadcast {
            cluster: s(rng),
            message: b(rng),
        },
        1 => ClientPacket::Request {
            id: id(rng),
            cluster: s(rng),
            request: b(rng),
            timeout_ms: rng.below(100),
        },
        2 => ClientPacket::Reply {
            id: rng.next(),
            result: if rng.below(2) == 0 {
                Ok(b(rng))
            } else {
                Err(s(rng))
            },
        },
        3 => ClientPacket::Subscribe { topic: s(rng) },
        4 => ClientPacket::Unsubscribe { topic: s(rng) },
        5 => ClientPacket::Publish {
            topic: s(rng),
            event: b(rng),
        },
        6 => ClientPacket::TunInit {
            id: id(rng),
            cluster: s(rng),
            timeout_ms: rng.below(100),
        },
        7 => ClientPacket::TunConfirm {
            build_id: rng.next(),
            tun_id: id(rng),
        },
        8 => ClientPacket::TunAllow {
            id: id(rng),
            space: rng.next(),
        },
        9 => ClientPacket::TunTransfer {
            id: id(rng),
            size: rng.below(100),
            payload: b(rng),
        },
        10 => ClientPacket::TunClose { id: id(rng) },
        11 => ClientPacket::Close,
        _ => init_packet(&s(rng)),
    }
}

/// Checks what the node wrote to a client that sent `sent` after its handshake: well-formed
/// packets only; a REPLY only for a REQUEST id the client sent (never more REPLYs than
/// REQUESTs with that id), likewise TUN_CONFIRM for TUN_INIT; after a CLOSE that the node
/// read, every REQUEST before it answered and the CLOSE acknowledged last.
fn check_answers(sent: &[u8], got: &[u8]) {
    let out = decode_all(got);
    // What the node read: the packets up to the first violation or incomplete packet.
    let mut buf = BytesMut::from(sent);
    let limits = Limits {
        max_message: 16 << 20,
        ..Limits::default()
    };
    let mut read = Vec::new();
    while let Ok(Some(p)) = ClientPacket::decode(&mut buf, &limits) {
        let stop = matches!(p, ClientPacket::Close | ClientPacket::Init { .. });
        read.push(p);
        if stop {
            break;
        }
    }
    let count = |f: &dyn Fn(&ClientPacket) -> Option<u64>, id: u64| {
        read.iter().filter(|p| f(p) == Some(id)).count()
    };
    let req = |p: &ClientPacket| match p {
        ClientPacket::Request { id, .. } => Some(*id),
        _ => None,
    };
    let tun = |p: &ClientPacket| match p {
        ClientPacket::TunInit { id, .. } => Some(*id),
        _ => None,
    };
    for p in &out {
        match p {
            NodePacket::Reply { id, .. } => {
                let replies = out
                    .iter()
                    .filter(|q| matches!(q, NodePacket::Reply { id: i, .. } if i == id))
                    .count();
                assert!(
                    replies <= count(&req, *id),
                    "{replies} REPLYs for id {id}; sent {sent:02x?} got {out:?}"
                );
            }
            NodePacket::TunConfirm { id, .. } => {
                let confirms = out
                    .iter()
                    .filter(|q| matches!(q, NodePacket::TunConfirm { id: i, .. } if i == id))
                    .count();
                assert!(
                    confirms <= count(&tun, *id),
                    "{confirms} TUN_CONFIRMs for id {id}; sent {sent:02x?} got {out:?}"
                );
            }
            NodePacket::Init { .. } | NodePacket::Deny { .. } => {
                panic!("handshake packet after the handshake: {out:?}")
            }
            _ => {}
        }
    }
    if read.last() == Some(&ClientPacket::Close) {
        assert_eq!(
            out.last(),
            Some(&NodePacket::Close {
                reason: String::new()
            }),
            "a graceful close not acknowledged last; sent {read:?} got {out:?}"
        );
        for p in &read {
            if let ClientPacket::Request { id, .. } = p {
                let replies = out
                    .iter()
                    .filter(|q| matches!(q, NodePacket::Reply { id: i, .. } if i == id))
                    .count();
                assert_eq!(
                    replies,
                    count(&req, *id),
                    "request {id}: {read:?} -> {out:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn random_bytes_and_packets_after_the_handshake_never_upset_the_node() {
    let n = node(0x31, vec![]).await;
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    let mut rng = Rng(0x5eed_0002);
    let mut cases = Vec::new();
    for _ in 0..300 {
        // Valid packets, then maybe noise or a packet cut short (which ends what the node
        // reads: a violation, or an incomplete packet until EOF).
        let mut b = Vec::new();
        for _ in 0..1 + rng.below(8) {
            b.extend(encode(&random_packet(&mut rng)));
        }
        match rng.below(3) {
            0 => {
                let len = 1 + rng.below(30) as usize;
                b.extend(rng.bytes(len));
            }
            1 => {
                let p = encode(&random_packet(&mut rng));
                let cut = 1 + rng.below(p.len() as u64) as usize;
                b.extend_from_slice(&p[..cut]);
            }
            _ => {}
        }
        cases.push(b);
    }
    run_cases(cases, 100, move |sent| async move {
        let mut r = Raw::attach(addr, "").await;
        r.send_bytes_lossy(&sent).await;
        // Wait for the short timeouts (< 100 ms) some packets asked for, then hang up.
        tokio::time::sleep(Duration::from_millis(150)).await;
        r.shutdown_write().await;
        let got = r.read_to_end().await;
        check_answers(&sent, &got);
    })
    .await;
    healthy.check().await;
    sessions_back_to(&n, 1).await;
    n.shutdown().await;
}

/// One packet of every kind with non-trivial fields.
fn sample_packets() -> Vec<ClientPacket> {
    vec![
        ClientPacket::Broadcast {
            cluster: "cluster".into(),
            message: Bytes::from_static(b"message"),
        },
        ClientPacket::Request {
            id: 300,
            cluster: "cluster".into(),
            request: Bytes::from_static(b"request"),
            timeout_ms: 5000,
        },
        ClientPacket::Reply {
            id: 70000,
            result: Ok(Bytes::from_static(b"reply")),
        },
        ClientPacket::Reply {
            id: 70000,
            result: Err("fault".into()),
        },
        ClientPacket::Subscribe {
            topic: "topic".into(),
        },
        ClientPacket::Unsubscribe {
            topic: "topic".into(),
        },
        ClientPacket::Publish {
            topic: "topic".into(),
            event: Bytes::from_static(b"event"),
        },
        ClientPacket::TunInit {
            id: 300,
            cluster: "cluster".into(),
            timeout_ms: 5000,
        },
        ClientPacket::TunConfirm {
            build_id: 1 << 40,
            tun_id: 300,
        },
        ClientPacket::TunAllow {
            id: 300,
            space: 4 << 20,
        },
        ClientPacket::TunTransfer {
            id: 300,
            size: 5,
            payload: Bytes::from_static(b"chunk"),
        },
        ClientPacket::TunClose { id: 300 },
    ]
}

#[tokio::test]
async fn truncated_packets_then_eof_close_without_a_byte() {
    let n = node(0x32, vec![]).await;
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    let mut attached = Vec::new();
    for p in sample_packets() {
        let b = encode(&p);
        for cut in 1..b.len() {
            attached.push(b[..cut].to_vec());
        }
    }
    let mut unattached = Vec::new();
    let init = encode(&init_packet("svc"));
    for cut in 1..init.len() {
        unattached.push(init[..cut].to_vec());
    }
    let count = attached.len();
    assert!(count > 100, "{count} cases");
    run_cases(attached, 25, move |b| async move {
        let mut r = Raw::attach(addr, "").await;
        r.send_bytes(&b).await;
        r.shutdown_write().await;
        let got = r.read_to_end().await;
        assert!(got.is_empty(), "{b:02x?} got {got:02x?}");
    })
    .await;
    run_cases(unattached, 25, move |b| unattached_silent_close(addr, b)).await;
    healthy.check().await;
    sessions_back_to(&n, 1).await;
    n.shutdown().await;
}

#[tokio::test]
async fn unknown_opcodes_close_the_connection_without_a_byte() {
    let n = node(0x33, vec![]).await;
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    // 0x01 (DENY) is never sent by clients; 0x0e..=0xff do not exist.
    let cases: Vec<Vec<u8>> = std::iter::once(0x01u8)
        .chain(0x0e..=0xff)
        .map(|op| vec![op, 0x00, 0x01, 0x02])
        .collect();
    let count = cases.len() as u64;
    let before = n.stats().await.unwrap().runtime.relay_violations;
    run_cases(cases, 25, move |b| attached_then_silent_close(addr, b)).await;
    healthy.check().await;
    sessions_back_to(&n, 1).await;
    let violations = n.stats().await.unwrap().runtime.relay_violations - before;
    assert_eq!(violations, count);
    n.shutdown().await;
}

#[tokio::test]
async fn malformed_fields_close_the_connection_without_a_byte() {
    let n = node(0x34, vec![]).await;
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("a second INIT", encode(&init_packet(""))),
        (
            "a second INIT naming a cluster",
            encode(&init_packet("svc")),
        ),
        ("REPLY with bool 0x02", b"\x05\x00\x02\x01x".to_vec()),
        ("REPLY with bool 0xff", b"\x05\x07\xff".to_vec()),
        ("a string that is not UTF-8", b"\x06\x02\xc3\x28".to_vec()),
    ];
    // Varints: 11 bytes (even of value 0), and 10 bytes above u64::MAX.
    let mut v = vec![0x04];
    v.extend([0xff; 10]);
    v.push(0x01);
    cases.push(("an 11-byte varint", v));
    let mut v = vec![0x04];
    v.extend([0x80; 10]);
    v.push(0x00);
    cases.push(("an 11-byte varint of value 0", v));
    let mut v = vec![0x0b];
    v.extend([0xff; 9]);
    v.push(0x02);
    cases.push(("a varint above u64::MAX", v));
    // A string length of 65536, without its bytes: refused from the prefix.
    cases.push(("a 65536-byte topic", b"\x06\x80\x80\x04".to_vec()));
    cases.push(("a 65536-byte cluster", b"\x04\x01\x80\x80\x04".to_vec()));
    for (what, b) in cases {
        let t0 = Instant::now();
        let mut r = Raw::attach(addr, "svc").await;
        r.send_bytes_lossy(&b).await;
        let got = r.read_to_end().await;
        assert!(got.is_empty(), "{what}: got {got:02x?}");
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{what}: closed after {:?}",
            t0.elapsed()
        );
        healthy.check().await;
    }
    sessions_back_to(&n, 1).await;
    n.shutdown().await;
}

#[tokio::test]
async fn the_largest_varint_and_the_longest_string_are_accepted() {
    let n = node(0x35, vec![]).await;
    let mut r = Raw::attach(relay_addr(&n), "").await;
    // REQUEST id=u64::MAX to "nobody", timeout 0: its REPLY echoes the id.
    let mut b = vec![0x04];
    b.extend([0xff; 9]);
    b.push(0x01);
    b.extend(b"\x06nobody\x00\x00");
    r.send_bytes(&b).await;
    r.expect(NodePacket::Reply {
        id: u64::MAX,
        outcome: ReplyOutcome::Timeout,
    })
    .await;
    // A 65535-byte topic works both ways.
    let topic = "t".repeat(65535);
    r.send(ClientPacket::Subscribe {
        topic: topic.clone(),
    })
    .await;
    r.send(ClientPacket::Publish {
        topic: topic.clone(),
        event: Bytes::from_static(b"long"),
    })
    .await;
    r.expect(NodePacket::Publish {
        topic: topic.into(),
        event: Bytes::from_static(b"long"),
    })
    .await;
    r.assert_nothing_queued().await;
    n.shutdown().await;
}

#[tokio::test]
async fn a_binary_over_max_message_is_refused_at_once_and_max_message_itself_is_accepted() {
    let n = node(0x36, vec![]).await;
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    let max = 16u64 << 20;
    let varint = |v: u64| {
        let mut out = Vec::new();
        relay::put_varint(&mut out, v);
        out
    };
    // One byte over: the node closes as soon as it has the length prefix.
    for op_fields in [&b"\x03\x02bc"[..], b"\x08\x01t", b"\x04\x01\x02bc"] {
        let mut b = op_fields.to_vec();
        b.extend(varint(max + 1));
        let t0 = Instant::now();
        let mut r = Raw::attach(addr, "").await;
        r.send_bytes(&b).await;
        r.expect_eof_no_bytes().await;
        assert!(t0.elapsed() < Duration::from_millis(300));
    }
    // Exactly max_message: the node waits for the bytes, and the message goes through.
    let mut member = Raw::attach(addr, "bc").await;
    let mut b = b"\x03\x02bc".to_vec();
    b.extend(varint(max));
    member.send_bytes(&b).await;
    member.expect_silence(Duration::from_millis(100)).await;
    healthy.check().await;
    let body = pattern(1, max as usize);
    member.send_bytes(&body).await;
    let Some(NodePacket::Broadcast { message }) = member.recv().await else {
        panic!("no 16 MiB broadcast")
    };
    assert!(message == body, "the 16 MiB broadcast arrived altered");
    healthy.check().await;
    n.shutdown().await;
}

#[tokio::test]
async fn a_wrong_version_is_denied_naming_both_versions() {
    let n = node(0x37, vec![]).await;
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    for version in ["v0.9", "", "v1.0-draft3", "v1.0-draft2 "] {
        let mut r = Raw::connect(addr).await;
        r.send(ClientPacket::Init {
            magic: relay::CLIENT_MAGIC.into(),
            version: version.into(),
            cluster: "svc".into(),
        })
        .await;
        let want = NodePacket::Deny {
            magic: relay::RELAY_MAGIC.into(),
            reason: format!("Unsupported protocol. Client: {version}. Iris: v1.0-draft2."),
        };
        assert_eq!(r.read_to_end().await, encode_node(&want), "{version:?}");
    }
    healthy.check().await;
    sessions_back_to(&n, 1).await;
    n.shutdown().await;
}

#[tokio::test]
async fn silent_and_slow_handshakes_delay_nobody_and_are_cut_at_the_deadline() {
    let n = node(0x38, vec![]).await;
    let addr = relay_addr(&n);
    let t0 = Instant::now();
    // Ten clients that say nothing, ten that send half an INIT, one that trickles its INIT a
    // byte every 100 ms.
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut r = Raw::connect(addr).await;
        if i % 2 == 1 {
            r.send_bytes(b"\x00\x11iris-cli").await;
        }
        stalled.push(r);
    }
    let trickle = tokio::spawn(async move {
        let mut r = Raw::connect(addr).await;
        for b in encode(&init_packet("")) {
            r.send_bytes_lossy(&[b]).await;
            match r.recv_within(Duration::from_millis(100)).await {
                Err(()) => {}
                Ok(None) => return Instant::now(),
                Ok(Some(p)) => panic!("the trickling client got {p:?}"),
            }
        }
        panic!("the trickling client completed its handshake")
    });
    // Others attach at once meanwhile, and are served.
    for _ in 0..10 {
        let t = Instant::now();
        let mut h = Healthy::new(addr).await;
        h.check().await;
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "attach took {:?}",
            t.elapsed()
        );
    }
    assert!(t0.elapsed() < Duration::from_millis(450));
    // The stalled ones are closed, without a byte, at the 500 ms deadline.
    for mut r in stalled {
        r.expect_eof_no_bytes().await;
    }
    let closed = t0.elapsed();
    assert!(
        closed >= Duration::from_millis(450) && closed < Duration::from_millis(1500),
        "closed after {closed:?}"
    );
    let end = trickle.await.unwrap();
    let took = end - t0;
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "the trickling client was closed after {took:?}"
    );
    let s = n.stats().await.unwrap();
    assert_eq!(s.runtime.handshakes_failed, 21);
    n.shutdown().await;
}

#[tokio::test]
async fn a_hundred_clients_connecting_at_once_are_all_accepted() {
    let n = node(0x39, vec![]).await;
    let addr = relay_addr(&n);
    let t0 = Instant::now();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let mut set = JoinSet::new();
    for i in 0..100 {
        let mut done = done_rx.clone();
        set.spawn(async move {
            let cluster = if i % 2 == 0 { "" } else { "many" };
            let mut r = Raw::attach(addr, cluster).await;
            r.assert_nothing_queued().await;
            // Stay attached until every client is in.
            let _ = done.wait_for(|go| *go).await;
            r.send(ClientPacket::Close).await;
            assert_eq!(r.read_to_end().await, b"\x02\x00");
        });
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let s = n.stats().await.unwrap();
        if s.sessions == 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} sessions attached",
            s.sessions
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    done_tx.send(true).unwrap();
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    sessions_back_to(&n, 0).await;
    n.shutdown().await;
}

#[tokio::test]
async fn a_connection_cannot_answer_or_steer_another_connections_requests_and_tunnels() {
    let n = node(0x3a, vec![]).await;
    let addr = relay_addr(&n);
    let mut svc = Raw::attach(addr, "svc").await;
    let mut rogue = Raw::attach(addr, "rogue").await;
    let mut cli = Raw::attach(addr, "").await;
    cli.send(ClientPacket::Request {
        id: 1,
        cluster: "svc".into(),
        request: Bytes::from_static(b"for svc"),
        timeout_ms: 2000,
    })
    .await;
    let NodePacket::Request { id: d, .. } = svc.next().await else {
        panic!("no delivery")
    };
    // Another connection answers with the delivery's id (and its neighbours'): discarded.
    for id in [d, d.wrapping_sub(1), d + 1] {
        rogue
            .send(ClientPacket::Reply {
                id,
                result: Ok(Bytes::from_static(b"forged")),
            })
            .await;
    }
    rogue.assert_nothing_queued().await;
    svc.send(ClientPacket::Reply {
        id: d,
        result: Ok(Bytes::from_static(b"genuine")),
    })
    .await;
    cli.expect(NodePacket::Reply {
        id: 1,
        outcome: ReplyOutcome::Success(Bytes::from_static(b"genuine")),
    })
    .await;
    cli.assert_nothing_queued().await;

    // Tunnel ids are the connection's own: another connection naming them reaches nothing.
    open_tunnel(&mut cli, 7, "svc", &mut svc, 3, 1 << 20, 1 << 20).await;
    for id in [3, 7] {
        rogue.send(ClientPacket::TunClose { id }).await;
        rogue
            .send(ClientPacket::TunTransfer {
                id,
                size: 1,
                payload: Bytes::from_static(b"x"),
            })
            .await;
    }
    rogue.assert_nothing_queued().await;
    cli.send(ClientPacket::TunTransfer {
        id: 7,
        size: 2,
        payload: Bytes::from_static(b"ok"),
    })
    .await;
    svc.expect(NodePacket::TunTransfer {
        id: 3,
        size: 2,
        payload: Bytes::from_static(b"ok"),
    })
    .await;
    svc.assert_nothing_queued().await;
    n.shutdown().await;
}

#[tokio::test]
async fn nothing_a_connection_sends_after_its_violation_takes_effect() {
    let n = node(0x3b, vec![]).await;
    let addr = relay_addr(&n);
    let mut sub = Raw::attach(addr, "").await;
    sub.send(ClientPacket::Subscribe { topic: "t".into() })
        .await;
    sub.assert_nothing_queued().await;
    let mut svc = Raw::attach(addr, "svc").await;
    let mut bad = Raw::attach(addr, "").await;
    open_tunnel(&mut bad, 1, "svc", &mut svc, 2, 1 << 20, 1 << 20).await;
    // A continuation chunk with no message under way (a violation the node, not the decoder,
    // finds), then a publish, in one write.
    let mut b = encode(&ClientPacket::TunTransfer {
        id: 1,
        size: 0,
        payload: Bytes::from_static(b"x"),
    });
    b.extend(encode(&ClientPacket::Publish {
        topic: "t".into(),
        event: Bytes::from_static(b"from a closed connection"),
    }));
    bad.send_bytes_lossy(&b).await;
    bad.expect_eof_no_bytes().await;
    let NodePacket::TunClose { id: 2, .. } = svc.next().await else {
        panic!("the far end was not told")
    };
    sub.assert_nothing_queued().await;
    n.shutdown().await;
}

#[tokio::test]
async fn a_connection_closed_for_a_violation_is_closed_even_while_it_keeps_writing() {
    let n = node(0x3c, vec![]).await;
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    let mut svc = Raw::attach(addr, "svc").await;
    let mut bad = Raw::attach(addr, "").await;
    open_tunnel(&mut bad, 1, "svc", &mut svc, 2, 1 << 20, 1 << 20).await;
    let violation = encode(&ClientPacket::TunTransfer {
        id: 1,
        size: 0,
        payload: Bytes::from_static(b"x"),
    });
    let mut filler = Vec::new();
    for _ in 0..100 {
        filler.extend(encode(&ClientPacket::Publish {
            topic: "nobody".into(),
            event: Bytes::from_static(b"still here"),
        }));
    }
    let t0 = Instant::now();
    bad.send_bytes(&violation).await;
    // Keep writing: the node must still end the connection (the writes fail) promptly.
    let mut failed = None;
    while t0.elapsed() < Duration::from_secs(2) {
        if tokio::io::AsyncWriteExt::write_all(&mut bad.s, &filler)
            .await
            .is_err()
        {
            failed = Some(t0.elapsed());
            break;
        }
        tokio::task::yield_now().await;
    }
    let failed = failed.expect("the node kept reading a connection it had closed");
    assert!(failed < Duration::from_millis(500), "{failed:?}");
    healthy.check().await;
    n.shutdown().await;
}

#[tokio::test]
async fn a_client_over_its_request_and_tunnel_limits_is_refused_at_once_with_one_answer_each() {
    let mut o = options(0x3d, vec![]);
    o.core.max_conn_requests = 4;
    o.core.max_conn_tunnels = 2;
    let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    let mut svc = Raw::attach(addr, "slow").await;
    let mut greedy = Raw::attach(addr, "").await;
    for id in 1..=6 {
        greedy
            .send(ClientPacket::Request {
                id,
                cluster: "slow".into(),
                request: Bytes::from_static(b"r"),
                timeout_ms: 300,
            })
            .await;
    }
    // Requests 5 and 6 are over the limit: refused at once (a timeout REPLY), not left
    // unanswered.
    let t0 = Instant::now();
    for id in [5, 6] {
        greedy
            .expect(NodePacket::Reply {
                id,
                outcome: ReplyOutcome::Timeout,
            })
            .await;
    }
    assert!(t0.elapsed() < Duration::from_millis(100));
    for _ in 0..4 {
        assert!(matches!(svc.next().await, NodePacket::Request { .. }));
    }
    // The other four time out in their time, once each.
    let mut ids = Vec::new();
    for _ in 0..4 {
        let NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Timeout,
        } = greedy.next().await
        else {
            panic!()
        };
        ids.push(id);
    }
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3, 4]);

    // Tunnels: the third open is refused at once with `0a id 01`.
    for id in 1..=3 {
        greedy
            .send(ClientPacket::TunInit {
                id,
                cluster: "slow".into(),
                timeout_ms: 300,
            })
            .await;
    }
    greedy
        .expect(NodePacket::TunConfirm {
            id: 3,
            chunk_limit: None,
        })
        .await;
    for _ in 0..2 {
        assert!(matches!(svc.next().await, NodePacket::TunInit { .. }));
    }
    let mut ids = Vec::new();
    for _ in 0..2 {
        let NodePacket::TunConfirm {
            id,
            chunk_limit: None,
        } = greedy.next().await
        else {
            panic!()
        };
        ids.push(id);
    }
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
    greedy.assert_nothing_queued().await;
    healthy.check().await;
    n.shutdown().await;
}

/// Relay handshakes in progress are bounded: with room for 4, a flood of 40 silent
/// connections cannot keep a real application out (the oldest handshake is cancelled for each
/// new connection), and the flood's connections are closed without a byte.
#[tokio::test]
async fn silent_relay_connections_cannot_crowd_out_applications() {
    let mut o = options(0x5e, vec![]);
    o.max_relay_handshakes = 4;
    o.handshake_timeout = Duration::from_secs(5);
    let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
    let addr = relay_addr(&n);
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let t0 = Instant::now();
    let mut app = Raw::attach(addr, "").await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "attached after {took:?}");
    app.send(ClientPacket::Publish {
        topic: "t".into(),
        event: Bytes::from_static(b"x"),
    })
    .await;
    // The flood's connections were closed (all but the 4 newest, which wait for their
    // deadline), without a byte.
    use tokio::io::AsyncReadExt;
    let mut closed = 0;
    for mut s in silent {
        let mut b = [0u8; 16];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
            closed += 1;
        }
    }
    assert!(closed >= 36, "{closed} of 40 closed");
    let st = n.stats().await.unwrap();
    assert!(st.runtime.handshakes_failed >= 36, "{:?}", st.runtime);
    n.shutdown().await;
}
