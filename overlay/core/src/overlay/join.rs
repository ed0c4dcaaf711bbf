//! Join: through a list of contacts, with a bound on every attempt.
//!
//! A joiner routes a join towards its own id through one *contact* (a seed that answered, a
//! node found out of band); every node on the path sends its rows, the closest node its leaf
//! set; the joiner then announces itself and becomes ready once every leaf-set member has
//! acknowledged. Until it announces it starts no other exchange (no pings, no probes) and
//! sends nothing for its applications (their messages wait until it is ready), so no node
//! learns of, and routes to, a joiner that cannot yet serve.
//!
//! What makes a fleet that starts all at once converge:
//! - **A node not in a ring is never a contact.** A node that is starting or joining answers a
//!   joiner's first hop with [`Message::JoinBusy`] naming its own contacts, instead of holding
//!   the join (two joiners using each other as contacts used to wait on each other for ever).
//!   The joiner adds those contacts to its own and moves on at once, so a chain of joiners is
//!   skipped to the node at its end that is in a ring.
//! - **Every attempt is bounded.** The first answer of a contact (a join reply or a refusal)
//!   must come within `join_contact_timeout`; it measures the round-trip time to the contact,
//!   and from then on the attempt must make progress (another join reply, an announce
//!   acknowledgement) within `join_rtt_factor` round trips, at least `join_progress_min` and at
//!   most `join_timeout`. A silent attempt is retried through the next contact; one whose
//!   contact the driver cannot reach ([`Node::unreachable`]: a dial failed) at once. When
//!   the contact answered but the last reply did not come, the next attempt goes straight to
//!   the nearest node learned: the node closest to the joiner's id must open a connection to
//!   send its leaf set, and its dials can keep failing, while its answer to a joiner that
//!   reached it comes back over the joiner's own connection.
//! - **A cycle of joiners elects a founder.** When every contact refused in one round, the
//!   joiner waits `join_busy_retry` and tries them again. A joiner that found itself among a
//!   refusing contact's contacts knows that its contacts lead back to it; if, in addition, its
//!   id is the smallest of every joiner it has heard of, it founds the ring, and the others
//!   join it at their next round. (A node whose contacts could not be reached at all is the
//!   driver's business: it serves alone and introduces its seeds once they answer.)
//! - **Nobody waits on a joiner's activation.** A joiner that is the closest node to another
//!   joiner's id answers with its leaf set at once (and routes the join on once it is ready:
//!   a joiner that is still joining then learns the settled leaf set too; one that is ready by
//!   then ignores it). It is routed to once it has announced itself, or when its join started
//!   over after that: two joiners that held each other's joins would wait for ever. (The
//!   answer makes the other joiner learn it, before it has announced itself again.)
//! - **Contacts of other rings are introduced.** Once ready, the node introduces the contacts
//!   it did not join through and does not know, so that rings that formed apart merge.

use std::collections::BTreeSet;
use std::time::Duration;

use petal_protocol::{Message, NodeId, NodeInfo, RouteMsg, Routed};
use rand::Rng;

use super::Phase;
use crate::node::{Event, Node, TimerKey};
use crate::time::{Time, micros};

