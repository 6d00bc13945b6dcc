//! The figures behind `docs/operations.md` ("Which store at which scale"): the same admin batch
//! import of 10 000 keys, usage flush of 10 000 keys and listing of the pool, timed on SQLite,
//! MySQL (`TEST_MYSQL_URL`) and PostgreSQL (`TEST_POSTGRES_URL`) through each adapter. It
//! asserts nothing about speed and is `#[ignore]`d; run it on a quiet machine with
//!
//! ```text
//! cargo test --release -p storage-postgres --test store_timings -- --ignored --nocapture
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::print_stdout
)]

use std::time::{Duration, Instant};

use chrono::Utc;
use domain::{KeySecret, ProxyConfigInput, ProxyStore, UsageDelta, contract};

const KEYS: usize = 10_000;
const RUNS: usize = 5;

fn keys(prefix: &str) -> Vec<KeySecret> {
    (0..KEYS)
        .map(|i| KeySecret::parse(&format!("sk-timing-{prefix}-{i:06}-0123456789abcdef")).unwrap())
        .collect()
}

/// Median of `RUNS` timings of import, flush and list on `store`, in milliseconds.
async fn time_store(store: &dyn ProxyStore) -> [f64; 3] {
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..RUNS {
        let suffix = contract::unique_suffix();
        let spec = ProxyConfigInput {
            name: Some(format!("timing {suffix}")),
            slug: Some(format!("timing-{suffix}")),
            config_type: Some("LLM".into()),
            target_base_url: Some("https://llm.example.com/v1".into()),
            api_format: Some("openai_compatible".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let config = store.create_config(spec).await.unwrap();
        let batch = keys(&suffix);

        let started = Instant::now();
        let report = store.add_keys(config.id, batch, true).await.unwrap();
        samples[0].push(started.elapsed());
        assert_eq!(report.inserted, KEYS as u64);

        let stored = store.list_keys(config.id).await.unwrap();
        let now = Utc::now();
        let deltas: Vec<UsageDelta> = stored
            .iter()
            .map(|key| UsageDelta {
                key_id: key.id,
                requests: 7,
                failures: 1,
                last_status: Some(200),
                last_used_at: Some(now),
            })
            .collect();
        let started = Instant::now();
        store.apply_usage(&deltas).await.unwrap();
        samples[1].push(started.elapsed());

        let started = Instant::now();
        assert_eq!(store.list_keys(config.id).await.unwrap().len(), KEYS);
        samples[2].push(started.elapsed());

        store.delete_config(config.id).await.unwrap();
    }
    samples.map(|mut s: Vec<Duration>| {
        s.sort();
        s[s.len() / 2].as_secs_f64() * 1_000.0
    })
}

fn row(name: &str, [import, flush, list]: [f64; 3]) {
    println!("| {name} | {import:.0} ms | {flush:.0} ms | {list:.0} ms |");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; see the module documentation"]
async fn import_flush_and_list_ten_thousand_keys_on_each_store() {
    println!("| store | import {KEYS} keys | flush usage of {KEYS} keys | list {KEYS} keys |");
    println!("|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    let sqlite = storage_sqlite::SqliteStore::connect(storage_sqlite::SqliteOptions::file(
        dir.path().join("timing.db"),
    ))
    .await
    .unwrap();
    row("SQLite (file, WAL)", time_store(&sqlite).await);
    let url = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match url("TEST_MYSQL_URL") {
        Some(url) => {
            let store = storage_mysql::MysqlStore::connect(storage_mysql::MysqlOptions::new(url))
                .await
                .unwrap();
            row("MySQL / MariaDB", time_store(&store).await);
        }
        None => eprintln!("skipped: TEST_MYSQL_URL unset"),
    }
    match url("TEST_POSTGRES_URL") {
        Some(url) => {
            let store = storage_postgres::PostgresStore::connect(
                storage_postgres::PostgresOptions::new(url),
            )
            .await
            .unwrap();
            row("PostgreSQL", time_store(&store).await);
        }
        None => eprintln!("skipped: TEST_POSTGRES_URL unset"),
    }
}
