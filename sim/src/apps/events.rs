//! What applications do with their nodes' events: serve requests, record outcomes and
//! deliveries, and drive tunnels.

use bytes::Bytes;
use petal_core::{ConnId, Event, Outcome};
use petal_protocol::ReplyResult;
use rand::Rng;

use super::{AppAction, CHUNK_HEADER, OutcomeKind, TunnelEnd, TunnelEndState, gid_of, gid_payload};
use crate::engine::{Ev, Sim};

impl Sim {
    /// An application event from node `i`.
    pub(crate) fn on_app_event(&mut self, i: u32, ev: Event) {
        let now = self.now();
        let Some(conn) = ev.conn() else {
            return;
        };
        let Some(app) = self.apps.app_of(i, conn) else {
            self.apps.stray_events += 1;
            return;
        };
        if self.apps.list[app].until.is_some() {
            self.apps.stray_events += 1;
            return;
        }
        match ev {
            Event::Request {
                delivery,
                payload,
                hops,
                ..
            } => self.on_request(app, delivery, &payload, hops),
            Event::RequestDone {
                request, outcome, ..
            } => self.on_request_done(i, request, &outcome),
            Event::Published { payload, .. } | Event::Broadcast { payload, .. } => {
                let Some(gid) = gid_of(&payload) else {
                    // Simulated events carry their id: this one is not ours.
                    self.apps.stray_events += 1;
                    return;
                };
                if let Some(e) = self.apps.events.get_mut(crate::to_usize(gid)) {
                    e.deliveries.entry(app).or_insert((0, now)).0 += 1;
                }
            }
            Event::TunnelIncoming { conn, offer } => self.on_tunnel_incoming(i, app, conn, offer),
            Event::TunnelOpened { conn, tunnel } => self.on_tunnel_opened(i, conn, tunnel),
            Event::TunnelOpenFailed { tunnel, .. } => {
                if let Some(end) = self.apps.tunnel_ends.remove(&(i, tunnel)) {
                    let t = &mut self.apps.tunnels[end.record];
                    t.end = TunnelEnd::OpenFailed;
                    t.end_at = Some(now);
                }
            }
            Event::TunnelCredit { tunnel, bytes, .. } => {
                if let Some(end) = self.apps.tunnel_ends.get_mut(&(i, tunnel)) {
                    end.credit += bytes;
                }
                self.pump_tunnel(i, tunnel);
            }
            Event::TunnelData {
                tunnel,
                size,
                payload,
                ..
            } => self.on_tunnel_data(i, tunnel, size, payload),
            Event::TunnelClosed { tunnel, reason, .. } => self.on_tunnel_closed(i, tunnel, reason),
            Event::KvDone { op, result, .. } => self.apps.kv_done.push((now, i, op, result)),
            Event::IdDone { op, result, .. } => self.apps.id_done.push((now, i, op, result)),
            Event::IdMessage {
                identity, payload, ..
            } => self
                .apps
                .id_messages
                .push((now, app, identity.to_string(), payload)),
            _ => {}
        }
    }

    /// A request delivered to member `app`: served now, or queued when busy.
    fn on_request(&mut self, app: usize, delivery: u64, payload: &[u8], hops: u8) {
        let now = self.now();
        let Some(gid) = gid_of(payload) else {
            // Simulated requests carry their id: this one is not ours.
            self.apps.stray_events += 1;
            return;
        };
        if let Some(r) = self.apps.requests.get_mut(crate::to_usize(gid)) {
            r.deliveries += 1;
            if r.served_by.is_none() {
                r.served_by = Some(app);
                r.hops = Some(hops);
            }
        }
        let a = &mut self.apps.list[app];
        if a.spec.stalled {
            // A stuck service: takes requests, never answers.
        } else if a.busy < a.spec.capacity.max(1) {
            a.busy += 1;
            let at = now + std::time::Duration::from_micros(a.spec.service_us);
            self.push(at, Ev::App(AppAction::Answer { app, delivery, gid }));
        } else {
            a.waiting.push_back((delivery, gid));
        }
    }

    /// The outcome of a request issued on node `i`.
    fn on_request_done(&mut self, i: u32, request: u64, outcome: &Outcome) {
        let now = self.now();
        let Some(&gid) = self.apps.pending.get(&(i, request)) else {
            // An outcome for a request this node never issued.
            self.apps.stray_events += 1;
            return;
        };
        let r = &mut self.apps.requests[gid];
        r.outcomes += 1;
        let kind = match &outcome {
            Outcome::Reply(p) => {
                r.wrong_reply |= gid_of(p) != Some(gid as u64);
                OutcomeKind::Reply
            }
            Outcome::Fault(f) => {
                r.wrong_reply |= *f != format!("fault {gid}");
                OutcomeKind::Fault
            }
            Outcome::Timeout => OutcomeKind::Timeout,
        };
        if r.outcome.is_none() {
            r.outcome = Some((kind, now));
        }
    }

