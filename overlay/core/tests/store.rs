//! The replicated store, end to end over a small network of real nodes: values are read back
//! from every node, live on the `k` nodes closest to the key, conditional writes decide one
//! winner, values expire, an acknowledged write survives crashes of its replicas one after the
//! other, keys move to a closer node that joins, and every operation has exactly one outcome.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Net;
use petal_core::store::key_of;
use petal_core::{AppError, Config, ConnId, Event, NodeId, StoreOpKind, StoreResult, Version};

const CLIENT: ConnId = ConnId(1);

/// A ring of `n` nodes with a client connection on each.
fn ring(seed: u64, n: usize, cfg: Config) -> Net {
    let mut net = Net::with_config(seed, n, cfg);
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

/// The outcomes of store operations so far: (node, op) -> result, with their times.
fn outcomes(net: &Net) -> Vec<(usize, u64, StoreResult)> {
    net.app_events
        .iter()
        .filter_map(|(_, n, e)| match e {
            Event::KvDone { op, result, .. } => Some((*n, *op, result.clone())),
            _ => None,
        })
        .collect()
}

/// Starts operation `op` at node `i` and runs until its outcome; returns it.
fn kv(net: &mut Net, i: usize, op: u64, name: &str, kind: StoreOpKind) -> StoreResult {
    let now = net.now;
    net.nodes[i].kv(now, CLIENT, op, name, kind, 5_000).unwrap();
    net.drain(i);
    let limit = net.now + Duration::from_secs(6);
    loop {
        let done: Vec<_> = outcomes(net)
            .into_iter()
            .filter(|(n, o, _)| *n == i && *o == op)
            .collect();
        if let Some((_, _, r)) = done.first() {
            assert_eq!(done.len(), 1, "one outcome");
            return r.clone();
        }
        assert!(net.now < limit, "no outcome for op {op}");
        net.run_for(Duration::from_millis(5));
    }
}

fn put(value: &'static [u8], expect: Option<Version>) -> StoreOpKind {
    StoreOpKind::Put {
        value: Bytes::from_static(value),
        ttl_ms: 0,
        expect,
    }
}

fn written(r: &StoreResult) -> Version {
    match r {
        StoreResult::Written(v) => *v,
        other => panic!("expected a write, got {other:?}"),
    }
}

/// The nodes (of those up) that hold an entry of `name`.
fn holders(net: &Net, name: &str) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = (0..net.nodes.len())
        .filter(|&i| !net.down[i] && net.nodes[i].store_entry(net.now, name).is_some())
        .map(|i| net.infos[i].id)
        .collect();
    v.sort_unstable();
    v
}

/// The `k` ids closest to the key of `name` among the nodes up, by id (see `nearest`).
fn closest(net: &Net, name: &str, k: usize) -> Vec<NodeId> {
    let mut ids = nearest(net, name, k);
    ids.sort_unstable();
    ids
}

/// The `k` ids closest to the key of `name` among the nodes up, closest (the home) first.
fn nearest(net: &Net, name: &str, k: usize) -> Vec<NodeId> {
    let key = key_of(name);
    let mut ids: Vec<NodeId> = (0..net.nodes.len())
        .filter(|&i| !net.down[i])
        .map(|i| net.infos[i].id)
        .collect();
    ids.sort_by(|a, b| {
        if a.closer_than(*b, key) {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Greater
        }
    });
    ids.truncate(k);
    ids
}

