//! Real-stack simulation: petal-node's runtime and petal-client applications on simulated hosts
//! and simulated TCP (turmoil), under crashes, restarts and partitions, judged by the same
//! oracles as the discrete-event simulator ([`crate::oracle`] over [`crate::apps::Apps`]).
//!
//! ## Model
//! - One turmoil **host** per node, named `n0`, `n1`, ... Its software is a petal-node
//!   ([`petal_node::spawn`] over [`TurmoilNet`]): peer listener on `0.0.0.0:7000` advertising
//!   the host's simulated address, relay on `127.0.0.1:55555` only. Host 0 is the seed and
//!   starts a ring of one; host `i` boots `i * join_spacing` later and joins through it.
//! - On the same host, two **applications** talk to that node over the simulated loopback with
//!   petal-client, as real applications talk to their local daemon: a service (member of
//!   `svc-(i mod clusters)`: echo replies after a service time, faults at a configured ratio,
//!   tunnels echoed) and a client (subscriber to some topics; issues requests, publishes,
//!   broadcasts and echo tunnels as Poisson streams, its share of the network's rates).
//! - **Faults** are applied between turmoil steps. A crash (`Sim::crash`) stops node and
//!   applications together, like a machine losing power: their records end at that time
//!   (`until`, and the host in `deaths`). A restart (`Sim::bounce`) runs the host's software
//!   again: a fresh node with the **same id and address** (as the daemon, which keeps its id in
//!   its data directory) and a fresh core seed, joining through the first three other hosts
//!   that are up, with fresh applications (new records). A partition cuts a set of hosts off from the rest
//!   in both directions until a heal. In [`PartitionMode::Drop`] (`Sim::partition`/`repair`)
//!   segments between the sides are lost; turmoil's TCP has no retransmission, so a stream that
//!   loses a segment stalls for good, silently, which the node must detect and replace. In
//!   [`PartitionMode::Hold`] (`Sim::hold`/`release`) they are held and delivered at the heal,
//!   as TCP's retransmission would after a short partition.
//! - **Scripted runs**: with a [`Script`] (`RunConfig::script`) every link gets its own fixed
//!   delay instead of turmoil's random range, each client subscribes to the script's topics
//!   and issues the script's operations at their times instead of drawing Poisson streams, and
//!   the harness also records each node's ready time and counters at fixed times: what a
//!   comparison with the discrete-event simulator needs (the `fidelity` scenario runs one
//!   script on both).
//! - **Time** advances in ticks of whole milliseconds (`RunConfig::tick`): a host's tokio clock
//!   has millisecond resolution. Turmoil delivers a message at the first tick at or after its
//!   delay, and a segment on a host's loopback one tick after it was sent.
//! - **Records**: everything the applications observe goes into one shared
//!   [`Recorder`] with simulated time (turmoil's clock, the same on every host): requests with
//!   their outcome as the client library returned it, deliveries seen by the service handler,
//!   events and broadcasts with every delivery to a handler, tunnels with their echoes
//!   checked byte for byte in order. Payloads carry global ids, as in the discrete-event
//!   simulator, so a reply is checked against its very request.
//!
//! ## Determinism
//! Turmoil's generator and epoch are fixed; node ids, core seeds, handler draws and workload
//! draws all derive from the master seed (ChaCha); hosts run one after another on one thread,
//! in a fixed order, each on a current-thread tokio runtime with a paused clock; every
//! `select!` in the node and client is biased and neither iterates a random-state hash map; the
//! client's handler pools are sized explicitly rather than from the machine's CPU count. The
//! same seed thus gives the same records, and [`RunResult::trace_hash`] (SHA-256 over them, in
//! order) proves it.
//!
//! ## Layout
//! - `net.rs`: [`TurmoilNet`], petal-node's `Net` over turmoil TCP.
//! - `config.rs`: [`RunConfig`], [`WorkloadParams`], [`Fault`].
//! - `record.rs`: [`Recorder`] and [`Shared`]: the records and the trace hash.
//! - `script.rs`: [`Script`], a fixed workload and per-link delays (for comparisons with the
//!   discrete-event simulator).
//! - `workload.rs`: the applications of a host.
//! - `harness.rs`: [`run`]: hosts, the step loop, faults.

mod config;
mod harness;
mod net;
mod record;
mod script;
mod workload;

pub use config::{Fault, FaultKind, PartitionMode, RunConfig, SeedPattern, WorkloadParams};
pub use harness::{PEER_PORT, RunResult, core_seed, host_name, identities, run, run_with_progress};
pub use net::{TurmoilListener, TurmoilNet};
pub use record::{Recorder, Shared, sim_now};
pub use script::{Script, ScriptOp, ScriptOpKind};
pub use workload::{RELAY_ADDR, REQUEST_HANDLERS, cluster_name, topic_name};
