//! `petal-compare`: Petal (petald over relay v1, and embedded), NATS and Zenoh (peer mode and
//! through a router) side by side, the same workloads with the same payloads and concurrency
//! in one run, on one node (broker) and again across two (but Zenoh peers, which are nodes
//! already); prints two tables with ratios and writes `reports/compare/` (README.md with the
//! tables, results.json, compare.png, compare-two-nodes.png). Run by hand from the
//! repository's root (see README.md in this directory); never in CI.
//!
//! ```text
//! petal-compare [--duration-s 3] [--out reports/compare] [--petald target/release/petald]
//!               [--nats-server nats-server]
//! ```
//! Latency is measured twice: as everything else, and once more with this process and every
//! server it starts pinned to CPU 0 (it runs itself again under `taskset -c 0`), where a
//! cross-CPU wake-up (~110 us on this machine kind) does not swamp the figures.
//!
//! Every figure is measured `--rounds` times (3 by default; each round runs every workload of
//! every system once, the systems one after another) and reported as the median with the
//! range; each round also measures the machine's floor ([`baseline`]: raw loopback TCP).

mod baseline;
mod font;
mod report;
mod systems;
mod workloads;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result};
use systems::Sys;

/// One measured figure of one system.
#[derive(Clone, Debug)]
pub struct Figure {
    pub row: String,
    pub system: &'static str,
    pub value: f64,
    /// True when lower is better (latency).
    pub lower_better: bool,
    /// Events written off as lost (pub/sub and streams), summed over the rounds.
    pub lost: u64,
    /// The figure of each round (`value` is their median).
    pub values: Vec<f64>,
}

/// The system name of the machine's own floor ([`baseline`]), not a system compared.
pub const BASELINE: &str = "raw loopback TCP";

/// The median of `v` (the mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The rounds' figures merged: one per row and system (in first-seen order), its value the
/// median of the rounds', its losses summed.
fn merge(rounds: Vec<Vec<Figure>>) -> Vec<Figure> {
    let mut out: Vec<Figure> = Vec::new();
    for f in rounds.into_iter().flatten() {
        match out
            .iter_mut()
            .find(|g| g.row == f.row && g.system == f.system)
        {
            Some(g) => {
                g.values.extend(f.values);
                g.lost += f.lost;
            }
            None => out.push(f),
        }
    }
    for f in &mut out {
        f.value = median(&f.values);
    }
    out
}

struct Args {
    duration: Duration,
    out: String,
    petald: String,
    /// `--petald-b`: a second petald build, measured beside the first in every round (A/B).
    petald_b: Option<String>,
    /// `--petald-arg`: extra arguments of every petald started (e.g. `--busy-poll-us 50`).
    petald_args: Vec<String>,
    nats: String,
    pinned: bool,
    /// `--rounds`: how many times every figure is measured.
    rounds: usize,
    /// `--from`: a results.json to write the report from, measuring nothing.
    from: Option<String>,
    /// `--only`: run only the rows whose name contains one of these (all when empty).
    only: Vec<String>,
    /// For `--zenoh-router`: the router to link to (given before `--zenoh-router`).
    zenoh_connect: Option<String>,
}

const USAGE: &str = "\
petal-compare: petald, an embedded Petal node, NATS and Zenoh on the same workloads
(see benches/compare/README.md)

Usage: petal-compare [OPTIONS]

Options:
  --duration-s S       length of each measured phase, seconds (default 3)
  --out DIR            where the report goes (default reports/compare)
  --petald PATH        the petald binary (default target/release/petald)
  --petald-b PATH      a second petald build, run beside the first in every round as
                       \"petald B\" (one node and two nodes); the report adds B against A
  --petald-arg ARG     an extra argument of every petald started (repeatable), e.g.
                       --petald-arg --busy-poll-us --petald-arg 50
  --nats-server PATH   the nats-server binary (default nats-server)
  --only TEXT          run only the rows whose name contains TEXT (repeatable)
  --rounds N           measure every figure N times; report the median and the range
                       (default 3)
  --from FILE          write the report (in --out) from a results.json, measuring nothing
  -h, --help           this text
(--pinned-latency, --zenoh-router and --zenoh-connect are for the harness's own child
processes.)
";

