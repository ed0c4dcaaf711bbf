//! The node task's side of relay sessions: the translation between relay v1 packets and core
//! commands and events, and each session's writer.
//!
//! Ids need no translation: the core takes the client's own request and tunnel ids (it keeps
//! which connection owns what, and refuses an id a connection already uses), the node's id in a
//! REQUEST delivery is the core's delivery id (which the core accepts only from the connection
//! it was delivered to), and an offered tunnel's build id is the core's offer id.
//!
//! Every REQUEST gets exactly one REPLY and every TUN_INIT one TUN_CONFIRM: refusals are
//! answered at once (timeout), closes and shutdowns answer what is pending (as the core lists
//! it, [`Node::pending`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use petal_core::{AppError, ConnId, Event, Node, Outcome, Time};
use petal_protocol::ReplyResult;
use petal_protocol::relay::{self, ClientPacket, NodePacket, ReplyOutcome};
use tokio::sync::mpsc;

use crate::budget::{Charge, Share};
use crate::{Options, RuntimeStats};

mod batch;

use batch::RoundCounts;

/// What the node task sends a session's writer.
pub(crate) enum Out {
    /// A packet to write, with what it holds of the node's memory budget.
    Packet(NodePacket, Charge),
    /// The packets one delivery round queued for the session, in order, their encoded size
    /// and what they hold of the budget together (one hand-over for many events).
    Batch(Vec<NodePacket>, usize, Charge),
    /// Write what is queued, then close the connection.
    Close,
}

/// The node task's handle on a session's writer: an unbounded channel whose droppable traffic
/// is bounded in bytes (`queued`), the rest by the core's per-connection tables.
#[derive(Clone)]
pub(crate) struct SessionTx {
    pub(crate) tx: mpsc::UnboundedSender<Out>,
    pub(crate) queued: Arc<AtomicUsize>,
    /// Cuts the connection at once, queued packets and all (a client far behind).
    pub(crate) kill: Arc<tokio::sync::Notify>,
    /// An embedded session's flag that ends its source: set by the node itself when it cuts
    /// the session off, so that nothing it queued is read after that, even while the
    /// application's runtime (where the session's task runs) has not yet seen `kill`.
    pub(crate) cut: Option<Arc<AtomicBool>>,
    /// Asks the session's reader to hand over what the client already wrote and answer with
    /// `Input::SessionDrained` (the node's shutdown).
    pub(crate) drain: Arc<tokio::sync::Notify>,
    /// The session's part of the node's memory budget (set when it attaches).
    pub(crate) share: Option<Arc<Share>>,
    /// Set when the budget refused a packet that must arrive: the session is closed.
    pub(crate) refused: Arc<AtomicBool>,
}

impl SessionTx {
    /// Cuts the session off: its queued packets are not delivered.
    fn cut_off(&self) {
        if let Some(cut) = &self.cut {
            cut.store(true, Ordering::Release);
        }
        self.kill.notify_one();
    }

    /// Queues a packet that must arrive (replies, tunnel control and data: their number is
    /// bounded by the core's tables and the client's own credit).
    fn must(&self, p: NodePacket) {
        let len = p.encoded_len();
        let charge = match &self.share {
            Some(share) => share.charge(len as u64).unwrap_or_else(|| {
                // Queued all the same (it must arrive, and the queue is bounded by
                // `session_max_bytes`), and the session is closed at the next check.
                self.refused.store(true, Ordering::Relaxed);
                Charge::none()
            }),
            None => Charge::none(),
        };
        self.queued.fetch_add(len, Ordering::Relaxed);
        let _ = self.tx.send(Out::Packet(p, charge));
    }

    fn close(&self) {
        let _ = self.tx.send(Out::Close);
    }
}

/// A session asking to attach.
pub(crate) struct SessionOpen {
    pub(crate) conn: u64,
    /// `None` for a plain client.
    pub(crate) cluster: Option<String>,
    pub(crate) out: SessionTx,
    /// The client negotiated Petal's relay extension (the store's operations).
    pub(crate) extended: bool,
}

