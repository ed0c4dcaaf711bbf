//! The data path of open tunnels: chunks from the local application out within the far node's
//! window, chunks from the far node in within the local application's credit, and the window
//! and credit that flow back (see the parent module's docs on backpressure).

use bytes::Bytes;
use petal_protocol::{Message, NodeId, NodeInfo};

use super::{CHUNK_COST, Tunnel, TunnelState};
use crate::app::AppError;
use crate::budget::Owner;
use crate::node::{Event, Node};
use crate::time::Time;

/// Checks a chunk against its message's framing: a first chunk (`size != 0`) starts a message
/// of `size` bytes (abandoning any unfinished one, as the relay protocol allows); a
/// continuation chunk must fit what is left of it. Returns the bytes left after the chunk.
fn framed(left: u64, size: u64, len: u64) -> Option<u64> {
    if len == 0 {
        return None;
    }
    if size != 0 {
        size.checked_sub(len)
    } else {
        left.checked_sub(len)
    }
}

/// Why a tunnel whose incoming chunks the memory budget refused fails.
pub(crate) const BUDGET_FAULT: &str =
    "petal: node memory budget exhausted (or this connection's share of it)";

impl Node {
    /// Brings what tunnel `id` is charged to the memory budget (to its local connection) in
    /// line with the chunks it queues both ways. False when it grew and the budget, or the
    /// connection's share, refused: the caller fails the tunnel.
    pub(super) fn sync_tunnel(&mut self, id: u64) -> bool {
        let Some(t) = self.tunnels.ends.get(&id) else {
            return true;
        };
        let (want, charged, owner) = (t.held_cost(), t.charged, Owner::conn(t.conn));
        if want <= charged {
            self.unhold(owner, charged - want);
        } else if !self.hold(owner, want - charged) {
            return false;
        }
        if let Some(t) = self.tunnels.ends.get_mut(&id) {
            t.charged = want;
        }
        true
    }

    /// Removes tunnel `id` (and its connection's name for it), giving back what it held.
    pub(super) fn forget_tunnel(&mut self, id: u64) -> Option<Tunnel> {
        let t = self.tunnels.remove(id)?;
        self.unhold(Owner::conn(t.conn), t.charged);
        Some(t)
    }

    /// Queues a chunk from the local application. `size` is the whole message's length on its
    /// first chunk and 0 on continuation chunks.
    pub(crate) fn send_chunk(
        &mut self,
        now: Time,
        id: u64,
        size: u64,
        chunk: Bytes,
    ) -> Result<(), AppError> {
        let (limit, buffer) = (self.cfg.tunnel_chunk_limit, self.cfg.tunnel_buffer);
        let t = self.tunnels.ends.get_mut(&id).ok_or(AppError::UnknownId)?;
        if t.state != TunnelState::Open || t.closing {
            return Err(AppError::UnknownId);
        }
        if chunk.len() > limit {
            return Err(AppError::Invalid(
                "chunk larger than the tunnel chunk limit",
            ));
        }
        if t.outq_bytes + chunk.len() as u64 > buffer {
            return Err(AppError::Full("tunnel bytes beyond the granted credit"));
        }
        let Some(left) = framed(t.out_left, size, chunk.len() as u64) else {
            return Err(AppError::Invalid(
                "empty chunk, or a chunk beyond its message's size",
            ));
        };
        let (conn, cost) = (t.conn, chunk.len() as u64 + CHUNK_COST);
        if !self.hold(Owner::conn(conn), cost) {
            // Within the credit, so not the application's fault: the tunnel fails with the
            // reason at both ends (the application hears `TunnelClosed`), nothing else does.
            self.fail_tunnel(now, id, BUDGET_FAULT);
            return Ok(());
        }
        let t = self.tunnels.ends.get_mut(&id).ok_or(AppError::UnknownId)?;
        t.charged += cost;
        t.out_left = left;
        t.outq_bytes += chunk.len() as u64;
        t.outq.push_back((size, chunk));
        self.pump_out(now, id);
        Ok(())
    }

    /// The local application grants `bytes` more of credit on tunnel `id`.
    pub(crate) fn grant(&mut self, now: Time, id: u64, bytes: u64) -> Result<(), AppError> {
        let t = self.tunnels.ends.get_mut(&id).ok_or(AppError::UnknownId)?;
        if t.state != TunnelState::Open {
            return Err(AppError::UnknownId);
        }
        t.app_credit = t
            .app_credit
            .saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.pump_in(now, id);
        Ok(())
    }

