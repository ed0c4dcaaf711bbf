//! Encrypted, authenticated links between real nodes on loopback (Noise `XXpsk0` under the
//! network key): a node without the key never joins; a flood of silent connections does not
//! starve real peers; a middlebox that tampers with or replays a record closes the link and the
//! nodes recover over a fresh one; nothing an application sends crosses the wire in the clear;
//! a peer's id is the one its static key proves, never one it names; a dial to a stale address
//! that fails, or finds another node there, leaves the expected node's live link alone.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use petal_node::link::LINK_NONCE;
use petal_node::secure::{self, Entropy, Established, Identity, NetworkKey};
use petal_node::{LinkSecurity, NodeHandle, StatsSnapshot, TokioNet};
use petal_protocol::relay::{ClientPacket, NodePacket, ReplyOutcome};
use petal_protocol::{Message, NodeId, NodeInfo, RouteMsg, Routed, codec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

const A_ID: u128 = 0x1000_0000_0000_0000_0000_0000_0000_0000;
const B_ID: u128 = 0x5000_0000_0000_0000_0000_0000_0000_0000;
const C_ID: u128 = 0xa000_0000_0000_0000_0000_0000_0000_0000;

async fn stats(n: &NodeHandle) -> StatsSnapshot {
    n.stats().await.expect("the node is running")
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `within`.
async fn wait_until<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A request from `cli` to `cluster`: the reply's bytes, or `None` on a timeout outcome.
async fn request(
    cli: &mut Raw,
    id: u64,
    cluster: &str,
    payload: Bytes,
    timeout_ms: u64,
) -> Option<Bytes> {
    cli.send(ClientPacket::Request {
        id,
        cluster: cluster.into(),
        request: payload,
        timeout_ms,
    })
    .await;
    match cli.next().await {
        NodePacket::Reply {
            id: got,
            outcome: ReplyOutcome::Success(b),
        } if got == id => Some(b),
        NodePacket::Reply {
            id: got,
            outcome: ReplyOutcome::Timeout,
        } if got == id => None,
        other => panic!("the client got {other:?} for request {id}"),
    }
}

/// Answers every request `svc` gets with the request's own bytes, until its connection ends.
fn echo_service(mut svc: Raw) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match svc.recv_within(Duration::from_secs(60)).await {
                Ok(Some(NodePacket::Request { id, request, .. })) => {
                    let reply = ClientPacket::Reply {
                        id,
                        result: Ok(request),
                    };
                    svc.send_bytes_lossy(&encode(&reply)).await;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(()) => return,
            }
        }
    })
}

