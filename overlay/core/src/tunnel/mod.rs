//! Tunnels: ordered, reliable, credit-throttled streams of chunked messages between two
//! application connections, carried node to node without the overlay's intermediate hops.
//!
//! ## Life
//! The opener's node routes a tunnel ask to the cluster like a request; the member chosen for
//! it sees [`Event::TunnelIncoming`] and accepts with `Node::tunnel_accept`, whose node answers
//! the opener's node directly ([`Message::TunnelAccept`]). From then on the two nodes exchange
//! [`Message::TunnelData`] (numbered chunks, at most `tunnel_chunk_limit` bytes),
//! [`Message::TunnelAllow`] (window, cumulative; sent at least every `tunnel_keepalive_interval`,
//! which makes it the keepalive too) and [`Message::TunnelClose`]. Data and allows name both
//! ends' tunnel ids. An open that is not accepted within its timeout fails
//! ([`Event::TunnelOpenFailed`]); a late accept is answered with a close.
//!
//! Each end announces what it takes ([`TunnelParams`]: its receive window and chunk limit) in
//! the open and the accept; the other end sends within them (splitting chunks larger than the
//! far limit), so the two nodes need not share a configuration.
//!
//! ## Backpressure, end to end
//! Three bounded windows: the local application may have `tunnel_buffer` bytes queued in its
//! node (it is granted that much at the start and re-granted each chunk once the chunk leaves
//! for the far node, [`Event::TunnelCredit`]); a node sends the far node at most the far node's
//! window of bytes not yet consumed there (handed to its application or dropped): each allow
//! carries the far node's total consumed so far, so that a lost or reordered allow is made good
//! by the next one; and a node hands its application a message's first chunk only
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
//! A chunk that arrives twice is dropped, and one that arrives past a gap in the sequence is
//! held until the gap fills (links are ordered streams, but a link re-dialed while the old one
//! drains, or a transport of datagrams, can reorder). A gap still open after
//! `tunnel_keepalive_interval`, a window overrun, a framing error, silence for
//! `tunnel_idle_timeout` or the far node's death closes the tunnel with a reason on both ends. A graceful close is sent after every queued chunk has left, and the far
//! end reports it after its application has taken every chunk before it, however slowly it
//! reads: from then on, neither silence nor the death of the closing node fails that end.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use petal_protocol::{AskKind, DescendMsg, Message, NodeId, NodeInfo, TunnelParams};

use crate::app::{AppError, ConnId, ConnIndex};
use crate::node::{Event, Node, TimerKey};
use crate::time::Time;

mod flow;
mod info;

