//! The socket side: the handshake, the reader task (decode and dispatch) and the writer task
//! (batching writes).

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use bytes::BytesMut;
use petal_protocol::relay::ext::EXT_VERSION;
use petal_protocol::relay::{CLIENT_MAGIC, ClientPacket, NodePacket, RELAY_MAGIC, VERSION};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::conn::{Inner, Waiter};
use crate::error::{Ended, Error};
use crate::pool::lock;
use crate::service::RequestItem;
use crate::transport::PacketSource;
use crate::tunnel;

/// Bytes the writer gathers before writing, and the reader's read size.
const BATCH: usize = 64 * 1024;

/// True when the node refused the handshake for its version (an Iris node refusing Petal's
/// extension): a plain v1 handshake may work.
pub(crate) fn denied_for_version(e: &Error) -> bool {
    matches!(e, Error::Denied(reason) if reason.contains("Unsupported protocol"))
}

/// Sends INIT (asking for Petal's extension when `options.extensions`) and reads the node's
/// answer. Returns what was read past the answer, and whether the extension was granted.
pub(crate) async fn handshake<R, W>(
    rd: &mut R,
    wr: &mut W,
    cluster: &str,
    options: &crate::Options,
) -> Result<(BytesMut, bool), Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = &options.decode_limits;
    let asked = if options.extensions {
        EXT_VERSION
    } else {
        VERSION
    };
    let mut out = Vec::new();
    ClientPacket::Init {
        magic: CLIENT_MAGIC.to_owned(),
        version: asked.to_owned(),
        cluster: cluster.to_owned(),
    }
    .encode(&mut out);
    wr.write_all(&out).await?;
    wr.flush().await?;
    let mut buf = BytesMut::with_capacity(BATCH);
    loop {
        if let Some(packet) = NodePacket::decode(&mut buf, limits)? {
            return match packet {
                NodePacket::Init { magic, version } if magic == RELAY_MAGIC => {
                    if version != asked && version != VERSION {
                        tracing::warn!(%version, ours = asked, "node accepted with another version");
                    }
                    Ok((buf, version == EXT_VERSION))
                }
                NodePacket::Init { magic, .. } => {
                    Err(Error::Handshake(format!("node sent the magic {magic:?}")))
                }
                NodePacket::Deny { reason, .. } => Err(Error::Denied(reason)),
                other => Err(Error::Handshake(format!(
                    "expected INIT or DENY, got opcode 0x{:02x}",
                    other.opcode()
                ))),
            };
        }
        if rd.read_buf(&mut buf).await? == 0 {
            return Err(Error::Handshake(
                "the node closed the connection".to_owned(),
            ));
        }
    }
}

/// Waits for the node's answer to an in-process attach. Returns whether Petal's extension was
/// granted.
pub(crate) async fn handshake_packets<S: PacketSource>(source: &mut S) -> Result<bool, Error> {
    match std::future::poll_fn(|cx| source.poll_recv(cx)).await {
        Some(NodePacket::Init { magic, version }) if magic == RELAY_MAGIC => {
            Ok(version == EXT_VERSION)
        }
        Some(NodePacket::Init { magic, .. }) => {
            Err(Error::Handshake(format!("node sent the magic {magic:?}")))
        }
        Some(NodePacket::Deny { reason, .. }) => Err(Error::Denied(reason)),
        Some(other) => Err(Error::Handshake(format!(
            "expected INIT or DENY, got opcode 0x{:02x}",
            other.opcode()
        ))),
        None => Err(Error::Handshake("the node ended the session".to_owned())),
    }
}

/// Takes the node's packets from an in-process transport and dispatches them until the
/// connection ends.
pub(crate) async fn run_packet_reader<S: PacketSource>(
    inner: Arc<Inner>,
    mut source: S,
    mut ended: watch::Receiver<Option<Ended>>,
) {
    // One `changed` future for the reader's life: polling it again checks its registered
    // waiter, where a new one per packet registered and removed a waiter each time.
    let mut changed = std::pin::pin!(ended.changed());
    let (end, notify) = loop {
        let packet = std::future::poll_fn(|cx| {
            // Biased: once the connection has ended, nothing more is dispatched.
            if changed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            source.poll_recv(cx).map(Some)
        })
        .await;
        let Some(packet) = packet else {
            return;
        };
        match packet {
            Some(packet) => match dispatch(&inner, packet) {
                ControlFlow::Continue(()) => {}
                ControlFlow::Break(end) => break end,
            },
            None if inner.closing.load(Ordering::Acquire) => {
                break (Ended::Closed("connection closed".to_owned()), false);
            }
            None => {
                break (
                    Ended::Broken(
                        "the node ended the session without a CLOSE (cut off, or stopped)"
                            .to_owned(),
                    ),
                    true,
                );
            }
        }
    };
    inner.shutdown(end, notify);
}

/// The writer task: finishes the writes the outbox hands over, and reports a write failure.
pub(crate) async fn run_writer(inner: Arc<Inner>) {
    if let Some(e) = inner.out.run_writer().await {
        let closing = inner.closing.load(Ordering::Acquire);
        inner.shutdown(Ended::Broken(format!("write failed: {e}")), !closing);
    }
}

