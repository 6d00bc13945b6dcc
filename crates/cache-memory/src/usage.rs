//! Per-key usage aggregated in memory between flushes, with atomics on the hot path.
//!
//! Recording an attempt takes the key's shard read lock and bumps three atomics; only the first
//! attempt of a key after a flush takes the shard's write lock to add the key. A flush swaps each
//! shard's map for an empty one under the write lock (no attempt is split between two flushes, and
//! the memory of idle keys is released), then turns the cells into deltas outside any lock.
//! [`UsageAggregator`] is public so other cache adapters aggregate the same way before publishing.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use domain::{ApiKeyId, UsageDelta, UsageEvent};

use crate::sharded::ShardedMap;

/// Bits of the packed "latest attempt" word that hold the status code.
const STATUS_BITS: u32 = 10;
/// Largest status code that fits; HTTP codes have three digits.
const MAX_STATUS: u16 = 999;

/// One key's counters.
#[derive(Debug, Default)]
struct UsageCell {
    requests: AtomicU64,
    failures: AtomicU64,
    /// The latest attempt: `(microseconds since the epoch + 1) << 10 | (status + 1 or 0)`, so
    /// `fetch_max` keeps the latest one; 0 when there was none.
    latest: AtomicU64,
}

impl UsageCell {
    fn add(&self, requests: u64, failures: u64, latest: u64) {
        self.requests.fetch_add(requests, Ordering::Relaxed);
        if failures > 0 {
            self.failures.fetch_add(failures, Ordering::Relaxed);
        }
        self.latest.fetch_max(latest, Ordering::Relaxed);
    }

    fn into_delta(self, key_id: ApiKeyId) -> UsageDelta {
        let (last_used_at, last_status) = unpack_latest(self.latest.into_inner());
        UsageDelta {
            key_id,
            requests: self.requests.into_inner(),
            failures: self.failures.into_inner(),
            last_status,
            last_used_at,
        }
    }
}

fn pack_latest(at: Option<DateTime<Utc>>, status: Option<u16>) -> u64 {
    let Some(at) = at else { return 0 };
    // Clamped to 2^53 µs (year 2255) so the shift cannot overflow.
    let micros = u64::try_from(at.timestamp_micros())
        .unwrap_or(0)
        .min((1 << 53) - 1);
    let status = status.map_or(0, |s| u64::from(s.min(MAX_STATUS)) + 1);
    ((micros + 1) << STATUS_BITS) | status
}

fn unpack_latest(word: u64) -> (Option<DateTime<Utc>>, Option<u16>) {
    if word == 0 {
        return (None, None);
    }
    let micros = i64::try_from((word >> STATUS_BITS) - 1).unwrap_or(0);
    let status = u16::try_from(word & ((1 << STATUS_BITS) - 1)).unwrap_or(0);
    (
        DateTime::from_timestamp_micros(micros),
        status.checked_sub(1),
    )
}

/// Usage counters of many keys, aggregated lock-free per key until the next [`take`].
///
/// Timestamps keep microsecond precision; status codes above 999 are recorded as 999.
///
/// [`take`]: UsageAggregator::take
#[derive(Debug)]
pub struct UsageAggregator {
    cells: ShardedMap<ApiKeyId, UsageCell>,
}

impl Default for UsageAggregator {
    fn default() -> Self {
        UsageAggregator {
            cells: ShardedMap::new(usize::MAX),
        }
    }
}

