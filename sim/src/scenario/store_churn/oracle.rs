//! The store's oracle: every operation issued, every outcome, the acknowledged writes of each
//! key, and the crashes of each key's replicas; judged after the run.
//!
//! - **Outcomes**: an operation whose client lived until 1 s past its deadline must have
//!   exactly one outcome.
//! - **Reads** (gets answered with a value or "not found") are *fresh* when they return the
//!   newest version acknowledged before the read started, or a newer one; otherwise *stale*,
//!   and their staleness is how long before the read the first write they missed was
//!   acknowledged. "Not found" is fresh when the newest acknowledged write was a deletion or a
//!   value that may have expired. A value whose time to live had surely run out before the
//!   read started (acknowledged at `a`, `a + ttl` before the read) is *expired*; a value no
//!   client wrote is *fabricated*.
//! - **Conditional writes**: two that succeed on the same expected version (not "absent") are
//!   a double win.
//! - **Lost writes**: after the churn every key is read once more; a key whose newest
//!   acknowledged write is not returned (an older version, or "not found" for a value that
//!   cannot have expired) lost it. The loss is *excused* when `k` of the key's replicas (nodes
//!   among its `k` closest when they crashed) crashed within the repair window of each other.

use std::collections::BTreeMap;
use std::time::Duration;

use petal_core::{StoreResult, Time, Version};

use super::{Params, ring_key};
use crate::engine::Sim;

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Get,
    Put,
    Cas,
    Delete,
}

impl Kind {
    pub(super) const ALL: [Kind; 4] = [Kind::Get, Kind::Put, Kind::Cas, Kind::Delete];

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Put => "put",
            Kind::Cas => "conditional put",
            Kind::Delete => "delete",
        }
    }
}

/// An operation issued, with its outcome. Its id is its index + 1; a put's value starts with
/// that id.
pub(super) struct Op {
    pub kind: Kind,
    pub key: usize,
    pub app: usize,
    pub issued: Time,
    pub ttl_ms: u64,
    pub expect: Option<Version>,
    pub outcome: Option<(Time, StoreResult)>,
    pub outcomes: u32,
    /// One of the reads after the churn.
    pub final_read: bool,
}

/// An acknowledged write.
#[derive(Clone, Copy, Debug)]
struct Acked {
    version: Version,
    at: Time,
    op: usize,
    /// A value (false: a deletion).
    value: bool,
}

pub(super) struct Oracle {
    pub ops: Vec<Op>,
    /// Outcomes read from the simulator's log so far.
    cursor: usize,
    /// Acknowledged writes by key, in acknowledgement order.
    acked: Vec<Vec<Acked>>,
    /// Writes issued by key (indices in `ops`), in issue order.
    writes: Vec<Vec<usize>>,
    /// When nodes that were among each key's `k` closest crashed.
    replica_crashes: Vec<Vec<Time>>,
    k: usize,
    /// Outcomes for operations never issued.
    pub strays: u64,
    /// The churn phase.
    pub start: Time,
    pub end: Time,
    /// The first of the reads after the churn.
    pub final_from: usize,
}

/// What a read returned, judged.
enum Read {
    Fresh,
    /// Staleness in microseconds.
    Stale(u64),
    Expired,
    Fabricated,
}

/// The verdicts of one run.
#[derive(Default)]
pub(super) struct Judged {
    /// Operations judged (issued during the churn by a client that lived past the deadline).
    pub judged: u64,
    pub missing: u64,
    pub duplicates: u64,
    /// By kind (in `Kind::ALL` order): succeeded, failed, timed out.
    pub by_kind: [(u64, u64, u64); 4],
    /// Latencies of successful operations by kind, microseconds.
    pub latency_us: [Vec<u64>; 4],
    pub reads: u64,
    pub fresh: u64,
    pub stale_us: Vec<u64>,
    pub expired: u64,
    pub fabricated: u64,
    pub cas_won: u64,
    pub cas_conflicts: u64,
    pub cas_double: u64,
    /// After the churn: keys with an acknowledged write, read back.
    pub final_keys: u64,
    pub lost: u64,
    pub lost_excused: u64,
    pub unreadable: u64,
}

impl Oracle {
    pub(super) fn new(keys: usize, k: usize) -> Self {
        Self {
            ops: Vec::new(),
            cursor: 0,
            acked: vec![Vec::new(); keys],
            writes: vec![Vec::new(); keys],
            replica_crashes: vec![Vec::new(); keys],
            k,
            strays: 0,
            start: Time::ZERO,
            end: Time::ZERO,
            final_from: usize::MAX,
        }
    }

    /// Records an operation issued (its id is its index + 1).
    pub(super) fn push(&mut self, op: Op) {
        if op.kind != Kind::Get {
            self.writes[op.key].push(self.ops.len());
        }
        self.ops.push(op);
    }

