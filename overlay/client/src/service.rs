//! Services: connections that are members of a cluster and handle its requests, broadcasts and
//! tunnels.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use petal_protocol::relay::ClientPacket;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::conn::{Connection, dial, dial_addr};
use crate::error::Error;
use crate::options::Options;
use crate::pool::{Job, Pool, Submit};
use crate::stats::Counters;
use crate::transport::{PacketSink, PacketSource, Writer};
use crate::tunnel::Tunnel;

/// The application side of a service: what the library calls for deliveries to its cluster.
///
/// Requests run on tokio tasks, at most [`Options::request_handlers`] at once; broadcasts
/// likewise with their own bound. The synchronous methods run on a runtime worker thread: keep
/// them short, or hand the work to a task ([`tokio::spawn`], `spawn_blocking`).
///
/// ```
/// use bytes::Bytes;
/// use petal_client::{ServiceHandler, Tunnel};
///
/// struct Echo;
///
/// impl ServiceHandler for Echo {
///     async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
///         if request.is_empty() { Err("empty request".to_owned()) } else { Ok(request) }
///     }
///
///     fn handle_tunnel(&self, tunnel: Tunnel) {
///         tokio::spawn(async move {
///             while let Ok(message) = tunnel.recv().await {
///                 let timeout = std::time::Duration::from_secs(10);
///                 if tunnel.send(message, timeout).await.is_err() {
///                     break;
///                 }
///             }
///         });
///     }
/// }
/// ```
pub trait ServiceHandler: Send + Sync + 'static {
    /// Answers a request sent to the cluster: `Ok` is the reply, `Err` the fault text the
    /// requester gets as [`Error::Remote`]. A request whose timeout passed while it was queued
    /// is skipped; a late answer is discarded by the node.
    fn handle_request(&self, request: Bytes) -> impl Future<Output = Result<Bytes, String>> + Send;

    /// Handles a message broadcast to the cluster. The default ignores it.
    fn handle_broadcast(&self, message: Bytes) {
        let _ = message;
    }

    /// Takes a tunnel a remote application opened to the cluster. The default drops it, which
    /// closes it.
    fn handle_tunnel(&self, tunnel: Tunnel) {
        drop(tunnel);
    }

    /// Called once when the connection breaks or the node closes it (with the reason), but not
    /// after a [`close`](Connection::close) by this side. The default does nothing.
    fn handle_drop(&self, reason: String) {
        let _ = reason;
    }
}

impl<T: ServiceHandler> ServiceHandler for Arc<T> {
    fn handle_request(&self, request: Bytes) -> impl Future<Output = Result<Bytes, String>> + Send {
        T::handle_request(self, request)
    }

    fn handle_broadcast(&self, message: Bytes) {
        T::handle_broadcast(self, message);
    }

    fn handle_tunnel(&self, tunnel: Tunnel) {
        T::handle_tunnel(self, tunnel);
    }

    fn handle_drop(&self, reason: String) {
        T::handle_drop(self, reason);
    }
}

/// A member of a cluster: a [`Connection`] (it derefs to one, for requests, publishing,
/// tunnels of its own) whose handler receives the cluster's requests, broadcasts and tunnels.
///
/// Dropping the last clone of the connection leaves the cluster (closes the connection). A
/// handler that keeps a clone of its own service's connection keeps it open: close such a
/// service explicitly.
#[derive(Clone, Debug)]
pub struct Service {
    conn: Connection,
    cluster: String,
}

/// Registers a service of `cluster` with the node on localhost:`port`.
///
/// `cluster` must not be empty. Fails with [`Error::Denied`] if the node refuses.
pub async fn register<H: ServiceHandler>(
    port: u16,
    cluster: &str,
    handler: H,
) -> Result<Service, Error> {
    Options::default().register(port, cluster, handler).await
}

impl Options {
    /// Registers a service of `cluster` with the node on localhost:`port`, with these options.
    pub async fn register<H: ServiceHandler>(
        self,
        port: u16,
        cluster: &str,
        handler: H,
    ) -> Result<Service, Error> {
        check_cluster(cluster)?;
        let handler = Arc::new(handler);
        let (rd, wr) = dial(port).await?.into_split();
        match Service::start(rd, wr, cluster, handler.clone(), self.clone()).await {
            Err(e) if self.extensions && crate::io::denied_for_version(&e) => {
                let (rd, wr) = dial(port).await?.into_split();
                Service::start(rd, wr, cluster, handler, self.without_extensions()).await
            }
            r => r,
        }
    }

    /// Registers a service of `cluster` with the node at `addr`, with these options.
    pub async fn register_addr<H: ServiceHandler>(
        self,
        addr: SocketAddr,
        cluster: &str,
        handler: H,
    ) -> Result<Service, Error> {
        check_cluster(cluster)?;
        let handler = Arc::new(handler);
        let (rd, wr) = dial_addr(addr).await?.into_split();
        match Service::start(rd, wr, cluster, handler.clone(), self.clone()).await {
            Err(e) if self.extensions && crate::io::denied_for_version(&e) => {
                let (rd, wr) = dial_addr(addr).await?.into_split();
                Service::start(rd, wr, cluster, handler, self.without_extensions()).await
            }
            r => r,
        }
    }

