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

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use petal_protocol::{DescendMsg, Message, NodeId, NodeInfo};

use crate::app::{AppError, ConnId, ConnIndex};
use crate::node::{Event, Node, TimerKey};
use crate::time::Time;

mod flow;

/// Where a tunnel is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TunnelState {
    /// Opened here; waiting for a member to accept.
    Opening,
    /// Offered to a local member; waiting for it to accept.
    Offered,
    /// Both ends known; data flows.
    Open,
}

/// One end of a tunnel on this node.
#[derive(Clone, Debug)]
struct Tunnel {
    conn: ConnId,
    /// The connection's own id for the tunnel (its events and commands use it); while
    /// offered and not yet accepted, the offer id.
    app: u64,
    state: TunnelState,
    /// The far end: its node and its tunnel id (the opener's while offered).
    peer: Option<(NodeInfo, u64)>,
    /// Open/offer deadline.
    deadline: Time,
    /// Chunks from the local application waiting for the far node's window.
    outq: VecDeque<(u64, Bytes)>,
    outq_bytes: u64,
    /// Bytes the far node still accepts.
    window: u64,
    next_out_seq: u64,
    /// Chunks from the far node waiting for the local application's credit.
    inq: VecDeque<(u64, Bytes)>,
    inq_bytes: u64,
    /// Credit granted by the local application (may go negative on continuation chunks).
    app_credit: i64,
    next_in_seq: u64,
    heard: Time,
    sent: Time,
    /// The local application closed: the close goes out once `outq` is empty.
    closing: bool,
    /// The far end closed gracefully: reported once `inq` is empty.
    peer_closed: bool,
    /// Bytes still to come of the message the local application is sending.
    out_left: u64,
    /// Bytes still to come of the message the far end is sending.
    in_left: u64,
}

/// What one chunk costs against the node-to-node window besides its bytes, so that a window
/// bounds the number of chunks a node holds (tiny chunks cannot pile up by the million).
const CHUNK_COST: u64 = 64;

/// The tunnel ends on a node, by the node's tunnel id, with each connection's names for its
/// tunnels. Private to this module (and `flow`); the rest of the node goes through the methods
/// below.
#[derive(Debug)]
pub(crate) struct Tunnels {
    ends: BTreeMap<u64, Tunnel>,
    /// Each connection's tunnels (opening, open, closing; not offers): its own id -> the
    /// node's.
    by_conn: ConnIndex,
    /// The armed keepalive tick (`Time::MAX`: none).
    tick_at: Time,
}

impl Tunnels {
    /// Heap bytes of the tunnel table (not the data each tunnel buffers).
    pub(crate) fn heap_bytes(&self) -> usize {
        crate::memory::btree_bytes(&self.ends)
    }

    pub(crate) fn new() -> Self {
        Self {
            ends: BTreeMap::new(),
            by_conn: ConnIndex::default(),
            tick_at: Time::MAX,
        }
    }

    /// Tunnel ends on this node.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Ids of every tunnel end.
    pub(crate) fn ids(&self) -> Vec<u64> {
        self.ends.keys().copied().collect()
    }

