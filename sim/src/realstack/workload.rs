//! The applications of one host, on petal-client over the host's loopback relay: a service
//! (cluster member: echo handler with an optional fault ratio, tunnel echo) and a client
//! (topic subscriber; issues requests, publishes, broadcasts and echo tunnels as Poisson
//! streams). Everything they observe goes into the shared [`Recorder`](super::record::Recorder)
//! with simulated time.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use petal_client::{Connection, Service, ServiceHandler, Tunnel};
use petal_core::{GroupKind, Time};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::WorkloadParams;
use super::record::{Shared, error_kind, gid_of, gid_payload, sim_now};
use super::script::{ScriptOp, ScriptOpKind};
use crate::apps::{AppSpec, TunnelEnd};

/// Where applications reach their node.
pub const RELAY_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
    petal_client::DEFAULT_PORT,
);

/// Name of cluster `k`.
pub fn cluster_name(k: u32) -> String {
    format!("svc-{k}")
}

/// Name of topic `k`.
pub fn topic_name(k: u32) -> String {
    format!("topic-{k}")
}

/// What the applications of one host incarnation know.
#[derive(Clone)]
pub(super) struct AppCtx {
    pub shared: Shared,
    pub params: Arc<WorkloadParams>,
    /// Hosts in the run (rates are divided among them).
    pub nodes: u32,
    pub host: u32,
    /// Seed of this incarnation's draws.
    pub seed: u64,
    /// The workload's window, simulated time since the start.
    pub work_from: Time,
    pub work_until: Time,
}

/// Requests a service handles at once (petal-client's handler pool; more wait in its queue).
pub const REQUEST_HANDLERS: u32 = 16;

/// Bounded client options that do not depend on the machine (the defaults scale with its
/// CPU count).
fn client_options() -> petal_client::Options {
    let mut o = petal_client::Options::default();
    o.request_handlers = REQUEST_HANDLERS as usize;
    o.broadcast_handlers = 4;
    o.event_handlers = 4;
    o.tunnel_buffer = 4 << 20;
    o
}

/// A 64-bit mix of `x` (splitmix64's finaliser): per-request draws that do not depend on the
/// order in which handlers run.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The service's handler: echo with a fault ratio; tunnels echoed.
struct Echo {
    ctx: AppCtx,
    app: usize,
}

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        let gid = gid_of(&request);
        self.ctx.shared.with(|r| r.request_delivered(gid, self.app));
        let gid = gid.unwrap_or(u64::MAX);
        let p = &self.ctx.params;
        let h = mix(self.ctx.seed ^ mix(gid));
        let span = p.service_ms[1] - p.service_ms[0] + 1;
        let service_ms = p.service_ms[0] + (h >> 32) % span;
        tokio::time::sleep(Duration::from_millis(service_ms)).await;
        let u = (h & 0xffff_ffff) as f64 / 4_294_967_296.0;
        if u < p.fault_ratio {
            Err(format!("fault {gid}"))
        } else {
            Ok(gid_payload(gid, 8))
        }
    }

    fn handle_broadcast(&self, message: Bytes) {
        let now = sim_now();
        self.ctx
            .shared
            .with(|r| r.event_delivered(&message, self.app, now));
    }

    fn handle_tunnel(&self, tunnel: Tunnel) {
        tokio::spawn(echo_tunnel(
            tunnel,
            self.ctx.clone(),
            self.app,
            Duration::from_millis(self.ctx.params.tunnel_timeout_ms),
        ));
    }

    fn handle_drop(&self, reason: String) {
        let now = sim_now();
        self.ctx.shared.with(|r| {
            r.error(format!("service connection dropped: {reason}"));
            r.app_gone(self.app, now);
        });
    }
}

