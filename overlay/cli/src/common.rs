//! What the subcommands share: connecting to the node, stdin and stdout, signals, and the
//! failures that map to an exit code.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use petal_client::{Connection, Service, ServiceHandler};
use tokio::io::AsyncReadExt;

/// How long connecting (TCP and handshake) to the local node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failure with an exit code of its own (everything else exits with 1).
#[derive(Debug)]
pub(crate) enum Failure {
    /// The service answered with a fault: exit code 2.
    Fault(String),
    /// The node answered with a timeout (request, tunnel open, store operation): exit code 3.
    Timeout(String),
    /// The key has no value (`petal kv get`), or no live node holds the identity (`petal id
    /// send`, `petal id who`): exit code 4.
    NotFound(String),
    /// A conditional store write found another version (`--if-version`, `--if-absent`): exit
    /// code 5.
    Conflict(String),
}

impl Failure {
    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Fault(_) => 2,
            Failure::Timeout(_) => 3,
            Failure::NotFound(_) => 4,
            Failure::Conflict(_) => 5,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Fault(text) => write!(f, "fault: {text}"),
            Failure::Timeout(what) => write!(f, "{what} timed out"),
            Failure::NotFound(name) => write!(f, "{name:?}: not found"),
            Failure::Conflict(text) => write!(f, "conflict: {text}"),
        }
    }
}

impl std::error::Error for Failure {}

/// Connects to the node on localhost:`port` as a plain client.
pub(crate) async fn connect(port: u16) -> Result<Connection> {
    connect_with(port, petal_client::Options::default()).await
}

/// Connects to the node on localhost:`port` as a plain client, with these options.
pub(crate) async fn connect_with(port: u16, options: petal_client::Options) -> Result<Connection> {
    tokio::time::timeout(CONNECT_TIMEOUT, options.connect(port))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from a node on port {port} within 5 s"))?
        .map_err(|e| {
            anyhow::anyhow!("cannot connect to a node on port {port} (is petald running?): {e}")
        })
}

/// Registers a service of `cluster` with the node on localhost:`port`.
pub(crate) async fn register<H: ServiceHandler>(
    port: u16,
    cluster: &str,
    handler: H,
) -> Result<Service> {
    let options = petal_client::Options::default();
    register_with(port, cluster, handler, options).await
}

/// Registers a service of `cluster` with the node on localhost:`port`, with these options.
pub(crate) async fn register_with<H: ServiceHandler>(
    port: u16,
    cluster: &str,
    handler: H,
    options: petal_client::Options,
) -> Result<Service> {
    tokio::time::timeout(CONNECT_TIMEOUT, options.register(port, cluster, handler))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from a node on port {port} within 5 s"))?
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot register a service of {cluster:?} with a node on port {port}: {e}"
            )
        })
}

/// The message given as an argument, or else all of stdin.
pub(crate) async fn message_or_stdin(message: Option<String>) -> Result<Bytes> {
    match message {
        Some(message) => Ok(Bytes::from(message)),
        None => {
            let mut buf = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut buf)
                .await
                .context("reading the message from stdin")?;
            Ok(Bytes::from(buf))
        }
    }
}

/// Writes `bytes` to stdout and flushes (blocking; stdout is the program's output).
pub(crate) fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub(crate) async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    biased;
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A payload of `size` bytes for benchmarks and probes.
pub(crate) fn payload(size: usize) -> Bytes {
    Bytes::from(vec![b'x'; size])
}
