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
        let mut heard: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut counter: u64 = 1 << 40;
        let mut next = start;
        let mut buf = vec![0u8; 2048];
        loop {
            tokio::select! {
                biased;
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
                    let new = heard.get(&b.id) != Some(&b.boot);
                    if new {
                        if heard.len() >= MAX_HEARD {
                            heard.pop_first();
                        }
                        heard.insert(b.id, b.boot);
                        // A newcomer or a healed partition: probe fast for a while so that the
                        // news spreads quickly; it stops by itself once nothing new is heard.
                        let now = Instant::now();
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
                        let slow = self.opts.slow_interval.as_micros() as u64;
                        let j = u64::from_le_bytes(nonce[..8].try_into().expect("8 bytes"));
                        let spread = (slow / 5).max(1);
                        now + Duration::from_micros(slow - spread + j % (2 * spread))
                    };
                }
            }
        }
    }
}
