//! `petal status`, `peers`, `routes`, `clusters`, `topics`, `tunnels`, `sessions`: the node's
//! state read from its admin HTTP API (`petald --admin`, 127.0.0.1:55558 by default), as
//! tables for people or, with `--json`, the API's JSON for scripts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where the admin API is and how to print.
#[derive(clap::Args, Debug)]
pub(crate) struct AdminArgs {
    /// Address of the node's admin API (petald --admin).
    #[arg(long, default_value = "127.0.0.1:55558")]
    admin: SocketAddr,
    /// File whose first line is the admin API's bearer token (petald --admin-token-file).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// What to show.
#[derive(Clone, Copy, Debug)]
pub(crate) enum View {
    Status,
    Peers,
    Routes,
    Clusters,
    Topics,
    Tunnels,
    Sessions,
}

/// Largest answer read (the API's documents are far smaller).
const MAX_ANSWER: u64 = 64 << 20;

/// `GET path` from the admin API: the body, parsed.
async fn get(args: &AdminArgs, path: &str) -> Result<Value> {
    let token = match &args.admin_token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("reading the token file {}", p.display()))?;
            Some(t.lines().next().unwrap_or("").trim().to_string())
        }
        None => None,
    };
    let addr = args.admin;
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("the admin API at {addr} does not answer"))?
        .map_err(|e| {
            anyhow!(
                "no admin API at {addr} ({e}): is petald running, with its admin API on \
                 (petald --admin)? Point at it with --admin ADDR"
            )
        })?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        (&mut s).take(MAX_ANSWER).read_to_end(&mut raw),
    )
    .await
    .map_err(|_| anyhow!("the admin API at {addr} did not finish its answer"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{addr} did not answer HTTP"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{addr} did not answer HTTP"))?;
    let doc: Option<Value> = serde_json::from_str(body).ok();
    let why = doc
        .as_ref()
        .and_then(|d| d["error"].as_str())
        .unwrap_or(body)
        .to_string();
    match status {
        200 => doc.ok_or_else(|| anyhow!("{path} did not answer JSON")),
        401 => bail!("the admin API at {addr} needs its token: --admin-token-file FILE"),
        _ => bail!("{path}: HTTP {status}: {why}"),
    }
}

/// Prints `rows` under `headers`, columns aligned (numbers to the right).
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let out: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| {
                let numeric = !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit() || ch == '.');
                if numeric {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        println!("{}", out.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// A JSON value as a table cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Array(a) => a.len().to_string(),
        Value::Object(_) => v.to_string(),
    }
}

