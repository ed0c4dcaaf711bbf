//! The wire form of a socket address, one for the overlay codec ([`crate::codec`]) and both
//! link hellos (plaintext and Noise): a family byte (`4` or `6`), the IP's 4 or 16 octets, the
//! port big-endian.

use std::net::{IpAddr, SocketAddr};

/// The family byte of an IPv4 address.
pub const V4: u8 = 4;
/// The family byte of an IPv6 address.
pub const V6: u8 = 6;
/// The longest encoding (an IPv6 address).
pub const MAX_LEN: usize = 1 + 16 + 2;

/// Bytes the encoding of `addr` takes.
pub fn encoded_len(addr: SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => MAX_LEN,
    }
}

/// Appends the encoding of `addr` to `out`.
pub fn put(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(V4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(V6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Bytes that follow family byte `family` (IP and port); `None` for an unknown family.
pub fn rest_len(family: u8) -> Option<usize> {
    match family {
        V4 => Some(4 + 2),
        V6 => Some(16 + 2),
        _ => None,
    }
}

/// Parses an address from the front of `b`: the address and the bytes it took, or `None`
/// (unknown family, too short). Never panics.
pub fn parse(b: &[u8]) -> Option<(SocketAddr, usize)> {
    let (&family, rest) = b.split_first()?;
    let n = rest_len(family)?;
    let rest = rest.get(..n)?;
    let (ip, port) = rest.split_at(n - 2);
    let ip = match family {
        V4 => IpAddr::from(<[u8; 4]>::try_from(ip).ok()?),
        _ => IpAddr::from(<[u8; 16]>::try_from(ip).ok()?),
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    Some((SocketAddr::new(ip, port), 1 + n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_bad_input_is_refused() {
        for a in [
            "10.1.2.3:4000",
            "[::1]:55556",
            "0.0.0.0:0",
            "[ff02::1]:65535",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut out = vec![0xee];
            put(a, &mut out);
            assert_eq!(out.len(), 1 + encoded_len(a));
            out.push(0xaa);
            assert_eq!(parse(&out[1..]), Some((a, encoded_len(a))), "{a}");
            for cut in 0..encoded_len(a) {
                assert_eq!(parse(&out[1..1 + cut]), None, "{a} cut to {cut} bytes");
            }
        }
        assert_eq!(parse(&[5, 1, 2, 3, 4, 0, 80]), None, "unknown family");
        assert_eq!(parse(&[]), None);
    }
}
