//! Private virtual LANs for tests: Linux network namespaces joined by a bridge, so that real
//! `petald` processes can multicast, be cut off and be partitioned without touching the host's
//! network. Std only: it shells out to `ip` (iproute2) and, for captures, `tcpdump`.
//!
//! ## Topology of `Lan::new("ptl-x", n)`
//! ```text
//!   namespace ptl-x-br (no addresses, nothing runs there)
//!     bridge ptl-x-br  (multicast snooping off, STP off)   bridge ptl-x-b2 (only used by split)
//!       |ptl-x-v0      |ptl-x-v1   ...  |ptl-x-v<n-1>       (bridge-side veth ends)
//!   ----|--------------|----------------|-----
//!     eth0 10.X.Y.1  eth0 10.X.Y.2     eth0 10.X.Y.n        (node-side veth ends, /24)
//!   namespace ptl-x-n0  ptl-x-n1  ...  ptl-x-n<n-1>
//! ```
//! Each node namespace has `lo` and `eth0` up, `eth0` with multicast on, its connected /24 and
//! a route for 224.0.0.0/4 via `eth0` (without it, sending to a multicast group fails with
//! "network unreachable", as there is no default route). There is no default route and no link
//! to the host: nothing sent in a node namespace can leave the LAN. X and Y come from a hash of
//! the prefix, so different tests use different subnets (they could not collide anyway: every
//! LAN is its own layer-2 domain), which makes captures and logs easier to tell apart.
//!
//! - **Cutting a node off**: [`Lan::set_link`] sets the bridge-side end of its veth down or up.
//!   The node then sees its own `eth0` lose its carrier (`NO-CARRIER`), like an unplugged cable;
//!   its addresses and routes stay, and multicast it sends is silently dropped.
//! - **Partitions**: [`Lan::split`] moves the bridge ports of group A to the second bridge
//!   `<prefix>-b2`, so A and the rest form two LANs that cannot hear each other while every
//!   node keeps its carrier (a silent partition, like a failed switch uplink). [`Lan::heal`]
//!   moves every port back to `<prefix>-br`. Moving a port between bridges takes effect at
//!   once (STP is off, so ports forward immediately; the forwarding database is per bridge).
//!
//! Multicast snooping is off on both bridges: with it on, the bridge forwards a group only to
//! ports it saw an IGMP report on, and without a querier those entries expire after 260 s, so
//! delivery would depend on report timing.
//!
//! ## Cleanup
//! Dropping a [`Lan`] (also while a test panics) kills every process still inside its
//! namespaces (`ip netns pids`) and deletes the namespaces, which destroys their interfaces.
//! Namespaces left by a crashed earlier run with the same prefix are removed by [`Lan::new`],
//! so every test must use a prefix of its own.
//!
//! Namespace names are shared by every process that sees this `/run` (`ip netns` keeps them
//! in `/run/netns`), so two test processes (two `cargo test` runs, a clone's CI beside a
//! developer's run) would share a prefix's names, and the second's [`Lan::new`] would take the
//! first's live LAN for leftovers and kill its processes. A LAN therefore holds an exclusive
//! `flock` on `/run/petal-lan-<prefix>.lock` for its lifetime, in the same scope as the names
//! (in the temp dir on a system without `/run`, where `ip netns` would not work anyway):
//! [`Lan::new`] waits while another process holds it (at most 10 minutes, then panics), and the
//! kernel releases a crashed process's lock, so what is left under a free lock is a leftover
//! (the empty lock files stay in `/run`).
//! Within one process, two live LANs of one prefix are refused (a panic, not a wait for
//! itself). A checkout from before this lock takes none, and can still remove a new one's LAN.
//!
//! ## Running programs inside
//! [`Lan::command`] runs any program in a node namespace (`ip netns exec`). Tests that need a
//! small network program without depending on python or socat can re-execute their own test
//! binary there: [`Lan::helper`] runs one `#[test]` function of the current binary with
//! arguments, and that function calls [`helper_args`] to learn whether it runs as a helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `0`: skip the namespace tests even where they could run. `1`: they must run ([`available`]
/// panics instead of returning false), so that CI cannot skip them silently.
pub(crate) const NETNS_ENV: &str = "PETAL_NETNS";
/// The environment variable that makes a re-executed test binary run a helper (its value is the
/// helper's test name).
pub(crate) const HELPER_ENV: &str = "PETAL_NETNS_HELPER";
/// The helper's arguments, separated by the unit separator (0x1f).
pub(crate) const HELPER_ARGS_ENV: &str = "PETAL_NETNS_HELPER_ARGS";