/// State of a join under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JoinState {
    /// Nodes to join through, in the order they became known (at most `max_join_contacts`).
    pub(crate) contacts: Vec<NodeInfo>,
    /// Index in `contacts` of the next contact to try (modulo their number).
    pub(super) next: usize,
    /// The contact of the attempt under way; `None` while waiting for the next round after
    /// every contact refused.
    via: Option<NodeInfo>,
    /// When the attempt's join went out.
    sent_at: Time,
    /// When the join started.
    started: Time,
    /// The last round-trip time measured to a contact.
    pub(super) rtt: Option<Duration>,
    /// Contacts that refused in the current round.
    pub(super) busy: BTreeSet<NodeId>,
    /// Every node heard of as joining (refusing contacts and their contacts), at most
    /// `max_join_contacts` times four.
    joiners: BTreeSet<NodeId>,
    /// This node was named among a refusing contact's contacts: its contacts lead back to it.
    in_cycle: bool,
    /// Attempts that timed out.
    pub(crate) attempt: u32,
    pub(crate) deadline: Time,
    /// The last join reply arrived; announces are out.
    pub(crate) announced: bool,
    /// Leaf-set members that acknowledged the announce.
    pub(crate) acked: BTreeSet<NodeId>,
    /// Nodes an announce asking for a reply went to.
    pub(crate) asked: BTreeSet<NodeId>,
    /// When to announce again to the members that have not acknowledged, before the
    /// attempt's bound: an announce was lost with a dial that failed (`Time::MAX`: not due).
    pub(crate) reannounce_at: Time,
    /// Such early announces in this attempt (each waits twice as long as the one before).
    reannounces: u32,
    /// Routed messages that reached this node before it was ready.
    pub(crate) buffered: Vec<RouteMsg>,
    /// The nearest-neighbour search that runs before the first attempt (see `search`).
    pub(super) search: Option<Box<super::search::Search>>,
    /// A node to try before the next contact: the nearest node to this one learned from an
    /// attempt whose contact answered but whose last reply never came (see
    /// [`Node::on_join_timeout`]).
    direct: Option<NodeInfo>,
    /// The attempt under way goes straight to `direct`'s node.
    via_direct: bool,
    /// Nodes a direct attempt got no answer from (dead, or never a node of a ring): never
    /// tried directly again in this join (at most `max_join_contacts` times four).
    silent: BTreeSet<NodeId>,
}

impl JoinState {
    /// Heap bytes of its lists and sets (an estimate for the sets; see [`crate::MemoryUse`]).
    pub(super) fn heap_bytes(&self) -> usize {
        let set = |s: &BTreeSet<NodeId>| s.len() * std::mem::size_of::<NodeId>() * 3 / 2;
        crate::memory::vec_bytes(&self.contacts)
            + crate::memory::vec_bytes(&self.buffered)
            + set(&self.busy)
            + set(&self.joiners)
            + set(&self.acked)
            + set(&self.asked)
            + set(&self.silent)
            + self
                .search
                .as_ref()
                .map_or(0, |s| std::mem::size_of_val(&**s))
    }

    fn add_contact(&mut self, me: NodeId, info: NodeInfo, max: usize) {
        if info.id != me
            && self.contacts.len() < max
            && !self.contacts.iter().any(|c| c.id == info.id)
        {
            self.contacts.push(info);
        }
    }
}

/// Where a join under way stands (for logs and operators): see [`Node::join_progress`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoinProgress {
    /// Contacts known.
    pub contacts: usize,
    /// The contact of the attempt under way (`None`: waiting for the next round).
    pub via: Option<NodeInfo>,
    /// Attempts that timed out so far.
    pub attempts_timed_out: u32,
    /// The join path is done and the announces are out.
    pub announced: bool,
    /// Leaf-set members that have not acknowledged the announce yet.
    pub unacknowledged: Vec<NodeInfo>,
}

impl Node {
    /// Where the join stands, while the node is joining.
    pub fn join_progress(&self) -> Option<JoinProgress> {
        let Phase::Joining(j) = &self.overlay.phase else {
            return None;
        };
        let missing = self.unacknowledged();
        Some(JoinProgress {
            contacts: j.contacts.len(),
            via: j.via,
            attempts_timed_out: j.attempt,
            announced: j.announced,
            unacknowledged: self.infos(missing.into_iter()),
        })
    }