/// Owns the read half: decodes node packets and dispatches them until the connection ends.
pub(crate) async fn run_reader<R>(
    inner: Arc<Inner>,
    mut rd: R,
    mut buf: BytesMut,
    mut ended: watch::Receiver<Option<Ended>>,
) where
    R: AsyncRead + Send + Unpin,
{
    let limits = inner.options.decode_limits;
    let (end, notify) = loop {
        match NodePacket::decode(&mut buf, &limits) {
            Ok(Some(packet)) => match dispatch(&inner, packet) {
                ControlFlow::Continue(()) => continue,
                ControlFlow::Break(end) => break end,
            },
            Ok(None) => {}
            Err(e) => {
                break (
                    Ended::Broken(format!("protocol violation by the node: {e}")),
                    true,
                );
            }
        }
        if buf.capacity() - buf.len() < BATCH / 4 {
            buf.reserve(BATCH);
        }
        let read = tokio::select! {
            biased;
            _ = ended.changed() => return,
            read = rd.read_buf(&mut buf) => read,
        };
        let closing = inner.closing.load(Ordering::Acquire);
        match read {
            Ok(n) if n > 0 => {}
            Ok(_) if closing => break (Ended::Closed("connection closed".to_owned()), false),
            Ok(_) => {
                break (
                    Ended::Broken("the node closed the socket without a CLOSE".to_owned()),
                    true,
                );
            }
            Err(e) if closing => break (Ended::Closed(format!("connection closed ({e})")), false),
            Err(e) => break (Ended::Broken(format!("read failed: {e}")), true),
        }
    };
    inner.shutdown(end, notify);
}

/// Handles one packet from the node. `Break` ends the connection: how, and whether to tell the
/// service handler.
fn dispatch(inner: &Arc<Inner>, packet: NodePacket) -> ControlFlow<(Ended, bool)> {
    match packet {
        NodePacket::Reply { id, outcome } => {
            let waiter = lock(&inner.pending).take(id);
            match waiter {
                Ok(Some(Waiter::Reply(tx))) => {
                    if tx.send(outcome).is_err() {
                        inner.counters.ignored("reply to an abandoned request");
                    }
                }
                Ok(Some(Waiter::Kv(_) | Waiter::Id(_))) => {
                    inner
                        .counters
                        .ignored("reply to a store or identity operation");
                    inner.counters.unexpected_reply();
                }
                Ok(None) => inner.counters.ignored("reply to an abandoned request"),
                Err(()) => {
                    inner.counters.ignored("reply to an unknown request");
                    inner.counters.unexpected_reply();
                }
            }
        }
        NodePacket::Request {
            id,
            request,
            timeout_ms,
        } => match &inner.service {
            Some(service) => service
                .requests
                .submit(RequestItem::new(id, request, timeout_ms)),
            None => inner
                .counters
                .ignored("request delivered to a plain client"),
        },
        NodePacket::Broadcast { message } => match &inner.service {
            Some(service) => service.broadcasts.submit(message),
            None => inner
                .counters
                .ignored("broadcast delivered to a plain client"),
        },
        NodePacket::Publish { topic, event } => {
            let topics = lock(&inner.topics);
            match topics.get(&*topic) {
                Some(pool) => pool.submit(event),
                None => inner.counters.ignored("event for a topic not subscribed"),
            }
        }
        NodePacket::TunInit {
            build_id,
            chunk_limit,
        } => {
            tunnel::accept(inner, build_id, chunk_limit);
        }
        NodePacket::TunConfirm { id, chunk_limit } => tunnel::confirmed(inner, id, chunk_limit),
        NodePacket::TunAllow { id, space } => match inner.tunnel(id) {
            Some(tunnel) => tunnel.add_credit(space),
            None => inner.counters.ignored("credit for an unknown tunnel"),
        },
        NodePacket::TunTransfer { id, size, payload } => match inner.tunnel(id) {
            Some(tunnel) => tunnel.on_transfer(inner, size, payload),
            None => inner.counters.ignored("data for an unknown tunnel"),
        },
        NodePacket::TunClose { id, reason } => tunnel::closed(inner, id, reason),
        NodePacket::KvResult { id, result } => {
            let waiter = lock(&inner.pending).take(id);
            match waiter {
                Ok(Some(Waiter::Kv(tx))) => {
                    if tx.send(result).is_err() {
                        inner
                            .counters
                            .ignored("result of an abandoned store operation");
                    }
                }
                Ok(None) => inner
                    .counters
                    .ignored("result of an abandoned store operation"),
                Ok(Some(Waiter::Reply(_) | Waiter::Id(_))) | Err(()) => {
                    inner
                        .counters
                        .ignored("result of an unknown store operation");
                    inner.counters.unexpected_reply();
                }
            }
        }
        NodePacket::IdResult { id, result } => {
            let waiter = lock(&inner.pending).take(id);
            match waiter {
                Ok(Some(Waiter::Id(tx))) => {
                    if tx.send(result).is_err() {
                        inner
                            .counters
                            .ignored("result of an abandoned identity operation");
                    }
                }
                Ok(None) => inner
                    .counters
                    .ignored("result of an abandoned identity operation"),
                Ok(Some(Waiter::Reply(_) | Waiter::Kv(_))) | Err(()) => {
                    inner
                        .counters
                        .ignored("result of an unknown identity operation");
                    inner.counters.unexpected_reply();
                }
            }
        }
        NodePacket::IdMessage { identity, message } => {
            let handlers = lock(&inner.identities);
            match handlers.get(identity.as_str()) {
                Some(pool) => pool.submit(message),
                None => inner.counters.ignored("message for an identity not held"),
            }
        }
        NodePacket::Close { reason } => {
            let closing = inner.closing.load(Ordering::Acquire);
            if reason.is_empty() && closing {
                tracing::debug!("close acknowledged by the node");
            } else {
                let reason = if reason.is_empty() {
                    "closed by the node".to_owned()
                } else {
                    reason
                };
                return ControlFlow::Break((Ended::Closed(reason), !closing));
            }
        }
        NodePacket::Init { .. } | NodePacket::Deny { .. } => {
            return ControlFlow::Break((
                Ended::Broken(
                    "protocol violation by the node: handshake packet after the handshake"
                        .to_owned(),
                ),
                true,
            ));
        }
    }
    ControlFlow::Continue(())
}
