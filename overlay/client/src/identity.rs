//! Identity addressing, through Petal's relay extension: [`Connection::id_register`] holds
//! an identity (its messages go to a handler), [`Connection::id_send`] reaches whoever holds
//! one, wherever attached, [`Connection::id_who`] lists the nodes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use petal_protocol::relay::ClientPacket;
use petal_protocol::{IdResult, NodeInfo};
use tokio::sync::oneshot;

use crate::conn::{Connection, PendingGuard, Waiter, millis};
use crate::error::Error;
use crate::pool::{Pool, lock};
use crate::topic::{EventJob, TopicHandler};

impl Connection {
    /// Runs one identity operation and returns the node's answer.
    async fn id_op(&self, packet: impl FnOnce(u64) -> ClientPacket) -> Result<IdResult, Error> {
        let inner = self.inner();
        inner.check_open()?;
        if !inner.extended {
            return Err(Error::Unsupported(
                "the node does not speak Petal's identity extension",
            ));
        }
        let id = inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&inner.pending);
            if let Some(ended) = &pending.ended {
                return Err(ended.to_error());
            }
            pending.map.insert(id, Waiter::Id(tx));
        }
        let mut guard = PendingGuard {
            inner,
            id,
            armed: true,
        };
        inner.send(packet(id)).await?;
        let result = rx.await;
        guard.armed = false;
        result.map_err(|_| inner.ended_error())
    }

    /// Holds `identity`: messages sent to it ([`Connection::id_send`], from any node) go to
    /// `handler`, within the event limits of [`Options`](crate::Options). Returns once the
    /// identity's registry lists this node. Fails with [`Error::AlreadySubscribed`] if this
    /// connection holds it already.
    pub async fn id_register(
        &self,
        identity: &str,
        handler: impl TopicHandler,
        timeout: Duration,
    ) -> Result<(), Error> {
        let inner = self.inner();
        inner.check_open()?;
        {
            let mut handlers = lock(&inner.identities);
            if handlers.contains_key(identity) {
                return Err(Error::AlreadySubscribed(identity.to_owned()));
            }
            let pool = Pool::new(
                EventJob(handler),
                "identity messages",
                inner.options.event_handlers,
                inner.options.event_memory,
                inner.counters.dropped_events.clone(),
            );
            handlers.insert(identity.to_owned(), Box::new(pool));
        }
        let r = self
            .id_op(|id| ClientPacket::IdRegister {
                id,
                identity: identity.to_owned(),
                timeout_ms: millis(timeout),
            })
            .await;
        match r {
            Ok(IdResult::Registered) => Ok(()),
            other => {
                lock(&inner.identities).remove(identity);
                Err(match other {
                    Ok(r) => failure(r),
                    Err(e) => e,
                })
            }
        }
    }

    /// Lets go of `identity` (messages already delivered are still handled).
    pub async fn id_unregister(&self, identity: &str) -> Result<(), Error> {
        let inner = self.inner();
        inner.check_open()?;
        if lock(&inner.identities).remove(identity).is_none() {
            return Err(Error::NotSubscribed(identity.to_owned()));
        }
        inner
            .send(ClientPacket::IdUnregister {
                identity: identity.to_owned(),
            })
            .await
    }

    /// Sends `message` to every connection that holds `identity`; returns how many nodes
    /// delivered it. [`Error::UnknownIdentity`] when no live node holds it.
    pub async fn id_send(
        &self,
        identity: &str,
        message: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<u32, Error> {
        let message = message.into();
        let r = self
            .id_op(|id| ClientPacket::IdSend {
                id,
                identity: identity.to_owned(),
                message,
                timeout_ms: millis(timeout),
            })
            .await?;
        match r {
            IdResult::Sent { nodes } => Ok(nodes),
            other => Err(failure(other)),
        }
    }

    /// The nodes that hold `identity` (empty when none does).
    pub async fn id_who(&self, identity: &str, timeout: Duration) -> Result<Vec<NodeInfo>, Error> {
        let r = self
            .id_op(|id| ClientPacket::IdWho {
                id,
                identity: identity.to_owned(),
                timeout_ms: millis(timeout),
            })
            .await?;
        match r {
            IdResult::Holders(list) => Ok(list),
            IdResult::Unknown => Ok(Vec::new()),
            other => Err(failure(other)),
        }
    }
}

fn failure(r: IdResult) -> Error {
    match r {
        IdResult::Unknown => Error::UnknownIdentity,
        IdResult::TimedOut => Error::Timeout,
        IdResult::Failed(reason) => Error::Store(reason),
        other => Error::Store(format!("unexpected answer {other:?}")),
    }
}