    /// Joins the ring that `bootstrap` belongs to. Completion is reported as [`Event::Joined`]
    /// (or [`Event::JoinFailed`] after `join_attempts` attempts timed out). More contacts can
    /// be added while the join is under way with [`Node::contact`].
    pub fn join(&mut self, now: Time, bootstrap: NodeInfo) {
        assert_eq!(self.overlay.phase, Phase::Idle, "join on a started node");
        self.overlay.phase = Phase::Joining(Box::new(JoinState {
            contacts: vec![bootstrap],
            next: 0,
            via: None,
            sent_at: now,
            started: now,
            rtt: None,
            busy: BTreeSet::new(),
            joiners: BTreeSet::new(),
            in_cycle: false,
            attempt: 0,
            deadline: Time::MAX,
            announced: false,
            acked: BTreeSet::new(),
            asked: BTreeSet::new(),
            reannounce_at: Time::MAX,
            reannounces: 0,
            buffered: Vec::new(),
            direct: None,
            via_direct: false,
            silent: BTreeSet::new(),
            search: None,
        }));
        if self.cfg.join_search {
            self.start_search(now, bootstrap);
        } else {
            self.start_join_attempt(now);
        }
    }

    /// A node this one may join through, found out of band (a seed that answered, a discovery
    /// beacon). A node not started joins through it; a joining node adds it to its contacts
    /// (and tries it at once if it was waiting because every contact refused); a ready node
    /// introduces it ([`Node::introduce`]), which merges the two rings if it belongs to another.
    pub fn contact(&mut self, now: Time, info: NodeInfo) {
        if info.id == self.me.id {
            return;
        }
        let (me, max) = (self.me.id, self.cfg.max_join_contacts);
        match &mut self.overlay.phase {
            Phase::Idle => self.join(now, info),
            Phase::Joining(j) => {
                j.add_contact(me, info, max);
                if j.via.is_none() && j.search.is_none() {
                    self.start_join_attempt(now);
                }
            }
            Phase::Ready => self.introduce(now, info),
            Phase::Left => {}
        }
    }

    /// The driver could not reach `id` (a dial to it failed, or its address is backing off
    /// after one): whatever was sent to it is lost. A join attempt through it moves on to the
    /// next contact at once, as after a refusal, instead of waiting out the attempt's bound
    /// (up to `join_timeout`: a fleet that starts at once dials a few busy nodes, and a reset
    /// dial used to cost a joiner two seconds). The contact is tried again at the next round;
    /// the node of a direct attempt after the next contact's attempt. Once the joiner has
    /// announced itself, a leaf-set member that has not acknowledged is announced to again
    /// soon (after twice `join_busy_retry`; the delay doubles with each such early announce
    /// of the attempt).
    /// A ready node declares a suspected peer dead at once (see [`Node::link_lost`]); any
    /// other is left to liveness.
    pub fn unreachable(&mut self, now: Time, id: NodeId) {
        if self.is_ready() {
            // A suspected peer (its link ended, or a ping or hop went unanswered) that cannot
            // even be dialed is dead: a crashed process is found in one dial, not in pings.
            if self.is_suspected(id) {
                self.stats.deaths_by_dial += 1;
                self.declare_dead(now, id, false);
            }
            return;
        }
        if self.searching() {
            self.search_unreachable(now, id);
            return;
        }
        let member = self.overlay.leaf.contains(id);
        let Phase::Joining(j) = &mut self.overlay.phase else {
            return;
        };
        if j.announced {
            if member && !j.acked.contains(&id) {
                // Our announce to this neighbour was lost with the dial (a node that is busy
                // starting refuses handshakes, or its address backs off after such a
                // refusal): announce again soon instead of at the attempt's bound (up to
                // `join_timeout`, which a fleet test saw hold the owner of a cluster's key,
                // and every request to that cluster, for two seconds). The delay doubles with
                // each early announce of the attempt, from twice `join_busy_retry` (more than
                // the driver's first back-off).
                let delay = self.cfg.join_busy_retry * 2u32.pow(j.reannounces.min(5) + 1);
                let at = now + delay;
                if (at < j.reannounce_at || j.reannounce_at <= now) && at < j.deadline {
                    j.reannounce_at = at;
                    self.set_timer(at, TimerKey::Join);
                }
            }
            return;
        }
        if j.via.is_none_or(|v| v.id != id) {
            return;
        }
        // A contact is skipped for the rest of the round. The node of a direct attempt is
        // not: it is the nearest node learned and is tried directly again after the next
        // contact's attempt (the dial may well succeed then). Marked, it would never be,
        // since the round ends only when every contact refused, and a joiner went on through
        // a contact whose path ended at a node that could not send it the last reply (a fleet
        // test: 14 attempts in a row, 3.8 s).
        if !j.via_direct {
            j.busy.insert(id);
        }
        self.stats.join_contacts_unreachable += 1;
        self.start_join_attempt(now);
    }

