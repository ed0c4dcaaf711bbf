//! The engine's event queue: a calendar queue ordered by (time, sequence number).
//!
//! Almost every event of a network simulation lands less than a few seconds ahead of now, so a
//! ring of fixed-width time buckets (one millisecond each by default) makes push and pop O(1)
//! and touches memory near the present, where a binary heap of 10^6 entries walks 20 levels per
//! pop. Events beyond the ring's horizon wait in an overflow heap and move into the ring as it
//! turns. The order is exactly that of a heap keyed by (time, seq): ties never depend on the
//! layout, so runs stay byte-identical.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petal_core::Time;

/// Entries an emptied bucket keeps room for (a bucket that held more gives the rest back).
const KEEP_CAPACITY: usize = 64;

/// One queued entry: the event's time, its insertion sequence number and a payload handle.
pub type Entry = (Time, u64, u32);

/// A calendar queue. Pushed times must not precede the time of the last pop.
#[derive(Debug)]
pub struct EventQueue {
    width_us: u64,
    buckets: Vec<Vec<Entry>>,
    /// Index of the bucket that starts at `start_us`.
    cur: usize,
    start_us: u64,
    /// The current bucket is sorted in descending order (pop from its end).
    sorted: bool,
    in_ring: usize,
    overflow: BinaryHeap<Reverse<Entry>>,
}

impl EventQueue {
    /// A queue of `buckets` buckets of `width_us` microseconds each.
    pub fn new(width_us: u64, buckets: usize) -> Self {
        assert!(
            width_us > 0 && buckets > 1,
            "queue needs a positive width and two buckets"
        );
        Self {
            width_us,
            buckets: (0..buckets).map(|_| Vec::new()).collect(),
            cur: 0,
            start_us: 0,
            sorted: false,
            in_ring: 0,
            overflow: BinaryHeap::new(),
        }
    }

