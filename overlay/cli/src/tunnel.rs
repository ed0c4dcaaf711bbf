//! `petal tunnel`: stdin through a tunnel, what comes back to stdout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use petal_client::{Error, Tunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::common::{self, Failure};

/// Largest message read from stdin and sent at once.
const MESSAGE_MAX: usize = 64 * 1024;

/// Flags of `petal tunnel`.
#[derive(Args, Debug)]
#[command(
    after_help = "stdin is sent as tunnel messages of up to 64 KiB each (whatever one read \
                        returns: message boundaries are not meaningful). Every message that \
                        comes back is written to stdout as is, in order. At the end of stdin \
                        the tunnel stays open until nothing has come back for --linger-ms, so \
                        that an echoing or answering far end can finish; then it is closed \
                        gracefully. If the far end closes the tunnel first, what it sent is \
                        written and petal exits at once (0 for a graceful close, 1 otherwise). \
                        Ctrl-C closes the tunnel gracefully. Exit code 3: no member of the \
                        cluster accepted the tunnel within --timeout-ms."
)]
pub(crate) struct TunnelArgs {
    /// Cluster to open the tunnel to (one member accepts it, chosen by the node).
    cluster: String,
    /// Time the node allows for opening the tunnel, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Time one message may wait for the far end's credit, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    send_timeout_ms: u64,
    /// After the end of stdin, close once nothing came back for this long (milliseconds).
    #[arg(long, default_value_t = 1000)]
    linger_ms: u64,
}

/// `petal tunnel`.
pub(crate) async fn tunnel(port: u16, args: TunnelArgs) -> Result<()> {
    let conn = common::connect(port).await?;
    let tunnel = match conn
        .tunnel(&args.cluster, Duration::from_millis(args.timeout_ms))
        .await
    {
        Ok(tunnel) => Arc::new(tunnel),
        Err(Error::Timeout) => {
            let _ = conn.close().await;
            return Err(Failure::Timeout(format!(
                "tunnel to {:?} ({} ms)",
                args.cluster, args.timeout_ms
            ))
            .into());
        }
        Err(e) => {
            let _ = conn.close().await;
            return Err(anyhow::Error::new(e).context(format!("tunnel to {:?}", args.cluster)));
        }
    };
    let last_rx = Arc::new(Mutex::new(Instant::now()));
    let mut receiver = tokio::spawn(receive(tunnel.clone(), last_rx.clone()));
    let outcome = tokio::select! {
        biased;
        _ = common::interrupted() => Ok(None),
        far_end = &mut receiver => Ok(Some(far_end)),
        sent = send_stdin(&tunnel, Duration::from_millis(args.send_timeout_ms)) => match sent {
            Ok(()) => {
                *lock(&last_rx) = Instant::now();
                tokio::select! {
                    biased;
                    _ = common::interrupted() => Ok(None),
                    far_end = &mut receiver => Ok(Some(far_end)),
                    _ = linger(&last_rx, Duration::from_millis(args.linger_ms)) => Ok(None),
                }
            }
            Err(e) => Err(e),
        },
    };
    let result = match outcome {
        // This side ends the tunnel: close it, then let the receiver finish writing.
        Ok(None) => {
            let closed = tunnel.close().await.context("closing the tunnel");
            // What was received before the close is still written.
            if tokio::time::timeout(Duration::from_secs(1), &mut receiver)
                .await
                .is_err()
            {
                receiver.abort();
            }
            closed
        }
        Ok(Some(far_end)) => {
            let far_end = far_end.context("tunnel receiver")?;
            if far_end.is_ok() {
                eprintln!("petal: the far end closed the tunnel");
            }
            far_end
        }
        Err(e) => {
            let _ = tunnel.close().await;
            Err(e)
        }
    };
    let _ = conn.close().await;
    result
}

/// Sends stdin as messages of up to [`MESSAGE_MAX`] bytes, until its end.
async fn send_stdin(tunnel: &Tunnel, timeout: Duration) -> Result<()> {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0; MESSAGE_MAX];
    loop {
        let n = stdin.read(&mut buf).await.context("reading stdin")?;
        if n == 0 {
            return Ok(());
        }
        match tunnel
            .send(Bytes::copy_from_slice(&buf[..n]), timeout)
            .await
        {
            Ok(()) => {}
            Err(Error::Timeout) => anyhow::bail!("the far end took no data for {timeout:?}"),
            Err(e) => return Err(anyhow::Error::new(e).context("sending into the tunnel")),
        }
    }
}

/// Writes what comes back to stdout until the tunnel ends; `Ok` when the far end closed it
/// gracefully.
async fn receive(tunnel: Arc<Tunnel>, last_rx: Arc<Mutex<Instant>>) -> Result<()> {
    let mut stdout = tokio::io::stdout();
    loop {
        match tunnel.recv().await {
            Ok(message) => {
                *lock(&last_rx) = Instant::now();
                stdout.write_all(&message).await.context("writing stdout")?;
                stdout.flush().await.context("writing stdout")?;
            }
            Err(Error::Closed(reason)) if reason.is_empty() => return Ok(()),
            Err(Error::Closed(reason)) => anyhow::bail!("the tunnel was closed: {reason}"),
            Err(e) => return Err(anyhow::Error::new(e).context("the tunnel broke")),
        }
    }
}

/// Completes once nothing has been received for `idle`.
async fn linger(last_rx: &Mutex<Instant>, idle: Duration) {
    loop {
        let deadline = *lock(last_rx) + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
