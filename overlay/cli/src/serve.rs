//! `petal serve`: a member of a cluster that echoes requests or answers them with a shell
//! command, optionally failing a fraction of them on purpose.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use clap::Args;
use petal_client::{ServiceHandler, Tunnel};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::common;
use crate::messaging::ended;

/// Flags of `petal serve`.
#[derive(Args, Debug)]
#[command(
    after_help = "With --echo (the default) every request is answered with itself, and \
                        tunnels opened to the cluster echo every message back. With --exec each \
                        request runs `sh -c <command>` with the request on stdin: exit status 0 \
                        replies with its stdout, any other status (or --exec-timeout-ms passing) \
                        answers with a fault carrying its stderr; tunnels are refused (closed at \
                        once). Broadcasts to the cluster are printed on stdout as \
                        `broadcast: <message>`. Ctrl-C (or SIGTERM) leaves the cluster \
                        gracefully."
)]
pub(crate) struct ServeArgs {
    /// Cluster to join.
    cluster: String,
    /// Reply to every request with the request itself (the default).
    #[arg(long, conflicts_with = "exec")]
    echo: bool,
    /// Answer each request by running this shell command (request on stdin, reply = stdout).
    #[arg(long, value_name = "COMMAND")]
    exec: Option<String>,
    /// Time limit of one --exec run, in milliseconds; the command is killed when it passes.
    #[arg(long, default_value_t = 10_000)]
    exec_timeout_ms: u64,
    /// Fraction of requests (0 to 1) answered with the fault "injected fault" instead.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    fault_ratio: f64,
    /// Request handlers running at once (default: 4 per CPU).
    #[arg(long)]
    handlers: Option<usize>,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let ratio: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err("must be between 0 and 1".to_owned())
    }
}

/// How requests are answered.
#[derive(Clone, Debug)]
enum Mode {
    /// With the request.
    Echo,
    /// With the output of a shell command.
    Exec { command: Arc<str>, limit: Duration },
}

/// The service handler behind `petal serve`.
struct Server {
    mode: Mode,
    faults: FaultDice,
    /// Told the reason when the node drops the connection.
    dropped: mpsc::UnboundedSender<String>,
}

impl ServiceHandler for Server {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        if self.faults.roll() {
            return Err("injected fault".to_owned());
        }
        match &self.mode {
            Mode::Echo => Ok(request),
            Mode::Exec { command, limit } => exec(command, request, *limit).await,
        }
    }

    fn handle_broadcast(&self, message: Bytes) {
        let line = format!("broadcast: {}\n", String::from_utf8_lossy(&message));
        let _ = common::write_stdout(line.as_bytes());
    }

    fn handle_tunnel(&self, tunnel: Tunnel) {
        if matches!(self.mode, Mode::Echo) {
            tokio::spawn(echo_tunnel(tunnel));
        }
    }

    fn handle_drop(&self, reason: String) {
        let _ = self.dropped.send(reason);
    }
}

/// Echoes every message of a tunnel until it ends.
async fn echo_tunnel(tunnel: Tunnel) {
    while let Ok(message) = tunnel.recv().await {
        if tunnel.send(message, Duration::from_secs(30)).await.is_err() {
            break;
        }
    }
    let _ = tunnel.close().await;
}

/// Runs `sh -c command` with `request` on stdin, within `limit`.
async fn exec(command: &str, request: Bytes, limit: Duration) -> Result<Bytes, String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run the command: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // Written on its own task: a command that prints before reading cannot deadlock us.
        tokio::spawn(async move {
            let _ = stdin.write_all(&request).await;
        });
    }
    let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("waiting for the command: {e}")),
        // Dropping the child kills it.
        Err(_) => return Err(format!("command timed out after {} ms", limit.as_millis())),
    };
    if output.status.success() {
        Ok(Bytes::from(output.stdout))
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr)
            .trim_end()
            .to_owned();
        Err(if stderr.is_empty() {
            format!("command failed ({})", output.status)
        } else {
            stderr
        })
    }
}

/// Decides which requests get an injected fault: a splitmix64 sequence seeded from the clock.
struct FaultDice {
    ratio: f64,
    state: AtomicU64,
}

impl FaultDice {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the seed is the clock's low 64 bits of nanoseconds: dropping the high ones is the point"
    )]
    fn new(ratio: f64) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5eed, |d| d.as_nanos() as u64);
        FaultDice {
            ratio,
            state: AtomicU64::new(seed),
        }
    }

    /// Whether the next request fails.
    fn roll(&self) -> bool {
        if self.ratio <= 0.0 {
            return false;
        }
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < self.ratio
    }
}

/// `petal serve`.
pub(crate) async fn serve(port: u16, args: ServeArgs) -> Result<()> {
    let _ = args.echo; // Echo is the default; the flag only makes it explicit.
    let mode = match &args.exec {
        Some(command) => Mode::Exec {
            command: command.as_str().into(),
            limit: Duration::from_millis(args.exec_timeout_ms),
        },
        None => Mode::Echo,
    };
    let (dropped_tx, mut dropped_rx) = mpsc::unbounded_channel();
    let server = Server {
        mode: mode.clone(),
        faults: FaultDice::new(args.fault_ratio),
        dropped: dropped_tx,
    };
    let mut options = petal_client::Options::default();
    if let Some(handlers) = args.handlers {
        options.request_handlers = handlers.max(1);
    }
    let service = common::register_with(port, &args.cluster, server, options).await?;
    let what = match &mode {
        Mode::Echo => "echo".to_owned(),
        Mode::Exec { command, .. } => format!("exec {command:?}"),
    };
    eprintln!(
        "petal: serving cluster {:?} on port {port} ({what}); Ctrl-C to stop",
        args.cluster
    );
    tokio::select! {
        biased;
        _ = common::interrupted() => {}
        reason = dropped_rx.recv() => {
            anyhow::bail!("the node dropped the service: {}", reason.unwrap_or_default());
        }
        _ = ended(&service) => {
            anyhow::bail!("the connection to the node ended");
        }
    }
    eprintln!("petal: leaving cluster {:?}", args.cluster);
    service.close().await?;
    Ok(())
}
