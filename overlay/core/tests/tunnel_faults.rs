//! Tunnels under a network that loses window grants, repeats and reorders chunks, and between
//! nodes configured differently: every message arrives once, in order and intact, and the
//! tunnel closes gracefully.
//!
//! Grants are cumulative (each carries the total consumed), so a lost one is made good by the
//! next, at the latest the periodic one every `tunnel_keepalive_interval`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Net, Tamper};
use petal_core::{Config, ConnId, Event, Message, Node, Time};

const OPENER: ConnId = ConnId(1);
const MEMBER: ConnId = ConnId(2);
/// Both connections name the tunnel 1.
const TUNNEL: u64 = 1;

/// Small windows, so that a stream needs many grants.
fn small_windows(chunk_limit: usize, window: u64) -> Config {
    let mut c = Config::default();
    c.tunnel_chunk_limit = chunk_limit;
    c.tunnel_buffer = window;
    c.tunnel_window = window;
    c
}

/// A ring of three: the opener's node 0, the member's node 1 (with configuration `member`).
fn setup(seed: u64, opener: Config, member: Config) -> Net {
    let mut net = Net::with_config(seed, 3, opener);
    net.nodes[1] = Node::new(net.infos[1], member, seed.wrapping_mul(1000) + 1).unwrap();
    net.form_ring(&[0, 1, 2]);
    net.run_for(Duration::from_secs(2));
    let now = net.now;
    net.nodes[1].register(now, MEMBER, Some("svc"), 1).unwrap();
    net.nodes[0].register(now, OPENER, None, 1).unwrap();
    net.drain(0);
    net.drain(1);
    net.run_for(Duration::from_secs(3));
    net
}

