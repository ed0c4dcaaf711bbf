//! Failure detection: periodic pings to leaf-set and routing-table members, suspicion after a
//! missed pong (immediate re-probes), death after `suspicion_misses` misses in a row; dead
//! nodes are remembered and re-probed with backoff so that healed partitions and restarted
//! nodes are found again. Also proximity probes that measure round-trip times to candidates.

use crate::addr::PeerAddr;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::time::Duration;

use petal_protocol::{Key, Message, NodeId, NodeInfo};
use rand::Rng;

use super::membership::Heard;
use crate::node::{Event, Node, TimerKey};
use crate::time::{Time, micros};

/// Most nodes remembered dead that one revival probes at once ([`Node::probe_dead_of_burst`]).
const REVIVAL_BURST: usize = 32;

/// Liveness state of a tracked peer.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) addr: PeerAddr,
    /// Smoothed round-trip time, once measured.
    pub(crate) rtt: Rtt,
    /// Consecutive missed pongs (0 = believed alive, >0 = suspected).
    pub(crate) misses: u32,
    /// The outstanding ping, or when the peer was last heard from.
    pub(crate) ping: Ping,
}

/// A tracked peer's ping state, in 16 bytes (a zero nonce is never drawn: it is the niche).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ping {
    /// No ping outstanding; the peer was last heard from then.
    Idle(Time),
    /// A ping is outstanding: its nonce and send time.
    Out(NonZeroU64, Time),
}

impl Ping {
    pub(crate) fn is_out(self) -> bool {
        matches!(self, Ping::Out(..))
    }
}

/// A round-trip time in microseconds, or none yet, in 4 bytes: `u32::MAX` stands for none (a
/// measured round trip of 71 minutes or more is kept as `u32::MAX - 1`). With it a [`Peer`]
/// is 40 bytes instead of 48.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rtt(u32);

impl Rtt {
    pub(crate) const NONE: Rtt = Rtt(u32::MAX);

    pub(crate) fn new(us: u32) -> Self {
        Rtt(us.min(u32::MAX - 1))
    }

    pub(crate) fn get(self) -> Option<u32> {
        (self != Self::NONE).then_some(self.0)
    }
}

/// A node declared dead (or gone by graceful leave).
#[derive(Clone, Debug)]
pub(crate) struct Dead {
    pub(crate) addr: SocketAddr,
    pub(crate) since: Time,
    pub(crate) due: Time,
    pub(crate) backoff: Duration,
    /// Left gracefully: not re-probed.
    pub(crate) left: bool,
    /// When it was last probed (scheduled or on a rumour).
    pub(crate) probed: Time,
    /// The group-tree child entries dropped for it (not for a node that left), put back if it
    /// answers again while an entry is fresh (its last graft less than `group_child_timeout`
    /// old); freed at the first re-probe that long after the death.
    pub(crate) children: Option<Box<crate::group::DroppedChildren>>,
}

/// An outstanding probe ping to a node that is not (necessarily) tracked.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Probe {
    pub(crate) nonce: u64,
    pub(crate) sent: Time,
    pub(crate) deadline: Time,
}

impl super::Overlay {
    /// The group-tree child entries kept with the nodes declared dead (see [`Dead::children`]).
    pub(crate) fn dead_children(&self) -> impl Iterator<Item = &crate::group::DroppedChildren> {
        self.dead.iter().filter_map(|(_, d)| d.children.as_deref())
    }
}

impl Node {
    /// How long peer `id` may stay silent before it is pinged: the clockwise neighbour (it
    /// sends us heartbeats) and group parents a heartbeat interval and a quarter, other
    /// leaf-set members `leaf_ping_interval`, routing-table entries `routing_ping_interval`.
    fn ping_interval(&self, id: NodeId) -> Duration {
        if self.overlay.leaf.right().first() == Some(&id) || self.groups.is_parent(id) {
            self.cfg.heartbeat_interval + self.cfg.heartbeat_interval / 4
        } else if self.overlay.leaf.contains(id) {
            self.cfg.leaf_ping_interval
        } else {
            self.cfg.routing_ping_interval
        }
    }

