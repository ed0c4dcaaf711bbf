//! Rough performance checks of the client alone, against a minimal echo node that answers
//! every request at once (no overlay, no second hop). Ignored by default; run with
//! `cargo test --release -p petal-client --test perf -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::FakeNode;
use petal_client::Connection;
use petal_protocol::relay::{ClientPacket, Limits, NodePacket, RELAY_MAGIC, ReplyOutcome, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts an echo node; returns its address.
async fn echo_node() -> std::net::SocketAddr {
    let node = FakeNode::new().await;
    let addr = node.addr;
    tokio::spawn(async move {
        let (peer, _) = node.accept().await;
        let _ = peer;
    });
    addr
}

async fn serve(mut stream: tokio::net::TcpStream) {
    stream.set_nodelay(true).expect("nodelay");
    let mut buf = BytesMut::with_capacity(1 << 16);
    let mut out = Vec::with_capacity(1 << 16);
    let limits = Limits::default();
    let mut greeted = false;
    loop {
        while let Some(packet) = ClientPacket::decode(&mut buf, &limits).expect("valid") {
            match packet {
                ClientPacket::Init { .. } if !greeted => {
                    greeted = true;
                    NodePacket::Init {
                        magic: RELAY_MAGIC.into(),
                        version: VERSION.into(),
                    }
                    .encode(&mut out);
                }
                ClientPacket::Request { id, request, .. } => {
                    NodePacket::Reply {
                        id,
                        outcome: ReplyOutcome::Success(request),
                    }
                    .encode(&mut out);
                }
                ClientPacket::Close => {
                    NodePacket::Close {
                        reason: String::new(),
                    }
                    .encode(&mut out);
                    let _ = stream.write_all(&out).await;
                    return;
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await.expect("write");
            out.clear();
        }
        if stream.read_buf(&mut buf).await.expect("read") == 0 {
            return;
        }
    }
}

async fn connect_echo() -> Connection {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        serve(stream).await;
    });
    let _ = echo_node;
    Connection::connect_addr(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "performance measurement"]
async fn request_latency_and_throughput() {
    let conn = connect_echo().await;
    let timeout = Duration::from_secs(5);
    for _ in 0..2000 {
        conn.request("echo", &b"x"[..], timeout)
            .await
            .expect("warm up");
    }
    let mut samples = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let start = Instant::now();
        conn.request("echo", &b"x"[..], timeout)
            .await
            .expect("reply");
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    println!("sequential round trip: p50 {p50:?}, p99 {p99:?}");

    for concurrency in [16usize, 128, 1024] {
        let total = 200_000usize;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..total / concurrency {
                    conn.request("echo", &b"x"[..], timeout)
                        .await
                        .expect("reply");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let rate = (total / concurrency * concurrency) as f64 / start.elapsed().as_secs_f64();
        println!("{concurrency} concurrent callers: {rate:.0} requests/s");
    }
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "performance measurement"]
async fn raw_tcp_ping_pong_baseline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut b = [0u8; 64];
        loop {
            let n = s.read(&mut b).await.expect("read");
            if n == 0 {
                return;
            }
            s.write_all(&b[..n]).await.expect("write");
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("dial");
    s.set_nodelay(true).expect("nodelay");
    let mut b = [0u8; 8];
    let mut samples = Vec::new();
    for i in 0..22_000 {
        let start = Instant::now();
        s.write_all(&b"pingping"[..]).await.expect("write");
        s.read_exact(&mut b).await.expect("read");
        if i >= 2000 {
            samples.push(start.elapsed());
        }
    }
    samples.sort_unstable();
    println!(
        "raw ping-pong: p50 {:?}, p99 {:?}",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100]
    );
}
