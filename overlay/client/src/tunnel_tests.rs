//! Model-based tests of tunnel reassembly: random messages, random chunkings, senders giving up
//! mid-message, the application consuming at random points.

use bytes::Bytes;
use proptest::prelude::*;

use super::TunnelShared;

const BUFFER: u64 = 1000;

#[derive(Clone, Debug)]
enum Op {
    /// A message of `len` bytes cut into chunks of at most `chunk` bytes; the sender gives up
    /// after `keep` chunks when that is fewer than the message needs.
    Send {
        len: usize,
        chunk: usize,
        keep: usize,
    },
    /// The application takes one message.
    Consume,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..400, 1usize..150, 0usize..8).prop_map(|(len, chunk, keep)| Op::Send { len, chunk, keep }),
        2 => Just(Op::Consume),
    ]
}

proptest! {
    #[test]
    fn reassembly_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let tunnel = TunnelShared::new(1, BUFFER, 150, None);
        // The node's view: credit it may still spend on first chunks.
        let mut node_credit = BUFFER as i64;
        let mut expected = std::collections::VecDeque::new();
        let mut received = 0u64;
        let mut regranted = 0u64;
        let mut seq = 0u8;
        for op in ops {
            match op {
                Op::Send { len, chunk, keep } => {
                    seq = seq.wrapping_add(1);
                    let message: Bytes = (0..len).map(|i| seq.wrapping_add(i as u8)).collect::<Vec<_>>().into();
                    let chunks: Vec<Bytes> = (0..len).step_by(chunk)
                        .map(|at| message.slice(at..(at + chunk).min(len))).collect();
                    // The node starts a message only with credit for its first chunk.
                    if node_credit < chunks[0].len() as i64 {
                        continue;
                    }
                    let sent = keep.max(1);
                    let complete = sent >= chunks.len();
                    for (i, c) in chunks.iter().take(sent).enumerate() {
                        let size = if i == 0 { len as u64 } else { 0 };
                        let (regrant, _) = tunnel.reassemble(size, c.clone()).expect("valid chunks");
                        received += c.len() as u64;
                        node_credit -= c.len() as i64;
                        node_credit += regrant as i64;
                        regranted += regrant;
                    }
                    if complete {
                        expected.push_back(message);
                    }
                }
                Op::Consume => {
                    // A partial message still pending does not block earlier whole ones.
                    match tunnel.take_message() {
                        Some(Ok((message, regrant))) => {
                            prop_assert_eq!(regrant, message.len() as u64);
                            prop_assert_eq!(Some(message), expected.pop_front());
                            node_credit += regrant as i64;
                            regranted += regrant;
                        }
                        Some(Err(e)) => prop_assert!(false, "unexpected end {e}"),
                        None => prop_assert!(expected.is_empty()),
                    }
                }
            }
            let st = super::lock(&tunnel.state);
            // Every received byte is either granted back or still held.
            prop_assert_eq!(received, regranted + st.outstanding);
            let held: u64 = st.ready.iter().map(|m| m.len() as u64).sum::<u64>()
                + st.partial.as_ref().map_or(0, |p| p.data.len() as u64);
            prop_assert_eq!(held, st.outstanding);
        }
        // A message abandoned mid-way is dropped when the next one starts; whatever is
        // complete comes out in order.
        while let Some(Ok((message, _))) = tunnel.take_message() {
            prop_assert_eq!(Some(message), expected.pop_front());
        }
        prop_assert!(expected.is_empty());
    }
}

#[test]
fn rejects_framing_violations() {
    let tunnel = TunnelShared::new(1, BUFFER, 150, None);
    // A first chunk longer than its message.
    assert!(tunnel.reassemble(3, Bytes::from_static(b"four")).is_err());
    let tunnel = TunnelShared::new(1, BUFFER, 150, None);
    // Continuations beyond the declared size.
    assert!(tunnel.reassemble(5, Bytes::from_static(b"abc")).is_ok());
    assert!(tunnel.reassemble(0, Bytes::from_static(b"def")).is_err());
    let tunnel = TunnelShared::new(1, BUFFER, 150, None);
    // A message larger than the buffer.
    assert!(
        tunnel
            .reassemble(BUFFER + 1, Bytes::from_static(b"x"))
            .is_err()
    );
    // A stray continuation is dropped and its bytes granted back.
    let tunnel = TunnelShared::new(1, BUFFER, 150, None);
    assert_eq!(
        tunnel.reassemble(0, Bytes::from_static(b"xy")),
        Ok((2, false))
    );
}
