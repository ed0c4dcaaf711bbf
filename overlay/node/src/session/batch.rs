//! The node task's output to sessions in batches: the packets one round of input queues for a
//! session (the events of every packet of a client's read, of every message of a peer link's
//! read) go to its writer together, one channel send, one count of queued bytes and one
//! give-back of their budget for the lot, instead of one of each per packet.

use std::sync::atomic::Ordering;

use petal_protocol::relay::NodePacket;

use super::{Out, Session, Sessions};
use crate::RuntimeStats;
use crate::budget::Charge;

/// See [`Sessions::round`].
#[derive(Default)]
pub(super) struct RoundCounts {
    pub(super) requests: u64,
    pub(super) broadcasts: u64,
    pub(super) publishes: u64,
    pub(super) dropped: u64,
}

impl Session {
    /// Queues a packet that must arrive in the current round's batch (see
    /// [`super::SessionTx::must`]; replies, tunnel control and data).
    pub(super) fn must(&mut self, p: NodePacket) {
        let len = p.encoded_len();
        if let Some(share) = &self.out.share {
            match share.charge(len as u64) {
                Some(c) => self.batch_charge.absorb(c),
                // Queued all the same, and the session is closed at the next check.
                None => self.out.refused.store(true, Ordering::Relaxed),
            }
        }
        self.push(p, len);
    }

    /// Queues a packet that may be dropped when the client is not reading (broadcasts, events,
    /// request deliveries) in the current round's batch: dropped (false) when what is queued
    /// already, batch included, and it would pass `limit`, or when the budget has no room.
    pub(super) fn may(&mut self, p: NodePacket, limit: usize) -> bool {
        let len = p.encoded_len();
        if self.out.queued.load(Ordering::Relaxed) + self.batch_bytes + len > limit {
            return false;
        }
        if let Some(share) = &self.out.share {
            match share.charge(len as u64) {
                Some(c) => self.batch_charge.absorb(c),
                None => {
                    self.refused_droppable += 1;
                    return false;
                }
            }
        }
        self.push(p, len);
        true
    }

    fn push(&mut self, p: NodePacket, len: usize) {
        self.batch_bytes += len;
        self.batch.push(p);
    }

    /// An embedded session: its application runs beside the node task (on another thread
    /// of its runtime) and starts on what it gets while the node task works on the rest of a
    /// read, so its batch is not held to the read's end (holding cost 10-15 % of the requests
    /// per second across two embedded nodes at 256 in flight). A relay session's writer runs
    /// after the read in any case when the runtime has one thread (`petald`'s default); with
    /// more, holding keeps its writer from starting on the read's first packets.
    pub(super) fn embedded(&self) -> bool {
        self.out.cut.is_some()
    }

    /// Queues a packet that must arrive now, after the batch (which is handed over first):
    /// the answers to a client's own commands, in order with what was queued before them.
    pub(super) fn must_now(&mut self, p: NodePacket) {
        self.flush();
        self.out.must(p);
    }

    /// Hands the batch to the writer (one packet alone goes as it is).
    pub(super) fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let charge = std::mem::replace(&mut self.batch_charge, Charge::none());
        let bytes = std::mem::take(&mut self.batch_bytes);
        self.out.queued.fetch_add(bytes, Ordering::Relaxed);
        let out = if self.batch.len() == 1 {
            match self.batch.pop() {
                Some(p) => Out::Packet(p, charge),
                None => return,
            }
        } else {
            Out::Batch(std::mem::take(&mut self.batch), bytes, charge)
        };
        let _ = self.out.tx.send(out);
    }
}

impl Sessions {
    /// Holds the batches until [`Sessions::release`]: the rounds of one read of input become
    /// one.
    pub(crate) fn hold(&mut self) {
        self.holding = true;
    }

    /// Ends a hold and hands the batches over.
    pub(crate) fn release(&mut self) {
        self.holding = false;
        self.flush_batches();
    }

    /// Ends a delivery round: hands every embedded session's batch to its writer and, unless
    /// held, every relay session's too, and adds the round's counts to the runtime's. Called
    /// once the core's events are all delivered; a packet queued outside a round (an answer
    /// to a client's command) hands its session's batch over first, so packets keep the order
    /// they were queued in.
    pub(crate) fn flush_batches(&mut self) {
        for conn in self.dirty_embedded.drain(..) {
            // (A session cut off since is gone, and its batch with it.)
            if let Some(s) = self.map.get_mut(&conn) {
                s.flush();
            }
        }
        if self.holding {
            return;
        }
        for conn in self.dirty.drain(..) {
            if let Some(s) = self.map.get_mut(&conn) {
                s.flush();
            }
        }
        let r = std::mem::take(&mut self.round);
        for (counter, n) in [
            (&self.stats.delivered_requests, r.requests),
            (&self.stats.delivered_broadcasts, r.broadcasts),
            (&self.stats.delivered_publishes, r.publishes),
            (&self.stats.relay_dropped, r.dropped),
        ] {
            if n > 0 {
                RuntimeStats::add(counter, n);
            }
        }
    }
}
