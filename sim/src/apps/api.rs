//! The application methods of [`Sim`]: attaching applications, subscriptions, casts,
//! requests and tunnels, each recorded for the oracles.

use std::collections::BTreeMap;

use petal_core::{ConnId, GroupKind};

use super::{
    App, AppSpec, CHUNK_HEADER, EventRecord, OPENER_IDS, RequestRecord, TunnelEnd, TunnelEndState,
    TunnelRecord, gid_payload,
};
use crate::engine::Sim;

impl Sim {
    /// Registers a new application on node `node` (alive and started). Returns its index.
    pub fn add_app(&mut self, node: u32, spec: AppSpec) -> Option<usize> {
        if !self.is_alive(node) {
            return None;
        }
        let now = self.now();
        self.apps.next_conn += 1;
        let conn = ConnId(self.apps.next_conn);
        let cluster = spec.cluster.clone();
        let ok = self
            .node_mut(node)
            .register(now, conn, cluster.as_deref(), spec.capacity)
            .is_ok();
        if !ok {
            return None;
        }
        let idx = self.apps.list.len();
        self.apps.list.push(App {
            node,
            conn,
            spec,
            since: now,
            until: None,
            served: 0,
            busy: 0,
            waiting: std::collections::VecDeque::new(),
            topics: BTreeMap::new(),
        });
        self.apps.by_conn.insert((node, conn), idx);
        self.after_step(node);
        Some(idx)
    }

    /// Unregisters application `app` (its connection closes).
    pub fn remove_app(&mut self, app: usize) {
        let a = &self.apps.list[app];
        if a.until.is_some() {
            return;
        }
        let (node, conn) = (a.node, a.conn);
        let now = self.now();
        self.apps.list[app].until = Some(now);
        if self.is_alive(node) {
            let _ = self.node_mut(node).unregister(now, conn);
            self.after_step(node);
        }
    }

    /// Marks every application of node `node` gone (its node crashed or left).
    pub(crate) fn apps_gone(&mut self, node: u32) {
        let now = self.now();
        self.apps.deaths.entry(node).or_default().push(now);
        for a in self.apps.list.iter_mut().filter(|a| a.node == node) {
            if a.until.is_none() {
                a.until = Some(now);
            }
        }
        self.apps.pending.retain(|&(n, _), _| n != node);
        self.apps.tunnel_ends.retain(|&(n, _), _| n != node);
    }

    /// Subscribes application `app` to `topic`.
    pub fn subscribe(&mut self, app: usize, topic: &str) -> bool {
        let (node, conn) = (self.apps.list[app].node, self.apps.list[app].conn);
        if self.apps.list[app].until.is_some() {
            return false;
        }
        let now = self.now();
        let ok = matches!(self.node_mut(node).subscribe(now, conn, topic), Ok(true));
        if ok {
            self.apps.list[app].topics.insert(topic.to_owned(), now);
        }
        self.after_step(node);
        ok
    }

    /// Unsubscribes application `app` from `topic`.
    pub fn unsubscribe(&mut self, app: usize, topic: &str) {
        let (node, conn) = (self.apps.list[app].node, self.apps.list[app].conn);
        if self.apps.list[app].until.is_some() {
            return;
        }
        let now = self.now();
        let _ = self.node_mut(node).unsubscribe(now, conn, topic);
        self.apps.list[app].topics.remove(topic);
        self.after_step(node);
    }

    /// Publishes a `size`-byte event on `topic` from node `node`. Returns its global id.
    pub fn publish(&mut self, node: u32, topic: &str, size: usize) -> Option<u64> {
        self.cast(node, GroupKind::Topic, topic, size)
    }

    /// Broadcasts a `size`-byte message to `cluster` from node `node`. Returns its global id.
    pub fn broadcast(&mut self, node: u32, cluster: &str, size: usize) -> Option<u64> {
        self.cast(node, GroupKind::Cluster, cluster, size)
    }

    fn cast(&mut self, node: u32, kind: GroupKind, name: &str, size: usize) -> Option<u64> {
        if !self.is_alive(node) {
            return None;
        }
        let now = self.now();
        let gid = self.apps.events.len() as u64;
        let payload = gid_payload(gid, size);
        let r = match kind {
            GroupKind::Topic => self.node_mut(node).publish(now, name, payload),
            GroupKind::Cluster => self.node_mut(node).broadcast(now, name, payload),
        };
        if r.is_err() {
            return None;
        }
        self.apps.events.push(EventRecord {
            kind,
            name: name.to_owned(),
            node,
            at: now,
            deliveries: BTreeMap::new(),
        });
        self.after_step(node);
        Some(gid)
    }