    /// Sends queued chunks within the far node's window; re-grants the local application.
    pub(super) fn pump_out(&mut self, now: Time, id: u64) {
        let mut sent_bytes = 0;
        let mut out = Vec::new();
        let Some(t) = self.tunnels.ends.get_mut(&id) else {
            return;
        };
        let Some((peer, pt)) = t.peer else {
            return;
        };
        let limit = usize::try_from(t.far.chunk_limit).unwrap_or(usize::MAX);
        let mut room = t.send_room();
        while let Some((size, chunk)) = t.outq.front_mut() {
            // A chunk larger than the far node takes goes in pieces (the later ones are
            // continuations of its message).
            let piece = chunk.len().min(limit);
            let len = piece as u64;
            if len + CHUNK_COST > room {
                break;
            }
            room -= len + CHUNK_COST;
            let (first, payload) = if piece < chunk.len() {
                let head = chunk.split_to(piece);
                (std::mem::replace(size, 0), head)
            } else {
                let (size, chunk) = (*size, chunk.clone());
                t.outq.pop_front();
                (size, chunk)
            };
            t.outq_bytes -= len;
            t.sent_cost += len + CHUNK_COST;
            sent_bytes += len;
            out.push(Message::TunnelData {
                tunnel: pt,
                sender_tunnel: id,
                seq: t.next_out_seq,
                size: first,
                payload,
            });
            t.next_out_seq += 1;
        }
        let finish = t.closing && t.outq.is_empty();
        let (conn, app) = (t.conn, t.app);
        self.stats.tunnel_bytes_sent += sent_bytes;
        self.sync_tunnel(id);
        for m in out {
            self.send_or_loop(now, peer, m);
        }
        if sent_bytes > 0 && !finish {
            self.emit(Event::TunnelCredit {
                conn,
                tunnel: app,
                bytes: sent_bytes,
            });
        }
        if finish {
            self.forget_tunnel(id);
            self.send_or_loop(
                now,
                peer,
                Message::TunnelClose {
                    tunnel: pt,
                    reason: String::new(),
                },
            );
            self.emit(Event::TunnelClosed {
                conn,
                tunnel: app,
                reason: String::new(),
            });
        }
    }

    /// Hands received chunks to the local application within its credit; returns the window.
    pub(super) fn pump_in(&mut self, now: Time, id: u64) {
        let mut taken = 0;
        let mut chunks = Vec::new();
        let Some(t) = self.tunnels.ends.get_mut(&id) else {
            return;
        };
        while let Some((size, chunk)) = t.inq.front() {
            let len = chunk.len() as u64;
            if *size != 0 && t.app_credit < len as i64 {
                break;
            }
            let (size, chunk) = (*size, chunk.clone());
            t.inq.pop_front();
            t.inq_bytes -= len;
            t.app_credit -= len as i64;
            t.consumed += len + CHUNK_COST;
            taken += len;
            chunks.push((size, chunk));
        }
        let (conn, app) = (t.conn, t.app);
        // Closed by the far end: reported once everything before the close is taken (a chunk
        // held past a gap is not; a gap that stays open fails the tunnel on the tick).
        let done = t.peer_closed && t.inq.is_empty() && t.ahead.is_empty();
        self.stats.tunnel_bytes_received += taken;
        self.sync_tunnel(id);
        for (size, payload) in chunks {
            self.emit(Event::TunnelData {
                conn,
                tunnel: app,
                size,
                payload,
            });
        }
        if done {
            self.forget_tunnel(id);
            self.emit(Event::TunnelClosed {
                conn,
                tunnel: app,
                reason: String::new(),
            });
        } else if taken > 0 {
            self.send_allow(now, id);
        }
    }

    /// Tells the far end of tunnel `id` the window consumed here so far (after chunks were
    /// taken or dropped, and periodically as the keepalive).
    pub(super) fn send_allow(&mut self, now: Time, id: u64) {
        let Some(t) = self.tunnels.ends.get_mut(&id) else {
            return;
        };
        let Some((peer, pt)) = t.peer else {
            return;
        };
        t.allowed = now;
        let consumed = t.consumed;
        self.send_or_loop(
            now,
            peer,
            Message::TunnelAllow {
                tunnel: pt,
                sender_tunnel: id,
                consumed,
            },
        );
    }

