//! When the overlay is not expected to be whole: the fault windows of a turmoil run, which
//! records lie outside them, and the time to recovery after each fault.

use std::collections::BTreeMap;
use std::time::Duration;

use petal_core::Time;

use super::Params;
use crate::apps::{Apps, EventRecord, OutcomeKind};
use crate::realstack::RunResult;

/// When the overlay is not expected to be whole, and who was on which side of partitions.
pub(super) struct Faults {
    pub(super) windows: Vec<(Time, Time)>,
    /// Each fault: what it was, when service should be back from (the fault, or a
    /// partition's heal), and its window.
    pub(super) faults: Vec<(String, Time, (Time, Time))>,
    /// Partitions: (from, to, hosts cut off).
    pub(super) cuts: Vec<(Time, Time, Vec<u32>)>,
    pub(super) settle: Duration,
    pub(super) grace: Duration,
}

fn overlaps(a: (Time, Time), b: (Time, Time)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

impl Faults {
    pub(super) fn new(r: &RunResult, p: &Params) -> Self {
        let guard = Duration::from_secs(p.fault_guard_s);
        let mut faults: Vec<(String, Time, (Time, Time))> = Vec::new();
        for (what, list) in [("crash", &r.crashes), ("restart", &r.restarts)] {
            for &(t, host) in list {
                faults.push((format!("{what} n{host}"), t, (t, t + guard)));
            }
        }
        for (a, b, side) in &r.partitions {
            faults.push((
                format!("partition of {} hosts", side.len()),
                *b,
                (*a, *b + guard),
            ));
        }
        faults.sort_by_key(|f| (f.2, f.1));
        let mut windows: Vec<(Time, Time)> = faults.iter().map(|f| f.2).collect();
        windows.sort();
        Faults {
            windows,
            faults,
            cuts: r.partitions.clone(),
            settle: Duration::from_secs(p.event_settle_s),
            grace: Duration::from_secs(p.event_grace_s),
        }
    }

    fn quiet(&self, span: (Time, Time)) -> bool {
        !self.windows.iter().any(|&w| overlaps(w, span))
    }

    fn event_span(&self, e: &EventRecord) -> (Time, Time) {
        let from = Time::from_micros(
            e.at.as_micros()
                .saturating_sub(crate::micros_u64(self.settle)),
        );
        (from, e.at + self.grace)
    }

    /// Whether recipient host `node` counts for event `e`: during a partition (and around it),
    /// only recipients on the publisher's side.
    pub(super) fn counts(&self, e: &EventRecord, node: u32) -> bool {
        let span = self.event_span(e);
        self.cuts.iter().all(|(a, b, side)| {
            !overlaps((*a, *b), span) || side.contains(&e.node) == side.contains(&node)
        })
    }

    /// The records of `apps` that lie outside every fault window (`quiet`), or that touch
    /// one (`!quiet`).
    pub(super) fn split_apps(&self, apps: &Apps, end: Time, quiet: bool) -> Apps {
        let mut q = Apps::default();
        q.list = apps.list.clone();
        q.deaths = apps.deaths.clone();
        q.requests = apps
            .requests
            .iter()
            .filter(|r| self.quiet((r.start, r.deadline)) == quiet)
            .cloned()
            .collect();
        q.events = apps
            .events
            .iter()
            .filter(|e| self.quiet(self.event_span(e)) == quiet)
            .cloned()
            .collect();
        q.tunnels = apps
            .tunnels
            .iter()
            .filter(|t| self.quiet((t.start, t.end_at.unwrap_or(end))) == quiet)
            .cloned()
            .collect();
        q
    }

    /// Time to recovery of each fault: from the fault (a partition: its heal) until the issue
    /// of the last judged request charged to it that was not answered (0 when that request
    /// came before it, or there was none), as of `now`. A request is charged to the latest
    /// fault that began before its deadline, if its issue falls in that fault's window.
    pub(super) fn recoveries(&self, apps: &Apps, now: Time) -> Vec<(String, Duration)> {
        let charged_to = |r: &crate::apps::RequestRecord| {
            self.faults
                .iter()
                .map(|f| f.2.0)
                .filter(|a| *a <= r.deadline)
                .max()
        };
        self.faults
            .iter()
            .map(|(what, from, (a, b))| {
                let last = apps
                    .requests
                    .iter()
                    .filter(|r| r.start < *b && charged_to(r) == Some(*a))
                    .filter(|r| judged(apps, r, now))
                    .filter(|r| !matches!(r.outcome, Some((k, _)) if k != OutcomeKind::Timeout))
                    .map(|r| r.start)
                    .max();
                let rec = last.map_or(Duration::ZERO, |t| t.saturating_since(*from));
                (what.clone(), rec)
            })
            .collect()
    }
}

/// Whether the request oracle judges `r` as of `now`: its requester lived until a second past
/// its deadline.
fn judged(apps: &Apps, r: &crate::apps::RequestRecord, now: Time) -> bool {
    let horizon = r.deadline + Duration::from_secs(1);
    apps.list[r.app].until.is_none_or(|u| u > horizon) && horizon <= now
}

/// Timed-out judged requests of `quiet` (records outside fault windows), by (requester's
/// host, host of the member it reached, whether a partition separated them), judged as of
/// `now` (as the request oracle does).
pub(super) fn quiet_timeouts(
    quiet: &Apps,
    f: &Faults,
    now: Time,
) -> BTreeMap<(u32, Option<u32>, bool), u64> {
    let mut m = BTreeMap::new();
    for r in &quiet.requests {
        if !judged(quiet, r, now) || !matches!(r.outcome, Some((OutcomeKind::Timeout, _))) {
            continue;
        }
        let from = quiet.list[r.app].node;
        let to = r.served_by.map(|a| quiet.list[a].node);
        let cut = to.is_some_and(|to| {
            f.cuts
                .iter()
                .any(|(_, _, side)| side.contains(&from) != side.contains(&to))
        });
        *m.entry((from, to, cut)).or_default() += 1;
    }
    m
}