fn args() -> Result<Args> {
    let mut a = Args {
        duration: Duration::from_secs(3),
        out: "reports/compare".into(),
        petald: "target/release/petald".into(),
        petald_b: None,
        petald_args: Vec::new(),
        nats: "nats-server".into(),
        pinned: false,
        rounds: 3,
        from: None,
        only: Vec::new(),
        zenoh_connect: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--duration-s" => a.duration = Duration::from_secs_f64(v()?.parse()?),
            "--out" => a.out = v()?,
            "--petald" => a.petald = v()?,
            "--petald-b" => a.petald_b = Some(v()?),
            "--petald-arg" => a.petald_args.push(v()?),
            "--nats-server" => a.nats = v()?,
            "--pinned-latency" => a.pinned = true,
            "--only" => a.only.push(v()?),
            "--from" => a.from = Some(v()?),
            "--rounds" => {
                a.rounds = v()?.parse()?;
                anyhow::ensure!(a.rounds > 0, "--rounds must be at least 1");
            }
            "--zenoh-connect" => a.zenoh_connect = Some(v()?),
            "--zenoh-router" => {
                let endpoint = v()?;
                let rt = tokio::runtime::Runtime::new()?;
                rt.block_on(systems::zenoh_router(&endpoint, a.zenoh_connect.as_deref()))?;
                std::process::exit(0);
            }
            "--help" | "-h" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other} (see --help)"),
        }
    }
    Ok(a)
}

impl Args {
    /// Whether the row named `row` is to be measured (`--only`).
    fn wants(&self, row: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| row.contains(o.as_str()))
    }
}

/// A loopback port free now and not handed out before by this process.
fn free_port() -> Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .map_err(|_| anyhow::anyhow!("port list poisoned"))?;
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

/// A server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_port(port: u16, what: &str) -> Result<()> {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("{what} did not start on port {port}")
}

/// Starts petald with `PETAL_NETWORK_KEY` = `key`, its relay on `port`, its peer links on
/// `listen`, seeded to `seed`.
async fn petald(
    a: &Args,
    bin: &str,
    key: &petal_node::NetworkKey,
    port: u16,
    listen: &str,
    seed: Option<&str>,
) -> Result<Server> {
    let mut cmd = Command::new(bin);
    cmd.args(["--dev", "--log", "warn", "--admin", "off", "--no-discovery"])
        .args(["--port", &port.to_string()])
        .args(["--listen", listen])
        .env("PETAL_NETWORK_KEY", key.to_hex())
        .stdout(Stdio::null());
    if let Some(seed) = seed {
        cmd.args(["--seed", seed]);
    }
    cmd.args(&a.petald_args);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {bin} (cargo build --release -p petald)"))?;
    let server = Server(child);
    wait_port(port, "petald").await?;
    Ok(server)
}

/// An embedded node on loopback (links with Noise under `key`), seeded to `seed`, joined.
async fn embedded(
    key: &petal_node::NetworkKey,
    seed: Option<std::net::SocketAddr>,
) -> Result<petal_node::NodeHandle> {
    let mut o = petal_node::Options::new(
        petal_node::Identity::generate()?,
        petal_node::LinkSecurity::Noise(key.clone()),
    );
    o.relay_addrs = Vec::new();
    o.seeds = seed.into_iter().collect();
    let node = petal_node::spawn(petal_node::TokioNet, o).await?;
    anyhow::ensure!(
        node.wait_ready(Duration::from_secs(10)).await,
        "an embedded node did not start"
    );
    Ok(node)
}

