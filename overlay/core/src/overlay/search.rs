//! Nearest-neighbour search before a join (proximity neighbour selection, as in Castro,
//! Druschel, Hu and Rowstron's PNS and FreePastry's `getNearest`).
//!
//! A joiner knows one node of the ring (a seed, the first node heard, in the simulator a random
//! one), usually not a near one. Pastry's routes are short only if the joiner's table holds
//! near nodes, and a join hands the joiner the rows of the nodes on its path, which are near the
//! first node of that path: so the joiner first looks for the node of the ring nearest to it,
//! and joins through that one.
//!
//! The walk, every step measured by the joiner's own round trips:
//! 1. ask the bootstrap node for its leaf set (the answer measures the bootstrap node) and
//!    probe every member;
//! 2. from the deepest routing-table row of the nearest node so far up to row 0: ask the
//!    nearest node so far for that row and probe its entries; the nearest may change at
//!    every step (rows near the bottom hold few, close-by nodes, rows near the top many);
//! 3. ask the nearest for row 0 again while that keeps finding a nearer node (at most
//!    [`TOP_ROUNDS`] times).
//!
//! A probe step ends once every probe answered or twice the nearest round trip has passed
//! since the probes left (a later answer cannot beat the nearest), an ask after
//! `join_contact_timeout` (then the search ends with what it has). The search asks with
//! [`Message::Discover`], which the receiver answers without learning the sender: the joiner
//! stays invisible until it announces itself (see `join`). Every measured node is offered to
//! the routing table with its round trip, so the joiner's table starts from measured nodes.
//! A node that is not in a ring answers with nothing, and the search ends at once; the join
//! then goes on through its contacts as before.

use std::collections::BTreeSet;
use std::time::Duration;

use petal_protocol::{Message, NodeId, NodeInfo, Want};

use super::Phase;
use crate::node::{Node, TimerKey};
use crate::time::Time;

/// Rounds of asking the nearest node for row 0 again after the walk down the rows.
pub(crate) const TOP_ROUNDS: u32 = 3;

/// A request of the search under way.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Asked {
    to: NodeInfo,
    nonce: u64,
    sent: Time,
    want: Want,
}

/// The nearest node found so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Nearest {
    info: NodeInfo,
    rtt_us: u32,
    /// Rows of its routing table (from its answer).
    rows: u8,
}

/// State of a nearest-neighbour search (inside the join state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Search {
    nearest: Option<Nearest>,
    ask: Option<Asked>,
    /// Probes out: nonce, node, send time.
    probes: Vec<(u64, NodeInfo, Time)>,
    /// Every node asked or probed (each is measured once).
    seen: BTreeSet<NodeId>,
    /// Probes sent so far (bounded by `max_probes`).
    probes_sent: usize,
    /// Rounds of row 0 asked so far.
    top_rounds: u32,
    /// The nearest node changed during the current step.
    improved: bool,
    /// The row asked last (`None`: the leaf set).
    last: Option<u8>,
}

impl Node {
    /// Starts the search through `bootstrap` (the join state must exist).
    pub(crate) fn start_search(&mut self, now: Time, bootstrap: NodeInfo) {
        if let Phase::Joining(j) = &mut self.overlay.phase {
            j.search = Some(Box::new(Search {
                nearest: None,
                ask: None,
                probes: Vec::new(),
                seen: BTreeSet::from([bootstrap.id]),
                probes_sent: 0,
                top_rounds: 0,
                improved: false,
                last: None,
            }));
        }
        self.stats.searches += 1;
        let deadline = now + self.cfg.join_contact_timeout;
        self.search_ask(now, bootstrap, Want::LeafSet, deadline);
    }

    fn search_mut(&mut self) -> Option<&mut Search> {
        match &mut self.overlay.phase {
            Phase::Joining(j) => j.search.as_deref_mut(),
            _ => None,
        }
    }

    /// True while the search runs (no join attempt is under way then).
    pub(crate) fn searching(&self) -> bool {
        matches!(&self.overlay.phase, Phase::Joining(j) if j.search.is_some())
    }

