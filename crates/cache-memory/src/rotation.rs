//! In-process rotation state: one atomic round-robin counter per config, and the cooldown and
//! failure of each key that has any.
//!
//! Counters are drawn under a shard read lock with one `fetch_add`, so concurrent selections never
//! wait for each other. Key health is stored only for keys that are cooling down or failed; a
//! cooldown is compared with the clock on every read, so it ends by itself with no sweeper.
//! Expired cooldowns are swept out of a shard when the shard has doubled in size since its last
//! sweep, which keeps memory proportional to the keys that are really out of rotation.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use domain::{ApiKeyId, KeyHealth, ProxyConfigId};

use crate::sharded::ShardedMap;

/// A shard is swept no earlier than at this many entries.
const MIN_SWEEP_AT: usize = 64;

/// What is known about one key that is out of rotation, or was recently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyMark {
    failed: bool,
    cooling_until: Option<DateTime<Utc>>,
}

impl KeyMark {
    fn health(self, now: DateTime<Utc>) -> KeyHealth {
        if self.failed {
            return KeyHealth::Failed;
        }
        match self.cooling_until {
            Some(until) if until > now => KeyHealth::Cooling { until },
            _ => KeyHealth::Ok,
        }
    }

    /// Whether the mark still means anything at `now`.
    fn is_live(self, now: DateTime<Utc>) -> bool {
        self.failed || self.cooling_until.is_some_and(|until| until > now)
    }
}

/// Counters and key marks.
#[derive(Debug)]
pub(crate) struct RotationTable {
    counters: ShardedMap<ProxyConfigId, AtomicU64>,
    marks: ShardedMap<ApiKeyId, KeyMark>,
}

impl Default for RotationTable {
    fn default() -> Self {
        RotationTable {
            // Counters are never stale (one per config), so their shards are never swept.
            counters: ShardedMap::new(usize::MAX),
            marks: ShardedMap::new(MIN_SWEEP_AT),
        }
    }
}

impl RotationTable {
    /// Draws the config's next counter value (starting at 0).
    pub(crate) fn next_counter(&self, config: ProxyConfigId) -> u64 {
        if let Some(counter) = self.counters.read(&config).map.get(&config) {
            return counter.fetch_add(1, Ordering::Relaxed);
        }
        self.counters
            .write(&config)
            .map
            .entry(config)
            .or_insert_with(|| AtomicU64::new(0))
            .fetch_add(1, Ordering::Relaxed)
    }

    /// The health of one key at `now`.
    pub(crate) fn health(&self, key: ApiKeyId, now: DateTime<Utc>) -> KeyHealth {
        self.marks
            .read(&key)
            .map
            .get(&key)
            .map_or(KeyHealth::Ok, |mark| mark.health(now))
    }

    /// Extends the key's cooldown to `until` unless it already lasts longer; returns the
    /// cooldown in force afterwards.
    pub(crate) fn cool_down(
        &self,
        key: ApiKeyId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        self.update(key, now, |mark| {
            let current = mark.cooling_until.filter(|&current| current > now);
            let effective = current.map_or(until, |current| current.max(until));
            mark.cooling_until = Some(effective);
            effective
        })
    }

    /// Marks the key failed.
    pub(crate) fn mark_failed(&self, key: ApiKeyId, now: DateTime<Utc>) {
        self.update(key, now, |mark| mark.failed = true);
    }

    /// Clears every mark of the key.
    pub(crate) fn clear(&self, key: ApiKeyId) {
        self.marks.write(&key).map.remove(&key);
    }

    /// Applies `change` to the key's mark under its shard's write lock, sweeping the shard first
    /// when it has grown enough since its last sweep.
    fn update<T>(
        &self,
        key: ApiKeyId,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut KeyMark) -> T,
    ) -> T {
        let mut shard = self.marks.write(&key);
        if shard.map.len() >= shard.sweep_at {
            shard.map.retain(|_, mark| mark.is_live(now));
            shard.sweep_at = (shard.map.len() * 2).max(MIN_SWEEP_AT);
        }
        let mark = shard.map.entry(key).or_insert(KeyMark {
            failed: false,
            cooling_until: None,
        });
        change(mark)
    }

    /// Drops every mark that no longer means anything at `now`; returns how many remain.
    pub(crate) fn sweep(&self, now: DateTime<Utc>) -> usize {
        let mut remaining = 0;
        self.marks.for_each_shard(|shard| {
            shard.map.retain(|_, mark| mark.is_live(now));
            shard.sweep_at = (shard.map.len() * 2).max(MIN_SWEEP_AT);
            remaining += shard.map.len();
        });
        remaining
    }

    /// Number of keys with a mark, stale ones included.
    pub(crate) fn marked_keys(&self) -> usize {
        self.marks.len()
    }

    /// Number of configs with a counter.
    pub(crate) fn counters(&self) -> usize {
        self.counters.len()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn a_cooldown_only_ever_extends_while_it_lasts() {
        let table = RotationTable::default();
        let now = Utc::now();
        let key = ApiKeyId(1);
        let long = now + TimeDelta::seconds(60);
        assert_eq!(table.cool_down(key, long, now), long);
        assert_eq!(table.cool_down(key, now + TimeDelta::seconds(5), now), long);
        let later = now + TimeDelta::seconds(120);
        assert_eq!(
            table.cool_down(key, now + TimeDelta::seconds(5), later),
            now + TimeDelta::seconds(5),
            "an ended cooldown does not hold a new one back"
        );
    }

    #[test]
    fn failure_outranks_a_cooldown_and_clear_resets_both() {
        let table = RotationTable::default();
        let now = Utc::now();
        let key = ApiKeyId(2);
        table.cool_down(key, now + TimeDelta::seconds(60), now);
        table.mark_failed(key, now);
        assert_eq!(table.health(key, now), KeyHealth::Failed);
        table.clear(key);
        assert_eq!(table.health(key, now), KeyHealth::Ok);
    }

    #[test]
    fn growing_shards_sweep_ended_cooldowns() {
        let table = RotationTable::default();
        let start = Utc::now();
        for round in 0..10i64 {
            let now = start + TimeDelta::seconds(round * 10);
            for i in 0..10_000 {
                let key = ApiKeyId(round * 10_000 + i);
                table.cool_down(key, now + TimeDelta::seconds(1), now);
            }
        }
        assert!(
            table.marked_keys() <= 2 * 10_000 + 64 * MIN_SWEEP_AT,
            "stale marks are swept as shards grow: {}",
            table.marked_keys()
        );
        assert_eq!(table.sweep(start + TimeDelta::days(1)), 0);
    }

    #[test]
    fn counters_start_at_zero_per_config() {
        let table = RotationTable::default();
        assert_eq!(table.next_counter(ProxyConfigId(1)), 0);
        assert_eq!(table.next_counter(ProxyConfigId(1)), 1);
        assert_eq!(table.next_counter(ProxyConfigId(2)), 0);
        assert_eq!(table.counters(), 2);
    }
}
