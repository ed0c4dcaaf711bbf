//! One real `petald` process on loopback, driven through `petal-client` with the scenarios the
//! Iris client libraries' own tests use: 100 concurrent connections, 25 clients x 25 services
//! x 25 requests, remote faults, node-enforced timeouts, requests expiring in a busy service's
//! queue, and broadcast / publish to oneself within a millisecond (95th percentile).
//!
//! The tests of this file run one at a time (they measure time on a small machine); each
//! starts its own daemon.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use petal_client::{Connection, Error, Options, Service, ServiceHandler, register};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Serialises the tests of this file.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Replies `re: <request>`.
struct Transform;

impl ServiceHandler for Transform {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(transform(&request))
    }
}

fn transform(request: &[u8]) -> Bytes {
    let mut out = b"re: ".to_vec();
    out.extend_from_slice(request);
    out.into()
}

/// Fails every request with its own text as the fault.
struct Fail;

impl ServiceHandler for Fail {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Err(String::from_utf8_lossy(&request).into_owned())
    }
}

/// Sleeps, counts, then echoes.
struct Slow {
    sleep: Duration,
    done: Arc<AtomicU64>,
}

impl ServiceHandler for Slow {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        tokio::time::sleep(self.sleep).await;
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(request)
    }
}

/// Passes every broadcast, with its arrival time, to a channel.
struct Catch(mpsc::UnboundedSender<(Instant, Bytes)>);

impl ServiceHandler for Catch {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }

    fn handle_broadcast(&self, message: Bytes) {
        let _ = self.0.send((Instant::now(), message));
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_connect_concurrently_then_close_gracefully() {
    let _serial = SERIAL.lock().await;
    let d = Daemon::start(&Spec::alone()).await;
    let port = d.port;
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..100 {
        set.spawn(async move { Connection::connect(port).await });
    }
    let mut conns = Vec::new();
    while let Some(r) = within(10 * SECOND, "connecting", set.join_next()).await {
        conns.push(r.unwrap().expect("connect"));
    }
    let connected = t0.elapsed();
    // All 100 are attached at once: each gets its own reply from a service of the daemon.
    let svc = register(port, "hundred", Transform)
        .await
        .expect("register");
    let mut set = JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        set.spawn(async move {
            let ask = Bytes::from(format!("from {i}"));
            let reply = c.request("hundred", ask.clone(), SECOND).await;
            let reply = reply.unwrap_or_else(|e| panic!("connection {i}: {e:?}"));
            assert_eq!(reply, transform(&ask), "connection {i}");
            c
        });
    }
    let mut conns = Vec::new();
    while let Some(r) = within(10 * SECOND, "a request on each", set.join_next()).await {
        conns.push(r.unwrap());
    }
    let t1 = Instant::now();
    let mut set = JoinSet::new();
    for c in conns {
        set.spawn(async move {
            c.close().await.expect("graceful close");
            c
        });
    }
    let mut closed = Vec::new();
    while let Some(r) = within(10 * SECOND, "closing", set.join_next()).await {
        closed.push(r.unwrap());
    }
    let closing = t1.elapsed();
    // Each is closed for good: a request after the close fails at once, the daemon unharmed.
    for (i, c) in closed.iter().enumerate() {
        assert!(c.is_closed(), "connection {i}");
        let r = c.request("hundred", "late", SECOND).await;
        assert!(matches!(r, Err(Error::Closed(_))), "connection {i}: {r:?}");
    }
    let alive = Connection::connect(port).await.expect("connect after");
    let r = alive.request("hundred", "after", SECOND).await;
    assert_eq!(r.expect("a request after the closes"), transform(b"after"));
    alive.close().await.unwrap();
    svc.close().await.unwrap();
    println!("100 concurrent connects: {connected:?}; 100 graceful closes: {closing:?}");
}

