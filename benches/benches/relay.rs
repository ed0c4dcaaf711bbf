//! Relay v1 hot paths: the codec on the packets that dominate traffic, and end-to-end round
//! trips through a real node runtime on loopback TCP (one node, in process) with petal-client.
//!
//! `cargo bench -p petal-benches --bench relay`

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use petal_client::{Connection, Service, ServiceHandler};
use petal_protocol::relay::{ClientPacket, Limits, NodePacket};

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay_codec");
    let request = ClientPacket::Request {
        id: 12345,
        cluster: "echo".into(),
        request: Bytes::from_static(b"x"),
        timeout_ms: 1000,
    };
    let chunk = NodePacket::TunTransfer {
        id: 7,
        size: 65536,
        payload: Bytes::from(vec![7u8; 65536]),
    };
    let mut out = Vec::with_capacity(1 << 17);
    g.bench_function("encode_request_1B", |b| {
        b.iter(|| {
            out.clear();
            black_box(&request).encode(&mut out);
        })
    });
    let mut bytes = Vec::new();
    request.encode(&mut bytes);
    let limits = Limits::default();
    g.bench_function("decode_request_1B", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&bytes[..]);
            black_box(ClientPacket::decode(&mut buf, &limits).unwrap());
        })
    });
    g.throughput(Throughput::Bytes(65536));
    g.bench_function("encode_tun_transfer_64KiB", |b| {
        b.iter(|| {
            out.clear();
            black_box(&chunk).encode(&mut out);
        })
    });
    let mut bytes = Vec::new();
    chunk.encode(&mut bytes);
    g.bench_function("decode_tun_transfer_64KiB", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&bytes[..]);
            black_box(NodePacket::decode(&mut buf, &limits).unwrap());
        })
    });
    g.finish();
}

struct Echo;

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (node, client, service): (petal_node::NodeHandle, Connection, Service) =
        rt.block_on(async {
            let mut opts = petal_node::Options::new(
                petal_node::Identity::from_seed(1),
                petal_node::LinkSecurity::Plaintext,
            );
            opts.relay_addrs = vec!["127.0.0.1:0".parse().unwrap()];
            opts.peer_listen = "127.0.0.1:0".parse().unwrap();
            let node = petal_node::spawn(petal_node::TokioNet, opts).await.unwrap();
            let addr = node.relay_addrs()[0];
            let service = petal_client::Options::default()
                .register_addr(addr, "echo", Echo)
                .await
                .unwrap();
            let client = Connection::connect_addr(addr).await.unwrap();
            (node, client, service)
        });
    let mut g = c.benchmark_group("relay_round_trip");
    g.bench_function("request_1B_one_node", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                client
                    .request("echo", Bytes::from_static(b"x"), Duration::from_secs(5))
                    .await
                    .unwrap(),
            );
        })
    });
    g.finish();
    rt.block_on(async move {
        let _ = client.close().await;
        let _ = service.close().await;
        node.shutdown().await;
    });
}

criterion_group!(benches, codec, round_trip);
criterion_main!(benches);
