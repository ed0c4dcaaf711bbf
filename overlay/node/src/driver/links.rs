//! The node task's peer links: dialing, link state, sending the core's messages, idle links,
//! and starting the two tasks of a link whose handshake is done.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use petal_protocol::{Message, NodeId, NodeInfo};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::outbound::LinkTx;
use super::{Driver, FIRST_DIAL_BACKOFF, Input};
use crate::budget::{self, Queued, Share};
use crate::link::{self, LinkOut};
use crate::net::Net;
use crate::{Options, RuntimeStats};

/// A link as the node task sees it.
pub(super) enum LinkState {
    /// Being dialed; messages wait here (bounded in number and by the peer's share of the
    /// memory budget).
    Dialing {
        queued: Vec<Queued>,
        share: Arc<Share>,
    },
    /// Up.
    Up {
        link: u64,
        dialer: NodeId,
        /// The writer's queue (and what the link carried, and since when).
        out: LinkTx,
        /// The peer's share of the memory budget, which the link's queue is held to.
        share: Arc<Share>,
    },
}

impl<N: Net> Driver<N> {
    /// A dial failed before its handshake finished: back off from the address, drop what
    /// waited for that dial, and count a failed seed.
    pub(super) fn dial_failed(&mut self, expected: Option<NodeId>, addr: SocketAddr, why: &str) {
        RuntimeStats::add(&self.stats.link_dial_failures, 1);
        if expected.is_none() {
            tracing::info!(%addr, %why, "seed dial failed");
        } else {
            tracing::debug!(%addr, %why, "peer dial failed");
        }
        let now_i = Instant::now();
        if self.dial_backoff.len() >= 4096 {
            // Addresses never dialed again would otherwise stay for ever.
            self.dial_backoff.retain(|_, (until, _)| *until > now_i);
        }
        // A port that is not open yet (a fleet starting) is tried again soon; one
        // that keeps failing, at most every `dial_backoff`.
        let delay = self
            .dial_backoff
            .get(&addr)
            .map_or(FIRST_DIAL_BACKOFF, |(_, d)| d.saturating_mul(2))
            .min(self.opts.dial_backoff);
        self.dial_backoff.insert(addr, (now_i + delay, delay));
        // Only a dial still pending is dropped: a link to that node may have come up
        // from its side meanwhile, and must not be closed by our failed attempt.
        if let Some(id) = expected
            && let Some(queued) = self.take_dialing(id)
        {
            RuntimeStats::add(&self.stats.link_drops, queued.len() as u64);
            // The core hears at once (a join through that node moves on).
            let now = self.now();
            self.node.unreachable(now, id);
        }
        if expected.is_none() && self.seeds.contains(&addr) {
            RuntimeStats::add(&self.stats.seed_failures, 1);
            self.seed_failed(addr, "every seed failed");
        }
    }

    /// Link `link` to `peer` ended: forget it unless another link replaced it meanwhile.
    pub(super) fn link_down(&mut self, peer: NodeId, link: u64, why: &str) {
        if let Some(LinkState::Up { link: cur, .. }) = self.links.get(&peer)
            && *cur == link
        {
            tracing::debug!(%peer, %why, "peer link down");
            self.links.remove(&peer);
            // A hint that the peer may have crashed: the core probes it (and a failed dial
            // for that probe makes it dead at once).
            let now = self.now();
            self.node.link_lost(now, peer);
        }
    }

