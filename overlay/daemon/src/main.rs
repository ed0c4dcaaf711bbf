//! `petald`: the Petal node daemon.
//!
//! One per machine. Local applications connect to it with the Iris relay protocol v1 on
//! `127.0.0.1` and `[::1]` (port 55555 by default), so the Iris client libraries (Go, Java, Erlang)
//! and `petal-client` work unchanged. Nodes reach each other over encrypted, authenticated peer
//! links (Noise, under the network key every member holds): on one LAN they find each other by
//! multicast beacons with no configuration; elsewhere give a new node the peer address of any
//! running node with `--seed`. A node that finds nobody serves its local applications at once
//! as a ring of one, and merges with the others when it finds them.
//!
//! The network key comes from, in order: `--network-key-file`, the `PETAL_NETWORK_KEY`
//! environment variable (64 hex digits), the config file (`network_key_file` or `network_key`),
//! `<data_dir>/network.key`; with `--dev` and none of these, a random key (printed, with how to
//! join). `petald --new-network-key` prints a fresh key.
//!
//! Settings come from flags, and optionally a TOML file (`--config`) whose keys are the flags'
//! long names with underscores; flags win.
//!
//! SIGINT or SIGTERM shuts the node down gracefully: replies its services already wrote are
//! read and delivered, every other pending request of every application is answered (timeout),
//! tunnels are closed with a reason, every application gets CLOSE with a reason, the node tells
//! its peers it leaves, then it exits.
//!
//! `--memory-budget` (config `memory_budget`, default 1GiB) bounds what peers and applications
//! can make the node hold; one peer or application may hold an eighth of it.
//!
//! The admin HTTP API (`petal-admin`: `/healthz`, `/readyz`, `/metrics`, `/v1/...`) listens on
//! `127.0.0.1:55558` unless `--admin ADDR` or `--admin off` says otherwise; beyond loopback it
//! needs `--admin-token-file`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::too_many_lines)
)]

mod admin;
mod gateway;
mod keys;
mod session_store;
mod tuning;

/// The node allocates and frees small buffers for every packet (decoded frames, events,
/// queued writes); mimalloc does that in less CPU than the system allocator (see the README,
/// "The daemon's speed"). Only the binaries choose: the libraries leave it to their users.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use petal_node::discovery::{DEFAULT_GROUP, Discovery};
use petal_node::{Identity, LinkSecurity, NetworkKey, Options, TokioNet};
use serde::Deserialize;