struct Session {
    out: SessionTx,
    dropped: u64,
    /// The packets queued for the session since its last hand-over, handed to the writer
    /// together ([`Sessions::flush_batches`]; a relay session's at the end of the read being
    /// handled, an embedded session's at the end of each round): one channel send, one count
    /// of the queued bytes and one give-back of their budget for many events.
    batch: Vec<NodePacket>,
    /// Their encoded size (queued, though not yet counted in `out.queued`).
    batch_bytes: usize,
    /// Their charges, combined.
    batch_charge: Charge,
    /// Droppable packets the budget refused since last counted.
    refused_droppable: u64,
    /// When it attached.
    since: tokio::time::Instant,
    /// When each of its requests the core took arrived, by the client's id: for the
    /// request-duration histogram (bounded by the core's pending requests per connection).
    started: BTreeMap<u64, tokio::time::Instant>,
}

/// Every attached session.
pub(crate) struct Sessions {
    map: BTreeMap<u64, Session>,
    /// Sessions cut off while their events were delivered (a client far behind), to
    /// unregister from the core once the delivery is over ([`Sessions::take_doomed`]).
    doomed: Vec<u64>,
    opts: Arc<Options>,
    stats: Arc<RuntimeStats>,
    /// The node's memory budget, which every session's queue is charged to.
    budget: Arc<petal_core::MemoryBudget>,
    /// Durations of the requests the sessions' clients made.
    pub(crate) durations: crate::inspect::DurationHistogram,
    /// Relay sessions whose batch got packets since their last hand-over, handed over at the
    /// end of a round that is not held (a session may be listed twice after a `must_now`
    /// handed its batch over early, or be gone: either finds nothing to do).
    dirty: Vec<u64>,
    /// The same for embedded sessions, handed over at the end of every round, held or not
    /// (see [`Session::embedded`]).
    dirty_embedded: Vec<u64>,
    /// Batches are held until [`Sessions::release`] (the driver handles a read's packets or
    /// messages one at a time, and hands their output over once).
    holding: bool,
    /// Counts of the current delivery round, added to the runtime's shared counters when it
    /// ends: requests, broadcasts and events delivered, and droppable packets dropped.
    round: RoundCounts,
}

fn timeout_ms(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX)
}

