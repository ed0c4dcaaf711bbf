//! Identity registries outside the overlay: a deployment that already runs a shared store
//! (petald's `--session-store redis://...`) keeps the registries there. The core's leases,
//! sends and presence queries work as with the overlay store; only their registry reads and
//! writes go to the driver as [`Event::RegistryOp`], which runs them with the same semantics
//! (versions, compare-and-set, time to live) and answers with [`Node::registry_result`].
//!
//! Every node of a network must keep its registries in the same place: a node using the
//! overlay and one using an external registry do not see each other's identities.

use std::collections::BTreeMap;

use bytes::Bytes;
use petal_protocol::{StoreOpKind, StoreResult, Version};

use crate::node::Node;
use crate::time::Time;

#[cfg(doc)]
use crate::Event;

impl Node {
    /// Keeps identity registries in the driver's registry (`on`) or in the overlay store (the
    /// default). Registry operations then come out as [`Event::RegistryOp`]; a get of a key
    /// under `petal-id/` by an application ([`Node::kv`]) goes there too. Set it before any
    /// connection registers an identity (operations under way keep their way).
    pub fn set_external_registry(&mut self, on: bool) {
        self.store_mut().external_registry = on;
    }

    /// Whether identity registries live in the driver's registry.
    pub fn external_registry(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.external_registry)
    }

    /// The driver's answer to [`Event::RegistryOp`] `op`. An answer to an operation that
    /// timed out, or to no registry operation, is ignored (false).
    pub fn registry_result(&mut self, now: Time, op: u64, result: StoreResult) -> bool {
        let external = self
            .store
            .as_ref()
            .and_then(|s| s.issued.get(&op))
            .is_some_and(|i| i.external);
        if external {
            // The driver's `TimedOut` is its own timeout: the node reports it as one.
            self.on_store_reply(now, op, result);
            self.drain_loopback(now);
        }
        external
    }
}

/// A registry in memory with the semantics [`Event::RegistryOp`] asks for: the reference an
/// external registry (petald's Redis one) follows, and the registry of tests and simulations.
///
/// Versions are a counter that never repeats (so a compare-and-set on a version read before the
/// key expired or was deleted fails, even if the key was written again); a value with a time to
/// live is gone once it expires.
#[derive(Clone, Debug, Default)]
pub struct MemoryRegistry {
    /// Key -> (version, value, expiry in wall-clock ms, 0: never).
    entries: BTreeMap<String, (Version, Bytes, u64)>,
    /// The last version issued.
    counter: u64,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `kind` on `name` at wall-clock time `wall_ms`.
    pub fn apply(&mut self, wall_ms: u64, name: &str, kind: StoreOpKind) -> StoreResult {
        if self
            .entries
            .get(name)
            .is_some_and(|e| e.2 != 0 && e.2 <= wall_ms)
        {
            self.entries.remove(name);
        }
        let current = self.entries.get(name).map_or(Version::NONE, |e| e.0);
        let expect = match &kind {
            StoreOpKind::Get => {
                return self.entries.get(name).map_or(StoreResult::NotFound, |e| {
                    StoreResult::Found {
                        version: e.0,
                        value: e.1.clone(),
                        expires_ms: e.2,
                    }
                });
            }
            StoreOpKind::Put { expect, .. } | StoreOpKind::Delete { expect } => *expect,
            _ => return StoreResult::Failed("unsupported registry operation".into()),
        };
        if expect.is_some_and(|v| v != current) {
            return StoreResult::Conflict(current);
        }
        self.counter += 1;
        let version = Version {
            hlc: self.counter,
            node: 0,
        };
        match kind {
            StoreOpKind::Put { value, ttl_ms, .. } => {
                let expires = if ttl_ms == 0 {
                    0
                } else {
                    wall_ms.saturating_add(ttl_ms)
                };
                self.entries
                    .insert(name.to_owned(), (version, value, expires));
            }
            _ => {
                self.entries.remove(name);
            }
        }
        StoreResult::Written(version)
    }

    /// Keys with a value (expired ones may be among them until touched).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key has a value.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
