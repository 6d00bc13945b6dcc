//! The subscription: one pub/sub connection per cache, whose config-change messages are fanned
//! out to this process's subscribers and, in block mode, whose health-change messages are applied
//! to the local health mirror; it subscribes again after every reconnect.
//!
//! After a reconnect the channels are subscribed again *before* a [`ConfigNotice::Resync`] is
//! sent and the mirror is attached again (under a new epoch), so every message published after
//! that is delivered, and every one missed while the connection was down is covered by the resync
//! (subscribers drop all their snapshots; the mirror reads every key again before trusting it).
//! From the moment the connection is seen to fail until then, the mirror is detached, so
//! selections read key health from Redis rather than from a copy that may be missing changes.

use std::{sync::Arc, time::Duration};

use cache_memory::NoticeBus;
use domain::{ConfigChange, ConfigNotice};
use fred::{
    clients::SubscriberClient,
    error::Error as RedisError,
    interfaces::ClientLike,
    prelude::{PubsubInterface, Server, Value},
    types::{ClusterHash, Message, config::Options},
};
use tokio::sync::broadcast::{Receiver, error::RecvError};

use crate::mirror::{HealthMirror, HealthNotice};

/// First and longest pause between attempts to subscribe again.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Where the subscription's messages go.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    /// The config-change channel.
    pub(crate) changes: String,
    /// This process's config-change subscribers.
    pub(crate) notices: NoticeBus,
    /// In block mode: the health-change channel and the mirror it keeps.
    pub(crate) health: Option<(String, Arc<HealthMirror>)>,
}

impl Routes {
    /// Every channel to subscribe to.
    pub(crate) fn channels(&self) -> Vec<String> {
        let health = self.health.iter().map(|(channel, _)| channel.clone());
        std::iter::once(self.changes.clone())
            .chain(health)
            .collect()
    }

    /// Messages may have been missed while the connection stayed up.
    fn resync(&self) {
        self.notices.send(ConfigNotice::Resync);
        if let Some((_, mirror)) = &self.health {
            mirror.invalidate();
        }
    }

    fn mirror(&self) -> Option<&HealthMirror> {
        self.health.as_ref().map(|(_, mirror)| mirror.as_ref())
    }
}

/// Subscribes to `channels` and returns once Redis has registered the subscription.
///
/// The client counts `SUBSCRIBE` as done when it is written (its confirmations arrive out of
/// band and are dropped), so a change published right after it returned could reach Redis
/// first and be missed: seen on a loaded machine over TLS, where `PUBSUB NUMSUB` still said 0
/// after `subscribe` returned. A `PING` sent the same way (on a cluster: to the node the client
/// sends its subscriptions to) is answered in order on the same connection, so its answer
/// proves the subscription is in place.
pub(crate) async fn subscribe_confirmed(
    subscriber: &SubscriberClient,
    channels: Vec<String>,
) -> Result<(), RedisError> {
    subscriber.subscribe(channels).await?;
    let same_connection = Options {
        cluster_hash: Some(ClusterHash::Custom(fred::util::redis_keyslot(
            subscriber.id().as_bytes(),
        ))),
        ..Options::default()
    };
    let _pong: Value = subscriber.with_options(&same_connection).ping(None).await?;
    Ok(())
}

/// Routes the messages of the subscribed channels until the client is dropped.
pub(crate) async fn forward_messages(mut messages: Receiver<Message>, routes: Routes) {
    loop {
        match messages.recv().await {
            Ok(message) if &*message.channel == routes.changes.as_str() => {
                routes.notices.send(notice_from(&message.value));
            }
            Ok(message) => match &routes.health {
                Some((channel, mirror)) if &*message.channel == channel.as_str() => {
                    match health_notice_from(&message.value) {
                        Some(notice) => mirror.apply(&notice),
                        None => {
                            tracing::warn!("unreadable health-change message; re-reading health");
                            mirror.invalidate();
                        }
                    }
                }
                _ => {}
            },
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "pub/sub messages were dropped; resyncing");
                routes.resync();
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

/// The health change a message carries, if it is one.
fn health_notice_from(value: &Value) -> Option<HealthNotice> {
    value
        .as_bytes()
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(HealthNotice::parse)
}

/// What happened to the pub/sub connection.
enum Event {
    /// It failed: messages are being missed.
    Lost,
    /// It is back (not yet subscribed).
    Reconnected,
    /// The client is gone.
    Closed,
}

/// Subscribes to every channel again after every reconnect of `subscriber`, then sends a resync
/// and attaches the mirror again; detaches the mirror whenever the connection fails.
pub(crate) async fn resubscribe_on_reconnect(
    subscriber: SubscriberClient,
    mut reconnects: Receiver<Server>,
    mut errors: Option<Receiver<(RedisError, Option<Server>)>>,
    routes: Routes,
) {
    let channels = routes.channels();
    loop {
        match next_event(&mut reconnects, &mut errors).await {
            Event::Lost => {
                if let Some(mirror) = routes.mirror() {
                    if mirror.is_attached() {
                        tracing::warn!("redis pub/sub connection lost; reading health from redis");
                    }
                    mirror.detach();
                }
                continue;
            }
            Event::Reconnected => {}
            Event::Closed => break,
        }
        let mut delay = RETRY_MIN;
        while let Err(error) = subscribe_confirmed(&subscriber, channels.clone()).await {
            tracing::warn!(kind = ?error.kind(), "cannot subscribe to config changes yet");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_MAX);
        }
        tracing::info!("redis subscription restored; resyncing config snapshots");
        if let Some(mirror) = routes.mirror() {
            mirror.attach();
        }
        routes.notices.send(ConfigNotice::Resync);
    }
}

/// The next connection event. A failure is always reported before the reconnect that follows
/// it (the client reports it first, and it is looked at first), so the mirror is never left
/// detached after the subscription is back.
async fn next_event(
    reconnects: &mut Receiver<Server>,
    errors: &mut Option<Receiver<(RedisError, Option<Server>)>>,
) -> Event {
    loop {
        let Some(error_events) = errors.as_mut() else {
            return match reconnects.recv().await {
                Ok(_) | Err(RecvError::Lagged(_)) => Event::Reconnected,
                Err(RecvError::Closed) => Event::Closed,
            };
        };
        tokio::select! {
            biased;
            error = error_events.recv() => match error {
                Ok(_) | Err(RecvError::Lagged(_)) => return Event::Lost,
                Err(RecvError::Closed) => *errors = None,
            },
            reconnect = reconnects.recv() => return match reconnect {
                Ok(_) | Err(RecvError::Lagged(_)) => Event::Reconnected,
                Err(RecvError::Closed) => Event::Closed,
            },
        }
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

    #[test]
    fn health_messages_are_read_as_text() {
        assert_eq!(
            health_notice_from(&Value::from("failed 3 5")).map(|n| n.version),
            Some(3)
        );
        assert_eq!(health_notice_from(&Value::from("not a change")), None);
    }

    #[test]
    fn block_mode_subscribes_to_both_channels() {
        let mut routes = Routes {
            changes: "akr:config-changes".to_owned(),
            notices: NoticeBus::default(),
            health: None,
        };
        assert_eq!(routes.channels(), ["akr:config-changes"]);
        routes.health = Some((
            "akr:health-changes".to_owned(),
            Arc::new(HealthMirror::default()),
        ));
        assert_eq!(
            routes.channels(),
            ["akr:config-changes", "akr:health-changes"]
        );
    }
}
