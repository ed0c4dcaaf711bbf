//! Service behaviour against a scripted fake node: request deliveries and replies, broadcasts,
//! limits, drops.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{service, service_with, timely};
use petal_client::{Error, Options, ServiceHandler};
use petal_protocol::relay::{ClientPacket, NodePacket, ReplyOutcome};
use tokio::sync::{Semaphore, mpsc};

/// Echoes requests ("fail" faults), forwards broadcasts and drops to the test.
struct Echo {
    broadcasts: mpsc::UnboundedSender<Bytes>,
    drops: mpsc::UnboundedSender<String>,
}

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        if request == "fail" {
            Err("boom".to_owned())
        } else {
            Ok(request)
        }
    }

    fn handle_broadcast(&self, message: Bytes) {
        let _ = self.broadcasts.send(message);
    }

    fn handle_drop(&self, reason: String) {
        let _ = self.drops.send(reason);
    }
}

fn echo() -> (
    Echo,
    mpsc::UnboundedReceiver<Bytes>,
    mpsc::UnboundedReceiver<String>,
) {
    let (broadcasts, brx) = mpsc::unbounded_channel();
    let (drops, drx) = mpsc::unbounded_channel();
    (Echo { broadcasts, drops }, brx, drx)
}

#[tokio::test]
async fn register_rejects_empty_cluster() {
    let (handler, _, _) = echo();
    let result = petal_client::register(1, "", handler).await;
    assert!(matches!(result, Err(Error::Invalid(_))), "{result:?}");
}

#[tokio::test]
async fn requests_are_answered_with_their_ids() {
    let (handler, _, _) = echo();
    let (svc, mut peer) = service("echo", handler).await;
    assert_eq!(svc.cluster(), "echo");
    peer.send(NodePacket::Request {
        id: 7,
        request: Bytes::from("hi"),
        timeout_ms: 5000,
    })
    .await;
    peer.send(NodePacket::Request {
        id: 300,
        request: Bytes::from("fail"),
        timeout_ms: 5000,
    })
    .await;
    let mut replies = vec![peer.recv().await, peer.recv().await];
    replies.sort_by_key(|r| match r {
        Some(ClientPacket::Reply { id, .. }) => *id,
        _ => u64::MAX,
    });
    assert_eq!(
        replies,
        vec![
            Some(ClientPacket::Reply {
                id: 7,
                result: Ok(Bytes::from("hi"))
            }),
            Some(ClientPacket::Reply {
                id: 300,
                result: Err("boom".into())
            }),
        ]
    );
}

#[tokio::test]
async fn service_can_issue_its_own_requests() {
    let (handler, _, _) = echo();
    let (svc, mut peer) = service("echo", handler).await;
    let conn = svc.connection().clone();
    let call =
        tokio::spawn(async move { conn.request("other", "q", Duration::from_secs(1)).await });
    let Some(ClientPacket::Request { id, .. }) = peer.recv().await else {
        panic!("request")
    };
    // A delivery with the same number in the node's id space is a different request.
    peer.send(NodePacket::Request {
        id,
        request: Bytes::from("delivered"),
        timeout_ms: 5000,
    })
    .await;
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::Reply {
            id,
            result: Ok(Bytes::from("delivered"))
        })
    );
    peer.send(NodePacket::Reply {
        id,
        outcome: ReplyOutcome::Success(Bytes::from("a")),
    })
    .await;
    assert_eq!(timely(call).await.expect("join").expect("reply"), "a");
}

#[tokio::test]
async fn broadcasts_reach_the_handler() {
    let (handler, mut broadcasts, _) = echo();
    let (_svc, mut peer) = service("echo", handler).await;
    peer.send(NodePacket::Broadcast {
        message: Bytes::from("bc"),
    })
    .await;
    assert_eq!(timely(broadcasts.recv()).await.expect("broadcast"), "bc");
}

#[tokio::test]
async fn break_calls_handle_drop() {
    let (handler, _, mut drops) = echo();
    let (svc, peer) = service("echo", handler).await;
    peer.hang_up().await;
    let reason = timely(drops.recv()).await.expect("drop");
    assert!(!reason.is_empty());
    assert!(svc.is_closed());
}

