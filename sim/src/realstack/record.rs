//! What the real applications observe, recorded into the oracles' [`Apps`] with simulated
//! time, plus the harness's own log (boots, faults) and counters sampled from the nodes and
//! connections.
//!
//! All hosts of a turmoil simulation run on one OS thread, one after another, so one mutex
//! around the records is never contended; it is there because tokio tasks must be `Send`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use petal_core::{ConnId, GroupKind, Time};
use petal_node::StatsSnapshot;
use sha2::{Digest, Sha256};

use crate::apps::{App, AppSpec, Apps, EventRecord, OutcomeKind, RequestRecord, TunnelRecord};

/// Simulated time now, on the calling host (turmoil's clock: the same on every host).
pub fn sim_now() -> Time {
    let d = turmoil::sim_elapsed().unwrap_or_default();
    Time::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A payload of `size` bytes (at least 8) starting with global id `gid`.
pub(crate) fn gid_payload(gid: u64, size: usize) -> Bytes {
    let mut v = vec![0u8; size.max(8)];
    v[..8].copy_from_slice(&gid.to_be_bytes());
    Bytes::from(v)
}

/// The global id a payload starts with.
pub(crate) fn gid_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

/// Everything recorded during a run.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The oracles' records: applications, requests, events, tunnels, deaths.
    pub apps: Apps,
    /// Applications of each host's current incarnation; its keys are the hosts up now.
    pub host_apps: BTreeMap<u32, Vec<usize>>,
    /// Boots of each host (incarnation = index), with their times.
    pub boots: BTreeMap<u32, Vec<Time>>,
    /// The harness's log: (time, what happened).
    pub log: Vec<(Time, String)>,
    /// Failures an application saw that are not outcomes (connection broken, registration
    /// failed, ...), by kind.
    pub errors: BTreeMap<String, u64>,
    /// Attempts that were refused and retried (an application attaching to a node whose
    /// relay port is not open yet, as while it restarts), by kind: expected, not failures.
    pub retries: BTreeMap<String, u64>,
    /// The last counters of each node incarnation: (host, incarnation).
    pub node_stats: BTreeMap<(u32, u32), StatsSnapshot>,
    /// The last counters of each application's connection.
    pub client_stats: BTreeMap<usize, petal_client::Stats>,
    /// With a [`Script`](super::Script): when each host's first node was first seen ready.
    pub ready_at: BTreeMap<u32, Time>,
    /// With a [`Script`](super::Script): each live node's counters at the script's sample
    /// times, by (host, sample index).
    pub samples: BTreeMap<(u32, usize), StatsSnapshot>,
}

/// The recorder shared by every task of every host.
#[derive(Clone, Debug, Default)]
pub struct Shared(Arc<Mutex<Recorder>>);

