//! The real stack under turmoil: petal-node's runtime and petal-client applications on a few
//! simulated hosts. Every messaging pattern works end to end, the oracles find nothing wrong,
//! and a run is a function of its seed (same seed, same trace hash; another seed, another).

use std::time::Duration;

use petal_core::GroupKind;
use petal_sim::realstack::{Fault, FaultKind, RunConfig, RunResult, run};

fn check_clean(r: &RunResult) {
    let a = &r.rec.apps;
    let q = a.request_stats(r.work_from, r.work_until, r.end);
    assert!(q.clean(), "request oracle: {q:?}");
    let t = a.tunnel_stats(r.work_from, r.work_until);
    assert_eq!(t.corrupt, 0, "tunnel oracle: {t:?}");
    assert!(
        r.rec.errors.is_empty(),
        "application errors: {:?}",
        r.rec.errors
    );
    assert_eq!(a.stray_events, 0);
}

#[test]
fn every_pattern_works_through_the_real_stack_and_runs_are_deterministic() {
    let cfg = RunConfig::small(7, 4);
    let r = run(&cfg).expect("run");
    eprintln!(
        "4 hosts, {:?} simulated in {:?} wall; hash {}",
        cfg.end(),
        r.wall,
        r.trace_hash
    );
    check_clean(&r);
    let a = &r.rec.apps;
    let q = a.request_stats(r.work_from, r.work_until, r.end);
    assert!(q.judged >= 20, "requests judged: {q:?}");
    assert_eq!(
        q.judged,
        q.replies + q.faults,
        "every request answered: {q:?}"
    );
    assert!(q.replies > 0 && q.faults > 0, "replies and faults: {q:?}");
    let (settle, grace) = (Duration::from_secs(1), Duration::from_secs(1));
    for kind in [GroupKind::Topic, GroupKind::Cluster] {
        let e = a.event_stats(Some(kind), r.work_from, r.work_until, settle, grace);
        assert!(e.expected > 0, "{kind:?}: nothing expected: {e:?}");
        assert_eq!(e.once, e.expected, "{kind:?}: {e:?}");
        assert_eq!(e.duplicates, 0, "{kind:?}: {e:?}");
    }
    let t = a.tunnel_stats(r.work_from, r.work_until);
    assert!(t.opened > 0 && t.completed == t.opened, "tunnels: {t:?}");

    let again = run(&cfg).expect("second run");
    assert_eq!(r.trace_hash, again.trace_hash, "same seed, same trace");
    let other = run(&RunConfig::small(8, 4)).expect("other seed");
    assert_ne!(
        r.trace_hash, other.trace_hash,
        "another seed, another trace"
    );
}

#[test]
fn crashes_restarts_and_partitions_keep_the_oracles_clean_and_replay_identically() {
    let mut cfg = RunConfig::small(3, 6);
    cfg.run = Duration::from_secs(12);
    cfg.drain = Duration::from_secs(4);
    let f = |at_s: f64, action, nodes: Vec<u32>| Fault {
        at_s,
        action,
        nodes,
    };
    cfg.faults = vec![
        f(1.0, FaultKind::Crash, vec![2]),
        f(3.0, FaultKind::Restart, vec![2]),
        f(5.0, FaultKind::Partition, vec![1, 4]),
        f(8.0, FaultKind::Heal, vec![]),
    ];
    let r = run(&cfg).expect("run");
    eprintln!(
        "6 hosts with faults: {:?} wall; hash {}",
        r.wall, r.trace_hash
    );
    check_clean(&r);
    assert_eq!(r.crashes.len(), 1);
    assert_eq!(r.restarts.len(), 1);
    assert_eq!(r.partitions.len(), 1);
    // The restarted host's applications are back, as new records.
    assert_eq!(r.rec.boots[&2].len(), 2);
    assert_eq!(r.rec.apps.list.iter().filter(|a| a.node == 2).count(), 4);
    // After the heal the network serves again: the last seconds' requests are all answered.
    let late = petal_core::Time::from_micros(r.work_until.as_micros() - 2_000_000);
    let q = r.rec.apps.request_stats(late, r.work_until, r.end);
    assert!(q.judged > 0 && q.judged == q.replies + q.faults, "{q:?}");
    let again = run(&cfg).expect("second run");
    assert_eq!(r.trace_hash, again.trace_hash, "same seed, same trace");
}

