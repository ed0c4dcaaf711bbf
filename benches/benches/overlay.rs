//! Micro-benchmarks of the overlay's hot paths: routing-table lookup, the leaf-set check, and
//! frame encode/decode.
//!
//! `cargo bench -p petal-benches`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use petal_core::{LeafSet, RoutingTable};
use petal_protocol::codec::{self, DEFAULT_MAX_FRAME_LEN};
use petal_protocol::{Key, Message, NodeId, NodeInfo, RouteMsg, Routed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn tables() -> (RoutingTable, LeafSet, Vec<Key>) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let me = NodeId(rng.random());
    let mut rt = RoutingTable::new(me);
    let mut leaf = LeafSet::new(me, 8);
    // The candidates a node of a 100,000-node ring would see.
    for _ in 0..100_000 {
        let id = NodeId(rng.random());
        if rt.slot_of(id).is_some_and(|s| rt.get(s).is_none()) {
            rt.set(id);
        }
        leaf.insert(id);
    }
    let keys = (0..1024).map(|_| Key(rng.random())).collect();
    (rt, leaf, keys)
}

fn routing(c: &mut Criterion) {
    let (rt, leaf, keys) = tables();
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("routing_table_next_for", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(rt.next_for(*k));
            }
        })
    });
    g.bench_function("leaf_set_covers_and_closest", |b| {
        b.iter(|| {
            for k in &keys {
                if leaf.covers(*k) {
                    black_box(leaf.closest(*k, |_| false));
                }
            }
        })
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    let info = |i: u128| NodeInfo {
        id: NodeId(i * 0x9e37_79b9_7f4a_7c15),
        addr: "10.1.2.3:7000".parse().expect("address"),
    };
    let route = Message::route(RouteMsg {
        key: Key(42),
        origin: info(1),
        hops: 2,
        hop_seq: 77,
        body: Routed::Lookup { lookup: 9 },
    });
    let leaf = Message::LeafSet {
        leaf: (0..16).map(info).collect(),
        reply: true,
    };
    let mut g = c.benchmark_group("frames");
    for (name, msg) in [("route", route), ("leaf_set_16", leaf)] {
        let bytes = codec::to_vec(&msg);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        let mut buf = Vec::with_capacity(1024);
        g.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| {
                buf.clear();
                codec::encode(black_box(&msg), &mut buf);
                black_box(buf.len())
            })
        });
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| {
                black_box(codec::decode(black_box(&bytes), DEFAULT_MAX_FRAME_LEN).expect("valid"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, routing, frames);
criterion_main!(benches);
