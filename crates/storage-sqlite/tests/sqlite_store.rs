//! The SQLite store against the domain's store contract, on a file and in memory, plus what the
//! contract cannot see: big imports, concurrent writers, WAL, resets, corrupt rows and a closed
//! pool.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{SubsecRound, Utc};
use domain::{
    ApiKeyId, Error, KeyHealth, KeySecret, ProxyConfigId, ProxyConfigInput, ProxyConfigSpec,
    ProxyStore, UsageDelta, contract,
};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use storage_sqlite::{SqliteOptions, SqlitePath, SqliteStore};

fn spec(suffix: &str) -> ProxyConfigSpec {
    ProxyConfigInput {
        name: Some(format!("SQLite test {suffix}")),
        slug: Some(format!("sqlite-test-{suffix}")),
        config_type: Some("GENERIC".into()),
        method: Some("GET".into()),
        target_url: Some("https://api.example.com/v1".into()),
        api_key_location: Some("header".into()),
        api_key_name: Some("X-Api-Key".into()),
        ..Default::default()
    }
    .validate()
    .unwrap()
}

fn keys(prefix: &str, count: usize) -> Vec<KeySecret> {
    (0..count)
        .map(|i| KeySecret::parse(&format!("sk-{prefix}-{i:06}")).unwrap())
        .collect()
}

async fn file_store(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::connect(SqliteOptions::file(dir.path().join("akr.db")))
        .await
        .expect("open SQLite file")
}

