//! Tunnels between connections of one node, at the packet and byte level: the opening
//! exchange, chunked data both ways, credit in both directions, close, open failures, and
//! connections closed for breaking the tunnel rules (only those).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_protocol::relay::{ClientPacket, NodePacket};
use tokio::time::Instant;

fn chunk(id: u64, size: u64, payload: &[u8]) -> ClientPacket {
    ClientPacket::TunTransfer {
        id,
        size,
        payload: Bytes::copy_from_slice(payload),
    }
}

fn data(id: u64, size: u64, payload: &[u8]) -> NodePacket {
    NodePacket::TunTransfer {
        id,
        size,
        payload: Bytes::copy_from_slice(payload),
    }
}

/// The next packet that is not a TUN_ALLOW.
async fn next_not_allow(r: &mut Raw) -> NodePacket {
    loop {
        match r.next().await {
            NodePacket::TunAllow { .. } => {}
            p => return p,
        }
    }
}

#[tokio::test]
async fn opening_exchange_and_data_both_ways_byte_for_byte() {
    let n = node(0x20, vec![]).await;
    let addr = relay_addr(&n);
    let mut svc = Raw::attach(addr, "svc").await;
    let mut opener = Raw::attach(addr, "").await;

    // 09 id=7 "svc" timeout=1000 ms
    opener.send_bytes(b"\x09\x07\x03svc\xe8\x07").await;
    let Some(NodePacket::TunInit {
        build_id,
        chunk_limit: 65536,
    }) = svc.recv().await
    else {
        panic!("no tunnel offer with a 65536-byte chunk limit")
    };
    svc.send(ClientPacket::TunConfirm {
        build_id,
        tun_id: 3,
    })
    .await;
    svc.send(ClientPacket::TunAllow {
        id: 3,
        space: 64 << 20,
    })
    .await;
    // 0b 03 4194304
    assert_eq!(svc.read_exact(6).await, b"\x0b\x03\x80\x80\x80\x02");
    // 0a 07 00 65536, then 0b 07 4194304
    assert_eq!(
        opener.read_exact(12).await,
        b"\x0a\x07\x00\x80\x80\x04\x0b\x07\x80\x80\x80\x02"
    );
    opener.send_bytes(b"\x0b\x07\x80\x80\x80\x20").await; // 64 MiB of credit

    // Opener -> service: one chunk; the opener is re-granted the chunk's length once the node
    // has handed it on.
    opener.send_bytes(b"\x0c\x07\x05\x05hello").await;
    assert_eq!(svc.read_exact(9).await, b"\x0c\x03\x05\x05hello");
    assert_eq!(opener.read_exact(3).await, b"\x0b\x07\x05");

    // Service -> opener: a message of three chunks; the first carries the total size, the
    // continuations 0, in order.
    svc.send(chunk(3, 8, b"abc")).await;
    svc.send(chunk(3, 0, b"def")).await;
    svc.send(chunk(3, 0, b"gh")).await;
    assert_eq!(
        opener.read_exact(7 + 7 + 6).await,
        b"\x0c\x07\x08\x03abc\x0c\x07\x00\x03def\x0c\x07\x00\x02gh"
    );
    for len in [3, 3, 2] {
        svc.expect(NodePacket::TunAllow { id: 3, space: len }).await;
    }
    opener.assert_nothing_queued().await;
    svc.assert_nothing_queued().await;
    n.shutdown().await;
}

#[tokio::test]
async fn one_mib_messages_in_64k_chunks_arrive_intact_both_ways() {
    let n = node(0x21, vec![]).await;
    let addr = relay_addr(&n);
    let mut svc = Raw::attach(addr, "svc").await;
    let mut opener = Raw::attach(addr, "").await;
    open_tunnel(&mut opener, 1, "svc", &mut svc, 9, 64 << 20, 64 << 20).await;

    let up = pattern(1, 1 << 20);
    let mut tx = TunSender::new(1);
    tx.send(&mut opener, &up, 65536).await;
    let got = recv_message(&mut svc, 9).await;
    assert!(got == up[..], "the 1 MiB message arrived altered");

    // Back the other way, in odd-sized chunks, twice (message boundaries are kept).
    let mut tx = TunSender::new(9);
    let down1 = pattern(2, (1 << 20) + 3);
    let down2 = pattern(3, 100_000);
    tx.send(&mut svc, &down1, 65536).await;
    tx.send(&mut svc, &down2, 40_000).await;
    assert!(recv_message(&mut opener, 1).await == down1[..]);
    assert!(recv_message(&mut opener, 1).await == down2[..]);
    n.shutdown().await;
}

