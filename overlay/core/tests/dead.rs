//! Nodes remembered as dead: their re-probes are spaced node-wide (a crash costs a bounded
//! number of unanswered pings, whatever the churn), and a mention of a long-dead node by a
//! live one is checked at once (a healed partition merges through the first nodes that met).

mod common;

use std::time::Duration;

use common::Net;
use petal_core::{Config, Message};

fn ping_kind() -> usize {
    Message::Ping { nonce: 1 }.kind_index()
}

/// Ten of twenty nodes crash together. Every survivor remembers the dead it tracked and
/// re-probes them; node-wide, one re-probe per `dead_probe_spacing` (5 s) at most: from 20 s
/// to 80 s after the crash each survivor sends at most 13 pings to the dead, and at least 3
/// (a re-probe skipped for the spacing comes back at its next backoff step). Each dead node
/// re-probed every `dead_probe_max` (10 s), as before the spacing, cost node 0 60 pings here.
/// The survivors still converge.
#[test]
fn re_probes_of_dead_nodes_are_spaced_node_wide() {
    let cfg = Config::default();
    let spacing = cfg.dead_probe_spacing;
    assert_eq!(spacing, Duration::from_secs(5));
    let mut net = Net::with_config(21, 20, cfg);
    let all: Vec<usize> = (0..20).collect();
    net.form_ring(&all);
    net.converge(&all, Duration::from_secs(30));
    let crash = net.now;
    for i in 10..20 {
        net.down[i] = true;
    }
    net.run_for(Duration::from_secs(80));
    let from = crash + Duration::from_secs(20);
    let ping = ping_kind();
    let mut most = 0;
    let mut least = usize::MAX;
    let mut total = 0;
    for i in 0..10 {
        let dead_tracked = (10..20)
            .filter(|&j| net.lost.iter().any(|&(_, f, t, _)| f == i && t == j))
            .count();
        let pings = net
            .lost
            .iter()
            .filter(|&&(at, f, t, k)| f == i && t >= 10 && k == ping && at >= from)
            .count();
        assert!(
            dead_tracked >= 3,
            "node {i} tracked {dead_tracked} of the dead"
        );
        assert!(
            pings <= 13,
            "node {i} sent {pings} pings to the dead in 60 s (spacing {spacing:?})"
        );
        most = most.max(pings);
        least = least.min(pings);
        total += pings;
    }
    // And they go on: every survivor re-probes at least once per 20 s (none is held back
    // for good).
    assert!(
        least >= 3,
        "re-probes go on: {total} in all, {least} to {most} per node"
    );
    let alive: Vec<usize> = (0..10).collect();
    assert!(net.wrong_leaf_sets(&alive).is_empty());
}

/// A live member names a node remembered as dead (in a leaf set): within
/// `dead_rumour_after` (10 s) of the death the mention is taken for a stale table and nothing
/// is sent; later it is probed at once, and not again on a second mention within
/// `dead_probe_min`. The probe's answer brings it back.
#[test]
fn a_long_dead_node_named_alive_is_probed_at_once() {
    let mut net = Net::new(5, 4);
    net.form_ring(&[0, 1, 2, 3]);
    net.run_for(Duration::from_secs(3));
    net.down[3] = true;
    let (one, three) = (net.infos[1], net.infos[3]);
    // Declared dead by node 0 within a few seconds.
    let mut declared = None;
    for _ in 0..100 {
        net.run_for(Duration::from_millis(100));
        if !net.nodes[0].knows(three.id) {
            declared = Some(net.now);
            break;
        }
    }
    let declared = declared.expect("node 3 declared dead");
    let mention = |net: &mut Net| -> usize {
        let now = net.now;
        let before = pings_queued(net, 0, 3);
        net.nodes[0].handle_message(
            now,
            one,
            Message::LeafSet {
                leaf: vec![three],
                reply: false,
            },
        );
        net.drain(0);
        pings_queued(net, 0, 3) - before
    };
    // Soon after the death: not probed.
    assert_eq!(mention(&mut net), 0, "a fresh death is not re-checked");
    // 11 s after it: probed at once, once.
    net.run_until(declared + Duration::from_secs(11));
    let rumours = net.nodes[0].stats().dead_rumours;
    assert_eq!(
        mention(&mut net),
        1,
        "a long-dead node named alive is probed"
    );
    assert_eq!(net.nodes[0].stats().dead_rumours, rumours + 1);
    net.run_for(Duration::from_millis(500));
    assert_eq!(mention(&mut net), 0, "not twice within dead_probe_min");
    assert!(!net.nodes[0].knows(three.id));
    // Back up: the next mention's probe is answered and node 3 is in node 0's tables again.
    net.down[3] = false;
    net.run_until(declared + Duration::from_secs(14));
    if !net.nodes[0].knows(three.id) {
        assert_eq!(mention(&mut net), 1);
        net.run_for(Duration::from_millis(10));
    }
    assert!(net.nodes[0].knows(three.id), "node 3 back after its probe");
    assert!(net.nodes[0].stats().revivals >= 1);
}

