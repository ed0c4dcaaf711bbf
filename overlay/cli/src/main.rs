//! `petal`: the command-line client of a Petal node.
//!
//! Every subcommand talks to the node daemon on this machine (`petald`, or an original Iris
//! node) over the relay protocol v1, through `petal-client`, on `--port` (default 55555):
//!
//! - `petal request <cluster> [message]`: one request, the reply on stdout. Exit codes: 0 reply,
//!   2 the service answered with a fault (its text on stderr), 3 timeout, 1 anything else.
//! - `petal broadcast <cluster> [message]`, `petal publish <topic> [message]`: fire and forget.
//! - `petal subscribe <topic>...`: prints events (`topic: payload`) until Ctrl-C or `--count`.
//! - `petal serve <cluster>`: a service (echo, or a shell command per request) until Ctrl-C.
//! - `petal tunnel <cluster>`: pipes stdin through a tunnel and what comes back to stdout.
//! - `petal bench <request|broadcast|publish|tunnel|all>`: measures the local node (or two
//!   nodes with `--port2`), starting its own services and subscribers.
//! - `petal kv get <key>`, `petal kv put <key> [value] [--ttl 30s] [--if-version V |
//!   --if-absent]`, `petal kv del <key> [--if-version V]`: the replicated store. Exit codes: 0,
//!   1 error, 3 timeout, 4 the key has no value, 5 a conditional write found another version.
//! - `petal id register <name> [--count N]` (holds it, prints its messages), `petal id send
//!   <name> [message]`, `petal id who <name>`: identity addressing. Exit code 4: no live node
//!   holds the identity.
//! - `petal status`, `peers`, `routes`, `clusters`, `topics`, `tunnels`, `sessions`: the
//!   node's state from its admin HTTP API (`--admin`, 127.0.0.1:55558 by default), as tables,
//!   or the API's JSON with `--json`.
//!
//! ## Layout
//! - `main.rs`: flags, dispatch, exit codes.
//! - `common.rs`: connecting, stdin/stdout, signals, the errors that carry an exit code.
//! - `messaging.rs`: `request`, `broadcast`, `publish`, `subscribe`.
//! - `serve.rs`: `serve` (echo, exec, fault injection, tunnels).
//! - `tunnel.rs`: `tunnel`.
//! - `kv.rs`: `kv`; `identity.rs`: `id`.
//! - `bench/`: `bench`: one file per measured pattern, `report.rs` for the table and JSON.
//! - `status.rs`: the admin API views.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::too_many_lines)
)]

/// As in `petald`: `petal bench --embedded` runs a node in this process, and every client
/// command allocates per packet (see the README, "The daemon's speed").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod common;
mod identity;
mod kv;
mod messaging;
mod serve;
mod status;
mod tunnel;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::common::Failure;

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(
    name = "petal",
    version,
    about = "Command-line client of a Petal node: requests, broadcasts, pub/sub, services, \
             tunnels, benchmarks",
    long_about = None,
    after_help = "Exit codes: 0 success, 1 error (e.g. no node on the port), 2 the service \
                  answered a request with a fault, 3 a request, tunnel open or store operation \
                  timed out, 4 the key has no value (kv get) or no node holds the identity (id \
                  send, id who), 5 a conditional store write found another version."
)]
struct Cli {
    /// Relay port of the local node (petald --port).
    #[arg(long, global = true, default_value_t = petal_client::DEFAULT_PORT)]
    port: u16,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Sends one request to a member of a cluster and prints the reply.
    Request(messaging::RequestArgs),
    /// Sends a message to every member of a cluster (best effort, no acknowledgement).
    Broadcast(messaging::SendArgs),
    /// Publishes an event to every subscriber of a topic (best effort, no acknowledgement).
    Publish(messaging::SendArgs),
    /// Subscribes to topics and prints their events, one per line.
    Subscribe(messaging::SubscribeArgs),
    /// Runs a service: a member of a cluster answering its requests, until Ctrl-C.
    Serve(serve::ServeArgs),
    /// Opens a tunnel to a member of a cluster and pipes stdin through it.
    Tunnel(tunnel::TunnelArgs),
    /// Measures latency and throughput of the local node (or of two nodes).
    Bench(bench::BenchArgs),
    /// Reads, writes and deletes keys of the replicated store (Petal's relay extension).
    Kv(kv::KvArgs),
    /// Holds identities, sends to them, asks who holds them (Petal's relay extension).
    Id(identity::IdArgs),
    /// Shows the node: id, state, addresses, discovery, sizes (admin API).
    Status(status::AdminArgs),
    /// Lists the node's peer links with RTTs and traffic (admin API).
    Peers(status::AdminArgs),
    /// Shows the node's leaf set and routing table with RTTs (admin API).
    Routes(status::AdminArgs),
    /// Lists the clusters whose trees the node is part of (admin API).
    Clusters(status::AdminArgs),
    /// Lists the topics whose trees the node is part of (admin API).
    Topics(status::AdminArgs),
    /// Lists the tunnel ends on the node (admin API).
    Tunnels(status::AdminArgs),
    /// Lists the applications attached to the node (admin API).
    Sessions(status::AdminArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("petal: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Tasks blocked on stdin (tokio reads it on a blocking thread) must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e.downcast_ref::<Failure>() {
                Some(failure) => failure.exit_code(),
                None => 1,
            };
            eprintln!("petal: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Runs one subcommand.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let port = cli.port;
    match cli.command {
        Command::Request(args) => messaging::request(port, args).await,
        Command::Broadcast(args) => messaging::broadcast(port, args).await,
        Command::Publish(args) => messaging::publish(port, args).await,
        Command::Subscribe(args) => messaging::subscribe(port, args).await,
        Command::Serve(args) => serve::serve(port, args).await,
        Command::Tunnel(args) => tunnel::tunnel(port, args).await,
        Command::Bench(args) => bench::bench(port, args).await,
        Command::Kv(args) => kv::kv(port, args).await,
        Command::Id(args) => identity::id(port, args).await,
        Command::Status(a) => status::show(status::View::Status, a).await,
        Command::Peers(a) => status::show(status::View::Peers, a).await,
        Command::Routes(a) => status::show(status::View::Routes, a).await,
        Command::Clusters(a) => status::show(status::View::Clusters, a).await,
        Command::Topics(a) => status::show(status::View::Topics, a).await,
        Command::Tunnels(a) => status::show(status::View::Tunnels, a).await,
        Command::Sessions(a) => status::show(status::View::Sessions, a).await,
    }
}
