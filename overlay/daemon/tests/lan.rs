//! Real `petald` processes on private LANs (network namespaces on a bridge, see
//! `common/netns.rs`), one per namespace, started the way an operator would: no flags beyond
//! the network key (and a data directory where the test is about one). Applications run inside
//! the nodes' namespaces as helpers (this test binary re-executed there, speaking
//! `petal-client` to 127.0.0.1:55555 of their namespace), so every byte between nodes crosses
//! the LAN.
//!
//! - Zero configuration: four nodes find each other by multicast and serve a request from one
//!   namespace to a service in another within 2 s of their start.
//! - Authentication: a node holding another network key (even with a seed pointing into the
//!   network) never joins, never gets a request or an event of the network, and is refused.
//! - Confidentiality: a capture of a node's `eth0` never shows an application payload, while
//!   the same run with plaintext links (`--dev --insecure-plaintext-links`) does.
//! - Merging: two groups started on the two sides of a partition each form a ring and merge
//!   once the partition heals.
//! - Identity: a node restarted with its data directory comes back with the same id and serves
//!   again without operator action.
//!
//! Needs root and iproute2 (the tests skip otherwise, and fail when `PETAL_NETNS=1`), and
//! tcpdump for the capture test. Figures (time to first reply, merge time, capture sizes) are
//! printed on stderr (`--nocapture` to see them). A failing test prints every daemon's log and
//! what its applications said; `PETAL_LAN_LOGS=1` prints the daemons' logs of passing tests too.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{PETALD, TEST_NETWORK_KEY, pattern};
use netns::{Lan, helper_args, pcap_contains, pcap_packets};
use petal_client::{Connection, Error, ServiceHandler};

/// Another network's key: nodes holding it must never mix with [`TEST_NETWORK_KEY`]'s.
const OTHER_NETWORK_KEY: &str = "0bad0bad00000000000000000000000000000000000000000000000000000bad";
/// The default peer port (petald with no flags listens on 0.0.0.0:55556).
const PEER_PORT: u16 = 55556;
/// The default relay address inside each namespace.
const RELAY: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 55555);
/// Marks the lines helpers print for the parent (libtest prints its own around them).
const MARK: &str = "PTL-";
const SECOND: Duration = Duration::from_secs(1);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Lines with the time they arrived.
type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// Reads `from` line by line into `into` (only the part from [`MARK`] on when `marked_only`).
fn collect_lines(from: impl std::io::Read + Send + 'static, into: Lines, marked_only: bool) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let kept = if marked_only {
                match line.find(MARK) {
                    Some(at) => line[at + MARK.len()..].to_string(),
                    None => continue,
                }
            } else {
                line
            };
            let mut v = into.lock().unwrap();
            if v.len() < 200_000 {
                v.push((Instant::now(), kept));
            }
        }
    });
}

/// Polls `check` every 5 ms until it returns `Some`, or `None` after `within`.
fn poll<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `sig` to process `pid` (the shell's `kill`: no procps needed).
fn kill(pid: u32, sig: &str) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -{sig} {pid} 2>/dev/null")])
        .stdin(Stdio::null())
        .status();
}