/// Sends requests (`timeout_ms` each) until one is answered with its own bytes; panics after
/// `within`. Returns the next free request id.
async fn until_answered(
    cli: &mut Raw,
    mut id: u64,
    cluster: &str,
    payload: &Bytes,
    timeout_ms: u64,
    within: Duration,
) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        assert!(
            Instant::now() < deadline,
            "{cluster}: no request answered within {within:?}"
        );
        id += 1;
        if let Some(got) = request(cli, id, cluster, payload.clone(), timeout_ms).await {
            assert_eq!(got, *payload, "the echo came back altered");
            return id + 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP middlebox: forwards both ways between a dialer and a listener; can record everything,
// and can tamper with one record (flip a bit of its tag, or send it twice) once armed.

/// Direction through the middlebox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// From the dialing node to the listening node.
    ToListener = 0,
    /// From the listening node to the dialing node.
    ToDialer = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tamper {
    /// Flip the last bit of one record (its authentication tag).
    Flip,
    /// Send one record twice (the copy is a replay of a record already delivered).
    Replay,
}

#[derive(Default)]
struct ProxyState {
    /// Parse the Noise framing (2-byte length, then the message) so that tampering hits one
    /// whole record after the handshake; `false` forwards raw bytes (plaintext links).
    framed: bool,
    record: bool,
    /// Tamper once with the first record in that direction that starts at or after that many
    /// bytes of the direction (counted over all connections).
    armed: Mutex<Option<(Dir, Tamper, usize)>>,
    tampered: AtomicBool,
    seen: [AtomicUsize; 2],
    recorded: Mutex<[Vec<u8>; 2]>,
    conns: AtomicUsize,
    closed: AtomicUsize,
}

struct Proxy {
    addr: SocketAddr,
    st: Arc<ProxyState>,
    task: tokio::task::AbortHandle,
}

impl Proxy {
    async fn start(to: SocketAddr, framed: bool, record: bool) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let st = Arc::new(ProxyState {
            framed,
            record,
            ..ProxyState::default()
        });
        let shared = st.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = l.accept().await else {
                    continue;
                };
                shared.conns.fetch_add(1, Ordering::SeqCst);
                let st = shared.clone();
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(to).await else {
                        st.closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let _ = up.set_nodelay(true);
                    let _ = down.set_nodelay(true);
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::join!(
                        pump(dr, uw, Dir::ToListener, st.clone()),
                        pump(ur, dw, Dir::ToDialer, st.clone())
                    );
                    st.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        })
        .abort_handle();
        Proxy { addr, st, task }
    }

    /// Tampers once with the first record in `dir` after `more` further bytes in that direction.
    fn arm(&self, dir: Dir, tamper: Tamper, more: usize) {
        let at = self.st.seen[dir as usize].load(Ordering::SeqCst) + more;
        *self.st.armed.lock().unwrap() = Some((dir, tamper, at));
    }

    fn tampered(&self) -> bool {
        self.st.tampered.load(Ordering::SeqCst)
    }

    fn conns(&self) -> usize {
        self.st.conns.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.st.closed.load(Ordering::SeqCst)
    }

    fn seen(&self, dir: Dir) -> usize {
        self.st.seen[dir as usize].load(Ordering::SeqCst)
    }

    fn recorded(&self) -> [Vec<u8>; 2] {
        self.st.recorded.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards one direction until EOF or an error, then closes the far side's write half.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, dir: Dir, st: Arc<ProxyState>) {
    // Handshake messages in this direction: `-> e` and `-> s, se` from the dialer, `<- e, ee, s,
    // es` from the listener.
    let handshake_msgs = match dir {
        Dir::ToListener => 2,
        Dir::ToDialer => 1,
    };
    let mut units = 0usize;
    let mut buf = BytesMut::with_capacity(128 * 1024);
    let mut out = Vec::new();
    loop {
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        out.clear();
        if !st.framed {
            st.seen[dir as usize].fetch_add(buf.len(), Ordering::SeqCst);
            out.extend_from_slice(&buf);
            buf.clear();
        }
        while st.framed && buf.len() >= 2 {
            let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
            if buf.len() < 2 + len {
                break;
            }
            let mut unit = buf.split_to(2 + len).to_vec();
            let offset = st.seen[dir as usize].fetch_add(unit.len(), Ordering::SeqCst);
            let mut twice = false;
            if units >= handshake_msgs {
                let mut armed = st.armed.lock().unwrap();
                if let Some((d, t, at)) = *armed
                    && d == dir
                    && offset >= at
                {
                    *armed = None;
                    match t {
                        Tamper::Flip => {
                            let last = unit.len() - 1;
                            unit[last] ^= 0x01;
                        }
                        Tamper::Replay => twice = true,
                    }
                    st.tampered.store(true, Ordering::SeqCst);
                }
            }
            units += 1;
            out.extend_from_slice(&unit);
            if twice {
                out.extend_from_slice(&unit);
            }
        }
        if st.record {
            st.recorded.lock().unwrap()[dir as usize].extend_from_slice(&out);
        }
        if to.write_all(&out).await.is_err() {
            break;
        }
    }
    // Dropping `to` closes that side's write half (the far node sees EOF).
}

// ---------------------------------------------------------------------------------------------
// Fake peers: real Noise handshakes under the test key, then frames in sealed records.

/// A full handshake as initiator with `identity`, naming `hello` as the address to dial.
async fn dial_as(
    addr: SocketAddr,
    identity: &Identity,
    hello: SocketAddr,
) -> (TcpStream, Established) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let e = secure::handshake(
        &mut s,
        true,
        identity,
        &test_key(),
        hello,
        None,
        Entropy::Os,
        1,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    (s, e)
}

async fn send_frames(s: &mut TcpStream, e: &mut Established, msgs: &[Message]) {
    let mut frames = Vec::new();
    for m in msgs {
        codec::encode(m, &mut frames);
    }
    let mut rec = Vec::new();
    e.sealer.seal(&frames, &mut rec).unwrap();
    s.write_all(&rec).await.unwrap();
}

// ---------------------------------------------------------------------------------------------

