//! Selection on the in-process rotation state, polled once with no runtime in the way (the calls
//! never suspend):
//! - `memory next_turn (3 keys)`: the counter and the health of 3 keys, one of them cooling down;
//! - `rotator plan over memory/{3, 1000, 100000} keys`: [`domain::Rotator::plan`] over a
//!   [`MemoryCache`] for pools of those sizes, one key of each cooling down for an hour. The
//!   snapshot keeps its usable keys between requests, so the cost must stay about flat as the
//!   pool grows;
//! - `rotator plan over memory/100000 keys, health changing every 1000 plans`: the same with a
//!   cooldown written every 1 000 plans, each of which makes the next plan read the pool again.
//!
//! Run with `cargo bench -p cache-memory --bench next_turn`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{hint::black_box, sync::Arc};

use async_trait::async_trait;
use cache_memory::MemoryCache;
use chrono::{DateTime, TimeDelta, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use domain::{
    ApiFormat, ApiKey, ApiKeyId, Classifier, ConfigKind, ConfigSnapshot, FailoverPolicy, HttpUrl,
    KeyHealth, KeySecret, KeyUsage, LlmTarget, OutputFormat, ProxyConfig, ProxyConfigId,
    RotationState, Rotator, SystemClock, UsageCounters, UsageDelta, UsageEvent,
};
use futures_util::FutureExt;

fn next_turn(c: &mut Criterion) {
    let cache = MemoryCache::default();
    let config = ProxyConfigId(1);
    let keys = [ApiKeyId(1), ApiKeyId(2), ApiKeyId(3)];
    cache
        .cool_down(keys[1], Utc::now() + TimeDelta::hours(1))
        .now_or_never()
        .unwrap()
        .unwrap();
    c.bench_function("memory next_turn (3 keys)", |b| {
        b.iter(|| {
            let turn = cache
                .next_turn(black_box(config), black_box(&keys))
                .now_or_never()
                .expect("the in-process state never suspends")
                .unwrap();
            black_box(turn)
        });
    });
}

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Keys a plan holds: the first attempt and the default two retries.
const ATTEMPTS: usize = 3;

/// A config with `key_count` enabled keys.
fn snapshot(key_count: i64) -> ConfigSnapshot {
    let config = ProxyConfig {
        id: ProxyConfigId(1),
        name: "OpenAI".parse().unwrap(),
        slug: "openai".parse().unwrap(),
        is_active: true,
        kind: ConfigKind::Llm(LlmTarget {
            target_base_url: "https://api.openai.com/v1".parse::<HttpUrl>().unwrap(),
            api_format: ApiFormat::OpenaiCompatible,
            output_format: OutputFormat::None,
            key_placement: None,
        }),
        policy: domain::failover::ConfigPolicy::default(),
        created_at: at(),
        updated_at: at(),
    };
    let keys = (1..=key_count)
        .map(|id| {
            Arc::new(ApiKey {
                id: ApiKeyId(id),
                proxy_config_id: config.id,
                key_value: KeySecret::parse(&format!("sk-bench-key-{id:06}")).unwrap(),
                is_active: true,
                health: KeyHealth::Ok,
                usage: KeyUsage::default(),
                created_at: at(),
                updated_at: at(),
            })
        })
        .collect();
    ConfigSnapshot::new(config, keys)
}

struct NoUsage;

#[async_trait]
impl UsageCounters for NoUsage {
    fn record(&self, _key: ApiKeyId, _event: UsageEvent) {}
    async fn flush(&self) -> domain::Result<Vec<UsageDelta>> {
        Ok(Vec::new())
    }
}

fn ready<T>(future: impl Future<Output = T>) -> T {
    future
        .now_or_never()
        .expect("the in-process state never suspends")
}

fn rotator_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("rotator plan over memory");
    for key_count in [3, 1_000, 100_000] {
        let cache = Arc::new(MemoryCache::default());
        let rotator = Rotator::new(
            cache.clone(),
            Arc::new(NoUsage),
            Arc::new(SystemClock),
            Classifier::new(TimeDelta::seconds(60)),
            FailoverPolicy::default(),
        );
        let until = Utc::now() + TimeDelta::hours(1);
        ready(cache.cool_down(ApiKeyId(2), until)).unwrap();
        let snapshot = snapshot(key_count);
        group.bench_function(format!("{key_count} keys"), |b| {
            b.iter(|| black_box(ready(rotator.plan(black_box(&snapshot), ATTEMPTS)).unwrap()));
        });
        if key_count == 100_000 {
            // A health write every 1 000 plans: the plan after it reads every key again.
            let mut key = 0;
            group.bench_function(
                format!("{key_count} keys, health changing every 1000 plans"),
                |b| {
                    b.iter_batched(
                        || {
                            key = key % key_count + 1;
                            ready(cache.cool_down(ApiKeyId(key), until)).unwrap();
                        },
                        |()| {
                            for _ in 0..1_000 {
                                black_box(ready(rotator.plan(&snapshot, ATTEMPTS)).unwrap());
                            }
                        },
                        BatchSize::PerIteration,
                    );
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, next_turn, rotator_plan);
criterion_main!(benches);