/// Waits for `child` to exit; SIGKILL after `grace`.
fn reap(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Daemons.

/// One `petald` in a namespace, its stderr collected. Dropping it sends SIGTERM, then SIGKILL
/// after 3 s, and prints the log when the test is failing.
struct Node {
    name: String,
    child: Child,
    log: Lines,
    exited: Option<ExitStatus>,
}

impl Node {
    /// Starts `petald args` in namespace `i` with the network key `key` (environment) and
    /// `RUST_LOG=debug` (so the flags stay the operator's: none unless `args` has some).
    fn start(lan: &Lan, i: usize, key: &str, args: &[&str]) -> Node {
        let mut cmd = lan.command(i, PETALD);
        cmd.args(args)
            .env("PETAL_NETWORK_KEY", key)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning petald");
        let log: Lines = Arc::default();
        collect_lines(child.stderr.take().unwrap(), log.clone(), false);
        Node {
            name: format!("{} ({})", lan.ns(i), lan.ip_of(i)),
            child,
            log,
            exited: None,
        }
    }

    fn log(&self) -> String {
        let lines = self.log.lock().unwrap();
        lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    /// When the first line containing `needle` arrived.
    fn first(&self, needle: &str) -> Option<Instant> {
        self.first_after(needle, None)
    }

    /// When the first line containing `needle` arrived (after `after`, if given).
    fn first_after(&self, needle: &str, after: Option<Instant>) -> Option<Instant> {
        let lines = self.log.lock().unwrap();
        lines
            .iter()
            .find(|(t, l)| after.is_none_or(|a| *t > a) && l.contains(needle))
            .map(|(t, _)| *t)
    }

    /// The lines containing `needle`.
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let lines = self.log.lock().unwrap();
        lines
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(_, l)| l.clone())
            .collect()
    }

    fn wait_log(&self, needle: &str, within: Duration) -> Option<Instant> {
        poll(within, || self.first(needle))
    }

    /// The node id of its "petald ready" line (waits up to 10 s for it).
    fn id(&self) -> String {
        self.wait_log("petald ready", 10 * SECOND)
            .unwrap_or_else(|| panic!("{} not ready within 10 s", self.name));
        let line = self.lines_with("petald ready").remove(0);
        let at = line.find(" id=").expect("id= in the ready line") + 4;
        line[at..].split_whitespace().next().unwrap().to_string()
    }

    /// The addresses of the nodes this one has an established peer link with (TCP to or from
    /// port 55556, from `/proc/<pid>/net/tcp`, which shows the process's namespace).
    fn peer_links(&self) -> BTreeSet<Ipv4Addr> {
        let path = format!("/proc/{}/net/tcp", self.child.id());
        let Ok(table) = std::fs::read_to_string(path) else {
            return BTreeSet::new();
        };
        let addr = |s: &str| -> Option<(Ipv4Addr, u16)> {
            let (ip, port) = s.split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?;
            // The kernel prints the address as a native-endian u32.
            let ip = Ipv4Addr::from(ip.to_ne_bytes());
            Some((ip, u16::from_str_radix(port, 16).ok()?))
        };
        table
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (local, remote, state) = (addr(f.get(1)?)?, addr(f.get(2)?)?, *f.get(3)?);
                (state == "01" && (local.1 == PEER_PORT || remote.1 == PEER_PORT))
                    .then_some(remote.0)
            })
            .collect()
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 5 s).
    fn stop(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            kill(self.child.id(), "TERM");
            self.exited = reap(&mut self.child, 5 * SECOND);
            if self.exited.is_none() {
                // Killed: mark it gone anyway.
                self.exited = self.child.try_wait().ok().flatten();
            }
        }
        self.exited
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.exited.is_none() {
            kill(self.child.id(), "TERM");
            reap(&mut self.child, 3 * SECOND);
        }
        if std::thread::panicking() || std::env::var_os("PETAL_LAN_LOGS").is_some() {
            eprintln!(
                "---- petald in {} ----\n{}---- end of log ----",
                self.name,
                self.log()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Applications: helpers run inside namespaces (no-ops in an ordinary run).

/// Prints a marked line for the parent.
fn say(line: impl std::fmt::Display) {
    println!("\n{MARK}{line}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Retries `attempt` every 10 ms for up to 10 s (the node may not listen yet).
async fn retry<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A cluster member that reports every request (`REQ <hex>`) and replies `<tag>:<request>`.
struct Tagged {
    tag: String,
}

impl ServiceHandler for Tagged {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        say(format!("REQ {}", hex(&request)));
        let mut out = format!("{}:", self.tag).into_bytes();
        out.extend_from_slice(&request);
        Ok(out.into())
    }

    fn handle_drop(&self, reason: String) {
        say(format!("DROP {reason}"));
    }
}

/// `[cluster, tag]`: registers a [`Tagged`] member of `cluster` with the local node, prints
/// `READY`, then serves until killed.
#[test]
fn helper_serve() {
    let Some(args) = helper_args("helper_serve") else {
        return;
    };
    runtime().block_on(async {
        let _service = retry("registering", || {
            petal_client::Options::default().register_addr(
                RELAY,
                &args[0],
                Tagged {
                    tag: args[1].clone(),
                },
            )
        })
        .await;
        say("READY");
        std::future::pending::<()>().await;
    });
}

/// `[topic]`: subscribes to `topic` on the local node, prints `READY`, then `EVENT <hex>` for
/// every event until killed.
#[test]
fn helper_subscribe() {
    let Some(args) = helper_args("helper_subscribe") else {
        return;
    };
    runtime().block_on(async {
        let conn = retry("connecting", || Connection::connect_addr(RELAY)).await;
        conn.subscribe(&args[0], |event: Bytes| {
            say(format!("EVENT {}", hex(&event)))
        })
        .await
        .expect("subscribe");
        say("READY");
        std::future::pending::<()>().await;
    });
}

/// `[topic, payload hex, interval ms, count]`: publishes `payload` to `topic` `count` times,
/// one every `interval`, then prints `DONE`.
#[test]
fn helper_publish() {
    let Some(args) = helper_args("helper_publish") else {
        return;
    };
    let payload = Bytes::from(unhex(&args[1]));
    let interval = Duration::from_millis(args[2].parse().unwrap());
    let count: u32 = args[3].parse().unwrap();
    runtime().block_on(async {
        let conn = retry("connecting", || Connection::connect_addr(RELAY)).await;
        for _ in 0..count {
            conn.publish(&args[0], payload.clone())
                .await
                .expect("publish");
            tokio::time::sleep(interval).await;
        }
        say("DONE");
    });
}

/// `[cluster, payload hex, warm-up ms, count, interval ms, timeout ms]`. Warm-up: sends a
/// request every `interval` (each with `timeout`, concurrently) until one is answered, then
/// prints `FIRST <reply hex>`; or `NOFIRST` if none is answered within `warm-up` (in-flight
/// ones are waited for). Then `count` requests one after the other, each printing
/// `REPLY <hex>` or `ERROR <error>`, and `DONE`.
#[test]
fn helper_request() {
    let Some(args) = helper_args("helper_request") else {
        return;
    };
    let cluster = args[0].clone();
    let payload = Bytes::from(unhex(&args[1]));
    let warm_up = Duration::from_millis(args[2].parse().unwrap());
    let count: u32 = args[3].parse().unwrap();
    let interval = Duration::from_millis(args[4].parse().unwrap());
    let timeout = Duration::from_millis(args[5].parse().unwrap());
    runtime().block_on(async {
        let conn = retry("connecting", || Connection::connect_addr(RELAY)).await;
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut in_flight = tokio::task::JoinSet::new();
        let first = loop {
            let (conn, cluster, payload, tx) =
                (conn.clone(), cluster.clone(), payload.clone(), tx.clone());
            in_flight.spawn(async move {
                match conn.request(&cluster, payload, timeout).await {
                    Ok(reply) => {
                        let _ = tx.send(reply);
                    }
                    Err(Error::Timeout) => {}
                    Err(e) => say(format!("WARMERR {e}")),
                }
            });
            match tokio::time::timeout(interval, rx.recv()).await {
                Ok(reply) => break reply,
                Err(_) if start.elapsed() >= warm_up => {
                    while in_flight.join_next().await.is_some() {}
                    break rx.try_recv().ok();
                }
                Err(_) => {}
            }
        };
        match first {
            Some(reply) => say(format!("FIRST {}", hex(&reply))),
            None => {
                say("NOFIRST");
                return;
            }
        }
        for _ in 0..count {
            match conn.request(&cluster, payload.clone(), timeout).await {
                Ok(reply) => say(format!("REPLY {}", hex(&reply))),
                Err(e) => say(format!("ERROR {e}")),
            }
        }
        say("DONE");
    });
}

/// A helper process; its marked stdout lines are collected. Killed when dropped; prints what
/// it said when the test is failing.
struct App {
    name: String,
    child: Child,
    lines: Lines,
    stderr: Lines,
}

impl App {
    fn start(lan: &Lan, i: usize, helper: &str, args: &[&str]) -> App {
        let mut child = lan
            .helper(i, helper, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning a helper");
        let (lines, stderr): (Lines, Lines) = Default::default();
        collect_lines(child.stdout.take().unwrap(), lines.clone(), true);
        collect_lines(child.stderr.take().unwrap(), stderr.clone(), false);
        App {
            name: format!("{helper} {args:?} in {}", lan.ns(i)),
            child,
            lines,
            stderr,
        }
    }

    /// The first line starting with `prefix` (the rest of it, and when it arrived), waiting up
    /// to `within`.
    fn wait(&self, prefix: &str, within: Duration) -> Option<(Instant, String)> {
        poll(within, || self.find(prefix))
    }

    fn find(&self, prefix: &str) -> Option<(Instant, String)> {
        let lines = self.lines.lock().unwrap();
        lines.iter().find_map(|(t, l)| {
            l.strip_prefix(prefix)
                .map(|rest| (*t, rest.trim().to_string()))
        })
    }

    /// Every line starting with `prefix` so far (the rest of each).
    fn all(&self, prefix: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|(_, l)| l.strip_prefix(prefix).map(|r| r.trim().to_string()))
            .collect()
    }

    /// Waits for `prefix`, failing the test (with what the helper said) after `within`.
    fn expect(&self, prefix: &str, within: Duration) -> (Instant, String) {
        self.wait(prefix, within).unwrap_or_else(|| {
            panic!(
                "{}: no {prefix:?} within {within:?}; it said {:?}",
                self.name,
                self.lines.lock().unwrap()
            )
        })
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let lines = self.lines.lock().unwrap();
            let mut said: Vec<String> = lines.iter().take(8).map(|(_, l)| l.clone()).collect();
            if lines.len() > 16 {
                said.push(format!("... {} more ...", lines.len() - 16));
            }
            said.extend(
                lines
                    .iter()
                    .skip(8.max(lines.len().saturating_sub(8)))
                    .map(|(_, l)| l.clone()),
            );
            drop(lines);
            let stderr: Vec<String> = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .map(|(_, l)| l.clone())
                .collect();
            eprintln!(
                "---- helper {} said: {said:?}\n     stderr: {}",
                self.name,
                stderr.join("\n     ")
            );
        }
    }
}

/// A requester: `count` requests of `payload` to `cluster` after a warm-up of up to `warm_up`
/// (a new request every 20 ms, each with a 1 s timeout).
fn requester(
    lan: &Lan,
    i: usize,
    cluster: &str,
    payload: &[u8],
    warm_up: Duration,
    count: u32,
) -> App {
    App::start(
        lan,
        i,
        "helper_request",
        &[
            cluster,
            &hex(payload),
            &warm_up.as_millis().to_string(),
            &count.to_string(),
            "20",
            "1000",
        ],
    )
}

/// The replies a requester got (after its `DONE`), decoded.
fn replies(app: &App, within: Duration) -> Vec<Vec<u8>> {
    app.expect("DONE", within);
    assert_eq!(app.all("ERROR"), Vec::<String>::new(), "{}", app.name);
    app.all("REPLY").iter().map(|h| unhex(h)).collect()
}

fn tagged(tag: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!("{tag}:").into_bytes();
    v.extend_from_slice(payload);
    v
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn no_flag_nodes_find_each_other_and_serve_within_2s() {
    let Some(lan) = Lan::new("ptl-zero", 4) else {
        return;
    };
    let t0 = Instant::now();
    let nodes: Vec<Node> = (0..4)
        .map(|i| Node::start(&lan, i, TEST_NETWORK_KEY, &[]))
        .collect();
    let service = App::start(&lan, 3, "helper_serve", &["echo", "n3"]);
    let client = requester(&lan, 0, "echo", b"hello", 5 * SECOND, 20);

    // Watch the links while waiting for the first reply.
    let mut first_reply = None;
    let mut mesh = None;
    let deadline = t0 + 8 * SECOND;
    while (first_reply.is_none() || mesh.is_none()) && Instant::now() < deadline {
        if first_reply.is_none() {
            first_reply = client.find("FIRST");
        }
        if mesh.is_none() && nodes.iter().all(|n| n.peer_links().len() == 3) {
            mesh = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (at, reply) = first_reply
        .unwrap_or_else(|| panic!("no reply within 8 s; the client said {:?}", client.all("")));
    assert_eq!(unhex(&reply), tagged("n3", b"hello"));
    let mesh = mesh.expect("not every node linked to the three others within 8 s");
    let ready: Vec<u128> = nodes
        .iter()
        .map(|n| ms(n.wait_log("petald ready", SECOND).expect("ready") - t0))
        .collect();
    let discovered: Vec<Option<u128>> = nodes
        .iter()
        .map(|n| n.first("discovered a node").map(|t| ms(t - t0)))
        .collect();
    let registered = service.expect("READY", SECOND).0;
    eprintln!(
        "4 nodes, no flags: ready at {ready:?} ms; first beacon heard (\"discovered a node\") at \
         {discovered:?} ms; service registered at {} ms; every node linked to the 3 others at \
         {} ms; first reply from namespace 3 to namespace 0 at {} ms after the daemons were \
         started",
        ms(registered - t0),
        ms(mesh - t0),
        ms(at - t0)
    );
    let got = replies(&client, 10 * SECOND);
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|r| *r == tagged("n3", b"hello")), "{got:?}");
    for (i, n) in nodes.iter().enumerate() {
        let log = n.log();
        // Every node advertises its LAN address (the interface that routes to the group).
        assert!(
            log.contains(&format!("peers={}:{PEER_PORT}", lan.ip_of(i))),
            "{}: {log}",
            n.name
        );
        assert!(!log.contains("inbound peer link refused"), "{log}");
    }
    assert!(
        at - t0 < 2 * SECOND,
        "first reply {} ms after the start (budget 2000 ms)",
        ms(at - t0)
    );
}

#[test]
fn a_node_with_the_wrong_key_never_joins_nor_sees_messages() {
    let Some(lan) = Lan::new("ptl-key", 4) else {
        return;
    };
    let seed = format!("{}:{PEER_PORT}", lan.ip_of(0));
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::start(&lan, i, TEST_NETWORK_KEY, &[]))
        .collect();
    // The intruder comes once the network runs, so that its seed dial reaches the seed.
    for n in &nodes {
        n.id();
    }
    nodes.push(Node::start(&lan, 3, OTHER_NETWORK_KEY, &["--seed", &seed]));
    let wrong = &nodes[3];

    let _member = App::start(&lan, 1, "helper_serve", &["echo", "k1"]);
    let intruder = App::start(&lan, 3, "helper_serve", &["echo", "wrong"]);
    let sub_k = App::start(&lan, 2, "helper_subscribe", &["news"]);
    let sub_wrong = App::start(&lan, 3, "helper_subscribe", &["news"]);
    sub_k.expect("READY", 10 * SECOND);
    sub_wrong.expect("READY", 10 * SECOND);
    let event = b"event of the network";
    let _publisher = App::start(
        &lan,
        0,
        "helper_publish",
        &["news", &hex(event), "20", "150"],
    );
    let client = requester(&lan, 0, "echo", b"ask", 5 * SECOND, 40);
    let got = replies(&client, 15 * SECOND);
    assert_eq!(got.len(), 40);
    assert!(got.iter().all(|r| *r == tagged("k1", b"ask")), "{got:?}");
    assert_eq!(
        unhex(&client.expect("FIRST", SECOND).1),
        tagged("k1", b"ask")
    );
    poll(5 * SECOND, || {
        (sub_k.all("EVENT").len() >= 20).then_some(())
    })
    .expect("the subscriber of the network got fewer than 20 events");
    assert!(sub_k.all("EVENT").iter().all(|e| unhex(e) == event));

    // The node with the other key: its seed dials were refused by the seed, it serves alone.
    wrong
        .wait_log("seed dial failed", 5 * SECOND)
        .expect("the wrong-key node's seed dial did not fail");
    nodes[0]
        .wait_log("inbound peer link refused", 5 * SECOND)
        .expect("the seed did not refuse the wrong-key node");
    // Refused in the handshake (the first message fails authentication), not at connect.
    let refused = nodes[0].lines_with("inbound peer link refused");
    assert!(
        refused
            .iter()
            .all(|l| l.contains(&format!("from={}:", lan.ip_of(3))) && l.contains("handshake")),
        "{refused:?}"
    );
    let dials = wrong.lines_with("seed dial failed");
    assert!(dials.iter().all(|l| l.contains("handshake")), "{dials:?}");
    wrong
        .wait_log("serving as a ring of one", 5 * SECOND)
        .expect("the wrong-key node did not give up its seed");
    // It still serves its own applications, alone.
    let local = requester(&lan, 3, "echo", b"alone", 5 * SECOND, 3);
    assert!(
        replies(&local, 10 * SECOND)
            .iter()
            .all(|r| *r == tagged("wrong", b"alone"))
    );

    let wrong_id = wrong.id();
    let wrong_log = wrong.log();
    for never in ["joining the ring", "merging", "discovered a node"] {
        assert!(!wrong_log.contains(never), "wrong-key node: {never:?}");
    }
    assert_eq!(wrong.peer_links(), BTreeSet::new(), "wrong-key node links");
    for (i, n) in nodes[..3].iter().enumerate() {
        let log = n.log();
        assert!(
            !log.contains(&wrong_id),
            "node {i} knows the wrong-key node"
        );
        assert!(!log.contains("merging"), "node {i}: {log}");
        let links = n.peer_links();
        assert!(!links.contains(&lan.ip_of(3)), "node {i} links {links:?}");
        assert_eq!(links.len(), 2, "node {i} links {links:?}");
    }
    // Nothing of the network reached the intruder's applications.
    assert!(
        intruder.all("REQ").iter().all(|r| unhex(r) == b"alone"),
        "{:?}",
        intruder.all("")
    );
    assert_eq!(sub_wrong.all("EVENT"), Vec::<String>::new());
    eprintln!(
        "wrong-key node: {} seed dials failed, {} inbound links refused by the seed; \
         the network answered {} requests, its subscriber got {} events",
        wrong.lines_with("seed dial failed").len(),
        refused.len(),
        got.len(),
        sub_k.all("EVENT").len()
    );
}

/// Runs a service and a subscriber on node 1 while node 0's applications send `payload` to
/// them (requests and publishes), capturing node 1's `eth0`. Returns the capture and how many
/// requests and events got through.
fn capture_run(prefix: &str, args: &[&str], payload: &[u8]) -> Option<(Vec<u8>, usize, usize)> {
    let lan = Lan::new(prefix, 2)?;
    let capture = lan.capture(1).unwrap_or_else(|e| panic!("{e}"));
    let _nodes: Vec<Node> = (0..2)
        .map(|i| Node::start(&lan, i, TEST_NETWORK_KEY, args))
        .collect();
    let service = App::start(&lan, 1, "helper_serve", &["secret", "n1"]);
    let sub = App::start(&lan, 1, "helper_subscribe", &["secrets"]);
    sub.expect("READY", 10 * SECOND);
    let client = requester(&lan, 0, "secret", payload, 5 * SECOND, 30);
    let got = replies(&client, 15 * SECOND);
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|r| *r == tagged("n1", payload)));
    let publisher = App::start(
        &lan,
        0,
        "helper_publish",
        &["secrets", &hex(payload), "10", "300"],
    );
    poll(10 * SECOND, || (sub.all("EVENT").len() >= 30).then_some(()))
        .expect("the subscriber got fewer than 30 events");
    drop(publisher);
    let pcap = capture.stop();
    let events = sub.all("EVENT");
    assert!(events.iter().all(|e| unhex(e) == payload));
    Some((pcap, service.all("REQ").len(), events.len()))
}