#[tokio::test]
async fn a_service_tunnels_to_its_own_cluster_and_reaches_itself() {
    let n = node(0x22, vec![]).await;
    let mut me = Raw::attach(relay_addr(&n), "self").await;
    me.send(ClientPacket::TunInit {
        id: 1,
        cluster: "self".into(),
        timeout_ms: 1000,
    })
    .await;
    let NodePacket::TunInit {
        build_id,
        chunk_limit: 65536,
    } = me.next().await
    else {
        panic!("no offer")
    };
    me.send(ClientPacket::TunConfirm {
        build_id,
        tun_id: 2,
    })
    .await;
    me.send(ClientPacket::TunAllow {
        id: 2,
        space: 64 << 20,
    })
    .await;
    let mut got = vec![me.next().await, me.next().await, me.next().await];
    got.sort_by_key(|p| format!("{p:?}"));
    let mut want = vec![
        NodePacket::TunAllow {
            id: 2,
            space: 4 << 20,
        },
        NodePacket::TunConfirm {
            id: 1,
            chunk_limit: Some(65536),
        },
        NodePacket::TunAllow {
            id: 1,
            space: 4 << 20,
        },
    ];
    want.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(got, want);
    me.send(ClientPacket::TunAllow {
        id: 1,
        space: 64 << 20,
    })
    .await;

    me.send(chunk(1, 4, b"ping")).await;
    assert_eq!(next_not_allow(&mut me).await, data(2, 4, b"ping"));
    me.send(chunk(2, 4, b"pong")).await;
    assert_eq!(next_not_allow(&mut me).await, data(1, 4, b"pong"));
    let big = pattern(5, 300_000);
    TunSender::new(1).send(&mut me, &big, 65536).await;
    assert!(recv_message(&mut me, 2).await == big[..]);

    // Close one end: the far end (the same connection) hears a graceful close, the closer its
    // ack.
    me.send(ClientPacket::TunClose { id: 1 }).await;
    let mut got = vec![next_not_allow(&mut me).await, next_not_allow(&mut me).await];
    got.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(
        got,
        vec![
            NodePacket::TunClose {
                id: 1,
                reason: String::new()
            },
            NodePacket::TunClose {
                id: 2,
                reason: String::new()
            },
        ]
    );
    me.self_request("self", 1).await;
    n.shutdown().await;
}

#[tokio::test]
async fn first_chunks_wait_for_the_receivers_credit_continuations_do_not() {
    let n = node(0x23, vec![]).await;
    let addr = relay_addr(&n);
    let mut svc = Raw::attach(addr, "svc").await;
    let mut opener = Raw::attach(addr, "").await;
    // The service grants only 100 000 bytes.
    open_tunnel(&mut opener, 1, "svc", &mut svc, 2, 64 << 20, 100_000).await;
    let quiet = Duration::from_millis(100);

    let msgs: Vec<Bytes> = (0..4).map(|i| pattern(i, 60_000)).collect();
    for m in &msgs {
        opener.send(chunk(1, 60_000, m)).await;
    }
    // 100 000 of credit: one 60 000-byte message, not two.
    assert_eq!(svc.next().await, data(2, 60_000, &msgs[0]));
    svc.expect_silence(quiet).await;
    // 40 000 + 60 000: the second, exactly.
    svc.send(ClientPacket::TunAllow {
        id: 2,
        space: 60_000,
    })
    .await;
    assert_eq!(svc.next().await, data(2, 60_000, &msgs[1]));
    svc.expect_silence(quiet).await;
    // 40 000 + 19 999: still one byte short.
    svc.send(ClientPacket::TunAllow {
        id: 2,
        space: 19_999,
    })
    .await;
    svc.expect_silence(quiet).await;
    svc.send(ClientPacket::TunAllow { id: 2, space: 1 }).await;
    assert_eq!(svc.next().await, data(2, 60_000, &msgs[2]));
    svc.expect_silence(quiet).await;
    // Credit is 0. 60 000 more: the fourth.
    svc.send(ClientPacket::TunAllow {
        id: 2,
        space: 60_000,
    })
    .await;
    assert_eq!(svc.next().await, data(2, 60_000, &msgs[3]));

    // Credit is 0 again. A three-chunk message of 180 000 bytes: the first chunk waits for
    // 60 000 of credit, then the continuations come although the credit goes negative.
    let big = pattern(9, 180_000);
    let mut tx = TunSender {
        id: 1,
        credit: u64::MAX / 2,
    };
    tx.send(&mut opener, &big, 60_000).await;
    svc.expect_silence(quiet).await;
    svc.send(ClientPacket::TunAllow {
        id: 2,
        space: 59_999,
    })
    .await;
    svc.expect_silence(quiet).await;
    svc.send(ClientPacket::TunAllow { id: 2, space: 1 }).await;
    assert!(recv_message(&mut svc, 2).await == big[..]);
    // Credit is -120 000: a 1-byte message needs 120 001 more.
    opener.send(chunk(1, 1, b"z")).await;
    svc.send(ClientPacket::TunAllow {
        id: 2,
        space: 120_000,
    })
    .await;
    svc.expect_silence(quiet).await;
    svc.send(ClientPacket::TunAllow { id: 2, space: 1 }).await;
    assert_eq!(svc.next().await, data(2, 1, b"z"));
    svc.assert_nothing_queued().await;
    n.shutdown().await;
}

