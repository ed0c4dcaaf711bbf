//! A scripted fake node: a TCP listener on 127.0.0.1 that speaks the relay codec, so tests can
//! check exactly what the client sends and feed it exactly what a node would.

#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use petal_client::{Connection, Options, Service, ServiceHandler};
use petal_protocol::relay::ext::EXT_VERSION;
use petal_protocol::relay::{ClientPacket, Limits, NodePacket, RELAY_MAGIC, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How long a test waits for anything before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(2);

pub(crate) struct FakeNode {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl FakeNode {
    pub(crate) async fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        FakeNode { listener, addr }
    }

    /// Accepts one connection and reads its INIT; returns the peer and the cluster.
    pub(crate) async fn accept(&self) -> (Peer, String) {
        let (stream, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("accept in time")
            .expect("accept");
        let mut peer = Peer::new(stream);
        match peer.recv().await {
            Some(ClientPacket::Init {
                magic,
                version,
                cluster,
            }) => {
                assert_eq!(magic, "iris-client-magic");
                // Plain v1, or Petal's extension (asked for by default; this fake node
                // accepts with plain v1, as a node without the extension would not, so the
                // client treats it as not granted).
                assert!(version == VERSION || version == EXT_VERSION, "{version}");
                (peer, cluster)
            }
            other => panic!("expected INIT, got {other:?}"),
        }
    }
}

impl FakeNode {
    /// Accepts one connection and reads its INIT; returns the peer and the version asked for.
    pub(crate) async fn accept_any(&self) -> (Peer, String) {
        let (stream, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("accept in time")
            .expect("accept");
        let mut peer = Peer::new(stream);
        match peer.recv().await {
            Some(ClientPacket::Init { version, .. }) => (peer, version),
            other => panic!("expected INIT, got {other:?}"),
        }
    }
}

pub(crate) struct Peer {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

impl Peer {
    fn new(stream: TcpStream) -> Self {
        stream.set_nodelay(true).expect("nodelay");
        let (rd, wr) = stream.into_split();
        Peer {
            rd,
            wr,
            buf: BytesMut::new(),
        }
    }

    /// The next packet from the client, `None` at EOF. Panics after [`WAIT`].
    pub(crate) async fn recv(&mut self) -> Option<ClientPacket> {
        tokio::time::timeout(WAIT, self.recv_forever())
            .await
            .expect("client packet in time")
    }

    async fn recv_forever(&mut self) -> Option<ClientPacket> {
        loop {
            if let Some(p) = ClientPacket::decode(&mut self.buf, &Limits::default()).expect("valid")
            {
                return Some(p);
            }
            if self.rd.read_buf(&mut self.buf).await.expect("read") == 0 {
                assert!(self.buf.is_empty(), "EOF inside a packet");
                return None;
            }
        }
    }

    /// Whether the client sends nothing for `d`.
    pub(crate) async fn quiet_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.recv_forever()).await.is_err()
    }

    pub(crate) async fn send(&mut self, packet: NodePacket) {
        let mut out = Vec::new();
        packet.encode(&mut out);
        self.wr.write_all(&out).await.expect("write");
    }

    pub(crate) async fn accept_init(&mut self) {
        self.send(NodePacket::Init {
            magic: RELAY_MAGIC.into(),
            version: VERSION.into(),
        })
        .await;
    }

    /// Accepts granting Petal's extension.
    pub(crate) async fn accept_init_ext(&mut self) {
        self.send(NodePacket::Init {
            magic: RELAY_MAGIC.into(),
            version: EXT_VERSION.into(),
        })
        .await;
    }

    /// Closes the socket (both directions).
    pub(crate) async fn hang_up(self) {
        let Peer { rd, mut wr, .. } = self;
        let _ = wr.shutdown().await;
        drop(rd);
        drop(wr);
    }
}

/// A plain client connected to a fresh fake node.
pub(crate) async fn client() -> (Connection, Peer) {
    client_with(Options::default()).await
}

pub(crate) async fn client_with(options: Options) -> (Connection, Peer) {
    let node = FakeNode::new().await;
    let (conn, peer) = tokio::join!(options.connect_addr(node.addr), async {
        let (mut peer, cluster) = node.accept().await;
        assert_eq!(cluster, "");
        peer.accept_init().await;
        peer
    });
    (conn.expect("connect"), peer)
}

/// A service of `cluster` connected to a fresh fake node.
pub(crate) async fn service<H: ServiceHandler>(cluster: &str, handler: H) -> (Service, Peer) {
    service_with(cluster, handler, Options::default()).await
}

pub(crate) async fn service_with<H: ServiceHandler>(
    cluster: &str,
    handler: H,
    options: Options,
) -> (Service, Peer) {
    let node = FakeNode::new().await;
    let (svc, peer) = tokio::join!(options.register_addr(node.addr, cluster, handler), async {
        let (mut peer, got) = node.accept().await;
        assert_eq!(got, cluster);
        peer.accept_init().await;
        peer
    });
    (svc.expect("register"), peer)
}

/// Runs `fut` with the test deadline.
pub(crate) async fn timely<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut).await.expect("in time")
}
