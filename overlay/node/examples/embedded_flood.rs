//! The embedded (brokerless) publish path at full speed: one node in this process, serving as
//! a ring of one, a subscriber counting events and a publisher sending `N` 8-byte events to
//! it, windowed like `petal-compare`'s pub/sub rows (at most 1,000 undelivered; a full window
//! waits until a quarter of it is delivered). Prints the events delivered per second.
//!
//! For A/B measurements of a change to the embedded path in seconds, where the comparison
//! harness takes minutes to build: build the example before and after, and compare CPU time
//! per event with both runs pinned to the same CPU, old and new in turn:
//!
//! ```text
//! cargo build --release -p petal-node --example embedded_flood
//! taskset -c 1 perf stat -e task-clock target/release/examples/embedded_flood 1000000
//! ```
//! Argument: the number of events (default 3,000,000).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use petal_node::{Identity, LinkSecurity, NetworkKey, Options, TokioNet};
use tokio::time::Instant;

/// Events per subscriber that may be undelivered before the publisher waits.
const WINDOW: u64 = 1000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 3_000_000,
    };
    let mut o = Options::new(
        Identity::generate()?,
        LinkSecurity::Noise(NetworkKey::random()?),
    );
    o.peer_listen = "127.0.0.1:0".parse()?;
    o.relay_addrs = Vec::new();
    let node = petal_node::spawn(TokioNet, o).await?;
    if !node.wait_ready(Duration::from_secs(10)).await {
        return Err("the node did not start".into());
    }
    let got = Arc::new(AtomicU64::new(0));
    let room = Arc::new(tokio::sync::Notify::new());
    let subscriber = node.connect().await?;
    let (count, wake) = (got.clone(), room.clone());
    subscriber
        .subscribe("flood", move |_event: Bytes| {
            let n = count.fetch_add(1, Ordering::AcqRel) + 1;
            if n % (WINDOW / 4) == 0 {
                wake.notify_one();
            }
        })
        .await?;
    let publisher = node.connect().await?;
    let payload = Bytes::from_static(b"12345678");
    // Until the subscription has taken effect.
    while got.load(Ordering::Acquire) == 0 {
        publisher.publish("flood", payload.clone()).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let base = got.load(Ordering::Acquire);
    let delivered = || got.load(Ordering::Acquire) - base;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        if sent - delivered() >= WINDOW {
            // A missed notification costs at most this timeout.
            let _ = tokio::time::timeout(Duration::from_millis(10), room.notified()).await;
            continue;
        }
        for _ in 0..64.min(total - sent) {
            publisher.publish("flood", payload.clone()).await?;
            sent += 1;
        }
    }
    let drain = Instant::now() + Duration::from_secs(5);
    while delivered() < sent && Instant::now() < drain {
        tokio::task::yield_now().await;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = delivered();
    println!(
        "{:.0} events/s ({n} of {sent} delivered in {secs:.2} s)",
        n as f64 / secs
    );
    subscriber.close().await?;
    publisher.close().await?;
    node.shutdown().await;
    if n < sent {
        return Err(format!("{} events lost", sent - n).into());
    }
    Ok(())
}
