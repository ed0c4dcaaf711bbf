//! Hostile and broken relay clients against a real `petald` process, over raw TCP: seeded
//! random bytes on many connections (before and after a valid handshake), truncated packets
//! then EOF, a wrong version (the exact DENY bytes of the reference node, then EOF), a wrong
//! magic or first byte (EOF without a byte), an unknown opcode, and silent clients holding
//! handshakes open while others connect and work. After each attack the daemon is still
//! running and serves a request/reply between two fresh connections.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use petal_client::{Connection, ServiceHandler, register};
use petal_protocol::relay::ClientPacket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const SECOND: Duration = Duration::from_secs(1);

/// `00 str "iris-client-magic" str version str cluster`, written out by hand.
fn init(magic: &str, version: &str, cluster: &str) -> Vec<u8> {
    let mut v = vec![0x00];
    for s in [magic, version, cluster] {
        assert!(s.len() < 128);
        v.push(s.len() as u8);
        v.extend_from_slice(s.as_bytes());
    }
    v
}

/// A genuine plain-client INIT.
fn good_init() -> Vec<u8> {
    init("iris-client-magic", "v1.0-draft2", "")
}

/// The node's accept: `00 10 "iris-relay-magic" 0b "v1.0-draft2"`.
fn accept() -> Vec<u8> {
    let mut v = vec![0x00, 0x10];
    v.extend_from_slice(b"iris-relay-magic");
    v.push(0x0b);
    v.extend_from_slice(b"v1.0-draft2");
    v
}

/// What a connection saw: the bytes the node wrote, and whether it ended (EOF or reset)
/// within the time allowed.
#[derive(Debug)]
struct Seen {
    bytes: Vec<u8>,
    ended: bool,
}