    pub(super) fn link_up(
        &mut self,
        peer: NodeInfo,
        link: u64,
        dialed_addr: Option<SocketAddr>,
        tx: mpsc::UnboundedSender<LinkOut>,
        expected: Option<NodeId>,
        traffic: Arc<link::LinkTraffic>,
    ) {
        let dialed = dialed_addr.is_some();
        let me = self.node.id();
        if peer.id == me {
            if let Some(addr) = dialed_addr.filter(|a| self.seeds.contains(a)) {
                // Our own address among the seeds (one list for the whole cluster): remember
                // it, never dial it again, and do not wait for it to join.
                self.seeds.answered(&addr, me);
                if self.seeds_pending {
                    self.seed_failed(addr, "no seed but this node answered");
                } else {
                    self.seeds.failed(&addr);
                }
                return;
            }
            tracing::warn!(addr = %peer.addr, "a link reached this node itself; closing it");
            return;
        }
        if let Some(want) = expected
            && want != peer.id
        {
            // Another node answers at that address (a restart with a new id): what was queued
            // was for the old one and must not reach the new one.
            RuntimeStats::add(&self.stats.link_id_mismatches, 1);
            tracing::info!(%want, got = %peer.id, "a different node answers at a known address");
            if let Some(queued) = self.take_dialing(want) {
                RuntimeStats::add(&self.stats.link_drops, queued.len() as u64);
            }
        }
        let seed = expected
            .is_none()
            .then_some(dialed_addr)
            .flatten()
            .filter(|a| self.seeds.contains(a));
        let dialer = link::dialer(me, peer.id, dialed);
        let (queued, share) = match self.links.remove(&peer.id) {
            Some(LinkState::Dialing { queued, share }) => (queued, share),
            Some(LinkState::Up {
                link: old,
                dialer: old_dialer,
                out: old_out,
                share: old_share,
            }) => {
                if old_dialer < dialer || (old_dialer == dialer && old > link) {
                    // Keep the existing link; this one closes once its writer drains.
                    self.links.insert(
                        peer.id,
                        LinkState::Up {
                            link: old,
                            dialer: old_dialer,
                            out: old_out,
                            share: old_share,
                        },
                    );
                    // The seed answered all the same (it had dialed us first).
                    if let Some(addr) = seed {
                        self.seed_linked(addr, peer);
                    }
                    return;
                }
                (Vec::new(), self.new_share())
            }
            None => (Vec::new(), self.new_share()),
        };
        RuntimeStats::add(&self.stats.links_up, 1);
        // The peer is reachable: failures to its addresses start from a short delay again.
        self.dial_backoff.remove(&peer.addr);
        if let Some(a) = dialed_addr {
            self.dial_backoff.remove(&a);
        }
        self.link_used.insert(peer.id, Instant::now());
        let mut out = LinkTx::new(tx, traffic);
        // What waited for the dial goes as one batch (at most `link_queue` messages).
        for q in queued {
            out.push(q.msg, q.charge);
        }
        if let Err(lost) = out.flush() {
            RuntimeStats::add(&self.stats.link_drops, lost.len() as u64);
        }
        self.links.insert(
            peer.id,
            LinkState::Up {
                link,
                dialer,
                out,
                share,
            },
        );
        if let Some(addr) = seed {
            self.seed_linked(addr, peer);
        }
    }

    /// Removes the link state of `id` if it is a pending dial (an `Up` link stays), returning
    /// the messages that waited for it.
    fn take_dialing(&mut self, id: NodeId) -> Option<Vec<Queued>> {
        match self.links.get(&id) {
            Some(LinkState::Dialing { .. }) => match self.links.remove(&id) {
                Some(LinkState::Dialing { queued, .. }) => Some(queued),
                _ => None,
            },
            _ => None,
        }
    }

    /// Hands each link what the read under way queued for it (see `Driver::hold_output`).
    pub(super) fn release_links(&mut self) {
        self.holding_links = false;
        for to in std::mem::take(&mut self.dirty_links) {
            let Some(LinkState::Up { out, .. }) = self.links.get_mut(&to.id) else {
                continue;
            };
            if let Err(lost) = out.flush() {
                // The writer is gone (the link broke): re-dial.
                self.redial(to, lost);
            }
        }
    }

    /// Replaces the link to `to`, whose writer is gone, by a new dial that takes `msgs` (or,
    /// when no dial can start now, drops them, counted).
    fn redial(&mut self, to: NodeInfo, msgs: Vec<Message>) {
        self.links.remove(&to.id);
        let mut msgs = msgs.into_iter();
        for msg in msgs.by_ref() {
            self.transmit(to, msg);
            if !self.links.contains_key(&to.id) {
                // Not dialed (the address backs off, or no dial slot is free): the rest
                // would only be dropped one by one.
                break;
            }
        }
        RuntimeStats::add(&self.stats.link_drops, msgs.count() as u64);
    }

    /// Closes the links that carried no message of the core for `link_idle_close` and lead to
    /// nodes the core does not keep in its tables (a requester answered once, a tunnel's far
    /// end after the tunnel, a stranger): without this, a node would end up linked to every
    /// node it ever exchanged a message with. Links to leaf-set and routing-table members stay
    /// (the core pings them); a closed link is dialed again when needed.
    pub(super) fn reap_idle_links(&mut self) {
        let now_i = Instant::now();
        self.next_reap = now_i + self.opts.link_idle_close / 2;
        let idle = self.opts.link_idle_close;
        let stale: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(id, l)| {
                matches!(l, LinkState::Up { .. })
                    && !self.node.knows(**id)
                    && self
                        .link_used
                        .get(*id)
                        .is_none_or(|t| now_i.saturating_duration_since(*t) >= idle)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            tracing::debug!(peer = %id, "closing an idle link to a node outside our tables");
            RuntimeStats::add(&self.stats.links_idle_closed, 1);
            self.links.remove(&id);
        }
        self.link_used.retain(|id, _| self.links.contains_key(id));
    }

