//! The messaging oracles: judgements over what the simulated applications saw ([`Apps`]).
//!
//! - Requests: every request has at most one outcome, and exactly one when its requester lives
//!   past its deadline; a reply or fault answers that very request; latency and hops. Every
//!   outcome the requester is told of counts, a second one too (`multiple`).
//! - Events: every member or subscriber present for a whole window around an event (from
//!   `settle` before it to `grace` after it, publisher alive too) gets it exactly once; every
//!   delivery beyond the first, to anyone, stable or not, counts (`duplicates`).
//! - Fairness: Jain's index of requests served per unit of capacity.
//! - Tunnels: completed (every byte in order, both ways, graceful close), or failed with a
//!   reason; never corrupt, confirmed twice or accepted twice.
//!
//! Shares are over what was judged; a target on a window that judged nothing is missed, not
//! met (see the scenario runners' `share_target`).

use std::collections::BTreeMap;
use std::time::Duration;

use petal_core::{GroupKind, Time};
use serde::Serialize;

use crate::apps::{Apps, EventRecord, OutcomeKind, TunnelEnd};

/// What the request oracle found over a window of issue times.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestStats {
    /// Requests issued in the window.
    pub issued: u64,
    /// Of those, requests whose requester lived past the deadline (each must have one outcome).
    pub judged: u64,
    /// Judged requests answered with a reply.
    pub replies: u64,
    /// Judged requests answered with a fault.
    pub faults: u64,
    /// Judged requests that timed out.
    pub timeouts: u64,
    /// Judged requests without any outcome (a violation).
    pub missing: u64,
    /// Requests with more than one outcome (a violation).
    pub multiple: u64,
    /// Requests answered with another request's reply or fault (a violation).
    pub wrong: u64,
    /// Requests delivered to members more than once.
    pub redelivered: u64,
    /// Latency of answered requests (reply or fault), microseconds.
    #[serde(skip)]
    pub latencies_us: Vec<u64>,
    /// Overlay plus tree hops of delivered requests.
    #[serde(skip)]
    pub hops: Vec<u8>,
}

impl RequestStats {
    /// Judged requests answered (reply or fault) over judged requests.
    pub fn answered_ratio(&self) -> f64 {
        ratio(self.replies + self.faults, self.judged)
    }

    /// Judged requests with exactly one outcome and no violation, over judged requests.
    pub fn one_outcome_ratio(&self) -> f64 {
        ratio(
            self.judged
                .saturating_sub(self.missing + self.multiple + self.wrong),
            self.judged,
        )
    }

    /// True when no oracle violation was seen.
    pub fn clean(&self) -> bool {
        self.missing == 0 && self.multiple == 0 && self.wrong == 0
    }
}

/// What the event oracle found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventStats {
    /// Events published in the window.
    pub events: u64,
    /// (event, stable recipient) pairs expected.
    pub expected: u64,
    /// Expected pairs delivered exactly once.
    pub once: u64,
    /// Expected pairs never delivered.
    pub missing: u64,
    /// Expected pairs delivered more than once (neither once nor missing).
    pub doubled: u64,
    /// Deliveries beyond the first, to anyone, stable or not (a violation).
    pub duplicates: u64,
    /// Delivery delays of expected pairs: (publishing node, receiving node, delay in µs).
    #[serde(skip)]
    pub delays: Vec<(u32, u32, u64)>,
}

impl EventStats {
    /// True when no expected pair was missed and nothing was delivered twice.
    pub fn clean(&self) -> bool {
        self.missing == 0 && self.doubled == 0 && self.duplicates == 0
    }

    /// Expected deliveries made exactly once, over expected deliveries.
    pub fn delivered_ratio(&self) -> f64 {
        ratio(self.once, self.expected)
    }
}

impl TunnelStats {
    /// Tunnels judged: those opened, but for the ones whose opener went away before they
    /// ended ([`TunnelStats::opener_gone`]).
    pub fn judged(&self) -> u64 {
        self.opened - self.opener_gone
    }

    /// Violations: corrupt tunnels, doubled confirms and doubled accepts.
    pub fn violations(&self) -> u64 {
        self.corrupt + self.doubled_confirms + self.doubled_accepts
    }
}

/// Tunnel outcomes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TunnelStats {
    /// Tunnels opened.
    pub opened: u64,
    /// Completed: every message echoed in order, closed gracefully.
    pub completed: u64,
    /// Failed to open in time.
    pub open_failed: u64,
    /// Closed with a reason.
    pub failed: u64,
    /// Still running at the end, the opening application still there (a tunnel with no
    /// outcome: a miss).
    pub running: u64,
    /// Not completed, and the opening application went away (its node crashed or left)
    /// before the tunnel ended (still running at the end, or closed by the acceptor's side
    /// afterwards), less than [`TUNNEL_STALL`] after the tunnel last moved: no application
    /// is left to see the outcome, so these are not judged, as a request is not when its
    /// requester died. Tunnels the acceptor's death ended are judged (the opener must see
    /// them fail), and so is one that had not moved for `TUNNEL_STALL` when its opener went:
    /// it had stalled, a miss whatever came after.
    pub opener_gone: u64,
    /// Data out of order, lost or duplicated on a tunnel (a violation).
    pub corrupt: u64,
    /// Tunnels whose opener was told more than once that they opened (a violation).
    pub doubled_confirms: u64,
    /// Tunnels whose data reached more than one acceptor end (a violation).
    pub doubled_accepts: u64,
    /// The distinct failure reasons seen, with counts.
    pub reasons: BTreeMap<String, u64>,
}

