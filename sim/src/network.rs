//! The simulated network between nodes: what a send becomes (loss, partitions, duplicates,
//! delays and reordering, the event log), for the engine.

use petal_core::{Message, NodeInfo, Time};
use petal_protocol::codec;
use rand::Rng;

use super::{Sim, index_of};

impl Sim {
    #[expect(
        clippy::expect_used,
        reason = "wire_check is a self-test: a frame this node encoded that does not decode is the bug it exists to stop at"
    )]
    pub(super) fn transmit(&mut self, from: u32, to: NodeInfo, msg: Message) {
        let bytes = codec::encoded_len(&msg);
        self.metrics
            .sent(self.now, msg.kind_index(), msg.is_maintenance(), bytes);
        let msg = if self.cfg.wire_check {
            self.scratch.clear();
            codec::encode(&msg, &mut self.scratch);
            assert_eq!(
                self.scratch.len(),
                bytes,
                "encoded_len disagrees with encode"
            );
            codec::decode_exact(&self.scratch, codec::DEFAULT_MAX_FRAME_LEN)
                .expect("own frames decode")
        } else {
            msg
        };
        let Some(dst) = index_of(to.addr).filter(|&d| (d as usize) < self.slots.len()) else {
            self.metrics.dropped_unroutable += 1;
            return;
        };
        // A link to an address whose node has another id fails its handshake.
        if self.ids[dst as usize] != to.id {
            self.metrics.dropped_unroutable += 1;
            return;
        }
        if self.cfg.loss > 0.0 && self.net_rng.random_bool(self.cfg.loss) {
            self.metrics.dropped_loss += 1;
            return;
        }
        if let Some(log) = &mut self.event_log {
            let payload = match &msg {
                Message::Cast(c) => Some(&c.payload),
                Message::Route(r) => match &r.body {
                    petal_protocol::Routed::Publish { payload, .. } => Some(payload),
                    _ => None,
                },
                _ => None,
            };
            if let Some(gid) =
                payload.and_then(|p| Some(u64::from_be_bytes(p.get(..8)?.try_into().ok()?)))
            {
                let cast = matches!(msg, Message::Cast { .. });
                log.push((from, dst, gid, cast, self.now));
            }
        }
        let copy = (self.cfg.duplicate > 0.0 && self.net_rng.random_bool(self.cfg.duplicate))
            .then(|| msg.clone());
        let at = self.delivery_time(from, dst);
        self.push_message(at, dst, from, msg);
        if let Some(msg) = copy {
            self.metrics.duplicated += 1;
            let at = self.delivery_time(from, dst);
            self.push_message(at, dst, from, msg);
        }
    }

    /// When a message sent now from `from` reaches `to`: the topology's delay, plus the
    /// reordering jitter when set.
    fn delivery_time(&mut self, from: u32, to: u32) -> Time {
        let mut delay = self.topology.latency_us(from, to);
        if self.cfg.reorder_us > 0 {
            delay += self.net_rng.random_range(0..=self.cfg.reorder_us);
        }
        Time::from_micros(self.now.as_micros() + delay)
    }
}