    /// Brings a tracked peer's next ping forward to its interval (it became the clockwise
    /// neighbour or a group parent, which must be found out dead as fast).
    pub(crate) fn ping_soon(&mut self, now: Time, id: NodeId) {
        let soon = self.quantize(now + self.ping_interval(id));
        if self
            .overlay
            .peers
            .get_with_due(&id)
            .is_some_and(|(p, due)| !p.ping.is_out() && due > soon)
        {
            self.overlay.set_peer_due(id, soon);
        }
    }

    /// How long a ping to `id` waits for its pong: four measured round trips within
    /// `ping_timeout_min..=ping_timeout`, or `ping_timeout` before the first measurement.
    fn ping_wait(&self, id: NodeId) -> Duration {
        match self.overlay.peers.get(&id).and_then(|p| p.rtt.get()) {
            Some(us) => (Duration::from_micros(u64::from(us)) * 4)
                .clamp(self.cfg.ping_timeout_min, self.cfg.ping_timeout),
            None => self.cfg.ping_timeout,
        }
    }

    /// Starts tracking a node that entered the leaf set or routing table.
    pub(crate) fn track(&mut self, now: Time, info: NodeInfo) {
        if self.overlay.peers.contains_key(&info.id) {
            // Entering the leaf set shortens the ping interval.
            if self.overlay.leaf.contains(info.id) {
                self.ping_soon(now, info.id);
            }
            return;
        }
        // Unless a probe already measured it, the first ping comes soon (within a second), so
        // that the new peer's round-trip time is known when the next candidate for its slot shows
        // up; later pings follow the interval.
        let rtt_us = self.overlay.rtt_cache.remove(&info.id);
        let mut first = self.ping_interval(info.id);
        if rtt_us.is_none() {
            first = first.min(Duration::from_secs(1));
        }
        let phase = self.rng.random_range(0..micros(first).max(1));
        let due = self.quantize(Time::from_micros(now.as_micros() + phase));
        self.overlay.peers.insert(
            info.id,
            Peer {
                addr: info.addr.into(),
                rtt: rtt_us.map_or(Rtt::NONE, Rtt::new),
                misses: 0,
                ping: Ping::Idle(now),
            },
            due,
        );
        self.overlay.peer_due_moved(info.id, Some(due));
    }

    /// Stops tracking `id` if it is in neither table.
    pub(crate) fn untrack_if_unused(&mut self, id: NodeId) {
        if self.overlay.leaf.contains(id) || self.overlay.rt.contains(id) {
            return;
        }
        if let Some(p) = self.overlay.peers.remove(&id) {
            self.overlay.peer_due_moved(id, None);
            if let Some(rtt) = p.rtt.get() {
                self.cache_rtt(
                    NodeInfo {
                        id,
                        addr: p.addr.get(),
                    },
                    rtt,
                );
            }
        }
    }

    /// Direct evidence that `from` is alive (`heard`: what it sent, one of the direct kinds;
    /// `tree`: the tree the message is a graft or prune for). True when a pong went out (see
    /// [`Heard::Pinged`]).
    pub(crate) fn heard_from(
        &mut self,
        now: Time,
        from: NodeInfo,
        heard: Heard,
        tree: Option<Key>,
    ) -> bool {
        if let Some(d) = self.overlay.dead.remove(&from.id) {
            self.stats.revivals += 1;
            if !d.left {
                self.probe_dead_of_burst(now, d.since);
            }
            // A node that announces itself is joining: a new start of it, whose trees are new
            // too (its old tree entries are not put back; the holds for them end).
            if let Some(children) = d.children {
                if heard == Heard::Announce {
                    self.groups_on_peer_restarted(&children);
                } else {
                    self.groups_on_peer_revived(now, from, *children, tree);
                }
            }
        }
        match self.overlay.peers.get_mut(&from.id) {
            Some(p) => {
                let was_suspected = std::mem::take(&mut p.misses) > 0;
                // Evidence of life: the peer is not silent (a ping still out stays out: its
                // pong measures the round trip, and a miss after this only re-pings).
                if !p.ping.is_out() {
                    p.ping = Ping::Idle(now);
                }
                // A node that came back at another address (its id is its key's, so it is the
                // same node): reach it where it is now.
                if !p.addr.is(from.addr) {
                    p.addr = from.addr.into();
                }
                if was_suspected {
                    self.suspicion_cleared(now);
                }
                // A peer we track for another reason (a routing-table entry, a tree parent)
                // that now belongs in the leaf set (it did not fit when first learned, or left
                // it while nodes that are gone now were closer).
                self.overlay.leaf.would_accept(from.id) && self.learn_as(now, from, heard)
            }
            None => self.learn_as(now, from, heard),
        }
    }

