//! A peer link's queue as the node task holds it. Outside a read the node task hands each
//! message to the link's writer as it comes; while it handles one read (a client's packets or
//! a peer's frames, see `Driver::hold_output`) it collects what the read queues for each link
//! and hands each link one batch at the read's end: one channel send, one wake-up of the
//! writer and one give-back of the memory budget for the lot, where each message took its own.
//! Acknowledgements of routed messages in one batch travel as one frame
//! ([`Message::RouteAcks`]): a node that takes a burst of routed messages from a peer (a
//! publisher's stream towards the topic's root) answers with one frame, not one per message.
//!
//! The queue is bounded by the messages it holds (the batch under way and what the writer has
//! not encoded yet, counted in [`LinkTraffic::queued`]; a batch's merged acknowledgements take
//! one place) against `Options::link_queue`, and by the peer's share of the node's memory
//! budget. A batch's charges come back together, once the writer has encoded all of it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use petal_protocol::Message;
use petal_protocol::codec::MAX_LIST_LEN;
use tokio::sync::mpsc;

use crate::budget::{Charge, Queued};
use crate::link::{LinkOut, LinkTraffic};

/// The node task's end of an up link's writer queue, with the batch of the read under way.
pub(crate) struct LinkTx {
    tx: mpsc::UnboundedSender<LinkOut>,
    /// What the link carried and holds, counted by the node task and the link's tasks.
    pub(crate) traffic: Arc<LinkTraffic>,
    /// What the current read queued for the link, not handed over yet.
    batch: Vec<Message>,
    /// What `batch` holds of the budget.
    charge: Charge,
    /// The index in `batch` of the acknowledgement later ones join.
    acks: Option<usize>,
}

impl LinkTx {
    pub(crate) fn new(tx: mpsc::UnboundedSender<LinkOut>, traffic: Arc<LinkTraffic>) -> Self {
        Self {
            tx,
            traffic,
            batch: Vec::new(),
            charge: Charge::none(),
            acks: None,
        }
    }

    /// Messages queued for the link: the batch under way and what its writer has not encoded.
    pub(crate) fn queued(&self) -> usize {
        let writer = self.traffic.queued.load(Ordering::Acquire);
        usize::try_from(writer)
            .unwrap_or(usize::MAX)
            .saturating_add(self.batch.len())
    }

    /// Hands `q` to the writer now, after the batch under way (order is kept). `Err` gives the
    /// message back when the writer is gone (the link broke).
    pub(crate) fn send(&mut self, q: Queued) -> Result<(), Vec<Message>> {
        if !self.batch.is_empty() {
            self.push(q.msg, q.charge);
            return self.flush();
        }
        self.hand_over(LinkOut::One(q), 1)
    }

    /// True when the writer is gone (the link broke).
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Sends `out` (`n` messages) to the writer, counted as queued until the writer encodes
    /// them.
    fn hand_over(&mut self, out: LinkOut, n: u64) -> Result<(), Vec<Message>> {
        self.traffic.queued.fetch_add(n, Ordering::AcqRel);
        self.tx.send(out).map_err(|e| {
            self.traffic.queued.fetch_sub(n, Ordering::AcqRel);
            e.0.into_messages()
        })
    }

    /// Adds `msg` to the batch under way; true when it is the batch's first message (the
    /// caller then notes the link for [`LinkTx::flush`]). An acknowledgement joins the batch's
    /// earlier one: acknowledgements may overtake the messages queued between them, which
    /// never depend on their order.
    pub(crate) fn push(&mut self, msg: Message, charge: Charge) -> bool {
        let first = self.batch.is_empty();
        self.charge.absorb(charge);
        if let Message::RouteAck { hop_seq } = msg {
            if let Some(i) = self.acks {
                match &mut self.batch[i] {
                    Message::RouteAcks { hop_seqs } if hop_seqs.len() < MAX_LIST_LEN => {
                        hop_seqs.push(hop_seq);
                        return first;
                    }
                    Message::RouteAck { hop_seq: earlier } => {
                        let earlier = *earlier;
                        self.batch[i] = Message::RouteAcks {
                            hop_seqs: vec![earlier, hop_seq],
                        };
                        return first;
                    }
                    _ => {}
                }
            }
            self.acks = Some(self.batch.len());
        }
        self.batch.push(msg);
        first
    }

