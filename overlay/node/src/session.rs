//! The node task's side of relay sessions: which connection asked what, and the translation
//! between relay v1 packets and core commands and events.
//!
//! Ids: a client's request id maps to the core's request id (kept per session); the node's id
//! in a REQUEST delivery is the core's delivery id (unique per node, hence per connection). A
//! client's tunnel id maps to the core's tunnel id both ways; an offered tunnel's build id is
//! the core's tunnel id.
//!
//! Every REQUEST gets exactly one REPLY and every TUN_INIT one TUN_CONFIRM: refusals are
//! answered at once (timeout), closes and shutdowns answer what is pending.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use petal_core::{AppError, ConnId, Event, Node, Outcome, Time};
use petal_protocol::ReplyResult;
use petal_protocol::relay::{self, ClientPacket, NodePacket, ReplyOutcome};
use tokio::sync::mpsc;

use crate::{Options, RuntimeStats};

/// What the node task sends a session's writer.
pub(crate) enum Out {
    /// A packet to write.
    Packet(NodePacket),
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
}

impl SessionTx {
    /// Queues a packet that must arrive (replies, tunnel control and data: their number is
    /// bounded by the core's tables and the client's own credit).
    fn must(&self, p: NodePacket) {
        self.queued.fetch_add(p.encoded_len(), Ordering::Relaxed);
        let _ = self.tx.send(Out::Packet(p));
    }

    /// Queues a packet that may be dropped when the client is not reading (broadcasts, events,
    /// request deliveries). Returns false when dropped.
    fn may(&self, p: NodePacket, limit: usize) -> bool {
        let len = p.encoded_len();
        if self.queued.load(Ordering::Relaxed) + len > limit {
            return false;
        }
        self.must(p);
        true
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
}

#[derive(Default)]
struct Tunnels {
    /// Client tunnel id -> core tunnel id.
    by_client: BTreeMap<u64, u64>,
    /// Core tunnel id -> client tunnel id (`None` while offered and not yet confirmed).
    by_core: BTreeMap<u64, Option<u64>>,
    /// Client ids of outbound tunnels still opening (TUN_INIT not yet answered). A client
    /// waits for their TUN_CONFIRM with no timer of its own and knows no tunnel by that id
    /// yet, so when the connection or the node closes first their answer must be the failed
    /// TUN_CONFIRM `0a id 01`, not a TUN_CLOSE (found by the relay_lifecycle tests).
    opening: BTreeSet<u64>,
}

struct Session {
    out: SessionTx,
    /// Core request id -> client request id.
    requests: BTreeMap<u64, u64>,
    /// Request deliveries sent to this client -> when the core has surely forgotten them.
    /// Delivery ids are node-wide (and sequential), so without this check one connection
    /// could answer, or by a wrong id spoil, a request delivered to another (found by the
    /// relay_hostile tests).
    deliveries: BTreeMap<u64, Time>,
    /// `deliveries` is pruned of forgotten entries when it grows to this size.
    prune_at: usize,
    tunnels: Tunnels,
    dropped: u64,
}

/// Every attached session.
pub(crate) struct Sessions {
    map: BTreeMap<u64, Session>,
    opts: Arc<Options>,
    stats: Arc<RuntimeStats>,
}

fn timeout_ms(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX)
}

