//! One tunnel, one way: the acceptor counts the bytes it receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use petal_client::{Error, ServiceHandler, Tunnel};
use tokio::time::Instant;

use super::Ctx;
use super::report::TunnelResult;
use crate::common;

/// Default message size of the tunnel benchmark.
const DEFAULT_SIZE: usize = 64 * 1024;
/// How long the acceptor may take to become reachable (two nodes: the cluster's tree).
const READY_WITHIN: Duration = Duration::from_secs(10);
/// Sending before the measured phase.
const WARM_UP: Duration = Duration::from_millis(500);
/// Longest wait for credit for one message.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes and messages received by the acceptor.
#[derive(Default)]
struct Received {
    bytes: AtomicU64,
    messages: AtomicU64,
}

/// A cluster member that accepts tunnels and counts what comes through them.
struct Sink(Arc<Received>);

impl ServiceHandler for Sink {
    async fn handle_request(&self, _request: Bytes) -> Result<Bytes, String> {
        Err("a tunnel acceptor takes no requests".to_owned())
    }

    fn handle_tunnel(&self, tunnel: Tunnel) {
        let received = self.0.clone();
        tokio::spawn(async move {
            while let Ok(message) = tunnel.recv().await {
                received
                    .bytes
                    .fetch_add(message.len() as u64, Ordering::Relaxed);
                received.messages.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Runs the tunnel benchmark.
pub(crate) async fn run(ctx: &Ctx) -> Result<TunnelResult> {
    let cluster = ctx.name("tunnel");
    let size = ctx.size.unwrap_or(DEFAULT_SIZE).max(1);
    let payload = common::payload(size);
    let received = Arc::new(Received::default());
    let acceptor = ctx
        .register(ctx.port2, &cluster, Sink(received.clone()))
        .await?;
    let client = ctx.connect(ctx.port).await?;

    ctx.progress("tunnel: opening");
    let start = Instant::now();
    let tunnel = loop {
        match client.tunnel(&cluster, Duration::from_secs(1)).await {
            Ok(tunnel) => break tunnel,
            Err(Error::Timeout) if start.elapsed() < READY_WITHIN => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("opening the tunnel")),
        }
    };
    let send_until = |deadline: Instant| {
        let (tunnel, payload) = (&tunnel, &payload);
        async move {
            while Instant::now() < deadline {
                tunnel
                    .send(payload.clone(), SEND_TIMEOUT)
                    .await
                    .context("sending into the tunnel")?;
            }
            anyhow::Ok(())
        }
    };
    send_until(Instant::now() + WARM_UP).await?;

    ctx.progress(&format!(
        "tunnel: throughput, {} B messages, {:.1} s",
        size,
        ctx.duration.as_secs_f64()
    ));
    let t0 = Instant::now();
    let (bytes0, messages0) = snapshot(&received);
    send_until(t0 + ctx.duration).await?;
    let (bytes1, messages1) = snapshot(&received);
    let seconds = t0.elapsed().as_secs_f64();

    let _ = tunnel.close().await;
    let _ = client.close().await;
    let _ = acceptor.close().await;
    let bytes = bytes1 - bytes0;
    Ok(TunnelResult {
        message_size: size,
        bytes,
        seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        messages_per_s: (messages1 - messages0) as f64 / seconds,
    })
}

fn snapshot(received: &Received) -> (u64, u64) {
    (
        received.bytes.load(Ordering::Relaxed),
        received.messages.load(Ordering::Relaxed),
    )
}
