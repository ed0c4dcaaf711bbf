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