#[tokio::test]
async fn tun_close_acks_the_closer_and_closes_the_far_end_gracefully() {
    let n = node(0x24, vec![]).await;
    let addr = relay_addr(&n);
    let mut svc = Raw::attach(addr, "svc").await;
    let mut opener = Raw::attach(addr, "").await;

    // The opener closes: `0d 07 00` to it, `0d 03 ""` to the service.
    open_tunnel(&mut opener, 7, "svc", &mut svc, 3, 1 << 20, 1 << 20).await;
    opener.send_bytes(b"\x0d\x07").await;
    assert_eq!(opener.read_exact(3).await, b"\x0d\x07\x00");
    svc.expect(NodePacket::TunClose {
        id: 3,
        reason: String::new(),
    })
    .await;
    // The service's close of the already closed tunnel (a race) gets nothing, harms nothing;
    // so do packets on the closed ids.
    svc.send(ClientPacket::TunClose { id: 3 }).await;
    svc.send(chunk(3, 1, b"x")).await;
    opener.send(chunk(7, 1, b"x")).await;
    opener
        .send(ClientPacket::TunAllow { id: 7, space: 10 })
        .await;
    svc.assert_nothing_queued().await;
    opener.assert_nothing_queued().await;

    // The service closes: the opener hears it, the service gets its ack.
    open_tunnel(&mut opener, 8, "svc", &mut svc, 4, 1 << 20, 1 << 20).await;
    svc.send(ClientPacket::TunClose { id: 4 }).await;
    svc.expect(NodePacket::TunClose {
        id: 4,
        reason: String::new(),
    })
    .await;
    opener
        .expect(NodePacket::TunClose {
            id: 8,
            reason: String::new(),
        })
        .await;

    // Data sent before a close arrives before the far end hears the close, even when the far
    // end reads it only later (it has no credit when the close is sent).
    open_tunnel(&mut opener, 9, "svc", &mut svc, 5, 1 << 20, 0).await;
    for i in 0..3u8 {
        opener.send(chunk(9, 1, &[i])).await;
    }
    opener.send(ClientPacket::TunClose { id: 9 }).await;
    assert_eq!(
        next_not_allow(&mut opener).await,
        NodePacket::TunClose {
            id: 9,
            reason: String::new()
        }
    );
    svc.expect_silence(Duration::from_millis(100)).await;
    svc.send(ClientPacket::TunAllow { id: 5, space: 3 }).await;
    for i in 0..3u8 {
        assert_eq!(svc.next().await, data(5, 1, &[i]));
    }
    svc.expect(NodePacket::TunClose {
        id: 5,
        reason: String::new(),
    })
    .await;
    svc.assert_nothing_queued().await;
    opener.assert_nothing_queued().await;
    n.shutdown().await;
}

#[tokio::test]
async fn tun_init_to_an_empty_cluster_times_out_after_its_timeout() {
    let n = node(0x25, vec![]).await;
    let mut c = Raw::attach(relay_addr(&n), "").await;
    let t0 = Instant::now();
    // 09 id=5 "nobody" timeout=100 ms
    c.send_bytes(b"\x09\x05\x06nobody\x64").await;
    assert_eq!(c.read_exact(3).await, b"\x0a\x05\x01");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(95) && took < Duration::from_millis(1000),
        "timed out after {took:?}"
    );
    c.assert_nothing_queued().await;
    n.shutdown().await;
}