impl Sessions {
    pub(crate) fn new(
        opts: Arc<Options>,
        stats: Arc<RuntimeStats>,
        budget: Arc<petal_core::MemoryBudget>,
    ) -> Self {
        Sessions {
            map: BTreeMap::new(),
            doomed: Vec::new(),
            opts,
            stats,
            budget,
            durations: crate::inspect::DurationHistogram::default(),
            dirty: Vec::new(),
            dirty_embedded: Vec::new(),
            holding: false,
            round: RoundCounts::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Every session, for the admin API.
    pub(crate) fn infos(&self) -> Vec<crate::inspect::SessionInfo> {
        self.map
            .iter()
            .map(|(&conn, s)| crate::inspect::SessionInfo {
                conn,
                age: s.since.elapsed(),
                queued_bytes: s.out.queued.load(Ordering::Relaxed) as u64,
                dropped: s.dropped,
                pending_requests: s.started.len(),
            })
            .collect()
    }

    /// Bytes queued for every session's client, in all.
    pub(crate) fn queued_bytes(&self) -> u64 {
        self.map
            .values()
            .map(|s| s.out.queued.load(Ordering::Relaxed) as u64)
            .sum()
    }

    /// Attaches a session: registers it with the core and sends the handshake's answer.
    pub(crate) fn open(&mut self, node: &mut Node, now: Time, open: SessionOpen) {
        let cluster = open.cluster.as_deref();
        match node.register(now, ConnId(open.conn), cluster, 1) {
            Ok(()) => {
                let version = if open.extended {
                    relay::ext::EXT_VERSION
                } else {
                    relay::VERSION
                };
                open.out.must(NodePacket::Init {
                    magic: relay::RELAY_MAGIC.into(),
                    version: version.into(),
                });
                RuntimeStats::add(&self.stats.sessions_opened, 1);
                let mut out = open.out;
                out.share = Some(Share::new(self.budget.clone(), node.config().memory_share));
                self.map.insert(
                    open.conn,
                    Session {
                        out,
                        dropped: 0,
                        batch: Vec::new(),
                        batch_bytes: 0,
                        batch_charge: Charge::none(),
                        refused_droppable: 0,
                        since: tokio::time::Instant::now(),
                        started: BTreeMap::new(),
                    },
                );
            }
            Err(e) => {
                tracing::info!(conn = open.conn, error = %e, "relay attach refused");
                open.out.must(NodePacket::Deny {
                    magic: relay::RELAY_MAGIC.into(),
                    reason: format!("petal: {e}"),
                });
                open.out.close();
            }
        }
    }

    /// A packet from an attached client.
    pub(crate) fn packet(&mut self, node: &mut Node, now: Time, conn: u64, p: ClientPacket) {
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        let c = ConnId(conn);
        let r: Result<(), AppError> = match p {
            ClientPacket::Broadcast { cluster, message } => node.broadcast(now, &cluster, message),
            ClientPacket::Publish { topic, event } => node.publish(now, &topic, event),
            ClientPacket::Subscribe { topic } => node.subscribe(now, c, &topic).map(|_| ()),
            ClientPacket::Unsubscribe { topic } => node.unsubscribe(now, c, &topic).map(|_| ()),
            ClientPacket::Request {
                id,
                cluster,
                request,
                timeout_ms: t,
            } => node
                .request(now, c, id, &cluster, request, timeout_ms(t))
                .inspect(|()| {
                    s.started.insert(id, tokio::time::Instant::now());
                })
                .inspect_err(|_| {
                    // Refused (too many pending, an id in use, a bad name): the one REPLY is
                    // a timeout now.
                    s.must_now(NodePacket::Reply {
                        id,
                        outcome: ReplyOutcome::Timeout,
                    });
                }),
            ClientPacket::Reply { id, result } => {
                let result = match result {
                    Ok(b) => ReplyResult::Ok(b),
                    Err(f) => ReplyResult::Fault(f),
                };
                // An unknown id is a reply after the timeout: discarded, as the spec says. So
                // is a reply for a delivery to another connection (the core checks).
                match node.reply(now, c, id, result) {
                    Err(AppError::UnknownId) => {
                        RuntimeStats::add(&self.stats.late_replies, 1);
                        Ok(())
                    }
                    r => r,
                }
            }
            ClientPacket::TunInit {
                id,
                cluster,
                timeout_ms: t,
            } => node
                .tunnel_open(now, c, id, &cluster, timeout_ms(t))
                .inspect_err(|_| {
                    // Refused (an id this connection uses already, too many tunnels, a bad
                    // name); an existing tunnel of that id is left alone.
                    s.must_now(NodePacket::TunConfirm {
                        id,
                        chunk_limit: None,
                    });
                }),
            ClientPacket::TunConfirm { build_id, tun_id } => {
                match node.tunnel_accept(now, c, build_id, tun_id) {
                    Err(AppError::UnknownId) => {
                        // The offer expired (or was confirmed already): the client's tunnel
                        // ends.
                        s.must_now(NodePacket::TunClose {
                            id: tun_id,
                            reason: "petal: the tunnel offer expired".into(),
                        });
                        Ok(())
                    }
                    // An id that names a live tunnel of this connection: the core refuses
                    // the offer (its opener hears at once, not at its timeout) and leaves
                    // that tunnel alone (a TUN_CLOSE for it would end it for the client
                    // while it stays open here; found by the relay_tunnels tests).
                    r => r,
                }
            }
            ClientPacket::TunAllow { id, space } => {
                ignore_gone(node.tunnel_allow(now, c, id, space))
            }
            ClientPacket::TunTransfer { id, size, payload } => {
                match node.tunnel_send(now, c, id, size, payload) {
                    Err(e @ (AppError::Full(_) | AppError::Invalid(_))) => {
                        // Beyond the granted credit or badly framed: a broken client.
                        tracing::info!(conn, tunnel = id, error = %e, "tunnel protocol violation; closing the connection");
                        RuntimeStats::add(&self.stats.relay_violations, 1);
                        s.flush();
                        s.out.close();
                        // Forget the session now, not when its reader notices: the packets it
                        // sent after the violation (maybe in the same batch) must not take
                        // effect (found by the relay_hostile tests).
                        self.map.remove(&conn);
                        let _ = node.unregister(now, ConnId(conn));
                        return;
                    }
                    r => ignore_gone(r),
                }
            }
            ClientPacket::TunClose { id } => ignore_gone(node.tunnel_close(now, c, id)),
            ClientPacket::IdRegister {
                id,
                identity,
                timeout_ms: t,
            } => node
                .id_register(now, c, id, &identity, timeout_ms(t))
                .inspect_err(|e| id_refused(s, id, e)),
            ClientPacket::IdUnregister { identity } => {
                node.id_unregister(now, c, &identity).map(|_| ())
            }
            ClientPacket::IdSend {
                id,
                identity,
                message,
                timeout_ms: t,
            } => node
                .id_send(now, c, id, &identity, message, timeout_ms(t))
                .inspect_err(|e| id_refused(s, id, e)),
            ClientPacket::IdWho {
                id,
                identity,
                timeout_ms: t,
            } => node
                .id_who(now, c, id, &identity, timeout_ms(t))
                .inspect_err(|e| id_refused(s, id, e)),
            ClientPacket::KvGet { .. }
            | ClientPacket::KvPut { .. }
            | ClientPacket::KvDelete { .. } => {
                let Some((id, key, kind, t)) = kv_command(p) else {
                    return;
                };
                node.kv(now, c, id, &key, kind, timeout_ms(t))
                    .inspect_err(|e| {
                        // Refused (an id in use, too many operations, a bad key or value): the
                        // one KV_RESULT says why.
                        s.must_now(NodePacket::KvResult {
                            id,
                            result: petal_core::StoreResult::Failed(format!("petal: {e}")),
                        });
                    })
            }
            // Exhaustive: a packet kind added to the protocol must be handled here.
            ClientPacket::Init { .. } | ClientPacket::Close => Ok(()),
        };
        if let Err(e) = r {
            RuntimeStats::add(&self.stats.relay_refused, 1);
            tracing::debug!(conn, error = %e, "relay command refused");
        }
        // Answers to commands (refusals, timeouts) are queued too: the same bounds.
        self.cut_if_over(conn);
    }

    /// An application event from the core. Calls nothing in the core: a session cut off here
    /// is unregistered after the delivery ([`Sessions::take_doomed`]).
    pub(crate) fn event(&mut self, chunk_limit: usize, ev: Event) {
        let Some(ConnId(conn)) = ev.conn() else {
            return;
        };
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        let limit = self.opts.session_queue_bytes;
        let was_empty = s.batch.is_empty();
        let delivered = match &ev {
            Event::Request { .. } => Some(&mut self.round.requests),
            Event::Broadcast { .. } => Some(&mut self.round.broadcasts),
            Event::Published { .. } => Some(&mut self.round.publishes),
            _ => None,
        };
        let dropped = match ev {
            Event::Request {
                delivery,
                payload,
                timeout_ms,
                ..
            } => !s.may(
                NodePacket::Request {
                    id: delivery,
                    request: payload,
                    timeout_ms: u64::from(timeout_ms),
                },
                limit,
            ),
            Event::Broadcast { payload, .. } => {
                !s.may(NodePacket::Broadcast { message: payload }, limit)
            }
            Event::Published { topic, payload, .. } => !s.may(
                NodePacket::Publish {
                    topic,
                    event: payload,
                },
                limit,
            ),
            Event::RequestDone {
                request, outcome, ..
            } => {
                let outcome = match outcome {
                    Outcome::Reply(b) => ReplyOutcome::Success(b),
                    Outcome::Fault(f) => ReplyOutcome::Fault(f),
                    Outcome::Timeout => ReplyOutcome::Timeout,
                };
                if let Some(t) = s.started.remove(&request) {
                    self.durations.observe(t.elapsed());
                }
                s.must(NodePacket::Reply {
                    id: request,
                    outcome,
                });
                false
            }
            Event::TunnelIncoming { offer, .. } => {
                s.must(NodePacket::TunInit {
                    build_id: offer,
                    chunk_limit: chunk_limit as u64,
                });
                false
            }
            Event::TunnelOpened { tunnel, .. } => {
                s.must(NodePacket::TunConfirm {
                    id: tunnel,
                    chunk_limit: Some(chunk_limit as u64),
                });
                false
            }
            Event::TunnelOpenFailed { tunnel, .. } => {
                s.must(NodePacket::TunConfirm {
                    id: tunnel,
                    chunk_limit: None,
                });
                false
            }
            Event::TunnelCredit { tunnel, bytes, .. } => {
                s.must(NodePacket::TunAllow {
                    id: tunnel,
                    space: bytes,
                });
                false
            }
            Event::TunnelData {
                tunnel,
                size,
                payload,
                ..
            } => {
                s.must(NodePacket::TunTransfer {
                    id: tunnel,
                    size,
                    payload,
                });
                false
            }
            Event::TunnelClosed { tunnel, reason, .. } => {
                s.must(NodePacket::TunClose { id: tunnel, reason });
                false
            }
            // An offer that closes before its confirm was never a tunnel to the client:
            // nothing to tell it (a late confirm is answered with a TUN_CLOSE).
            Event::TunnelOfferClosed { .. } => false,
            Event::KvDone { op, result, .. } => {
                s.must(NodePacket::KvResult { id: op, result });
                false
            }
            Event::IdDone { op, result, .. } => {
                s.must(NodePacket::IdResult { id: op, result });
                false
            }
            Event::IdMessage {
                identity, payload, ..
            } => {
                s.must(NodePacket::IdMessage {
                    identity: identity.to_string(),
                    message: payload,
                });
                false
            }
            _ => false,
        };
        if let Some(c) = delivered
            && !dropped
        {
            *c += 1;
        }
        if was_empty && !s.batch.is_empty() {
            if s.embedded() {
                self.dirty_embedded.push(conn);
            } else {
                self.dirty.push(conn);
            }
        }
        if self.cut_if_over(conn) {
            return;
        }
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        if dropped {
            s.dropped += 1;
            self.round.dropped += 1;
            if s.dropped.is_power_of_two() {
                tracing::warn!(
                    conn,
                    dropped = s.dropped,
                    limit,
                    "client is not reading: dropping broadcasts, events and requests for it"
                );
            }
        }
    }

    /// A session ended. A graceful close answers what is pending and acknowledges; a drop just
    /// forgets (nobody is listening).
    pub(crate) fn closed(&mut self, node: &mut Node, now: Time, conn: u64, graceful: bool) {
        let Some(mut s) = self.map.remove(&conn) else {
            return;
        };
        // (Outside a delivery round the batch is empty; handed over first all the same.)
        s.flush();
        if graceful {
            answer_pending(node, conn, &s, "petal: the connection closed");
            s.out.must(NodePacket::Close {
                reason: String::new(),
            });
        }
        s.out.close();
        let _ = node.unregister(now, ConnId(conn));
    }

    /// Node shutdown: every session gets its pending requests answered (timeout), its tunnels
    /// closed with a reason and a CLOSE with a reason.
    pub(crate) fn shutdown(&mut self, node: &mut Node, now: Time) {
        let mut sessions = std::mem::take(&mut self.map);
        // Every session is answered before any is unregistered: unregistering one fails the
        // tunnels it has with the others, and those must still be answered as pending.
        for (&conn, s) in &mut sessions {
            s.flush();
            answer_pending(node, conn, s, "petal: the node is shutting down");
            s.out.must(NodePacket::Close {
                reason: "petal: the node is shutting down".into(),
            });
            s.out.close();
        }
        for conn in sessions.into_keys() {
            let _ = node.unregister(now, ConnId(conn));
        }
    }

    /// Asks every session's reader for what its client already wrote; returns the sessions
    /// asked (each answers with `Input::SessionDrained`, or closes).
    pub(crate) fn drain_all(&self) -> Vec<u64> {
        for s in self.map.values() {
            s.out.drain.notify_one();
        }
        self.map.keys().copied().collect()
    }

    /// Counts the budget's refusals for session `conn` and cuts it off when a packet that must
    /// arrive could not be kept (the node's budget or its share had no room), or when it is
    /// more than `session_max_bytes` behind. True when cut off (unregistered after the current
    /// delivery, see [`Sessions::take_doomed`]).
    fn cut_if_over(&mut self, conn: u64) -> bool {
        let Some(s) = self.map.get_mut(&conn) else {
            return false;
        };
        if s.refused_droppable > 0 {
            let over_budget = std::mem::take(&mut s.refused_droppable);
            RuntimeStats::add(&self.stats.memory_refused_sessions, over_budget);
        }
        if s.out.refused.load(Ordering::Relaxed) {
            // A reply or tunnel data the node's memory budget had no room for: the client
            // holding the most unread is not necessarily this one, but this one's packet
            // could not be kept.
            tracing::warn!(
                conn,
                "node memory budget exhausted; closing a client's connection"
            );
            RuntimeStats::add(&self.stats.memory_refused_sessions, 1);
            s.out.cut_off();
            self.map.remove(&conn);
            self.doomed.push(conn);
            return true;
        }
        let queued = s.out.queued.load(Ordering::Relaxed) + s.batch_bytes;
        if queued > self.opts.session_max_bytes {
            // Replies and tunnel data are never dropped, so a client that stopped reading
            // with much of them pending is cut off rather than allowed to grow the node.
            tracing::warn!(
                conn,
                queued,
                limit = self.opts.session_max_bytes,
                "client far behind on replies and tunnel data; closing its connection"
            );
            RuntimeStats::add(&self.stats.slow_closed, 1);
            s.out.cut_off();
            self.map.remove(&conn);
            self.doomed.push(conn);
            return true;
        }
        false
    }

    /// Sessions cut off during the last event delivery, to unregister from the core now.
    pub(crate) fn take_doomed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.doomed)
    }
}