impl UsageAggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one attempt; never blocks on other keys and does no I/O.
    pub fn record(&self, key: ApiKeyId, event: &UsageEvent) {
        self.add(
            key,
            1,
            u64::from(event.failed),
            pack_latest(Some(event.at), event.status),
        );
    }

    fn add(&self, key: ApiKeyId, requests: u64, failures: u64, latest: u64) {
        if let Some(cell) = self.cells.read(&key).map.get(&key) {
            cell.add(requests, failures, latest);
            return;
        }
        self.cells
            .write(&key)
            .map
            .entry(key)
            .or_default()
            .add(requests, failures, latest);
    }

    /// Takes everything recorded so far, one delta per key, in no particular order.
    pub fn take(&self) -> Vec<UsageDelta> {
        let mut taken = Vec::new();
        self.cells
            .for_each_shard(|shard| taken.push(std::mem::take(&mut shard.map)));
        taken
            .into_iter()
            .flatten()
            .map(|(key, cell)| cell.into_delta(key))
            .filter(|delta| delta.requests > 0)
            .collect()
    }

    /// Puts deltas back, merged with whatever was recorded since they were taken; for a flush
    /// that could not deliver them.
    pub fn restore(&self, deltas: &[UsageDelta]) {
        for delta in deltas {
            self.add(
                delta.key_id,
                delta.requests,
                delta.failures,
                pack_latest(delta.last_used_at, delta.last_status),
            );
        }
    }

    /// Drops whatever was recorded for these keys (deleted keys).
    pub fn forget(&self, keys: &[ApiKeyId]) {
        for key in keys {
            self.cells.write(key).map.remove(key);
        }
    }

    /// Number of keys with usage waiting for the next flush.
    pub fn pending_keys(&self) -> usize {
        self.cells.len()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn event(status: Option<u16>, failed: bool, at: DateTime<Utc>) -> UsageEvent {
        UsageEvent { status, failed, at }
    }

    #[test]
    fn latest_attempt_survives_packing() {
        let at = DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap_or_default();
        for status in [None, Some(0), Some(200), Some(429), Some(999)] {
            assert_eq!(
                unpack_latest(pack_latest(Some(at), status)),
                (Some(at), status)
            );
        }
        assert_eq!(unpack_latest(pack_latest(None, Some(200))), (None, None));
    }

    #[test]
    fn take_aggregates_per_key_and_empties() {
        let usage = UsageAggregator::new();
        // Whole microseconds: the precision kept.
        let now = DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap_or_default();
        usage.record(ApiKeyId(1), &event(Some(200), false, now));
        usage.record(ApiKeyId(1), &event(None, true, now + TimeDelta::seconds(1)));
        usage.record(ApiKeyId(2), &event(Some(401), true, now));
        let mut deltas = usage.take();
        deltas.sort_by_key(|d| d.key_id);
        assert_eq!(deltas.len(), 2);
        assert_eq!((deltas[0].requests, deltas[0].failures), (2, 1));
        assert_eq!(
            deltas[0].last_status, None,
            "the latest attempt had no status"
        );
        assert_eq!(deltas[0].last_used_at, Some(now + TimeDelta::seconds(1)));
        assert_eq!(deltas[1].last_status, Some(401));
        assert!(usage.take().is_empty());
        assert_eq!(usage.pending_keys(), 0, "a flush releases idle keys");
    }

    #[test]
    fn restore_merges_with_newer_usage() {
        let usage = UsageAggregator::new();
        let now = Utc::now();
        usage.record(ApiKeyId(1), &event(Some(500), true, now));
        let taken = usage.take();
        usage.record(
            ApiKeyId(1),
            &event(Some(200), false, now + TimeDelta::seconds(1)),
        );
        usage.restore(&taken);
        let deltas = usage.take();
        assert_eq!(deltas.len(), 1);
        assert_eq!((deltas[0].requests, deltas[0].failures), (2, 1));
        assert_eq!(deltas[0].last_status, Some(200), "the newer attempt wins");
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let usage = std::sync::Arc::new(UsageAggregator::new());
        let now = Utc::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let usage = usage.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        usage.record(ApiKeyId(i % 7), &event(Some(200), i % 2 == 0, now));
                    }
                })
            })
            .collect();
        let mut flushed = Vec::new();
        for _ in 0..20 {
            flushed.extend(usage.take());
        }
        for thread in threads {
            assert!(thread.join().is_ok(), "recording thread panicked");
        }
        flushed.extend(usage.take());
        let requests: u64 = flushed.iter().map(|d| d.requests).sum();
        let failures: u64 = flushed.iter().map(|d| d.failures).sum();
        assert_eq!((requests, failures), (40_000, 20_000));
    }
}