    fn set_search_deadline(&mut self, deadline: Time) {
        if let Phase::Joining(j) = &mut self.overlay.phase {
            j.deadline = deadline;
        }
        self.set_timer(deadline, TimerKey::Join);
    }

    fn search_ask(&mut self, now: Time, to: NodeInfo, want: Want, deadline: Time) {
        let nonce = self.nonce();
        let Some(s) = self.search_mut() else {
            return;
        };
        s.ask = Some(Asked {
            to,
            nonce,
            sent: now,
            want,
        });
        s.improved = false;
        self.set_search_deadline(deadline);
        self.send(to, Message::Discover { nonce, want });
    }

    /// Answers a search: a node in the ring with what was asked, any other with nothing. The
    /// sender is not learned (it is not in the ring yet).
    pub(crate) fn on_discover(&mut self, from: NodeInfo, nonce: u64, want: Want) {
        let ready = self.is_ready();
        let entries = match want {
            _ if !ready => Vec::new(),
            Want::Probe => Vec::new(),
            Want::LeafSet => self.leaf_infos(),
            Want::Row(r) => {
                let row: Vec<NodeId> = self.overlay.rt.row(usize::from(r)).collect();
                self.infos(row.into_iter())
            }
        };
        let rows = if ready {
            u8::try_from(self.overlay.rt.depth()).unwrap_or(u8::MAX)
        } else {
            0
        };
        self.send(
            from,
            Message::DiscoverReply {
                nonce,
                rows,
                entries,
            },
        );
    }

    /// An answer to a [`Message::Discover`]: the search's ask or one of its probes, or a
    /// proximity probe that an invisible joiner sent instead of a ping.
    pub(crate) fn on_discover_reply(
        &mut self,
        now: Time,
        from: NodeInfo,
        nonce: u64,
        rows: u8,
        entries: Vec<NodeInfo>,
    ) {
        if self.on_probe_answer(now, from, nonce) {
            return;
        }
        let Some(s) = self.search_mut() else {
            return;
        };
        if let Some(a) = s
            .ask
            .as_ref()
            .filter(|a| a.nonce == nonce && a.to.id == from.id)
        {
            let rtt = rtt_us(now, a.sent);
            let asked_leaf = a.want == Want::LeafSet;
            s.ask = None;
            if asked_leaf && entries.is_empty() && rows == 0 {
                // Not in a ring (or alone in one): nothing to search, and a node that is not in
                // a ring is no routing candidate. The join goes through the contacts.
                self.finish_search(now, None);
                return;
            }
            self.search_measured(now, from, rtt, rows);
            self.search_probe_all(now, entries);
            return;
        }
        let Some(k) = s
            .probes
            .iter()
            .position(|p| p.0 == nonce && p.1.id == from.id)
        else {
            return;
        };
        let (_, info, sent) = s.probes.swap_remove(k);
        let done = s.probes.is_empty();
        self.search_measured(now, info, rtt_us(now, sent), rows);
        if done {
            self.search_next(now);
        }
    }

    /// A node measured by the search: a routing-table candidate with its round trip, and the
    /// nearest so far if it is.
    fn search_measured(&mut self, now: Time, info: NodeInfo, rtt: u32, rows: u8) {
        self.consider_with_rtt(now, info, rtt);
        let Some(s) = self.search_mut() else {
            return;
        };
        if s.nearest
            .is_none_or(|n| (rtt, info.id) < (n.rtt_us, n.info.id))
        {
            if s.nearest.is_some() {
                self.stats.search_moves += 1;
            }
            let Some(s) = self.search_mut() else {
                return;
            };
            s.nearest = Some(Nearest {
                info,
                rtt_us: rtt,
                rows,
            });
            s.improved = true;
        }
    }

