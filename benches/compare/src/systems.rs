//! The systems under comparison and how each one does the three things the workloads need:
//! answer requests, fan events out to subscribers, carry a stream of large messages.
//!
//! In every system both ends run in this process (a broker, when there is one, runs in its own
//! process): petald over relay v1 (TCP to the daemon), Petal embedded (a node in this process,
//! no socket at all), NATS (TCP to `nats-server`), Zenoh in peer mode (sessions in this process
//! connected to each other over TCP, no router) and Zenoh through a router (client sessions to a
//! router process), the shape of petald's relay path.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::workloads::Tally;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use zenoh::Wait;

/// Keeps a subscription or a responder alive while held.
pub type Guard = Box<dyn Any + Send>;

/// A system under comparison. `front` is where requesters, publishers and tunnel openers
/// attach, `back` where responders, subscribers and tunnel sinks do: the same node (broker)
/// for the one-node rows, two nodes (brokers) linked to each other for the two-node rows.
#[derive(Clone)]
pub enum Sys {
    Relay {
        front: u16,
        back: u16,
        /// The second `petald` build of an A/B run (`--petald-b`).
        b: bool,
    },
    Embedded {
        front: petal_node::LocalConnector,
        back: petal_node::LocalConnector,
        two: bool,
    },
    Nats {
        front: String,
        back: String,
    },
    ZenohPeer {
        next_port: Arc<AtomicU64>,
    },
    ZenohRouter {
        front: String,
        back: String,
    },
}

/// Every system's name, as [`Sys::name`] gives it: the one-node systems, then the two-node
/// ones (the first [`ONE_NODE`] are one-node). The `petald B` ones run only in an A/B run
/// (`--petald-b`).
pub const NAMES: [&str; 11] = [
    "petald (relay v1)",
    "Petal embedded",
    "NATS",
    "Zenoh peer",
    "Zenoh router",
    "petald B (relay v1)",
    "petald, 2 nodes",
    "Petal embedded, 2 nodes",
    "NATS, 2 servers",
    "Zenoh, 2 routers",
    "petald B, 2 nodes",
];

/// How many of [`NAMES`] are one-node systems.
pub const ONE_NODE: usize = 6;

impl Sys {
    /// True when the two ends attach to two different nodes (brokers).
    pub fn two_nodes(&self) -> bool {
        match self {
            Sys::Relay { front, back, .. } => front != back,
            Sys::Embedded { two, .. } => *two,
            Sys::Nats { front, back } | Sys::ZenohRouter { front, back } => front != back,
            Sys::ZenohPeer { .. } => false,
        }
    }

    pub fn name(&self) -> &'static str {
        match (self, self.two_nodes()) {
            (Sys::Relay { b: false, .. }, false) => NAMES[0],
            (Sys::Relay { b: true, .. }, false) => NAMES[5],
            (Sys::Embedded { .. }, false) => NAMES[1],
            (Sys::Nats { .. }, false) => NAMES[2],
            // Zenoh peers have no two-node form: every session is a node already.
            (Sys::ZenohPeer { .. }, _) => NAMES[3],
            (Sys::ZenohRouter { .. }, false) => NAMES[4],
            (Sys::Relay { b: false, .. }, true) => NAMES[6],
            (Sys::Embedded { .. }, true) => NAMES[7],
            (Sys::Nats { .. }, true) => NAMES[8],
            (Sys::ZenohRouter { .. }, true) => NAMES[9],
            (Sys::Relay { b: true, .. }, true) => NAMES[10],
        }
    }
}

/// Where a workload's Zenoh sessions meet: peer mode, a listener of the workload's own (both
/// ends); router mode, the front and back routers (one router for the one-node rows).
struct Meet {
    front: String,
    back: String,
    /// In peer mode, the listening session (the workload's first end).
    listener: Option<zenoh::Session>,
}

async fn zenoh_open(
    mode: &str,
    listen: Option<&str>,
    connect: Option<&str>,
) -> Result<zenoh::Session> {
    let mut c = zenoh::Config::default();
    let set = |c: &mut zenoh::Config, k: &str, v: &str| {
        c.insert_json5(k, v)
            .map_err(|e| anyhow::anyhow!("zenoh config {k}: {e}"))
    };
    set(&mut c, "mode", &format!("\"{mode}\""))?;
    set(&mut c, "scouting/multicast/enabled", "false")?;
    set(
        &mut c,
        "listen/endpoints",
        &match listen {
            Some(l) => format!("[\"{l}\"]"),
            None => "[]".into(),
        },
    )?;
    if let Some(e) = connect {
        set(&mut c, "connect/endpoints", &format!("[\"{e}\"]"))?;
    }
    zenoh::open(c)
        .await
        .map_err(|e| anyhow::anyhow!("zenoh open: {e}"))
}