    /// A suspected peer answered: routes avoided it (a suspect is no next hop) and can take
    /// it again. Keys it owns looked like this node's meanwhile, so asks parked here for their
    /// tree are routed on and trees re-checked (coalesced, as after a leaf-set change); without
    /// this they would wait out their timeout at a root that is not one.
    fn suspicion_cleared(&mut self, now: Time) {
        self.groups_routes_changed(now);
    }

    pub(crate) fn send_ping(&mut self, now: Time, id: NodeId) {
        let nonce = self.nonce();
        let due = self.quantize(now + self.ping_wait(id));
        let Some(p) = self.overlay.peers.get_mut(&id) else {
            return;
        };
        // (`nonce` never draws zero; were it to, the ping would count as missed at its due.)
        p.ping = Ping::Out(NonZeroU64::new(nonce).unwrap_or(NonZeroU64::MIN), now);
        let addr = p.addr.get();
        self.overlay.set_peer_due(id, due);
        self.stats.pings_sent += 1;
        self.send(NodeInfo { id, addr }, Message::Ping { nonce });
    }

    /// Points the tracked peers' next look-up at the entry whose deadline was found earliest
    /// (see [`crate::id_map::TimedIdMap::recall_earliest`]): called as that peer's timer fires.
    pub(crate) fn recall_due_peer(&self) {
        self.overlay.peers.recall_earliest();
    }

    /// Prefetches the entry of the peer whose timer is likely due next (a hint).
    pub(crate) fn prefetch_due_peer(&self) {
        self.overlay.peers.prefetch_earliest();
    }

    pub(crate) fn on_peer_timer(&mut self, now: Time, id: NodeId) {
        if !self.visible() {
            // A joiner stays invisible until it announces itself: no pings yet.
            let due = self.quantize(now + self.ping_interval(id));
            self.overlay.set_peer_due(id, due);
            return;
        }
        let wait = self.ping_interval(id);
        let Some(p) = self.overlay.peers.get_mut(&id) else {
            return;
        };
        match p.ping {
            Ping::Idle(heard) if heard + wait > now && p.rtt.get().is_some() => {
                // Heard from since the timer was set: not silent yet. (A peer not measured
                // yet is pinged anyway: its round trip decides its routing-table slot.)
                let due = self.quantize(heard + wait);
                self.overlay.set_peer_due(id, due);
                return;
            }
            Ping::Idle(_) => {}
            Ping::Out(..) => {
                p.misses += 1;
                p.ping = Ping::Idle(now);
                if p.misses >= self.cfg.suspicion_misses {
                    self.declare_dead(now, id, false);
                    return;
                }
            }
        }
        self.send_ping(now, id);
    }

    /// The driver's link to `id` ended (end of stream, reset): a hint that its process may
    /// have crashed. A tracked peer is suspected and pinged at once, also when a ping is out
    /// already (that one went over the link that ended, or waited for it: its answer will not
    /// come); the driver dials it for that ping, and a failed dial ([`Node::unreachable`])
    /// makes it dead at once, an unanswered ping after one timeout. A link that ended for
    /// another reason (an idle link closed by the far side, a link replaced) costs one ping
    /// and its pong.
    pub fn link_lost(&mut self, now: Time, id: NodeId) {
        if !self.is_ready() {
            return;
        }
        self.stats.link_losses += 1;
        self.suspect(now, id, true);
    }

