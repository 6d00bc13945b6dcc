//! Key selection on the hot path: [`domain::plan_attempts`] alone, and [`domain::Rotator::plan`]
//! over an in-memory rotation state whose futures are ready at once and whose health never
//! changes (driven with `now_or_never`, so no runtime is involved and only the domain's own cost
//! is measured). `cargo bench -p cache-memory --bench next_turn` measures the plan over the real
//! in-process state, at pool sizes up to 100 000 keys.
//!
//! Run with `cargo bench -p domain --bench selection`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    hint::black_box,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use domain::{
    ApiFormat, ApiKey, ApiKeyId, Classifier, ConfigKind, ConfigSnapshot, Draw, FailoverPolicy,
    HealthRead, HttpUrl, KeyHealth, KeySecret, KeyUsage, LlmTarget, OutputFormat, ProxyConfig,
    ProxyConfigId, RotationState, Rotator, SystemClock, Turn, UsageCounters, UsageDelta,
    UsageEvent, plan_attempts,
};
use futures_util::FutureExt;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

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
        policy: Default::default(),
        created_at: now(),
        updated_at: now(),
    };
    let keys = (1..=key_count)
        .map(|id| {
            Arc::new(ApiKey {
                id: ApiKeyId(id),
                proxy_config_id: config.id,
                key_value: KeySecret::parse(&format!("sk-bench-key-{id:04}")).unwrap(),
                is_active: true,
                health: KeyHealth::Ok,
                usage: KeyUsage::default(),
                created_at: now(),
                updated_at: now(),
            })
        })
        .collect();
    ConfigSnapshot::new(config, keys)
}

/// The lightweight edition's shape: one atomic counter, every key healthy, ready futures.
#[derive(Default)]
struct InMemoryState {
    counter: AtomicU64,
}

#[async_trait]
impl RotationState for InMemoryState {
    async fn next_turn(&self, _config: ProxyConfigId, keys: &[ApiKeyId]) -> domain::Result<Turn> {
        Ok(Turn {
            counter: self.counter.fetch_add(1, Ordering::Relaxed),
            states: vec![KeyHealth::Ok; keys.len()],
        })
    }
    async fn draw(&self, _config: ProxyConfigId) -> domain::Result<Draw> {
        Ok(Draw {
            counter: self.counter.fetch_add(1, Ordering::Relaxed),
            health_version: 0,
        })
    }
    async fn read_health(&self, keys: &[ApiKeyId]) -> domain::Result<HealthRead> {
        Ok(HealthRead {
            version: 0,
            states: vec![KeyHealth::Ok; keys.len()],
        })
    }
    async fn key_states(&self, keys: &[ApiKeyId]) -> domain::Result<Vec<KeyHealth>> {
        Ok(vec![KeyHealth::Ok; keys.len()])
    }
    async fn cool_down(
        &self,
        _key: ApiKeyId,
        until: DateTime<Utc>,
    ) -> domain::Result<DateTime<Utc>> {
        Ok(until)
    }
    async fn mark_failed(&self, _key: ApiKeyId) -> domain::Result<()> {
        Ok(())
    }
    async fn mark_ok(&self, _key: ApiKeyId) -> domain::Result<()> {
        Ok(())
    }
    async fn forget(&self, _keys: &[ApiKeyId]) -> domain::Result<()> {
        Ok(())
    }
    async fn ping(&self) -> domain::Result<()> {
        Ok(())
    }
}

struct NoUsage;

#[async_trait]
impl UsageCounters for NoUsage {
    fn record(&self, _key: ApiKeyId, _event: UsageEvent) {}
    async fn flush(&self) -> domain::Result<Vec<UsageDelta>> {
        Ok(Vec::new())
    }
}

fn plan_attempts_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_attempts");
    let attempts = usize::try_from(FailoverPolicy::default().max_retries).unwrap() + 1;
    let at = now();

    let candidates: Vec<usize> = (0..3).collect();
    let mut turn = Turn {
        counter: 0,
        states: vec![KeyHealth::Ok; 3],
    };
    group.bench_function("3_keys_all_ok", |b| {
        b.iter(|| {
            turn.counter = turn.counter.wrapping_add(1);
            black_box(plan_attempts(black_box(&candidates), &turn, at, attempts).unwrap())
        });
    });

    let candidates: Vec<usize> = (0..16).collect();
    let mut states = vec![KeyHealth::Ok; 16];
    states[3] = KeyHealth::Cooling {
        until: at + TimeDelta::seconds(30),
    };
    states[9] = KeyHealth::Failed;
    let mut turn = Turn { counter: 0, states };
    group.bench_function("16_keys_one_cooling_one_failed", |b| {
        b.iter(|| {
            turn.counter = turn.counter.wrapping_add(1);
            black_box(plan_attempts(black_box(&candidates), &turn, at, attempts).unwrap())
        });
    });
    group.finish();
}

fn rotator_plan_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("rotator_plan");
    let rotator = Rotator::new(
        Arc::new(InMemoryState::default()),
        Arc::new(NoUsage),
        Arc::new(SystemClock),
        Classifier::new(TimeDelta::seconds(60)),
        FailoverPolicy::default(),
    );
    for keys in [3, 16] {
        let snapshot = snapshot(keys);
        group.bench_function(format!("{keys}_keys_in_memory"), |b| {
            b.iter(|| {
                let plan = rotator
                    .plan(black_box(&snapshot), 3)
                    .now_or_never()
                    .expect("the in-memory state answers at once")
                    .unwrap();
                black_box(plan)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, plan_attempts_bench, rotator_plan_bench);
criterion_main!(benches);