/// The default port of peer links.
const DEFAULT_PEER_PORT: u16 = 55556;

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(name = "petald", version, about = "The Petal node daemon")]
struct Cli {
    /// TOML file with settings (keys: port, listen, advertise, seeds, data_dir, log,
    /// network_key_file, network_key, discovery, discovery_group, discovery_interface,
    /// memory_budget, admin, admin_token_file, log_format, session_store, gateway,
    /// gateway_tokens, gateway_cors, gateway_tls_cert, gateway_tls_key; tables `[limits]` and `[timers]` with
    /// every limit and timer by name: see --print-config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print a fresh random network key (64 hex digits) and exit.
    #[arg(long)]
    new_network_key: bool,
    /// File holding the network key (64 hex digits). See the crate docs for the other sources.
    #[arg(long)]
    network_key_file: Option<PathBuf>,
    /// Do not send or listen for LAN discovery beacons (use seeds only).
    #[arg(long)]
    no_discovery: bool,
    /// Multicast group and port of discovery beacons. [default: 239.255.80.80:55557]
    #[arg(long)]
    discovery_group: Option<SocketAddrV4>,
    /// Address of the interface to send and hear beacons on. [default: the system's choice]
    #[arg(long)]
    discovery_interface: Option<Ipv4Addr>,
    /// Unencrypted, unauthenticated peer links, for measuring what encryption costs. Only with
    /// --dev; every node of the network must use it.
    #[arg(long)]
    insecure_plaintext_links: bool,
    /// Port for local applications (relay v1 on 127.0.0.1 and `[::1]`). [default: 55555]
    #[arg(long)]
    port: Option<u16>,
    /// Address for peer links. [default: 0.0.0.0:55556]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The peer address other nodes dial. [default: the listen address; when that is
    /// unspecified (0.0.0.0), the address of the interface that routes to the first seed, else
    /// to the discovery group, else to the default route, else 127.0.0.1; peers replace an
    /// unspecified or loopback address by the one the link came from]
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// A running node's peer address (`host:port` or `host`, port 55556 by default; repeatable). A node
    /// whose seeds all fail serves as a ring of its own and keeps dialing them (100 ms, doubling
    /// up to 30 s) until their ring and its own merge.
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// Directory for the node's state: its static key (`node.key`, mode 0600, created on first
    /// start; the node id derives from it, so a restarted node rejoins as itself) and optionally
    /// the network key (`network.key`). Without it the identity is new at every start.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Development mode: a throwaway identity (never written to disk), a random network key when
    /// none is given (printed, with how to join), debug logs.
    #[arg(long)]
    dev: bool,
    /// Log filter (tracing's env-filter syntax; RUST_LOG works too). [default: info]
    #[arg(long)]
    log: Option<String>,
    /// Bytes that peers and local applications can make the node hold, in all (queued
    /// messages, tunnel data, parked requests, replay caches), with a unit: `512MiB`, `2GiB`,
    /// or plain bytes. One peer or one application may hold an eighth of it. [default: 1GiB]
    #[arg(long, value_parser = parse_bytes)]
    memory_budget: Option<u64>,
    /// Address of the admin HTTP API (health, readiness, Prometheus metrics, the node's
    /// tables), or `off`. An address other than loopback needs --admin-token-file.
    /// [default: 127.0.0.1:55558, skipped with a warning when taken]
    #[arg(long, value_parser = admin::parse_admin)]
    admin: Option<admin::AdminAddr>,
    /// File whose first line is the admin API's bearer token (16 or more printable
    /// characters; mode 600).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Address of the HTTP gateway (requests, broadcasts, publishes, topic events as
    /// Server-Sent Events or WebSocket), off unless given. An address other than loopback
    /// needs --gateway-tokens.
    #[arg(long, value_name = "ADDR")]
    gateway: Option<SocketAddr>,
    /// TOML file of the gateway's bearer tokens (each names its clusters, topics, patterns
    /// and rate; see the README).
    #[arg(long, value_name = "FILE")]
    gateway_tokens: Option<PathBuf>,
    /// An origin browsers may call the gateway from (`https://app.example`, or `*`;
    /// repeatable).
    #[arg(long = "gateway-cors", value_name = "ORIGIN")]
    gateway_cors: Vec<String>,
    /// PEM file of the gateway's TLS certificate chain (leaf first); with --gateway-tls-key
    /// the gateway speaks HTTPS and WSS only.
    #[arg(long, value_name = "FILE", requires = "gateway_tls_key")]
    gateway_tls_cert: Option<PathBuf>,
    /// PEM file of the private key of --gateway-tls-cert.
    #[arg(long, value_name = "FILE", requires = "gateway_tls_cert")]
    gateway_tls_key: Option<PathBuf>,
    /// Keep identity registries in this Redis (`redis://[:password@]host:port[/db]` or
    /// `redis+unix:///path`) instead of the overlay's store, for deployments that already run
    /// one. Every node of the network must name the same one. While it does not answer,
    /// identity operations fail with the reason; everything else works.
    #[arg(long, value_name = "URL")]
    session_store: Option<String>,
    /// Print the effective configuration (flags, file and defaults merged; every limit and
    /// timer) as TOML, and exit. The network key is never printed.
    #[arg(long)]
    print_config: bool,
    /// Log format: `text` (for people) or `json` (one object per line, with the node's id on
    /// every line logged on its behalf).
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Runtime threads. The node's state lives in one task, and on a 2-core machine one
    /// thread measured faster than two on every benchmark (cross-thread wake-ups cost more
    /// than they bring): see the README.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Microseconds (at most 10,000) the node task keeps polling for input after handling
    /// some, before it sleeps (0: off). It spares waking a sleeping thread (on this project's
    /// 2-vCPU test machine one-at-a-time request p50 about 150 -> 75 us with 50), at the price
    /// of a CPU kept busy while input comes more often than this.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    busy_poll_us: u32,
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
    network_key_file: Option<PathBuf>,
    network_key: Option<String>,
    discovery: Option<bool>,
    discovery_group: Option<SocketAddrV4>,
    discovery_interface: Option<Ipv4Addr>,
    memory_budget: Option<String>,
    admin: Option<String>,
    admin_token_file: Option<PathBuf>,
    log_format: Option<String>,
    session_store: Option<String>,
    gateway: Option<SocketAddr>,
    gateway_tokens: Option<PathBuf>,
    #[serde(default)]
    gateway_cors: Vec<String>,
    gateway_tls_cert: Option<PathBuf>,
    gateway_tls_key: Option<PathBuf>,
    /// Every limit of the core and the runtime, by name (`petald --print-config`).
    #[serde(default)]
    limits: toml::Table,
    /// Every interval and timeout of the core and the runtime, by name.
    #[serde(default)]
    timers: toml::Table,
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
    network_key: Option<NetworkKey>,
    /// Where the network key came from (for the log).
    network_key_source: String,
    discovery: Option<Discovery>,
    plaintext: bool,
    memory_budget: Option<u64>,
    admin: admin::AdminSettings,
    tuning: tuning::Tuning,
    json_logs: bool,
    network_key_file: Option<PathBuf>,
    /// Where identity registries live (`None`: the overlay's store).
    session_store: Option<String>,
    /// The HTTP gateway: its address, token file and CORS origins.
    gateway: Option<SocketAddr>,
    gateway_tokens: Option<PathBuf>,
    gateway_cors: Vec<String>,
    gateway_tls: Option<(PathBuf, PathBuf)>,
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
    let data_dir = cli.data_dir.or(file.data_dir);
    let tuning = tuning::Tuning {
        limits: file.limits,
        timers: file.timers,
    };
    let json_logs = match cli.log_format.or(file.log_format).as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => bail!("log_format {other:?} in the config file: use \"text\" or \"json\""),
    };
    let network_key_file = cli
        .network_key_file
        .clone()
        .or(file.network_key_file.clone());
    let (network_key, network_key_source) = keys::network_key(
        cli.network_key_file.as_deref(),
        std::env::var("PETAL_NETWORK_KEY").ok(),
        file.network_key_file.as_deref(),
        file.network_key.as_deref(),
        data_dir.as_deref(),
    )?;
    if cli.insecure_plaintext_links && !cli.dev {
        bail!("--insecure-plaintext-links is for measurements only and needs --dev");
    }
    let discovery = (!cli.no_discovery && file.discovery != Some(false)).then(|| Discovery {
        group: cli
            .discovery_group
            .or(file.discovery_group)
            .unwrap_or(DEFAULT_GROUP),
        interface: cli
            .discovery_interface
            .or(file.discovery_interface)
            .unwrap_or(Ipv4Addr::UNSPECIFIED),
        ..Discovery::default()
    });
    let memory_budget = match (cli.memory_budget, file.memory_budget) {
        (Some(b), _) => Some(b),
        (None, Some(text)) => Some(
            parse_bytes(&text)
                .map_err(anyhow::Error::msg)
                .context("memory_budget in the config file")?,
        ),
        (None, None) => None,
    };
    let admin_addr = match (cli.admin, file.admin.as_deref()) {
        (Some(a), _) => a,
        (None, Some(text)) => admin::parse_admin(text)
            .map_err(anyhow::Error::msg)
            .context("admin in the config file")?,
        (None, None) => admin::AdminAddr::Default,
    };
    let session_store = cli.session_store.or(file.session_store);
    if let Some(url) = &session_store {
        session_store::check_url(url)?;
    }
    let gateway_cors = if cli.gateway_cors.is_empty() {
        file.gateway_cors
    } else {
        cli.gateway_cors
    };
    let gateway_tls = match (
        cli.gateway_tls_cert.or(file.gateway_tls_cert),
        cli.gateway_tls_key.or(file.gateway_tls_key),
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => bail!("gateway_tls_cert and gateway_tls_key go together"),
    };
    let gateway = cli.gateway.or(file.gateway);
    let gateway_tokens = cli.gateway_tokens.or(file.gateway_tokens);
    if gateway.is_none()
        && (gateway_tokens.is_some() || !gateway_cors.is_empty() || gateway_tls.is_some())
    {
        // Settings that would silently do nothing: the operator meant to run the gateway.
        bail!(
            "gateway_tokens, gateway_cors and gateway_tls_* configure the HTTP gateway, which \
             is off: give its address too (--gateway ADDR, or gateway in the config file)"
        );
    }
    Ok(Settings {
        gateway_tls,
        gateway,
        gateway_tokens,
        gateway_cors,
        session_store,
        tuning,
        json_logs,
        network_key_file,
        admin: admin::AdminSettings {
            addr: admin_addr,
            token_file: cli.admin_token_file.or(file.admin_token_file),
        },
        memory_budget,
        network_key,
        network_key_source,
        discovery,
        plaintext: cli.insecure_plaintext_links,
        port: cli
            .port
            .or(file.port)
            .unwrap_or(petal_protocol::relay::DEFAULT_PORT),
        listen: cli
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], DEFAULT_PEER_PORT))),
        advertise: cli.advertise.or(file.advertise),
        seeds,
        data_dir,
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

