//! The workloads, the same for every system: request/reply latency (one at a time) and
//! throughput (64 and 256 in flight), pub/sub fan-out (8 B and 1 KiB events, 1 and 10
//! subscribers, the publisher keeping at most `WINDOW` events per subscriber undelivered),
//! and one stream of 64 KiB messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;

use crate::systems::{self, Sys};

/// Events a publisher may have undelivered per subscriber.
pub const WINDOW: u64 = 1000;

/// Bytes the Petal tunnel sinks received (every system's stream counts at the receiver).
pub static TUNNEL_BYTES: AtomicU64 = AtomicU64::new(0);

/// p50 and p99 of one-at-a-time requests during `d`, in microseconds.
pub async fn latency(sys: &Sys, d: Duration) -> Result<(f64, f64)> {
    let (_g, req) = systems::echo_pair(sys).await?;
    let payload = Bytes::from_static(b"x");
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    // Warm-up.
    for _ in 0..200 {
        req.call(payload.clone()).await?;
    }
    let end = Instant::now() + d;
    while Instant::now() < end {
        let t = Instant::now();
        req.call(payload.clone()).await?;
        h.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    let us = |q| h.value_at_quantile(q) as f64 / 1000.0;
    Ok((us(0.5), us(0.99)))
}

/// Requests per second with `inflight` requests outstanding at all times, for `d`.
pub async fn throughput(sys: &Sys, inflight: usize, d: Duration) -> Result<f64> {
    let (_g, req) = systems::echo_pair(sys).await?;
    let req = Arc::new(req);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + d;
    let mut tasks = Vec::new();
    for _ in 0..inflight {
        let (req, done) = (req.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let payload = Bytes::from_static(b"x");
            while Instant::now() < end {
                req.call(payload.clone()).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// What a fan-out or stream phase measured.
pub struct Flow {
    /// Events (messages) delivered per second, summed over subscribers.
    pub per_s: f64,
    /// Bytes delivered per second.
    pub bytes_per_s: f64,
    /// Events published and never delivered to some subscriber (written off after 1 s).
    pub lost: u64,
}

/// `subs` subscribers, events of `size` bytes, for `d`.
pub async fn fanout(sys: &Sys, subs: usize, size: usize, d: Duration) -> Result<Flow> {
    let (events, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (_g, publisher) = systems::fanout(sys, subs, events.clone(), bytes.clone()).await?;
    let payload = Bytes::from(vec![0x5a; size]);
    let subs = subs as u64;
    // Until every subscriber hears (subscriptions travel before they take effect).
    let ready = Instant::now() + Duration::from_secs(10);
    while events.load(Ordering::Relaxed) < subs {
        anyhow::ensure!(
            Instant::now() < ready,
            "{}: the subscribers hear nothing",
            sys.name()
        );
        publisher.send(payload.clone()).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (e0, b0) = (
        events.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
    );
    let start = Instant::now();
    let mut sent = 0u64;
    let mut lost = 0u64;
    let mut stalled_since: Option<Instant> = None;
    while start.elapsed() < d {
        let got = events.load(Ordering::Relaxed) - e0;
        if (sent * subs).saturating_sub(got + lost) >= WINDOW * subs {
            // A window that makes no progress for a second is written off as lost.
            let since = *stalled_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(1) {
                lost += (sent * subs).saturating_sub(got + lost);
                stalled_since = None;
            }
            tokio::task::yield_now().await;
            continue;
        }
        stalled_since = None;
        publisher.send(payload.clone()).await?;
        sent += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let got = events.load(Ordering::Relaxed) - e0;
    let got_bytes = bytes.load(Ordering::Relaxed) - b0;
    // What is still in flight arrives or is lost: wait briefly for it.
    let drain = Instant::now() + Duration::from_secs(1);
    while events.load(Ordering::Relaxed) - e0 + lost < sent * subs && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lost += (sent * subs).saturating_sub(events.load(Ordering::Relaxed) - e0 + lost);
    Ok(Flow {
        per_s: got as f64 / secs,
        bytes_per_s: got_bytes as f64 / secs,
        lost,
    })
}

/// One stream of `size`-byte messages for `d`: a Petal tunnel (credit flow control); for the
/// others one subscriber of a topic, windowed as [`fanout`].
pub async fn stream(sys: &Sys, size: usize, d: Duration) -> Result<Flow> {
    match sys {
        Sys::Relay { .. } | Sys::Embedded { .. } => {
            let (_g, tunnel) = systems::petal_tunnel(sys).await?;
            let message = Bytes::from(vec![0x5a; size]);
            let warm = Instant::now() + Duration::from_millis(300);
            while Instant::now() < warm {
                tunnel
                    .send(message.clone(), Duration::from_secs(10))
                    .await?;
            }
            let b0 = TUNNEL_BYTES.load(Ordering::Relaxed);
            let start = Instant::now();
            while start.elapsed() < d {
                tunnel
                    .send(message.clone(), Duration::from_secs(10))
                    .await?;
            }
            let secs = start.elapsed().as_secs_f64();
            let got = TUNNEL_BYTES.load(Ordering::Relaxed) - b0;
            Ok(Flow {
                per_s: got as f64 / size as f64 / secs,
                bytes_per_s: got as f64 / secs,
                lost: 0,
            })
        }
        _ => fanout(sys, 1, size, d).await,
    }
}