/// The accepting end of a tunnel: every message goes back as it came, until the opener closes.
async fn echo_tunnel(tunnel: Tunnel, ctx: AppCtx, app: usize, timeout: Duration) {
    let mut first = true;
    loop {
        match tunnel.recv().await {
            Ok(m) => {
                if let Some(rec) = gid_of(&m) {
                    ctx.shared.with(|r| {
                        if let Some(t) = r.apps.tunnels.get_mut(crate::to_usize(rec)) {
                            t.acceptor.get_or_insert(app);
                            // Each accepted tunnel counts once, on its first message: a
                            // record with two acceptor ends was opened twice.
                            t.acceptors += u32::from(first);
                        }
                    });
                }
                first = false;
                if tunnel.send(m, timeout).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Connects to the local relay over the simulated loopback.
async fn dial() -> Result<turmoil::net::TcpStream, petal_client::Error> {
    Ok(turmoil::net::TcpStream::connect(RELAY_ADDR).await?)
}

/// Pause between attempts to attach to the node.
const ATTACH_RETRY: Duration = Duration::from_millis(250);

/// Attaches with `attach` until the node accepts; counts the refusals (a node not listening
/// for applications yet, as while it restarts: a node that listens holds an attach made
/// before it has joined, and answers it once it has started). The application's record
/// starts when it is attached.
async fn attach<T, F, Fut>(ctx: &AppCtx, app: usize, what: &str, attach: F) -> T
where
    F: Fn(turmoil::net::TcpStream) -> Fut,
    Fut: Future<Output = Result<T, petal_client::Error>>,
{
    loop {
        let result = match dial().await {
            Ok(s) => attach(s).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(t) => {
                let now = sim_now();
                ctx.shared.with(|r| r.apps.list[app].since = now);
                return t;
            }
            Err(e) => {
                ctx.shared
                    .with(|r| r.retry(format!("{what} refused, retried: {}", error_kind(&e))));
                tokio::time::sleep(ATTACH_RETRY).await;
            }
        }
    }
}

/// Starts the service of this host (retrying until the node accepts it).
pub(super) async fn start_service(ctx: &AppCtx) -> (Service, usize) {
    let cluster = cluster_name(ctx.host % ctx.params.clusters);
    let spec = AppSpec {
        fault_ratio: ctx.params.fault_ratio,
        ..AppSpec::member(&cluster, ctx.params.service_ms[0] * 1000)
    };
    let app = ctx.shared.with(|r| r.add_app(ctx.host, spec));
    let handler = Arc::new(Echo {
        ctx: ctx.clone(),
        app,
    });
    let service = attach(ctx, app, "service registration", |s| {
        client_options().register_stream(s, &cluster, handler.clone())
    })
    .await;
    (service, app)
}

/// The topics a host's client subscribes to: each with probability `subscribe_ratio`, drawn
/// from the host's workload generator (before its streams' draws).
pub(super) fn draw_topics(params: &WorkloadParams, rng: &mut ChaCha8Rng) -> Vec<u32> {
    (0..params.topics)
        .filter(|_| rng.random_bool(params.subscribe_ratio))
        .collect()
}

/// Starts the client of this host (retrying until the node accepts it) and its
/// subscriptions to `topics`.
pub(super) async fn start_client(ctx: &AppCtx, topics: &[u32]) -> (Connection, usize) {
    let app = ctx.shared.with(|r| r.add_app(ctx.host, AppSpec::client()));
    let conn = attach(ctx, app, "client connection", |s| {
        client_options().connect_stream(s)
    })
    .await;
    for &t in topics {
        let topic = topic_name(t);
        let shared = ctx.shared.clone();
        let handler = move |event: Bytes| {
            let now = sim_now();
            shared.with(|r| r.event_delivered(&event, app, now));
        };
        match conn.subscribe(&topic, handler).await {
            Ok(()) => {
                let now = sim_now();
                ctx.shared.with(|r| {
                    r.apps.list[app].topics.insert(topic, now);
                });
            }
            Err(e) => ctx
                .shared
                .with(|r| r.error(format!("subscribe: {}", error_kind(&e)))),
        }
    }
    (conn, app)
}

/// Seconds to the next arrival of a Poisson stream of `rate` per second.
fn exp_gap(rng: &mut ChaCha8Rng, rate: f64) -> Duration {
    if rate <= 0.0 {
        return Duration::MAX;
    }
    let u: f64 = rng.random();
    Duration::from_secs_f64((-(1.0 - u).ln() / rate).min(1e9))
}

/// Sleeps until simulated time `t`.
async fn sleep_until(t: Time) {
    let now = sim_now();
    if t > now {
        tokio::time::sleep(t - now).await;
    }
}

/// The client's streams: requests, publishes, broadcasts, tunnels, each Poisson at its share
/// of the network's rate, from the start of the workload (or from now, after a restart) to
/// its end.
pub(super) async fn drive(ctx: AppCtx, conn: Connection, app: usize, mut rng: ChaCha8Rng) {
    let p = ctx.params.clone();
    let n = f64::from(ctx.nodes.max(1));
    let rates = [
        p.requests_per_s / n,
        p.publishes_per_s / n,
        p.broadcasts_per_s / n,
        p.tunnels_per_s / n,
    ];
    let base = ctx.work_from.max(sim_now());
    let mut next: Vec<Time> = rates.iter().map(|&r| base + exp_gap(&mut rng, r)).collect();
    loop {
        let Some((k, t)) = next
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(k, t)| (t, k))
        else {
            return;
        };
        if t >= ctx.work_until {
            return;
        }
        sleep_until(t).await;
        if conn.is_closed() {
            return;
        }
        match k {
            0 => {
                let cluster = cluster_name(rng.random_range(0..p.clusters));
                request(&ctx, &conn, app, cluster);
            }
            1 => {
                let topic = topic_name(rng.random_range(0..p.topics.max(1)));
                cast(&ctx, &conn, GroupKind::Topic, topic).await;
            }
            2 => {
                let cluster = cluster_name(rng.random_range(0..p.clusters));
                cast(&ctx, &conn, GroupKind::Cluster, cluster).await;
            }
            _ => {
                let cluster = cluster_name(rng.random_range(0..p.clusters));
                tokio::spawn(open_tunnel(ctx.clone(), conn.clone(), app, cluster));
            }
        }
        next[k] = t + exp_gap(&mut rng, rates[k]);
    }
}

/// The client's operations from a [`Script`](super::Script): each at its time (from the start
/// of the run), in order.
pub(super) async fn drive_script(ctx: AppCtx, conn: Connection, app: usize, ops: Vec<ScriptOp>) {
    for op in ops {
        sleep_until(Time::ZERO + op.at).await;
        if conn.is_closed() {
            return;
        }
        match op.kind {
            ScriptOpKind::Request(k) => request(&ctx, &conn, app, cluster_name(k)),
            ScriptOpKind::Publish(k) => cast(&ctx, &conn, GroupKind::Topic, topic_name(k)).await,
            ScriptOpKind::Broadcast(k) => {
                cast(&ctx, &conn, GroupKind::Cluster, cluster_name(k)).await;
            }
        }
    }
}

/// Issues one request; its outcome is recorded by a task of its own.
fn request(ctx: &AppCtx, conn: &Connection, app: usize, cluster: String) {
    let p = &ctx.params;
    let gid = ctx
        .shared
        .with(|r| r.request_issued(app, p.request_timeout_ms, sim_now()));
    let payload = gid_payload(gid, p.request_size);
    let timeout = Duration::from_millis(p.request_timeout_ms);
    let (conn, shared) = (conn.clone(), ctx.shared.clone());
    tokio::spawn(async move {
        let result = conn.request(&cluster, payload, timeout).await;
        let now = sim_now();
        shared.with(|r| r.request_done(gid, result, now));
    });
}

/// Publishes one event (topic) or broadcasts one message (cluster).
async fn cast(ctx: &AppCtx, conn: &Connection, kind: GroupKind, name: String) {
    let gid = ctx
        .shared
        .with(|r| r.event_published(kind, &name, ctx.host, sim_now()));
    let payload = gid_payload(gid, ctx.params.event_size);
    let sent = match kind {
        GroupKind::Topic => conn.publish(&name, payload).await,
        GroupKind::Cluster => conn.broadcast(&name, payload).await,
    };
    if let Err(e) = sent {
        ctx.shared
            .with(|r| r.error(format!("publish or broadcast: {}", error_kind(&e))));
    }
}

/// Message `k` of tunnel `rec`: its ids, then bytes that depend on both and on the offset.
#[expect(
    clippy::cast_possible_truncation,
    reason = "a byte pattern: keeping the low 8 bits is the point"
)]
fn tunnel_message(rec: usize, k: u32, size: usize) -> Bytes {
    let mut v = vec![0u8; size.max(12)];
    v[..8].copy_from_slice(&(rec as u64).to_be_bytes());
    v[8..12].copy_from_slice(&k.to_be_bytes());
    for (i, b) in v.iter_mut().enumerate().skip(12) {
        *b = (rec as u64 * 31 + u64::from(k) * 7 + i as u64) as u8;
    }
    Bytes::from(v)
}

/// Opens a tunnel to `cluster`, sends its messages while checking the echoes in order, and
/// closes it; records how it ended.
async fn open_tunnel(ctx: AppCtx, conn: Connection, app: usize, cluster: String) {
    let p = ctx.params.clone();
    let rec = ctx
        .shared
        .with(|r| r.tunnel_opened(app, p.tunnel_messages, p.tunnel_size, sim_now()));
    let timeout = Duration::from_millis(p.tunnel_timeout_ms);
    let end = |ctx: &AppCtx, end: TunnelEnd| {
        let now = sim_now();
        ctx.shared.with(|r| {
            let t = &mut r.apps.tunnels[rec];
            if t.end == TunnelEnd::Running {
                t.end = end;
                t.end_at = Some(now);
            }
        });
    };
    let tunnel = match conn.tunnel(&cluster, timeout).await {
        Ok(t) => {
            let now = sim_now();
            ctx.shared.with(|r| {
                r.apps.tunnels[rec].confirms += 1;
                r.apps.tunnel_progress[rec] = now;
            });
            t
        }
        Err(petal_client::Error::Timeout) => return end(&ctx, TunnelEnd::OpenFailed),
        Err(e) => return end(&ctx, TunnelEnd::Failed(format!("open: {}", error_kind(&e)))),
    };
    let sender = async {
        for k in 0..p.tunnel_messages {
            tunnel
                .send(tunnel_message(rec, k, p.tunnel_size), timeout)
                .await?;
        }
        Ok::<(), petal_client::Error>(())
    };
    let receiver = async {
        for k in 0..p.tunnel_messages {
            let m = tunnel.recv().await?;
            let good = m == tunnel_message(rec, k, p.tunnel_size);
            let now = sim_now();
            ctx.shared.with(|r| {
                let t = &mut r.apps.tunnels[rec];
                t.corrupt |= !good;
                if good {
                    t.echoed = k + 1;
                    r.apps.tunnel_progress[rec] = now;
                }
            });
            if !good {
                return Err(petal_client::Error::Invalid("echo mismatch"));
            }
        }
        Ok(())
    };
    let (sent, received) = tokio::join!(sender, receiver);
    match sent.and(received) {
        Ok(()) => {
            end(&ctx, TunnelEnd::Completed);
            if let Err(e) = tunnel.close().await {
                ctx.shared
                    .with(|r| r.error(format!("tunnel close: {}", error_kind(&e))));
            }
        }
        Err(e) => end(&ctx, TunnelEnd::Failed(error_kind(&e))),
    }
}
