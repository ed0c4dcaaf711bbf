//! Counters of what a connection dropped or ignored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a connection dropped or ignored so far (see [`Connection::stats`](crate::Connection::stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Request deliveries dropped because the request queue was full.
    pub dropped_requests: u64,
    /// Request deliveries skipped because their timeout had passed while they were queued.
    pub expired_requests: u64,
    /// Broadcast deliveries dropped because the broadcast queue was full.
    pub dropped_broadcasts: u64,
    /// Events dropped because their subscription's queue was full.
    pub dropped_events: u64,
    /// Packets from the node that nothing here was waiting for (an event for a topic no longer
    /// subscribed, a reply to an abandoned request, a delivery a plain client cannot take, a
    /// tunnel packet for an unknown tunnel).
    pub ignored_packets: u64,
    /// Of those, replies to a request this connection is not waiting for and never abandoned:
    /// a second outcome for a request (the node must send exactly one), or a reply for an id
    /// never sent. Always 0 with a correct node.
    pub unexpected_replies: u64,
    /// Of those, confirmations of a tunnel that was already confirmed or never opened. Always 0
    /// with a correct node.
    pub unexpected_confirms: u64,
}

/// The live counters behind [`Stats`]; the pools hold some of them.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) dropped_requests: Arc<AtomicU64>,
    pub(crate) expired_requests: Arc<AtomicU64>,
    pub(crate) dropped_broadcasts: Arc<AtomicU64>,
    pub(crate) dropped_events: Arc<AtomicU64>,
    pub(crate) ignored_packets: AtomicU64,
    pub(crate) unexpected_replies: AtomicU64,
    pub(crate) unexpected_confirms: AtomicU64,
}

impl Counters {
    /// Reads every counter.
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            dropped_requests: get(&self.dropped_requests),
            expired_requests: get(&self.expired_requests),
            dropped_broadcasts: get(&self.dropped_broadcasts),
            dropped_events: get(&self.dropped_events),
            ignored_packets: get(&self.ignored_packets),
            unexpected_replies: get(&self.unexpected_replies),
            unexpected_confirms: get(&self.unexpected_confirms),
        }
    }

    /// Counts a reply to a request not pending (never sent, or answered already).
    pub(crate) fn unexpected_reply(&self) {
        self.unexpected_replies.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a confirmation of a tunnel already confirmed or never opened.
    pub(crate) fn unexpected_confirm(&self) {
        self.unexpected_confirms.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one ignored packet.
    pub(crate) fn ignored(&self, what: &'static str) {
        self.ignored_packets.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(what, "ignored a packet from the node");
    }
}
