//! The client over simulated TCP (turmoil), through the generic stream constructors: what the
//! simulator's harness does with petal-node and petal-client.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use petal_client::{Connection, Error};
use petal_protocol::relay::{ClientPacket, Limits, NodePacket, RELAY_MAGIC, ReplyOutcome, VERSION};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PORT: u16 = 55555;

/// Set once the node holds a request it will never answer.
static HUNG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A minimal node: accepts the handshake, echoes requests ("hang" is never answered), acks
/// CLOSE.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    loop {
        while let Some(packet) = ClientPacket::decode(&mut buf, &Limits::default()).expect("valid")
        {
            match packet {
                ClientPacket::Init { .. } => {
                    NodePacket::Init {
                        magic: RELAY_MAGIC.into(),
                        version: VERSION.into(),
                    }
                    .encode(&mut out);
                }
                ClientPacket::Request { request, .. } if request == "hang" => {
                    HUNG.store(true, std::sync::atomic::Ordering::SeqCst);
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
                    stream.write_all(&out).await.expect("write");
                    return;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        stream.write_all(&out).await.expect("write");
        out.clear();
        if stream.read_buf(&mut buf).await.expect("read") == 0 {
            return;
        }
    }
}

fn node(sim: &mut turmoil::Sim<'_>) {
    sim.host("node", || async {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(serve(stream));
        }
    });
}

#[test]
fn requests_and_close_over_simulated_tcp() {
    let mut sim = turmoil::Builder::new().build();
    node(&mut sim);
    sim.client("app", async {
        let stream = turmoil::net::TcpStream::connect(("node", PORT)).await?;
        let conn = Connection::with_stream(stream).await?;
        let mut calls = Vec::new();
        for i in 0..50 {
            let conn = conn.clone();
            calls.push(tokio::spawn(async move {
                let body = format!("req {i}");
                let reply = conn
                    .request("echo", body.clone(), Duration::from_secs(1))
                    .await?;
                assert_eq!(reply, Bytes::from(body));
                Ok::<_, Error>(())
            }));
        }
        for call in calls {
            call.await??;
        }
        conn.close().await?;
        assert!(conn.is_closed());
        Ok(())
    });
    sim.run().expect("simulation");
}

#[test]
fn a_crashed_node_fails_pending_requests() {
    let mut sim = turmoil::Builder::new().build();
    node(&mut sim);
    sim.client("app", async {
        let stream = turmoil::net::TcpStream::connect(("node", PORT)).await?;
        let conn = Connection::with_stream(stream).await?;
        let result = conn.request("echo", "hang", Duration::from_secs(60)).await;
        assert!(matches!(result, Err(Error::Broken(_))), "{result:?}");
        assert!(conn.is_closed());
        Ok(())
    });
    // Let the request reach the node, then crash it.
    while !HUNG.load(std::sync::atomic::Ordering::SeqCst) {
        sim.step().expect("step");
    }
    sim.crash("node");
    sim.run().expect("simulation");
}