    /// A tunnel offered to `app` on node `i`: accepted, with credit for everything.
    fn on_tunnel_incoming(&mut self, i: u32, app: usize, conn: ConnId, offer: u64) {
        let now = self.now();
        // The acceptor names its tunnel by the offer's id.
        let tunnel = offer;
        let _ = self.node_mut(i).tunnel_accept(now, conn, offer, tunnel);
        // Which record it belongs to is learnt from its first chunk.
        self.apps.tunnel_ends.insert(
            (i, tunnel),
            TunnelEndState {
                record: usize::MAX,
                app,
                ..TunnelEndState::default()
            },
        );
        let g = 64 << 20;
        let _ = self.node_mut(i).tunnel_allow(now, conn, tunnel, g);
    }

    /// A tunnel opened from node `i` is confirmed: its messages go out.
    fn on_tunnel_opened(&mut self, i: u32, conn: ConnId, tunnel: u64) {
        let now = self.now();
        let Some(end) = self.apps.tunnel_ends.get_mut(&(i, tunnel)) else {
            self.apps.stray_events += 1;
            return;
        };
        let rec = end.record;
        self.apps.tunnels[rec].confirms += 1;
        self.apps.tunnel_progress[rec] = now;
        if std::mem::replace(&mut end.opened, true) {
            // A second confirm: counted above, the data is already on its way.
            return;
        }
        let _ = self.node_mut(i).tunnel_allow(now, conn, tunnel, 64 << 20);
        let (n, size) = (self.apps.tunnels[rec].messages, self.apps.tunnels[rec].size);
        for k in 0..n {
            self.queue_message(i, tunnel, rec as u64, k, size);
        }
        self.pump_tunnel(i, tunnel);
    }

    /// A tunnel chunk for node `i`: taken now, or after the reader's delay.
    fn on_tunnel_data(&mut self, i: u32, tunnel: u64, size: u64, payload: Bytes) {
        let now = self.now();
        let delay = self
            .apps
            .tunnel_ends
            .get(&(i, tunnel))
            .filter(|e| !e.opener)
            .and_then(|_| {
                let rec = crate::to_usize(gid_of(&payload)?);
                self.apps.tunnels.get(rec).map(|t| t.read_delay_us)
            })
            .unwrap_or(0);
        if delay == 0 {
            self.take_chunk(i, tunnel, size, payload);
        } else {
            // One message at a time: each first chunk costs the reader `delay` after
            // it is done with the previous messages.
            let Some(end) = self.apps.tunnel_ends.get_mut(&(i, tunnel)) else {
                return;
            };
            let start = end.busy_until.map_or(now, |b| b.max(now));
            let cost = if size != 0 { delay } else { 0 };
            let at = start + std::time::Duration::from_micros(cost);
            end.busy_until = Some(at);
            self.push(
                at,
                Ev::App(AppAction::Take {
                    node: i,
                    tunnel,
                    size,
                    payload,
                }),
            );
        }
    }

    /// A tunnel of node `i` closed: its record ends, unless it already has.
    fn on_tunnel_closed(&mut self, i: u32, tunnel: u64, reason: String) {
        let now = self.now();
        if let Some(end) = self.apps.tunnel_ends.remove(&(i, tunnel)) {
            if end.record == usize::MAX {
                return;
            }
            let t = &mut self.apps.tunnels[end.record];
            if t.end == TunnelEnd::Running {
                t.end_at = Some(now);
                t.end = if !reason.is_empty() {
                    TunnelEnd::Failed(reason)
                } else if t.echoed == t.messages && !t.corrupt {
                    TunnelEnd::Completed
                } else if end.opener {
                    TunnelEnd::Failed("closed before the data was through".into())
                } else {
                    // The acceptor sees the opener's graceful close.
                    return;
                };
            }
        }
    }

    /// A scheduled application action.
    pub(crate) fn on_app_action(&mut self, action: AppAction) {
        let now = self.now();
        match action {
            AppAction::Answer { app, delivery, gid } => {
                let a = &mut self.apps.list[app];
                if a.until.is_some() {
                    return;
                }
                // The handler is free: it takes the next waiting request.
                match a.waiting.pop_front() {
                    Some((d, g)) => {
                        let at = now + std::time::Duration::from_micros(a.spec.service_us);
                        self.push(
                            at,
                            Ev::App(AppAction::Answer {
                                app,
                                delivery: d,
                                gid: g,
                            }),
                        );
                    }
                    None => a.busy -= 1,
                }
                let a = &self.apps.list[app];
                let (node, ratio) = (a.node, a.spec.fault_ratio);
                let fault = ratio > 0.0 && self.rng().random_bool(ratio);
                let result = if fault {
                    ReplyResult::Fault(format!("fault {gid}"))
                } else {
                    ReplyResult::Ok(gid_payload(gid, 8))
                };
                let conn = self.apps.list[app].conn;
                if self
                    .node_mut(node)
                    .reply(now, conn, delivery, result)
                    .is_ok()
                {
                    self.apps.list[app].served += 1;
                }
                self.after_step(node);
            }
            AppAction::Take {
                node,
                tunnel,
                size,
                payload,
            } => {
                if self.is_alive(node) {
                    self.take_chunk(node, tunnel, size, payload);
                }
            }
        }
    }