/// Longest prefix: `<prefix>-v<i>` must fit the 15-byte interface name limit for i < 1000.
pub(crate) const MAX_PREFIX: usize = 10;
/// Most nodes on one LAN.
pub(crate) const MAX_NODES: usize = 250;

/// Finds an executable on `PATH` (and in the sbin directories, which a non-login root shell
/// may lack).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The effective user id of this process (from /proc; std has no getuid).
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether this machine lets us build LANs: root, `ip` present, and a probe namespace with a
/// bridge and a veth pair can be created. Checked once per process; prints why not. Panics
/// instead of returning false when `PETAL_NETNS=1`.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    match AVAILABLE.get_or_init(probe) {
        Ok(()) => true,
        Err(why) if std::env::var(NETNS_ENV).is_ok_and(|v| v == "1") => {
            panic!("{NETNS_ENV}=1 but network namespace tests cannot run: {why}")
        }
        Err(why) => {
            eprintln!("network namespace tests skipped: {why}");
            false
        }
    }
}

fn probe() -> Result<(), String> {
    if std::env::var(NETNS_ENV).is_ok_and(|v| v == "0") {
        return Err(format!("{NETNS_ENV}=0"));
    }
    if euid() != Some(0) {
        return Err("not running as root".into());
    }
    if find_program("ip").is_none() {
        return Err("`ip` (iproute2) is not installed".into());
    }
    let ns = format!("ptlprobe{}", std::process::id());
    let _ = ip(&["netns", "del", &ns]);
    ip(&["netns", "add", &ns]).map_err(|e| format!("cannot create a network namespace: {e}"))?;
    let result = ip(&["-n", &ns, "link", "add", "name", "pb", "type", "bridge"])
        .and_then(|_| {
            ip(&[
                "-n", &ns, "link", "add", "name", "pv", "type", "veth", "peer", "name", "pw",
            ])
        })
        .map(|_| ())
        .map_err(|e| format!("cannot create a bridge and a veth pair: {e}"));
    let _ = ip(&["netns", "del", &ns]);
    result
}

/// Runs `ip` with `args`; its stdout, or an error with its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip` and panics with its error when it fails (setup steps that must work).
fn must(args: &[&str]) -> String {
    ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs several `ip` commands (one per line, without the leading `ip`) in namespace `ns` in one
/// process (`ip -n <ns> -batch -`).
fn batch(ns: &str, lines: &[String]) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ip");
    let script = lines.join("\n") + "\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .expect("writing to ip -batch");
    let out = child.wait_with_output().expect("waiting for ip -batch");
    assert!(
        out.status.success(),
        "`ip -n {ns} -batch` failed: {}\nscript:\n{script}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Kills (SIGKILL) every process inside namespace `ns`.
fn kill_all_in(ns: &str) {
    let Ok(pids) = ip(&["netns", "pids", ns]) else {
        return;
    };
    let pids: Vec<&str> = pids.split_whitespace().collect();
    if !pids.is_empty() {
        signal(&pids, "KILL");
    }
}

/// Sends `signal` to the processes `pids` (through the shell's `kill`, which every system has).
fn signal(pids: &[&str], signal: &str) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -{signal} \"$@\" 2>/dev/null"), "sh"])
        .args(pids)
        .stdin(Stdio::null())
        .status();
}

/// Kills the processes in, and deletes, namespace `ns` (ignoring errors: it may not exist).
fn remove_ns(ns: &str) {
    kill_all_in(ns);
    let _ = ip(&["netns", "del", ns]);
}

