//! A node that leaves answers the requests its members hold: a requester on another node gets
//! a fault with the reason at once, not a timeout at the request's deadline; a local requester
//! gets its timeout at once; each exactly one outcome.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Net;
use petal_core::{ConnId, Event, Outcome};

#[test]
fn a_leaving_node_fails_the_requests_its_members_hold_at_once() {
    let mut net = Net::new(17, 3);
    net.form_ring(&[0, 1, 2]);
    net.run_for(Duration::from_secs(2));
    // The only member of "svc" is on node 1; clients on nodes 0 (remote) and 1 (local).
    let (member, remote, local) = (ConnId(1), ConnId(2), ConnId(3));
    let now = net.now;
    net.nodes[1].register(now, member, Some("svc"), 1).unwrap();
    net.drain(1);
    net.run_for(Duration::from_secs(2));
    let now = net.now;
    net.nodes[0].register(now, remote, None, 1).unwrap();
    net.nodes[1].register(now, local, None, 1).unwrap();
    net.nodes[0]
        .request(now, remote, 7, "svc", Bytes::from_static(b"a"), 30_000)
        .unwrap();
    net.nodes[1]
        .request(now, local, 8, "svc", Bytes::from_static(b"b"), 30_000)
        .unwrap();
    net.drain(0);
    net.drain(1);
    net.run_for(Duration::from_millis(100));
    let delivered = net
        .app_events
        .iter()
        .filter(|(_, n, e)| *n == 1 && matches!(e, Event::Request { conn, .. } if *conn == member))
        .count();
    assert_eq!(delivered, 2, "both requests reached the member");

    // Node 1 leaves without its member answering.
    let left_at = net.now;
    net.nodes[1].leave(left_at);
    net.drain(1);
    net.run_for(Duration::from_millis(100));
    let outcomes: Vec<_> = net
        .app_events
        .iter()
        .filter_map(|(t, n, e)| match e {
            Event::RequestDone {
                conn,
                request,
                outcome,
            } => Some((*t, *n, *conn, *request, outcome.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes.len(), 2, "one outcome each: {outcomes:?}");
    for (t, n, conn, request, outcome) in outcomes {
        assert!(
            t <= left_at + Duration::from_millis(10),
            "request {request} decided at {t:?}, not at once"
        );
        let expected = if n == 0 { (remote, 7) } else { (local, 8) };
        assert_eq!((conn, request), expected);
        match (n, outcome) {
            (0, Outcome::Fault(reason)) => {
                assert_eq!(reason, petal_core::LEAVING_FAULT, "request {request}");
            }
            (1, Outcome::Timeout) => {}
            (n, other) => panic!("request {request} of node {n}: {other:?}"),
        }
    }
    assert_eq!(net.nodes[1].stats().requests_failed_on_leave, 1);
    // Nothing more arrives later (no second outcome at the deadline).
    net.run_for(Duration::from_secs(40));
    let done = net
        .app_events
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::RequestDone { .. }))
        .count();
    assert_eq!(done, 2);
}
