//! In-process transports: relay packets handed to the node as values, for an application that
//! embeds its node (brokerless mode, `petal_node::NodeHandle::connect`).
//!
//! A [`Connection`](crate::Connection) normally speaks relay v1 over a byte stream. Given a
//! [`PacketSink`] and a [`PacketSource`] instead
//! ([`Options::connect_packets`](crate::Options::connect_packets),
//! [`Options::register_packets`](crate::Options::register_packets)), it hands its packets to
//! the node without encoding them and takes the node's packets without decoding them: the
//! same API, the same semantics (one outcome per request, credit on tunnels, bounded handler
//! queues), without a socket, a codec or a relay session's tasks in between.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use petal_protocol::relay::{ClientPacket, NodePacket, RelayError};

use crate::outbox::Outbox;

/// The sending half of an in-process transport: where the connection's packets go, in order.
pub trait PacketSink: Send + Sync + 'static {
    /// Queues `packet` for the node without waiting. [`PushError::Ended`] once the transport
    /// takes nothing more; [`PushError::Invalid`] for a packet outside the node's limits (that
    /// packet only: the transport goes on). CLOSE is the connection's graceful close: nothing
    /// may follow it.
    fn push(&self, packet: ClientPacket) -> Result<(), PushError>;

    /// Whether a packet pushed now would be within the sink's bound (callers that find no room
    /// wait on [`room`](Self::room) first; control packets are pushed regardless).
    fn has_room(&self) -> bool;

    /// Resolves once the sink has room again, or has ended.
    fn room(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// The connection ended (closed or broken): take nothing more, and let the node know if it
    /// does not yet.
    fn shut(&self);
}

/// The receiving half of an in-process transport: the node's packets for the connection, in
/// order; `None` once the node has ended the session (after its CLOSE, or on a cut).
pub trait PacketSource: Send + 'static {
    /// Polls for the next packet.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<NodePacket>>;
}

/// Why a [`PacketSink`] did not take a packet.
#[derive(Debug)]
pub enum PushError {
    /// The transport ended: nothing more is taken.
    Ended,
    /// The packet breaks the node's limits (a message or name too long), as the relay decoder
    /// would have found it.
    Invalid(RelayError),
}

/// Where a connection's packets go: encoded into a byte stream's outbox, or handed over as
/// values.
pub(crate) enum Writer {
    Stream(Box<Outbox>),
    Packets(Arc<dyn PacketSink>),
}

impl Writer {
    /// Waits until a packet may be queued within the bound (or the writer refuses everything).
    pub(crate) async fn room(&self) {
        match self {
            Writer::Stream(o) => o.room().await,
            Writer::Packets(s) => {
                if !s.has_room() {
                    s.room().await;
                }
            }
        }
    }

    /// Queues `packet` without waiting.
    pub(crate) fn push(&self, packet: ClientPacket) -> Result<(), PushError> {
        match self {
            Writer::Stream(o) => o.push(&packet).map_err(|_| PushError::Ended),
            Writer::Packets(s) => s.push(packet),
        }
    }

    /// Stops writing (the connection ended).
    pub(crate) fn shut(&self) {
        match self {
            Writer::Stream(o) => o.shut(),
            Writer::Packets(s) => s.shut(),
        }
    }

    /// The writer task's body: the write error that ended a stream (`None` when shut, and at
    /// once for packets, which need no writer task).
    pub(crate) async fn run_writer(&self) -> Option<io::Error> {
        match self {
            Writer::Stream(o) => o.run_writer().await,
            Writer::Packets(_) => None,
        }
    }
}
