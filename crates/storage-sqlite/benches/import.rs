//! How long `add_keys` takes to import 10 000 new keys into one config of a SQLite file (WAL),
//! and to re-import them all as duplicates. Only the `add_keys` call is timed; creating and
//! emptying the config happen outside the measurement.
//!
//! Also how long loading the snapshot of a config of 100 000 keys takes
//! (`active_config_by_slug`): what the first proxied request after an admin write waits for,
//! once per write, never per request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use domain::{KeySecret, ProxyConfigInput, ProxyConfigSpec, ProxyStore};
use storage_sqlite::{SqliteOptions, SqliteStore};

const KEYS: usize = 10_000;

fn spec(n: u64) -> ProxyConfigSpec {
    ProxyConfigInput {
        name: Some(format!("bench {n}")),
        slug: Some(format!("bench-{n}")),
        config_type: Some("LLM".into()),
        target_base_url: Some("https://llm.example.com/v1".into()),
        ..Default::default()
    }
    .validate()
    .unwrap()
}

fn keys() -> Vec<KeySecret> {
    (0..KEYS)
        .map(|i| KeySecret::parse(&format!("sk-bench-{i:08}-abcdefghijklmnopqrstuvwxyz")).unwrap())
        .collect()
}

fn import(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = runtime
        .block_on(SqliteStore::connect(SqliteOptions::file(
            dir.path().join("bench.db"),
        )))
        .unwrap();
    let keys = keys();
    let mut configs = 0_u64;

    let mut group = c.benchmark_group("sqlite_add_keys");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(KEYS as u64));

    group.bench_function(BenchmarkId::new("new", KEYS), |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    configs += 1;
                    let config = store.create_config(spec(configs)).await.unwrap();
                    let start = Instant::now();
                    let report = store.add_keys(config.id, keys.clone(), true).await.unwrap();
                    total += start.elapsed();
                    assert_eq!(report.inserted, KEYS as u64);
                    store.delete_config(config.id).await.unwrap();
                }
                total
            })
        });
    });

    group.bench_function(BenchmarkId::new("all_duplicates", KEYS), |b| {
        let config = runtime.block_on(async {
            configs += 1;
            let config = store.create_config(spec(configs)).await.unwrap();
            store.add_keys(config.id, keys.clone(), true).await.unwrap();
            config
        });
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    let report = store.add_keys(config.id, keys.clone(), true).await.unwrap();
                    assert_eq!(report.skipped, KEYS as u64);
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

/// Keys of the config whose snapshot is loaded.
const POOL: usize = 100_000;

fn snapshot_load(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = runtime
        .block_on(SqliteStore::connect(SqliteOptions::file(
            dir.path().join("bench.db"),
        )))
        .unwrap();
    let slug = runtime.block_on(async {
        let config = store.create_config(spec(0)).await.unwrap();
        let pool: Vec<KeySecret> = (0..POOL)
            .map(|i| KeySecret::parse(&format!("sk-bench-pool-{i:06}")).unwrap())
            .collect();
        for batch in pool.chunks(KEYS) {
            store
                .add_keys(config.id, batch.to_vec(), true)
                .await
                .unwrap();
        }
        config.slug
    });

    let mut group = c.benchmark_group("sqlite_snapshot_load");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(POOL as u64));
    group.bench_function(BenchmarkId::new("keys", POOL), |b| {
        b.iter(|| {
            let snapshot = runtime
                .block_on(store.active_config_by_slug(&slug))
                .unwrap()
                .unwrap();
            assert_eq!(snapshot.keys().len(), POOL);
            snapshot
        });
    });
    group.finish();
}

/// The benchmark group (what `criterion_group!` would generate, documented).
fn benches() {
    let mut criterion = Criterion::default().configure_from_args();
    import(&mut criterion);
    snapshot_load(&mut criterion);
}

criterion_main!(benches);