/// Starts `nats-server` on `port` with a cluster listener on `cluster`, routed to `route`.
async fn nats(a: &Args, port: u16, cluster: u16, route: Option<u16>) -> Result<Option<Server>> {
    let mut cmd = Command::new(&a.nats);
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["--cluster_name", "bench"])
        .args(["--cluster", &format!("nats://127.0.0.1:{cluster}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(r) = route {
        cmd.args(["--routes", &format!("nats://127.0.0.1:{r}")]);
    }
    match cmd.spawn() {
        Ok(child) => {
            let server = Server(child);
            wait_port(port, "nats-server").await?;
            Ok(Some(server))
        }
        Err(e) => {
            eprintln!(
                "a NATS system skipped: {} not runnable ({e}); apt-get install nats-server",
                a.nats
            );
            Ok(None)
        }
    }
}

/// Starts a Zenoh router (this binary again) on `endpoint` (port `port`), linked to `connect`.
async fn zenoh_router(port: u16, endpoint: &str, connect: Option<&str>) -> Result<Server> {
    let mut cmd = Command::new(std::env::current_exe()?);
    if let Some(c) = connect {
        cmd.args(["--zenoh-connect", c]);
    }
    let child = cmd
        .args(["--zenoh-router", endpoint])
        .stdout(Stdio::null())
        .spawn()?;
    let server = Server(child);
    wait_port(port, "the Zenoh router").await?;
    Ok(server)
}

/// Starts every system, in its one-node form and (but Zenoh peers, which are nodes already)
/// in its two-node form: two petald linked by Noise, two embedded nodes linked by Noise, two
/// nats-servers in a cluster, two Zenoh routers linked to each other.
async fn start(a: &Args) -> Result<(Vec<Server>, Vec<Sys>, Vec<petal_node::NodeHandle>)> {
    let mut servers = Vec::new();
    let mut one = Vec::new();
    let mut two = Vec::new();
    let key = petal_node::NetworkKey::random()?;

    // The one-node rows get nodes of their own: a Petal node in a ring of two would send half
    // the groups' traffic through the other one (a group's root is where its key lands).
    // In an A/B run the second build runs on nodes of its own, right after the first in
    // every round.
    let builds =
        std::iter::once((a.petald.as_str(), false)).chain(a.petald_b.as_deref().map(|p| (p, true)));
    for (bin, b) in builds {
        let port_one = free_port()?;
        let listen_one = format!("127.0.0.1:{}", free_port()?);
        servers.push(petald(a, bin, &key, port_one, &listen_one, None).await?);
        one.push(Sys::Relay {
            front: port_one,
            back: port_one,
            b,
        });
        let (port_a, port_b) = (free_port()?, free_port()?);
        let listen_a = format!("127.0.0.1:{}", free_port()?);
        servers.push(petald(a, bin, &key, port_a, &listen_a, None).await?);
        let listen_b = format!("127.0.0.1:{}", free_port()?);
        servers.push(petald(a, bin, &key, port_b, &listen_b, Some(&listen_a)).await?);
        two.push(Sys::Relay {
            front: port_a,
            back: port_b,
            b,
        });
    }

    let node_one = embedded(&key, None).await?;
    one.push(Sys::Embedded {
        front: node_one.local_connector(),
        back: node_one.local_connector(),
        two: false,
    });
    let node_a = embedded(&key, None).await?;
    let node_b = embedded(&key, Some(node_a.info().addr)).await?;
    two.push(Sys::Embedded {
        front: node_a.local_connector(),
        back: node_b.local_connector(),
        two: true,
    });

    let (nats_a, nats_b) = (free_port()?, free_port()?);
    let (cluster_a, cluster_b) = (free_port()?, free_port()?);
    if let Some(s) = nats(a, nats_a, cluster_a, None).await? {
        servers.push(s);
        let url_a = format!("nats://127.0.0.1:{nats_a}");
        one.push(Sys::Nats {
            front: url_a.clone(),
            back: url_a.clone(),
        });
        if let Some(s) = nats(a, nats_b, cluster_b, Some(cluster_a)).await? {
            servers.push(s);
            two.push(Sys::Nats {
                front: url_a,
                back: format!("nats://127.0.0.1:{nats_b}"),
            });
        }
    }

    one.push(Sys::ZenohPeer {
        next_port: Arc::new(AtomicU64::from(u64::from(free_port()?) + 1000)),
    });
    let (zport_a, zport_b) = (free_port()?, free_port()?);
    let (end_a, end_b) = (
        format!("tcp/127.0.0.1:{zport_a}"),
        format!("tcp/127.0.0.1:{zport_b}"),
    );
    servers.push(zenoh_router(zport_a, &end_a, None).await?);
    servers.push(zenoh_router(zport_b, &end_b, Some(&end_a)).await?);
    one.push(Sys::ZenohRouter {
        front: end_a.clone(),
        back: end_a.clone(),
    });
    two.push(Sys::ZenohRouter {
        front: end_a,
        back: end_b,
    });
    one.extend(two);
    Ok((servers, one, vec![node_one, node_a, node_b]))
}

fn fig(row: &str, sys: &Sys, value: f64, lower_better: bool, lost: u64) -> Figure {
    figure(row, sys.name(), value, lower_better, lost)
}

fn figure(row: &str, system: &'static str, value: f64, lower_better: bool, lost: u64) -> Figure {
    Figure {
        row: row.into(),
        system,
        value,
        lower_better,
        lost,
        values: vec![value],
    }
}

/// The machine's floor in this round ([`baseline`]): the round trip (tagged ` (pinned)` in the
/// pinned run) and, unpinned, the stream. Measured whatever `--only` asks for: every figure is
/// read against it.
async fn baseline_rows(d: Duration, tag: &str) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    eprintln!("{BASELINE}: round trip{tag}");
    let (p50, p99) = tokio::task::spawn_blocking(move || baseline::round_trip(d)).await??;
    out.push(figure(
        &format!("round trip p50 us{tag}"),
        BASELINE,
        p50,
        true,
        0,
    ));
    out.push(figure(
        &format!("round trip p99 us{tag}"),
        BASELINE,
        p99,
        true,
        0,
    ));
    if tag.is_empty() {
        eprintln!("{BASELINE}: stream of 64 KiB writes");
        let mbs = tokio::task::spawn_blocking(move || baseline::stream(64 << 10, d)).await??;
        out.push(figure(
            "stream, 64 KiB writes, MB/s",
            BASELINE,
            mbs,
            false,
            0,
        ));
    }
    Ok(out)
}

