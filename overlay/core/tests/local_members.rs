//! A node hands each event of a group to every local member once, however many members it has
//! (the member list is copied out on the stack for a few, into a vector beyond), at the topic's
//! root and at a node down its tree.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::Net;
use petal_core::{ConnId, Event, GroupKind};

/// Subscribes `count` connections (numbered from `first`) of node `node` to `topic`.
fn subscribe(net: &mut Net, node: usize, first: u64, count: u64, topic: &str) {
    let now = net.now;
    for c in first..first + count {
        net.nodes[node].register(now, ConnId(c), None, 0).unwrap();
        net.nodes[node].subscribe(now, ConnId(c), topic).unwrap();
    }
    net.drain(node);
}

/// Every (node, connection) that got `payload` on `topic`, with how many times.
fn deliveries(net: &Net, topic: &str, payload: &[u8]) -> BTreeMap<(usize, u64), usize> {
    let mut got = BTreeMap::new();
    for (_, node, ev) in &net.app_events {
        if let Event::Published {
            conn,
            topic: t,
            payload: p,
        } = ev
            && &**t == topic
            && &p[..] == payload
        {
            *got.entry((*node, conn.0)).or_insert(0) += 1;
        }
    }
    got
}

#[test]
fn every_local_member_gets_each_event_once_around_the_stack_list_size() {
    for members in [1_u64, 7, 8, 9, 20] {
        let mut net = Net::new(7, 4);
        let all: Vec<usize> = (0..4).collect();
        net.form_ring(&all);
        net.run_for(Duration::from_secs(2));
        let key = GroupKind::Topic.key("news");
        let root = net.by_id[&net.owner(&all, key)];
        let other = all.iter().copied().find(|&i| i != root).unwrap();
        // `members` subscribers at the root, as many at another node, and one on a topic of
        // its own beside them.
        subscribe(&mut net, root, 100, members, "news");
        subscribe(&mut net, other, 100, members, "news");
        subscribe(&mut net, other, 1000, 1, "sports");
        net.run_for(Duration::from_secs(3));
        let publisher = all
            .iter()
            .copied()
            .find(|&i| i != root && i != other)
            .unwrap();
        for k in 0..3_u8 {
            let now = net.now;
            net.nodes[publisher]
                .publish(now, "news", Bytes::from(vec![k; 3]))
                .unwrap();
            net.drain(publisher);
            net.run_for(Duration::from_millis(500));
        }
        for k in 0..3_u8 {
            let got = deliveries(&net, "news", &[k; 3]);
            let want: BTreeMap<(usize, u64), usize> = [root, other]
                .into_iter()
                .flat_map(|n| (100..100 + members).map(move |c| ((n, c), 1)))
                .collect();
            assert_eq!(got, want, "event {k} with {members} members a node");
        }
        let strays = net
            .app_events
            .iter()
            .filter(|(_, n, e)| {
                *n == other && matches!(e, Event::Published { conn, .. } if conn.0 == 1000)
            })
            .count();
        assert_eq!(strays, 0, "the other topic's subscriber got no event");
    }
}
