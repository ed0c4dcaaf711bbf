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
