//! A node fed arbitrary messages from arbitrary peers, interleaved with timeouts and commands,
//! never panics and keeps its invariants (hostile or buggy peers affect only what they say).
//!
//! The node is given real application state first (a cluster member, a subscribed client,
//! requests, a tunnel, a published event), so that hostile messages hit its group trees,
//! requests, deliveries and tunnels; application commands are interleaved with the messages.
//! Ids in hostile messages are drawn near the ids the node really uses (its request, delivery
//! and tunnel ids, the hop sequence numbers, nonces and epochs it sent) as well as at random,
//! and senders are drawn from a pool of peers and from the nodes it talked to.
//!
//! Properties, checked after every input: no panic; `check_invariants` holds; the node sends
//! nothing to itself; no event is reported for a connection that is not registered (nor for a
//! request or tunnel of an earlier registration); each request gets at most one
//! `RequestDone`, and only a request its connection issued; tunnel events name a tunnel of that
//! connection that has not closed; events are published only to subscribers of the topic,
//! broadcasts only to members of a cluster, and requests and tunnel offers only to cluster
//! members; each store operation gets exactly one `KvDone`, for the connection that issued it
//! (the node is also fed the store's messages: writes, reads, answers, digests, key lists and
//! routed operations, with nonces near the ones it sent).
//!
//! Set `PETAL_HOSTILE_STATS=1` to print what the runs covered, `PROPTEST_CASES` to run more.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use bytes::Bytes;
use petal_core::store::key_of;
use petal_core::{
    Config, ConnId, Event, GroupKind, Key, Message, Node, NodeId, NodeInfo, Outcome, Time,
};
use petal_protocol::{
    Ask, AskKind, CastMsg, DescendMsg, EventId, EventSeq, Load, ReplyResult, RouteMsg, Routed,
    STORE_BUCKETS, StoreEntry, StoreOp, StoreOpKind, StoreResult, TunnelParams, Version, Want,
};
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

// ---------------------------------------------------------------------------------------------
// Names and keys

const CLUSTERS: [&str; 3] = ["c", "d", "t"];
const TOPICS: [&str; 3] = ["t", "u", "c"];

/// The group keys the node uses (and close relatives), plus random ones.
fn group_key() -> impl Strategy<Value = Key> {
    prop_oneof![
        4 => prop::sample::select(vec![
            GroupKind::Cluster.key("c"),
            GroupKind::Topic.key("t"),
            GroupKind::Cluster.key("d"),
            GroupKind::Topic.key("u"),
            GroupKind::Cluster.key("t"),
            GroupKind::Topic.key("c"),
        ]),
        1 => any::<u128>().prop_map(Key),
    ]
}

fn cluster_key() -> impl Strategy<Value = Key> {
    prop_oneof![
        4 => Just(GroupKind::Cluster.key("c")),
        1 => group_key(),
    ]
}

fn cluster() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just("c"), 1 => prop::sample::select(CLUSTERS.to_vec())]
}

fn topic() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just("t"), 1 => prop::sample::select(TOPICS.to_vec())]
}

// ---------------------------------------------------------------------------------------------
// Numbers resolved at run time against what the node really uses

/// Ids the harness has seen the node use.
#[derive(Clone, Copy, Debug)]
enum Pool {
    /// Request ids returned by `request`.
    Req,
    /// Local tunnel ids (from `tunnel_open` and `TunnelIncoming`).
    Tun,
    /// Delivery ids (from `Event::Request`).
    Del,
    /// Numbers in what the node sent: hop sequence numbers, nonces, the far ends' tunnel ids,
    /// request ids in replies and asks.
    Sent,
    /// Epochs in the casts and grafts the node sent.
    Epoch,
}

/// A number: raw, or an id of a pool (picked by index) plus a small offset.
#[derive(Clone, Copy, Debug)]
enum Num {
    Raw(u64),
    Near(Pool, usize, i8),
}

fn raw() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..300,
        1 => any::<u64>(),
        1 => prop::sample::select(vec![u64::MAX, u64::MAX - 1, i64::MAX as u64, 1 << 63]),
    ]
}

fn num(pools: &'static [Pool]) -> impl Strategy<Value = Num> {
    let delta = prop_oneof![4 => Just(0i8), 1 => -2i8..=2];
    prop_oneof![
        1 => raw().prop_map(Num::Raw),
        4 => (prop::sample::select(pools), any::<usize>(), delta)
            .prop_map(|(p, i, d)| Num::Near(p, i, d)),
    ]
}

const TUN: &[Pool] = &[Pool::Tun, Pool::Tun, Pool::Tun, Pool::Sent];
const REQ: &[Pool] = &[Pool::Req, Pool::Req, Pool::Sent];
const DEL: &[Pool] = &[Pool::Del, Pool::Del, Pool::Del, Pool::Req];
const SENT: &[Pool] = &[Pool::Sent];
const EPOCH: &[Pool] = &[Pool::Epoch];
const ANY: &[Pool] = &[Pool::Req, Pool::Tun, Pool::Del, Pool::Sent];

fn small_or_any_u32() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..8, 1 => any::<u32>(), 1 => Just(u32::MAX)]
}

fn load() -> impl Strategy<Value = Load> {
    (small_or_any_u32(), small_or_any_u32(), small_or_any_u32()).prop_map(
        |(members, capacity, inflight)| Load {
            members,
            capacity,
            inflight,
        },
    )
}

/// Event sequence numbers near and far.
fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..8,
        1 => any::<u64>(),
        1 => u64::MAX - 3..=u64::MAX,
    ]
}

fn timeout_ms() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 1u32..3_000, 1 => Just(0u32), 1 => any::<u32>()]
}

/// Payload lengths for requests, replies and events.
fn small_len() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0usize..64, 1 => 64usize..400]
}

/// Tunnel chunk lengths: small, around the 64 KiB chunk limit, and beyond it.
fn chunk_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..300,
        2 => 300usize..65_536,
        1 => prop::sample::select(vec![65_535usize, 65_536, 65_537]),
        1 => 65_537usize..=70 * 1024,
    ]
}

/// Byte counts: small, window-sized and huge.
fn byte_count() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..70_000,
        1 => 70_000u64..10_000_000,
        1 => prop::sample::select(vec![u64::MAX, u64::MAX - 1, i64::MAX as u64, (i64::MAX as u64) + 1]),
        1 => any::<u64>(),
    ]
}

