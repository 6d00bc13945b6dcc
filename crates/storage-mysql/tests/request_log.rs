//! The MySQL store against the domain's request-log contract, on the database named by
//! `TEST_MYSQL_URL` (the retention suite on a scratch database of its own, since it deletes
//! rows of every config). Without it each test prints `skipped: TEST_MYSQL_URL unset` and
//! passes; with it, failing to connect fails the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use domain::contract;
use sea_orm::ConnectionTrait;
use storage_mysql::{MysqlOptions, MysqlStore};

fn test_url() -> Option<String> {
    match std::env::var("TEST_MYSQL_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipped: TEST_MYSQL_URL unset");
            None
        }
    }
}

async fn connect(url: &str) -> MysqlStore {
    MysqlStore::connect(MysqlOptions::new(url))
        .await
        .expect("TEST_MYSQL_URL is set, so MySQL must be reachable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_meets_the_request_log_contract() {
    let Some(url) = test_url() else { return };
    contract::request_log(&connect(&url).await).await;
}

/// Runs `suite` on a scratch database of its own, dropped afterwards.
async fn on_scratch_database(url: &str, tag: &str, suite: impl AsyncFnOnce(&MysqlStore)) {
    let admin = connect(url).await;
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, name) = base.rsplit_once('/').expect("a database name");
    let scratch = format!("{name}_{tag}_{}", contract::unique_suffix());
    let scratch_url = match query {
        Some(query) => format!("{server}/{scratch}?{query}"),
        None => format!("{server}/{scratch}"),
    };
    let db = admin.sql_store().connection();
    db.execute_unprepared(&format!(
        "CREATE DATABASE `{scratch}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .await
    .unwrap();
    let store = connect(&scratch_url).await;
    suite(&store).await;
    store.close().await.unwrap();
    db.execute_unprepared(&format!("DROP DATABASE `{scratch}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_prunes_by_age_and_row_count_in_bounded_steps() {
    let Some(url) = test_url() else { return };
    on_scratch_database(&url, "request_log", async |store| {
        contract::request_log_retention(store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_stats_by_hour_equal_the_records() {
    let Some(url) = test_url() else { return };
    on_scratch_database(&url, "by_hour", async |store| {
        contract::request_log_stats_by_hour(store).await;
    })
    .await;
}