    /// Takes the outcomes logged since the last call.
    pub(super) fn collect(&mut self, sim: &Sim) {
        for (t, _, id, result) in &sim.apps.kv_done[self.cursor..] {
            let Some(op) = usize::try_from(*id)
                .ok()
                .and_then(|i| i.checked_sub(1))
                .filter(|&i| i < self.ops.len())
            else {
                self.strays += 1;
                continue;
            };
            let o = &mut self.ops[op];
            o.outcomes += 1;
            if o.outcome.is_some() {
                continue;
            }
            o.outcome = Some((*t, result.clone()));
            if let StoreResult::Written(version) = result
                && o.kind != Kind::Get
            {
                self.acked[o.key].push(Acked {
                    version: *version,
                    at: *t,
                    op,
                    value: o.kind != Kind::Delete,
                });
            }
        }
        self.cursor = sim.apps.kv_done.len();
    }

    /// The newest acknowledged write of `key`.
    fn latest(&self, key: usize, before: Time) -> Option<Acked> {
        self.acked[key]
            .iter()
            .filter(|a| a.at < before)
            .max_by_key(|a| a.version)
            .copied()
    }

    /// What a conditional write of `key` expects now: the newest acknowledged value's version.
    pub(super) fn latest_value_version(&self, key: usize) -> Version {
        match self.latest(key, Time::MAX) {
            Some(a) if a.value => a.version,
            _ => Version::NONE,
        }
    }

    /// Node `i` is about to crash: note it for the keys it is a replica of.
    pub(super) fn before_crash(&mut self, sim: &Sim, i: u32) {
        let now = sim.now();
        for key in 0..self.acked.len() {
            if sim.closest_ready(ring_key(key), self.k).contains(&i) {
                self.replica_crashes[key].push(now);
            }
        }
    }

    /// Whether the value written by acknowledged write `a` may have expired by `t`.
    fn may_have_expired(&self, a: &Acked, t: Time) -> bool {
        let w = &self.ops[a.op];
        w.ttl_ms > 0 && w.issued + Duration::from_millis(w.ttl_ms) <= t
    }

    fn judge_read(&self, op: &Op, done: Time, result: &StoreResult) -> Read {
        let ti = op.issued;
        let before: Vec<&Acked> = self.acked[op.key].iter().filter(|a| a.at < ti).collect();
        let latest = before.iter().max_by_key(|a| a.version).copied();
        let first_missed = |above: Version| {
            before
                .iter()
                .filter(|a| a.version > above && (!a.value || !self.may_have_expired(a, done)))
                .map(|a| a.at)
                .min()
        };
        match result {
            StoreResult::Found { version, value, .. } => {
                let id = value
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                let writer = usize::try_from(id)
                    .ok()
                    .and_then(|i| i.checked_sub(1))
                    .and_then(|i| self.ops.get(i).map(|w| (i, w)));
                let Some((wi, w)) = writer
                    .filter(|(_, w)| matches!(w.kind, Kind::Put | Kind::Cas) && w.key == op.key)
                else {
                    return Read::Fabricated;
                };
                let acked_at = self.acked[op.key].iter().find(|a| a.op == wi).map(|a| a.at);
                if w.ttl_ms > 0
                    && acked_at.is_some_and(|a| a + Duration::from_millis(w.ttl_ms) <= ti)
                {
                    return Read::Expired;
                }
                match latest {
                    Some(l) if *version < l.version => first_missed(*version)
                        .map_or(Read::Fresh, |t| {
                            Read::Stale(t.as_micros().min(ti.as_micros()))
                        }),
                    _ => Read::Fresh,
                }
                .since(ti)
            }
            _ => {
                // Not found: fresh when the newest write acknowledged before the read is a
                // deletion or a value that may have expired, or a later write may have made
                // the key absent; else the read missed the values acknowledged since the last
                // write that made it absent.
                let Some(l) = latest else {
                    return Read::Fresh;
                };
                if !l.value || self.may_have_expired(l, done) || self.absent_after(op.key, l, done)
                {
                    return Read::Fresh;
                }
                let mut by_version = before.clone();
                by_version.sort_by_key(|a| std::cmp::Reverse(a.version));
                let missed = by_version
                    .iter()
                    .take_while(|a| a.value && !self.may_have_expired(a, done))
                    .map(|a| a.at)
                    .min()
                    .unwrap_or(l.at);
                Read::Stale(missed.as_micros()).since(ti)
            }
        }
    }

    /// Whether a write other than `l` may have made `key` absent by `done`, after `l`: a
    /// deletion (or a value with a time to live that may have expired) acknowledged with a
    /// newer version, or one not acknowledged (failed or timed out, so perhaps stored anyway)
    /// issued after `l` was and before `done`.
    fn absent_after(&self, key: usize, l: &Acked, done: Time) -> bool {
        let l_issued = self.ops[l.op].issued;
        self.writes[key].iter().any(|&w| {
            let op = &self.ops[w];
            let absent = op.kind == Kind::Delete
                || (op.ttl_ms > 0 && op.issued + Duration::from_millis(op.ttl_ms) <= done);
            if w == l.op || !absent || op.issued >= done {
                return false;
            }
            match &op.outcome {
                Some((_, StoreResult::Written(v))) => *v > l.version,
                Some((_, StoreResult::Conflict(_))) => false,
                _ => op.issued >= l_issued,
            }
        })
    }

