//! Properties of the link handshake and record layer under arbitrary input (proptest): the
//! responder never panics, never succeeds and never writes a byte to a stranger, and ends within
//! its deadline; the hello payload parses only its canonical encoding; the record opener never
//! panics on garbage, and decodes a record stream the same however it is cut.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use petal_node::secure::{
    self, Entropy, Established, HandshakeError, Identity, MAX_RECORD_PLAIN, NetworkKey, OpenError,
};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_millis(500);

fn key() -> NetworkKey {
    NetworkKey::from_bytes([0x5a; 32])
}

fn me() -> SocketAddr {
    "10.0.0.1:55556".parse().unwrap()
}

/// A runtime whose clock is paused (it jumps ahead when every task waits): a handshake that
/// waits for its deadline costs no real time.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Length-prefixed handshake messages, as on the wire.
fn framed(msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(&(m.len() as u16).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// A genuine first message (`-> psk, e`) under the network key.
fn first_message(seed: u64) -> Vec<u8> {
    let mut hs = secure::handshake_state(
        true,
        &Identity::from_seed(seed),
        &key(),
        Entropy::Seeded(seed),
        0,
    );
    let mut buf = vec![0u8; 1024];
    let n = hs.write_message(&[], &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Runs the responder on `input`; with `close`, the stream ends after it (else it stays open
/// and silent). Returns the outcome, how long it took (virtual time) and what the responder
/// wrote.
fn respond(input: &[u8], close: bool) -> (Result<Established, HandshakeError>, Duration, Vec<u8>) {
    runtime().block_on(async {
        let (mut near, mut far) = tokio::io::duplex(1 << 16);
        far.write_all(input).await.unwrap();
        if close {
            far.shutdown().await.unwrap();
        }
        let t0 = tokio::time::Instant::now();
        let r = secure::handshake(
            &mut near,
            false,
            &Identity::from_seed(1),
            &key(),
            me(),
            Some("10.0.0.2:40000".parse().unwrap()),
            Entropy::Seeded(7),
            3,
            DEADLINE,
        )
        .await;
        let took = t0.elapsed();
        drop(near);
        let mut wrote = Vec::new();
        far.read_to_end(&mut wrote).await.unwrap();
        (r, took, wrote)
    })
}

/// Both sides of a handshake in memory (no IO): the initiator's and the responder's records.
fn pair(seed: u64) -> (Established, Established) {
    pair_with(seed, seed)
}

/// Identities from `seed`, ephemeral keys from `entropy`.
fn pair_with(seed: u64, entropy: u64) -> (Established, Established) {
    let (ia, ib) = (Identity::from_seed(seed), Identity::from_seed(seed ^ 1));
    let mut i = secure::handshake_state(true, &ia, &key(), Entropy::Seeded(entropy), 0);
    let mut r = secure::handshake_state(false, &ib, &key(), Entropy::Seeded(entropy), 1);
    let (addr_i, addr_r): (SocketAddr, SocketAddr) =
        ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
    let (mut m, mut p) = (vec![0u8; 1024], vec![0u8; 1024]);
    let n = i.write_message(&[], &mut m).unwrap();
    assert_eq!(r.read_message(&m[..n], &mut p).unwrap(), 0);
    let n = r
        .write_message(&secure::encode_hello(addr_r), &mut m)
        .unwrap();
    let k = i.read_message(&m[..n], &mut p).unwrap();
    let hello_r = secure::parse_hello(&p[..k]).unwrap();
    let n = i
        .write_message(&secure::encode_hello(addr_i), &mut m)
        .unwrap();
    let k = r.read_message(&m[..n], &mut p).unwrap();
    let hello_i = secure::parse_hello(&p[..k]).unwrap();
    let ei = secure::finish(i, hello_r, None).unwrap();
    let er = secure::finish(r, hello_i, None).unwrap();
    assert_eq!(ei.peer.id, ib.node_id());
    assert_eq!(er.peer.id, ia.node_id());
    (ei, er)
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
    ]
}

/// Bytes that often look like a hello (version 1, family 4 or 6, about the right length).
fn hello_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        (
            prop_oneof![Just(1u8), any::<u8>()],
            prop_oneof![Just(4u8), Just(6u8), any::<u8>()],
            proptest::collection::vec(any::<u8>(), 0..24),
        )
            .prop_map(|(v, f, rest)| [vec![v, f], rest].concat()),
    ]
}

/// Message sizes: mostly small, some across the largest record's plaintext.
fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..3000),
        1 => (MAX_RECORD_PLAIN - 10..MAX_RECORD_PLAIN + 3000).prop_map(|n| {
            (0..n).map(|i| (i * 7 + n) as u8).collect::<Vec<u8>>()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random bytes, then the end of the stream or silence: an error, never success; within
    /// the deadline; and not a byte written back (a stranger learns nothing, not even the
    /// responder's static key).
    #[test]
    fn responder_refuses_random_bytes(
        input in proptest::collection::vec(any::<u8>(), 0..2000),
        close in any::<bool>(),
    ) {
        let (r, took, wrote) = respond(&input, close);
        prop_assert!(r.is_err(), "random bytes completed a handshake");
        prop_assert!(took <= DEADLINE, "took {:?}", took);
        if close {
            prop_assert!(!matches!(r, Err(HandshakeError::Timeout)), "{:?}", r.err());
        }
        prop_assert!(wrote.is_empty(), "the responder wrote {} bytes", wrote.len());
    }

    /// Well-framed random messages: the same.
    #[test]
    fn responder_refuses_random_messages(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1100), 1..4),
        close in any::<bool>(),
    ) {
        let (r, took, wrote) = respond(&framed(&msgs), close);
        prop_assert!(r.is_err(), "random messages completed a handshake");
        prop_assert!(took <= DEADLINE, "took {:?}", took);
        prop_assert!(wrote.is_empty(), "the responder wrote {} bytes", wrote.len());
    }

    /// A genuine first message, then random third messages: the responder answers the first
    /// (one message) and then fails, within the deadline.
    #[test]
    fn responder_refuses_a_random_third_message(
        seed in any::<u64>(),
        m3 in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1100), 0..3),
        close in any::<bool>(),
    ) {
        let mut input = framed(&[first_message(seed)]);
        input.extend_from_slice(&framed(&m3));
        let (r, took, wrote) = respond(&input, close);
        prop_assert!(r.is_err(), "a random third message completed a handshake");
        prop_assert!(took <= DEADLINE, "took {:?}", took);
        let len = u16::from_be_bytes([wrote[0], wrote[1]]) as usize;
        prop_assert_eq!(wrote.len(), 2 + len, "the responder wrote more than its message");
    }

    /// `parse_hello` never panics, and accepts exactly the canonical encodings.
    #[test]
    fn parse_hello_accepts_only_canonical_encodings(b in hello_like()) {
        if let Ok(addr) = secure::parse_hello(&b) {
            prop_assert_eq!(secure::encode_hello(addr), b);
        }
    }

    #[test]
    fn hello_round_trips(addr in socket_addr()) {
        prop_assert_eq!(secure::parse_hello(&secure::encode_hello(addr)).unwrap(), addr);
    }

    /// Random bytes after a real handshake: no panic, no plaintext; an error, or (a partial
    /// record) nothing consumed.
    #[test]
    fn opener_refuses_random_bytes(
        seed in any::<u64>(),
        b in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let (_, mut er) = pair(seed);
        let mut raw = BytesMut::from(&b[..]);
        let mut plain = BytesMut::new();
        match er.opener.open(&mut raw, &mut plain) {
            Err(_) => {}
            Ok(()) => prop_assert_eq!(&raw[..], &b[..]),
        }
        prop_assert!(plain.is_empty());
    }

    /// A whole random record (consistent length): always refused, as a bad length under the
    /// tag's size or as failed authentication.
    #[test]
    fn opener_refuses_random_records(
        seed in any::<u64>(),
        body in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let (_, mut er) = pair(seed);
        let mut raw = BytesMut::from(&(body.len() as u16).to_be_bytes()[..]);
        raw.extend_from_slice(&body);
        let mut plain = BytesMut::new();
        let r = er.opener.open(&mut raw, &mut plain);
        if body.len() < 16 {
            prop_assert!(matches!(r, Err(OpenError::Length(n)) if n == body.len()), "{:?}", r);
        } else {
            prop_assert!(matches!(r, Err(OpenError::Auth)), "{:?}", r);
        }
        prop_assert!(plain.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Sealed messages, the stream cut anywhere and delivered in those pieces: after each
    /// piece the opener has produced exactly the plaintext of the whole records so far, and
    /// in the end all of it, in order.
    #[test]
    fn records_decode_the_same_however_cut(
        seed in any::<u64>(),
        msgs in proptest::collection::vec(message(), 1..8),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
    ) {
        let (mut ei, mut er) = pair(seed);
        let mut wire = Vec::new();
        for m in &msgs {
            ei.sealer.seal(m, &mut wire).unwrap();
        }
        let all: Vec<u8> = msgs.concat();
        // Where records end, and how much plaintext the stream holds by then.
        let mut ends = vec![(0usize, 0usize)];
        let mut at = 0;
        let mut plain_so_far = 0;
        while at < wire.len() {
            let len = u16::from_be_bytes([wire[at], wire[at + 1]]) as usize;
            at += 2 + len;
            plain_so_far += len - 16;
            ends.push((at, plain_so_far));
        }
        prop_assert_eq!(plain_so_far, all.len());
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let (mut raw, mut plain) = (BytesMut::new(), BytesMut::new());
        let mut fed = 0;
        for p in points {
            raw.extend_from_slice(&wire[fed..p]);
            fed = p;
            er.opener.open(&mut raw, &mut plain).unwrap();
            let whole = ends.iter().rev().find(|(end, _)| *end <= fed).expect("0 is an end").1;
            prop_assert_eq!(plain.len(), whole);
            prop_assert_eq!(&plain[..], &all[..whole]);
        }
        prop_assert!(raw.is_empty());
        prop_assert_eq!(&plain[..], &all[..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A record is good for one direction of one session only: reflected back to its sender,
    /// or delivered to another session between the same two identities, it is refused; its
    /// receiver still opens it afterwards (a refused record consumes no nonce).
    #[test]
    fn records_do_not_reflect_or_cross_sessions(
        seed in any::<u64>(),
        msg in proptest::collection::vec(any::<u8>(), 0..3000),
    ) {
        let (mut ei, mut er) = pair(seed);
        let (mut other_i, mut other_r) = pair_with(seed, !seed);
        let mut wire = Vec::new();
        ei.sealer.seal(&msg, &mut wire).unwrap();
        let mut plain = BytesMut::new();
        for (who, opener) in [
            ("reflected to its sender", &mut ei.opener),
            ("to another session's receiver", &mut other_r.opener),
            ("to another session's sender", &mut other_i.opener),
        ] {
            let mut raw = BytesMut::from(&wire[..]);
            let r = opener.open(&mut raw, &mut plain);
            prop_assert!(msg.is_empty() || matches!(r, Err(OpenError::Auth)), "{}: {:?}", who, r);
            prop_assert!(plain.is_empty(), "{}", who);
        }
        let mut raw = BytesMut::from(&wire[..]);
        er.opener.open(&mut raw, &mut plain).unwrap();
        prop_assert_eq!(&plain[..], &msg[..]);
    }
}