fn payload(len: usize) -> Bytes {
    Bytes::from(vec![len as u8; len])
}

// ---------------------------------------------------------------------------------------------
// Messages

/// A message to build at run time (ids resolved against the node's real ones).
#[derive(Clone, Debug)]
enum Spec {
    /// Built at generation time (overlay messages, prunes, publishes).
    Plain(Message),
    Pong(Num),
    RouteAck(Num),
    RouteAcks(Vec<Num>),
    Graft {
        group: Key,
        load: Load,
        epoch: Num,
        seq: u64,
        rejoin: bool,
    },
    Cast {
        group: Key,
        epoch: Num,
        seq: u64,
        len: usize,
        /// The event's identity: few origins and nonces, so that copies recur.
        event: (u128, u64),
    },
    /// A descent (`route == false`) or a routed ask (`route == true`).
    Ask {
        route: bool,
        group: Key,
        /// The requester (`None`: the node itself).
        requester: Option<u128>,
        hops: u8,
        hop_seq: u64,
        id: Num,
        timeout_ms: u32,
        /// A request with a payload of this length, or a tunnel open.
        request: Option<usize>,
    },
    Reply {
        id: Num,
        ok: bool,
        len: usize,
    },
    TunnelAccept {
        tunnel: Num,
        peer_tunnel: Num,
        /// The acceptor's window (its chunk limit derives from it; tiny ones are unusable).
        window: u64,
    },
    TunnelData {
        tunnel: Num,
        sender_tunnel: Num,
        seq: u64,
        size: u64,
        len: usize,
    },
    TunnelAllow {
        tunnel: Num,
        sender_tunnel: Num,
        consumed: u64,
    },
    TunnelClose {
        tunnel: Num,
        reason: String,
    },
    /// A replica's acknowledgement of a store write (`nonce` near the node's own).
    StoreAck {
        nonce: Num,
        stored: bool,
    },
    /// A replica's answer to a store read: an entry of a stored name, or none.
    StoreValue {
        nonce: Num,
        entry: Option<StoreEntry>,
    },
    /// A message to an identity (held here or not).
    IdDeliver {
        id: Num,
        identity: &'static str,
        len: usize,
    },
    /// A holder's answer to a delivery this node sent.
    IdAck {
        id: Num,
        delivered: bool,
    },
}

/// Names of stored keys: few, so that operations and messages meet.
const KV_NAMES: [&str; 3] = ["a", "b", "c"];

fn kv_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(KV_NAMES.to_vec())
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        3 => (0u64..5_000_000_000, 0u64..4).prop_map(|(hlc, node)| Version { hlc, node }),
        1 => Just(Version::NONE),
        1 => any::<(u64, u64)>().prop_map(|(hlc, node)| Version { hlc, node }),
    ]
}

/// An entry of a stored name (now and then under another name's key, or expired, or huge).
fn store_entry() -> impl Strategy<Value = StoreEntry> {
    (
        kv_name(),
        prop::bool::weighted(0.1),
        version(),
        prop_oneof![3 => Just(0u64), 1 => 0u64..100_000, 1 => any::<u64>()],
        prop::option::weighted(0.8, prop_oneof![5 => small_len(), 1 => Just(300 * 1024)]),
    )
        .prop_map(|(name, wrong_key, version, expires_ms, len)| StoreEntry {
            key: key_of(if wrong_key { "zz" } else { name }),
            name: name.to_owned(),
            version,
            expires_ms,
            value: len.map(payload),
        })
}

fn store_op_kind() -> impl Strategy<Value = StoreOpKind> {
    prop_oneof![
        2 => Just(StoreOpKind::Get),
        2 => (small_len(), 0u64..5_000, prop::option::of(version())).prop_map(
            |(len, ttl_ms, expect)| StoreOpKind::Put {
                value: payload(len),
                ttl_ms,
                expect
            }
        ),
        1 => prop::option::of(version()).prop_map(|expect| StoreOpKind::Delete { expect }),
    ]
}

/// The store's messages.
fn store_message() -> impl Strategy<Value = Spec> {
    let keys = prop::collection::vec((kv_name().prop_map(key_of), version()), 0..6);
    prop_oneof![
        3 => (num(SENT), any::<bool>()).prop_map(|(nonce, stored)| Spec::StoreAck { nonce, stored }),
        3 => (num(SENT), prop::option::weighted(0.8, store_entry()))
            .prop_map(|(nonce, entry)| Spec::StoreValue { nonce, entry }),
        3 => (raw(), prop::collection::vec(store_entry(), 0..4))
            .prop_map(|(nonce, entries)| Spec::Plain(Message::StoreWrite { nonce, entries })),
        1 => (raw(), kv_name()).prop_map(|(nonce, name)| Spec::Plain(Message::StoreRead {
            nonce,
            key: key_of(name)
        })),
        2 => prop_oneof![
            4 => prop::collection::vec(any::<u64>(), STORE_BUCKETS..=STORE_BUCKETS),
            1 => prop::collection::vec(any::<u64>(), 0..20),
        ]
        .prop_map(|buckets| Spec::Plain(Message::StoreSync { buckets })),
        2 => (any::<u32>(), keys, any::<bool>()).prop_map(|(buckets, keys, reply)| {
            Spec::Plain(Message::StoreKeys {
                buckets,
                keys,
                reply,
            })
        }),
        2 => (raw(), kv_name(), peer(), store_op_kind(), timeout_ms(), prop::bool::weighted(0.1))
            .prop_map(|(id, name, origin, kind, timeout_ms, wrong_key)| {
                Spec::Plain(Message::route(RouteMsg {
                    key: key_of(if wrong_key { "zz" } else { name }),
                    origin: info(origin),
                    hops: 1,
                    hop_seq: id,
                    body: Routed::Store(Box::new(StoreOp {
                        id,
                        timeout_ms,
                        name: name.to_owned(),
                        kind,
                    })),
                }))
            }),
        2 => (num(SENT), kv_name(), small_len()).prop_map(|(id, identity, len)| {
            Spec::IdDeliver { id, identity, len }
        }),
        2 => (num(SENT), any::<bool>()).prop_map(|(id, delivered)| Spec::IdAck { id, delivered }),
        1 => (raw(), prop_oneof![
            Just(StoreResult::NotFound),
            Just(StoreResult::TimedOut),
            version().prop_map(StoreResult::Written),
        ])
            .prop_map(|(op, result)| Spec::Plain(Message::StoreReply {
                op,
                result: Box::new(result)
            })),
    ]
}

