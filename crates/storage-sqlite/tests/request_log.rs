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
