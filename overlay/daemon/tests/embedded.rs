//! Brokerless mode beside the daemon: a node embedded in this test process (no relay listener,
//! its applications attached in memory) joins a real `petald` process's network, and the
//! applications of each reach the other's by name: requests both ways, events both ways, and
//! a tunnel from an embedded client to a service of the daemon.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_client::{Connection, Error, ServiceHandler, Tunnel, register};
use petal_node::{Identity, LinkSecurity, NetworkKey, TokioNet};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);

/// Answers `<who>: <request>`; echoes tunnel messages.
struct Named(&'static str);

impl ServiceHandler for Named {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(Bytes::from(format!(
            "{}: {}",
            self.0,
            String::from_utf8_lossy(&request)
        )))
    }

    fn handle_tunnel(&self, tunnel: Tunnel) {
        tokio::spawn(async move {
            while let Ok(m) = tunnel.recv().await {
                if tunnel.send(m, T).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Requests until a member answers (memberships travel to their cluster's root first).
async fn ask(c: &Connection, cluster: &str) -> String {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match c.request(cluster, "hi", Duration::from_millis(300)).await {
            Ok(r) => return String::from_utf8(r.to_vec()).unwrap(),
            Err(Error::Timeout) if tokio::time::Instant::now() < deadline => {}
            Err(e) => panic!("{cluster}: {e}"),
        }
    }
}

/// Subscribes `sub` to `topic` and publishes from `publisher` until an event arrives.
async fn event_arrives(sub: &Connection, publisher: &Connection, topic: &str) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    sub.subscribe(topic, move |e: Bytes| {
        let _ = tx.send(e);
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        publisher.publish(topic, "news").await.unwrap();
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            assert_eq!(&e[..], b"news");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event on {topic}"
        );
    }
}

#[tokio::test]
async fn an_embedded_node_and_the_daemon_serve_each_others_applications() {
    let daemon = Daemon::start(&Spec::alone()).await;
    let key = NetworkKey::from_hex(TEST_NETWORK_KEY).unwrap();
    let mut o = petal_node::Options::new(Identity::generate().unwrap(), LinkSecurity::Noise(key));
    o.peer_listen = "127.0.0.1:0".parse().unwrap();
    o.relay_addrs = Vec::new();
    o.seeds = vec![daemon.peer];
    let node = petal_node::spawn(TokioNet, o).await.unwrap();
    assert!(node.relay_addrs().is_empty(), "no relay listener");
    assert!(node.wait_ready(T).await, "the embedded node joined");

    let _embedded_svc = node
        .register("in-process", Named("embedded"))
        .await
        .unwrap();
    let _daemon_svc = register(daemon.port, "in-daemon", Named("daemon"))
        .await
        .unwrap();
    let embedded = node.connect().await.unwrap();
    let tcp = Connection::connect(daemon.port).await.unwrap();

    assert_eq!(ask(&embedded, "in-daemon").await, "daemon: hi");
    assert_eq!(ask(&tcp, "in-process").await, "embedded: hi");
    event_arrives(&embedded, &tcp, "from-daemon").await;
    event_arrives(&tcp, &embedded, "from-embedded").await;

    let tun = embedded.tunnel("in-daemon", T).await.unwrap();
    let m = Bytes::from(pattern(9, 200_000));
    tun.send(m.clone(), T).await.unwrap();
    assert_eq!(within(T, "the echo", tun.recv()).await.unwrap(), m);
    tun.close().await.unwrap();

    embedded.close().await.unwrap();
    node.shutdown().await;
}