pub use info::{TunnelInfo, TunnelPhase};

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
    /// What the far node takes (its window and chunk limit), once known.
    far: TunnelParams,
    /// Window cost sent to the far node so far, in total.
    sent_cost: u64,
    /// Window cost the far node has consumed so far, in total (the highest it reported).
    acked: u64,
    next_out_seq: u64,
    /// Chunks from the far node waiting for the local application's credit.
    inq: VecDeque<(u64, Bytes)>,
    inq_bytes: u64,
    /// Chunks from the far node past a gap in the sequence, by sequence number.
    ahead: BTreeMap<u64, (u64, Bytes)>,
    ahead_bytes: u64,
    /// Since when the current gap is open (while `ahead` holds chunks).
    gap_since: Option<Time>,
    /// Window cost consumed here (chunks handed to the application or dropped), in total:
    /// what allows carry.
    consumed: u64,
    /// Credit granted by the local application (may go negative on continuation chunks).
    app_credit: i64,
    next_in_seq: u64,
    heard: Time,
    /// When the last allow went to the far node.
    allowed: Time,
    /// The local application closed: the close goes out once `outq` is empty.
    closing: bool,
    /// The far end closed gracefully: reported once `inq` is empty.
    peer_closed: bool,
    /// Bytes still to come of the message the local application is sending.
    out_left: u64,
    /// Bytes still to come of the message the far end is sending.
    in_left: u64,
    /// What the queued chunks (both ways) are charged to the memory budget, to the local
    /// connection (see `Node::sync_tunnel`).
    charged: u64,
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

    /// What each tunnel is charged to the memory budget, by owner; checks that each charge is
    /// what the tunnel queues.
    pub(crate) fn charges(&self) -> Vec<(crate::budget::Owner, u64)> {
        self.ends
            .iter()
            .map(|(id, t)| {
                assert_eq!(t.charged, t.held_cost(), "tunnel {id} charged wrong");
                (crate::budget::Owner::conn(t.conn), t.charged)
            })
            .collect()
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

    /// Removes tunnel `id`, and its connection's name for it (see `Node::forget_tunnel`).
    fn remove(&mut self, id: u64) -> Option<Tunnel> {
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
                "tunnel receive queues over bound"
            );
            assert!(
                t.acked <= t.sent_cost && t.sent_cost - t.acked <= t.far.window,
                "tunnel sent beyond the far window"
            );
            assert!(
                t.ahead.keys().all(|s| *s > t.next_in_seq),
                "a held chunk that is not past a gap"
            );
            assert_eq!(t.gap_since.is_some(), !t.ahead.is_empty(), "gap time");
            assert_eq!(
                t.ahead_bytes,
                t.ahead.values().map(|c| c.1.len() as u64).sum::<u64>(),
                "held chunk bytes"
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
        self.by_conn.check(cfg.max_conn_tunnels, |conn, app, id| {
            self.ends
                .get(&id)
                .is_some_and(|t| t.conn == conn && t.app == app)
        });
    }
}

impl Tunnel {
    /// What the chunks queued both ways hold (payload and per-chunk cost).
    fn held_cost(&self) -> u64 {
        self.inq_cost() + self.outq_bytes + self.outq.len() as u64 * CHUNK_COST
    }

    /// What the received chunks not yet consumed (queued or held) cost against the window.
    fn inq_cost(&self) -> u64 {
        self.inq_bytes + self.ahead_bytes + (self.inq.len() + self.ahead.len()) as u64 * CHUNK_COST
    }

