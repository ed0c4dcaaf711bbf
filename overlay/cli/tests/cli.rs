//! End-to-end tests of the `petal` binary against a real `petald` process.
//!
//! Each test starts its own `petald` on free ports chosen by the OS (so tests run in parallel,
//! and next to other petald processes), and every process it starts is killed when the test
//! ends, passing or failing ([`Procs`]).
//!
//! Finding `petald`: `$PETALD` when set; otherwise the test runs `cargo build -p petald` with
//! the profile of this test binary (a no-op when it is up to date, and it never runs a stale
//! binary) and uses `petald` next to `petal` in the same target directory. Cargo gives tests
//! only the path of their own package's binaries (`CARGO_BIN_EXE_petal`), and binaries of
//! other packages cannot be dev-dependencies on stable Cargo.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The `petal` binary under test.
const PETAL: &str = env!("CARGO_BIN_EXE_petal");

/// The `petald` binary: `$PETALD`, or built next to `petal` (once per test process).
fn petald() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("PETALD") {
            return PathBuf::from(path);
        }
        let dir = Path::new(PETAL).parent().expect("petal has a directory");
        let release = dir.file_name().is_some_and(|name| name == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "petald"]);
        if release {
            build.arg("--release");
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build -p petald");
        assert!(status.success(), "cargo build -p petald failed");
        let path = dir.join(format!("petald{}", std::env::consts::EXE_SUFFIX));
        assert!(
            path.exists(),
            "petald not found at {} (set PETALD to its path)",
            path.display()
        );
        path
    })
    .clone()
}

/// Processes to kill when the test ends, however it ends.
#[derive(Default)]
struct Procs(Mutex<Vec<Child>>);

