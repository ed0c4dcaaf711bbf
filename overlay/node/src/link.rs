//! Node-to-node links: one TCP stream per peer pair. It opens with the Noise handshake of
//! [`crate::secure`] (which proves both sides' ids and names the address each side's peers dial);
//! then the foundation's length-prefixed frames flow both ways inside authenticated, encrypted
//! records. (With [`LinkSecurity::Plaintext`], for measurements only, a plain hello naming
//! each side replaces the handshake and the frames travel in the clear.)
//!
//! A link is two tasks: a reader that opens records, decodes frames and hands them to the node
//! task (waiting when the node task is busy, so TCP pushes back on the peer), and a writer fed
//! by a queue bounded in messages (`link_queue`, counted in `LinkTraffic::queued`) that
//! batches frames into large sealed writes. The node task hands it what one read queued for
//! the link as one batch (`driver::outbound`). When the node task drops a
//! link's queue the writer sends what is queued and shuts its half down; the reader ends at the
//! peer's EOF. A record that fails authentication (tampered, replayed, reordered) closes the
//! link at once. A link that has heard nothing for `link_keepalive` sends a link-level ping
//! (answered by the far link, never seen by either core); after `link_idle_timeout` of silence
//! it closes, so a black-holed stream (a partition, a peer gone without a reset) is replaced by
//! a fresh dial instead of swallowing frames until TCP gives up.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use bytes::BytesMut;
use petal_protocol::codec::{self, DecodeError};
use petal_protocol::{Message, NodeId, NodeInfo};

use crate::budget::{self, Charge, Queued, Share};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::RuntimeStats;
use crate::driver::Input;
use crate::secure::{self, Entropy, HandshakeError, Identity, LinkSecurity, Opener, Sealer};

/// What a link needs to open: who we are and how links are protected.
#[derive(Clone, Debug)]
pub(crate) struct LinkKeys {
    pub(crate) identity: Identity,
    pub(crate) security: LinkSecurity,
    pub(crate) entropy: Entropy,
    pub(crate) deadline: Duration,
}

/// Opens a link on a fresh stream: the Noise handshake (or the plaintext hello). `me` is the
/// address our peers dial, `observed` the peer's address as the stream sees it, `stream_no`
/// a number unique to this stream on this node (it picks the handshake's randomness).
pub(crate) async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    initiator: bool,
    keys: &LinkKeys,
    me: SocketAddr,
    observed: Option<SocketAddr>,
    stream_no: u64,
) -> Result<(NodeInfo, Sealer, Opener), HandshakeError> {
    match &keys.security {
        LinkSecurity::Noise(key) => {
            let e = secure::handshake(
                stream,
                initiator,
                &keys.identity,
                key,
                me,
                observed,
                keys.entropy,
                stream_no,
                keys.deadline,
            )
            .await?;
            Ok((e.peer, e.sealer, e.opener))
        }
        LinkSecurity::Plaintext => {
            let info = NodeInfo {
                id: keys.identity.node_id(),
                addr: me,
            };
            let mut peer = handshake(stream, info, keys.deadline).await?;
            peer.addr = secure::dialable(peer.addr, observed);
            Ok((peer, Sealer::plaintext(), Opener::plaintext()))
        }
    }
}

/// The first bytes on every plaintext link ([`LinkSecurity::Plaintext`]), both ways. Noise
/// links start with the handshake of [`crate::secure`] instead.
pub const HELLO_MAGIC: &[u8; 8] = b"PETALNK1";
/// Longest hello: magic, id, address.
const HELLO_MAX: usize = 8 + 16 + petal_protocol::addr::MAX_LEN;

/// Encodes a plaintext link's hello naming `me` (unauthenticated: measurements only).
pub fn encode_hello(me: NodeInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(HELLO_MAX);
    out.extend_from_slice(HELLO_MAGIC);
    out.extend_from_slice(&me.id.to_bytes());
    petal_protocol::addr::put(me.addr, &mut out);
    out
}

