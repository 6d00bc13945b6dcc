//! Importing a SQLite database the original Go backend wrote (SPEC §11): from another file and
//! in place, twice each, with the report naming every refused row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../storage-sql/tests/support/original_db.rs"]
mod original_db;

use std::path::Path;

use domain::{ConfigKind, OriginalTable, OriginalTables, ProxyStore};
use sea_orm::{ConnectionTrait, Database};
use storage_sqlite::{SqliteOptions, SqliteStore, read_original};

async fn write_original(path: &Path) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let db = Database::connect(&url).await.unwrap();
    for statement in original_db::statements(original_db::Engine::Sqlite, "https://up.example") {
        db.execute_unprepared(&statement).await.unwrap();
    }
    db.close().await.unwrap();
}

fn refused(report: &domain::ImportReport) -> Vec<(&'static str, i64)> {
    report
        .refused
        .iter()
        .map(|row| (row.table.as_str(), row.id))
        .collect()
}

#[tokio::test]
async fn an_original_file_imports_into_another_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("original.db");
    write_original(&source).await;
    let store = SqliteStore::connect(SqliteOptions::file(dir.path().join("new.db")))
        .await
        .unwrap();

    let (tables, data) = read_original(&source).await.unwrap();
    assert_eq!(tables, OriginalTables::InPlace);
    let first = store.sql_store().import_original(&data).await.unwrap();
    assert_eq!(first.configs_imported, original_db::IMPORTED_CONFIGS);
    assert_eq!(first.keys_imported, original_db::IMPORTED_KEYS);
    assert_eq!(refused(&first), original_db::REFUSED);
    assert!(first.refused[1].reason.contains("repeats key 1"));
    assert_eq!(first.refused[2].reason, "its key value is blank");
    assert!(first.configs_renumbered.is_empty() && first.keys_renumbered == 0);

    let again = store.sql_store().import_original(&data).await.unwrap();
    assert_eq!((again.configs_imported, again.keys_imported), (0, 0));
    assert_eq!(again.configs_already_present, original_db::IMPORTED_CONFIGS);
    assert_eq!(again.keys_already_present, original_db::IMPORTED_KEYS);

    // Ids kept, the dotted upper-case slug stored in lower case, the inactive config kept off.
    let configs = store.list_configs().await.unwrap();
    let ids: Vec<i64> = configs.iter().map(|c| c.id.0).collect();
    assert_eq!(ids, [1, 2, 3, 5]);
    assert_eq!(configs[0].slug.as_str(), "my.openai");
    assert_eq!(
        configs[0].created_at.to_rfc3339(),
        "2025-03-01T02:00:00.123456+00:00",
        "the original's times are kept, at the store's precision"
    );
    assert!(!configs[2].is_active);
    let ConfigKind::Llm(compat) = &configs[3].kind else {
        panic!("config 5 is LLM")
    };
    assert_eq!(&*compat.key_placement.as_ref().unwrap().prefix, "Bearer ");
    let keys = store.list_keys(domain::ProxyConfigId(1)).await.unwrap();
    let key_ids: Vec<i64> = keys.iter().map(|k| k.id.0).collect();
    assert_eq!(key_ids, [1, 4]);
    let retired = store.list_keys(domain::ProxyConfigId(3)).await.unwrap();
    assert!(!retired[0].is_active, "the inactive key stays inactive");
}

#[tokio::test]
async fn taken_ids_are_renumbered_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("original.db");
    write_original(&source).await;
    let store = SqliteStore::connect(SqliteOptions::file(dir.path().join("new.db")))
        .await
        .unwrap();
    let own = domain::ProxyConfigInput {
        name: Some("Own".into()),
        slug: Some("own".into()),
        config_type: Some("llm".into()),
        target_base_url: Some("https://own.example".into()),
        ..Default::default()
    };
    let own = store.create_config(own.validate().unwrap()).await.unwrap();
    assert_eq!(own.id.0, 1);
    store
        .add_key(own.id, domain::KeySecret::parse("own-key").unwrap(), true)
        .await
        .unwrap();

    let (_, data) = read_original(&source).await.unwrap();
    let report = store.sql_store().import_original(&data).await.unwrap();
    assert_eq!(report.configs_imported, original_db::IMPORTED_CONFIGS);
    assert_eq!(report.configs_renumbered.len(), 1);
    assert_eq!(report.configs_renumbered[0].0, 1);
    assert_eq!(
        report.keys_renumbered, 1,
        "key 1 belonged to the admin's config"
    );
    let again = store.sql_store().import_original(&data).await.unwrap();
    assert_eq!((again.configs_imported, again.keys_imported), (0, 0));
}

#[tokio::test]
async fn the_server_refuses_an_original_file_and_the_upgrade_in_place_keeps_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api_key_rotator.db");
    write_original(&path).await;

    let refused_start = SqliteStore::connect(SqliteOptions::file(&path))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused_start.contains("import-original"), "{refused_start}");
    assert!(
        !refused_start.contains("RESET_DB_TABLES"),
        "{refused_start}"
    );

    let (store, report) = SqliteStore::upgrade_original(SqliteOptions::file(&path))
        .await
        .unwrap();
    assert_eq!(report.configs_imported, original_db::IMPORTED_CONFIGS);
    assert_eq!(report.keys_imported, original_db::IMPORTED_KEYS);
    assert_eq!(refused(&report), original_db::REFUSED);
    assert!(report.refused.iter().all(|row| row.id > 0));
    assert_eq!(report.refused[0].table, OriginalTable::ProxyConfigs);
    let backup: Vec<i64> = store
        .sql_store()
        .connection()
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "SELECT id FROM api_keys_original ORDER BY id",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<i64>("", "id").unwrap())
        .collect();
    assert_eq!(
        backup,
        [1, 2, 3, 4, 5, 6, 7, 8],
        "the original rows are all kept"
    );
    store.close().await.unwrap();

    // The upgraded file now starts as a store, and importing its backup again adds nothing.
    let store = SqliteStore::connect(SqliteOptions::file(&path))
        .await
        .unwrap();
    assert_eq!(store.list_configs().await.unwrap().len(), 4);
    let (tables, data) = read_original(&path).await.unwrap();
    assert_eq!(tables, OriginalTables::Backup);
    let again = store.sql_store().import_original(&data).await.unwrap();
    assert_eq!((again.configs_imported, again.keys_imported), (0, 0));
    assert_eq!(again.keys_already_present, original_db::IMPORTED_KEYS);
    let upgrade_twice = SqliteStore::upgrade_original(SqliteOptions::file(&path)).await;
    assert!(upgrade_twice.is_err(), "nothing left to upgrade");
}
