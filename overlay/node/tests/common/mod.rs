//! Test helpers: nodes on loopback with OS-chosen ports, and a raw relay v1 client that speaks
//! packets (or raw bytes) so that tests see exactly what the node writes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use petal_node::{Identity, LinkSecurity, NetworkKey, NodeHandle, Options, TokioNet};
use petal_protocol::relay::{self, ClientPacket, Limits, NodePacket, ReplyOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The network key of test nodes.
pub(crate) fn test_key() -> NetworkKey {
    NetworkKey::from_bytes([0x5a; 32])
}

/// Options for test node number `n` (its identity derives from `n`; Noise links under
/// [`test_key`]): relay and peers on 127.0.0.1 with free ports, fast timers.
pub(crate) fn options(n: u128, seeds: Vec<SocketAddr>) -> Options {
    let mut o = Options::new(
        Identity::from_seed((n as u64) ^ ((n >> 64) as u64)),
        LinkSecurity::Noise(test_key()),
    );
    o.relay_addrs = vec!["127.0.0.1:0".parse().unwrap()];
    o.peer_listen = "127.0.0.1:0".parse().unwrap();
    o.seeds = seeds;
    o.handshake_timeout = Duration::from_millis(500);
    // Every test node and fake peer dials from 127.0.0.1.
    o.max_link_handshakes_per_ip = o.max_link_handshakes;
    o.close_linger = Duration::from_millis(500);
    o
}

pub(crate) async fn node(id: u128, seeds: Vec<SocketAddr>) -> NodeHandle {
    petal_node::spawn(TokioNet, options(id, seeds))
        .await
        .unwrap()
}

pub(crate) fn relay_addr(n: &NodeHandle) -> SocketAddr {
    n.relay_addrs()[0]
}

/// Waits until every node is in a ring with at least `leaf` leaf-set members (5 s at most).
pub(crate) async fn wait_ready(nodes: &[&NodeHandle], leaf: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut ok = true;
        for n in nodes {
            let s = n.stats().await.unwrap();
            ok &= s.ready && s.leaf_set >= leaf;
        }
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Three nodes on loopback (the second and third join through the first), converged.
pub(crate) async fn three_nodes() -> [NodeHandle; 3] {
    let a = node(0x1000_0000_0000_0000_0000_0000_0000_0000, vec![]).await;
    let seed = a.info().addr;
    let b = node(0x5000_0000_0000_0000_0000_0000_0000_0000, vec![seed]).await;
    let c = node(0xa000_0000_0000_0000_0000_0000_0000_0000, vec![seed]).await;
    wait_ready(&[&a, &b, &c], 2).await;
    [a, b, c]
}

/// A small deterministic random generator (SplitMix64) for seeded hostile-input loops.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// `n` bytes of a recognisable pattern (byte i of message `tag` is `tag * 31 + i * 7 (mod 251)`),
/// so that a reordered, duplicated or truncated chunk shows in a comparison.
pub(crate) fn pattern(tag: u64, n: usize) -> Bytes {
    (0..n)
        .map(|i| ((tag as usize * 31 + i * 7) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The encoding of a client packet.
pub(crate) fn encode(p: &ClientPacket) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(&mut out);
    out
}

/// The encoding of a node packet.
pub(crate) fn encode_node(p: &NodePacket) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(&mut out);
    out
}

/// Decodes every packet of `bytes`; panics on a malformed or trailing partial packet.
pub(crate) fn decode_all(bytes: &[u8]) -> Vec<NodePacket> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        match NodePacket::decode(&mut buf, &Limits::default()) {
            Ok(Some(p)) => out.push(p),
            Ok(None) => panic!(
                "the node wrote a partial packet at the end: {:02x?}",
                &buf[..]
            ),
            Err(e) => panic!("the node wrote a malformed packet ({e}): {:02x?}", &buf[..]),
        }
    }
    out
}

pub(crate) fn init_packet(cluster: &str) -> ClientPacket {
    ClientPacket::Init {
        magic: relay::CLIENT_MAGIC.into(),
        version: relay::VERSION.into(),
        cluster: cluster.into(),
    }
}

/// Sends `ping` requests from `cli` to `cluster` (200 ms timeout each) until `svc` receives
/// one (a new member's registration travels to the cluster's root first): the last request's
/// id and what `svc` received. Panics after 20 tries.
pub(crate) async fn request_until_delivered(
    cli: &mut Raw,
    svc: &mut Raw,
    cluster: &str,
) -> (u64, Option<NodePacket>) {
    let mut id = 0;
    loop {
        id += 1;
        cli.send(ClientPacket::Request {
            id,
            cluster: cluster.into(),
            request: Bytes::from_static(b"ping"),
            timeout_ms: 200,
        })
        .await;
        tokio::select! {
            p = svc.recv() => return (id, p),
            p = cli.recv() => assert_eq!(p, Some(NodePacket::Reply { id, outcome: ReplyOutcome::Timeout })),
        }
        assert!(id < 20, "no request reached a member of {cluster}");
    }
}

/// A relay client at the packet level.
pub(crate) struct Raw {
    pub s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub(crate) async fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            buf: BytesMut::new(),
        }
    }

    /// Connects and completes the handshake as `cluster` ("" = plain client).
    pub(crate) async fn attach(addr: SocketAddr, cluster: &str) -> Raw {
        let mut r = Raw::connect(addr).await;
        r.send(init_packet(cluster)).await;
        match r.recv().await {
            Some(NodePacket::Init { magic, version }) => {
                assert_eq!(magic, relay::RELAY_MAGIC);
                assert_eq!(version, relay::VERSION);
            }
            other => panic!("handshake answered with {other:?}"),
        }
        r
    }

    pub(crate) async fn send(&mut self, p: ClientPacket) {
        self.s.write_all(&encode(&p)).await.unwrap();
    }

    pub(crate) async fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }

    /// Writes `b`, ignoring errors (the node may already have closed a hostile connection).
    pub(crate) async fn send_bytes_lossy(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b).await;
    }

    /// Closes the writing half (the node sees EOF).
    pub(crate) async fn shutdown_write(&mut self) {
        let _ = self.s.shutdown().await;
    }

    /// The next packet (None at EOF); panics after 5 s of silence.
    pub(crate) async fn recv(&mut self) -> Option<NodePacket> {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("no packet within 5 s")
    }

    /// The next packet, which must exist (panics at EOF or after 5 s).
    pub(crate) async fn next(&mut self) -> NodePacket {
        self.recv().await.expect("EOF instead of a packet")
    }

    /// Asserts that the next packet is `want`.
    pub(crate) async fn expect(&mut self, want: NodePacket) {
        assert_eq!(self.recv().await, Some(want));
    }

    /// The next packet within `d`: Err on silence, Ok(None) at EOF.
    pub(crate) async fn recv_within(&mut self, d: Duration) -> Result<Option<NodePacket>, ()> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(p) = NodePacket::decode(&mut self.buf, &Limits::default()).unwrap() {
                return Ok(Some(p));
            }
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Ok(None),
            }
        }
    }

    /// Asserts that nothing (no packet, no EOF) arrives within `d`.
    pub(crate) async fn expect_silence(&mut self, d: Duration) {
        if let Ok(p) = self.recv_within(d).await {
            panic!("expected silence, got {p:?}");
        }
    }

    /// Exactly `n` bytes, as the node wrote them (panics after 5 s or at EOF).
    pub(crate) async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut got = self.buf.split_to(n.min(self.buf.len())).to_vec();
        let have = got.len();
        got.resize(n, 0);
        tokio::time::timeout(Duration::from_secs(5), self.s.read_exact(&mut got[have..]))
            .await
            .expect("no bytes within 5 s")
            .expect("EOF or error before the bytes");
        got
    }

    /// Every byte until EOF (panics after 5 s).
    pub(crate) async fn read_to_end(&mut self) -> Vec<u8> {
        let mut v = self.buf.split().to_vec();
        tokio::time::timeout(Duration::from_secs(5), self.s.read_to_end(&mut v))
            .await
            .expect("no EOF within 5 s")
            .ok();
        v
    }

    /// Asserts that the node closes the connection without writing a byte (more).
    pub(crate) async fn expect_eof_no_bytes(&mut self) {
        let got = self.read_to_end().await;
        assert!(got.is_empty(), "expected EOF with no bytes, got {got:02x?}");
    }

    /// Proves that nothing was queued for this connection before now: subscribes to a topic of
    /// its own, publishes to it, and asserts that the marker event is the next packet. On one
    /// node every earlier delivery to this connection is queued before the marker.
    pub(crate) async fn assert_nothing_queued(&mut self) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let topic = format!("petal-test-marker-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.send(ClientPacket::Subscribe {
            topic: topic.clone(),
        })
        .await;
        self.send(ClientPacket::Publish {
            topic: topic.clone(),
            event: Bytes::from_static(b"marker"),
        })
        .await;
        let got = self.recv().await;
        assert_eq!(
            got,
            Some(NodePacket::Publish {
                topic: topic.as_str().into(),
                event: Bytes::from_static(b"marker")
            }),
            "something was delivered before the marker"
        );
        self.send(ClientPacket::Unsubscribe { topic }).await;
    }

    /// A request from this connection (a member of `cluster`) to its own cluster, answered by
    /// itself: proves that the node serves it end to end.
    pub(crate) async fn self_request(&mut self, cluster: &str, id: u64) {
        self.send(ClientPacket::Request {
            id,
            cluster: cluster.into(),
            request: Bytes::from_static(b"are you there"),
            timeout_ms: 2000,
        })
        .await;
        let Some(NodePacket::Request {
            id: d,
            request,
            timeout_ms,
        }) = self.recv().await
        else {
            panic!("no request delivery")
        };
        assert_eq!((&request[..], timeout_ms), (&b"are you there"[..], 2000));
        self.send(ClientPacket::Reply {
            id: d,
            result: Ok(Bytes::from_static(b"yes")),
        })
        .await;
        self.expect(NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Success(Bytes::from_static(b"yes")),
        })
        .await;
    }
}

