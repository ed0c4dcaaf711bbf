//! The application-facing commands: what a driver calls for its local connections (one per
//! relay session). Each command takes `now` like every other input and may queue transmits and
//! events; outcomes come back as [`crate::Event`]s.

use std::collections::{BTreeMap, BTreeSet};

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
    /// Its requests awaiting their outcome: its own id -> the node's.
    pub(crate) requests: BTreeMap<u64, u64>,
    /// Its tunnels (opening, open, closing; not offers): its own id -> the node's.
    pub(crate) tunnels: BTreeMap<u64, u64>,
}

/// What a connection has under way (see [`Node::pending`]): what a driver must still answer
/// when the connection closes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pending {
    /// Its requests awaiting their outcome, by its ids, ascending.
    pub requests: Vec<u64>,
    /// Its tunnels still opening (not yet accepted), by its ids, ascending.
    pub opening: Vec<u64>,
    /// Its other tunnels (open or closing), by its ids, ascending.
    pub tunnels: Vec<u64>,
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
            if let Some(c) = self.conns.get_mut(&conn) {
                c.topics.insert(key);
            }
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

    /// Sends a request from `conn` to one member of `cluster`, under the connection's own id
    /// `id` (unique among its pending requests). Its one outcome comes as
    /// [`crate::Event::RequestDone`] with that id: a reply, a fault, or a timeout after
    /// `timeout_ms`.
    pub fn request(
        &mut self,
        now: Time,
        conn: ConnId,
        id: u64,
        cluster: &str,
        payload: Bytes,
        timeout_ms: u32,
    ) -> Result<(), AppError> {
        self.running()?;
        let c = self.conn(conn)?;
        if c.requests.contains_key(&id) {
            return Err(AppError::Invalid("request id in use on this connection"));
        }
        if c.requests.len() >= self.cfg.max_conn_requests as usize {
            self.stats.request_drops += 1;
            return Err(AppError::Full("pending requests of this connection"));
        }
        self.start_request(
            now,
            conn,
            id,
            GroupKind::Cluster.key(cluster),
            payload,
            timeout_ms,
        )?;
        self.drain_loopback(now);
        Ok(())
    }

    /// Answers request delivery `delivery` (from [`crate::Event::Request`] to `conn`) with a
    /// reply or a fault. An expired or unknown delivery, or one made to another connection, is
    /// an error: the requester has had its timeout, or it was never this connection's to
    /// answer.
    pub fn reply(
        &mut self,
        now: Time,
        conn: ConnId,
        delivery: u64,
        result: ReplyResult,
    ) -> Result<(), AppError> {
        let r = self.answer(now, conn, delivery, result);
        self.drain_loopback(now);
        r
    }

    /// Opens a tunnel from `conn` to one member of `cluster`, under the connection's own id
    /// `id` (unique among its tunnels); the outcome comes as [`crate::Event::TunnelOpened`] or
    /// [`crate::Event::TunnelOpenFailed`] with that id.
    pub fn tunnel_open(
        &mut self,
        now: Time,
        conn: ConnId,
        id: u64,
        cluster: &str,
        timeout_ms: u32,
    ) -> Result<(), AppError> {
        self.running()?;
        let c = self.conn(conn)?;
        if c.tunnels.contains_key(&id) {
            return Err(AppError::Invalid("tunnel id in use on this connection"));
        }
        if c.tunnels.len() >= self.cfg.max_conn_tunnels {
            self.stats.tunnel_drops += 1;
            return Err(AppError::Full("tunnels of this connection"));
        }
        self.start_tunnel(now, conn, id, GroupKind::Cluster.key(cluster), timeout_ms)?;
        self.drain_loopback(now);
        Ok(())
    }

    /// `conn` accepts the tunnel it was offered (from [`crate::Event::TunnelIncoming`]) and
    /// names it `id` from now on. An `id` that names one of its tunnels already is refused, and
    /// so is the offer (its opener hears at once).
    pub fn tunnel_accept(
        &mut self,
        now: Time,
        conn: ConnId,
        offer: u64,
        id: u64,
    ) -> Result<(), AppError> {
        if self.conn(conn)?.tunnels.contains_key(&id) {
            let offered = self
                .tunnels
                .get(&offer)
                .is_some_and(|t| t.conn == conn && t.state == crate::tunnel::TunnelState::Offered);
            if offered {
                self.close_tunnel(now, offer)?;
            }
            self.drain_loopback(now);
            return Err(AppError::Invalid("tunnel id in use on this connection"));
        }
        let r = self.accept_tunnel(now, conn, offer, id);
        self.drain_loopback(now);
        r
    }

    /// `conn` refuses the tunnel it was offered: its opener hears at once;
    /// [`crate::Event::TunnelOfferClosed`] confirms it.
    pub fn tunnel_refuse(&mut self, now: Time, conn: ConnId, offer: u64) -> Result<(), AppError> {
        let offered = self
            .tunnels
            .get(&offer)
            .is_some_and(|t| t.conn == conn && t.state == crate::tunnel::TunnelState::Offered);
        if !offered {
            return Err(AppError::UnknownId);
        }
        let r = self.close_tunnel(now, offer);
        self.drain_loopback(now);
        r
    }

    /// Sends a chunk on open tunnel `id` of `conn`: `size` is the message's whole length on its
    /// first chunk, 0 on continuation chunks. The chunk must fit the chunk limit and the credit
    /// the node granted ([`crate::Event::TunnelCredit`]).
    pub fn tunnel_send(
        &mut self,
        now: Time,
        conn: ConnId,
        id: u64,
        size: u64,
        chunk: Bytes,
    ) -> Result<(), AppError> {
        let tunnel = self.tunnel_of(conn, id)?;
        let r = self.send_chunk(now, tunnel, size, chunk);
        self.drain_loopback(now);
        r
    }

    /// Grants the node `bytes` more of credit to hand chunks of tunnel `id` to `conn`.
    pub fn tunnel_allow(
        &mut self,
        now: Time,
        conn: ConnId,
        id: u64,
        bytes: u64,
    ) -> Result<(), AppError> {
        let tunnel = self.tunnel_of(conn, id)?;
        let r = self.grant(now, tunnel, bytes);
        self.drain_loopback(now);
        r
    }

    /// Closes tunnel `id` of `conn` gracefully: queued chunks go first;
    /// [`crate::Event::TunnelClosed`] with an empty reason confirms it. A tunnel still opening
    /// is given up ([`crate::Event::TunnelOpenFailed`]).
    pub fn tunnel_close(&mut self, now: Time, conn: ConnId, id: u64) -> Result<(), AppError> {
        let tunnel = self.tunnel_of(conn, id)?;
        let r = self.close_tunnel(now, tunnel);
        self.drain_loopback(now);
        r
    }

    /// What `conn` has under way: its pending requests and tunnels, by its own ids (what a
    /// driver answers for when the connection closes gracefully). `None` for an unknown
    /// connection.
    pub fn pending(&self, conn: ConnId) -> Option<Pending> {
        let c = self.conns.get(&conn)?;
        let mut p = Pending {
            requests: c.requests.keys().copied().collect(),
            ..Pending::default()
        };
        for (&app, id) in &c.tunnels {
            let opening = self
                .tunnels
                .get(id)
                .is_some_and(|t| t.state == crate::tunnel::TunnelState::Opening);
            if opening {
                p.opening.push(app);
            } else {
                p.tunnels.push(app);
            }
        }
        Some(p)
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
            assert_eq!(c.requests.len(), n, "pending requests miscounted");
            for (app, wire) in &c.requests {
                assert!(
                    self.requests
                        .get(wire)
                        .is_some_and(|r| r.conn == *id && r.app == *app),
                    "request index names another request"
                );
            }
            assert!(
                c.requests.len() <= self.cfg.max_conn_requests as usize,
                "connection over its request bound"
            );
            for (app, t) in &c.tunnels {
                assert!(
                    self.tunnels
                        .get(t)
                        .is_some_and(|x| x.conn == *id && x.app == *app),
                    "tunnel index names another tunnel"
                );
            }
        }
        for (id, t) in &self.tunnels {
            assert!(
                self.conns.contains_key(&t.conn),
                "tunnel of a gone connection"
            );
            if t.state != crate::tunnel::TunnelState::Offered {
                assert_eq!(
                    self.conns[&t.conn].tunnels.get(&t.app),
                    Some(id),
                    "tunnel missing from its connection's index"
                );
            }
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
