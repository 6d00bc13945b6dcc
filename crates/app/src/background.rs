//! Background work of a running server: flushing usage counters to the store in batches,
//! dropping cached snapshots and rebuilding the client-key directory when a config or client
//! key changes (on any instance), and seeding the live key
//! health from the store at start-up.

use std::{sync::Arc, time::Duration};

use cache_memory::SnapshotCache;
use chrono::Utc;
use domain::{
    ConfigEvents, ConfigNotice, KeyHealth, KeyRange, ProxyStore, RotationState, UsageCounters,
    UsageDelta,
};
use futures_util::StreamExt;

/// Moves aggregated usage from the counters to the store; deltas a failed write leaves behind
/// are merged into the next flush, so nothing is lost while the database is down.
pub struct UsageFlusher {
    usage: Arc<dyn UsageCounters>,
    store: Arc<dyn ProxyStore>,
    pending: tokio::sync::Mutex<Vec<UsageDelta>>,
}

impl UsageFlusher {
    /// A flusher from these counters to this store.
    pub fn new(usage: Arc<dyn UsageCounters>, store: Arc<dyn ProxyStore>) -> Self {
        UsageFlusher {
            usage,
            store,
            pending: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// One flush: one batched write to the store.
    pub async fn flush(&self) {
        let mut pending = self.pending.lock().await;
        match self.usage.flush().await {
            Ok(fresh) => merge(&mut pending, fresh),
            Err(error) => tracing::warn!(%error, "usage counters could not be collected"),
        }
        if pending.is_empty() {
            return;
        }
        match self.store.apply_usage(&pending).await {
            Ok(()) => pending.clear(),
            Err(error) => {
                tracing::warn!(%error, keys = pending.len(), "usage could not be saved; retrying at the next flush")
            }
        }
    }

    /// Flushes every `interval` until the task is dropped.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.flush().await;
        }
    }
}

/// Adds `fresh` to what a failed write left in `pending`, one delta per key.
fn merge(pending: &mut Vec<UsageDelta>, fresh: Vec<UsageDelta>) {
    let merged = UsageDelta::merged_by_key(pending.drain(..).chain(fresh));
    *pending = merged;
}