    /// The bound on an attempt's next step once a round-trip time is known.
    fn join_progress_bound(&self, rtt: Option<Duration>) -> Duration {
        match rtt {
            Some(r) => (r * self.cfg.join_rtt_factor)
                .max(self.cfg.join_progress_min)
                .min(self.cfg.join_timeout),
            None => self.cfg.join_contact_timeout,
        }
    }

    /// Sends the join through the next contact that has not refused in this round; when every
    /// contact refused, founds the ring (a cycle of joiners whose smallest id is this node's)
    /// or waits `join_busy_retry` for the next round.
    pub(super) fn start_join_attempt(&mut self, now: Time) {
        let me = self.me.id;
        let busy_retry = self.cfg.join_busy_retry;
        let Phase::Joining(j) = &mut self.overlay.phase else {
            return;
        };
        let n = j.contacts.len();
        let direct = j.direct.take().filter(|d| !j.busy.contains(&d.id));
        j.via_direct = direct.is_some();
        let pick = match direct {
            Some(d) => Some(d),
            None => (0..n)
                .map(|k| (j.next + k) % n)
                .find(|&i| !j.busy.contains(&j.contacts[i].id))
                .map(|i| {
                    // The next attempt starts after this contact (among those known then:
                    // contacts added meanwhile come next).
                    j.next = i + 1;
                    j.contacts[i]
                }),
        };
        j.announced = false;
        j.acked.clear();
        j.asked.clear();
        j.reannounce_at = Time::MAX;
        j.reannounces = 0;
        let Some(via) = pick else {
            if j.in_cycle && j.joiners.iter().all(|&id| id > me) {
                self.stats.join_founded += 1;
                self.become_ready(now);
                return;
            }
            j.busy.clear();
            j.via = None;
            j.deadline = now + busy_retry;
            let deadline = j.deadline;
            self.set_timer(deadline, TimerKey::Join);
            return;
        };
        j.via = Some(via);
        j.sent_at = now;
        let rtt = j.rtt;
        let deadline = now + self.join_progress_bound(rtt);
        if let Phase::Joining(j) = &mut self.overlay.phase {
            j.deadline = deadline;
        }
        self.set_timer(deadline, TimerKey::Join);
        let msg = RouteMsg {
            key: self.me.id.as_key(),
            origin: self.me,
            hops: 0,
            hop_seq: 0,
            body: Routed::Join,
        };
        self.send(via, Message::route(msg));
    }

    /// The attempt made progress (`from` answered it): measure the contact's round-trip time
    /// on its first answer, and push the deadline out by one progress bound.
    fn join_progressed(&mut self, now: Time, from: NodeId) {
        let Phase::Joining(j) = &mut self.overlay.phase else {
            return;
        };
        if j.via.is_some_and(|v| v.id == from) && now >= j.sent_at {
            j.rtt = Some(Duration::from_micros(
                now.as_micros() - j.sent_at.as_micros(),
            ));
            // Measured once per attempt.
            j.sent_at = Time::MAX;
        }
        let bound = self.join_progress_bound(match &self.overlay.phase {
            Phase::Joining(j) => j.rtt,
            _ => None,
        });
        let deadline = now + bound;
        if let Phase::Joining(j) = &mut self.overlay.phase {
            // Once announced, acknowledgements do not push the deadline out: the members that
            // have not answered by then are asked again (a lost acknowledgement must not wait
            // while new leaf-set members keep answering).
            if j.via.is_some() && !j.announced {
                j.deadline = deadline;
                self.set_timer(deadline, TimerKey::Join);
            }
        }
    }