#[tokio::test]
async fn node_close_calls_handle_drop_with_reason() {
    let (handler, _, mut drops) = echo();
    let (_svc, mut peer) = service("echo", handler).await;
    peer.send(NodePacket::Close {
        reason: "evicted".into(),
    })
    .await;
    assert_eq!(timely(drops.recv()).await.expect("drop"), "evicted");
}

#[tokio::test]
async fn graceful_close_does_not_call_handle_drop() {
    let (handler, _, mut drops) = echo();
    let (svc, mut peer) = service("echo", handler).await;
    let closing = tokio::spawn(async move { svc.close().await });
    assert_eq!(peer.recv().await, Some(ClientPacket::Close));
    peer.send(NodePacket::Close {
        reason: String::new(),
    })
    .await;
    peer.hang_up().await;
    timely(closing).await.expect("join").expect("close");
    assert!(
        drops.recv().await.is_none(),
        "handle_drop must not be called"
    );
}

/// Blocks every request until the test opens the gate.
struct Gated {
    gate: Arc<Semaphore>,
    running: Arc<std::sync::atomic::AtomicUsize>,
    max_running: Arc<std::sync::atomic::AtomicUsize>,
}

impl ServiceHandler for Gated {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.max_running.fetch_max(now, SeqCst);
        let _permit = self.gate.acquire().await.map_err(|e| e.to_string())?;
        self.running.fetch_sub(1, SeqCst);
        Ok(request)
    }
}

#[tokio::test]
async fn request_queue_bounds_concurrency_and_bytes() {
    let gate = Arc::new(Semaphore::new(0));
    let max_running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = Gated {
        gate: gate.clone(),
        running: Default::default(),
        max_running: max_running.clone(),
    };
    let mut options = Options::default();
    options.request_handlers = 2;
    // Room for four 1000-byte requests (plus per-item overhead), not five.
    options.request_memory = 4 * 1100;
    let (svc, mut peer) = service_with("gated", handler, options).await;
    for id in 0..6 {
        peer.send(NodePacket::Request {
            id,
            request: Bytes::from(vec![0u8; 1000]),
            timeout_ms: 5000,
        })
        .await;
    }
    timely(async {
        while svc.stats().dropped_requests < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    gate.add_permits(100);
    let mut ids = Vec::new();
    for _ in 0..4 {
        match peer.recv().await {
            Some(ClientPacket::Reply { id, result: Ok(_) }) => ids.push(id),
            other => panic!("expected a reply, got {other:?}"),
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2, 3]);
    assert!(
        peer.quiet_for(Duration::from_millis(30)).await,
        "dropped requests get no reply"
    );
    assert_eq!(max_running.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(svc.stats().dropped_requests, 2);
}

#[tokio::test]
async fn requests_expired_in_queue_are_skipped() {
    let gate = Arc::new(Semaphore::new(0));
    let handler = Gated {
        gate: gate.clone(),
        running: Default::default(),
        max_running: Default::default(),
    };
    let mut options = Options::default();
    options.request_handlers = 1;
    let (svc, mut peer) = service_with("gated", handler, options).await;
    peer.send(NodePacket::Request {
        id: 1,
        request: Bytes::from("slow"),
        timeout_ms: 5000,
    })
    .await;
    peer.send(NodePacket::Request {
        id: 2,
        request: Bytes::from("short"),
        timeout_ms: 1,
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    gate.add_permits(10);
    assert_eq!(
        peer.recv().await,
        Some(ClientPacket::Reply {
            id: 1,
            result: Ok(Bytes::from("slow"))
        })
    );
    assert!(peer.quiet_for(Duration::from_millis(30)).await);
    assert_eq!(svc.stats().expired_requests, 1);
}

#[tokio::test]
async fn plain_client_ignores_service_deliveries() {
    let (conn, mut peer) = common::client().await;
    peer.send(NodePacket::Request {
        id: 1,
        request: Bytes::from("x"),
        timeout_ms: 100,
    })
    .await;
    peer.send(NodePacket::Broadcast {
        message: Bytes::from("x"),
    })
    .await;
    peer.send(NodePacket::TunInit {
        build_id: 1,
        chunk_limit: 65536,
    })
    .await;
    timely(async {
        while conn.stats().ignored_packets < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(peer.quiet_for(Duration::from_millis(20)).await);
}
