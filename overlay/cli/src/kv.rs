//! `petal kv get|put|del`: the replicated store, through Petal's relay extension.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use petal_client::{Change, Error, Version};
use tokio::sync::Notify;

use crate::common::{self, Failure};

/// Flags of `petal kv`.
#[derive(Args, Debug)]
#[command(
    after_help = "Exit codes: 0 success, 1 error (no node, a node without Petal's \
                        store extension, a quorum not reached), 3 timeout, 4 the key has no \
                        value (get), 5 a conditional write found another version."
)]
pub(crate) struct KvArgs {
    /// What to do.
    #[command(subcommand)]
    command: KvCommand,
    /// Time the node allows for the operation, in milliseconds (enforced by the node).
    #[arg(long, global = true, default_value_t = 5000)]
    timeout_ms: u64,
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Prints the value of a key (its bytes as stored; a newline is added only on a terminal).
    Get {
        /// The key.
        key: String,
        /// Also print the version and expiry on stderr.
        #[arg(long)]
        meta: bool,
    },
    /// Writes a value and prints its version.
    Put {
        /// The key.
        key: String,
        /// The value; read from stdin (to its end) when absent.
        value: Option<String>,
        /// Time to live: `500ms`, `30s`, `5m`, `2h` (default: for ever).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// Only if the key's version is this one (as printed by put or `get --meta`).
        #[arg(long, conflicts_with = "if_absent")]
        if_version: Option<Version>,
        /// Only if the key has no value.
        #[arg(long)]
        if_absent: bool,
    },
    /// Prints every change of a key (`put <version> <expires_ms> <value>` or
    /// `del <version>`, one per line) until Ctrl-C or `--count`.
    Watch {
        /// The key.
        key: String,
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Deletes a key and prints the deletion's version.
    Del {
        /// The key.
        key: String,
        /// Only if the key's version is this one.
        #[arg(long)]
        if_version: Option<Version>,
    },
}

/// `30s`, `500ms`, `5m`, `2h`, or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 5m, 2h)"))?;
    let secs = |k: u64| {
        n.checked_mul(k)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m or h)")),
    }
}

/// `petal kv`.
pub(crate) async fn kv(port: u16, args: KvArgs) -> Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let value = match &args.command {
        KvCommand::Put { value, .. } => Some(common::message_or_stdin(value.clone()).await?),
        _ => None,
    };
    if let KvCommand::Watch { key, count } = args.command {
        return watch(port, &key, count).await;
    }
    let conn = common::connect(port).await?;
    let outcome = match args.command {
        KvCommand::Watch { .. } => Ok(()),
        KvCommand::Get { key, meta } => match conn.kv_get(&key, timeout).await {
            Ok(Some(entry)) => {
                common::write_stdout(&entry.value).context("writing the value")?;
                if std::io::stdout().is_terminal() && !entry.value.ends_with(b"\n") {
                    common::write_stdout(b"\n")?;
                }
                if meta {
                    eprintln!("version {} expires_ms {}", entry.version, entry.expires_ms);
                }
                Ok(())
            }
            Ok(None) => Err(Failure::NotFound(key).into()),
            Err(e) => Err(failure(e, "kv get")),
        },
        KvCommand::Put {
            key,
            ttl,
            if_version,
            if_absent,
            ..
        } => {
            let value = value.unwrap_or_default();
            let expect = if_absent.then_some(Version::NONE).or(if_version);
            let r = match expect {
                Some(v) => conn.kv_put_if(&key, value, ttl, v, timeout).await,
                None => conn.kv_put(&key, value, ttl, timeout).await,
            };
            print_version(r.map_err(|e| failure(e, "kv put")))
        }
        KvCommand::Del { key, if_version } => {
            let r = match if_version {
                Some(v) => conn.kv_delete_if(&key, v, timeout).await,
                None => conn.kv_delete(&key, timeout).await,
            };
            print_version(r.map_err(|e| failure(e, "kv del")))
        }
    };
    let _ = conn.close().await;
    outcome
}

/// `petal kv watch`.
async fn watch(port: u16, key: &str, count: Option<u64>) -> Result<()> {
    if count == Some(0) {
        return Ok(());
    }
    // One handler at a time: changes are printed in order.
    let mut options = petal_client::Options::default();
    options.event_handlers = 1;
    let conn = common::connect_with(port, options).await?;
    let seen = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let (s, d) = (seen.clone(), done.clone());
    conn.kv_watch(key, move |c: Change| {
        let line = match &c.value {
            Some(v) => format!(
                "put {} {} {}\n",
                c.version,
                c.expires_ms,
                String::from_utf8_lossy(v)
            ),
            None => format!("del {}\n", c.version),
        };
        let _ = common::write_stdout(line.as_bytes());
        if count.is_some_and(|n| s.fetch_add(1, Ordering::Relaxed) + 1 >= n) {
            d.notify_one();
        }
    })
    .await
    .with_context(|| format!("watching {key:?}"))?;
    eprintln!("petal: watching {key}");
    tokio::select! {
        biased;
        _ = common::interrupted() => {}
        () = done.notified() => {}
        () = crate::messaging::ended(&conn) => anyhow::bail!("the node closed the connection"),
    }
    let _ = conn.close().await;
    Ok(())
}

fn print_version(r: Result<Version>) -> Result<()> {
    let v = r?;
    common::write_stdout(format!("{v}\n").as_bytes())?;
    Ok(())
}

/// The error of a failed store call, with its exit code.
fn failure(e: Error, what: &str) -> anyhow::Error {
    match e {
        Error::Timeout => Failure::Timeout(what.to_owned()).into(),
        Error::Conflict(current) if current == Version::NONE => {
            Failure::Conflict("the key has no value".to_owned()).into()
        }
        Error::Conflict(current) => {
            Failure::Conflict(format!("the key's version is {current}")).into()
        }
        other => anyhow::Error::new(other).context(format!("{what} failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_their_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