/// The Go library's TestRequest: 25 services of one cluster and 25 plain clients; every one of
/// the 50 sends 25 requests to the cluster (one after another, 1 s timeout) and checks each
/// reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_clients_and_services_send_twenty_five_requests_each() {
    let _serial = SERIAL.lock().await;
    let d = Daemon::start(&Spec::alone()).await;
    let cluster = "reqrep";
    let mut services: Vec<Service> = Vec::new();
    let mut clients: Vec<Connection> = Vec::new();
    for _ in 0..25 {
        services.push(
            register(d.port, cluster, Transform)
                .await
                .expect("register"),
        );
        clients.push(Connection::connect(d.port).await.expect("connect"));
    }
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    let requesters = clients
        .iter()
        .cloned()
        .map(|c| ("client", c))
        .chain(services.iter().map(|s| ("server", s.connection().clone())));
    for (i, (kind, conn)) in requesters.enumerate() {
        set.spawn(async move {
            for j in 0..25 {
                let request = format!("{kind} #{i}, request {j}");
                let reply = conn
                    .request(cluster, request.clone(), SECOND)
                    .await
                    .unwrap_or_else(|e| panic!("{request}: {e}"));
                assert_eq!(reply, transform(request.as_bytes()), "{request}");
            }
        });
    }
    while let Some(r) = within(30 * SECOND, "requests", set.join_next()).await {
        r.unwrap();
    }
    let took = t0.elapsed();
    println!("25 clients + 25 services x 25 requests (1250 in all): {took:?}");
    for c in &clients {
        assert_eq!(c.stats().ignored_packets, 0, "a reply nobody waited for");
        c.close().await.expect("close");
    }
    for s in &services {
        assert_eq!(s.stats(), Default::default(), "nothing dropped or ignored");
        s.close().await.expect("close");
    }
}

/// The Go library's TestRequestFail: a handler's fault text reaches the requester as a remote
/// error, for 125 requests from the service itself and 25 from a plain client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_fault_reaches_the_requester_as_a_remote_error() {
    let _serial = SERIAL.lock().await;
    let d = Daemon::start(&Spec::alone()).await;
    let svc = register(d.port, "failing", Fail).await.expect("register");
    let client = Connection::connect(d.port).await.expect("connect");
    for (n, conn) in [(125, svc.connection()), (25, &client)] {
        for i in 0..n {
            let request = format!("failure {i}");
            match within(
                5 * SECOND,
                "request",
                conn.request("failing", request.clone(), SECOND),
            )
            .await
            {
                Err(Error::Remote(fault)) => assert_eq!(fault, request),
                other => panic!("{request}: want a remote fault, got {other:?}"),
            }
        }
    }
    client.close().await.unwrap();
    svc.close().await.unwrap();
}

/// The Go library's TestRequestTimeout: a 25 ms handler answers within a 50 ms timeout and
/// not within a 12 ms one (the library's 12.5 ms, in whole milliseconds); a cluster without
/// members times out after the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_enforces_request_timeouts() {
    let _serial = SERIAL.lock().await;
    let d = Daemon::start(&Spec::alone()).await;
    let done = Arc::new(AtomicU64::new(0));
    let svc = register(
        d.port,
        "sleepy",
        Slow {
            sleep: Duration::from_millis(25),
            done: done.clone(),
        },
    )
    .await
    .expect("register");
    for round in 0..5 {
        let t0 = Instant::now();
        let reply = within(
            SECOND,
            "50 ms request",
            svc.request("sleepy", "long", Duration::from_millis(50)),
        )
        .await;
        let long = t0.elapsed();
        assert_eq!(
            reply.expect("a 25 ms handler answers within 50 ms"),
            &b"long"[..],
            "round {round}"
        );
        let t0 = Instant::now();
        let reply = within(
            SECOND,
            "12 ms request",
            svc.request("sleepy", "short", Duration::from_millis(12)),
        )
        .await;
        let short = t0.elapsed();
        assert!(
            matches!(reply, Err(Error::Timeout)),
            "round {round}: a 25 ms handler answered within 12 ms: {reply:?}"
        );
        assert!(
            short >= Duration::from_millis(12),
            "timed out early: {short:?}"
        );
        if round == 0 {
            println!("50 ms request answered in {long:?}; 12 ms request timed out in {short:?}");
        }
        // Let the late handler finish so that rounds do not overlap.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let client = Connection::connect(d.port).await.unwrap();
    let t0 = Instant::now();
    let r = within(
        SECOND,
        "request without members",
        client.request("nobody-here", "?", Duration::from_millis(20)),
    )
    .await;
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(20),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(svc.stats().ignored_packets, 0);
    assert_eq!(client.stats().ignored_packets, 0);
    client.close().await.unwrap();
    svc.close().await.unwrap();
}

