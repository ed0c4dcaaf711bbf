//! A subscriber that never reads: the node drops its events past `session_queue_bytes`
//! (counted), keeps serving the subscriber that reads and every other connection, and holds
//! a bounded amount for the one that does not.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_node::TokioNet;
use petal_protocol::relay::{ClientPacket, NodePacket, ReplyOutcome};
use tokio::time::Instant;

const EVENT: usize = 64 * 1024;
const EVENTS: u64 = 3200; // 200 MiB

async fn subscribe(r: &mut Raw) {
    r.send(ClientPacket::Subscribe {
        topic: "flood".into(),
    })
    .await;
    r.assert_nothing_queued().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_bounded_and_slows_nobody() {
    let mut o = options(0x50, vec![]);
    o.session_queue_bytes = 1 << 20;
    let n = petal_node::spawn(TokioNet, o).await.unwrap();
    let addr = relay_addr(&n);
    let mut lazy = Raw::attach(addr, "").await;
    subscribe(&mut lazy).await;
    let mut eager = Raw::attach(addr, "").await;
    subscribe(&mut eager).await;
    let mut publisher = Raw::attach(addr, "").await;
    let mut svc = Raw::attach(addr, "svc").await;
    let mut cli = Raw::attach(addr, "").await;

    // The subscriber that reads: every event's sequence number, until "end".
    let eager_task = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            match eager.next().await {
                NodePacket::Publish { event, .. } if &event[..] == b"end" => return seqs,
                NodePacket::Publish { event, .. } => {
                    assert_eq!(event.len(), EVENT);
                    seqs.push(u64::from_le_bytes(event[..8].try_into().unwrap()));
                }
                other => panic!("eager subscriber got {other:?}"),
            }
        }
    });
    // A service that answers every request.
    let svc_task = tokio::spawn(async move {
        while let Some(p) = svc.recv_within(Duration::from_secs(10)).await.unwrap() {
            let NodePacket::Request { id, request, .. } = p else {
                panic!("service got {p:?}")
            };
            svc.send(ClientPacket::Reply {
                id,
                result: Ok(request),
            })
            .await;
        }
    });
    let t0 = Instant::now();
    let flood = tokio::spawn(async move {
        let mut body = vec![0u8; EVENT];
        for seq in 0..EVENTS {
            body[..8].copy_from_slice(&seq.to_le_bytes());
            publisher
                .send(ClientPacket::Publish {
                    topic: "flood".into(),
                    event: Bytes::copy_from_slice(&body),
                })
                .await;
        }
        publisher
    });

    // Meanwhile requests from another connection complete promptly.
    let mut id = 0;
    let mut during = 0;
    let mut slowest = Duration::ZERO;
    while !flood.is_finished() {
        id += 1;
        let t = Instant::now();
        cli.send(ClientPacket::Request {
            id,
            cluster: "svc".into(),
            request: Bytes::from_static(b"ping"),
            timeout_ms: 2000,
        })
        .await;
        cli.expect(NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Success(Bytes::from_static(b"ping")),
        })
        .await;
        slowest = slowest.max(t.elapsed());
        during += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut publisher = flood.await.unwrap();
    let flood_time = t0.elapsed();
    assert!(
        during >= 3,
        "only {during} requests completed during the flood"
    );
    assert!(
        slowest < Duration::from_millis(250),
        "a request took {slowest:?} during the flood"
    );

    // The reading subscriber still gets new events once the flood is over.
    let mut ends = 0u64;
    while !eager_task.is_finished() {
        publisher
            .send(ClientPacket::Publish {
                topic: "flood".into(),
                event: Bytes::from_static(b"end"),
            })
            .await;
        ends += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seqs = eager_task.await.unwrap();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "events out of order or duplicated"
    );
    // It got events from every tenth of the flood (dropping, if any, was not a cut-off).
    for tenth in 0..10 {
        let (lo, hi) = (EVENTS * tenth / 10, EVENTS * (tenth + 1) / 10);
        assert!(
            seqs.iter().any(|s| (lo..hi).contains(s)),
            "the reading subscriber got nothing of events {lo}..{hi} ({} in all)",
            seqs.len()
        );
    }

    // What the node held for the lazy subscriber is bounded: 1 MiB of queue, a write batch and
    // the sockets' buffers, far from the 200 MiB published. It reads it all now (until 200 ms
    // of silence, so the node has handled every publish before its counters are read).
    let mut held = 0usize;
    let mut lazy_seqs = Vec::new();
    let mut lazy_ends = 0u64;
    while let Ok(Some(p)) = lazy.recv_within(Duration::from_millis(200)).await {
        match p {
            NodePacket::Publish { event, .. } if &event[..] == b"end" => lazy_ends += 1,
            NodePacket::Publish { event, .. } => {
                assert_eq!(event.len(), EVENT);
                held += event.len();
                lazy_seqs.push(u64::from_le_bytes(event[..8].try_into().unwrap()));
            }
            other => panic!("lazy subscriber got {other:?}"),
        }
    }
    assert!(
        held < 16 << 20,
        "{held} bytes were held for a client that did not read"
    );
    assert!(
        lazy_seqs.windows(2).all(|w| w[0] < w[1]),
        "events out of order or duplicated for the lazy subscriber"
    );
    let s = n.stats().await.unwrap();
    let dropped = s.runtime.relay_dropped;
    assert!(dropped > 0, "nothing dropped: {:?}", s.runtime);
    // Each of the EVENTS events went to two subscribers: each of the 2 x EVENTS deliveries was
    // made or counted as dropped. The "end" events account for the rest of the count: at most
    // one drop each for the eager subscriber, and exactly one for each the lazy one missed.
    let delivered = seqs.len() as u64 + lazy_seqs.len() as u64;
    assert!(
        delivered + dropped >= 2 * EVENTS,
        "deliveries unaccounted for: {delivered} delivered + {dropped} dropped < 2 x {EVENTS}"
    );
    assert!(
        delivered + dropped <= 2 * EVENTS + (ends - lazy_ends) + ends,
        "drops counted twice: {delivered} delivered + {dropped} dropped > 2 x {EVENTS} + \
         {ends} end events sent ({lazy_ends} delivered to the lazy subscriber)"
    );
    eprintln!(
        "flood of {EVENTS} x 64 KiB in {flood_time:?}: reader got {}, lazy held {} ({held} bytes), dropped {dropped} ({ends} end events, {lazy_ends} to the lazy one), {during} requests (slowest {slowest:?})",
        seqs.len(),
        lazy_seqs.len(),
    );
    // The lazy subscriber, once it reads, is served normally.
    lazy.assert_nothing_queued().await;
    drop(cli);
    svc_task.abort();
    n.shutdown().await;
}