/// FNV-1a, to pick a subnet from the prefix.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The longest [`Lan::new`] waits for another process's LAN of its prefix.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// The prefixes of this process's live LANs.
static HELD_PREFIXES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A private LAN of `n` node namespaces on one bridge. See the module documentation.
pub(crate) struct Lan {
    prefix: String,
    subnet: [u8; 2],
    bridge_ns: String,
    nodes: Vec<String>,
    /// The machine-wide lock on this prefix (see "Cleanup"); released after the namespaces
    /// are removed (fields drop after [`Drop::drop`]).
    lock: Option<std::fs::File>,
}

impl Lan {
    /// Builds the LAN, or returns `None` (printing why) when this machine cannot: not root, no
    /// iproute2, or no permission to create namespaces. Panics on a bad prefix (at most
    /// [`MAX_PREFIX`] bytes of lowercase letters, digits and `-`) and when a setup step fails.
    /// Takes about 5 ms per node.
    pub(crate) fn new(prefix: &str, n: usize) -> Option<Lan> {
        assert!(
            !prefix.is_empty()
                && prefix.len() <= MAX_PREFIX
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "LAN prefix {prefix:?}: 1 to {MAX_PREFIX} bytes of a-z, 0-9 and -"
        );
        assert!(
            (1..=MAX_NODES).contains(&n),
            "a LAN has 1 to {MAX_NODES} nodes"
        );
        if !available() {
            eprintln!("skipping LAN {prefix}: network namespaces are not available");
            return None;
        }
        let lock = Self::lock(prefix);
        Self::remove_leftovers(prefix);
        let h = fnv1a(prefix.as_bytes());
        let mut lan = Lan {
            prefix: prefix.to_string(),
            subnet: [100 + (h % 100) as u8, (h >> 8) as u8],
            bridge_ns: format!("{prefix}-br"),
            nodes: Vec::new(),
            lock: Some(lock),
        };
        // From here on, a panic drops `lan`, which removes what was created so far.
        must(&["netns", "add", &lan.bridge_ns]);
        let (br, b2) = (lan.bridge(), lan.bridge2());
        let mut bridge_script = vec!["link set lo up".to_string()];
        for b in [&br, &b2] {
            bridge_script.push(format!(
                "link add name {b} type bridge stp_state 0 mcast_snooping 0"
            ));
            bridge_script.push(format!("link set {b} addrgenmode none up"));
        }
        for i in 0..n {
            let ns = format!("{prefix}-n{i}");
            must(&["netns", "add", &ns]);
            lan.nodes.push(ns.clone());
            let v = lan.veth(i);
            bridge_script.push(format!(
                "link add name {v} type veth peer name eth0 netns {ns}"
            ));
            bridge_script.push(format!("link set {v} addrgenmode none master {br} up"));
        }
        batch(&lan.bridge_ns, &bridge_script);
        for i in 0..n {
            let ip = lan.ip_of(i);
            batch(
                &lan.nodes[i],
                &[
                    "link set lo up".into(),
                    format!("addr add {ip}/24 dev eth0"),
                    "link set eth0 multicast on up".into(),
                    "route add 224.0.0.0/4 dev eth0".into(),
                ],
            );
        }
        Some(lan)
    }