fn overlay_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        (
            any::<u128>(),
            peer(),
            any::<u8>(),
            any::<u64>(),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(key, origin, hops, hop_seq, join, lookup)| Message::route(
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
        infos().prop_map(|contacts| Message::JoinBusy { contacts }),
        (
            any::<u64>(),
            prop_oneof![
                Just(Want::Probe),
                Just(Want::LeafSet),
                (0u8..32).prop_map(Want::Row)
            ]
        )
            .prop_map(|(nonce, want)| Message::Discover { nonce, want }),
        (any::<u64>(), any::<u8>(), infos()).prop_map(|(nonce, rows, entries)| {
            Message::DiscoverReply {
                nonce,
                rows,
                entries,
            }
        }),
        (0u64..64, peer(), any::<u8>()).prop_map(|(lookup, owner, hops)| Message::LookupReply {
            lookup,
            owner: info(owner),
            hops
        }),
    ]
}

fn messaging_message() -> impl Strategy<Value = Spec> {
    let requester = prop_oneof![3 => peer().prop_map(Some), 1 => Just(None)];
    let ask_kind = prop::option::of(small_len());
    let hops = prop_oneof![4 => 0u8..8, 1 => any::<u8>()];
    let seen = (group_key(), load(), num(EPOCH), seq(), any::<bool>());
    let cast = (
        group_key(),
        num(EPOCH),
        seq(),
        small_len(),
        (peer(), 0u64..8),
    );
    let ask = (
        any::<bool>(),
        cluster_key(),
        requester,
        hops,
        raw(),
        num(ANY),
        timeout_ms(),
        ask_kind,
    );
    let reason = prop_oneof![Just(String::new()), "[a-z ]{0,20}"];
    prop_oneof![
        3 => seen.prop_map(|(group, load, epoch, seq, rejoin)| Spec::Graft {
            group,
            load,
            epoch,
            seq,
            rejoin
        }),
        2 => group_key().prop_map(|group| Spec::Plain(Message::Prune { group })),
        4 => cast.prop_map(|(group, epoch, seq, len, event)| Spec::Cast {
            group,
            epoch,
            seq,
            len,
            event
        }),
        4 => ask.prop_map(
            |(route, group, requester, hops, hop_seq, id, timeout_ms, request)| Spec::Ask {
                route,
                group,
                requester,
                hops,
                hop_seq,
                id,
                timeout_ms,
                request,
            }
        ),
        2 => (group_key(), peer(), any::<u8>(), raw(), small_len(), 0u64..8).prop_map(
            |(key, origin, hops, hop_seq, len, nonce)| Spec::Plain(Message::route(RouteMsg {
                key,
                origin: info(origin),
                hops: hops % 80,
                hop_seq,
                body: Routed::Publish {
                    nonce,
                    payload: payload(len)
                },
            }))
        ),
        3 => (num(REQ), any::<bool>(), small_len()).prop_map(|(id, ok, len)| Spec::Reply {
            id,
            ok,
            len
        }),
        2 => (num(TUN), num(ANY), byte_count()).prop_map(|(tunnel, peer_tunnel, window)| {
            Spec::TunnelAccept {
                tunnel,
                peer_tunnel,
                window,
            }
        }),
        5 => (
            (num(TUN), num(ANY)),
            seq(),
            prop_oneof![Just(0u64), byte_count()],
            chunk_len()
        )
            .prop_map(|((tunnel, sender_tunnel), seq, size, len)| Spec::TunnelData {
                tunnel,
                sender_tunnel,
                seq,
                size,
                len
            }),
        3 => (num(TUN), num(ANY), byte_count()).prop_map(|(tunnel, sender_tunnel, consumed)| {
            Spec::TunnelAllow {
                tunnel,
                sender_tunnel,
                consumed,
            }
        }),
        2 => (num(TUN), reason).prop_map(|(tunnel, reason)| Spec::TunnelClose { tunnel, reason }),
    ]
}

fn message() -> impl Strategy<Value = Spec> {
    prop_oneof![
        6 => overlay_message().prop_map(Spec::Plain),
        1 => num(SENT).prop_map(Spec::Pong),
        1 => num(SENT).prop_map(Spec::RouteAck),
        1 => prop::collection::vec(num(SENT), 1..6).prop_map(Spec::RouteAcks),
        12 => messaging_message(),
        3 => store_message(),
    ]
}

/// Who sends a hostile message.
#[derive(Clone, Copy, Debug)]
enum From {
    /// A peer of the pool.
    Pool(u128),
    /// One of the nodes this node sent something to (its parents, children, tunnel peers...).
    Recent(usize),
}

fn from() -> impl Strategy<Value = From> {
    prop_oneof![
        1 => peer().prop_map(From::Pool),
        1 => any::<usize>().prop_map(From::Recent),
    ]
}

// ---------------------------------------------------------------------------------------------
// Application commands

#[derive(Clone, Debug)]
enum App {
    Request {
        conn: u64,
        cluster: &'static str,
        len: usize,
        timeout_ms: u32,
    },
    Reply {
        delivery: Num,
        ok: bool,
        len: usize,
    },
    Open {
        conn: u64,
        cluster: &'static str,
        timeout_ms: u32,
    },
    Accept(Num),
    Send {
        tunnel: Num,
        size: u64,
        len: usize,
    },
    Allow {
        tunnel: Num,
        bytes: u64,
    },
    Close(Num),
    Refuse(Num),
    Register {
        conn: u64,
        cluster: Option<&'static str>,
        capacity: u32,
    },
    Unregister(u64),
    Subscribe {
        conn: u64,
        topic: &'static str,
    },
    Unsubscribe {
        conn: u64,
        topic: &'static str,
    },
    Publish {
        topic: &'static str,
        len: usize,
    },
    Broadcast {
        cluster: &'static str,
        len: usize,
    },
    Lookup(u128),
    Kv {
        conn: u64,
        name: &'static str,
        kind: StoreOpKind,
        timeout_ms: u32,
    },
    /// An identity command: 0 register, 1 unregister, 2 send, 3 who.
    Id {
        conn: u64,
        what: u8,
        identity: &'static str,
        timeout_ms: u32,
    },
}

fn conn() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 1u64..=3, 1 => 0u64..=5]
}