/// The bytes of message `k`: its length and a pattern that depends on `k`.
fn message(k: usize, len: usize) -> Bytes {
    (0..len)
        .map(|i| u8::try_from((i * 7 + k * 13) % 251).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

/// Streams `count` messages of `len` bytes (each one chunk from the application) from the
/// opener to the member, acting as both applications, for at most `limit`. Returns the
/// messages the member got (reassembled from chunks) and the reasons the ends closed with.
fn stream(net: &mut Net, count: usize, len: usize, limit: Duration) -> (Vec<Bytes>, Vec<String>) {
    let now = net.now;
    net.nodes[0]
        .tunnel_open(now, OPENER, TUNNEL, "svc", 5_000)
        .unwrap();
    net.drain(0);
    let (mut seen, mut credit, mut next) = (net.app_events.len(), 0u64, 0usize);
    let (mut got, mut partial, mut closed) = (Vec::new(), Vec::new(), Vec::new());
    let mut close_sent = false;
    let end = net.now + limit;
    while net.now < end && closed.len() < 2 {
        let step = net.now + Duration::from_millis(5);
        net.run_until(step);
        let now = net.now;
        let events: Vec<(usize, Event)> = net.app_events[seen..]
            .iter()
            .map(|(_, n, e)| (*n, e.clone()))
            .collect();
        seen = net.app_events.len();
        for (n, e) in events {
            match e {
                Event::TunnelIncoming { offer, .. } if n == 1 => {
                    net.nodes[1]
                        .tunnel_accept(now, MEMBER, offer, TUNNEL)
                        .unwrap();
                    net.nodes[1]
                        .tunnel_allow(now, MEMBER, TUNNEL, 1 << 30)
                        .unwrap();
                    net.drain(1);
                }
                Event::TunnelCredit { bytes, .. } if n == 0 => credit += bytes,
                Event::TunnelData { size, payload, .. } if n == 1 => {
                    if size != 0 {
                        assert!(
                            partial.is_empty(),
                            "a message started before the last ended"
                        );
                    }
                    partial.extend_from_slice(&payload);
                    if partial.len() == len {
                        got.push(Bytes::from(std::mem::take(&mut partial)));
                    }
                }
                Event::TunnelClosed { reason, .. } => {
                    closed.push(reason);
                    if n == 1 && closed.len() < 2 {
                        // The far end closed: close this end too.
                        let _ = net.nodes[1].tunnel_close(now, MEMBER, TUNNEL);
                        net.drain(1);
                    }
                }
                Event::TunnelOpenFailed { .. } => panic!("the tunnel did not open"),
                _ => {}
            }
        }
        while next < count && credit >= len as u64 {
            net.nodes[0]
                .tunnel_send(now, OPENER, TUNNEL, len as u64, message(next, len))
                .unwrap();
            credit -= len as u64;
            next += 1;
        }
        if next == count && !close_sent {
            net.nodes[0].tunnel_close(now, OPENER, TUNNEL).unwrap();
            close_sent = true;
        }
        net.drain(0);
    }
    (got, closed)
}

fn expected(count: usize, len: usize) -> Vec<Bytes> {
    (0..count).map(|k| message(k, len)).collect()
}

#[test]
fn a_tunnel_recovers_from_lost_grants() {
    let cfg = small_windows(16_384, 65_536);
    let mut net = setup(3, cfg.clone(), cfg);
    // Every grant is lost for the first 6 s: the opener sends one window's worth and stalls.
    let until = net.now + Duration::from_secs(6);
    net.tamper = Some(Box::new(move |now: Time, m: &Message| {
        if now < until && matches!(m, Message::TunnelAllow { .. }) {
            Tamper::Drop
        } else {
            Tamper::Pass
        }
    }));
    let (got, closed) = stream(&mut net, 64, 16_384, Duration::from_secs(30));
    assert_eq!(got.len(), 64, "every message arrived");
    assert!(got == expected(64, 16_384), "in order and intact");
    assert_eq!(
        closed,
        vec![String::new(), String::new()],
        "closed gracefully"
    );
    assert!(
        net.now > until,
        "the stream could not finish while grants were lost"
    );
}

#[test]
fn chunks_repeated_and_reordered_arrive_once_in_order() {
    let cfg = small_windows(16_384, 65_536);
    let mut net = setup(5, cfg.clone(), cfg);
    let mut k = 0u64;
    net.tamper = Some(Box::new(move |_now: Time, m: &Message| {
        if matches!(
            m,
            Message::TunnelAccept { .. } | Message::TunnelClose { .. }
        ) {
            // The accept and the closes arrive twice as well.
            return Tamper::Duplicate(Duration::from_millis(2));
        }
        if !matches!(m, Message::TunnelData { .. } | Message::TunnelAllow { .. }) {
            return Tamper::Pass;
        }
        k += 1;
        match k % 5 {
            0 => Tamper::Duplicate(Duration::from_millis(3)),
            2 => Tamper::Delay(Duration::from_millis(4)),
            _ => Tamper::Pass,
        }
    }));
    let (got, closed) = stream(&mut net, 64, 16_384, Duration::from_secs(30));
    assert!(
        got == expected(64, 16_384),
        "every message once, in order, intact"
    );
    assert_eq!(
        closed,
        vec![String::new(), String::new()],
        "closed gracefully"
    );
    let (copies, held) = (
        net.nodes[1].stats().tunnel_chunk_copies,
        net.nodes[1].stats().tunnel_chunks_held,
    );
    assert!(copies > 0 && held > 0, "copies {copies}, held {held}");
}

#[test]
fn ends_configured_differently_send_within_the_other_ends_limits() {
    // The opener sends 60,000-byte chunks; the member takes at most 10,000-byte chunks and a
    // 30,000-byte window.
    let opener = small_windows(65_536, 1 << 20);
    let member = small_windows(10_000, 30_000);
    let mut net = setup(7, opener, member);
    let (got, closed) = stream(&mut net, 20, 60_000, Duration::from_secs(30));
    assert!(got == expected(20, 60_000), "every message, intact");
    assert_eq!(closed, vec![String::new(), String::new()]);
    assert_eq!(net.nodes[0].stats().tunnels_failed, 0);
}
