//! `petald`: the Petal node daemon.
//!
//! One per machine. Local applications connect to it with the Iris relay protocol v1 on
//! `127.0.0.1` and `[::1]` (port 55555 by default), so the Iris client libraries (Go, Java, Erlang)
//! and `petal-client` work unchanged. Nodes reach each other over peer links: give a new node
//! the peer address of any running node with `--seed`; a node without seeds serves its local
//! applications at once as a ring of one.
//!
//! Settings come from flags, and optionally a TOML file (`--config`) whose keys are the flags'
//! long names (`port`, `listen`, `advertise`, `seeds`, `data_dir`, `log`); flags win.
//!
//! SIGINT or SIGTERM shuts the node down gracefully: every pending request of every application
//! is answered (timeout), tunnels are closed with a reason, every application gets CLOSE with a
//! reason, the node tells its peers it leaves, then it exits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use petal_node::{Options, TokioNet};
use petal_protocol::NodeId;
use serde::Deserialize;

/// The default port of peer links.
const DEFAULT_PEER_PORT: u16 = 55556;

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(name = "petald", version, about = "The Petal node daemon")]
struct Cli {
    /// TOML file with settings (keys: port, listen, advertise, seeds, data_dir, log).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Port for local applications (relay v1 on 127.0.0.1 and `[::1]`). [default: 55555]
    #[arg(long)]
    port: Option<u16>,
    /// Address for peer links. Loopback by default: links are not yet encrypted, so a node
    /// spans machines only when told to (e.g. `--listen 0.0.0.0:55556 --advertise 10.0.0.5:55556`).
    /// [default: 127.0.0.1:55556]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The peer address other nodes dial (default: the listen address).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// A running node's peer address (host:port; repeatable). Without seeds the node starts a
    /// ring of its own.
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// Directory for the node's state (its id, kept across restarts).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Development mode: a throwaway identity (never written to disk) and debug logs.
    #[arg(long)]
    dev: bool,
    /// Log filter (tracing's env-filter syntax; RUST_LOG works too). [default: info]
    #[arg(long)]
    log: Option<String>,
    /// Runtime threads. The node's state lives in one task, and on a 2-core machine one
    /// thread measured faster than two on every benchmark (cross-thread wake-ups cost more
    /// than they bring): see the README. [default: 1]
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

/// The config file's settings.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    port: Option<u16>,
    listen: Option<SocketAddr>,
    advertise: Option<SocketAddr>,
    #[serde(default)]
    seeds: Vec<String>,
    data_dir: Option<PathBuf>,
    log: Option<String>,
}

/// The merged settings.
#[derive(Debug)]
struct Settings {
    port: u16,
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    seeds: Vec<String>,
    data_dir: Option<PathBuf>,
    dev: bool,
    log: String,
}

fn settings(cli: Cli) -> Result<Settings> {
    let file = match &cli.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parsing {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let mut seeds = cli.seeds;
    if seeds.is_empty() {
        seeds = file.seeds;
    }
    Ok(Settings {
        port: cli
            .port
            .or(file.port)
            .unwrap_or(petal_protocol::relay::DEFAULT_PORT),
        listen: cli
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], DEFAULT_PEER_PORT))),
        advertise: cli.advertise.or(file.advertise),
        seeds,
        data_dir: cli.data_dir.or(file.data_dir),
        dev: cli.dev,
        log: cli.log.or(file.log).unwrap_or_else(|| {
            if cli.dev {
                "debug".into()
            } else {
                "info".into()
            }
        }),
    })
}

/// A random 128-bit id from the operating system's randomness (through the standard library's
/// randomly keyed hasher).
fn random_id() -> NodeId {
    use std::hash::{BuildHasher, Hasher};
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        h.finish()
    };
    NodeId((u128::from(word()) << 64) | u128::from(word()))
}