/// A lost link is a fresh reason to ping, also while a ping is out: the ping out went over
/// the link that ended and will not be answered, and a new one makes the driver dial (a
/// refused dial is a death at once). Before, a crash that came while a heartbeat ping was out
/// waited out that ping's timeout (measured: 247 ms instead of ~8 ms for killed `petald`s in
/// `overlay/daemon/tests/cluster.rs`, one run in four).
#[test]
fn a_lost_link_pings_again_while_a_ping_is_out() {
    let mut net = Net::new(6, 3);
    net.form_ring(&[0, 1, 2]);
    net.run_for(Duration::from_secs(3));
    // Hold node 0's messages to node 1 in the network: nothing is answered meanwhile.
    net.down[1] = true;
    let lose = |net: &mut Net| -> usize {
        let now = net.now;
        let before = pings_queued(net, 0, 1);
        net.nodes[0].link_lost(now, net.infos[1].id);
        net.drain(0);
        pings_queued(net, 0, 1) - before
    };
    assert_eq!(lose(&mut net), 1, "the first loss pings");
    assert_eq!(
        lose(&mut net),
        1,
        "a second loss pings again though a ping is out"
    );
    assert_eq!(net.nodes[0].stats().link_losses, 2);
}

/// Pings from `i` to `j` waiting in the network.
fn pings_queued(net: &Net, i: usize, j: usize) -> usize {
    let ping = ping_kind();
    net.queue
        .values()
        .filter(|(f, t, m)| *f == i && *t == j && m.kind_index() == ping)
        .count()
}

/// Twenty nodes split into two halves for 30 s: each side declares the other dead. At the
/// heal, the first node to hear from the other side (a re-probe answered) probes at once every
/// node declared dead within `dead_probe_max` of the one it heard, and their answers do the
/// same on the other side: one crossing merges the ring within a few round trips. Each node's
/// own re-probes come one per `dead_probe_spacing` (5 s), so without this the last of the ten
/// would wait tens of seconds, and a re-probe sent during the split does not hold back the
/// one after the heal.
#[test]
fn one_revival_after_a_partition_probes_the_nodes_that_died_with_it() {
    let mut net = Net::new(22, 20);
    let all: Vec<usize> = (0..20).collect();
    net.form_ring(&all);
    net.converge(&all, Duration::from_secs(30));
    let side: Vec<bool> = (0..20).map(|i| i % 2 == 1).collect();
    net.cut = Some(side.clone());
    net.run_for(Duration::from_secs(30));
    let knows_across = |net: &Net| {
        (0..20)
            .map(|i| {
                (0..20)
                    .filter(|&j| side[j] != side[i] && net.nodes[i].knows(net.infos[j].id))
                    .count()
            })
            .sum::<usize>()
    };
    assert_eq!(knows_across(&net), 0, "each side declared the other dead");
    let halves = |odd: bool| -> Vec<usize> { (0..20).filter(|&i| side[i] == odd).collect() };
    assert!(net.wrong_leaf_sets(&halves(false)).is_empty());
    assert!(net.wrong_leaf_sets(&halves(true)).is_empty());
    let revivals = |net: &Net| (0..20).map(|i| net.nodes[i].stats().revivals).sum::<u64>();
    assert_eq!(revivals(&net), 0);
    net.cut = None;
    // Run until the first crossing (a node hears from one it declared dead) ...
    let healed = net.now;
    while revivals(&net) == 0 {
        assert!(net.now - healed < Duration::from_secs(20), "no crossing");
        net.run_for(Duration::from_millis(1));
    }
    // ... then the whole ring is one again within half a second.
    let merged = net.converge(&all, Duration::from_secs(20));
    assert!(
        merged <= Duration::from_millis(500),
        "one ring {merged:?} after the first crossing ({:?} after the heal)",
        net.now - healed
    );
}
