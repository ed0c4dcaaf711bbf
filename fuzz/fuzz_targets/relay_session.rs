//! A running node's relay v1 server (petal-node's session code over real loopback TCP) fed
//! random client bytes on two connections at once, after a valid handshake on each: one a
//! member of the cluster "svc", the other a plain client. Nothing may panic (a panic in any of
//! the node's tasks aborts the process: cargo-fuzz builds with `panic = "abort"`), and after
//! every input a fresh client must still get its request answered by a fresh member: bad
//! bytes end their own connection only.
//!
//! The node lives across inputs (starting one per input would cost milliseconds), so a
//! failure may depend on earlier inputs; libFuzzer saves the last one.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use petal_node::{Identity, LinkSecurity, NetworkKey, NodeHandle, Options, TokioNet};
use petal_protocol::relay::{ClientPacket, Limits, NodePacket, ReplyOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

struct World {
    rt: Runtime,
    relay: SocketAddr,
    _node: NodeHandle,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut o = Options::new(
            Identity::from_seed(11),
            LinkSecurity::Noise(NetworkKey::from_bytes([5; 32])),
        );
        o.relay_addrs = vec!["127.0.0.1:0".parse().expect("address")];
        o.peer_listen = "127.0.0.1:0".parse().expect("address");
        let node = rt
            .block_on(petal_node::spawn(TokioNet, o))
            .expect("node starts");
        World {
            relay: node.relay_addrs()[0],
            rt,
            _node: node,
        }
    })
}

fn init(cluster: &str) -> Vec<u8> {
    let mut out = Vec::new();
    ClientPacket::Init {
        magic: "iris-client-magic".into(),
        version: "v1.0-draft2".into(),
        cluster: cluster.into(),
    }
    .encode(&mut out);
    out
}

/// Connects and completes the relay handshake.
async fn attach(relay: SocketAddr, cluster: &str) -> TcpStream {
    let mut s = TcpStream::connect(relay).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(&init(cluster)).await.expect("init");
    let mut buf = bytes::BytesMut::new();
    loop {
        if let Some(p) = NodePacket::decode(&mut buf, &Limits::default()).expect("node bytes") {
            assert!(matches!(p, NodePacket::Init { .. }), "{p:?}");
            return s;
        }
        let n = s.read_buf(&mut buf).await.expect("read");
        assert!(n > 0, "the node closed a valid handshake");
    }
}

/// Reads and drops whatever the node has sent, without waiting.
fn drain(s: &TcpStream) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = s.try_read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

async fn next_packet(s: &mut TcpStream, buf: &mut bytes::BytesMut) -> NodePacket {
    loop {
        if let Some(p) = NodePacket::decode(buf, &Limits::default()).expect("node bytes") {
            return p;
        }
        let n = s.read_buf(buf).await.expect("read");
        assert!(n > 0, "the node closed a good connection");
    }
}

/// A fresh member of "ok" and a fresh client: one request, answered.
async fn still_serves(relay: SocketAddr) {
    let mut svc = attach(relay, "ok").await;
    let mut cli = attach(relay, "").await;
    let mut out = Vec::new();
    ClientPacket::Request {
        id: 1,
        cluster: "ok".into(),
        request: Bytes::from_static(b"ping"),
        timeout_ms: 5000,
    }
    .encode(&mut out);
    cli.write_all(&out).await.expect("request");
    let (mut sb, mut cb) = (bytes::BytesMut::new(), bytes::BytesMut::new());
    let NodePacket::Request { id, .. } = next_packet(&mut svc, &mut sb).await else {
        panic!("the member did not get the request")
    };
    out.clear();
    ClientPacket::Reply {
        id,
        result: Ok(Bytes::from_static(b"pong")),
    }
    .encode(&mut out);
    svc.write_all(&out).await.expect("reply");
    assert_eq!(
        next_packet(&mut cli, &mut cb).await,
        NodePacket::Reply {
            id: 1,
            outcome: ReplyOutcome::Success(Bytes::from_static(b"pong")),
        }
    );
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    w.rt.block_on(async {
        let mut a = attach(w.relay, "svc").await;
        let mut b = attach(w.relay, "").await;
        let mut rest = data;
        // Chunks: [which | length] then that many bytes, to one connection or the other.
        while let Some((&head, tail)) = rest.split_first() {
            let n = usize::from(head >> 1).min(tail.len());
            let (chunk, tail) = tail.split_at(n);
            rest = tail;
            let s = if head & 1 == 0 { &mut a } else { &mut b };
            if s.write_all(chunk).await.is_err() {
                // The node closed this connection (bad bytes): the other goes on.
            }
            tokio::task::yield_now().await;
            drain(&a);
            drain(&b);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop((a, b));
        tokio::time::timeout(Duration::from_secs(10), still_serves(w.relay))
            .await
            .expect("the node answers a fresh request within 10 s");
    });
});
