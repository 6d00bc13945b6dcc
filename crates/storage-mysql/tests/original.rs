//! Importing a MySQL database the original Go backend wrote (SPEC §11), on a scratch database
//! beside the one `TEST_MYSQL_URL` names: from another database and in place, twice each.
//! Without `TEST_MYSQL_URL` each test prints `skipped: TEST_MYSQL_URL unset` and passes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

#[path = "../../storage-sql/tests/support/original_db.rs"]
mod original_db;

use domain::{ConfigKind, OriginalTables, ProxyStore};
use sea_orm::{ConnectionTrait, Database};
use storage_mysql::{MysqlOptions, MysqlStore, read_original};

fn test_url() -> Option<String> {
    match std::env::var("TEST_MYSQL_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipped: TEST_MYSQL_URL unset");
            None
        }
    }
}

/// A fresh database `<name>_<suffix>` on the test server, holding the original's tables and
/// rows; its URL.
async fn original_database(url: &str, suffix: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, name) = base
        .rsplit_once('/')
        .expect("a database name in TEST_MYSQL_URL");
    let scratch = format!("{name}_{suffix}");
    let scratch_url = match query {
        Some(query) => format!("{server}/{scratch}?{query}"),
        None => format!("{server}/{scratch}"),
    };
    let admin = Database::connect(url)
        .await
        .expect("TEST_MYSQL_URL is reachable");
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS `{scratch}`"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "CREATE DATABASE `{scratch}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .await
        .unwrap();
    admin.close().await.unwrap();
    let db = Database::connect(&scratch_url).await.unwrap();
    for statement in original_db::statements(original_db::Engine::Mysql, "https://up.example") {
        db.execute_unprepared(&statement).await.unwrap();
    }
    db.close().await.unwrap();
    scratch_url
}

fn refused(report: &domain::ImportReport) -> Vec<(&'static str, i64)> {
    report
        .refused
        .iter()
        .map(|row| (row.table.as_str(), row.id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_mysql_database_is_upgraded_in_place_once() {
    let Some(url) = test_url() else { return };
    let scratch = original_database(&url, "original_in_place").await;

    let refused_start = MysqlStore::connect(MysqlOptions::new(&scratch))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused_start.contains("import-original"), "{refused_start}");

    let (store, report) = MysqlStore::upgrade_original(MysqlOptions::new(&scratch))
        .await
        .unwrap();
    assert_eq!(report.configs_imported, original_db::IMPORTED_CONFIGS);
    assert_eq!(report.keys_imported, original_db::IMPORTED_KEYS);
    assert_eq!(refused(&report), original_db::REFUSED);
    let configs = store.list_configs().await.unwrap();
    let ids: Vec<i64> = configs.iter().map(|c| c.id.0).collect();
    assert_eq!(ids, [1, 2, 3, 5]);
    assert_eq!(configs[0].slug.as_str(), "my.openai");
    assert_eq!(
        configs[0].created_at.to_rfc3339(),
        "2025-03-01T02:00:00.123+00:00"
    );
    assert!(!configs[2].is_active);
    let ConfigKind::Llm(compat) = &configs[3].kind else {
        panic!("config 5 is LLM")
    };
    assert_eq!(&*compat.key_placement.as_ref().unwrap().prefix, "Bearer ");
    let backup = store
        .sql_store()
        .connection()
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::MySql,
            "SELECT id FROM api_keys_original",
        ))
        .await
        .unwrap();
    assert_eq!(backup.len(), 8, "the original rows are all kept");
    store.close().await.unwrap();

    let store = MysqlStore::connect(MysqlOptions::new(&scratch))
        .await
        .unwrap();
    let (tables, data) = read_original(&scratch).await.unwrap();
    assert_eq!(tables, OriginalTables::Backup);
    let again = store.sql_store().import_original(&data).await.unwrap();
    assert_eq!((again.configs_imported, again.keys_imported), (0, 0));
    assert_eq!(again.configs_already_present, original_db::IMPORTED_CONFIGS);
    assert_eq!(again.keys_already_present, original_db::IMPORTED_KEYS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_mysql_database_imports_into_another_store_once() {
    let Some(url) = test_url() else { return };
    let source = original_database(&url, "original_source").await;
    let (tables, data) = read_original(&source).await.unwrap();
    assert_eq!(tables, OriginalTables::InPlace);
    assert_eq!(data.configs.len(), 5);
    assert_eq!(
        data.configs[0].api_format, None,
        "NULL formats read as NULL"
    );
    assert_eq!(data.keys[5].is_active, Some(false));

    let target = original_database(&url, "original_target").await;
    // The target must be a store of ours: empty it of the original's tables first.
    let db = Database::connect(&target).await.unwrap();
    db.execute_unprepared("DROP TABLE api_keys, proxy_configs")
        .await
        .unwrap();
    db.close().await.unwrap();
    let store = MysqlStore::connect(MysqlOptions::new(&target))
        .await
        .unwrap();
    let first = store.sql_store().import_original(&data).await.unwrap();
    assert_eq!(first.configs_imported, original_db::IMPORTED_CONFIGS);
    assert_eq!(first.keys_imported, original_db::IMPORTED_KEYS);
    assert_eq!(refused(&first), original_db::REFUSED);
    let again = store.sql_store().import_original(&data).await.unwrap();
    assert_eq!((again.configs_imported, again.keys_imported), (0, 0));
    assert_eq!(
        store
            .list_keys(domain::ProxyConfigId(1))
            .await
            .unwrap()
            .len(),
        2
    );
}
