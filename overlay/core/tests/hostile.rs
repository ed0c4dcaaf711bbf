//! A node fed arbitrary messages from arbitrary peers, interleaved with timeouts and commands,
//! never panics and keeps its invariants (hostile or buggy peers affect only what they say).

use std::net::SocketAddr;

use petal_core::{Config, Key, Message, Node, NodeId, NodeInfo, Time};
use petal_protocol::{RouteMsg, Routed};
use proptest::prelude::*;

fn info(id: u128) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        addr: SocketAddr::from(([10, 0, (id >> 8) as u8, id as u8], 7000)),
    }
}

/// Peer ids drawn from a small pool so that messages hit known and unknown peers alike.
fn peer() -> impl Strategy<Value = u128> {
    prop_oneof![0u128..40, any::<u128>()]
        .prop_map(|x| x.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

fn infos() -> impl Strategy<Value = Vec<NodeInfo>> {
    prop::collection::vec(peer().prop_map(info), 0..20)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        (0u64..64).prop_map(|nonce| Message::Pong { nonce }),
        (
            any::<u128>(),
            peer(),
            any::<u8>(),
            any::<u64>(),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(key, origin, hops, hop_seq, join, lookup)| Message::Route(
                RouteMsg {
                    key: Key(key),
                    origin: info(origin),
                    hops,
                    hop_seq,
                    body: if join {
                        Routed::Join
                    } else {
                        Routed::Lookup { lookup }
                    },
                }
            )),
        (0u64..64).prop_map(|hop_seq| Message::RouteAck { hop_seq }),
        (infos(), infos(), any::<bool>()).prop_map(|(entries, leaf, last)| Message::JoinReply {
            entries,
            leaf,
            last
        }),
        any::<bool>().prop_map(|reply| Message::Announce { reply }),
        infos().prop_map(|leaf| Message::AnnounceAck { leaf }),
        (infos(), any::<bool>()).prop_map(|(leaf, reply)| Message::LeafSet { leaf, reply }),
        (0u8..32).prop_map(|row| Message::RowRequest { row }),
        (0u8..32, infos()).prop_map(|(row, entries)| Message::RowReply { row, entries }),
        infos().prop_map(|leaf| Message::Leave { leaf }),
        (0u64..64, peer(), any::<u8>()).prop_map(|(lookup, owner, hops)| Message::LookupReply {
            lookup,
            owner: info(owner),
            hops
        }),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Msg(u128, Message),
    Wait(u64),
    Lookup(u128),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            6 => (peer(), message()).prop_map(|(p, m)| Step::Msg(p, m)),
            2 => (0u64..3_000_000).prop_map(Step::Wait),
            1 => any::<u128>().prop_map(Step::Lookup),
        ],
        1..150,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_input_never_breaks_a_node(me in any::<u128>(), joining in any::<bool>(), steps in steps()) {
        let mut cfg = Config::default();
        cfg.max_outbox = 512;
        let mut node = Node::new(info(me), cfg, 7).unwrap();
        let mut now = Time::from_millis(1);
        if joining {
            node.join(now, info(1));
        } else {
            node.start_first(now);
        }
        for step in steps {
            match step {
                Step::Msg(from, msg) => node.handle_message(now, info(from), msg),
                Step::Wait(us) => {
                    now = Time::from_micros(now.as_micros() + us);
                    if node.poll_timeout().is_some_and(|t| t <= now) {
                        node.handle_timeout(now);
                    }
                }
                Step::Lookup(k) => {
                    let _ = node.lookup(now, Key(k));
                }
            }
            node.check_invariants();
            // Whatever the node sends goes to some node other than itself.
            while let Some(t) = node.poll_transmit() {
                prop_assert_ne!(t.to.id, node.id());
            }
            while node.poll_event().is_some() {}
            if let Some(t) = node.poll_timeout() {
                prop_assert!(t >= Time::ZERO);
            }
        }
    }
}