#[test]
fn a_value_is_read_back_from_every_node_and_lives_on_the_k_closest_nodes() {
    let mut net = ring(5, 12, Config::default());
    let v = written(&kv(&mut net, 0, 1, "color", put(b"blue", None)));
    assert!(v > Version::NONE);
    for i in 0..12 {
        match kv(&mut net, i, 100 + i as u64, "color", StoreOpKind::Get) {
            StoreResult::Found { version, value, .. } => {
                assert_eq!((version, &value[..]), (v, &b"blue"[..]), "at node {i}");
            }
            other => panic!("node {i}: {other:?}"),
        }
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(holders(&net, "color"), closest(&net, "color", 3));
    assert_eq!(
        kv(&mut net, 3, 200, "never-written", StoreOpKind::Get),
        StoreResult::NotFound
    );
    // A later write wins everywhere.
    let v2 = written(&kv(&mut net, 7, 2, "color", put(b"red", None)));
    assert!(v2 > v);
    match kv(&mut net, 11, 201, "color", StoreOpKind::Get) {
        StoreResult::Found { value, .. } => assert_eq!(&value[..], b"red"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn conditional_writes_take_effect_only_on_the_expected_version() {
    let mut net = ring(6, 8, Config::default());
    let v1 = written(&kv(&mut net, 0, 1, "lock", put(b"a", Some(Version::NONE))));
    assert_eq!(
        kv(&mut net, 1, 2, "lock", put(b"b", Some(Version::NONE))),
        StoreResult::Conflict(v1),
        "create-if-absent fails once the key exists"
    );
    let v2 = written(&kv(&mut net, 2, 3, "lock", put(b"c", Some(v1))));
    assert!(v2 > v1);
    let delete = |expect| StoreOpKind::Delete {
        expect: Some(expect),
    };
    assert_eq!(
        kv(&mut net, 3, 4, "lock", delete(v1)),
        StoreResult::Conflict(v2)
    );
    written(&kv(&mut net, 4, 5, "lock", delete(v2)));
    assert_eq!(
        kv(&mut net, 5, 6, "lock", StoreOpKind::Get),
        StoreResult::NotFound
    );
    // Deleted: it can be created again.
    written(&kv(&mut net, 6, 7, "lock", put(b"d", Some(Version::NONE))));
}

#[test]
fn two_conditional_writes_on_one_version_have_one_winner() {
    let mut net = ring(7, 8, Config::default());
    let v1 = written(&kv(&mut net, 0, 1, "counter", put(b"0", None)));
    // Five clients race to replace version v1, all at the same instant.
    let now = net.now;
    for i in 1..6 {
        net.nodes[i]
            .kv(now, CLIENT, 10, "counter", put(b"mine", Some(v1)), 5_000)
            .unwrap();
        net.drain(i);
    }
    net.run_for(Duration::from_secs(2));
    let results: Vec<StoreResult> = outcomes(&net)
        .into_iter()
        .filter(|(_, op, _)| *op == 10)
        .map(|(_, _, r)| r)
        .collect();
    assert_eq!(results.len(), 5, "one outcome each: {results:?}");
    let wins = results
        .iter()
        .filter(|r| matches!(r, StoreResult::Written(_)))
        .count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, StoreResult::Conflict(v) if *v > v1))
        .count();
    assert_eq!((wins, conflicts), (1, 4), "{results:?}");
}

#[test]
fn a_value_with_a_ttl_is_never_read_after_it_expires_nor_an_older_one_after_it() {
    let mut cfg = Config::default();
    cfg.store_tombstone_ttl = Duration::from_secs(30);
    let mut net = ring(8, 8, cfg);
    written(&kv(&mut net, 0, 1, "token", put(b"old", None)));
    // One replica misses the next write: it keeps the old value.
    let reps = nearest(&net, "token", 3);
    let stale = net.by_id[&reps[2]];
    net.tamper = Some(Box::new(move |_, m| match m {
        petal_core::Message::StoreWrite { .. } => common::Tamper::Drop,
        _ => common::Tamper::Pass,
    }));
    let ttl = StoreOpKind::Put {
        value: Bytes::from_static(b"session"),
        ttl_ms: 3_000,
        expect: None,
    };
    let home = net.by_id[&reps[0]];
    // (Written by the home alone: W = 2 is not reached with every copy dropped, so the home's
    // own client sees a failure, and the value lives at the home only.)
    let r = kv(&mut net, home, 2, "token", ttl);
    assert!(matches!(r, StoreResult::Failed(_)), "{r:?}");
    net.tamper = None;
    assert!(matches!(
        kv(&mut net, 1, 3, "token", StoreOpKind::Get),
        StoreResult::Found { .. }
    ));
    assert!(net.nodes[stale].store_entry(net.now, "token").is_some());
    net.run_for(Duration::from_millis(2_500));
    // Expired: not found, and the older value the stale replica held does not come back.
    for (op, i) in (10..).zip(0..8) {
        assert_eq!(
            kv(&mut net, i, op, "token", StoreOpKind::Get),
            StoreResult::NotFound,
            "at node {i}"
        );
    }
    // Repair spreads the expiry as a tombstone; the tombstone is dropped after its time.
    net.run_for(Duration::from_secs(11));
    for i in 0..8 {
        if let Some(e) = net.nodes[i].store_entry(net.now, "token") {
            assert!(e.value.is_none(), "node {i} still has a value");
        }
    }
    net.run_for(Duration::from_secs(40));
    let held: usize = (0..8).map(|i| net.nodes[i].store_size().0).sum();
    assert_eq!(held, 0, "tombstones dropped after store_tombstone_ttl");
}

#[test]
fn an_acknowledged_write_survives_its_replicas_crashing_one_after_another() {
    let mut net = ring(9, 14, Config::default());
    let names: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    for (op, name) in names.iter().enumerate() {
        written(&kv(&mut net, op % 14, op as u64, name, put(b"kept", None)));
    }
    // Three rounds: crash the home of the first key (never the client node 0), let the ring
    // find it dead and repair.
    let mut op = 100;
    for _ in 0..3 {
        let home = nearest(&net, &names[0], 1)[0];
        let victim = net.by_id[&home];
        if victim == 0 {
            continue;
        }
        net.down[victim] = true;
        net.run_for(Duration::from_secs(15));
        for name in &names {
            op += 1;
            match kv(&mut net, 0, op, name, StoreOpKind::Get) {
                StoreResult::Found { value, .. } => assert_eq!(&value[..], b"kept"),
                other => panic!("{name} after crashes: {other:?}"),
            }
            assert_eq!(
                holders(&net, name),
                closest(&net, name, 3),
                "{name} back on its 3 closest live nodes"
            );
        }
    }
}

#[test]
fn a_closer_node_that_joins_takes_its_keys_and_the_others_hand_them_off() {
    let mut net = Net::with_config(10, 13, Config::default());
    let first: Vec<usize> = (0..12).collect();
    net.form_ring(&first);
    net.run_for(Duration::from_secs(3));
    let now = net.now;
    net.nodes[0].register(now, CLIENT, None, 1).unwrap();
    let names: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    for (op, name) in names.iter().enumerate() {
        written(&kv(&mut net, 0, op as u64, name, put(b"v", None)));
    }
    // Node 12 joins.
    let boot = net.infos[0];
    let now = net.now;
    net.nodes[12].join(now, boot);
    net.drain(12);
    net.run_for(Duration::from_secs(15));
    let new = net.infos[12].id;
    let mut taken = 0;
    for name in &names {
        let want = closest(&net, name, 3);
        assert_eq!(holders(&net, name), want, "{name}");
        taken += usize::from(want.contains(&new));
    }
    assert!(taken > 0, "the newcomer is a replica of some keys");
    let handed: u64 = (0..12)
        .map(|i| net.nodes[i].store_stats().entries_handed_off)
        .sum();
    assert_eq!(handed, taken as u64, "one node handed each of them off");
}

#[test]
fn without_a_quorum_a_write_fails_and_without_an_answer_it_times_out() {
    let mut net = ring(11, 8, Config::default());
    let reps = nearest(&net, "q", 3);
    let home = net.by_id[&reps[0]];
    // Both other replicas crash at once; before they are found dead, the home has no quorum
    // (a client on the home itself, so that no reroute gives them time to be suspected).
    for id in &reps[1..] {
        let i = net.by_id[id];
        net.down[i] = true;
    }
    match kv(&mut net, home, 1, "q", put(b"x", None)) {
        StoreResult::Failed(why) => assert!(why.contains("write quorum"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Homes' answers are lost: the origin's timeout decides, once.
    net.tamper = Some(Box::new(|_, m| {
        if matches!(m, petal_core::Message::StoreReply { .. }) {
            common::Tamper::Drop
        } else {
            common::Tamper::Pass
        }
    }));
    let client = (0..8).find(|i| !net.down[*i] && *i != home).unwrap();
    let now = net.now;
    net.nodes[client]
        .kv(now, CLIENT, 2, "q", StoreOpKind::Get, 300)
        .unwrap();
    net.drain(client);
    net.run_for(Duration::from_secs(2));
    let r: Vec<_> = outcomes(&net)
        .into_iter()
        .filter(|(n, op, _)| *n == client && *op == 2)
        .collect();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].2, StoreResult::TimedOut);
    assert_eq!(net.nodes[client].store_stats().ops_timed_out, 1);
}

#[test]
fn bad_arguments_are_refused_with_a_clear_error() {
    let mut net = ring(12, 4, Config::default());
    let now = net.now;
    let n = &mut net.nodes[0];
    let long = "x".repeat(1025);
    assert!(matches!(
        n.kv(now, CLIENT, 1, &long, StoreOpKind::Get, 1000),
        Err(AppError::Invalid(_))
    ));
    assert!(matches!(
        n.kv(now, CLIENT, 1, "", StoreOpKind::Get, 1000),
        Err(AppError::Invalid(_))
    ));
    let big = StoreOpKind::Put {
        value: Bytes::from(vec![0u8; (256 << 10) + 1]),
        ttl_ms: 0,
        expect: None,
    };
    assert!(matches!(
        n.kv(now, CLIENT, 1, "k", big, 1000),
        Err(AppError::Invalid(_))
    ));
    assert_eq!(
        n.kv(now, ConnId(99), 1, "k", StoreOpKind::Get, 1000),
        Err(AppError::UnknownConn)
    );
    n.kv(now, CLIENT, 5, "k", StoreOpKind::Get, 1000).unwrap();
    assert!(matches!(
        n.kv(now, CLIENT, 5, "k", StoreOpKind::Get, 1000),
        Err(AppError::Invalid(_))
    ));
    // A closed connection's operation has no outcome, and leaves nothing behind.
    n.unregister(now, CLIENT).unwrap();
    net.drain(0);
    net.run_for(Duration::from_secs(2));
    assert!(outcomes(&net).is_empty());
}

#[test]
fn watchers_get_every_acknowledged_write_and_delete_of_their_key() {
    let mut net = ring(13, 10, Config::default());
    // Watchers on two nodes (one of them the key's home), by subscribing to the key's topic.
    let home = net.by_id[&nearest(&net, "cfg", 1)[0]];
    let other = (0..10).find(|&i| i != home).unwrap();
    let topic = petal_core::store::watch_topic("cfg");
    let now = net.now;
    for &i in &[home, other] {
        net.nodes[i].subscribe(now, CLIENT, &topic).unwrap();
        net.drain(i);
    }
    net.run_for(Duration::from_secs(2));
    let writer = (0..10).find(|&i| i != home && i != other).unwrap();
    let v1 = written(&kv(&mut net, writer, 1, "cfg", put(b"one", None)));
    let v2 = written(&kv(&mut net, writer, 2, "cfg", put(b"two", Some(v1))));
    let v3 = written(&kv(
        &mut net,
        writer,
        3,
        "cfg",
        StoreOpKind::Delete { expect: None },
    ));
    // A conflict changes nothing: no event.
    let _ = kv(&mut net, writer, 4, "cfg", put(b"x", Some(v1)));
    net.run_for(Duration::from_millis(500));
    for &i in &[home, other] {
        let changes: Vec<petal_core::store::Change> = net
            .app_events
            .iter()
            .filter_map(|(_, n, e)| match e {
                Event::Published {
                    topic: t, payload, ..
                } if *n == i && **t == *topic => petal_core::store::Change::decode(payload),
                _ => None,
            })
            .collect();
        let got: Vec<(Version, Option<&[u8]>)> = changes
            .iter()
            .map(|c| (c.version, c.value.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![(v1, Some(&b"one"[..])), (v2, Some(&b"two"[..])), (v3, None)],
            "watcher on node {i}"
        );
    }
}

#[test]
fn a_copy_of_an_operation_is_run_once_at_the_home() {
    use petal_core::Message;
    use petal_protocol::StoreOp;
    let mut net = ring(14, 6, Config::default());
    let home = net.by_id[&nearest(&net, "dup", 1)[0]];
    let origin = (0..6).find(|&i| i != home).unwrap();
    let before = net.nodes[home].store_stats().coordinated;
    // The same routed put arrives twice (rerouted while the first copy was only late).
    for _ in 0..2 {
        let msg = Message::route(petal_protocol::RouteMsg {
            key: key_of("dup"),
            origin: net.infos[origin],
            hops: 1,
            hop_seq: 0,
            body: petal_protocol::Routed::Store(Box::new(StoreOp {
                id: 77,
                timeout_ms: 5_000,
                name: "dup".into(),
                kind: put(b"v", None),
            })),
        });
        let now = net.now;
        let from = net.infos[origin];
        net.nodes[home].handle_message(now, from, msg);
        net.drain(home);
    }
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.nodes[home].store_stats().coordinated - before, 1);
}