    /// Whether `k` of the key's replicas crashed within `window` of each other.
    fn excused(&self, key: usize, window: Duration) -> bool {
        let c = &self.replica_crashes[key];
        self.k > 0 && c.windows(self.k).any(|w| w[self.k - 1] - w[0] <= window)
    }

    pub(super) fn judge(&self, sim: &Sim, p: &Params) -> Judged {
        let mut j = Judged::default();
        let grace = Duration::from_millis(u64::from(p.timeout_ms) + 1_000);
        let mut cas: BTreeMap<(usize, Version), u64> = BTreeMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            if op.outcomes > 1 {
                j.duplicates += u64::from(op.outcomes - 1);
            }
            let during = i < self.final_from && op.issued >= self.start && op.issued < self.end;
            let lived = sim.apps.list[op.app]
                .until
                .is_none_or(|u| u >= op.issued + grace);
            if op.final_read {
                self.judge_final(&mut j, op, p);
                continue;
            }
            if !during || !lived {
                continue;
            }
            j.judged += 1;
            let k = Kind::ALL.iter().position(|&x| x == op.kind).unwrap_or(0);
            let Some((done, result)) = &op.outcome else {
                j.missing += 1;
                continue;
            };
            match result {
                StoreResult::Failed(_) => j.by_kind[k].1 += 1,
                StoreResult::TimedOut => j.by_kind[k].2 += 1,
                _ => {
                    j.by_kind[k].0 += 1;
                    j.latency_us[k].push(done.as_micros() - op.issued.as_micros());
                }
            }
            match (op.kind, result) {
                (Kind::Get, StoreResult::Found { .. } | StoreResult::NotFound) => {
                    j.reads += 1;
                    match self.judge_read(op, *done, result) {
                        Read::Fresh => j.fresh += 1,
                        Read::Stale(us) => j.stale_us.push(us),
                        Read::Expired => j.expired += 1,
                        Read::Fabricated => j.fabricated += 1,
                    }
                }
                (Kind::Cas, StoreResult::Written(_)) => {
                    j.cas_won += 1;
                    if let Some(e) = op.expect.filter(|e| *e != Version::NONE) {
                        *cas.entry((op.key, e)).or_default() += 1;
                    }
                }
                (Kind::Cas, StoreResult::Conflict(_)) => j.cas_conflicts += 1,
                _ => {}
            }
        }
        j.cas_double = cas.values().map(|n| n.saturating_sub(1)).sum();
        j
    }

    /// A read after the churn: the key's newest acknowledged write must come back.
    fn judge_final(&self, j: &mut Judged, op: &Op, p: &Params) {
        let Some(expected) = self.latest(op.key, Time::MAX) else {
            return;
        };
        j.final_keys += 1;
        let Some((done, result)) = &op.outcome else {
            j.unreadable += 1;
            return;
        };
        let lost = match result {
            StoreResult::Found { version, .. } => *version < expected.version,
            StoreResult::NotFound => {
                expected.value
                    && !self.may_have_expired(&expected, *done)
                    && !self.absent_after(op.key, &expected, *done)
            }
            _ => {
                j.unreadable += 1;
                return;
            }
        };
        if lost {
            j.lost += 1;
            if self.excused(op.key, Duration::from_secs(p.repair_window_s)) {
                j.lost_excused += 1;
            }
        }
    }

    /// Keys whose `k` closest ready nodes all hold the newest acknowledged version (or a newer
    /// one), of the keys whose newest acknowledged write is a value without a time to live.
    pub(super) fn replication(&self, sim: &Sim) -> (u64, u64) {
        let (mut full, mut keys) = (0, 0);
        let now = sim.now();
        for key in 0..self.acked.len() {
            let Some(l) = self.latest(key, Time::MAX) else {
                continue;
            };
            if !l.value || self.ops[l.op].ttl_ms > 0 {
                continue;
            }
            keys += 1;
            let name = format!("k{key}");
            let held = sim
                .closest_ready(ring_key(key), self.k)
                .into_iter()
                .filter(|&i| {
                    sim.node(i)
                        .store_entry(now, &name)
                        .is_some_and(|e| e.version >= l.version)
                })
                .count();
            full += u64::from(held == self.k);
        }
        (full, keys)
    }
}

impl Read {
    /// A stale verdict's time turned into staleness before `issued`.
    fn since(self, issued: Time) -> Read {
        match self {
            Read::Stale(at_us) => Read::Stale(issued.as_micros().saturating_sub(at_us)),
            other => other,
        }
    }
}
