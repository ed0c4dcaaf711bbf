//! [`Connection`]: one attachment to the node, shared by any number of tasks.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use petal_protocol::relay::{ClientPacket, ReplyOutcome};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use crate::error::{Ended, Error};
use crate::idmap::IdMap;
use crate::options::Options;
use crate::outbox::Outbox;
use crate::pool::{Pool, Submit, lock};
use crate::service::ServiceHooks;
use crate::topic::{EventJob, TopicHandler};
use crate::transport::{PacketSink, PacketSource, PushError, Writer};
use crate::tunnel::{self, Tunnel, TunnelShared};
use crate::{io, stats::Counters, stats::Stats};

/// A connection to the local node: a plain client (or, inside a [`Service`](crate::Service),
/// a cluster member).
///
/// Cheap to clone; every clone is the same connection, and all methods take `&self`, so many
/// tasks can issue requests, publish and open tunnels at once. Packets are written whole
/// through one shared outbox and replies are matched by id; no task is spawned per request.
///
/// Dropping the last clone closes the connection without waiting (as [`close`](Self::close)
/// would, but in the background); tunnels opened on it then end too.
#[derive(Clone)]
pub struct Connection {
    handle: Arc<Handle>,
}

/// The user-facing owner of a connection: when the last one drops, the connection is closed.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.abandon();
    }
}

/// State shared by the handles, the reader and writer tasks, handler pools and tunnels.
pub(crate) struct Inner {
    pub(crate) options: Options,
    /// Where packets go: a byte stream's outbox, or an in-process transport.
    pub(crate) out: Arc<Writer>,
    pub(crate) pending: Mutex<Pending>,
    pub(crate) tunnels: Mutex<Tunnels>,
    pub(crate) topics: Mutex<HashMap<String, Box<dyn Submit<Bytes>>>>,
    /// Handlers of the identities this connection holds.
    pub(crate) identities: Mutex<HashMap<String, Box<dyn Submit<Bytes>>>>,
    pub(crate) service: Option<ServiceHooks>,
    pub(crate) next_request: AtomicU64,
    /// The node granted Petal's relay extension (the store's operations).
    pub(crate) extended: bool,
    pub(crate) next_tunnel: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) ended: watch::Sender<Option<Ended>>,
    /// This side asked to close (CLOSE queued or sent).
    pub(crate) closing: AtomicBool,
}

/// Who waits for an answer: a request for its REPLY, a store operation for its KV_RESULT.
pub(crate) enum Waiter {
    Reply(oneshot::Sender<ReplyOutcome>),
    Kv(oneshot::Sender<petal_protocol::StoreResult>),
    Id(oneshot::Sender<petal_protocol::IdResult>),
}

/// Requests and store operations waiting for their answer (one id space).
pub(crate) struct Pending {
    pub(crate) map: IdMap<Waiter>,
    /// Requests abandoned before their reply came (their reply is expected, and ignored),
    /// at most [`ABANDONED_KEPT`], the oldest forgotten first.
    pub(crate) abandoned: std::collections::BTreeSet<u64>,
    pub(crate) ended: Option<Ended>,
}

/// How many abandoned request ids a connection remembers, so that their late replies are not
/// mistaken for unexpected ones.
const ABANDONED_KEPT: usize = 4096;

impl Pending {
    /// Takes the waiter of request `id`: `Ok(Some)` when it is waited for, `Ok(None)` when it
    /// was abandoned, `Err` when no such request is pending (a second reply, or an id never
    /// sent).
    pub(crate) fn take(&mut self, id: u64) -> Result<Option<Waiter>, ()> {
        match self.map.remove(&id) {
            Some(tx) => Ok(Some(tx)),
            None if self.abandoned.remove(&id) => Ok(None),
            None => Err(()),
        }
    }

    /// Request `id` is abandoned: its waiter goes, its reply will be ignored.
    pub(crate) fn abandon(&mut self, id: u64) {
        if self.map.remove(&id).is_some() {
            self.abandoned.insert(id);
            if self.abandoned.len() > ABANDONED_KEPT {
                self.abandoned.pop_first();
            }
        }
    }
}

