//! Issue 11, "fleet cold start", as an operator hits it: a fleet of 30 `petald` processes
//! started at the same instant, each told only to join through one node started before it
//! (`--seed`), so that seeds form chains of nodes that are all still starting. Every node must
//! serve its applications within 2 s of the start, in every one of 20 runs.
//!
//! Each run builds a fresh network namespace (`common/netns.rs`, one node namespace whose
//! loopback serves all of 127.0.0.0/8), so the fixed ports collide with nothing on the host:
//! node k (1..=30) listens for peers on 127.0.0.k:55556 and for applications on
//! 127.0.0.1:(55600 + k), all with the same network key and `--no-discovery` (the namespace's
//! ephemeral port range is moved below these ports, see `run_once`). Node 1 has no
//! seed; node k >= 2 seeds to one earlier node drawn at random (a seeded generator: the master
//! seed is printed, `PETAL_COLD_SEED=<seed>` replays the same seed chains and service
//! placement; ids and timing still differ). A service of the cluster "echo" runs on two random
//! nodes, and a client on every node asks it once every 200 ms (each request with a 1 s
//! timeout) until the first reply. The applications run in one helper process inside the
//! namespace (this test binary re-executed there, speaking `petal-client`), started and
//! retrying its connections before the daemons are spawned, so it connects as soon as a
//! relay listens.
//!
//! Time to first reply is measured from the instant before the first daemon is spawned to
//! the helper's report of the node's first reply (as read by this process). The distribution
//! (per run, and percentiles over every node of every run) is printed on stderr
//! (`--nocapture`) and written, with every node's time in every run, the bound and how many
//! runs met it, to
//! `target/test-figures/cold_start.a_fleet_started_at_once_serves_every_node_within_2s.json`
//! (`figures/mod.rs`; the second test's to `cold_start.<its name>.json`) before the test's
//! verdict. A run with a node not served within 2 s notes at 2 s which daemons hold
//! peer links with which (from the namespace's TCP table), waits up to 8 s more to see when
//! every node is served, prints those links, the join of every node (seed, "joining the ring"
//! via whom, ring of one because the seeds refused or the join failed, merges) and the logs
//! of the late nodes, of their seed chains and of the nodes their joins went to or that
//! answered them, and the test fails after all runs. `PETAL_COLD_RUNS=<n>` changes the number of
//! runs; `PETAL_COLD_LOGS=1` prints
//! the join table of passing runs too, `PETAL_COLD_LOGS=all` also every daemon's log of a
//! late run.
//!
//! A second test starts the same fleet while the namespace refuses 30 % of connection
//! attempts to peer ports with a TCP reset (nftables), as an overloaded node or a port not yet
//! open does: dials fail at random, and every node must still be served within 3 s.
//!
//! Needs root and iproute2, and nftables for the second test (skip otherwise, fail when
//! `PETAL_NETNS=1`). The two tests run one after the other.

mod common;
mod figures;
#[path = "common/netns.rs"]
mod netns;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{PETALD, Rng, TEST_NETWORK_KEY, quantile};
use figures::{Json, Obj};
use netns::{Lan, helper_args};
use petal_client::{Connection, Error, ServiceHandler};

/// Nodes in the fleet.
const NODES: usize = 30;
/// Runs of the whole fleet.
const RUNS: usize = 20;
/// Every node must be served this soon after the start (when no dial is refused).
const BUDGET: Duration = Duration::from_secs(2);
/// How long a run waits for late nodes beyond the budget (to measure how late they are).
const OVERTIME: Duration = Duration::from_secs(8);
/// Peer port of every node (on its own address 127.0.0.k).
const PEER_PORT: u16 = 55556;
/// Node k's relay port is `RELAY_BASE + k` (on 127.0.0.1 and [::1]).
const RELAY_BASE: u16 = 55600;
/// The cluster of the service.
const CLUSTER: &str = "echo";
/// A client asks once every ...
const REQUEST_EVERY: Duration = Duration::from_millis(200);
/// ... each request with this timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Marks the lines the helper prints for the parent (libtest prints its own around them).
const MARK: &str = "PTL-";
/// One way of starting the fleet: one test each.
struct Fleet {
    /// The test function's name (the figures go to `cold_start.<name>.json`).
    name: &'static str,
    /// Its namespace prefix (distinct: a namespace left behind by one test cannot collide).
    prefix: &'static str,
    /// Percent of connection attempts to peer ports that the namespace refuses with a reset
    /// (an nftables rule: what an overloaded node, or a port that is not open yet, does to a
    /// dialer); 0: none.
    reset_percent: u32,
    /// Every node must be served this soon after the start, in every run.
    budget: Duration,
}