async fn latency_rows(systems: &[Sys], d: Duration, tag: &str) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for sys in systems {
        eprintln!("{}: request latency{tag}", sys.name());
        let (p50, p99) = workloads::latency(sys, d).await?;
        out.push(fig(&format!("request p50 us{tag}"), sys, p50, true, 0));
        out.push(fig(&format!("request p99 us{tag}"), sys, p99, true, 0));
    }
    Ok(out)
}

async fn run_all(a: &Args, systems: &[Sys]) -> Result<Vec<Figure>> {
    let d = a.duration;
    let mut out = if a.wants("request p50 us") || a.wants("request p99 us") {
        latency_rows(systems, d, "").await?
    } else {
        Vec::new()
    };
    for sys in systems {
        for inflight in [64, 256] {
            if !a.wants(&format!("requests/s, {inflight} in flight")) {
                continue;
            }
            eprintln!("{}: requests, {inflight} in flight", sys.name());
            let r = workloads::throughput(sys, inflight, d).await?;
            out.push(fig(
                &format!("requests/s, {inflight} in flight"),
                sys,
                r,
                false,
                0,
            ));
        }
        for (size, label) in [(8, "8 B"), (1024, "1 KiB")] {
            for subs in [1, 10] {
                let row = format!(
                    "events delivered/s, {label}, {subs} subscriber{}",
                    if subs > 1 { "s" } else { "" }
                );
                if !a.wants(&row) {
                    continue;
                }
                eprintln!("{}: pub/sub {label} to {subs}", sys.name());
                let f = workloads::fanout(sys, subs, size, d).await?;
                out.push(fig(&row, sys, f.per_s, false, f.lost));
            }
        }
        if !a.wants("stream, 64 KiB messages, MB/s") {
            continue;
        }
        eprintln!("{}: stream of 64 KiB messages", sys.name());
        let f = workloads::stream(sys, 64 << 10, d).await?;
        out.push(fig(
            "stream, 64 KiB messages, MB/s",
            sys,
            f.bytes_per_s / 1e6,
            false,
            f.lost,
        ));
    }
    Ok(out)
}

