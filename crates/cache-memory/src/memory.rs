//! [`MemoryCache`]: the lightweight edition's rotation state, usage counters and config events,
//! all in this process.
//!
//! Nothing here does I/O or holds a lock across an await; every port call completes on its first
//! poll. State lives only as long as the process, which is what a single instance needs: a
//! restart starts every counter at 0 and every key in rotation (the store keeps failed health
//! durably and the app restores it).
//!
//! The health version `draw` answers is one atomic, bumped after every health write: reading it
//! costs the same whatever the pool's size, which is what lets `domain::Rotator::plan` keep a
//! config's usable keys between requests.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{
    ApiKeyId, ChangeStream, Clock, ConfigChange, ConfigEvents, ConfigNotice, Draw, HealthRead,
    KeyHealth, ProxyConfigId, Result, RotationState, SystemClock, Turn, UsageCounters, UsageDelta,
    UsageEvent,
};

use crate::{
    events::{DEFAULT_NOTICE_CAPACITY, NoticeBus},
    rotation::RotationTable,
    usage::UsageAggregator,
};

/// How a [`MemoryCache`] is built.
#[derive(Clone)]
pub struct MemoryCacheOptions {
    /// The clock cooldowns are compared with.
    pub clock: Arc<dyn Clock>,
    /// How many config notices a subscriber may fall behind before it gets a
    /// [`ConfigNotice::Resync`].
    pub notice_capacity: usize,
}

impl Default for MemoryCacheOptions {
    fn default() -> Self {
        MemoryCacheOptions {
            clock: Arc::new(SystemClock),
            notice_capacity: DEFAULT_NOTICE_CAPACITY,
        }
    }
}

impl fmt::Debug for MemoryCacheOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCacheOptions")
            .field("notice_capacity", &self.notice_capacity)
            .finish_non_exhaustive()
    }
}

/// In-process [`RotationState`], [`UsageCounters`] and [`ConfigEvents`].
///
/// Share one instance (in an `Arc`) between the three ports. The counters and key health are
/// sharded maps whose hot-path operations take one shard read lock and touch atomics, so
/// concurrent requests never queue behind one global lock.
pub struct MemoryCache {
    rotation: RotationTable,
    /// The health version: bumped after every health write, so a selection that reads it before
    /// the keys' health sees every change up to it (see [`RotationState::draw`]).
    health_version: AtomicU64,
    usage: UsageAggregator,
    notices: NoticeBus,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new(MemoryCacheOptions::default())
    }
}

impl fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCache")
            .field("counters", &self.rotation.counters())
            .field("marked_keys", &self.rotation.marked_keys())
            .field("pending_usage_keys", &self.usage.pending_keys())
            .field("subscribers", &self.notices.subscribers())
            .finish_non_exhaustive()
    }
}

