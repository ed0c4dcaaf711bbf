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

/// What the subscribers of a fan-out phase got, and the wake-up of a publisher waiting for
/// its window: the publisher sleeps until a quarter of the window is free again, instead of
/// spinning on the counters (which took a CPU from the system under test).
pub struct Tally {
    events: AtomicU64,
    bytes: AtomicU64,
    /// The event count at which to wake the publisher (`u64::MAX`: nobody waits).
    wake_at: AtomicU64,
    wake: tokio::sync::Notify,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            wake_at: AtomicU64::new(u64::MAX),
            wake: tokio::sync::Notify::new(),
        }
    }
}

impl Tally {
    /// A subscriber got an event of `n` bytes.
    pub fn count(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        // SeqCst with the publisher's store of `wake_at` and its load of `events`: one of the
        // two sides sees the other's write, so no wake-up is missed. The exchange clears only
        // the target this count reached, never one the publisher set since.
        let got = self.events.fetch_add(1, Ordering::SeqCst) + 1;
        let target = self.wake_at.load(Ordering::SeqCst);
        if got >= target
            && self
                .wake_at
                .compare_exchange(target, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.wake.notify_one();
        }
    }

    fn events(&self) -> u64 {
        self.events.load(Ordering::SeqCst)
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Waits until `target` events have been counted, or `until`. True when they have. A
    /// wake-up left over from an earlier wait only makes it look again.
    async fn wait_for(&self, target: u64, until: Instant) -> bool {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.wake_at.store(target, Ordering::SeqCst);
            if self.events() >= target {
                self.wake_at.store(u64::MAX, Ordering::SeqCst);
                return true;
            }
            let woken = tokio::time::timeout_at(until.into(), notified)
                .await
                .is_ok();
            self.wake_at.store(u64::MAX, Ordering::SeqCst);
            if !woken {
                return self.events() >= target;
            }
        }
    }
}

/// `subs` subscribers, events of `size` bytes, for `d`.
pub async fn fanout(sys: &Sys, subs: usize, size: usize, d: Duration) -> Result<Flow> {
    let tally = Arc::new(Tally::default());
    let (_g, publisher) = systems::fanout(sys, subs, tally.clone()).await?;
    let payload = Bytes::from(vec![0x5a; size]);
    let subs = subs as u64;
    // Until every subscriber hears (subscriptions travel before they take effect).
    let ready = Instant::now() + Duration::from_secs(10);
    while tally.events() < subs {
        anyhow::ensure!(
            Instant::now() < ready,
            "{}: the subscribers hear nothing",
            sys.name()
        );
        publisher.send(payload.clone()).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (e0, b0) = (tally.events(), tally.bytes());
    let start = Instant::now();
    let mut sent = 0u64;
    let mut lost = 0u64;
    let window = WINDOW * subs;
    // Undelivered events (per subscriber, summed), to hold against the window.
    let undelivered =
        |sent: u64, lost: u64| (sent * subs).saturating_sub(tally.events() - e0 + lost);
    let end = start + d;
    // When the window was found full with no progress since (the old loop's rule: a window
    // that stays full for a second is written off as lost).
    let mut stalled_since: Option<Instant> = None;
    'phase: while Instant::now() < end {
        if undelivered(sent, lost) >= window {
            let since = *stalled_since.get_or_insert_with(Instant::now);
            let give_up = since + Duration::from_secs(1);
            if Instant::now() >= give_up {
                lost += undelivered(sent, lost);
                stalled_since = None;
                continue;
            }
            // Sleep until a quarter of the window is free (or the phase ends, or the window
            // is to be written off).
            let target = e0 + sent * subs - lost - window * 3 / 4;
            tally.wait_for(target, give_up.min(end)).await;
            continue;
        }
        stalled_since = None;
        // Fill the window, reading the clock once per 64 events.
        for _ in 0..64 {
            if undelivered(sent, lost) >= window {
                continue 'phase;
            }
            publisher.send(payload.clone()).await?;
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let got = tally.events() - e0;
    let got_bytes = tally.bytes() - b0;
    // What is still in flight arrives or is lost: wait briefly for it.
    let drain = Instant::now() + Duration::from_secs(1);
    while tally.events() - e0 + lost < sent * subs && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lost += (sent * subs).saturating_sub(tally.events() - e0 + lost);
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