/// Reads a peer's hello.
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<NodeInfo> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad hello: {what}"));
    let mut head = [0u8; 8 + 16 + 1];
    r.read_exact(&mut head).await?;
    if &head[..8] != HELLO_MAGIC {
        return Err(bad("wrong magic (not a petal node, or another version)"));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&head[8..24]);
    let id = NodeId::from_bytes(id);
    let family = head[24];
    let n = petal_protocol::addr::rest_len(family).ok_or_else(|| bad("unknown address family"))?;
    let mut b = [0u8; petal_protocol::addr::MAX_LEN];
    b[0] = family;
    r.read_exact(&mut b[1..1 + n]).await?;
    let (addr, _) = petal_protocol::addr::parse(&b[..1 + n]).ok_or_else(|| bad("address"))?;
    Ok(NodeInfo { id, addr })
}

/// Exchanges hellos on a fresh stream (both sides write first, so neither waits on the other),
/// within `deadline`.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: NodeInfo,
    deadline: Duration,
) -> io::Result<NodeInfo> {
    let hello = encode_hello(me);
    let exchange = async {
        stream.write_all(&hello).await?;
        stream.flush().await?;
        read_hello(stream).await
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "link handshake timed out",
        )),
    }
}

/// The nonce of link-level keepalives: a link answers `Ping { nonce: LINK_NONCE }` itself and
/// swallows the `Pong`; the core never sees either (its own nonces are drawn below 2^62).
pub const LINK_NONCE: u64 = u64::MAX;

/// How a link watches its peer: a keepalive when it has heard nothing for `keepalive`, and
/// the link closes after `idle` of silence (a black-holed stream would otherwise hold queued
/// frames for as long as TCP retransmits, about 15 minutes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Liveness {
    pub(crate) keepalive: std::time::Duration,
    pub(crate) idle: std::time::Duration,
    /// Messages the writer may hold (`link_queue`): past it the reader's keepalives and
    /// their answers are not queued (a peer that pings and never reads gets no growing queue).
    pub(crate) queue: u64,
}

/// What the node task hands a link's writer: one message, or what one read queued for the
/// link (see `driver::outbound`).
#[derive(Debug)]
pub(crate) enum LinkOut {
    One(Queued),
    Batch {
        msgs: Vec<Message>,
        /// What the batch holds of the budget, given back once it is all encoded.
        charge: Charge,
    },
}

impl LinkOut {
    /// The messages, without their charge.
    pub(crate) fn into_messages(self) -> Vec<Message> {
        match self {
            LinkOut::One(q) => vec![q.msg],
            LinkOut::Batch { msgs, .. } => msgs,
        }
    }
}

/// What one peer link carried, counted by its two tasks (the admin API shows it).
#[derive(Debug)]
pub(crate) struct LinkTraffic {
    /// When the link came up.
    pub(crate) since: tokio::time::Instant,
    /// Bytes read from the socket (records as sent, before they are opened).
    pub(crate) bytes_in: std::sync::atomic::AtomicU64,
    /// Bytes written to the socket.
    pub(crate) bytes_out: std::sync::atomic::AtomicU64,
    /// Messages of the core received (link keepalives not counted).
    pub(crate) messages_in: std::sync::atomic::AtomicU64,
    /// Messages written (link keepalives included; a batch's acknowledgements count as one).
    pub(crate) messages_out: std::sync::atomic::AtomicU64,
    /// Messages handed to the writer and not encoded yet (the queue `link_queue` bounds).
    pub(crate) queued: std::sync::atomic::AtomicU64,
}

impl LinkTraffic {
    pub(crate) fn new() -> Self {
        Self {
            since: tokio::time::Instant::now(),
            bytes_in: 0.into(),
            bytes_out: 0.into(),
            messages_in: 0.into(),
            messages_out: 0.into(),
            queued: 0.into(),
        }
    }
}