    /// Takes the lock on `prefix` (see "Cleanup"), waiting (and saying so) while another
    /// process holds it, at most [`LOCK_WAIT`]. Panics if this process holds it already (a
    /// second live LAN of one prefix would wait for itself).
    fn lock(prefix: &str) -> std::fs::File {
        use rustix::fs::{FlockOperation, flock};
        assert!(
            !HELD_PREFIXES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|p| p == prefix),
            "two live LANs with the prefix {prefix:?} in one process"
        );
        let dir = if std::path::Path::new("/run").is_dir() {
            PathBuf::from("/run")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("petal-lan-{prefix}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let since = Instant::now();
        let mut said = false;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    // Listed once held: a wait that ends in a panic leaves no entry behind.
                    HELD_PREFIXES
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(prefix.to_string());
                    return file;
                }
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    assert!(
                        since.elapsed() < LOCK_WAIT,
                        "LAN {prefix}: another process held {} for {LOCK_WAIT:?}",
                        path.display()
                    );
                    if !said {
                        eprintln!(
                            "LAN {prefix}: another process on this machine has one ({} \
                             locked); waiting",
                            path.display()
                        );
                        said = true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("locking {}: {e}", path.display()),
            }
        }
    }

    /// Leaves the namespaces behind as a crashed run does: they stay, and the lock goes (a
    /// dead process's lock is released). For testing the removal of leftovers.
    pub(crate) fn abandon(mut self) {
        self.lock = None;
        Self::unlisted(&self.prefix);
        std::mem::forget(self);
    }

    /// Takes `prefix` off this process's list of held LAN prefixes.
    fn unlisted(prefix: &str) {
        HELD_PREFIXES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != prefix);
    }

    /// Removes the namespaces of an earlier run with this prefix (`<prefix>-br`,
    /// `<prefix>-n<digits>`).
    fn remove_leftovers(prefix: &str) {
        let Ok(list) = ip(&["netns", "list"]) else {
            return;
        };
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let ours = name == format!("{prefix}-br")
                || name
                    .strip_prefix(&format!("{prefix}-n"))
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
            if ours {
                eprintln!("removing namespace {name} left by an earlier run");
                remove_ns(name);
            }
        }
    }

    /// The number of nodes.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The prefix this LAN was created with.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The address of node `i` (10.X.Y.`i + 1`).
    pub(crate) fn ip_of(&self, i: usize) -> Ipv4Addr {
        assert!(i < MAX_NODES);
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], i as u8 + 1)
    }

    /// The namespace of node `i`.
    pub(crate) fn ns(&self, i: usize) -> &str {
        &self.nodes[i]
    }

    /// The namespace holding the bridges.
    pub(crate) fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }

    fn bridge(&self) -> String {
        format!("{}-br", self.prefix)
    }

    fn bridge2(&self) -> String {
        format!("{}-b2", self.prefix)
    }

    /// The bridge-side end of node `i`'s veth pair.
    fn veth(&self, i: usize) -> String {
        format!("{}-v{i}", self.prefix)
    }

    /// A command that runs `program` inside node `i`'s namespace (add arguments, environment,
    /// stdio as usual). The namespace has its own network only: the file system, users and
    /// processes are the host's.
    pub(crate) fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(i)]).arg(program);
        cmd
    }

    /// Re-executes the current test binary in node `i`'s namespace, running only the test
    /// function `test_name` (exact name, output not captured) with `args` (which must not
    /// contain 0x1f). That function calls [`helper_args`] and does its work only when it gets
    /// `Some`, so it passes as a no-op in ordinary runs.
    pub(crate) fn helper(&self, i: usize, test_name: &str, args: &[&str]) -> Command {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = self.command(i, exe);
        cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(HELPER_ENV, test_name)
            .env(HELPER_ARGS_ENV, args.join("\x1f"));
        cmd
    }

    /// Cuts node `i` off the LAN (`up = false`: its bridge-side veth end goes down, so its
    /// `eth0` loses the carrier) or reconnects it.
    pub(crate) fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        must(&["-n", &self.bridge_ns, "link", "set", &self.veth(i), state]);
    }

    /// Partitions the LAN: the nodes of `group_a` move to a second bridge, the others stay.
    /// Both groups keep their carrier; neither hears the other until [`Lan::heal`]. Splitting
    /// again first heals.
    pub(crate) fn split(&self, group_a: &[usize]) {
        self.heal();
        let b2 = self.bridge2();
        let lines: Vec<String> = group_a
            .iter()
            .map(|&i| format!("link set {} master {b2}", self.veth(i)))
            .collect();
        batch(&self.bridge_ns, &lines);
    }

    /// Puts every node back on the main bridge.
    pub(crate) fn heal(&self) {
        let br = self.bridge();
        let lines: Vec<String> = (0..self.len())
            .map(|i| format!("link set {} master {br}", self.veth(i)))
            .collect();
        batch(&self.bridge_ns, &lines);
    }

    /// Starts capturing everything on node `i`'s `eth0` (`tcpdump -i eth0 -w <file> -U -s 0
    /// --immediate-mode`) and returns once tcpdump is capturing. Fails when tcpdump is not
    /// installed or does not start within 10 s.
    pub(crate) fn capture(&self, i: usize) -> Result<Capture, String> {
        self.capture_filter(i, "")
    }

    /// [`Lan::capture`] with a pcap filter expression (e.g. `"udp port 4711"`; empty: all).
    pub(crate) fn capture_filter(&self, i: usize, filter: &str) -> Result<Capture, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tcpdump = find_program("tcpdump")
            .ok_or("tcpdump is not installed (Debian: apt-get install tcpdump)")?;
        let path = std::env::temp_dir().join(format!(
            "petal-{}-n{i}-{}-{}.pcap",
            self.prefix,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = self.command(i, tcpdump);
        // -Z root: do not drop privileges to the tcpdump user, who may not write to the
        // temporary directory. --immediate-mode: hand every packet to tcpdump at once instead of
        // when a TPACKET_V3 block fills or times out (1 s), so `stop` loses nothing recent.
        cmd.args(["-i", "eth0", "-w"]).arg(&path).args([
            "-U",
            "-s",
            "0",
            "-n",
            "--immediate-mode",
            "-Z",
            "root",
        ]);
        if !filter.is_empty() {
            cmd.arg(filter);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running tcpdump: {e}"))?;
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut capture = Capture {
            child: Some(child),
            path,
            stderr: Some(reader),
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(()) => Ok(capture),
            Err(_) => {
                capture.kill();
                let log = capture.stderr.take().unwrap().join().unwrap_or_default();
                Err(format!("tcpdump did not start capturing: {}", log.trim()))
            }
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain([&self.bridge_ns]) {
            remove_ns(ns);
        }
        Self::unlisted(&self.prefix);
    }
}

/// A running capture (see [`Lan::capture`]). Dropping it without [`Capture::stop`] kills
/// tcpdump and deletes the file.
pub(crate) struct Capture {
    child: Option<Child>,
    path: PathBuf,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Capture {
    /// Stops the capture and returns the pcap file's bytes. Waits 100 ms first, so that packets
    /// sent just before are in it.
    pub(crate) fn stop(mut self) -> Vec<u8> {
        std::thread::sleep(Duration::from_millis(100));
        let mut child = self.child.take().unwrap();
        // `ip netns exec` execs tcpdump, so the child's pid is tcpdump's. SIGTERM lets it flush.
        signal(&[&child.id().to_string()], "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(reader) = self.stderr.take() {
            let _ = reader.join();
        }
        std::fs::read(&self.path)
            .unwrap_or_else(|e| panic!("reading capture {}: {e}", self.path.display()))
    }

    /// The capture file (deleted when the guard goes).
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// In a test function used as a [`Lan::helper`]: `Some(arguments)` when this process was
/// started as helper `test_name`, `None` in an ordinary test run (the function should return).
pub(crate) fn helper_args(test_name: &str) -> Option<Vec<String>> {
    if std::env::var(HELPER_ENV).ok()? != test_name {
        return None;
    }
    let args = std::env::var(HELPER_ARGS_ENV).unwrap_or_default();
    Some(if args.is_empty() {
        Vec::new()
    } else {
        args.split('\x1f').map(str::to_string).collect()
    })
}

/// Whether a pcap file (as [`Capture::stop`] returns) contains `needle` anywhere after its
/// 24-byte file header.
pub(crate) fn pcap_contains(pcap: &[u8], needle: &[u8]) -> bool {
    pcap.len() > 24 && pcap[24..].windows(needle.len()).any(|w| w == needle)
}

/// The packets of a pcap file (either byte order, micro- or nanosecond timestamps): each
/// packet's captured bytes, from the Ethernet header on. Panics on a malformed file.
pub(crate) fn pcap_packets(pcap: &[u8]) -> Vec<Vec<u8>> {
    assert!(pcap.len() >= 24, "pcap file shorter than its header");
    let magic = [pcap[0], pcap[1], pcap[2], pcap[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a pcap file (magic {magic:02x?})"),
    };
    let u32_at = |i: usize| {
        let b = [pcap[i], pcap[i + 1], pcap[i + 2], pcap[i + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32_at(at + 8) as usize;
        let start = at + 16;
        assert!(start + len <= pcap.len(), "truncated pcap record");
        packets.push(pcap[start..start + len].to_vec());
        at = start + len;
    }
    packets
}