    /// Another node declared `node` dead: probe it now, and drop it if this one probe goes
    /// unanswered (it is suspected already).
    pub(crate) fn on_suspect(&mut self, now: Time, node: NodeId) {
        self.suspect(now, node, false);
    }

    /// Suspects `node`: one more unanswered ping makes it dead. Pings it unless a ping is out
    /// and `again` is false.
    fn suspect(&mut self, now: Time, node: NodeId, again: bool) {
        let misses = self.cfg.suspicion_misses.saturating_sub(1);
        let Some(p) = self.overlay.peers.get_mut(&node) else {
            return;
        };
        p.misses = p.misses.max(misses);
        if again || !p.ping.is_out() {
            self.send_ping(now, node);
        }
    }

    /// The answer to a proximity probe (a pong, or a discover reply to an invisible joiner's
    /// probe): the candidate is considered with its round trip. False when `nonce` is not a
    /// probe's.
    pub(crate) fn on_probe_answer(&mut self, now: Time, from: NodeInfo, nonce: u64) -> bool {
        if self
            .overlay
            .probes
            .get(&from.id)
            .is_some_and(|p| p.nonce == nonce)
            && let Some(probe) = self.overlay.remove_probe(&from.id)
        {
            let rtt = u32::try_from((now - probe.sent).as_micros()).unwrap_or(u32::MAX);
            self.consider_with_rtt(now, from, rtt);
            return true;
        }
        false
    }

    pub(crate) fn on_pong(&mut self, now: Time, from: NodeInfo, nonce: u64) {
        if self.on_probe_answer(now, from, nonce) {
            return;
        }
        let next = self.quantize(now + self.ping_interval(from.id));
        let Some(p) = self.overlay.peers.get_mut(&from.id) else {
            return;
        };
        let Ping::Out(expected, sent) = p.ping else {
            return;
        };
        if expected.get() != nonce {
            return;
        }
        let sample = u32::try_from((now - sent).as_micros()).unwrap_or(u32::MAX);
        let first = p.rtt.get().is_none();
        p.rtt = Rtt::new(match p.rtt.get() {
            Some(old) => {
                u32::try_from((u64::from(old) * 7 + u64::from(sample)) / 8).unwrap_or(u32::MAX)
            }
            None => sample,
        });
        p.misses = 0;
        p.ping = Ping::Idle(now);
        self.overlay.set_peer_due(from.id, next);
        if first {
            let info = NodeInfo {
                id: from.id,
                addr: from.addr,
            };
            self.offer_slot(now, info, sample);
        }
    }

    /// Pings a candidate to measure its round-trip time (bounded by `max_probes`). A joiner
    /// that has not announced itself probes with [`Message::Discover`], which the candidate
    /// answers without learning it.
    pub(crate) fn probe(&mut self, now: Time, info: NodeInfo) {
        self.probe_answering(now, info, None);
    }

    /// [`Node::probe`]; when the candidate pinged us with nonce `answering`, the probe is the
    /// pong that answers it ([`Message::PongPing`]). True when that pong went out.
    pub(crate) fn probe_answering(
        &mut self,
        now: Time,
        info: NodeInfo,
        answering: Option<u64>,
    ) -> bool {
        if self.overlay.probes.len() >= self.cfg.max_probes
            || self.overlay.probes.contains_key(&info.id)
        {
            return false;
        }
        let nonce = self.nonce();
        let deadline = now + self.cfg.ping_timeout;
        self.overlay.probes.insert(
            info.id,
            Probe {
                nonce,
                sent: now,
                deadline,
            },
        );
        self.overlay.push_probe_deadline(deadline, info.id);
        self.stats.pings_sent += 1;
        let (msg, answered) = match answering {
            Some(ping) if self.visible() => (
                Message::PongPing {
                    nonce: ping,
                    ping: nonce,
                },
                true,
            ),
            _ if self.visible() => (Message::Ping { nonce }, false),
            _ => (
                Message::Discover {
                    nonce,
                    want: petal_protocol::Want::Probe,
                },
                false,
            ),
        };
        self.send(info, msg);
        answered
    }