async fn execute(store: &SqliteStore, sql: &str) {
    store
        .sql_store()
        .connection()
        .execute_unprepared(sql)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_database_meets_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    // A parent directory that does not exist yet is created.
    let path = dir.path().join("nested").join("data").join("akr.db");
    let store = SqliteStore::connect(SqliteOptions::file(&path))
        .await
        .expect("open SQLite file in a new directory");
    contract::proxy_store(&store).await;
    assert!(path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_database_meets_the_store_contract() {
    let store = SqliteStore::connect(SqliteOptions::in_memory())
        .await
        .expect("open in-memory SQLite");
    contract::proxy_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_meets_the_client_key_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(SqliteOptions::file(dir.path().join("akr.db")))
        .await
        .expect("open SQLite file");
    contract::client_key_store(&store).await;
}

#[tokio::test]
async fn memory_path_is_parsed_from_the_environment_style_value() {
    assert_eq!(SqlitePath::parse(":memory:"), SqlitePath::InMemory);
    assert_eq!(
        SqlitePath::parse("data/akr.db"),
        SqlitePath::File("data/akr.db".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keys_import_and_a_reimport_skips_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir).await;
    let config = store.create_config(spec("ten-k")).await.unwrap();
    let batch = keys("ten-k", 10_000);

    let first = store
        .add_keys(config.id, batch.clone(), true)
        .await
        .unwrap();
    assert_eq!((first.inserted, first.skipped), (10_000, 0));
    let again = store.add_keys(config.id, batch, true).await.unwrap();
    assert_eq!((again.inserted, again.skipped), (0, 10_000));
    assert_eq!(store.list_keys(config.id).await.unwrap().len(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_keys_import_past_the_parameter_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir).await;
    let config = store.create_config(spec("hundred-k")).await.unwrap();

    let report = store
        .add_keys(config.id, keys("hundred-k", 100_000), false)
        .await
        .expect("100 000 keys need several statements");
    assert_eq!((report.inserted, report.skipped), (100_000, 0));
    let stored = store.list_keys(config.id).await.unwrap();
    assert_eq!(stored.len(), 100_000);
    assert!(stored.iter().all(|k| !k.is_active));
    assert_eq!(stored[99_999].key_value.expose(), "sk-hundred-k-099999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_flush_covering_thousands_of_keys_adds_up() {
    let store = SqliteStore::connect(SqliteOptions::in_memory())
        .await
        .unwrap();
    let config = store.create_config(spec("usage")).await.unwrap();
    store
        .add_keys(config.id, keys("usage", 6_000), true)
        .await
        .unwrap();
    let stored = store.list_keys(config.id).await.unwrap();
    let at = Utc::now();
    let deltas: Vec<UsageDelta> = stored
        .iter()
        .enumerate()
        .map(|(i, key)| UsageDelta {
            key_id: key.id,
            requests: i as u64 + 1,
            failures: 1,
            last_status: Some(200),
            last_used_at: Some(at),
        })
        .collect();
    store.apply_usage(&deltas).await.expect("chunked flush");
    store.apply_usage(&deltas).await.expect("second flush");

    let after = store.list_keys(config.id).await.unwrap();
    for (i, key) in after.iter().enumerate() {
        assert_eq!(key.usage.request_count, 2 * (i as u64 + 1));
        assert_eq!(key.usage.failure_count, 2);
        assert_eq!(key.usage.last_status, Some(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_delta_never_overwrites_a_newer_last_use() {
    let store = SqliteStore::connect(SqliteOptions::in_memory())
        .await
        .unwrap();
    let config = store.create_config(spec("order")).await.unwrap();
    let key = store
        .add_key(config.id, KeySecret::parse("sk-order").unwrap(), true)
        .await
        .unwrap();
    let now = Utc::now();
    let delta = |status, at| UsageDelta {
        key_id: key.id,
        requests: 1,
        failures: 0,
        last_status: Some(status),
        last_used_at: Some(at),
    };
    store.apply_usage(&[delta(429, now)]).await.unwrap();
    // A late flush from another instance, about an earlier request.
    store
        .apply_usage(&[delta(200, now - chrono::TimeDelta::milliseconds(1))])
        .await
        .unwrap();
    let read = store.get_key(key.id).await.unwrap();
    assert_eq!(read.usage.request_count, 2);
    assert_eq!(read.usage.last_status, Some(429), "the newer status stays");
    assert_eq!(read.usage.last_used_at, Some(now.trunc_subsecs(6)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_write_returns_is_what_a_read_gives() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir).await;
    let created = store.create_config(spec("same")).await.unwrap();
    assert_eq!(store.get_config(created.id).await.unwrap(), created);
    let key = store
        .add_key(created.id, KeySecret::parse("sk-same").unwrap(), true)
        .await
        .unwrap();
    assert_eq!(store.get_key(key.id).await.unwrap(), key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_is_in_wal_mode_with_foreign_keys_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir).await;
    let db = store.sql_store().connection();
    let pragma = |name: &str| Statement::from_string(DbBackend::Sqlite, format!("PRAGMA {name}"));
    let mode = db
        .query_one_raw(pragma("journal_mode"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mode.try_get_by_index::<String>(0).unwrap(), "wal");
    let foreign_keys = db
        .query_one_raw(pragma("foreign_keys"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(foreign_keys.try_get_by_index::<i32>(0).unwrap(), 1);
    let timeout = db
        .query_one_raw(pragma("busy_timeout"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(timeout.try_get_by_index::<i32>(0).unwrap(), 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_rows_and_reset_tables_empties_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir).await;
    let config = store.create_config(spec("reset")).await.unwrap();
    store
        .add_key(config.id, KeySecret::parse("sk-reset").unwrap(), true)
        .await
        .unwrap();
    store.close().await.unwrap();

    let reopened = file_store(&dir).await;
    assert_eq!(
        reopened.list_configs().await.unwrap().len(),
        1,
        "migrations are idempotent"
    );
    reopened.close().await.unwrap();

    let mut options = SqliteOptions::file(dir.path().join("akr.db"));
    options.reset_tables = true;
    let reset = SqliteStore::connect(options).await.unwrap();
    assert!(reset.list_configs().await.unwrap().is_empty());
    let again = reset.create_config(spec("reset")).await.unwrap();
    assert_eq!(
        again.name, config.name,
        "the recreated tables accept the same rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_tables_replaces_tables_of_a_foreign_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let store = SqliteStore::connect(SqliteOptions::file(&path))
        .await
        .unwrap();
    execute(&store, "DROP TABLE api_keys").await;
    execute(&store, "DROP TABLE proxy_configs").await;
    execute(
        &store,
        "CREATE TABLE proxy_configs (id INTEGER PRIMARY KEY, legacy TEXT)",
    )
    .await;
    execute(&store, "DELETE FROM akr_schema_migrations").await;
    store.close().await.unwrap();

    match SqliteStore::connect(SqliteOptions::file(&path)).await {
        Err(Error::Internal(message)) => {
            assert!(message.contains("RESET_DB_TABLES"), "{message}")
        }
        other => panic!("a foreign table is reported, got {:?}", other.map(|_| ())),
    }
    let mut options = SqliteOptions::file(&path);
    options.reset_tables = true;
    let store = SqliteStore::connect(options)
        .await
        .expect("reset recreates");
    contract::store_keys(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_internal_errors_not_panics() {
    let store = SqliteStore::connect(SqliteOptions::in_memory())
        .await
        .unwrap();
    let config = store.create_config(spec("corrupt")).await.unwrap();
    let key = store
        .add_key(
            config.id,
            KeySecret::parse("sk-corrupt-value").unwrap(),
            true,
        )
        .await
        .unwrap();
    execute(&store, "UPDATE proxy_configs SET method = 'TELEPORT'").await;
    execute(
        &store,
        "UPDATE api_keys SET health = 'sleepy', request_count = -5",
    )
    .await;

    for result in [
        store.get_config(config.id).await.map(|_| ()),
        store.list_configs().await.map(|_| ()),
        store.get_key(key.id).await.map(|_| ()),
        store.list_keys(config.id).await.map(|_| ()),
    ] {
        match result {
            Err(Error::Internal(message)) => {
                assert!(!message.contains("TELEPORT"), "{message}");
                assert!(!message.contains("sk-corrupt-value"), "{message}");
            }
            other => panic!("expected an internal error, got {other:?}"),
        }
    }
    execute(&store, "UPDATE proxy_configs SET updated_at = 'not a time'").await;
    assert!(matches!(
        store.get_config(config.id).await,
        Err(Error::Internal(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pool_is_unavailable_with_a_clean_message() {
    let store = SqliteStore::connect(SqliteOptions::in_memory())
        .await
        .unwrap();
    let other_handle = store.clone();
    store.close().await.unwrap();
    match other_handle.list_configs().await {
        Err(Error::Unavailable { message, .. }) => {
            assert!(!message.to_lowercase().contains("sqlx"), "{message}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(matches!(
        other_handle.ping().await,
        Err(Error::Unavailable { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unopenable_file_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    // The "file" is a directory.
    match SqliteStore::connect(SqliteOptions::file(dir.path())).await {
        Err(Error::Unavailable { message, .. }) => {
            assert!(message.contains("cannot be opened"), "{message}")
        }
        other => panic!("expected unavailable, got {:?}", other.map(|_| ())),
    }
}

/// Eight tasks read and write one file for three seconds; SQLite's single-writer lock must
/// never surface as "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_and_writers_never_hit_database_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(file_store(&dir).await);
    let deadline = Instant::now() + Duration::from_secs(3);
    let operations = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::new();
    for task in 0..8_u32 {
        let store = Arc::clone(&store);
        let operations = Arc::clone(&operations);
        tasks.push(tokio::spawn(async move {
            let config = store
                .create_config(spec(&format!("concurrent-{task}")))
                .await
                .map_err(|e| format!("create: {e}"))?;
            let mut round = 0_u32;
            while Instant::now() < deadline {
                round += 1;
                let key = store
                    .add_key(
                        config.id,
                        KeySecret::parse(&format!("sk-{task}-{round}")).unwrap(),
                        true,
                    )
                    .await
                    .map_err(|e| format!("add_key: {e}"))?;
                store
                    .add_keys(config.id, keys(&format!("{task}-{round}"), 20), true)
                    .await
                    .map_err(|e| format!("add_keys: {e}"))?;
                store
                    .apply_usage(&[UsageDelta {
                        key_id: key.id,
                        requests: 1,
                        failures: 0,
                        last_status: Some(200),
                        last_used_at: Some(Utc::now()),
                    }])
                    .await
                    .map_err(|e| format!("apply_usage: {e}"))?;
                store
                    .set_key_health(key.id, KeyHealth::Failed)
                    .await
                    .map_err(|e| format!("set_key_health: {e}"))?;
                store
                    .set_config_active(config.id, round.is_multiple_of(2))
                    .await
                    .map_err(|e| format!("set_config_active: {e}"))?;
                store
                    .list_configs()
                    .await
                    .map_err(|e| format!("list_configs: {e}"))?;
                store
                    .list_keys(config.id)
                    .await
                    .map_err(|e| format!("list_keys: {e}"))?;
                store
                    .active_config_by_slug(&config.slug)
                    .await
                    .map_err(|e| format!("active_config_by_slug: {e}"))?;
                if round.is_multiple_of(5) {
                    store
                        .clear_keys(config.id)
                        .await
                        .map_err(|e| format!("clear_keys: {e}"))?;
                }
                operations.fetch_add(9, Ordering::Relaxed);
            }
            store
                .delete_config(config.id)
                .await
                .map_err(|e| format!("delete: {e}"))?;
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("no operation fails under contention");
    }
    let operations = operations.load(Ordering::Relaxed);
    eprintln!("8 tasks ran {operations} store operations in 3 s without a lock error");
    assert!(operations > 0);
    assert!(store.list_configs().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_not_found_and_leave_nothing_behind() {
    let store = SqliteStore::connect(SqliteOptions::in_memory())
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_keys(ProxyConfigId(42), keys("none", 3), true)
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.set_key_active(ApiKeyId(42), true).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.add_keys(ProxyConfigId(42), Vec::new(), true).await,
        Err(Error::NotFound { .. })
    ));
}
