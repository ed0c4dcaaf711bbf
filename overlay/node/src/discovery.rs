//! LAN discovery: nodes announce themselves by multicast [beacons](crate::beacon) and
//! introduce the nodes they hear to their core, so that nodes started with no configuration on
//! one network find each other, and groups that started apart (or were partitioned) merge.
//!
//! - **Probing rate.** A node beacons every `fast_interval` for `fast_for` after it starts,
//!   and again for `fast_for` after it hears a node it had not heard before (a newcomer, or the
//!   far side of a healed partition); otherwise every `slow_interval`, jittered by ±20 % so
//!   that nodes started together do not stay in step. Never a forever-fast scan: on a quiet
//!   network each node sends one 60-byte datagram per `slow_interval`.
//! - **What is trusted.** A beacon only says where to dial: the address is the datagram's
//!   source IP and the beacon's port, and the node id it names is checked by the Noise
//!   handshake of the link (a replayed beacon leads to a dial that fails or reaches the node
//!   it names, nothing else). Beacons of other networks, forged or malformed datagrams are
//!   counted and dropped.
//! - **Reach.** IPv4 multicast with a TTL of 1 on one interface (the system's choice unless
//!   `interface` is set): one LAN segment. Networks without multicast use seeds.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use petal_protocol::{NodeId, NodeInfo};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::RuntimeStats;
use crate::beacon::{BEACON_LEN, Beacon, BeaconKey};
use crate::driver::Input;
use crate::net::Datagram;
use crate::secure::Entropy;

/// The default multicast group and port of beacons.
pub const DEFAULT_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 80, 80), 55557);

/// How discovery runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// Multicast group and port ([`DEFAULT_GROUP`]).
    pub group: SocketAddrV4,
    /// The interface's address to join the group on and send from (unspecified: the system's
    /// choice, the interface of the multicast route).
    pub interface: Ipv4Addr,
    /// Beacon period while probing fast.
    pub fast_interval: Duration,
    /// How long fast probing lasts after the start and after hearing a new node.
    pub fast_for: Duration,
    /// Beacon period otherwise (jittered by ±20 %).
    pub slow_interval: Duration,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            group: DEFAULT_GROUP,
            interface: Ipv4Addr::UNSPECIFIED,
            fast_interval: Duration::from_millis(200),
            fast_for: Duration::from_secs(3),
            slow_interval: Duration::from_secs(5),
        }
    }
}

/// Most distinct nodes remembered as heard (to tell a new node from a known one).
const MAX_HEARD: usize = 4096;

/// A node heard before counts as news again (restart) at most this often.
const NEWS_INTERVAL: Duration = Duration::from_secs(60);

/// The discovery task: beacons out, introductions in.
pub(crate) struct Task<D: Datagram> {
    pub(crate) socket: D,
    pub(crate) key: BeaconKey,
    pub(crate) opts: Discovery,
    pub(crate) me: NodeId,
    pub(crate) port: u16,
    pub(crate) boot: u64,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) entropy: Entropy,
    pub(crate) inputs: mpsc::Sender<Input>,
    pub(crate) stats: Arc<RuntimeStats>,
}