/// A node holding another network key, seeded to a member, never becomes part of the ring:
/// every handshake it tries fails at the member (counted there), it serves as a ring of one,
/// the ring never learns its id, and its applications are unreachable from the ring.
#[tokio::test]
async fn wrong_key_node_never_joins() {
    let a = node(A_ID, vec![]).await;
    let b = node(B_ID, vec![a.info().addr]).await;
    wait_ready(&[&a, &b], 1).await;
    let mut wo = options(C_ID, vec![a.info().addr]);
    wo.security = LinkSecurity::Noise(NetworkKey::from_bytes([0x33; 32]));
    wo.join_wait = Duration::from_millis(600);
    // After giving up, W keeps dialing its seed: every attempt must fail too.
    wo.seed_retry = Duration::from_millis(150);
    let w = petal_node::spawn(TokioNet, wo).await.unwrap();
    let w_id = w.info().id;

    // W gives up on its seed and serves alone, while A refuses attempt after attempt.
    wait_until(Duration::from_secs(5), "W alone, A refusing it", || async {
        let (sa, sw) = (stats(&a).await, stats(&w).await);
        sw.ready && sa.runtime.link_handshakes_failed >= 3
    })
    .await;
    for _ in 0..20 {
        let (sa, sb, sw) = (stats(&a).await, stats(&b).await, stats(&w).await);
        assert_eq!((sa.leaf_set, sa.links), (1, 1), "A: {sa:?}");
        assert_eq!((sb.leaf_set, sb.links), (1, 1), "B: {sb:?}");
        assert_eq!((sw.leaf_set, sw.links), (0, 0), "W: {sw:?}");
        assert_eq!(sw.runtime.links_up, 0, "W: {sw:?}");
        assert!(sw.ready, "W serves as a ring of one: {sw:?}");
        assert_eq!(sa.runtime.links_up, 1, "only B's link came up at A: {sa:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sw = stats(&w).await;
    assert!(
        sw.runtime.link_dial_failures >= 3 && sw.runtime.seed_failures >= 1,
        "W: {sw:?}"
    );

    // A cluster served only on W is unreachable from A; one on B is reachable.
    let mut on_w = Raw::attach(relay_addr(&w), "only-on-w").await;
    let mut on_b = Raw::attach(relay_addr(&b), "on-b").await;
    let mut cli = Raw::attach(relay_addr(&a), "").await;
    for id in 1..=3 {
        assert_eq!(
            request(&mut cli, id, "only-on-w", Bytes::from_static(b"x"), 200).await,
            None,
            "a request reached a cluster on the stranger"
        );
    }
    on_w.expect_silence(Duration::from_millis(50)).await;
    warm_cluster(&mut cli, &mut on_b, "on-b").await;
    let _echo = echo_service(on_b);
    until_answered(
        &mut cli,
        10,
        "on-b",
        &Bytes::from_static(b"y"),
        1000,
        Duration::from_secs(3),
    )
    .await;

    // Ask A for its leaf set and routing table (as a fake member holding the key): W's id is
    // nowhere.
    let me = Identity::from_seed(0xfeed);
    let (mut s, mut e) = dial_as(a.info().addr, &me, "127.0.0.1:9".parse().unwrap()).await;
    let mut asks = vec![Message::LeafSet {
        leaf: Vec::new(),
        reply: true,
    }];
    for row in 0..petal_protocol::id::DIGITS {
        asks.push(Message::RowRequest { row: row as u8 });
    }
    send_frames(&mut s, &mut e, &asks).await;
    let mut frames = FramesIn::default();
    let until = Instant::now() + Duration::from_secs(3);
    let (mut leaf, mut rows) = (None, 0);
    while leaf.is_none() || rows < petal_protocol::id::DIGITS {
        let got = frames
            .next(&mut s, &mut e, until)
            .await
            .expect("A did not answer with its tables");
        assert!(!got.is_empty(), "A closed the member's link");
        for m in got {
            match m {
                Message::LeafSet { leaf: l, .. } => leaf = Some(l),
                Message::RowReply { entries, .. } => {
                    rows += 1;
                    assert!(entries.iter().all(|i| i.id != w_id), "{entries:?}");
                }
                _ => {}
            }
        }
    }
    let leaf = leaf.expect("set");
    assert!(leaf.iter().all(|i| i.id != w_id), "{leaf:?}");
    assert!(leaf.iter().any(|i| i.id == b.info().id), "{leaf:?}");
    drop(s);
    for n in [a, b, w] {
        n.shutdown().await;
    }
}

/// A silent connection to `to` from `src`: how long until the node closed it (from the end
/// of the connect), and how many bytes it wrote first.
async fn silent_connection(
    src: Ipv4Addr,
    to: SocketAddr,
    connected: Arc<AtomicUsize>,
) -> (Duration, usize) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src.into(), 0)).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    let t0 = Instant::now();
    connected.fetch_add(1, Ordering::SeqCst);
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "a silent connection from {src} stayed open 3 s");
    (t0.elapsed(), got.len())
}

