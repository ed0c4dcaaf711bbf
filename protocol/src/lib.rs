//! # petal-protocol
//!
//! Petal's wire formats and nothing else: no IO, no clocks, no async runtime. Both the node and
//! the simulators depend on it, so what the simulator measures is what the wire carries.
//!
//! ## Layout
//! - [`id`]: the 128-bit ring ([`NodeId`], [`Key`]), base-16 digits (Pastry's `b = 4`), circular
//!   distance, the fixed name-to-key hash (SHA-256), and the fixed hasher of id-keyed maps
//!   ([`id::IdHasher`]).
//! - [`message`]: the node-to-node messages ([`Message`]): the Pastry overlay, group trees
//!   (grafts, casts), requests descending a cluster tree, replies and tunnels.
//! - [`addr`]: the wire form of a socket address (the codec's and both link hellos').
//! - [`codec`]: their versioned, length-prefixed binary frames. Decoding never panics; bad input
//!   is a typed [`DecodeError`].
//! - [`relay`]: the relay protocol v1 (`"v1.0-draft2"`) between an application's client library
//!   and its local node, byte-compatible with the Iris client libraries: [`relay::ClientPacket`]
//!   and [`relay::NodePacket`], their encoders and incremental, zero-copy decoders.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::too_many_lines)
)]

pub mod addr;
pub mod codec;
pub mod id;
pub mod message;
pub mod relay;
pub mod store;

pub use codec::DecodeError;
pub use id::{Key, NodeId};
pub use message::{
    Ask, AskKind, CastMsg, DescendMsg, EventId, EventSeq, Load, Message, NodeInfo, ReplyResult,
    RouteMsg, Routed, STORE_BUCKETS, Sibling, TunnelParams, Want,
};
pub use store::{
    Change, IdResult, StoreEntry, StoreOp, StoreOpKind, StoreResult, Version, watch_topic,
};
