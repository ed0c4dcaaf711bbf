//! Brokerless (embedded) mode: an application in the node's own process gets petal-client's
//! [`Connection`] and [`Service`], attached to the node without a socket, without the relay
//! codec and without a relay session's reader and writer tasks.
//!
//! ```text
//!  application --ClientPacket values--> EmbeddedSink --Input::Session--> node task
//!  application <--NodePacket values---- EmbeddedSource <--Out--------- node task
//! ```
//! An embedded session is a relay session to the node task in every other respect: the same
//! attach (a plain client, or a member of a cluster), the same limits (each packet is checked
//! as the decoder would have, [`ClientPacket::check`]), the same memory share and
//! backpressure, the same close and shutdown answers. So the application keeps the semantics
//! it has over TCP: one outcome per request, tunnel credit, bounded handler queues.
//!
//! The sink hands packets to the node task on the caller's own task when the node's input
//! channel has room (no task switch on the request path); when it is full, or the session's
//! input share is spent, the session's task takes over and waits, and callers queue behind it
//! up to the client's `write_buffer` ([`PacketSink::room`] waits beyond). The session's task
//! also answers the node's drain at shutdown and tells it when the connection ends.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use petal_client::transport::{PacketSink, PacketSource, PushError};
use petal_client::{Connection, Error, Service, ServiceHandler};
use petal_protocol::relay::{self, ClientPacket, NodePacket, RelayError};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use crate::budget::{Charge, Share};
use crate::driver::Input;
use crate::session::{Out, SessionOpen, SessionTx};
use crate::{LocalConnector, NodeHandle};

impl NodeHandle {
    /// Waits until the node has joined its network (or formed a ring of its own), at most
    /// `within`; true when it has. Attaches need not wait for it: over TCP and in process
    /// alike, those made while the node still dials its seeds are held until it starts
    /// joining (or serves alone after `join_wait`), then served; what they send before the
    /// node is ready goes out once it is.
    pub async fn wait_ready(&self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.ready.load(std::sync::atomic::Ordering::Acquire) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    /// Attaches a plain client in this process (brokerless mode): petal-client's API, without
    /// a daemon, a socket or the relay hop. See [`LocalConnector::connect`].
    pub async fn connect(&self) -> Result<Connection, Error> {
        self.local.connect(petal_client::Options::default()).await
    }

    /// Attaches a member of `cluster` in this process (brokerless mode), whose `handler` gets
    /// the cluster's requests, broadcasts and tunnels. See [`LocalConnector::register`].
    pub async fn register<H: ServiceHandler>(
        &self,
        cluster: &str,
        handler: H,
    ) -> Result<Service, Error> {
        self.local
            .register(petal_client::Options::default(), cluster, handler)
            .await
    }
}

impl LocalConnector {
    /// Attaches a plain client to the node in this process, with these options (the handler
    /// bounds and `write_buffer`, the bound of packets waiting for the node; `extensions` as
    /// over TCP). Fails once the node has stopped.
    pub async fn connect(&self, options: petal_client::Options) -> Result<Connection, Error> {
        let (sink, source) = self.attach(None, &options).await?;
        options.connect_packets(sink, source).await
    }

    /// Attaches a member of `cluster` to the node in this process, with these options. Fails
    /// with [`Error::Invalid`] for an empty name, [`Error::Denied`] when the node refuses.
    pub async fn register<H: ServiceHandler>(
        &self,
        options: petal_client::Options,
        cluster: &str,
        handler: H,
    ) -> Result<Service, Error> {
        if cluster.is_empty() {
            return Err(Error::Invalid("a service needs a non-empty cluster name"));
        }
        let (sink, source) = self.attach(Some(cluster.to_owned()), &options).await?;
        options
            .register_packets(sink, source, cluster, handler)
            .await
    }

