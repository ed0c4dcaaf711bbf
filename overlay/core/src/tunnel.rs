//! Tunnels: ordered, reliable, credit-throttled streams of chunked messages between two
//! application connections, carried node to node without the overlay's intermediate hops.
//!
//! ## Life
//! The opener's node routes a tunnel ask to the cluster like a request; the member chosen for
//! it sees [`Event::TunnelIncoming`] and accepts with `Node::tunnel_accept`, whose node answers
//! the opener's node directly ([`Message::TunnelAccept`]). From then on the two nodes exchange
//! [`Message::TunnelData`] (numbered chunks, at most `tunnel_chunk_limit` bytes),
//! [`Message::TunnelAllow`] (window credit, or a keepalive with 0 bytes) and
//! [`Message::TunnelClose`]. An open that is not accepted within its timeout fails
//! ([`Event::TunnelOpenFailed`]); a late accept is answered with a close.
//!
//! ## Backpressure, end to end
//! Three bounded windows: the local application may have `tunnel_buffer` bytes queued in its
//! node (it is granted that much at the start and re-granted each chunk once the chunk leaves
//! for the far node, [`Event::TunnelCredit`]); a node sends the far node at most `tunnel_window`
//! bytes it has not yet handed to its application (returned with `TunnelAllow` as the far
//! application takes them); and a node hands its application a message's first chunk only
//! within the credit the application granted (`Node::tunnel_allow`), continuation chunks even
//! beyond it (so messages larger than the credit cannot deadlock). A slow reader therefore
//! stalls the writer with at most `tunnel_buffer + tunnel_window` bytes held per tunnel.
//!
//! Each chunk also costs `CHUNK_COST` (64) bytes of the node-to-node window, so that a window
//! bounds the number of chunks a node holds as well as their bytes. Chunks are checked against
//! their message's framing (a first chunk no longer than its message, continuation chunks
//! within what is left of it, no empty chunk): continuation chunks bypass the reader's credit,
//! so without the check a sender could bypass it for ever.
//!
//! ## Failure
//! A chunk out of sequence, a window overrun, a framing error, silence for `tunnel_idle_timeout` (keepalives
//! flow every `tunnel_keepalive_interval`) or the far node's death closes the tunnel with a
//! reason on both ends. A graceful close is sent after every queued chunk has left, and the far
//! end reports it after its application has taken every chunk before it, however slowly it
//! reads: from then on, neither silence nor the death of the closing node fails that end.

use std::collections::VecDeque;

use bytes::Bytes;
use petal_protocol::{DescendMsg, Message, NodeId, NodeInfo};

use crate::app::{AppError, ConnId};
use crate::node::{Event, Node, TimerKey};
use crate::time::Time;

/// Where a tunnel is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TunnelState {
    /// Opened here; waiting for a member to accept.
    Opening,
    /// Offered to a local member; waiting for it to accept.
    Offered,
    /// Both ends known; data flows.
    Open,
}

/// One end of a tunnel on this node.
#[derive(Clone, Debug)]
pub(crate) struct Tunnel {
    pub(crate) conn: ConnId,
    /// The connection's own id for the tunnel (its events and commands use it); while
    /// offered and not yet accepted, the offer id.
    pub(crate) app: u64,
    pub(crate) state: TunnelState,
    /// The far end: its node and its tunnel id (the opener's while offered).
    pub(crate) peer: Option<(NodeInfo, u64)>,
    /// Open/offer deadline.
    pub(crate) deadline: Time,
    /// Chunks from the local application waiting for the far node's window.
    pub(crate) outq: VecDeque<(u64, Bytes)>,
    pub(crate) outq_bytes: u64,
    /// Bytes the far node still accepts.
    pub(crate) window: u64,
    pub(crate) next_out_seq: u64,
    /// Chunks from the far node waiting for the local application's credit.
    pub(crate) inq: VecDeque<(u64, Bytes)>,
    pub(crate) inq_bytes: u64,
    /// Credit granted by the local application (may go negative on continuation chunks).
    pub(crate) app_credit: i64,
    pub(crate) next_in_seq: u64,
    pub(crate) heard: Time,
    pub(crate) sent: Time,
    /// The local application closed: the close goes out once `outq` is empty.
    pub(crate) closing: bool,
    /// The far end closed gracefully: reported once `inq` is empty.
    pub(crate) peer_closed: bool,
    /// Bytes still to come of the message the local application is sending.
    pub(crate) out_left: u64,
    /// Bytes still to come of the message the far end is sending.
    pub(crate) in_left: u64,
}

