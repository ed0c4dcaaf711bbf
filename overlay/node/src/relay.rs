//! Relay v1 sessions: one task per local application connection, plus its writer task.
//!
//! The handshake runs in the session's own task under its own deadline, so a silent client
//! holds up nobody. A first byte other than INIT's or a wrong magic closes the socket without a
//! byte; a wrong version gets DENY naming both versions. After the handshake the reader decodes
//! packets and hands them to the node task (waiting when it is busy: TCP then pushes back on the
//! client); any protocol violation (malformed packet, unknown opcode, oversized field or chunk)
//! closes this connection only, without a byte, as the reference node did.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use petal_protocol::relay::{self, ClientPacket, NodePacket, RelayError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::budget::Share;
use crate::driver::Input;
use crate::session::{Out, SessionOpen, SessionTx};
use crate::{Options, RuntimeStats};

/// Why a handshake ended without attaching.
enum Refused {
    /// Close without a byte (wrong first byte, wrong magic, bad packet, EOF, deadline).
    Silent(String),
    /// DENY with this reason, then close.
    Deny(String),
}

/// Reads the client's INIT. Returns the cluster ("" = plain client) and whether the client
/// asked for Petal's extension ([`relay::ext::EXT_VERSION`]).
async fn read_init<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    limits: &relay::Limits,
) -> Result<(String, bool), Refused> {
    loop {
        if let Some(&first) = buf.first()
            && first != relay::op::INIT
        {
            return Err(Refused::Silent(format!(
                "first byte {first:#04x} is not INIT"
            )));
        }
        match ClientPacket::decode(buf, limits) {
            Ok(Some(ClientPacket::Init {
                magic,
                version,
                cluster,
            })) => {
                if magic != relay::CLIENT_MAGIC {
                    return Err(Refused::Silent("wrong magic".into()));
                }
                let extended = version == relay::ext::EXT_VERSION;
                if version != relay::VERSION && !extended {
                    return Err(Refused::Deny(format!(
                        "Unsupported protocol. Client: {version}. Iris: {}.",
                        relay::VERSION
                    )));
                }
                return Ok((cluster, extended));
            }
            Ok(Some(_)) => return Err(Refused::Silent("not an INIT".into())),
            Ok(None) => {}
            Err(e) => return Err(Refused::Silent(e.to_string())),
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err(Refused::Silent("closed during the handshake".into())),
            Ok(_) => {}
            Err(e) => return Err(Refused::Silent(e.to_string())),
        }
    }
}