/// 190 silent connections at once from 19 source addresses, then one more every 4 ms, do not
/// keep a real peer out: the gate closes connections beyond 8 per address at once and cancels
/// the oldest handshake when 16 run, so the peer's handshake (one round trip) gets through.
/// Every flood connection is closed, without a byte, by the handshake deadline.
#[tokio::test]
async fn a_handshake_flood_does_not_starve_real_peers() {
    let mut ao = options(A_ID, vec![]);
    ao.max_link_handshakes = 16;
    ao.max_link_handshakes_per_ip = 8;
    let deadline = ao.handshake_timeout;
    let a = petal_node::spawn(TokioNet, ao).await.unwrap();
    let to = a.info().addr;
    let src = |i: usize| Ipv4Addr::new(127, 0, 0, 2 + (i % 19) as u8);
    let connected = Arc::new(AtomicUsize::new(0));

    // The burst: 10 connections from each of 127.0.0.2..=127.0.0.20, all kept open.
    let mut burst = JoinSet::new();
    for i in 0..190 {
        burst.spawn(silent_connection(src(i), to, connected.clone()));
    }
    wait_until(Duration::from_secs(3), "the burst connected", || async {
        connected.load(Ordering::SeqCst) == 190
    })
    .await;

    // The trickle: one more silent connection every 4 ms until the peer is served.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (stop, connected) = (stop.clone(), connected.clone());
        tokio::spawn(async move {
            let mut set = JoinSet::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                set.spawn(silent_connection(src(i), to, connected.clone()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            set.join_all().await
        })
    };

    wait_until(Duration::from_secs(3), "the trickle under way", || async {
        connected.load(Ordering::SeqCst) >= 190 + 25
    })
    .await;

    // Meanwhile B (from 127.0.0.1) joins through A, and a request crosses A <-> B.
    let t0 = Instant::now();
    let b = node(B_ID, vec![to]).await;
    wait_ready(&[&a, &b], 1).await;
    let joined = t0.elapsed();
    let mut svc = Raw::attach(relay_addr(&b), "behind-the-flood").await;
    let mut cli = Raw::attach(relay_addr(&a), "").await;
    warm_cluster(&mut cli, &mut svc, "behind-the-flood").await;
    let served = t0.elapsed();
    eprintln!("under the flood: B joined in {joined:?}, first request across after {served:?}");
    assert!(
        served < Duration::from_secs(2),
        "the peer waited {served:?}"
    );

    stop.store(true, Ordering::SeqCst);
    let mut closes = burst.join_all().await;
    closes.extend(trickle.await.unwrap());
    let s = stats(&a).await;
    let quick = closes
        .iter()
        .filter(|(t, _)| *t < Duration::from_millis(100))
        .count();
    let slowest = closes.iter().map(|(t, _)| *t).max().unwrap();
    eprintln!(
        "{} flood connections: {quick} closed within 100 ms, the slowest after {slowest:?}; {:?}",
        closes.len(),
        s.runtime
    );
    assert!(
        closes.iter().all(|(_, n)| *n == 0),
        "A wrote to a silent connection"
    );
    // By the deadline (500 ms), with room for scheduling.
    assert!(
        slowest <= deadline + Duration::from_millis(400),
        "a flood connection stayed open {slowest:?}"
    );
    assert!(s.runtime.link_handshakes_refused > 0, "{:?}", s.runtime);
    assert!(quick > 0, "no connection was refused or cancelled at once");
    assert_eq!(s.links, 1, "{s:?}");

    // The flood left no slot taken: from one of its addresses, 7 silent connections and a
    // real peer at once (8, the per-address limit) are all admitted.
    let before = stats(&a).await.runtime;
    let mut silent = JoinSet::new();
    for _ in 0..7 {
        silent.spawn(silent_connection(src(0), to, connected.clone()));
    }
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src(0).into(), 0)).unwrap();
    let mut real = sock.connect(to).await.unwrap();
    secure::handshake(
        &mut real,
        true,
        &Identity::from_seed(0xf100d),
        &test_key(),
        "127.0.0.2:9".parse().unwrap(),
        None,
        Entropy::Os,
        1,
        Duration::from_secs(2),
    )
    .await
    .expect("a real peer from a flooding address, after the flood");
    let silent = silent.join_all().await;
    assert!(
        silent.iter().all(|(t, n)| *t >= deadline / 2 && *n == 0),
        "a connection within the per-address limit was refused: {silent:?}"
    );
    let after = stats(&a).await.runtime;
    assert_eq!(
        after.link_handshakes_refused, before.link_handshakes_refused,
        "{after:?}"
    );
    drop(real);
    for n in [a, b] {
        n.shutdown().await;
    }
}

