//! The application-facing commands: what a driver calls for its local connections (one per
//! relay session). Each command takes `now` like every other input and may queue transmits and
//! events; outcomes come back as [`crate::Event`]s.

use std::collections::BTreeSet;

use bytes::Bytes;
use petal_protocol::{Key, ReplyResult};

use crate::app::{AppError, ConnId, GroupKind};
use crate::node::{Node, Phase};
use crate::time::Time;

/// A local application connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct Conn {
    /// The cluster it is a member of (None: a plain client).
    pub(crate) cluster: Option<Key>,
    /// Topics it subscribes to.
    pub(crate) topics: BTreeSet<Key>,
    /// Its requests awaiting their outcome.
    pub(crate) requests: u32,
}

impl Node {
    fn running(&self) -> Result<(), AppError> {
        match self.phase {
            Phase::Ready | Phase::Joining(_) => Ok(()),
            Phase::Idle | Phase::Left => Err(AppError::NotRunning),
        }
    }

    fn conn(&self, conn: ConnId) -> Result<&Conn, AppError> {
        self.conns.get(&conn).ok_or(AppError::UnknownConn)
    }

    /// Registers a local connection: a plain client (`cluster: None`) or a member of a cluster
    /// with a relative request `capacity` (at least 1; shares of requests are proportional to
    /// it).
    pub fn register(
        &mut self,
        now: Time,
        conn: ConnId,
        cluster: Option<&str>,
        capacity: u32,
    ) -> Result<(), AppError> {
        self.running()?;
        if self.conns.contains_key(&conn) {
            return Err(AppError::DuplicateConn);
        }
        if self.conns.len() >= self.cfg.max_conns {
            return Err(AppError::Full("connections"));
        }
        let mut c = Conn::default();
        if let Some(name) = cluster {
            if name.is_empty() {
                return Err(AppError::Invalid("empty cluster name"));
            }
            self.add_member(now, GroupKind::Cluster, name, conn, capacity.max(1))?;
            c.cluster = Some(GroupKind::Cluster.key(name));
        }
        self.conns.insert(conn, c);
        self.drain_loopback(now);
        Ok(())
    }