    pub(super) fn transmit(&mut self, to: NodeInfo, msg: Message) {
        super::log_join_message("sent", to, &msg);
        match self.links.get_mut(&to.id) {
            Some(LinkState::Up { out, share, .. }) => {
                let queued = out.queued();
                let limit = self.opts.link_queue;
                if queued > limit - limit / 4 && !self.congested {
                    // Three quarters full: stop taking work from applications until the
                    // links drain (backpressure rather than drops).
                    RuntimeStats::add(&self.stats.backpressure, 1);
                    self.congested = true;
                }
                if queued >= limit && out.is_closed() {
                    // Full because the writer is gone (the link broke): re-dial.
                    self.redial(to, vec![msg]);
                    return;
                }
                let charge = (queued < limit)
                    .then(|| share.charge(budget::message_cost(&msg)))
                    .flatten();
                let Some(charge) = charge else {
                    RuntimeStats::add(&self.stats.link_drops, 1);
                    if queued < limit {
                        RuntimeStats::add(&self.stats.memory_refused_links, 1);
                    }
                    return;
                };
                if let Some(t) = self.link_used.get_mut(&to.id) {
                    *t = self.coarse_now;
                } else {
                    self.link_used.insert(to.id, self.coarse_now);
                }
                let sent = if self.holding_links {
                    if out.push(msg, charge) {
                        self.dirty_links.push(to);
                    }
                    Ok(())
                } else {
                    out.send(Queued { msg, charge })
                };
                if let Err(lost) = sent {
                    // The writer is gone (the link broke): re-dial.
                    self.redial(to, lost);
                }
            }
            Some(LinkState::Dialing { queued, share }) => {
                let charge = (queued.len() < self.opts.link_queue)
                    .then(|| share.charge(budget::message_cost(&msg)))
                    .flatten();
                match charge {
                    Some(charge) => queued.push(Queued { msg, charge }),
                    None => RuntimeStats::add(&self.stats.link_drops, 1),
                }
            }
            None => {
                if self
                    .dial_backoff
                    .get(&to.addr)
                    .is_some_and(|(until, _)| Instant::now() < *until)
                {
                    RuntimeStats::add(&self.stats.link_drops, 1);
                    tracing::debug!(peer = %to.id, addr = %to.addr, "message dropped: the address backs off after a failed dial");
                    let now = self.now();
                    self.node.unreachable(now, to.id);
                    return;
                }
                // Addresses come from peers: a flood of them must not become a flood of
                // dials. Nodes in the core's tables (leaf set, routing table) have as many
                // slots again that strangers cannot take; the core's timeouts and reroutes
                // cover a dropped message.
                let cap = if self.node.knows(to.id) {
                    self.opts.max_dials * 2
                } else {
                    self.opts.max_dials
                };
                if self.dials >= cap {
                    RuntimeStats::add(&self.stats.link_drops, 1);
                    RuntimeStats::add(&self.stats.dials_refused, 1);
                    return;
                }
                let share = self.new_share();
                let Some(charge) = share.charge(budget::message_cost(&msg)) else {
                    RuntimeStats::add(&self.stats.link_drops, 1);
                    RuntimeStats::add(&self.stats.memory_refused_links, 1);
                    return;
                };
                self.links.insert(
                    to.id,
                    LinkState::Dialing {
                        queued: vec![Queued { msg, charge }],
                        share,
                    },
                );
                self.dial(Some(to.id), to.addr);
            }
        }
    }

    /// A fresh share of the memory budget for one peer's link queue.
    fn new_share(&self) -> Arc<Share> {
        Share::new(self.budget.clone(), self.node.config().memory_share)
    }

