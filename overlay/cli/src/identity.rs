//! `petal id register|send|who`: identity addressing, through Petal's relay extension.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use petal_client::Error;
use tokio::sync::Notify;

use crate::common::{self, Failure};

/// Flags of `petal id`.
#[derive(Args, Debug)]
#[command(
    after_help = "Exit codes: 0 success, 1 error (no node, a node without Petal's \
                        extension), 3 timeout, 4 no live node holds the identity (send, who)."
)]
pub(crate) struct IdArgs {
    /// What to do.
    #[command(subcommand)]
    command: IdCommand,
    /// Time the node allows for the operation, in milliseconds (enforced by the node).
    #[arg(long, global = true, default_value_t = 5000)]
    timeout_ms: u64,
}

#[derive(Subcommand, Debug)]
enum IdCommand {
    /// Holds an identity and prints the messages sent to it, one per line, until Ctrl-C or
    /// `--count`.
    Register {
        /// The identity.
        identity: String,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Sends a message to whoever holds an identity; prints how many nodes delivered it.
    Send {
        /// The identity.
        identity: String,
        /// The message; read from stdin (to its end) when absent.
        message: Option<String>,
    },
    /// Prints the nodes that hold an identity (id and peer address, one per line).
    Who {
        /// The identity.
        identity: String,
    },
}

/// `petal id`.
pub(crate) async fn id(port: u16, args: IdArgs) -> Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    match args.command {
        IdCommand::Register { identity, count } => register(port, &identity, count, timeout).await,
        IdCommand::Send { identity, message } => {
            let message = common::message_or_stdin(message).await?;
            let conn = common::connect(port).await?;
            let r = conn.id_send(&identity, message, timeout).await;
            let _ = conn.close().await;
            let nodes = r.map_err(|e| failure(e, &identity, "id send"))?;
            common::write_stdout(format!("{nodes}\n").as_bytes())?;
            Ok(())
        }
        IdCommand::Who { identity } => {
            let conn = common::connect(port).await?;
            let r = conn.id_who(&identity, timeout).await;
            let _ = conn.close().await;
            let holders = r.map_err(|e| failure(e, &identity, "id who"))?;
            if holders.is_empty() {
                return Err(Failure::NotFound(identity).into());
            }
            for h in holders {
                common::write_stdout(format!("{} {}\n", h.id, h.addr).as_bytes())?;
            }
            Ok(())
        }
    }
}

/// `petal id register`.
async fn register(port: u16, identity: &str, count: Option<u64>, timeout: Duration) -> Result<()> {
    if count == Some(0) {
        return Ok(());
    }
    // One handler at a time: messages are printed in order.
    let mut options = petal_client::Options::default();
    options.event_handlers = 1;
    let conn = common::connect_with(port, options).await?;
    let seen = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let (s, d) = (seen.clone(), done.clone());
    conn.id_register(
        identity,
        move |message: Bytes| {
            let mut line = message.to_vec();
            line.push(b'\n');
            let _ = common::write_stdout(&line);
            if count.is_some_and(|n| s.fetch_add(1, Ordering::Relaxed) + 1 >= n) {
                d.notify_one();
            }
        },
        timeout,
    )
    .await
    .map_err(|e| failure(e, identity, "id register"))
    .with_context(|| format!("registering {identity:?}"))?;
    eprintln!("petal: registered {identity}");
    tokio::select! {
        biased;
        _ = common::interrupted() => {}
        () = done.notified() => {}
        () = crate::messaging::ended(&conn) => anyhow::bail!("the node closed the connection"),
    }
    let _ = conn.close().await;
    Ok(())
}

/// The error of a failed identity call, with its exit code.
fn failure(e: Error, identity: &str, what: &str) -> anyhow::Error {
    match e {
        Error::Timeout => Failure::Timeout(what.to_owned()).into(),
        Error::UnknownIdentity => Failure::NotFound(identity.to_owned()).into(),
        other => anyhow::Error::new(other).context(format!("{what} failed")),
    }
}