/// Connects, writes `bytes` (write errors ignored: the node may have closed already), then
/// EOF if `eof`, and reads until the node ends the connection or `wait` passes.
async fn exchange(port: u16, bytes: &[u8], eof: bool, wait: Duration) -> Seen {
    let mut s = TcpStream::connect(relay_addr(port)).await.expect("connect");
    let _ = s.write_all(bytes).await;
    if eof {
        let _ = s.shutdown().await;
    }
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => {
                return Seen {
                    bytes: out,
                    ended: false,
                };
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Seen {
                    bytes: out,
                    ended: true,
                };
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Runs `exchange` on every case, 32 at a time, and hands each outcome to `check`.
async fn run_cases(port: u16, cases: Vec<(Vec<u8>, bool)>, check: fn(&[u8], &Seen)) {
    let mut set = JoinSet::new();
    for (bytes, eof) in cases {
        if set.len() >= 32 {
            set.join_next().await.unwrap().unwrap();
        }
        set.spawn(async move {
            // Without EOF the node may rightly wait for the rest of a packet.
            let wait = if eof { 10 * SECOND } else { SECOND / 2 };
            let seen = exchange(port, &bytes, eof, wait).await;
            check(&bytes, &seen);
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// Replies `ok: <request>`.
struct Answer;

impl ServiceHandler for Answer {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        let mut out = b"ok: ".to_vec();
        out.extend_from_slice(&request);
        Ok(out.into())
    }
}

/// The daemon is running and serves a request/reply between two fresh connections.
async fn still_serves(d: &mut Daemon) {
    assert!(d.is_running(), "petald died");
    let svc = within(SECOND, "register", register(d.port, "after", Answer))
        .await
        .expect("register after the attack");
    let client = within(SECOND, "connect", Connection::connect(d.port))
        .await
        .expect("connect after the attack");
    let reply = within(SECOND, "request", client.request("after", "ping", SECOND))
        .await
        .expect("request after the attack");
    assert_eq!(reply, &b"ok: ping"[..]);
    client.close().await.unwrap();
    svc.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_random_bytes_on_many_connections() {
    let mut d = Daemon::start(&Spec::alone()).await;
    let mut rng = Rng(0x5eed_0001);
    let mut before = Vec::new();
    let mut after = Vec::new();
    for i in 0..400 {
        let len = 1 + rng.below(if i % 10 == 0 { 16 << 10 } else { 512 }) as usize;
        let mut b = rng.bytes(len);
        match i % 4 {
            // Raw noise before any handshake.
            0 => before.push((b, true)),
            // Noise after an INIT opcode.
            1 => {
                b.insert(0, 0x00);
                before.push((b, true));
            }
            // Noise after a valid handshake, then EOF.
            2 => {
                let mut v = good_init();
                v.extend_from_slice(&b);
                after.push((v, true));
            }
            // Noise after a valid handshake, connection left open: the node must end it
            // itself, unless the noise happened to be valid packets (then it may wait).
            _ => {
                let mut v = good_init();
                v.extend_from_slice(&b);
                after.push((v, false));
            }
        }
    }
    let t0 = Instant::now();
    run_cases(d.port, before, |sent, seen| {
        assert!(seen.ended, "{} bytes: not closed", sent.len());
        assert!(
            seen.bytes.is_empty(),
            "noise before the handshake was answered: {:02x?}",
            &seen.bytes[..seen.bytes.len().min(64)]
        );
    })
    .await;
    run_cases(d.port, after, |sent, seen| {
        assert!(
            seen.bytes.starts_with(&accept()),
            "{} bytes: no accept: {:02x?}",
            sent.len(),
            &seen.bytes[..seen.bytes.len().min(64)]
        );
    })
    .await;
    println!("400 connections of random bytes: {:?}", t0.elapsed());
    still_serves(&mut d).await;
}

/// Valid packets cut short at every length, then EOF: nothing is answered but the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_packets_then_eof() {
    let mut d = Daemon::start(&Spec::alone()).await;
    let init = good_init();
    let mut cases = Vec::new();
    for cut in 0..init.len() {
        cases.push((init[..cut].to_vec(), true));
    }
    run_cases(d.port, cases, |sent, seen| {
        assert!(seen.ended, "INIT cut at {}: not closed", sent.len());
        assert!(
            seen.bytes.is_empty(),
            "INIT cut at {}: {:02x?}",
            sent.len(),
            seen.bytes
        );
    })
    .await;

    let packets = [
        ClientPacket::Request {
            id: 300,
            cluster: "svc".into(),
            request: Bytes::from_static(b"hello"),
            timeout_ms: 5000,
        },
        ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: Bytes::from_static(b"bc"),
        },
        ClientPacket::Publish {
            topic: "topic1".into(),
            event: Bytes::from_static(b"ev"),
        },
        ClientPacket::Subscribe {
            topic: "topic1".into(),
        },
        ClientPacket::TunInit {
            id: 7,
            cluster: "svc".into(),
            timeout_ms: 1000,
        },
        ClientPacket::Reply {
            id: 1,
            result: Err("boom".into()),
        },
    ];
    let mut cases = Vec::new();
    for p in &packets {
        let mut bytes = Vec::new();
        p.encode(&mut bytes);
        for cut in 1..bytes.len() {
            let mut v = good_init();
            v.extend_from_slice(&bytes[..cut]);
            cases.push((v, true));
        }
    }
    let n = cases.len();
    run_cases(d.port, cases, |sent, seen| {
        assert!(seen.ended, "{sent:02x?}: not closed");
        assert_eq!(seen.bytes, accept(), "{sent:02x?}: want the accept only");
    })
    .await;
    println!("{} truncated cases", init.len() + n);
    still_serves(&mut d).await;
}

/// A wrong version gets the reference node's exact DENY, then EOF; a wrong magic, a wrong
/// first byte or an unknown opcode after the handshake: EOF without a byte (beyond the
/// accept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_version_magic_and_opcodes() {
    let mut d = Daemon::start(&Spec::alone()).await;
    let mut deny = vec![0x01, 0x10];
    deny.extend_from_slice(b"iris-relay-magic");
    deny.push(0x36);
    deny.extend_from_slice(b"Unsupported protocol. Client: v0.9. Iris: v1.0-draft2.");
    for cluster in ["", "svc"] {
        for eof in [false, true] {
            let seen = exchange(
                d.port,
                &init("iris-client-magic", "v0.9", cluster),
                eof,
                5 * SECOND,
            )
            .await;
            assert!(seen.ended, "no EOF after the DENY (cluster {cluster:?})");
            assert_eq!(seen.bytes, deny, "cluster {cluster:?}");
        }
    }
    let silent: Vec<Vec<u8>> = vec![
        init("iris-client-magiX", "v1.0-draft2", ""),
        init("iris-relay-magic", "v1.0-draft2", ""),
        init("", "v1.0-draft2", "svc"),
        {
            let mut v = good_init();
            v[0] = 0x01;
            v
        },
        vec![0x7f],
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
    ];
    for bytes in &silent {
        let seen = exchange(d.port, bytes, false, 5 * SECOND).await;
        assert!(seen.ended, "{bytes:02x?}: not closed");
        assert!(
            seen.bytes.is_empty(),
            "{bytes:02x?}: got {:02x?}",
            seen.bytes
        );
    }
    // Unknown opcodes, and whole packets only a node sends (a second INIT, a DENY).
    let mut deny_packet = vec![0x01, 0x11];
    deny_packet.extend_from_slice(b"iris-client-magic");
    deny_packet.extend_from_slice(&[0x02, b'n', b'o']);
    for tail in [vec![0x0e], vec![0x7f], vec![0xff], good_init(), deny_packet] {
        let mut v = good_init();
        v.extend_from_slice(&tail);
        let seen = exchange(d.port, &v, false, 5 * SECOND).await;
        assert!(seen.ended, "{tail:02x?} after the handshake: not closed");
        assert_eq!(seen.bytes, accept(), "{tail:02x?} after the handshake");
    }
    still_serves(&mut d).await;
}

/// Silent clients (nothing sent, or half an INIT) hold handshakes open; meanwhile 25 clients
/// connect and get replies at once. The daemon cuts the silent ones at its handshake
/// deadline (5 s) without a byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_do_not_block_others() {
    let mut d = Daemon::start(&Spec::alone()).await;
    let port = d.port;
    let t0 = Instant::now();
    let mut silent = JoinSet::new();
    for i in 0..20 {
        let bytes = if i % 2 == 0 {
            Vec::new()
        } else {
            good_init()[..5].to_vec()
        };
        silent.spawn(async move { exchange(port, &bytes, false, 15 * SECOND).await });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let svc = within(SECOND, "register", register(port, "busy-day", Answer))
        .await
        .expect("register while silent clients wait");
    let t1 = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..25 {
        set.spawn(async move {
            let c = Connection::connect(port).await.expect("connect");
            let request = format!("client {i}");
            let reply = c
                .request("busy-day", request.clone(), SECOND)
                .await
                .unwrap_or_else(|e| panic!("{request}: {e}"));
            assert_eq!(reply, format!("ok: {request}").as_bytes());
            c.close().await.expect("close");
        });
    }
    while let Some(r) = within(2 * SECOND, "clients next to silent ones", set.join_next()).await {
        r.unwrap();
    }
    let served = t1.elapsed();
    println!("25 clients served next to 20 silent handshakes in {served:?}");
    svc.close().await.unwrap();

    while let Some(r) = silent.join_next().await {
        let seen = r.unwrap();
        assert!(seen.ended, "a silent client was never cut");
        assert!(seen.bytes.is_empty(), "{:02x?}", seen.bytes);
    }
    let cut = t0.elapsed();
    println!("silent handshakes cut after {cut:?}");
    assert!(
        cut >= Duration::from_secs(4),
        "silent clients cut too early: {cut:?}"
    );
    still_serves(&mut d).await;
}