    pub(crate) fn on_join_timeout(&mut self, now: Time) {
        let Phase::Joining(j) = &self.overlay.phase else {
            return;
        };
        if j.deadline > now {
            if j.announced && j.reannounce_at <= now {
                self.reannounce();
            }
            return;
        }
        if j.search.is_some() {
            self.on_search_timeout(now);
            return;
        }
        if j.via.is_none() {
            // The wait after a round of refusals is over: try every contact again.
            self.start_join_attempt(now);
            return;
        }
        // Attempts bounded by round-trip times are short: the join gives up only after
        // `join_attempts` of them timed out and as late as `join_attempts` full-length ones
        // would have (a contact that is merely slow, or a ring under churn, is not abandoned
        // after a second on a LAN).
        let give_up_at = j.started + self.cfg.join_timeout * self.cfg.join_attempts;
        if j.attempt + 1 >= self.cfg.join_attempts && now >= give_up_at {
            self.stats.routes_dropped += j.buffered.len() as u64;
            self.overlay.phase = Phase::Idle;
            self.reset_state();
            self.emit(Event::JoinFailed);
            return;
        }
        self.stats.join_retries += 1;
        if j.announced && !self.overlay.leaf.is_empty() {
            // The path is done; only acknowledgements are missing (lost, or a silent member
            // that liveness will remove): ask the members that have not answered again.
            let deadline = now + self.join_progress_bound(j.rtt);
            if let Phase::Joining(j) = &mut self.overlay.phase {
                j.attempt += 1;
                j.deadline = deadline;
            }
            self.set_timer(deadline, TimerKey::Join);
            self.announce_again();
            return;
        }
        let cap = self.cfg.max_join_contacts.saturating_mul(4);
        if let Phase::Joining(j) = &mut self.overlay.phase {
            j.attempt += 1;
            let answered = j.sent_at == Time::MAX;
            let via = j.via.map(|v| v.id);
            if j.via_direct && !answered && j.silent.len() < cap {
                // A node learned second-hand that never answered (a joiner does not ping:
                // a dead one stays in its tables): not a target again.
                j.silent.extend(via);
            }
        }
        let nearest = self.nearest_leaf_member();
        if let Phase::Joining(j) = &mut self.overlay.phase {
            // The contact answered, but the last reply (from the node closest to our id) did
            // not come: that node must open a connection to us to send it, which can fail
            // again and again (a reset dial makes its driver drop what follows for a while;
            // a fleet test saw 13 replies lost in a row). The nearest node we learned is
            // that node or near it: join through it directly, so that its answer comes back
            // over our own link. Only after an attempt whose contact answered (so a direct
            // attempt that stalls is followed by a contact's), and never through a node that
            // left a direct attempt unanswered.
            let answered = j.sent_at == Time::MAX;
            let via = j.via.map(|v| v.id);
            j.direct = nearest.filter(|n| answered && Some(n.id) != via);
        }
        self.start_join_attempt(now);
    }

    /// Announces again to the leaf-set members that have not acknowledged, within the attempt
    /// (see [`Node::unreachable`]). Counted in [`crate::Stats::join_reannounces`].
    fn reannounce(&mut self) {
        let Phase::Joining(j) = &mut self.overlay.phase else {
            return;
        };
        j.reannounces += 1;
        self.stats.join_reannounces += 1;
        self.announce_again();
    }

    /// Announces again to every leaf-set member that has not acknowledged (an early announce
    /// still pending is thereby done: a later loss arms a new one; with it pending, an entry
    /// that popped with the attempt's bound would be left stale and disable them).
    fn announce_again(&mut self) {
        let missing = self.unacknowledged();
        if let Phase::Joining(j) = &mut self.overlay.phase {
            j.reannounce_at = Time::MAX;
            for id in &missing {
                j.asked.remove(id);
            }
        }
        for id in missing {
            self.announce_to(id, true);
        }
    }

