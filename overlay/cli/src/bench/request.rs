//! Request/reply against an echo service: latency at concurrency 1, then throughput at each
//! concurrency level.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use petal_client::{Connection, Error, ServiceHandler};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::report::{Latency, RequestResult, SweepPoint};
use super::{Ctx, histogram, nanos};
use crate::common;

/// How long the echo service may take to become reachable (two nodes: the cluster's tree).
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Replies with the request.
struct Echo;

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }
}

/// What one phase measured.
pub(crate) struct Phase {
    /// Round-trip times of successful requests, in nanoseconds.
    hist: Histogram<u64>,
    timeouts: u64,
    faults: u64,
    elapsed: Duration,
}

impl Phase {
    pub(crate) fn point(&self, concurrency: usize) -> SweepPoint {
        let completed = self.hist.len();
        SweepPoint {
            concurrency,
            completed,
            timeouts: self.timeouts,
            faults: self.faults,
            requests_per_s: completed as f64 / self.elapsed.as_secs_f64(),
            latency: Latency::from_histogram(&self.hist),
        }
    }
}

/// Runs the request benchmark.
pub(crate) async fn run(ctx: &Ctx) -> Result<RequestResult> {
    let cluster: Arc<str> = ctx.name("echo").into();
    let size = ctx.size.unwrap_or(1);
    let payload = common::payload(size);
    let service = ctx.register(ctx.port2, &cluster, Echo).await?;
    let client = ctx.connect(ctx.port).await?;
    ctx.progress("request: waiting for the echo service");
    wait_ready(&client, &cluster, &payload).await?;
    phase(
        &client,
        &cluster,
        &payload,
        1,
        Duration::from_millis(300),
        ctx.timeout,
    )
    .await?;

    ctx.progress(&format!(
        "request: latency, concurrency 1, {:.1} s",
        ctx.duration.as_secs_f64()
    ));
    let latency = phase(&client, &cluster, &payload, 1, ctx.duration, ctx.timeout).await?;
    let mut sweep = Vec::new();
    for &concurrency in &ctx.concurrency {
        if concurrency == 1 {
            sweep.push(latency.point(1));
            continue;
        }
        ctx.progress(&format!(
            "request: throughput, concurrency {concurrency}, {:.1} s",
            ctx.duration.as_secs_f64()
        ));
        let measured = phase(
            &client,
            &cluster,
            &payload,
            concurrency,
            ctx.duration,
            ctx.timeout,
        )
        .await?;
        sweep.push(measured.point(concurrency));
    }
    let _ = client.close().await;
    let _ = service.close().await;
    Ok(RequestResult {
        size,
        latency: latency.point(1),
        sweep,
    })
}

/// Sends probes until the echo service answers.
async fn wait_ready(client: &Connection, cluster: &str, payload: &Bytes) -> Result<()> {
    let start = Instant::now();
    loop {
        match client
            .request(cluster, payload.clone(), Duration::from_millis(500))
            .await
        {
            Ok(_) => return Ok(()),
            Err(Error::Timeout) if start.elapsed() < READY_WITHIN => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(Error::Timeout) => {
                anyhow::bail!("the echo service did not answer within {READY_WITHIN:?}")
            }
            Err(e) => return Err(anyhow::Error::new(e).context("probing the echo service")),
        }
    }
}

/// How one measured operation ended (errors other than these end the phase).
pub(crate) enum Done {
    Ok,
    Timeout,
    Fault,
}

/// Keeps `concurrency` requests in flight on `client` for `duration`.
async fn phase(
    client: &Connection,
    cluster: &Arc<str>,
    payload: &Bytes,
    concurrency: usize,
    duration: Duration,
    timeout: Duration,
) -> Result<Phase> {
    let (client, cluster, payload) = (client.clone(), cluster.clone(), payload.clone());
    measure(concurrency, duration, move |_| {
        let (client, cluster, payload) = (client.clone(), cluster.clone(), payload.clone());
        async move {
            match client.request(&cluster, payload, timeout).await {
                Ok(_) => Ok(Done::Ok),
                Err(Error::Timeout) => Ok(Done::Timeout),
                Err(Error::Remote(_)) => Ok(Done::Fault),
                Err(e) => Err(e),
            }
        }
    })
    .await
}

/// One worker's latencies: appended to a buffer and moved into a histogram a batch at a
/// time. A histogram of this range and precision is about 200 KiB, and a record touches one
/// spot of it: hundreds of workers recording each time into their own missed the cache on
/// almost every record (7 % of the bench's CPU under a request flood, perf), the bench being
/// the bottleneck of what it measures.
#[derive(Default)]
struct Times {
    buf: Vec<u64>,
    hist: Option<Histogram<u64>>,
}

impl Times {
    /// Values buffered before they move into the histogram.
    const BATCH: usize = 1 << 14;

    fn record(&mut self, nanos: u64) {
        self.buf.push(nanos);
        if self.buf.len() >= Self::BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let hist = self.hist.get_or_insert_with(histogram);
        for v in self.buf.drain(..) {
            hist.saturating_record(v);
        }
    }

    /// Adds every latency to `total`.
    fn add_to(self, total: &mut Histogram<u64>) -> Result<()> {
        if let Some(hist) = &self.hist {
            total.add(hist).context("merging histograms")?;
        }
        for v in self.buf {
            total.saturating_record(v);
        }
        Ok(())
    }
}

/// Keeps `concurrency` operations (`op(n)`, `n` counting each worker's operations from a
/// distinct start) in flight for `duration`; times the successful ones.
pub(crate) async fn measure<F, Fut>(concurrency: usize, duration: Duration, op: F) -> Result<Phase>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Done, Error>> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency {
        let op = op.clone();
        tasks.spawn(async move {
            let mut times = Times::default();
            let (mut timeouts, mut faults) = (0, 0);
            let mut n = (worker as u64) << 32;
            while Instant::now() < deadline {
                let sent = Instant::now();
                n += 1;
                match op(n).await {
                    Ok(Done::Ok) => times.record(nanos(sent.elapsed()).max(1)),
                    Ok(Done::Timeout) => timeouts += 1,
                    Ok(Done::Fault) => faults += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok((times, timeouts, faults))
        });
    }
    let mut total = Phase {
        hist: histogram(),
        timeouts: 0,
        faults: 0,
        elapsed: Duration::ZERO,
    };
    let mut done = Vec::with_capacity(concurrency);
    while let Some(joined) = tasks.join_next().await {
        done.push(joined.context("bench task")?.context("operation failed")?);
    }
    // (Before merging: the phase ends with its last operation.)
    total.elapsed = start.elapsed();
    for (times, timeouts, faults) in done {
        times.add_to(&mut total.hist)?;
        total.timeouts += timeouts;
        total.faults += faults;
    }
    Ok(total)
}