/// The Go library's TestRequestExpiration: a service with one request handler, busy for 25 ms
/// per request, gets 16 concurrent requests with a 1 ms timeout. Each requester gets exactly
/// one outcome, a timeout; the handler runs for the first only, the rest expire in the
/// library's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_a_one_ms_timeout_expire_in_a_busy_services_queue() {
    let _serial = SERIAL.lock().await;
    let d = Daemon::start(&Spec::alone()).await;
    let done = Arc::new(AtomicU64::new(0));
    let mut options = Options::default();
    options.request_handlers = 1;
    let svc = options
        .register(
            d.port,
            "busy",
            Slow {
                sleep: Duration::from_millis(25),
                done: done.clone(),
            },
        )
        .await
        .expect("register");
    let n = 16;
    let mut set = JoinSet::new();
    for i in 0..n {
        let conn = svc.connection().clone();
        set.spawn(async move {
            let r = conn
                .request("busy", vec![i as u8], Duration::from_millis(1))
                .await;
            assert!(matches!(r, Err(Error::Timeout)), "request {i}: {r:?}");
        });
    }
    // Each task asserts its own outcome (a timeout); a second one would be an ignored packet.
    while let Some(r) = within(SECOND, "1 ms requests", set.join_next()).await {
        r.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(25 * (n + 1))).await;
    let stats = svc.stats();
    assert_eq!(
        done.load(Ordering::SeqCst),
        1,
        "handler runs (the rest should have expired in the queue); {stats:?}"
    );
    assert_eq!(stats.expired_requests, n - 1, "{stats:?}");
    assert_eq!(stats.ignored_packets, 0, "a second outcome for a request");
    svc.close().await.unwrap();
}

/// A service broadcasting to its own cluster and a subscriber publishing to its own topic get
/// their message back within a millisecond on loopback, all but the odd round. Asserted over
/// 200 rounds each: the 95th percentile under 1 ms (measured: p95 30-105 us, idle or with both
/// cores busy, release or debug build), and every round under 50 ms. A single round is not
/// held to 1 ms: on a busy machine a scheduling hiccup of several ms lands on a few rounds
/// (slowest seen with both cores busy: 12 ms); the p95 fails only if 11 of the 200 are slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_and_publish_to_oneself_arrive_within_a_millisecond_at_the_95th_percentile() {
    let _serial = SERIAL.lock().await;
    let d = Daemon::start(&Spec::alone()).await;
    const ROUNDS: usize = 200;
    let p95_bound = Duration::from_millis(1);
    let bound = Duration::from_millis(50);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let svc = register(d.port, "selfcast", Catch(tx))
        .await
        .expect("register");
    let mut broadcast = Vec::new();
    for i in 0..ROUNDS {
        let msg = Bytes::from((i as u32).to_le_bytes().to_vec());
        let t0 = Instant::now();
        svc.broadcast("selfcast", msg.clone()).await.unwrap();
        let (at, got) = within(SECOND, "broadcast to oneself", rx.recv())
            .await
            .unwrap();
        assert_eq!(got, msg);
        broadcast.push(at - t0);
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = Connection::connect(d.port).await.expect("connect");
    conn.subscribe("selftopic", move |event: Bytes| {
        let _ = tx.send((Instant::now(), event));
    })
    .await
    .unwrap();
    let mut publish = Vec::new();
    for i in 0..ROUNDS {
        let ev = Bytes::from((i as u32).to_le_bytes().to_vec());
        let t0 = Instant::now();
        conn.publish("selftopic", ev.clone()).await.unwrap();
        let (at, got) = within(SECOND, "publish to oneself", rx.recv())
            .await
            .unwrap();
        assert_eq!(got, ev);
        publish.push(at - t0);
    }

    for (what, samples) in [("broadcast", &mut broadcast), ("publish", &mut publish)] {
        let (median, max) = median_max(samples);
        let p95 = quantile(samples, 0.95);
        println!(
            "{what} to oneself ({ROUNDS} rounds): median {median:?}, p95 {p95:?}, max {max:?}"
        );
        assert!(
            p95 < p95_bound,
            "{what} to oneself: p95 {p95:?} (median {median:?}, max {max:?}), want < {p95_bound:?}"
        );
        assert!(
            max < bound,
            "{what} to oneself: slowest {max:?} (median {median:?}), want < {bound:?}"
        );
    }
    assert_eq!(svc.stats(), Default::default());
    assert_eq!(conn.stats(), Default::default());
    conn.close().await.unwrap();
    svc.close().await.unwrap();
}