/// Runs the reading half of link `link` from `peer` until EOF, a bad frame or record, or
/// `idle` of silence, then reports the link down and stops its writer.
#[expect(
    clippy::too_many_arguments,
    reason = "the read loop owns each of these for its whole life; bundling them would only move the list into a struct used once"
)]
pub(crate) async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    mut opener: Opener,
    stats: Arc<RuntimeStats>,
    peer: NodeInfo,
    link: u64,
    max_frame: usize,
    to_node: mpsc::Sender<Input>,
    writer_tx: mpsc::WeakUnboundedSender<LinkOut>,
    writer: tokio::task::AbortHandle,
    live: Liveness,
    share: Arc<Share>,
    traffic: Arc<LinkTraffic>,
) {
    let mut buf = BytesMut::with_capacity(LINK_BUFFER);
    let mut raw = BytesMut::with_capacity(if opener.is_plaintext() { 0 } else { 80 * 1024 });
    // What a frame larger than `LINK_BUFFER` holds while it arrives (see `frame_charge`).
    let mut frame: Option<Charge> = None;
    let mut last_rx = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(live.keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        // Decode every whole frame already buffered.
        let mut batch = Vec::new();
        // The bytes still missing of the frame under way.
        let mut partial = None;
        let err = loop {
            match codec::decode(&buf, max_frame) {
                Ok((Message::Ping { nonce: LINK_NONCE }, used)) => {
                    let _ = buf.split_to(used);
                    keepalive(
                        &writer_tx,
                        &traffic,
                        live.queue,
                        Message::Pong { nonce: LINK_NONCE },
                    );
                }
                Ok((Message::Pong { nonce: LINK_NONCE }, used)) => {
                    let _ = buf.split_to(used);
                }
                Ok((msg, used)) => {
                    let _ = buf.split_to(used);
                    batch.push(msg);
                    // Decoded: the message is charged with the batch from here on, and the
                    // frame's buffer is given back too (kept, it would stay outside the budget
                    // for as long as the link lives).
                    if frame.take().is_some() {
                        shrink(&mut buf);
                    }
                }
                Err(DecodeError::Truncated { needed }) => {
                    partial = Some(needed);
                    break None;
                }
                Err(e) => break Some(e.to_string()),
            }
        };
        RuntimeStats::add(&traffic.messages_in, batch.len() as u64);
        let charge = if batch.is_empty() {
            None
        } else {
            let cost = batch.iter().map(budget::message_cost).sum();
            Some(budget::charge_input(&share, cost).await)
        };
        if let Some(charge) = charge
            && to_node
                .send(Input::Peer {
                    from: peer,
                    link,
                    msgs: batch,
                    charge,
                })
                .await
                .is_err()
        {
            writer.abort();
            return;
        }
        if let Some(e) = err {
            break format!("bad frame: {e}");
        }
        if let Some(needed) = partial {
            // Charged after the batch, so that the two never wait on each other.
            if frame.is_none() {
                frame = frame_charge(&share, buf.len() + needed).await;
            }
            buf.reserve(needed.min(max_frame));
        }
        let into = if opener.is_plaintext() {
            &mut buf
        } else {
            &mut raw
        };
        tokio::select! {
            biased;
            r = rd.read_buf(into) => match r {
                Ok(0) => break "closed by the peer".to_string(),
                Ok(n) => {
                    RuntimeStats::add(&traffic.bytes_in, n as u64);
                    last_rx = tokio::time::Instant::now();
                    if !opener.is_plaintext()
                        && let Err(e) = opener.open(&mut raw, &mut buf)
                    {
                        RuntimeStats::add(&stats.link_auth_failures, 1);
                        tracing::warn!(peer = %peer.id, addr = %peer.addr, error = %e, "closing a peer link");
                        break e.to_string();
                    }
                }
                Err(e) => break format!("read error: {e}"),
            },
            _ = tick.tick() => {
                let quiet = last_rx.elapsed();
                if quiet >= live.idle {
                    break format!("silent for {quiet:?}");
                }
                if quiet >= live.keepalive {
                    keepalive(&writer_tx, &traffic, live.queue, Message::Ping { nonce: LINK_NONCE });
                }
            }
        }
    };
    // A stalled stream can hold the writer in a write for ever: stop it.
    writer.abort();
    let _ = to_node
        .send(Input::LinkDown {
            peer: peer.id,
            link,
            why,
        })
        .await;
}

