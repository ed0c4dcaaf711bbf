//! The application-facing commands: what a driver calls for its local connections (one per
//! relay session). Each command takes `now` like every other input and may queue transmits and
//! events; outcomes come back as [`crate::Event`]s.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use petal_protocol::{Key, ReplyResult};

use crate::app::{AppError, ConnId, GroupKind};
use crate::node::Node;
use crate::time::Time;

/// A local application connection: the groups it is in. (Its requests are the `ask`
/// module's, its tunnels the `tunnel` module's, each indexed by connection there.)
#[derive(Clone, Debug, Default)]
struct Conn {
    /// The cluster it is a member of (None: a plain client).
    cluster: Option<Key>,
    /// Topics it subscribes to.
    topics: BTreeSet<Key>,
}

/// The local application connections, by id. Private to this module.
#[derive(Debug, Default)]
pub(crate) struct Locals {
    conns: BTreeMap<ConnId, Conn>,
}

impl Locals {
    /// Heap bytes of the connection table (not what each connection holds).
    pub(crate) fn heap_bytes(&self) -> usize {
        crate::memory::btree_bytes(&self.conns)
    }

    /// True when `conn` is registered.
    pub(crate) fn contains(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }
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
    pub(crate) fn running(&self) -> Result<(), AppError> {
        if self.is_running() {
            Ok(())
        } else {
            Err(AppError::NotRunning)
        }
    }

    fn conn(&self, conn: ConnId) -> Result<&Conn, AppError> {
        self.locals.conns.get(&conn).ok_or(AppError::UnknownConn)
    }

    /// The node's id of tunnel `app` of connection `conn`.
    fn tunnel_of(&self, conn: ConnId, app: u64) -> Result<u64, AppError> {
        self.conn(conn)?;
        self.tunnels.id_of(conn, app)
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
        if self.locals.conns.contains_key(&conn) {
            return Err(AppError::DuplicateConn);
        }
        if self.locals.conns.len() >= self.cfg.max_conns {
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
        self.locals.conns.insert(conn, c);
        self.drain_loopback(now);
        Ok(())
    }

    /// Unregisters a connection (closed or dropped): leaves its cluster and topics, forgets its
    /// pending requests (no outcome is reported for them), closes its tunnels with a reason and
    /// lets requests delivered to it expire at their requesters.
    pub fn unregister(&mut self, now: Time, conn: ConnId) -> Result<(), AppError> {
        let c = self
            .locals
            .conns
            .remove(&conn)
            .ok_or(AppError::UnknownConn)?;
        if let Some(key) = c.cluster {
            self.remove_member(now, key, conn);
        }
        for key in c.topics {
            self.remove_member(now, key, conn);
        }
        let (requests, deliveries) = self.asks.forget_conn(conn);
        self.stats.requests_abandoned += requests as u64;
        self.stats.deliveries_abandoned += deliveries as u64;
        for id in self.tunnels.ids_of(conn) {
            self.fail_tunnel(now, id, "petal: the far connection closed");
        }
        self.store_forget_conn(now, conn);
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
            if let Some(c) = self.locals.conns.get_mut(&conn) {
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
            .locals
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
        self.conn(conn)?;
        let (in_use, count) = self.asks.conn_requests(conn, id);
        if in_use {
            return Err(AppError::Invalid("request id in use on this connection"));
        }
        if count >= self.cfg.max_conn_requests as usize {
            self.stats.request_drops += 1;
            return Err(AppError::Full("pending requests of this connection"));
        }
        self.held.cause = crate::budget::Owner::conn(conn);
        let started = self.start_request(
            now,
            conn,
            id,
            GroupKind::Cluster.key(cluster),
            payload,
            timeout_ms,
        );
        self.drain_loopback(now);
        self.held.cause = crate::budget::Owner::NODE;
        started
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
        self.conn(conn)?;
        let (in_use, count) = self.tunnels.conn_tunnels(conn, id);
        if in_use {
            return Err(AppError::Invalid("tunnel id in use on this connection"));
        }
        if count >= self.cfg.max_conn_tunnels {
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
        self.conn(conn)?;
        if self.tunnels.conn_tunnels(conn, id).0 {
            if self.tunnels.is_offer_to(conn, offer) {
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
        if !self.tunnels.is_offer_to(conn, offer) {
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
        self.locals.conns.get(&conn)?;
        let (opening, tunnels) = self.tunnels.of_conn(conn);
        Some(Pending {
            requests: self.asks.request_ids(conn),
            opening,
            tunnels,
        })
    }

    /// Local connections registered.
    pub fn conn_count(&self) -> usize {
        self.locals.conns.len()
    }

    /// Group trees this node is part of (as member, forwarder or root).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// This node's view of group `key`: (is root, parent, children, local members).
    pub fn group_view(&self, key: Key) -> Option<GroupView> {
        self.groups.view(key)
    }

    /// Requests issued here and not yet decided.
    pub fn pending_requests(&self) -> usize {
        self.asks.pending()
    }

    /// Tunnel ends on this node.
    pub fn tunnel_count(&self) -> usize {
        self.tunnels.len()
    }

    /// Every cluster and topic tree this node is part of (as member, relay or root), as of
    /// `now`, for operators (the admin API). Allocates; not for hot paths.
    pub fn groups(&self, now: Time) -> Vec<crate::GroupInfo> {
        self.groups.infos(now)
    }

    /// Every tunnel end on this node, for operators (the admin API). Allocates.
    pub fn tunnels(&self) -> Vec<crate::TunnelInfo> {
        self.tunnels.infos()
    }

    pub(crate) fn check_local_invariants(&self) {
        assert!(
            self.locals.conns.len() <= self.cfg.max_conns,
            "connections over bound"
        );
        for (id, c) in &self.locals.conns {
            for key in c.cluster.iter().chain(c.topics.iter()) {
                assert!(
                    self.groups.has_member(*key, *id),
                    "connection {id:?} missing from its group"
                );
            }
        }
        for conn in self.groups.members() {
            assert!(
                self.locals.conns.contains_key(&conn),
                "member {conn:?} not registered"
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
    /// The parent is a sibling this node chose after its route's next hop, full, dropped it
    /// (bottleneck remover).
    pub fostered: bool,
    /// Its children.
    pub children: Vec<petal_protocol::NodeId>,
    /// Local members (cluster connections or subscribers).
    pub members: usize,
    /// The subtree's load as this node would report it.
    pub load: petal_protocol::Load,
}
