//! The discovery beacon codec: round trips, authentication, rejection of every malformed or
//! modified datagram, and a pinned known-answer vector so the wire format cannot drift.

use petal_node::beacon::{
    BEACON_LEN, BEACON_MAGIC, BEACON_VERSION, Beacon, BeaconError, BeaconKey,
};
use petal_protocol::NodeId;
use proptest::prelude::*;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

const KEY: [u8; 32] = [7; 32];

fn beacon() -> Beacon {
    Beacon {
        id: NodeId(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
        port: 4710,
        ready: true,
        boot: 0xdead_beef_0bad_f00d,
    }
}

#[test]
fn round_trip() {
    let key = BeaconKey::new(&KEY);
    for ready in [false, true] {
        let b = Beacon { ready, ..beacon() };
        let sealed = key.seal(&b, [9; 12]);
        assert_eq!(sealed.len(), BEACON_LEN);
        assert_eq!(&sealed[..4], &BEACON_MAGIC);
        assert_eq!(sealed[4], BEACON_VERSION);
        assert_eq!(&sealed[5..17], &[9; 12]);
        assert_eq!(key.open(&sealed), Ok(b));
    }
}

#[test]
fn the_body_is_not_visible_in_clear() {
    let key = BeaconKey::new(&KEY);
    let b = beacon();
    let sealed = key.seal(&b, [0; 12]);
    let id = b.id.to_bytes();
    assert!(!sealed.windows(4).any(|w| w == &id[..4]));
    assert!(!sealed.windows(2).any(|w| w == b.port.to_be_bytes()));
    // Different nonces give unrelated ciphertexts of the same beacon.
    let other = key.seal(&b, [1; 12]);
    assert_ne!(sealed[17..], other[17..]);
}

#[test]
fn a_wrong_network_key_is_unauthentic() {
    let sealed = BeaconKey::new(&KEY).seal(&beacon(), [3; 12]);
    let mut other = KEY;
    other[31] ^= 1;
    assert_eq!(
        BeaconKey::new(&other).open(&sealed),
        Err(BeaconError::Unauthentic)
    );
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let key = BeaconKey::new(&KEY);
    let sealed = key.seal(&beacon(), [5; 12]);
    for byte in 0..BEACON_LEN {
        for bit in 0..8 {
            let mut d = sealed;
            d[byte] ^= 1 << bit;
            let expected = match byte {
                0..4 => BeaconError::Magic,
                4 => BeaconError::Version(BEACON_VERSION ^ (1 << bit)),
                _ => BeaconError::Unauthentic,
            };
            assert_eq!(key.open(&d), Err(expected), "byte {byte} bit {bit}");
        }
    }
}

#[test]
fn truncations_and_extensions_are_rejected() {
    let key = BeaconKey::new(&KEY);
    let sealed = key.seal(&beacon(), [5; 12]);
    for len in 0..BEACON_LEN {
        assert_eq!(key.open(&sealed[..len]), Err(BeaconError::Length(len)));
    }
    for extra in 1..=64 {
        let mut d = sealed.to_vec();
        d.resize(BEACON_LEN + extra, 0);
        assert_eq!(key.open(&d), Err(BeaconError::Length(BEACON_LEN + extra)));
    }
    assert_eq!(key.open(&vec![0; 65536]), Err(BeaconError::Length(65536)));
}

/// Seals a body with the beacon key derived independently of the codec (same HKDF and AEAD
/// parameters), so the test can forge authentic beacons with reserved flag bits set.
fn seal_raw(network_key: &[u8; 32], nonce: [u8; 12], body: [u8; 27]) -> [u8; BEACON_LEN] {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"petal beacon v1").extract(network_key);
    let okm = prk.expand(&[b"aead key"], &AES_256_GCM).unwrap();
    let key = LessSafeKey::new(UnboundKey::from(okm));
    let mut out = [0u8; BEACON_LEN];
    out[..4].copy_from_slice(b"PTLB");
    out[4] = 1;
    out[5..17].copy_from_slice(&nonce);
    let mut in_out = body.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(&out[..17]),
        &mut in_out,
    )
    .unwrap();
    out[17..].copy_from_slice(&in_out);
    out
}

#[test]
fn the_key_derivation_and_layout_match_the_documentation() {
    let b = beacon();
    let mut body = [0u8; 27];
    body[..16].copy_from_slice(&b.id.to_bytes());
    body[16..18].copy_from_slice(&b.port.to_be_bytes());
    body[18] = 1;
    body[19..].copy_from_slice(&b.boot.to_be_bytes());
    let raw = seal_raw(&KEY, [8; 12], body);
    assert_eq!(BeaconKey::new(&KEY).seal(&b, [8; 12]), raw);
    assert_eq!(BeaconKey::new(&KEY).open(&raw), Ok(b));
}