/// Queues a link-level keepalive (or its answer) for the writer, unless the writer is gone or
/// holds `limit` messages already.
fn keepalive(
    writer: &mpsc::WeakUnboundedSender<LinkOut>,
    traffic: &LinkTraffic,
    limit: u64,
    msg: Message,
) {
    use std::sync::atomic::Ordering;
    let Some(tx) = writer.upgrade() else { return };
    if traffic.queued.load(Ordering::Acquire) >= limit {
        return;
    }
    traffic.queued.fetch_add(1, Ordering::AcqRel);
    if tx.send(LinkOut::One(Queued::free(msg))).is_err() {
        traffic.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A link's read buffer, which frames up to this size use without a charge of their own: room
/// for a tunnel chunk of the default largest size (`tunnel_chunk_limit`, 64 KiB) and its
/// frame's header. (At 64 KiB every such chunk took a charge of its own and, once decoded,
/// a copy of what followed it into a fresh buffer.)
const LINK_BUFFER: usize = 80 * 1024;

/// Moves what `buf` holds into a buffer of the usual size (or of its length, if longer), so
/// that the large allocation a large frame needed is freed (its capacity as `buf` reports it
/// may be small, while `reserve` would take the whole allocation back). What follows the
/// frame is copied: at most what the same reads brought.
fn shrink(buf: &mut BytesMut) {
    let mut fresh = BytesMut::with_capacity(LINK_BUFFER.max(buf.len()));
    fresh.extend_from_slice(buf);
    *buf = fresh;
}

/// The charge of a frame of `total` bytes under way, when it is larger than [`LINK_BUFFER`]:
/// its buffer is taken from the peer's share of the node's memory budget as soon as the
/// frame's header names it (waiting, and so not reading the link, while the share holds the
/// peer's earlier input), and given back once the frame is decoded or the link ends. Before,
/// a peer could name a frame of up to `max_frame` bytes and send part of it, and the node held
/// that buffer outside the budget for as long as the link lived.
async fn frame_charge(share: &Arc<Share>, total: usize) -> Option<Charge> {
    if total <= LINK_BUFFER {
        return None;
    }
    Some(budget::charge_input(share, total as u64).await)
}

/// Runs the writing half: frames from `rx`, batched into writes of about 256 KiB (a batch from
/// the node task is cut there too), flushed when the queue is momentarily empty. Ends (shutting
/// the half down) when the queue is dropped.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut sealer: Sealer,
    mut rx: mpsc::UnboundedReceiver<LinkOut>,
    traffic: Arc<LinkTraffic>,
) -> io::Result<()> {
    use std::sync::atomic::Ordering;
    const WRITE: usize = 256 * 1024;
    // The records of one write, built in place: frames are encoded into the open record and
    // sealed there (a tunnel chunk's payload copied once, from the message into the record).
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE + secure::MAX_RECORD + 64);
    // A batch cut at a write's end: the rest of its messages, and its charge, given back once
    // they are all encoded.
    let mut rest: Option<(std::vec::IntoIter<Message>, Charge)> = None;
    loop {
        let mut messages = 0u64;
        let mut w = sealer.records(&mut buf);
        while w.len() < WRITE {
            if let Some((msgs, _)) = &mut rest {
                if let Some(msg) = msgs.next() {
                    put(&mut w, &msg)?;
                    messages += 1;
                }
                if msgs.as_slice().is_empty() {
                    // All encoded: the charge comes back, and the flush below is not held
                    // back by an empty remainder.
                    rest = None;
                }
                continue;
            }
            let item = if messages == 0 {
                match rx.recv().await {
                    Some(item) => item,
                    None => return wr.shutdown().await,
                }
            } else {
                match rx.try_recv() {
                    Ok(item) => item,
                    Err(_) => break,
                }
            };
            match item {
                // Each message's charge comes back once it is encoded (the write buffer is
                // bounded).
                LinkOut::One(q) => {
                    put(&mut w, &q.msg)?;
                    messages += 1;
                }
                LinkOut::Batch { msgs, charge } => rest = Some((msgs.into_iter(), charge)),
            }
        }
        w.finish()?;
        traffic.queued.fetch_sub(messages, Ordering::AcqRel);
        wr.write_all(&buf).await?;
        RuntimeStats::add(&traffic.messages_out, messages);
        RuntimeStats::add(&traffic.bytes_out, buf.len() as u64);
        buf.clear();
        if rest.is_none() && rx.is_empty() {
            wr.flush().await?;
        }
    }
}

/// Encodes `msg` into the records `w` builds: its head in place, then its tail (a tunnel
/// chunk's payload) straight from the message.
fn put(w: &mut secure::RecordWriter<'_>, msg: &Message) -> io::Result<()> {
    let tail = codec::encode_head(msg, w.tail());
    w.settle()?;
    w.write(tail)
}

