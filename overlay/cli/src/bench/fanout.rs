//! Broadcast and publish: one sender, one receiver (a cluster member or a topic subscriber).
//! Deliveries are counted where they arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use petal_client::{Connection, Service, ServiceHandler};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::report::{FanoutResult, Latency};
use super::{Ctx, histogram, nanos};
use crate::common;

/// How long the receiver may take to become reachable (two nodes: the group's tree).
const READY_WITHIN: Duration = Duration::from_secs(10);
/// A latency probe not delivered within this is counted lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The flood is over once no delivery came for this long.
const QUIET: Duration = Duration::from_millis(500);
/// Longest wait for the flood's stragglers.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// A full window that makes no progress for this long is written off as lost.
const STALL: Duration = Duration::from_millis(200);

/// Which pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Broadcast to a cluster.
    Broadcast,
    /// Publish to a topic.
    Publish,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Broadcast => "broadcast",
            Kind::Publish => "publish",
        }
    }
}

/// Counts deliveries at the receiver; in probe mode also reports each arrival time.
struct Counter {
    origin: Instant,
    delivered: AtomicU64,
    /// Nanoseconds since `origin` of the latest delivery.
    last_ns: AtomicU64,
    probing: AtomicBool,
    arrivals: mpsc::UnboundedSender<Instant>,
    /// The sender waits for `delivered` to reach this (windowed sending).
    wake_at: AtomicU64,
    progress: Notify,
}

impl Counter {
    fn deliver(&self) {
        let now = Instant::now();
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        self.last_ns
            .fetch_max(nanos(now - self.origin), Ordering::Relaxed);
        if self.probing.load(Ordering::Relaxed) {
            let _ = self.arrivals.send(now);
        }
        if n == self.wake_at.load(Ordering::Relaxed) {
            self.progress.notify_one();
        }
    }

    /// Waits until at most `window / 2` of the `sent` messages are undelivered (not counting
    /// `written_off`); writes off the outstanding ones when deliveries stall.
    async fn wait_window(&self, sent: u64, window: u64, written_off: &mut u64) {
        loop {
            let delivered = self.delivered.load(Ordering::Relaxed);
            let outstanding = sent.saturating_sub(delivered + *written_off);
            if outstanding < window {
                return;
            }
            let target = delivered + outstanding - window / 2;
            self.wake_at.store(target, Ordering::Relaxed);
            if self.delivered.load(Ordering::Relaxed) >= target {
                continue;
            }
            if tokio::time::timeout(STALL, self.progress.notified())
                .await
                .is_err()
                && self.delivered.load(Ordering::Relaxed) == delivered
            {
                *written_off += outstanding;
            }
        }
    }
}

/// A cluster member that counts broadcasts.
struct BroadcastSink(Arc<Counter>);

impl ServiceHandler for BroadcastSink {
    async fn handle_request(&self, _request: Bytes) -> Result<Bytes, String> {
        Err("a broadcast receiver takes no requests".to_owned())
    }

    fn handle_broadcast(&self, _message: Bytes) {
        self.0.deliver();
    }
}

/// The receiving end, kept alive for the run.
enum Receiver {
    Member(Service),
    Subscriber(Connection),
}

impl Receiver {
    fn connection(&self) -> &Connection {
        match self {
            Receiver::Member(service) => service,
            Receiver::Subscriber(conn) => conn,
        }
    }

    /// Deliveries the client library dropped (its queue was full).
    fn dropped(&self) -> u64 {
        let stats = self.connection().stats();
        stats.dropped_broadcasts + stats.dropped_events
    }
}

