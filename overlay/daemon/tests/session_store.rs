//! `petald --session-store redis://...` against a real `redis-server` (Debian's package) that
//! each test starts on loopback: identities registered at one node are listed in Redis and
//! reached from another node; a closed connection's entry is removed and a killed node's
//! expires within one lease; a Redis that goes away fails identity operations with its reason
//! while everything else keeps working, and they work again once it is back (a node started
//! before its Redis too); petald refuses a session-store URL of another kind.
//!
//! Skipped (with a message) when `redis-server` is not installed, unless `PETAL_REDIS=1`
//! says it must run (CI installs it and sets that).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use petal_client::{Connection, Error, ServiceHandler, register};
use tokio::sync::mpsc;

/// One `redis-server` on 127.0.0.1, killed when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
}

/// True when the tests can run; false (after saying why) when they are skipped.
fn redis_installed() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("PETAL_REDIS").as_deref() != Ok("1"),
            "PETAL_REDIS=1 but redis-server is not installed (apt-get install redis-server)"
        );
        eprintln!("redis-server not installed: session-store tests skipped");
    }
    ok
}

impl Redis {
    async fn start() -> Redis {
        let port = free_port(lo(1), false);
        let mut r = Redis { child: None, port };
        r.restart().await;
        r
    }

    /// Starts the server (again) on its port, with nothing saved to disk.
    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one redis-cli command; its output, trimmed.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("running redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two daemons keeping their identity registries in `redis`, the second joined to the first;
/// `timers` are extra `[timers]` lines of both.
async fn pair(redis: &Redis, timers: &str) -> (Daemon, Daemon, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let config = dir.path.join("petald.toml");
    std::fs::write(
        &config,
        format!(
            "admin = \"off\"\nsession_store = \"{}\"\n[timers]\n{timers}\n",
            redis.url()
        ),
    )
    .unwrap();
    let mut spec = Spec::alone();
    spec.extra = vec!["--config".into(), config.display().to_string()];
    // Node A's admin API shows where the registries are.
    let mut spec_a = spec.clone();
    let admin = format!("127.0.0.1:{}", free_port(lo(1), false));
    spec_a.extra.extend(["--admin".into(), admin.clone()]);
    let a = Daemon::start(&spec_a).await;
    let node = http_get(&admin, "/v1/node").await;
    assert!(
        node.contains(&format!("\"identity_registry\":\"{}\"", redis.url())),
        "{node}"
    );
    spec.peer_ip = lo(2);
    spec.seeds = vec![a.peer];
    let b = Daemon::start(&spec).await;
    assert!(a.log().contains("identity registries in Redis"));
    // Both in one ring before the tests use it.
    let c = Connection::connect(b.port).await.unwrap();
    let svc = register(a.port, "ping", Echo).await.unwrap();
    within(Duration::from_secs(10), "the ring", async {
        while c
            .request("ping", "?", Duration::from_millis(500))
            .await
            .is_err()
        {}
    })
    .await;
    drop(svc);
    (a, b, dir)
}

/// The body of a plain HTTP/1.1 GET of `path` at `addr`.
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    within(T, "the admin API", s.read_to_string(&mut out))
        .await
        .unwrap();
    out
}

mod tempdir {
    /// A directory removed when dropped.
    pub(crate) struct Dir {
        pub path: std::path::PathBuf,
    }

