//! `--session-store redis://host:port[/db]`: identity registries in Redis, for deployments that
//! already run one (the Node.js cluster-messaging design keeps its sessions there). Every node
//! of the network must name the same Redis; nodes then keep no registry in the overlay.
//!
//! Each registry is a Redis hash under its own name (`petal-id/<identity>`): field `v` its
//! version, `d` its value (one line per holding node: `<node id> <address> <expiry ms>`), with
//! the registry's time to live as the key's expiry. Versions come from one counter
//! (`petal-id:version`, INCR), so they never repeat: a compare-and-set on a version read
//! before the key expired fails even if the key was written since. Every operation is one
//! Lua script, atomic in Redis, with the semantics of `petal_core::store::MemoryRegistry`.
//! A standalone Redis (or a primary) is supported, not Redis Cluster (the script's two keys
//! may live in different slots there); `rediss://` (TLS) is not built in.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use petal_node::registry::{BoxFuture, Registry};
use petal_protocol::{StoreOpKind, StoreResult, Version};
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The version counter's key.
const COUNTER: &str = "petal-id:version";

/// `KEYS[1]`: the registry; `KEYS[2]`: the counter. ARGV: op (get|put|del), the expected version
/// ("" any, "0" absent, "-" one Redis never issued), value, time to live in ms (0: none).
/// Replies {0} not found; {1, version, value, pttl}; {2, current version} conflict;
/// {3, new version} written.
const SCRIPT: &str = r"
local cur = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == 'get' then
  if not cur then return {0} end
  return {1, cur, redis.call('HGET', KEYS[1], 'd'), redis.call('PTTL', KEYS[1])}
end
if ARGV[2] ~= '' and ARGV[2] ~= (cur or '0') then
  return {2, cur or '0'}
end
local n = redis.call('INCR', KEYS[2])
if cur and tonumber(cur) >= n then
  -- The counter was lost (a restart without persistence, an eviction): never go back.
  n = tonumber(cur) + 1
  redis.call('SET', KEYS[2], n)
end
local v = string.format('%d', n)
if ARGV[1] == 'put' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'v', v, 'd', ARGV[3])
  if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
else
  redis.call('DEL', KEYS[1])
end
return {3, v}
";

/// Identity registries in one Redis server.
pub(crate) struct RedisRegistry {
    link: Arc<Link>,
    script: Arc<redis::Script>,
    /// The URL with any password left out.
    shown: String,
}

/// The connection to Redis, made again after failures in a row (a half-open TCP connection
/// only ever times out: the connection manager would keep it).
struct Link {
    client: redis::Client,
    config: ConnectionManagerConfig,
    conn: std::sync::Mutex<ConnectionManager>,
    /// Operations in a row that failed for the connection.
    failures: std::sync::atomic::AtomicU32,
    shown: String,
}

/// Failures in a row after which the connection is made anew.
const REDIAL_AFTER: u32 = 3;

impl Link {
    fn conn(&self) -> ConnectionManager {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Counts an operation's outcome: the first failure is logged (warn), the recovery too;
    /// every [`REDIAL_AFTER`] connection failures in a row the connection is made anew.
    fn outcome(&self, error: Option<&redis::RedisError>) {
        use std::sync::atomic::Ordering;
        let Some(e) = error else {
            if self.failures.swap(0, Ordering::Relaxed) > 0 {
                tracing::warn!(store = %self.shown, "session store reachable again");
            }
            return;
        };
        if !(e.is_timeout() || e.is_io_error() || e.is_connection_dropped()) {
            return;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            tracing::warn!(store = %self.shown, error = %e, "session store unreachable: identity operations fail until it is back");
        }
        if n % REDIAL_AFTER == 0
            && let Ok(fresh) =
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        {
            *self
                .conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        }
    }
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// `url` with any password replaced by `***`: the user information's (up to the last `@`:
/// a password may hold `@`) and the `pass`/`password` query parameters (unix sockets).
pub(crate) fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let mut out = match rest.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => format!("{scheme}://{rest}"),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k == "pass" || k == "password" => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Checks the form of a session-store URL (for flags and the config file).
pub(crate) fn check_url(url: &str) -> Result<()> {
    if url.starts_with("rediss://") {
        bail!("--session-store: TLS to Redis (rediss://) is not built into petald");
    }
    if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
        bail!(
            "--session-store {}: use redis://host:port[/db] or redis+unix:///path",
            without_password(url)
        );
    }
    redis::Client::open(url)
        .map(drop)
        .with_context(|| format!("--session-store {}", without_password(url)))
}

impl RedisRegistry {
    /// The Redis at `url` (a malformed URL is an error). The connection is made on first use
    /// and again whenever it fails, so a node starts (and serves everything else) while Redis
    /// is down: identity operations fail with the reason until it is back.
    pub(crate) fn new(url: &str) -> Result<Self> {
        check_url(url)?;
        let shown = without_password(url);
        let client = redis::Client::open(url).with_context(|| format!("session store {shown}"))?;
        // Answers within a second, or the operation fails (the node waits 2 s for each).
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .with_context(|| format!("session store {shown}"))?;
        Ok(RedisRegistry {
            link: Arc::new(Link {
                client,
                config,
                conn: std::sync::Mutex::new(conn),
                failures: std::sync::atomic::AtomicU32::new(0),
                shown: shown.clone(),
            }),
            script: Arc::new(redis::Script::new(SCRIPT)),
            shown,
        })
    }