fn app() -> impl Strategy<Value = App> {
    let app_timeout = prop_oneof![4 => 1u32..3_000, 1 => Just(0u32), 1 => 3_000u32..100_000];
    prop_oneof![
        4 => (conn(), cluster(), small_len(), app_timeout.clone()).prop_map(
            |(conn, cluster, len, timeout_ms)| App::Request {
                conn,
                cluster,
                len,
                timeout_ms
            }
        ),
        4 => (num(DEL), any::<bool>(), small_len()).prop_map(|(delivery, ok, len)| App::Reply {
            delivery,
            ok,
            len
        }),
        2 => (conn(), cluster(), app_timeout).prop_map(|(conn, cluster, timeout_ms)| App::Open {
            conn,
            cluster,
            timeout_ms
        }),
        1 => num(TUN).prop_map(App::Accept),
        4 => (num(TUN), prop_oneof![Just(0u64), byte_count()], chunk_len())
            .prop_map(|(tunnel, size, len)| App::Send { tunnel, size, len }),
        3 => (num(TUN), byte_count()).prop_map(|(tunnel, bytes)| App::Allow { tunnel, bytes }),
        1 => num(TUN).prop_map(App::Close),
        1 => num(TUN).prop_map(App::Refuse),
        1 => (
            conn(),
            prop::option::weighted(0.6, cluster()),
            prop_oneof![4 => 0u32..5, 1 => any::<u32>()]
        )
            .prop_map(|(conn, cluster, capacity)| App::Register {
                conn,
                cluster,
                capacity
            }),
        1 => conn().prop_map(App::Unregister),
        1 => (conn(), topic()).prop_map(|(conn, topic)| App::Subscribe { conn, topic }),
        1 => (conn(), topic()).prop_map(|(conn, topic)| App::Unsubscribe { conn, topic }),
        1 => (topic(), small_len()).prop_map(|(topic, len)| App::Publish { topic, len }),
        1 => (cluster(), small_len()).prop_map(|(cluster, len)| App::Broadcast { cluster, len }),
        1 => any::<u128>().prop_map(App::Lookup),
        3 => (conn(), 0u8..4, kv_name(), timeout_ms()).prop_map(
            |(conn, what, identity, timeout_ms)| App::Id {
                conn,
                what,
                identity,
                timeout_ms
            }
        ),
        3 => (conn(), kv_name(), store_op_kind(), timeout_ms()).prop_map(
            |(conn, name, kind, timeout_ms)| App::Kv {
                conn,
                name,
                kind,
                timeout_ms
            }
        ),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Msg(From, Spec),
    Wait(u64),
    App(App),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            12 => (from(), message()).prop_map(|(p, m)| Step::Msg(p, m)),
            3 => prop_oneof![
                3 => 0u64..100_000,
                2 => 100_000u64..3_000_000,
                1 => 3_000_000u64..20_000_000,
            ]
            .prop_map(Step::Wait),
            5 => app().prop_map(Step::App),
        ],
        1..150,
    )
}

// ---------------------------------------------------------------------------------------------
// The harness

/// Keeps at most this many numbers per pool (the newest replace the oldest).
const POOL_CAP: usize = 128;

fn remember(v: &mut Vec<u64>, x: u64) {
    if v.last() == Some(&x) {
        return;
    }
    if v.len() >= POOL_CAP {
        v.remove(0);
    }
    v.push(x);
}

#[derive(Clone, Debug, Default)]
struct ConnState {
    /// The cluster it is a member of.
    cluster: Option<&'static str>,
    /// Topics it subscribes to.
    topics: BTreeSet<&'static str>,
}

fn event_name(ev: &Event) -> &'static str {
    match ev {
        Event::Request { .. } => "ev-request",
        Event::RequestDone {
            outcome: Outcome::Timeout,
            ..
        } => "ev-request-timeout",
        Event::RequestDone { .. } => "ev-request-answered",
        Event::Published { .. } => "ev-published",
        Event::Broadcast { .. } => "ev-broadcast",
        Event::TunnelIncoming { .. } => "ev-tunnel-incoming",
        Event::TunnelOfferClosed { .. } => "ev-tunnel-offer-closed",
        Event::TunnelOpened { .. } => "ev-tunnel-opened",
        Event::TunnelOpenFailed { .. } => "ev-tunnel-open-failed",
        Event::TunnelCredit { .. } => "ev-tunnel-credit",
        Event::TunnelData { .. } => "ev-tunnel-data",
        Event::TunnelClosed { reason, .. } if reason.is_empty() => "ev-tunnel-closed",
        Event::TunnelClosed { .. } => "ev-tunnel-failed",
        Event::KvDone {
            result: StoreResult::TimedOut,
            ..
        } => "ev-kv-timeout",
        Event::KvDone { .. } => "ev-kv-answered",
        Event::IdDone { .. } => "ev-id-done",
        Event::IdMessage { .. } => "ev-id-message",
        _ => "ev-overlay",
    }
}

struct Harness {
    node: Node,
    now: Time,
    /// Registered connections (as the application sees them).
    conns: BTreeMap<ConnId, ConnState>,
    /// Requests issued and not yet decided (or forgotten with their connection).
    pending: BTreeMap<u64, ConnId>,
    /// Requests and store operations decided.
    done: BTreeSet<u64>,
    /// Store operations issued and not yet decided (or forgotten with their connection).
    kv: BTreeMap<u64, ConnId>,
    /// Tunnel ends known to the application and not closed yet.
    tunnels: BTreeMap<u64, ConnId>,
    /// Offered tunnels to accept at the next settle.
    to_accept: Vec<u64>,
    /// The connection each request was delivered to.
    del_conn: BTreeMap<u64, ConnId>,
    /// The next id a connection gives its request or tunnel (unique over the case).
    next_id: u64,
    /// Accept every offered tunnel (else only through explicit accept commands).
    auto_accept: bool,
    reqs: Vec<u64>,
    tuns: Vec<u64>,
    dels: Vec<u64>,
    sent: Vec<u64>,
    epochs: Vec<u64>,
    /// Nodes this node sent something to, newest last.
    recent: Vec<NodeInfo>,
}

impl Harness {
    fn resolve(&self, n: Num) -> u64 {
        match n {
            Num::Raw(x) => x,
            Num::Near(pool, i, d) => {
                let v = match pool {
                    Pool::Req => &self.reqs,
                    Pool::Tun => &self.tuns,
                    Pool::Del => &self.dels,
                    Pool::Sent => &self.sent,
                    Pool::Epoch => &self.epochs,
                };
                let base = if v.is_empty() {
                    (i % 64) as u64
                } else {
                    v[i % v.len()]
                };
                base.wrapping_add_signed(i64::from(d))
            }
        }
    }