    /// Dials `addr` in a new task; the result comes back as an input.
    pub(super) fn dial(&mut self, expected: Option<NodeId>, addr: SocketAddr) {
        RuntimeStats::add(&self.stats.link_dials, 1);
        self.dials += 1;
        let link_id = self.next_link;
        self.next_link += 1;
        let net = self.net.clone();
        let me = self.node.info();
        let inputs = self.inputs.clone();
        let opts = self.opts.clone();
        let keys = self.keys.clone();
        let stats = self.stats.clone();
        let budget = self.budget.clone();
        let from = dial_source(self.opts.peer_listen.ip(), addr);
        crate::spawn_here(async move {
            let dial = async {
                let connect = async {
                    match from {
                        Some(ip) => net.connect_from(addr, ip).await,
                        None => net.connect(addr).await,
                    }
                };
                let mut s = tokio::time::timeout(opts.dial_timeout, connect)
                    .await
                    .map_err(|_| "dial timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                let (peer, sealer, opener) =
                    link::open(&mut s, true, &keys, me.addr, Some(addr), link_id)
                        .await
                        .map_err(|e| e.to_string())?;
                Ok::<_, String>((s, peer, sealer, opener))
            };
            match dial.await {
                Ok((s, peer, sealer, opener)) => {
                    let up = LinkOpened {
                        peer,
                        sealer,
                        opener,
                        link: link_id,
                        dialed: Some(addr),
                        expected,
                    };
                    start_link(s, up, &opts, stats, inputs, budget).await
                }
                Err(why) => {
                    let _ = inputs
                        .send(Input::DialFailed {
                            expected,
                            addr,
                            why,
                        })
                        .await;
                }
            }
        });
    }
}

/// The local address to dial `to` from, for nodes of one host on loopback addresses: the
/// loopback address peer links are accepted on, when `to` is a loopback address of the same
/// family. A peer then sees the connection come from the address this node listens on: on one
/// host whose nodes listen on 127.0.0.2, 127.0.0.3, ... every dial would otherwise come from
/// 127.0.0.1, and the per-address handshake limit (`max_link_handshakes_per_ip`) would count a
/// whole fleet starting at once as one address (a fleet test saw its dials refused and joins
/// wait on the lost announces). Between hosts the system chooses the source as before (a bound
/// source could defeat policy routing, a VPN's allowed addresses or a floating address).
pub(crate) fn dial_source(listen: IpAddr, to: SocketAddr) -> Option<IpAddr> {
    let to = to.ip();
    (listen.is_loopback() && to.is_loopback() && listen.is_ipv4() == to.is_ipv4() && listen != to)
        .then_some(listen)
}

/// A link whose handshake is done.
pub(crate) struct LinkOpened {
    pub(crate) peer: NodeInfo,
    pub(crate) sealer: crate::secure::Sealer,
    pub(crate) opener: crate::secure::Opener,
    pub(crate) link: u64,
    /// The address we dialed (`None`: inbound).
    pub(crate) dialed: Option<SocketAddr>,
    pub(crate) expected: Option<NodeId>,
}

/// Starts the two tasks of a link whose handshake is done and reports it up.
pub(crate) async fn start_link<S>(
    stream: S,
    up: LinkOpened,
    opts: &Options,
    stats: Arc<RuntimeStats>,
    inputs: mpsc::Sender<Input>,
    budget: Arc<petal_core::MemoryBudget>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let LinkOpened {
        peer,
        sealer,
        opener,
        link,
        dialed,
        expected,
    } = up;
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel::<LinkOut>();
    let traffic = Arc::new(link::LinkTraffic::new());
    let writer_traffic = traffic.clone();
    let writer = crate::spawn_here(async move {
        if let Err(e) = link::write_loop(wr, sealer, rx, writer_traffic).await {
            tracing::debug!(peer = %peer.id, error = %e, "peer link write failed");
        }
    })
    .abort_handle();
    // The reader holds only a weak sender: when the node task drops the link, the writer
    // drains and closes instead of being kept alive by keepalives.
    let weak = tx.downgrade();
    let live = link::Liveness {
        keepalive: opts.link_keepalive,
        idle: opts.link_idle_timeout,
        queue: opts.link_queue as u64,
    };
    let max_frame = opts.max_frame;
    let reader_inputs = inputs.clone();
    if inputs
        .send(Input::LinkUp {
            peer,
            link,
            dialed,
            tx,
            expected,
            traffic: traffic.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    crate::spawn_here(link::read_loop(
        rd,
        opener,
        stats,
        peer,
        link,
        max_frame,
        reader_inputs,
        weak,
        writer,
        live,
        Share::new(budget, opts.core.memory_share),
        traffic,
    ));
}

#[cfg(test)]
mod tests {
    use super::dial_source;
    use std::net::{IpAddr, SocketAddr};

    #[test]
    fn dials_between_loopback_nodes_come_from_the_listen_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let to = |s: &str| s.parse::<SocketAddr>().unwrap();
        // One host, nodes on 127.0.0.k: each dials from its own address.
        assert_eq!(
            dial_source(ip("127.0.0.5"), to("127.0.0.7:55556")),
            Some(ip("127.0.0.5"))
        );
        // Between hosts: the system's choice, also for a listener on one address.
        assert_eq!(dial_source(ip("10.0.0.5"), to("10.0.0.9:55556")), None);
        assert_eq!(dial_source(ip("fd00::5"), to("[fd00::9]:55556")), None);
        // A wildcard listener: the system's choice.
        assert_eq!(dial_source(ip("0.0.0.0"), to("10.0.0.9:55556")), None);
        assert_eq!(dial_source(ip("::"), to("[fd00::9]:55556")), None);
        // Loopback to a remote host, or the other way: no.
        assert_eq!(dial_source(ip("127.0.0.5"), to("10.0.0.9:55556")), None);
        assert_eq!(dial_source(ip("10.0.0.5"), to("127.0.0.1:55556")), None);
        // Another family, or the same address: no.
        assert_eq!(dial_source(ip("::1"), to("127.0.0.1:55556")), None);
        assert_eq!(dial_source(ip("10.0.0.5"), to("10.0.0.5:55557")), None);
    }
}
