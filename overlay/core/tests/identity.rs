//! Identity addressing over a small network of real nodes: a message sent to an identity
//! reaches the connections that hold it wherever they are attached, follows it when it moves,
//! is delivered once, and an identity held nowhere (never, or no longer: its connection closed
//! or its node died) gets a clear "unknown".

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Net, Tamper};
use petal_core::store::IdResult;
use petal_core::{Config, ConnId, Event};

const CLIENT: ConnId = ConnId(1);

fn ring(seed: u64, n: usize) -> Net {
    let mut net = Net::with_config(seed, n, Config::default());
    let all: Vec<usize> = (0..n).collect();
    net.form_ring(&all);
    net.run_for(Duration::from_secs(3));
    let now = net.now;
    for i in 0..n {
        net.nodes[i].register(now, CLIENT, None, 1).unwrap();
        net.drain(i);
    }
    net
}

/// The outcome of identity operation `op` at node `i`, waiting for it (6 s at most).
fn outcome(net: &mut Net, i: usize, op: u64) -> IdResult {
    let limit = net.now + Duration::from_secs(6);
    loop {
        let done: Vec<IdResult> = net
            .app_events
            .iter()
            .filter_map(|(_, n, e)| match e {
                Event::IdDone { op: o, result, .. } if *n == i && *o == op => Some(result.clone()),
                _ => None,
            })
            .collect();
        if let Some(r) = done.first() {
            assert_eq!(done.len(), 1, "one outcome: {done:?}");
            return r.clone();
        }
        assert!(net.now < limit, "no outcome for op {op} at node {i}");
        net.run_for(Duration::from_millis(5));
    }
}

fn register(net: &mut Net, i: usize, conn: ConnId, op: u64, identity: &str) {
    let now = net.now;
    net.nodes[i]
        .id_register(now, conn, op, identity, 5_000)
        .unwrap();
    net.drain(i);
    assert_eq!(outcome(net, i, op), IdResult::Registered);
}

fn send(net: &mut Net, i: usize, op: u64, identity: &str, msg: &'static [u8]) -> IdResult {
    let now = net.now;
    net.nodes[i]
        .id_send(now, CLIENT, op, identity, Bytes::from_static(msg), 5_000)
        .unwrap();
    net.drain(i);
    outcome(net, i, op)
}

fn who(net: &mut Net, i: usize, op: u64, identity: &str) -> IdResult {
    let now = net.now;
    net.nodes[i]
        .id_who(now, CLIENT, op, identity, 5_000)
        .unwrap();
    net.drain(i);
    outcome(net, i, op)
}

