//! The Pastry routing table: row `r` holds nodes that share the first `r` digits with this node
//! and differ at digit `r`; column `c` is that differing digit. Rows are allocated lazily (a
//! network of `N` nodes fills about `log16 N` of the 32).

use petal_protocol::id::{BASE, DIGITS};
use petal_protocol::{Key, NodeId};

/// Routing table of one node: up to 32 rows x 16 columns of node ids.
///
/// An empty slot holds the node's own id, which never belongs in its own table: a row is 16
/// ids (256 bytes), not 16 options of one (384).
#[derive(Clone, Debug)]
pub struct RoutingTable {
    me: NodeId,
    rows: Vec<[NodeId; BASE]>,
    len: usize,
}

/// Where an id belongs in a routing table: `(row, column)`.
pub type Slot = (usize, usize);

impl RoutingTable {
    /// An empty table for node `me`.
    pub fn new(me: NodeId) -> Self {
        Self {
            me,
            rows: Vec::new(),
            len: 0,
        }
    }

    /// The slot `id` belongs in, or `None` for this node's own id.
    pub fn slot_of(&self, id: NodeId) -> Option<Slot> {
        let row = self.me.shared_prefix_len(id.as_key());
        (row < DIGITS).then(|| (row, usize::from(id.digit(row))))
    }

    /// Heap bytes reserved for the rows.
    pub fn heap_bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<[NodeId; BASE]>()
    }

    /// Prefetches `id`'s slot (a hint: nothing changes).
    pub(crate) fn prefetch(&self, id: NodeId) {
        if let Some((row, col)) = self.slot_of(id) {
            if let Some(r) = self.rows.get(row) {
                prefetch_index::prefetch_index(r, col);
            }
        }
    }

    /// The entry at `slot`.
    pub fn get(&self, (row, col): Slot) -> Option<NodeId> {
        self.rows.get(row).map(|r| r[col]).filter(|&e| e != self.me)
    }

    /// The entry a message for `key` should take next (`R[l][key_l]`), if any.
    pub fn next_for(&self, key: Key) -> Option<NodeId> {
        let row = self.me.shared_prefix_len(key);
        if row >= DIGITS {
            return None;
        }
        self.get((row, usize::from(key.digit(row))))
    }

    /// Puts `id` in its slot, replacing any incumbent (returned).
    pub fn set(&mut self, id: NodeId) -> Option<NodeId> {
        let (row, col) = self.slot_of(id)?;
        if self.rows.len() <= row {
            // Exactly the rows needed: a table grows a row at a time and rarely past five.
            self.rows.reserve_exact(row + 1 - self.rows.len());
            self.rows.resize(row + 1, [self.me; BASE]);
        }
        let old = std::mem::replace(&mut self.rows[row][col], id);
        if old == self.me {
            self.len += 1;
            return None;
        }
        (old != id).then_some(old)
    }

    /// Removes `id` if it is in its slot; returns true when it was.
    pub fn remove(&mut self, id: NodeId) -> bool {
        let Some((row, col)) = self.slot_of(id) else {
            return false;
        };
        match self.rows.get_mut(row) {
            Some(r) if r[col] == id => {
                r[col] = self.me;
                self.len -= 1;
                true
            }
            _ => false,
        }
    }

    /// True when `id` is in the table.
    pub fn contains(&self, id: NodeId) -> bool {
        self.slot_of(id).is_some_and(|s| self.get(s) == Some(id))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows allocated so far (an upper bound on the rows in use).
    pub fn rows_allocated(&self) -> usize {
        self.rows.len()
    }

    /// Rows up to the deepest one that holds an entry (0 for an empty table).
    pub fn depth(&self) -> usize {
        let me = self.me;
        self.rows
            .iter()
            .rposition(|r| r.iter().any(|&e| e != me))
            .map_or(0, |r| r + 1)
    }

    /// The entries of `row`.
    pub fn row(&self, row: usize) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.me;
        self.rows
            .get(row)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |&e| e != me)
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.me;
        self.rows
            .iter()
            .flatten()
            .copied()
            .filter(move |&e| e != me)
    }

    /// Asserts that every entry sits in the slot its id dictates and that the count is right.
    pub fn check_invariants(&self) {
        let mut n = 0;
        for (r, row) in self.rows.iter().enumerate() {
            for (c, &id) in row.iter().enumerate() {
                if id != self.me {
                    assert_eq!(
                        self.slot_of(id),
                        Some((r, c)),
                        "entry {id:?} in the wrong slot"
                    );
                    n += 1;
                }
            }
        }
        assert_eq!(n, self.len, "routing table count drifted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_by_prefix_and_digit() {
        let me = NodeId(0x1234 << 112);
        let mut t = RoutingTable::new(me);
        assert_eq!(t.slot_of(NodeId(0x5000 << 112)), Some((0, 5)));
        assert_eq!(t.slot_of(NodeId(0x12f0 << 112)), Some((2, 0xf)));
        assert_eq!(t.slot_of(me), None);
        assert_eq!(t.set(NodeId(0x5000 << 112)), None);
        assert_eq!(t.set(NodeId(0x5100 << 112)), Some(NodeId(0x5000 << 112)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.next_for(Key(0x5fff << 112)), Some(NodeId(0x5100 << 112)));
        assert!(t.remove(NodeId(0x5100 << 112)));
        assert!(t.is_empty());
        t.check_invariants();
    }
}
