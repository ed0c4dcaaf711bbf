//! A node torn down under load (its service busy with thousands of requests from another
//! node's clients) ends every request with exactly one outcome, and the nodes that stay keep
//! serving.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_protocol::relay::{ClientPacket, NodePacket, ReplyOutcome};

const CLIENTS: u64 = 4;
const PER_CLIENT: u64 = 500;

#[tokio::test]
async fn a_node_shut_down_under_load_ends_every_request_once() {
    let [a, b, c] = three_nodes().await;
    // The service on node a echoes every request after 1 ms of work (2,000 requests take it
    // at least 2 s), until its node goes away.
    let mut svc = Raw::attach(relay_addr(&a), "work").await;
    let echo = tokio::spawn(async move {
        while let Some(p) = svc
            .recv_within(Duration::from_secs(10))
            .await
            .ok()
            .flatten()
        {
            if let NodePacket::Request { id, request, .. } = p {
                tokio::time::sleep(Duration::from_millis(1)).await;
                // Lossy: the node goes away under the service.
                svc.send_bytes_lossy(&encode(&ClientPacket::Reply {
                    id,
                    result: Ok(request),
                }))
                .await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Clients on node b send their requests in one burst each and read every outcome.
    let mut readers = Vec::new();
    for k in 0..CLIENTS {
        let mut cli = Raw::attach(relay_addr(&b), "").await;
        let mut burst = Vec::new();
        for id in 0..PER_CLIENT {
            burst.extend(encode(&ClientPacket::Request {
                id,
                cluster: "work".into(),
                request: Bytes::from(format!("{k}/{id}")),
                timeout_ms: 3_000,
            }));
        }
        cli.send_bytes(&burst).await;
        readers.push(tokio::spawn(async move {
            let mut outcomes: BTreeMap<u64, Vec<ReplyOutcome>> = BTreeMap::new();
            let mut total = 0;
            while total < PER_CLIENT {
                match cli.recv_within(Duration::from_secs(8)).await {
                    Ok(Some(NodePacket::Reply { id, outcome })) => {
                        outcomes.entry(id).or_default().push(outcome);
                        total += 1;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(()) => break,
                }
            }
            // Nothing more may come for any request (a second outcome would show here).
            let late = cli.recv_within(Duration::from_millis(500)).await;
            (k, outcomes, late)
        }));
    }
    // Tear node a down while the work is under way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = tokio::time::Instant::now();
    a.shutdown().await;
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        t0.elapsed()
    );
    let (mut echoed, mut other) = (0, 0);
    for r in readers {
        let (k, outcomes, late) = r.await.unwrap();
        assert_eq!(
            outcomes.len() as u64,
            PER_CLIENT,
            "client {k}: every request had an outcome"
        );
        for (id, o) in &outcomes {
            assert_eq!(o.len(), 1, "client {k} request {id}: {o:?}");
            match &o[0] {
                ReplyOutcome::Success(body) => {
                    assert_eq!(&body[..], format!("{k}/{id}").as_bytes());
                    echoed += 1;
                }
                ReplyOutcome::Fault(_) | ReplyOutcome::Timeout => other += 1,
            }
        }
        assert!(late.is_err(), "client {k}: more came after: {late:?}");
    }
    eprintln!("echoed {echoed}, other outcomes {other}");
    assert_eq!(echoed + other, CLIENTS * PER_CLIENT);
    assert!(
        echoed > 0 && other > 0,
        "the teardown fell while requests were under way: {echoed} echoed, {other} not"
    );
    // The nodes that stay serve as before, and what the load made them hold is given back
    // (every charge of the memory budget: queues, input, the core's buffers).
    for n in [&b, &c] {
        let mut h = Healthy::new(relay_addr(n)).await;
        h.check().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let s = n.stats().await.unwrap();
            if s.memory_used == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} bytes still charged after the load",
                s.memory_used
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(echo);
    b.shutdown().await;
    c.shutdown().await;
}
