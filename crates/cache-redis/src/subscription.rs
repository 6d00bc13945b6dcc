//! The config-change subscription: one pub/sub connection per cache, whose messages are fanned
//! out to this process's subscribers, and which subscribes again after every reconnect.
//!
//! After a reconnect the channel is subscribed again *before* a [`ConfigNotice::Resync`] is sent,
//! so every change published after the resync is delivered, and every change missed while the
//! connection was down is covered by the resync (subscribers drop all their snapshots).

use std::time::Duration;

use cache_memory::NoticeBus;
use domain::{ConfigChange, ConfigNotice};
use fred::{
    clients::SubscriberClient,
    prelude::{PubsubInterface, Server, Value},
    types::Message,
};
use tokio::sync::broadcast::{Receiver, error::RecvError};

/// First and longest pause between attempts to subscribe again.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Fans out the messages of `channel` as notices until the client is dropped.
pub(crate) async fn forward_messages(
    mut messages: Receiver<Message>,
    channel: String,
    notices: NoticeBus,
) {
    loop {
        match messages.recv().await {
            Ok(message) if &*message.channel == channel.as_str() => {
                notices.send(notice_from(&message.value));
            }
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "config-change messages were dropped; resyncing");
                notices.send(ConfigNotice::Resync);
            }
            Err(RecvError::Closed) => break,
        }
    }
}

/// The notice a message carries; a resync when it cannot be read, so nothing stale survives.
fn notice_from(value: &Value) -> ConfigNotice {
    let change = value
        .as_bytes()
        .and_then(|bytes| serde_json::from_slice::<ConfigChange>(bytes).ok());
    match change {
        Some(change) => ConfigNotice::Changed(change),
        None => {
            tracing::warn!("unreadable config-change message; resyncing");
            ConfigNotice::Resync
        }
    }
}

/// Subscribes to `channel` again after every reconnect of `subscriber`, then sends a resync.
pub(crate) async fn resubscribe_on_reconnect(
    subscriber: SubscriberClient,
    mut reconnects: Receiver<Server>,
    channel: String,
    notices: NoticeBus,
) {
    loop {
        match reconnects.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break,
        }
        let mut delay = RETRY_MIN;
        while let Err(error) = subscriber.subscribe(channel.as_str()).await {
            tracing::warn!(kind = ?error.kind(), "cannot subscribe to config changes yet");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_MAX);
        }
        tracing::info!("redis subscription restored; resyncing config snapshots");
        notices.send(ConfigNotice::Resync);
    }
}

#[cfg(test)]
mod tests {
    use domain::ProxyConfigId;

    use super::*;

    #[test]
    fn messages_carry_config_changes_as_json() {
        let change = ConfigChange {
            config_id: ProxyConfigId(4),
            slugs: vec!["openai".parse().unwrap_or_else(|_| unreachable!())],
        };
        let json = serde_json::to_string(&change).unwrap_or_default();
        assert_eq!(
            notice_from(&Value::from(json.as_str())),
            ConfigNotice::Changed(change)
        );
        assert_eq!(notice_from(&Value::from("not json")), ConfigNotice::Resync);
    }
}
