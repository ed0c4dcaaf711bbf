//! The runtime's part of the node-wide memory budget ([`petal_core::MemoryBudget`], shared with
//! the core): every message queued for a peer link and every packet queued for a relay session
//! carries a [`Charge`] that gives its bytes back when the item is written or dropped, however
//! that happens (a link that dies drops its queue, and the charges with it); a batch's charges
//! come back together, once all of it is written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use petal_core::MemoryBudget;
use petal_protocol::Message;

/// One queue's part of the node's budget: what it holds now and its own bound (a peer's share
/// for a link queue).
#[derive(Debug)]
pub(crate) struct Share {
    node: Arc<MemoryBudget>,
    held: AtomicU64,
    limit: u64,
}

impl Share {
    pub(crate) fn new(node: Arc<MemoryBudget>, limit: u64) -> Arc<Self> {
        Arc::new(Self {
            node,
            held: AtomicU64::new(0),
            limit,
        })
    }

    /// Bytes this queue holds.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Charges `n` bytes to this queue and the node: `None` when the queue's bound or the
    /// node's budget would be passed (the node's budget counts its own refusals; the caller
    /// counts the rest).
    pub(crate) fn charge(self: &Arc<Self>, n: u64) -> Option<Charge> {
        let fits = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                h.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok();
        if !fits {
            return None;
        }
        if !self.node.try_take(n) {
            self.held.fetch_sub(n, Ordering::AcqRel);
            return None;
        }
        Some(Charge {
            share: Some(self.clone()),
            n,
        })
    }

    /// Charges `n` bytes of input read from a peer or a client: bounded by this share only
    /// (counted against the node's budget whatever its use, since the bytes are read already
    /// and refusing them would make the node drop ordered input). `None` while the share holds
    /// anything and `n` more would pass it.
    pub(crate) fn charge_input(self: &Arc<Self>, n: u64) -> Option<Charge> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h == 0 || h.saturating_add(n) <= self.limit).then(|| h.saturating_add(n))
            })
            .ok()?;
        self.node.take(n);
        Some(Charge {
            share: Some(self.clone()),
            n,
        })
    }
}

/// Bytes of the budget held by one queued item, given back on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    share: Option<Arc<Share>>,
    n: u64,
}

impl Charge {
    /// A charge of nothing (link keepalives: a few bytes, bounded by the queue's length).
    pub(crate) fn none() -> Self {
        Self { share: None, n: 0 }
    }

    /// Takes `other` into this charge, which then gives back both (one give instead of two):
    /// for the packets of one batch, charged one by one and written together. A charge of
    /// another share is not taken: it is given back at once, as if its item were dropped, so
    /// callers combine only charges of one share.
    pub(crate) fn absorb(&mut self, mut other: Charge) {
        let Some(theirs) = other.share.take() else {
            return;
        };
        match &self.share {
            None => {
                self.share = Some(theirs);
                self.n = other.n;
            }
            Some(mine) if Arc::ptr_eq(mine, &theirs) => self.n += other.n,
            Some(_) => {
                debug_assert!(false, "charges of two shares combined");
                other.share = Some(theirs);
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(s) = self.share.take() {
            s.held.fetch_sub(self.n, Ordering::AcqRel);
            s.node.give(self.n);
        }
    }
}

/// A message queued for a peer link, with what it holds of the budget.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) msg: Message,
    /// Given back when the message is dropped (after it is encoded).
    pub(crate) charge: Charge,
}

impl Queued {
    /// An uncharged message (link keepalives).
    pub(crate) fn free(msg: Message) -> Self {
        Self {
            msg,
            charge: Charge::none(),
        }
    }
}

/// Charges `n` bytes of input to `share`, waiting while the share is full: the reader stops
/// reading its connection until the node task has handled what it read before, so TCP pushes
/// back on the sender instead of the node's memory growing.
pub(crate) async fn charge_input(share: &Arc<Share>, n: u64) -> Charge {
    loop {
        if let Some(c) = share.charge_input(n) {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// What a queued message holds: its own size and what it points to.
pub(crate) fn message_cost(msg: &Message) -> u64 {
    (std::mem::size_of::<Message>() + msg.heap_bytes()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Charges are bounded by the queue's share and by the node's budget, and every byte comes
    /// back when the charges drop.
    #[test]
    fn charges_meet_the_share_and_the_budget_and_come_back() {
        let node = Arc::new(MemoryBudget::new(1000));
        let a = Share::new(node.clone(), 600);
        let b = Share::new(node.clone(), 600);
        let a1 = a.charge(500).unwrap();
        assert!(a.charge(200).is_none(), "past a's share");
        let b1 = b.charge(450).unwrap();
        assert!(b.charge(100).is_none(), "past the node's budget");
        assert_eq!((a.held(), b.held(), node.used()), (500, 450, 950));
        drop(a1);
        assert_eq!((a.held(), node.used()), (0, 450));
        let b2 = b.charge(100).unwrap();
        drop((b1, b2));
        assert_eq!((b.held(), node.used()), (0, 0));
        // A batch's charges, combined, come back together.
        let mut batch = Charge::none();
        for _ in 0..3 {
            batch.absorb(a.charge(100).unwrap());
        }
        batch.absorb(Charge::none());
        assert_eq!((a.held(), node.used()), (300, 300));
        drop(batch);
        assert_eq!((a.held(), node.used()), (0, 0));
        assert_eq!(
            node.refused(),
            1,
            "the node's budget counts its own refusals"
        );
    }
}