/// Runs a Zenoh router listening on `endpoint` (and linked to the router at `connect`) until
/// the process is killed.
pub async fn zenoh_router(endpoint: &str, connect: Option<&str>) -> Result<()> {
    let _s = zenoh_open("router", Some(endpoint), connect).await?;
    eprintln!("zenoh router ready on {endpoint}");
    std::future::pending::<()>().await;
    Ok(())
}

impl Sys {
    async fn meet(&self) -> Result<Meet> {
        match self {
            Sys::ZenohPeer { next_port } => {
                let port = next_port.fetch_add(1, Ordering::Relaxed);
                let endpoint = format!("tcp/127.0.0.1:{port}");
                let listener = zenoh_open("peer", Some(&endpoint), None).await?;
                Ok(Meet {
                    front: endpoint.clone(),
                    back: endpoint,
                    listener: Some(listener),
                })
            }
            Sys::ZenohRouter { front, back } => Ok(Meet {
                front: front.clone(),
                back: back.clone(),
                listener: None,
            }),
            _ => anyhow::bail!("not Zenoh"),
        }
    }

    /// A Zenoh session meeting the others at `m` (a second end in peer mode; a client of the
    /// front or back router otherwise).
    async fn zenoh_end(&self, m: &Meet, back: bool) -> Result<zenoh::Session> {
        let at = if back { &m.back } else { &m.front };
        match self {
            Sys::ZenohPeer { .. } => zenoh_open("peer", None, Some(at)).await,
            _ => zenoh_open("client", None, Some(at)).await,
        }
    }
}

struct Echo;

impl petal_client::ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }

    fn handle_tunnel(&self, tunnel: petal_client::Tunnel) {
        // The stream workload's sink: counts what arrives.
        tokio::spawn(async move {
            while let Ok(m) = tunnel.recv().await {
                crate::workloads::TUNNEL_BYTES.fetch_add(m.len() as u64, Ordering::Relaxed);
            }
        });
    }
}

/// Something that sends requests to the echo responder.
pub enum Requester {
    Petal(petal_client::Connection),
    Nats(async_nats::Client),
    Zenoh(zenoh::Session),
}

impl Requester {
    pub async fn call(&self, payload: Bytes) -> Result<()> {
        match self {
            Requester::Petal(c) => {
                c.request("echo", payload, Duration::from_secs(10)).await?;
            }
            Requester::Nats(c) => {
                c.request("echo", payload).await?;
            }
            Requester::Zenoh(s) => {
                let replies = s
                    .get("bench/echo")
                    .payload(payload.to_vec())
                    .await
                    .map_err(|e| anyhow::anyhow!("zenoh get: {e}"))?;
                let reply = replies
                    .recv_async()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                reply
                    .result()
                    .map_err(|e| anyhow::anyhow!("zenoh reply error: {e:?}"))?;
            }
        }
        Ok(())
    }
}

/// A Petal connection at the front node, or at the back one.
async fn petal_connect(sys: &Sys, back: bool) -> Result<petal_client::Connection> {
    Ok(match sys {
        Sys::Relay { front, back: b, .. } => {
            petal_client::Connection::connect(if back { *b } else { *front }).await?
        }
        Sys::Embedded { front, back: b, .. } => {
            let local = if back { b } else { front };
            local.connect(petal_client::Options::default()).await?
        }
        _ => anyhow::bail!("not Petal"),
    })
}

/// A member of `cluster` at the back node.
async fn petal_register(sys: &Sys, cluster: &str) -> Result<petal_client::Service> {
    Ok(match sys {
        Sys::Relay { back, .. } => petal_client::register(*back, cluster, Echo).await?,
        Sys::Embedded { back, .. } => {
            back.register(petal_client::Options::default(), cluster, Echo)
                .await?
        }
        _ => anyhow::bail!("not Petal"),
    })
}

