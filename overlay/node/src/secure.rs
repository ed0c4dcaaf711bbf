//! Link security: every node-to-node link is a Noise session
//! (`Noise_XXpsk0_25519_AESGCM_SHA256`: the handshake by the snow crate with ring's AES-GCM and
//! SHA-256, the records by ring directly, see [`record`]).
//!
//! - **Who is who.** Every node has a static X25519 key pair (its [`Identity`], kept in the
//!   daemon's data directory). Its node id is derived from the public key
//!   ([`node_id_of`]: SHA-256 of a label and the key, first 16 bytes), so no node can pick an
//!   exact id (steering near a target takes generating keys until one lands there), and a
//!   peer's id is proven by the handshake, not claimed.
//! - **Who may join.** Every member holds the network key ([`NetworkKey`], 32 bytes), mixed in
//!   as the Noise pre-shared key *before* the first message (`psk0`): the first handshake
//!   message of a node without the key fails authentication at once, before the responder
//!   reveals anything (not even its static key), and no later step can succeed without it.
//! - **Forward secrecy.** Both sides contribute ephemeral keys (`ee`, `es`, `se`): recording a
//!   link and later stealing both static keys and the network key does not decrypt it.
//! - **The handshake** (three messages, each a 2-byte big-endian length and the Noise message):
//!   `-> psk, e` / `<- e, ee, s, es, [hello]` / `-> s, se, [hello]`, with the prologue
//!   `petal link v1` (a peer speaking another version fails). The hello payload names the
//!   address the sender's peers dial (see [`encode_hello`]); the receiver derives the sender's
//!   id from its static key.
//! - **Records** after the handshake: a 2-byte big-endian length, then a Noise transport
//!   message (at most 65,535 bytes: up to 65,519 bytes of frames and a 16-byte tag). Nonces
//!   count up per direction, so a tampered, replayed, reordered or dropped record fails
//!   authentication and closes the link ([`OpenError`]).
//!
//! [`LinkSecurity::Plaintext`] keeps the older unauthenticated hello for measurements of what
//! encryption costs; the daemon allows it only in development mode.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use petal_protocol::{NodeId, NodeInfo};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use snow::HandshakeState;
use snow::params::NoiseParams;
use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The Noise protocol of every link.
pub const NOISE_PARAMS: &str = "Noise_XXpsk0_25519_AESGCM_SHA256";
/// Bound into the handshake: a peer speaking another link version fails it.
pub const PROLOGUE: &[u8] = b"petal link v1";
pub mod record;
pub use record::{MAX_RECORD, MAX_RECORD_PLAIN, OpenError, Opener, RecordWriter, Sealer};
/// Largest handshake message accepted (ours are under 150 bytes).
const MAX_HANDSHAKE_MSG: usize = 1024;
/// Label of the id derivation.
const ID_LABEL: &[u8] = b"petal node id v1";

/// Derives a node's id from its static public key.
pub fn node_id_of(public: &[u8; 32]) -> NodeId {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(ID_LABEL);
    ctx.update(public);
    let digest = ctx.finish();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest.as_ref()[..16]);
    NodeId::from_bytes(id)
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The network key: a 32-byte secret every member of one Petal network holds (the Noise
/// pre-shared key of every link; beacons are authenticated with a key derived from it).
/// Written as 64 hexadecimal digits. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey([u8; 32]);

impl NetworkKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        NetworkKey(bytes)
    }

    /// Parses 64 hexadecimal digits (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_hex32(s).map(NetworkKey)
    }

    /// A fresh random key (from the operating system).
    pub fn random() -> io::Result<Self> {
        let mut k = [0u8; 32];
        os_fill(&mut k)?;
        Ok(NetworkKey(k))
    }

    /// The 64 hexadecimal digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkKey(..)")
    }
}