/// `a / b`, NaN when nothing was judged (`b == 0`): a share of nothing is no evidence, so it
/// reads as `-` in reports, `null` in results and fails every `>=` comparison.
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// How long after a deadline a requester must live for its request to be judged.
const JUDGE_MARGIN: Duration = Duration::from_secs(1);

/// How long a tunnel may go without moving (opened, confirmed, an echo back) before it
/// counts as stalled: a tunnel whose opener went away later than this after its last move
/// is judged (see [`TunnelStats::opener_gone`]). Five seconds: the request timeout of the
/// messaging scenarios, several times the core's failure detection.
pub const TUNNEL_STALL: Duration = Duration::from_secs(5);

impl Apps {
    /// Judges requests issued in `[from, to)`, as of `now`.
    pub fn request_stats(&self, from: Time, to: Time, now: Time) -> RequestStats {
        let mut s = RequestStats::default();
        for r in self
            .requests
            .iter()
            .filter(|r| r.start >= from && r.start < to)
        {
            s.issued += 1;
            s.multiple += u64::from(r.outcomes > 1);
            s.wrong += u64::from(r.wrong_reply);
            s.redelivered += u64::from(r.deliveries > 1);
            if let Some(h) = r.hops {
                s.hops.push(h);
            }
            if !self.judged(r, now) {
                continue;
            }
            s.judged += 1;
            match r.outcome {
                None => s.missing += 1,
                Some((OutcomeKind::Reply, t)) => {
                    s.replies += 1;
                    s.latencies_us.push(t.as_micros() - r.start.as_micros());
                }
                Some((OutcomeKind::Fault, t)) => {
                    s.faults += 1;
                    s.latencies_us.push(t.as_micros() - r.start.as_micros());
                }
                Some((OutcomeKind::Timeout, _)) => s.timeouts += 1,
            }
        }
        s
    }

    /// True when request `r` is judged at `now`: its requester lived until [`JUDGE_MARGIN`]
    /// past its deadline, which has passed.
    fn judged(&self, r: &crate::apps::RequestRecord, now: Time) -> bool {
        let horizon = r.deadline + JUDGE_MARGIN;
        let lived = self.list[r.app].until.is_none_or(|u| u > horizon);
        lived && horizon <= now
    }

    /// Of the judged requests issued in `[from, to)` that were not answered (timed out, or no
    /// outcome; a fault is an answer, as in [`RequestStats::answered_ratio`]), how many were
    /// still outstanding just after `at` (no outcome up to `at`: the engine runs every event
    /// at `at` before a fault that starts then), and how many there are: requests that a fault
    /// starting at `at` caught in flight.
    pub fn unanswered_outstanding_at(
        &self,
        from: Time,
        to: Time,
        at: Time,
        now: Time,
    ) -> (u64, u64) {
        let mut caught = 0;
        let mut unanswered = 0;
        for r in self
            .requests
            .iter()
            .filter(|r| r.start >= from && r.start < to && self.judged(r, now))
        {
            match r.outcome {
                Some((OutcomeKind::Reply | OutcomeKind::Fault, _)) => {}
                Some((OutcomeKind::Timeout, t)) => {
                    unanswered += 1;
                    caught += u64::from(t > at);
                }
                None => {
                    unanswered += 1;
                    caught += 1;
                }
            }
        }
        (caught, unanswered)
    }

    /// Judges events of `kind` (both kinds when `None`) published in `[from, to)`: recipients
    /// are the members or subscribers present from `settle` before the event to `grace` after.
    pub fn event_stats(
        &self,
        kind: Option<GroupKind>,
        from: Time,
        to: Time,
        settle: Duration,
        grace: Duration,
    ) -> EventStats {
        self.event_stats_where(kind, from, to, settle, grace, |_, _| true)
    }