/// Answers what connection `conn` still has pending, as the core lists it: a timeout REPLY
/// for each request; for each tunnel still opening, the failed TUN_CONFIRM `0a id 01` (its
/// client waits for that with no timer of its own and knows no tunnel by that id yet, so a
/// TUN_CLOSE would not do; found by the relay_lifecycle tests); a TUN_CLOSE with `reason` for
/// the others.
fn answer_pending(node: &Node, conn: u64, s: &Session, reason: &str) {
    let Some(p) = node.pending(ConnId(conn)) else {
        return;
    };
    for id in p.requests {
        s.out.must(NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Timeout,
        });
    }
    let mut tunnels: Vec<(u64, bool)> = p.opening.iter().map(|&id| (id, true)).collect();
    tunnels.extend(p.tunnels.iter().map(|&id| (id, false)));
    tunnels.sort_unstable();
    for (id, opening) in tunnels {
        if opening {
            s.out.must(NodePacket::TunConfirm {
                id,
                chunk_limit: None,
            });
        } else {
            s.out.must(NodePacket::TunClose {
                id,
                reason: reason.into(),
            });
        }
    }
}

/// A tunnel command on a tunnel that just closed is a race, not an error.
fn ignore_gone(r: Result<(), AppError>) -> Result<(), AppError> {
    match r {
        Err(AppError::UnknownId) => Ok(()),
        r => r,
    }
}

/// A refused identity command's one ID_RESULT, saying why.
fn id_refused(s: &mut Session, id: u64, e: &AppError) {
    s.must_now(NodePacket::IdResult {
        id,
        result: petal_protocol::IdResult::Failed(format!("petal: {e}")),
    });
}

/// A store packet's operation id, key, operation and timeout.
fn kv_command(p: ClientPacket) -> Option<(u64, String, petal_core::StoreOpKind, u64)> {
    use petal_core::StoreOpKind;
    Some(match p {
        ClientPacket::KvPut {
            id,
            key,
            value,
            ttl_ms,
            expect,
            timeout_ms,
        } => (
            id,
            key,
            StoreOpKind::Put {
                value,
                ttl_ms,
                expect,
            },
            timeout_ms,
        ),
        ClientPacket::KvDelete {
            id,
            key,
            expect,
            timeout_ms,
        } => (id, key, StoreOpKind::Delete { expect }, timeout_ms),
        ClientPacket::KvGet {
            id,
            key,
            timeout_ms,
        } => (id, key, StoreOpKind::Get, timeout_ms),
        _ => return None,
    })
}