impl Shared {
    /// Runs `f` on the records.
    pub fn with<R>(&self, f: impl FnOnce(&mut Recorder) -> R) -> R {
        f(&mut self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Recorder> {
        // A panicking task already failed the run; its records are still worth reading.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the records out (at the end of a run).
    pub fn take(&self) -> Recorder {
        std::mem::take(&mut *self.lock())
    }
}

impl Recorder {
    /// Host `host` boots now; returns its incarnation (0 for the first boot).
    pub fn boot(&mut self, host: u32, now: Time) -> u32 {
        let b = self.boots.entry(host).or_default();
        b.push(now);
        self.host_apps.insert(host, Vec::new());
        crate::count_u32(b.len() - 1)
    }

    /// Counts a failure of kind `what`.
    pub fn error(&mut self, what: impl Into<String>) {
        *self.errors.entry(what.into()).or_default() += 1;
    }

    /// Counts a refused and retried attempt of kind `what`.
    pub fn retry(&mut self, what: impl Into<String>) {
        *self.retries.entry(what.into()).or_default() += 1;
    }

    /// A new application on host `host`, not attached yet: its `since` is the far future until
    /// the node accepts it.
    pub fn add_app(&mut self, host: u32, spec: AppSpec) -> usize {
        let idx = self.apps.list.len();
        self.apps.list.push(App {
            node: host,
            conn: ConnId(idx as u64 + 1),
            spec,
            since: Time::MAX,
            until: None,
            served: 0,
            busy: 0,
            waiting: Default::default(),
            topics: BTreeMap::new(),
        });
        self.host_apps.entry(host).or_default().push(idx);
        idx
    }

    /// Application `app` is gone (its registration failed, or its connection ended).
    pub fn app_gone(&mut self, app: usize, now: Time) {
        let a = &mut self.apps.list[app];
        if a.until.is_none() {
            a.until = Some(now);
        }
    }

    /// Host `host` crashed now: its applications end with it.
    pub fn host_crashed(&mut self, host: u32, now: Time) {
        self.apps.deaths.entry(host).or_default().push(now);
        for app in self.host_apps.remove(&host).unwrap_or_default() {
            self.app_gone(app, now);
        }
    }

    /// A request from `app` issued now; returns its global id.
    pub fn request_issued(&mut self, app: usize, timeout_ms: u64, now: Time) -> u64 {
        let gid = self.apps.requests.len() as u64;
        self.apps.requests.push(RequestRecord {
            app,
            start: now,
            deadline: now + std::time::Duration::from_millis(timeout_ms),
            outcome: None,
            outcomes: 0,
            deliveries: 0,
            served_by: None,
            hops: None,
            wrong_reply: false,
        });
        gid
    }

    /// Request `gid` reached service `app`.
    pub fn request_delivered(&mut self, gid: Option<u64>, app: usize) {
        let Some(r) = gid.and_then(|g| self.apps.requests.get_mut(crate::to_usize(g))) else {
            self.apps.stray_events += 1;
            return;
        };
        r.deliveries += 1;
        if r.served_by.is_none() {
            r.served_by = Some(app);
        }
        self.apps.list[app].served += 1;
    }

    /// Request `gid`'s call returned `result` now.
    pub fn request_done(
        &mut self,
        gid: u64,
        result: Result<Bytes, petal_client::Error>,
        now: Time,
    ) {
        let r = &mut self.apps.requests[crate::to_usize(gid)];
        let kind = match result {
            Ok(reply) => {
                r.wrong_reply |= gid_of(&reply) != Some(gid);
                OutcomeKind::Reply
            }
            Err(petal_client::Error::Remote(fault)) => {
                r.wrong_reply |= fault != format!("fault {gid}");
                OutcomeKind::Fault
            }
            Err(petal_client::Error::Timeout) => OutcomeKind::Timeout,
            Err(e) => {
                self.error(format!("request: {}", error_kind(&e)));
                return;
            }
        };
        r.outcomes += 1;
        if r.outcome.is_none() {
            r.outcome = Some((kind, now));
        }
    }

    /// An event or broadcast from host `host` published now; returns its global id.
    pub fn event_published(&mut self, kind: GroupKind, name: &str, host: u32, now: Time) -> u64 {
        let gid = self.apps.events.len() as u64;
        self.apps.events.push(EventRecord {
            kind,
            name: name.to_owned(),
            node: host,
            at: now,
            deliveries: BTreeMap::new(),
        });
        gid
    }

    /// Application `app` got the event or broadcast `payload` now.
    pub fn event_delivered(&mut self, payload: &[u8], app: usize, now: Time) {
        let Some(e) = gid_of(payload).and_then(|g| self.apps.events.get_mut(crate::to_usize(g)))
        else {
            self.apps.stray_events += 1;
            return;
        };
        e.deliveries.entry(app).or_insert((0, now)).0 += 1;
    }

    /// A tunnel opened by `app` now; returns its global id.
    pub fn tunnel_opened(&mut self, app: usize, messages: u32, size: usize, now: Time) -> usize {
        let gid = self.apps.tunnels.len();
        self.apps.tunnel_progress.push(now);
        self.apps.tunnels.push(TunnelRecord {
            opener: app,
            acceptor: None,
            start: now,
            end_at: None,
            messages,
            size,
            echoed: 0,
            corrupt: false,
            confirms: 0,
            acceptors: 0,
            end: crate::apps::TunnelEnd::Running,
            read_delay_us: 0,
        });
        gid
    }

    /// The trace hash: SHA-256 over every record in order (applications, requests, events,
    /// tunnels, deaths, the harness's log), hex.
    pub fn trace_hash(&self) -> String {
        let mut h = Sha256::new();
        let a = &self.apps;
        for part in [
            format!("{:?}", a.list),
            format!("{:?}", a.requests),
            format!("{:?}", a.events),
            format!("{:?}", a.tunnels),
            format!("{:?}", a.deaths),
            format!("{:?}", a.stray_events),
            format!("{:?}", self.log),
            format!("{:?}", self.errors),
            format!("{:?}", self.retries),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A short, stable description of a client error (without ids or addresses), for counting.
pub(crate) fn error_kind(e: &petal_client::Error) -> String {
    use petal_client::Error as E;
    match e {
        E::Io(e) => format!("io error ({:?})", e.kind()),
        E::Handshake(_) => "handshake failed".into(),
        E::Denied(_) => "denied".into(),
        E::Timeout => "timeout".into(),
        E::Remote(_) => "remote fault".into(),
        E::Closed(r) => format!("closed: {r}"),
        E::Broken(r) => format!("broken: {r}"),
        E::Protocol(_) => "protocol violation".into(),
        other => other.to_string(),
    }
}
