//! The node task's side of the admin API: an [`Inspection`] built from its own tables.

use std::time::Duration;

use petal_core::NodeId;

use super::Driver;
use super::links::LinkState;
use crate::LinkSecurity;
use crate::inspect::{Inspection, LinkInfo, PeerEntry, QueueDepths, RouteEntry};
use crate::net::Net;

impl<N: Net> Driver<N> {
    fn peer_entry(&self, id: NodeId) -> PeerEntry {
        PeerEntry {
            id,
            addr: self.node.peer_addr(id),
            rtt: self
                .node
                .rtt_us(id)
                .map(|us| Duration::from_micros(u64::from(us))),
        }
    }

    /// Everything the admin API shows, copied out of the node's tables.
    pub(super) fn inspect(&self) -> Inspection {
        let me = self.node.id();
        let links: Vec<LinkInfo> = self
            .links
            .iter()
            .map(|(&peer, state)| {
                let entry = self.peer_entry(peer);
                let mut info = LinkInfo {
                    peer,
                    addr: entry.addr,
                    up: false,
                    dialed_by_us: false,
                    age: Duration::ZERO,
                    rtt: entry.rtt,
                    queued_bytes: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    messages_in: 0,
                    messages_out: 0,
                };
                match state {
                    LinkState::Dialing { share, .. } => {
                        info.queued_bytes = share.held();
                        info.dialed_by_us = true;
                    }
                    LinkState::Up {
                        dialer, share, out, ..
                    } => {
                        let traffic = &out.traffic;
                        let load = |c: &std::sync::atomic::AtomicU64| {
                            c.load(std::sync::atomic::Ordering::Relaxed)
                        };
                        info.up = true;
                        info.dialed_by_us = *dialer == me;
                        info.age = traffic.since.elapsed();
                        info.queued_bytes = share.held();
                        info.bytes_in = load(&traffic.bytes_in);
                        info.bytes_out = load(&traffic.bytes_out);
                        info.messages_in = load(&traffic.messages_in);
                        info.messages_out = load(&traffic.messages_out);
                    }
                }
                info
            })
            .collect();
        let leaf = self.node.leaf_set();
        let rt = self.node.routing_table();
        let routes = rt
            .entries()
            .filter_map(|id| {
                let (row, column) = rt.slot_of(id)?;
                Some(RouteEntry {
                    row: u8::try_from(row).ok()?,
                    column: u8::try_from(column).ok()?,
                    peer: self.peer_entry(id),
                })
            })
            .collect();
        let queues = QueueDepths {
            node_inputs: self.inputs.max_capacity() - self.inputs.capacity(),
            app_inputs: self.app_queue,
            link_bytes: links.iter().map(|l| l.queued_bytes).sum(),
            session_bytes: self.sessions.queued_bytes(),
        };
        Inspection {
            id: me,
            peer_addr: self.node.info().addr,
            relay_addrs: self.relay_addrs.clone(),
            uptime: self.start.elapsed(),
            encrypted: matches!(self.opts.security, LinkSecurity::Noise(_)),
            identity_registry: self
                .opts
                .registry
                .as_ref()
                .map_or_else(|| "overlay".to_string(), |r| r.describe()),
            store: self.node.store_size(),
            discovery: self
                .discovery
                .lock()
                .map_or(crate::inspect::DiscoveryStatus::Off, |d| d.clone()),
            joining: self.node.is_joining(),
            stats: self.snapshot(),
            links,
            leaf_left: leaf.left().iter().map(|&id| self.peer_entry(id)).collect(),
            leaf_right: leaf.right().iter().map(|&id| self.peer_entry(id)).collect(),
            routes,
            groups: self.node.groups(self.now()),
            tunnels: self.node.tunnels(),
            sessions: self.sessions.infos(),
            request_durations: self.sessions.durations.clone(),
            queues,
        }
    }
}
