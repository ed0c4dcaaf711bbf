//! The listeners' accept loops, and the gate that bounds the handshakes they start.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::driver::{self, Input};
use crate::net::Listener;
use crate::{Options, RuntimeStats, link, relay};

/// Accepts peer links for ever: each connection runs its handshake in a task of its own,
/// bounded by a [`HandshakeGate`] (`max_link_handshakes`, `max_link_handshakes_per_ip`), then
/// starts its link.
#[expect(
    clippy::too_many_arguments,
    reason = "the accept loop owns each of these for its whole life and hands them to each link"
)]
pub(crate) async fn peer_links<L: Listener>(
    mut listener: L,
    advertise: SocketAddr,
    keys: Arc<link::LinkKeys>,
    opts: Arc<Options>,
    stats: Arc<RuntimeStats>,
    alive: Arc<()>,
    inputs: mpsc::Sender<Input>,
    budget: Arc<petal_core::MemoryBudget>,
) {
    let gate = Arc::new(HandshakeGate::new(
        opts.max_link_handshakes,
        opts.max_link_handshakes_per_ip,
    ));
    let mut next = 1u64 << 63;
    loop {
        let (mut stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                accept_failed("peer", &e).await;
                continue;
            }
        };
        let permit = match gate.enter(from.ip()) {
            Admit::Yes { permit, evicted } => {
                if evicted {
                    RuntimeStats::add(&stats.link_handshakes_refused, 1);
                }
                permit
            }
            Admit::No => {
                // Too many handshakes from that address: close unanswered.
                RuntimeStats::add(&stats.link_handshakes_refused, 1);
                continue;
            }
        };
        let seq = permit.seq;
        next += 1;
        let (link, inputs, opts, alive, keys, stats, budget) = (
            next,
            inputs.clone(),
            opts.clone(),
            alive.clone(),
            keys.clone(),
            stats.clone(),
            budget.clone(),
        );
        let task = crate::spawn_here(async move {
            let _alive = alive;
            let opened = link::open(&mut stream, false, &keys, advertise, Some(from), link).await;
            drop(permit);
            match opened {
                Ok((peer, sealer, opener)) => {
                    let up = driver::LinkOpened {
                        peer,
                        sealer,
                        opener,
                        link,
                        dialed: None,
                        expected: None,
                    };
                    driver::start_link(stream, up, &opts, stats, inputs, budget).await;
                }
                Err(e) => {
                    RuntimeStats::add(&stats.link_handshakes_failed, 1);
                    tracing::info!(%from, error = %e, "inbound peer link refused");
                }
            }
        });
        gate.set_handle(seq, task.abort_handle());
    }
}

/// Accepts relay connections for ever: each is served by a session task of its own, its
/// handshake bounded by `gate` (shared by every relay listener).
#[expect(
    clippy::too_many_arguments,
    reason = "the accept loop owns each of these for its whole life and hands them to each session"
)]
pub(crate) async fn relay_sessions<L: Listener>(
    mut listener: L,
    gate: Arc<HandshakeGate>,
    next_conn: Arc<AtomicU64>,
    opts: Arc<Options>,
    stats: Arc<RuntimeStats>,
    alive: Arc<()>,
    inputs: mpsc::Sender<Input>,
    budget: Arc<petal_core::MemoryBudget>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                accept_failed("relay", &e).await;
                continue;
            }
        };
        let Admit::Yes { permit, evicted } = gate.enter(from.ip()) else {
            RuntimeStats::add(&stats.handshakes_failed, 1);
            continue;
        };
        if evicted {
            RuntimeStats::add(&stats.handshakes_failed, 1);
        }
        let seq = permit.seq;
        let conn = next_conn.fetch_add(1, Ordering::Relaxed);
        let (inputs, opts, stats, alive) =
            (inputs.clone(), opts.clone(), stats.clone(), alive.clone());
        let share = crate::budget::Share::new(budget.clone(), opts.core.memory_share);
        let task = crate::spawn_here(async move {
            let _alive = alive;
            relay::serve(stream, conn, permit, opts, stats, inputs, share).await;
        });
        gate.set_handle(seq, task.abort_handle());
    }
}