    /// Number of queued entries.
    pub fn len(&self) -> usize {
        self.in_ring + self.overflow.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn horizon_us(&self) -> u64 {
        self.start_us + self.width_us * self.buckets.len() as u64
    }

    /// Queues an entry. Its time must not precede the last popped entry's time.
    pub fn push(&mut self, e: Entry) {
        let at = e.0.as_micros();
        assert!(at >= self.start_us, "event queued in the past");
        if at >= self.horizon_us() {
            self.overflow.push(Reverse(e));
            return;
        }
        let offset = crate::to_usize((at - self.start_us) / self.width_us);
        let idx = (self.cur + offset) % self.buckets.len();
        let b = &mut self.buckets[idx];
        if offset == 0 && self.sorted {
            // Keep the bucket being drained in (descending) order.
            let pos = b.partition_point(|x| (x.0, x.1) > (e.0, e.1));
            b.insert(pos, e);
        } else {
            b.push(e);
        }
        self.in_ring += 1;
    }

    /// The earliest entry's time, if it is at most `limit`.
    pub fn peek_until(&mut self, limit: Time) -> Option<Time> {
        self.settle(limit.as_micros())?;
        self.buckets[self.cur]
            .last()
            .map(|e| e.0)
            .filter(|&t| t <= limit)
    }

    /// Removes and returns the earliest entry if its time is at most `limit`. The ring never
    /// turns past `limit`, so that entries may still be pushed at any time from `limit` on.
    pub fn pop_until(&mut self, limit: Time) -> Option<Entry> {
        self.peek_until(limit)?;
        self.in_ring -= 1;
        let bucket = &mut self.buckets[self.cur];
        let e = bucket.pop();
        if bucket.is_empty() && bucket.capacity() > KEEP_CAPACITY {
            // A burst (a join announcing to its whole leaf set) must not leave every bucket
            // it passed through holding its size for the rest of the run.
            bucket.shrink_to(KEEP_CAPACITY);
        }
        e
    }

    /// The payload handles of the entries that the next three pops return, as far as they are
    /// known without turning the ring (in the current bucket, sorted): hints for prefetching.
    pub fn next_handles(&self) -> [Option<u32>; 3] {
        if !self.sorted {
            return [None; 3];
        }
        let b = &self.buckets[self.cur];
        let at = |k: usize| b.len().checked_sub(k).map(|i| b[i].2);
        [at(1), at(2), at(3)]
    }

    /// Removes and returns the earliest entry.
    pub fn pop(&mut self) -> Option<Entry> {
        self.pop_until(Time::MAX)
    }

    /// Turns the ring, never past the bucket holding `limit_us`, until the current bucket holds
    /// the earliest entry; sorts it. `None` when nothing is queued up to `limit_us`.
    fn settle(&mut self, limit_us: u64) -> Option<()> {
        if self.is_empty() {
            return None;
        }
        while self.buckets[self.cur].is_empty() {
            if self.in_ring == 0 {
                // Jump straight to the overflow's earliest bucket.
                // Not empty, and nothing in the ring: the overflow holds the earliest entry.
                let Reverse(first) = self.overflow.peek().copied()?;
                let at = first.0.as_micros();
                if at > limit_us {
                    return None;
                }
                self.start_us = at - at % self.width_us;
            } else {
                if self.start_us + self.width_us > limit_us {
                    return None;
                }
                self.start_us += self.width_us;
            }
            self.cur = (self.cur + 1) % self.buckets.len();
            self.sorted = false;
            self.refill();
        }
        if !self.sorted {
            self.buckets[self.cur].sort_unstable_by_key(|e| std::cmp::Reverse((e.0, e.1)));
            self.sorted = true;
        }
        Some(())
    }

    /// Moves overflow entries that now fall inside the ring into their buckets.
    fn refill(&mut self) {
        let horizon = self.horizon_us();
        while let Some(&Reverse(e)) = self.overflow.peek() {
            if e.0.as_micros() >= horizon {
                break;
            }
            self.overflow.pop();
            let offset = crate::to_usize((e.0.as_micros() - self.start_us) / self.width_us);
            let idx = (self.cur + offset) % self.buckets.len();
            self.buckets[idx].push(e);
            self.in_ring += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn next_handles_name_the_next_pops() {
        let mut q = EventQueue::new(100, 16);
        for (k, at) in [(1u32, 50u64), (2, 10), (3, 30), (4, 20)] {
            q.push((Time::from_micros(at), u64::from(k), k));
        }
        assert_eq!(
            q.next_handles(),
            [None; 3],
            "nothing known before the first sort"
        );
        assert_eq!(q.pop().map(|e| e.2), Some(2));
        assert_eq!(q.next_handles(), [Some(4), Some(3), Some(1)]);
        for want in [4, 3, 1] {
            assert_eq!(q.pop().map(|e| e.2), Some(want));
        }
        assert_eq!(q.next_handles(), [None; 3]);
    }

    proptest! {
        /// Buckets of many entries, ties included, some come through the overflow: pops come out
        /// in (time, seq) order.
        #[test]
        fn full_buckets_pop_in_order(times in prop::collection::vec(0u64..3_000, 17..600), first in 0u64..5) {
            let mut q = EventQueue::new(1_000, 4);
            let mut model = BinaryHeap::new();
            for (seq, &t) in (0u64..).zip(&times) {
                // Some far ahead, through the overflow.
                let at = if seq % 7 == first { t + 10_000 } else { t };
                let e = (Time::from_micros(at), seq, seq as u32);
                q.push(e);
                model.push(Reverse(e));
            }
            while let Some(Reverse(want)) = model.pop() {
                prop_assert_eq!(q.pop(), Some(want));
            }
            prop_assert!(q.pop().is_none());
        }

        /// Pops come out exactly as from a binary heap keyed by (time, seq), whatever mix of
        /// near, far and tied times is pushed between pops.
        #[test]
        fn matches_a_heap(ops in prop::collection::vec((0u64..3, 0u64..50_000, any::<bool>()), 1..400)) {
            let mut q = EventQueue::new(100, 16);
            let mut model = BinaryHeap::new();
            let mut now = 0u64;
            let mut seq = 0u64;
            for (kind, delta, pop) in ops {
                seq += 1;
                let at = now + match kind { 0 => delta % 100, 1 => delta % 1600, _ => delta * 10 };
                let e = (Time::from_micros(at), seq, seq as u32);
                q.push(e);
                model.push(Reverse(e));
                if pop {
                    // A prefetch hint, when given, names the entry the pop returns.
                    let hint = q.next_handles()[0];
                    let got = q.pop();
                    if let Some(h) = hint {
                        prop_assert_eq!(got.map(|e| e.2), Some(h));
                    }
                    let want = model.pop().map(|Reverse(e)| e);
                    prop_assert_eq!(got, want);
                    now = got.map_or(now, |e| e.0.as_micros());
                }
                prop_assert_eq!(q.len(), model.len());
            }
            while let Some(Reverse(want)) = model.pop() {
                // A limit short of the next entry yields nothing and turns nothing.
                if want.0.as_micros() > now {
                    let before = Time::from_micros(want.0.as_micros() - 1);
                    prop_assert_eq!(q.pop_until(before), None);
                    q.push((before, u64::MAX, 0));
                    prop_assert_eq!(q.pop(), Some((before, u64::MAX, 0)));
                }
                prop_assert_eq!(q.peek_until(Time::MAX), Some(want.0));
                prop_assert_eq!(q.pop(), Some(want));
                now = want.0.as_micros();
            }
            prop_assert!(q.pop().is_none());
        }
    }
}
