//! The machine's own floor, measured in the same run as the systems: a raw loopback TCP round
//! trip of one byte and a raw loopback TCP stream of 64 KiB writes, between two threads of
//! this process with blocking sockets (no runtime, no framing, no encryption). Every system's
//! request crosses loopback TCP at least twice (a broker's four times), so the round trip says
//! how much of a latency figure the kernel alone takes on this machine at this hour: its speed
//! moves a lot from one night to the next (NATS's pinned request p50, the same nats-server
//! each time, was 21.5 us in the committed run of 2026-12-06 and 53.1 us in that of
//! 2026-12-08), and a figure is only read against the floor measured beside it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// p50 and p99 in microseconds of one-byte round trips over loopback TCP for `d` (after a
/// warm-up), the echoing end a thread of its own.
pub fn round_trip(d: Duration) -> Result<(f64, f64)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut b = [0u8; 1];
    for _ in 0..2000 {
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
    }
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let end = Instant::now() + d;
    while Instant::now() < end {
        let t = Instant::now();
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
        h.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    drop(c);
    echo.join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))?
        .context("the echo thread")?;
    let us = |q| h.value_at_quantile(q) as f64 / 1000.0;
    Ok((us(0.5), us(0.99)))
}

/// MB/s (10^6 bytes a second) of one loopback TCP connection carrying `size`-byte writes for
/// `d`, counted at the reading thread.
pub fn stream(size: usize, d: Duration) -> Result<f64> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let sink = std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 256 << 10];
        let mut n = 0u64;
        let start = Instant::now();
        loop {
            match s.read(&mut buf)? {
                0 => return Ok((n, start.elapsed())),
                k => n += k as u64,
            }
        }
    });
    let mut c = TcpStream::connect(addr)?;
    let chunk = vec![7u8; size];
    let end = Instant::now() + d;
    while Instant::now() < end {
        c.write_all(&chunk)?;
    }
    drop(c);
    let (bytes, took) = sink
        .join()
        .map_err(|_| anyhow::anyhow!("the sink thread panicked"))?
        .context("the sink thread")?;
    Ok(bytes as f64 / took.as_secs_f64() / 1e6)
}
