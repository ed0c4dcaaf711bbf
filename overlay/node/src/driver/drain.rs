//! The node task's output after each input: the core's messages to their links, its events
//! to their sessions, and what those events ask of the core.

use std::sync::atomic::Ordering;
use std::time::Duration;

use petal_core::Event;

use super::{Driver, Input};
use crate::RuntimeStats;
use crate::net::Net;

impl<N: Net> Driver<N> {
    /// Sends everything the core produced and hands events to their sessions, then does what
    /// the events asked of the core (unregister sessions cut off for being far behind, serve
    /// alone after a failed join) and drains what that produced.
    pub(crate) fn flush(&mut self) {
        self.ready.store(self.node.is_ready(), Ordering::Relaxed);
        let retries = self.node.stats().join_retries;
        if retries != self.join_retries_logged {
            self.join_retries_logged = retries;
            if let Some(p) = self.node.join_progress() {
                tracing::debug!(
                    contacts = p.contacts,
                    via = ?p.via.map(|v| v.addr),
                    timed_out = p.attempts_timed_out,
                    announced = p.announced,
                    unacknowledged = ?p.unacknowledged.iter().map(|i| i.addr).collect::<Vec<_>>(),
                    "join attempt timed out"
                );
            }
        }
        // What the events ask of the core is done after they are all delivered (event delivery
        // never calls into the core), then what that produced is drained too.
        // A session cut off in the second drain waits for the next flush (its writer is gone
        // already; the core drops what it still gets).
        self.drain_core();
        for _ in 0..2 {
            let doomed = self.sessions.take_doomed();
            if !self.join_failed && doomed.is_empty() {
                break;
            }
            // (The clock is read only here: flush runs after every input.)
            let now = self.now();
            if std::mem::take(&mut self.join_failed) {
                tracing::warn!("join failed; serving as a ring of one");
                self.node.start_first(now);
            }
            for conn in doomed {
                let _ = self.node.unregister(now, petal_core::ConnId(conn));
            }
            self.drain_core();
        }
    }

    /// Sends every queued transmit and delivers every queued event, once (a failed join is
    /// noted in `join_failed`).
    pub(super) fn drain_core(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            self.transmit(t.to, t.msg);
        }
        let chunk_limit = self.node.config().tunnel_chunk_limit;
        while let Some(ev) = self.node.poll_event() {
            match ev {
                Event::JoinFailed => self.join_failed = true,
                Event::Joined => tracing::info!(id = %self.node.id(), "joined the ring"),
                Event::PeerDead { peer } => {
                    tracing::debug!(%peer, "peer declared dead");
                    // Its link, if any, is stale; the next message re-dials.
                    self.links.remove(&peer);
                }
                Event::RegistryOp {
                    op,
                    name,
                    kind,
                    timeout_ms,
                    wall_ms,
                } => self.run_registry_op(op, (name, kind), timeout_ms, wall_ms),
                ev if ev.conn().is_some() => self.sessions.event(chunk_limit, ev),
                _ => {}
            }
        }
        self.sessions.flush_batches();
    }

    /// Runs a registry operation of the core on the external registry, on its own task; the
    /// answer (or `TimedOut` after `timeout_ms`) comes back as [`Input::Registry`].
    fn run_registry_op(
        &mut self,
        op: u64,
        (name, kind): (String, petal_protocol::StoreOpKind),
        timeout_ms: u32,
        wall_ms: u64,
    ) {
        use petal_protocol::StoreResult;
        let Some(registry) = self.opts.registry.clone() else {
            let now = self.now();
            let why = StoreResult::Failed("this node has no external registry".into());
            self.node.registry_result(now, op, why);
            return;
        };
        RuntimeStats::add(&self.stats.registry_ops, 1);
        let inputs = self.inputs.clone();
        let stats = self.stats.clone();
        let wait = Duration::from_millis(u64::from(timeout_ms));
        crate::spawn_here(async move {
            let result = tokio::time::timeout(wait, registry.run(name, kind, wall_ms))
                .await
                .unwrap_or(StoreResult::TimedOut);
            if matches!(result, StoreResult::Failed(_) | StoreResult::TimedOut) {
                RuntimeStats::add(&stats.registry_failures, 1);
                tracing::debug!(op, ?result, "registry operation failed");
            }
            // The node may be gone (shut down): then nobody waits for the answer.
            let _ = inputs.send(Input::Registry { op, result }).await;
        });
    }
}
