//! Test helpers: nodes on loopback with OS-chosen ports, and a raw relay v1 client that speaks
//! packets (or raw bytes) so that tests see exactly what the node writes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use petal_node::{NodeHandle, Options, TokioNet};
use petal_protocol::NodeId;
use petal_protocol::relay::{self, ClientPacket, Limits, NodePacket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Options for a test node: relay and peers on 127.0.0.1 with free ports, fast timers.
pub fn options(id: u128, seeds: Vec<SocketAddr>) -> Options {
    let mut o = Options::new(NodeId(id));
    o.relay_addrs = vec!["127.0.0.1:0".parse().unwrap()];
    o.peer_listen = "127.0.0.1:0".parse().unwrap();
    o.seeds = seeds;
    o.handshake_timeout = Duration::from_millis(500);
    o.close_linger = Duration::from_millis(500);
    o
}

pub async fn node(id: u128, seeds: Vec<SocketAddr>) -> NodeHandle {
    petal_node::spawn(TokioNet, options(id, seeds))
        .await
        .unwrap()
}

pub fn relay_addr(n: &NodeHandle) -> SocketAddr {
    n.relay_addrs()[0]
}

/// A relay client at the packet level.
pub struct Raw {
    pub s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            buf: BytesMut::new(),
        }
    }

    /// Connects and completes the handshake as `cluster` ("" = plain client).
    pub async fn attach(addr: SocketAddr, cluster: &str) -> Raw {
        let mut r = Raw::connect(addr).await;
        r.send(ClientPacket::Init {
            magic: relay::CLIENT_MAGIC.into(),
            version: relay::VERSION.into(),
            cluster: cluster.into(),
        })
        .await;
        match r.recv().await {
            Some(NodePacket::Init { magic, version }) => {
                assert_eq!(magic, relay::RELAY_MAGIC);
                assert_eq!(version, relay::VERSION);
            }
            other => panic!("handshake answered with {other:?}"),
        }
        r
    }

    pub async fn send(&mut self, p: ClientPacket) {
        let mut out = Vec::new();
        p.encode(&mut out);
        self.s.write_all(&out).await.unwrap();
    }

    pub async fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }

    /// The next packet (None at EOF); panics after 5 s of silence.
    pub async fn recv(&mut self) -> Option<NodePacket> {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("no packet within 5 s")
    }

    /// The next packet within `d`: Err on silence, Ok(None) at EOF.
    pub async fn recv_within(&mut self, d: Duration) -> Result<Option<NodePacket>, ()> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if let Some(p) = NodePacket::decode(&mut self.buf, &Limits::default()).unwrap() {
                return Ok(Some(p));
            }
            match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Ok(None),
            }
        }
    }

    /// Every byte until EOF (panics after 5 s).
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut v = self.buf.split().to_vec();
        tokio::time::timeout(Duration::from_secs(5), self.s.read_to_end(&mut v))
            .await
            .expect("no EOF within 5 s")
            .ok();
        v
    }
}
