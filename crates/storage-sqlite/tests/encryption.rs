//! Key encryption on SQLite (SPEC §9): the shared suite of `storage_sql::encryption_suite`
//! (encrypted writes, duplicates, the three rewrites interrupted and resumed), the encrypting
//! store against the domain's store contract, and what only a file shows: after the rewrites
//! and the compaction, neither the database file nor its write-ahead log holds a key value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use domain::contract;
use storage_sql::{KeyRewrite, encryption_suite as suite};
use storage_sqlite::{SqliteOptions, SqliteStore};

async fn store_at(path: &Path) -> SqliteStore {
    SqliteStore::connect(SqliteOptions::file(path))
        .await
        .expect("open SQLite file")
}

/// The bytes of the database file and of its write-ahead log, as a stolen copy would hold them.
fn file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let wal = path.with_extension("db-wal");
    if wal.exists() {
        bytes.extend(std::fs::read(wal).unwrap());
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypting_store_meets_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(SqliteOptions {
        key_cipher: Some(suite::test_cipher('3')),
        ..SqliteOptions::file(dir.path().join("akr.db"))
    })
    .await
    .unwrap();
    contract::proxy_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_writes_hide_values_and_still_find_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(&dir.path().join("akr.db")).await;
    suite::encrypted_writes_hide_values_and_still_find_duplicates(store.sql_store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_survive_interruption_and_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(&dir.path().join("akr.db")).await;
    suite::rewrites_survive_interruption_and_are_idempotent(store.sql_store(), 1_050, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_encrypting_and_compacting_the_file_holds_no_key_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("akr.db");
    let store = store_at(&path).await;
    let values = suite::test_keys(300);
    suite::config_with_keys(store.sql_store(), &values).await;
    store.sql_store().compact().await.unwrap();
    assert!(
        contains(&file_bytes(&path), &values[7]),
        "the plain store holds the value: the search works"
    );

    let encrypt = KeyRewrite::encrypt(suite::test_cipher('3')).with_batch_size(64);
    suite::rewrite_all(store.sql_store(), &encrypt).await;
    store.sql_store().compact().await.unwrap();
    let bytes = file_bytes(&path);
    for value in &values {
        assert!(
            !contains(&bytes, &value[..12]),
            "the file still shows {}",
            &value[..12]
        );
    }
    store.close().await.unwrap();
    let bytes = file_bytes(&path);
    assert!(values.iter().all(|value| !contains(&bytes, &value[..12])));
}