    fn queue_message(&mut self, node: u32, tunnel: u64, rec: u64, k: u32, size: usize) {
        let Some(end) = self.apps.tunnel_ends.get_mut(&(node, tunnel)) else {
            return;
        };
        let mut off = 0;
        while off < size {
            let len = (size - off).min(65_536);
            let mut v = vec![0u8; len];
            let mut h = [0u8; CHUNK_HEADER];
            h[..8].copy_from_slice(&rec.to_be_bytes());
            h[8..12].copy_from_slice(&k.to_be_bytes());
            h[12..20].copy_from_slice(&(off as u64).to_be_bytes());
            let n = h.len().min(v.len());
            v[..n].copy_from_slice(&h[..n]);
            let first = if off == 0 { size as u64 } else { 0 };
            end.outq.push_back((first, Bytes::from(v)));
            off += len;
        }
    }

    fn pump_tunnel(&mut self, node: u32, tunnel: u64) {
        let now = self.now();
        while let Some(end) = self.apps.tunnel_ends.get_mut(&(node, tunnel)) {
            let Some((size, chunk)) = end.outq.front() else {
                break;
            };
            if (chunk.len() as u64) > end.credit {
                break;
            }
            let (size, chunk) = (*size, chunk.clone());
            end.outq.pop_front();
            end.credit -= chunk.len() as u64;
            let conn = self.apps.list[end.app].conn;
            if self
                .node_mut(node)
                .tunnel_send(now, conn, tunnel, size, chunk)
                .is_err()
            {
                break;
            }
        }
        self.after_step(node);
    }

    /// The application takes one chunk: reassembles, checks, echoes (acceptor) or counts the
    /// echo (opener), and re-grants the node its credit.
    fn take_chunk(&mut self, node: u32, tunnel: u64, size: u64, payload: Bytes) {
        let now = self.now();
        let Some(end) = self.apps.tunnel_ends.get_mut(&(node, tunnel)) else {
            return;
        };
        let header = |p: &[u8]| -> Option<(u64, u32, u64)> {
            Some((
                u64::from_be_bytes(p.get(..8)?.try_into().ok()?),
                u32::from_be_bytes(p.get(8..12)?.try_into().ok()?),
                u64::from_be_bytes(p.get(12..20)?.try_into().ok()?),
            ))
        };
        let Some((rec, k, off)) = header(&payload) else {
            return;
        };
        if end.record == usize::MAX {
            end.record = crate::to_usize(rec);
            if let Some(t) = self.apps.tunnels.get_mut(crate::to_usize(rec)) {
                t.acceptors += 1;
            }
        }
        let record = end.record;
        let mut corrupt = record != crate::to_usize(rec);
        if size != 0 {
            corrupt |= end.partial.is_some() || off != 0;
            end.partial = Some((size, Vec::with_capacity(crate::to_usize(size))));
        }
        let mut whole = None;
        match &mut end.partial {
            Some((want, got)) => {
                corrupt |= off != got.len() as u64 || k != end.received;
                got.extend_from_slice(&payload);
                if got.len() as u64 >= *want {
                    corrupt |= got.len() as u64 != *want;
                    whole = Some(got.len() as u64);
                }
            }
            None => corrupt = true,
        }
        if whole.is_some() {
            end.partial = None;
            end.received += 1;
        }
        let (opener, received, app) = (end.opener, end.received, end.app);
        let conn = self.apps.list[app].conn;
        if let Some(t) = self.apps.tunnels.get_mut(record) {
            t.corrupt |= corrupt;
            if !opener && t.acceptor.is_none() {
                t.acceptor = Some(app);
            }
        }
        let Some(len) = whole else {
            return;
        };
        let _ = self.node_mut(node).tunnel_allow(now, conn, tunnel, len);
        if opener {
            self.apps.tunnel_progress[record] = now;
            let t = &mut self.apps.tunnels[record];
            t.echoed = received;
            if t.echoed == t.messages {
                let _ = self.node_mut(node).tunnel_close(now, conn, tunnel);
            }
            self.after_step(node);
        } else {
            let size = self.apps.tunnels[record].size;
            self.queue_message(node, tunnel, record as u64, received - 1, size);
            self.pump_tunnel(node, tunnel);
        }
    }
}