    /// Probes every entry not measured yet; the step ends when all answered or after twice the
    /// nearest round trip.
    fn search_probe_all(&mut self, now: Time, entries: Vec<NodeInfo>) {
        let me = self.me.id;
        let max = self.cfg.max_probes;
        let mut out = Vec::new();
        if let Some(s) = self.search_mut() {
            for e in entries {
                if e.id != me && s.probes_sent < max && s.seen.insert(e.id) {
                    s.probes_sent += 1;
                    out.push(e);
                }
            }
        }
        if out.is_empty() {
            self.search_next(now);
            return;
        }
        let nearest_us = self
            .search_mut()
            .and_then(|s| s.nearest)
            .map_or(0, |n| u64::from(n.rtt_us));
        let wait = Duration::from_micros((2 * nearest_us).max(1_000));
        for e in out {
            let nonce = self.nonce();
            if let Some(s) = self.search_mut() {
                s.probes.push((nonce, e, now));
            }
            self.stats.pings_sent += 1;
            self.send(
                e,
                Message::Discover {
                    nonce,
                    want: Want::Probe,
                },
            );
        }
        self.set_search_deadline(now + wait);
    }

    /// The step is over: ask the nearest node for the next row, or finish.
    fn search_next(&mut self, now: Time) {
        let contact_timeout = self.cfg.join_contact_timeout;
        let Some(s) = self.search_mut() else {
            return;
        };
        s.probes.clear();
        let Some(n) = s.nearest else {
            self.finish_search(now, None);
            return;
        };
        s.ask = None;
        // The walk goes from the nearest node's deepest row up to row 0, then row 0 again
        // while that finds a nearer node.
        let row = match s.last {
            None => n.rows.checked_sub(1),
            Some(0) if s.improved && s.top_rounds < TOP_ROUNDS => {
                s.top_rounds += 1;
                Some(0)
            }
            Some(0) => None,
            Some(r) => Some(r - 1),
        };
        let Some(row) = row else {
            self.finish_search(now, None);
            return;
        };
        // An ask waits for its answer a few of the nearest round trips, at most as long as a
        // contact's first answer may take.
        let wait = Duration::from_micros(u64::from(n.rtt_us) * 4 + 1_000).min(contact_timeout);
        s.last = Some(row);
        self.search_ask(now, n.info, Want::Row(row), now + wait);
    }

    /// The search's deadline passed: an unanswered ask ends it, unanswered probes end the step.
    pub(crate) fn on_search_timeout(&mut self, now: Time) {
        let Some(s) = self.search_mut() else {
            return;
        };
        if let Some(a) = s.ask.take() {
            self.stats.join_retries += 1;
            self.finish_search(now, Some(a.to.id));
        } else {
            self.search_next(now);
        }
    }

    /// The driver could not reach `id`: an ask to it ends the search.
    pub(crate) fn search_unreachable(&mut self, now: Time, id: NodeId) {
        if let Some(s) = self.search_mut()
            && s.ask.as_ref().is_some_and(|a| a.to.id == id)
        {
            s.ask = None;
            self.stats.join_contacts_unreachable += 1;
            self.finish_search(now, Some(id));
        }
    }

    /// Ends the search: the join goes through the nearest node found (first among the
    /// contacts), with its round trip as the attempt's measure. A node that did not answer
    /// the search (`failed`) is skipped by this round of attempts, as a contact that refused.
    fn finish_search(&mut self, now: Time, failed: Option<NodeId>) {
        let (me, max) = (self.me.id, self.cfg.max_join_contacts);
        let Phase::Joining(j) = &mut self.overlay.phase else {
            return;
        };
        let Some(s) = j.search.take() else {
            return;
        };
        if let Some(id) = failed {
            j.busy.insert(id);
        }
        if let Some(n) = s.nearest {
            j.rtt = Some(Duration::from_micros(u64::from(n.rtt_us)));
            if n.info.id != me {
                j.contacts.retain(|c| c.id != n.info.id);
                j.contacts.insert(0, n.info);
                j.contacts.truncate(max);
                j.next = 0;
            }
        }
        self.start_join_attempt(now);
    }
}

fn rtt_us(now: Time, sent: Time) -> u32 {
    u32::try_from(now.as_micros().saturating_sub(sent.as_micros())).unwrap_or(u32::MAX)
}