    /// Ids of `conn`'s tunnel ends (offers included).
    pub(crate) fn ids_of(&self, conn: ConnId) -> Vec<u64> {
        self.ends
            .iter()
            .filter(|(_, t)| t.conn == conn)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether `conn` names a tunnel `app`, and how many it names.
    pub(crate) fn conn_tunnels(&self, conn: ConnId, app: u64) -> (bool, usize) {
        self.by_conn.lookup(conn, app)
    }

    /// `conn`'s tunnels by its ids, ascending, split into (still opening, open or closing).
    pub(crate) fn of_conn(&self, conn: ConnId) -> (Vec<u64>, Vec<u64>) {
        let mut opening = Vec::new();
        let mut other = Vec::new();
        for (app, id) in self.by_conn.of(conn) {
            if self
                .ends
                .get(&id)
                .is_some_and(|t| t.state == TunnelState::Opening)
            {
                opening.push(app);
            } else {
                other.push(app);
            }
        }
        (opening, other)
    }

    /// True when `offer` is a tunnel offered to `conn` and not yet accepted.
    pub(crate) fn is_offer_to(&self, conn: ConnId, offer: u64) -> bool {
        self.ends
            .get(&offer)
            .is_some_and(|t| t.conn == conn && t.state == TunnelState::Offered)
    }

    /// The node's id of tunnel `app` of connection `conn`.
    pub(crate) fn id_of(&self, conn: ConnId, app: u64) -> Result<u64, AppError> {
        self.by_conn.get(conn, app).ok_or(AppError::UnknownId)
    }

    fn name(&mut self, conn: ConnId, app: u64, id: u64) {
        self.by_conn.insert(conn, app, id);
    }

    /// Removes tunnel `id`, and its connection's name for it.
    fn forget(&mut self, id: u64) -> Option<Tunnel> {
        let t = self.ends.remove(&id)?;
        if t.state != TunnelState::Offered {
            self.by_conn.remove(t.conn, t.app);
        }
        Some(t)
    }

    /// True when the owner of timer `key` (one of this module's) still holds deadline `t`.
    pub(crate) fn timer_live(&self, key: TimerKey, t: Time) -> bool {
        match key {
            TimerKey::Tunnel(id) => self
                .ends
                .get(&id)
                .is_some_and(|x| x.deadline == t && x.state != TunnelState::Open),
            TimerKey::TunnelTick => self.tick_at == t,
            _ => false,
        }
    }

    /// Owners that may hold a deadline.
    pub(crate) fn timer_owners(&self) -> usize {
        self.ends.len() + 1
    }

    /// Open and offer deadlines still to come (to re-arm them after the timers were dropped);
    /// the keepalive tick is disarmed (the caller re-arms it).
    pub(crate) fn rearm(&mut self) -> Vec<(Time, TimerKey)> {
        self.tick_at = Time::MAX;
        self.ends
            .iter()
            .filter(|(_, t)| t.state != TunnelState::Open)
            .map(|(id, t)| (t.deadline, TimerKey::Tunnel(*id)))
            .collect()
    }

    /// Asserts this module's invariants: bounds kept, queues counted right, the connection
    /// index exact, every tunnel of a registered connection (`registered`).
    pub(crate) fn check_invariants(
        &self,
        cfg: &crate::Config,
        registered: impl Fn(ConnId) -> bool,
    ) {
        assert!(self.ends.len() <= cfg.max_tunnels, "tunnels over bound");
        for (id, t) in &self.ends {
            assert!(registered(t.conn), "tunnel of a gone connection");
            if t.state != TunnelState::Offered {
                assert_eq!(
                    self.by_conn.get(t.conn, t.app),
                    Some(*id),
                    "tunnel missing from its connection's index"
                );
            }
            assert!(
                t.outq_bytes <= cfg.tunnel_buffer,
                "tunnel send queue over bound"
            );
            assert!(
                t.inq_cost() <= cfg.tunnel_window,
                "tunnel receive queue over bound"
            );
            assert!(t.window <= cfg.tunnel_window, "tunnel window over bound");
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
        self.by_conn.check(cfg.max_conn_tunnels, |conn, app, id| {
            self.ends
                .get(&id)
                .is_some_and(|t| t.conn == conn && t.app == app)
        });
    }
}

impl Tunnel {
    /// What the queued received chunks cost against the window.
    fn inq_cost(&self) -> u64 {
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
        self.tunnels.ends.insert(
            id,
            Tunnel::new(conn, app, TunnelState::Opening, now, deadline),
        );
        self.tunnels.name(conn, app, id);
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
        self.tunnels.ends.insert(id, t);
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
            .ends
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
        self.tunnels.name(conn, app, id);
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
            .ends
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
        let Some(t) = self.tunnels.ends.get(&id) else {
            return;
        };
        match t.state {
            TunnelState::Opening => {
                let (conn, app) = (t.conn, t.app);
                self.tunnels.forget(id);
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

    /// The local application closes tunnel `id`: the close goes out after queued chunks.
    pub(crate) fn close_tunnel(&mut self, now: Time, id: u64) -> Result<(), AppError> {
        let t = self.tunnels.ends.get_mut(&id).ok_or(AppError::UnknownId)?;
        match t.state {
            TunnelState::Open if t.peer_closed => {
                // The far end closed first and will send nothing more, nor take what we still
                // queue: this close ends the tunnel at once.
                let (conn, app) = (t.conn, t.app);
                self.tunnels.forget(id);
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
                let Some(t) = self.tunnels.forget(id) else {
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

    pub(crate) fn on_tunnel_close(&mut self, now: Time, from: NodeInfo, id: u64, reason: String) {
        let Some(t) = self.tunnels.ends.get_mut(&id) else {
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
                let Some(t) = self.tunnels.forget(id) else {
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
                let Some(t) = self.tunnels.forget(id) else {
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
        let Some(t) = self.tunnels.forget(id) else {
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

    /// Keepalives and idle checks of open tunnels; re-armed while tunnels exist.
    pub(crate) fn on_tunnel_tick(&mut self, now: Time) {
        let (idle, keep) = (
            self.cfg.tunnel_idle_timeout,
            self.cfg.tunnel_keepalive_interval,
        );
        let ids: Vec<u64> = self.tunnels.ends.keys().copied().collect();
        for id in ids {
            let t = &self.tunnels.ends[&id];
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
                if let Some(t) = self.tunnels.ends.get_mut(&id) {
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
        self.tunnels.tick_at = Time::MAX;
        self.arm_tunnel_tick(now);
    }

    fn arm_tunnel_tick(&mut self, now: Time) {
        if self.tunnels.tick_at == Time::MAX && !self.tunnels.ends.is_empty() {
            self.tunnels.tick_at = self.quantize(now + self.cfg.tunnel_keepalive_interval);
            self.set_timer(self.tunnels.tick_at, TimerKey::TunnelTick);
        }
    }

    /// Tunnels whose far end is on node `dead` fail at once (except those the far end closed
    /// gracefully: what it sent is here and is still delivered).
    pub(crate) fn tunnels_on_peer_dead(&mut self, now: Time, dead: NodeId) {
        let ids: Vec<u64> = self
            .tunnels
            .ends
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
}
