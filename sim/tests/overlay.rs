//! Multi-node tests of the Pastry overlay in the discrete-event simulator, with the oracles.
//! Small sizes, several seeds: the default test run.

use petal_core::{Key, Time};
use petal_sim::topology::TopologyConfig;
use petal_sim::{Sim, SimConfig};
use rand::Rng;

fn sim(seed: u64) -> Sim {
    // Shown with the failure output if anything below panics (captured otherwise).
    eprintln!("master seed {seed}");
    let mut cfg = SimConfig::new(seed, TopologyConfig::default());
    cfg.check_invariants = true;
    Sim::new(cfg)
}

fn grow(sim: &mut Sim, n: usize, spacing_ms: u64) {
    for _ in 0..n {
        sim.add_node();
        let t = sim.now();
        sim.run_until(Time::from_micros(t.as_micros() + spacing_ms * 1000));
    }
}

fn settle(sim: &mut Sim, secs: u64) {
    let t = sim.now();
    sim.run_until(Time::from_micros(t.as_micros() + secs * 1_000_000));
}

fn lookups(sim: &mut Sim, n: usize) {
    for _ in 0..n {
        let from = sim.random_ready().expect("a ready node");
        let key = Key(sim.rng().random());
        assert!(sim.lookup(from, key), "seed lookup refused");
    }
    settle(sim, 10);
}

#[test]
fn stable_overlay_is_consistent_for_many_seeds() {
    for seed in 1..=6 {
        let mut s = sim(seed);
        grow(&mut s, 120, 50);
        settle(&mut s, 15);
        assert_eq!(s.ready_count(), 120, "seed {seed}: every node joined");
        let ok = s.leaf_set_correctness();
        assert_eq!(ok, 1.0, "seed {seed}: leaf sets correct");
        s.metrics = petal_sim::metrics::Metrics::new(1_000_000);
        lookups(&mut s, 500);
        let t = s.metrics.totals();
        assert_eq!(t.lookups_done, 500, "seed {seed}: every lookup answered");
        assert_eq!(
            t.consistent, t.delivered,
            "seed {seed}: every lookup at its owner"
        );
        assert!(
            s.metrics.mean_hops() < 3.0,
            "seed {seed}: hops {}",
            s.metrics.mean_hops()
        );
    }
}

/// Ten distinct nodes crash at once. Every one of them is declared dead by a live node within
/// the failure detector's bound (measured: 1.46-1.64 s, bound 2.9 s), no live node is declared
/// dead, no live node keeps a crashed one in its leaf set, and lookups are consistent again.
/// (Routing tables are not checked: their members are pinged every 20 s, and a few crashed
/// nodes are still routing-table entries 20 s later, to be dropped at their next ping or
/// routed hop.)
#[test]
fn crashes_are_detected_and_repaired() {
    for seed in 10..=12 {
        let mut s = sim(seed);
        grow(&mut s, 100, 30);
        settle(&mut s, 10);
        let mut victims: Vec<u32> = Vec::new();
        while victims.len() < 10 {
            let v = s.random_ready().unwrap();
            if !victims.contains(&v) {
                victims.push(v);
            }
        }
        // A crashed leaf-set member is pinged within `leaf_ping_interval`, then misses
        // `suspicion_misses` pongs in a row, each after `ping_timeout`; timers are rounded up to
        // `timer_granularity`.
        let c = s.node(victims[0]).config().clone();
        let g = c.timer_granularity;
        let bound = c.leaf_ping_interval + g + (c.ping_timeout + g) * c.suspicion_misses;
        let detected_before = s.metrics.detections_us.len();
        let false_before = s.metrics.false_deaths;
        for v in &victims {
            s.crash(*v);
        }
        settle(&mut s, 20);
        // The engine records one detection per crashed node, at the first time a live node
        // declares it dead: as many detections as victims means each victim was detected.
        let detections = &s.metrics.detections_us[detected_before..];
        assert_eq!(
            detections.len(),
            victims.len(),
            "seed {seed}: crashed nodes detected: {detections:?} of {victims:?}"
        );
        for &d in detections {
            assert!(
                d <= bound.as_micros() as u64,
                "seed {seed}: a crash detected after {d} us, bound {bound:?}: {detections:?}"
            );
        }
        assert_eq!(
            s.metrics.false_deaths, false_before,
            "seed {seed}: live nodes declared dead"
        );
        let live: Vec<u32> = s.ready_nodes().collect();
        for &v in &victims {
            let id = s.node(v).id();
            for &r in &live {
                assert!(
                    !s.node(r).leaf_set().contains(id),
                    "seed {seed}: node {r} keeps crashed node {v} in its leaf set"
                );
            }
        }
        assert_eq!(
            s.leaf_set_correctness(),
            1.0,
            "seed {seed}: leaf sets repaired"
        );
        s.metrics = petal_sim::metrics::Metrics::new(1_000_000);
        lookups(&mut s, 300);
        let t = s.metrics.totals();
        assert_eq!(t.lookups_done, 300, "seed {seed}");
        assert_eq!(t.consistent, t.delivered, "seed {seed}");
    }
}

#[test]
fn small_rings_route_every_key_to_its_owner() {
    // Rings of up to L + 1 nodes, where the leaf set holds the whole ring.
    for (seed, n) in [(20, 3), (21, 9), (22, 12), (23, 16), (24, 17), (25, 18)] {
        let mut s = sim(seed);
        grow(&mut s, n, 50);
        settle(&mut s, 10);
        assert_eq!(s.ready_count(), n, "seed {seed}");
        assert_eq!(s.leaf_set_correctness(), 1.0, "seed {seed}, {n} nodes");
        s.metrics = petal_sim::metrics::Metrics::new(1_000_000);
        lookups(&mut s, 300);
        let t = s.metrics.totals();
        assert_eq!(t.lookups_done, 300, "seed {seed}, {n} nodes");
        assert_eq!(t.consistent, t.delivered, "seed {seed}, {n} nodes");
    }
}
