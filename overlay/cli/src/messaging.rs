//! `petal request`, `broadcast`, `publish` and `subscribe`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use petal_client::{Connection, Error};
use tokio::sync::Notify;

use crate::common::{self, Failure};

/// Flags of `petal request`.
#[derive(Args, Debug)]
#[command(
    after_help = "The reply is written to stdout as is (a newline is added only when \
                        stdout is a terminal and the reply does not end with one). Exit codes: \
                        0 reply, 2 fault (its text on stderr), 3 timeout, 1 other errors."
)]
pub(crate) struct RequestArgs {
    /// Cluster to ask (one of its members answers, chosen by the node).
    cluster: String,
    /// The request; read from stdin (to its end) when absent.
    message: Option<String>,
    /// Time the node allows for the reply, in milliseconds (enforced by the node).
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

/// Flags of `petal broadcast` and `petal publish`.
#[derive(Args, Debug)]
pub(crate) struct SendArgs {
    /// Cluster (broadcast) or topic (publish) to send to.
    target: String,
    /// The message; read from stdin (to its end) when absent.
    message: Option<String>,
}

/// Flags of `petal subscribe`.
#[derive(Args, Debug)]
#[command(
    after_help = "Each event is printed on its own line as `topic: payload` (the payload \
                        as UTF-8, invalid bytes replaced). Events of one topic are printed in \
                        the order they arrive."
)]
pub(crate) struct SubscribeArgs {
    /// Topics to subscribe to.
    #[arg(required = true)]
    topics: Vec<String>,
    /// Print only the payloads' bytes, exactly as received: no topic, no separator, no newline.
    #[arg(long)]
    raw: bool,
    /// Exit after this many events (in total over all topics); default: run until Ctrl-C.
    #[arg(long)]
    count: Option<u64>,
}

/// `petal request`.
pub(crate) async fn request(port: u16, args: RequestArgs) -> Result<()> {
    let message = common::message_or_stdin(args.message).await?;
    let conn = common::connect(port).await?;
    let outcome = conn
        .request(
            &args.cluster,
            message,
            Duration::from_millis(args.timeout_ms),
        )
        .await;
    let _ = conn.close().await;
    match outcome {
        Ok(reply) => {
            common::write_stdout(&reply).context("writing the reply")?;
            if std::io::stdout().is_terminal() && !reply.ends_with(b"\n") {
                common::write_stdout(b"\n")?;
            }
            Ok(())
        }
        Err(Error::Remote(fault)) => Err(Failure::Fault(fault).into()),
        Err(Error::Timeout) => Err(Failure::Timeout(format!(
            "request to {:?} ({} ms)",
            args.cluster, args.timeout_ms
        ))
        .into()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("request to {:?}", args.cluster))),
    }
}

/// `petal broadcast`.
pub(crate) async fn broadcast(port: u16, args: SendArgs) -> Result<()> {
    let message = common::message_or_stdin(args.message).await?;
    let conn = common::connect(port).await?;
    conn.broadcast(&args.target, message)
        .await
        .with_context(|| format!("broadcast to {:?}", args.target))?;
    // CLOSE goes after the broadcast, and the node acknowledges it once it handled both.
    conn.close().await.context("closing the connection")?;
    Ok(())
}

/// `petal publish`.
pub(crate) async fn publish(port: u16, args: SendArgs) -> Result<()> {
    let message = common::message_or_stdin(args.message).await?;
    let conn = common::connect(port).await?;
    conn.publish(&args.target, message)
        .await
        .with_context(|| format!("publish to {:?}", args.target))?;
    conn.close().await.context("closing the connection")?;
    Ok(())
}

/// Prints events and counts them, for `petal subscribe`.
struct Printer {
    raw: bool,
    count: Option<u64>,
    seen: AtomicU64,
    /// Set when stdout is gone (e.g. a closed pipe).
    broken: AtomicBool,
    /// Notified once `count` events were printed or stdout broke.
    done: Notify,
}

impl Printer {
    fn event(&self, topic: &str, event: &Bytes) {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if self.count.is_some_and(|count| n > count) {
            return;
        }
        let written = if self.raw {
            common::write_stdout(event)
        } else {
            let line = format!("{topic}: {}\n", String::from_utf8_lossy(event));
            common::write_stdout(line.as_bytes())
        };
        if written.is_err() {
            self.broken.store(true, Ordering::Relaxed);
            self.done.notify_one();
        } else if self.count == Some(n) {
            self.done.notify_one();
        }
    }
}

/// `petal subscribe`.
pub(crate) async fn subscribe(port: u16, args: SubscribeArgs) -> Result<()> {
    if args.count == Some(0) {
        return Ok(());
    }
    // One handler at a time per subscription: events of a topic are printed in order.
    let mut options = petal_client::Options::default();
    options.event_handlers = 1;
    let conn = common::connect_with(port, options).await?;
    let printer = Arc::new(Printer {
        raw: args.raw,
        count: args.count,
        seen: AtomicU64::new(0),
        broken: AtomicBool::new(false),
        done: Notify::new(),
    });
    for topic in &args.topics {
        let printer = printer.clone();
        let name = topic.clone();
        conn.subscribe(topic, move |event: Bytes| printer.event(&name, &event))
            .await
            .with_context(|| format!("subscribing to {topic:?}"))?;
    }
    eprintln!("petal: subscribed to {}", args.topics.join(", "));
    tokio::select! {
        biased;
        _ = common::interrupted() => {}
        _ = printer.done.notified() => {}
        _ = ended(&conn) => {
            anyhow::bail!("the node closed the connection");
        }
    }
    let _ = conn.close().await;
    if printer.broken.load(Ordering::Relaxed) {
        anyhow::bail!("stdout closed");
    }
    Ok(())
}

/// Completes when the connection has ended (the node closed it or it broke).
pub(crate) async fn ended(conn: &Connection) {
    while !conn.is_closed() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
