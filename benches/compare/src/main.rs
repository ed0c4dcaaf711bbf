//! `petal-compare`: Petal (petald over relay v1, and embedded), NATS and Zenoh (peer mode and
//! through a router) side by side, the same workloads with the same payloads and concurrency
//! in one run; prints a table with ratios and writes `reports/compare/` (README.md with the
//! table, results.json, compare.png). Run by hand from the repository's root (see README.md in
//! this directory); never in CI.
//!
//! ```text
//! petal-compare [--duration-s 3] [--out reports/compare] [--petald target/release/petald]
//!               [--nats-server nats-server]
//! ```
//! Latency is measured twice: as everything else, and once more with this process and every
//! server it starts pinned to CPU 0 (it runs itself again under `taskset -c 0`), where a
//! cross-CPU wake-up (~110 us on this machine kind) does not swamp the figures.

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
    /// Anything the reader must know (losses).
    pub note: String,
}

struct Args {
    duration: Duration,
    out: String,
    petald: String,
    nats: String,
    pinned: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        duration: Duration::from_secs(3),
        out: "reports/compare".into(),
        petald: "target/release/petald".into(),
        nats: "nats-server".into(),
        pinned: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--duration-s" => a.duration = Duration::from_secs_f64(v()?.parse()?),
            "--out" => a.out = v()?,
            "--petald" => a.petald = v()?,
            "--nats-server" => a.nats = v()?,
            "--pinned-latency" => a.pinned = true,
            "--zenoh-router" => {
                let endpoint = v()?;
                let rt = tokio::runtime::Runtime::new()?;
                rt.block_on(systems::zenoh_router(&endpoint))?;
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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

/// Starts every system: petald, an embedded node, nats-server (if installed), a Zenoh router.
async fn start(a: &Args) -> Result<(Vec<Server>, Vec<Sys>, Option<petal_node::NodeHandle>)> {
    let mut servers = Vec::new();
    let mut systems = Vec::new();
    let port = free_port()?;
    let key = petal_node::NetworkKey::random()?;
    let child = Command::new(&a.petald)
        .args(["--dev", "--log", "warn", "--admin", "off", "--no-discovery"])
        .args(["--port", &port.to_string()])
        .args(["--listen", &format!("127.0.0.1:{}", free_port()?)])
        .env("PETAL_NETWORK_KEY", key.to_hex())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} (cargo build --release -p petald)", a.petald))?;
    servers.push(Server(child));
    wait_port(port, "petald").await?;
    systems.push(Sys::Relay { port });

    let mut o = petal_node::Options::new(
        petal_node::Identity::generate()?,
        petal_node::LinkSecurity::Noise(key),
    );
    o.relay_addrs = Vec::new();
    let node = petal_node::spawn(petal_node::TokioNet, o).await?;
    anyhow::ensure!(
        node.wait_ready(Duration::from_secs(5)).await,
        "the embedded node did not start"
    );
    systems.push(Sys::Embedded {
        local: node.local_connector(),
    });

    let nats_port = free_port()?;
    match Command::new(&a.nats)
        .args(["-a", "127.0.0.1", "-p", &nats_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => {
            servers.push(Server(child));
            wait_port(nats_port, "nats-server").await?;
            systems.push(Sys::Nats {
                url: format!("nats://127.0.0.1:{nats_port}"),
            });
        }
        Err(e) => eprintln!(
            "NATS skipped: {} not runnable ({e}); apt-get install nats-server",
            a.nats
        ),
    }

    systems.push(Sys::ZenohPeer {
        next_port: Arc::new(AtomicU64::from(u64::from(free_port()?) + 1000)),
    });
    let zport = free_port()?;
    let endpoint = format!("tcp/127.0.0.1:{zport}");
    let child = Command::new(std::env::current_exe()?)
        .args(["--zenoh-router", &endpoint])
        .stdout(Stdio::null())
        .spawn()?;
    servers.push(Server(child));
    wait_port(zport, "the Zenoh router").await?;
    systems.push(Sys::ZenohRouter { endpoint });
    Ok((servers, systems, Some(node)))
}

fn fig(row: &str, sys: &Sys, value: f64, lower_better: bool, note: String) -> Figure {
    Figure {
        row: row.into(),
        system: sys.name(),
        value,
        lower_better,
        note,
    }
}

async fn latency_rows(systems: &[Sys], d: Duration, tag: &str) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for sys in systems {
        eprintln!("{}: request latency{tag}", sys.name());
        let (p50, p99) = workloads::latency(sys, d).await?;
        out.push(fig(
            &format!("request p50 us{tag}"),
            sys,
            p50,
            true,
            String::new(),
        ));
        out.push(fig(
            &format!("request p99 us{tag}"),
            sys,
            p99,
            true,
            String::new(),
        ));
    }
    Ok(out)
}

async fn run_all(a: &Args, systems: &[Sys]) -> Result<Vec<Figure>> {
    let d = a.duration;
    let mut out = latency_rows(systems, d, "").await?;
    for sys in systems {
        for inflight in [64, 256] {
            eprintln!("{}: requests, {inflight} in flight", sys.name());
            let r = workloads::throughput(sys, inflight, d).await?;
            out.push(fig(
                &format!("requests/s, {inflight} in flight"),
                sys,
                r,
                false,
                String::new(),
            ));
        }
        for (size, label) in [(8, "8 B"), (1024, "1 KiB")] {
            for subs in [1, 10] {
                eprintln!("{}: pub/sub {label} to {subs}", sys.name());
                let f = workloads::fanout(sys, subs, size, d).await?;
                let note = if f.lost > 0 {
                    format!("{} lost", f.lost)
                } else {
                    String::new()
                };
                let row = format!(
                    "events delivered/s, {label}, {subs} subscriber{}",
                    if subs > 1 { "s" } else { "" }
                );
                out.push(fig(&row, sys, f.per_s, false, note));
            }
        }
        eprintln!("{}: stream of 64 KiB messages", sys.name());
        let f = workloads::stream(sys, 64 << 10, d).await?;
        let note = if f.lost > 0 {
            format!("{} lost", f.lost)
        } else {
            String::new()
        };
        out.push(fig(
            "stream, 64 KiB messages, MB/s",
            sys,
            f.bytes_per_s / 1e6,
            false,
            note,
        ));
    }
    Ok(out)
}

fn main() -> Result<()> {
    let a = args()?;
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
    rt.block_on(async {
        let (_servers, systems, node) = start(&a).await?;
        if a.pinned {
            let rows = latency_rows(&systems, a.duration, " (pinned)").await?;
            println!("{}", report::to_json(&rows));
            return Ok(());
        }
        let mut rows = run_all(&a, &systems).await?;
        drop(node);
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
            .stderr(Stdio::inherit())
            .output()
            .context("running the pinned latency phase (taskset)")?;
        anyhow::ensure!(pinned.status.success(), "the pinned latency phase failed");
        rows.extend(report::from_json(&pinned.stdout)?);
        report::write(&a.out, &rows, a.duration)?;
        print!("{}", report::table(&rows));
        Ok(())
    })
}
