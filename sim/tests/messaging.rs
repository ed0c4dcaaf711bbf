//! Multi-node messaging tests in the discrete-event simulator, judged by the oracles: requests,
//! broadcasts, publish/subscribe and tunnels in stable overlays, under crashes, and with a
//! stalled member. Small sizes, several seeds: the default test run.

use std::time::Duration;

use petal_core::{GroupKind, Time};
use petal_sim::apps::AppSpec;
use petal_sim::topology::TopologyConfig;
use petal_sim::{Sim, SimConfig};
use rand::Rng;

fn sim(seed: u64) -> Sim {
    eprintln!("master seed {seed}");
    let mut cfg = SimConfig::new(seed, TopologyConfig::default());
    cfg.check_invariants = true;
    cfg.wire_check = true;
    Sim::new(cfg)
}

fn advance(sim: &mut Sim, ms: u64) {
    let t = sim.now();
    sim.run_until(Time::from_micros(t.as_micros() + ms * 1000));
}

fn grow(sim: &mut Sim, n: usize) {
    for _ in 0..n {
        sim.add_node();
        advance(sim, 40);
    }
    advance(sim, 10_000);
    assert_eq!(sim.ready_count(), n, "every node joined");
}

/// Members of cluster "svc" on the first `members` nodes, a client on every node.
fn apps(sim: &mut Sim, members: u32, service_us: u64) -> (Vec<usize>, Vec<usize>) {
    let n = sim.node_count() as u32;
    let m = (0..members)
        .map(|i| {
            sim.add_app(i % n, AppSpec::member("svc", service_us))
                .unwrap()
        })
        .collect();
    let c = (0..n)
        .map(|i| sim.add_app(i, AppSpec::client()).unwrap())
        .collect();
    (m, c)
}

#[test]
fn requests_get_exactly_one_outcome_in_a_stable_overlay() {
    for seed in 1..=3 {
        let mut s = sim(seed);
        grow(&mut s, 60);
        let (members, clients) = apps(&mut s, 12, 2_000);
        advance(&mut s, 3_000);
        let from = s.now();
        for _ in 0..600 {
            let c = clients[s.rng().random_range(0..clients.len())];
            s.request(c, "svc", 5_000, 16).expect("request issued");
            advance(&mut s, 5);
        }
        let to = s.now();
        advance(&mut s, 8_000);
        let r = s.apps.request_stats(from, to, s.now());
        assert_eq!(r.judged, 600, "seed {seed}");
        assert!(r.clean(), "seed {seed}: {r:?}");
        assert_eq!(r.replies, 600, "seed {seed}: every request answered: {r:?}");
        assert_eq!(s.apps.stray_events, 0);
        let f = s.apps.fairness("svc", from, to).unwrap();
        assert!(f >= 0.9, "seed {seed}: fairness {f}");
        for &m in &members {
            assert!(s.apps.list[m].served > 0, "seed {seed}: member {m} idle");
        }
    }
}

#[test]
fn faults_and_timeouts_are_outcomes_too() {
    let mut s = sim(7);
    grow(&mut s, 30);
    let mut faulty = AppSpec::member("flaky", 1_000);
    faulty.fault_ratio = 1.0;
    s.add_app(3, faulty).unwrap();
    let mut slow = AppSpec::member("slow", 400_000);
    slow.capacity = 1;
    s.add_app(4, slow).unwrap();
    let c = s.add_app(9, AppSpec::client()).unwrap();
    advance(&mut s, 3_000);
    let from = s.now();
    for _ in 0..20 {
        s.request(c, "flaky", 2_000, 8).unwrap();
        s.request(c, "slow", 100, 8).unwrap(); // 400 ms handler, 100 ms timeout
        s.request(c, "nobody", 300, 8).unwrap(); // no such cluster
        advance(&mut s, 50);
    }
    let to = s.now();
    advance(&mut s, 5_000);
    let r = s.apps.request_stats(from, to, s.now());
    assert!(r.clean(), "{r:?}");
    assert_eq!((r.faults, r.timeouts, r.replies), (20, 40, 0), "{r:?}");
    let late = s.node(4).stats().replies_late;
    assert!(late > 0, "late replies are dropped at the member's node");
}

