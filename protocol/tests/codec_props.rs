//! Property tests of the frame codec: every message round-trips, and no input panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use petal_protocol::codec::{self, DEFAULT_MAX_FRAME_LEN, DecodeError};
use petal_protocol::{
    Ask, AskKind, CastMsg, DescendMsg, EventId, EventSeq, Key, Load, Message, NodeId, NodeInfo,
    ReplyResult, RouteMsg, Routed, STORE_BUCKETS, Sibling, StoreEntry, StoreOp, StoreOpKind,
    StoreResult, TunnelParams, Version, Want,
};
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn info() -> impl Strategy<Value = NodeInfo> {
    (any::<u128>(), addr()).prop_map(|(id, addr)| NodeInfo {
        id: NodeId(id),
        addr,
    })
}

fn infos() -> impl Strategy<Value = Vec<NodeInfo>> {
    prop::collection::vec(info(), 0..40)
}

/// Arbitrary payloads up to 4 KiB, empty ones included.
fn payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..4096).prop_map(Bytes::from)
}

/// Arbitrary strings (any chars, so non-ASCII and multi-byte ones too).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), any::<String>(), "[a-zé€😀\u{0}]{0,64}",]
}

fn load() -> impl Strategy<Value = Load> {
    any::<(u32, u32, u32)>().prop_map(|(members, capacity, inflight)| Load {
        members,
        capacity,
        inflight,
    })
}

fn event_seq() -> impl Strategy<Value = EventSeq> {
    any::<(u64, u64)>().prop_map(|(epoch, seq)| EventSeq { epoch, seq })
}

fn ask() -> impl Strategy<Value = Ask> {
    let kind = prop_oneof![
        payload().prop_map(|payload| AskKind::Request { payload }),
        any::<(u64, u32)>().prop_map(|(window, chunk_limit)| AskKind::Tunnel(TunnelParams {
            window,
            chunk_limit
        })),
    ];
    (any::<u64>(), any::<u32>(), kind).prop_map(|(id, timeout_ms, kind)| Ask {
        id,
        timeout_ms,
        kind,
    })
}

fn version() -> impl Strategy<Value = Version> {
    any::<(u64, u64)>().prop_map(|(hlc, node)| Version { hlc, node })
}

fn store_op() -> impl Strategy<Value = StoreOp> {
    let kind = prop_oneof![
        Just(StoreOpKind::Get),
        (payload(), any::<u64>(), prop::option::of(version())).prop_map(
            |(value, ttl_ms, expect)| StoreOpKind::Put {
                value,
                ttl_ms,
                expect
            }
        ),
        prop::option::of(version()).prop_map(|expect| StoreOpKind::Delete { expect }),
    ];
    (any::<u64>(), any::<u32>(), text(), kind).prop_map(|(id, timeout_ms, name, kind)| StoreOp {
        id,
        timeout_ms,
        name,
        kind,
    })
}

fn store_entry() -> impl Strategy<Value = StoreEntry> {
    (
        any::<u128>(),
        text(),
        version(),
        any::<u64>(),
        prop::option::of(payload()),
    )
        .prop_map(|(key, name, version, expires_ms, value)| StoreEntry {
            key: Key(key),
            name,
            version,
            expires_ms,
            value,
        })
}

