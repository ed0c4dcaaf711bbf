//! The link handshake (Noise XXpsk0) and record layer facing forged input: a responder given a
//! forged first message, an initiator given a forged second one, the hello payload parser, and
//! an established link given forged records. Every case ends in an error or a valid result,
//! never a panic; a record sealed by the peer opens to exactly what was sealed.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use petal_node::secure::{self, Entropy, Identity, NetworkKey};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = NetworkKey::from_bytes([3; 32]);
    let (a, b) = (Identity::from_seed(1), Identity::from_seed(2));
    let mut buf = vec![0u8; 1024];
    let mut payload = vec![0u8; 1024];
    match mode % 4 {
        0 => {
            let mut r = secure::handshake_state(false, &b, &key, Entropy::Seeded(2), 0);
            let _ = r.read_message(rest, &mut payload);
        }
        1 => {
            let mut i = secure::handshake_state(true, &a, &key, Entropy::Seeded(1), 0);
            i.write_message(&[], &mut buf).expect("first message");
            if let Ok(n) = i.read_message(rest, &mut payload) {
                let _ = secure::parse_hello(&payload[..n]);
            }
        }
        2 => {
            if let Ok(addr) = secure::parse_hello(rest) {
                assert_eq!(
                    secure::parse_hello(&secure::encode_hello(addr)).ok(),
                    Some(addr)
                );
            }
        }
        _ => {
            // A real handshake in memory, then forged records, then a real one.
            let mut i = secure::handshake_state(true, &a, &key, Entropy::Seeded(1), 0);
            let mut r = secure::handshake_state(false, &b, &key, Entropy::Seeded(2), 0);
            let hello = secure::encode_hello("127.0.0.1:1".parse().expect("address"));
            let n = i.write_message(&[], &mut buf).expect("m1");
            r.read_message(&buf[..n], &mut payload).expect("m1 read");
            let n = r.write_message(&hello, &mut buf).expect("m2");
            i.read_message(&buf[..n], &mut payload).expect("m2 read");
            let n = i.write_message(&hello, &mut buf).expect("m3");
            r.read_message(&buf[..n], &mut payload).expect("m3 read");
            let at = "127.0.0.1:1".parse().expect("address");
            let mut ini = secure::finish(i, at, None).expect("initiator done");
            let mut res = secure::finish(r, at, None).expect("responder done");
            let mut plain = BytesMut::new();
            let mut raw = BytesMut::from(rest);
            if res.opener.open(&mut raw, &mut plain).is_err() {
                return;
            }
            // Forged bytes opened without error only as a partial record (nothing decrypted).
            assert!(plain.is_empty(), "a forged record was accepted");
            let msg = &rest[..rest.len().min(secure::MAX_RECORD_PLAIN)];
            let mut sealed = Vec::new();
            ini.sealer.seal(msg, &mut sealed).expect("seal");
            let mut raw = BytesMut::from(&sealed[..]);
            res.opener
                .open(&mut raw, &mut plain)
                .expect("a real record opens");
            assert_eq!(&plain[..], msg);
        }
    }
});