/// Who opened a link: the rule that keeps one link per pair when both sides dial at once is
/// "keep the link dialed by the smaller id".
pub fn dialer(me: NodeId, peer: NodeId, dialed_by_me: bool) -> NodeId {
    if dialed_by_me { me } else { peer }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hello_round_trip_v4_and_v6() {
        for addr in ["10.1.2.3:4000", "[::1]:55556"] {
            let me = NodeInfo {
                id: NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
                addr: addr.parse().unwrap(),
            };
            let bytes = encode_hello(me);
            let got = read_hello(&mut &bytes[..]).await.unwrap();
            assert_eq!(got, me);
        }
    }

    #[tokio::test]
    async fn bad_hellos_are_errors() {
        let me = NodeInfo {
            id: NodeId(7),
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let mut bytes = encode_hello(me);
        bytes[0] = b'X';
        assert!(read_hello(&mut &bytes[..]).await.is_err());
        let mut bytes = encode_hello(me);
        bytes[24] = 5;
        assert!(read_hello(&mut &bytes[..]).await.is_err());
        let bytes = encode_hello(me);
        assert!(read_hello(&mut &bytes[..bytes.len() - 1]).await.is_err());
    }

    #[test]
    fn one_link_per_pair_rule_agrees_on_both_sides() {
        let (a, b) = (NodeId(1), NodeId(2));
        // The link a dialed is "dialed by a" on both sides.
        assert_eq!(dialer(a, b, true), dialer(b, a, false));
        assert_eq!(dialer(a, b, false), dialer(b, a, true));
    }

    /// The writer encodes a batch larger than one write over several writes, in order, and a
    /// lone message sent after the batch follows it; once all is written the queue's count is
    /// back to zero and the batch's charge is given back.
    #[tokio::test]
    async fn the_writer_cuts_a_large_batch_and_keeps_the_order() {
        use std::sync::atomic::Ordering;
        let (wr, mut rd) = tokio::io::duplex(1 << 16);
        let (tx, rx) = mpsc::unbounded_channel();
        let traffic = Arc::new(LinkTraffic::new());
        let share = Share::new(Arc::new(petal_core::MemoryBudget::new(1 << 30)), 1 << 30);
        let writer = tokio::spawn(write_loop(wr, Sealer::plaintext(), rx, traffic.clone()));
        // 100 chunks of 8 KiB: about 800 KiB, more than three writes of 256 KiB.
        let msgs: Vec<Message> = (0..100u64)
            .map(|seq| Message::TunnelData {
                tunnel: 1,
                sender_tunnel: 2,
                seq,
                size: 0,
                payload: bytes::Bytes::from(vec![seq as u8; 8192]),
            })
            .collect();
        let mut charge = Charge::none();
        for m in &msgs {
            charge.absorb(share.charge(budget::message_cost(m)).unwrap());
        }
        assert!(share.held() > 800_000);
        traffic.queued.fetch_add(101, Ordering::AcqRel);
        tx.send(LinkOut::Batch { msgs, charge }).unwrap();
        tx.send(LinkOut::One(Queued::free(Message::Ping { nonce: 7 })))
            .unwrap();
        drop(tx);
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap().unwrap();
        let mut at = 0;
        for seq in 0..100u64 {
            let (m, used) = codec::decode(&got[at..], 1 << 20).unwrap();
            at += used;
            assert!(
                matches!(&m, Message::TunnelData { seq: s, payload, .. } if *s == seq && payload.len() == 8192 && payload[0] == seq as u8),
                "chunk {seq}"
            );
        }
        let (last, used) = codec::decode(&got[at..], 1 << 20).unwrap();
        assert_eq!((last, at + used), (Message::Ping { nonce: 7 }, got.len()));
        assert_eq!(traffic.queued.load(Ordering::Acquire), 0);
        assert_eq!(traffic.messages_out.load(Ordering::Acquire), 101);
        assert_eq!(share.held(), 0, "the batch's charge came back");
    }

    /// After a large frame, what follows it moves to a buffer of the usual size (or of its
    /// length): the frame's allocation is freed, where `reserve` would have taken all of it
    /// back.
    #[test]
    fn a_large_frame_s_buffer_is_given_back() {
        for rest in [10, 3 * LINK_BUFFER] {
            let mut buf = BytesMut::with_capacity(1 << 20);
            buf.resize(1 << 20, 7);
            let _ = buf.split_to((1 << 20) - rest);
            shrink(&mut buf);
            buf.reserve(100);
            // Without the move, `reserve` takes the whole 1 MiB back.
            assert!(buf.capacity() < 1 << 19, "{}", buf.capacity());
            assert_eq!(buf.len(), rest);
            assert!(buf.iter().all(|&b| b == 7));
        }
    }
}