    /// The leaf-set members that have not acknowledged this joiner's announce (none when not
    /// joining).
    fn unacknowledged(&self) -> Vec<NodeId> {
        let Phase::Joining(j) = &self.overlay.phase else {
            return Vec::new();
        };
        self.overlay
            .leaf
            .members()
            .filter(|id| !j.acked.contains(id))
            .collect()
    }

    /// The leaf-set member nearest to this node's id that no direct attempt found silent.
    fn nearest_leaf_member(&self) -> Option<NodeInfo> {
        let Phase::Joining(j) = &self.overlay.phase else {
            return None;
        };
        let leaf = &self.overlay.leaf;
        let me = self.me.id;
        let first = |side: &[NodeId]| side.iter().copied().find(|id| !j.silent.contains(id));
        let best = match (first(leaf.left()), first(leaf.right())) {
            (Some(l), Some(r)) => Some(if l.closer_than(r, me.as_key()) { l } else { r }),
            (l, r) => l.or(r),
        }?;
        self.info_of(best)
    }

    /// A joiner's first hop reached a node that is not in a ring: refuse, naming this node's
    /// own contacts.
    pub(crate) fn refuse_join(&mut self, to: NodeInfo) {
        let contacts = match &self.overlay.phase {
            Phase::Joining(j) => j.contacts.clone(),
            _ => Vec::new(),
        };
        self.stats.joins_refused += 1;
        self.send(to, Message::JoinBusy { contacts });
    }

    /// The contact of our attempt is not in a ring: note what it knows and move on.
    pub(crate) fn on_join_busy(&mut self, now: Time, from: NodeInfo, contacts: Vec<NodeInfo>) {
        let (me, max) = (self.me.id, self.cfg.max_join_contacts);
        if self.is_ready() && now <= self.overlay.introduced_until {
            // A stranger we introduced ourselves to is still joining.
            self.reintroduce_later(now, from);
            return;
        }
        let Phase::Joining(j) = &mut self.overlay.phase else {
            return;
        };
        if j.via.is_none_or(|v| v.id != from.id) {
            return;
        }
        if now >= j.sent_at {
            j.rtt = Some(Duration::from_micros(
                now.as_micros() - j.sent_at.as_micros(),
            ));
        }
        j.busy.insert(from.id);
        let cap = max.saturating_mul(4);
        if j.joiners.len() < cap {
            j.joiners.insert(from.id);
        }
        for c in contacts {
            if c.id == me {
                j.in_cycle = true;
                continue;
            }
            if j.joiners.len() < cap {
                j.joiners.insert(c.id);
            }
            j.add_contact(me, c, max);
        }
        self.start_join_attempt(now);
    }

    pub(crate) fn on_join_reply(
        &mut self,
        now: Time,
        from: NodeInfo,
        entries: Vec<NodeInfo>,
        leaf: Vec<NodeInfo>,
        last: bool,
    ) {
        if self.is_ready() {
            // Answers to the join an introduction routed through another ring are candidates;
            // other join replies to a ready node (late ones of its own join) are ignored, as
            // before introductions existed.
            if now <= self.overlay.introduced_until {
                self.learn_all(now, entries);
                self.learn_all(now, leaf);
            }
            return;
        }
        if !self.is_joining() {
            return;
        }
        self.join_progressed(now, from.id);
        self.learn_all(now, entries);
        self.learn_all(now, leaf);
        if !last {
            return;
        }
        let Phase::Joining(j) = &mut self.overlay.phase else {
            return;
        };
        if j.announced {
            return;
        }
        j.announced = true;
        let rtt = j.rtt;
        let deadline = now + self.join_progress_bound(rtt);
        if let Phase::Joining(j) = &mut self.overlay.phase {
            j.deadline = deadline;
        }
        self.set_timer(deadline, TimerKey::Join);
        let leaf: BTreeSet<NodeId> = self.overlay.leaf.members().collect();
        let all = self.overlay.peers.keys().copied().collect::<Vec<_>>();
        for id in all {
            self.announce_to(id, leaf.contains(&id));
        }
        self.check_activation(now);
    }