    /// Registers a service of `cluster` over an already connected stream, with these options.
    pub async fn register_stream<S, H>(
        self,
        stream: S,
        cluster: &str,
        handler: H,
    ) -> Result<Service, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        H: ServiceHandler,
    {
        check_cluster(cluster)?;
        let (rd, wr) = tokio::io::split(stream);
        Service::start(rd, wr, cluster, Arc::new(handler), self).await
    }
}

impl Options {
    /// Registers a service of `cluster` over an in-process transport (see
    /// [`crate::transport`]) whose node side attached as a member of `cluster`, with these
    /// options.
    pub async fn register_packets<S, H>(
        self,
        sink: Arc<dyn PacketSink>,
        source: S,
        cluster: &str,
        handler: H,
    ) -> Result<Service, Error>
    where
        S: PacketSource,
        H: ServiceHandler,
    {
        check_cluster(cluster)?;
        let handler = Arc::new(handler);
        let conn = Connection::start_packets(sink, source, self, |tx, counters, options| {
            Some(ServiceHooks::new(handler, tx, counters, options))
        })
        .await?;
        Ok(Service {
            conn,
            cluster: cluster.to_owned(),
        })
    }
}

fn check_cluster(cluster: &str) -> Result<(), Error> {
    if cluster.is_empty() {
        return Err(Error::Invalid("a service needs a non-empty cluster name"));
    }
    Ok(())
}

impl Service {
    /// Registers a service of `cluster` over an already connected stream (e.g. a simulator's
    /// TCP stream).
    pub async fn with_stream<S, H>(stream: S, cluster: &str, handler: H) -> Result<Service, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        H: ServiceHandler,
    {
        Options::default()
            .register_stream(stream, cluster, handler)
            .await
    }

    async fn start<R, W, H>(
        rd: R,
        wr: W,
        cluster: &str,
        handler: Arc<H>,
        options: Options,
    ) -> Result<Service, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
        H: ServiceHandler,
    {
        let conn = Connection::start(rd, wr, cluster, options, |tx, counters, options| {
            Some(ServiceHooks::new(handler, tx, counters, options))
        })
        .await?;
        Ok(Service {
            conn,
            cluster: cluster.to_owned(),
        })
    }

    /// The cluster this service is a member of.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The service's connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl Deref for Service {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

/// The service side of a connection, as the reader task sees it.
pub(crate) struct ServiceHooks {
    pub(crate) requests: Box<dyn Submit<RequestItem>>,
    pub(crate) broadcasts: Box<dyn Submit<Bytes>>,
    pub(crate) callbacks: Arc<dyn Callbacks>,
}

impl ServiceHooks {
    fn new<H: ServiceHandler>(
        handler: Arc<H>,
        out: &Arc<Writer>,
        counters: &Counters,
        options: &Options,
    ) -> Self {
        let requests = Pool::new(
            RequestJob {
                handler: handler.clone(),
                out: out.clone(),
                expired: counters.expired_requests.clone(),
            },
            "requests",
            options.request_handlers,
            options.request_memory,
            counters.dropped_requests.clone(),
        );
        let broadcasts = Pool::new(
            BroadcastJob {
                handler: handler.clone(),
            },
            "broadcasts",
            options.broadcast_handlers,
            options.broadcast_memory,
            counters.dropped_broadcasts.clone(),
        );
        ServiceHooks {
            requests: Box::new(requests),
            broadcasts: Box::new(broadcasts),
            callbacks: handler,
        }
    }
}

/// The handler's synchronous methods, object-safe, for the reader task.
pub(crate) trait Callbacks: Send + Sync {
    /// An inbound tunnel.
    fn tunnel(&self, tunnel: Tunnel);
    /// The connection ended.
    fn dropped(&self, reason: String);
}

impl<H: ServiceHandler> Callbacks for H {
    fn tunnel(&self, tunnel: Tunnel) {
        self.handle_tunnel(tunnel);
    }

    fn dropped(&self, reason: String) {
        self.handle_drop(reason);
    }
}

/// A request delivery waiting for a handler.
pub(crate) struct RequestItem {
    id: u64,
    request: Bytes,
    timeout: Duration,
    arrived: Instant,
}

impl RequestItem {
    /// A delivery that arrived now.
    pub(crate) fn new(id: u64, request: Bytes, timeout_ms: u64) -> Self {
        RequestItem {
            id,
            request,
            timeout: Duration::from_millis(timeout_ms),
            arrived: Instant::now(),
        }
    }
}

struct RequestJob<H> {
    handler: Arc<H>,
    out: Arc<Writer>,
    expired: Arc<AtomicU64>,
}

impl<H: ServiceHandler> Job for RequestJob<H> {
    type Item = RequestItem;

    fn size(item: &RequestItem) -> usize {
        item.request.len()
    }

    async fn run(&self, item: RequestItem) {
        if item.arrived.elapsed() >= item.timeout {
            self.expired.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(id = item.id, "request expired in the queue, skipped");
            return;
        }
        let result = self.handler.handle_request(item.request).await;
        // Refused only when the connection is gone; the node answers the requester then.
        self.out.room().await;
        let _ = self.out.push(ClientPacket::Reply {
            id: item.id,
            result,
        });
    }
}

struct BroadcastJob<H> {
    handler: Arc<H>,
}

impl<H: ServiceHandler> Job for BroadcastJob<H> {
    type Item = Bytes;

    fn size(item: &Bytes) -> usize {
        item.len()
    }

    async fn run(&self, item: Bytes) {
        self.handler.handle_broadcast(item);
    }
}
