//! Relay protocol v1 codec: the reference node's bytes, varints, violations and properties.

use bytes::{Bytes, BytesMut};
use petal_protocol::relay::{
    self, ClientPacket, Limits, NodePacket, RelayError, ReplyOutcome, decode_varint, put_varint,
    varint_len,
};
use proptest::prelude::*;

/// Bytes from whitespace-separated hex.
fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, v);
    out
}

fn encode_node(p: &NodePacket) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(&mut out);
    out
}

fn encode_client(p: &ClientPacket) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(&mut out);
    out
}

fn decode_node(bytes: &[u8]) -> (Result<Option<NodePacket>, RelayError>, BytesMut) {
    decode_node_with(bytes, &Limits::default())
}

fn decode_node_with(
    bytes: &[u8],
    limits: &Limits,
) -> (Result<Option<NodePacket>, RelayError>, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let r = NodePacket::decode(&mut buf, limits);
    (r, buf)
}

fn decode_client(bytes: &[u8]) -> (Result<Option<ClientPacket>, RelayError>, BytesMut) {
    decode_client_with(bytes, &Limits::default())
}

fn decode_client_with(
    bytes: &[u8],
    limits: &Limits,
) -> (Result<Option<ClientPacket>, RelayError>, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let r = ClientPacket::decode(&mut buf, limits);
    (r, buf)
}

fn node_exact(bytes: &[u8], packet: NodePacket) {
    let (r, rest) = decode_node(bytes);
    assert_eq!(r, Ok(Some(packet.clone())), "decoding {bytes:02x?}");
    assert!(rest.is_empty(), "left over: {rest:02x?}");
    assert_eq!(encode_node(&packet), bytes, "encoding {packet:?}");
    assert_eq!(packet.encoded_len(), bytes.len());
}

fn client_exact(bytes: &[u8], packet: ClientPacket) {
    let (r, rest) = decode_client(bytes);
    assert_eq!(r, Ok(Some(packet.clone())), "decoding {bytes:02x?}");
    assert!(rest.is_empty(), "left over: {rest:02x?}");
    assert_eq!(encode_client(&packet), bytes, "encoding {packet:?}");
    assert_eq!(packet.encoded_len(), bytes.len());
}

#[test]
fn constants() {
    assert_eq!(relay::CLIENT_MAGIC, "iris-client-magic");
    assert_eq!(relay::RELAY_MAGIC, "iris-relay-magic");
    assert_eq!(relay::VERSION, "v1.0-draft2");
    assert_eq!(relay::DEFAULT_PORT, 55555);
    assert_eq!(relay::CHUNK_LIMIT, 65536);
    assert_eq!(relay::NODE_TUNNEL_CREDIT, 4_194_304);
    let l = Limits::default();
    assert_eq!(
        (l.max_message, l.max_string, l.max_chunk),
        (64 << 20, 65535, 65536)
    );
}