    /// Opens an embedded session: asks the node task to attach it and starts its task.
    async fn attach(
        &self,
        cluster: Option<String>,
        options: &petal_client::Options,
    ) -> Result<(Arc<dyn PacketSink>, EmbeddedSource), Error> {
        let extended = options.extensions;
        let stopped = || {
            Error::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                "the node has stopped",
            ))
        };
        let alive = self.alive.upgrade().ok_or_else(stopped)?;
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let flag = Arc::new(AtomicBool::new(false));
        let out = SessionTx {
            tx,
            queued: queued.clone(),
            kill: Arc::new(Notify::new()),
            cut: Some(flag.clone()),
            drain: Arc::new(Notify::new()),
            share: None,
            refused: Arc::default(),
        };
        let (kill, drain) = (out.kill.clone(), out.drain.clone());
        // The node sets the flag when it cuts the session off (nothing queued is read after
        // that); the session's task then wakes the source to end it.
        let cut = Cut {
            flag,
            wake: out.tx.downgrade(),
        };
        let open = SessionOpen {
            conn,
            cluster,
            out,
            extended,
        };
        self.inputs
            .send(Input::SessionOpen(open))
            .await
            .map_err(|_| stopped())?;
        let sink = Arc::new(EmbeddedSink {
            conn,
            extended,
            limits: relay::Limits {
                max_message: self.opts.max_message,
                ..relay::Limits::default()
            },
            to_node: self.inputs.clone(),
            share: Share::new(self.budget.clone(), self.opts.core.memory_share),
            high_water: options.write_buffer.max(1),
            state: Mutex::new(SinkState::default()),
            wake: Notify::new(),
            room: Notify::new(),
        });
        let task = session_task(sink.clone(), kill, drain, cut.clone());
        tokio::spawn(
            async move {
                let _alive = alive;
                task.await;
            }
            .instrument(self.span.clone()),
        );
        let source = EmbeddedSource {
            rx,
            queued,
            cut: cut.flag,
            sink: sink.clone(),
            batch: Vec::new().into_iter(),
            batch_bytes: 0,
            batch_charge: Charge::none(),
        };
        Ok((sink, source))
    }
}

/// How a cut-off session's source ends: the flag (the node sets it as it cuts), and a
/// wake-up through the node's own channel (if the node still holds it).
#[derive(Clone)]
struct Cut {
    flag: Arc<AtomicBool>,
    wake: mpsc::WeakUnboundedSender<Out>,
}

/// The node's side of the receiving half: its packets as they were queued for the session.
pub(crate) struct EmbeddedSource {
    rx: mpsc::UnboundedReceiver<Out>,
    /// The session's queued bytes, as the node counts them (given back as packets are taken).
    queued: Arc<AtomicUsize>,
    /// Set when the node cut the session off: what it had queued is not delivered.
    cut: Arc<AtomicBool>,
    /// Shut when the source goes (the connection ended, or its attach was abandoned).
    sink: Arc<EmbeddedSink>,
    /// The rest of the batch being taken ([`Out::Batch`]), its size and its charge: counted
    /// as queued, and held, until its last packet is taken.
    batch: std::vec::IntoIter<NodePacket>,
    batch_bytes: usize,
    batch_charge: Charge,
}

impl Drop for EmbeddedSource {
    fn drop(&mut self) {
        // An attach abandoned during its handshake (the caller's future dropped) leaves the
        // node at once, as a closed socket would.
        self.sink.shut();
    }
}

