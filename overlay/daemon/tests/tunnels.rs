//! Tunnels through one real `petald` process on loopback, with the Iris client libraries'
//! tests: 16 MiB echoed within 10 s (as 256 messages of 64 KiB from a plain client, and as one
//! 16 MiB message from a service tunnelling to its own cluster, i.e. to itself), and a tunnel
//! overloaded by ten 64 MiB sends with a 10 ms timeout that each fail cleanly, after which
//! the tunnel still works (small messages, then a whole 64 MiB message).
//!
//! The tests of this file run one at a time (they measure time on a small machine); each
//! starts its own daemon.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use petal_client::{Connection, Error, ServiceHandler, Tunnel, register};

/// Serialises the tests of this file.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECOND: Duration = Duration::from_secs(1);

/// Echoes every message of every inbound tunnel, until the tunnel ends.
struct Echo;

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }

    fn handle_tunnel(&self, tunnel: Tunnel) {
        tokio::spawn(async move {
            while let Ok(message) = tunnel.recv().await {
                if tunnel.send(message, 10 * SECOND).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Sends `count` messages of `size` bytes through `tunnel` while receiving their echoes
/// concurrently, checking each; returns the time taken.
async fn echo_messages(tunnel: Arc<Tunnel>, count: usize, size: usize) -> Duration {
    let messages: Vec<Bytes> = (0..count)
        .map(|i| Bytes::from(pattern(i as u64, size)))
        .collect();
    let t0 = Instant::now();
    let sender = {
        let tunnel = tunnel.clone();
        let messages = messages.clone();
        tokio::spawn(async move {
            for (i, m) in messages.into_iter().enumerate() {
                tunnel
                    .send(m, 10 * SECOND)
                    .await
                    .unwrap_or_else(|e| panic!("sending message {i}: {e}"));
            }
        })
    };
    for (i, want) in messages.iter().enumerate() {
        let got = tunnel
            .recv()
            .await
            .unwrap_or_else(|e| panic!("receiving message {i}: {e}"));
        assert!(got == want, "message {i} came back different");
    }
    sender.await.unwrap();
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_echo_through_a_tunnel_within_ten_seconds() {
    let _serial = SERIAL.lock().await;
    let d = Daemon::start(&Spec::alone()).await;
    let svc = register(d.port, "echo", Echo).await.expect("register");
    let client = Connection::connect(d.port).await.expect("connect");

    // 256 x 64 KiB from a plain client to the service.
    let tunnel = Arc::new(
        within(SECOND, "opening", client.tunnel("echo", SECOND))
            .await
            .expect("tunnel"),
    );
    let small = within(
        20 * SECOND,
        "16 MiB in 64 KiB messages",
        echo_messages(tunnel.clone(), 256, 64 << 10),
    )
    .await;
    within(SECOND, "closing", tunnel.close())
        .await
        .expect("close");

    // One 16 MiB message from the service to its own cluster (itself), as the Go library's
    // TestTunnelChunking.
    let tunnel = Arc::new(
        within(SECOND, "opening", svc.tunnel("echo", SECOND))
            .await
            .expect("tunnel to itself"),
    );
    let big = within(
        20 * SECOND,
        "one 16 MiB message",
        echo_messages(tunnel.clone(), 1, 16 << 20),
    )
    .await;
    // And 16 messages of 1 MiB.
    let mid = within(
        20 * SECOND,
        "16 MiB in 1 MiB messages",
        echo_messages(tunnel.clone(), 16, 1 << 20),
    )
    .await;
    within(SECOND, "closing", tunnel.close())
        .await
        .expect("close");

    println!(
        "16 MiB echoed: as 256 x 64 KiB {small:?}, as 1 x 16 MiB {big:?}, as 16 x 1 MiB {mid:?}"
    );
    for (what, t) in [("64 KiB", small), ("16 MiB", big), ("1 MiB", mid)] {
        assert!(
            t < 10 * SECOND,
            "16 MiB echoed in {what} messages took {t:?}"
        );
    }
    assert_eq!(client.stats().ignored_packets, 0);
    client.close().await.unwrap();
    svc.close().await.unwrap();
}

/// The Go library's TestTunnelOverload (with 10 ms instead of 1 ms per send).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_tunnel_times_out_cleanly_and_still_works() {
    let _serial = SERIAL.lock().await;
    let d = Daemon::start(&Spec::alone()).await;
    let svc = register(d.port, "echo", Echo).await.expect("register");
    let tunnel = within(SECOND, "opening", svc.tunnel("echo", SECOND))
        .await
        .expect("tunnel");
    let blob = Bytes::from(vec![0x5au8; 64 << 20]);
    for i in 0..10 {
        let t0 = Instant::now();
        let r = within(
            SECOND,
            "a 64 MiB send with a 10 ms timeout",
            tunnel.send(blob.clone(), Duration::from_millis(10)),
        )
        .await;
        assert!(
            matches!(r, Err(Error::Timeout)),
            "send {i}: want a timeout, got {r:?}"
        );
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "send {i} timed out after {:?}",
            t0.elapsed()
        );
    }
    let data = Bytes::from_static(&[0, 1, 0, 2, 0, 3, 0, 4]);
    for i in 0..10 {
        within(SECOND, "small send", tunnel.send(data.clone(), SECOND))
            .await
            .unwrap_or_else(|e| panic!("small send {i}: {e}"));
        let back = within(2 * SECOND, "small echo", tunnel.recv())
            .await
            .unwrap_or_else(|e| panic!("small echo {i}: {e}"));
        assert_eq!(back, data, "echo {i}");
    }
    // The credit of both directions survived the partial messages: a whole 64 MiB message
    // (the receive buffer) echoes.
    let t0 = Instant::now();
    let tunnel = Arc::new(tunnel);
    within(
        20 * SECOND,
        "a 64 MiB message after the overload",
        echo_messages(tunnel.clone(), 1, 64 << 20),
    )
    .await;
    println!("64 MiB echoed after the overload in {:?}", t0.elapsed());
    within(SECOND, "closing", tunnel.close())
        .await
        .expect("close");
    svc.close().await.unwrap();
}