/// A and B, B dialing A through a middlebox, serving requests across; then the middlebox
/// tampers with one record (after 2 KiB more in `dir`). The receiving node counts an
/// authentication failure and closes the link; the nodes then serve requests across over a
/// fresh link dialed directly (the advertised addresses are the direct ones).
async fn middlebox_case(dir: Dir, tamper: Tamper) {
    let a = node(A_ID, vec![]).await;
    let px = Proxy::start(a.info().addr, true, false).await;
    let b = node(B_ID, vec![px.addr]).await;
    wait_ready(&[&a, &b], 1).await;
    let mut svc = Raw::attach(relay_addr(&b), "mb-echo").await;
    let mut cli = Raw::attach(relay_addr(&a), "").await;
    warm_cluster(&mut cli, &mut svc, "mb-echo").await;
    let _echo = echo_service(svc);
    assert_eq!(px.conns(), 1, "the link goes through the middlebox");
    assert!(px.seen(Dir::ToListener) > 0 && px.seen(Dir::ToDialer) > 0);

    px.arm(dir, tamper, 2048);
    // Requests A -> B, echoes B -> A: 600 bytes each way until the middlebox has tampered and
    // the link it carries has closed.
    let payload: Bytes = pattern(7, 600);
    let t0 = Instant::now();
    let mut id = 100;
    while !(px.tampered() && px.closed() == 1) {
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "tampered: {}, link closed: {}",
            px.tampered(),
            px.closed()
        );
        id += 1;
        let _ = request(&mut cli, id, "mb-echo", payload.clone(), 200).await;
    }
    let (receiver, sender) = match dir {
        Dir::ToListener => (&a, &b),
        Dir::ToDialer => (&b, &a),
    };
    wait_until(
        Duration::from_secs(2),
        "receiver counts the failure",
        || async { stats(receiver).await.runtime.link_auth_failures >= 1 },
    )
    .await;
    let closed_after = t0.elapsed();
    assert_eq!(
        stats(sender).await.runtime.link_auth_failures,
        0,
        "the sender's side was not tampered with"
    );

    // Recovery, over a direct link.
    let id = until_answered(
        &mut cli,
        id,
        "mb-echo",
        &payload,
        300,
        Duration::from_secs(5),
    )
    .await;
    for k in 0..5 {
        assert_eq!(
            request(&mut cli, id + k, "mb-echo", payload.clone(), 1000).await,
            Some(payload.clone()),
            "request {k} after recovery"
        );
    }
    let recovered = t0.elapsed();
    eprintln!(
        "{tamper:?} {dir:?}: link closed after {closed_after:?}, serving again after {recovered:?}"
    );
    assert_eq!(
        px.conns(),
        1,
        "the fresh link was dialed through the middlebox"
    );
    for n in [&a, &b] {
        let s = stats(n).await;
        assert!(s.ready && s.leaf_set == 1 && s.links == 1, "{s:?}");
    }
    for n in [a, b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_tampering_middlebox_closes_the_link_and_the_nodes_recover() {
    middlebox_case(Dir::ToListener, Tamper::Flip).await;
}

#[tokio::test]
async fn a_replayed_record_closes_the_link_and_the_nodes_recover() {
    middlebox_case(Dir::ToDialer, Tamper::Replay).await;
}

/// Everything between A and B (B dials A through a recording middlebox) while requests,
/// replies and publishes carry `secret` both ways. Returns what crossed, per direction.
async fn record_traffic(security: LinkSecurity, secret: &Bytes) -> [Vec<u8>; 2] {
    let mut ao = options(A_ID, vec![]);
    ao.security = security.clone();
    let a = petal_node::spawn(TokioNet, ao).await.unwrap();
    let px = Proxy::start(a.info().addr, false, true).await;
    let mut bo = options(B_ID, vec![px.addr]);
    bo.security = security;
    let b = petal_node::spawn(TokioNet, bo).await.unwrap();
    wait_ready(&[&a, &b], 1).await;

    // Requests A -> B carrying the secret, echoed back.
    let mut svc = Raw::attach(relay_addr(&b), "secret-svc").await;
    let mut cli = Raw::attach(relay_addr(&a), "").await;
    warm_cluster(&mut cli, &mut svc, "secret-svc").await;
    let _echo = echo_service(svc);
    let payload: Bytes = secret.repeat(16).into();
    for id in 1..=8 {
        assert_eq!(
            request(&mut cli, id, "secret-svc", payload.clone(), 2000).await,
            Some(payload.clone())
        );
    }
    // Publishes both ways: a subscriber on one node, the publisher on the other.
    for (topic, sub_on, pub_on) in [("secret-ab", &b, &a), ("secret-ba", &a, &b)] {
        let mut sub = Raw::attach(relay_addr(sub_on), "").await;
        let mut publ = Raw::attach(relay_addr(pub_on), "").await;
        sub.send(ClientPacket::Subscribe {
            topic: topic.into(),
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            assert!(Instant::now() < deadline, "{topic}: no event across");
            publ.send(ClientPacket::Publish {
                topic: topic.into(),
                event: secret.clone(),
            })
            .await;
            if let Ok(Some(p)) = sub.recv_within(Duration::from_millis(100)).await {
                assert_eq!(
                    p,
                    NodePacket::Publish {
                        topic: topic.into(),
                        event: secret.clone()
                    }
                );
                break;
            }
        }
    }
    // All of it went through the middlebox, over one link.
    assert_eq!((px.conns(), px.closed()), (1, 0));
    let rec = px.recorded();
    for n in [a, b] {
        n.shutdown().await;
    }
    rec
}

/// Requests, replies and publishes carrying a distinctive 64-byte secret cross between two
/// nodes; a recording middlebox sees neither the secret nor any 16 bytes of it. Control: with
/// plaintext links the same traffic shows it in both directions.
#[tokio::test]
async fn no_payload_in_the_clear_between_nodes() {
    let secret: Bytes = Rng(0x005e_c2e7).bytes(64).into();
    let windows: BTreeSet<&[u8]> = secret.windows(16).collect();
    let rec = record_traffic(LinkSecurity::Noise(test_key()), &secret).await;
    for (d, bytes) in rec.iter().enumerate() {
        eprintln!("encrypted, direction {d}: {} bytes recorded", bytes.len());
        assert!(
            bytes.len() > 8 * 1024,
            "direction {d}: {} bytes",
            bytes.len()
        );
        let leak = bytes.windows(16).position(|w| windows.contains(w));
        assert!(
            leak.is_none(),
            "direction {d}: 16 bytes of the secret at {leak:?}"
        );
    }
    let rec = record_traffic(LinkSecurity::Plaintext, &secret).await;
    for (d, bytes) in rec.iter().enumerate() {
        let seen = bytes.windows(64).filter(|w| *w == &secret[..]).count();
        eprintln!("plaintext, direction {d}: the secret appears {seen} times");
        assert!(
            seen > 0,
            "control: the plaintext link did not carry the secret ({d})"
        );
    }
}

/// What the trap saw: connections, handshakes done, and the frames that reached it.
#[derive(Default)]
struct TrapLog {
    conns: AtomicUsize,
    peers: Mutex<Vec<NodeId>>,
    frames: Mutex<Vec<Message>>,
}

/// A listener answering every connection with a full handshake as `me` (under the test key),
/// logging the frames it gets.
async fn trap(me: Identity) -> (SocketAddr, Arc<TrapLog>, tokio::task::AbortHandle) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(TrapLog::default());
    let shared = log.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, from)) = l.accept().await else {
                continue;
            };
            shared.conns.fetch_add(1, Ordering::SeqCst);
            let (log, me) = (shared.clone(), me.clone());
            tokio::spawn(async move {
                let Ok(mut e) = secure::handshake(
                    &mut s,
                    false,
                    &me,
                    &test_key(),
                    addr,
                    Some(from),
                    Entropy::Os,
                    1,
                    Duration::from_secs(2),
                )
                .await
                else {
                    return;
                };
                log.peers.lock().unwrap().push(e.peer.id);
                let mut frames = FramesIn::default();
                let until = Instant::now() + Duration::from_secs(30);
                while let Some(got) = frames.next(&mut s, &mut e, until).await {
                    if got.is_empty() {
                        return;
                    }
                    log.frames.lock().unwrap().extend(got);
                }
            });
        }
    })
    .abort_handle();
    (addr, log, task)
}