/// 64 bits from the operating system's random generator.
pub(crate) fn os_seed() -> io::Result<u64> {
    let mut b = [0u8; 8];
    os_fill(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn os_fill(dest: &mut [u8]) -> io::Result<()> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(dest)
        .map_err(|_| io::Error::other("the operating system's random generator failed"))
}

/// A node's static key pair. Its node id derives from the public key. `Debug` prints the id
/// and the public key only.
#[derive(Clone)]
pub struct Identity {
    private: [u8; 32],
    public: [u8; 32],
}

impl Identity {
    /// The identity with this private key.
    #[expect(
        clippy::expect_used,
        reason = "snow's default resolver always has Curve25519 (a build without it fails here at once)"
    )]
    pub fn from_private(private: [u8; 32]) -> Self {
        let mut dh = DefaultResolver
            .resolve_dh(&snow::params::DHChoice::Curve25519)
            .expect("curve25519 is compiled in");
        dh.set(&private);
        let mut public = [0u8; 32];
        public.copy_from_slice(dh.pubkey());
        Identity { private, public }
    }

    /// A fresh identity from the operating system's random generator.
    pub fn generate() -> io::Result<Self> {
        let mut k = [0u8; 32];
        os_fill(&mut k)?;
        Ok(Identity::from_private(k))
    }

    /// A deterministic identity from a seed: for simulations and tests only (anyone who knows
    /// the seed knows the private key).
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x1d3e_7175_6b65_7973);
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        Identity::from_private(k)
    }

    /// Parses the key file's contents: the private key as 64 hexadecimal digits.
    pub fn from_file_contents(s: &str) -> Option<Self> {
        parse_hex32(s).map(Identity::from_private)
    }

    /// The key file's contents (the private key as hexadecimal digits and a newline).
    pub fn to_file_contents(&self) -> String {
        format!("{}\n", hex(&self.private))
    }

    /// The static public key.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// The node id this identity owns.
    pub fn node_id(&self) -> NodeId {
        node_id_of(&self.public)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.node_id())
            .field("public", &hex(&self.public))
            .finish()
    }
}

/// How a node's links are protected.
#[derive(Clone, Debug)]
pub enum LinkSecurity {
    /// Noise with this network key (the default, and the only mode the daemon offers outside
    /// development).
    Noise(NetworkKey),
    /// No encryption and no authentication: the peer's id is taken from its hello. For
    /// measuring what encryption costs, and for tests of other layers.
    Plaintext,
}

/// Where the randomness of handshakes (ephemeral keys) and beacon nonces comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entropy {
    /// The operating system (production).
    Os,
    /// A seeded ChaCha20 generator: deterministic simulation only, never secure.
    Seeded(u64),
}

impl Entropy {
    /// A generator for stream number `n` (distinct streams get distinct generators).
    pub(crate) fn rng(&self, n: u64) -> Box<dyn Random> {
        match *self {
            Entropy::Os => Box::new(OsRandom),
            Entropy::Seeded(seed) => Box::new(SeededRandom(ChaCha20Rng::seed_from_u64(
                seed.rotate_left(17) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ))),
        }
    }

    /// Fills `dest` from generator number `n`.
    pub(crate) fn fill(&self, n: u64, dest: &mut [u8]) -> io::Result<()> {
        self.rng(n)
            .try_fill_bytes(dest)
            .map_err(|_| io::Error::other("random generator failed"))
    }
}

struct OsRandom;

impl Random for OsRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        os_fill(dest).map_err(|_| snow::Error::Rng)
    }
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// snow's primitives: ring's AES-GCM and SHA-256, curve25519-dalek's X25519, and our
/// randomness (so that simulations are deterministic).
struct Resolver {
    entropy: Entropy,
    stream: u64,
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(self.entropy.rng(self.stream))
    }

    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
        RingResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
        RingResolver.resolve_cipher(choice)
    }
}

/// Why a link handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The stream failed or closed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The deadline passed.
    #[error("handshake timed out")]
    Timeout,
    /// A handshake message failed authentication: the peer holds another network key, or the
    /// message was tampered with.
    #[error("handshake failed authentication (another network key, or tampered): {0}")]
    Auth(snow::Error),
    /// The peer closed during the handshake (it holds another network key, or refused us).
    #[error("peer closed the link during the handshake (another network key, or busy)")]
    Closed,
    /// A message or payload is malformed.
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
}