/// A well-behaved connection that proves the node still works after an attack on another
/// connection: a request to its own cluster answered by itself, and a publish to itself.
pub(crate) struct Healthy {
    raw: Raw,
    cluster: String,
    next: u64,
}

impl Healthy {
    pub(crate) async fn new(addr: SocketAddr) -> Healthy {
        let cluster = "petal-test-healthy".to_string();
        let raw = Raw::attach(addr, &cluster).await;
        Healthy {
            raw,
            cluster,
            next: 0,
        }
    }

    /// Asserts that the node still serves this connection (within 2 s).
    pub(crate) async fn check(&mut self) {
        let t0 = Instant::now();
        self.next += 1;
        self.raw.self_request(&self.cluster, self.next).await;
        self.raw.assert_nothing_queued().await;
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the healthy connection took {:?}",
            t0.elapsed()
        );
    }
}

/// Opens a tunnel from `opener` (its tunnel id `id`) to `cluster`, which `svc` serves, and
/// checks every packet of the exchange: the service gets `09 build 65536`, confirms as
/// `svc_id` and grants `svc_credit`; it gets `0b svc_id 4194304`; the opener gets
/// `0a id 00 65536` and `0b id 4194304`, and grants `opener_credit`.
pub(crate) async fn open_tunnel(
    opener: &mut Raw,
    id: u64,
    cluster: &str,
    svc: &mut Raw,
    svc_id: u64,
    opener_credit: u64,
    svc_credit: u64,
) {
    opener
        .send(ClientPacket::TunInit {
            id,
            cluster: cluster.into(),
            timeout_ms: 2000,
        })
        .await;
    let Some(NodePacket::TunInit {
        build_id,
        chunk_limit,
    }) = svc.recv().await
    else {
        panic!("no tunnel offer")
    };
    assert_eq!(chunk_limit, 65536);
    svc.send(ClientPacket::TunConfirm {
        build_id,
        tun_id: svc_id,
    })
    .await;
    svc.send(ClientPacket::TunAllow {
        id: svc_id,
        space: svc_credit,
    })
    .await;
    svc.expect(NodePacket::TunAllow {
        id: svc_id,
        space: relay::NODE_TUNNEL_CREDIT,
    })
    .await;
    opener
        .expect(NodePacket::TunConfirm {
            id,
            chunk_limit: Some(65536),
        })
        .await;
    opener
        .expect(NodePacket::TunAllow {
            id,
            space: relay::NODE_TUNNEL_CREDIT,
        })
        .await;
    opener
        .send(ClientPacket::TunAllow {
            id,
            space: opener_credit,
        })
        .await;
}

