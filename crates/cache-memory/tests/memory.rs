//! `MemoryCache` against the domain contract suites, plus its memory bounds at 100 000 keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cache_memory::{MemoryCache, MemoryCacheOptions};
use chrono::{TimeDelta, Utc};
use domain::{
    ApiKeyId, Clock, ConfigChange, ConfigEvents, ConfigNotice, ManualClock, ProxyConfigId,
    RotationState, UsageCounters, UsageEvent,
};
use futures_util::StreamExt;

const KEYS: i64 = 100_000;

#[tokio::test]
async fn memory_cache_meets_the_rotation_state_contract() {
    domain::contract::rotation_state(&MemoryCache::default()).await;
}

#[tokio::test]
async fn memory_cache_meets_the_usage_counters_contract() {
    domain::contract::usage_counters(&MemoryCache::default()).await;
}

#[tokio::test]
async fn memory_leases_meet_the_leases_contract() {
    domain::contract::leases(&cache_memory::MemoryLeases::default()).await;
}

#[tokio::test]
async fn memory_cache_meets_the_config_events_contract() {
    domain::contract::config_events(&MemoryCache::default()).await;
}

fn manual_cache() -> (Arc<ManualClock>, MemoryCache) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let cache = MemoryCache::new(MemoryCacheOptions {
        clock: clock.clone(),
        ..MemoryCacheOptions::default()
    });
    (clock, cache)
}

#[tokio::test]
async fn state_of_100_000_keys_is_released_by_forget_flush_and_expiry() {
    let (clock, cache) = manual_cache();
    let config = ProxyConfigId(1);
    let ids: Vec<ApiKeyId> = (0..KEYS).map(ApiKeyId).collect();
    let now = clock.now();
    for (i, &key) in ids.iter().enumerate() {
        if i % 2 == 0 {
            cache
                .cool_down(key, now + TimeDelta::seconds(60))
                .await
                .unwrap();
        } else {
            cache.mark_failed(key).await.unwrap();
        }
        cache.record(
            key,
            UsageEvent {
                status: Some(429),
                failed: true,
                at: now,
            },
        );
    }
    let turn = cache.next_turn(config, &ids).await.unwrap();
    assert_eq!(turn.states.len(), ids.len());
    assert!(turn.states.iter().all(|s| !s.is_usable_at(now)));
    assert_eq!(cache.marked_keys(), KEYS as usize);
    assert_eq!(cache.pending_usage_keys(), KEYS as usize);
    assert_eq!(cache.counters(), 1, "one counter per config, not per key");

    assert_eq!(cache.flush().await.unwrap().len(), KEYS as usize);
    assert_eq!(
        cache.pending_usage_keys(),
        0,
        "a flush releases usage cells"
    );

    // Deleting half of the keys (the failed ones) releases their marks.
    let failed: Vec<ApiKeyId> = ids.iter().copied().skip(1).step_by(2).collect();
    cache.forget(&failed).await.unwrap();
    assert_eq!(cache.marked_keys(), KEYS as usize / 2);

    // The cooldowns end with the clock; reads see that at once, a purge releases them.
    clock.advance(TimeDelta::seconds(61));
    let states = cache.key_states(&ids).await.unwrap();
    assert!(states.iter().all(|s| s.is_usable_at(clock.now())));
    assert_eq!(cache.purge_expired(), 0);
    assert_eq!(cache.marked_keys(), 0);
}

#[tokio::test]
async fn rolling_cooldowns_over_many_keys_stay_bounded_without_a_sweeper() {
    let (clock, cache) = manual_cache();
    // Ten waves of 100 000 distinct keys, each cooling for 1 s, one wave every 10 s: only one
    // wave is ever live, and writes sweep the ended ones as the shards grow.
    for wave in 0..10 {
        let now = clock.now();
        for i in 0..KEYS {
            cache
                .cool_down(ApiKeyId(wave * KEYS + i), now + TimeDelta::seconds(1))
                .await
                .unwrap();
        }
        clock.advance(TimeDelta::seconds(10));
    }
    let marked = cache.marked_keys();
    assert!(
        marked <= 2 * KEYS as usize + 64 * 64,
        "marks stay within twice the live keys, got {marked} after 1 000 000 cooldowns"
    );
}

#[tokio::test]
async fn a_lagging_subscriber_is_told_to_resync() {
    let cache = MemoryCache::new(MemoryCacheOptions {
        notice_capacity: 4,
        ..MemoryCacheOptions::default()
    });
    let mut stream = cache.subscribe().await.unwrap();
    for id in 0..10 {
        cache
            .publish(ConfigChange {
                config_id: ProxyConfigId(id),
                slugs: Vec::new(),
            })
            .await
            .unwrap();
    }
    assert_eq!(stream.next().await, Some(ConfigNotice::Resync));
    match stream.next().await {
        Some(ConfigNotice::Changed(change)) => assert_eq!(change.config_id, ProxyConfigId(6)),
        other => panic!("the newest changes follow the resync, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_turns_never_repeat_a_counter() {
    let cache = Arc::new(MemoryCache::default());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(5_000);
                for _ in 0..5_000 {
                    let turn = cache.next_turn(ProxyConfigId(3), &[]).await.unwrap();
                    seen.push(turn.counter);
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..20_000).collect::<Vec<u64>>());
}

#[tokio::test]
async fn memory_request_log_meets_the_contract() {
    let log = cache_memory::MemoryRequestLog::default();
    domain::contract::request_log(&log).await;
    domain::contract::request_log_retention(&cache_memory::MemoryRequestLog::default()).await;
    domain::contract::request_log_stats_by_hour(&cache_memory::MemoryRequestLog::default()).await;
}

#[tokio::test]
async fn memory_client_limiter_meets_the_client_limiter_contract() {
    domain::contract::client_limiter(&cache_memory::MemoryClientLimiter::default()).await;
}
