//! What the node shows of its group trees to operators ([`crate::Node::groups`]).

use std::time::Duration;

use super::{GroupKind, Groups};
use crate::Time;
use crate::app::{ConnId, Name};
use petal_protocol::{Key, Load, NodeId};

/// This node's part of one cluster's or topic's tree, as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's key (the hash of its name).
    pub key: Key,
    /// Cluster or topic.
    pub kind: GroupKind,
    /// The name, known when a local connection is (or was) a member; a node that only relays
    /// the tree knows the key alone.
    pub name: Option<Name>,
    /// This node is the tree's root.
    pub root: bool,
    /// Its parent in the tree.
    pub parent: Option<NodeId>,
    /// The parent is a sibling chosen after a full node dropped this one (bottleneck remover).
    pub fostered: bool,
    /// Its children in the tree.
    pub children: Vec<NodeId>,
    /// Local members: cluster connections or subscribers.
    pub members: Vec<ConnId>,
    /// The subtree's load as this node reports it to its parent.
    pub load: Load,
    /// How much longer the tree is kept even with no member and no child: a child was dropped
    /// when its node was declared dead, and would go back with a replay of what it missed if
    /// that node answered within this time. The node's return (or new start) ends its part of
    /// the hold (what is left is for other nodes still dead). `None`: not held; the tree goes when it
    /// has no member and no child.
    pub held_for: Option<Duration>,
}

impl Groups {
    /// Every tree this node is part of, by key, as of `now`.
    pub(crate) fn infos(&self, now: Time) -> Vec<GroupInfo> {
        self.trees
            .iter()
            .map(|(&key, g)| GroupInfo {
                key,
                kind: g.kind,
                name: g.name.clone(),
                root: g.root,
                parent: g.parent.map(|p| p.id),
                fostered: g.foster.is_some() && g.parent.is_some(),
                children: g.children.keys().copied().collect(),
                members: g.members.keys().copied().collect(),
                load: g.load(),
                held_for: (g.held_until > now).then(|| g.held_until - now),
            })
            .collect()
    }
}
