//! Helpers shared by the daemon's loopback tests: real `petald` processes on free loopback
//! ports, killed by a guard even when a test fails, and a few client-side utilities.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The daemon binary cargo built for these tests.
pub(crate) const PETALD: &str = env!("CARGO_BIN_EXE_petald");

/// The loopback address 127.0.0.`n`.
pub(crate) fn lo(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// Ports this test process already handed out (never handed out twice).
static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port that is free on `ip` right now (bound with port 0, then released). When `also_v6`,
/// the same port must be free on [::1] too (if the machine has IPv6 at all).
pub(crate) fn free_port(ip: Ipv4Addr, also_v6: bool) -> u16 {
    loop {
        let l = TcpListener::bind((ip, 0)).expect("binding a free port");
        let port = l.local_addr().unwrap().port();
        if also_v6 {
            match TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(_) => {} // no IPv6 here: the daemon serves on 127.0.0.1 only
            }
        }
        drop(l);
        if TAKEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// How to start one daemon.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    /// The address of its peer listener (127.0.0.N).
    pub peer_ip: Ipv4Addr,
    /// Peer addresses of running nodes to join through.
    pub seeds: Vec<SocketAddr>,
    /// Log filter (`--log`).
    pub log: String,
    /// The network key (`None`: [`TEST_NETWORK_KEY`]).
    pub key: Option<String>,
    /// Extra flags.
    pub extra: Vec<String>,
}

/// The network key of test daemons.
pub(crate) const TEST_NETWORK_KEY: &str =
    "7e57ed0000000000000000000000000000000000000000000000000000c0ffee";

impl Spec {
    /// A node of its own on 127.0.0.1, info logs.
    pub(crate) fn alone() -> Spec {
        Spec {
            peer_ip: lo(1),
            seeds: Vec::new(),
            log: "info".into(),
            key: None,
            extra: Vec::new(),
        }
    }
}

/// A running `petald`. Dropping it sends SIGTERM, then SIGKILL after 3 s; when the thread
/// is panicking (a failed test), the daemon's log is printed.
pub(crate) struct Daemon {
    child: Child,
    /// Its relay port (127.0.0.1 and [::1]).
    pub port: u16,
    /// Its peer address.
    pub peer: SocketAddr,
    log: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
}

impl Daemon {
    /// Starts a daemon and waits until it is ready (its "petald ready" log line, and its relay
    /// port accepts). Retries with other ports if the chosen ones were taken meanwhile.
    pub(crate) async fn start(spec: &Spec) -> Daemon {
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port(lo(1), true);
            let peer = SocketAddr::from((spec.peer_ip, free_port(spec.peer_ip, false)));
            match Daemon::try_start(spec, port, peer).await {
                Ok(d) => return d,
                Err(log) => last = log,
            }
        }
        panic!("petald did not start in 5 attempts; last log:\n{last}");
    }

    async fn try_start(spec: &Spec, port: u16, peer: SocketAddr) -> Result<Daemon, String> {
        let mut cmd = Command::new(PETALD);
        // Loopback tests never send discovery beacons (they would leave the host); the
        // namespace tests turn discovery on.
        cmd.arg("--dev")
            .env(
                "PETAL_NETWORK_KEY",
                spec.key.as_deref().unwrap_or(TEST_NETWORK_KEY),
            )
            .args(["--port", &port.to_string()])
            .args(["--listen", &peer.to_string()])
            .args(["--log", &spec.log])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for s in &spec.seeds {
            cmd.args(["--seed", &s.to_string()]);
        }
        if !spec.extra.iter().any(|a| a == "--discovery") {
            cmd.arg("--no-discovery");
        }
        // Many test daemons run at once: none takes the admin API's default port unless the
        // test configures the API (by flag or config file).
        if !spec.extra.iter().any(|a| a == "--admin" || a == "--config") {
            cmd.args(["--admin", "off"]);
        }
        cmd.args(spec.extra.iter().filter(|a| *a != "--discovery"));
        let mut child = cmd.spawn().expect("spawning petald");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                if log.len() > 4 << 20 {
                    log.clear();
                    log.push_str("[earlier lines dropped]\n");
                }
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut d = Daemon {
            child,
            port,
            peer,
            log,
            exited: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = d.child.try_wait().unwrap() {
                d.exited = Some(status);
                tokio::time::sleep(Duration::from_millis(50)).await; // let the log drain
                return Err(format!("exited with {status}:\n{}", d.log()));
            }
            let log = d.log();
            if let Some(ready) = log.lines().find(|l| l.contains("petald ready")) {
                // The relay may boot on [::1] alone when 127.0.0.1:port was taken meanwhile:
                // then another process may own that port, so try other ports.
                if !ready.contains(&format!("127.0.0.1:{port}")) {
                    return Err(format!("relay not on 127.0.0.1:{port}:\n{log}"));
                }
                if tokio::net::TcpStream::connect((lo(1), port)).await.is_ok() {
                    return Ok(d);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within 10 s:\n{}", d.log()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Everything the daemon logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`; false after `within`.
    pub(crate) async fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.log().contains(needle)
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (graceful shutdown).
    pub(crate) fn terminate(&self) {
        // The process may have exited already: kill's failure is then expected.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status()
            .expect("running kill");
    }

    /// Waits for the process to exit; `None` if it is still running after `within`.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.exited {
                return Some(s);
            }
            if let Some(s) = self.child.try_wait().unwrap() {
                self.exited = Some(s);
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.exited.is_none() && self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.is_none() && self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            loop {
                match self.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    _ => {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        break;
                    }
                }
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- petald (relay port {}, peer {}) log ----\n{}---- end of log ----",
                self.port,
                self.peer,
                self.log()
            );
        }
    }
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `within` (so that a
/// bug shows up as a failure, not a hang).
pub(crate) async fn within<F: Future>(within: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(within, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no outcome within {within:?}"),
    }
}

/// Median and maximum of `samples` (sorted in place).
pub(crate) fn median_max(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

/// The value at quantile `q` (0..=1) of sorted `samples`.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// A small deterministic random generator (SplitMix64) for seeded hostile inputs.
pub(crate) struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `n` random bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A deterministic pattern of `len` bytes that differs with `seed`.
pub(crate) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&r.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The relay address 127.0.0.1:`port` (raw TCP clients dial it).
pub(crate) fn relay_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(lo(1)), port)
}