#[test]
fn a_stalled_member_stops_getting_requests() {
    let mut s = sim(8);
    grow(&mut s, 40);
    let mut stuck = AppSpec::member("svc", 1_000);
    stuck.stalled = true;
    let bad = s.add_app(5, stuck).unwrap();
    let good: Vec<usize> = (10..14)
        .map(|i| s.add_app(i, AppSpec::member("svc", 1_000)).unwrap())
        .collect();
    let c = s.add_app(20, AppSpec::client()).unwrap();
    advance(&mut s, 3_000);
    for _ in 0..40 {
        s.request(c, "svc", 200, 8).unwrap();
        advance(&mut s, 20);
    }
    // Its timeouts mark it stalled; load reports carry that up the tree within a refresh.
    advance(&mut s, 3_000);
    let from = s.now();
    for _ in 0..200 {
        s.request(c, "svc", 1_000, 8).unwrap();
        advance(&mut s, 10);
    }
    let to = s.now();
    advance(&mut s, 3_000);
    let r = s.apps.request_stats(from, to, s.now());
    assert!(r.clean(), "{r:?}");
    assert_eq!(r.replies, 200, "{r:?}");
    let to_bad = s
        .apps
        .requests
        .iter()
        .filter(|q| q.start >= from && q.served_by == Some(bad))
        .count();
    assert_eq!(to_bad, 0, "the stalled member got new requests");
    // They went to the members that answer, all of them.
    for &g in &good {
        let to_g = s
            .apps
            .requests
            .iter()
            .filter(|q| q.start >= from && q.served_by == Some(g))
            .count();
        assert!(to_g > 0, "member {g} got none of the 200 requests");
    }
}

#[test]
fn broadcasts_and_events_reach_every_stable_member_once() {
    for seed in 20..=22 {
        let mut s = sim(seed);
        grow(&mut s, 50);
        let n = s.node_count() as u32;
        let (members, _) = apps(&mut s, 15, 1_000);
        let subs: Vec<usize> = (0..n)
            .map(|i| s.add_app(i, AppSpec::client()).unwrap())
            .collect();
        for (k, &a) in subs.iter().enumerate() {
            s.subscribe(a, "news");
            if k % 3 == 0 {
                s.subscribe(a, "sport");
            }
        }
        // A member subscribes too, and broadcasts reach the sender's own members.
        s.subscribe(members[0], "news");
        advance(&mut s, 3_000);
        let from = s.now();
        for k in 0..100u32 {
            let at = s.rng().random_range(0..n);
            s.publish(at, if k % 2 == 0 { "news" } else { "sport" }, 64);
            s.broadcast(at, "svc", 32);
            advance(&mut s, 20);
        }
        let to = s.now();
        advance(&mut s, 5_000);
        let settle = Duration::from_secs(2);
        let grace = Duration::from_secs(4);
        let e = s
            .apps
            .event_stats(Some(GroupKind::Topic), from, to, settle, grace);
        assert_eq!(e.events, 100);
        assert_eq!(e.expected, 50 * n as u64 + 50 * 17 + 50, "seed {seed}");
        assert_eq!(e.once, e.expected, "seed {seed}: {e:?}");
        let b = s
            .apps
            .event_stats(Some(GroupKind::Cluster), from, to, settle, grace);
        assert_eq!(b.expected, 100 * 15, "seed {seed}");
        assert_eq!(b.once, b.expected, "seed {seed}: {b:?}");
        assert_eq!(e.duplicates + b.duplicates, 0, "seed {seed}");
    }
}

#[test]
fn unsubscribed_and_closed_connections_get_nothing() {
    let mut s = sim(30);
    grow(&mut s, 30);
    let a = s.add_app(1, AppSpec::client()).unwrap();
    let b = s.add_app(2, AppSpec::client()).unwrap();
    // A subscriber that stays: the events are published and delivered, to it alone.
    let c = s.add_app(3, AppSpec::client()).unwrap();
    s.subscribe(a, "t");
    s.subscribe(b, "t");
    s.subscribe(c, "t");
    advance(&mut s, 2_000);
    s.unsubscribe(a, "t");
    s.remove_app(b);
    advance(&mut s, 2_000);
    for _ in 0..10 {
        s.publish(7, "t", 8).expect("published");
        advance(&mut s, 50);
    }
    advance(&mut s, 2_000);
    assert_eq!(s.apps.events.len(), 10);
    for e in &s.apps.events {
        assert_eq!(
            e.deliveries.keys().copied().collect::<Vec<_>>(),
            vec![c],
            "{e:?}"
        );
        assert_eq!(e.deliveries[&c].0, 1, "{e:?}");
    }
    assert_eq!(s.apps.stray_events, 0);
    // With nobody left, the tree is gone from every node.
    s.unsubscribe(c, "t");
    advance(&mut s, 4_500);
    let key = GroupKind::Topic.key("t");
    for i in 0..30 {
        assert!(
            s.node(i).group_view(key).is_none(),
            "node {i} keeps an empty tree"
        );
    }
}