    impl Dir {
        pub(crate) fn new() -> Dir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "petal-session-store-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

struct Echo;

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }
}

/// Holds `identity` on a new connection to `port`; its messages come out of the receiver.
async fn hold(port: u16, identity: &str) -> (Connection, mpsc::UnboundedReceiver<Bytes>) {
    let c = Connection::connect(port).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    c.id_register(
        identity,
        move |m: Bytes| {
            let _ = tx.send(m);
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    (c, rx)
}

/// Waits until `check` holds (polling every 20 ms), failing after `within`.
async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn identities_live_in_redis_and_reach_their_holders_from_other_nodes() {
    if !redis_installed() {
        return;
    }
    let redis = Redis::start().await;
    let (a, b, _dir) = pair(&redis, "").await;
    let (alice, mut inbox) = hold(a.port, "alice").await;
    let sender = Connection::connect(b.port).await.unwrap();
    assert_eq!(sender.id_send("alice", "hi", T).await.unwrap(), 1);
    let got = within(T, "the message", inbox.recv()).await.unwrap();
    assert_eq!(&got[..], b"hi");
    let holders = sender.id_who("alice", T).await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].addr, a.peer);
    // Redis holds the registry: a hash with a version and one line for node A, expiring
    // within one lease (10 s by default).
    let line = redis.cli(&["HGET", "petal-id/alice", "d"]);
    assert!(
        line.starts_with(&format!("{} {} ", holders[0].id, a.peer)),
        "{line:?}"
    );
    let ttl: i64 = redis.cli(&["PTTL", "petal-id/alice"]).parse().unwrap();
    assert!((1..=10_000).contains(&ttl), "{ttl}");
    // An application reads the registry through the store API too.
    // (A renewal may have written a later expiry since: node and address are compared.)
    let entry = sender.kv_get("petal-id/alice", T).await.unwrap().unwrap();
    let prefix = format!("{} {} ", holders[0].id, a.peer);
    assert!(String::from_utf8_lossy(&entry.value).starts_with(&prefix));
    // The holder closes: its line goes, and the identity is unknown.
    alice.close().await.unwrap();
    eventually(Duration::from_secs(3), "the registry removed", || {
        redis.cli(&["EXISTS", "petal-id/alice"]) == "0"
    })
    .await;
    assert!(matches!(
        sender.id_send("alice", "anyone?", T).await,
        Err(Error::UnknownIdentity)
    ));
    drop(b);
}

#[tokio::test]
async fn a_killed_node_s_identity_expires_from_redis_within_a_lease() {
    if !redis_installed() {
        return;
    }
    let redis = Redis::start().await;
    let (mut a, b, _dir) = pair(&redis, "identity_lease = \"2s\"").await;
    let (_bob, _inbox) = hold(a.port, "bob").await;
    assert_eq!(redis.cli(&["EXISTS", "petal-id/bob"]), "1");
    // A crash: no goodbye, no removal.
    let _ = Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status();
    assert!(a.wait_exit(T).await.is_some());
    let killed = Instant::now();
    eventually(Duration::from_secs(3), "the entry expired", || {
        redis.cli(&["EXISTS", "petal-id/bob"]) == "0"
    })
    .await;
    assert!(killed.elapsed() <= Duration::from_secs(3));
    let c = Connection::connect(b.port).await.unwrap();
    assert!(c.id_who("bob", T).await.unwrap().is_empty());
}

#[tokio::test]
async fn without_redis_identity_operations_fail_with_the_reason_and_recover_after() {
    if !redis_installed() {
        return;
    }
    let mut redis = Redis::start().await;
    let (a, b, _dir) = pair(&redis, "").await;
    let _svc = register(a.port, "echo", Echo).await.unwrap();
    let c = Connection::connect(b.port).await.unwrap();
    // Held across the outage.
    let (_erin, mut erin_inbox) = hold(a.port, "erin").await;
    redis.stop();
    let r = c.id_send("carol", "x", Duration::from_secs(2)).await;
    match r {
        Err(Error::Store(why)) => assert!(why.starts_with("identity registry: redis"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Everything else works meanwhile.
    let reply = c.request("echo", "still here", T).await.unwrap();
    assert_eq!(&reply[..], b"still here");
    // Back (an empty Redis, as after a restart without persistence): registrations work
    // again once the connection is re-made.
    redis.restart().await;
    let (_dan, mut inbox) = within(Duration::from_secs(15), "a registration", async {
        loop {
            let conn = Connection::connect(a.port).await.unwrap();
            let (tx, rx) = mpsc::unbounded_channel();
            let handler = move |m: Bytes| {
                let _ = tx.send(m);
            };
            if conn.id_register("dan", handler, T).await.is_ok() {
                return (conn, rx);
            }
        }
    })
    .await;
    assert_eq!(c.id_send("dan", "back", T).await.unwrap(), 1);
    assert_eq!(
        &within(T, "the message", inbox.recv()).await.unwrap()[..],
        b"back"
    );
    // The identity held across the outage is written again by its lease's next renewal
    // (every third of the 10 s lease) and reached again.
    eventually(Duration::from_secs(8), "erin listed again", || {
        redis.cli(&["EXISTS", "petal-id/erin"]) == "1"
    })
    .await;
    assert_eq!(c.id_send("erin", "welcome back", T).await.unwrap(), 1);
    assert_eq!(
        &within(T, "the message", erin_inbox.recv()).await.unwrap()[..],
        b"welcome back"
    );
}

#[tokio::test]
async fn a_node_starts_before_its_session_store_and_uses_it_once_it_answers() {
    if !redis_installed() {
        return;
    }
    // Nothing listens on its port yet.
    let mut redis = Redis {
        child: None,
        port: free_port(lo(1), false),
    };
    let (a, b, _dir) = pair(&redis, "").await;
    assert!(a.log().contains("which does not answer"), "{}", a.log());
    let c = Connection::connect(b.port).await.unwrap();
    match c.id_who("fay", Duration::from_secs(2)).await {
        Err(Error::Store(why)) => assert!(why.starts_with("identity registry: redis"), "{why}"),
        other => panic!("{other:?}"),
    }
    redis.restart().await;
    let _fay = within(Duration::from_secs(15), "a registration", async {
        loop {
            let conn = Connection::connect(a.port).await.unwrap();
            if conn.id_register("fay", |_: Bytes| {}, T).await.is_ok() {
                return conn;
            }
        }
    })
    .await;
    assert_eq!(c.id_who("fay", T).await.unwrap().len(), 1);
    assert!(a.wait_log("session store reachable again", T).await);
}

#[test]
fn petald_refuses_a_session_store_url_of_another_kind() {
    for (url, says) in [
        ("http://:secret@127.0.0.1:1", "use redis://host:port"),
        ("rediss://127.0.0.1:1", "TLS"),
    ] {
        let out = Command::new(PETALD)
            .args(["--dev", "--no-discovery", "--admin", "off", "--port", "0"])
            .args(["--listen", "127.0.0.1:0", "--session-store", url])
            .env("PETAL_NETWORK_KEY", TEST_NETWORK_KEY)
            .stdin(Stdio::null())
            .output()
            .expect("running petald");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: started");
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("secret"), "{url}: {err}");
    }
}