impl<D: Datagram> Task<D> {
    pub(crate) async fn run(self) {
        let start = Instant::now();
        let mut fast_until = start + self.opts.fast_for;
        // Per node heard: its boot nonce, and when it last counted as news.
        let mut heard: BTreeMap<NodeId, (u64, Instant)> = BTreeMap::new();
        let mut counter: u64 = 1 << 40;
        let mut next = start;
        let mut buf = vec![0u8; 2048];
        loop {
            // Not biased: a flood of datagrams on the port must not starve our own beacons.
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let (n, from) = match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::debug!(error = %e, "discovery receive failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let b = match self.key.open(&buf[..n]) {
                        Ok(b) => b,
                        Err(e) => {
                            RuntimeStats::add(&self.stats.beacons_rejected, 1);
                            tracing::trace!(%from, error = %e, "datagram on the discovery port refused");
                            continue;
                        }
                    };
                    if b.id == self.me {
                        continue;
                    }
                    RuntimeStats::add(&self.stats.beacons_received, 1);
                    // News: a node never heard, or a new process of one (another boot nonce)
                    // at most once per NEWS_INTERVAL: beacons carry no time, so old beacons of
                    // a node's earlier runs replayed alternately must not count every time.
                    let now = Instant::now();
                    let new = match heard.get(&b.id) {
                        None => true,
                        Some(&(boot, at)) => {
                            boot != b.boot && now.saturating_duration_since(at) >= NEWS_INTERVAL
                        }
                    };
                    if new {
                        if heard.len() >= MAX_HEARD {
                            heard.pop_first();
                        }
                        heard.insert(b.id, (b.boot, now));
                        // A newcomer or a healed partition: probe fast for a while so that the
                        // news spreads quickly; it stops by itself once nothing new is heard.
                        if now >= fast_until {
                            next = now;
                        }
                        fast_until = now + self.opts.fast_for;
                    }
                    if !b.ready {
                        continue;
                    }
                    let info = NodeInfo {
                        id: b.id,
                        addr: SocketAddr::new(from.ip(), b.port),
                    };
                    if self.inputs.send(Input::Discovered { info, news: new }).await.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(next) => {
                    let beacon = Beacon {
                        id: self.me,
                        port: self.port,
                        ready: self.ready.load(Ordering::Relaxed),
                        boot: self.boot,
                    };
                    let mut nonce = [0u8; 12];
                    counter += 1;
                    if self.entropy.fill(counter, &mut nonce).is_ok() {
                        let sealed: [u8; BEACON_LEN] = self.key.seal(&beacon, nonce);
                        match self.socket.send_to(&sealed, SocketAddr::V4(self.opts.group)).await {
                            Ok(_) => RuntimeStats::add(&self.stats.beacons_sent, 1),
                            Err(e) => tracing::debug!(error = %e, "beacon send failed"),
                        }
                    }
                    let now = Instant::now();
                    next = if now < fast_until {
                        now + self.opts.fast_interval
                    } else {
                        // ±20 % jitter, from the beacon nonce's randomness.
                        // Saturating: a configured interval beyond u64 microseconds (584,000
                        // years) means "practically never" all the same.
                        let slow =
                            u64::try_from(self.opts.slow_interval.as_micros()).unwrap_or(u64::MAX);
                        let mut j = [0u8; 8];
                        j.copy_from_slice(&nonce[..8]);
                        let j = u64::from_le_bytes(j);
                        let spread = (slow / 5).max(1);
                        let jittered = (slow - spread).saturating_add(j % (2 * spread));
                        now + Duration::from_micros(jittered)
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A socket fed by a channel, counting what it sends.
    struct FakeSocket {
        rx: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
        sent: Arc<AtomicU64>,
    }

    impl Datagram for FakeSocket {
        async fn send_to(&self, buf: &[u8], _to: SocketAddr) -> std::io::Result<usize> {
            self.sent.fetch_add(1, Ordering::Relaxed);
            Ok(buf.len())
        }

        async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
            match self.rx.lock().await.recv().await {
                Some((d, from)) => {
                    buf[..d.len()].copy_from_slice(&d);
                    Ok((d.len(), from))
                }
                None => std::future::pending().await,
            }
        }
    }

    /// Old beacons of two runs of one node, replayed alternately by someone without the key,
    /// count as news once: the LAN does not stay in fast probing, and the node task is told
    /// of news once.
    #[tokio::test(start_paused = true)]
    async fn replayed_beacons_of_earlier_runs_do_not_keep_probing_fast() {
        let key = BeaconKey::new(&[9; 32]);
        let (dtx, drx) = mpsc::channel(1024);
        let (itx, mut irx) = mpsc::channel(1024);
        let sent = Arc::new(AtomicU64::new(0));
        let task = Task {
            socket: FakeSocket {
                rx: tokio::sync::Mutex::new(drx),
                sent: sent.clone(),
            },
            key: BeaconKey::new(&[9; 32]),
            opts: Discovery::default(),
            me: NodeId(1),
            port: 7000,
            boot: 1,
            ready: Arc::new(AtomicBool::new(true)),
            entropy: Entropy::Seeded(1),
            inputs: itx,
            stats: Arc::new(RuntimeStats::default()),
        };
        tokio::spawn(task.run());
        let x = |boot| {
            key.seal(
                &Beacon {
                    id: NodeId(2),
                    port: 7000,
                    ready: true,
                    boot,
                },
                [boot as u8; 12],
            )
            .to_vec()
        };
        let (run1, run2) = (x(10), x(11));
        let from: SocketAddr = "10.0.0.2:55557".parse().unwrap();
        // 20 s of replays, one every 50 ms, alternating the two runs' beacons.
        for i in 0..400 {
            let b = if i % 2 == 0 { &run1 } else { &run2 };
            dtx.send((b.clone(), from)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut news = 0;
        let mut heard = 0;
        while let Ok(Input::Discovered { news: n, .. }) = irx.try_recv() {
            heard += 1;
            news += usize::from(n);
        }
        assert_eq!(heard, 400);
        assert_eq!(news, 1, "only the first beacon is news");
        // Fast for 3 s (15 beacons), then every 5 s +-20 %: about 18-19 in 20 s; a forever-fast
        // scan would send 100.
        let sent = sent.load(Ordering::Relaxed);
        assert!((16..=22).contains(&sent), "{sent} beacons in 20 s");
    }
}