#[tokio::test]
async fn an_offer_not_confirmed_in_time_fails_the_open_and_a_late_confirm_is_refused() {
    let n = node(0x26, vec![]).await;
    let addr = relay_addr(&n);
    let mut svc = Raw::attach(addr, "svc").await;
    let mut opener = Raw::attach(addr, "").await;
    opener
        .send(ClientPacket::TunInit {
            id: 4,
            cluster: "svc".into(),
            timeout_ms: 100,
        })
        .await;
    let NodePacket::TunInit { build_id, .. } = svc.next().await else {
        panic!("no offer")
    };
    opener
        .expect(NodePacket::TunConfirm {
            id: 4,
            chunk_limit: None,
        })
        .await;
    // The service confirms too late: its tunnel ends at once, with a reason.
    tokio::time::sleep(Duration::from_millis(50)).await;
    svc.send(ClientPacket::TunConfirm {
        build_id,
        tun_id: 1,
    })
    .await;
    let NodePacket::TunClose { id: 1, reason } = svc.next().await else {
        panic!("the late confirm was not refused")
    };
    assert!(!reason.is_empty());
    svc.self_request("svc", 1).await;
    opener.assert_nothing_queued().await;
    n.shutdown().await;
}

/// Opens a tunnel from a fresh plain connection to `svc` (which confirms as `svc_id` with
/// `svc_credit`); returns the opener.
async fn opened(addr: std::net::SocketAddr, svc: &mut Raw, svc_id: u64, svc_credit: u64) -> Raw {
    let mut opener = Raw::attach(addr, "").await;
    open_tunnel(&mut opener, 1, "svc", svc, svc_id, 64 << 20, svc_credit).await;
    opener
}

