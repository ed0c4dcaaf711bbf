//! [`PeerAddr`]: a socket address as the per-peer tables store it.
//!
//! A `SocketAddr` is 32 bytes because its IPv6 form carries flow info and a scope id; a node
//! stores one for every tracked peer and every RTT-cache entry (about 170 at 10^5 nodes).
//! `PeerAddr` keeps an IPv4 address inline (every simulated node's, and most LAN peers') and
//! boxes an IPv6 one, in 16 bytes, and converts back losslessly.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

/// A socket address in 16 bytes (IPv6 boxed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerAddr {
    V4(SocketAddrV4),
    V6(Box<SocketAddrV6>),
}

impl PeerAddr {
    /// The address.
    pub(crate) fn get(&self) -> SocketAddr {
        match self {
            PeerAddr::V4(a) => SocketAddr::V4(*a),
            PeerAddr::V6(a) => SocketAddr::V6(**a),
        }
    }

    /// True when this is `addr`.
    pub(crate) fn is(&self, addr: SocketAddr) -> bool {
        match (self, addr) {
            (PeerAddr::V4(a), SocketAddr::V4(b)) => *a == b,
            (PeerAddr::V6(a), SocketAddr::V6(b)) => **a == b,
            _ => false,
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => PeerAddr::V4(a),
            SocketAddr::V6(a) => PeerAddr::V6(Box::new(a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<PeerAddr>(), 16);
        for a in [
            "10.1.2.3:55556",
            "[fe80::1%7]:55556",
            "[2001:db8::5]:1",
            "0.0.0.0:0",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let p = PeerAddr::from(addr);
            assert_eq!(p.get(), addr);
            assert!(p.is(addr));
            assert!(!p.is("10.1.2.4:55556".parse().unwrap()));
        }
        let v6 = SocketAddrV6::new("fe80::1".parse().unwrap(), 9, 3, 7);
        assert_eq!(PeerAddr::from(SocketAddr::V6(v6)).get(), SocketAddr::V6(v6));
    }
}
