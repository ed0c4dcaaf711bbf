//! What the core shows operators of its trees and tunnels (`Node::groups`, `Node::tunnels`),
//! checked through a tunnel's whole life.

mod common;

use std::time::Duration;

use common::Net;
use petal_core::{ConnId, Event, GroupKind, TunnelInfo, TunnelPhase};

const OPENER: ConnId = ConnId(1);
const MEMBER: ConnId = ConnId(2);

fn phases(infos: &[TunnelInfo]) -> Vec<TunnelPhase> {
    infos.iter().map(|t| t.phase).collect()
}

#[test]
fn groups_and_tunnels_are_shown_through_a_tunnels_life() {
    let mut net = Net::new(5, 3);
    net.form_ring(&[0, 1, 2]);
    net.run_for(Duration::from_secs(2));
    let now = net.now;
    net.nodes[1].register(now, MEMBER, Some("svc"), 1).unwrap();
    net.nodes[0].register(now, OPENER, None, 1).unwrap();
    net.nodes[0].subscribe(now, OPENER, "news").unwrap();
    net.drain(0);
    net.drain(1);
    net.run_for(Duration::from_secs(3));

    // The member's node is in the cluster's tree with the member, named; the subscriber's
    // in the topic's. Exactly one node of each tree is its root. No child was declared dead,
    // so no tree is held.
    let now = net.now;
    let svc = net.nodes[1]
        .groups(now)
        .into_iter()
        .find(|g| g.kind == GroupKind::Cluster)
        .expect("the cluster's tree at the member's node");
    assert_eq!(svc.name.as_deref(), Some("svc"));
    assert_eq!(svc.members, vec![MEMBER]);
    let news = net.nodes[0]
        .groups(now)
        .into_iter()
        .find(|g| g.kind == GroupKind::Topic)
        .expect("the topic's tree at the subscriber's node");
    assert_eq!(news.name.as_deref(), Some("news"));
    assert_eq!(news.members, vec![OPENER]);
    assert_eq!((svc.held_for, news.held_for), (None, None));
    for key in [svc.key, news.key] {
        let roots = net
            .nodes
            .iter()
            .filter(|n| n.groups(now).iter().any(|g| g.key == key && g.root))
            .count();
        assert_eq!(roots, 1);
    }

    let now = net.now;
    net.nodes[0]
        .tunnel_open(now, OPENER, 4, "svc", 2_000)
        .unwrap();
    net.drain(0);
    assert_eq!(phases(&net.nodes[0].tunnels()), vec![TunnelPhase::Opening]);
    assert_eq!(net.nodes[0].tunnels()[0].peer, None);
    let seen = net.app_events.len();
    net.run_for(Duration::from_millis(200));
    let offer = net.app_events[seen..]
        .iter()
        .find_map(|(_, n, e)| match e {
            Event::TunnelIncoming { offer, .. } if *n == 1 => Some(*offer),
            _ => None,
        })
        .expect("the member's node offers the tunnel");
    assert_eq!(phases(&net.nodes[1].tunnels()), vec![TunnelPhase::Offered]);
    let now = net.now;
    net.nodes[1].tunnel_accept(now, MEMBER, offer, 9).unwrap();
    net.drain(1);
    net.run_for(Duration::from_millis(200));
    let (a, b) = (net.nodes[0].tunnels(), net.nodes[1].tunnels());
    assert_eq!(
        (phases(&a), phases(&b)),
        (vec![TunnelPhase::Open], vec![TunnelPhase::Open])
    );
    assert_eq!((a[0].conn, a[0].id), (OPENER, 4));
    assert_eq!((b[0].conn, b[0].id), (MEMBER, 9));
    assert_eq!(a[0].peer, Some(net.nodes[1].id()));
    assert_eq!(b[0].peer, Some(net.nodes[0].id()));

    let now = net.now;
    net.nodes[0].tunnel_close(now, OPENER, 4).unwrap();
    net.drain(0);
    net.run_for(Duration::from_secs(1));
    assert!(net.nodes[0].tunnels().is_empty());
    assert!(net.nodes[1].tunnels().is_empty());
}
