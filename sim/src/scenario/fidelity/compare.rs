//! The comparisons, pure: counters both harnesses keep (petal-core's, summed over the nodes),
//! requests and event deliveries paired across the two runs, distances between samples.

use std::collections::BTreeMap;

use crate::apps::{Apps, OutcomeKind};

/// The petal-core counters the report compares, by name.
fn core_fields(s: &petal_core::Stats) -> [(&'static str, u64); 25] {
    [
        ("messages_sent", s.messages_sent),
        ("messages_received", s.messages_received),
        ("pings_sent", s.pings_sent),
        ("routes_forwarded", s.routes_forwarded),
        ("routes_delivered", s.routes_delivered),
        ("hop_timeouts", s.hop_timeouts),
        ("reroutes", s.reroutes),
        ("routes_dropped", s.routes_dropped),
        ("join_retries", s.join_retries),
        ("proximity_swaps", s.proximity_swaps),
        ("requests_sent", s.requests_sent),
        ("requests_delivered", s.requests_delivered),
        ("requests_answered", s.requests_answered),
        ("requests_timed_out", s.requests_timed_out),
        ("replies_late", s.replies_late),
        ("asks_forwarded", s.asks_forwarded),
        ("asks_parked", s.asks_parked),
        ("asks_unplaced", s.asks_unplaced),
        ("events_published", s.events_published),
        ("events_forwarded", s.events_forwarded),
        ("events_delivered", s.events_delivered),
        ("events_duplicate", s.events_duplicate),
        ("events_lost", s.events_lost),
        ("group_parent_changes", s.group_parent_changes),
        ("group_roots_taken", s.group_roots_taken),
    ]
}

/// [`core_fields`] summed over nodes.
pub(super) fn sum_core<'a>(
    stats: impl IntoIterator<Item = &'a petal_core::Stats>,
) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    for s in stats {
        for (k, v) in core_fields(s) {
            *m.entry(k).or_insert(0) += v;
        }
    }
    m
}

/// petal-node's runtime counters summed over nodes.
pub(super) fn sum_runtime<'a>(
    stats: impl IntoIterator<Item = &'a petal_node::RuntimeCounters>,
) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    for s in stats {
        for (k, v) in s.fields() {
            *m.entry(k).or_insert(0) += v;
        }
    }
    m
}

/// What each counter of `to` gained since `from` (counters only grow; a counter missing from
/// `from` counts from 0).
pub(super) fn delta(
    from: &BTreeMap<&'static str, u64>,
    to: &BTreeMap<&'static str, u64>,
) -> BTreeMap<&'static str, u64> {
    to.iter()
        .map(|(k, v)| (*k, v.saturating_sub(from.get(k).copied().unwrap_or(0))))
        .collect()
}

/// `num / den` of two counters of `m`, `None` when the denominator is 0.
pub(super) fn per(m: &BTreeMap<&'static str, u64>, num: &str, den: &str) -> Option<f64> {
    let d = m.get(den).copied().unwrap_or(0);
    (d > 0).then(|| m.get(num).copied().unwrap_or(0) as f64 / d as f64)
}

/// `(real - des) / des`: how far the real value is from the simulator's, as a fraction of
/// the simulator's (`None` when the simulator's is 0 or either is missing).
pub(super) fn rel(des: Option<f64>, real: Option<f64>) -> Option<f64> {
    let (d, r) = (des?, real?);
    (d != 0.0).then(|| (r - d) / d)
}

/// Two-sample Kolmogorov-Smirnov distance: the largest gap between the empirical CDFs (0 for
/// equal samples, 1 for disjoint ones; `None` when either is empty).
pub(super) fn ks_distance(a: &[u64], b: &[u64]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] == x {
            i += 1;
        }
        while j < b.len() && b[j] == x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    Some(d)
}

/// Requests or event deliveries of the two runs, matched one to one.
#[derive(Clone, Debug, Default)]
pub(super) struct Paired {
    /// Matched items with a latency (reply, or delivery) in both: real minus simulator, µs.
    pub diffs_us: Vec<i64>,
    /// Of those, the requests served by the same host's member in both runs (empty for
    /// deliveries).
    pub same_member_diffs_us: Vec<i64>,
    /// Matched items answered or delivered in one run only.
    pub one_sided: u64,
    /// Items of one run with no counterpart (a different number issued or published by a
    /// host; 0 when both ran the script alike).
    pub unmatched: u64,
    /// Largest gap between the two runs' issue times of a matched item, µs (0 when both
    /// issued the script's operations at their very times).
    pub max_start_skew_us: u64,
}