/// Encodes the hello payload: version 1, address family (4 or 6), the address, the port.
pub fn encode_hello(addr: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + petal_protocol::addr::MAX_LEN);
    out.push(1);
    petal_protocol::addr::put(addr, &mut out);
    out
}

/// Parses a hello payload (never panics).
pub fn parse_hello(b: &[u8]) -> Result<SocketAddr, HandshakeError> {
    let bad = HandshakeError::Malformed;
    match b {
        [1, rest @ ..] => match petal_protocol::addr::parse(rest) {
            Some((addr, used)) if used == rest.len() => Ok(addr),
            _ => Err(bad("hello payload length or address family")),
        },
        _ => Err(bad("unknown hello version")),
    }
}

/// The address peers should dial: the advertised one, with an IP that cannot be right
/// replaced by the IP the link came from: an unspecified IP (a node that listens on every
/// interface and did not know its address), or a loopback IP on a link that came from
/// elsewhere (a node that guessed wrong).
pub fn dialable(advertised: SocketAddr, observed: Option<SocketAddr>) -> SocketAddr {
    match observed {
        Some(o)
            if advertised.ip().is_unspecified()
                || (advertised.ip().is_loopback() && !o.ip().is_loopback()) =>
        {
            SocketAddr::new(o.ip(), advertised.port())
        }
        _ => advertised,
    }
}

/// A finished handshake: who the peer is and the link's record layer.
pub struct Established {
    /// The peer: its id (derived from its proven static key) and its dialable address.
    pub peer: NodeInfo,
    /// Seals outgoing records.
    pub sealer: Sealer,
    /// Opens incoming records.
    pub opener: Opener,
}

async fn write_msg<S: AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("handshake message of {} bytes exceeds 65535", msg.len()),
        )
    })?;
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await?;
    s.flush().await
}

async fn read_msg<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, HandshakeError> {
    let mut len = [0u8; 2];
    if let Err(e) = s.read_exact(&mut len).await {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            HandshakeError::Closed
        } else {
            HandshakeError::Io(e)
        });
    }
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_HANDSHAKE_MSG {
        return Err(HandshakeError::Malformed("handshake message too long"));
    }
    let mut msg = vec![0u8; len];
    s.read_exact(&mut msg).await?;
    Ok(msg)
}

/// Runs the Noise handshake on a fresh stream within `deadline`. `initiator` is the dialing
/// side. `me` is the address our peers dial (the hello), `observed` the peer's address as the
/// stream sees it. `stream_no` picks the randomness (see [`Entropy`]).
#[expect(
    clippy::too_many_arguments,
    reason = "a handshake needs its stream, role, identity, network key, both addresses, entropy and deadline; a struct would only name them twice"
)]
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    initiator: bool,
    identity: &Identity,
    key: &NetworkKey,
    me: SocketAddr,
    observed: Option<SocketAddr>,
    entropy: Entropy,
    stream_no: u64,
    deadline: Duration,
) -> Result<Established, HandshakeError> {
    let exchange = async {
        let mut hs = handshake_state(initiator, identity, key, entropy, stream_no);
        let hello = encode_hello(me);
        let peer_hello = exchange_messages(stream, &mut hs, initiator, &hello).await?;
        finish(hs, peer_hello, observed)
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::Timeout),
    }
}

/// Builds the handshake state for one side.
#[expect(
    clippy::expect_used,
    reason = "the Noise parameters are a constant and the keys have their fixed lengths: snow refuses none of these settings"
)]
pub fn handshake_state(
    initiator: bool,
    identity: &Identity,
    key: &NetworkKey,
    entropy: Entropy,
    stream_no: u64,
) -> HandshakeState {
    let params: NoiseParams = NOISE_PARAMS.parse().expect("valid Noise parameters");
    let resolver = Box::new(Resolver {
        entropy,
        stream: stream_no,
    });
    let b = snow::Builder::with_resolver(params, resolver)
        .local_private_key(&identity.private)
        .and_then(|b| b.psk(0, key.as_bytes()))
        .and_then(|b| b.prologue(PROLOGUE))
        .expect("valid builder settings");
    if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
    .expect("valid Noise handshake")
}