#[tokio::test]
async fn requests_dropped_for_a_service_that_does_not_read_time_out_once_each() {
    let mut o = options(0x52, vec![]);
    o.session_queue_bytes = 64 << 10;
    let n = petal_node::spawn(TokioNet, o).await.unwrap();
    let addr = relay_addr(&n);
    // A service that never reads, and a client sending it 16 MiB of requests (far beyond the
    // socket buffers and the service's 64 KiB queue).
    let svc = Raw::attach(addr, "deaf").await;
    let mut cli = Raw::attach(addr, "").await;
    const N: u64 = 2048;
    let body = Bytes::from(vec![7u8; 8 << 10]);
    for id in 0..N {
        cli.send(ClientPacket::Request {
            id,
            cluster: "deaf".into(),
            request: body.clone(),
            timeout_ms: 300,
        })
        .await;
    }
    let mut seen = vec![false; N as usize];
    for _ in 0..N {
        match cli.next().await {
            NodePacket::Reply {
                id,
                outcome: ReplyOutcome::Timeout,
            } => {
                assert!(!seen[id as usize], "a second REPLY for {id}");
                seen[id as usize] = true;
            }
            other => panic!("{other:?}"),
        }
    }
    cli.expect_silence(Duration::from_millis(100)).await;
    let s = n.stats().await.unwrap();
    assert!(s.runtime.relay_dropped > 0, "{:?}", s.runtime);
    drop(svc);
    n.shutdown().await;
}