    pub(crate) fn on_probe_timeout(&mut self, now: Time, id: NodeId) {
        self.overlay.remove_probe(&id);
        self.foster_lost(now, id);
    }

    /// Removes `id` from every table and remembers it as dead (or left), then repairs.
    pub(crate) fn declare_dead(&mut self, now: Time, id: NodeId, left: bool) {
        let addr = match self.overlay.peers.get(&id) {
            Some(p) => p.addr.get(),
            None => return,
        };
        let slot = self
            .overlay
            .rt
            .slot_of(id)
            .filter(|&s| self.overlay.rt.get(s) == Some(id));
        let neighbour = self.overlay.leaf.left().first() == Some(&id)
            || self.overlay.leaf.right().first() == Some(&id);
        let in_leaf = self.overlay.leaf.remove(id);
        if in_leaf {
            // (The repair asks the farthest members itself.)
            self.leaf_changed(now, false);
        }
        self.overlay.rt.remove(id);
        self.untrack_if_unused(id);
        if !left {
            self.stats.deaths_declared += 1;
            self.emit(Event::PeerDead { peer: id });
        }
        self.remember_dead(now, id, addr, left);
        self.reroute_hops_to(now, id);
        let dropped = self.groups_on_peer_dead(now, id, !left);
        if let Some(d) = self.overlay.dead.get_mut(&id) {
            d.children = dropped;
        }
        self.tunnels_on_peer_dead(now, id);
        if in_leaf {
            if neighbour && !left {
                // Found by its watcher (or its other neighbour): the rest of the leaf set,
                // which pings it rarely, probes it now.
                for m in self.leaf_infos() {
                    self.send(m, Message::Suspect { node: id });
                }
            }
            self.repair_leaf_set();
        }
        if let Some((row, _)) = slot {
            self.repair_row(row);
        }
        self.check_activation(now);
    }

    fn remember_dead(&mut self, now: Time, id: NodeId, addr: std::net::SocketAddr, left: bool) {
        if self.overlay.dead.len() >= self.cfg.max_dead {
            let oldest = self
                .overlay
                .dead
                .iter()
                .min_by_key(|(k, d)| (d.since, **k))
                .map(|(k, _)| *k);
            if let Some(old) = oldest {
                self.overlay.dead.remove(&old);
            }
        }
        let due = self.quantize(if left {
            now + self.cfg.dead_forget_after
        } else {
            now + self.cfg.dead_probe_min
        });
        self.overlay.dead.insert(
            id,
            Dead {
                addr,
                since: now,
                due,
                backoff: self.cfg.dead_probe_min,
                left,
                probed: now,
                children: None,
            },
        );
        self.set_timer(due, TimerKey::Dead(id));
    }

    pub(crate) fn on_dead_timer(&mut self, now: Time, id: NodeId) {
        let forget_after = self.cfg.dead_forget_after;
        let max = self.cfg.dead_probe_max;
        let Some(d) = self.overlay.dead.get_mut(&id) else {
            return;
        };
        let forget_at = d.since + forget_after;
        if d.left || now >= forget_at {
            self.overlay.dead.remove(&id);
            return;
        }
        if now >= d.since + self.cfg.group_child_timeout {
            // Its tree entries would have expired by now (see `groups_on_peer_revived`).
            d.children = None;
        }
        let info = NodeInfo { id, addr: d.addr };
        let next = (now + d.backoff).min(forget_at);
        d.backoff = d.backoff.saturating_mul(2).min(max);
        let due = self.quantize(next);
        if let Some(d) = self.overlay.dead.get_mut(&id) {
            d.due = due;
            self.set_timer(due, TimerKey::Dead(id));
        }
        // One re-probe per `dead_probe_spacing` for the whole node: one that falls due sooner
        // is skipped, and tried again at its next step. (No turns are reserved, so none can
        // be held by entries that revive or are forgotten meanwhile.)
        if now < self.overlay.dead_probe_free {
            return;
        }
        self.overlay.dead_probe_free = now + self.cfg.dead_probe_spacing;
        self.probe_dead(now, info);
    }