/// After a failed accept (out of file descriptors under a connection flood, for one): log and
/// pause briefly instead of retrying in a tight loop that would take the node's CPU.
async fn accept_failed(what: &str, e: &io::Error) {
    tracing::warn!(listener = what, error = %e, "accept failed; pausing 50 ms");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Bounds the inbound link handshakes running at once. Per source IP address, a connection
/// beyond `per_ip` is closed at once (a flooding address hurts only itself). In all, when
/// `max` run, the oldest is cancelled to admit the new one: a real peer's handshake takes one
/// round trip, so a flood of silent connections would have to open `max` connections within
/// that round trip to starve it, instead of merely outlasting the handshake deadline.
#[derive(Debug)]
pub(crate) struct HandshakeGate {
    max: usize,
    per_ip: usize,
    state: std::sync::Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    next: u64,
    /// Running handshakes by age: source address and a handle to cancel it.
    running: std::collections::BTreeMap<u64, (IpAddr, Option<tokio::task::AbortHandle>)>,
    by_ip: std::collections::BTreeMap<IpAddr, usize>,
}

impl GateState {
    fn remove(&mut self, seq: u64) -> Option<Option<tokio::task::AbortHandle>> {
        let (ip, handle) = self.running.remove(&seq)?;
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
        Some(handle)
    }
}

/// A running handshake's slot, released on drop.
pub(crate) struct GatePermit {
    gate: Arc<HandshakeGate>,
    seq: u64,
}

/// What the gate decided for a new connection.
enum Admit {
    /// Run it; `evicted` older handshakes were cancelled to make room.
    Yes { permit: GatePermit, evicted: bool },
    /// Too many from that address.
    No,
}

impl HandshakeGate {
    pub(crate) fn new(max: usize, per_ip: usize) -> Self {
        HandshakeGate {
            max: max.max(1),
            per_ip: per_ip.max(1),
            state: std::sync::Mutex::new(GateState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(self: &Arc<Self>, ip: IpAddr) -> Admit {
        let ip = limit_key(ip);
        let mut g = self.lock();
        if g.by_ip.get(&ip).copied().unwrap_or(0) >= self.per_ip {
            return Admit::No;
        }
        let mut evicted = false;
        while g.running.len() >= self.max {
            let Some(&oldest) = g.running.keys().next() else {
                break;
            };
            if let Some(Some(h)) = g.remove(oldest) {
                h.abort();
            }
            evicted = true;
        }
        let seq = g.next;
        g.next += 1;
        g.running.insert(seq, (ip, None));
        *g.by_ip.entry(ip).or_insert(0) += 1;
        Admit::Yes {
            permit: GatePermit {
                gate: self.clone(),
                seq,
            },
            evicted,
        }
    }

    /// Records how to cancel handshake `seq` (if it still runs).
    fn set_handle(&self, seq: u64, h: tokio::task::AbortHandle) {
        if let Some(e) = self.lock().running.get_mut(&seq) {
            e.1 = Some(h);
        }
    }
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        let _ = self.gate.lock().remove(self.seq);
    }
}

/// Attaches applications in this process to the node, without sockets (brokerless mode,
/// [`crate::NodeHandle::local_connector`]): see [`LocalConnector::connect`] and
/// [`LocalConnector::register`]. The HTTP gateway reaches its node so.
#[derive(Clone)]
pub struct LocalConnector {
    pub(crate) next_conn: Arc<AtomicU64>,
    pub(crate) opts: Arc<Options>,
    /// The node's liveness token (a weak reference: a connector does not keep a stopped node's
    /// shutdown waiting).
    pub(crate) alive: std::sync::Weak<()>,
    pub(crate) inputs: mpsc::Sender<Input>,
    pub(crate) budget: Arc<petal_core::MemoryBudget>,
    /// The node's span: its sessions' tasks log inside it, whoever opened them.
    pub(crate) span: tracing::Span,
}

impl std::fmt::Debug for LocalConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalConnector")
    }
}

/// The address a per-address limit counts a connection from `ip` under: an IPv4 address as
/// itself, also when it arrives IPv4-mapped (`::ffff:a.b.c.d`, as on a dual-stack listener);
/// an IPv6 address by its /64, which one host or subscriber usually holds whole (counted
/// address by address, one host would have 2^64 of them).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::from(o)
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::limit_key;
    use std::net::IpAddr;

    #[test]
    fn limits_count_ipv6_by_its_64_and_mapped_ipv4_as_ipv4() {
        let k = |s: &str| limit_key(s.parse::<IpAddr>().unwrap());
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_ne!(k("::ffff:192.0.2.7"), k("::ffff:192.0.2.8"));
        assert_eq!(k("192.0.2.7"), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
