//! Seeds: the addresses a node is told to join through (`petald --seed`), as a sans-IO
//! schedule of dials shared by the daemon's driver and the discrete-event simulator, so that
//! the simulator's fleets start as the daemons do.
//!
//! The driver dials every address [`Seeds::poll_dial`] hands out and reports the outcome: a
//! seed that answered ([`Seeds::answered`]) is a contact for the core
//! ([`crate::Node::contact`]: join through it, keep it as another contact, or introduce it); a
//! dial that failed ([`Seeds::failed`]) says whether every seed has failed, and a node whose
//! seeds all failed serves as a ring of one at once. From then on seeds are dialed again on two
//! schedules ([`Seeds::handle_timeout`]):
//! - every seed the caller does not call *settled* (its node is in the core's tables, it is
//!   this node, or the node is joining over a link to it), after a delay that doubles from
//!   `first_retry` up to `max_retry`: groups that started apart, or were partitioned, merge;
//! - during the first `fast_for` after the start, a seed that never answered, every
//!   `first_retry`: in a fleet that starts at once a seed's port opens late (tens to hundreds
//!   of milliseconds on a loaded host) or a busy node resets a dial, and a node serving alone
//!   merges within one such delay of the seed's answer. (The doubling schedule alone made such
//!   a node wait 0.8-3.2 s after its seed came up.) A seed that answered is not dialed every
//!   `first_retry`: it was a contact already, and for a ready node each dial would route
//!   another introduction.
//!
//! A seed is not dialed again while a dial to it is out (for at most `dial_patience`, should
//! its outcome never be reported).

use std::time::Duration;

use petal_protocol::NodeId;

use crate::time::Time;

/// The timing of seed dials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedTiming {
    /// The first delay of the doubling schedule, and the delay between dials of a seed that
    /// never answered during `fast_for` after the start.
    pub first_retry: Duration,
    /// How long after the start a seed that never answered is dialed every `first_retry`.
    pub fast_for: Duration,
    /// The longest delay of the doubling schedule.
    pub max_retry: Duration,
    /// How long a dial whose outcome was not reported keeps its seed from being dialed again.
    pub dial_patience: Duration,
}

impl Default for SeedTiming {
    /// 100 ms, 5 s, 30 s (petald's default `seed_retry`) and 4 s (its dial timeout, 3 s, and a
    /// second).
    fn default() -> Self {
        SeedTiming {
            first_retry: Duration::from_millis(100),
            fast_for: Duration::from_secs(5),
            max_retry: Duration::from_secs(30),
            dial_patience: Duration::from_secs(4),
        }
    }
}

#[derive(Clone, Debug)]
struct Seed<A> {
    addr: A,
    /// The node that answered there last (`None`: never answered).
    id: Option<NodeId>,
    /// Its last dial failed.
    failed: bool,
    /// When the dial under way started.
    dialing_since: Option<Time>,
}

/// The seeds of one node and when to dial them (see the module doc). `A` is whatever the
/// driver dials: a socket address in the daemon, a host index in the simulator.
#[derive(Clone, Debug)]
pub struct Seeds<A> {
    seeds: Vec<Seed<A>>,
    timing: SeedTiming,
    started: Time,
    /// The doubling schedule: its current delay and next instant.
    delay: Duration,
    slow_at: Time,
    /// The sooner of the two schedules.
    next_at: Time,
    /// Dials handed out by [`Seeds::poll_dial`], oldest first.
    to_dial: Vec<A>,
}

impl<A: Clone + PartialEq> Seeds<A> {
    /// The seeds `addrs` of a node starting at `now`: every one is to be dialed at once. An
    /// address listed twice is dialed once.
    pub fn new(addrs: impl IntoIterator<Item = A>, now: Time, timing: SeedTiming) -> Self {
        let mut seeds: Vec<Seed<A>> = Vec::new();
        for addr in addrs {
            if seeds.iter().all(|s| s.addr != addr) {
                seeds.push(Seed {
                    addr,
                    id: None,
                    failed: false,
                    dialing_since: Some(now),
                });
            }
        }
        let first = timing.first_retry.min(timing.max_retry);
        Seeds {
            to_dial: seeds.iter().rev().map(|s| s.addr.clone()).collect(),
            seeds,
            timing,
            started: now,
            delay: first,
            slow_at: now + first,
            next_at: now + first,
        }
    }

    /// True when the node has no seeds (it founds a ring).
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// Whether `addr` is one of the seeds.
    pub fn contains(&self, addr: &A) -> bool {
        self.seeds.iter().any(|s| s.addr == *addr)
    }

    /// The id last found at seed `addr`.
    pub fn id_at(&self, addr: &A) -> Option<NodeId> {
        self.seeds.iter().find(|s| s.addr == *addr)?.id
    }

    /// The next address to dial now.
    pub fn poll_dial(&mut self) -> Option<A> {
        self.to_dial.pop()
    }

