//! Several nodes on loopback: they join through a seed and serve each other's applications.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_protocol::relay::{ClientPacket, NodePacket, ReplyOutcome};

#[tokio::test]
async fn three_nodes_converge_and_serve_requests_across() {
    let a = node(0x1000_0000_0000_0000_0000_0000_0000_0000, vec![]).await;
    let seed = a.info().addr;
    let b = node(0x5000_0000_0000_0000_0000_0000_0000_0000, vec![seed]).await;
    let c = node(0xa000_0000_0000_0000_0000_0000_0000_0000, vec![seed]).await;
    let t0 = tokio::time::Instant::now();
    wait_ready(&[&a, &b, &c], 2).await;
    eprintln!("converged in {:?}", t0.elapsed());
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "converged in {:?}",
        t0.elapsed()
    );

    let mut svc = Raw::attach(relay_addr(&c), "svc").await;
    let mut cli = Raw::attach(relay_addr(&a), "").await;
    let (id, got) = request_until_delivered(&mut cli, &mut svc, "svc").await;
    let Some(NodePacket::Request { id: d, request, .. }) = got else {
        panic!("{got:?}")
    };
    assert_eq!(&request[..], b"ping");
    svc.send(ClientPacket::Reply {
        id: d,
        result: Ok(Bytes::from_static(b"pong")),
    })
    .await;
    assert_eq!(
        cli.recv().await,
        Some(NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Success(Bytes::from_static(b"pong"))
        })
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// A node whose only seed is down serves alone at once (not after the join wait), keeps
/// dialing the seed (100 ms, then doubling), and when the seed's node comes up the two rings of
/// one merge: no operator action.
#[tokio::test]
async fn a_seed_that_comes_up_later_is_found_and_the_rings_merge() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let seed: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = tokio::time::Instant::now();
    let b = node(0xb0, vec![seed]).await;
    wait_ready(&[&b], 0).await;
    let alone_after = t0.elapsed();
    assert!(
        alone_after < Duration::from_secs(1),
        "served alone after {alone_after:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // b's dials to the seed address (every 100 ms at first) can hold its port for a moment
    // (on loopback a connect may even pick the destination port as its own): retry the bind.
    let mut tries = 0;
    let a = loop {
        let mut o = options(0xa0, vec![]);
        o.peer_listen = seed;
        match petal_node::spawn(petal_node::TokioNet, o).await {
            Ok(a) => break a,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 40 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => panic!("the seed's node cannot listen on {seed}: {e}"),
        }
    };
    let t1 = tokio::time::Instant::now();
    wait_ready(&[&a, &b], 1).await;
    eprintln!(
        "alone after {alone_after:?}; merged {:?} after the seed came up",
        t1.elapsed()
    );
    let sb = b.stats().await.unwrap();
    assert!(sb.runtime.peers_discovered >= 1, "{:?}", sb.runtime);
    a.shutdown().await;
    b.shutdown().await;
}

/// A seed list that names the node itself (one list for a whole cluster): the node serves at
/// once, recognises itself, and never dials itself again.
#[tokio::test]
async fn a_seed_list_naming_the_node_itself_is_harmless() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let me: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut o = options(0xc0, vec![me]);
    o.peer_listen = me;
    let t0 = tokio::time::Instant::now();
    let n = petal_node::spawn(petal_node::TokioNet, o).await.unwrap();
    wait_ready(&[&n], 0).await;
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "ready after {:?}",
        t0.elapsed()
    );
    // Seed retries come 1 s and 3 s after the start: none may dial itself.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let s = n.stats().await.unwrap();
    assert_eq!(s.runtime.link_dials, 1, "{:?}", s.runtime);
    n.shutdown().await;
}

#[test]
fn options_that_would_misbehave_are_refused() {
    let mut o = options(0xc1, vec![]);
    o.seed_retry = Duration::ZERO;
    assert!(o.validate().is_err());
    let mut o = options(0xc1, vec![]);
    o.discovery = Some(petal_node::discovery::Discovery {
        slow_interval: Duration::ZERO,
        ..Default::default()
    });
    assert!(o.validate().is_err());
    // A period the runtime's clock cannot add to now (it would panic in a timer) is refused.
    let mut o = options(0xc1, vec![]);
    o.discovery = Some(petal_node::discovery::Discovery {
        slow_interval: Duration::from_secs(u64::MAX),
        ..Default::default()
    });
    assert!(o.validate().is_err());
    let mut o = options(0xc1, vec![]);
    o.link_keepalive = Duration::from_secs(86_401);
    // (Twice as long an idle timeout: the keepalive's own bound is what refuses it.)
    o.link_idle_timeout = Duration::from_secs(2 * 86_401);
    let e = o.validate().unwrap_err().to_string();
    assert!(e.contains("at most a day"), "{e}");
    assert!(options(0xc1, vec![]).validate().is_ok());
}

/// A node whose discovery cannot start (here: an interface address this host does not have,
/// as on a host with no multicast route) starts all the same, serves its applications, and
/// keeps trying discovery in the background.
#[tokio::test]
async fn a_node_whose_discovery_cannot_start_serves_anyway() {
    let mut o = options(0xc2, vec![]);
    o.discovery = Some(petal_node::discovery::Discovery {
        // TEST-NET-1: never an address of this host.
        interface: std::net::Ipv4Addr::new(192, 0, 2, 1),
        ..Default::default()
    });
    let n = petal_node::spawn(petal_node::TokioNet, o)
        .await
        .expect("the node starts without discovery");
    let mut h = Healthy::new(relay_addr(&n)).await;
    h.check().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.check().await;
    n.shutdown().await;
}
