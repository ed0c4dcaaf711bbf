//! `petal bench`: latency and throughput of the local node (or of two nodes), measured with
//! the client library, against services, subscribers and tunnel acceptors this command starts
//! itself.
//!
//! One process plays both ends: the measuring client connects to `--port`, the receiving end
//! (echo service, broadcast receiver, subscriber, tunnel acceptor) to `--port2` (default: the
//! same port). With one node every message goes app -> node -> app; with two, app -> node ->
//! node -> app. Both ends share this machine's CPUs with the node(s): the figures are what an
//! application on the same machine gets, not the node's capacity alone.

mod fanout;
mod gateway;
mod kv;
mod report;
mod request;
mod tunnel;

use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;

use report::Report;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum What {
    /// Request/reply to an echo service: latency at concurrency 1, throughput over a sweep.
    Request,
    /// Broadcast to a cluster of one receiver: deliveries per second, single-message latency.
    Broadcast,
    /// Publish to a topic with one subscriber: deliveries per second, single-message latency.
    Publish,
    /// One tunnel, one way: bytes per second.
    Tunnel,
    /// All of the above, one after the other.
    All,
    /// The replicated store: put and get latency and throughput (not part of `all`).
    Kv,
    /// The HTTP gateway (`--gateway ADDR`) against relay v1: requests and WebSocket events
    /// (not part of `all`).
    Gateway,
}

/// Flags of `petal bench`.
#[derive(Args, Debug)]
#[command(after_help = "\
Phases (each lasts --duration-s unless said otherwise):
  request    latency: one request at a time (concurrency 1): p50/p90/p99/p99.9/max in µs;
             throughput: for each --concurrency level (requests in flight at once on one
             connection), requests/s; the best level is reported. A level of 1 reuses the
             latency phase.
  broadcast  latency: one message at a time, each waited for at the receiver (for 1/5 of
  publish    --duration-s); throughput: the sender sends as fast as it can while at most
             --window messages are undelivered (the receiver is in this process and counts
             deliveries; a window that makes no progress for 200 ms is written off as lost);
             delivered/s = deliveries / (first send .. last delivery). Sent/s and lost
             messages (sent - delivered: delivery is best effort and nodes drop under
             overload) are reported too. --window 0 floods without any window.
  tunnel     one tunnel, one way, --size bytes per message (default 64 KiB): MB/s (10^6 bytes
             per second) received by the acceptor during the phase, after 0.5 s of warm-up.
  gateway    the HTTP gateway at --gateway (a petald started with --gateway ADDR, no tokens):
             for each --concurrency level, requests/s and p50/p99 over keep-alive HTTP/1.1
             (one connection per request in flight), then the same over relay v1; then
             events/s to one WebSocket subscriber and to one relay-v1 subscriber from one
             publisher (at most --window undelivered). JSON. Not part of `all`.
  kv         the replicated store: 1000 keys written first, then puts through --port and gets
             through --port2, each like requests: latency at concurrency 1 and the sweep
             (operations/s); store failures count as faults. Not part of `all`.
Two nodes: start a second petald seeded with the first one and pass its relay port as
--port2; the receiving ends connect there, the sender to --port.")]
pub(crate) struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    what: What,
    /// Length of each measuring phase, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Payload bytes per message [default: 1; 65536 for tunnels].
    #[arg(long)]
    size: Option<usize>,
    /// Concurrency levels of the request throughput sweep (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,128")]
    concurrency: Vec<usize>,
    /// Relay port of a second node for the receiving ends (default: --port).
    #[arg(long)]
    port2: Option<u16>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Broadcast/publish: most messages sent and not yet delivered (0: no limit, a flood).
    #[arg(long, default_value_t = 1000)]
    window: u64,
    /// Timeout of each request, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// The gateway's address (`petald --gateway`), for `gateway`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    gateway: String,
    /// Brokerless mode: run a node in this process and attach every client and service to it
    /// in memory (no petald, no sockets, no relay codec); --port and --port2 are ignored.
    #[arg(long, conflicts_with = "port2")]
    embedded: bool,
}

