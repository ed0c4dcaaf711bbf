//! The replicated store: put and get latency (one at a time) and throughput (a concurrency
//! sweep), on a set of keys written first. Puts go through `--port`, gets through `--port2`
//! (with two nodes, the keys' homes are spread over both: some operations cross nodes).

use std::sync::Arc;

use anyhow::Result;
use petal_client::{Connection, Error};

use super::Ctx;
use super::report::{KvBenchResult, RequestResult};
use super::request::{Done, measure};
use crate::common;

/// Keys the benchmark cycles over.
const KEYS: u64 = 1000;

/// Runs the store benchmark.
pub(crate) async fn run(ctx: &Ctx) -> Result<KvBenchResult> {
    let prefix: Arc<str> = ctx.name("kv").into();
    let size = ctx.size.unwrap_or(1);
    let value = common::payload(size);
    let writer = ctx.connect(ctx.port).await?;
    let reader = ctx.connect(ctx.port2).await?;
    ctx.progress(&format!("kv: writing {KEYS} keys"));
    for i in 0..KEYS {
        writer
            .kv_put(&key(&prefix, i), value.clone(), None, ctx.timeout)
            .await
            .map_err(|e| anyhow::Error::new(e).context("writing the benchmark's keys"))?;
    }
    let put = sweep(ctx, "put", {
        let (c, prefix, value, timeout) =
            (writer.clone(), prefix.clone(), value.clone(), ctx.timeout);
        move |n| {
            let (c, k, value) = (c.clone(), key(&prefix, n % KEYS), value.clone());
            async move { done(c.kv_put(&k, value, None, timeout).await.map(|_| ())) }
        }
    })
    .await?;
    let get = sweep(ctx, "get", {
        let (c, prefix, timeout) = (reader.clone(), prefix.clone(), ctx.timeout);
        move |n| {
            let (c, k) = (c.clone(), key(&prefix, n % KEYS));
            async move {
                match c.kv_get(&k, timeout).await {
                    Ok(Some(_)) => Ok(Done::Ok),
                    Ok(None) => Ok(Done::Fault),
                    Err(e) => done(Err(e)),
                }
            }
        }
    })
    .await?;
    for i in 0..KEYS {
        let _ = writer.kv_delete(&key(&prefix, i), ctx.timeout).await;
    }
    close(writer).await;
    close(reader).await;
    Ok(KvBenchResult { size, put, get })
}

fn key(prefix: &str, i: u64) -> String {
    format!("{prefix}-{i}")
}

/// A store call's outcome as the sweep counts it: store failures (a quorum not reached) are
/// faults; a broken connection ends the benchmark.
fn done(r: Result<(), Error>) -> Result<Done, Error> {
    match r {
        Ok(()) => Ok(Done::Ok),
        Err(Error::Timeout) => Ok(Done::Timeout),
        Err(Error::Store(_) | Error::Conflict(_)) => Ok(Done::Fault),
        Err(e) => Err(e),
    }
}

async fn close(c: Connection) {
    let _ = c.close().await;
}

/// Latency at concurrency 1, then every level of the sweep.
async fn sweep<F, Fut>(ctx: &Ctx, what: &str, op: F) -> Result<RequestResult>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Done, Error>> + Send,
{
    let secs = ctx.duration.as_secs_f64();
    ctx.progress(&format!("kv {what}: latency, concurrency 1, {secs:.1} s"));
    let latency = measure(1, ctx.duration, op.clone()).await?;
    let mut points = Vec::new();
    for &c in &ctx.concurrency {
        if c == 1 {
            points.push(latency.point(1));
            continue;
        }
        ctx.progress(&format!(
            "kv {what}: throughput, concurrency {c}, {secs:.1} s"
        ));
        points.push(measure(c, ctx.duration, op.clone()).await?.point(c));
    }
    Ok(RequestResult {
        size: ctx.size.unwrap_or(1),
        latency: latency.point(1),
        sweep: points,
    })
}
