//! `petal bench gateway --gateway ADDR`: the HTTP gateway against relay v1, in one run, on
//! one node: request/reply over keep-alive HTTP/1.1 (one connection per request in flight)
//! and over relay v1 (one connection, requests multiplexed), to the same echo service; then
//! events per second to one WebSocket subscriber and to one relay-v1 subscriber, from one
//! relay-v1 publisher (at most `--window` events undelivered).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use petal_client::{Error, ServiceHandler};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Ctx;
use super::report::SweepPoint;
use super::request::{Done, measure};
use crate::common;

struct Echo;

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }
}

/// One keep-alive HTTP/1.1 connection to the gateway.
struct Http {
    r: BufReader<TcpStream>,
    /// The `Host` header's value: the gateway's address.
    host: String,
}

impl Http {
    async fn connect(addr: &str) -> std::io::Result<Http> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Http {
            r: BufReader::new(s),
            host: addr.to_string(),
        })
    }

    /// POSTs `body` to `path`; the status.
    async fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<u16> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.r.get_mut().write_all(&req).await?;
        let mut line = String::new();
        self.r.read_line(&mut line).await?;
        let status = line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut len = 0usize;
        loop {
            line.clear();
            if self.r.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().map_err(std::io::Error::other)?;
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await?;
        Ok(status)
    }
}

/// Runs the gateway benchmark against the gateway at `gateway`.
pub(crate) async fn run(ctx: &Ctx, gateway: &str) -> Result<Value> {
    let cluster = ctx.name("gw-echo");
    let payload = common::payload(ctx.size.unwrap_or(1));
    let _svc = petal_client::register(ctx.port2, &cluster, Echo)
        .await
        .context("registering the echo service")?;
    let client = common::connect(ctx.port).await?;
    // Until the membership is in place.
    client
        .request(&cluster, payload.clone(), Duration::from_secs(5))
        .await
        .context("the echo service does not answer")?;
    let path: Arc<str> = format!("/v1/clusters/{cluster}/request").into();
    let mut http_points = Vec::new();
    let mut relay_points = Vec::new();
    for &c in &ctx.concurrency {
        ctx.progress(&format!("gateway: HTTP requests, {c} in flight"));
        let pool: Arc<tokio::sync::Mutex<Vec<Http>>> = Arc::default();
        let (gw, path, body) = (Arc::<str>::from(gateway), path.clone(), payload.clone());
        let http = measure(c, ctx.duration, move |_| {
            let (pool, gw, path, body) = (pool.clone(), gw.clone(), path.clone(), body.clone());
            async move {
                let conn = pool.lock().await.pop();
                let mut conn = match conn {
                    Some(c) => c,
                    None => Http::connect(&gw).await?,
                };
                let status = conn.post(&path, &body).await?;
                pool.lock().await.push(conn);
                Ok::<_, Error>(match status {
                    200 => Done::Ok,
                    504 => Done::Timeout,
                    _ => Done::Fault,
                })
            }
        })
        .await?;
        http_points.push(http.point(c));
        ctx.progress(&format!("gateway: relay v1 requests, {c} in flight"));
        let (cl, cluster2, body, t) = (
            client.clone(),
            cluster.clone(),
            payload.clone(),
            ctx.timeout,
        );
        let relay = measure(c, ctx.duration, move |_| {
            let (cl, cluster2, body) = (cl.clone(), cluster2.clone(), body.clone());
            async move {
                match cl.request(&cluster2, body, t).await {
                    Ok(_) => Ok(Done::Ok),
                    Err(Error::Timeout) => Ok(Done::Timeout),
                    Err(Error::Remote(_)) => Ok(Done::Fault),
                    Err(e) => Err(e),
                }
            }
        })
        .await?;
        relay_points.push(relay.point(c));
    }
    let ws = events(ctx, gateway, true).await?;
    let relay_events = events(ctx, gateway, false).await?;
    let _ = client.close().await;
    let row = |p: &SweepPoint| {
        json!({"concurrency": p.concurrency, "requests_per_s": p.requests_per_s.round(),
               "p50_us": p.latency.p50_us, "p99_us": p.latency.p99_us,
               "timeouts": p.timeouts, "faults": p.faults})
    };
    Ok(json!({
        "gateway": gateway,
        "size_bytes": payload.len(),
        "duration_s": ctx.duration.as_secs_f64(),
        "http_requests": http_points.iter().map(row).collect::<Vec<_>>(),
        "relay_requests": relay_points.iter().map(row).collect::<Vec<_>>(),
        "websocket_events_per_s": ws.round(),
        "relay_events_per_s": relay_events.round(),
    }))
}

/// Events per second to one subscriber (a WebSocket through the gateway, or relay v1) from
/// one relay-v1 publisher keeping at most `ctx.window` events undelivered.
async fn events(ctx: &Ctx, gateway: &str, websocket: bool) -> Result<f64> {
    let topic = ctx.name(if websocket { "gw-ws" } else { "gw-relay" });
    let got = Arc::new(AtomicU64::new(0));
    let publisher = common::connect(ctx.port).await?;
    let mut _sub_conn = None;
    let reader = if websocket {
        let url = format!("ws://{gateway}/v1/topics/{topic}/events");
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .context("opening the WebSocket")?;
        let got = got.clone();
        Some(tokio::spawn(async move {
            while let Some(Ok(_)) = ws.next().await {
                got.fetch_add(1, Ordering::Relaxed);
            }
        }))
    } else {
        let sub = common::connect(ctx.port2).await?;
        let g = got.clone();
        sub.subscribe(&topic, move |_: Bytes| {
            g.fetch_add(1, Ordering::Relaxed);
        })
        .await?;
        _sub_conn = Some(sub);
        None
    };
    ctx.progress(&format!(
        "gateway: events to one {} subscriber",
        if websocket { "WebSocket" } else { "relay v1" }
    ));
    let event = common::payload(ctx.size.unwrap_or(1));
    // Until the subscription is in place.
    let ready = Instant::now() + Duration::from_secs(5);
    while got.load(Ordering::Relaxed) == 0 {
        anyhow::ensure!(Instant::now() < ready, "the subscriber hears nothing");
        publisher.publish(&topic, event.clone()).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let window = if ctx.window == 0 {
        u64::MAX
    } else {
        ctx.window
    };
    let (start, base) = (Instant::now(), got.load(Ordering::Relaxed));
    let mut sent = 0u64;
    while start.elapsed() < ctx.duration {
        if sent.saturating_sub(got.load(Ordering::Relaxed) - base) >= window {
            tokio::task::yield_now().await;
            continue;
        }
        publisher.publish(&topic, event.clone()).await?;
        sent += 1;
    }
    let rate = (got.load(Ordering::Relaxed) - base) as f64 / start.elapsed().as_secs_f64();
    if let Some(r) = reader {
        r.abort();
    }
    let _ = publisher.close().await;
    Ok(rate)
}