#[test]
fn bytes_observed_from_the_reference_node() {
    // INIT accept: 00 10 "iris-relay-magic" 0b "v1.0-draft2"
    node_exact(
        &hex("00 10 69 72 69 73 2d 72 65 6c 61 79 2d 6d 61 67 69 63
              0b 76 31 2e 30 2d 64 72 61 66 74 32"),
        NodePacket::Init {
            magic: relay::RELAY_MAGIC.into(),
            version: relay::VERSION.into(),
        },
    );
    // DENY: 01 10 "iris-relay-magic" 36 "Unsupported protocol. Client: v0.9. Iris: v1.0-draft2."
    node_exact(
        &hex("01 10 69 72 69 73 2d 72 65 6c 61 79 2d 6d 61 67 69 63
              36 55 6e 73 75 70 70 6f 72 74 65 64 20 70 72 6f 74 6f 63 6f 6c 2e 20 43 6c 69 65
              6e 74 3a 20 76 30 2e 39 2e 20 49 72 69 73 3a 20 76 31 2e 30 2d 64 72 61 66 74 32
              2e"),
        NodePacket::Deny {
            magic: relay::RELAY_MAGIC.into(),
            reason: "Unsupported protocol. Client: v0.9. Iris: v1.0-draft2.".into(),
        },
    );
    // REQUEST delivery: 04 00 02 "hi" 88 27 (node id 0, timeout 5000 ms)
    node_exact(
        &hex("04 00 02 68 69 88 27"),
        NodePacket::Request {
            id: 0,
            request: Bytes::from_static(b"hi"),
            timeout_ms: 5000,
        },
    );
    // REPLY ok: 05 00 00 01 07 "hi back"
    node_exact(
        &hex("05 00 00 01 07 68 69 20 62 61 63 6b"),
        NodePacket::Reply {
            id: 0,
            outcome: ReplyOutcome::Success(Bytes::from_static(b"hi back")),
        },
    );
    // REPLY fault: 05 01 00 00 04 "boom"
    node_exact(
        &hex("05 01 00 00 04 62 6f 6f 6d"),
        NodePacket::Reply {
            id: 1,
            outcome: ReplyOutcome::Fault("boom".into()),
        },
    );
    // REPLY timeout: 05 ac 02 01 (id 300)
    node_exact(
        &hex("05 ac 02 01"),
        NodePacket::Reply {
            id: 300,
            outcome: ReplyOutcome::Timeout,
        },
    );
    // BROADCAST delivery: 03 02 "bc"
    node_exact(
        &hex("03 02 62 63"),
        NodePacket::Broadcast {
            message: Bytes::from_static(b"bc"),
        },
    );
    // PUBLISH delivery: 08 06 "topic1" 02 "ev"
    node_exact(
        &hex("08 06 74 6f 70 69 63 31 02 65 76"),
        NodePacket::Publish {
            topic: "topic1".into(),
            event: Bytes::from_static(b"ev"),
        },
    );
    // TUN_CONFIRM: 0a 05 01 (tunnel 5 timed out)
    node_exact(
        &hex("0a 05 01"),
        NodePacket::TunConfirm {
            id: 5,
            chunk_limit: None,
        },
    );
    // CLOSE ack: 02 00
    node_exact(
        &hex("02 00"),
        NodePacket::Close {
            reason: String::new(),
        },
    );
}

#[test]
fn other_spec_examples() {
    // Node: tunnel built (`0a tun_id 00 chunk_limit`), then 4 MiB of credit (`0b tun_id 4194304`).
    node_exact(
        &hex("0a 05 00 80 80 04"),
        NodePacket::TunConfirm {
            id: 5,
            chunk_limit: Some(65536),
        },
    );
    node_exact(
        &hex("0b 05 80 80 80 02"),
        NodePacket::TunAllow {
            id: 5,
            space: 4 << 20,
        },
    );
    node_exact(
        &hex("09 07 80 80 04"),
        NodePacket::TunInit {
            build_id: 7,
            chunk_limit: 65536,
        },
    );
    node_exact(
        &hex("0d 05 00"),
        NodePacket::TunClose {
            id: 5,
            reason: String::new(),
        },
    );
    node_exact(
        &hex("0c 05 03 02 61 62"),
        NodePacket::TunTransfer {
            id: 5,
            size: 3,
            payload: Bytes::from_static(b"ab"),
        },
    );
    // Client handshake as a plain client: 00 11 "iris-client-magic" 0b "v1.0-draft2" 00
    client_exact(
        &hex("00 11 69 72 69 73 2d 63 6c 69 65 6e 74 2d 6d 61 67 69 63
              0b 76 31 2e 30 2d 64 72 61 66 74 32 00"),
        ClientPacket::Init {
            magic: relay::CLIENT_MAGIC.into(),
            version: relay::VERSION.into(),
            cluster: String::new(),
        },
    );
    client_exact(&hex("02"), ClientPacket::Close);
    client_exact(&hex("0d 05"), ClientPacket::TunClose { id: 5 });
    client_exact(
        &hex("0a 07 05"),
        ClientPacket::TunConfirm {
            build_id: 7,
            tun_id: 5,
        },
    );
    client_exact(
        &hex("0b 05 80 80 80 20"),
        ClientPacket::TunAllow {
            id: 5,
            space: 64 << 20,
        },
    );
    // Service replies: `05 node_id 01 bin` and `05 node_id 00 fault`.
    client_exact(
        &hex("05 00 01 07 68 69 20 62 61 63 6b"),
        ClientPacket::Reply {
            id: 0,
            result: Ok(Bytes::from_static(b"hi back")),
        },
    );
    client_exact(
        &hex("05 01 00 04 62 6f 6f 6d"),
        ClientPacket::Reply {
            id: 1,
            result: Err("boom".into()),
        },
    );
    client_exact(
        &hex("04 ac 02 02 62 63 02 68 69 88 27"),
        ClientPacket::Request {
            id: 300,
            cluster: "bc".into(),
            request: Bytes::from_static(b"hi"),
            timeout_ms: 5000,
        },
    );
    client_exact(
        &hex("09 05 02 62 63 88 27"),
        ClientPacket::TunInit {
            id: 5,
            cluster: "bc".into(),
            timeout_ms: 5000,
        },
    );
    client_exact(
        &hex("06 02 65 76"),
        ClientPacket::Subscribe { topic: "ev".into() },
    );
    client_exact(
        &hex("07 02 65 76"),
        ClientPacket::Unsubscribe { topic: "ev".into() },
    );
}

#[test]
fn varint_examples() {
    for (v, bytes) in [
        (0, "00"),
        (127, "7f"),
        (128, "80 01"),
        (300, "ac 02"),
        (5000, "88 27"),
        (65536, "80 80 04"),
        (u64::MAX, "ff ff ff ff ff ff ff ff ff 01"),
    ] {
        let bytes = hex(bytes);
        assert_eq!(varint(v), bytes, "{v}");
        assert_eq!(varint_len(v), bytes.len(), "{v}");
        assert_eq!(decode_varint(&bytes), Ok(Some((v, bytes.len()))), "{v}");
    }
    // Non-minimal encodings are accepted (as Go's binary.Uvarint does).
    assert_eq!(decode_varint(&hex("80 00")), Ok(Some((0, 2))));
}

#[test]
fn varint_len_and_decode_agree_with_put_varint() {
    let mut probes = vec![0, u64::MAX];
    for shift in 0..64 {
        let p = 1u64 << shift;
        probes.extend([p - 1, p, p + 1]);
    }
    for v in probes {
        let bytes = varint(v);
        assert_eq!(bytes.len(), varint_len(v), "{v}");
        assert_eq!(decode_varint(&bytes), Ok(Some((v, bytes.len()))), "{v}");
    }
}

#[test]
fn varint_overflow() {
    let overflow = Err(RelayError::VarintOverflow);
    // A 10th byte above 1 overflows u64.
    assert_eq!(
        decode_varint(&hex("ff ff ff ff ff ff ff ff ff 02")),
        overflow
    );
    assert_eq!(
        decode_varint(&hex("80 80 80 80 80 80 80 80 80 7f")),
        overflow
    );
    // An 11th byte, detected at the 10th (continuation bit set) without waiting for it.
    assert_eq!(
        decode_varint(&hex("ff ff ff ff ff ff ff ff ff 81 00")),
        overflow
    );
    assert_eq!(
        decode_varint(&hex("80 80 80 80 80 80 80 80 80 80")),
        overflow
    );
    // Nine continuation bytes: still incomplete.
    assert_eq!(decode_varint(&hex("80 80 80 80 80 80 80 80 80")), Ok(None));
    assert_eq!(decode_varint(&[]), Ok(None));
    // Inside packets, in both directions, with nothing consumed.
    let bad = hex("0b 80 80 80 80 80 80 80 80 80 80");
    let (r, rest) = decode_client(&bad);
    assert_eq!((r, &rest[..]), (Err(RelayError::VarintOverflow), &bad[..]));
    let (r, rest) = decode_node(&bad);
    assert_eq!((r, &rest[..]), (Err(RelayError::VarintOverflow), &bad[..]));
}

#[test]
fn empty_buffer_is_incomplete() {
    assert_eq!(decode_client(&[]).0, Ok(None));
    assert_eq!(decode_node(&[]).0, Ok(None));
}

#[test]
fn unknown_opcodes() {
    // (0x40-0x42 are Petal's extension, decoded here and refused by a node from a client that
    // did not negotiate it: `overlay/node/tests/relay_store.rs`.)
    for opcode in (0x0e..=0xffu8).filter(|op| !(0x40..=0x46).contains(op)) {
        for tail in [&[][..], &[0, 0, 0, 0][..]] {
            let mut bytes = vec![opcode];
            bytes.extend_from_slice(tail);
            let (r, rest) = decode_client(&bytes);
            assert_eq!(r, Err(RelayError::UnknownOpcode(opcode)));
            assert_eq!(&rest[..], &bytes[..]);
            if !(0x40..=0x42).contains(&opcode) {
                let (r, rest) = decode_node(&bytes);
                assert_eq!(r, Err(RelayError::UnknownOpcode(opcode)));
                assert_eq!(&rest[..], &bytes[..]);
            }
        }
    }
    for opcode in [0x43, 0x44, 0x45, 0x46] {
        assert_eq!(
            decode_node(&[opcode, 0, 0]).0,
            Err(RelayError::UnknownOpcode(opcode))
        );
    }
    // Clients never send DENY; nodes never send SUBSCRIBE or UNSUBSCRIBE.
    assert_eq!(
        decode_client(&hex("01 00 00")).0,
        Err(RelayError::UnknownOpcode(0x01))
    );
    assert_eq!(
        decode_node(&hex("06 00")).0,
        Err(RelayError::UnknownOpcode(0x06))
    );
    assert_eq!(
        decode_node(&hex("07 00")).0,
        Err(RelayError::UnknownOpcode(0x07))
    );
}

#[test]
fn extension_layouts() {
    use petal_protocol::{StoreResult, Version};
    client_exact(
        &hex("41 07 01 6b 02 68 69 90 4e 01 05 09 e8 07"),
        ClientPacket::KvPut {
            id: 7,
            key: "k".into(),
            value: Bytes::from_static(b"hi"),
            ttl_ms: 10_000,
            expect: Some(Version { hlc: 5, node: 9 }),
            timeout_ms: 1000,
        },
    );
    client_exact(
        &hex("40 03 01 6b e8 07"),
        ClientPacket::KvGet {
            id: 3,
            key: "k".into(),
            timeout_ms: 1000,
        },
    );
    client_exact(
        &hex("42 03 01 6b 00 e8 07"),
        ClientPacket::KvDelete {
            id: 3,
            key: "k".into(),
            expect: None,
            timeout_ms: 1000,
        },
    );
    node_exact(
        &hex("40 07 01 05 09 00 02 68 69"),
        NodePacket::KvResult {
            id: 7,
            result: StoreResult::Found {
                version: Version { hlc: 5, node: 9 },
                expires_ms: 0,
                value: Bytes::from_static(b"hi"),
            },
        },
    );
    node_exact(
        &hex("40 07 04 02 6e 6f"),
        NodePacket::KvResult {
            id: 7,
            result: StoreResult::Failed("no".into()),
        },
    );
    assert_eq!(
        decode_node(&hex("40 07 09")).0,
        Err(RelayError::BadResult(9))
    );
}

#[test]
fn bad_bools() {
    assert_eq!(
        decode_client(&hex("05 00 02 00")).0,
        Err(RelayError::BadBool(2))
    );
    assert_eq!(
        decode_client(&hex("05 00 ff")).0,
        Err(RelayError::BadBool(0xff))
    );
    // Node REPLY: timed_out, then success.
    assert_eq!(decode_node(&hex("05 00 02")).0, Err(RelayError::BadBool(2)));
    assert_eq!(
        decode_node(&hex("05 00 00 07 00")).0,
        Err(RelayError::BadBool(7))
    );
    // Node TUN_CONFIRM: timed_out.
    let (r, rest) = decode_node(&hex("0a 05 80"));
    assert_eq!(r, Err(RelayError::BadBool(0x80)));
    assert_eq!(rest.len(), 3);
}

#[test]
fn bad_utf8() {
    let (r, rest) = decode_client(&hex("06 02 c3 28"));
    assert_eq!(r, Err(RelayError::BadUtf8));
    assert_eq!(rest.len(), 4, "nothing consumed");
    assert_eq!(
        decode_client(&hex("00 01 ff 00 00")).0,
        Err(RelayError::BadUtf8)
    );
    assert_eq!(
        decode_client(&hex("05 00 00 01 80")).0,
        Err(RelayError::BadUtf8)
    );
    assert_eq!(
        decode_client(&hex("03 01 ff 00")).0,
        Err(RelayError::BadUtf8)
    );
    assert_eq!(decode_node(&hex("0d 00 01 ff")).0, Err(RelayError::BadUtf8));
    assert_eq!(
        decode_node(&hex("05 00 00 00 02 ed a0")).0,
        Err(RelayError::BadUtf8)
    );
    assert_eq!(decode_node(&hex("08 01 fe 00")).0, Err(RelayError::BadUtf8));
    // Content is checked once the packet is whole: an incomplete one is just incomplete.
    assert_eq!(decode_client(&hex("06 03 c3 28")).0, Ok(None));
    // Binary fields may hold anything.
    assert!(matches!(decode_node(&hex("03 02 c3 28")).0, Ok(Some(_))));
}

/// The violating field of an over-limit length prefix: its direction, the bytes before the
/// prefix, the field's name and which limit applies.
#[derive(Clone, Copy, Debug)]
enum Which {
    Str,
    Msg,
    Chunk,
}

const CLIENT_FIELDS: &[(&[u8], &str, Which)] = &[
    (&[0x00], "magic", Which::Str),
    (&[0x00, 0x00], "version", Which::Str),
    (&[0x00, 0x00, 0x00], "cluster", Which::Str),
    (&[0x03], "cluster", Which::Str),
    (&[0x03, 0x00], "message", Which::Msg),
    (&[0x04, 0x07], "cluster", Which::Str),
    (&[0x04, 0x07, 0x00], "request", Which::Msg),
    (&[0x05, 0x07, 0x01], "reply", Which::Msg),
    (&[0x05, 0x07, 0x00], "fault", Which::Str),
    (&[0x06], "topic", Which::Str),
    (&[0x07], "topic", Which::Str),
    (&[0x08], "topic", Which::Str),
    (&[0x08, 0x00], "event", Which::Msg),
    (&[0x09, 0x07], "cluster", Which::Str),
    (&[0x0c, 0x07, 0x00], "payload", Which::Chunk),
];

const NODE_FIELDS: &[(&[u8], &str, Which)] = &[
    (&[0x00], "magic", Which::Str),
    (&[0x00, 0x00], "version", Which::Str),
    (&[0x01], "magic", Which::Str),
    (&[0x01, 0x00], "reason", Which::Str),
    (&[0x02], "reason", Which::Str),
    (&[0x03], "message", Which::Msg),
    (&[0x04, 0x07], "request", Which::Msg),
    (&[0x05, 0x07, 0x00, 0x01], "reply", Which::Msg),
    (&[0x05, 0x07, 0x00, 0x00], "fault", Which::Str),
    (&[0x08], "topic", Which::Str),
    (&[0x08, 0x00], "event", Which::Msg),
    (&[0x0c, 0x07, 0x80, 0x01], "payload", Which::Chunk),
    (&[0x0d, 0x07], "reason", Which::Str),
];

fn limit(limits: &Limits, which: Which) -> usize {
    match which {
        Which::Str => limits.max_string,
        Which::Msg => limits.max_message,
        Which::Chunk => limits.max_chunk,
    }
}

#[test]
fn over_limit_prefixes_with_default_limits() {
    let limits = Limits::default();
    for (client, fields) in [(true, CLIENT_FIELDS), (false, NODE_FIELDS)] {
        for &(head, what, which) in fields {
            let max = limit(&limits, which);
            let mut bytes = head.to_vec();
            bytes.extend(varint(max as u64 + 1));
            let expect = Err(RelayError::TooLong {
                what,
                len: max as u64 + 1,
                max,
            });
            let (r, rest) = if client {
                let (r, rest) = decode_client(&bytes);
                (r.map(|p| p.map(|_| ())), rest)
            } else {
                let (r, rest) = decode_node(&bytes);
                (r.map(|p| p.map(|_| ())), rest)
            };
            assert_eq!(r, expect, "{bytes:02x?}");
            assert_eq!(&rest[..], &bytes[..], "nothing consumed");
        }
    }
    // A chunk of exactly the limit is fine.
    let chunk = NodePacket::TunTransfer {
        id: 1,
        size: 0,
        payload: Bytes::from(vec![9; 65536]),
    };
    assert_eq!(decode_node(&encode_node(&chunk)).0, Ok(Some(chunk)));
}

#[test]
fn payloads_are_zero_copy_slices_of_the_buffer() {
    let publish = ClientPacket::Publish {
        topic: "t".into(),
        event: Bytes::from(vec![7; 1000]),
    };
    let mut buf = BytesMut::from(&encode_client(&publish)[..]);
    let base = buf.as_ptr() as usize;
    let Ok(Some(ClientPacket::Publish { event, .. })) =
        ClientPacket::decode(&mut buf, &Limits::default())
    else {
        panic!("not a publish");
    };
    // Opcode, topic length, "t", event length (2 bytes): the event starts at offset 5.
    assert_eq!(event.as_ptr() as usize, base + 5);
}

/// A frame that is a small part of the buffer is parsed in place: its payload is a copy (a
/// slice would pin the whole buffer), the buffer moves past it, and a bad one consumes nothing.
#[test]
fn small_frames_in_a_large_buffer_are_copied_out() {
    let publish = ClientPacket::Publish {
        topic: "t".into(),
        event: Bytes::from(vec![7; 10]),
    };
    let frame = encode_client(&publish);
    let mut buf = BytesMut::with_capacity(1 << 16);
    buf.extend_from_slice(&frame);
    buf.extend_from_slice(&frame);
    let start = buf.as_ptr() as usize;
    let end = start + buf.capacity();
    for left in [frame.len(), 0] {
        let decoded = ClientPacket::decode(&mut buf, &Limits::default());
        let Ok(Some(ClientPacket::Publish { topic, event })) = decoded else {
            panic!("not a publish: {decoded:?}");
        };
        assert_eq!((topic.as_str(), &event[..]), ("t", &[7u8; 10][..]));
        let at = event.as_ptr() as usize;
        assert!(
            !(start..end).contains(&at),
            "the event points into the read buffer"
        );
        assert_eq!(buf.len(), left);
    }
    // A bad topic (not UTF-8) in a small frame: an error, nothing consumed.
    let mut bad = frame.to_vec();
    bad[2] = 0xff;
    buf.extend_from_slice(&bad);
    let r = ClientPacket::decode(&mut buf, &Limits::default());
    assert!(matches!(r, Err(RelayError::BadUtf8)), "{r:?}");
    assert_eq!(&buf[..], &bad[..]);
}

#[test]
fn a_large_incomplete_packet_waits_untouched() {
    // A 60 MiB broadcast of which 1 MiB has arrived.
    let mut bytes = hex("03");
    bytes.extend(varint(60 << 20));
    bytes.resize(bytes.len() + (1 << 20), 0xab);
    let (r, rest) = decode_node(&bytes);
    assert_eq!(r, Ok(None));
    assert_eq!(rest.len(), bytes.len());
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn blob() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn num() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..200, any::<u64>()]
}

fn client_packet() -> impl Strategy<Value = ClientPacket> {
    prop_oneof![
        (text(), text(), text()).prop_map(|(magic, version, cluster)| ClientPacket::Init {
            magic,
            version,
            cluster
        }),
        Just(ClientPacket::Close),
        (text(), blob())
            .prop_map(|(cluster, message)| ClientPacket::Broadcast { cluster, message }),
        (num(), text(), blob(), num()).prop_map(|(id, cluster, request, timeout_ms)| {
            ClientPacket::Request {
                id,
                cluster,
                request,
                timeout_ms,
            }
        }),
        (num(), blob()).prop_map(|(id, reply)| ClientPacket::Reply {
            id,
            result: Ok(reply)
        }),
        (num(), text()).prop_map(|(id, fault)| ClientPacket::Reply {
            id,
            result: Err(fault)
        }),
        text().prop_map(|topic| ClientPacket::Subscribe { topic }),
        text().prop_map(|topic| ClientPacket::Unsubscribe { topic }),
        (text(), blob()).prop_map(|(topic, event)| ClientPacket::Publish { topic, event }),
        (num(), text(), num()).prop_map(|(id, cluster, timeout_ms)| ClientPacket::TunInit {
            id,
            cluster,
            timeout_ms
        }),
        (num(), num()).prop_map(|(build_id, tun_id)| ClientPacket::TunConfirm { build_id, tun_id }),
        (num(), num()).prop_map(|(id, space)| ClientPacket::TunAllow { id, space }),
        (num(), num(), blob()).prop_map(|(id, size, payload)| ClientPacket::TunTransfer {
            id,
            size,
            payload
        }),
        num().prop_map(|id| ClientPacket::TunClose { id }),
        (num(), text(), num()).prop_map(|(id, key, timeout_ms)| ClientPacket::KvGet {
            id,
            key,
            timeout_ms
        }),
        (
            num(),
            text(),
            blob(),
            num(),
            prop::option::of(version()),
            num()
        )
            .prop_map(
                |(id, key, value, ttl_ms, expect, timeout_ms)| ClientPacket::KvPut {
                    id,
                    key,
                    value,
                    ttl_ms,
                    expect,
                    timeout_ms
                }
            ),
        (num(), text(), prop::option::of(version()), num()).prop_map(
            |(id, key, expect, timeout_ms)| ClientPacket::KvDelete {
                id,
                key,
                expect,
                timeout_ms
            }
        ),
        (num(), text(), num()).prop_map(|(id, identity, timeout_ms)| ClientPacket::IdRegister {
            id,
            identity,
            timeout_ms
        }),
        text().prop_map(|identity| ClientPacket::IdUnregister { identity }),
        (num(), text(), blob(), num()).prop_map(|(id, identity, message, timeout_ms)| {
            ClientPacket::IdSend {
                id,
                identity,
                message,
                timeout_ms,
            }
        }),
        (num(), text(), num()).prop_map(|(id, identity, timeout_ms)| ClientPacket::IdWho {
            id,
            identity,
            timeout_ms
        }),
    ]
}

fn version() -> impl Strategy<Value = petal_protocol::Version> {
    (num(), num()).prop_map(|(hlc, node)| petal_protocol::Version { hlc, node })
}

fn id_result() -> impl Strategy<Value = petal_protocol::IdResult> {
    use petal_protocol::{IdResult, NodeId, NodeInfo};
    prop_oneof![
        Just(IdResult::Registered),
        any::<u32>().prop_map(|nodes| IdResult::Sent { nodes }),
        prop::collection::vec((any::<u128>(), any::<[u8; 4]>(), any::<u16>()), 0..4).prop_map(
            |v| IdResult::Holders(
                v.into_iter()
                    .map(|(id, ip, port)| NodeInfo {
                        id: NodeId(id),
                        addr: std::net::SocketAddr::from((ip, port)),
                    })
                    .collect()
            )
        ),
        Just(IdResult::Unknown),
        text().prop_map(IdResult::Failed),
        Just(IdResult::TimedOut),
    ]
}

fn store_result() -> impl Strategy<Value = petal_protocol::StoreResult> {
    use petal_protocol::StoreResult;
    prop_oneof![
        version().prop_map(StoreResult::Written),
        (version(), blob(), num()).prop_map(|(version, value, expires_ms)| StoreResult::Found {
            version,
            value,
            expires_ms
        }),
        Just(StoreResult::NotFound),
        version().prop_map(StoreResult::Conflict),
        text().prop_map(StoreResult::Failed),
        Just(StoreResult::TimedOut),
    ]
}

fn node_packet() -> impl Strategy<Value = NodePacket> {
    prop_oneof![
        (text(), text()).prop_map(|(magic, version)| NodePacket::Init { magic, version }),
        (text(), text()).prop_map(|(magic, reason)| NodePacket::Deny { magic, reason }),
        text().prop_map(|reason| NodePacket::Close { reason }),
        blob().prop_map(|message| NodePacket::Broadcast { message }),
        (num(), blob(), num()).prop_map(|(id, request, timeout_ms)| NodePacket::Request {
            id,
            request,
            timeout_ms
        }),
        (num(), blob()).prop_map(|(id, r)| NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Success(r)
        }),
        (num(), text()).prop_map(|(id, f)| NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Fault(f)
        }),
        num().prop_map(|id| NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Timeout
        }),
        (text(), blob()).prop_map(|(topic, event)| NodePacket::Publish {
            topic: topic.into(),
            event
        }),
        (num(), num()).prop_map(|(build_id, chunk_limit)| NodePacket::TunInit {
            build_id,
            chunk_limit
        }),
        (num(), prop::option::of(num()))
            .prop_map(|(id, chunk_limit)| NodePacket::TunConfirm { id, chunk_limit }),
        (num(), num()).prop_map(|(id, space)| NodePacket::TunAllow { id, space }),
        (num(), num(), blob()).prop_map(|(id, size, payload)| NodePacket::TunTransfer {
            id,
            size,
            payload
        }),
        (num(), text()).prop_map(|(id, reason)| NodePacket::TunClose { id, reason }),
        (num(), store_result()).prop_map(|(id, result)| NodePacket::KvResult { id, result }),
        (text(), blob())
            .prop_map(|(identity, message)| NodePacket::IdMessage { identity, message }),
        (num(), id_result()).prop_map(|(id, result)| NodePacket::IdResult { id, result }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn client_round_trip(p in client_packet()) {
        let bytes = encode_client(&p);
        prop_assert_eq!(bytes.len(), p.encoded_len());
        let (r, rest) = decode_client(&bytes);
        prop_assert_eq!(r, Ok(Some(p)));
        prop_assert!(rest.is_empty());
    }

    /// A packet handed over as a value (an embedded application's) passes `check` exactly
    /// when its bytes would decode under the same limits, with the decoder's error otherwise.
    #[test]
    fn check_agrees_with_decode(
        p in client_packet(),
        max_string in 0usize..14,
        max_message in 0usize..320,
        max_chunk in 0usize..320,
    ) {
        let limits = Limits { max_message, max_string, max_chunk };
        let bytes = encode_client(&p);
        let (decoded, _) = decode_client_with(&bytes, &limits);
        match (p.check(&limits), decoded) {
            (Ok(()), Ok(Some(q))) => prop_assert_eq!(q, p),
            (Err(e), Err(f)) => prop_assert_eq!(e, f),
            (c, d) => prop_assert!(false, "check {:?} but decode {:?}", c, d),
        }
    }

    #[test]
    fn node_round_trip(p in node_packet()) {
        let bytes = encode_node(&p);
        prop_assert_eq!(bytes.len(), p.encoded_len());
        // The head and the tail it leaves out make the same bytes.
        let mut split = vec![0x5A];
        let tail = p.encode_head(&mut split).cloned();
        split.extend_from_slice(tail.as_deref().unwrap_or_default());
        prop_assert_eq!(&split[1..], &bytes[..]);
        prop_assert_eq!(tail.is_some(), matches!(p, NodePacket::TunTransfer { .. }));
        let (r, rest) = decode_node(&bytes);
        prop_assert_eq!(r, Ok(Some(p)));
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn encode_appends(p in node_packet(), q in client_packet(), pre in blob()) {
        let mut out = pre.to_vec();
        p.encode(&mut out);
        q.encode(&mut out);
        let mut expect = pre.to_vec();
        expect.extend(encode_node(&p));
        expect.extend(encode_client(&q));
        prop_assert_eq!(out, expect);
    }

    #[test]
    fn every_strict_prefix_is_incomplete(c in client_packet(), n in node_packet()) {
        let bytes = encode_client(&c);
        for cut in 0..bytes.len() {
            let (r, rest) = decode_client(&bytes[..cut]);
            prop_assert_eq!(r, Ok(None), "cut {}", cut);
            prop_assert_eq!(&rest[..], &bytes[..cut]);
        }
        let bytes = encode_node(&n);
        for cut in 0..bytes.len() {
            let (r, rest) = decode_node(&bytes[..cut]);
            prop_assert_eq!(r, Ok(None), "cut {}", cut);
            prop_assert_eq!(&rest[..], &bytes[..cut]);
        }
    }

    #[test]
    fn concatenated_packets_decode_in_order(
        cs in prop::collection::vec(client_packet(), 0..8),
        ns in prop::collection::vec(node_packet(), 0..8),
    ) {
        let mut buf = BytesMut::new();
        for c in &cs {
            buf.extend_from_slice(&encode_client(c));
        }
        for c in &cs {
            prop_assert_eq!(ClientPacket::decode(&mut buf, &Limits::default()), Ok(Some(c.clone())));
        }
        prop_assert_eq!(ClientPacket::decode(&mut buf, &Limits::default()), Ok(None));
        prop_assert!(buf.is_empty());

        let mut buf = BytesMut::new();
        for n in &ns {
            buf.extend_from_slice(&encode_node(n));
        }
        for n in &ns {
            prop_assert_eq!(NodePacket::decode(&mut buf, &Limits::default()), Ok(Some(n.clone())));
        }
        prop_assert_eq!(NodePacket::decode(&mut buf, &Limits::default()), Ok(None));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn streamed_in_pieces(
        ns in prop::collection::vec(node_packet(), 1..8),
        pieces in prop::collection::vec(1usize..40, 1..200),
    ) {
        let mut wire = Vec::new();
        for n in &ns {
            n.encode(&mut wire);
        }
        let (mut buf, mut got, mut at) = (BytesMut::new(), Vec::new(), 0);
        for piece in pieces.iter().cycle() {
            if at == wire.len() {
                break;
            }
            let end = (at + piece).min(wire.len());
            buf.extend_from_slice(&wire[at..end]);
            at = end;
            while let Some(p) = NodePacket::decode(&mut buf, &Limits::default()).unwrap() {
                got.push(p);
            }
        }
        prop_assert_eq!(got, ns);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let limits = Limits { max_message: 32, max_string: 16, max_chunk: 8 };
        for limits in [Limits::default(), limits] {
            let (r, rest) = decode_client_with(&bytes, &limits);
            match r {
                Ok(Some(p)) => {
                    prop_assert!(rest.len() < bytes.len());
                    prop_assert_eq!(&rest[..], &bytes[bytes.len() - rest.len()..]);
                    let _ = p.encoded_len();
                }
                Ok(None) | Err(_) => prop_assert_eq!(&rest[..], &bytes[..]),
            }
            let (r, rest) = decode_node_with(&bytes, &limits);
            match r {
                Ok(Some(p)) => {
                    prop_assert!(rest.len() < bytes.len());
                    prop_assert_eq!(&rest[..], &bytes[bytes.len() - rest.len()..]);
                    let _ = p.encoded_len();
                }
                Ok(None) | Err(_) => prop_assert_eq!(&rest[..], &bytes[..]),
            }
        }
    }

    #[test]
    fn random_bodies_behind_valid_opcodes_never_panic(
        opcode in 0u8..=0x0d,
        body in prop::collection::vec(prop_oneof![0u8..4, any::<u8>()], 0..64),
    ) {
        let mut bytes = vec![opcode];
        bytes.extend(body);
        let _ = decode_client(&bytes);
        let _ = decode_node(&bytes);
    }

    #[test]
    fn flipped_bytes_never_panic(p in node_packet(), q in client_packet(), pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        let mut bytes = encode_node(&p);
        let i = pos.index(bytes.len());
        bytes[i] ^= x;
        let _ = decode_node(&bytes);
        let mut bytes = encode_client(&q);
        let i = pos.index(bytes.len());
        bytes[i] ^= x;
        let _ = decode_client(&bytes);
    }

    #[test]
    fn over_limit_prefixes_rejected_from_the_prefix_alone(
        client in any::<bool>(),
        field in any::<prop::sample::Index>(),
        max_message in 0usize..5000,
        max_string in 0usize..5000,
        max_chunk in 0usize..5000,
        excess in prop_oneof![1u64..1000, any::<u64>()],
    ) {
        let limits = Limits { max_message, max_string, max_chunk };
        let fields = if client { CLIENT_FIELDS } else { NODE_FIELDS };
        let (head, what, which) = fields[field.index(fields.len())];
        let max = limit(&limits, which);
        let len = (max as u64).saturating_add(excess);
        let mut bytes = head.to_vec();
        bytes.extend(varint(len));
        let (r, rest) = if client {
            let (r, rest) = decode_client_with(&bytes, &limits);
            (r.map(|p| p.map(|_| ())), rest)
        } else {
            let (r, rest) = decode_node_with(&bytes, &limits);
            (r.map(|p| p.map(|_| ())), rest)
        };
        prop_assert_eq!(r, Err(RelayError::TooLong { what, len, max }));
        prop_assert_eq!(&rest[..], &bytes[..]);

        // At the limit exactly, the same prefix is not a violation.
        let mut bytes = head.to_vec();
        bytes.extend(varint(max as u64));
        let ok = if client {
            decode_client_with(&bytes, &limits).0.is_ok()
        } else {
            decode_node_with(&bytes, &limits).0.is_ok()
        };
        prop_assert!(ok);
    }
}