/// A peer link whose TCP stream lost segments during a partition stalls for good under
/// turmoil (no retransmission; in real networks a black-holed stream does the same until TCP
/// gives up). Peers that never ping each other (not leaf-set neighbours) but send replies
/// straight to each other used to lose every reply over such a link long after the heal;
/// links now close after `link_idle_timeout` of silence and are dialed afresh.
#[test]
fn requests_are_answered_again_after_a_dropping_partition_heals() {
    let mut cfg = RunConfig::small(1, 32);
    cfg.workload.requests_per_s = 100.0;
    cfg.run = Duration::from_secs(40);
    cfg.faults = vec![
        Fault {
            at_s: 2.0,
            action: FaultKind::Partition,
            nodes: vec![2, 6, 10, 14, 18, 22, 26, 30],
        },
        Fault {
            at_s: 12.0,
            action: FaultKind::Heal,
            nodes: vec![],
        },
    ];
    let r = run(&cfg).expect("run");
    check_clean(&r);
    // From 10 s after the heal on, every request must be answered.
    let from = r.work_from + Duration::from_secs(22);
    let q = r.rec.apps.request_stats(from, r.work_until, r.end);
    assert!(q.judged > 0);
    assert_eq!(
        q.timeouts, 0,
        "{} of {} judged requests timed out 10 s or more after the heal",
        q.timeouts, q.judged
    );
}

/// Zero configuration under turmoil: no host is given a seed. The hosts start in two halves
/// that cannot reach each other; each half finds itself by discovery beacons and forms a ring;
/// after the heal the rings merge. Clusters svc-0 and svc-2 have members on even hosts only,
/// svc-1 and svc-3 on odd hosts only, so requests across the halves are answered only once the
/// rings are one. The run is a function of its seed.
#[test]
fn discovery_forms_rings_and_halves_started_apart_merge_deterministically() {
    let mut cfg = RunConfig::small(5, 10);
    cfg.discovery = true;
    cfg.run = Duration::from_secs(16);
    cfg.faults = vec![
        Fault {
            at_s: -100.0,
            action: FaultKind::Partition,
            nodes: vec![0, 2, 4, 6, 8],
        },
        Fault {
            at_s: 4.0,
            action: FaultKind::Heal,
            nodes: vec![],
        },
    ];
    let r = run(&cfg).expect("run");
    eprintln!(
        "discovery, 10 hosts: {:?} wall; hash {}",
        r.wall, r.trace_hash
    );
    check_clean(&r);
    let a = &r.rec.apps;
    // Before the heal, each half serves its own clusters: requests that end before the heal
    // and were answered exist, and some timed out (the other half's clusters).
    let heal = r.work_from + Duration::from_secs(4);
    let before = a.request_stats(r.work_from, heal, r.end);
    assert!(before.replies > 0 && before.timeouts > 0, "{before:?}");
    // From 3 s after the heal on, every request is answered: the halves are one ring.
    let q = a.request_stats(heal + Duration::from_secs(3), r.work_until, r.end);
    assert!(q.judged >= 100, "{q:?}");
    assert_eq!(
        q.timeouts, 0,
        "requests not answered after the merge: {q:?}"
    );
    // Every node ends with the full leaf set (all 9 others).
    for h in 0..10u32 {
        let (_, s) = r
            .rec
            .node_stats
            .range((h, 0)..=(h, u32::MAX))
            .next_back()
            .expect("a sample");
        assert!(s.ready && s.leaf_set == 9, "host {h}: {s:?}");
        assert!(s.runtime.beacons_sent > 0 && s.runtime.beacons_received > 0);
    }
    let again = run(&cfg).expect("second run");
    assert_eq!(r.trace_hash, again.trace_hash, "same seed, same trace");
}