/// The three handshake messages; returns the peer's hello address.
async fn exchange_messages<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    hs: &mut HandshakeState,
    initiator: bool,
    hello: &[u8],
) -> Result<SocketAddr, HandshakeError> {
    let mut buf = vec![0u8; MAX_HANDSHAKE_MSG];
    let mut payload = vec![0u8; MAX_HANDSHAKE_MSG];
    let peer_hello;
    if initiator {
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(HandshakeError::Auth)?;
        write_msg(stream, &buf[..n]).await?;
        let m2 = read_msg(stream).await?;
        let n = hs
            .read_message(&m2, &mut payload)
            .map_err(HandshakeError::Auth)?;
        peer_hello = parse_hello(&payload[..n])?;
        let n = hs
            .write_message(hello, &mut buf)
            .map_err(HandshakeError::Auth)?;
        write_msg(stream, &buf[..n]).await?;
    } else {
        let m1 = read_msg(stream).await?;
        let n = hs
            .read_message(&m1, &mut payload)
            .map_err(HandshakeError::Auth)?;
        if n != 0 {
            return Err(HandshakeError::Malformed("payload in the first message"));
        }
        let n = hs
            .write_message(hello, &mut buf)
            .map_err(HandshakeError::Auth)?;
        write_msg(stream, &buf[..n]).await?;
        let m3 = read_msg(stream).await?;
        let n = hs
            .read_message(&m3, &mut payload)
            .map_err(HandshakeError::Auth)?;
        peer_hello = parse_hello(&payload[..n])?;
    }
    Ok(peer_hello)
}

/// Turns a finished handshake into the link's record layer.
pub fn finish(
    hs: HandshakeState,
    peer_hello: SocketAddr,
    observed: Option<SocketAddr>,
) -> Result<Established, HandshakeError> {
    if !hs.is_handshake_finished() {
        return Err(HandshakeError::Malformed("handshake not finished"));
    }
    let remote: [u8; 32] = hs
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or(HandshakeError::Malformed("no remote static key"))?;
    // The split's first key encrypts what the initiator sends, the second what it receives
    // (the Noise specification's Split()); the records are sealed with them directly (see
    // `record`).
    let mut hs = hs;
    let (k1, k2) = hs.dangerously_get_raw_split();
    let (send, recv) = if hs.is_initiator() {
        (k1, k2)
    } else {
        (k2, k1)
    };
    Ok(Established {
        peer: NodeInfo {
            id: node_id_of(&remote),
            addr: dialable(peer_hello, observed),
        },
        sealer: Sealer::new(&send),
        opener: Opener::new(&recv),
    })
}

#[cfg(test)]
mod tests {
    use super::record::TAG_LEN;
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn ids_derive_from_public_keys() {
        let a = Identity::from_seed(1);
        let b = Identity::from_seed(2);
        assert_ne!(a.node_id(), b.node_id());
        assert_eq!(a.node_id(), Identity::from_seed(1).node_id());
        let back = Identity::from_file_contents(&a.to_file_contents()).unwrap();
        assert_eq!(back.public(), a.public());
        assert!(Identity::from_file_contents("zz").is_none());
        assert!(!format!("{a:?}").contains(&hex(&a.private)));
    }

    #[test]
    fn network_keys_parse_and_hide() {
        let k = NetworkKey::random().unwrap();
        assert_eq!(NetworkKey::from_hex(&k.to_hex()), Some(k.clone()));
        assert!(NetworkKey::from_hex("00").is_none());
        assert_eq!(format!("{k:?}"), "NetworkKey(..)");
    }