    /// Unregisters a connection (closed or dropped): leaves its cluster and topics, forgets its
    /// pending requests (no outcome is reported for them), closes its tunnels with a reason and
    /// lets requests delivered to it expire at their requesters.
    pub fn unregister(&mut self, now: Time, conn: ConnId) -> Result<(), AppError> {
        let c = self.conns.remove(&conn).ok_or(AppError::UnknownConn)?;
        if let Some(key) = c.cluster {
            self.remove_member(now, key, conn);
        }
        for key in c.topics {
            self.remove_member(now, key, conn);
        }
        let before = self.requests.len();
        self.requests.retain(|_, r| r.conn != conn);
        self.stats.requests_abandoned += (before - self.requests.len()) as u64;
        let before = self.deliveries.len();
        self.deliveries.retain(|_, d| d.conn != conn);
        self.stats.deliveries_abandoned += (before - self.deliveries.len()) as u64;
        let tunnels: Vec<u64> = self
            .tunnels
            .iter()
            .filter(|(_, t)| t.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in tunnels {
            self.fail_tunnel(now, id, "petal: the far connection closed");
        }
        // The closed connection hears nothing more.
        self.drain_loopback(now);
        self.drop_events_of(conn);
        Ok(())
    }

    /// Subscribes `conn` to topic `topic`. Returns false (and counts it) when it already was.
    pub fn subscribe(&mut self, now: Time, conn: ConnId, topic: &str) -> Result<bool, AppError> {
        self.running()?;
        self.conn(conn)?;
        if topic.is_empty() {
            return Err(AppError::Invalid("empty topic name"));
        }
        let key = GroupKind::Topic.key(topic);
        let added = self.add_member(now, GroupKind::Topic, topic, conn, 0)?;
        if added {
            self.conns
                .get_mut(&conn)
                .expect("checked")
                .topics
                .insert(key);
        } else {
            self.stats.duplicate_subscribes += 1;
        }
        self.drain_loopback(now);
        Ok(added)
    }

    /// Unsubscribes `conn` from `topic`. Returns false (and counts it) when it was not
    /// subscribed.
    pub fn unsubscribe(&mut self, now: Time, conn: ConnId, topic: &str) -> Result<bool, AppError> {
        let key = GroupKind::Topic.key(topic);
        let removed = self
            .conns
            .get_mut(&conn)
            .ok_or(AppError::UnknownConn)?
            .topics
            .remove(&key);
        if removed {
            self.remove_member(now, key, conn);
        } else {
            self.stats.bogus_unsubscribes += 1;
        }
        Ok(removed)
    }

    /// Publishes an event to every subscriber of `topic` (best effort; the publisher too if
    /// subscribed).
    pub fn publish(&mut self, now: Time, topic: &str, payload: Bytes) -> Result<(), AppError> {
        self.running()?;
        self.publish_to(now, GroupKind::Topic.key(topic), payload)?;
        self.drain_loopback(now);
        Ok(())
    }

    /// Broadcasts a message to every member of `cluster` (best effort; the sender too if a
    /// member).
    pub fn broadcast(&mut self, now: Time, cluster: &str, payload: Bytes) -> Result<(), AppError> {
        self.running()?;
        self.publish_to(now, GroupKind::Cluster.key(cluster), payload)?;
        self.drain_loopback(now);
        Ok(())
    }

    /// Sends a request from `conn` to one member of `cluster`. Its one outcome comes as
    /// [`crate::Event::RequestDone`] with the returned id: a reply, a fault, or a timeout after
    /// `timeout_ms`.
    pub fn request(
        &mut self,
        now: Time,
        conn: ConnId,
        cluster: &str,
        payload: Bytes,
        timeout_ms: u32,
    ) -> Result<u64, AppError> {
        self.running()?;
        if self.conn(conn)?.requests >= self.cfg.max_conn_requests {
            self.stats.request_drops += 1;
            return Err(AppError::Full("pending requests of this connection"));
        }
        let id = self.start_request(
            now,
            conn,
            GroupKind::Cluster.key(cluster),
            payload,
            timeout_ms,
        )?;
        self.drain_loopback(now);
        Ok(id)
    }

    /// Answers request delivery `delivery` (from [`crate::Event::Request`]) with a reply or a fault.
    /// An expired or unknown delivery is an error: the requester has had its timeout.
    pub fn reply(&mut self, now: Time, delivery: u64, result: ReplyResult) -> Result<(), AppError> {
        let r = self.answer(now, delivery, result);
        self.drain_loopback(now);
        r
    }

    /// Opens a tunnel from `conn` to one member of `cluster`; the outcome comes as
    /// [`crate::Event::TunnelOpened`] or [`crate::Event::TunnelOpenFailed`] with the returned id.
    pub fn tunnel_open(
        &mut self,
        now: Time,
        conn: ConnId,
        cluster: &str,
        timeout_ms: u32,
    ) -> Result<u64, AppError> {
        self.running()?;
        self.conn(conn)?;
        let open = self.tunnels.values().filter(|t| t.conn == conn).count();
        if open >= self.cfg.max_conn_tunnels {
            self.stats.tunnel_drops += 1;
            return Err(AppError::Full("tunnels of this connection"));
        }
        let id = self.start_tunnel(now, conn, GroupKind::Cluster.key(cluster), timeout_ms)?;
        self.drain_loopback(now);
        Ok(id)
    }

    /// Accepts an offered tunnel (from [`crate::Event::TunnelIncoming`]).
    pub fn tunnel_accept(&mut self, now: Time, tunnel: u64) -> Result<(), AppError> {
        let r = self.accept_tunnel(now, tunnel);
        self.drain_loopback(now);
        r
    }

    /// Sends a chunk on an open tunnel: `size` is the message's whole length on its first
    /// chunk, 0 on continuation chunks. The chunk must fit the chunk limit and the credit the
    /// node granted ([`crate::Event::TunnelCredit`]).
    pub fn tunnel_send(
        &mut self,
        now: Time,
        tunnel: u64,
        size: u64,
        chunk: Bytes,
    ) -> Result<(), AppError> {
        let r = self.send_chunk(now, tunnel, size, chunk);
        self.drain_loopback(now);
        r
    }

    /// Grants the node `bytes` more of credit to hand chunks of `tunnel` to the application.
    pub fn tunnel_allow(&mut self, now: Time, tunnel: u64, bytes: u64) -> Result<(), AppError> {
        let r = self.grant(now, tunnel, bytes);
        self.drain_loopback(now);
        r
    }

    /// Closes a tunnel gracefully: queued chunks go first; [`crate::Event::TunnelClosed`] with an
    /// empty reason confirms it.
    pub fn tunnel_close(&mut self, now: Time, tunnel: u64) -> Result<(), AppError> {
        let r = self.close_tunnel(now, tunnel);
        self.drain_loopback(now);
        r
    }

    /// Forwarded messages waiting for their next hop's acknowledgement (bounded by
    /// `max_pending_hops`; a driver can push back on its applications as it fills).
    pub fn pending_hops(&self) -> usize {
        self.hops.len()
    }

    /// Local connections registered.
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Group trees this node is part of (as member, forwarder or root).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// This node's view of group `key`: (is root, parent, children, local members).
    pub fn group_view(&self, key: Key) -> Option<GroupView> {
        self.groups.get(&key).map(|g| GroupView {
            root: g.root,
            parent: g.parent.map(|p| p.id),
            children: g.children.keys().copied().collect(),
            members: g.members.len(),
            load: g.load(),
        })
    }

    /// Requests issued here and not yet decided.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Tunnel ends on this node.
    pub fn tunnel_count(&self) -> usize {
        self.tunnels.len()
    }

    pub(crate) fn check_local_invariants(&self) {
        assert!(
            self.conns.len() <= self.cfg.max_conns,
            "connections over bound"
        );
        for (id, c) in &self.conns {
            for key in c.cluster.iter().chain(c.topics.iter()) {
                assert!(
                    self.groups
                        .get(key)
                        .is_some_and(|g| g.members.contains_key(id)),
                    "connection {id:?} missing from its group"
                );
            }
        }
        for g in self.groups.values() {
            for conn in g.members.keys() {
                assert!(
                    self.conns.contains_key(conn),
                    "member {conn:?} not registered"
                );
            }
        }
        for r in self.requests.values() {
            assert!(
                self.conns.contains_key(&r.conn),
                "request of a gone connection"
            );
        }
        for (id, c) in &self.conns {
            let n = self.requests.values().filter(|r| r.conn == *id).count();
            assert_eq!(c.requests as usize, n, "pending requests miscounted");
            assert!(
                c.requests <= self.cfg.max_conn_requests,
                "connection over its request bound"
            );
        }
        for t in self.tunnels.values() {
            assert!(
                self.conns.contains_key(&t.conn),
                "tunnel of a gone connection"
            );
        }
    }
}

/// A snapshot of this node's part of a group tree (for tests, tools and the simulator's
/// oracles).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupView {
    /// This node is the tree's root.
    pub root: bool,
    /// Its parent in the tree.
    pub parent: Option<petal_protocol::NodeId>,
    /// Its children.
    pub children: Vec<petal_protocol::NodeId>,
    /// Local members (cluster connections or subscribers).
    pub members: usize,
    /// The subtree's load as this node would report it.
    pub load: petal_protocol::Load,
}