/// What one chunk costs against the node-to-node window besides its bytes, so that a window
/// bounds the number of chunks a node holds (tiny chunks cannot pile up by the million).
pub(crate) const CHUNK_COST: u64 = 64;

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

impl Tunnel {
    /// What the queued received chunks cost against the window.
    pub(crate) fn inq_cost(&self) -> u64 {
        self.inq_bytes + self.inq.len() as u64 * CHUNK_COST
    }

    fn new(conn: ConnId, app: u64, state: TunnelState, now: Time, deadline: Time) -> Self {
        Self {
            conn,
            app,
            state,
            peer: None,
            deadline,
            outq: VecDeque::new(),
            outq_bytes: 0,
            window: 0,
            next_out_seq: 0,
            inq: VecDeque::new(),
            inq_bytes: 0,
            app_credit: 0,
            next_in_seq: 0,
            heard: now,
            sent: now,
            closing: false,
            peer_closed: false,
            out_left: 0,
            in_left: 0,
        }
    }
}

impl Node {
    /// Opens a tunnel from `conn` to cluster `key`.
    pub(crate) fn start_tunnel(
        &mut self,
        now: Time,
        conn: ConnId,
        app: u64,
        key: petal_protocol::Key,
        timeout_ms: u32,
    ) -> Result<(), AppError> {
        if self.tunnels.len() >= self.cfg.max_tunnels {
            self.stats.tunnel_drops += 1;
            return Err(AppError::Full("tunnels"));
        }
        let id = self.nonce();
        let deadline = now + std::time::Duration::from_millis(u64::from(timeout_ms));
        self.tunnels.insert(
            id,
            Tunnel::new(conn, app, TunnelState::Opening, now, deadline),
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.tunnels.insert(app, id);
        }
        self.set_timer(deadline, TimerKey::Tunnel(id));
        self.arm_tunnel_tick(now);
        self.stats.tunnels_opened += 1;
        self.start_ask(
            now,
            key,
            petal_protocol::Ask {
                id,
                timeout_ms,
                kind: petal_protocol::AskKind::Tunnel,
            },
        );
        Ok(())
    }

    /// A tunnel ask chose local member `conn`: offer it the tunnel.
    pub(crate) fn tunnel_incoming(&mut self, now: Time, conn: ConnId, msg: DescendMsg) {
        if self.tunnels.len() >= self.cfg.max_tunnels {
            self.stats.tunnel_drops += 1;
            self.send_or_loop(
                now,
                msg.requester,
                Message::TunnelClose {
                    tunnel: msg.ask.id,
                    reason: "petal: too many tunnels at the accepting node".into(),
                },
            );
            return;
        }
        let id = self.nonce();
        let deadline = now + std::time::Duration::from_millis(u64::from(msg.ask.timeout_ms));
        let mut t = Tunnel::new(conn, id, TunnelState::Offered, now, deadline);
        t.peer = Some((msg.requester, msg.ask.id));
        self.tunnels.insert(id, t);
        self.set_timer(deadline, TimerKey::Tunnel(id));
        self.arm_tunnel_tick(now);
        self.emit(Event::TunnelIncoming { conn, offer: id });
    }