/// TCP packets and their total size in a capture (IPv4 over Ethernet).
fn tcp_traffic(pcap: &[u8]) -> (usize, usize) {
    let tcp: Vec<Vec<u8>> = pcap_packets(pcap)
        .into_iter()
        .filter(|p| p.len() > 34 && p[12..14] == [0x08, 0x00] && p[23] == 6)
        .collect();
    (tcp.len(), tcp.iter().map(Vec::len).sum())
}

#[test]
fn no_payload_in_the_clear_on_the_wire() {
    if !netns::available() {
        return;
    }
    // 64 bytes, no two alike in a row: a fragment in a packet is unmistakable.
    let payload = pattern(0x5ec2e7, 64);
    assert!(payload.windows(2).any(|w| w[0] != w[1]));

    let Some((pcap, reqs, events)) = capture_run("ptl-enc", &[], &payload) else {
        return;
    };
    let (packets, bytes) = tcp_traffic(&pcap);
    eprintln!(
        "encrypted links: capture of {} bytes, {packets} TCP packets ({bytes} bytes) while \
         {reqs} requests and {events} events of the 64-byte pattern crossed",
        pcap.len()
    );
    assert!(reqs >= 30 && events >= 30);
    // 60+ payloads each way at least (requests, replies, events) in TCP.
    assert!(bytes > 100 * 64, "only {bytes} bytes of TCP captured");
    assert!(
        !pcap_contains(&pcap, &payload),
        "the payload is in the clear"
    );
    for at in 0..=payload.len() - 16 {
        assert!(
            !pcap_contains(&pcap, &payload[at..at + 16]),
            "16 bytes of the payload (from {at}) are in the clear"
        );
    }

    // The control: plaintext links do show the payload, so the capture sees it.
    let (pcap, reqs, events) = capture_run(
        "ptl-plain",
        &["--dev", "--insecure-plaintext-links"],
        &payload,
    )
    .expect("the LAN worked a moment ago");
    let (packets, bytes) = tcp_traffic(&pcap);
    eprintln!(
        "plaintext links (control): capture of {} bytes, {packets} TCP packets ({bytes} bytes), \
         {reqs} requests and {events} events",
        pcap.len()
    );
    assert!(
        pcap_contains(&pcap, &payload),
        "the control capture does not show the payload"
    );
}

