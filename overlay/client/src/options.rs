//! Client-side limits: handler concurrency, queued bytes, tunnel buffers.

use petal_protocol::relay::Limits;

/// Tunable limits of one connection. None of them is on the wire.
///
/// Incoming work is kept in three categories: requests (services only), broadcasts (services
/// only) and topic events (per subscription). Each category has its own bound on concurrently
/// running handlers and on queued bytes (messages waiting for a handler plus those being
/// handled). A delivery that would exceed the byte bound is dropped, counted in
/// [`Stats`](crate::Stats) and logged; a dropped request shows up as a timeout at its requester.
///
/// ```
/// let mut options = petal_client::Options::default();
/// options.request_handlers = 16;
/// options.tunnel_buffer = 8 << 20;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Request handlers running at once (default 4 x available parallelism).
    pub request_handlers: usize,
    /// Bytes of requests queued or being handled (default 64 MiB).
    pub request_memory: usize,
    /// Broadcast handlers running at once (default 4 x available parallelism).
    pub broadcast_handlers: usize,
    /// Bytes of broadcasts queued or being handled (default 64 MiB).
    pub broadcast_memory: usize,
    /// Event handlers running at once, per subscription (default 4 x available parallelism).
    pub event_handlers: usize,
    /// Bytes of events queued or being handled, per subscription (default 64 MiB).
    pub event_memory: usize,
    /// Receive buffer of each tunnel, in bytes: the credit granted to the node, and the largest
    /// message the tunnel accepts (default 64 MiB, as the Go and Java libraries).
    pub tunnel_buffer: u64,
    /// Bytes of encoded packets waiting to be written (default 1 MiB); senders wait while it
    /// is full (control packets such as credit grants never wait).
    pub write_buffer: usize,
    /// Decoding limits applied to what the node sends.
    pub decode_limits: Limits,
    /// Ask the node for Petal's relay extension (the store's operations: version
    /// `"v1.0-draft2+petal1"`; default true). A node that denies it (the original Iris node) is
    /// dialled again with plain v1 by the connecting functions that dial
    /// ([`Options::connect`], [`Options::connect_addr`], [`register`](crate::register)); over a
    /// given stream the denial is the error.
    pub extensions: bool,
}

impl Default for Options {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Options {
            request_handlers: 4 * cpus,
            request_memory: 64 << 20,
            broadcast_handlers: 4 * cpus,
            broadcast_memory: 64 << 20,
            event_handlers: 4 * cpus,
            event_memory: 64 << 20,
            tunnel_buffer: 64 << 20,
            write_buffer: 1 << 20,
            decode_limits: Limits::default(),
            extensions: true,
        }
    }
}