#[test]
fn tunnels_carry_data_in_order_both_ways() {
    for seed in 40..=41 {
        let mut s = sim(seed);
        grow(&mut s, 30);
        s.add_app(3, AppSpec::member("echo", 0)).unwrap();
        s.add_app(11, AppSpec::member("echo", 0)).unwrap();
        let c = s.add_app(20, AppSpec::client()).unwrap();
        // Same node as a member: a tunnel to itself's node.
        let local = s.add_app(3, AppSpec::client()).unwrap();
        advance(&mut s, 3_000);
        let from = s.now();
        s.open_tunnel(c, "echo", 2_000, 40, 100_000, 0).unwrap();
        s.open_tunnel(c, "echo", 2_000, 3, 1_000_000, 0).unwrap();
        s.open_tunnel(local, "echo", 2_000, 50, 3_000, 0).unwrap();
        // A slow reader: 20 ms per message of 200 KB, far slower than the network.
        s.open_tunnel(c, "echo", 2_000, 20, 200_000, 20_000)
            .unwrap();
        s.open_tunnel(c, "nobody", 500, 1, 10, 0).unwrap();
        advance(&mut s, 1);
        let to = s.now();
        advance(&mut s, 30_000);
        let t = s.apps.tunnel_stats(from, to);
        assert_eq!(t.corrupt, 0, "seed {seed}: {t:?}");
        assert_eq!((t.completed, t.open_failed), (4, 1), "seed {seed}: {t:?}");
        for i in 0..30 {
            assert_eq!(
                s.node(i).tunnel_count(),
                0,
                "seed {seed}: node {i} keeps a tunnel"
            );
        }
    }
}

/// Members' nodes crash while requests, tunnels and events run. Requests and tunnels get clear
/// outcomes; the subscribers and publishers (nodes 30..60) never crash, so every event reaches
/// every subscriber exactly once, events that a crashed tree node missed included (replayed
/// when the tree is repaired).
#[test]
fn crashes_give_clear_outcomes() {
    let mut s = sim(50);
    grow(&mut s, 60);
    for i in 0..20 {
        s.add_app(i, AppSpec::member("svc", 5_000)).unwrap();
    }
    let clients: Vec<usize> = (30..60)
        .map(|i| s.add_app(i, AppSpec::client()).unwrap())
        .collect();
    for &c in &clients {
        s.subscribe(c, "t");
    }
    advance(&mut s, 3_000);
    let from = s.now();
    let mut tunnels = 0;
    let mut published = Vec::new();
    for k in 0..400u32 {
        let c = clients[(k as usize) % clients.len()];
        s.request(c, "svc", 3_000, 8);
        if k % 40 == 0 {
            s.open_tunnel(c, "svc", 2_000, 30, 50_000, 1_000);
            tunnels += 1;
        }
        if k % 4 == 0 {
            published.push(s.publish(30 + k % 30, "t", 16).expect("published"));
        }
        if k % 50 == 25 {
            // Crash a member's node (and whatever trees pass through it).
            s.crash(k / 50 * 2 + 1);
        }
        advance(&mut s, 25);
    }
    let to = s.now();
    advance(&mut s, 20_000);
    let r = s.apps.request_stats(from, to, s.now());
    assert!(r.clean(), "{r:?}");
    assert!(r.answered_ratio() > 0.9, "{r:?}");
    let t = s.apps.tunnel_stats(from, to);
    assert_eq!(t.corrupt, 0, "{t:?}");
    assert_eq!(t.opened, tunnels);
    assert_eq!(t.running, 0, "every tunnel ended: {t:?}");
    // Each event to each subscriber exactly once, and to nobody else.
    for &gid in &published {
        let e = &s.apps.events[gid as usize];
        for &c in &clients {
            let got = e.deliveries.get(&c).map_or(0, |&(n, _)| n);
            assert_eq!(
                got, 1,
                "event {gid} (published at {:?} by node {}) reached subscriber {c} {got} times",
                e.at, e.node
            );
        }
        assert_eq!(e.deliveries.len(), clients.len(), "event {gid}: {e:?}");
    }
    assert_eq!(s.apps.stray_events, 0);
}