/// Tunnels by client tunnel id (opening ones included).
pub(crate) struct Tunnels {
    pub(crate) map: IdMap<Arc<TunnelShared>>,
    pub(crate) ended: Option<Ended>,
}

/// Dials localhost: 127.0.0.1 first, then `[::1]`. Disables Nagle's algorithm.
pub(crate) async fn dial(port: u16) -> Result<TcpStream, Error> {
    let stream = match TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
        Ok(stream) => stream,
        Err(v4) => TcpStream::connect((Ipv6Addr::LOCALHOST, port))
            .await
            .map_err(|_| Error::Io(v4))?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Dials one address. Disables Nagle's algorithm.
pub(crate) async fn dial_addr(addr: SocketAddr) -> Result<TcpStream, Error> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Options {
    /// Connects to the node on localhost:`port` as a plain client, with these options.
    pub async fn connect(self, port: u16) -> Result<Connection, Error> {
        let first = {
            let (rd, wr) = dial(port).await?.into_split();
            Connection::start(rd, wr, "", self.clone(), |_, _, _| None).await
        };
        match first {
            Err(e) if self.extensions && io::denied_for_version(&e) => {
                let (rd, wr) = dial(port).await?.into_split();
                Connection::start(rd, wr, "", self.without_extensions(), |_, _, _| None).await
            }
            r => r,
        }
    }

    /// Connects to the node at `addr` as a plain client, with these options.
    pub async fn connect_addr(self, addr: SocketAddr) -> Result<Connection, Error> {
        let first = {
            let (rd, wr) = dial_addr(addr).await?.into_split();
            Connection::start(rd, wr, "", self.clone(), |_, _, _| None).await
        };
        match first {
            Err(e) if self.extensions && io::denied_for_version(&e) => {
                let (rd, wr) = dial_addr(addr).await?.into_split();
                Connection::start(rd, wr, "", self.without_extensions(), |_, _, _| None).await
            }
            r => r,
        }
    }

    /// These options without the extension (for a node that speaks plain relay v1 only).
    pub(crate) fn without_extensions(mut self) -> Self {
        self.extensions = false;
        self
    }

    /// Runs the protocol over an already connected stream as a plain client, with these
    /// options.
    pub async fn connect_stream<S>(self, stream: S) -> Result<Connection, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (rd, wr) = tokio::io::split(stream);
        Connection::start(rd, wr, "", self, |_, _, _| None).await
    }
}

impl Options {
    /// Runs a plain client over an in-process transport (see [`crate::transport`]), with
    /// these options: what an application embedding its node gets (`petal_node`'s
    /// `NodeHandle::connect`).
    pub async fn connect_packets<S: PacketSource>(
        self,
        sink: Arc<dyn PacketSink>,
        source: S,
    ) -> Result<Connection, Error> {
        Connection::start_packets(sink, source, self, |_, _, _| None).await
    }
}

impl Connection {
    /// Connects to the node on localhost:`port` (127.0.0.1, then `[::1]`) as a plain client.
    ///
    /// There is no deadline on the handshake; wrap the call in [`tokio::time::timeout`] to
    /// bound it.
    pub async fn connect(port: u16) -> Result<Connection, Error> {
        Options::default().connect(port).await
    }

    /// Connects to the node at `addr` as a plain client.
    pub async fn connect_addr(addr: SocketAddr) -> Result<Connection, Error> {
        Options::default().connect_addr(addr).await
    }

