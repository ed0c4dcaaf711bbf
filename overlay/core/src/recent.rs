//! [`Recent`]: a bounded set of identities seen lately, for dropping copies of a message that
//! arrive twice (rerouted while the first copy was only late, numbered by two roots).
//!
//! Bounded in count and in age: an identity is forgotten when it is older than the window or
//! when the set is full and a newer one comes. A copy that arrives after its first was forgotten
//! is taken again; the window is chosen longer than any copy can linger in the overlay.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hash};
use std::time::Duration;

use crate::id_map::IdHasher;
use crate::time::Time;

/// Identities seen lately, oldest first, with a hash index.
#[derive(Clone, Debug)]
pub(crate) struct Recent<K> {
    order: VecDeque<(Time, K)>,
    index: hashbrown::HashSet<K, BuildHasherDefault<IdHasher>>,
}

impl<K> Default for Recent<K> {
    fn default() -> Self {
        Self {
            order: VecDeque::new(),
            index: hashbrown::HashSet::default(),
        }
    }
}

impl<K: Copy + Eq + Hash> Recent<K> {
    /// Remembers `k`, seen at `now`: false when it was already remembered (a copy). First
    /// forgets what is older than `window`, and the oldest entries while more than `cap` - 1
    /// are held. A `cap` of 0 remembers nothing (every identity is new).
    pub(crate) fn insert(&mut self, now: Time, k: K, cap: usize, window: Duration) -> bool {
        self.expire(now, window);
        if self.index.contains(&k) {
            return false;
        }
        if cap == 0 {
            return true;
        }
        while self.order.len() >= cap {
            self.pop_oldest();
        }
        self.order.push_back((now, k));
        self.index.insert(k);
        true
    }

    /// True when `k` is remembered (first forgets what is older than `window` at `now`).
    pub(crate) fn contains(&mut self, now: Time, k: &K, window: Duration) -> bool {
        self.expire(now, window);
        self.index.contains(k)
    }

    /// Forgets every identity older than `window` at `now`.
    pub(crate) fn expire(&mut self, now: Time, window: Duration) {
        while self
            .order
            .front()
            .is_some_and(|(t, _)| now.saturating_since(*t) > window)
        {
            self.pop_oldest();
        }
        if self.order.is_empty() && self.order.capacity() > 0 {
            self.order = VecDeque::new();
            self.index = hashbrown::HashSet::default();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, k)) = self.order.pop_front() {
            self.index.remove(&k);
        }
    }

    /// Identities held.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Heap bytes reserved.
    pub(crate) fn heap_bytes(&self) -> usize {
        let slots = if self.index.capacity() == 0 {
            0
        } else {
            (self.index.capacity() * 8 / 7).next_power_of_two() * (std::mem::size_of::<K>() + 1)
                + 16
        };
        crate::memory::deque_bytes(&self.order) + slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    fn at(s: u64) -> Time {
        Time::from_micros(s * 1_000_000)
    }

    #[test]
    fn a_copy_within_the_window_is_refused_and_one_after_it_is_taken() {
        let mut r = Recent::default();
        assert!(r.insert(at(0), 7u64, 4, W));
        assert!(!r.insert(at(5), 7, 4, W));
        assert!(r.contains(at(10), &7, W));
        assert!(!r.contains(at(11), &7, W));
        assert!(r.insert(at(11), 7, 4, W), "forgotten after the window");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_full_set_forgets_its_oldest() {
        let mut r = Recent::default();
        for k in 0..4u64 {
            assert!(r.insert(at(0), k, 4, W));
        }
        assert!(r.insert(at(1), 4, 4, W));
        assert_eq!(r.len(), 4);
        assert!(!r.contains(at(1), &0, W), "the oldest went");
        assert!(!r.insert(at(1), 1, 4, W), "the others stay");
        assert!(
            r.insert(at(1), 0, 0, W) && r.insert(at(1), 9, 0, W),
            "cap 0 keeps nothing"
        );
    }

    #[test]
    fn an_idle_set_gives_its_memory_back() {
        let mut r = Recent::default();
        for k in 0..100u64 {
            r.insert(at(0), k, 1000, W);
        }
        assert!(r.heap_bytes() > 0);
        r.expire(at(20), W);
        assert_eq!((r.len(), r.heap_bytes()), (0, 0));
    }
}