/// Requests per requesting host, in issue order.
fn requests_by_host(apps: &Apps) -> BTreeMap<u32, Vec<usize>> {
    let mut m: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (g, r) in apps.requests.iter().enumerate() {
        m.entry(apps.list[r.app].node).or_default().push(g);
    }
    m
}

/// Matches the k-th request of each host in one run with the k-th of the same host in the
/// other (both issue a host's scripted requests in order).
pub(super) fn pair_requests(des: &Apps, real: &Apps) -> Paired {
    let (d, r) = (requests_by_host(des), requests_by_host(real));
    let mut p = Paired::default();
    let hosts: std::collections::BTreeSet<u32> = d.keys().chain(r.keys()).copied().collect();
    let empty = Vec::new();
    for h in hosts {
        let (dg, rg) = (d.get(&h).unwrap_or(&empty), r.get(&h).unwrap_or(&empty));
        p.unmatched += dg.len().abs_diff(rg.len()) as u64;
        for (&a, &b) in dg.iter().zip(rg) {
            let (x, y) = (&des.requests[a], &real.requests[b]);
            let skew = x.start.as_micros().abs_diff(y.start.as_micros());
            p.max_start_skew_us = p.max_start_skew_us.max(skew);
            let latency = |o: Option<(OutcomeKind, petal_core::Time)>, start: petal_core::Time| {
                o.filter(|(k, _)| *k == OutcomeKind::Reply)
                    .map(|(_, t)| t.as_micros().saturating_sub(start.as_micros()))
            };
            let member = |apps: &Apps, m: Option<usize>| m.map(|m| apps.list[m].node);
            let same = member(des, x.served_by) == member(real, y.served_by);
            match (latency(x.outcome, x.start), latency(y.outcome, y.start)) {
                (Some(a), Some(b)) => {
                    p.diffs_us.push(signed(b) - signed(a));
                    if same {
                        p.same_member_diffs_us.push(signed(b) - signed(a));
                    }
                }
                (None, None) => {}
                _ => p.one_sided += 1,
            }
        }
    }
    p
}

fn signed(us: u64) -> i64 {
    i64::try_from(us).unwrap_or(i64::MAX)
}

/// The first delivery time of every (event, recipient) of a run, the event numbered k-th of
/// its publishing host and the recipient named by its host and role (service or client).
type Deliveries = BTreeMap<(u32, usize, u32, bool), u64>;

fn deliveries(apps: &Apps) -> (Deliveries, BTreeMap<u32, usize>) {
    let mut per_host: BTreeMap<u32, usize> = BTreeMap::new();
    let mut m = Deliveries::new();
    for e in &apps.events {
        let k = per_host.entry(e.node).or_insert(0);
        for (&app, &(_, t)) in &e.deliveries {
            let a = &apps.list[app];
            let delay = t.as_micros().saturating_sub(e.at.as_micros());
            m.insert((e.node, *k, a.node, a.spec.cluster.is_some()), delay);
        }
        *k += 1;
    }
    (m, per_host)
}

