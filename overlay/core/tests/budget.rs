//! The node-wide memory budget and its shares: an application that stops reading, a peer that
//! floods a node with asks, and replay caches under a small budget each meet their bound, and
//! what others send still gets through. (`check_invariants`, run after every input by the
//! harness, checks that what is charged is what the buffers hold, by owner.)

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Net;
use petal_core::{Config, ConnId, Event, GroupKind, Node};

const KIB: u64 = 1024;

/// Small tunnels and a small budget: 16 KiB chunks, 128 KiB windows, a share of 256 KiB and a
/// budget of 1 MiB.
fn small() -> Config {
    let mut c = Config::default();
    c.tunnel_chunk_limit = 16 * KIB as usize;
    c.tunnel_buffer = 128 * KIB;
    c.tunnel_window = 128 * KIB;
    c.memory_share = 256 * KIB;
    c.memory_budget = 1024 * KIB;
    c
}

/// A ring of `n` nodes with the default configuration but node 1's, `cfg`.
fn ring(seed: u64, n: usize, cfg: Config) -> Net {
    let mut net = Net::with_config(seed, n, Config::default());
    net.nodes[1] = Node::new(net.infos[1], cfg, seed.wrapping_mul(1000) + 1).unwrap();
    let all: Vec<usize> = (0..n).collect();
    net.form_ring(&all);
    net.run_for(Duration::from_secs(2));
    net
}

/// An application that accepts tunnels and never takes their data holds at most its share on
/// its node: the tunnel past it fails with a reason at both ends, and a tunnel to another
/// application on that node still carries everything.
#[test]
fn a_connection_that_stops_reading_meets_its_share_and_others_still_flow() {
    const OPENER: ConnId = ConnId(1);
    const SLOW: ConnId = ConnId(2);
    const FAST: ConnId = ConnId(3);
    let mut net = ring(11, 3, small());
    let now = net.now;
    net.nodes[0].register(now, OPENER, None, 1).unwrap();
    net.nodes[1].register(now, SLOW, Some("slow"), 1).unwrap();
    net.nodes[1].register(now, FAST, Some("fast"), 1).unwrap();
    net.drain(0);
    net.drain(1);
    net.run_for(Duration::from_secs(3));
    // Tunnels 1-4 to the slow application, tunnel 9 (opened later) to the fast one.
    for t in 1..=4 {
        let now = net.now;
        net.nodes[0]
            .tunnel_open(now, OPENER, t, "slow", 5_000)
            .unwrap();
    }
    net.drain(0);
    let chunk = Bytes::from(vec![7u8; 16 * KIB as usize]);
    let mut credit = [0u64; 10];
    let (mut seen, mut fast_got, mut fast_sent) = (0, 0u64, 0u64);
    let mut closed: Vec<(usize, u64, String)> = Vec::new();
    let mut max_held = 0;
    let end = net.now + Duration::from_secs(20);
    let fast_at = net.now + Duration::from_secs(5);
    let mut fast_opened = false;
    while net.now < end {
        net.run_for(Duration::from_millis(5));
        max_held = max_held.max(net.nodes[1].memory_held());
        let now = net.now;
        let events: Vec<(usize, Event)> = net.app_events[seen..]
            .iter()
            .map(|(_, n, e)| (*n, e.clone()))
            .collect();
        seen = net.app_events.len();
        for (n, e) in events {
            match e {
                Event::TunnelIncoming { conn, offer, .. } => {
                    net.nodes[1].tunnel_accept(now, conn, offer, offer).unwrap();
                    if conn == FAST {
                        net.nodes[1]
                            .tunnel_allow(now, FAST, offer, 1 << 30)
                            .unwrap();
                    }
                    net.drain(1);
                }
                Event::TunnelCredit { tunnel, bytes, .. } if n == 0 => {
                    credit[usize::try_from(tunnel).unwrap()] += bytes;
                }
                Event::TunnelData { conn, payload, .. } if n == 1 => {
                    assert_eq!(conn, FAST, "the slow application granted no credit");
                    fast_got += payload.len() as u64;
                }
                Event::TunnelClosed { tunnel, reason, .. } => closed.push((n, tunnel, reason)),
                _ => {}
            }
        }
        for t in (1..=4u64).chain([9]) {
            let slot = usize::try_from(t).unwrap();
            while credit[slot] >= 16 * KIB {
                if t == 9 {
                    if fast_sent >= 64 * 16 * KIB {
                        break;
                    }
                    fast_sent += 16 * KIB;
                }
                if net.nodes[0]
                    .tunnel_send(now, OPENER, t, 16 * KIB, chunk.clone())
                    .is_err()
                {
                    break;
                }
                credit[slot] -= 16 * KIB;
            }
        }
        if !fast_opened && now > fast_at {
            net.nodes[0]
                .tunnel_open(now, OPENER, 9, "fast", 5_000)
                .unwrap();
            fast_opened = true;
        }
        net.drain(0);
    }
    let share = 256 * KIB;
    assert!(
        max_held <= share + 16 * KIB + 64,
        "the slow application's node held {max_held} bytes (share {share}, plus the fast \
         tunnel's chunk in passing)"
    );
    let budget_closed: Vec<&(usize, u64, String)> = closed
        .iter()
        .filter(|(_, _, r)| r.contains("memory budget"))
        .collect();
    assert!(
        budget_closed.iter().any(|(n, _, _)| *n == 0)
            && budget_closed.iter().any(|(n, _, _)| *n == 1),
        "a slow tunnel failed with the budget's reason at both ends: {closed:?}"
    );
    assert!(net.nodes[1].stats().memory_refused > 0);
    assert_eq!(
        fast_got,
        64 * 16 * KIB,
        "the fast application got every byte sent to it"
    );
}