impl PacketSource for EmbeddedSource {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<NodePacket>> {
        if self.cut.load(Ordering::Acquire) {
            // Dropping the receiver later frees what is queued (and its charges).
            self.rx.close();
            return Poll::Ready(None);
        }
        if let Some(p) = self.batch.next() {
            if self.batch.len() == 0 {
                self.queued.fetch_sub(self.batch_bytes, Ordering::Relaxed);
                self.batch_charge = Charge::none();
            }
            return Poll::Ready(Some(p));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Out::Packet(p, charge))) => {
                self.queued.fetch_sub(p.encoded_len(), Ordering::Relaxed);
                drop(charge);
                Poll::Ready(Some(p))
            }
            Poll::Ready(Some(Out::Batch(packets, bytes, charge))) => {
                self.batch = packets.into_iter();
                self.batch_bytes = bytes;
                self.batch_charge = charge;
                self.poll_recv(cx)
            }
            // The node ended the session (after its CLOSE), or dropped it (cut off).
            Poll::Ready(Some(Out::Close) | None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The sending half; see the module docs.
struct EmbeddedSink {
    conn: u64,
    /// Petal's extension was asked for (its packets are refused otherwise, as in plain v1).
    extended: bool,
    limits: relay::Limits,
    to_node: mpsc::Sender<Input>,
    /// The session's share of the node's memory budget for input.
    share: Arc<Share>,
    /// Bytes queued behind a waiting hand-over beyond which callers wait for room (the
    /// client's `write_buffer`).
    high_water: usize,
    state: Mutex<SinkState>,
    /// Wakes the session's task: a hand-over to finish, or the end.
    wake: Notify,
    /// Wakes callers waiting for room.
    room: Notify,
}

#[derive(Default)]
struct SinkState {
    /// Packets not yet handed to the node task, in order.
    queue: Vec<ClientPacket>,
    /// Their encoded size.
    bytes: usize,
    /// The session's task is handing over (the queue waits for it).
    busy: bool,
    /// The client closed gracefully: CLOSE follows the queue.
    closing: bool,
    /// The connection ended on the client's side (nothing more is taken).
    shut: bool,
    /// The node was told the session ended (or the node task is gone).
    told: bool,
}

fn lock(m: &Mutex<SinkState>) -> MutexGuard<'_, SinkState> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Most packets one hand-over carries, as a relay session's reader batches them (the node task
/// handles one input at a time).
const BATCH: usize = 256;

/// Takes the first packets of the queue (at most [`BATCH`]) and their encoded size.
fn take_batch(st: &mut SinkState) -> (Vec<ClientPacket>, usize) {
    let packets: Vec<ClientPacket> = if st.queue.len() <= BATCH {
        std::mem::take(&mut st.queue)
    } else {
        st.queue.drain(..BATCH).collect()
    };
    let bytes = packets.iter().map(ClientPacket::encoded_len).sum();
    st.bytes = st.bytes.saturating_sub(bytes);
    (packets, bytes)
}

/// Puts a batch that could not be handed over back at the front of the queue.
fn put_back(st: &mut SinkState, mut packets: Vec<ClientPacket>, bytes: usize) {
    packets.append(&mut st.queue);
    st.queue = packets;
    st.bytes += bytes;
}

impl EmbeddedSink {
    /// Hands what is queued to the node task without waiting: true when done (or nothing is
    /// left to do), false when the session's task must take over.
    fn hand_over(&self, st: &mut SinkState) -> bool {
        while !st.queue.is_empty() {
            let (packets, bytes) = take_batch(st);
            let Some(charge) = self.share.charge_input(bytes as u64) else {
                put_back(st, packets, bytes);
                return false;
            };
            let input = Input::Session {
                conn: self.conn,
                packets,
                charge,
            };
            match self.to_node.try_send(input) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(Input::Session { packets, .. })) => {
                    put_back(st, packets, bytes);
                    return false;
                }
                Err(_) => {
                    // The node task is gone: nothing will be taken again.
                    st.queue.clear();
                    st.bytes = 0;
                    st.told = true;
                    return true;
                }
            }
        }
        if (st.closing || st.shut) && !st.told {
            let input = Input::SessionClosed {
                conn: self.conn,
                graceful: st.closing,
            };
            match self.to_node.try_send(input) {
                Err(mpsc::error::TrySendError::Full(_)) => return false,
                _ => st.told = true,
            }
        }
        true
    }

    /// The node task is gone: drops what is queued, takes nothing more, frees waiting callers.
    fn gone(&self) {
        let mut st = lock(&self.state);
        st.queue.clear();
        st.bytes = 0;
        st.told = true;
        st.busy = false;
        drop(st);
        self.room.notify_waiters();
    }

    /// Hands over the queue, or leaves it to the session's task.
    fn hand_over_or_wake(&self, st: &mut SinkState) {
        if st.busy {
            return;
        }
        if !self.hand_over(st) {
            st.busy = true;
            self.wake.notify_one();
        }
    }

    /// The session task's hand-over: waits for budget and channel room. Returns once the
    /// queue is empty (and the end told, if it came).
    async fn hand_over_waiting(&self) {
        // Callers queue behind this hand-over (order is kept).
        lock(&self.state).busy = true;
        loop {
            let next = {
                let mut st = lock(&self.state);
                if !st.queue.is_empty() {
                    Some(take_batch(&mut st))
                } else if (st.closing || st.shut) && !st.told {
                    st.told = true;
                    None
                } else {
                    st.busy = false;
                    drop(st);
                    self.room.notify_waiters();
                    return;
                }
            };
            let sent = match next {
                Some((packets, bytes)) => {
                    let charge = crate::budget::charge_input(&self.share, bytes as u64).await;
                    let input = Input::Session {
                        conn: self.conn,
                        packets,
                        charge,
                    };
                    self.to_node.send(input).await
                }
                None => {
                    let graceful = lock(&self.state).closing;
                    let input = Input::SessionClosed {
                        conn: self.conn,
                        graceful,
                    };
                    self.to_node.send(input).await
                }
            };
            if sent.is_err() {
                self.gone();
            }
            self.room.notify_waiters();
        }
    }
}

impl PacketSink for EmbeddedSink {
    fn push(&self, packet: ClientPacket) -> Result<(), PushError> {
        let packet = match packet.check(&self.limits) {
            Ok(()) => packet,
            // A reply over the limit reaches its requester as a fault (over TCP the node would
            // close the service's connection; the requester would time out).
            Err(e) if matches!(packet, ClientPacket::Reply { result: Ok(_), .. }) => {
                let ClientPacket::Reply { id, .. } = packet else {
                    return Err(PushError::Invalid(e));
                };
                ClientPacket::Reply {
                    id,
                    result: Err(format!("petal: the reply was refused: {e}")),
                }
            }
            // So does an over-long fault text, cut to the limit.
            Err(_) if matches!(packet, ClientPacket::Reply { result: Err(_), .. }) => {
                let ClientPacket::Reply {
                    id,
                    result: Err(mut fault),
                } = packet
                else {
                    return Err(PushError::Ended);
                };
                let mut end = self.limits.max_string.min(fault.len());
                while !fault.is_char_boundary(end) {
                    end -= 1;
                }
                fault.truncate(end);
                ClientPacket::Reply {
                    id,
                    result: Err(fault),
                }
            }
            Err(e) => return Err(PushError::Invalid(e)),
        };
        if !self.extended && packet.is_extension() {
            return Err(PushError::Invalid(RelayError::UnknownOpcode(
                packet.opcode(),
            )));
        }
        let mut st = lock(&self.state);
        if st.closing || st.shut || st.told {
            return Err(PushError::Ended);
        }
        if matches!(packet, ClientPacket::Close) {
            st.closing = true;
        } else {
            st.bytes += packet.encoded_len();
            st.queue.push(packet);
        }
        self.hand_over_or_wake(&mut st);
        Ok(())
    }