/// The sending side of one tunnel end: keeps the credit the node granted and never sends
/// beyond it (reading TUN_ALLOW packets when it must wait).
pub(crate) struct TunSender {
    pub id: u64,
    pub credit: u64,
}

impl TunSender {
    /// A fresh end with the node's initial credit.
    pub(crate) fn new(id: u64) -> Self {
        TunSender {
            id,
            credit: relay::NODE_TUNNEL_CREDIT,
        }
    }

    /// Sends `data` as one message in chunks of at most `chunk` bytes, waiting for credit as
    /// needed. Packets other than this tunnel's TUN_ALLOW are a test failure.
    pub(crate) async fn send(&mut self, raw: &mut Raw, data: &[u8], chunk: usize) {
        for (i, part) in data.chunks(chunk).enumerate() {
            while self.credit < part.len() as u64 {
                match raw.next().await {
                    NodePacket::TunAllow { id, space } if id == self.id => self.credit += space,
                    other => panic!("sender got {other:?} while waiting for credit"),
                }
            }
            self.credit -= part.len() as u64;
            raw.send(ClientPacket::TunTransfer {
                id: self.id,
                size: if i == 0 { data.len() as u64 } else { 0 },
                payload: Bytes::copy_from_slice(part),
            })
            .await;
        }
    }
}