/// The node's id: kept in `<data_dir>/node-id` (created on first start), else random.
fn node_id(data_dir: Option<&Path>) -> Result<NodeId> {
    let Some(dir) = data_dir else {
        return Ok(random_id());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let v = u128::from_str_radix(text.trim(), 16)
                .with_context(|| format!("{} does not hold a hex node id", path.display()))?;
            Ok(NodeId(v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = random_id();
            std::fs::write(&path, format!("{:032x}\n", id.get()))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

async fn resolve_seeds(seeds: &[String]) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for s in seeds {
        let with_port = if s.parse::<SocketAddr>().is_ok()
            || s.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            s.clone()
        } else {
            format!("{s}:{DEFAULT_PEER_PORT}")
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving seed {s}"))?
            .collect();
        if addrs.is_empty() {
            bail!("seed {s} resolves to no address");
        }
        out.extend(addrs);
    }
    Ok(out)
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let threads = cli.threads;
    let s = settings(cli)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&s.log))
        .context("bad log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(threads))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(run(s))
}

async fn run(s: Settings) -> Result<()> {
    let id = if s.dev {
        random_id()
    } else {
        node_id(s.data_dir.as_deref())?
    };
    let mut opts = Options::new(id);
    opts.relay_addrs = vec![
        SocketAddr::from(([127, 0, 0, 1], s.port)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, s.port)),
    ];
    opts.peer_listen = s.listen;
    opts.advertise = s.advertise;
    opts.seeds = resolve_seeds(&s.seeds).await?;
    opts.seed = (id.get() as u64) ^ ((id.get() >> 64) as u64);
    let node = petal_node::spawn(TokioNet, opts)
        .await
        .context("starting the node (are the ports free?)")?;
    tracing::info!(
        id = %node.info().id,
        peers = %node.info().addr,
        relay = ?node.relay_addrs(),
        "petald ready"
    );
    let watch = tokio::spawn(watch_drops(node.stats_source()));
    let sig = shutdown_signal().await;
    watch.abort();
    tracing::info!(signal = sig, "shutting down");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Logs, every 10 s, the losses of the last 10 s (overload is a counted, visible drop).
async fn watch_drops(stats: petal_node::StatsSource) {
    let mut last: Option<[u64; 7]> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        let Some(s) = stats.get().await else { return };
        let now = [
            s.core.outbox_drops,
            s.core.event_drops,
            s.core.routes_dropped,
            s.core.events_lost,
            s.runtime.link_drops,
            s.runtime.relay_dropped,
            s.runtime.slow_closed,
        ];
        if let Some(prev) = last
            && now != prev
        {
            let d: Vec<u64> = now.iter().zip(prev).map(|(a, b)| a - b).collect();
            tracing::warn!(
                outbox_drops = d[0],
                event_drops = d[1],
                routes_dropped = d[2],
                events_lost = d[3],
                link_drops = d[4],
                relay_dropped = d[5],
                slow_clients_closed = d[6],
                "messages dropped in the last 10 s (overload or slow clients)"
            );
        }
        last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("petald-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("petald.toml");
        std::fs::write(
            &file,
            "port = 6000\nlisten = \"127.0.0.2:7000\"\nseeds = [\"127.0.0.3:7000\"]\nlog = \"warn\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "petald",
            "--config",
            file.to_str().unwrap(),
            "--port",
            "6001",
        ]);
        let s = settings(cli).unwrap();
        assert_eq!(s.port, 6001);
        assert_eq!(s.listen, "127.0.0.2:7000".parse().unwrap());
        assert_eq!(s.seeds, vec!["127.0.0.3:7000".to_string()]);
        assert_eq!(s.log, "warn");
        std::fs::write(&file, "prot = 1\n").unwrap();
        let cli = Cli::parse_from(["petald", "--config", file.to_str().unwrap()]);
        assert!(settings(cli).is_err(), "unknown keys are errors");
    }

    #[test]
    fn the_node_id_is_kept_in_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("petald-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = node_id(Some(&dir)).unwrap();
        let b = node_id(Some(&dir)).unwrap();
        assert_eq!(a, b);
        assert_ne!(random_id(), random_id());
        std::fs::write(dir.join("node-id"), "not hex").unwrap();
        assert!(node_id(Some(&dir)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
