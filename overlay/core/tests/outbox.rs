//! An outbox buffer lent by the driver ([`petal_core::Node::lend_outbox`], taken back with
//! [`petal_core::Node::reclaim_outbox`]), as the simulator drives its nodes, carries exactly
//! what polling the transmits one at a time carries: the same run, message for message.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::Net;

/// What a run leaves that depends on every message: the lookups answered, the messages lost
/// (time, from, to, kind), every node's counters, and the time it ended.
type Outcome = (
    Vec<(usize, petal_core::Key, petal_core::NodeId)>,
    Vec<(petal_core::Time, usize, usize, usize)>,
    Vec<String>,
    petal_core::Time,
);

fn run(lent: bool) -> Outcome {
    let mut net = Net::new(7, 24);
    if lent {
        net.lent = Some(VecDeque::new());
    }
    // Failed dials: the node learns it inside the drain of its transmits and sends again
    // while they are being handled.
    net.dial_fails_once.insert((12, 3));
    net.dial_fails_once.insert((17, 9));
    let all: Vec<usize> = (0..24).collect();
    net.form_ring(&all);
    net.converge(&all, Duration::from_secs(30));
    net.check_lookups(&all);
    for i in 20..24 {
        net.down[i] = true;
    }
    net.run_for(Duration::from_secs(20));
    let stats = net
        .nodes
        .iter()
        .map(|n| format!("{:?}", n.stats()))
        .collect();
    (net.answered, net.lost, stats, net.now)
}

#[test]
fn a_lent_outbox_runs_exactly_as_polled_transmits() {
    let polled = run(false);
    let lent = run(true);
    assert!(
        !polled.0.is_empty() && !polled.1.is_empty(),
        "the run must answer lookups and lose messages to the crashed nodes"
    );
    assert_eq!(polled, lent);
}

/// A lend is refused while the node still holds transmits (the buffer stays the driver's,
/// empty), and taking the transmits back into a buffer that holds others appends them after
/// those, in the order they were sent.
#[test]
fn a_refused_lend_and_a_reclaim_into_a_full_buffer_keep_the_order() {
    let mut net = Net::new(5, 2);
    net.form_ring(&[0, 1]);
    net.converge(&[0, 1], Duration::from_secs(5));
    let (now, from) = (net.now, net.infos[1]);
    let ping = |nonce| petal_core::Message::Ping { nonce };
    net.nodes[0].handle_message(now, from, ping(11));
    net.nodes[0].handle_message(now, from, ping(12));
    let mut buf = VecDeque::with_capacity(8);
    net.nodes[0].lend_outbox(&mut buf);
    assert!(
        buf.is_empty() && buf.capacity() >= 8,
        "a lend to a node whose outbox holds transmits must be refused"
    );
    net.nodes[0].handle_message(now, from, ping(13));
    let first = net.nodes[0].poll_transmit().expect("the first pong");
    let mut out = VecDeque::from([first]);
    net.nodes[0].reclaim_outbox(&mut out);
    let nonces: Vec<u64> = out
        .iter()
        .map(|t| match t.msg {
            petal_core::Message::Pong { nonce } => nonce,
            ref other => panic!("not a pong: {other:?}"),
        })
        .collect();
    assert_eq!(nonces, [11, 12, 13]);
    assert!(net.nodes[0].poll_transmit().is_none(), "all taken back");
}