/// Serves one relay connection to the end.
pub(crate) async fn serve<S>(
    stream: S,
    conn: u64,
    permit: crate::accept::GatePermit,
    opts: Arc<Options>,
    stats: Arc<RuntimeStats>,
    to_node: mpsc::Sender<Input>,
    share: Arc<Share>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let limits = relay::Limits {
        max_message: opts.max_message,
        ..relay::Limits::default()
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let init = tokio::time::timeout(
        opts.handshake_timeout,
        read_init(&mut rd, &mut buf, &limits),
    )
    .await
    .unwrap_or_else(|_| Err(Refused::Silent("handshake deadline passed".into())));
    // The handshake is over: its slot is free (and the session can no longer be cancelled as
    // the oldest handshake).
    drop(permit);
    let (cluster, extended) = match init {
        Ok(c) => c,
        Err(refused) => {
            RuntimeStats::add(&stats.handshakes_failed, 1);
            refuse(refused, conn, &opts, &mut wr).await;
            return;
        }
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let kill = Arc::new(tokio::sync::Notify::new());
    let drain = Arc::new(tokio::sync::Notify::new());
    let out = SessionTx {
        tx,
        queued: queued.clone(),
        kill: kill.clone(),
        cut: None,
        drain: drain.clone(),
        share: None,
        refused: Arc::default(),
    };
    let mut writer = crate::spawn_here(write_loop(wr, rx, queued));
    let open = SessionOpen {
        conn,
        cluster: (!cluster.is_empty()).then_some(cluster),
        out,
        extended,
    };
    if to_node.send(Input::SessionOpen(open)).await.is_err() {
        return;
    }

    // Read packets until the client closes, drops or breaks the protocol.
    let mut writer_done = false;
    let graceful = loop {
        let Some(drained) =
            forward_buffered(&mut buf, &limits, extended, conn, &to_node, &share).await
        else {
            return;
        };
        match drained {
            Drained::NeedMore => {}
            Drained::Close => break true,
            Drained::Violation(why) => {
                RuntimeStats::add(&stats.relay_violations, 1);
                tracing::info!(conn, %why, "relay protocol violation; closing the connection");
                break false;
            }
        }
        tokio::select! {
            biased;
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => break false,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(conn, error = %e, "relay read failed");
                    break false;
                }
            },
            // The node closed this session (a violation it found, or its shutdown).
            _ = &mut writer => {
                writer_done = true;
                break false;
            }
            // The node cut this session off (far behind on must-deliver traffic).
            () = kill.notified() => {
                writer.abort();
                writer_done = true;
                break false;
            }
            // The node is shutting down: hand it what the client already wrote (replies of
            // services above all), then say so.
            () = drain.notified() => {
                let end = read_ready(&mut rd, &mut buf, &limits, extended, conn, &to_node, &share).await;
                match end {
                    None => return,
                    Some(Ready::Open) => {
                        if to_node.send(Input::SessionDrained { conn }).await.is_err() {
                            return;
                        }
                    }
                    Some(Ready::Closed { graceful }) => break graceful,
                    Some(Ready::Violation(why)) => {
                        RuntimeStats::add(&stats.relay_violations, 1);
                        tracing::info!(conn, %why, "relay protocol violation; closing the connection");
                        break false;
                    }
                }
            }
        }
    };
    let _ = to_node.send(Input::SessionClosed { conn, graceful }).await;
    // Give the writer time to deliver the answers and the CLOSE ack to a reading client; a
    // client that does not read is cut off.
    if !writer_done {
        let abort = writer.abort_handle();
        if tokio::time::timeout(opts.close_linger, writer)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// How a read of what was ready ended.
enum Ready {
    /// Everything ready was handed over; the connection stays.
    Open,
    /// The client closed (gracefully with CLOSE, or dropped the connection).
    Closed { graceful: bool },
    /// A malformed packet.
    Violation(String),
}

/// Most bytes one drain reads (a client that keeps writing cannot keep the reader in it).
const READY_LIMIT: usize = 4 << 20;

/// Reads what is already buffered for the connection, without waiting for more, and hands
/// every packet to the node task as it goes (at most `READY_LIMIT` bytes). `None` when the
/// node task is gone.
async fn read_ready<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    limits: &relay::Limits,
    extended: bool,
    conn: u64,
    to_node: &mpsc::Sender<Input>,
    share: &Arc<Share>,
) -> Option<Ready> {
    let mut read = 0;
    loop {
        // `timeout` polls the read once before looking at its (elapsed) deadline.
        let r = tokio::time::timeout(std::time::Duration::ZERO, rd.read_buf(buf)).await;
        let eof = match r {
            Err(_) => false,
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(n)) => {
                read += n;
                false
            }
        };
        match forward_buffered(buf, limits, extended, conn, to_node, share).await? {
            Drained::Close => return Some(Ready::Closed { graceful: true }),
            Drained::Violation(why) => return Some(Ready::Violation(why)),
            Drained::NeedMore if eof => return Some(Ready::Closed { graceful: false }),
            Drained::NeedMore if r.is_err() || read >= READY_LIMIT => return Some(Ready::Open),
            Drained::NeedMore => {}
        }
    }
}

/// Ends a refused handshake: silently, or with a DENY (written within the handshake deadline).
async fn refuse<W: AsyncWrite + Unpin>(refused: Refused, conn: u64, opts: &Options, wr: &mut W) {
    match refused {
        Refused::Silent(why) => {
            tracing::debug!(conn, %why, "relay handshake failed; closing");
        }
        Refused::Deny(reason) => {
            tracing::info!(conn, %reason, "relay handshake denied");
            let mut out = Vec::new();
            NodePacket::Deny {
                magic: relay::RELAY_MAGIC.into(),
                reason,
            }
            .encode(&mut out);
            let _ = tokio::time::timeout(opts.handshake_timeout, async {
                wr.write_all(&out).await?;
                wr.shutdown().await
            })
            .await;
        }
    }
}