    /// When [`Seeds::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Time {
        self.next_at
    }

    /// A dial to seed `addr` reached node `id` (for this node's own address among the seeds,
    /// its own id: settled for good).
    pub fn answered(&mut self, addr: &A, id: NodeId) {
        if let Some(s) = self.seeds.iter_mut().find(|s| s.addr == *addr) {
            s.id = Some(id);
            s.failed = false;
            s.dialing_since = None;
        }
    }

    /// A dial to seed `addr` failed. Returns true when the last dial of every seed failed
    /// (a node that has not started then serves as a ring of one).
    pub fn failed(&mut self, addr: &A) -> bool {
        if let Some(s) = self.seeds.iter_mut().find(|s| s.addr == *addr) {
            s.failed = true;
            s.dialing_since = None;
        }
        self.all_failed()
    }

    /// True when the last dial of every seed failed.
    pub fn all_failed(&self) -> bool {
        self.seeds.iter().all(|s| s.failed)
    }

    /// Chooses the seeds to dial again now (then [`Seeds::poll_dial`]): see the module doc.
    /// `settled(id)` says that the seed whose node is `id` needs no dial (the core knows it,
    /// it is this node, or this node is joining over a link to it).
    pub fn handle_timeout(&mut self, now: Time, settled: impl Fn(NodeId) -> bool) {
        if now < self.next_at {
            return;
        }
        let slow = now >= self.slow_at;
        if slow {
            self.delay = (self.delay * 2).min(self.timing.max_retry);
            self.slow_at = now + self.delay;
        }
        let fast = now < self.started + self.timing.fast_for;
        self.next_at = if fast {
            (now + self.timing.first_retry.min(self.timing.max_retry)).min(self.slow_at)
        } else {
            self.slow_at
        };
        let patience = self.timing.dial_patience;
        for s in &mut self.seeds {
            if s.id.is_some_and(&settled)
                || !(slow || (fast && s.id.is_none()))
                || s.dialing_since.is_some_and(|t| now < t + patience)
            {
                continue;
            }
            s.dialing_since = Some(now);
            self.to_dial.insert(0, s.addr.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Time {
        Time::from_micros(n * 1000)
    }

    fn id(n: u128) -> NodeId {
        NodeId(n)
    }

    fn dials(s: &mut Seeds<u32>) -> Vec<u32> {
        std::iter::from_fn(|| s.poll_dial()).collect()
    }

    /// Runs the timer from `from` to `to` ms (every ms), failing every dial at once; returns
    /// the instants (ms) seed `addr` was dialed.
    fn failing(s: &mut Seeds<u32>, from: u64, to: u64, addr: u32) -> Vec<u64> {
        let mut at = Vec::new();
        for t in from..=to {
            s.handle_timeout(ms(t), |_| false);
            for a in dials(s) {
                if a == addr {
                    at.push(t);
                }
                s.failed(&a);
            }
        }
        at
    }

    #[test]
    fn every_seed_is_dialed_at_once_and_failures_are_counted() {
        let mut s = Seeds::new([1u32, 2, 1], ms(0), SeedTiming::default());
        assert_eq!(dials(&mut s), vec![1, 2]);
        assert!(!s.failed(&1));
        assert!(s.failed(&2), "every seed failed");
        s.answered(&2, id(2));
        assert!(!s.all_failed());
        assert_eq!(s.id_at(&2), Some(id(2)));
    }

    /// A seed that never answers is dialed every 100 ms for 5 s, then at doubling intervals.
    #[test]
    fn a_seed_that_never_answered_is_dialed_every_100_ms_for_5_s() {
        let mut s = Seeds::new([7u32], ms(0), SeedTiming::default());
        assert_eq!(dials(&mut s), vec![7]);
        s.failed(&7);
        let at = failing(&mut s, 1, 12_000, 7);
        let fast: Vec<u64> = (1..50).map(|k| k * 100).collect();
        assert_eq!(&at[..fast.len()], &fast[..]);
        // The doubling schedule runs alongside (200, 400, ..., 3,200, 6,400 ms from its own
        // instants: 100, 300, 700, 1,500, 3,100, 6,300, 12,700).
        assert_eq!(&at[fast.len()..], &[6300]);
    }

    /// A seed that answered and that the core does not know is dialed on the doubling schedule
    /// only; a settled one not at all.
    #[test]
    fn an_answered_seed_follows_the_doubling_schedule() {
        let mut s = Seeds::new([1u32, 2], ms(0), SeedTiming::default());
        dials(&mut s);
        s.answered(&1, id(1));
        s.answered(&2, id(2));
        let mut at = Vec::new();
        for t in 1..=4000 {
            s.handle_timeout(ms(t), |n| n == id(2));
            for a in dials(&mut s) {
                assert_eq!(a, 1, "seed 2 is settled");
                at.push(t);
                s.answered(&a, id(1));
            }
        }
        assert_eq!(at, vec![100, 300, 700, 1500, 3100]);
    }

    /// A dial whose outcome is not reported holds its seed back for `dial_patience` only.
    #[test]
    fn a_seed_is_not_dialed_again_while_its_dial_is_out() {
        let mut s = Seeds::new([3u32], ms(0), SeedTiming::default());
        dials(&mut s);
        let mut at = Vec::new();
        for t in 1..=4500 {
            s.handle_timeout(ms(t), |_| false);
            if !dials(&mut s).is_empty() {
                at.push(t);
            }
        }
        assert_eq!(
            at,
            vec![4000],
            "again once the first dial's patience ran out"
        );
    }
}
