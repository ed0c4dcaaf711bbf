//! Real `petald` processes on private LANs (network namespaces on a bridge, see
//! `common/netns.rs`), one per namespace, started the way an operator would: no flags beyond
//! the network key (and a data directory where the test is about one). Applications run inside
//! the nodes' namespaces as helpers (this test binary re-executed there, speaking
//! `petal-client` to 127.0.0.1:55555 of their namespace), so every byte between nodes crosses
//! the LAN.
//!
//! - Zero configuration: four nodes find each other by multicast (each linked to the three
//!   others within 1 s of their start) and serve a request from one namespace to a service in
//!   another within 2 s of their start, in each of 5 runs.
//! - Authentication: a node holding another network key (even with a seed pointing into the
//!   network) never joins, never gets a request or an event of the network, and is refused.
//! - Confidentiality: a capture of a node's `eth0` never shows an application payload, while
//!   the same run with plaintext links (`--dev --insecure-plaintext-links`) does.
//! - Merging: two groups started on the two sides of a partition each form a ring and merge
//!   once the partition heals: a beacon is heard across within one slow beacon period (6.5 s
//!   with a margin) of the heal, and requests and events cross within 1 s of that beacon, in
//!   each of 3 runs.
//! - Identity: a node restarted with its data directory comes back with the same id and serves
//!   again without operator action, within 2 s of its restart in each of 5 runs.
//!
//! Needs root and iproute2 (the tests skip otherwise, and fail when `PETAL_NETNS=1`), and
//! tcpdump for the capture test. Figures (time to first reply, merge time, capture sizes) are
//! printed on stderr (`--nocapture` to see them) and each test writes its figures (per run,
//! quantiles, the bounds it asserts, the run count) to `target/test-figures/lan.<test>.json`
//! (`figures/mod.rs`) before its verdict on them. `PETAL_LAN_RUNS=<n>` changes the number of
//! runs of the tests that repeat (zero configuration, merging, restart). A failing test prints every daemon's log and
//! what its applications said; `PETAL_LAN_LOGS=1` prints the daemons' logs of passing tests too.