impl Procs {
    fn keep(&self, child: Child) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(child);
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        let children = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        for child in children.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port nothing listens on now (chosen by the OS).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a petald and waits until its relay port accepts connections; returns the port.
fn start_node(procs: &Procs) -> u16 {
    start_node_with(procs, "off")
}

/// Starts a petald with its admin API on a free port; returns the relay and admin ports.
fn start_node_with_admin(procs: &Procs) -> (u16, u16) {
    let admin = free_port();
    let port = start_node_with(procs, &format!("127.0.0.1:{admin}"));
    (port, admin)
}

/// Starts a petald with `--admin admin` and waits until its relay port accepts connections;
/// returns the port.
fn start_node_with(procs: &Procs, admin: &str) -> u16 {
    let (port, peer_port) = (free_port(), free_port());
    let child = Command::new(petald())
        .args(["--port", &port.to_string()])
        .args(["--listen", &format!("127.0.0.1:{peer_port}")])
        .args(["--admin", admin])
        .args(["--dev", "--no-discovery", "--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting petald");
    procs.keep(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "petald did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    port
}

/// Runs petal to completion with `stdin` as input.
fn petal(port: u16, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(PETAL)
        .args(["--port", &port.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting petal");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("writing stdin");
    drop(input);
    child.wait_with_output().expect("petal output")
}

/// Starts a long-running petal and waits until it prints a line containing `ready` on stderr.
/// Returns its stdout.
fn start_petal(procs: &Procs, port: u16, args: &[&str], ready: &str) -> std::process::ChildStdout {
    let mut child = Command::new(PETAL)
        .args(["--port", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting petal");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    procs.keep(child);
    let (tx, rx) = mpsc::channel();
    let label = args.join(" ");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[petal {label}] {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(ready) => return stdout,
            Ok(_) => {}
            Err(_) => panic!("petal {args:?} did not print {ready:?} on stderr"),
        }
    }
}

/// Runs a request, retrying while it times out (a new member may take a moment to be known).
fn request_until_answered(port: u16, cluster: &str, message: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = petal(port, &["request", cluster, message], b"");
        if out.status.code() != Some(3) || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn request_reply_fault_and_timeout_exit_codes() {
    let procs = Procs::default();
    let port = start_node(&procs);
    start_petal(&procs, port, &["serve", "echo", "--echo"], "serving");
    start_petal(
        &procs,
        port,
        &["serve", "bad", "--exec", "echo boom >&2; exit 1"],
        "serving",
    );

    let out = request_until_answered(port, "echo", "hello petal");
    assert!(out.status.success(), "echo request: {out:?}");
    assert_eq!(text(&out.stdout), "hello petal");

    // The message can come from stdin too.
    let out = petal(port, &["request", "echo"], b"from stdin\n");
    assert!(out.status.success(), "stdin request: {out:?}");
    assert_eq!(text(&out.stdout), "from stdin\n");

    let out = request_until_answered(port, "bad", "x");
    assert_eq!(out.status.code(), Some(2), "fault: {out:?}");
    assert!(text(&out.stderr).contains("boom"), "fault text: {out:?}");

    let out = petal(
        port,
        &["request", "nobody", "x", "--timeout-ms", "200"],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "timeout: {out:?}");
}

#[test]
fn publish_reaches_subscriber_and_tunnel_echoes() {
    let procs = Procs::default();
    let port = start_node(&procs);
    let mut events = start_petal(
        &procs,
        port,
        &["subscribe", "news", "--count", "1"],
        "subscribed",
    );
    // Subscribing is fire and forget: publish until the subscriber has its event and exits.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = events.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let printed = loop {
        let out = petal(port, &["publish", "news", "it happened"], b"");
        assert!(out.status.success(), "publish: {out:?}");
        if let Ok(printed) = rx.recv_timeout(Duration::from_millis(200)) {
            break printed;
        }
        assert!(Instant::now() < deadline, "no event reached the subscriber");
    };
    assert_eq!(printed, "news: it happened\n");

    start_petal(&procs, port, &["serve", "pipe", "--echo"], "serving");
    let deadline = Instant::now() + Duration::from_secs(5);
    let out = loop {
        let out = petal(
            port,
            &["tunnel", "pipe", "--linger-ms", "300"],
            b"through the tunnel\n",
        );
        if out.status.code() != Some(3) || Instant::now() > deadline {
            break out;
        }
    };
    assert!(out.status.success(), "tunnel: {out:?}");
    assert_eq!(text(&out.stdout), "through the tunnel\n");
}

#[test]
fn bench_request_prints_json_with_positive_throughput() {
    let procs = Procs::default();
    let port = start_node(&procs);
    let out = petal(
        port,
        &["bench", "request", "--duration-s", "1", "--json"],
        b"",
    );
    assert!(out.status.success(), "bench: {out:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("bench --json prints one JSON object");
    let request = &report["request"];
    let throughput = request["throughput_requests_per_s"]
        .as_f64()
        .expect("throughput_requests_per_s");
    assert!(throughput > 0.0, "throughput {throughput}: {report}");
    let p50 = request["latency"]["p50_us"].as_f64().expect("p50_us");
    assert!(p50 > 0.0, "p50 {p50}: {report}");
    assert_eq!(report["nodes"], 1);
}

/// `petal bench all --embedded`: no petald anywhere (the port is closed); every phase runs
/// against a node in the bench's own process, nothing lost.
#[test]
fn bench_embedded_runs_every_phase_without_a_daemon() {
    let out = petal(
        free_port(),
        &[
            "bench",
            "all",
            "--embedded",
            "--duration-s",
            "0.5",
            "--concurrency",
            "1,16",
            "--json",
        ],
        b"",
    );
    assert!(out.status.success(), "bench: {out:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("bench --json prints one JSON object");
    assert_eq!(report["embedded"], true, "{report}");
    let request = &report["request"];
    assert!(
        request["throughput_requests_per_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    for sweep in request["sweep"].as_array().unwrap() {
        assert_eq!(sweep["timeouts"], 0, "{report}");
        assert_eq!(sweep["faults"], 0, "{report}");
    }
    for kind in ["broadcast", "publish"] {
        assert!(
            report[kind]["delivered_per_s"].as_f64().unwrap() > 0.0,
            "{report}"
        );
        assert_eq!(report[kind]["lost"], 0, "{kind}: {report}");
    }
    assert!(
        report["tunnel"]["mb_per_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

/// `petal bench gateway` against a petald with `--gateway`: every HTTP request answered (no
/// faults, no timeouts), events counted on both subscribers.
#[test]
fn bench_gateway_measures_http_and_websocket_against_relay() {
    let procs = Procs::default();
    let (port, peer_port, gw) = (free_port(), free_port(), free_port());
    let child = Command::new(petald())
        .args(["--port", &port.to_string()])
        .args(["--listen", &format!("127.0.0.1:{peer_port}")])
        .args(["--admin", "off", "--gateway", &format!("127.0.0.1:{gw}")])
        .args(["--dev", "--no-discovery", "--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting petald");
    procs.keep(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", gw)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the gateway did not listen on {gw}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let gateway = format!("127.0.0.1:{gw}");
    let out = petal(
        port,
        &[
            "bench",
            "gateway",
            "--gateway",
            &gateway,
            "--duration-s",
            "0.5",
            "--concurrency",
            "1,8",
        ],
        b"",
    );
    assert!(out.status.success(), "bench: {out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for kind in ["http_requests", "relay_requests"] {
        for p in r[kind].as_array().expect("points") {
            assert!(p["requests_per_s"].as_f64().unwrap() > 0.0, "{kind}: {r}");
            assert_eq!(
                (p["faults"].as_u64(), p["timeouts"].as_u64()),
                (Some(0), Some(0)),
                "{kind}: {r}"
            );
        }
    }
    for kind in ["websocket_events_per_s", "relay_events_per_s"] {
        assert!(r[kind].as_f64().unwrap() > 0.0, "{kind}: {r}");
    }
}

/// `petal status`, `clusters`, `sessions`, `peers`, `routes`, `tunnels` read the node's admin
/// API: tables for people, JSON with `--json`, and a clear error (exit code 1) where no API
/// answers.
#[test]
fn status_and_tables_come_from_the_admin_api() {
    let procs = Procs::default();
    let (port, admin) = start_node_with_admin(&procs);
    let at = format!("127.0.0.1:{admin}");
    start_petal(&procs, port, &["serve", "demo", "--echo"], "serving");
    let run = |args: &[&str]| -> Output {
        let mut all = args.to_vec();
        all.extend(["--admin", &at]);
        petal(port, &all, b"")
    };
    let status = run(&["status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let out = text(&status.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("state") && l.ends_with("ready")),
        "{out}"
    );
    assert!(out.contains(&format!("127.0.0.1:{port}")), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("sessions") && l.ends_with(" 1")),
        "{out}"
    );

    let json = run(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(doc["ready"], true);
    let id = doc["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);

    // The service's cluster: this node, alone, is its tree's root with one member.
    let clusters = text(&run(&["clusters"]).stdout);
    let row = clusters
        .lines()
        .find(|l| l.starts_with("demo"))
        .unwrap_or_else(|| panic!("{clusters}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "root", "{clusters}");
    let sessions = text(&run(&["sessions"]).stdout);
    assert!(sessions.lines().any(|l| l.ends_with("demo")), "{sessions}");
    assert_eq!(text(&run(&["peers", "--json"]).stdout).trim(), "[]");
    let routes = run(&["routes", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&routes.stdout).expect("JSON");
    assert_eq!(doc["leafset"]["id"], id.as_str());
    assert!(run(&["tunnels"]).status.success());
    assert!(run(&["topics"]).status.success());

    // No API there: exit code 1 and what to do.
    let closed = free_port();
    let none = petal(
        port,
        &["status", "--admin", &format!("127.0.0.1:{closed}")],
        b"",
    );
    assert_eq!(none.status.code(), Some(1));
    let err = text(&none.stderr);
    assert!(
        err.contains("no admin API at") && err.contains("--admin"),
        "{err}"
    );
}

#[test]
fn kv_put_get_del_and_their_exit_codes() {
    let procs = Procs::default();
    let port = start_node(&procs);
    let out = petal(port, &["kv", "get", "color"], b"");
    assert_eq!(out.status.code(), Some(4), "not found: {out:?}");
    // A watcher of "color" sees the writes below (the first put, the conditional one, the
    // delete: 3 changes), in order.
    let watched = start_petal(
        &procs,
        port,
        &["kv", "watch", "color", "--count", "3"],
        "watching",
    );

    let out = petal(port, &["kv", "put", "color", "blue"], b"");
    assert!(out.status.success(), "put: {out:?}");
    let v1 = text(&out.stdout).trim().to_owned();
    let out = petal(port, &["kv", "get", "color", "--meta"], b"");
    assert!(out.status.success(), "get: {out:?}");
    assert_eq!(text(&out.stdout), "blue");
    assert!(
        text(&out.stderr).contains(&format!("version {v1}")),
        "{out:?}"
    );

    // Compare-and-set: from stdin, on the printed version; a stale one conflicts (exit 5).
    let out = petal(port, &["kv", "put", "color", "--if-version", &v1], b"red");
    assert!(out.status.success(), "cas: {out:?}");
    let v2 = text(&out.stdout).trim().to_owned();
    assert_ne!(v1, v2);
    let out = petal(
        port,
        &["kv", "put", "color", "green", "--if-version", &v1],
        b"",
    );
    assert_eq!(out.status.code(), Some(5), "stale cas: {out:?}");
    assert!(text(&out.stderr).contains(&v2), "{out:?}");
    let out = petal(port, &["kv", "put", "color", "green", "--if-absent"], b"");
    assert_eq!(out.status.code(), Some(5), "exists: {out:?}");

    // A time to live.
    let out = petal(port, &["kv", "put", "token", "t", "--ttl", "300ms"], b"");
    assert!(out.status.success(), "ttl put: {out:?}");
    std::thread::sleep(Duration::from_millis(400));
    let out = petal(port, &["kv", "get", "token"], b"");
    assert_eq!(out.status.code(), Some(4), "expired: {out:?}");

    let out = petal(port, &["kv", "del", "color"], b"");
    assert!(out.status.success(), "del: {out:?}");
    let out = petal(port, &["kv", "get", "color"], b"");
    assert_eq!(out.status.code(), Some(4), "deleted: {out:?}");
    let mut lines = String::new();
    BufReader::new(watched)
        .read_to_string(&mut lines)
        .expect("the watcher's output");
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], format!("put {v1} 0 blue"));
    assert_eq!(lines[1], format!("put {v2} 0 red"));
    assert!(lines[2].starts_with("del "), "{lines:?}");
    let out = petal(port, &["kv", "put", "color", "x", "--ttl", "5d"], b"");
    assert_eq!(
        out.status.code(),
        Some(2),
        "bad flag (clap's usage error): {out:?}"
    );
}

#[test]
fn id_register_send_who_and_unknown() {
    let procs = Procs::default();
    let port = start_node(&procs);
    let out = petal(port, &["id", "send", "bob", "x"], b"");
    assert_eq!(out.status.code(), Some(4), "unknown: {out:?}");
    let messages = start_petal(
        &procs,
        port,
        &["id", "register", "alice", "--count", "2"],
        "registered alice",
    );
    let out = petal(port, &["id", "who", "alice"], b"");
    assert!(out.status.success(), "who: {out:?}");
    assert_eq!(text(&out.stdout).lines().count(), 1, "{out:?}");
    for m in ["hello", "again"] {
        let out = petal(port, &["id", "send", "alice", m], b"");
        assert!(out.status.success(), "send: {out:?}");
        assert_eq!(text(&out.stdout), "1\n");
    }
    let mut got = String::new();
    BufReader::new(messages)
        .read_to_string(&mut got)
        .expect("the holder's output");
    assert_eq!(got, "hello\nagain\n");
    // The holder exited: its node lets go of the identity.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = petal(port, &["id", "who", "alice"], b"");
        if out.status.code() == Some(4) {
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