fn rows(doc: &Value, keys: &[&str]) -> Vec<Vec<String>> {
    doc.as_array()
        .map(|a| {
            a.iter()
                .map(|e| keys.iter().map(|k| cell(&e[*k])).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// `petal status`.
fn print_status(doc: &Value) {
    let d = &doc["discovery"];
    let discovery = match d["error"].as_str() {
        Some(e) => format!("{} {} ({e})", cell(&d["state"]), cell(&d["group"])),
        None => format!("{} {}", cell(&d["state"]), cell(&d["group"])),
    };
    let state = if doc["ready"] == true {
        "ready"
    } else if doc["joining"] == true {
        "joining"
    } else {
        "not ready"
    };
    let relay: Vec<String> = doc["relay_addrs"]
        .as_array()
        .map(|a| a.iter().map(cell).collect())
        .unwrap_or_default();
    let mem = format!(
        "{} of {} bytes",
        cell(&doc["memory_used_bytes"]),
        cell(&doc["memory_budget_bytes"])
    );
    for (k, v) in [
        ("id", cell(&doc["id"])),
        ("version", cell(&doc["version"])),
        ("state", state.to_string()),
        ("uptime", format!("{} s", cell(&doc["uptime_s"]))),
        ("peer address", cell(&doc["peer_addr"])),
        ("relay", relay.join(", ")),
        (
            "links",
            format!(
                "{} (encrypted: {})",
                cell(&doc["links"]),
                cell(&doc["encrypted"])
            ),
        ),
        ("discovery", discovery),
        ("leaf set", cell(&doc["leaf_set"])),
        ("routes", cell(&doc["routes"])),
        ("sessions", cell(&doc["sessions"])),
        ("memory", mem),
        (
            "store",
            format!(
                "{} keys, {} bytes; identities in {}",
                cell(&doc["store_keys"]),
                cell(&doc["store_bytes"]),
                cell(&doc["identity_registry"])
            ),
        ),
    ] {
        println!("{k:<13} {v}");
    }
}

/// `petal routes`: the leaf set, then the routing table.
fn print_routes(leaf: &Value, doc: &Value) {
    println!("leaf set of {}", cell(&leaf["id"]));
    let mut side_rows = Vec::new();
    for side in ["left", "right"] {
        for e in leaf[side].as_array().into_iter().flatten() {
            side_rows.push(vec![
                side.to_string(),
                cell(&e["id"]),
                cell(&e["addr"]),
                cell(&e["rtt_ms"]),
            ]);
        }
    }
    table(&["side", "id", "address", "rtt_ms"], &side_rows);
    println!("\nrouting table");
    table(
        &["row", "column", "id", "address", "rtt_ms"],
        &rows(doc, &["row", "column", "id", "addr", "rtt_ms"]),
    );
}

/// Runs one view.
pub(crate) async fn show(view: View, args: AdminArgs) -> Result<()> {
    let path = match view {
        View::Status => "/v1/node",
        View::Peers => "/v1/peers",
        View::Routes => "/v1/routes",
        View::Clusters => "/v1/clusters",
        View::Topics => "/v1/topics",
        View::Tunnels => "/v1/tunnels",
        View::Sessions => "/v1/sessions",
    };
    let doc = get(&args, path).await?;
    if args.json {
        if matches!(view, View::Routes) {
            let leaf = get(&args, "/v1/leafset").await?;
            println!("{}", serde_json::json!({ "leafset": leaf, "routes": doc }));
        } else {
            println!("{doc}");
        }
        return Ok(());
    }
    match view {
        View::Status => print_status(&doc),
        View::Peers => table(
            &[
                "id",
                "address",
                "state",
                "direction",
                "rtt_ms",
                "bytes_in",
                "bytes_out",
                "age_s",
            ],
            &rows(
                &doc,
                &[
                    "id",
                    "addr",
                    "state",
                    "direction",
                    "rtt_ms",
                    "bytes_in",
                    "bytes_out",
                    "age_s",
                ],
            ),
        ),
        View::Routes => print_routes(&get(&args, "/v1/leafset").await?, &doc),
        View::Clusters | View::Topics => table(
            &[
                "name",
                "role",
                "parent",
                "children",
                "members",
                "subtree_members",
            ],
            &rows(
                &doc,
                &[
                    "name",
                    "role",
                    "parent",
                    "children",
                    "members",
                    "subtree_members",
                ],
            ),
        ),
        View::Tunnels => table(
            &["conn", "id", "phase", "peer", "queued_out", "queued_in"],
            &rows(
                &doc,
                &[
                    "conn",
                    "id",
                    "phase",
                    "peer",
                    "queued_out_bytes",
                    "queued_in_bytes",
                ],
            ),
        ),
        View::Sessions => table(
            &[
                "conn",
                "age_s",
                "queued_bytes",
                "dropped",
                "pending",
                "clusters",
                "topics",
            ],
            &doc.as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let names = |k: &str| -> String {
                        s[k].as_array()
                            .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(","))
                            .unwrap_or_default()
                    };
                    vec![
                        cell(&s["conn"]),
                        cell(&s["age_s"]),
                        cell(&s["queued_bytes"]),
                        cell(&s["dropped"]),
                        cell(&s["pending_requests"]),
                        names("clusters"),
                        names("topics"),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}