/// Receives one whole message on tunnel `id`: the first chunk must carry the total size and
/// every later chunk 0. TUN_ALLOW packets (credit for this connection's own sending) are
/// skipped; packets of other kinds or tunnels are a test failure.
pub(crate) async fn recv_message(raw: &mut Raw, id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut total = None;
    loop {
        match raw.next().await {
            NodePacket::TunTransfer {
                id: got,
                size,
                payload,
            } if got == id => {
                assert!(payload.len() <= 65536, "chunk of {} bytes", payload.len());
                match total {
                    None => {
                        assert!(size > 0, "a message started with a continuation chunk");
                        total = Some(size as usize);
                    }
                    Some(_) => assert_eq!(size, 0, "a continuation chunk carried a size"),
                }
                out.extend_from_slice(&payload);
                let t = total.expect("set");
                assert!(out.len() <= t, "message longer than its size");
                if out.len() == t {
                    return out;
                }
            }
            NodePacket::TunAllow { .. } => {}
            other => panic!("expected data of tunnel {id}, got {other:?}"),
        }
    }
}

/// Sends requests from `cli` to `cluster` (100 ms timeouts) until `svc`, a member on any node,
/// answers one: the cluster's tree then knows the member. Panics after 3 s.
pub(crate) async fn warm_cluster(cli: &mut Raw, svc: &mut Raw, cluster: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut id = 1_000_000;
    loop {
        assert!(
            Instant::now() < deadline,
            "{cluster} never reached its member"
        );
        id += 1;
        cli.send(ClientPacket::Request {
            id,
            cluster: cluster.into(),
            request: Bytes::from_static(b"warm"),
            timeout_ms: 100,
        })
        .await;
        tokio::select! {
            p = svc.next() => {
                let NodePacket::Request { id: d, .. } = p else { panic!("member got {p:?}") };
                svc.send(ClientPacket::Reply { id: d, result: Ok(Bytes::from_static(b"warm")) })
                    .await;
                // A delivery that came too late for its request: this request's outcome may be
                // a timeout, then try again.
                match cli.next().await {
                    NodePacket::Reply { id: got, outcome: ReplyOutcome::Success(_) } if got == id => {
                        return;
                    }
                    NodePacket::Reply { id: got, outcome: ReplyOutcome::Timeout } if got == id => {}
                    other => panic!("requester got {other:?}"),
                }
            }
            p = cli.next() => assert_eq!(p, NodePacket::Reply { id, outcome: ReplyOutcome::Timeout }),
        }
    }
}

/// Reads a fake peer's records (after [`petal_node::secure::handshake`]) and decodes the
/// frames in them.
#[derive(Default)]
pub(crate) struct FramesIn {
    raw: BytesMut,
    plain: BytesMut,
}

impl FramesIn {
    /// The next frames (empty at EOF or on a read error), waiting until `until`; `None` on
    /// timeout. Panics on a record that fails authentication (the node never sends one).
    pub(crate) async fn next(
        &mut self,
        s: &mut TcpStream,
        e: &mut petal_node::secure::Established,
        until: Instant,
    ) -> Option<Vec<petal_protocol::Message>> {
        loop {
            let mut out = Vec::new();
            while let Ok((m, used)) = petal_protocol::codec::decode(&self.plain, 1 << 20) {
                let _ = self.plain.split_to(used);
                out.push(m);
            }
            if !out.is_empty() {
                return Some(out);
            }
            match tokio::time::timeout_at(until, self.raw_read(s)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(Vec::new()),
                Ok(Ok(_)) => e.opener.open(&mut self.raw, &mut self.plain).unwrap(),
            }
        }
    }

    async fn raw_read(&mut self, s: &mut TcpStream) -> std::io::Result<usize> {
        s.read_buf(&mut self.raw).await
    }
}

/// `msg` as one frame sealed in a record of a fake peer's link.
pub(crate) fn sealed(
    e: &mut petal_node::secure::Established,
    msg: &petal_protocol::Message,
) -> Vec<u8> {
    let mut frame = Vec::new();
    petal_protocol::codec::encode(msg, &mut frame);
    let mut rec = Vec::new();
    e.sealer.seal(&frame, &mut rec).unwrap();
    rec
}