    pub(crate) fn announce_to(&mut self, id: NodeId, reply: bool) {
        let Some(info) = self.info_of(id) else {
            return;
        };
        if let Phase::Joining(j) = &mut self.overlay.phase {
            if reply && !j.asked.insert(id) {
                return;
            }
        }
        self.send(info, Message::Announce { reply });
    }

    pub(crate) fn on_announce(&mut self, now: Time, from: NodeInfo, reply: bool) {
        // `heard_from` already added the announcer to our tables. A joining node is no one's
        // child yet: entries of it in our trees are of an earlier start of it.
        self.groups_forget_child(now, from.id);
        if reply {
            let leaf = self.leaf_infos();
            self.send(from, Message::AnnounceAck { leaf });
        }
    }

    pub(crate) fn on_announce_ack(&mut self, now: Time, from: NodeInfo, leaf: Vec<NodeInfo>) {
        self.learn_all(now, leaf);
        if let Phase::Joining(j) = &mut self.overlay.phase {
            if j.asked.contains(&from.id) {
                j.acked.insert(from.id);
            }
        }
        self.check_activation(now);
    }

    /// A joining node becomes ready once every current leaf-set member acknowledged its
    /// announce, so that its neighbours know it before it serves keys.
    pub(crate) fn check_activation(&mut self, now: Time) {
        let Phase::Joining(j) = &self.overlay.phase else {
            return;
        };
        if !j.announced
            || self.overlay.leaf.is_empty()
            || !self.overlay.leaf.members().all(|id| j.acked.contains(&id))
        {
            return;
        }
        self.become_ready(now);
    }

    pub(crate) fn become_ready(&mut self, now: Time) {
        let old = std::mem::replace(&mut self.overlay.phase, Phase::Ready);
        let mut others = Vec::new();
        if let Phase::Joining(j) = old {
            let j = *j;
            for msg in j.buffered {
                self.forward(now, Box::new(msg), Vec::new());
            }
            let via = j.via.map(|v| v.id);
            others = j
                .contacts
                .into_iter()
                .filter(|c| Some(c.id) != via)
                .collect();
        }
        // A new node's leaf set came from the node that took its join, whose view may be
        // stale while rings form and merge (then nobody else would correct it for a whole
        // gap): its first exchange comes soon, jittered over the shortest gap.
        let jitter = self
            .rng
            .random_range(0..micros(self.cfg.leaf_exchange_min).max(1));
        self.overlay.leaf_exchange_at =
            Time::from_micros(now.as_micros() + micros(self.cfg.leaf_exchange_min) + jitter);
        self.set_timer(self.overlay.leaf_exchange_at, TimerKey::LeafExchange);
        let jitter = self
            .rng
            .random_range(0..micros(self.cfg.heartbeat_interval).max(1));
        self.overlay.heartbeat_at = Time::from_micros(now.as_micros() + jitter);
        self.set_timer(self.overlay.heartbeat_at, TimerKey::Heartbeat);
        let jitter = self
            .rng
            .random_range(0..micros(self.cfg.routing_maintenance_interval).max(1));
        self.overlay.row_maintenance_at = Time::from_micros(now.as_micros() + jitter);
        self.set_timer(self.overlay.row_maintenance_at, TimerKey::RowMaintenance);
        self.emit(Event::Joined);
        self.gossip_rows();
        self.start_groups(now);
        // Contacts may belong to other rings (they joined elsewhere, or founded): introduce
        // the ones we do not know, so that the rings merge.
        for c in others {
            self.introduce(now, c);
        }
    }
}