/// What the buffered bytes ended with.
enum Drained {
    /// An incomplete packet (or nothing): read more.
    NeedMore,
    /// The client's CLOSE.
    Close,
    /// A protocol violation, described.
    Violation(String),
}

/// Decodes the packets in `buf` and hands them to the node task, those of one read together
/// (one wake-up, one channel slot; at most 256 a batch). `None` when the node task is gone.
/// Petal's extension packets are an unknown opcode, as in plain v1, from a client that did not
/// negotiate the extension (`extended`).
async fn forward_buffered(
    buf: &mut BytesMut,
    limits: &relay::Limits,
    extended: bool,
    conn: u64,
    to_node: &mpsc::Sender<Input>,
    share: &Arc<Share>,
) -> Option<Drained> {
    let mut batch = Vec::new();
    let drained = loop {
        // Without the extension its opcodes are unknown at once, as in plain v1 (not parsed
        // first: an incomplete one would otherwise wait for bytes).
        if let Some(&op) = buf.first()
            && !extended
            && relay::ext::is_client_opcode(op)
        {
            break Drained::Violation(describe(&RelayError::UnknownOpcode(op)));
        }
        match ClientPacket::decode(buf, limits) {
            Ok(Some(ClientPacket::Close)) => break Drained::Close,
            Ok(Some(ClientPacket::Init { .. })) => {
                break Drained::Violation("a second INIT".to_string());
            }
            Ok(Some(packet)) => {
                batch.push(packet);
                if batch.len() >= 256 {
                    let packets = std::mem::take(&mut batch);
                    send_batch(conn, packets, to_node, share).await?;
                }
            }
            Ok(None) => break Drained::NeedMore,
            Err(e) => break Drained::Violation(describe(&e)),
        }
    };
    if !batch.is_empty() {
        send_batch(conn, batch, to_node, share).await?;
    }
    Some(drained)
}

/// Hands a batch of packets to the node task, charged to the session's share of the memory
/// budget (waiting, and so not reading the client, while the share is full).
async fn send_batch(
    conn: u64,
    packets: Vec<ClientPacket>,
    to_node: &mpsc::Sender<Input>,
    share: &Arc<Share>,
) -> Option<()> {
    let cost = packets.iter().map(|p| p.encoded_len() as u64).sum();
    let charge = crate::budget::charge_input(share, cost).await;
    to_node
        .send(Input::Session {
            conn,
            packets,
            charge,
        })
        .await
        .ok()
}

fn describe(e: &RelayError) -> String {
    format!("malformed packet: {e}")
}