    #[test]
    fn hello_round_trips_and_rejects() {
        for a in ["10.1.2.3:4000", "[::1]:55556", "0.0.0.0:1"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(parse_hello(&encode_hello(a)).unwrap(), a);
        }
        assert!(parse_hello(&[]).is_err());
        assert!(parse_hello(&[1, 4, 1, 2, 3]).is_err());
        assert!(parse_hello(&[2, 4, 1, 2, 3, 4, 0, 1]).is_err());
        let obs: SocketAddr = "10.0.0.9:40000".parse().unwrap();
        assert_eq!(
            dialable("0.0.0.0:55556".parse().unwrap(), Some(obs)),
            "10.0.0.9:55556".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            dialable("127.0.0.1:55556".parse().unwrap(), Some(obs)),
            "10.0.0.9:55556".parse::<SocketAddr>().unwrap()
        );
        let lo: SocketAddr = "127.0.0.2:40000".parse().unwrap();
        assert_eq!(
            dialable("127.0.0.1:55556".parse().unwrap(), Some(lo)),
            "127.0.0.1:55556".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            dialable("10.1.1.1:55556".parse().unwrap(), Some(obs)),
            "10.1.1.1:55556".parse::<SocketAddr>().unwrap()
        );
    }

    async fn pair(
        ka: &NetworkKey,
        kb: &NetworkKey,
    ) -> (
        Result<Established, HandshakeError>,
        Result<Established, HandshakeError>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let (ia, ib) = (Identity::from_seed(10), Identity::from_seed(11));
        let d = Duration::from_secs(2);
        let addr_a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let addr_b: SocketAddr = "10.0.0.2:2".parse().unwrap();
        let fa = handshake(
            &mut a,
            true,
            &ia,
            ka,
            addr_a,
            None,
            Entropy::Seeded(1),
            1,
            d,
        );
        let fb = async {
            let r = handshake(
                &mut b,
                false,
                &ib,
                kb,
                addr_b,
                None,
                Entropy::Seeded(2),
                1,
                d,
            )
            .await;
            drop(b); // a failed responder closes
            r
        };
        tokio::join!(fa, fb)
    }

    #[tokio::test]
    async fn handshake_proves_ids_and_carries_records() {
        let k = NetworkKey::from_bytes([7; 32]);
        let (a, b) = pair(&k, &k).await;
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.peer.id, Identity::from_seed(11).node_id());
        assert_eq!(b.peer.id, Identity::from_seed(10).node_id());
        assert_eq!(a.peer.addr, "10.0.0.2:2".parse().unwrap());
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        a.sealer.seal(&data, &mut wire).unwrap();
        assert_eq!(wire.len(), data.len() + 4 * (2 + TAG_LEN));
        assert!(
            !wire
                .windows(64)
                .any(|w| data.windows(64).take(4).any(|d| d == w))
        );
        // Delivered in odd pieces.
        let mut raw = BytesMut::new();
        let mut plain = BytesMut::new();
        for piece in wire.chunks(7_777) {
            raw.extend_from_slice(piece);
            b.opener.open(&mut raw, &mut plain).unwrap();
        }
        assert_eq!(&plain[..], &data[..]);
        // A flipped bit, a replay: refused.
        let mut wire2 = Vec::new();
        a.sealer.seal(b"hello", &mut wire2).unwrap();
        let mut bad = BytesMut::from(&wire2[..]);
        bad[5] ^= 1;
        assert!(matches!(
            b.opener.open(&mut bad, &mut plain),
            Err(OpenError::Auth)
        ));
        // A refused record leaves nothing of itself in the opened bytes.
        assert_eq!(&plain[..], &data[..]);
        let mut replay = BytesMut::from(&wire[..2 + MAX_RECORD]);
        assert!(b.opener.open(&mut replay, &mut plain).is_err());
    }

    #[tokio::test]
    async fn wrong_network_key_fails_at_the_first_message() {
        let (a, b) = pair(
            &NetworkKey::from_bytes([1; 32]),
            &NetworkKey::from_bytes([2; 32]),
        )
        .await;
        assert!(
            matches!(b, Err(HandshakeError::Auth(_))),
            "{b:?}",
            b = b.err()
        );
        assert!(
            matches!(a, Err(HandshakeError::Closed)),
            "{a:?}",
            a = a.err()
        );
    }
}