impl Sessions {
    pub(crate) fn new(opts: Arc<Options>, stats: Arc<RuntimeStats>) -> Self {
        Sessions {
            map: BTreeMap::new(),
            opts,
            stats,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Attaches a session: registers it with the core and sends the handshake's answer.
    pub(crate) fn open(&mut self, node: &mut Node, now: Time, open: SessionOpen) {
        let cluster = open.cluster.as_deref();
        match node.register(now, ConnId(open.conn), cluster, 1) {
            Ok(()) => {
                open.out.must(NodePacket::Init {
                    magic: relay::RELAY_MAGIC.into(),
                    version: relay::VERSION.into(),
                });
                RuntimeStats::add(&self.stats.sessions_opened, 1);
                self.map.insert(
                    open.conn,
                    Session {
                        out: open.out,
                        requests: BTreeMap::new(),
                        deliveries: BTreeMap::new(),
                        prune_at: 1024,
                        tunnels: Tunnels::default(),
                        dropped: 0,
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
            } => match node.request(now, c, &cluster, request, timeout_ms(t)) {
                Ok(core) => {
                    s.requests.insert(core, id);
                    Ok(())
                }
                Err(e) => {
                    // Refused (too many pending, bad name): the one REPLY is a timeout now.
                    s.out.must(NodePacket::Reply {
                        id,
                        outcome: ReplyOutcome::Timeout,
                    });
                    Err(e)
                }
            },
            ClientPacket::Reply { id, result } => {
                let result = match result {
                    Ok(b) => ReplyResult::Ok(b),
                    Err(f) => ReplyResult::Fault(f),
                };
                // An unknown id is a reply after the timeout: discarded, as the spec says. So is
                // a reply for a delivery to another connection.
                if s.deliveries.remove(&id).is_none() {
                    RuntimeStats::add(&self.stats.late_replies, 1);
                    return;
                }
                match node.reply(now, id, result) {
                    Err(AppError::UnknownId) => {
                        RuntimeStats::add(&self.stats.late_replies, 1);
                        Ok(())
                    }
                    r => r,
                }
            }
            ClientPacket::TunInit { id, .. } if s.tunnels.by_client.contains_key(&id) => {
                // The id names a tunnel of this connection already: refuse the new one, and
                // leave the existing one alone.
                s.out.must(NodePacket::TunConfirm {
                    id,
                    chunk_limit: None,
                });
                Err(AppError::Invalid(
                    "tunnel id already in use on this connection",
                ))
            }
            ClientPacket::TunInit {
                id,
                cluster,
                timeout_ms: t,
            } => match node.tunnel_open(now, c, &cluster, timeout_ms(t)) {
                Ok(core) => {
                    s.tunnels.by_client.insert(id, core);
                    s.tunnels.by_core.insert(core, Some(id));
                    s.tunnels.opening.insert(id);
                    Ok(())
                }
                Err(e) => {
                    s.out.must(NodePacket::TunConfirm {
                        id,
                        chunk_limit: None,
                    });
                    Err(e)
                }
            },
            ClientPacket::TunConfirm { build_id, tun_id } => {
                let in_use = s.tunnels.by_client.contains_key(&tun_id);
                match s.tunnels.by_core.get_mut(&build_id) {
                    Some(slot @ None) if !in_use => {
                        *slot = Some(tun_id);
                        s.tunnels.by_client.insert(tun_id, build_id);
                        node.tunnel_accept(now, build_id)
                    }
                    // The id names a live tunnel of this connection: a TUN_CLOSE for it would
                    // end that tunnel for the client while it stays open here. Leave it alone;
                    // refuse the offer, whose opener then hears at once, not at its timeout
                    // (found by the relay_tunnels tests).
                    Some(None) => ignore_gone(node.tunnel_close(now, build_id))
                        .and(Err(AppError::Invalid("tunnel id already in use"))),
                    _ if in_use => Err(AppError::Invalid("tunnel id already in use")),
                    _ => {
                        // The offer expired (or was confirmed already): the client's tunnel ends.
                        s.out.must(NodePacket::TunClose {
                            id: tun_id,
                            reason: "petal: the tunnel offer expired".into(),
                        });
                        Ok(())
                    }
                }
            }
            ClientPacket::TunAllow { id, space } => match s.tunnels.by_client.get(&id) {
                Some(&core) => ignore_gone(node.tunnel_allow(now, core, space)),
                None => Ok(()),
            },
            ClientPacket::TunTransfer { id, size, payload } => match s.tunnels.by_client.get(&id) {
                Some(&core) => match node.tunnel_send(now, core, size, payload) {
                    Err(e @ (AppError::Full(_) | AppError::Invalid(_))) => {
                        // Beyond the granted credit or badly framed: a broken client.
                        tracing::info!(conn, tunnel = id, error = %e, "tunnel protocol violation; closing the connection");
                        RuntimeStats::add(&self.stats.relay_violations, 1);
                        s.out.close();
                        // Forget the session now, not when its reader notices: the packets it
                        // sent after the violation (maybe in the same batch) must not take
                        // effect (found by the relay_hostile tests).
                        self.map.remove(&conn);
                        let _ = node.unregister(now, ConnId(conn));
                        return;
                    }
                    r => ignore_gone(r),
                },
                None => Ok(()),
            },
            ClientPacket::TunClose { id } => match s.tunnels.by_client.get(&id) {
                Some(&core) => ignore_gone(node.tunnel_close(now, core)),
                None => Ok(()),
            },
            ClientPacket::Init { .. } | ClientPacket::Close => Ok(()),
            // The codec grows with the spec only; nothing else exists in v1.
            #[allow(unreachable_patterns)]
            _ => Ok(()),
        };
        if let Err(e) = r {
            RuntimeStats::add(&self.stats.relay_refused, 1);
            tracing::debug!(conn, error = %e, "relay command refused");
        }
    }

    /// An application event from the core.
    pub(crate) fn event(&mut self, node: &mut Node, now: Time, ev: Event) {
        let Some(ConnId(conn)) = ev.conn() else {
            return;
        };
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        let limit = self.opts.session_queue_bytes;
        let dropped = match ev {
            Event::Request {
                delivery,
                payload,
                timeout_ms,
                ..
            } => {
                let sent = s.out.may(
                    NodePacket::Request {
                        id: delivery,
                        request: payload,
                        timeout_ms: u64::from(timeout_ms),
                    },
                    limit,
                );
                if sent {
                    let forget = now
                        + Duration::from_millis(u64::from(timeout_ms))
                        + node.config().stall_forget_after;
                    s.deliveries.insert(delivery, forget);
                    if s.deliveries.len() >= s.prune_at {
                        s.deliveries.retain(|_, t| *t > now);
                        s.prune_at = (2 * s.deliveries.len()).max(1024);
                    }
                }
                !sent
            }
            Event::Broadcast { payload, .. } => {
                !s.out.may(NodePacket::Broadcast { message: payload }, limit)
            }
            Event::Published { topic, payload, .. } => !s.out.may(
                NodePacket::Publish {
                    topic: topic.to_string(),
                    event: payload,
                },
                limit,
            ),
            Event::RequestDone {
                request, outcome, ..
            } => {
                if let Some(id) = s.requests.remove(&request) {
                    let outcome = match outcome {
                        Outcome::Reply(b) => ReplyOutcome::Success(b),
                        Outcome::Fault(f) => ReplyOutcome::Fault(f),
                        Outcome::Timeout => ReplyOutcome::Timeout,
                    };
                    s.out.must(NodePacket::Reply { id, outcome });
                }
                false
            }
            Event::TunnelIncoming { tunnel, .. } => {
                s.tunnels.by_core.insert(tunnel, None);
                s.out.must(NodePacket::TunInit {
                    build_id: tunnel,
                    chunk_limit: node.config().tunnel_chunk_limit as u64,
                });
                false
            }
            Event::TunnelOpened { tunnel, .. } => {
                if let Some(Some(id)) = s.tunnels.by_core.get(&tunnel) {
                    s.tunnels.opening.remove(id);
                    s.out.must(NodePacket::TunConfirm {
                        id: *id,
                        chunk_limit: Some(node.config().tunnel_chunk_limit as u64),
                    });
                }
                false
            }
            Event::TunnelOpenFailed { tunnel, .. } => {
                if let Some(Some(id)) = s.tunnels.by_core.remove(&tunnel) {
                    s.tunnels.by_client.remove(&id);
                    s.tunnels.opening.remove(&id);
                    s.out.must(NodePacket::TunConfirm {
                        id,
                        chunk_limit: None,
                    });
                }
                false
            }
            Event::TunnelCredit { tunnel, bytes, .. } => {
                if let Some(Some(id)) = s.tunnels.by_core.get(&tunnel) {
                    s.out.must(NodePacket::TunAllow {
                        id: *id,
                        space: bytes,
                    });
                }
                false
            }
            Event::TunnelData {
                tunnel,
                size,
                payload,
                ..
            } => {
                if let Some(Some(id)) = s.tunnels.by_core.get(&tunnel) {
                    s.out.must(NodePacket::TunTransfer {
                        id: *id,
                        size,
                        payload,
                    });
                }
                false
            }
            Event::TunnelClosed { tunnel, reason, .. } => {
                // An offer that closes before its confirm was never seen by the client as a
                // tunnel: nothing to tell it.
                if let Some(Some(id)) = s.tunnels.by_core.remove(&tunnel) {
                    s.tunnels.by_client.remove(&id);
                    s.tunnels.opening.remove(&id);
                    s.out.must(NodePacket::TunClose { id, reason });
                }
                false
            }
            _ => false,
        };
        if s.out.queued.load(Ordering::Relaxed) > self.opts.session_max_bytes {
            // Replies and tunnel data are never dropped, so a client that stopped reading
            // with much of them pending is cut off rather than allowed to grow the node.
            tracing::warn!(
                conn,
                queued = s.out.queued.load(Ordering::Relaxed),
                limit = self.opts.session_max_bytes,
                "client far behind on replies and tunnel data; closing its connection"
            );
            RuntimeStats::add(&self.stats.slow_closed, 1);
            s.out.kill.notify_one();
            self.map.remove(&conn);
            let _ = node.unregister(now, ConnId(conn));
            return;
        }
        if dropped {
            s.dropped += 1;
            RuntimeStats::add(&self.stats.relay_dropped, 1);
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
        let Some(s) = self.map.remove(&conn) else {
            return;
        };
        if graceful {
            answer_pending(&s, "petal: the connection closed");
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
        for (conn, s) in std::mem::take(&mut self.map) {
            answer_pending(&s, "petal: the node is shutting down");
            s.out.must(NodePacket::Close {
                reason: "petal: the node is shutting down".into(),
            });
            s.out.close();
            let _ = node.unregister(now, ConnId(conn));
        }
    }
}

fn answer_pending(s: &Session, reason: &str) {
    let mut ids: Vec<u64> = s.requests.values().copied().collect();
    ids.sort_unstable();
    for id in ids {
        s.out.must(NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Timeout,
        });
    }
    let mut tunnels: Vec<u64> = s.tunnels.by_client.keys().copied().collect();
    tunnels.sort_unstable();
    for id in tunnels {
        if s.tunnels.opening.contains(&id) {
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