    fn has_room(&self) -> bool {
        let st = lock(&self.state);
        st.bytes < self.high_water || st.shut || st.told
    }

    fn room(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let notified = self.room.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.has_room() {
                    return;
                }
                notified.await;
            }
        })
    }

    fn shut(&self) {
        let mut st = lock(&self.state);
        if st.shut {
            return;
        }
        st.shut = true;
        st.queue.clear();
        st.bytes = 0;
        self.hand_over_or_wake(&mut st);
        drop(st);
        self.room.notify_waiters();
        // The task ends once the node has been told.
        self.wake.notify_one();
    }
}

/// The session's task: finishes hand-overs the callers could not, answers the node's drain
/// at shutdown, and ends once the node was told the session ended.
async fn session_task(sink: Arc<EmbeddedSink>, kill: Arc<Notify>, drain: Arc<Notify>, cut: Cut) {
    loop {
        tokio::select! {
            biased;
            // Cut off (far behind, or over the memory budget): the source ends at once (what
            // the node queued is not delivered, as a cut socket's writer is aborted), and
            // nothing more is taken.
            () = kill.notified() => {
                cut.flag.store(true, Ordering::Release);
                if let Some(tx) = cut.wake.upgrade() {
                    let _ = tx.send(Out::Close);
                }
                sink.shut();
            }
            // The node is shutting down: hand over what the client queued, then say so.
            () = drain.notified() => {
                sink.hand_over_waiting().await;
                let done = Input::SessionDrained { conn: sink.conn };
                if sink.to_node.send(done).await.is_err() {
                    // The node task is gone: nothing will be taken again.
                    sink.gone();
                    return;
                }
            }
            () = sink.wake.notified() => sink.hand_over_waiting().await,
        }
        if lock(&sink.state).told {
            return;
        }
    }
}