/// The harness allocates with mimalloc, as petald and the simulator do: the embedded node
/// and every system's client library in this process are measured with it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let a = args()?;
    if let Some(from) = &a.from {
        let rows =
            report::from_json(&std::fs::read(from).with_context(|| format!("reading {from}"))?)?;
        let rounds = rows.iter().map(|f| f.values.len()).max().unwrap_or(1);
        report::write(&a.out, &rows, a.duration, rounds)?;
        print!("{}\n{}", report::table(&rows), report::verdicts(&rows));
        return Ok(());
    }
    // Pinned, one worker thread serves every end (workers sharing one CPU would only add
    // switches between them; Zenoh refuses a current-thread runtime); unpinned, one per CPU.
    let rt = if a.pinned {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Runtime::new()?
    };
    // The harness runs on the runtime's workers, as an application's tasks would, not on this
    // thread beside them.
    rt.block_on(async move { tokio::spawn(run(a)).await? })
}

/// The whole run: start the systems, measure, write the report.
async fn run(a: Args) -> Result<()> {
    let (_servers, systems, nodes) = start(&a).await?;
    let mut rounds = Vec::new();
    for round in 1..=a.rounds {
        eprintln!("round {round} of {}", a.rounds);
        let tag = if a.pinned { " (pinned)" } else { "" };
        let mut rows = baseline_rows(a.duration, tag).await?;
        if a.pinned {
            rows.extend(latency_rows(&systems, a.duration, tag).await?);
        } else {
            rows.extend(run_all(&a, &systems).await?);
        }
        rounds.push(rows);
    }
    let mut rows = merge(rounds);
    if a.pinned {
        println!("{}", report::to_json(&rows));
        return Ok(());
    }
    rows.retain(|f| f.system == BASELINE || a.wants(&f.row));
    drop(nodes);
    if a.wants("request p50 us (pinned)") || a.wants("request p99 us (pinned)") {
        rows.extend(pinned_rows(&a)?);
    }
    report::write(&a.out, &rows, a.duration, a.rounds)?;
    print!("{}\n{}", report::table(&rows), report::verdicts(&rows));
    Ok(())
}