    /// The open tunnel `id` if `from` is its far end and `sender_tunnel` its id there.
    fn tunnel_from(&mut self, from: NodeId, id: u64, sender_tunnel: u64) -> Option<&mut Tunnel> {
        self.tunnels.ends.get_mut(&id).filter(|t| {
            t.state == TunnelState::Open
                && t.peer
                    .is_some_and(|p| p.0.id == from && p.1 == sender_tunnel)
        })
    }

    pub(crate) fn on_tunnel_data(
        &mut self,
        now: Time,
        from: NodeInfo,
        (id, sender_tunnel): (u64, u64),
        seq: u64,
        size: u64,
        payload: Bytes,
    ) {
        let (window, limit) = (self.cfg.tunnel_window, self.cfg.tunnel_chunk_limit);
        let Some(t) = self.tunnel_from(from.id, id, sender_tunnel) else {
            self.stats.tunnel_stale += 1;
            return;
        };
        t.heard = now;
        if seq < t.next_in_seq || t.ahead.contains_key(&seq) {
            self.stats.tunnel_chunk_copies += 1;
            return;
        }
        let len = payload.len() as u64;
        if payload.len() > limit || t.inq_cost() + len + CHUNK_COST > window {
            self.fail_tunnel(now, id, "petal: the far node overran the tunnel window");
            return;
        }
        if seq > t.next_in_seq {
            t.ahead.insert(seq, (size, payload));
            t.ahead_bytes += len;
            t.gap_since.get_or_insert(now);
            self.stats.tunnel_chunks_held += 1;
            if !self.sync_tunnel(id) {
                self.fail_tunnel(now, id, BUDGET_FAULT);
            }
            return;
        }
        let closing = t.closing;
        let mut next = Some((size, payload));
        while let Some((size, payload)) = next {
            if closing {
                // Our application closed: what still arrives is dropped in order (each chunk
                // counted once), its window returned, so that a far end closing too can flush
                // its queue and send its own close.
                t.next_in_seq = t.next_in_seq.saturating_add(1);
                t.consumed += payload.len() as u64 + CHUNK_COST;
                next = t.ahead.remove(&t.next_in_seq);
                if let Some((_, p)) = &next {
                    t.ahead_bytes -= p.len() as u64;
                }
                continue;
            }
            let Some(left) = framed(t.in_left, size, payload.len() as u64) else {
                self.fail_tunnel(
                    now,
                    id,
                    "petal: the far node sent an empty chunk or one beyond its message's size",
                );
                return;
            };
            t.next_in_seq = t.next_in_seq.saturating_add(1);
            t.in_left = left;
            t.inq_bytes += payload.len() as u64;
            t.inq.push_back((size, payload));
            next = t.ahead.remove(&t.next_in_seq);
            if let Some((_, p)) = &next {
                t.ahead_bytes -= p.len() as u64;
            }
        }
        t.gap_since = (!t.ahead.is_empty()).then_some(now);
        if !self.sync_tunnel(id) {
            self.fail_tunnel(now, id, BUDGET_FAULT);
            return;
        }
        if closing {
            self.send_allow(now, id);
        } else {
            self.pump_in(now, id);
        }
    }

    pub(crate) fn on_tunnel_allow(
        &mut self,
        now: Time,
        from: NodeInfo,
        (id, sender_tunnel): (u64, u64),
        consumed: u64,
    ) {
        let Some(t) = self.tunnel_from(from.id, id, sender_tunnel) else {
            self.stats.tunnel_stale += 1;
            return;
        };
        t.heard = now;
        if consumed > t.sent_cost {
            self.fail_tunnel(
                now,
                id,
                "petal: the far node acknowledged more than was sent on the tunnel",
            );
            return;
        }
        if consumed > t.acked {
            t.acked = consumed;
            self.pump_out(now, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::framed;

    #[test]
    fn chunks_must_fit_their_message() {
        assert_eq!(
            framed(0, 100, 40),
            Some(60),
            "first chunk of a 100-byte message"
        );
        assert_eq!(framed(60, 0, 60), Some(0), "continuation up to the end");
        assert_eq!(framed(60, 0, 61), None, "continuation beyond the message");
        assert_eq!(
            framed(0, 0, 1),
            None,
            "continuation with no message under way"
        );
        assert_eq!(
            framed(0, 10, 11),
            None,
            "first chunk longer than its message"
        );
        assert_eq!(framed(5, 10, 0), None, "empty chunk");
        assert_eq!(
            framed(5, 10, 10),
            Some(0),
            "a new message abandons the unfinished one"
        );
    }
}
