//! The engine's queued events: what each holds, how it is queued and run, and the prefetches
//! that start loading what the next ones will read.

use petal_core::{Message, Time};

use super::Sim;
use crate::apps::AppAction;

/// An event the engine's queue holds (in a [`Queued`]).
#[derive(Debug)]
pub(crate) enum Ev {
    /// A message, from the slot of [`Queued::from`] to that of [`Queued::to`].
    Deliver(Message),
    Timer {
        node: u32,
    },
    /// Something a simulated application does later.
    App(AppAction),
    /// A dial from a node to one of its seeds completes (`seeds.rs`).
    Dial {
        node: u32,
        seed: u32,
    },
    /// A node's seed-retry timer (`seeds.rs`).
    SeedRetry {
        node: u32,
    },
}

/// No slot (see [`Queued`]).
const NO_SLOT: u32 = u32::MAX;

/// A queued event, after the slots it concerns, which the prefetches ahead of it read without
/// touching the event (see [`Sim::prefetch_next`]).
///
/// Laid out as written (`repr(C)`), 80 bytes (a test checks): the slots lead its first cache
/// line, and the byte 64 after them, an address a prefetch can name, always lies on its second
/// line (an event starts 0, 16, 32 or 48 bytes into a line: the allocators align to 16). (In
/// the layout the compiler chose for the fields of a message's variant, the slots came after
/// the message, at bytes 72-79, on the event's second line, which no prefetch asked for:
/// finding where the event two ahead goes waited for memory, 8 % of a 6-run `cold-start`'s
/// cycles in `perf`.)
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Queued {
    /// The node the event goes to (a message's receiver, a timer's node), or [`NO_SLOT`].
    to: u32,
    /// A message's sender (a slot's id and address never change once it sends), or
    /// [`NO_SLOT`].
    from: u32,
    /// `None` once taken (the slots then stay as they were, read by nothing until the entry is
    /// used again).
    ev: Option<Ev>,
}

impl Sim {
    /// Queues an event other than a message (see [`Sim::push_message`]).
    pub(crate) fn push(&mut self, at: Time, ev: Ev) {
        debug_assert!(
            !matches!(ev, Ev::Deliver(_)),
            "a message is queued with its slots (push_message)"
        );
        let to = match ev {
            Ev::Timer { node } => node,
            _ => NO_SLOT,
        };
        self.push_queued(
            at,
            Queued {
                to,
                from: NO_SLOT,
                ev: Some(ev),
            },
        );
    }

    /// Queues the delivery of `msg` from slot `from` to slot `to`.
    pub(crate) fn push_message(&mut self, at: Time, to: u32, from: u32, msg: Message) {
        let ev = Some(Ev::Deliver(msg));
        self.push_queued(at, Queued { to, from, ev });
    }

    fn push_queued(&mut self, at: Time, q: Queued) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = q;
                s
            }
            None => {
                self.slab.push(q);
                crate::count_u32(self.slab.len() - 1)
            }
        };
        self.queue.push((at, self.seq, slot));
    }

    /// Runs every event up to and including time `until`; then `now() == until`.
    pub fn run_until(&mut self, until: Time) {
        while let Some((at, _, slot)) = self.queue.pop_until(until) {
            self.now = at;
            let q = &mut self.slab[slot as usize];
            let (to, from, ev) = (q.to, q.from, q.ev.take());
            self.free.push(slot);
            self.prefetch_next();
            // A queued slot always holds its event (taken only here).
            if let Some(ev) = ev {
                self.dispatch(ev, to, from);
            }
        }
        self.now = until;
    }

    /// Starts loading what the next events will read, so that their cache misses overlap the
    /// current event's work, in three stages one event apart: the payload of the third event
    /// ahead; the node fields the second event ahead reads first (its payload was prefetched
    /// one event earlier); and, for a message the next event delivers, what its node reads
    /// first about the sender, or for a timer, the entry of the peer whose ping is likely due.
    /// Only hints: nothing changes.
    fn prefetch_next(&self) {
        let [next, second, third] = self.queue.next_handles();
        if let Some(h) = third {
            // An event is 80 bytes, so it spans two cache lines (it starts 0, 16, 32 or 48 bytes
            // into one): its first, and the line of the byte 64 after its slots (an address
            // only, never read; for one of those offsets no event starts on that line).
            let q = &self.slab[h as usize];
            prefetch_index::prefetch_index(std::slice::from_ref(q), 0);
            prefetch_index::prefetch_index(std::slice::from_ref(&q.to), 64 / size_of::<u32>());
        }
        if let Some((to, _)) = second.and_then(|h| self.target_of(h)) {
            let slot = &self.slots[to as usize];
            prefetch_index::prefetch_index(std::slice::from_ref(&slot.alive), 0);
            slot.node.prefetch_state();
        }
        match next.and_then(|h| self.target_of(h)) {
            Some((to, Some(from))) => {
                let id = self.ids[from as usize];
                self.slots[to as usize].node.prefetch_message_from(id);
            }
            Some((to, None)) => self.slots[to as usize].node.prefetch_timer(),
            None => {}
        }
    }

    /// The node a queued event goes to, and for a message its sender's slot.
    fn target_of(&self, handle: u32) -> Option<(u32, Option<u32>)> {
        let q = &self.slab[handle as usize];
        (q.to != NO_SLOT).then_some((q.to, (q.from != NO_SLOT).then_some(q.from)))
    }
}

#[cfg(test)]
mod tests {
    /// A queued event's slots lead it and the byte 64 after them is on its second cache line;
    /// 80 bytes in all, as the events in flight were counted before the slots moved out of the
    /// message's variant (the memory tables of `pastry-hops`' reports count them).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_queued_event_is_80_bytes_with_its_slots_first() {
        assert_eq!(size_of::<super::Queued>(), 80);
        assert_eq!(std::mem::offset_of!(super::Queued, to), 0);
        assert_eq!(std::mem::offset_of!(super::Queued, from), 4);
    }
}
