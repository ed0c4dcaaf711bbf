//! # petal-client
//!
//! The async Rust client library of Petal: it speaks the relay protocol v1 (`"v1.0-draft2"`)
//! to the node daemon on the local machine (`petald`, or the original Iris node), which does
//! the rest: finding cluster members and topic subscribers anywhere in the network, load
//! balancing, timeouts, end-to-end flow control.
//!
//! ## Model
//! An application opens a [`Connection`] to its local node, either as a plain client or, with
//! [`register`], as a [`Service`]: a member of a named cluster. Everything is addressed by
//! name, never by host:
//! - request/reply: [`Connection::request`] asks one member of a cluster (chosen by the node)
//!   and gets exactly one outcome: the reply, the service's fault ([`Error::Remote`]) or a
//!   timeout ([`Error::Timeout`]) enforced by the node; this library keeps no timer.
//! - broadcast: [`Connection::broadcast`] reaches every member of a cluster.
//! - publish/subscribe: [`Connection::publish`] reaches every subscriber of a topic;
//!   [`Connection::subscribe`] takes a [`TopicHandler`].
//! - tunnels: [`Connection::tunnel`] opens an ordered, credit-throttled stream of whole
//!   messages to one member of a cluster ([`Tunnel`]); the member gets the other end through
//!   [`ServiceHandler::handle_tunnel`].
//! - the replicated store (Petal's relay extension, `"v1.0-draft2+petal1"`, asked for by
//!   default: [`Options::extensions`]): [`Connection::kv_get`], [`Connection::kv_put`] (with a
//!   time to live), [`Connection::kv_put_if`] (compare-and-set on a [`Version`]),
//!   [`Connection::kv_delete`], [`Connection::kv_delete_if`], [`Connection::kv`] for the
//!   node's answer as it came, and [`Connection::kv_watch`] for a key's changes.
//! - identities (the same extension): [`Connection::id_register`] holds a name (its messages
//!   go to a handler), [`Connection::id_send`] reaches whoever holds one, wherever attached,
//!   [`Connection::id_who`] lists the nodes.
//!
//! Deliveries to a service (requests, broadcasts, tunnels) and topic events go to handlers
//! running on tokio tasks, with bounded concurrency and bounded queued bytes per category
//! ([`Options`]); what does not fit is dropped and counted ([`Stats`]), never queued without
//! bound.
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use petal_client::{Connection, ServiceHandler, register};
//!
//! struct Echo;
//!
//! impl ServiceHandler for Echo {
//!     async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
//!         Ok(request)
//!     }
//! }
//!
//! # async fn demo() -> Result<(), petal_client::Error> {
//! // A member of the cluster "echo" on the local node's default port.
//! let service = register(petal_client::DEFAULT_PORT, "echo", Echo).await?;
//!
//! // A plain client asking it.
//! let client = Connection::connect(petal_client::DEFAULT_PORT).await?;
//! let reply = client.request("echo", "hello", Duration::from_secs(1)).await?;
//! assert_eq!(reply, Bytes::from("hello"));
//!
//! // Topics.
//! client.subscribe("news", |event: Bytes| println!("event: {event:?}")).await?;
//! client.publish("news", "something happened").await?;
//!
//! client.close().await?;
//! service.close().await?;
//! # Ok(()) }
//! ```
//!
//! Any connected byte stream works in place of TCP, e.g. a simulator's:
//!
//! ```no_run
//! # async fn demo(stream: tokio::io::DuplexStream) -> Result<(), petal_client::Error> {
//! let conn = petal_client::Connection::with_stream(stream).await?;
//! # Ok(()) }
//! ```
//!
//! ## How it works
//! Writes go through a combining outbox: packets are encoded whole into one queue, and a
//! caller that finds no write in progress writes the queue to the socket itself with
//! non-blocking writes (no task switch on the request path); callers that find a write in
//! progress only append, so their packets leave together with the next write (batching under
//! load). When the socket would block, a writer task takes over. The queue is bounded in bytes
//! ([`Options::write_buffer`]); control packets (credit grants, tunnel confirmations and
//! closes) skip the bound so the reader never waits for the writer.
//!
//! One reader task decodes node packets from one buffer (payloads are zero-copy slices of it)
//! and dispatches them: replies to the waiting request (a table of one-shot channels keyed by
//! request id), deliveries to the handler pools, tunnel packets to their tunnel. When the
//! connection breaks (EOF without a close, an IO error, a protocol violation) every pending
//! request and tunnel fails with [`Error::Broken`], and a service's
//! [`ServiceHandler::handle_drop`] is called.
//!
//! ## Layout
//! - `conn.rs`: [`Connection`], the shared state, request matching, shutdown.
//! - `io.rs`: the handshake, the reader task and its dispatch, the writer task.
//! - `kv.rs`: the store's operations; `identity.rs`: identities.
//! - `outbox.rs`: the combining write queue in front of the socket.
//! - [`transport`]: the in-process transport (packets as values) an embedded node offers
//!   (`petal_node::NodeHandle::connect`), in place of a socket and the codec.
//! - `service.rs`: [`Service`], [`ServiceHandler`], [`register`], the request and broadcast jobs.
//! - `topic.rs`: [`TopicHandler`].
//! - `tunnel.rs`: [`Tunnel`]: chunking, credit, reassembly, close.
//! - `pool.rs`: bounded handler pools (concurrency and queued bytes).
//! - `options.rs`, `stats.rs`, `error.rs`, `idmap.rs`: [`Options`], [`Stats`], [`Error`], and
//!   a cheap hash for id-keyed tables.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::too_many_lines)
)]

mod conn;
mod error;
mod identity;
mod idmap;
mod io;
mod kv;
mod options;
mod outbox;
mod pool;
mod service;
mod stats;
mod topic;
pub mod transport;
mod tunnel;

pub use conn::Connection;
pub use error::Error;
pub use kv::{Entry, KvOp};
pub use options::Options;
pub use petal_protocol::relay::{DEFAULT_PORT, Limits};
pub use petal_protocol::{Change, IdResult, NodeInfo, StoreResult, Version};
pub use service::{Service, ServiceHandler, register};
pub use stats::Stats;
pub use topic::TopicHandler;
pub use tunnel::Tunnel;