/// Requests to a cluster with no member wait at its root. One peer that sends many holds at
/// most its share there: the rest are refused (counted), and another peer's request still
/// waits and is delivered when a member comes.
#[test]
fn a_peer_meets_its_share_of_parked_asks() {
    let mut cfg = small();
    cfg.memory_share = 128 * KIB;
    let mut net = ring(21, 3, cfg);
    // A cluster whose root is node 1.
    let name = (0..)
        .map(|i| format!("nobody-{i}"))
        .find(|n| net.owner(&[0, 1, 2], GroupKind::Cluster.key(n)) == net.infos[1].id)
        .unwrap();
    let now = net.now;
    net.nodes[0].register(now, ConnId(1), None, 1).unwrap();
    net.nodes[2].register(now, ConnId(1), None, 1).unwrap();
    let payload = |marker: u8| Bytes::from(vec![marker; 30 * KIB as usize]);
    for id in 0..10 {
        net.nodes[0]
            .request(now, ConnId(1), id, &name, payload(0), 60_000)
            .unwrap();
    }
    net.drain(0);
    net.run_for(Duration::from_millis(200));
    let now = net.now;
    net.nodes[2]
        .request(now, ConnId(1), 0, &name, payload(2), 60_000)
        .unwrap();
    net.drain(2);
    net.run_for(Duration::from_millis(200));
    let held = net.nodes[1].memory_held();
    assert!(
        held <= 128 * KIB + 31 * KIB + 512,
        "the root holds {held} bytes: node 0's share and node 2's one request at most"
    );
    assert!(
        net.nodes[1].stats().memory_refused >= 5,
        "node 0's asks past its share were refused: {}",
        net.nodes[1].stats().memory_refused
    );
    // A member comes: what waited is delivered, node 2's request among it.
    let now = net.now;
    net.nodes[1]
        .register(now, ConnId(5), Some(&name), 1)
        .unwrap();
    net.drain(1);
    net.run_for(Duration::from_millis(500));
    let delivered: Vec<u8> = net
        .app_events
        .iter()
        .filter_map(|(_, n, e)| match e {
            Event::Request { payload, .. } if *n == 1 => Some(payload[0]),
            _ => None,
        })
        .collect();
    assert!(delivered.contains(&2), "node 2's request was delivered");
    let from0 = delivered.iter().filter(|m| **m == 0).count();
    assert!(
        (1..=4).contains(&from0),
        "node 0's requests within its share were delivered, the rest not: {from0}"
    );
    assert_eq!(
        net.nodes[1].memory_held(),
        0,
        "nothing is held once delivered"
    );
}

/// Events kept for replays are a cache: under a budget smaller than the replay bound (node 1's:
/// 64 KiB against 64 events of 4 KiB) they are not kept past it, and every event is still
/// delivered.
#[test]
fn replay_caches_stay_within_a_small_budget_and_events_still_flow() {
    let mut cfg = small();
    cfg.tunnel_chunk_limit = 1024;
    cfg.tunnel_buffer = 2 * KIB;
    cfg.tunnel_window = 2 * KIB;
    cfg.memory_share = 32 * KIB;
    cfg.memory_budget = 64 * KIB;
    let mut net = ring(31, 4, cfg);
    let now = net.now;
    for i in 1..4 {
        net.nodes[i].register(now, ConnId(1), None, 1).unwrap();
        net.nodes[i].subscribe(now, ConnId(1), "news").unwrap();
        net.drain(i);
    }
    net.run_for(Duration::from_secs(3));
    let mut max_held = 0;
    for k in 0..100u8 {
        let now = net.now;
        net.nodes[0]
            .publish(now, "news", Bytes::from(vec![k; 4096]))
            .unwrap();
        net.drain(0);
        net.run_for(Duration::from_millis(20));
        max_held = max_held.max(net.nodes[1].memory_held());
    }
    net.run_for(Duration::from_secs(1));
    assert!(max_held <= 64 * KIB, "node 1 held {max_held} bytes");
    for i in 1..4 {
        let got: Vec<u8> = net
            .app_events
            .iter()
            .filter_map(|(_, n, e)| match e {
                Event::Published { payload, .. } if *n == i => Some(payload[0]),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            (0..100).collect::<Vec<u8>>(),
            "node {i} got every event once, in order"
        );
    }
    assert!(
        net.nodes[1].stats().memory_refused > 0,
        "node 1's replay cache met the budget"
    );
}

/// A peer that grafts on many groups takes at most 7/8 of `max_groups`: this node's own
/// applications can still subscribe to new topics.
#[test]
fn grafts_from_peers_leave_room_for_local_groups() {
    let mut cfg = Config::default();
    cfg.max_groups = 16;
    let mut net = ring(41, 3, cfg);
    let from = net.infos[0];
    for i in 0..40u32 {
        let now = net.now;
        let key = GroupKind::Topic.key(&format!("remote-{i}"));
        net.nodes[1].handle_message(
            now,
            from,
            petal_core::Message::Graft {
                group: key,
                load: petal_protocol::Load::default(),
                seen: petal_protocol::EventSeq::default(),
                rejoin: false,
                height: 0,
            },
        );
        net.drain(1);
    }
    assert_eq!(
        net.nodes[1].group_count(),
        14,
        "grafts took 7/8 of the groups"
    );
    let now = net.now;
    net.nodes[1].register(now, ConnId(1), None, 1).unwrap();
    for i in 0..2 {
        net.nodes[1]
            .subscribe(now, ConnId(1), &format!("local-{i}"))
            .unwrap();
    }
    assert_eq!(net.nodes[1].group_count(), 16);
    assert!(
        net.nodes[1].subscribe(now, ConnId(1), "local-2").is_err(),
        "max_groups still bounds the whole"
    );
}