/// Messages received so far: (node, connection, payload) for `identity`.
fn received(net: &Net, identity: &str) -> Vec<(usize, ConnId, Bytes)> {
    net.app_events
        .iter()
        .filter_map(|(_, n, e)| match e {
            Event::IdMessage {
                conn,
                identity: id,
                payload,
            } if **id == *identity => Some((*n, *conn, payload.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_message_reaches_every_connection_holding_the_identity() {
    let mut net = ring(21, 8);
    register(&mut net, 2, CLIENT, 1, "alice");
    // A second connection on another node holds it too.
    let now = net.now;
    net.nodes[5].register(now, ConnId(9), None, 1).unwrap();
    net.drain(5);
    register(&mut net, 5, ConnId(9), 2, "alice");
    assert_eq!(
        send(&mut net, 0, 3, "alice", b"hi"),
        IdResult::Sent { nodes: 2 }
    );
    net.run_for(Duration::from_millis(100));
    let got = received(&net, "alice");
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&(2, CLIENT, Bytes::from_static(b"hi"))));
    assert!(got.contains(&(5, ConnId(9), Bytes::from_static(b"hi"))));
    match who(&mut net, 7, 4, "alice") {
        IdResult::Holders(mut h) => {
            h.sort_by_key(|n| n.id);
            let mut want = vec![net.infos[2], net.infos[5]];
            want.sort_by_key(|n| n.id);
            assert_eq!(h, want);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(send(&mut net, 0, 5, "bob", b"?"), IdResult::Unknown);
    assert_eq!(who(&mut net, 0, 6, "bob"), IdResult::Unknown);
}

#[test]
fn a_message_follows_an_identity_that_moves() {
    let mut net = ring(22, 8);
    register(&mut net, 1, CLIENT, 1, "carol");
    assert_eq!(
        send(&mut net, 0, 2, "carol", b"one"),
        IdResult::Sent { nodes: 1 }
    );
    // Carol moves from node 1 to node 6 (the new registration first, as a reconnecting
    // client would): the next message reaches node 6 only.
    register(&mut net, 6, CLIENT, 3, "carol");
    let now = net.now;
    assert!(net.nodes[1].id_unregister(now, CLIENT, "carol").unwrap());
    net.drain(1);
    net.run_for(Duration::from_millis(500));
    assert_eq!(
        send(&mut net, 0, 4, "carol", b"two"),
        IdResult::Sent { nodes: 1 }
    );
    net.run_for(Duration::from_millis(100));
    let got: Vec<(usize, Bytes)> = received(&net, "carol")
        .into_iter()
        .map(|(n, _, p)| (n, p))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Bytes::from_static(b"one")),
            (6, Bytes::from_static(b"two"))
        ]
    );
    // Gone altogether: unknown.
    let now = net.now;
    net.nodes[6].unregister(now, CLIENT).unwrap();
    net.drain(6);
    net.run_for(Duration::from_millis(500));
    assert_eq!(send(&mut net, 0, 5, "carol", b"three"), IdResult::Unknown);
}

#[test]
fn an_identity_whose_node_died_is_unknown_within_a_lease() {
    let mut net = ring(23, 8);
    register(&mut net, 3, CLIENT, 1, "dave");
    net.down[3] = true;
    // Sends meanwhile find a listed node that does not answer: no delivery.
    let r = send(&mut net, 0, 2, "dave", b"x");
    assert!(
        matches!(r, IdResult::TimedOut | IdResult::Failed(_)),
        "{r:?}"
    );
    net.run_for(Duration::from_secs(11));
    assert_eq!(who(&mut net, 0, 3, "dave"), IdResult::Unknown);
    assert_eq!(send(&mut net, 0, 4, "dave", b"y"), IdResult::Unknown);
    assert!(received(&net, "dave").is_empty());
}

#[test]
fn a_repeated_delivery_is_taken_once() {
    let mut net = ring(24, 6);
    register(&mut net, 4, CLIENT, 1, "erin");
    // Every delivery arrives twice.
    net.tamper = Some(Box::new(|_, m| match m {
        petal_core::Message::IdDeliver { .. } => Tamper::Duplicate(Duration::from_millis(3)),
        _ => Tamper::Pass,
    }));
    assert_eq!(
        send(&mut net, 0, 2, "erin", b"once"),
        IdResult::Sent { nodes: 1 }
    );
    net.run_for(Duration::from_millis(100));
    assert_eq!(received(&net, "erin").len(), 1);
}

#[test]
fn leases_are_renewed_while_held() {
    let mut net = ring(25, 6);
    register(&mut net, 2, CLIENT, 1, "frank");
    // Several leases long: still listed, still reachable.
    net.run_for(Duration::from_secs(35));
    assert_eq!(
        send(&mut net, 5, 2, "frank", b"late"),
        IdResult::Sent { nodes: 1 }
    );
}

#[test]
fn registering_again_while_the_line_is_being_removed_ends_listed() {
    let mut net = ring(26, 6);
    register(&mut net, 2, CLIENT, 1, "gina");
    // Let go, and hold it again at once: the removal is under way when the registration comes.
    let now = net.now;
    assert!(net.nodes[2].id_unregister(now, CLIENT, "gina").unwrap());
    net.nodes[2]
        .id_register(now, CLIENT, 2, "gina", 5_000)
        .unwrap();
    net.drain(2);
    assert_eq!(outcome(&mut net, 2, 2), IdResult::Registered);
    // Registered means listed: reachable at once, and still after the removal settled.
    for op in 3..6 {
        assert_eq!(
            send(&mut net, 0, op, "gina", b"here"),
            IdResult::Sent { nodes: 1 },
            "op {op}"
        );
        net.run_for(Duration::from_millis(300));
    }
}

#[test]
fn a_send_retried_after_a_lost_acknowledgement_is_delivered_once() {
    let mut net = ring(27, 6);
    register(&mut net, 3, CLIENT, 1, "hana");
    // The holder's first acknowledgement is lost: the sender tries again after its wait.
    let mut dropped = false;
    net.tamper = Some(Box::new(move |_, m| match m {
        petal_core::Message::IdAck { .. } if !dropped => {
            dropped = true;
            Tamper::Drop
        }
        _ => Tamper::Pass,
    }));
    assert_eq!(
        send(&mut net, 0, 2, "hana", b"one"),
        IdResult::Sent { nodes: 1 }
    );
    net.run_for(Duration::from_millis(100));
    assert_eq!(received(&net, "hana").len(), 1, "delivered once");
}

#[test]
fn a_version_far_in_the_future_is_refused_and_the_clock_keeps_working() {
    use petal_core::{Message, StoreEntry, StoreOpKind, StoreResult, Version};
    let mut net = ring(28, 4);
    let name = "clock";
    let key = petal_core::store::key_of(name);
    let now = net.now;
    let from = net.infos[1];
    for i in [0, 2, 3] {
        net.nodes[i].handle_message(
            now,
            from,
            Message::StoreWrite {
                nonce: 0,
                entries: vec![StoreEntry {
                    key,
                    name: name.into(),
                    version: Version {
                        hlc: u64::MAX,
                        node: 1,
                    },
                    expires_ms: 0,
                    value: Some(Bytes::from_static(b"forever")),
                }],
            },
        );
        net.drain(i);
        assert!(
            net.nodes[i].store_entry(net.now, name).is_none(),
            "node {i}"
        );
    }
    let now = net.now;
    let put = StoreOpKind::Put {
        value: Bytes::from_static(b"ok"),
        ttl_ms: 0,
        expect: None,
    };
    net.nodes[0].kv(now, CLIENT, 7, name, put, 5_000).unwrap();
    net.drain(0);
    net.run_for(Duration::from_secs(2));
    let r = net.app_events.iter().find_map(|(_, n, e)| match e {
        Event::KvDone { op: 7, result, .. } if *n == 0 => Some(result.clone()),
        _ => None,
    });
    assert!(matches!(r, Some(StoreResult::Written(_))), "{r:?}");
}

/// A ring whose identity registries live in an external registry (as petald's
/// `--session-store` keeps them in Redis), answered by the harness's [`MemoryRegistry`].
///
/// [`MemoryRegistry`]: petal_core::store::MemoryRegistry
fn external_ring(seed: u64, n: usize) -> Net {
    let mut net = ring(seed, n);
    net.registry = Some(petal_core::store::MemoryRegistry::new());
    for node in &mut net.nodes {
        node.set_external_registry(true);
        assert!(node.external_registry());
    }
    net
}

#[test]
fn with_an_external_registry_identities_work_and_the_overlay_stores_nothing() {
    use petal_core::{StoreOpKind, StoreResult};
    let mut net = external_ring(31, 8);
    register(&mut net, 2, CLIENT, 1, "ivy");
    assert_eq!(
        send(&mut net, 0, 2, "ivy", b"hello"),
        IdResult::Sent { nodes: 1 }
    );
    assert_eq!(
        who(&mut net, 7, 3, "ivy"),
        IdResult::Holders(vec![net.infos[2]])
    );
    net.run_for(Duration::from_millis(50));
    assert_eq!(
        received(&net, "ivy"),
        vec![(2, CLIENT, Bytes::from_static(b"hello"))]
    );
    // The registry holds it, the overlay's store does not.
    assert_eq!(net.registry.as_ref().map(|r| r.len()), Some(1));
    for (i, node) in net.nodes.iter().enumerate() {
        assert!(
            node.store_entry(net.now, "petal-id/ivy").is_none(),
            "node {i}"
        );
    }
    // An application's read of the registry key reads the external registry.
    let now = net.now;
    net.nodes[5]
        .kv(now, CLIENT, 9, "petal-id/ivy", StoreOpKind::Get, 2_000)
        .unwrap();
    net.drain(5);
    net.run_for(Duration::from_millis(10));
    let got = net.app_events.iter().find_map(|(_, n, e)| match e {
        Event::KvDone { op: 9, result, .. } if *n == 5 => Some(result.clone()),
        _ => None,
    });
    match got {
        Some(StoreResult::Found { value, .. }) => {
            let text = String::from_utf8(value.to_vec()).unwrap();
            assert!(text.starts_with(&format!("{} ", net.infos[2].id)), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // Leases are renewed in the registry (a read and a conditional write each third of a
    // lease), so the identity stays reachable several leases on.
    let before = net.registry_ops.len();
    net.run_for(Duration::from_secs(35));
    let renewals = net.registry_ops.len() - before;
    assert!(
        (18..=24).contains(&renewals),
        "{renewals} registry operations in 35 s"
    );
    assert_eq!(
        send(&mut net, 4, 4, "ivy", b"later"),
        IdResult::Sent { nodes: 1 }
    );
    // Its connection closes: the line is removed, the registry is empty, sends are unknown.
    let now = net.now;
    net.nodes[2].unregister(now, CLIENT).unwrap();
    net.drain(2);
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.registry.as_ref().map(|r| r.len()), Some(0));
    assert_eq!(send(&mut net, 0, 5, "ivy", b"gone"), IdResult::Unknown);
}

#[test]
fn with_an_external_registry_a_dead_node_s_identity_expires_within_a_lease() {
    let mut net = external_ring(32, 6);
    register(&mut net, 4, CLIENT, 1, "jack");
    net.down[4] = true;
    net.run_for(Duration::from_secs(11));
    assert_eq!(who(&mut net, 0, 2, "jack"), IdResult::Unknown);
    assert_eq!(send(&mut net, 1, 3, "jack", b"?"), IdResult::Unknown);
}

#[test]
fn an_external_registry_that_does_not_answer_times_operations_out_and_recovers() {
    let mut net = external_ring(33, 6);
    net.registry_down = true;
    let now = net.now;
    net.nodes[1]
        .id_register(now, CLIENT, 1, "kim", 1_000)
        .unwrap();
    net.drain(1);
    assert_eq!(outcome(&mut net, 1, 1), IdResult::TimedOut);
    let now = net.now;
    net.nodes[0]
        .id_send(now, CLIENT, 2, "kim", Bytes::from_static(b"x"), 1_000)
        .unwrap();
    net.drain(0);
    assert_eq!(outcome(&mut net, 0, 2), IdResult::TimedOut);
    // A registry that answers with a failure: the operations fail with its reason.
    net.registry_down = false;
    net.registry_fails = Some("connection refused".into());
    let now = net.now;
    net.nodes[1]
        .id_register(now, CLIENT, 5, "kim", 1_000)
        .unwrap();
    net.nodes[0]
        .id_send(now, CLIENT, 6, "kim", Bytes::from_static(b"x"), 1_000)
        .unwrap();
    net.drain(1);
    net.drain(0);
    let why = IdResult::Failed("identity registry: connection refused".into());
    assert_eq!(outcome(&mut net, 1, 5), why);
    assert_eq!(outcome(&mut net, 0, 6), why);
    // A presence query under a failing registry asks again after a pause, not in a loop, and
    // ends with the reason.
    let before = net.registry_ops.len();
    let now = net.now;
    net.nodes[2].id_who(now, CLIENT, 7, "kim", 1_000).unwrap();
    net.drain(2);
    assert_eq!(outcome(&mut net, 2, 7), why);
    let asked = net.registry_ops.len() - before;
    assert!((5..=11).contains(&asked), "{asked} reads in 1 s");
    // Back: a registration made now works, and the failed ones left nothing held.
    net.registry_fails = None;
    assert!(net.nodes[1].identities().is_empty());
    register(&mut net, 1, CLIENT, 3, "kim");
    assert_eq!(
        send(&mut net, 0, 4, "kim", b"y"),
        IdResult::Sent { nodes: 1 }
    );
    // An answer that comes after its operation timed out changes nothing.
    net.registry_down = true;
    let before = net.registry_ops.len();
    let now = net.now;
    net.nodes[3].id_who(now, CLIENT, 8, "kim", 500).unwrap();
    net.drain(3);
    assert_eq!(outcome(&mut net, 3, 8), IdResult::TimedOut);
    let late = net.registry_ops[before..]
        .iter()
        .find(|(n, _, _)| *n == 3)
        .map(|(_, op, _)| *op)
        .expect("a registry read");
    // (The read itself may still be waited for: its answer then ends nothing twice.)
    let now = net.now;
    net.nodes[3].registry_result(now, late, petal_core::StoreResult::NotFound);
    net.drain(3);
    net.run_for(Duration::from_millis(10));
    assert_eq!(outcome(&mut net, 3, 8), IdResult::TimedOut, "one outcome");
    assert!(!net.nodes[1].registry_result(now, 12345, petal_core::StoreResult::NotFound));
}
