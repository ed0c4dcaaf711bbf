//! Nodes on loopback for the admin API's tests.
#![allow(dead_code)]

use std::net::SocketAddr;

use petal_node::{Identity, LinkSecurity, NetworkKey, Options};

/// Options for test node `n` of the network keyed by `key` (every byte of it): relay and peers
/// on 127.0.0.1 with free ports.
pub(crate) fn options(n: u64, key: u8, seeds: Vec<SocketAddr>) -> Options {
    let mut o = Options::new(
        Identity::from_seed(n),
        LinkSecurity::Noise(NetworkKey::from_bytes([key; 32])),
    );
    o.relay_addrs = vec!["127.0.0.1:0".parse().unwrap()];
    o.peer_listen = "127.0.0.1:0".parse().unwrap();
    o.seeds = seeds;
    // Every test node dials from 127.0.0.1.
    o.max_link_handshakes_per_ip = o.max_link_handshakes;
    o.close_linger = std::time::Duration::from_millis(200);
    o
}
