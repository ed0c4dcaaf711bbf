//! Brokerless mode: an application that is its own Petal node, with no daemon beside it.
//!
//! Each process of this example is a node of the network (same network key), a member of the
//! cluster `embedded-echo` (it answers with its node id) and a subscriber of the topic
//! `embedded-chat`. Once a second it asks the cluster (a member anywhere answers, load
//! balanced) and publishes a line. It uses petal-client's API unchanged: `NodeHandle::connect`
//! and `NodeHandle::register` give a `Connection` and a `Service`.
//!
//! ```text
//! export PETAL_NETWORK_KEY=$(petald --new-network-key)
//! cargo run --release -p petal-node --example embedded -- --listen 127.0.0.1:7001
//! cargo run --release -p petal-node --example embedded -- --listen 127.0.0.1:7002 --seed 127.0.0.1:7001
//! # a daemon joins the same network; its applications reach the embedded ones by name:
//! petald --seed 127.0.0.1:7001 --no-discovery
//! petal request embedded-echo hello
//! ```
//! Options: `--listen ADDR` (peer address, default 127.0.0.1:0), `--seed ADDR` (repeatable),
//! `--rounds N` (stop after N rounds; default: run until Ctrl-C).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use petal_client::ServiceHandler;
use petal_node::{Identity, LinkSecurity, NetworkKey, Options, TokioNet};

/// Answers every request with this node's id and the request.
struct Echo(String);

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        let text = String::from_utf8_lossy(&request);
        Ok(Bytes::from(format!("{} says: {text}", self.0)))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    let mut seeds = Vec::new();
    let mut rounds = u64::MAX;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?.parse()?,
            "--seed" => seeds.push(value()?.parse()?),
            "--rounds" => rounds = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let key = std::env::var("PETAL_NETWORK_KEY")
        .ok()
        .and_then(|k| NetworkKey::from_hex(k.trim()))
        .ok_or("set PETAL_NETWORK_KEY to the network's key (petald --new-network-key)")?;

    let mut o = Options::new(Identity::generate()?, LinkSecurity::Noise(key));
    o.peer_listen = listen;
    o.seeds = seeds;
    // No relay listener: this process's applications attach in memory.
    o.relay_addrs = Vec::new();
    let node = petal_node::spawn(TokioNet, o).await?;
    let me = node.info();
    println!("node {} listening for peers on {}", me.id, me.addr);
    if !node.wait_ready(Duration::from_secs(30)).await {
        return Err("the node did not join within 30 s (is a seed running?)".into());
    }

    let _service = node
        .register("embedded-echo", Echo(me.id.to_string()))
        .await?;
    let client = node.connect().await?;
    client
        .subscribe("embedded-chat", |e: Bytes| {
            println!("chat: {}", String::from_utf8_lossy(&e));
        })
        .await?;
    let mut round = 0;
    while round < rounds {
        round += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        match client
            .request(
                "embedded-echo",
                format!("round {round}"),
                Duration::from_secs(2),
            )
            .await
        {
            Ok(reply) => println!("reply: {}", String::from_utf8_lossy(&reply)),
            Err(e) => println!("request failed: {e}"),
        }
        client
            .publish("embedded-chat", format!("{} round {round}", me.id))
            .await?;
    }
    client.close().await?;
    node.shutdown().await;
    Ok(())
}
