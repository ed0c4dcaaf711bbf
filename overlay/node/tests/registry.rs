//! The driver's side of an external identity registry (`Options::registry`), with the
//! in-process `SharedMemoryRegistry`: two nodes keep their registries there, not in the
//! overlay; identities registered at one are reached from the other; the registry's counters
//! count the operations; the admin snapshot says where the registries are.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_client::Connection;
use petal_node::SharedMemoryRegistry;

#[tokio::test]
async fn identities_live_in_the_shared_registry_and_reach_holders_on_the_other_node() {
    let registry = SharedMemoryRegistry::new();
    let mut oa = options(0x1000_0000_0000_0000_0000_0000_0000_0001, vec![]);
    oa.registry = Some(Arc::new(registry.clone()));
    let a = petal_node::spawn(petal_node::TokioNet, oa).await.unwrap();
    let mut ob = options(
        0x9000_0000_0000_0000_0000_0000_0000_0002,
        vec![a.info().addr],
    );
    ob.registry = Some(Arc::new(registry.clone()));
    let b = petal_node::spawn(petal_node::TokioNet, ob).await.unwrap();
    wait_ready(&[&a, &b], 1).await;
    let t = Duration::from_secs(5);
    let holder = Connection::connect_addr(relay_addr(&a)).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    holder
        .id_register(
            "gus",
            move |m: Bytes| {
                let _ = tx.send(m);
            },
            t,
        )
        .await
        .unwrap();
    assert_eq!(registry.len(), 1);
    let sender = Connection::connect_addr(relay_addr(&b)).await.unwrap();
    assert_eq!(sender.id_send("gus", "hey", t).await.unwrap(), 1);
    let got = tokio::time::timeout(t, rx.recv()).await.unwrap().unwrap();
    assert_eq!(&got[..], b"hey");
    // Neither node stored the registry in the overlay.
    for n in [&a, &b] {
        let i = n.inspect().await.unwrap();
        assert_eq!(i.identity_registry, "memory (this process)");
        assert_eq!(i.store.0, 0, "no overlay key");
    }
    let ops = a.stats().await.unwrap().runtime.registry_ops
        + b.stats().await.unwrap().runtime.registry_ops;
    assert!(ops >= 3, "{ops} registry operations");
    holder.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + t;
    while !registry.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the line stays");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
