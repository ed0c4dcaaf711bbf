//! What the node shows of its tunnel ends to operators ([`crate::Node::tunnels`]).

use super::{TunnelState, Tunnels};
use crate::app::ConnId;
use petal_protocol::NodeId;

/// Where a tunnel end stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelPhase {
    /// Opened here; waiting for a member to accept.
    Opening,
    /// Offered to a local member; waiting for it to accept.
    Offered,
    /// Both ends known; data flows.
    Open,
    /// Closing: the local application closed, or the far end did (data still queued).
    Closing,
}

/// One tunnel end on this node, as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelInfo {
    /// The local connection holding this end.
    pub conn: ConnId,
    /// The connection's own id for the tunnel (the offer id while offered).
    pub id: u64,
    /// Where it stands.
    pub phase: TunnelPhase,
    /// The node of the far end, once known.
    pub peer: Option<NodeId>,
    /// Bytes queued to go to the far end.
    pub queued_out_bytes: u64,
    /// Bytes received and not yet taken by the local application (in order or ahead).
    pub queued_in_bytes: u64,
}

impl Tunnels {
    /// Every tunnel end, by the node's tunnel id.
    pub(crate) fn infos(&self) -> Vec<TunnelInfo> {
        self.ends
            .values()
            .map(|t| TunnelInfo {
                conn: t.conn,
                id: t.app,
                phase: match t.state {
                    _ if t.closing || t.peer_closed => TunnelPhase::Closing,
                    TunnelState::Opening => TunnelPhase::Opening,
                    TunnelState::Offered => TunnelPhase::Offered,
                    TunnelState::Open => TunnelPhase::Open,
                },
                peer: t.peer.map(|(p, _)| p.id),
                queued_out_bytes: t.outq_bytes,
                queued_in_bytes: t.inq_bytes + t.ahead_bytes,
            })
            .collect()
    }
}