/// The id of a link's peer is the one its static key proves. A fake member F (identity X)
/// names another id, Y, in a join it sends, at the address of a trap that answers as a third
/// identity Z. A knows F under X only; it answers Y at the trap's address, finds Z there
/// (counted as an id mismatch) and keeps the answer meant for Y from Z; neither Y nor Z enters
/// its tables.
#[tokio::test]
async fn a_peer_claiming_another_id_is_not_believed() {
    let a = node(A_ID, vec![]).await;
    wait_ready(&[&a], 0).await;
    let z = Identity::from_seed(0x7a);
    let (trap_addr, log, trap_task) = trap(z.clone()).await;
    let x = Identity::from_seed(0x58);
    let y = Identity::from_seed(0x59).node_id();
    let f_hello: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (mut s, mut e) = dial_as(a.info().addr, &x, f_hello).await;

    let join = RouteMsg {
        key: y.as_key(),
        origin: NodeInfo {
            id: y,
            addr: trap_addr,
        },
        hops: 0,
        hop_seq: 1,
        body: Routed::Join,
    };
    let mut msgs = vec![
        Message::route(join),
        Message::Ping { nonce: 42 },
        Message::LeafSet {
            leaf: Vec::new(),
            reply: true,
        },
    ];
    for row in 0..petal_protocol::id::DIGITS {
        msgs.push(Message::RowRequest { row: row as u8 });
    }
    send_frames(&mut s, &mut e, &msgs).await;

    // A answers F over F's own link, addressing it by X: the pong, and its tables.
    let mut frames = FramesIn::default();
    let until = Instant::now() + Duration::from_secs(3);
    let (mut pong, mut leaf, mut rows) = (false, None, 0);
    let mut known = Vec::new();
    while !pong || leaf.is_none() || rows < petal_protocol::id::DIGITS {
        let got = frames
            .next(&mut s, &mut e, until)
            .await
            .unwrap_or_else(|| panic!("A did not answer: pong {pong}, leaf {leaf:?}, rows {rows}"));
        assert!(!got.is_empty(), "A closed F's link");
        for m in got {
            match m {
                Message::Pong { nonce: 42 } => pong = true,
                Message::LeafSet { leaf: l, .. } => {
                    known.extend(l.iter().copied());
                    leaf = Some(l);
                }
                Message::RowReply { entries, .. } => {
                    rows += 1;
                    known.extend(entries);
                }
                Message::JoinReply { .. } => {
                    panic!("the join reply for Y reached F, whose key proves X")
                }
                _ => {}
            }
        }
    }
    let leaf = leaf.expect("set");
    assert_eq!(
        leaf,
        vec![NodeInfo {
            id: x.node_id(),
            addr: f_hello
        }],
        "A knows F under the id its key proves, at the address its hello named"
    );
    for i in &known {
        assert!(
            [x.node_id(), a.info().id].contains(&i.id),
            "A's tables hold {i:?} (Y = {y}, Z = {})",
            z.node_id()
        );
    }

    // A answered the join at the address F named for Y: Z answered there.
    wait_until(Duration::from_secs(3), "an id mismatch at A", || async {
        stats(&a).await.runtime.link_id_mismatches >= 1
    })
    .await;
    assert!(log.conns.load(Ordering::SeqCst) >= 1);
    assert_eq!(log.peers.lock().unwrap()[0], a.info().id);
    // Nothing meant for Y reaches Z (link keepalives aside).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Vec<Message> = log
        .frames
        .lock()
        .unwrap()
        .iter()
        .filter(|m| !matches!(m, Message::Ping { nonce: LINK_NONCE }))
        .cloned()
        .collect();
    assert!(got.is_empty(), "Z got {got:?}");
    let sa = stats(&a).await;
    assert_eq!(sa.leaf_set, 1, "{sa:?}");
    trap_task.abort();
    drop(s);
    a.shutdown().await;
}