    /// Hands the batch under way to the writer. `Err` gives its messages back when the writer
    /// is gone (the link broke).
    pub(crate) fn flush(&mut self) -> Result<(), Vec<Message>> {
        self.acks = None;
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut msgs = std::mem::take(&mut self.batch);
        let charge = std::mem::replace(&mut self.charge, Charge::none());
        let n = msgs.len() as u64;
        let out = match msgs.pop() {
            Some(msg) if msgs.is_empty() => LinkOut::One(Queued { msg, charge }),
            Some(last) => {
                msgs.push(last);
                LinkOut::Batch { msgs, charge }
            }
            None => return Ok(()),
        };
        self.hand_over(out, n)
    }
}

impl Drop for LinkTx {
    /// A link the node task drops while a read is held (its peer declared dead) still gets the
    /// batch under way: its writer sends what is queued before it closes, as before batches.
    /// (If the writer is gone too, the batch is lost, as a queue's content was.)
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> (LinkTx, mpsc::UnboundedReceiver<LinkOut>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LinkTx::new(tx, Arc::new(LinkTraffic::new())), rx)
    }

    fn msgs(out: LinkOut) -> Vec<Message> {
        out.into_messages()
    }

    /// A batch keeps its messages' order, its acknowledgements go as one frame where the first
    /// stood, the queue counts what is held, and a message sent while a batch is under way
    /// goes after it.
    #[tokio::test]
    async fn a_batch_keeps_order_and_merges_its_acknowledgements() {
        let (mut l, mut rx) = link();
        let ack = |hop_seq| Message::RouteAck { hop_seq };
        assert!(l.push(Message::Ping { nonce: 1 }, Charge::none()));
        assert!(!l.push(ack(10), Charge::none()));
        assert!(!l.push(Message::Pong { nonce: 2 }, Charge::none()));
        assert!(!l.push(ack(11), Charge::none()));
        assert!(!l.push(ack(12), Charge::none()));
        assert_eq!(l.queued(), 3);
        l.send(Queued::free(Message::Ping { nonce: 3 })).unwrap();
        assert_eq!(
            l.queued(),
            4,
            "a send goes after the batch under way, with it"
        );
        l.flush().unwrap();
        assert_eq!(l.queued(), 4, "the writer has not taken them yet");
        assert_eq!(
            msgs(rx.try_recv().unwrap()),
            vec![
                Message::Ping { nonce: 1 },
                Message::RouteAcks {
                    hop_seqs: vec![10, 11, 12]
                },
                Message::Pong { nonce: 2 },
                Message::Ping { nonce: 3 },
            ]
        );
        // A new batch starts its own acknowledgement frame; a lone message goes as `One`.
        assert!(l.push(ack(13), Charge::none()));
        l.flush().unwrap();
        assert!(matches!(
            rx.try_recv().unwrap(),
            LinkOut::One(Queued {
                msg: Message::RouteAck { hop_seq: 13 },
                ..
            })
        ));
        // A full acknowledgement frame starts another.
        for s in 0..=MAX_LIST_LEN as u64 {
            l.push(ack(s), Charge::none());
        }
        l.flush().unwrap();
        let got = msgs(rx.try_recv().unwrap());
        assert_eq!(got.len(), 2);
        assert!(
            matches!(&got[0], Message::RouteAcks { hop_seqs } if hop_seqs.len() == MAX_LIST_LEN)
        );
        assert_eq!(got[1], ack(MAX_LIST_LEN as u64));
    }

    /// A link dropped with a batch under way hands it over; a writer that is gone gives the
    /// messages back.
    #[tokio::test]
    async fn a_dropped_link_hands_its_batch_over_and_a_closed_one_gives_it_back() {
        let (mut l, mut rx) = link();
        l.push(Message::Ping { nonce: 1 }, Charge::none());
        l.push(Message::Ping { nonce: 2 }, Charge::none());
        drop(l);
        assert_eq!(msgs(rx.try_recv().unwrap()).len(), 2);
        let (mut l, rx) = link();
        drop(rx);
        l.push(Message::Ping { nonce: 1 }, Charge::none());
        assert_eq!(l.flush().unwrap_err(), vec![Message::Ping { nonce: 1 }]);
        assert_eq!(l.queued(), 0);
        let back = l
            .send(Queued::free(Message::Ping { nonce: 2 }))
            .unwrap_err();
        assert_eq!(back, vec![Message::Ping { nonce: 2 }]);
        assert_eq!(l.queued(), 0);
    }
}