mod common;
mod figures;
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
use figures::{Json, Obj};
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
        Self::start_with(lan, i, Some(key), args)
    }

    /// As [`Node::start`]; without a key the environment has none either (`--dev` makes one).
    fn start_with(lan: &Lan, i: usize, key: Option<&str>, args: &[&str]) -> Node {
        let mut cmd = lan.command(i, PETALD);
        match key {
            Some(k) => cmd.env("PETAL_NETWORK_KEY", k),
            None => cmd.env_remove("PETAL_NETWORK_KEY"),
        };
        cmd.args(args)
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

/// Runs of a measuring test: `default`, or `PETAL_LAN_RUNS=<n>`.
fn runs(default: usize) -> usize {
    std::env::var("PETAL_LAN_RUNS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// Milliseconds as the figures record them.
fn ms64(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Runs of the zero-configuration test.
const ZERO_RUNS: usize = 5;
/// Zero configuration: in every run, the first reply comes this soon after the start ...
const FIRST_REPLY_BUDGET: Duration = Duration::from_secs(2);
/// ... and every node has a peer link with every other this soon after the start (the nodes
/// found each other by their beacons: no node was given another's address).
const MESH_BUDGET: Duration = Duration::from_secs(1);

/// What one zero-configuration run measured, in ms since the daemons were started.
struct ZeroRun {
    /// Each node's "petald ready".
    ready: Vec<u64>,
    /// Each node's first introduction of a node it heard a beacon of ("discovered a node";
    /// `None`: it learned every node otherwise first).
    discovered: Vec<Option<u64>>,
    /// The service registered with node 3.
    registered: u64,
    /// Every node linked to the three others.
    mesh: u64,
    /// The first reply from namespace 3's service to namespace 0's client.
    first_reply: u64,
}

fn zero_config_run(run: usize, runs: usize) -> Option<ZeroRun> {
    let lan = Lan::new("ptl-zero", 4)?;
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
    let ready: Vec<u64> = nodes
        .iter()
        .map(|n| ms64(n.wait_log("petald ready", SECOND).expect("ready") - t0))
        .collect();
    let discovered: Vec<Option<u64>> = nodes
        .iter()
        .map(|n| n.first("discovered a node").map(|t| ms64(t - t0)))
        .collect();
    let registered = service.expect("READY", SECOND).0;
    eprintln!(
        "run {run}/{runs}: 4 nodes, no flags: ready at {ready:?} ms; first beacon heard \
         (\"discovered a node\") at {discovered:?} ms; service registered at {} ms; every node \
         linked to the 3 others at {} ms; first reply from namespace 3 to namespace 0 at {} ms \
         after the daemons were started",
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
    Some(ZeroRun {
        ready,
        discovered,
        registered: ms64(registered - t0),
        mesh: ms64(mesh - t0),
        first_reply: ms64(at - t0),
    })
}

/// Four nodes with no flags, [`ZERO_RUNS`] times on a fresh LAN: in every run each node is
/// linked to the three others within [`MESH_BUDGET`] and a request from namespace 0 is
/// answered by a service in namespace 3 within [`FIRST_REPLY_BUDGET`] of the start. Figures:
/// `target/test-figures/lan.no_flag_nodes_find_each_other_and_serve_within_2s.json`.
#[test]
fn no_flag_nodes_find_each_other_and_serve_within_2s() {
    let n = runs(ZERO_RUNS);
    let mut done: Vec<ZeroRun> = Vec::new();
    for run in 1..=n {
        let Some(r) = zero_config_run(run, n) else {
            return;
        };
        done.push(r);
    }
    let first_reply: Vec<u64> = done.iter().map(|r| r.first_reply).collect();
    let mesh: Vec<u64> = done.iter().map(|r| r.mesh).collect();
    let ready_max: Vec<u64> = done
        .iter()
        .map(|r| r.ready.iter().copied().max().unwrap())
        .collect();
    let discovered_max: Vec<Option<u64>> = done
        .iter()
        .map(|r| r.discovered.iter().flatten().copied().max())
        .collect();
    let slow_reply: Vec<usize> = (0..n)
        .filter(|&i| first_reply[i] >= ms64(FIRST_REPLY_BUDGET))
        .map(|i| i + 1)
        .collect();
    let slow_mesh: Vec<usize> = (0..n)
        .filter(|&i| mesh[i] > ms64(MESH_BUDGET))
        .map(|i| i + 1)
        .collect();
    figures::write(
        "lan.no_flag_nodes_find_each_other_and_serve_within_2s",
        Obj::new()
            .with(
                "test",
                "overlay/daemon/tests/lan.rs::no_flag_nodes_find_each_other_and_serve_within_2s",
            )
            .with(
                "setup",
                "4 petald, one per network namespace on a bridge, no flags but the network key, \
                 started at once; a service in namespace 3, a client in namespace 0 sending a \
                 request every 20 ms until one is answered",
            )
            .with(
                "measured",
                Obj::new()
                    .with(
                        "first_reply_ms",
                        "from the start of the daemons to the client's first reply",
                    )
                    .with(
                        "mesh_ms",
                        "from the start until every node has a peer link with the three others",
                    )
                    .with(
                        "ready_max_ms",
                        "from the start until the last node logged petald ready",
                    )
                    .with(
                        "discovered_max_ms",
                        "from the start until the last node introduced a node it heard a beacon \
                         of (null: no node did)",
                    ),
            )
            .with("unit", "ms (wall clock)")
            .with("runs", n)
            .with(
                "per_run",
                Obj::new()
                    .with("first_reply_ms", first_reply.clone())
                    .with("mesh_ms", mesh.clone())
                    .with("ready_max_ms", ready_max.clone())
                    .with("discovered_max_ms", discovered_max)
                    .with(
                        "registered_ms",
                        done.iter().map(|r| r.registered).collect::<Vec<_>>(),
                    ),
            )
            .with(
                "summary",
                Obj::new()
                    .with("first_reply_ms", figures::summary(&first_reply))
                    .with("mesh_ms", figures::summary(&mesh))
                    .with("ready_max_ms", figures::summary(&ready_max)),
            )
            .with(
                "bound",
                Obj::new()
                    .with("first_reply_ms_below", ms64(FIRST_REPLY_BUDGET))
                    .with("mesh_ms_at_most", ms64(MESH_BUDGET)),
            )
            .with(
                "within_bound",
                slow_reply.is_empty() && slow_mesh.is_empty(),
            ),
    );
    assert!(
        slow_reply.is_empty(),
        "runs {slow_reply:?} of {n}: first reply not within {} ms of the start: {first_reply:?}",
        ms(FIRST_REPLY_BUDGET)
    );
    assert!(
        slow_mesh.is_empty(),
        "runs {slow_mesh:?} of {n}: nodes not linked to every other within {} ms: {mesh:?}",
        ms(MESH_BUDGET)
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
    let dials_failed = wrong.lines_with("seed dial failed").len();
    let events = sub_k.all("EVENT").len();
    eprintln!(
        "wrong-key node: {dials_failed} seed dials failed, {} inbound links refused by the seed; \
         the network answered {} requests, its subscriber got {events} events",
        refused.len(),
        got.len(),
    );
    figures::write(
        "lan.a_node_with_the_wrong_key_never_joins_nor_sees_messages",
        Obj::new()
            .with(
                "test",
                "overlay/daemon/tests/lan.rs::a_node_with_the_wrong_key_never_joins_nor_sees_messages",
            )
            .with(
                "setup",
                "3 petald with the network key, no flags; a 4th with another key and --seed to \
                 node 0; a service and a subscriber on each side, a client and a publisher in \
                 the network",
            )
            .with("unit", "counts")
            .with("runs", 1)
            .with(
                "per_run",
                Obj::new()
                    .with("wrong_key_seed_dials_failed", dials_failed)
                    .with("inbound_links_refused_by_the_seed", refused.len())
                    .with("wrong_key_node_peer_links", wrong.peer_links().len())
                    .with("network_requests_answered", got.len())
                    .with("network_subscriber_events", events)
                    .with("wrong_key_subscriber_events", sub_wrong.all("EVENT").len())
                    .with(
                        "wrong_key_service_requests_from_the_network",
                        intruder
                            .all("REQ")
                            .iter()
                            .filter(|r| unhex(r) != b"alone")
                            .count(),
                    ),
            )
            .with(
                "bound",
                Obj::new()
                    .with("network_requests_answered", 40)
                    .with("network_subscriber_events_at_least", 20)
                    .with("wrong_key_node_peer_links", 0)
                    .with("wrong_key_subscriber_events", 0)
                    .with("wrong_key_service_requests_from_the_network", 0)
                    .with(
                        "every_refusal",
                        "in the handshake (seed dials failed and inbound links refused)",
                    ),
            )
            .with("within_bound", true),
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
    let (pcap, plain_reqs, plain_events) = capture_run(
        "ptl-plain",
        &["--dev", "--insecure-plaintext-links"],
        &payload,
    )
    .expect("the LAN worked a moment ago");
    let (plain_packets, plain_bytes) = tcp_traffic(&pcap);
    eprintln!(
        "plaintext links (control): capture of {} bytes, {plain_packets} TCP packets \
         ({plain_bytes} bytes), {plain_reqs} requests and {plain_events} events",
        pcap.len()
    );
    let shown = pcap_contains(&pcap, &payload);
    figures::write(
        "lan.no_payload_in_the_clear_on_the_wire",
        Obj::new()
            .with(
                "test",
                "overlay/daemon/tests/lan.rs::no_payload_in_the_clear_on_the_wire",
            )
            .with(
                "setup",
                "2 petald on a LAN, tcpdump on node 1's eth0; requests and publishes of a \
                 64-byte pattern from node 0's applications to node 1's; once with encrypted \
                 links (no flags), once with --dev --insecure-plaintext-links (the control)",
            )
            .with("unit", "counts and bytes")
            .with("runs", 1)
            .with(
                "per_run",
                Obj::new()
                    .with(
                        "encrypted",
                        Obj::new()
                            .with("tcp_packets", packets)
                            .with("tcp_bytes", bytes)
                            .with("requests", reqs)
                            .with("events", events)
                            .with("payload_in_capture", false)
                            .with("any_16_payload_bytes_in_capture", false),
                    )
                    .with(
                        "plaintext_control",
                        Obj::new()
                            .with("tcp_packets", plain_packets)
                            .with("tcp_bytes", plain_bytes)
                            .with("requests", plain_reqs)
                            .with("events", plain_events)
                            .with("payload_in_capture", shown),
                    ),
            )
            .with(
                "bound",
                Obj::new()
                    .with("encrypted_requests_and_events_each_at_least", 30)
                    .with("encrypted_tcp_bytes_above", 100 * 64)
                    .with("encrypted_payload_in_capture", false)
                    .with("encrypted_any_16_payload_bytes_in_capture", false)
                    .with("plaintext_payload_in_capture", true),
            )
            .with("within_bound", shown),
    );
    assert!(shown, "the control capture does not show the payload");
}

/// Runs of the merge test.
const MERGE_RUNS: usize = 3;
/// Merging: a beacon from across is heard this soon after the heal (one slow beacon period,
/// 5 s + 20 %, and a margin: the nodes' fast probing is over when the partition heals) ...
const BEACON_ACROSS_BUDGET: Duration = Duration::from_millis(6500);
/// ... and both rings' applications reach each other (a request each way, an event) this soon
/// after that beacon (the introduction, the merge of the leaf sets and the trees' re-graft).
const MERGED_AFTER_BEACON_BUDGET: Duration = Duration::from_secs(1);

/// What one merge run measured (ms).
struct MergeRun {
    /// Since the start: every node linked to exactly its own side's two others.
    formed: u64,
    /// Since the start: the heal.
    healed: u64,
    /// Since the heal, per node: its first introduction of a node heard by beacon.
    beacon_per_node: Vec<Option<u64>>,
    /// Since the heal: the first of those (a beacon heard across).
    beacon: Option<u64>,
    /// Since the heal: first reply of node 5's service to node 0, of node 0's to node 5, the
    /// first event published on node 1 at the subscriber on node 4.
    to5: u64,
    to0: u64,
    event: u64,
    /// Since the heal: every node linked to the five others (`None`: not within 10 s).
    mesh: Option<u64>,
}

impl MergeRun {
    /// Since the heal: the applications of both sides reach each other (the last of a reply
    /// each way and the event).
    fn merged(&self) -> u64 {
        self.to5.max(self.to0).max(self.event)
    }
}

fn merge_run(run: usize, runs: usize) -> Option<MergeRun> {
    let lan = Lan::new("ptl-merge", 6)?;
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
    let heard: Vec<Option<u64>> = nodes
        .iter()
        .map(|n| {
            n.first_after("discovered a node", Some(healed_at))
                .map(|t| ms64(t - healed_at))
        })
        .collect();
    let merged: Vec<(usize, u64)> = heard
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.map(|t| (i, t)))
        .collect();
    eprintln!(
        "run {run}/{runs}: two groups of 3: each a ring of 3 at {} ms; healed at {} ms; after \
         the heal: 0 -> only5 answered at {} ms, 5 -> only0 at {} ms, publish 1 -> subscriber 4 \
         at {} ms, full mesh of 6 at {}; (node, ms) that heard a beacon from across first: \
         {merged:?}",
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
    Some(MergeRun {
        formed: ms64(formed),
        healed: ms64(healed_at - t0),
        beacon: heard.iter().flatten().copied().min(),
        beacon_per_node: heard,
        to5: ms64(t5 - healed_at),
        to0: ms64(t0r - healed_at),
        event: ms64(te - healed_at),
        mesh: mesh.map(|t| ms64(t - healed_at)),
    })
}

/// Two groups of three started on the two sides of a partition, [`MERGE_RUNS`] times: each
/// forms a ring and serves its own side only; healed once the start's fast probing is over,
/// in every run a beacon is heard across within [`BEACON_ACROSS_BUDGET`] of the heal, and
/// within [`MERGED_AFTER_BEACON_BUDGET`] of it a request each way and an event cross; every
/// node ends linked to the five others. Figures:
/// `target/test-figures/lan.groups_started_apart_merge.json`.
#[test]
fn groups_started_apart_merge() {
    let n = runs(MERGE_RUNS);
    let mut done: Vec<MergeRun> = Vec::new();
    for run in 1..=n {
        let Some(r) = merge_run(run, n) else {
            return;
        };
        done.push(r);
    }
    let col = |f: &dyn Fn(&MergeRun) -> u64| done.iter().map(f).collect::<Vec<u64>>();
    let merged = col(&|r| r.merged());
    // A run without any beacon across counts as infinitely late.
    let beacon = col(&|r| r.beacon.unwrap_or(u64::MAX));
    let after_beacon = col(&|r| r.merged().saturating_sub(r.beacon.unwrap_or(0)));
    let mesh = col(&|r| r.mesh.unwrap_or(u64::MAX));
    let bad: Vec<usize> = (0..n)
        .filter(|&i| {
            beacon[i] > ms64(BEACON_ACROSS_BUDGET)
                || after_beacon[i] > ms64(MERGED_AFTER_BEACON_BUDGET)
                || done[i].mesh.is_none()
        })
        .map(|i| i + 1)
        .collect();
    let opt = |f: &dyn Fn(&MergeRun) -> Option<u64>| done.iter().map(f).collect::<Vec<_>>();
    figures::write(
        "lan.groups_started_apart_merge",
        Obj::new()
            .with(
                "test",
                "overlay/daemon/tests/lan.rs::groups_started_apart_merge",
            )
            .with(
                "setup",
                "6 petald, no flags, started at once with namespaces 0-2 and 3-5 on two sides \
                 of a partition; each side forms a ring of 3; the partition heals once the \
                 start's fast probing is over (4 s after the start, 3 s after the last news)",
            )
            .with(
                "measured",
                Obj::new()
                    .with(
                        "beacon_across_ms",
                        "from the heal until the first node introduced a node it heard a \
                         beacon of (necessarily from across)",
                    )
                    .with(
                        "merged_ms",
                        "from the heal until the last of: first reply of node 5's service to \
                         node 0, of node 0's to node 5, first event published on node 1 at \
                         node 4",
                    )
                    .with("merged_after_beacon_ms", "merged_ms - beacon_across_ms")
                    .with(
                        "mesh_ms",
                        "from the heal until every node has a peer link with the five others",
                    )
                    .with(
                        "formed_ms",
                        "from the start until each side is a ring of 3 (links within sides)",
                    ),
            )
            .with("unit", "ms (wall clock)")
            .with("runs", n)
            .with(
                "per_run",
                Obj::new()
                    .with("beacon_across_ms", opt(&|r| r.beacon))
                    .with("merged_ms", merged.clone())
                    .with("merged_after_beacon_ms", after_beacon.clone())
                    .with("mesh_ms", opt(&|r| r.mesh))
                    .with("formed_ms", col(&|r| r.formed))
                    .with("healed_ms", col(&|r| r.healed))
                    .with("reply_0_to_5_ms", col(&|r| r.to5))
                    .with("reply_5_to_0_ms", col(&|r| r.to0))
                    .with("event_ms", col(&|r| r.event))
                    .with(
                        "beacon_per_node_ms",
                        done.iter()
                            .map(|r| Json::from(r.beacon_per_node.clone()))
                            .collect::<Vec<_>>(),
                    ),
            )
            .with(
                "summary",
                Obj::new()
                    .with(
                        "beacon_across_ms",
                        figures::summary(&done.iter().filter_map(|r| r.beacon).collect::<Vec<_>>()),
                    )
                    .with("merged_ms", figures::summary(&merged))
                    .with("merged_after_beacon_ms", figures::summary(&after_beacon))
                    .with(
                        "mesh_ms",
                        figures::summary(&done.iter().filter_map(|r| r.mesh).collect::<Vec<_>>()),
                    ),
            )
            .with(
                "bound",
                Obj::new()
                    .with("beacon_across_ms_at_most", ms64(BEACON_ACROSS_BUDGET))
                    .with(
                        "merged_after_beacon_ms_at_most",
                        ms64(MERGED_AFTER_BEACON_BUDGET),
                    )
                    .with("mesh_ms_at_most", 10_000),
            )
            .with("within_bound", bad.is_empty()),
    );
    assert!(
        bad.is_empty(),
        "runs {bad:?} of {n}: beacon across {beacon:?} ms after the heal (bound {} ms), merged \
         {after_beacon:?} ms after it (bound {} ms), full mesh {mesh:?} ms after the heal",
        ms(BEACON_ACROSS_BUDGET),
        ms(MERGED_AFTER_BEACON_BUDGET)
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

/// Runs of the restart test.
const RESTART_RUNS: usize = 5;
/// A restarted node's service answers this soon after the node was started again.
const RESTART_BUDGET: Duration = Duration::from_secs(2);

/// What one restart run measured: ms from the new process's start to its "petald ready", and
/// to the first reply from its service to a client on another node.
struct RestartRun {
    ready: u64,
    first_reply: u64,
}

fn restart_run(run: usize, runs: usize) -> Option<RestartRun> {
    use std::os::unix::fs::PermissionsExt;
    let lan = Lan::new("ptl-again", 3)?;
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("r{run}-n{i}")))
        .collect();
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
    let ready = nodes[2]
        .first_after("petald ready", Some(restarted_at))
        .expect("the restarted node was ready");
    eprintln!(
        "run {run}/{runs}: restart with the same data dir: same id {}; ready {} ms and first \
         reply from the restarted node's service {} ms after the restart",
        ids[2],
        ms(ready - restarted_at),
        ms(t - restarted_at)
    );
    Some(RestartRun {
        ready: ms64(ready - restarted_at),
        first_reply: ms64(t - restarted_at),
    })
}

/// Three nodes with data directories; node 2 stopped (SIGTERM) and started again with its
/// directory, [`RESTART_RUNS`] times on a fresh LAN: it comes back with the same id and key
/// file, and in every run its service answers a client on node 0 within [`RESTART_BUDGET`] of
/// the restart. Figures: `target/test-figures/lan.a_restarted_node_rejoins_as_itself.json`.
#[test]
fn a_restarted_node_rejoins_as_itself() {
    let n = runs(RESTART_RUNS);
    let mut done: Vec<RestartRun> = Vec::new();
    for run in 1..=n {
        let Some(r) = restart_run(run, n) else {
            return;
        };
        done.push(r);
    }
    let first_reply: Vec<u64> = done.iter().map(|r| r.first_reply).collect();
    let ready: Vec<u64> = done.iter().map(|r| r.ready).collect();
    let slow: Vec<usize> = (0..n)
        .filter(|&i| first_reply[i] > ms64(RESTART_BUDGET))
        .map(|i| i + 1)
        .collect();
    figures::write(
        "lan.a_restarted_node_rejoins_as_itself",
        Obj::new()
            .with(
                "test",
                "overlay/daemon/tests/lan.rs::a_restarted_node_rejoins_as_itself",
            )
            .with(
                "setup",
                "3 petald with --data-dir, no other flags; a service on node 2 answering node 0; \
                 node 2 stopped with SIGTERM and started again with the same data directory, \
                 its service registered again, a client on node 0 sending a request every 20 ms \
                 until one is answered",
            )
            .with(
                "measured",
                Obj::new()
                    .with(
                        "first_reply_ms",
                        "from the restarted process's start to node 0's first reply from the \
                         restarted node's service",
                    )
                    .with(
                        "ready_ms",
                        "from the restarted process's start to its petald ready (same id)",
                    ),
            )
            .with("unit", "ms (wall clock)")
            .with("runs", n)
            .with(
                "per_run",
                Obj::new()
                    .with("first_reply_ms", first_reply.clone())
                    .with("ready_ms", ready.clone()),
            )
            .with(
                "summary",
                Obj::new()
                    .with("first_reply_ms", figures::summary(&first_reply))
                    .with("ready_ms", figures::summary(&ready)),
            )
            .with(
                "bound",
                Obj::new()
                    .with("first_reply_ms_at_most", ms64(RESTART_BUDGET))
                    .with("same_id_and_key_file", true),
            )
            .with("within_bound", slow.is_empty()),
    );
    assert!(
        slow.is_empty(),
        "runs {slow:?} of {n}: the restarted node's service answered later than {} ms: \
         {first_reply:?}",
        ms(RESTART_BUDGET)
    );
}

/// Issue 17, "start anywhere": on a host whose only interface is `lo` (no multicast route, no
/// default route: a locked-down container), `petald --dev` with no other flag warns that LAN
/// discovery cannot start, starts anyway, and serves its local applications: a request to a
/// service attached to it is answered. Before, it refused to start ("No such device").
#[test]
fn a_node_on_a_host_with_only_loopback_serves_local_applications() {
    let Some(lan) = Lan::new("ptl-lo", 1) else {
        return;
    };
    // Take the LAN away: deleting the namespace's end of the veth deletes both ends.
    let status = lan
        .command(0, "ip")
        .args(["link", "del", "eth0"])
        .status()
        .expect("running ip");
    assert!(status.success(), "ip link del eth0 failed");
    let links = lan
        .command(0, "ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("running ip");
    let links = String::from_utf8_lossy(&links.stdout).to_string();
    assert_eq!(
        links.lines().count(),
        1,
        "the namespace should hold only lo: {links}"
    );
    let node = Node::start_with(&lan, 0, None, &["--dev"]);
    node.id();
    assert!(
        node.wait_log("LAN discovery cannot start", 5 * SECOND)
            .is_some(),
        "no warning about discovery: {}",
        node.log()
    );
    let service = App::start(&lan, 0, "helper_serve", &["lo-echo", "here"]);
    service.expect("READY", 10 * SECOND);
    let client = requester(&lan, 0, "lo-echo", b"ping", 5 * SECOND, 3);
    let got = replies(&client, 10 * SECOND);
    assert_eq!(got, vec![tagged("here", b"ping"); 3], "{}", node.log());
}