/// The service's end of a tunnel whose opener was closed for a violation hears a close with a
/// reason.
async fn expect_far_close(svc: &mut Raw, id: u64) {
    match next_not_allow(svc).await {
        NodePacket::TunClose { id: got, reason } if got == id => {
            assert!(!reason.is_empty(), "a failure closed with an empty reason");
        }
        other => panic!("expected the close of tunnel {id}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_transfer_beyond_the_granted_credit_closes_only_that_connection() {
    let n = node(0x27, vec![]).await;
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    let mut svc = Raw::attach(addr, "svc").await;
    // The service reads nothing (no credit): the node-to-node window and then the node's
    // buffer for the opener fill up.
    let mut opener = opened(addr, &mut svc, 2, 0).await;
    let mut credit: u64 = 4 << 20;
    let mut sent = 0u64;
    loop {
        while credit >= 65536 {
            opener.send(chunk(1, 65536, &pattern(sent, 65536))).await;
            credit -= 65536;
            sent += 1;
        }
        let mut granted = false;
        while let Ok(p) = opener.recv_within(Duration::from_millis(100)).await {
            match p {
                Some(NodePacket::TunAllow { id: 1, space }) => {
                    credit += space;
                    granted = true;
                }
                other => panic!("opener got {other:?}"),
            }
        }
        if !granted {
            break;
        }
    }
    // Every byte of credit was used, within the rules: the connection is open.
    assert_eq!(credit, 0);
    assert!(sent > 64, "only {sent} chunks went");
    opener.assert_nothing_queued().await;
    // One byte more than granted: the node closes this connection.
    opener.send_bytes_lossy(&encode(&chunk(1, 1, b"!"))).await;
    opener.expect_eof_no_bytes().await;
    expect_far_close(&mut svc, 2).await;
    svc.self_request("svc", 1).await;
    healthy.check().await;
    let s = n.stats().await.unwrap();
    assert!(s.runtime.relay_violations >= 1);
    n.shutdown().await;
}

#[tokio::test]
async fn a_chunk_over_64k_closes_only_that_connection_at_once() {
    let n = node(0x28, vec![]).await;
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    let mut svc = Raw::attach(addr, "svc").await;
    let mut opener = opened(addr, &mut svc, 2, 64 << 20).await;
    // Exactly 65536 bytes is fine.
    opener.send(chunk(1, 65536, &pattern(0, 65536))).await;
    assert_eq!(recv_message(&mut svc, 2).await, pattern(0, 65536).to_vec());
    // 0c 01 size=65537 len=65537: refused from the length prefix, before the payload.
    let t0 = Instant::now();
    opener
        .send_bytes_lossy(b"\x0c\x01\x81\x80\x04\x81\x80\x04")
        .await;
    let rest = opener.read_to_end().await;
    assert!(
        decode_all(&rest)
            .iter()
            .all(|p| matches!(p, NodePacket::TunAllow { id: 1, .. })),
        "{rest:02x?}"
    );
    assert!(t0.elapsed() < Duration::from_millis(500));
    expect_far_close(&mut svc, 2).await;
    healthy.check().await;
    n.shutdown().await;
}

#[tokio::test]
async fn badly_framed_chunks_close_only_that_connection() {
    let n = node(0x29, vec![]).await;
    let addr = relay_addr(&n);
    let mut healthy = Healthy::new(addr).await;
    let mut svc = Raw::attach(addr, "svc").await;
    let cases: [(&str, Vec<ClientPacket>); 4] = [
        (
            "continuation with no message under way",
            vec![chunk(1, 0, b"x")],
        ),
        (
            "first chunk longer than its message",
            vec![chunk(1, 1, b"xy")],
        ),
        ("empty chunk", vec![chunk(1, 5, b"")]),
        (
            "continuation beyond the message's size",
            vec![chunk(1, 3, b"ab"), chunk(1, 0, b"cd")],
        ),
    ];
    for (i, (what, packets)) in cases.into_iter().enumerate() {
        let svc_id = 10 + i as u64;
        let mut opener = opened(addr, &mut svc, svc_id, 64 << 20).await;
        for p in packets {
            opener.send_bytes_lossy(&encode(&p)).await;
        }
        let rest = opener.read_to_end().await;
        assert!(
            decode_all(&rest)
                .iter()
                .all(|p| matches!(p, NodePacket::TunAllow { .. })),
            "{what}: {rest:02x?}"
        );
        // The service may have received the valid first chunk of the last case.
        loop {
            match svc.next().await {
                NodePacket::TunTransfer { id, .. } if id == svc_id => {}
                NodePacket::TunClose { id, reason } if id == svc_id => {
                    assert!(!reason.is_empty(), "{what}");
                    break;
                }
                other => panic!("{what}: service got {other:?}"),
            }
        }
        healthy.check().await;
    }
    svc.self_request("svc", 1).await;
    n.shutdown().await;
}

#[tokio::test]
async fn tunnel_packets_for_unknown_ids_are_ignored() {
    let n = node(0x2a, vec![]).await;
    let mut c = Raw::attach(relay_addr(&n), "svc").await;
    c.send(chunk(42, 1, b"x")).await;
    c.send(ClientPacket::TunAllow { id: 42, space: 1 }).await;
    c.send(ClientPacket::TunClose { id: 42 }).await;
    // A confirm for an offer that never was: that tunnel id ends at once.
    c.send(ClientPacket::TunConfirm {
        build_id: 12345,
        tun_id: 43,
    })
    .await;
    let NodePacket::TunClose { id: 43, reason } = c.next().await else {
        panic!("no close for the bogus confirm")
    };
    assert!(!reason.is_empty());
    c.self_request("svc", 1).await;
    c.assert_nothing_queued().await;
    n.shutdown().await;
}

#[tokio::test]
async fn a_confirm_reusing_a_live_tunnel_id_refuses_the_offer_and_spares_that_tunnel() {
    let n = node(0x2b, vec![]).await;
    let addr = relay_addr(&n);
    let mut svc = Raw::attach(addr, "svc").await;
    let mut first = Raw::attach(addr, "").await;
    open_tunnel(&mut first, 7, "svc", &mut svc, 3, 1 << 20, 1 << 20).await;
    // A second opener; the service (wrongly) confirms its offer with id 3, which is in use.
    let mut second = Raw::attach(addr, "").await;
    second
        .send(ClientPacket::TunInit {
            id: 1,
            cluster: "svc".into(),
            timeout_ms: 1000,
        })
        .await;
    let NodePacket::TunInit { build_id, .. } = svc.next().await else {
        panic!("no offer")
    };
    let t0 = Instant::now();
    svc.send(ClientPacket::TunConfirm {
        build_id,
        tun_id: 3,
    })
    .await;
    // The second opener hears of the failure at once, not at its timeout.
    second
        .expect(NodePacket::TunConfirm {
            id: 1,
            chunk_limit: None,
        })
        .await;
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    // Tunnel 3 is untouched: no close for it, and data still flows on it.
    first.send(chunk(7, 2, b"ok")).await;
    assert_eq!(svc.next().await, data(3, 2, b"ok"));
    svc.assert_nothing_queued().await;
    n.shutdown().await;
}