/// Writes packets in batches; flushes when the queue is momentarily empty; ends on
/// [`Out::Close`] (or when the node task drops the session), shutting the socket down.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
    queued: Arc<AtomicUsize>,
) {
    let mut batch = Batch {
        vectored: wr.is_write_vectored(),
        ..Batch::default()
    };
    let mut close = false;
    while !close {
        let Some(first) = rx.recv().await else { break };
        // (A batch of several packets is what the node queued for the client while it handled
        // a whole read: written at once. A lone packet, even a read's only one, waits a turn.)
        if rx.is_empty() && matches!(first, Out::Packet(..)) {
            // Let the tasks already runnable (the node task, other sessions) queue more for
            // this client first: under load one write then carries many packets (a syscall
            // per packet was a quarter of a busy node's time); idle, this costs one turn of
            // the scheduler.
            tokio::task::yield_now().await;
        }
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                // The packet's charge comes back once it is in the batch (bounded below: its
                // buffer, and the large payloads it holds until written).
                Out::Packet(p, _charge) => batch.put(&p),
                Out::Batch(packets, _, _charge) => {
                    for p in &packets {
                        batch.put(p);
                    }
                }
                Out::Close => {
                    close = true;
                    break;
                }
            }
            if batch.len() >= 256 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        let n = batch.len();
        if batch.write_to(&mut wr).await.is_err() {
            return;
        }
        queued.fetch_sub(n, Ordering::Relaxed);
        if (close || rx.is_empty()) && wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// Tunnel payloads at least this long are written from their own memory (a vectored write)
/// instead of being copied into the batch's buffer.
const VECTORED_MIN: usize = 16 * 1024;

/// The bytes of one write to a client: packets encoded into a buffer, but for large tunnel
/// payloads, which stay where they are and go out in the same vectored write (on a stream that
/// writes vectors at once: on another, one write per piece would cost more than the copy).
#[derive(Default)]
struct Batch {
    vectored: bool,
    buf: Vec<u8>,
    /// Each payload left out of `buf`, with the offset in `buf` it follows.
    tails: Vec<(usize, bytes::Bytes)>,
    tail_bytes: usize,
}

impl Batch {
    /// The batch's bytes.
    fn len(&self) -> usize {
        self.buf.len() + self.tail_bytes
    }

    fn put(&mut self, p: &NodePacket) {
        match p.encode_head(&mut self.buf) {
            Some(t) if self.vectored && t.len() >= VECTORED_MIN => {
                self.tails.push((self.buf.len(), t.clone()));
                self.tail_bytes += t.len();
            }
            Some(t) => self.buf.extend_from_slice(t),
            None => {}
        }
    }

    /// Writes the whole batch and empties it.
    async fn write_to<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> std::io::Result<()> {
        if self.tails.is_empty() {
            wr.write_all(&self.buf).await?;
        } else {
            let mut slices = Vec::with_capacity(2 * self.tails.len() + 1);
            let mut at = 0;
            for (end, tail) in &self.tails {
                slices.push(std::io::IoSlice::new(&self.buf[at..*end]));
                slices.push(std::io::IoSlice::new(tail));
                at = *end;
            }
            slices.push(std::io::IoSlice::new(&self.buf[at..]));
            slices.retain(|s| !s.is_empty());
            let mut left = &mut slices[..];
            while !left.is_empty() {
                let n = wr.write_vectored(left).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                std::io::IoSlice::advance_slices(&mut left, n);
            }
        }
        self.buf.clear();
        self.tails.clear();
        self.tail_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A stream that takes at most `max` bytes a call, vectored or not as told, and counts its
    /// calls.
    struct Trickle {
        got: Vec<u8>,
        max: usize,
        vectored: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.got.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
                if n == self.max {
                    break;
                }
            }
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_batch_writes_every_packet_in_order_vectored_or_not() {
        let packets: Vec<NodePacket> = (0..6u64)
            .map(|i| {
                let len = if i % 2 == 0 { 70_000 } else { 300 };
                NodePacket::TunTransfer {
                    id: i,
                    size: len as u64,
                    payload: bytes::Bytes::from(vec![i as u8 + 1; len]),
                }
            })
            .chain([NodePacket::TunAllow { id: 9, space: 1 }])
            .collect();
        let mut want = Vec::new();
        for p in &packets {
            p.encode(&mut want);
        }
        let mut calls = Vec::new();
        for vectored in [false, true] {
            let mut wr = Trickle {
                got: Vec::new(),
                max: 50_000,
                vectored,
                calls: 0,
            };
            let mut batch = Batch {
                vectored: wr.is_write_vectored(),
                ..Batch::default()
            };
            for p in &packets {
                batch.put(p);
            }
            assert_eq!(batch.len(), want.len());
            // The large payloads stay out of the buffer only when the stream writes vectors.
            assert_eq!(batch.tails.len(), if vectored { 3 } else { 0 });
            batch.write_to(&mut wr).await.unwrap();
            assert_eq!(wr.got, want, "vectored: {vectored}");
            assert_eq!(batch.len(), 0);
            calls.push(wr.calls);
        }
        // The same number of calls of at most 50,000 bytes: a vectored call fills as a flat
        // one does.
        assert_eq!(calls[0], want.len().div_ceil(50_000));
        assert_eq!(calls[1], calls[0]);
    }
}
