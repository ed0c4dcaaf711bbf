//! Two real `petald` processes on loopback whose first link runs through a middlebox (a TCP
//! proxy in this test) that flips one bit of one encrypted record: the receiving daemon closes
//! that link with a logged reason, and the two nodes keep serving each other over a fresh link.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_client::{Connection, ServiceHandler, register};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Echo;

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }
}

/// Forwards `from` to `to`, parsing the link's framing (2-byte length, then that many bytes:
/// three handshake messages, then records). When `tamper` is set, flips the last bit of the
/// tag of the third record, once.
async fn pump<R, W>(mut from: R, mut to: W, tamper: Option<Arc<AtomicBool>>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut messages = 0usize;
    // Offset of the next message's length prefix in `buf`.
    let mut at = 0usize;
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Walk every whole message now in `buf`.
        while buf.len() >= at + 2 {
            let len = u16::from_be_bytes([buf[at], buf[at + 1]]) as usize;
            if buf.len() < at + 2 + len {
                break;
            }
            messages += 1;
            // Messages 1 and 3 of the handshake go this way from the dialer; records follow.
            if messages == 5
                && let Some(flag) = &tamper
                && !flag.swap(true, Ordering::SeqCst)
            {
                buf[at + 1 + len] ^= 1;
            }
            at += 2 + len;
        }
        // Send everything up to the last whole message, keep a partial one.
        if to.write_all(&buf[..at]).await.is_err() {
            return;
        }
        buf.drain(..at);
        at = 0;
    }
}

/// Starts a proxy to `target`; the first connection's dialer-to-target direction is tampered.
async fn tampering_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let conns = Arc::new(AtomicUsize::new(0));
    let (flag, count) = (done.clone(), conns.clone());
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            let Ok(t) = TcpStream::connect(target).await else {
                continue;
            };
            let (c_in, c_out) = c.into_split();
            let (t_in, t_out) = t.into_split();
            tokio::spawn(pump(c_in, t_out, first.then(|| flag.clone())));
            tokio::spawn(pump(t_in, c_out, None));
        }
    });
    (addr, done, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_record_closes_the_link_and_the_daemons_recover() {
    let a = Daemon::start(&Spec {
        log: "debug".into(),
        ..Spec::alone()
    })
    .await;
    let (proxy, tampered, conns) = tampering_proxy(a.peer).await;
    let b = Daemon::start(&Spec {
        peer_ip: lo(2),
        seeds: vec![proxy],
        log: "debug".into(),
        ..Spec::alone()
    })
    .await;
    // B dials A through the proxy; its pings and join traffic soon pass the fifth message.
    assert!(
        a.wait_log("record failed authentication", Duration::from_secs(5))
            .await,
        "A did not refuse the tampered record; proxy connections {}; A's log:\n{}",
        conns.load(Ordering::SeqCst),
        a.log()
    );
    assert!(tampered.load(Ordering::SeqCst));
    // The nodes serve each other again (a fresh link, dialed directly or through the proxy,
    // which no longer tampers).
    let _svc = register(b.port, "echo", Echo).await.expect("register on B");
    let on_a = Connection::connect(a.port).await.expect("connect to A");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        match on_a
            .request("echo", "ping", Duration::from_millis(300))
            .await
        {
            Ok(r) => {
                assert_eq!(&r[..], b"ping");
                break;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no reply across after the tampering: {e}; A:\n{}\nB:\n{}",
                a.log(),
                b.log()
            ),
        }
    }
    for i in 0..20u8 {
        let r = on_a
            .request("echo", vec![i], Duration::from_secs(1))
            .await
            .expect("a request across after recovery");
        assert_eq!(&r[..], &[i]);
    }
}