    /// Another node named `info`, which this node remembers as dead, as alive (in a leaf set, a
    /// row, a join reply). Not believed: probed, when it has been dead longer than
    /// `dead_rumour_after` and was not probed in the last `dead_probe_min`. Soon after a
    /// crash, stale tables name the dead node everywhere, and probing on every mention would
    /// cost what the spacing of re-probes saves; later, a mention is news: the two sides of a
    /// healed partition find each other through the first few nodes that met again, instead of
    /// each node waiting for its own re-probes to come round.
    pub(crate) fn dead_rumour(&mut self, now: Time, info: NodeInfo) {
        let (after, gap) = (self.cfg.dead_rumour_after, self.cfg.dead_probe_min);
        let Some(d) = self.overlay.dead.get(&info.id) else {
            return;
        };
        if d.left || now < d.since + after || now < d.probed + gap {
            return;
        }
        self.stats.dead_rumours += 1;
        self.probe_dead(now, info);
    }

    /// A node declared dead at `since` spoke again. Nodes declared dead within
    /// `dead_probe_max` of it most likely went silent with it, as the other side of a
    /// partition does, and may be back too: each whose last probe is older than `ping_timeout`
    /// (no answer can still come) is probed now (at most [`REVIVAL_BURST`]), instead of at
    /// its next spaced re-probe, which can be `dead_probe_spacing` per remembered node away
    /// (and one sent while the partition held blocks nothing). Their answers revive them here and,
    /// being pings from nodes the other side declared dead, revive this node there, where
    /// each revival probes the rest of its own burst: a healed partition merges within a few
    /// round trips of its first crossing, not node by node. Crashed nodes do not answer; the
    /// gap keeps the cascade to one probe per node and round trip.
    fn probe_dead_of_burst(&mut self, now: Time, since: Time) {
        let (window, gap) = (self.cfg.dead_probe_max, self.cfg.ping_timeout);
        let burst: Vec<NodeInfo> = self
            .overlay
            .dead
            .iter()
            .filter(|(_, d)| {
                !d.left
                    && d.since.max(since).saturating_since(d.since.min(since)) <= window
                    && d.probed + gap <= now
            })
            .map(|(id, d)| NodeInfo {
                id: *id,
                addr: d.addr,
            })
            .take(REVIVAL_BURST)
            .collect();
        for info in burst {
            self.probe_dead(now, info);
        }
    }

    /// Probes a node remembered as dead (at the address it had then). It counts as probed
    /// only when a probe is out (sent now, or already): one refused at `max_probes` is tried
    /// again at the next chance instead of being held back for the gaps that count from it.
    fn probe_dead(&mut self, now: Time, info: NodeInfo) {
        let Some(addr) = self.overlay.dead.get(&info.id).map(|d| d.addr) else {
            return;
        };
        self.probe(now, NodeInfo { id: info.id, addr });
        if self.overlay.probes.contains_key(&info.id) {
            if let Some(d) = self.overlay.dead.get_mut(&info.id) {
                d.probed = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracked_peer_costs_at_most_40_bytes() {
        // Every node keeps one per leaf-set and routing-table member (about 66 at 10^5 nodes),
        // next to its 16-byte id and 8-byte deadline: the simulator's memory per node and a
        // daemon's alike.
        assert!(
            std::mem::size_of::<Peer>() <= 40,
            "{}",
            std::mem::size_of::<Peer>()
        );
        assert!(std::mem::size_of::<crate::node::TimerKey>() <= 24);
    }

    #[test]
    fn a_probe_is_three_words() {
        // The probes' map lays out 48-byte slots around it (see `probe_map`'s tests).
        assert_eq!(std::mem::size_of::<Probe>(), 24);
        assert_eq!(std::mem::align_of::<Probe>(), 8);
    }
}
