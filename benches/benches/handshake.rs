//! What link security costs in CPU: a full Noise `XXpsk0_25519_AESGCM_SHA256` handshake (both
//! parties, in memory: no IO), the record layer sealing and opening 64 KiB of frames, and making
//! a node identity (an X25519 key pair).
//!
//! `cargo bench -p petal-benches --bench handshake`

use std::hint::black_box;
use std::net::SocketAddr;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use petal_node::secure::{self, Entropy, Established, Identity, NetworkKey};

fn key() -> NetworkKey {
    NetworkKey::from_bytes([0x5a; 32])
}

/// One full handshake between `a` (initiator) and `b`: both states, three messages, both
/// record layers. Ephemeral keys come from the operating system, as in production.
fn handshake(a: &Identity, b: &Identity, key: &NetworkKey) -> (Established, Established) {
    let addr_a: SocketAddr = "10.0.0.1:55556".parse().unwrap();
    let addr_b: SocketAddr = "10.0.0.2:55556".parse().unwrap();
    let mut i = secure::handshake_state(true, a, key, Entropy::Os, 0);
    let mut r = secure::handshake_state(false, b, key, Entropy::Os, 0);
    let (mut m, mut p) = ([0u8; 256], [0u8; 256]);
    let n = i.write_message(&[], &mut m).unwrap();
    r.read_message(&m[..n], &mut p).unwrap();
    let n = r
        .write_message(&secure::encode_hello(addr_b), &mut m)
        .unwrap();
    let k = i.read_message(&m[..n], &mut p).unwrap();
    let hello_b = secure::parse_hello(&p[..k]).unwrap();
    let n = i
        .write_message(&secure::encode_hello(addr_a), &mut m)
        .unwrap();
    let k = r.read_message(&m[..n], &mut p).unwrap();
    let hello_a = secure::parse_hello(&p[..k]).unwrap();
    (
        secure::finish(i, hello_b, None).unwrap(),
        secure::finish(r, hello_a, None).unwrap(),
    )
}

fn handshakes(c: &mut Criterion) {
    let (a, b, k) = (Identity::from_seed(1), Identity::from_seed(2), key());
    let mut g = c.benchmark_group("link_handshake");
    g.bench_function("full_both_sides", |bch| {
        bch.iter(|| black_box(handshake(&a, &b, &k)))
    });
    // Of which: building both parties' states (each derives its static public key again).
    g.bench_function("build_both_states", |bch| {
        bch.iter(|| {
            black_box(secure::handshake_state(true, &a, &k, Entropy::Os, 0));
            black_box(secure::handshake_state(false, &b, &k, Entropy::Os, 0));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("identity");
    g.bench_function("generate", |bch| {
        bch.iter(|| black_box(Identity::generate().unwrap()))
    });
    // One X25519 base-point multiplication (the public key), no randomness.
    g.bench_function("from_private", |bch| {
        bch.iter(|| black_box(Identity::from_private(black_box([7u8; 32]))))
    });
    g.bench_function("node_id", |bch| bch.iter(|| black_box(&a).node_id()));
    g.finish();
}

fn records(c: &mut Criterion) {
    let (a, b, k) = (Identity::from_seed(1), Identity::from_seed(2), key());
    let frames: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
    let mut g = c.benchmark_group("link_records");
    g.throughput(Throughput::Bytes(frames.len() as u64));

    let (mut ea, _) = handshake(&a, &b, &k);
    let mut wire = Vec::with_capacity(70_000);
    g.bench_function("seal_64KiB", |bch| {
        bch.iter(|| {
            wire.clear();
            ea.sealer.seal(black_box(&frames), &mut wire).unwrap();
        })
    });

    // Opening needs records in nonce order: the setup seals them, in step with the opener.
    let (mut ea, mut eb) = handshake(&a, &b, &k);
    let mut plain = BytesMut::with_capacity(70_000);
    g.bench_function("open_64KiB", |bch| {
        bch.iter_batched(
            || {
                let mut w = Vec::with_capacity(70_000);
                ea.sealer.seal(&frames, &mut w).unwrap();
                BytesMut::from(&w[..])
            },
            |mut raw| {
                plain.clear();
                eb.opener.open(&mut raw, &mut plain).unwrap();
                assert_eq!(plain.len(), 65536);
            },
            BatchSize::SmallInput,
        )
    });

    let (mut ea, mut eb) = handshake(&a, &b, &k);
    let mut raw = BytesMut::with_capacity(70_000);
    g.bench_function("seal_and_open_64KiB", |bch| {
        bch.iter(|| {
            wire.clear();
            ea.sealer.seal(black_box(&frames), &mut wire).unwrap();
            raw.extend_from_slice(&wire);
            plain.clear();
            eb.opener.open(&mut raw, &mut plain).unwrap();
            assert_eq!(plain.len(), 65536);
        })
    });
    g.finish();
}

criterion_group!(benches, handshakes, records);
criterion_main!(benches);