/// Settings every benchmark reads.
pub(crate) struct Ctx {
    /// Relay port of the sending client.
    pub(crate) port: u16,
    /// Relay port of the receiving end.
    pub(crate) port2: u16,
    /// Length of a measuring phase.
    pub(crate) duration: Duration,
    /// Payload size, if given.
    pub(crate) size: Option<usize>,
    /// Request concurrency levels.
    pub(crate) concurrency: Vec<usize>,
    /// Request timeout.
    pub(crate) timeout: Duration,
    /// Broadcast/publish flow window (0: none).
    pub(crate) window: u64,
    /// The node in this process every end attaches to (`--embedded`).
    pub(crate) local: Option<petal_node::LocalConnector>,
}

impl Ctx {
    /// A cluster or topic name unique to this run.
    pub(crate) fn name(&self, what: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("petal-bench-{what}-{}-{nanos}", std::process::id())
    }

    /// A plain client of the node at `port` (or of the embedded node).
    pub(crate) async fn connect(&self, port: u16) -> Result<petal_client::Connection> {
        match &self.local {
            Some(l) => Ok(l.connect(petal_client::Options::default()).await?),
            None => crate::common::connect(port).await,
        }
    }

    /// A member of `cluster` at the node at `port` (or at the embedded node).
    pub(crate) async fn register<H: petal_client::ServiceHandler>(
        &self,
        port: u16,
        cluster: &str,
        handler: H,
    ) -> Result<petal_client::Service> {
        match &self.local {
            Some(l) => Ok(l
                .register(petal_client::Options::default(), cluster, handler)
                .await?),
            None => crate::common::register(port, cluster, handler).await,
        }
    }

    /// Reports progress on stderr (stdout is for the results).
    pub(crate) fn progress(&self, what: &str) {
        eprintln!("petal bench: {what}");
    }
}

/// A histogram of nanoseconds, up to a minute, three significant digits.
#[expect(
    clippy::expect_used,
    reason = "constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, 3 digits)"
)]
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Nanoseconds of `d`, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `petal bench`.
pub(crate) async fn bench(port: u16, args: BenchArgs) -> Result<()> {
    if !(args.duration_s > 0.0 && args.duration_s.is_finite()) {
        anyhow::bail!("--duration-s must be positive");
    }
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        anyhow::bail!("--concurrency needs levels of at least 1");
    }
    if args.embedded && args.what == What::Gateway {
        anyhow::bail!("--embedded measures applications attached in memory: not the gateway");
    }
    let node = if args.embedded {
        Some(embedded_node().await?)
    } else {
        None
    };
    let ctx = Ctx {
        local: node.as_ref().map(petal_node::NodeHandle::local_connector),
        port,
        port2: args.port2.unwrap_or(port),
        duration: Duration::from_secs_f64(args.duration_s),
        size: args.size,
        concurrency: args.concurrency.clone(),
        timeout: Duration::from_millis(args.timeout_ms),
        window: args.window,
    };
    if args.what == What::Gateway {
        let r = gateway::run(&ctx, &args.gateway).await?;
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let mut report = Report::new(&ctx, args.duration_s);
    let all = args.what == What::All;
    if all || args.what == What::Request {
        report.request = Some(request::run(&ctx).await?);
    }
    if all || args.what == What::Broadcast {
        report.broadcast = Some(fanout::run(&ctx, fanout::Kind::Broadcast).await?);
    }
    if all || args.what == What::Publish {
        report.publish = Some(fanout::run(&ctx, fanout::Kind::Publish).await?);
    }
    if all || args.what == What::Tunnel {
        report.tunnel = Some(tunnel::run(&ctx).await?);
    }
    if args.what == What::Kv {
        report.kv = Some(kv::run(&ctx).await?);
    }
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if let Some(node) = node {
        node.shutdown().await;
    }
    Ok(())
}

/// A node of its own in this process, without a relay listener, ready.
async fn embedded_node() -> Result<petal_node::NodeHandle> {
    let key = petal_node::NetworkKey::random()?;
    let identity = petal_node::Identity::generate()?;
    let mut o = petal_node::Options::new(identity, petal_node::LinkSecurity::Noise(key));
    o.relay_addrs = Vec::new();
    let node = petal_node::spawn(petal_node::TokioNet, o).await?;
    anyhow::ensure!(
        node.wait_ready(Duration::from_secs(5)).await,
        "the embedded node did not start"
    );
    Ok(node)
}