    /// Local member `conn` accepts offered tunnel `id`, naming it `app` from now on.
    pub(crate) fn accept_tunnel(
        &mut self,
        now: Time,
        conn: ConnId,
        id: u64,
        app: u64,
    ) -> Result<(), AppError> {
        let (window, buffer) = (self.cfg.tunnel_window, self.cfg.tunnel_buffer);
        let t = self
            .tunnels
            .get_mut(&id)
            .filter(|t| t.conn == conn && t.state == TunnelState::Offered)
            .ok_or(AppError::UnknownId)?;
        // An offer always knows its opener (set when it was made).
        let (peer, peer_tunnel) = t.peer.ok_or(AppError::UnknownId)?;
        t.state = TunnelState::Open;
        t.app = app;
        t.window = window;
        t.heard = now;
        t.sent = now;
        let conn = t.conn;
        self.send_or_loop(
            now,
            peer,
            Message::TunnelAccept {
                tunnel: peer_tunnel,
                peer_tunnel: id,
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.tunnels.insert(app, id);
        }
        self.emit(Event::TunnelCredit {
            conn,
            tunnel: app,
            bytes: buffer,
        });
        Ok(())
    }

    pub(crate) fn on_tunnel_accept(
        &mut self,
        now: Time,
        from: NodeInfo,
        id: u64,
        peer_tunnel: u64,
    ) {
        let (window, buffer) = (self.cfg.tunnel_window, self.cfg.tunnel_buffer);
        let Some(t) = self
            .tunnels
            .get_mut(&id)
            .filter(|t| t.state == TunnelState::Opening)
        else {
            // Expired or unknown: the acceptor must not wait for data that never comes.
            self.stats.tunnels_failed += 1;
            self.send_or_loop(
                now,
                from,
                Message::TunnelClose {
                    tunnel: peer_tunnel,
                    reason: "petal: tunnel open timed out at the opener".into(),
                },
            );
            return;
        };
        t.state = TunnelState::Open;
        t.peer = Some((from, peer_tunnel));
        t.window = window;
        t.heard = now;
        t.sent = now;
        let (conn, app) = (t.conn, t.app);
        self.emit(Event::TunnelOpened { conn, tunnel: app });
        self.emit(Event::TunnelCredit {
            conn,
            tunnel: app,
            bytes: buffer,
        });
    }

    /// The open or offer deadline of tunnel `id` passed.
    pub(crate) fn on_tunnel_deadline(&mut self, now: Time, id: u64) {
        let Some(t) = self.tunnels.get(&id) else {
            return;
        };
        match t.state {
            TunnelState::Opening => {
                let (conn, app) = (t.conn, t.app);
                self.forget_tunnel(id);
                self.stats.tunnels_failed += 1;
                self.emit(Event::TunnelOpenFailed { conn, tunnel: app });
            }
            TunnelState::Offered => {
                self.fail_tunnel(
                    now,
                    id,
                    "petal: the member did not accept the tunnel in time",
                );
            }
            TunnelState::Open => {}
        }
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
        let t = self.tunnels.get_mut(&id).ok_or(AppError::UnknownId)?;
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
        t.out_left = left;
        t.outq_bytes += chunk.len() as u64;
        t.outq.push_back((size, chunk));
        self.pump_out(now, id);
        Ok(())
    }

    /// The local application grants `bytes` more of credit on tunnel `id`.
    pub(crate) fn grant(&mut self, now: Time, id: u64, bytes: u64) -> Result<(), AppError> {
        let t = self.tunnels.get_mut(&id).ok_or(AppError::UnknownId)?;
        if t.state != TunnelState::Open {
            return Err(AppError::UnknownId);
        }
        t.app_credit = t
            .app_credit
            .saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.pump_in(now, id);
        Ok(())
    }

    /// The local application closes tunnel `id`: the close goes out after queued chunks.
    pub(crate) fn close_tunnel(&mut self, now: Time, id: u64) -> Result<(), AppError> {
        let t = self.tunnels.get_mut(&id).ok_or(AppError::UnknownId)?;
        match t.state {
            TunnelState::Open if t.peer_closed => {
                // The far end closed first and will send nothing more, nor take what we still
                // queue: this close ends the tunnel at once.
                let (conn, app) = (t.conn, t.app);
                self.forget_tunnel(id);
                self.emit(Event::TunnelClosed {
                    conn,
                    tunnel: app,
                    reason: String::new(),
                });
            }
            TunnelState::Open => {
                t.closing = true;
                let dropped = t.inq_cost();
                t.inq.clear();
                t.inq_bytes = 0;
                let peer = t.peer;
                self.return_window(now, peer, dropped);
                self.pump_out(now, id);
            }
            // Not open yet: closing means giving up (the far end hears of it if known).
            TunnelState::Opening | TunnelState::Offered => {
                let Some(t) = self.forget_tunnel(id) else {
                    return Err(AppError::UnknownId);
                };
                if let Some((peer, pt)) = t.peer {
                    self.send_or_loop(
                        now,
                        peer,
                        Message::TunnelClose {
                            tunnel: pt,
                            reason: "petal: the tunnel was closed before it opened".into(),
                        },
                    );
                }
                // The application gave it up itself: a graceful close, not a failure.
                if t.state == TunnelState::Offered {
                    self.emit(Event::TunnelOfferClosed {
                        conn: t.conn,
                        offer: id,
                    });
                } else {
                    self.emit(Event::TunnelClosed {
                        conn: t.conn,
                        tunnel: t.app,
                        reason: String::new(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends queued chunks within the far node's window; re-grants the local application.
    fn pump_out(&mut self, now: Time, id: u64) {
        let mut sent_bytes = 0;
        let mut out = Vec::new();
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        let Some((peer, pt)) = t.peer else {
            return;
        };
        while let Some((size, chunk)) = t.outq.front() {
            let len = chunk.len() as u64;
            if len + CHUNK_COST > t.window {
                break;
            }
            let (size, chunk) = (*size, chunk.clone());
            t.outq.pop_front();
            t.outq_bytes -= len;
            t.window -= len + CHUNK_COST;
            sent_bytes += len;
            out.push(Message::TunnelData {
                tunnel: pt,
                seq: t.next_out_seq,
                size,
                payload: chunk,
            });
            t.next_out_seq += 1;
        }
        let finish = t.closing && t.outq.is_empty();
        let (conn, app) = (t.conn, t.app);
        if !out.is_empty() || finish {
            t.sent = now;
        }
        self.stats.tunnel_bytes_sent += sent_bytes;
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
    fn pump_in(&mut self, now: Time, id: u64) {
        let mut taken = 0;
        let mut returned = 0;
        let mut chunks = Vec::new();
        let Some(t) = self.tunnels.get_mut(&id) else {
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
            taken += len;
            returned += len + CHUNK_COST;
            chunks.push((size, chunk));
        }
        let (conn, app) = (t.conn, t.app);
        let peer = t.peer;
        let done = t.peer_closed && t.inq.is_empty();
        if taken > 0 && !t.peer_closed {
            t.sent = now;
        }
        self.stats.tunnel_bytes_received += taken;
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
            if let Some((peer, pt)) = peer {
                self.send_or_loop(
                    now,
                    peer,
                    Message::TunnelAllow {
                        tunnel: pt,
                        bytes: returned,
                    },
                );
            }
        }
    }

    /// Returns `bytes` of window to the far end for chunks dropped unread after a local close,
    /// so that a far end that is closing too can flush its queue and send its own close.
    fn return_window(&mut self, now: Time, peer: Option<(NodeInfo, u64)>, bytes: u64) {
        if let Some((peer, pt)) = peer.filter(|_| bytes > 0) {
            self.send_or_loop(now, peer, Message::TunnelAllow { tunnel: pt, bytes });
        }
    }

    /// The open tunnel `id` if `from` is its far end.
    fn tunnel_from(&mut self, from: NodeId, id: u64) -> Option<&mut Tunnel> {
        self.tunnels
            .get_mut(&id)
            .filter(|t| t.state == TunnelState::Open && t.peer.is_some_and(|p| p.0.id == from))
    }

    pub(crate) fn on_tunnel_data(
        &mut self,
        now: Time,
        from: NodeInfo,
        id: u64,
        seq: u64,
        size: u64,
        payload: Bytes,
    ) {
        let (window, limit) = (self.cfg.tunnel_window, self.cfg.tunnel_chunk_limit);
        let Some(t) = self.tunnel_from(from.id, id) else {
            self.stats.tunnel_stale += 1;
            return;
        };
        t.heard = now;
        if t.closing {
            // Our application closed: what still arrives is dropped (its window returned).
            let peer = t.peer;
            self.return_window(now, peer, payload.len() as u64 + CHUNK_COST);
            return;
        }
        let framing = framed(t.in_left, size, payload.len() as u64);
        let checked = if seq != t.next_in_seq {
            Err("petal: tunnel data lost in transit")
        } else if payload.len() > limit || t.inq_cost() + payload.len() as u64 + CHUNK_COST > window
        {
            Err("petal: the far node overran the tunnel window")
        } else {
            framing
                .ok_or("petal: the far node sent an empty chunk or one beyond its message's size")
        };
        let left = match checked {
            Ok(left) => left,
            Err(why) => {
                self.fail_tunnel(now, id, why);
                return;
            }
        };
        t.next_in_seq += 1;
        t.in_left = left;
        t.inq_bytes += payload.len() as u64;
        t.inq.push_back((size, payload));
        self.pump_in(now, id);
    }

    pub(crate) fn on_tunnel_allow(&mut self, now: Time, from: NodeInfo, id: u64, bytes: u64) {
        let window = self.cfg.tunnel_window;
        let Some(t) = self.tunnel_from(from.id, id) else {
            self.stats.tunnel_stale += 1;
            return;
        };
        t.heard = now;
        t.window = t.window.saturating_add(bytes);
        if t.window > window {
            self.fail_tunnel(
                now,
                id,
                "petal: the far node granted more than the tunnel window",
            );
            return;
        }
        self.pump_out(now, id);
    }

    pub(crate) fn on_tunnel_close(&mut self, now: Time, from: NodeInfo, id: u64, reason: String) {
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        // An opening tunnel does not know its far end yet: a refusal may come from any node
        // (it names the id of this node's opening tunnel).
        let opening = t.state == TunnelState::Opening;
        if !opening && t.peer.is_none_or(|p| p.0.id != from.id) {
            self.stats.tunnel_stale += 1;
            return;
        }
        match t.state {
            TunnelState::Opening | TunnelState::Offered => {
                // Refused before it opened, or (offered here) the opener gave up first.
                let Some(t) = self.forget_tunnel(id) else {
                    return;
                };
                self.stats.tunnels_failed += 1;
                self.report_end(&t, id, reason);
            }
            TunnelState::Open if reason.is_empty() && !t.closing => {
                t.peer_closed = true;
                self.pump_in(now, id);
            }
            TunnelState::Open => {
                let Some(t) = self.forget_tunnel(id) else {
                    return;
                };
                let reason = if reason.is_empty() && t.closing {
                    // Both ends closed at once: ours is graceful too.
                    String::new()
                } else {
                    reason
                };
                if !reason.is_empty() {
                    self.stats.tunnels_failed += 1;
                }
                self.emit(Event::TunnelClosed {
                    conn: t.conn,
                    tunnel: t.app,
                    reason,
                });
            }
        }
    }

    /// Closes tunnel `id` on failure: tells the far end (if known) and the local application.
    pub(crate) fn fail_tunnel(&mut self, now: Time, id: u64, reason: &str) {
        let Some(t) = self.forget_tunnel(id) else {
            return;
        };
        self.stats.tunnels_failed += 1;
        if let Some((peer, pt)) = t.peer {
            self.send_or_loop(
                now,
                peer,
                Message::TunnelClose {
                    tunnel: pt,
                    reason: reason.to_owned(),
                },
            );
        }
        self.report_end(&t, id, reason.to_owned());
    }

    /// Tells the local application that tunnel `id` (already removed) ended: an opening tunnel
    /// failed to open, an offer was withdrawn; any other closed with `reason`.
    fn report_end(&mut self, t: &Tunnel, id: u64, reason: String) {
        let conn = t.conn;
        match t.state {
            TunnelState::Opening => self.emit(Event::TunnelOpenFailed {
                conn,
                tunnel: t.app,
            }),
            TunnelState::Offered => self.emit(Event::TunnelOfferClosed { conn, offer: id }),
            TunnelState::Open => self.emit(Event::TunnelClosed {
                conn,
                tunnel: t.app,
                reason,
            }),
        }
    }

    /// Removes tunnel `id`, and its connection's name for it.
    fn forget_tunnel(&mut self, id: u64) -> Option<Tunnel> {
        let t = self.tunnels.remove(&id)?;
        if t.state != TunnelState::Offered {
            if let Some(c) = self.conns.get_mut(&t.conn) {
                c.tunnels.remove(&t.app);
            }
        }
        Some(t)
    }

    /// The core id of tunnel `app` of connection `conn`.
    pub(crate) fn tunnel_of(&self, conn: ConnId, app: u64) -> Result<u64, AppError> {
        self.conns
            .get(&conn)
            .ok_or(AppError::UnknownConn)?
            .tunnels
            .get(&app)
            .copied()
            .ok_or(AppError::UnknownId)
    }

    /// Keepalives and idle checks of open tunnels; re-armed while tunnels exist.
    pub(crate) fn on_tunnel_tick(&mut self, now: Time) {
        let (idle, keep) = (
            self.cfg.tunnel_idle_timeout,
            self.cfg.tunnel_keepalive_interval,
        );
        let ids: Vec<u64> = self.tunnels.keys().copied().collect();
        for id in ids {
            let t = &self.tunnels[&id];
            // Same-node tunnels cannot go silent; after a graceful close from the far end
            // nothing more comes from it (the rest is here, for the local reader).
            if t.state != TunnelState::Open
                || t.peer_closed
                || t.peer.is_some_and(|p| p.0.id == self.me.id)
            {
                continue;
            }
            if now.saturating_since(t.heard) >= idle {
                self.fail_tunnel(now, id, "petal: the far node went silent");
            } else if now.saturating_since(t.sent) >= keep
                && let Some((peer, pt)) = t.peer
            {
                if let Some(t) = self.tunnels.get_mut(&id) {
                    t.sent = now;
                }
                self.send(
                    peer,
                    Message::TunnelAllow {
                        tunnel: pt,
                        bytes: 0,
                    },
                );
            }
        }
        self.tunnel_tick_at = Time::MAX;
        self.arm_tunnel_tick(now);
    }

    fn arm_tunnel_tick(&mut self, now: Time) {
        if self.tunnel_tick_at == Time::MAX && !self.tunnels.is_empty() {
            self.tunnel_tick_at = self.quantize(now + self.cfg.tunnel_keepalive_interval);
            self.set_timer(self.tunnel_tick_at, TimerKey::TunnelTick);
        }
    }

    /// Tunnels whose far end is on node `dead` fail at once (except those the far end closed
    /// gracefully: what it sent is here and is still delivered).
    pub(crate) fn tunnels_on_peer_dead(&mut self, now: Time, dead: NodeId) {
        let ids: Vec<u64> = self
            .tunnels
            .iter()
            .filter(|(_, t)| {
                t.state == TunnelState::Open
                    && !t.peer_closed
                    && t.peer.is_some_and(|p| p.0.id == dead)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.fail_tunnel(now, id, "petal: the far node died");
        }
    }

    pub(crate) fn check_tunnel_invariants(&self) {
        assert!(
            self.tunnels.len() <= self.cfg.max_tunnels,
            "tunnels over bound"
        );
        for t in self.tunnels.values() {
            assert!(
                t.outq_bytes <= self.cfg.tunnel_buffer,
                "tunnel send queue over bound"
            );
            assert!(
                t.inq_cost() <= self.cfg.tunnel_window,
                "tunnel receive queue over bound"
            );
            assert!(
                t.window <= self.cfg.tunnel_window,
                "tunnel window over bound"
            );
            assert_eq!(
                t.outq_bytes,
                t.outq.iter().map(|c| c.1.len() as u64).sum::<u64>(),
                "send queue bytes"
            );
            assert_eq!(
                t.inq_bytes,
                t.inq.iter().map(|c| c.1.len() as u64).sum::<u64>(),
                "receive queue bytes"
            );
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
