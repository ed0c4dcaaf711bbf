//! Topic subscriptions: the handler trait and its pool job.

use bytes::Bytes;

use crate::pool::Job;

/// Receives the events of one subscribed topic (see
/// [`Connection::subscribe`](crate::Connection::subscribe)).
///
/// Runs on a runtime worker thread, at most [`Options::event_handlers`](crate::Options) at once
/// per subscription: keep it short or hand the work to a task. Any `Fn(Bytes)` closure is a
/// handler:
///
/// ```no_run
/// # async fn demo(conn: petal_client::Connection) -> Result<(), petal_client::Error> {
/// conn.subscribe("news", |event: bytes::Bytes| println!("{} bytes of news", event.len())).await?;
/// # Ok(()) }
/// ```
pub trait TopicHandler: Send + Sync + 'static {
    /// Handles one event published to the topic.
    fn handle_event(&self, event: Bytes);
}

impl<F: Fn(Bytes) + Send + Sync + 'static> TopicHandler for F {
    fn handle_event(&self, event: Bytes) {
        self(event);
    }
}

/// Runs a topic handler in a pool.
pub(crate) struct EventJob<T>(pub(crate) T);

impl<T: TopicHandler> Job for EventJob<T> {
    type Item = Bytes;

    fn size(item: &Bytes) -> usize {
        item.len()
    }

    async fn run(&self, item: Bytes) {
        self.0.handle_event(item);
    }
}