    /// Runs the protocol over an already connected stream (a simulator's TCP stream, a Unix
    /// socket, an in-memory duplex) as a plain client.
    pub async fn with_stream<S>(stream: S) -> Result<Connection, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Options::default().connect_stream(stream).await
    }

    /// Handshakes, then starts the reader and writer tasks.
    pub(crate) async fn start<R, W, F>(
        mut rd: R,
        mut wr: W,
        cluster: &str,
        options: Options,
        service: F,
    ) -> Result<Connection, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
        F: FnOnce(&Arc<Writer>, &Counters, &Options) -> Option<ServiceHooks>,
    {
        let (leftover, extended): (BytesMut, bool) =
            io::handshake(&mut rd, &mut wr, cluster, &options).await?;
        let out = Writer::Stream(Box::new(Outbox::new(wr, options.write_buffer)));
        let inner = Inner::new(out, extended, options, service);
        let ended_rx = inner.ended.subscribe();
        tokio::spawn(io::run_writer(inner.clone()));
        tokio::spawn(io::run_reader(inner.clone(), rd, leftover, ended_rx));
        Ok(Connection {
            handle: Arc::new(Handle { inner }),
        })
    }

    /// Waits for the node's answer to an in-process attach (its INIT, or DENY), then starts
    /// the reader task; there is no writer task (the sink takes packets as they come).
    pub(crate) async fn start_packets<S, F>(
        sink: Arc<dyn PacketSink>,
        mut source: S,
        options: Options,
        service: F,
    ) -> Result<Connection, Error>
    where
        S: PacketSource,
        F: FnOnce(&Arc<Writer>, &Counters, &Options) -> Option<ServiceHooks>,
    {
        let extended = match io::handshake_packets(&mut source).await {
            Ok(extended) => extended,
            Err(e) => {
                sink.shut();
                return Err(e);
            }
        };
        let inner = Inner::new(Writer::Packets(sink), extended, options, service);
        let ended_rx = inner.ended.subscribe();
        tokio::spawn(io::run_packet_reader(inner.clone(), source, ended_rx));
        Ok(Connection {
            handle: Arc::new(Handle { inner }),
        })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Sends `request` to one member of `cluster` and waits for its reply.
    ///
    /// The node enforces `timeout` (whole milliseconds) and always answers: `Ok` with the
    /// service's reply, [`Error::Remote`] with its fault text, [`Error::Timeout`] when no
    /// member answered in time (or the cluster has none). The library keeps no timer of its
    /// own. If the connection ends first the call fails with [`Error::Closed`] or
    /// [`Error::Broken`]. Dropping the future abandons the request (its reply is ignored).
    pub async fn request(
        &self,
        cluster: &str,
        request: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, Error> {
        let inner = self.inner();
        inner.check_open()?;
        let id = inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&inner.pending);
            if let Some(ended) = &pending.ended {
                return Err(ended.to_error());
            }
            pending.map.insert(id, Waiter::Reply(tx));
        }
        let mut guard = PendingGuard {
            inner,
            id,
            armed: true,
        };
        inner
            .send(ClientPacket::Request {
                id,
                cluster: cluster.to_owned(),
                request: request.into(),
                timeout_ms: millis(timeout),
            })
            .await?;
        let outcome = rx.await;
        guard.armed = false;
        match outcome {
            Ok(ReplyOutcome::Success(reply)) => Ok(reply),
            Ok(ReplyOutcome::Fault(fault)) => Err(Error::Remote(fault)),
            Ok(ReplyOutcome::Timeout) => Err(Error::Timeout),
            Err(_) => Err(inner.ended_error()),
        }
    }

    /// Sends `message` to every member of `cluster` (this connection too, if it is a member).
    /// Best effort: there is no acknowledgement.
    pub async fn broadcast(&self, cluster: &str, message: impl Into<Bytes>) -> Result<(), Error> {
        let inner = self.inner();
        inner.check_open()?;
        inner
            .send(ClientPacket::Broadcast {
                cluster: cluster.to_owned(),
                message: message.into(),
            })
            .await
    }

    /// Subscribes to `topic`: every event published to it (by anyone, this connection
    /// included) is passed to `handler`, within the event limits of [`Options`] (per
    /// subscription).
    ///
    /// Fails with [`Error::AlreadySubscribed`] if this connection already subscribed to it.
    pub async fn subscribe(&self, topic: &str, handler: impl TopicHandler) -> Result<(), Error> {
        let inner = self.inner();
        inner.check_open()?;
        let pool = Pool::new(
            EventJob(handler),
            "events",
            inner.options.event_handlers,
            inner.options.event_memory,
            inner.counters.dropped_events.clone(),
        );
        {
            let mut topics = lock(&inner.topics);
            if topics.contains_key(topic) {
                return Err(Error::AlreadySubscribed(topic.to_owned()));
            }
            topics.insert(topic.to_owned(), Box::new(pool));
        }
        let sent = inner
            .send(ClientPacket::Subscribe {
                topic: topic.to_owned(),
            })
            .await;
        if sent.is_err() {
            lock(&inner.topics).remove(topic);
        }
        sent
    }

    /// Unsubscribes from `topic`; events already queued for its handler are still handled.
    ///
    /// Fails with [`Error::NotSubscribed`] if this connection is not subscribed to it.
    pub async fn unsubscribe(&self, topic: &str) -> Result<(), Error> {
        let inner = self.inner();
        inner.check_open()?;
        if lock(&inner.topics).remove(topic).is_none() {
            return Err(Error::NotSubscribed(topic.to_owned()));
        }
        inner
            .send(ClientPacket::Unsubscribe {
                topic: topic.to_owned(),
            })
            .await
    }

    /// Publishes `event` to every subscriber of `topic`. Best effort: no acknowledgement.
    pub async fn publish(&self, topic: &str, event: impl Into<Bytes>) -> Result<(), Error> {
        let inner = self.inner();
        inner.check_open()?;
        inner
            .send(ClientPacket::Publish {
                topic: topic.to_owned(),
                event: event.into(),
            })
            .await
    }

    /// Opens a tunnel to one member of `cluster`. The node enforces `timeout`: no member
    /// accepting in time is [`Error::Timeout`].
    pub async fn tunnel(&self, cluster: &str, timeout: Duration) -> Result<Tunnel, Error> {
        let inner = self.inner();
        inner.check_open()?;
        tunnel::open(inner, cluster, millis(timeout)).await
    }

    /// Closes the connection gracefully: sends CLOSE after everything already queued, then
    /// waits for the node's acknowledgement and end of stream. Requests still pending then fail
    /// with [`Error::Closed`], and tunnels end.
    ///
    /// Returns `Ok` once the connection is closed (also when it was already closed), and
    /// [`Error::Broken`] if it broke instead.
    ///
    /// Dropping the last handle closes in the background instead, on the runtime's tasks:
    /// packets still queued then (events published back to back are written by the
    /// connection's writer task, in batches) are lost if the runtime stops first. A program
    /// about to exit calls `close` to know that everything it sent has left.
    pub async fn close(&self) -> Result<(), Error> {
        let inner = self.inner();
        if !inner.closing.swap(true, Ordering::AcqRel) {
            // Queued behind everything already queued, without waiting for room (so that
            // dropping this future cannot leave the connection closing without a CLOSE).
            // Refused only when the connection already ended.
            let _ = inner.out.push(ClientPacket::Close);
        }
        let mut ended = inner.ended.subscribe();
        let end = match ended.wait_for(Option::is_some).await {
            Ok(end) => end.clone(),
            Err(_) => None,
        };
        match end {
            Some(Ended::Broken(what)) => Err(Error::Broken(what)),
            _ => Ok(()),
        }
    }

    /// Whether the connection has ended (closed or broken).
    pub fn is_closed(&self) -> bool {
        self.inner().ended.borrow().is_some()
    }

    /// Counters of deliveries this connection dropped or ignored.
    pub fn stats(&self) -> Stats {
        self.inner().counters.snapshot()
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("service", &self.inner().service.is_some())
            .field("ended", &*self.inner().ended.borrow())
            .finish_non_exhaustive()
    }
}