    /// Sends a request from application `app` to `cluster`. Returns its global id.
    pub fn request(
        &mut self,
        app: usize,
        cluster: &str,
        timeout_ms: u32,
        size: usize,
    ) -> Option<u64> {
        let (node, conn) = (self.apps.list[app].node, self.apps.list[app].conn);
        if self.apps.list[app].until.is_some() || !self.is_alive(node) {
            return None;
        }
        let now = self.now();
        let gid = self.apps.requests.len() as u64;
        self.node_mut(node)
            .request(now, conn, gid, cluster, gid_payload(gid, size), timeout_ms)
            .ok()?;
        self.apps.requests.push(RequestRecord {
            app,
            start: now,
            deadline: now + std::time::Duration::from_millis(u64::from(timeout_ms)),
            outcome: None,
            outcomes: 0,
            deliveries: 0,
            served_by: None,
            hops: None,
            wrong_reply: false,
        });
        self.apps.pending.insert((node, gid), crate::to_usize(gid));
        self.after_step(node);
        Some(gid)
    }

    /// Identity command `what` of application `app` (under id `op` for register, send and who;
    /// outcomes in `Apps::id_done`, messages in `Apps::id_messages`). False when the node
    /// refused it or the application is gone.
    pub fn id_command(
        &mut self,
        app: usize,
        op: u64,
        what: IdCommand<'_>,
        timeout_ms: u32,
    ) -> bool {
        let (node, conn) = (self.apps.list[app].node, self.apps.list[app].conn);
        if self.apps.list[app].until.is_some() || !self.is_alive(node) {
            return false;
        }
        let now = self.now();
        let n = self.node_mut(node);
        let ok = match what {
            IdCommand::Register(identity) => n.id_register(now, conn, op, identity, timeout_ms),
            IdCommand::Unregister(identity) => n.id_unregister(now, conn, identity).map(|_| ()),
            IdCommand::Send(identity, payload) => {
                n.id_send(now, conn, op, identity, payload, timeout_ms)
            }
            IdCommand::Who(identity) => n.id_who(now, conn, op, identity, timeout_ms),
        }
        .is_ok();
        self.after_step(node);
        ok
    }

    /// Starts store operation `kind` on the key `name` from application `app`, under id `op`
    /// (unique among the application's operations). False when the node refused it or the
    /// application is gone. The outcome is logged in `Apps::kv_done`.
    pub fn kv(
        &mut self,
        app: usize,
        op: u64,
        name: &str,
        kind: petal_core::StoreOpKind,
        timeout_ms: u32,
    ) -> bool {
        let (node, conn) = (self.apps.list[app].node, self.apps.list[app].conn);
        if self.apps.list[app].until.is_some() || !self.is_alive(node) {
            return false;
        }
        let now = self.now();
        let ok = self
            .node_mut(node)
            .kv(now, conn, op, name, kind, timeout_ms)
            .is_ok();
        self.after_step(node);
        ok
    }

    /// Opens a tunnel from application `app` to `cluster` that will carry `messages` messages
    /// of `size` bytes each way; the acceptor spends `read_delay_us` on each message, one
    /// after another (a slow reader). Returns its global id.
    pub fn open_tunnel(
        &mut self,
        app: usize,
        cluster: &str,
        timeout_ms: u32,
        messages: u32,
        size: usize,
        read_delay_us: u64,
    ) -> Option<usize> {
        let (node, conn) = (self.apps.list[app].node, self.apps.list[app].conn);
        if self.apps.list[app].until.is_some() || !self.is_alive(node) {
            return None;
        }
        let now = self.now();
        let gid = self.apps.tunnels.len();
        // The opener's name for its tunnel: apart from the acceptors' (offer ids, below 2^63).
        let id = OPENER_IDS | gid as u64;
        self.node_mut(node)
            .tunnel_open(now, conn, id, cluster, timeout_ms)
            .ok()?;
        self.apps.tunnel_progress.push(now);
        self.apps.tunnels.push(TunnelRecord {
            opener: app,
            acceptor: None,
            start: now,
            end_at: None,
            messages,
            // Every chunk carries a whole header: no tail chunk shorter than it.
            size: if size % 65_536 < CHUNK_HEADER {
                size + CHUNK_HEADER
            } else {
                size
            },
            echoed: 0,
            corrupt: false,
            confirms: 0,
            acceptors: 0,
            end: TunnelEnd::Running,
            read_delay_us,
        });
        self.apps.tunnel_ends.insert(
            (node, id),
            TunnelEndState {
                record: gid,
                opener: true,
                app,
                ..TunnelEndState::default()
            },
        );
        self.after_step(node);
        Some(gid)
    }
}

/// An identity command of a simulated application ([`Sim::id_command`]).
#[derive(Clone, Debug)]
pub enum IdCommand<'a> {
    /// Hold the identity.
    Register(&'a str),
    /// Let go of it.
    Unregister(&'a str),
    /// Send it a message.
    Send(&'a str, bytes::Bytes),
    /// Ask who holds it.
    Who(&'a str),
}