#[test]
fn authentic_beacons_with_unknown_flags_are_rejected() {
    let key = BeaconKey::new(&KEY);
    for flags in 2..=255u8 {
        let mut body = [0u8; 27];
        body[18] = flags;
        let raw = seal_raw(&KEY, [flags; 12], body);
        assert_eq!(key.open(&raw), Err(BeaconError::Flags(flags)));
    }
}

#[test]
fn the_network_key_is_not_the_cipher_key() {
    // A beacon sealed directly under the network key (no HKDF) must not authenticate.
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY).unwrap());
    let mut out = [0u8; BEACON_LEN];
    out[..4].copy_from_slice(b"PTLB");
    out[4] = 1;
    let mut in_out = vec![0u8; 27];
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::from(&out[..17]),
        &mut in_out,
    )
    .unwrap();
    out[17..].copy_from_slice(&in_out);
    assert_eq!(
        BeaconKey::new(&KEY).open(&out),
        Err(BeaconError::Unauthentic)
    );
}

#[test]
fn errors_read_clearly_and_the_key_is_not_printed() {
    assert_eq!(
        BeaconError::Unauthentic.to_string(),
        "beacon from another network or forged (authentication failed)"
    );
    assert!(
        BeaconError::Magic
            .to_string()
            .contains("not a petal beacon")
    );
    assert!(
        BeaconError::Length(3)
            .to_string()
            .contains("not a petal beacon")
    );
    assert!(BeaconError::Version(2).to_string().contains("version 2"));
    assert!(BeaconError::Flags(0x80).to_string().contains("0x80"));
    assert_eq!(format!("{:?}", BeaconKey::new(&KEY)), "BeaconKey(..)");
}

/// Known-answer vector: network key 00 01 .. 1f, nonce a0 a1 .. ab, the beacon below. Computed
/// once by this codec and checked independently with Python's `cryptography` (HKDF-SHA256 and
/// AESGCM). If this test fails, the wire format changed: bump [`BEACON_VERSION`] instead.
#[test]
fn known_answer_vector() {
    let mut network_key = [0u8; 32];
    for (i, b) in network_key.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut nonce = [0u8; 12];
    for (i, b) in nonce.iter_mut().enumerate() {
        *b = 0xa0 + i as u8;
    }
    let b = Beacon {
        id: NodeId(0x00112233_44556677_8899aabb_ccddeeff),
        port: 0x1234,
        ready: true,
        boot: 0x0102_0304_0506_0708,
    };
    let key = BeaconKey::new(&network_key);
    let sealed = key.seal(&b, nonce);
    assert_eq!(hex(&sealed), KAT);
    assert_eq!(key.open(&unhex(KAT)), Ok(b));
}

const KAT: &str = "50544c4201a0a1a2a3a4a5a6a7a8a9aaab36709733c5edf91ac682dd9d788c2bef8e381c59b8d60a6b13cf43dafd759d714029a6c0370acef3ca5911";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn any_beacon() -> impl Strategy<Value = Beacon> {
    (any::<u128>(), any::<u16>(), any::<bool>(), any::<u64>()).prop_map(
        |(id, port, ready, boot)| Beacon {
            id: NodeId(id),
            port,
            ready,
            boot,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_and_are_rejected(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let key = BeaconKey::new(&KEY);
        prop_assert!(key.open(&bytes).is_err());
    }

    #[test]
    fn random_bytes_behind_a_valid_header_are_unauthentic(
        rest in proptest::collection::vec(any::<u8>(), BEACON_LEN - 5..=BEACON_LEN - 5),
    ) {
        let mut d = b"PTLB\x01".to_vec();
        d.extend_from_slice(&rest);
        prop_assert_eq!(BeaconKey::new(&KEY).open(&d), Err(BeaconError::Unauthentic));
    }

    #[test]
    fn random_beacons_round_trip(b in any_beacon(), nonce in any::<[u8; 12]>()) {
        let key = BeaconKey::new(&KEY);
        let sealed = key.seal(&b, nonce);
        prop_assert_eq!(&sealed[5..17], &nonce[..]);
        prop_assert_eq!(key.open(&sealed), Ok(b));
    }

    #[test]
    fn random_network_keys_do_not_open_each_others_beacons(
        a in any::<[u8; 32]>(),
        b in any::<[u8; 32]>(),
        beacon in any_beacon(),
        nonce in any::<[u8; 12]>(),
    ) {
        prop_assume!(a != b);
        let sealed = BeaconKey::new(&a).seal(&beacon, nonce);
        prop_assert_eq!(BeaconKey::new(&a).open(&sealed), Ok(beacon));
        prop_assert_eq!(BeaconKey::new(&b).open(&sealed), Err(BeaconError::Unauthentic));
    }
}
