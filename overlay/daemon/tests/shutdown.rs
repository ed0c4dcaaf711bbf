//! Graceful shutdown of a real `petald` process: on SIGTERM a client waiting on a request to
//! a slow service of the same node gets its timeout at once (not a hang), its open tunnel and
//! its connection end with a reason, the service is told it was dropped, and the process
//! exits with status 0 within a few seconds. SIGINT does the same for an idle daemon. A request
//! from another node that a member of the stopping node holds fails at its requester at once,
//! with the reason.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use petal_client::{Connection, Error, ServiceHandler, Tunnel, register};
use tokio::sync::mpsc;

const SECOND: Duration = Duration::from_secs(1);

/// Reports each request's arrival, then takes a minute to answer; echoes tunnels; reports
/// being dropped.
struct Slow {
    arrived: mpsc::UnboundedSender<Bytes>,
    dropped: mpsc::UnboundedSender<String>,
}

impl ServiceHandler for Slow {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        let _ = self.arrived.send(request.clone());
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(request)
    }

    fn handle_tunnel(&self, tunnel: Tunnel) {
        tokio::spawn(async move {
            while let Ok(message) = tunnel.recv().await {
                if tunnel.send(message, 10 * SECOND).await.is_err() {
                    break;
                }
            }
        });
    }

    fn handle_drop(&self, reason: String) {
        let _ = self.dropped.send(reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_a_pending_request_and_exits_cleanly() {
    let mut d = Daemon::start(&Spec::alone()).await;
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let svc = register(
        d.port,
        "slow",
        Slow {
            arrived: arrived_tx,
            dropped: dropped_tx,
        },
    )
    .await
    .expect("register");
    let client = Connection::connect(d.port).await.expect("connect");

    // An open tunnel, known to work.
    let tunnel = within(SECOND, "opening", client.tunnel("slow", SECOND))
        .await
        .expect("tunnel");
    tunnel.send(&b"ping"[..], SECOND).await.unwrap();
    assert_eq!(
        within(SECOND, "echo", tunnel.recv()).await.unwrap(),
        &b"ping"[..]
    );

    // A request with a long timeout, held by the slow handler.
    let pending = {
        let client = client.clone();
        tokio::spawn(async move {
            let r = client
                .request("slow", "please", Duration::from_secs(30))
                .await;
            (Instant::now(), r)
        })
    };
    within(
        2 * SECOND,
        "the request reaching the service",
        arrived.recv(),
    )
    .await
    .unwrap();

    let t0 = Instant::now();
    d.terminate();
    let (at, outcome) = within(5 * SECOND, "the pending request", pending)
        .await
        .unwrap();
    let answered = at - t0;
    assert!(
        matches!(outcome, Err(Error::Timeout)),
        "the pending request: want the node's timeout, got {outcome:?}"
    );
    assert!(answered < 2 * SECOND, "answered after {answered:?}");

    let tunnel_end = within(5 * SECOND, "the tunnel's end", tunnel.recv()).await;
    match &tunnel_end {
        Err(Error::Closed(reason)) => assert!(!reason.is_empty(), "a graceful tunnel close"),
        other => panic!("the tunnel: want a close with a reason, got {other:?}"),
    }
    let reason = within(5 * SECOND, "the service's drop", dropped.recv())
        .await
        .unwrap();
    assert!(
        !reason.is_empty(),
        "the service was dropped without a reason"
    );

    let status = d.wait_exit(5 * SECOND).await;
    let exited = t0.elapsed();
    let status = status.unwrap_or_else(|| panic!("petald still running 5 s after SIGTERM"));
    assert!(status.success(), "petald exited with {status}");
    println!(
        "SIGTERM: pending request answered (timeout) after {answered:?}, process exited after \
         {exited:?}; service dropped with {reason:?}; tunnel ended with {tunnel_end:?}"
    );

    // The client's connection ended with the node's reason: later calls fail at once.
    let later = within(
        SECOND,
        "a request after shutdown",
        client.request("slow", "x", SECOND),
    )
    .await;
    assert!(
        matches!(later, Err(Error::Closed(_)) | Err(Error::Broken(_))),
        "{later:?}"
    );
    assert!(client.is_closed());
    assert!(svc.is_closed());
    assert!(d.log().contains("stopped"), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_an_idle_daemon() {
    let mut d = Daemon::start(&Spec::alone()).await;
    let client = Connection::connect(d.port).await.expect("connect");
    let t0 = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &d.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());
    let status = d
        .wait_exit(5 * SECOND)
        .await
        .unwrap_or_else(|| panic!("petald still running 5 s after SIGINT"));
    assert!(status.success(), "petald exited with {status}");
    println!("SIGINT: idle daemon exited after {:?}", t0.elapsed());
    let closed = within(SECOND, "close after shutdown", client.close()).await;
    assert!(closed.is_ok() || client.is_closed(), "{closed:?}");
}

/// Answers "warm" at once; reports any other request's arrival and holds it for a minute.
struct Holds(mpsc::UnboundedSender<Bytes>);

impl ServiceHandler for Holds {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        if &request[..] == b"warm" {
            return Ok(request);
        }
        let _ = self.0.send(request.clone());
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(request)
    }
}

/// A request from a client of another node, held by a member of the node that shuts down,
/// fails at its requester at once with the reason, not at its 30 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_the_requests_its_members_hold_for_other_nodes_at_once() {
    let a = Daemon::start(&Spec::alone()).await;
    let b = Daemon::start(&Spec {
        peer_ip: lo(2),
        seeds: vec![a.peer],
        ..Spec::alone()
    })
    .await;
    assert!(b.wait_log("joined the ring", 5 * SECOND).await);
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let _svc = register(b.port, "held", Holds(arrived_tx))
        .await
        .expect("register");
    let client = Connection::connect(a.port).await.expect("connect");
    let t0 = Instant::now();
    loop {
        match client
            .request("held", "warm", 200 * Duration::from_millis(1))
            .await
        {
            Ok(_) => break,
            Err(Error::Timeout) if t0.elapsed() < 10 * SECOND => {}
            Err(e) => panic!("no member reachable from a after {:?}: {e}", t0.elapsed()),
        }
    }
    let pending = {
        let client = client.clone();
        tokio::spawn(async move {
            let r = client
                .request("held", "please", Duration::from_secs(30))
                .await;
            (Instant::now(), r)
        })
    };
    within(
        2 * SECOND,
        "the request reaching the member",
        arrived.recv(),
    )
    .await
    .unwrap();
    let t1 = Instant::now();
    b.terminate();
    let (at, outcome) = within(5 * SECOND, "the held request", pending)
        .await
        .unwrap();
    match outcome {
        Err(Error::Remote(reason)) => assert_eq!(reason, petal_core::LEAVING_FAULT),
        other => panic!("want the leaving node's fault, got {other:?}"),
    }
    let answered = at - t1;
    assert!(answered < 2 * SECOND, "answered after {answered:?}");
    println!("a request held on a node that shut down failed at its requester after {answered:?}");
}