/// The latency rows again, this binary run once more with everything pinned to CPU 0.
fn pinned_rows(a: &Args) -> Result<Vec<Figure>> {
    eprintln!("latency again, everything pinned to CPU 0 (taskset -c 0)");
    let pinned = Command::new("taskset")
        .args(["-c", "0"])
        .arg(std::env::current_exe()?)
        .args([
            "--pinned-latency",
            "--petald",
            &a.petald,
            "--nats-server",
            &a.nats,
        ])
        .args(["--duration-s", &a.duration.as_secs_f64().to_string()])
        .args(["--rounds", &a.rounds.to_string()])
        .args(a.petald_b.iter().flat_map(|p| ["--petald-b", p.as_str()]))
        .args(a.only.iter().flat_map(|o| ["--only", o.as_str()]))
        .args(
            a.petald_args
                .iter()
                .flat_map(|x| ["--petald-arg", x.as_str()]),
        )
        .stderr(Stdio::inherit())
        .output()
        .context("running the pinned latency phase (taskset)")?;
    anyhow::ensure!(pinned.status.success(), "the pinned latency phase failed");
    let mut rows = report::from_json(&pinned.stdout)?;
    rows.retain(|f| f.system == BASELINE || a.wants(&f.row));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(row: &str, system: &'static str, value: f64, lost: u64) -> Figure {
        figure(row, system, value, false, lost)
    }

    /// A figure measured in several rounds (`merge` takes the median).
    fn rounds(row: &str, system: &'static str, lower: bool, values: &[f64]) -> Figure {
        let mut g = figure(row, system, 0.0, lower, 0);
        g.values = values.to_vec();
        g
    }

    #[test]
    fn rounds_merge_into_medians_with_losses_summed() {
        let (a, b) = ("petald (relay v1)", "NATS");
        // Medians 2 and 20, where the means are 4 and 30 and the last rounds 9 and 60.
        let rounds = vec![
            vec![f("x", a, 1.0, 1), f("x", b, 10.0, 0)],
            vec![f("x", b, 20.0, 0), f("x", a, 2.0, 0)],
            vec![f("x", a, 9.0, 4), f("y", a, 7.0, 0), f("x", b, 60.0, 0)],
        ];
        let m = merge(rounds);
        let got: Vec<_> = m
            .iter()
            .map(|g| (g.row.as_str(), g.system, g.value, g.lost, g.values.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("x", a, 2.0, 5, vec![1.0, 2.0, 9.0]),
                ("x", b, 20.0, 0, vec![10.0, 20.0, 60.0]),
                ("y", a, 7.0, 0, vec![7.0])
            ]
        );
        assert_eq!(median(&[9.0, 1.0, 4.0, 2.0]), 3.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn verdicts_judge_medians_against_the_targets() {
        let lat = |system, values: &[f64]| rounds("request p50 us (pinned)", system, true, values);
        let rows = merge(vec![vec![
            // Median 30 (a mean of 20.3 would pass the target).
            lat("petald (relay v1)", &[1.0, 30.0, 30.0]),
            // Exactly on the bound: met.
            lat("Petal embedded", &[25.0]),
            lat("NATS", &[20.0]),
            f("requests/s, 64 in flight", "petald (relay v1)", 300e3, 0),
            f("requests/s, 256 in flight", "petald (relay v1)", 450e3, 0),
            f("requests/s, 256 in flight", "NATS", 500e3, 0),
            // The better row comes first here: judged all the same.
            f("requests/s, 64 in flight", "Petal embedded", 410e3, 0),
            f("requests/s, 256 in flight", "Petal embedded", 390e3, 0),
        ]]);
        let v = report::verdicts(&rows);
        let has = |line: &str| assert!(v.contains(line), "{line}\nnot in\n{v}");
        has(
            "| local request p50 <= 25 us, pinned | petald (relay v1) | 30.0 (request p50 us (pinned)) | **missed** |",
        );
        has(
            "| local request p50 <= 25 us, pinned | Petal embedded | 25.0 (request p50 us (pinned)) | met |",
        );
        // The best of 64 and 256 in flight is judged, and only it.
        has(
            "| local requests/s >= 400 k | petald (relay v1) | 450 k (requests/s, 256 in flight) | met |",
        );
        has(
            "| local requests/s >= 400 k | Petal embedded | 410 k (requests/s, 64 in flight) | met |",
        );
        let table = &v[..v.find("Rows where").unwrap_or(v.len())];
        assert!(!table.contains("300 k") && !table.contains("390 k"), "{v}");
        // Below NATS on every row it shares with it; no other system has the 64 row.
        has("- petald (relay v1), request p50 us (pinned): 30.0 against 20.0 (NATS), 0.667x");
        has("- Petal embedded, request p50 us (pinned): 25.0 against 20.0 (NATS), 0.800x");
        has("- petald (relay v1), requests/s, 256 in flight: 450 k against 500 k (NATS), 0.900x");
        has("- Petal embedded, requests/s, 256 in flight: 390 k against 500 k (NATS), 0.780x");
        assert!(!v.contains("64 in flight: "), "{v}");
    }

    #[test]
    fn ab_ratios_pair_the_rounds() {
        let with = rounds;
        let rows = merge(vec![vec![
            // B twice as fast, then as fast, then half as fast: ratios 2, 1, 0.5 (lower is
            // better, so A's time over B's).
            with(
                "request p50 us (pinned)",
                "petald (relay v1)",
                true,
                &[20.0, 20.0, 20.0],
            ),
            with(
                "request p50 us (pinned)",
                "petald B (relay v1)",
                true,
                &[10.0, 20.0, 40.0],
            ),
            // Higher is better: B's over A's, paired by round (not by sorted value).
            with(
                "requests/s, 256 in flight",
                "petald, 2 nodes",
                false,
                &[100.0, 200.0, 400.0],
            ),
            with(
                "requests/s, 256 in flight",
                "petald B, 2 nodes",
                false,
                &[110.0, 180.0, 440.0],
            ),
        ]]);
        let t = report::ab_table(&rows);
        let has = |line: &str| assert!(t.contains(line), "{line}\nnot in\n{t}");
        has(
            "| petald B (relay v1) against petald (relay v1) | request p50 us (pinned) | 1.000x (0.500-2.000) |",
        );
        has(
            "| petald B, 2 nodes against petald, 2 nodes | requests/s, 256 in flight | 1.100x (0.900-1.100) |",
        );
        assert!(report::ab_table(&rows[..1]).is_empty());
    }
}
