//! A node's core (`petal_core::Node`) fed a random sequence of inputs: messages from five
//! peers (frames decoded from the input: whatever the codec accepts, a peer could send), time
//! passing with its timers, and calls of local applications (register, subscribe, publish,
//! broadcast, request, reply, tunnels, unregister) with ids drawn from what the node handed
//! out and from the input. After every step the node's own invariants must hold
//! (`check_invariants`) and nothing may panic. The node starts either as the first node of a
//! ring or joining through the first peer.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use petal_core::{Config, ConnId, Event, Node, NodeId, NodeInfo, Time};
use petal_protocol::{ReplyResult, codec};

const NAMES: [&str; 3] = ["svc", "chat", "x"];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn peer(i: u8) -> NodeInfo {
    // Ids spread over the ring, one sharing a long prefix with the node's.
    let ids = [
        1u128 << 120,
        3u128 << 126,
        (1u128 << 125) + 77,
        u128::MAX - 5,
        9,
    ];
    NodeInfo {
        id: NodeId(ids[usize::from(i) % ids.len()]),
        addr: std::net::SocketAddr::from(([10, 0, 0, 2 + i % 5], 7000)),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let me = NodeInfo {
        id: NodeId(1u128 << 125),
        addr: std::net::SocketAddr::from(([10, 0, 0, 1], 7000)),
    };
    let mut node = Node::new(me, Config::default(), 1).expect("default config");
    let mut now = Time::ZERO;
    match input.byte() {
        Some(b) if b & 1 == 1 => node.join(now, peer(0)),
        _ => node.start_first(now),
    }
    let (mut deliveries, mut offers, mut tunnels) = (Vec::new(), Vec::new(), Vec::new());
    let mut steps = 0;
    while let Some(op) = input.byte() {
        steps += 1;
        if steps > 256 {
            break;
        }
        let arg = input.byte().unwrap_or(0);
        let conn = ConnId(u64::from(arg % 4));
        let name = NAMES[usize::from(arg >> 2) % NAMES.len()];
        let pick = |v: &Vec<u64>| v.get(usize::from(arg) % v.len().max(1)).copied();
        match op % 12 {
            0..=3 => {
                let len = usize::from(input.byte().unwrap_or(0)) * 4;
                let frame = input.bytes(len);
                if let Ok(msg) = codec::decode_exact(frame, 1 << 16) {
                    node.handle_message(now, peer(arg), msg);
                }
            }
            4 => {
                now = now + std::time::Duration::from_millis(u64::from(arg) * 37);
                node.handle_timeout(now);
            }
            5 => {
                let cluster = (arg & 0x80 != 0).then_some(name);
                let _ = node.register(now, conn, cluster, u32::from(arg % 3));
            }
            6 => {
                if arg & 0x40 == 0 {
                    let _ = node.subscribe(now, conn, name);
                } else {
                    let _ = node.unsubscribe(now, conn, name);
                }
            }
            7 => {
                let payload = Bytes::copy_from_slice(input.bytes(usize::from(arg % 16)));
                if arg & 0x40 == 0 {
                    let _ = node.publish(now, name, payload);
                } else {
                    let _ = node.broadcast(now, name, payload);
                }
            }
            8 => {
                let id = u64::from(input.byte().unwrap_or(0));
                let _ = node.request(
                    now,
                    conn,
                    id,
                    name,
                    Bytes::from_static(b"q"),
                    u32::from(arg) * 10,
                );
            }
            9 => {
                let delivery = pick(&deliveries).unwrap_or(u64::from(arg));
                let result = if arg & 1 == 0 {
                    ReplyResult::Ok(Bytes::from_static(b"r"))
                } else {
                    ReplyResult::Fault("no".into())
                };
                let _ = node.reply(now, conn, delivery, result);
            }
            10 => match arg % 4 {
                0 => {
                    let _ = node.tunnel_open(now, conn, u64::from(arg), name, 1000);
                }
                1 => {
                    if let Some(offer) = pick(&offers) {
                        let _ = node.tunnel_accept(now, conn, offer, u64::from(arg));
                    }
                }
                2 => {
                    let id = pick(&tunnels).unwrap_or(u64::from(arg));
                    let chunk = Bytes::copy_from_slice(input.bytes(8));
                    let _ = node.tunnel_send(now, conn, id, chunk.len() as u64, chunk);
                    let _ = node.tunnel_allow(now, conn, id, u64::from(arg) * 64);
                }
                _ => {
                    let id = pick(&tunnels).unwrap_or(u64::from(arg));
                    let _ = node.tunnel_close(now, conn, id);
                }
            },
            _ => {
                let _ = node.unregister(now, conn);
            }
        }
        while node.poll_transmit().is_some() {}
        while let Some(ev) = node.poll_event() {
            match ev {
                Event::Request { delivery, .. } => deliveries.push(delivery),
                Event::TunnelIncoming { offer, .. } => offers.push(offer),
                Event::TunnelOpened { tunnel, .. } => tunnels.push(tunnel),
                _ => {}
            }
        }
        node.check_invariants();
    }
});
