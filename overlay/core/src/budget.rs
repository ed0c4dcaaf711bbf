//! The node-wide memory budget: one bound on the bytes that peers and local applications can
//! make a node hold, with a share per peer and per connection so that none of them can take it
//! all.
//!
//! What counts: every buffer a peer or an application can grow by sending. In the core, the
//! routed messages kept until their next hop acknowledges them, asks parked at a cluster's
//! root, group events held past a gap or kept for replays, and tunnel chunks on their way in
//! (until the application takes them) and out (until the far window opens). A driver adds its
//! own queues (a node's peer-link and session queues) to the same [`MemoryBudget`], shared
//! through [`crate::Node::set_memory_budget`].
//!
//! Who pays: a charge made while the node handles a peer's message is that peer's; a request's
//! first hop is its connection's; tunnel chunks are always their local connection's; a retry
//! (a rerouted hop, a parked ask placed later) stays with its first payer. Each is held to
//! [`crate::Config::memory_share`]. Publishes and broadcasts of local applications, timers'
//! work and group events kept for replays are the node's alone (replays are a cache: when the
//! budget is short they are not kept).
//!
//! A refusal is never a crash: the routed message, parked ask or held event is dropped (and its
//! requester answered by its timeout or a fault), the tunnel fails with a reason at both ends,
//! a request is refused. Each is counted in [`crate::Stats::memory_refused`].

use std::sync::atomic::{AtomicU64, Ordering};

use petal_protocol::NodeId;

use crate::app::{AppError, ConnId};
use crate::node::Node;

/// What a command refused by the memory budget is told.
pub(crate) const BUDGET_FULL: &str = "node memory budget (or this connection's share of it)";

/// A node-wide byte budget that a core and its driver's tasks charge together. Thread-safe:
/// a driver's writer tasks give back what they wrote.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
    refused: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes `n` bytes if they fit under the limit; counts a refusal if not.
    pub fn try_take(&self, n: u64) -> bool {
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok();
        if !fits {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        fits
    }

    /// Takes `n` bytes whatever the limit (bytes that are already in memory and must be
    /// counted, such as input a driver read before it could refuse it).
    pub fn take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives back `n` bytes taken before.
    pub fn give(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Charges refused so far (the core's and the driver's).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Bytes held by owner. The ids' fixed hasher (see [`crate::id_map::IdHasher`]): runs stay
/// reproducible, and a charge or a give-back, which come with every routed message, do not pay
/// for SipHash (a peer's key is its random id; a connection's, a number its driver chose).
type OwnerMap =
    hashbrown::HashMap<Owner, u64, std::hash::BuildHasherDefault<crate::id_map::IdHasher>>;

/// Who a charge belongs to (see the module's text): the node itself, a peer or a local
/// connection, in 16 bytes (two words, no tag: `Held` sits in every simulated node). A peer
/// whose id has its top 63 bits set shares its key with the node or a connection; that only
/// merges their shares, every total stays exact.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Owner {
    hi: u64,
    lo: u64,
}

impl Owner {
    /// Charges of no peer or connection (a timer's work, local publishes, replay caches).
    pub(crate) const NODE: Owner = Owner {
        hi: u64::MAX,
        lo: u64::MAX,
    };
    /// The top word of a connection's key.
    const CONN: u64 = u64::MAX - 1;

    /// Peer `id`'s charges.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the id's two halves are split on purpose"
    )]
    pub(crate) fn peer(id: NodeId) -> Owner {
        let v = id.get();
        Owner {
            hi: (v >> 64) as u64,
            lo: v as u64,
        }
    }

    /// Local connection `c`'s charges.
    pub(crate) fn conn(c: ConnId) -> Owner {
        Owner {
            hi: Self::CONN,
            lo: c.0,
        }
    }
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.hi, self.lo) {
            (u64::MAX, u64::MAX) => f.write_str("Node"),
            (Self::CONN, c) => write!(f, "Conn({c})"),
            (hi, lo) => write!(f, "Peer({:032x})", (u128::from(hi) << 64) | u128::from(lo)),
        }
    }
}

/// What the core holds of the budget, in all and by owner. The budget itself is the node's own
/// unless a driver shares one. 32 bytes: it sits in every simulated node.
#[derive(Debug)]
pub(crate) struct Held {
    /// Bytes the core holds (every owner).
    total: u64,
    /// Bytes by peer or connection, and a budget shared with a driver; boxed while either is
    /// in use, so that a simulated node that holds nothing for anyone pays one pointer.
    extra: Option<Box<Extra>>,
    /// Who pays for what the node does now (set for the length of one input; `Owner::NODE`
    /// otherwise).
    pub(crate) cause: Owner,
}

impl Default for Held {
    fn default() -> Self {
        Self {
            total: 0,
            extra: None,
            cause: Owner::NODE,
        }
    }
}

/// The parts of [`Held`] most nodes of a simulation never use.
#[derive(Debug, Default)]
struct Extra {
    /// Bytes by peer or connection (none for `Owner::NODE`, no zero entry).
    by_owner: OwnerMap,
    /// A budget shared with a driver (`None`: the core's own, `Config::memory_budget`).
    shared: Option<std::sync::Arc<MemoryBudget>>,
}

impl Held {
    /// Heap bytes of the by-owner table.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.extra.as_ref().map_or(0, |e| {
            std::mem::size_of::<Extra>() + crate::memory::hash_bytes(&e.by_owner)
        })
    }

    /// Bytes held for `owner`.
    pub(crate) fn of(&self, owner: Owner) -> u64 {
        self.extra
            .as_ref()
            .and_then(|e| e.by_owner.get(&owner).copied())
            .unwrap_or(0)
    }

    fn shared(&self) -> Option<&MemoryBudget> {
        self.extra.as_ref().and_then(|e| e.shared.as_deref())
    }
}