/// Removes an abandoned request from the pending table (its future was dropped, or sending
/// failed).
pub(crate) struct PendingGuard<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) id: u64,
    pub(crate) armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.inner.pending).abandon(self.id);
        }
    }
}

/// Whole milliseconds of `d`, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Inner {
    /// The shared state of a connection that writes through `out`.
    fn new<F>(out: Writer, extended: bool, options: Options, service: F) -> Arc<Inner>
    where
        F: FnOnce(&Arc<Writer>, &Counters, &Options) -> Option<ServiceHooks>,
    {
        let out = Arc::new(out);
        let counters = Counters::default();
        let service = service(&out, &counters, &options);
        Arc::new(Inner {
            options,
            out,
            pending: Mutex::new(Pending {
                map: IdMap::default(),
                abandoned: Default::default(),
                ended: None,
            }),
            tunnels: Mutex::new(Tunnels {
                map: IdMap::default(),
                ended: None,
            }),
            topics: Mutex::new(HashMap::new()),
            identities: Mutex::new(HashMap::new()),
            service,
            next_request: AtomicU64::new(0),
            extended,
            next_tunnel: AtomicU64::new(0),
            counters,
            ended: watch::Sender::new(None),
            closing: AtomicBool::new(false),
        })
    }

    /// Fails once this side closed or the connection ended.
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if let Some(ended) = &*self.ended.borrow() {
            return Err(ended.to_error());
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::Closed("connection closing".to_owned()));
        }
        Ok(())
    }

    /// The error for calls that find the connection gone.
    pub(crate) fn ended_error(&self) -> Error {
        match &*self.ended.borrow() {
            Some(ended) => ended.to_error(),
            None => Error::Closed("connection closing".to_owned()),
        }
    }

    /// Queues a packet for the node, waiting while the write queue is full.
    pub(crate) async fn send(&self, packet: ClientPacket) -> Result<(), Error> {
        self.out.room().await;
        self.out.push(packet).map_err(|e| match e {
            PushError::Ended => self.ended_error(),
            PushError::Invalid(e) => Error::Protocol(e),
        })
    }

    /// Queues a control packet (credit, tunnel confirmations and closes) without waiting for
    /// room, so the reader task and destructors never wait for the writer. Dropped silently
    /// once the connection is closing or ended.
    pub(crate) fn send_control(&self, packet: ClientPacket) {
        let _ = self.out.push(packet);
    }

    /// Grants the node `space` more bytes of credit on tunnel `id`.
    pub(crate) fn grant(&self, id: u64, space: u64) {
        if space > 0 {
            self.send_control(ClientPacket::TunAllow { id, space });
        }
    }

    /// The tunnel with this client id, if it is still known.
    pub(crate) fn tunnel(&self, id: u64) -> Option<Arc<TunnelShared>> {
        lock(&self.tunnels).map.get(&id).cloned()
    }

    /// The last handle was dropped: close in the background.
    fn abandon(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) && self.ended.borrow().is_none() {
            self.send_control(ClientPacket::Close);
        }
    }

    /// Ends the connection once: fails pending requests, ends tunnels, and tells the service
    /// handler when `notify` (a break, or a close by the node).
    pub(crate) fn shutdown(&self, end: Ended, notify: bool) {
        let mut first = false;
        self.ended.send_if_modified(|state| {
            if state.is_none() {
                *state = Some(end.clone());
                first = true;
            }
            first
        });
        if !first {
            return;
        }
        self.out.shut();
        match &end {
            Ended::Closed(reason) => tracing::debug!(reason = %reason, "connection closed"),
            Ended::Broken(what) => tracing::warn!(what = %what, "connection broken"),
        }
        let pending = {
            let mut pending = lock(&self.pending);
            pending.ended = Some(end.clone());
            std::mem::take(&mut pending.map)
        };
        // Dropping the senders wakes the requesters, which read `ended`.
        drop(pending);
        let tunnels = {
            let mut tunnels = lock(&self.tunnels);
            tunnels.ended = Some(end.clone());
            std::mem::take(&mut tunnels.map)
        };
        for tunnel in tunnels.into_values() {
            tunnel.finish(end.clone());
        }
        if let (true, Some(service)) = (notify, &self.service) {
            let reason = match end {
                Ended::Closed(reason) | Ended::Broken(reason) => reason,
            };
            service.callbacks.dropped(reason);
        }
    }
}
