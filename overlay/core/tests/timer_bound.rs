//! The timer heap stays proportional to the live state after every input, not only after the
//! next timer operation: an application call that ends many timer owners at once (a closed
//! connection's requests and deliveries) leaves no pile of stale timers behind (found by the
//! `core` fuzz target, which checks the invariants after every call).

use bytes::Bytes;
use petal_core::{Config, ConnId, Node, NodeId, NodeInfo, Time};

#[test]
fn closing_connections_that_own_many_timers_keeps_the_heap_bounded() {
    let me = NodeInfo {
        id: NodeId(1 << 100),
        addr: std::net::SocketAddr::from(([10, 0, 0, 1], 7000)),
    };
    let mut node = Node::new(me, Config::default(), 3).unwrap();
    let now = Time::ZERO;
    node.start_first(now);
    let (member, client) = (ConnId(1), ConnId(2));
    node.register(now, member, Some("svc"), 1).unwrap();
    node.register(now, client, None, 1).unwrap();
    for id in 0..200 {
        node.request(now, client, id, "svc", Bytes::from_static(b"q"), 60_000)
            .unwrap();
    }
    while node.poll_event().is_some() {}
    node.check_invariants();
    // Each request and each delivery owned a timer; both connections close.
    node.unregister(now, client).unwrap();
    node.check_invariants();
    node.unregister(now, member).unwrap();
    node.check_invariants();
}