    /// Window the far node still accepts.
    fn send_room(&self) -> u64 {
        self.far
            .window
            .saturating_sub(self.sent_cost.saturating_sub(self.acked))
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
            far: TunnelParams {
                window: 0,
                chunk_limit: 0,
            },
            sent_cost: 0,
            acked: 0,
            next_out_seq: 0,
            inq: VecDeque::new(),
            inq_bytes: 0,
            ahead: BTreeMap::new(),
            ahead_bytes: 0,
            gap_since: None,
            consumed: 0,
            app_credit: 0,
            next_in_seq: 0,
            heard: now,
            allowed: now,
            closing: false,
            peer_closed: false,
            out_left: 0,
            in_left: 0,
            charged: 0,
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
                kind: AskKind::Tunnel(self.tunnel_params()),
            },
        );
        Ok(())
    }

    /// What this node takes on a tunnel, as it announces it.
    fn tunnel_params(&self) -> TunnelParams {
        TunnelParams {
            window: self.cfg.tunnel_window,
            chunk_limit: u32::try_from(self.cfg.tunnel_chunk_limit).unwrap_or(u32::MAX),
        }
    }

    /// What this node sends within, given what the far node announced: its window, and the
    /// smaller of the two chunk limits. `None` when the far node's parameters leave no room for
    /// a chunk.
    fn far_params(&self, far: TunnelParams) -> Option<TunnelParams> {
        let own = u32::try_from(self.cfg.tunnel_chunk_limit).unwrap_or(u32::MAX);
        // A chunk and its cost must fit the window.
        let fits = u32::try_from(far.window.saturating_sub(CHUNK_COST)).unwrap_or(u32::MAX);
        (far.chunk_limit >= 1 && far.window > CHUNK_COST).then_some(TunnelParams {
            window: far.window,
            chunk_limit: far.chunk_limit.min(own).min(fits),
        })
    }

    /// A tunnel ask chose local member `conn`: offer it the tunnel.
    pub(crate) fn tunnel_incoming(&mut self, now: Time, conn: ConnId, msg: DescendMsg) {
        let far = match msg.ask.kind {
            AskKind::Tunnel(p) => self.far_params(p),
            _ => None,
        };
        let refusal = if far.is_none() {
            Some("petal: the opener's tunnel window or chunk limit is unusable")
        } else if self.tunnels.len() >= self.cfg.max_tunnels {
            self.stats.tunnel_drops += 1;
            Some("petal: too many tunnels at the accepting node")
        } else {
            None
        };
        let (Some(far), None) = (far, refusal) else {
            self.send_or_loop(
                now,
                msg.requester,
                Message::TunnelClose {
                    tunnel: msg.ask.id,
                    reason: refusal.unwrap_or_default().into(),
                },
            );
            return;
        };
        let id = self.nonce();
        let deadline = now + std::time::Duration::from_millis(u64::from(msg.ask.timeout_ms));
        let mut t = Tunnel::new(conn, id, TunnelState::Offered, now, deadline);
        t.peer = Some((msg.requester, msg.ask.id));
        t.far = far;
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
        let (params, buffer) = (self.tunnel_params(), self.cfg.tunnel_buffer);
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
        t.heard = now;
        t.allowed = now;
        let conn = t.conn;
        self.send_or_loop(
            now,
            peer,
            Message::TunnelAccept {
                tunnel: peer_tunnel,
                peer_tunnel: id,
                params,
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
        (id, peer_tunnel): (u64, u64),
        params: TunnelParams,
    ) {
        let buffer = self.cfg.tunnel_buffer;
        let far = self.far_params(params);
        if self.tunnels.ends.get(&id).is_some_and(|t| {
            t.state == TunnelState::Open
                && t.peer
                    .is_some_and(|p| (p.0.id, p.1) == (from.id, peer_tunnel))
        }) {
            // A copy of the accept that opened it.
            self.stats.tunnel_stale += 1;
            return;
        }
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
        t.heard = now;
        t.allowed = now;
        let Some(far) = far else {
            self.fail_tunnel(
                now,
                id,
                "petal: the acceptor's tunnel window or chunk limit is unusable",
            );
            return;
        };
        t.far = far;
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

    /// The local application closes tunnel `id`: the close goes out after queued chunks.
    pub(crate) fn close_tunnel(&mut self, now: Time, id: u64) -> Result<(), AppError> {
        let t = self.tunnels.ends.get_mut(&id).ok_or(AppError::UnknownId)?;
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
                // Queued chunks are dropped and their window returned; chunks held past a gap
                // are dropped as the gap fills (each counted once, in order).
                t.consumed += t.inq_bytes + t.inq.len() as u64 * CHUNK_COST;
                t.inq.clear();
                t.inq_bytes = 0;
                self.send_allow(now, id);
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
            if t.state != TunnelState::Open || t.peer.is_some_and(|p| p.0.id == self.me.id) {
                continue;
            }
            if t.peer_closed {
                // Nothing more comes from the far end but what is still on its way before its
                // close: a gap that stays open fails the tunnel.
                if t.gap_since.is_some_and(|g| now.saturating_since(g) >= keep) {
                    self.fail_tunnel(now, id, "petal: tunnel data lost in transit");
                }
                continue;
            }
            if now.saturating_since(t.heard) >= idle {
                self.fail_tunnel(now, id, "petal: the far node went silent");
            } else if t.gap_since.is_some_and(|g| now.saturating_since(g) >= keep) {
                self.fail_tunnel(now, id, "petal: tunnel data lost in transit");
            } else if now.saturating_since(t.allowed) >= keep {
                self.send_allow(now, id);
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