/// The store's messages.
fn store_message() -> impl Strategy<Value = Message> {
    let result = prop_oneof![
        version().prop_map(StoreResult::Written),
        (version(), payload(), any::<u64>()).prop_map(|(version, value, expires_ms)| {
            StoreResult::Found {
                version,
                value,
                expires_ms,
            }
        }),
        Just(StoreResult::NotFound),
        version().prop_map(StoreResult::Conflict),
        text().prop_map(StoreResult::Failed),
        Just(StoreResult::TimedOut),
    ];
    prop_oneof![
        (any::<u128>(), info(), any::<u8>(), any::<u64>(), store_op()).prop_map(
            |(key, origin, hops, hop_seq, op)| Message::route(RouteMsg {
                key: Key(key),
                origin,
                hops,
                hop_seq,
                body: Routed::Store(Box::new(op)),
            })
        ),
        (any::<u64>(), result).prop_map(|(op, result)| Message::StoreReply {
            op,
            result: Box::new(result)
        }),
        (any::<u64>(), prop::collection::vec(store_entry(), 0..8))
            .prop_map(|(nonce, entries)| Message::StoreWrite { nonce, entries }),
        (any::<u64>(), any::<bool>())
            .prop_map(|(nonce, stored)| Message::StoreAck { nonce, stored }),
        (any::<u64>(), any::<u128>()).prop_map(|(nonce, key)| Message::StoreRead {
            nonce,
            key: Key(key)
        }),
        (any::<u64>(), prop::option::of(store_entry())).prop_map(|(nonce, entry)| {
            Message::StoreValue {
                nonce,
                entry: entry.map(Box::new),
            }
        }),
        prop::collection::vec(any::<u64>(), STORE_BUCKETS..=STORE_BUCKETS)
            .prop_map(|buckets| Message::StoreSync { buckets }),
        (
            any::<u32>(),
            prop::collection::vec((any::<u128>(), version()), 0..40),
            any::<bool>()
        )
            .prop_map(|(buckets, keys, reply)| Message::StoreKeys {
                buckets,
                keys: keys.into_iter().map(|(k, v)| (Key(k), v)).collect(),
                reply,
            }),
        (any::<u64>(), text(), payload()).prop_map(|(id, identity, payload)| Message::IdDeliver {
            id,
            identity,
            payload
        }),
        (any::<u64>(), any::<bool>()).prop_map(|(id, delivered)| Message::IdAck { id, delivered }),
    ]
}

/// Every kind of message: the overlay's and messaging's, and the store's.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![4 => overlay_message(), 1 => store_message()]
}