    /// [`Apps::event_stats`] with a recipient filter: an expected recipient must also pass
    /// `counts(event, recipient's node)` (e.g. the publisher's side of a partition).
    /// Duplicates are counted over the judged events, to anyone.
    pub fn event_stats_where(
        &self,
        kind: Option<GroupKind>,
        from: Time,
        to: Time,
        settle: Duration,
        grace: Duration,
        counts: impl Fn(&EventRecord, u32) -> bool,
    ) -> EventStats {
        let mut s = EventStats::default();
        let judged = self
            .events
            .iter()
            .filter(|e| e.at >= from && e.at < to && kind.is_none_or(|k| k == e.kind));
        for e in judged {
            s.duplicates += e
                .deliveries
                .values()
                .map(|(n, _)| u64::from(n.saturating_sub(1)))
                .sum::<u64>();
            s.events += 1;
            let start =
                Time::from_micros(e.at.as_micros().saturating_sub(crate::micros_u64(settle)));
            let end = e.at + grace;
            if self.died_between(e.node, e.at, end) {
                continue;
            }
            for (i, a) in self.list.iter().enumerate() {
                let joined = match e.kind {
                    GroupKind::Topic => a.topics.get(&e.name).copied(),
                    GroupKind::Cluster => {
                        (a.spec.cluster.as_deref() == Some(&e.name)).then_some(a.since)
                    }
                };
                let stable = joined.is_some_and(|j| j <= start) && a.until.is_none_or(|u| u > end);
                if !stable || !counts(e, a.node) {
                    continue;
                }
                s.expected += 1;
                match e.deliveries.get(&i) {
                    Some(&(1, t)) => {
                        s.once += 1;
                        s.delays
                            .push((e.node, a.node, t.as_micros() - e.at.as_micros()));
                    }
                    Some(_) => s.doubled += 1,
                    None => s.missing += 1,
                }
            }
        }
        s
    }

    /// Jain's fairness index of requests served per unit of capacity, over the members of
    /// `cluster` that were present for the whole of `[from, to)`, counting requests issued in
    /// that window. `None` with no such member.
    pub fn fairness(&self, cluster: &str, from: Time, to: Time) -> Option<f64> {
        let mut served: BTreeMap<usize, u64> = BTreeMap::new();
        for (i, a) in self.list.iter().enumerate() {
            if a.spec.cluster.as_deref() == Some(cluster)
                && a.since <= from
                && a.until.is_none_or(|u| u >= to)
            {
                served.insert(i, 0);
            }
        }
        if served.is_empty() {
            return None;
        }
        for r in self
            .requests
            .iter()
            .filter(|r| r.start >= from && r.start < to)
        {
            if let Some(n) = r.served_by.and_then(|m| served.get_mut(&m)) {
                *n += 1;
            }
        }
        let x: Vec<f64> = served
            .iter()
            .map(|(i, n)| *n as f64 / f64::from(self.list[*i].spec.capacity.max(1)))
            .collect();
        Some(jain(&x))
    }

    /// Tunnel outcomes over tunnels opened in `[from, to)`.
    pub fn tunnel_stats(&self, from: Time, to: Time) -> TunnelStats {
        let mut s = TunnelStats::default();
        for (i, t) in self
            .tunnels
            .iter()
            .enumerate()
            .filter(|(_, t)| t.start >= from && t.start < to)
        {
            s.opened += 1;
            s.corrupt += u64::from(t.corrupt);
            s.doubled_confirms += u64::from(t.confirms > 1);
            s.doubled_accepts += u64::from(t.acceptors > 1);
            // The opening application went away before the tunnel ended (whatever the
            // acceptor then saw of it), while the tunnel was still moving: not judged. One
            // that ended as the application went (a leaving node fails its tunnels at once)
            // was seen to end, and one that had stalled for `TUNNEL_STALL` before had
            // already failed its opener: both judged.
            let moved = self.tunnel_progress.get(i).copied().unwrap_or(t.start);
            let gone = self.list[t.opener]
                .until
                .is_some_and(|u| t.end_at.is_none_or(|e| e > u) && u < moved + TUNNEL_STALL);
            match &t.end {
                TunnelEnd::Completed => s.completed += 1,
                _ if gone => s.opener_gone += 1,
                TunnelEnd::Running => s.running += 1,
                TunnelEnd::OpenFailed => s.open_failed += 1,
                TunnelEnd::Failed(why) => {
                    s.failed += 1;
                    *s.reasons.entry(why.clone()).or_default() += 1;
                }
            }
        }
        s
    }

    /// True when node `node` crashed or left in `[from, to]`.
    pub fn died_between(&self, node: u32, from: Time, to: Time) -> bool {
        self.deaths
            .get(&node)
            .is_some_and(|d| d.iter().any(|&t| t >= from && t <= to))
    }
}

/// Jain's fairness index: `(sum x)^2 / (n * sum x^2)`; 1 when all equal, 1/n when one takes all.
pub fn jain(x: &[f64]) -> f64 {
    let sum: f64 = x.iter().sum();
    let sq: f64 = x.iter().map(|v| v * v).sum();
    if sq == 0.0 {
        1.0
    } else {
        sum * sum / (x.len() as f64 * sq)
    }
}

#[cfg(test)]
mod tests {
    use super::jain;

    #[test]
    fn jain_index_bounds() {
        assert!((jain(&[1.0, 1.0, 1.0, 1.0]) - 1.0).abs() < 1e-12);
        assert!((jain(&[4.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
        assert!((jain(&[2.0, 1.0]) - 0.9).abs() < 1e-12);
    }
}