/// Drops cached snapshots and rebuilds the client-key directory on every change notice, until
/// the stream ends; resubscribes with a pause when the subscription cannot be made.
pub async fn follow_changes(
    events: Arc<dyn ConfigEvents>,
    snapshots: Arc<SnapshotCache>,
    client_keys: Arc<crate::client_keys::ClientKeys>,
) {
    loop {
        match events.subscribe().await {
            Ok(mut notices) => {
                // Changes made while we were not subscribed are unknown.
                snapshots.clear();
                refresh_client_keys(&client_keys);
                while let Some(notice) = notices.next().await {
                    // Client-key writes publish a notice without slugs; the directory is one
                    // small query, so every notice rebuilds it, off this loop: snapshots are
                    // invalidated at once even while the database is slow or down.
                    refresh_client_keys(&client_keys);
                    match notice {
                        ConfigNotice::Changed(change) if !change.slugs.is_empty() => {
                            change
                                .slugs
                                .iter()
                                .for_each(|slug| snapshots.invalidate(slug));
                        }
                        ConfigNotice::Changed(_) | ConfigNotice::Resync => snapshots.clear(),
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot subscribe to config changes; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Rebuilds the client-key directory in its own task (rebuilds run one at a time, newest last).
fn refresh_client_keys(client_keys: &Arc<crate::client_keys::ClientKeys>) {
    let client_keys = client_keys.clone();
    tokio::spawn(async move {
        if let Err(error) = client_keys.refresh().await {
            tracing::warn!(%error, "client keys could not be reloaded; the previous directory stays until the next notice");
        }
    });
}

/// Keys read per store call when every key is visited: memory stays bounded by a page, whatever
/// the pools hold.
const SEED_PAGE: usize = domain::key_page::MAX_PAGE_LIMIT;

/// Copies the stored health of every key into the live rotation state, so failed keys stay out
/// of rotation and cooldowns stay in force across restarts. Pools are read a page at a time.
pub async fn seed_health(
    store: &dyn ProxyStore,
    rotation: &dyn RotationState,
) -> Result<usize, domain::Error> {
    let now = Utc::now();
    let mut seeded = 0;
    for config in store.list_configs().await? {
        let mut range = KeyRange {
            after: None,
            limit: SEED_PAGE,
            is_active: None,
        };
        loop {
            let keys = store.list_key_range(config.id, range).await?;
            for key in &keys {
                match key.health.at(now) {
                    KeyHealth::Failed => rotation.mark_failed(key.id).await?,
                    KeyHealth::Cooling { until } => {
                        rotation.cool_down(key.id, until).await?;
                    }
                    KeyHealth::Ok => continue,
                }
                seeded += 1;
            }
            match keys.last() {
                Some(last) if keys.len() == SEED_PAGE => range.after = Some(last.id),
                _ => break,
            }
        }
    }
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use domain::ApiKeyId;

    use super::*;

    fn delta(key: i64, requests: u64) -> UsageDelta {
        UsageDelta {
            requests,
            ..UsageDelta::new(ApiKeyId(key))
        }
    }

    fn stored_key(id: i64, health: KeyHealth) -> domain::ApiKey {
        domain::ApiKey {
            id: ApiKeyId(id),
            proxy_config_id: domain::ProxyConfigId(1),
            key_value: domain::KeySecret::parse("sk-seed-key-000").unwrap(),
            is_active: true,
            health,
            usage: domain::KeyUsage::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn seeding_reads_a_large_pool_a_page_at_a_time() {
        let config = domain::ProxyConfigInput {
            name: Some("Pool".into()),
            slug: Some("pool".into()),
            config_type: Some("LLM".into()),
            target_base_url: Some("https://api.example.com/v1".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let until = Utc::now() + chrono::TimeDelta::minutes(5);
        let mut store = domain::ports::MockProxyStore::new();
        store.expect_list_configs().returning(move || {
            Ok(vec![domain::ProxyConfig::from_spec(
                domain::ProxyConfigId(1),
                config.clone(),
                Utc::now(),
                Utc::now(),
            )])
        });
        // 1 000 keys, then 500: a failed key on the first page, a cooling one on the second.
        store
            .expect_list_key_range()
            .times(2)
            .returning(move |_, range| {
                assert_eq!(range.limit, SEED_PAGE, "never more than a page");
                let ids = match range.after {
                    None => 1..=1_000,
                    Some(ApiKeyId(1_000)) => 1_001..=1_500,
                    Some(other) => panic!("no page after {other:?}"),
                };
                Ok(ids
                    .map(|id| match id {
                        3 => stored_key(id, KeyHealth::Failed),
                        1_200 => stored_key(id, KeyHealth::Cooling { until }),
                        _ => stored_key(id, KeyHealth::Ok),
                    })
                    .collect())
            });
        store.expect_list_keys().never();
        let mut rotation = domain::ports::MockRotationState::new();
        rotation
            .expect_mark_failed()
            .withf(|id| *id == ApiKeyId(3))
            .times(1)
            .returning(|_| Ok(()));
        rotation
            .expect_cool_down()
            .withf(move |id, end| *id == ApiKeyId(1_200) && *end == until)
            .times(1)
            .returning(|_, end| Ok(end));

        assert_eq!(seed_health(&store, &rotation).await.unwrap(), 2);
    }

    #[test]
    fn fresh_usage_adds_to_what_a_failed_write_left_one_delta_per_key() {
        let mut pending = vec![delta(1, 2), delta(2, 5)];
        merge(&mut pending, vec![delta(2, 1), delta(3, 4), delta(3, 1)]);
        let requests: Vec<(i64, u64)> = pending.iter().map(|d| (d.key_id.0, d.requests)).collect();
        assert_eq!(requests, [(1, 2), (2, 6), (3, 5)]);
    }

    #[test]
    fn a_flush_of_every_key_of_a_large_pool_keeps_each_key_once() {
        let mut pending = Vec::new();
        merge(
            &mut pending,
            (1..=100_000).map(|key| delta(key, 1)).collect(),
        );
        merge(
            &mut pending,
            (1..=100_000).rev().map(|key| delta(key, 2)).collect(),
        );
        assert_eq!(pending.len(), 100_000);
        assert!(pending.iter().all(|d| d.requests == 3));
    }
}
