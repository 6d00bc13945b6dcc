//! The SQLite store against the domain's request-log contract, on a file and in memory, and the
//! prune steps beside a writer: a prune never makes a concurrent append wait past the busy
//! timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use domain::{RequestLog, contract};
use storage_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_meets_the_request_log_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(SqliteOptions::file(dir.path().join("log.db")))
        .await
        .unwrap();
    contract::request_log(&store).await;
    let fresh = SqliteStore::connect(SqliteOptions::file(dir.path().join("retention.db")))
        .await
        .unwrap();
    contract::request_log_retention(&fresh).await;
    let by_hour = SqliteStore::connect(SqliteOptions::file(dir.path().join("by_hour.db")))
        .await
        .unwrap();
    contract::request_log_stats_by_hour(&by_hour).await;
}

#[tokio::test]
async fn sqlite_in_memory_meets_the_request_log_contract() {
    let store = SqliteStore::connect(SqliteOptions::in_memory())
        .await
        .unwrap();
    let log: &dyn RequestLog = &store;
    contract::request_log(log).await;
    let fresh = SqliteStore::connect(SqliteOptions::in_memory())
        .await
        .unwrap();
    contract::request_log_retention(&fresh).await;
}

/// Every rollup row of a store, in key order, as text.
async fn rollup_rows(store: &SqliteStore) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let mut columns: Vec<String> = [
        "dim",
        "hour",
        "config_id",
        "dim_id",
        "status",
        "outcome",
        "requests",
        "tokens_in",
        "tokens_out",
        "min_latency",
        "max_latency",
    ]
    .map(str::to_owned)
    .to_vec();
    columns.extend((0..29).map(|i| format!("lat_{i:02}")));
    let sql = format!(
        "SELECT {} AS line FROM request_log_rollup ORDER BY dim, hour, config_id, dim_id, status, outcome",
        columns.join(" || '|' || ")
    );
    let rows = store
        .sql_store()
        .connection()
        .query_all_raw(Statement::from_string(sea_orm::DbBackend::Sqlite, sql))
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.try_get::<String>("", "line").unwrap())
        .collect()
}

/// The migration's backfill from stored records builds the same rollup as the appends did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollup_migration_backfills_what_appends_build() {
    use sea_orm::ConnectionTrait;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backfill.db");
    let store = SqliteStore::connect(SqliteOptions::file(&path))
        .await
        .unwrap();
    contract::request_log_stats_by_hour(&store).await;
    let appended = rollup_rows(&store).await;
    assert!(
        appended.len() > 100,
        "the contract's records fill the rollup"
    );
    let db = store.sql_store().connection();
    db.execute_unprepared("DROP TABLE request_log_rollup")
        .await
        .unwrap();
    db.execute_unprepared(
        "DELETE FROM akr_schema_migrations WHERE version = 'm20261206_000005_request_log_rollup'",
    )
    .await
    .unwrap();
    store.close().await.unwrap();
    let reopened = SqliteStore::connect(SqliteOptions::file(&path))
        .await
        .unwrap();
    assert_eq!(rollup_rows(&reopened).await, appended);
}

/// The log's batches go through a connection of their own: with every pooled connection in
/// use (here the only one, inside a transaction), an append still lands at once, and a read
/// through the pool then sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_written_through_its_own_connection() {
    use chrono::Utc;
    use domain::{LogFilter, LogQuery, ProxyConfigId, RequestRecord};
    use sea_orm::TransactionTrait as _;
    let dir = tempfile::tempdir().unwrap();
    let mut options = SqliteOptions::file(dir.path().join("writer.db"));
    options.max_connections = 1;
    let store = SqliteStore::connect(options).await.unwrap();
    let record = RequestRecord {
        created_at: Utc::now(),
        proxy_config_id: ProxyConfigId(1),
        client_key_id: None,
        api_key_id: None,
        method: "POST".into(),
        path: "/llm/writer/v1/chat/completions".into(),
        status: 200,
        outcome: "success".into(),
        attempts: 1,
        head_latency_ms: 1,
        total_latency_ms: 2,
        streamed: false,
        bytes_in: 10,
        bytes_out: 20,
        tokens_in: None,
        tokens_out: None,
        error_code: None,
    };
    let held = store.sql_store().connection().begin().await.unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(3),
        store.append(std::slice::from_ref(&record)),
    )
    .await
    .expect("the append does not wait for a pooled connection")
    .unwrap();
    held.rollback().await.unwrap();
    let page = store
        .query(&LogQuery {
            filter: LogFilter::default(),
            limit: 10,
            before: None,
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
}