/// A tunnel whose opener's node crashes before it ends has no one left to see an outcome: it
/// is counted apart (`opener_gone`) and not judged, as a request whose requester died is not;
/// one whose acceptor's node crashes is judged, and its opener sees it fail; one that had not
/// moved for `TUNNEL_STALL` when its opener went is judged too (it had stalled).
#[test]
fn a_tunnel_whose_opener_died_is_not_judged_one_whose_acceptor_died_fails() {
    let mut s = sim(70);
    grow(&mut s, 30);
    s.add_app(3, AppSpec::member("echo", 0)).unwrap();
    s.add_app(5, AppSpec::member("sink", 0)).unwrap();
    let doomed = s.add_app(20, AppSpec::client()).unwrap();
    let lives = s.add_app(21, AppSpec::client()).unwrap();
    let stalls = s.add_app(22, AppSpec::client()).unwrap();
    advance(&mut s, 3_000);
    let from = s.now();
    // Slow readers (20 ms a message, 50 messages): both tunnels open and still run 500 ms in.
    s.open_tunnel(doomed, "echo", 2_000, 50, 10_000, 20_000)
        .unwrap();
    s.open_tunnel(lives, "sink", 2_000, 50, 10_000, 20_000)
        .unwrap();
    // A reader that takes 60 s a message: it opens, then nothing comes back.
    s.open_tunnel(stalls, "echo", 2_000, 5, 10_000, 60_000_000)
        .unwrap();
    advance(&mut s, 1);
    let to = s.now();
    advance(&mut s, 500);
    let t = s.apps.tunnel_stats(from, to);
    assert_eq!((t.opened, t.running, t.opener_gone), (3, 3, 0), "{t:?}");
    assert!(
        s.apps
            .tunnels
            .iter()
            .all(|t| t.confirms == 1 && (t.echoed > 0 || t.read_delay_us > 1_000_000))
    );
    s.crash(20);
    s.crash(5);
    advance(
        &mut s,
        petal_sim::oracle::TUNNEL_STALL.as_millis() as u64 + 500,
    );
    s.crash(22);
    advance(&mut s, 30_000);
    let t = s.apps.tunnel_stats(from, to);
    assert_eq!(t.opened, 3, "{t:?}");
    assert_eq!((t.opener_gone, t.judged()), (1, 2), "{t:?}");
    assert_eq!(
        (t.completed, t.failed + t.running),
        (0, 2),
        "the live opener saw its tunnel fail, the stalled one is a miss: {t:?}"
    );
    assert_eq!(t.violations(), 0, "{t:?}");
}

#[test]
fn a_leaving_node_answers_what_is_pending() {
    let mut s = sim(60);
    grow(&mut s, 30);
    s.add_app(3, AppSpec::member("slow", 5_000_000)).unwrap();
    s.add_app(4, AppSpec::member("echo", 0)).unwrap();
    let c = s.add_app(9, AppSpec::client()).unwrap();
    advance(&mut s, 3_000);
    let from = s.now();
    for _ in 0..5 {
        s.request(c, "slow", 10_000, 8).unwrap();
    }
    // A slow reader keeps the tunnel busy for a long while.
    s.open_tunnel(c, "echo", 2_000, 200, 100_000, 50_000)
        .unwrap();
    advance(&mut s, 1_000);
    let left_at = s.now();
    s.leave(9);
    let to = s.now();
    let r = &s.apps.requests;
    assert_eq!(r.len(), 5);
    for q in r {
        assert_eq!(q.outcomes, 1, "{q:?}");
        let (kind, at) = q.outcome.expect("an outcome at once");
        assert_eq!(kind, petal_sim::apps::OutcomeKind::Timeout);
        assert_eq!(at, left_at, "the timeout comes when the node leaves");
    }
    let t = s.apps.tunnel_stats(from, to);
    assert_eq!(t.failed, 1, "{t:?}");
    assert!(
        t.reasons.keys().any(|k| k.contains("shutting down")),
        "{t:?}"
    );
    // The far end hears of it too: no tunnel is left anywhere.
    advance(&mut s, 5_000);
    for i in 0..30 {
        assert_eq!(s.node(i).tunnel_count(), 0, "node {i} keeps a tunnel");
    }
}
