//! The replicated store, through Petal's relay extension: [`Connection::kv_get`],
//! [`Connection::kv_put`], [`Connection::kv_delete`] and their conditional forms.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use petal_protocol::relay::ClientPacket;
use petal_protocol::{StoreResult, Version};
use tokio::sync::oneshot;

use crate::conn::{Connection, PendingGuard, Waiter, millis};
use crate::error::Error;
use crate::pool::lock;

/// A stored value, as [`Connection::kv_get`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// Its version: give it to [`Connection::kv_put_if`] or [`Connection::kv_delete_if`] to
    /// change the key only if nobody changed it since.
    pub version: Version,
    /// When it expires, in Unix milliseconds of the key's home (0: never).
    pub expires_ms: u64,
}

/// A store operation, for [`Connection::kv`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Read the key.
    Get,
    /// Write `value`, with a time to live (`None`: for ever), only if the key's version is
    /// `expect` when given ([`Version::NONE`]: only if the key has no value).
    Put {
        /// The value.
        value: Bytes,
        /// Time to live.
        ttl: Option<Duration>,
        /// Compare-and-set.
        expect: Option<Version>,
    },
    /// Delete the key, only if its version is `expect` when given.
    Delete {
        /// Compare-and-delete.
        expect: Option<Version>,
    },
}

impl Connection {
    /// Runs one store operation on `key` and returns the node's answer as it came: the raw
    /// form of the `kv_*` methods (which turn failures into errors). The node enforces
    /// `timeout` and always answers (at worst [`StoreResult::TimedOut`]).
    ///
    /// Fails with [`Error::Unsupported`] when the node did not grant Petal's relay extension
    /// (the original Iris node), and like [`Connection::request`] when the connection ends.
    pub async fn kv(&self, key: &str, op: KvOp, timeout: Duration) -> Result<StoreResult, Error> {
        let inner = self.inner();
        inner.check_open()?;
        if !inner.extended {
            return Err(Error::Unsupported(
                "the node does not speak Petal's store extension",
            ));
        }
        let id = inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&inner.pending);
            if let Some(ended) = &pending.ended {
                return Err(ended.to_error());
            }
            pending.map.insert(id, Waiter::Kv(tx));
        }
        let mut guard = PendingGuard {
            inner,
            id,
            armed: true,
        };
        let key = key.to_owned();
        let timeout_ms = millis(timeout);
        let packet = match op {
            KvOp::Get => ClientPacket::KvGet {
                id,
                key,
                timeout_ms,
            },
            KvOp::Put { value, ttl, expect } => ClientPacket::KvPut {
                id,
                key,
                value,
                ttl_ms: ttl.map_or(0, |t| millis(t).max(1)),
                expect,
                timeout_ms,
            },
            KvOp::Delete { expect } => ClientPacket::KvDelete {
                id,
                key,
                expect,
                timeout_ms,
            },
        };
        inner.send(packet).await?;
        let result = rx.await;
        guard.armed = false;
        result.map_err(|_| inner.ended_error())
    }

    /// The value of `key`, or `None` when it has none (never written, deleted or expired).
    pub async fn kv_get(&self, key: &str, timeout: Duration) -> Result<Option<Entry>, Error> {
        match self.kv(key, KvOp::Get, timeout).await? {
            StoreResult::Found {
                version,
                value,
                expires_ms,
            } => Ok(Some(Entry {
                value,
                version,
                expires_ms,
            })),
            StoreResult::NotFound => Ok(None),
            other => Err(failure(other)),
        }
    }

    /// Writes `value` to `key` (for `ttl`, or for ever); returns the new version once a write
    /// quorum of the key's replicas stored it.
    pub async fn kv_put(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
        timeout: Duration,
    ) -> Result<Version, Error> {
        let op = KvOp::Put {
            value: value.into(),
            ttl,
            expect: None,
        };
        written(self.kv(key, op, timeout).await?)
    }

    /// Writes `value` to `key` only if its version is `expect` ([`Version::NONE`]: only if it
    /// has no value); [`Error::Conflict`] with the current version otherwise.
    pub async fn kv_put_if(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
        expect: Version,
        timeout: Duration,
    ) -> Result<Version, Error> {
        let op = KvOp::Put {
            value: value.into(),
            ttl,
            expect: Some(expect),
        };
        written(self.kv(key, op, timeout).await?)
    }

    /// Deletes `key` (whether or not it has a value); returns the deletion's version.
    pub async fn kv_delete(&self, key: &str, timeout: Duration) -> Result<Version, Error> {
        written(self.kv(key, KvOp::Delete { expect: None }, timeout).await?)
    }

    /// Deletes `key` only if its version is `expect`; [`Error::Conflict`] otherwise.
    pub async fn kv_delete_if(
        &self,
        key: &str,
        expect: Version,
        timeout: Duration,
    ) -> Result<Version, Error> {
        let op = KvOp::Delete {
            expect: Some(expect),
        };
        written(self.kv(key, op, timeout).await?)
    }
}

impl Connection {
    /// Watches `key`: `handler` gets every acknowledged write and delete of it from now on
    /// ([`Change`](petal_protocol::Change)), in the order the key's home acknowledged them,
    /// at most once each, best effort (as publish/subscribe: a change made while the watch is
    /// still reaching the key's home, or while that home is replaced, can be missed). Expiry
    /// is not reported. Stop with [`Connection::kv_unwatch`].
    ///
    /// It is a subscription to the key's watch topic
    /// ([`watch_topic`](petal_protocol::watch_topic)), so it works with plain v1 too: any
    /// client can subscribe to `petal-kv/<key>` and read the changes' text header.
    pub async fn kv_watch(
        &self,
        key: &str,
        handler: impl Fn(petal_protocol::Change) + Send + Sync + 'static,
    ) -> Result<(), Error> {
        self.subscribe(&petal_protocol::watch_topic(key), move |event: Bytes| {
            if let Some(change) = petal_protocol::Change::decode(&event) {
                handler(change);
            }
        })
        .await
    }

    /// Stops watching `key`.
    pub async fn kv_unwatch(&self, key: &str) -> Result<(), Error> {
        self.unsubscribe(&petal_protocol::watch_topic(key)).await
    }
}

fn written(r: StoreResult) -> Result<Version, Error> {
    match r {
        StoreResult::Written(v) => Ok(v),
        other => Err(failure(other)),
    }
}

/// The error for an answer that is not what the call returns.
fn failure(r: StoreResult) -> Error {
    match r {
        StoreResult::Conflict(v) => Error::Conflict(v),
        StoreResult::TimedOut => Error::Timeout,
        StoreResult::Failed(reason) => Error::Store(reason),
        other => Error::Store(format!("unexpected answer {other:?}")),
    }
}