/// Matches event deliveries: the k-th event of a host in both runs, to the same recipient.
pub(super) fn pair_deliveries(des: &Apps, real: &Apps) -> Paired {
    let ((d, dn), (r, rn)) = (deliveries(des), deliveries(real));
    let mut p = Paired::default();
    let hosts: std::collections::BTreeSet<u32> = dn.keys().chain(rn.keys()).copied().collect();
    for h in hosts {
        let (a, b) = (dn.get(&h).copied(), rn.get(&h).copied());
        p.unmatched += a.unwrap_or(0).abs_diff(b.unwrap_or(0)) as u64;
    }
    for (key, &dd) in &d {
        match r.get(key) {
            Some(&rd) => p.diffs_us.push(signed(rd) - signed(dd)),
            None => p.one_sided += 1,
        }
    }
    p.one_sided += r.keys().filter(|k| !d.contains_key(*k)).count() as u64;
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::{App, AppSpec, EventRecord, RequestRecord};
    use petal_core::{ConnId, GroupKind, Time};

    #[test]
    fn ks_distance_of_equal_shifted_and_disjoint_samples() {
        assert_eq!(ks_distance(&[1, 2, 3], &[3, 2, 1]), Some(0.0));
        assert_eq!(ks_distance(&[1, 2], &[5, 6]), Some(1.0));
        let d = ks_distance(&[1, 2, 3, 4], &[2, 3, 4, 5]).unwrap();
        assert!((d - 0.25).abs() < 1e-12, "{d}");
        assert_eq!(ks_distance(&[], &[1]), None);
    }

    #[test]
    fn ratios_and_deltas() {
        let a: BTreeMap<&'static str, u64> = [("x", 3), ("y", 10)].into();
        let b: BTreeMap<&'static str, u64> = [("x", 7), ("y", 30), ("z", 1)].into();
        let d = delta(&a, &b);
        assert_eq!(d, [("x", 4), ("y", 20), ("z", 1)].into());
        assert_eq!(per(&d, "y", "x"), Some(5.0));
        assert_eq!(per(&d, "x", "w"), None);
        assert_eq!(rel(Some(10.0), Some(11.0)), Some(0.1));
        assert_eq!(rel(Some(0.0), Some(1.0)), None);
    }

    fn app(node: u32, member: bool) -> App {
        App {
            node,
            conn: ConnId(1),
            spec: if member {
                AppSpec::member("svc-0", 0)
            } else {
                AppSpec::client()
            },
            since: Time::ZERO,
            until: None,
            served: 0,
            busy: 0,
            waiting: Default::default(),
            topics: BTreeMap::new(),
        }
    }

    fn request(app: usize, start_ms: u64, reply_ms: Option<u64>) -> RequestRecord {
        RequestRecord {
            app,
            start: Time::from_millis(start_ms),
            deadline: Time::from_millis(start_ms + 1000),
            outcome: reply_ms.map(|t| (OutcomeKind::Reply, Time::from_millis(t))),
            outcomes: u32::from(reply_ms.is_some()),
            deliveries: 1,
            served_by: None,
            hops: None,
            wrong_reply: false,
        }
    }

    #[test]
    fn requests_pair_per_host_in_issue_order() {
        let mut des = Apps::default();
        des.list = vec![app(0, false), app(1, false)];
        des.requests = vec![
            request(0, 10, Some(20)),
            request(1, 10, Some(15)),
            request(0, 30, Some(31)),
        ];
        let mut real = Apps::default();
        real.list = vec![app(1, false), app(0, false)];
        // Recorded in another global order; per host the same.
        real.requests = vec![
            request(0, 11, Some(20)),
            request(1, 10, Some(24)),
            request(1, 30, None),
            request(0, 50, Some(51)),
        ];
        des.list.push(app(2, true));
        real.list.push(app(2, true));
        real.list.push(app(3, true));
        des.requests[0].served_by = Some(2);
        real.requests[1].served_by = Some(2);
        real.requests[0].served_by = Some(3);
        des.requests[1].served_by = Some(2);
        let p = pair_requests(&des, &real);
        // Host 0: 14 - 10 and (none vs 1: one-sided); host 1: 9 - 5, then one unmatched.
        assert_eq!(p.diffs_us, vec![4_000, 4_000]);
        // Host 0's first request went to host 2's member in both runs; host 1's did not.
        assert_eq!(p.same_member_diffs_us, vec![4_000]);
        assert_eq!(p.one_sided, 1);
        assert_eq!(p.unmatched, 1);
        assert_eq!(p.max_start_skew_us, 1_000);
    }

    #[test]
    fn deliveries_pair_by_event_and_recipient() {
        let event = |node, at_ms, to: &[(usize, u64)]| EventRecord {
            kind: GroupKind::Topic,
            name: "t".into(),
            node,
            at: Time::from_millis(at_ms),
            deliveries: to
                .iter()
                .map(|&(a, t)| (a, (1, Time::from_millis(t))))
                .collect(),
        };
        let mut des = Apps::default();
        des.list = vec![app(0, false), app(1, false), app(1, true)];
        des.events = vec![event(0, 100, &[(1, 110), (2, 112)])];
        let mut real = Apps::default();
        real.list = vec![app(1, true), app(1, false), app(0, false)];
        real.events = vec![event(0, 100, &[(1, 113)])];
        let p = pair_deliveries(&des, &real);
        assert_eq!(p.diffs_us, vec![3_000]);
        assert_eq!(p.one_sided, 1);
        assert_eq!(p.unmatched, 0);
    }
}