#[test]
fn groups_started_apart_merge() {
    let Some(lan) = Lan::new("ptl-merge", 6) else {
        return;
    };
    lan.split(&[0, 1, 2]);
    let t0 = Instant::now();
    let nodes: Vec<Node> = (0..6)
        .map(|i| Node::start(&lan, i, TEST_NETWORK_KEY, &[]))
        .collect();
    // A cluster on both sides, and one only on each side.
    let _west = App::start(&lan, 2, "helper_serve", &["both", "west"]);
    let _east = App::start(&lan, 3, "helper_serve", &["both", "east"]);
    let _only0 = App::start(&lan, 0, "helper_serve", &["only0", "n0"]);
    let _only5 = App::start(&lan, 5, "helper_serve", &["only5", "n5"]);
    let sub = App::start(&lan, 4, "helper_subscribe", &["topic"]);
    sub.expect("READY", 10 * SECOND);

    // Each side forms a ring of its own and serves its own side only.
    let halves = |n: &Node, i: usize| {
        let side: BTreeSet<Ipv4Addr> = if i < 3 { 0..3 } else { 3..6 }
            .filter(|&j| j != i)
            .map(|j| lan.ip_of(j))
            .collect();
        n.peer_links() == side
    };
    poll(8 * SECOND, || {
        nodes
            .iter()
            .enumerate()
            .all(|(i, n)| halves(n, i))
            .then_some(())
    })
    .expect("the halves did not form rings of three");
    let formed = t0.elapsed();
    let west = requester(&lan, 0, "both", b"w?", 5 * SECOND, 10);
    let east = requester(&lan, 5, "both", b"e?", 5 * SECOND, 10);
    assert!(
        replies(&west, 10 * SECOND)
            .iter()
            .all(|r| *r == tagged("west", b"w?"))
    );
    assert!(
        replies(&east, 10 * SECOND)
            .iter()
            .all(|r| *r == tagged("east", b"e?"))
    );
    let across = requester(&lan, 0, "only5", b"x", SECOND, 0);
    let across_back = requester(&lan, 5, "only0", b"x", SECOND, 0);
    across.expect("NOFIRST", 5 * SECOND);
    across_back.expect("NOFIRST", 5 * SECOND);
    let before = App::start(
        &lan,
        1,
        "helper_publish",
        &["topic", &hex(b"early"), "20", "25"],
    );
    before.expect("DONE", 10 * SECOND);

    // Heal once the start's fast probing is over (3 s after the last news), so that the merge
    // rides on the slow beacons, as after a partition of any length.
    let quiet = Duration::from_millis(4000);
    if t0.elapsed() < quiet {
        std::thread::sleep(quiet - t0.elapsed());
    }
    assert!(
        sub.all("EVENT").is_empty(),
        "an event crossed the partition"
    );
    let healed_at = Instant::now();
    lan.heal();
    // Bound: some node beacons within one slow period (5 s + 20 %) of the heal; the node that
    // hears it introduces itself across, the rings merge, and the trees re-graft within 1 s.
    let bound = 9 * SECOND;
    let to5 = requester(&lan, 0, "only5", b"to 5", bound, 5);
    let to0 = requester(&lan, 5, "only0", b"to 0", bound, 5);
    let publisher = App::start(
        &lan,
        1,
        "helper_publish",
        &["topic", &hex(b"late"), "20", "500"],
    );
    let (t5, r5) = to5.expect("FIRST", bound + SECOND);
    let (t0r, r0) = to0.expect("FIRST", bound + SECOND);
    assert_eq!(unhex(&r5), tagged("n5", b"to 5"));
    assert_eq!(unhex(&r0), tagged("n0", b"to 0"));
    let (te, e) = sub.expect("EVENT", bound + SECOND);
    assert_eq!(unhex(&e), b"late");
    drop(publisher);
    let mesh = poll(10 * SECOND, || {
        nodes
            .iter()
            .all(|n| n.peer_links().len() == 5)
            .then(Instant::now)
    });
    assert!(
        replies(&to5, 10 * SECOND)
            .iter()
            .all(|r| *r == tagged("n5", b"to 5"))
    );
    assert!(
        replies(&to0, 10 * SECOND)
            .iter()
            .all(|r| *r == tagged("n0", b"to 0"))
    );
    let merged: Vec<(usize, u128)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            n.first_after("discovered a node", Some(healed_at))
                .map(|t| (i, ms(t - healed_at)))
        })
        .collect();
    eprintln!(
        "two groups of 3: each a ring of 3 at {} ms; healed at {} ms; after the heal: \
         0 -> only5 answered at {} ms, 5 -> only0 at {} ms, publish 1 -> subscriber 4 at {} ms, \
         full mesh of 6 at {}; (node, ms) that heard a beacon from across first: {merged:?}",
        ms(formed),
        ms(healed_at - t0),
        ms(t5 - healed_at),
        ms(t0r - healed_at),
        ms(te - healed_at),
        mesh.map_or("(not within 10 s)".to_string(), |t| format!(
            "{} ms",
            ms(t - healed_at)
        )),
    );
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("petal-lan-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_restarted_node_rejoins_as_itself() {
    use std::os::unix::fs::PermissionsExt;
    let Some(lan) = Lan::new("ptl-again", 3) else {
        return;
    };
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("n{i}"))).collect();
    let start = |i: usize| {
        Node::start(
            &lan,
            i,
            TEST_NETWORK_KEY,
            &["--data-dir", dirs[i].path().to_str().unwrap()],
        )
    };
    let mut nodes: Vec<Node> = (0..3).map(start).collect();
    let ids: Vec<String> = nodes.iter().map(Node::id).collect();
    let key = dirs[2].path().join("node.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());
    let key_text = std::fs::read(&key).unwrap();

    let service = App::start(&lan, 2, "helper_serve", &["svc", "n2"]);
    service.expect("READY", 10 * SECOND);
    let before = requester(&lan, 0, "svc", b"before", 5 * SECOND, 5);
    assert!(
        replies(&before, 10 * SECOND)
            .iter()
            .all(|r| *r == tagged("n2", b"before"))
    );

    let status = nodes[2].stop().expect("node 2 did not stop within 5 s");
    assert!(status.success(), "node 2 exited with {status}");
    service.expect("DROP", 5 * SECOND);
    drop(service);
    let restarted_at = Instant::now();
    nodes[2] = start(2);
    assert_eq!(nodes[2].id(), ids[2], "node 2 came back with another id");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read(&key).unwrap(),
        key_text,
        "node.key was rewritten"
    );
    let _service = App::start(&lan, 2, "helper_serve", &["svc", "n2"]);
    let after = requester(&lan, 0, "svc", b"after", 10 * SECOND, 5);
    let (t, first) = after.expect("FIRST", 11 * SECOND);
    assert_eq!(unhex(&first), tagged("n2", b"after"));
    assert!(
        replies(&after, 10 * SECOND)
            .iter()
            .all(|r| *r == tagged("n2", b"after"))
    );
    let from1 = requester(&lan, 1, "svc", b"from 1", 5 * SECOND, 5);
    assert!(
        replies(&from1, 10 * SECOND)
            .iter()
            .all(|r| *r == tagged("n2", b"from 1"))
    );
    for (i, n) in nodes[..2].iter().enumerate() {
        let log = n.log();
        assert!(
            !log.contains("a different node answers"),
            "node {i} saw another id at node 2's address: {log}"
        );
        assert_eq!(n.id(), ids[i]);
    }
    eprintln!(
        "restart with the same data dir: same id {}; first reply from the restarted node's \
         service {} ms after the restart",
        ids[2],
        ms(t - restarted_at)
    );
}