/// Runs the broadcast or publish benchmark.
pub(crate) async fn run(ctx: &Ctx, kind: Kind) -> Result<FanoutResult> {
    let name = ctx.name(kind.name());
    let size = ctx.size.unwrap_or(1);
    let payload = common::payload(size);
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let counter = Arc::new(Counter {
        origin: Instant::now(),
        delivered: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
        probing: AtomicBool::new(false),
        arrivals: arrivals_tx,
        wake_at: AtomicU64::new(u64::MAX),
        progress: Notify::new(),
    });
    let receiver = match kind {
        Kind::Broadcast => Receiver::Member(
            ctx.register(ctx.port2, &name, BroadcastSink(counter.clone()))
                .await?,
        ),
        Kind::Publish => {
            let conn = ctx.connect(ctx.port2).await?;
            let counter = counter.clone();
            conn.subscribe(&name, move |_event: Bytes| counter.deliver())
                .await
                .context("subscribing")?;
            Receiver::Subscriber(conn)
        }
    };
    let sender = ctx.connect(ctx.port).await?;
    let send = |message: Bytes| {
        let (sender, name) = (&sender, &name);
        async move {
            match kind {
                Kind::Broadcast => sender.broadcast(name, message).await,
                Kind::Publish => sender.publish(name, message).await,
            }
        }
    };

    ctx.progress(&format!("{}: waiting for the receiver", kind.name()));
    let start = Instant::now();
    while counter.delivered.load(Ordering::Relaxed) == 0 {
        if start.elapsed() > READY_WITHIN {
            anyhow::bail!(
                "no {} reached the receiver within {READY_WITHIN:?}",
                kind.name()
            );
        }
        send(payload.clone()).await.context("sending a probe")?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    quiet(&counter).await;

    let probe_for = (ctx.duration / 5).max(Duration::from_millis(200));
    ctx.progress(&format!(
        "{}: latency, one message at a time, {:.1} s",
        kind.name(),
        probe_for.as_secs_f64()
    ));
    let mut hist = histogram();
    let mut probes_lost = 0;
    while arrivals.try_recv().is_ok() {}
    counter.probing.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + probe_for;
    while Instant::now() < deadline {
        let sent = Instant::now();
        send(payload.clone()).await.context("sending")?;
        match tokio::time::timeout(PROBE_TIMEOUT, arrivals.recv()).await {
            Ok(Some(arrived)) => hist.saturating_record(nanos(arrived - sent).max(1)),
            Ok(None) => anyhow::bail!("receiver gone"),
            Err(_) => {
                probes_lost += 1;
                // A late arrival must not be taken for the next probe's.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while arrivals.try_recv().is_ok() {}
            }
        }
    }
    counter.probing.store(false, Ordering::Relaxed);
    quiet(&counter).await;

    let window = match ctx.window {
        0 => "flood".to_owned(),
        w => format!("window {w}"),
    };
    ctx.progress(&format!(
        "{}: throughput ({window}), {:.1} s",
        kind.name(),
        ctx.duration.as_secs_f64()
    ));
    let dropped_before = receiver.dropped();
    counter.delivered.store(0, Ordering::Relaxed);
    let t0 = Instant::now();
    let t0_ns = nanos(t0 - counter.origin);
    let deadline = t0 + ctx.duration;
    let mut sent = 0u64;
    let mut written_off = 0;
    while Instant::now() < deadline {
        if ctx.window > 0 {
            counter
                .wait_window(sent, ctx.window, &mut written_off)
                .await;
        }
        send(payload.clone()).await.context("sending")?;
        sent += 1;
    }
    let send_s = t0.elapsed().as_secs_f64();
    quiet(&counter).await;
    let delivered = counter.delivered.load(Ordering::Relaxed);
    let span_ns = counter
        .last_ns
        .load(Ordering::Relaxed)
        .saturating_sub(t0_ns)
        .max(1);
    let receiver_dropped = receiver.dropped() - dropped_before;

    let _ = sender.close().await;
    let _ = receiver.connection().close().await;
    Ok(FanoutResult {
        kind: kind.name(),
        size,
        window: ctx.window,
        latency: Latency::from_histogram(&hist),
        probes_lost,
        sent,
        sent_per_s: sent as f64 / send_s,
        delivered,
        delivered_per_s: delivered as f64 / (span_ns as f64 / 1e9),
        lost: sent.saturating_sub(delivered),
        receiver_dropped,
    })
}

/// Waits until no delivery has come for [`QUIET`] (at most [`DRAIN_MAX`]).
async fn quiet(counter: &Counter) {
    let start = Instant::now();
    let mut seen = counter.delivered.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(QUIET).await;
        let now = counter.delivered.load(Ordering::Relaxed);
        if now == seen || start.elapsed() > DRAIN_MAX {
            return;
        }
        seen = now;
    }
}