impl MemoryCache {
    /// An empty cache.
    pub fn new(options: MemoryCacheOptions) -> Self {
        MemoryCache {
            rotation: RotationTable::default(),
            health_version: AtomicU64::new(0),
            usage: UsageAggregator::new(),
            notices: NoticeBus::new(options.notice_capacity),
            clock: options.clock,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn health_version(&self) -> u64 {
        // Acquire pairs with the Release of `changed`: whoever reads a version also sees the
        // writes made before it was published.
        self.health_version.load(Ordering::Acquire)
    }

    /// Publishes a new health version, after the change it stands for.
    fn changed(&self) {
        self.health_version.fetch_add(1, Ordering::Release);
    }

    fn states(&self, keys: &[ApiKeyId]) -> Vec<KeyHealth> {
        let now = self.now();
        keys.iter()
            .map(|&key| self.rotation.health(key, now))
            .collect()
    }

    /// Drops the marks of keys whose cooldown has ended; returns how many keys remain marked.
    ///
    /// Never needed for correctness (an ended cooldown reads `Ok`, and shards sweep themselves as
    /// they grow); an app may call it now and then to release memory sooner.
    pub fn purge_expired(&self) -> usize {
        self.rotation.sweep(self.now())
    }

    /// Number of keys currently holding a cooldown or failure mark, ended cooldowns not yet
    /// swept included.
    pub fn marked_keys(&self) -> usize {
        self.rotation.marked_keys()
    }

    /// Number of configs with a round-robin counter.
    pub fn counters(&self) -> usize {
        self.rotation.counters()
    }

    /// Number of keys with usage waiting for the next flush.
    pub fn pending_usage_keys(&self) -> usize {
        self.usage.pending_keys()
    }
}

#[async_trait]
impl RotationState for MemoryCache {
    async fn next_turn(&self, config: ProxyConfigId, keys: &[ApiKeyId]) -> Result<Turn> {
        Ok(Turn {
            counter: self.rotation.next_counter(config),
            states: self.states(keys),
        })
    }

    async fn draw(&self, config: ProxyConfigId) -> Result<Draw> {
        Ok(Draw {
            counter: self.rotation.next_counter(config),
            health_version: self.health_version(),
        })
    }

    async fn read_health(&self, keys: &[ApiKeyId]) -> Result<HealthRead> {
        let version = self.health_version();
        Ok(HealthRead {
            version,
            states: self.states(keys),
        })
    }

    async fn key_states(&self, keys: &[ApiKeyId]) -> Result<Vec<KeyHealth>> {
        Ok(self.states(keys))
    }

    async fn cool_down(&self, key: ApiKeyId, until: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let effective = self.rotation.cool_down(key, until, self.now());
        self.changed();
        Ok(effective)
    }

    async fn mark_failed(&self, key: ApiKeyId) -> Result<()> {
        self.rotation.mark_failed(key, self.now());
        self.changed();
        Ok(())
    }

    async fn mark_ok(&self, key: ApiKeyId) -> Result<()> {
        self.rotation.clear(key);
        self.changed();
        Ok(())
    }

    async fn forget(&self, keys: &[ApiKeyId]) -> Result<()> {
        for &key in keys {
            self.rotation.clear(key);
        }
        self.changed();
        self.usage.forget(keys);
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl UsageCounters for MemoryCache {
    fn record(&self, key: ApiKeyId, event: UsageEvent) {
        self.usage.record(key, &event);
    }

    async fn flush(&self) -> Result<Vec<UsageDelta>> {
        Ok(self.usage.take())
    }
}

#[async_trait]
impl ConfigEvents for MemoryCache {
    async fn publish(&self, change: ConfigChange) -> Result<()> {
        self.notices.send(ConfigNotice::Changed(change));
        Ok(())
    }

    async fn subscribe(&self) -> Result<ChangeStream> {
        Ok(self.notices.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use domain::ManualClock;
    use futures_util::FutureExt;

    use super::*;

    fn manual() -> (Arc<ManualClock>, MemoryCache) {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let cache = MemoryCache::new(MemoryCacheOptions {
            clock: clock.clone(),
            ..MemoryCacheOptions::default()
        });
        (clock, cache)
    }

    #[test]
    fn every_call_completes_on_its_first_poll() {
        let cache = MemoryCache::default();
        let turn = cache
            .next_turn(ProxyConfigId(1), &[ApiKeyId(1)])
            .now_or_never();
        assert!(matches!(turn, Some(Ok(Turn { counter: 0, .. }))));
    }

    #[tokio::test]
    async fn cooldowns_end_with_the_clock_and_are_purged() {
        let (clock, cache) = manual();
        let key = ApiKeyId(7);
        let until = clock.now() + TimeDelta::seconds(30);
        assert_eq!(cache.cool_down(key, until).await.ok(), Some(until));
        assert_eq!(
            cache.key_states(&[key]).await.ok(),
            Some(vec![KeyHealth::Cooling { until }])
        );
        clock.advance(TimeDelta::seconds(31));
        assert_eq!(
            cache.key_states(&[key]).await.ok(),
            Some(vec![KeyHealth::Ok])
        );
        assert_eq!(cache.marked_keys(), 1, "reads do not need to purge");
        assert_eq!(cache.purge_expired(), 0);
    }

    #[tokio::test]
    async fn forget_drops_marks_and_pending_usage() {
        let (clock, cache) = manual();
        let key = ApiKeyId(9);
        cache.mark_failed(key).await.ok();
        cache.record(
            key,
            UsageEvent {
                status: Some(401),
                failed: true,
                at: clock.now(),
            },
        );
        cache.forget(&[key]).await.ok();
        assert_eq!((cache.marked_keys(), cache.pending_usage_keys()), (0, 0));
        assert_eq!(cache.flush().await.ok(), Some(Vec::new()));
    }
}