impl Node {
    /// Shares `budget` with a driver: the driver's queues and this core are held to it together
    /// (its limit replaces `Config::memory_budget`). Call before the node holds anything.
    pub fn set_memory_budget(&mut self, budget: std::sync::Arc<MemoryBudget>) {
        debug_assert_eq!(
            self.held.total, 0,
            "a budget is shared before anything is held"
        );
        self.held.extra.get_or_insert_with(Box::default).shared = Some(budget);
    }

    /// Bytes this core holds against the memory budget (see [`MemoryBudget`]).
    pub fn memory_held(&self) -> u64 {
        self.held.total
    }

    /// Who pays for what the current input makes the node hold.
    pub(crate) fn cause(&self) -> Owner {
        self.held.cause
    }

    /// Runs `f` with `owner` as the cause: a retry of something `owner` made the node hold (a
    /// rerouted hop, a parked ask placed) stays `owner`'s, whatever input triggered it.
    pub(crate) fn as_cause<R>(&mut self, owner: Owner, f: impl FnOnce(&mut Self) -> R) -> R {
        let prev = std::mem::replace(&mut self.held.cause, owner);
        let r = f(self);
        self.held.cause = prev;
        r
    }

    /// True when `n` more bytes charged to `owner` would fit its share and the budget (a check
    /// before a command's work starts, so that the application hears of a refusal at once).
    pub(crate) fn fits(&self, owner: Owner, n: u64) -> bool {
        let fits_share =
            owner == Owner::NODE || self.held.of(owner).saturating_add(n) <= self.cfg.memory_share;
        fits_share
            && match self.held.shared() {
                Some(b) => b.used().saturating_add(n) <= b.limit(),
                None => self.held.total.saturating_add(n) <= self.cfg.memory_budget,
            }
    }

    /// Refuses a command whose message would not fit (see [`Node::fits`]), counted.
    pub(crate) fn refuse_unless_fits(&mut self, owner: Owner, n: u64) -> Result<(), AppError> {
        if self.fits(owner, n) {
            return Ok(());
        }
        self.stats.memory_refused += 1;
        Err(AppError::Full(BUDGET_FULL))
    }

    /// Charges `n` bytes to `owner`: false (and counted) when that would take the owner past
    /// its share or the node past its budget.
    pub(crate) fn hold(&mut self, owner: Owner, n: u64) -> bool {
        let held = self.try_hold(owner, n);
        if !held {
            self.stats.memory_refused += 1;
        }
        held
    }

    /// [`Node::hold`] without counting a refusal (the caller counts).
    pub(crate) fn try_hold(&mut self, owner: Owner, n: u64) -> bool {
        let share = self.cfg.memory_share;
        let mine = self.held.of(owner);
        let fits_share = owner == Owner::NODE || mine.saturating_add(n) <= share;
        let fits = fits_share
            && match self.held.shared() {
                Some(b) => b.try_take(n),
                None => self.held.total.saturating_add(n) <= self.cfg.memory_budget,
            };
        if !fits {
            return false;
        }
        self.held.total += n;
        if owner != Owner::NODE && n > 0 {
            *self
                .held
                .extra
                .get_or_insert_with(Box::default)
                .by_owner
                .entry(owner)
                .or_insert(0) += n;
        }
        true
    }

    /// Gives back `n` bytes charged to `owner` before.
    pub(crate) fn unhold(&mut self, owner: Owner, n: u64) {
        debug_assert!(self.held.total >= n, "gave back more than was held");
        self.held.total = self.held.total.saturating_sub(n);
        let Some(e) = self.held.extra.as_mut() else {
            return;
        };
        if let Some(b) = &e.shared {
            b.give(n);
        }
        if owner != Owner::NODE
            && n > 0
            && let Some(v) = e.by_owner.get_mut(&owner)
        {
            debug_assert!(*v >= n, "gave back more than {owner:?} held");
            *v = v.saturating_sub(n);
            if *v == 0 {
                e.by_owner.remove(&owner);
                if e.by_owner.is_empty() && e.shared.is_none() {
                    self.held.extra = None;
                }
            }
        }
    }
}

impl Node {
    /// Checks that what the core is charged, in all and by owner, is what its buffers hold.
    pub(crate) fn check_budget_invariants(&self) {
        let mut want: std::collections::BTreeMap<Owner, u64> = std::collections::BTreeMap::new();
        let mut total = 0;
        let mut add = |owner: Owner, n: u64| {
            total += n;
            if owner != Owner::NODE && n > 0 {
                *want.entry(owner).or_default() += n;
            }
        };
        let hops = self.hop_costs();
        let parked = self.asks.parked_costs();
        for (owner, n) in hops.into_iter().chain(parked).chain(self.tunnels.charges()) {
            add(owner, n);
        }
        add(Owner::NODE, self.groups.charged());
        assert_eq!(self.held.total, total, "memory held in all");
        let by: std::collections::BTreeMap<Owner, u64> = self
            .held
            .extra
            .iter()
            .flat_map(|e| e.by_owner.iter())
            .map(|(o, n)| (*o, *n))
            .collect();
        assert_eq!(by, want, "memory held by owner");
        assert_eq!(
            self.held.cause,
            Owner::NODE,
            "a cause left set after its input"
        );
    }
}