/// Keeps a fake peer's link alive (answers link keepalives) for `hold`, collecting the frames
/// it gets; returns them, and whether the node closed the link meanwhile.
async fn hold_link(s: &mut TcpStream, e: &mut Established, hold: Duration) -> (Vec<Message>, bool) {
    let mut frames = FramesIn::default();
    let until = Instant::now() + hold;
    let mut seen = Vec::new();
    while let Some(got) = frames.next(s, e, until).await {
        if got.is_empty() {
            return (seen, true);
        }
        for m in got {
            if m == (Message::Ping { nonce: LINK_NONCE }) {
                send_frames(s, e, &[Message::Pong { nonce: LINK_NONCE }]).await;
            } else {
                seen.push(m);
            }
        }
    }
    (seen, false)
}

/// A node dials Y at an address where Y no longer is (a fake member's join names it); while
/// that dial is under way Y links to the node from elsewhere, and the node's answer goes over
/// Y's live link. Then the stale dial ends: it fails (`answer_as: None`: the address accepts
/// and stays silent until the handshake deadline) or another node answers there (`Some(z)`).
/// Either way Y's live link must stay up.
async fn stale_dial_case(answer_as: Option<Identity>) {
    let a = node(A_ID, vec![]).await;
    wait_ready(&[&a], 0).await;
    // The stale address: accepts, and answers (as Z) only when told to.
    let stale = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stale_addr = stale.local_addr().unwrap();
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let stale_task = tokio::spawn(async move {
        let (mut conn, from) = stale.accept().await.unwrap();
        let _ = accepted_tx.send(());
        let _ = go_rx.await;
        if let Some(z) = answer_as {
            // Kept (unused) until the sleep is over: the link stays established meanwhile.
            let _established = secure::handshake(
                &mut conn,
                false,
                &z,
                &test_key(),
                stale_addr,
                Some(from),
                Entropy::Os,
                1,
                Duration::from_secs(2),
            )
            .await
            .expect("the node finishes its handshake with Z");
            tokio::time::sleep(Duration::from_secs(5)).await;
        } else {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        drop(conn);
    });

    let y = Identity::from_seed(0x59);
    let (mut sf, mut ef) = dial_as(
        a.info().addr,
        &Identity::from_seed(0x58),
        "127.0.0.1:9".parse().unwrap(),
    )
    .await;
    let join = RouteMsg {
        key: y.node_id().as_key(),
        origin: NodeInfo {
            id: y.node_id(),
            addr: stale_addr,
        },
        hops: 0,
        hop_seq: 1,
        body: Routed::Join,
    };
    send_frames(&mut sf, &mut ef, &[Message::route(join)]).await;
    tokio::time::timeout(Duration::from_secs(2), accepted_rx)
        .await
        .expect("the node did not dial the stale address")
        .unwrap();

    // Y links to the node itself meanwhile; the answer that waited for the dial comes over it.
    let (mut sy, mut ey) = dial_as(a.info().addr, &y, "127.0.0.1:10".parse().unwrap()).await;
    let mut frames = FramesIn::default();
    let got = frames
        .next(&mut sy, &mut ey, Instant::now() + Duration::from_secs(2))
        .await
        .expect("nothing for Y over its own link");
    assert!(
        matches!(got.first(), Some(Message::JoinReply { .. })),
        "Y got {got:?}"
    );
    let links_before = stats(&a).await.links;
    let _ = go_tx.send(());

    // The stale dial ends (the 500 ms handshake deadline, or Z answers): Y's link stays up.
    let t0 = Instant::now();
    let (_, closed) = hold_link(&mut sy, &mut ey, Duration::from_millis(1500)).await;
    let s = stats(&a).await;
    assert!(
        !closed,
        "the node closed Y's live link {:?} after the stale dial ended ({:?})",
        t0.elapsed(),
        s.runtime
    );
    // The fake member X answers none of the node's pings, so the node may declare it dead and
    // close its link meanwhile (it did in about one run in four): Y's link must be the one
    // still counted.
    let mut x_frames = FramesIn::default();
    let until = Instant::now() + Duration::from_millis(200);
    let mut x_closed = false;
    while let Some(got) = x_frames.next(&mut sf, &mut ef, until).await {
        if got.is_empty() {
            x_closed = true;
            break;
        }
    }
    let expected = links_before - usize::from(x_closed);
    assert!(
        s.links >= expected,
        "{links_before} links before, X's closed: {x_closed}, {s:?}"
    );
    stale_task.abort();
    drop((sf, sy));
    a.shutdown().await;
}

#[tokio::test]
async fn a_failed_dial_to_a_stale_address_keeps_the_live_link() {
    stale_dial_case(None).await;
}

#[tokio::test]
async fn another_node_at_a_stale_address_keeps_the_live_link() {
    stale_dial_case(Some(Identity::from_seed(0x7a))).await;
}

/// A peer that names a large frame and sends only part of it makes the node hold that frame's
/// buffer: the node charges it to the peer's share of the memory budget as soon as the header
/// names it (so the budget sees it, and what one peer's unfinished frames hold is bounded by
/// its share), and gives it back when the link goes.
#[tokio::test]
async fn a_large_frame_under_way_is_charged_to_its_peer() {
    let a = node(A_ID, vec![]).await;
    let base = stats(&a).await.memory_used;
    let me = Identity::from_seed(0xfeee);
    let (mut s, mut e) = dial_as(a.info().addr, &me, "127.0.0.1:9".parse().unwrap()).await;
    // A frame's header naming 16 MiB, and 1 KiB of the frame.
    let named: u64 = 16 << 20;
    let mut part = u32::try_from(named).unwrap().to_be_bytes().to_vec();
    part.extend_from_slice(&[0u8; 1024]);
    let mut rec = Vec::new();
    e.sealer.seal(&part, &mut rec).unwrap();
    s.write_all(&rec).await.unwrap();
    wait_until(
        Duration::from_secs(2),
        "the frame under way charged",
        || async { stats(&a).await.memory_used >= base + named },
    )
    .await;
    drop(s);
    wait_until(Duration::from_secs(3), "the charge given back", || async {
        stats(&a).await.memory_used < base + (1 << 20)
    })
    .await;
    a.shutdown().await;
}
