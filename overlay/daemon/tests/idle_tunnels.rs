//! Ten thousand idle tunnels on one node (issue 16; the original Iris node is known to crash
//! at about 300): a real `petald` on loopback, 12 members of a cluster that keep every tunnel
//! offered to them and never send, 10 plain clients that open 1,000 tunnels each and never
//! send. Every open succeeds; the daemon's resident memory grows by a bounded amount per
//! tunnel; while all 10,000 are open the node still answers requests, opens a new tunnel and
//! carries a message through it; closing them all leaves the node serving.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use petal_client::{Connection, ServiceHandler, Tunnel, register};

const MEMBERS: usize = 12;
const CLIENTS: usize = 10;
const PER_CLIENT: usize = 1000;
const TUNNELS: usize = CLIENTS * PER_CLIENT;
/// The resident memory the daemon may grow by per open tunnel (both ends of each are on it;
/// measured: 1,068 bytes).
const MAX_BYTES_PER_TUNNEL: u64 = 4 << 10;

/// Keeps every tunnel it is offered (idle, never read); answers requests with their payload.
struct Holder(Arc<Mutex<Vec<Tunnel>>>);

impl ServiceHandler for Holder {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }

    fn handle_tunnel(&self, tunnel: Tunnel) {
        self.0.lock().unwrap().push(tunnel);
    }
}

/// The resident memory of process `pid`, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_tunnels_on_one_node() {
    let d = Daemon::start(&Spec::alone()).await;
    let held = Arc::new(Mutex::new(Vec::new()));
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        members.push(
            register(d.port, "idle", Holder(held.clone()))
                .await
                .expect("register"),
        );
    }
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(Connection::connect(d.port).await.expect("connect"));
    }
    // Warm up (allocator arenas, the clients' first tunnel) before the baseline.
    let warm = clients[0]
        .tunnel("idle", Duration::from_secs(5))
        .await
        .expect("first tunnel");
    warm.close().await.expect("close");
    let before = rss_bytes(d.pid());

    let t0 = Instant::now();
    let mut opening = Vec::new();
    for c in &clients {
        let c = c.clone();
        opening.push(tokio::spawn(async move {
            let mut v = Vec::with_capacity(PER_CLIENT);
            for i in 0..PER_CLIENT {
                let t = c
                    .tunnel("idle", Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|e| panic!("opening tunnel {i}: {e}"));
                v.push(t);
            }
            v
        }));
    }
    let mut tunnels = Vec::with_capacity(TUNNELS);
    for o in opening {
        tunnels.extend(o.await.expect("opener"));
    }
    let opened_in = t0.elapsed();
    // Every tunnel reached a member.
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.lock().unwrap().len() < TUNNELS {
        assert!(
            Instant::now() < deadline,
            "members hold {} of {TUNNELS} tunnels",
            held.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let idle timers (keepalives) run once with everything open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_bytes(d.pid());
    let per_tunnel = after.saturating_sub(before) / TUNNELS as u64;
    println!(
        "{TUNNELS} idle tunnels opened in {opened_in:?}; petald resident memory {} -> {} KiB, \
         {per_tunnel} bytes a tunnel",
        before >> 10,
        after >> 10
    );
    assert!(
        per_tunnel <= MAX_BYTES_PER_TUNNEL,
        "{per_tunnel} bytes of resident memory per idle tunnel"
    );

    // Still serving with all of them open: a request, and a new tunnel carrying a message.
    let reply = within(
        Duration::from_secs(5),
        "a request",
        clients[3].request("idle", Bytes::from_static(b"hello"), Duration::from_secs(5)),
    )
    .await
    .expect("request answered");
    assert_eq!(&reply[..], b"hello");
    let fresh = clients[4]
        .tunnel("idle", Duration::from_secs(5))
        .await
        .expect("a new tunnel");
    fresh
        .send(Bytes::from_static(b"through"), Duration::from_secs(5))
        .await
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    while held.lock().unwrap().len() <= TUNNELS {
        assert!(
            Instant::now() < deadline,
            "the fresh tunnel reached no member"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let receiver = held
        .lock()
        .unwrap()
        .pop()
        .expect("the fresh tunnel's far end");
    let got = within(Duration::from_secs(5), "the message", receiver.recv())
        .await
        .expect("received");
    assert_eq!(&got[..], b"through");

    // Close them all; the node serves on.
    for t in tunnels {
        t.close().await.expect("close");
    }
    let reply = clients[0]
        .request("idle", Bytes::from_static(b"after"), Duration::from_secs(5))
        .await
        .expect("request after closing");
    assert_eq!(&reply[..], b"after");
    assert!(!d.log().contains("panicked"), "{}", d.log());
}
