//! In-process fan-out of config notices to every subscriber, over a tokio broadcast channel.
//!
//! A subscriber that falls so far behind that the channel overwrote notices it had not read gets
//! a [`ConfigNotice::Resync`] in their place, so it drops every cached snapshot instead of
//! silently keeping a stale one. [`NoticeBus`] is public so the Redis adapter fans out the notices
//! it receives the same way.

use domain::{ChangeStream, ConfigNotice};
use futures_util::stream;
use tokio::sync::broadcast::{self, error::RecvError};

/// Default number of notices a subscriber may fall behind before it gets a resync.
pub const DEFAULT_NOTICE_CAPACITY: usize = 1024;

/// Sends config notices to every current subscriber of this process.
#[derive(Debug, Clone)]
pub struct NoticeBus {
    sender: broadcast::Sender<ConfigNotice>,
}

impl Default for NoticeBus {
    fn default() -> Self {
        Self::new(DEFAULT_NOTICE_CAPACITY)
    }
}

impl NoticeBus {
    /// A bus on which a subscriber may fall `capacity` notices behind (at least 1) before it gets
    /// a resync.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        NoticeBus { sender }
    }

    /// Sends a notice to every current subscriber; with none, the notice is dropped.
    pub fn send(&self, notice: ConfigNotice) {
        // An error only means nobody listens right now, which is fine.
        let _ = self.sender.send(notice);
    }

    /// A stream of every notice sent after this call, in order, with a resync in place of
    /// notices missed by falling behind. It ends only when the bus is dropped.
    pub fn subscribe(&self) -> ChangeStream {
        let receiver = self.sender.subscribe();
        Box::pin(stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(notice) => Some((notice, receiver)),
                Err(RecvError::Lagged(_)) => Some((ConfigNotice::Resync, receiver)),
                Err(RecvError::Closed) => None,
            }
        }))
    }

    /// Number of live subscribers.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use domain::{ConfigChange, ProxyConfigId};
    use futures_util::StreamExt;

    use super::*;

    fn change(id: i64) -> ConfigNotice {
        ConfigNotice::Changed(ConfigChange {
            config_id: ProxyConfigId(id),
            slugs: Vec::new(),
        })
    }

    #[tokio::test]
    async fn a_lagging_subscriber_gets_a_resync_then_the_rest() {
        let bus = NoticeBus::new(2);
        let mut stream = bus.subscribe();
        for id in 0..5 {
            bus.send(change(id));
        }
        assert_eq!(stream.next().await, Some(ConfigNotice::Resync));
        assert_eq!(stream.next().await, Some(change(3)));
        assert_eq!(stream.next().await, Some(change(4)));
    }

    #[tokio::test]
    async fn the_stream_ends_with_the_bus() {
        let bus = NoticeBus::new(4);
        let mut stream = bus.subscribe();
        bus.send(change(1));
        drop(bus);
        assert_eq!(stream.next().await, Some(change(1)));
        assert_eq!(stream.next().await, None);
    }
}