    fn sender(&self, f: From) -> NodeInfo {
        match f {
            From::Recent(i) if !self.recent.is_empty() => self.recent[i % self.recent.len()],
            From::Recent(i) => {
                info((i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
            }
            From::Pool(p) => info(p),
        }
    }

    fn build(&self, spec: &Spec) -> Message {
        let me = self.node.info();
        match spec.clone() {
            Spec::Plain(m) => m,
            Spec::Pong(n) => Message::Pong {
                nonce: self.resolve(n),
            },
            Spec::RouteAck(n) => Message::RouteAck {
                hop_seq: self.resolve(n),
            },
            Spec::RouteAcks(ns) => Message::RouteAcks {
                hop_seqs: ns.into_iter().map(|n| self.resolve(n)).collect(),
            },
            Spec::Graft {
                group,
                load,
                epoch,
                seq,
                rejoin,
            } => Message::Graft {
                group,
                load,
                seen: EventSeq {
                    epoch: self.resolve(epoch),
                    seq,
                },
                rejoin,
                height: 0,
            },
            Spec::Cast {
                group,
                epoch,
                seq,
                len,
                event: (origin, nonce),
            } => Message::cast(CastMsg {
                group,
                seq: EventSeq {
                    epoch: self.resolve(epoch),
                    seq,
                },
                event: EventId {
                    origin: NodeId(origin),
                    nonce,
                },
                payload: payload(len),
            }),
            Spec::Ask {
                route,
                group,
                requester,
                hops,
                hop_seq,
                id,
                timeout_ms,
                request,
            } => {
                let requester = requester.map_or(me, info);
                let ask = Ask {
                    id: self.resolve(id),
                    timeout_ms,
                    kind: match request {
                        Some(len) => AskKind::Request {
                            payload: payload(len),
                        },
                        None => AskKind::Tunnel(TunnelParams {
                            // Now and then one that leaves no room for a chunk.
                            window: if timeout_ms % 7 == 0 { 10 } else { 4 << 20 },
                            chunk_limit: 65_536,
                        }),
                    },
                };
                if route {
                    Message::route(RouteMsg {
                        key: group,
                        origin: requester,
                        hops,
                        hop_seq,
                        body: Routed::Ask(ask),
                    })
                } else {
                    Message::descend(DescendMsg {
                        group,
                        requester,
                        hops,
                        hop_seq,
                        ask,
                    })
                }
            }
            Spec::Reply { id, ok, len } => Message::Reply {
                id: self.resolve(id),
                result: if ok {
                    ReplyResult::Ok(payload(len))
                } else {
                    ReplyResult::Fault("x".repeat(len))
                },
            },
            Spec::TunnelAccept {
                tunnel,
                peer_tunnel,
                window,
            } => Message::TunnelAccept {
                tunnel: self.resolve(tunnel),
                peer_tunnel: self.resolve(peer_tunnel),
                params: TunnelParams {
                    window,
                    chunk_limit: u32::try_from(window % 70_000).unwrap_or(0),
                },
            },
            Spec::TunnelData {
                tunnel,
                sender_tunnel,
                seq,
                size,
                len,
            } => Message::TunnelData {
                tunnel: self.resolve(tunnel),
                sender_tunnel: self.resolve(sender_tunnel),
                seq,
                size,
                payload: payload(len),
            },
            Spec::TunnelAllow {
                tunnel,
                sender_tunnel,
                consumed,
            } => Message::TunnelAllow {
                tunnel: self.resolve(tunnel),
                sender_tunnel: self.resolve(sender_tunnel),
                consumed,
            },
            Spec::TunnelClose { tunnel, reason } => Message::TunnelClose {
                tunnel: self.resolve(tunnel),
                reason,
            },
            Spec::StoreAck { nonce, stored } => Message::StoreAck {
                nonce: self.resolve(nonce),
                stored,
            },
            Spec::StoreValue { nonce, entry } => Message::StoreValue {
                nonce: self.resolve(nonce),
                entry: entry.map(Box::new),
            },
            Spec::IdDeliver { id, identity, len } => Message::IdDeliver {
                id: self.resolve(id),
                identity: identity.to_owned(),
                payload: payload(len),
            },
            Spec::IdAck { id, delivered } => Message::IdAck {
                id: self.resolve(id),
                delivered,
            },
        }
    }

    /// Records the numbers in what the node sent.
    fn learn_transmit(&mut self, to: NodeInfo, msg: &Message) {
        if !self.recent.contains(&to) {
            if self.recent.len() >= 32 {
                self.recent.remove(0);
            }
            self.recent.push(to);
        }
        let (nums, epoch): (Vec<u64>, Option<u64>) = match msg {
            Message::Ping { nonce } => (vec![*nonce], None),
            Message::Route(r) => {
                let mut v = vec![r.hop_seq];
                if let Routed::Store(op) = &r.body {
                    v.push(op.id);
                }
                if let Routed::Ask(a) = &r.body {
                    v.push(a.id);
                    if r.origin.id == self.node.id() {
                        // A request or tunnel of ours: its id on the wire.
                        let pool = match a.kind {
                            AskKind::Tunnel(_) => &mut self.tuns,
                            _ => &mut self.reqs,
                        };
                        remember(pool, a.id);
                    }
                }
                (v, None)
            }
            Message::Descend(d) => (vec![d.hop_seq, d.ask.id], None),
            Message::Graft { seen, .. } => (vec![], Some(seen.epoch)),
            Message::Cast(c) => (vec![], Some(c.seq.epoch)),
            Message::Reply { id, .. } => (vec![*id], None),
            Message::TunnelAccept {
                tunnel,
                peer_tunnel,
                ..
            } => (vec![*tunnel, *peer_tunnel], None),
            Message::TunnelData {
                tunnel,
                sender_tunnel,
                seq,
                ..
            } => (vec![*tunnel, *sender_tunnel, *seq], None),
            Message::TunnelAllow {
                tunnel,
                sender_tunnel,
                consumed,
            } => (vec![*tunnel, *sender_tunnel, *consumed], None),
            Message::TunnelClose { tunnel, .. } => (vec![*tunnel], None),
            Message::StoreWrite { nonce, .. }
            | Message::StoreRead { nonce, .. }
            | Message::IdDeliver { id: nonce, .. } => (vec![*nonce], None),
            _ => (vec![], None),
        };
        for n in nums {
            remember(&mut self.sent, n);
        }
        if let Some(e) = epoch.filter(|&e| e != 0) {
            remember(&mut self.epochs, e);
        }
    }

    /// Whether requests and tunnel offers may reach `conn`: a cluster member (or, while the
    /// core delivers asks for topic keys, a subscriber).
    fn may_take_asks(&self, conn: ConnId) -> bool {
        let c = &self.conns[&conn];
        c.cluster.is_some()
    }

    /// Checks one event against what the application knows.
    fn check_event(&mut self, ev: &Event) -> Result<(), TestCaseError> {
        cov(event_name(ev), 1);
        if let Some(conn) = ev.conn() {
            prop_assert!(
                self.conns.contains_key(&conn),
                "event for unregistered {:?}: {:?}",
                conn,
                ev
            );
        }
        match ev {
            Event::Request { conn, delivery, .. } => {
                remember(&mut self.dels, *delivery);
                self.del_conn.insert(*delivery, *conn);
                prop_assert!(
                    self.may_take_asks(*conn),
                    "request for a non-member: {:?}",
                    ev
                );
            }
            Event::IdMessage { conn, .. } => {
                prop_assert!(
                    self.conns.contains_key(conn),
                    "message for a gone connection"
                );
            }
            Event::IdDone { conn, op, .. } => {
                prop_assert!(
                    self.done.insert(*op),
                    "second outcome for identity operation {}: {:?}",
                    op,
                    ev
                );
                prop_assert_eq!(
                    self.kv.remove(op),
                    Some(*conn),
                    "outcome for an identity operation its connection has not pending: {:?}",
                    ev
                );
            }
            Event::KvDone { conn, op, .. } => {
                prop_assert!(
                    self.done.insert(*op),
                    "second outcome for store operation {}: {:?}",
                    op,
                    ev
                );
                prop_assert_eq!(
                    self.kv.remove(op),
                    Some(*conn),
                    "outcome for a store operation its connection has not pending: {:?}",
                    ev
                );
            }
            Event::RequestDone { conn, request, .. } => {
                prop_assert!(
                    self.done.insert(*request),
                    "second outcome for request {}: {:?}",
                    request,
                    ev
                );
                prop_assert_eq!(
                    self.pending.remove(request),
                    Some(*conn),
                    "outcome for a request its connection has not pending: {:?}",
                    ev
                );
            }
            Event::Published { conn, topic, .. } => {
                let subscribed = self.conns[conn].topics.iter().any(|t| **t == **topic);
                prop_assert!(subscribed, "event on a topic not subscribed: {:?}", ev);
            }
            Event::Broadcast { conn, .. } => {
                prop_assert!(
                    self.conns[conn].cluster.is_some(),
                    "broadcast to a non-member: {:?}",
                    ev
                );
            }
            Event::TunnelIncoming { conn, offer } => {
                // Accepted (if at all) under the offer's id.
                let tunnel = offer;
                prop_assert!(
                    self.tunnels.insert(*tunnel, *conn).is_none(),
                    "tunnel id reused: {:?}",
                    ev
                );
                remember(&mut self.tuns, *tunnel);
                prop_assert!(
                    self.may_take_asks(*conn),
                    "tunnel offered to a non-member: {:?}",
                    ev
                );
                if self.auto_accept {
                    self.to_accept.push(*tunnel);
                }
            }
            Event::TunnelOpened { conn, tunnel }
            | Event::TunnelCredit { conn, tunnel, .. }
            | Event::TunnelData { conn, tunnel, .. } => {
                prop_assert_eq!(
                    self.tunnels.get(tunnel),
                    Some(conn),
                    "event on a tunnel not open for its connection: {:?}",
                    ev
                );
            }
            Event::TunnelOpenFailed { conn, tunnel }
            | Event::TunnelClosed { conn, tunnel, .. }
            | Event::TunnelOfferClosed {
                conn,
                offer: tunnel,
            } => {
                prop_assert_eq!(
                    self.tunnels.remove(tunnel),
                    Some(*conn),
                    "close of a tunnel not open for its connection: {:?}",
                    ev
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks the invariants, drains the node's outputs (checking them) and accepts offered
    /// tunnels, until nothing is left.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        loop {
            self.node.check_invariants();
            while let Some(t) = self.node.poll_transmit() {
                // Whatever the node sends goes to some node other than itself.
                prop_assert_ne!(t.to.id, self.node.id());
                self.learn_transmit(t.to, &t.msg);
            }
            while let Some(ev) = self.node.poll_event() {
                self.check_event(&ev)?;
            }
            // No deadline in the past: every timer due by now fired (a Wait step fires them),
            // and whatever the node armed since, at `now`, is due at `now` or later.
            if let Some(t) = self.node.poll_timeout() {
                prop_assert!(
                    t >= self.now,
                    "a timer due at {:?}, before now ({:?})",
                    t,
                    self.now
                );
            }
            if self.to_accept.is_empty() {
                return Ok(());
            }
            for id in std::mem::take(&mut self.to_accept) {
                let conn = self.conn_of_tunnel(id);
                let _ = self.node.tunnel_accept(self.now, conn, id, id);
            }
        }
    }

    fn register(&mut self, conn: u64, cluster: Option<&'static str>, capacity: u32) {
        if self
            .node
            .register(self.now, ConnId(conn), cluster, capacity)
            .is_ok()
        {
            self.conns.insert(
                ConnId(conn),
                ConnState {
                    cluster,
                    topics: BTreeSet::new(),
                },
            );
        }
    }

    fn unregister(&mut self, conn: u64) {
        let c = ConnId(conn);
        if self.node.unregister(self.now, c).is_ok() {
            self.conns.remove(&c);
            // Its pending requests are forgotten (no outcome) and its tunnels closed unheard.
            self.pending.retain(|_, r| *r != c);
            self.kv.retain(|_, r| *r != c);
            self.tunnels.retain(|_, t| *t != c);
        }
    }

    fn subscribe(&mut self, conn: u64, topic: &'static str) {
        if let Ok(true) = self.node.subscribe(self.now, ConnId(conn), topic) {
            self.conns
                .get_mut(&ConnId(conn))
                .expect("subscribed, so registered")
                .topics
                .insert(topic);
        }
    }

    /// The connection a tunnel id is known for (an arbitrary one for an unknown id: a wrong
    /// connection must be refused).
    fn conn_of_tunnel(&self, id: u64) -> ConnId {
        self.tunnels.get(&id).copied().unwrap_or(ConnId(id % 6))
    }

    fn request(&mut self, conn: u64, cluster: &str, len: usize, timeout_ms: u32) {
        let c = ConnId(conn);
        // Now and then the id of a request this connection has pending: refused, and the
        // pending one keeps its one outcome.
        let reuse = self
            .pending
            .iter()
            .find(|(_, r)| **r == c)
            .map(|(id, _)| *id)
            .filter(|_| len % 5 == 0);
        let id = reuse.unwrap_or(self.next_id);
        let r = self
            .node
            .request(self.now, c, id, cluster, payload(len), timeout_ms);
        if reuse.is_some() {
            assert!(r.is_err(), "a request id in use accepted again");
            return;
        }
        self.next_id += 1;
        if r.is_ok() {
            self.pending.insert(id, c);
        }
    }

    fn open(&mut self, conn: u64, cluster: &str, timeout_ms: u32) {
        // Apart from the offers' ids (below 2^63), as the accepted tunnels are named by them.
        let id = 1 << 63 | self.next_id;
        self.next_id += 1;
        if self
            .node
            .tunnel_open(self.now, ConnId(conn), id, cluster, timeout_ms)
            .is_ok()
        {
            self.tunnels.insert(id, ConnId(conn));
            remember(&mut self.tuns, id);
        }
    }

    fn app(&mut self, a: App) {
        let now = self.now;
        match a {
            App::Request {
                conn,
                cluster,
                len,
                timeout_ms,
            } => self.request(conn, cluster, len, timeout_ms),
            App::Reply { delivery, ok, len } => {
                let result = if ok {
                    ReplyResult::Ok(payload(len))
                } else {
                    ReplyResult::Fault("f".repeat(len))
                };
                let d = self.resolve(delivery);
                let conn = self.del_conn.get(&d).copied().unwrap_or(ConnId(d % 6));
                let _ = self.node.reply(now, conn, d, result);
            }
            App::Open {
                conn,
                cluster,
                timeout_ms,
            } => self.open(conn, cluster, timeout_ms),
            App::Accept(t) => {
                let t = self.resolve(t);
                let _ = self.node.tunnel_accept(now, self.conn_of_tunnel(t), t, t);
            }
            App::Send { tunnel, size, len } => {
                let t = self.resolve(tunnel);
                let _ = self
                    .node
                    .tunnel_send(now, self.conn_of_tunnel(t), t, size, payload(len));
            }
            App::Allow { tunnel, bytes } => {
                let t = self.resolve(tunnel);
                let _ = self
                    .node
                    .tunnel_allow(now, self.conn_of_tunnel(t), t, bytes);
            }
            App::Close(t) => {
                let t = self.resolve(t);
                let _ = self.node.tunnel_close(now, self.conn_of_tunnel(t), t);
            }
            App::Refuse(t) => {
                let t = self.resolve(t);
                let _ = self.node.tunnel_refuse(now, self.conn_of_tunnel(t), t);
            }
            App::Register {
                conn,
                cluster,
                capacity,
            } => self.register(conn, cluster, capacity),
            App::Unregister(conn) => self.unregister(conn),
            App::Subscribe { conn, topic } => self.subscribe(conn, topic),
            App::Unsubscribe { conn, topic } => {
                if let Ok(true) = self.node.unsubscribe(now, ConnId(conn), topic) {
                    if let Some(c) = self.conns.get_mut(&ConnId(conn)) {
                        c.topics.remove(topic);
                    }
                }
            }
            App::Publish { topic, len } => {
                let _ = self.node.publish(now, topic, payload(len));
            }
            App::Broadcast { cluster, len } => {
                let _ = self.node.broadcast(now, cluster, payload(len));
            }
            App::Lookup(k) => {
                let _ = self.node.lookup(now, Key(k));
            }
            App::Id {
                conn,
                what,
                identity,
                timeout_ms,
            } => {
                let c = ConnId(conn);
                let id = self.next_id;
                self.next_id += 1;
                let r = match what {
                    0 => self.node.id_register(now, c, id, identity, timeout_ms),
                    1 => self
                        .node
                        .id_unregister(now, c, identity)
                        .map(|_| ())
                        .and(Err(petal_core::AppError::UnknownId)),
                    2 => self
                        .node
                        .id_send(now, c, id, identity, payload(3), timeout_ms),
                    _ => self.node.id_who(now, c, id, identity, timeout_ms),
                };
                if r.is_ok() {
                    self.kv.insert(id, c);
                }
            }
            App::Kv {
                conn,
                name,
                kind,
                timeout_ms,
            } => {
                let c = ConnId(conn);
                let id = self.next_id;
                self.next_id += 1;
                if self.node.kv(now, c, id, name, kind, timeout_ms).is_ok() {
                    self.kv.insert(id, c);
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    me: u128,
    joining: bool,
    small: bool,
    auto_accept: bool,
    seed: u64,
    /// Leave the ring before this step.
    leave_at: Option<usize>,
    steps: Vec<Step>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![3 => any::<u128>(), 1 => peer()],
        prop::bool::weighted(0.3),
        any::<bool>(),
        prop::bool::weighted(0.7),
        any::<u64>(),
        prop::option::weighted(0.1, 0usize..150),
        steps(),
    )
        .prop_map(
            |(me, joining, small, auto_accept, seed, leave_at, steps)| Case {
                me,
                joining,
                small,
                auto_accept,
                seed,
                leave_at,
                steps,
            },
        )
}

thread_local! {
    static COVERAGE: std::cell::RefCell<BTreeMap<&'static str, u64>> = Default::default();
}

fn cov(what: &'static str, n: u64) {
    COVERAGE.with(|c| *c.borrow_mut().entry(what).or_default() += n);
}

/// Prints what the runs covered (with `PETAL_HOSTILE_STATS=1`).
fn print_coverage() {
    let all = COVERAGE.with(|c| std::mem::take(&mut *c.borrow_mut()));
    if std::env::var_os("PETAL_HOSTILE_STATS").is_some() {
        let line: Vec<String> = all.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!("hostile: {}", line.join(" "));
    }
}

fn run(case: Case) -> Result<(), TestCaseError> {
    let mut cfg = Config::default();
    cfg.max_outbox = 512;
    if case.small {
        // Small bounds, so that hostile input reaches them.
        cfg.max_events = 256;
        cfg.max_groups = 8;
        cfg.max_group_children = 4;
        cfg.group_replay_events = 8;
        cfg.group_replay_bytes = 1024;
        cfg.max_conns = 3;
        cfg.max_pending_requests = 8;
        cfg.max_deliveries = 8;
        cfg.max_member_inflight = 2;
        cfg.max_tunnels = 6;
        cfg.tunnel_buffer = 128 * 1024;
        cfg.tunnel_window = 96 * 1024;
        cfg.max_pending_hops = 16;
    }
    let node = Node::new(info(case.me), cfg, case.seed).unwrap();
    let mut h = Harness {
        node,
        now: Time::from_millis(1),
        conns: BTreeMap::new(),
        pending: BTreeMap::new(),
        done: BTreeSet::new(),
        kv: BTreeMap::new(),
        tunnels: BTreeMap::new(),
        to_accept: Vec::new(),
        del_conn: BTreeMap::new(),
        next_id: 0,
        auto_accept: true,
        reqs: Vec::new(),
        tuns: Vec::new(),
        dels: Vec::new(),
        sent: Vec::new(),
        epochs: Vec::new(),
        recent: Vec::new(),
    };
    if case.joining {
        h.node.join(h.now, info(1));
    } else {
        h.node.start_first(h.now);
    }
    h.settle()?;

    // Real application state: a cluster member, a subscribed client, requests, a tunnel (to
    // the node itself when it is the cluster's root, accepted), events.
    h.register(1, Some("c"), 2);
    h.settle()?;
    h.register(2, None, 0);
    h.settle()?;
    h.subscribe(2, "t");
    h.settle()?;
    for timeout_ms in [500, 5_000] {
        h.request(2, "c", 16, timeout_ms);
        h.settle()?;
    }
    h.open(2, "c", 5_000);
    h.settle()?;
    let _ = h.node.publish(h.now, "t", payload(8));
    h.settle()?;
    let _ = h.node.broadcast(h.now, "c", payload(8));
    h.settle()?;
    // Answer one delivered request; leave the other pending.
    if let Some(&d) = h.dels.first() {
        let conn = h.del_conn[&d];
        let _ = h.node.reply(h.now, conn, d, ReplyResult::Ok(payload(4)));
        h.settle()?;
    }
    h.auto_accept = case.auto_accept;

    for (i, step) in case.steps.into_iter().enumerate() {
        if case.leave_at == Some(i) {
            h.node.leave(h.now);
            h.settle()?;
        }
        match step {
            Step::Msg(from, spec) => {
                let from = h.sender(from);
                let msg = h.build(&spec);
                h.node.handle_message(h.now, from, msg);
            }
            Step::Wait(us) => {
                h.now = Time::from_micros(h.now.as_micros() + us);
                if h.node.poll_timeout().is_some_and(|t| t <= h.now) {
                    h.node.handle_timeout(h.now);
                }
            }
            Step::App(a) => h.app(a),
        }
        h.settle()?;
    }
    let st = h.node.stats();
    cov("cases", 1);
    for (k, v) in [
        ("st-group-replayed", st.group_replayed),
        ("st-events-delivered", st.events_delivered),
        ("st-events-forwarded", st.events_forwarded),
        ("st-events-duplicate", st.events_duplicate),
        ("st-events-copies-dropped", st.events_copies_dropped),
        ("st-asks-copies-dropped", st.asks_copies_dropped),
        ("st-events-stale", st.events_stale),
        ("st-event-gaps", st.event_gaps),
        ("st-events-lost", st.events_lost),
        ("st-group-cycles-refused", st.group_cycles_refused),
        ("st-group-drops", st.group_drops),
        ("st-asks-forwarded", st.asks_forwarded),
        ("st-asks-unplaced", st.asks_unplaced),
        ("st-asks-bounced", st.asks_bounced),
        ("st-replies-late", st.replies_late),
        ("st-deliveries-expired", st.deliveries_expired),
        ("st-tunnels-failed", st.tunnels_failed),
        ("st-tunnel-stale", st.tunnel_stale),
        ("st-tunnel-drops", st.tunnel_drops),
        ("st-tunnel-bytes-sent", st.tunnel_bytes_sent),
        ("st-tunnel-bytes-received", st.tunnel_bytes_received),
        ("st-outbox-drops", st.outbox_drops),
        ("st-event-drops", st.event_drops),
    ] {
        cov(k, v);
    }
    Ok(())
}

#[test]
fn arbitrary_input_never_breaks_a_node() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        source_file: Some(file!()),
        ..ProptestConfig::default()
    });
    let result = runner.run(&case(), run);
    print_coverage();
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A hostile peer's ask for a topic's key (a descent, or a routed ask reaching the topic's
/// root) must not hand a request or a tunnel to the topic's subscribers: they are not cluster
/// members (found by the hostile test: `choose` once took any local member of the group).
#[test]
fn ask_for_a_topic_reaches_no_subscriber() {
    let now = Time::from_millis(1);
    let topic = GroupKind::Topic.key("t");
    let mut wrong = Vec::new();
    for route in [false, true] {
        for kind in [
            AskKind::Request {
                payload: payload(1),
            },
            AskKind::Tunnel(TunnelParams {
                window: 1 << 20,
                chunk_limit: 1024,
            }),
        ] {
            // The node sits on the topic's key: it is the topic's root.
            let mut node = Node::new(info(topic.0), Config::default(), 7).unwrap();
            node.start_first(now);
            node.register(now, ConnId(2), None, 0).unwrap();
            node.subscribe(now, ConnId(2), "t").unwrap();
            while node.poll_event().is_some() {}
            let ask = Ask {
                id: 1,
                timeout_ms: 1_000,
                kind,
            };
            let msg = if route {
                Message::route(RouteMsg {
                    key: topic,
                    origin: info(5),
                    hops: 0,
                    hop_seq: 0,
                    body: Routed::Ask(ask),
                })
            } else {
                Message::descend(DescendMsg {
                    group: topic,
                    requester: info(5),
                    hops: 0,
                    hop_seq: 0,
                    ask,
                })
            };
            node.handle_message(now, info(5), msg.clone());
            node.check_invariants();
            while let Some(ev) = node.poll_event() {
                if matches!(ev, Event::Request { .. } | Event::TunnelIncoming { .. }) {
                    wrong.push(format!("{msg:?} gave the subscriber {ev:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