fn overlay_message() -> impl Strategy<Value = Message> {
    let routed = prop_oneof![
        Just(Routed::Join),
        any::<u64>().prop_map(|lookup| Routed::Lookup { lookup }),
        (any::<u64>(), payload()).prop_map(|(nonce, payload)| Routed::Publish { nonce, payload }),
        ask().prop_map(Routed::Ask),
    ];
    let result = prop_oneof![
        payload().prop_map(ReplyResult::Ok),
        text().prop_map(ReplyResult::Fault),
    ];
    prop_oneof![
        any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
        (any::<u128>(), info(), any::<u8>(), any::<u64>(), routed).prop_map(
            |(key, origin, hops, hop_seq, body)| Message::route(RouteMsg {
                key: Key(key),
                origin,
                hops,
                hop_seq,
                body,
            })
        ),
        any::<u64>().prop_map(|hop_seq| Message::RouteAck { hop_seq }),
        prop::collection::vec(any::<u64>(), 1..40)
            .prop_map(|hop_seqs| Message::RouteAcks { hop_seqs }),
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
        (any::<u64>(), info(), any::<u8>()).prop_map(|(lookup, owner, hops)| {
            Message::LookupReply {
                lookup,
                owner,
                hops,
            }
        }),
        (
            any::<u128>(),
            load(),
            event_seq(),
            any::<bool>(),
            any::<u8>()
        )
            .prop_map(|(group, load, seen, rejoin, height)| Message::Graft {
                group: Key(group),
                load,
                seen,
                rejoin,
                height,
            }),
        any::<u128>().prop_map(|group| Message::Prune { group: Key(group) }),
        (any::<u128>(), event_seq(), any::<(u128, u64)>(), payload()).prop_map(
            |(group, seq, (origin, nonce), payload)| Message::cast(CastMsg {
                group: Key(group),
                seq,
                event: EventId {
                    origin: NodeId(origin),
                    nonce,
                },
                payload,
            })
        ),
        (any::<u128>(), info(), any::<u8>(), any::<u64>(), ask()).prop_map(
            |(group, requester, hops, hop_seq, ask)| Message::descend(DescendMsg {
                group: Key(group),
                requester,
                hops,
                hop_seq,
                ask,
            })
        ),
        (any::<u64>(), result).prop_map(|(id, result)| Message::Reply { id, result }),
        any::<(u64, u64, u64, u32)>().prop_map(|(tunnel, peer_tunnel, window, chunk_limit)| {
            Message::TunnelAccept {
                tunnel,
                peer_tunnel,
                params: TunnelParams {
                    window,
                    chunk_limit,
                },
            }
        }),
        (any::<(u64, u64, u64, u64)>(), payload()).prop_map(
            |((tunnel, sender_tunnel, seq, size), payload)| Message::TunnelData {
                tunnel,
                sender_tunnel,
                seq,
                size,
                payload,
            }
        ),
        any::<(u64, u64, u64)>().prop_map(|(tunnel, sender_tunnel, consumed)| {
            Message::TunnelAllow {
                tunnel,
                sender_tunnel,
                consumed,
            }
        }),
        (any::<u64>(), text()).prop_map(|(tunnel, reason)| Message::TunnelClose { tunnel, reason }),
        prop::collection::vec(info(), 0..20).prop_map(|contacts| Message::JoinBusy { contacts }),
        (
            any::<u64>(),
            prop_oneof![
                Just(Want::Probe),
                Just(Want::LeafSet),
                (0u8..32).prop_map(Want::Row)
            ]
        )
            .prop_map(|(nonce, want)| Message::Discover { nonce, want }),
        (
            any::<u64>(),
            any::<u8>(),
            prop::collection::vec(info(), 0..20)
        )
            .prop_map(|(nonce, rows, entries)| Message::DiscoverReply {
                nonce,
                rows,
                entries
            }),
        Just(Message::Heartbeat),
        (any::<u64>(), any::<u64>()).prop_map(|(nonce, ping)| Message::PongPing { nonce, ping }),
        any::<u128>().prop_map(|n| Message::Suspect { node: NodeId(n) }),
        (
            any::<u128>(),
            prop::collection::vec((info(), any::<u32>()), 0..20)
        )
            .prop_map(|(group, siblings)| Message::Redirect {
                group: Key(group),
                siblings: siblings
                    .into_iter()
                    .map(|(info, rtt_us)| Sibling { info, rtt_us })
                    .collect()
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip(msg in message()) {
        let bytes = codec::to_vec(&msg);
        prop_assert_eq!(bytes.len(), codec::encoded_len(&msg));
        let (back, used) = codec::decode(&bytes, DEFAULT_MAX_FRAME_LEN).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(&back, &msg);
        // The head and the tail it leaves out make the same frame.
        let mut split = vec![0xAA];
        let tail = codec::encode_head(&msg, &mut split);
        split.extend_from_slice(tail);
        prop_assert_eq!(&split[1..], &bytes[..]);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode(&bytes, DEFAULT_MAX_FRAME_LEN);
        let _ = codec::decode(&bytes, 16);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        ty in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = ((body.len() + 2) as u32).to_be_bytes().to_vec();
        bytes.push(codec::VERSION);
        bytes.push(ty);
        bytes.extend_from_slice(&body);
        match codec::decode(&bytes, DEFAULT_MAX_FRAME_LEN) {
            Ok((msg, used)) => {
                // Whatever decodes must re-encode to exactly the same bytes.
                prop_assert_eq!(used, bytes.len());
                prop_assert_eq!(codec::to_vec(&msg), bytes);
            }
            Err(DecodeError::Truncated { .. }) => prop_assert!(false, "whole frame reported truncated"),
            Err(_) => {}
        }
    }

    #[test]
    fn flipped_bytes_never_panic(msg in message(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = codec::to_vec(&msg);
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let _ = codec::decode(&bytes, DEFAULT_MAX_FRAME_LEN);
    }

    #[test]
    fn every_prefix_is_truncated(msg in message()) {
        let bytes = codec::to_vec(&msg);
        for cut in [0, 1, 3, 4, bytes.len() / 2, bytes.len() - 1] {
            let is_truncated = matches!(
                codec::decode(&bytes[..cut], DEFAULT_MAX_FRAME_LEN),
                Err(DecodeError::Truncated { .. })
            );
            prop_assert!(is_truncated);
        }
    }
}
