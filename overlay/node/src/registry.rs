//! Identity registries outside the overlay (petald's `--session-store redis://...`): when
//! [`Options::registry`](crate::Options::registry) names one, the node keeps every identity
//! registry there instead of in the overlay's store. The core still runs the leases, sends
//! and presence queries; the driver runs each registry operation the core asks for
//! ([`petal_core::Event::RegistryOp`]) on the [`Registry`], on its own task, and hands the
//! answer back (or [`StoreResult::TimedOut`] after the operation's timeout). A slow or absent
//! registry delays identity operations only: nothing else waits for it.
//!
//! Every node of a network must use the same registry (or all the overlay's store): nodes
//! that keep registries in different places do not see each other's identities.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use petal_core::store::MemoryRegistry;
use petal_protocol::{StoreOpKind, StoreResult};

/// A boxed future that can move between threads.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A shared store of identity registries with the semantics of
/// [`petal_core::store::MemoryRegistry`]: versions that never repeat, compare-and-set on a
/// version ([`petal_protocol::Version::NONE`]: must be absent), values that expire after their
/// time to live.
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    /// Runs `kind` on the registry key `name` (`petal-id/<identity>`) at the node's wall-clock
    /// time `wall_ms` (Unix ms: expiry times count in it). A registry that cannot answer says
    /// why with [`StoreResult::Failed`].
    fn run(&self, name: String, kind: StoreOpKind, wall_ms: u64) -> BoxFuture<StoreResult>;

    /// Where the registry is, for logs and the admin API (no secrets: a password in a URL
    /// is left out).
    fn describe(&self) -> String;
}

/// A registry in this process's memory, shared by the nodes given the same one: for tests and
/// for several nodes in one process (nodes in other processes cannot see it).
#[derive(Clone, Debug, Default)]
pub struct SharedMemoryRegistry {
    inner: Arc<Mutex<MemoryRegistry>>,
}

impl SharedMemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys with a value.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key has a value.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryRegistry> {
        // A panic elsewhere while holding the lock leaves a consistent map (each apply is
        // one insert or remove): keep using it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Registry for SharedMemoryRegistry {
    fn run(&self, name: String, kind: StoreOpKind, wall_ms: u64) -> BoxFuture<StoreResult> {
        let result = self.lock().apply(wall_ms, &name, kind);
        Box::pin(async move { result })
    }

    fn describe(&self) -> String {
        "memory (this process)".into()
    }
}