/// The fleets run one at a time (60 daemons at once on 2 cores would measure the machine).
static ONE_FLEET_AT_A_TIME: Mutex<()> = Mutex::new(());

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Node k's peer address.
fn peer_addr(k: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 0, 0, k as u8), PEER_PORT))
}

/// Node k's relay address (inside the namespace).
fn relay_addr(k: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, RELAY_BASE + k as u16))
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

/// Kills (SIGKILL) and reaps a child.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// The applications: one helper process inside the namespace (a no-op in an ordinary run).

/// Prints a marked line for the parent.
fn say(line: impl std::fmt::Display) {
    println!("\n{MARK}{line}");
}

/// The echo service: replies `n<node>:<request>`.
struct Echo {
    node: usize,
}

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        let mut out = format!("n{}:", self.node).into_bytes();
        out.extend_from_slice(&request);
        Ok(out.into())
    }
}

/// Retries `attempt` every 10 ms (each bounded by 2 s: the relay handshake has no deadline of
/// its own) until it succeeds.
async fn until_ok<T, F, Fut>(mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    loop {
        if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(2), attempt()).await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `[nodes, services (comma-separated node numbers)]`: prints `READY`, then registers an
/// [`Echo`] member of [`CLUSTER`] with each service node (`SERVING <k>` once registered) and
/// runs a client on every node 1..=nodes: it connects (`CONNECTED <k>`), then sends a request
/// `node <k>` every [`REQUEST_EVERY`] (each with [`REQUEST_TIMEOUT`], concurrently) until one
/// is answered, and prints `FIRST <k> <reply>`. Errors other than timeouts print
/// `REQERR <k> <error>`. Runs until killed.
#[test]
fn helper_fleet_apps() {
    let Some(args) = helper_args("helper_fleet_apps") else {
        return;
    };
    let nodes: usize = args[0].parse().unwrap();
    let services: Vec<usize> = args[1].split(',').map(|s| s.parse().unwrap()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        say("READY");
        let mut tasks = tokio::task::JoinSet::new();
        for s in services {
            tasks.spawn(async move {
                let _service = until_ok(|| {
                    petal_client::Options::default().register_addr(
                        relay_addr(s),
                        CLUSTER,
                        Echo { node: s },
                    )
                })
                .await;
                say(format!("SERVING {s}"));
                std::future::pending::<()>().await;
            });
        }
        for k in 1..=nodes {
            tasks.spawn(async move {
                let conn = until_ok(|| Connection::connect_addr(relay_addr(k))).await;
                say(format!("CONNECTED {k}"));
                let payload = Bytes::from(format!("node {k}"));
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let mut errors = 0;
                loop {
                    let (conn, payload, tx) = (conn.clone(), payload.clone(), tx.clone());
                    tokio::spawn(async move {
                        let r = conn.request(CLUSTER, payload, REQUEST_TIMEOUT).await;
                        let _ = tx.send(r);
                    });
                    let deadline = tokio::time::Instant::now() + REQUEST_EVERY;
                    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                        match r {
                            Ok(reply) => {
                                say(format!("FIRST {k} {}", String::from_utf8_lossy(&reply)));
                                return;
                            }
                            Err(Error::Timeout) => {}
                            Err(e) => {
                                errors += 1;
                                if errors <= 3 {
                                    say(format!("REQERR {k} {e}"));
                                }
                            }
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        std::future::pending::<()>().await
    });
}

/// The helper process; its marked lines are collected. Killed when dropped.
struct Apps {
    child: Child,
    lines: Lines,
    stderr: Lines,
}

impl Apps {
    fn start(lan: &Lan, services: &[usize]) -> Apps {
        let services: Vec<String> = services.iter().map(usize::to_string).collect();
        let mut child = lan
            .helper(
                0,
                "helper_fleet_apps",
                &[&NODES.to_string(), &services.join(",")],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the helper");
        let (lines, stderr): (Lines, Lines) = Default::default();
        collect_lines(child.stdout.take().unwrap(), lines.clone(), true);
        collect_lines(child.stderr.take().unwrap(), stderr.clone(), false);
        Apps {
            child,
            lines,
            stderr,
        }
    }

    /// `(when, rest of the line)` of every line starting with `prefix`.
    fn all(&self, prefix: &str) -> Vec<(Instant, String)> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|(t, l)| l.strip_prefix(prefix).map(|r| (*t, r.trim().to_string())))
            .collect()
    }

    /// `node -> (when, rest)` of the first line `<prefix> <node> ...` of each node.
    fn by_node(&self, prefix: &str) -> BTreeMap<usize, (Instant, String)> {
        let mut out = BTreeMap::new();
        for (t, rest) in self.all(prefix) {
            let (k, rest) = rest.split_once(' ').unwrap_or((&rest, ""));
            if let Ok(k) = k.parse() {
                out.entry(k).or_insert((t, rest.to_string()));
            }
        }
        out
    }

    fn stderr(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }
}

impl Drop for Apps {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------------
// The daemons.

/// One `petald` of the fleet, its stderr collected.
struct Daemon {
    /// Its number, 1..=NODES (peer address 127.0.0.k).
    k: usize,
    /// The node it seeds to.
    seed: Option<usize>,
    child: Child,
    log: Lines,
}

impl Daemon {
    /// Spawns node `k` (no waiting), as an operator would start it: the network key in the
    /// environment, its ports, its seed, no discovery; debug logs through `RUST_LOG`.
    fn spawn(lan: &Lan, k: usize, seed: Option<usize>) -> Daemon {
        let mut cmd = lan.command(0, PETALD);
        cmd.args(["--port", &(RELAY_BASE + k as u16).to_string()])
            .args(["--listen", &peer_addr(k).to_string()])
            .arg("--no-discovery");
        if let Some(j) = seed {
            cmd.args(["--seed", &peer_addr(j).to_string()]);
        }
        let mut child = cmd
            .env("PETAL_NETWORK_KEY", TEST_NETWORK_KEY)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning petald");
        let log: Lines = Arc::default();
        collect_lines(child.stderr.take().unwrap(), log.clone(), false);
        Daemon {
            k,
            seed,
            child,
            log,
        }
    }

    /// Its log, each line prefixed with the milliseconds since `t0` it arrived at.
    fn log(&self, t0: Instant) -> String {
        let lines = self.log.lock().unwrap();
        lines
            .iter()
            .map(|(t, l)| format!("  +{:>5} ms  {l}\n", ms(t.saturating_duration_since(t0))))
            .collect()
    }

    /// `(ms since t0, line)` of the lines containing `needle`.
    fn lines_with(&self, needle: &str, t0: Instant) -> Vec<(u128, String)> {
        let lines = self.log.lock().unwrap();
        lines
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(t, l)| (ms(t.saturating_duration_since(t0)), l.clone()))
            .collect()
    }

    /// The value of `key=` in `line`.
    fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
        let at = line.find(&format!(" {key}="))? + key.len() + 2;
        line[at..].split_whitespace().next()
    }

    /// Its node id (from its "petald ready" line).
    fn id(&self) -> Option<String> {
        let lines = self.log.lock().unwrap();
        lines
            .iter()
            .find(|(_, l)| l.contains("petald ready"))
            .and_then(|(_, l)| Self::field(l, "id").map(str::to_string))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------------
// One run.

/// The established peer links between the daemons: node -> the nodes it has a TCP
/// connection with on a peer port (either side). All daemons share one namespace, so the
/// namespace's TCP table (`/proc/<pid>/net/tcp`) holds every connection; each socket's owner
/// comes from its inode among the process's file descriptors, and the two ends of a
/// connection are paired by their addresses.
fn peer_links(daemons: &[Daemon]) -> BTreeMap<usize, std::collections::BTreeSet<usize>> {
    let mut owner: BTreeMap<u64, usize> = BTreeMap::new();
    for d in daemons {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", d.child.id())) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
            {
                owner.insert(inode, d.k);
            }
        }
    }
    let mut out: BTreeMap<usize, std::collections::BTreeSet<usize>> =
        daemons.iter().map(|d| (d.k, Default::default())).collect();
    let Some(table) = daemons
        .iter()
        .find_map(|d| std::fs::read_to_string(format!("/proc/{}/net/tcp", d.child.id())).ok())
    else {
        return out;
    };
    // (local, remote) -> owner, for established connections.
    let mut ends: BTreeMap<(String, String), usize> = BTreeMap::new();
    let port = |a: &str| {
        a.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != "01" {
            continue;
        }
        if let Some(k) = f[9].parse().ok().and_then(|i: u64| owner.get(&i)) {
            ends.insert((f[1].to_string(), f[2].to_string()), *k);
        }
    }
    for ((local, remote), k) in &ends {
        if port(local) != Some(PEER_PORT) && port(remote) != Some(PEER_PORT) {
            continue;
        }
        if let Some(j) = ends.get(&(remote.clone(), local.clone())) {
            out.entry(*k).or_default().insert(*j);
        }
    }
    out
}

/// What one run measured.
struct Run {
    /// Time to first reply of node k at index k - 1 (`None`: not within budget + overtime).
    ttfr: Vec<Option<Duration>>,
    /// How long spawning the 30 processes took.
    spawn_took: Duration,
    /// Diagnostics of the late nodes (empty when every node was served in time).
    report: String,
}

/// The join of every node, one line each: its seed, id, when it was ready, whom it joined
/// through (as node numbers), ring of one, merges, first reply.
fn join_table(
    daemons: &[Daemon],
    t0: Instant,
    ttfr: &[Option<Duration>],
    services: &[usize],
) -> String {
    let ids: BTreeMap<String, usize> = daemons
        .iter()
        .filter_map(|d| d.id().map(|id| (id, d.k)))
        .collect();
    let name = |id: Option<&str>| -> String {
        match id {
            Some(id) => match ids.get(id) {
                Some(k) => format!("n{k}"),
                None => format!("?{id}"),
            },
            None => "?".into(),
        }
    };
    // Why and when a node served as a ring of one: its seeds refused, or its join failed.
    let alone = |d: &Daemon| {
        let mut why: Vec<String> = d
            .lines_with("could not join through the seeds", t0)
            .iter()
            .map(|(t, _)| format!("seeds@{t}"))
            .collect();
        why.extend(
            d.lines_with("join failed; serving as a ring of one", t0)
                .iter()
                .map(|(t, _)| format!("FAILED@{t}")),
        );
        if why.is_empty() {
            "-".to_string()
        } else {
            why.join(",")
        }
    };
    let mut out = String::new();
    for d in daemons {
        let at = |needle: &str| {
            d.lines_with(needle, t0)
                .first()
                .map_or("-".to_string(), |(t, _)| format!("{t}"))
        };
        let joining: Vec<String> = d
            .lines_with("joining the ring", t0)
            .iter()
            .chain(d.lines_with("another join contact", t0).iter())
            .map(|(t, l)| format!("{}@{t}", name(Daemon::field(l, "via"))))
            .collect();
        let merging: Vec<String> = d
            .lines_with("a seed outside our ring; merging", t0)
            .iter()
            .map(|(t, l)| format!("{}@{t}", name(Daemon::field(l, "id"))))
            .collect();
        out.push_str(&format!(
            "{} n{:<2} seed {:<4} id {} ready {:>4} | seed dials failed {:>2} | joining via {:<12} \
             | alone {:<11} | joined {:>5} | merging {:<10} | dead peers {:>2} | first reply {}\n",
            if services.contains(&d.k) { "S" } else { " " },
            d.k,
            d.seed.map_or("-".to_string(), |j| format!("n{j}")),
            d.id().unwrap_or_else(|| "?".repeat(32)),
            at("petald ready"),
            d.lines_with("seed dial failed", t0).len(),
            if joining.is_empty() {
                "-".to_string()
            } else {
                joining.join(",")
            },
            alone(d),
            at("joined the ring"),
            if merging.is_empty() {
                "-".to_string()
            } else {
                merging.join(",")
            },
            d.lines_with("peer declared dead", t0).len(),
            ttfr[d.k - 1].map_or("NEVER".to_string(), |t| format!("{} ms", ms(t))),
        ));
    }
    out
}

/// Runs the fleet once with the generator seeded `seed`; `None` when namespaces are not
/// available.
fn run_once(fleet: &Fleet, run: usize, seed: u64) -> Option<Run> {
    let lan = Lan::new(fleet.prefix, 1)?;
    // Outbound connections (peer dials, the helper's connection attempts) take their local
    // ports from the ephemeral range, 32768-60999 by default, which holds the fixed ports:
    // one could take 127.0.0.1:556xx before that node's relay binds it (the relay then serves
    // on [::1] alone), and the helper, retrying 127.0.0.1:556xx before the node listens, could
    // even connect to itself (TCP simultaneous open). The range is per namespace: keep it
    // below the fixed ports.
    let status = lan
        .command(0, "sh")
        .args([
            "-c",
            "echo 32768 55000 > /proc/sys/net/ipv4/ip_local_port_range",
        ])
        .status()
        .expect("running sh");
    assert!(status.success(), "setting ip_local_port_range: {status}");
    if fleet.reset_percent > 0 {
        refuse_some_dials(&lan, fleet.reset_percent);
    }
    let mut rng = Rng(seed);
    let seeds: Vec<Option<usize>> = (1..=NODES)
        .map(|k| (k > 1).then(|| 1 + rng.below(k as u64 - 1) as usize))
        .collect();
    let first = 1 + rng.below(NODES as u64) as usize;
    let second = loop {
        let s = 1 + rng.below(NODES as u64) as usize;
        if s != first {
            break s;
        }
    };
    let services = [first.min(second), first.max(second)];

    let apps = Apps::start(&lan, &services);
    let ready_by = Instant::now() + Duration::from_secs(10);
    while apps.all("READY").is_empty() {
        assert!(
            Instant::now() < ready_by,
            "the helper did not start: {}",
            apps.stderr()
        );
        std::thread::sleep(Duration::from_millis(2));
    }

    // The fleet: every process spawned at once, none waited for.
    let t0 = Instant::now();
    let mut daemons: Vec<Daemon> = (1..=NODES)
        .map(|k| Daemon::spawn(&lan, k, seeds[k - 1]))
        .collect();
    let spawn_took = t0.elapsed();

    let all_served = || apps.by_node("FIRST").len() == NODES;
    // At the budget, if some node is not served yet, who is linked with whom (peer links are
    // opened on use and kept to the nodes in the core's tables, so a node that is in no other
    // node's tables shows few links).
    // Daemons that are gone by then (a crash, or a kill from outside) show no links at all.
    let mut links_at_budget = None;
    let mut exited_at_budget = Vec::new();
    while !all_served() && t0.elapsed() < fleet.budget + OVERTIME {
        if links_at_budget.is_none() && t0.elapsed() >= fleet.budget {
            links_at_budget = Some(peer_links(&daemons));
            for d in &mut daemons {
                if let Ok(Some(status)) = d.child.try_wait() {
                    exited_at_budget.push(format!("n{} ({status})", d.k));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let firsts = apps.by_node("FIRST");
    let ttfr: Vec<Option<Duration>> = (1..=NODES)
        .map(|k| firsts.get(&k).map(|(t, _)| t.saturating_duration_since(t0)))
        .collect();
    // Every reply came from a service node and answered that node's own request.
    for (k, (_, reply)) in &firsts {
        assert!(
            services.iter().any(|s| *reply == format!("n{s}:node {k}")),
            "run {run}: node {k} got {reply:?} (services on {services:?})"
        );
    }

    let late: Vec<usize> = (1..=NODES)
        .filter(|k| ttfr[k - 1].is_none_or(|t| t > fleet.budget))
        .collect();
    let mut report = String::new();
    let show_table = !late.is_empty() || std::env::var_os("PETAL_COLD_LOGS").is_some();
    if show_table {
        let connected = apps.by_node("CONNECTED");
        let serving = apps.by_node("SERVING");
        let reqerr = apps.all("REQERR");
        let at = |m: &BTreeMap<usize, (Instant, String)>, k: usize| {
            m.get(&k).map_or("never".to_string(), |(t, _)| {
                format!("{} ms", ms(t.saturating_duration_since(t0)))
            })
        };
        report.push_str(&format!(
            "==== run {run} (seed {seed:#018x}): nodes served later than {} ms: {late:?}; \
             services on {services:?} (registered at {} and {}); processes spawned in {} ms\n",
            ms(fleet.budget),
            at(&serving, services[0]),
            at(&serving, services[1]),
            ms(spawn_took),
        ));
        report.push_str(&format!(
            "  seed chains: {}\n",
            (2..=NODES)
                .map(|k| format!("n{k}->n{}", seeds[k - 1].unwrap()))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        for k in &late {
            report.push_str(&format!(
                "  late n{k}: chain {}; client connected at {}\n",
                chain(&seeds, *k),
                at(&connected, *k)
            ));
        }
        if !reqerr.is_empty() {
            report.push_str(&format!(
                "  request errors other than timeouts: {:?}\n",
                reqerr.iter().map(|(_, l)| l).collect::<Vec<_>>()
            ));
        }
        if !exited_at_budget.is_empty() {
            report.push_str(&format!(
                "  daemons no longer running at {} ms: {}\n",
                ms(fleet.budget),
                exited_at_budget.join(", ")
            ));
        }
        if let Some(links) = &links_at_budget {
            report.push_str(&format!(
                "  peer links (established TCP, either direction) at {} ms:\n",
                ms(fleet.budget)
            ));
            // Late nodes and nodes linked to few others one by one; the rest summed up.
            let mut meshed = Vec::new();
            for (k, with) in links {
                if !late.contains(k) && with.len() + 2 >= NODES {
                    meshed.push(format!("n{k}"));
                    continue;
                }
                let with: Vec<String> = with.iter().map(|j| format!("n{j}")).collect();
                report.push_str(&format!(
                    "    {}n{k} ({}): {}\n",
                    if late.contains(k) { "LATE " } else { "" },
                    with.len(),
                    with.join(" ")
                ));
            }
            if !meshed.is_empty() {
                report.push_str(&format!(
                    "    linked to all others or all but one: {}\n",
                    meshed.join(" ")
                ));
            }
        }
        report.push_str("  join of every node (ms since the start; S: a service node):\n");
        report.push_str(&join_table(&daemons, t0, &ttfr, &services));
    }
    if !late.is_empty() {
        // The logs of the late nodes and of every node of their seed chains.
        let mut shown = std::collections::BTreeSet::new();
        if std::env::var_os("PETAL_COLD_LOGS").is_some_and(|v| v == "all") {
            shown.extend(1..=NODES);
        }
        let ids: Vec<Option<String>> = daemons.iter().map(Daemon::id).collect();
        for &k in &late {
            let mut j = Some(k);
            while let Some(n) = j {
                shown.insert(n);
                j = seeds[n - 1];
            }
            // And the nodes its joins went to or came back from (a contact, the nearest
            // node), whose view of the join the late node's log cannot show.
            let d = &daemons[k - 1];
            for (_, line) in d
                .lines_with("join sent", t0)
                .into_iter()
                .chain(d.lines_with("join reply received", t0))
            {
                let peer = Daemon::field(&line, "peer");
                if let Some(n) = ids.iter().position(|id| id.as_deref() == peer) {
                    shown.insert(n + 1);
                }
            }
            // And the nodes that answered its joins (the nearest one among them), whether or
            // not the answers arrived.
            if let Some(late_id) = &ids[k - 1] {
                for (n, other) in daemons.iter().enumerate() {
                    let answered = other
                        .lines_with("join reply sent", t0)
                        .iter()
                        .any(|(_, l)| Daemon::field(l, "peer") == Some(late_id.as_str()));
                    if answered {
                        shown.insert(n + 1);
                    }
                }
            }
        }
        for n in shown {
            let d = &daemons[n - 1];
            report.push_str(&format!(
                "---- run {run}: petald n{n} (peers {}, relay {}, seed {}{}) log ----\n{}---- end \
                 of n{n}'s log ----\n",
                peer_addr(n),
                relay_addr(n),
                d.seed.map_or("-".to_string(), |j| format!("n{j}")),
                if late.contains(&n) { ", LATE" } else { "" },
                d.log(t0)
            ));
        }
        let stderr = apps.stderr();
        if !stderr.trim().is_empty() {
            report.push_str(&format!("---- helper stderr ----\n{stderr}"));
        }
    }
    // Everything is killed here: the daemons and the helper (SIGKILL), then the namespace.
    drop(daemons);
    drop(apps);
    drop(lan);
    Some(Run {
        ttfr,
        spawn_took,
        report,
    })
}

/// Node k's seed chain down to node 1, e.g. `n17->n9->n3->n1`.
fn chain(seeds: &[Option<usize>], k: usize) -> String {
    let mut out = format!("n{k}");
    let mut j = seeds[k - 1];
    while let Some(n) = j {
        out.push_str(&format!("->n{n}"));
        j = seeds[n - 1];
    }
    out
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Makes the namespace refuse `percent` % of connection attempts to peer ports with a reset
/// (random per attempt: a dial that fails is likely to succeed when tried again).
fn refuse_some_dials(lan: &Lan, percent: u32) {
    use std::io::Write;
    let rules = format!(
        "table inet petal_chaos {{\n  chain input {{\n    type filter hook input priority 0;\n    \
         tcp dport {PEER_PORT} tcp flags & (syn | ack) == syn numgen random mod 100 < {percent} \
         reject with tcp reset\n  }}\n}}\n"
    );
    let mut nft = lan
        .command(0, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("running nft");
    nft.stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    let status = nft.wait().unwrap();
    assert!(status.success(), "adding the nftables rule: {status}");
}

/// Whether this machine can run `fleet` (namespaces, and nftables if it resets dials); like
/// `netns::available`, it fails instead of skipping when `PETAL_NETNS=1`.
fn can_run(fleet: &Fleet) -> bool {
    if !netns::available() {
        return false;
    }
    if fleet.reset_percent > 0 && netns::find_program("nft").is_none() {
        let why = "nft (package nftables) is not installed";
        if std::env::var(netns::NETNS_ENV).is_ok_and(|v| v == "1") {
            panic!(
                "{}=1 but {} cannot run: {why}",
                netns::NETNS_ENV,
                fleet.name
            );
        }
        eprintln!("{} skipped: {why}", fleet.name);
        return false;
    }
    true
}

#[test]
fn a_fleet_started_at_once_serves_every_node_within_2s() {
    fleet_cold_start(&Fleet {
        name: "a_fleet_started_at_once_serves_every_node_within_2s",
        prefix: "ptl-cold",
        reset_percent: 0,
        budget: BUDGET,
    });
}

/// The same fleet while the namespace refuses 30 % of connection attempts to peer ports with a
/// reset: every dial may fail, and every failure loses what waited for that link. A joiner
/// whose contact cannot be reached moves to its next contact at once (the driver tells the
/// core), and a node that serves alone dials a seed that never answered every 100 ms during
/// its first 5 s; every node must be served within 3 s in every run (measured on 2 cores: 60
/// runs, slowest node 1.5-1.8 s). Before those two changes, the same resets left 3 of 20 runs
/// with a node served after 3.2-6.6 s (a joiner waited out a 2 s attempt bound on a contact
/// whose dial had failed, and a node serving alone re-dialed its seed after 0.8, 1.6, 3.2 s).
/// A CI run later served one node at 3.8 s: its one direct dial to the closest node was reset,
/// and that node was not tried directly again in the round (fixed; `tests/join.rs` in
/// petal-core has the case).
#[test]
fn a_fleet_whose_dials_often_fail_serves_every_node_within_3s() {
    fleet_cold_start(&Fleet {
        name: "a_fleet_whose_dials_often_fail_serves_every_node_within_3s",
        prefix: "ptl-coldr",
        reset_percent: 30,
        budget: Duration::from_secs(3),
    });
}

fn fleet_cold_start(fleet: &Fleet) {
    if !can_run(fleet) {
        return;
    }
    let _one = ONE_FLEET_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let master = env_u64("PETAL_COLD_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let runs = env_u64("PETAL_COLD_RUNS").map_or(RUNS, |n| n as usize);
    eprintln!(
        "{}: {NODES} nodes, {runs} runs, {}% of dials reset, master seed {master:#018x} \
         (PETAL_COLD_SEED={master:#x} replays the seed chains and service placement)",
        fleet.name, fleet.reset_percent
    );
    let started = Instant::now();
    let mut master_rng = Rng(master);
    let mut all: Vec<Duration> = Vec::new();
    let mut never = 0;
    let mut failed_runs = Vec::new();
    // Per run: its seed, each node's time to first reply (ms; `None`: not served by the end of
    // the overtime), how long spawning took.
    let mut per_run: Vec<(u64, Vec<Option<u64>>, u64)> = Vec::new();
    for run in 1..=runs {
        let seed = master_rng.next();
        let Some(r) = run_once(fleet, run, seed) else {
            return;
        };
        let mut served: Vec<Duration> = r.ttfr.iter().flatten().copied().collect();
        served.sort();
        never += NODES - served.len();
        let late = r
            .ttfr
            .iter()
            .filter(|t| t.is_none_or(|t| t > fleet.budget))
            .count();
        let slowest = r
            .ttfr
            .iter()
            .enumerate()
            .max_by_key(|(_, t)| t.unwrap_or(Duration::MAX))
            .map(|(i, _)| i + 1)
            .unwrap();
        eprintln!(
            "run {run:>2} (seed {seed:#018x}): served {}/{NODES} within {} ms; max {} (n{slowest}), \
             median {} ms, min {} ms; spawned in {} ms",
            NODES - late,
            ms(fleet.budget),
            if served.len() == NODES {
                format!("{} ms", ms(served[NODES - 1]))
            } else {
                format!("never ({} nodes)", NODES - served.len())
            },
            served.get(served.len() / 2).map_or(0, |t| ms(*t)),
            served.first().map_or(0, |t| ms(*t)),
            ms(r.spawn_took),
        );
        // Printed at once (a later run may hang or be killed).
        eprint!("{}", r.report);
        if late > 0 {
            failed_runs.push((run, format!("{seed:#018x}"), late));
        }
        per_run.push((
            seed,
            r.ttfr
                .iter()
                .map(|t| t.map(|t| t.as_millis() as u64))
                .collect(),
            r.spawn_took.as_millis() as u64,
        ));
        all.extend(served);
    }
    all.sort();
    let buckets = [250, 500, 750, 1000, 1250, 1500, 1750, 2000, 10_000];
    let mut hist = Vec::new();
    let mut lower = 0;
    for b in buckets {
        let n = all
            .iter()
            .filter(|t| ms(**t) >= lower && ms(**t) < b)
            .count();
        hist.push(format!("[{lower},{b}) {n}"));
        lower = b;
    }
    if !all.is_empty() {
        eprintln!(
            "time to first reply over {} nodes ({runs} runs): p50 {} ms, p90 {} ms, p99 {} ms, \
             max {} ms; never served {never}; histogram (ms): {}",
            all.len() + never,
            ms(quantile(&all, 0.5)),
            ms(quantile(&all, 0.9)),
            ms(quantile(&all, 0.99)),
            ms(all[all.len() - 1]),
            hist.join(", ")
        );
    }
    eprintln!(
        "runs with every node served within {} ms: {}/{runs}; wall time {:.1} s",
        ms(fleet.budget),
        runs - failed_runs.len(),
        started.elapsed().as_secs_f64()
    );
    write_figures(fleet, master, &per_run, never, failed_runs.len());
    assert!(
        failed_runs.is_empty(),
        "runs (run, seed, nodes served late) {failed_runs:?} of {runs} (master seed {master:#x}) \
         had nodes not served within {} ms; their join tables and the logs of the late nodes and \
         of their seed chains are printed above",
        ms(fleet.budget)
    );
}

/// Writes `target/test-figures/cold_start.<test name>.json`: every node's time to first reply in every run, the quantiles over all of them and of the
/// runs' slowest nodes, the bound and how many runs met it.
fn write_figures(
    fleet: &Fleet,
    master: u64,
    per_run: &[(u64, Vec<Option<u64>>, u64)],
    never: usize,
    failed: usize,
) {
    let served: Vec<u64> = per_run
        .iter()
        .flat_map(|r| r.1.iter().flatten())
        .copied()
        .collect();
    // A run's slowest node (a node never served counts as the overtime's end).
    let slowest: Vec<u64> = per_run
        .iter()
        .map(|r| {
            r.1.iter()
                .map(|t| t.unwrap_or(ms(fleet.budget + OVERTIME) as u64))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let all = Obj::new()
        .with("count", served.len() + never)
        .with("served", served.len())
        .with("never_served", never)
        .with("min", served.iter().min().copied())
        .with("p50", figures::quantile(&served, 0.5))
        .with("p90", figures::quantile(&served, 0.9))
        .with("p99", figures::quantile(&served, 0.99))
        .with("max", served.iter().max().copied());
    figures::write(
        &format!("cold_start.{}", fleet.name),
        Obj::new()
            .with(
                "test",
                format!("overlay/daemon/tests/cold_start.rs::{}", fleet.name),
            )
            .with(
                "setup",
                format!(
                    "{NODES} petald started at the same instant in one namespace on \
                     127.0.0.1-{NODES} with --no-discovery, node k >= 2 seeded to a random \
                     earlier node; an echo service on two random nodes; a client on every node \
                     asking every {} ms (timeout {} ms) until its first reply; {} % of \
                     connection attempts to peer ports refused with a reset",
                    ms(REQUEST_EVERY),
                    ms(REQUEST_TIMEOUT),
                    fleet.reset_percent
                ),
            )
            .with(
                "measured",
                "time to first reply: from the instant before the first daemon was spawned to \
                 the client's first reply on each node (null: not served within the budget and \
                 overtime)",
            )
            .with("unit", "ms (wall clock)")
            .with("master_seed", format!("{master:#x}"))
            .with("runs", per_run.len())
            .with("nodes_per_run", NODES)
            .with("runs_with_every_node_within_bound", per_run.len() - failed)
            .with(
                "summary",
                Obj::new()
                    .with("time_to_first_reply_ms_every_node", all)
                    .with("slowest_node_per_run_ms", figures::summary(&slowest)),
            )
            .with(
                "bound",
                Obj::new().with("every_node_every_run_at_most_ms", ms(fleet.budget) as u64),
            )
            .with("within_bound", failed == 0)
            .with(
                "per_run",
                per_run
                    .iter()
                    .map(|(seed, ttfr, spawn)| {
                        Json::from(
                            Obj::new()
                                .with("seed", format!("{seed:#018x}"))
                                .with("spawn_ms", *spawn)
                                .with("slowest_ms", ttfr.iter().flatten().max().copied())
                                .with("time_to_first_reply_ms", ttfr.clone()),
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
    );
}