    /// One operation, to see at start whether Redis answers (the reason when it does not).
    pub(crate) async fn probe(&self) -> Result<(), String> {
        match self
            .run_once("petal-id:probe".into(), StoreOpKind::Get, 0)
            .await
        {
            StoreResult::Failed(why) => Err(why),
            _ => Ok(()),
        }
    }

    fn run_once(&self, name: String, kind: StoreOpKind, wall_ms: u64) -> BoxFuture<StoreResult> {
        let link = self.link.clone();
        let mut conn = link.conn();
        let script = self.script.clone();
        Box::pin(async move {
            let (op, expect, value, ttl) = match &kind {
                StoreOpKind::Get => ("get", String::new(), &[][..], 0),
                StoreOpKind::Put {
                    value,
                    ttl_ms,
                    expect,
                } => ("put", expected(*expect), &value[..], *ttl_ms),
                StoreOpKind::Delete { expect } => ("del", expected(*expect), &[][..], 0),
                _ => return StoreResult::Failed("unsupported registry operation".into()),
            };
            let reply: redis::RedisResult<Vec<Value>> = script
                .key(&name)
                .key(COUNTER)
                .arg(op)
                .arg(expect)
                .arg(value)
                .arg(ttl)
                .invoke_async(&mut conn)
                .await;
            link.outcome(reply.as_ref().err());
            match reply {
                Ok(v) => decode(&v, wall_ms),
                Err(e) => StoreResult::Failed(format!("redis: {e}")),
            }
        })
    }
}

impl Registry for RedisRegistry {
    fn run(&self, name: String, kind: StoreOpKind, wall_ms: u64) -> BoxFuture<StoreResult> {
        self.run_once(name, kind, wall_ms)
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

/// The registry of `--session-store URL`: logs whether Redis answers now (a node starts
/// without it, failing identity operations with the reason until it does).
pub(crate) async fn start(url: &str) -> Result<Arc<dyn Registry>> {
    let registry = RedisRegistry::new(url)?;
    let store = registry.describe();
    match registry.probe().await {
        Ok(()) => tracing::info!(%store, "identity registries in Redis"),
        Err(why) => tracing::warn!(
            %store,
            error = %why,
            "identity registries in Redis, which does not answer: identity operations fail until it does"
        ),
    }
    Ok(Arc::new(registry))
}

/// The script's expected-version argument.
fn expected(v: Option<Version>) -> String {
    match v {
        None => String::new(),
        Some(Version::NONE) => "0".into(),
        // Redis's versions are the counter, with no node part.
        Some(Version { hlc, node: 0 }) => hlc.to_string(),
        Some(_) => "-".into(),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn version(v: &Value) -> Option<Version> {
    Some(Version {
        hlc: text(v)?.parse().ok()?,
        node: 0,
    })
}

/// The script's reply as a store result (`now_ms`: the wall clock, for the expiry time).
fn decode(reply: &[Value], now_ms: u64) -> StoreResult {
    let bad = || StoreResult::Failed(format!("redis: unexpected reply {reply:?}"));
    match reply {
        [Value::Int(0)] => StoreResult::NotFound,
        [Value::Int(1), v, d, pttl] => {
            let (Some(version), Value::BulkString(value)) = (version(v), d) else {
                return bad();
            };
            // -1: no expiry; 0 or more: expires that many ms from now.
            let expires_ms = match pttl {
                Value::Int(ms) if *ms >= 0 => now_ms.saturating_add(ms.unsigned_abs()),
                _ => 0,
            };
            StoreResult::Found {
                version,
                value: value.clone().into(),
                expires_ms,
            }
        }
        [Value::Int(2), v] => version(v).map_or_else(bad, StoreResult::Conflict),
        [Value::Int(3), v] => version(v).map_or_else(bad, StoreResult::Written),
        _ => bad(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script against the reference semantics: one random sequence of gets, puts and
    /// deletes (plain and conditional on the current, a stale or no version; with and without
    /// a time to live) run on a fresh `redis-server` and on a `MemoryRegistry` gives the same
    /// answers, versions included. Skipped when redis-server is not installed (unless
    /// `PETAL_REDIS=1`).
    #[tokio::test]
    async fn the_script_answers_as_the_reference_registry_does() {
        use petal_core::store::MemoryRegistry;
        use std::process::{Command, Stdio};
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(std::env::var("PETAL_REDIS").as_deref() != Ok("1"));
            eprintln!("redis-server not installed: skipped");
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        /// Kills the server however the test ends.
        struct Server(std::process::Child);
        impl Drop for Server {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _server = Server(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let url = format!("redis://127.0.0.1:{port}");
        let redis = RedisRegistry::new(&url).unwrap();
        let mut up = false;
        for _ in 0..200 {
            if redis.probe().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(up, "redis-server did not start");
        let mut reference = MemoryRegistry::new();
        let wall = 1_000_000;
        let mut rng: u64 = 0x5eed;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let names = ["petal-id/a", "petal-id/b", "petal-id/c"];
        let mut seen = vec![Version::NONE];
        for step in 0..600 {
            let name = names[usize::try_from(next(3)).unwrap()];
            let expect = match next(4) {
                0 => None,
                1 => Some(Version::NONE),
                _ => Some(seen[usize::try_from(next(seen.len() as u64)).unwrap()]),
            };
            let kind = match next(3) {
                0 => StoreOpKind::Get,
                1 => StoreOpKind::Put {
                    value: format!("v{step}").into(),
                    ttl_ms: [0, 60_000][usize::try_from(next(2)).unwrap()],
                    expect,
                },
                _ => StoreOpKind::Delete { expect },
            };
            let want = reference.apply(wall, name, kind.clone());
            let got = redis.run(name.into(), kind.clone(), wall).await;
            if let StoreResult::Written(v) = &want {
                seen.push(*v);
            }
            let same = match (&want, &got) {
                (
                    StoreResult::Found {
                        version: v1,
                        value: d1,
                        expires_ms: e1,
                    },
                    StoreResult::Found {
                        version: v2,
                        value: d2,
                        expires_ms: e2,
                    },
                ) => v1 == v2 && d1 == d2 && e1.abs_diff(*e2) <= 5_000 && (*e1 == 0) == (*e2 == 0),
                _ => want == got,
            };
            assert!(same, "step {step}: {kind:?} on {name}: {want:?} != {got:?}");
        }
        // A time to live ends the value in Redis too.
        let put = StoreOpKind::Put {
            value: "brief".into(),
            ttl_ms: 50,
            expect: None,
        };
        assert!(matches!(
            redis.run("petal-id/t".into(), put, wall).await,
            StoreResult::Written(_)
        ));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            redis.run("petal-id/t".into(), StoreOpKind::Get, wall).await,
            StoreResult::NotFound
        );
    }

    #[test]
    fn passwords_are_left_out_of_what_is_shown() {
        assert_eq!(
            without_password("redis://:s3cret@10.0.0.1:6379/2"),
            "redis://:***@10.0.0.1:6379/2"
        );
        assert_eq!(
            without_password("redis://app:s3cret@h:1"),
            "redis://app:***@h:1"
        );
        assert_eq!(without_password("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            without_password("redis://:p@ss@h:1/0"),
            "redis://:***@h:1/0"
        );
        assert_eq!(
            without_password("redis+unix:///run/redis.sock?db=2&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=2&pass=***"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("redis://127.0.0.1:6379/3").is_ok());
        let e = format!("{:#}", check_url("rediss://h:1").unwrap_err());
        assert!(e.contains("TLS"), "{e}");
        let e = format!("{:#}", check_url("http://:pw@h:1").unwrap_err());
        assert!(e.contains("redis://host:port") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn expected_versions_map_to_the_script_s_argument() {
        assert_eq!(expected(None), "");
        assert_eq!(expected(Some(Version::NONE)), "0");
        assert_eq!(expected(Some(Version { hlc: 42, node: 0 })), "42");
        // A version of the overlay's store never matches one of Redis.
        assert_eq!(expected(Some(Version { hlc: 42, node: 7 })), "-");
    }

    #[test]
    fn replies_decode() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(decode(&[Value::Int(0)], 5), StoreResult::NotFound);
        assert_eq!(
            decode(&[Value::Int(1), bulk("9"), bulk("x"), Value::Int(1000)], 5),
            StoreResult::Found {
                version: Version { hlc: 9, node: 0 },
                value: "x".into(),
                expires_ms: 1005,
            }
        );
        assert_eq!(
            decode(&[Value::Int(1), bulk("9"), bulk("x"), Value::Int(-1)], 5),
            StoreResult::Found {
                version: Version { hlc: 9, node: 0 },
                value: "x".into(),
                expires_ms: 0,
            }
        );
        assert_eq!(
            decode(&[Value::Int(2), bulk("0")], 5),
            StoreResult::Conflict(Version::NONE)
        );
        assert_eq!(
            decode(&[Value::Int(3), bulk("12")], 5),
            StoreResult::Written(Version { hlc: 12, node: 0 })
        );
        assert!(matches!(
            decode(&[Value::Int(3), bulk("twelve")], 5),
            StoreResult::Failed(_)
        ));
        assert!(matches!(decode(&[], 5), StoreResult::Failed(_)));
    }
}