/// A byte count with an optional binary unit (`K`/`KiB`, `M`/`MiB`, `G`/`GiB`; `B` or none for
/// bytes), as flags and the config file take it.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (like 512MiB or 2GiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The address this machine is reached at from the local network: the source address the
/// system would pick towards `towards` (a UDP "connect" sends nothing).
fn local_ip_towards(towards: SocketAddr) -> Option<IpAddr> {
    let any: IpAddr = if towards.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let s = std::net::UdpSocket::bind((any, 0)).ok()?;
    s.connect(towards).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The advertised peer address when none is given: the listen address, or when that is
/// unspecified the source address the system picks towards the first seed, the discovery
/// group, or the default route. (Peers also correct an unspecified or loopback address to the
/// one a link came from.)
fn default_advertise(
    listen: SocketAddr,
    seeds: &[SocketAddr],
    discovery: Option<&Discovery>,
) -> SocketAddr {
    if !listen.ip().is_unspecified() {
        return listen;
    }
    let guess = seeds
        .iter()
        .find(|s| !s.ip().is_loopback())
        .and_then(|s| local_ip_towards(*s))
        .or_else(|| {
            discovery.and_then(|d| {
                if d.interface.is_unspecified() {
                    local_ip_towards(SocketAddr::V4(d.group))
                } else {
                    Some(IpAddr::V4(d.interface))
                }
            })
        })
        // TEST-NET-1: only the routing decision is taken, nothing is sent.
        .or_else(|| local_ip_towards(SocketAddr::from(([192, 0, 2, 1], 9))));
    match guess {
        Some(ip) => SocketAddr::new(ip, listen.port()),
        None => {
            tracing::warn!("no network address found; advertising 127.0.0.1 (use --advertise)");
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
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
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                biased;
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                // Only SIGINT then; the process still stops on SIGTERM (the default action),
                // without the graceful shutdown.
                tracing::warn!(error = %e, "cannot handle SIGTERM; only SIGINT shuts down gracefully");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

fn main() {
    // Errors are for operators: the message and its causes, no backtrace.
    if let Err(e) = start(Cli::parse()) {
        eprintln!("petald: {e:#}");
        std::process::exit(1);
    }
}

fn start(cli: Cli) -> Result<()> {
    if cli.new_network_key {
        println!("{}", NetworkKey::random()?.to_hex());
        return Ok(());
    }
    let threads = cli.threads;
    let busy_poll = std::time::Duration::from_micros(u64::from(cli.busy_poll_us));
    let print = cli.print_config;
    let s = settings(cli)?;
    if print {
        print!("{}", tuning::print_config(&s)?);
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&s.log))
        .context("bad log filter")?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    if s.json_logs {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(threads))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(run(s, busy_poll))
}

async fn run(s: Settings, busy_poll: std::time::Duration) -> Result<()> {
    let identity = if s.dev {
        Identity::generate().context("generating the node key")?
    } else {
        keys::identity(s.data_dir.as_deref())?
    };
    let key = match (&s.network_key, s.dev) {
        (Some(k), _) => {
            tracing::info!(source = %s.network_key_source, "network key loaded");
            k.clone()
        }
        (None, true) => {
            // Printed with the peer address once the node is up.
            NetworkKey::random().context("generating a network key")?
        }
        (None, false) => bail!(
            "no network key: every node of a network holds the same one. Create one with \
             `petald --new-network-key > network.key` (mode 600) and pass --network-key-file, \
             PETAL_NETWORK_KEY, the config, or put it in <data_dir>/network.key; or try --dev"
        ),
    };
    let dev_key = (s.dev && s.network_key.is_none()).then(|| key.to_hex());
    let security = if s.plaintext {
        tracing::warn!(
            "peer links are NOT encrypted or authenticated (--insecure-plaintext-links)"
        );
        LinkSecurity::Plaintext
    } else {
        LinkSecurity::Noise(key)
    };
    let mut opts = Options::new(identity, security);
    opts.relay_addrs = vec![
        SocketAddr::from(([127, 0, 0, 1], s.port)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, s.port)),
    ];
    opts.peer_listen = s.listen;
    opts.seeds = resolve_seeds(&s.seeds).await?;
    opts.advertise = Some(
        s.advertise
            .unwrap_or_else(|| default_advertise(s.listen, &opts.seeds, s.discovery.as_ref())),
    );
    opts.discovery = s.discovery.clone();
    // The store's versions and expiry times are Unix milliseconds: the node counts from now.
    opts.wall_clock_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok());
    s.tuning.apply(&mut opts, s.memory_budget)?;
    opts.busy_poll = busy_poll;
    if let Some(url) = &s.session_store {
        opts.registry = Some(session_store::start(url).await?);
    }
    // The gateway's options (a bad token or TLS file stops the start here), and its counters
    // made first so that the admin API's /metrics shows them.
    let gateway = s.gateway.map(|a| gateway::prepare(&s, a)).transpose()?;
    let extra = gateway.as_ref().map(|o| {
        let g = o.stats.clone();
        petal_admin::ExtraMetrics(std::sync::Arc::new(move || g.prometheus()))
    });
    let admin = admin::bind(&s.admin, extra).await?;
    let node = petal_node::spawn(TokioNet, opts)
        .await
        .context("starting the node (are the ports free?)")?;
    // Logged before "petald ready": once that line is out, the admin API answers.
    let admin = admin::serve(admin, s.admin.token_file.is_some(), node.stats_source());
    tracing::info!(
        id = %node.info().id,
        peers = %node.info().addr,
        relay = ?node.relay_addrs(),
        "petald ready"
    );
    if let Some(k) = dev_key {
        eprintln!(
            "petald --dev: random network key {k}\n  to join this node from another machine on \
             this LAN: PETAL_NETWORK_KEY={k} petald --dev\n  from elsewhere, add --seed {}",
            node.info().addr
        );
    }
    let gateway = match gateway {
        Some(o) => Some(gateway::start(o, node.local_connector()).await?),
        None => None,
    };
    let watch = tokio::spawn(watch_drops(node.stats_source()));
    let sig = shutdown_signal().await;
    watch.abort();
    if let Some(a) = admin {
        a.stop();
    }
    if let Some(g) = gateway {
        g.stop();
    }
    tracing::info!(signal = sig, "shutting down");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Logs, every 10 s, the losses of the last 10 s (overload is a counted, visible drop).
async fn watch_drops(stats: petal_node::StatsSource) {
    let mut last: Option<[u64; 9]> = None;
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
            s.core.memory_refused
                + s.runtime.memory_refused_links
                + s.runtime.memory_refused_sessions,
            s.runtime.dials_refused,
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
                memory_refused = d[7],
                dials_refused = d[8],
                memory_used = s.memory_used,
                memory_budget = s.memory_budget,
                "messages dropped in the last 10 s (overload or slow clients)"
            );
        }
        last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{identity, network_key};

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
        assert_eq!(s.memory_budget, None);
        std::fs::write(&file, "memory_budget = \"256MiB\"\n").unwrap();
        let cli = Cli::parse_from(["petald", "--config", file.to_str().unwrap()]);
        assert_eq!(settings(cli).unwrap().memory_budget, Some(256 << 20));
        let cli = Cli::parse_from([
            "petald",
            "--config",
            file.to_str().unwrap(),
            "--memory-budget",
            "2GiB",
        ]);
        assert_eq!(settings(cli).unwrap().memory_budget, Some(2 << 30));
        std::fs::write(&file, "memory_budget = \"lots\"\n").unwrap();
        let cli = Cli::parse_from(["petald", "--config", file.to_str().unwrap()]);
        assert!(
            settings(cli).is_err(),
            "a budget that is no size is an error"
        );
        std::fs::write(&file, "prot = 1\n").unwrap();
        let cli = Cli::parse_from(["petald", "--config", file.to_str().unwrap()]);
        assert!(settings(cli).is_err(), "unknown keys are errors");
    }

    #[test]
    fn byte_counts_take_binary_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert!(parse_bytes("1TiB").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999G").is_err());
    }

    #[test]
    fn the_node_key_is_kept_private_in_the_data_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("petald-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = identity(Some(&dir)).unwrap();
        let b = identity(Some(&dir)).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        let path = dir.join("node.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = identity(Some(&dir)).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not hex").unwrap();
        assert!(identity(Some(&dir)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn network_key_sources_in_order() {
        let dir = std::env::temp_dir().join(format!("petald-nk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (k1, k2, k3) = ("11".repeat(32), "22".repeat(32), "33".repeat(32));
        use std::os::unix::fs::PermissionsExt;
        let private = |p: &std::path::Path| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap()
        };
        let f1 = dir.join("flag.key");
        std::fs::write(&f1, &k1).unwrap();
        // A key file every user may read is refused.
        let e = network_key(Some(&f1), None, None, None, None).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        private(&f1);
        std::fs::write(dir.join("network.key"), format!("{k3}\n")).unwrap();
        private(&dir.join("network.key"));
        let hex = |r: (Option<NetworkKey>, String)| r.0.map(|k| k.to_hex());
        let got = network_key(Some(&f1), Some(k2.clone()), None, Some(&k3), Some(&dir));
        assert_eq!(hex(got.unwrap()), Some(k1.clone()));
        let got = network_key(None, Some(k2.clone()), None, Some(&k3), Some(&dir));
        assert_eq!(hex(got.unwrap()), Some(k2.clone()));
        let got = network_key(None, None, None, Some(&k2), Some(&dir));
        assert_eq!(hex(got.unwrap()), Some(k2));
        let got = network_key(None, None, None, None, Some(&dir));
        assert_eq!(hex(got.unwrap()), Some(k3));
        assert_eq!(
            hex(network_key(None, None, None, None, None).unwrap()),
            None
        );
        assert!(network_key(None, Some("xyz".into()), None, None, None).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