/// An echo responder and a requester for it, ready (one request answered).
pub async fn echo_pair(sys: &Sys) -> Result<(Guard, Requester)> {
    let (guard, req): (Guard, Requester) = match sys {
        Sys::Relay { .. } | Sys::Embedded { .. } => {
            let svc = petal_register(sys, "echo").await?;
            (
                Box::new(svc),
                Requester::Petal(petal_connect(sys, false).await?),
            )
        }
        Sys::Nats { front, back } => {
            let server = async_nats::connect(back.as_str()).await?;
            let mut sub = server.subscribe("echo").await?;
            let task = tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    if let Some(reply) = m.reply {
                        let _ = server.publish(reply, m.payload).await;
                    }
                }
            });
            let client = async_nats::connect(front.as_str()).await?;
            (Box::new(AbortOnDrop(task)), Requester::Nats(client))
        }
        Sys::ZenohPeer { .. } | Sys::ZenohRouter { .. } => {
            let m = sys.meet().await?;
            let responder = sys.zenoh_end(&m, true).await?;
            let q = responder
                .declare_queryable("bench/echo")
                .callback(|query| {
                    let payload = query
                        .payload()
                        .map(|p| p.to_bytes().to_vec())
                        .unwrap_or_default();
                    let _ = query.reply(query.key_expr().clone(), payload).wait();
                })
                .await
                .map_err(|e| anyhow::anyhow!("zenoh queryable: {e}"))?;
            let requester = match &m.listener {
                Some(l) => l.clone(),
                None => sys.zenoh_end(&m, false).await?,
            };
            (
                Box::new((responder, q, m.listener)),
                Requester::Zenoh(requester),
            )
        }
    };
    // Until the responder is reachable.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(
            Duration::from_millis(500),
            req.call(Bytes::from_static(b"x")),
        )
        .await
        {
            Ok(Ok(())) => break,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(Err(e)) => {
                return Err(e).context(format!("{}: the echo does not answer", sys.name()));
            }
            Err(_) => anyhow::bail!("{}: the echo does not answer", sys.name()),
        }
    }
    Ok((guard, req))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Something that publishes to the fan-out topic.
pub enum Publisher {
    Petal(petal_client::Connection),
    Nats(async_nats::Client),
    Zenoh(zenoh::pubsub::Publisher<'static>),
}

impl Publisher {
    pub async fn send(&self, payload: Bytes) -> Result<()> {
        match self {
            Publisher::Petal(c) => c.publish("fan", payload).await?,
            Publisher::Nats(c) => c.publish("fan", payload).await?,
            Publisher::Zenoh(p) => p
                .put(payload.to_vec())
                .await
                .map_err(|e| anyhow::anyhow!("zenoh put: {e}"))?,
        }
        Ok(())
    }
}

/// `subs` subscribers of the fan-out topic (each its own connection or session) counting the
/// events and bytes they get in `tally`, and a publisher.
pub async fn fanout(sys: &Sys, subs: usize, tally: Arc<Tally>) -> Result<(Guard, Publisher)> {
    let mut guards: Vec<Guard> = Vec::new();
    let count = move |n: usize| tally.count(n);
    let publisher = match sys {
        Sys::Relay { .. } | Sys::Embedded { .. } => {
            for _ in 0..subs {
                let c = petal_connect(sys, true).await?;
                let count = count.clone();
                c.subscribe("fan", move |e: Bytes| count(e.len())).await?;
                guards.push(Box::new(c));
            }
            Publisher::Petal(petal_connect(sys, false).await?)
        }
        Sys::Nats { front, back } => {
            for _ in 0..subs {
                let c = async_nats::connect(back.as_str()).await?;
                let mut sub = c.subscribe("fan").await?;
                let count = count.clone();
                let task = tokio::spawn(async move {
                    while let Some(m) = sub.next().await {
                        count(m.payload.len());
                    }
                });
                guards.push(Box::new((c, AbortOnDrop(task))));
            }
            let p = async_nats::connect(front.as_str()).await?;
            p.flush().await?;
            Publisher::Nats(p)
        }
        Sys::ZenohPeer { .. } | Sys::ZenohRouter { .. } => {
            let m = sys.meet().await?;
            for _ in 0..subs {
                let s = sys.zenoh_end(&m, true).await?;
                let count = count.clone();
                let sub = s
                    .declare_subscriber("bench/fan")
                    .callback(move |sample| count(sample.payload().len()))
                    .await
                    .map_err(|e| anyhow::anyhow!("zenoh subscriber: {e}"))?;
                guards.push(Box::new((s, sub)));
            }
            let s = match &m.listener {
                Some(l) => l.clone(),
                None => sys.zenoh_end(&m, false).await?,
            };
            let p = s
                .declare_publisher("bench/fan")
                .congestion_control(zenoh::qos::CongestionControl::Block)
                .await
                .map_err(|e| anyhow::anyhow!("zenoh publisher: {e}"))?;
            guards.push(Box::new((m.listener, s)));
            Publisher::Zenoh(p)
        }
    };
    Ok((Box::new(guards), publisher))
}

/// Opens a Petal tunnel from the front node to a member of the sink cluster at the back node
/// (whose handler drains it).
pub async fn petal_tunnel(sys: &Sys) -> Result<(Guard, petal_client::Tunnel)> {
    let svc = petal_register(sys, "sink").await?;
    let c = petal_connect(sys, false).await?;
    let t = c.tunnel("sink", Duration::from_secs(10)).await?;
    Ok((Box::new((svc, c)), t))
}
