//! # petal-sim
//!
//! Deterministic simulation of Petal. The discrete-event [`engine`] drives many `petal-core`
//! nodes directly over a seeded network model ([`topology`]), injects joins, crashes,
//! restarts, leaves, loss and partitions, and checks the overlay against oracles (leaf-set
//! correctness, lookup consistency). [`scenario`] reads scenario files and runs them;
//! [`report`] writes their reports. Every seed derives from one master seed.
//!
//! ## Layout
//! - [`engine`]: event queue, nodes, message delivery, fault injection, oracles.
//! - [`apps`]: simulated applications (members, clients, subscribers, tunnel users) and the
//!   messaging oracles' records.
//! - [`metrics`]: what the engine measures.
//! - [`oracle`]: the messaging oracles' judgements (exactly one outcome, exactly-once events,
//!   fairness, tunnel integrity).
//! - [`queue`]: the calendar event queue.
//! - [`realstack`]: the turmoil harness: petal-node and petal-client applications on simulated
//!   hosts and TCP, with crashes, restarts and partitions, judged by the same oracles.
//! - [`topology`]: network delay models (transit-stub via petgraph, geometric, uniform).
//! - [`scenario`]: scenario files and their runners.
//! - [`report`]: Markdown, JSON and PNG report writing.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::too_many_lines)
)]

pub mod apps;
pub mod engine;
pub mod metrics;
pub mod oracle;
pub mod queue;
pub mod realstack;
pub mod report;
pub mod scenario;
pub mod topology;

pub use engine::{Sim, SimConfig};

/// An id or size from the simulation (a `u64`) as a `usize`, to index the in-memory records it
/// numbers. Such values fit `usize` on every target the simulator holds its records on; one
/// that does not becomes `usize::MAX`, an index no vector reaches (`get` finds nothing).
pub(crate) fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// A count of in-memory items (nodes, components, runs) as a `u32`. Nodes are numbered with
/// `u32`, so their counts fit; a count that does not saturates at `u32::MAX`.
pub(crate) fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A `Duration`'s microseconds (a `u128`) as a `u64`, saturating (a `u64` holds 584,000 years).
pub(crate) fn micros_u64(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
