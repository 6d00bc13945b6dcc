//! The JSON file store against the domain's store contract: the same suite every adapter of the
//! workspace runs, and the one a downstream team runs against its own adapter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use domain::{ProxyStore, contract};
use example_json_store::JsonFileStore;

#[tokio::test]
async fn the_json_file_store_meets_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = JsonFileStore::open(dir.path().join("store.json")).unwrap();
    contract::proxy_store(&store).await;
}

#[tokio::test]
async fn what_the_contract_stored_is_there_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.json");
    let store = JsonFileStore::open(&path).unwrap();
    contract::store_snapshot_by_slug(&store).await;
    contract::store_usage_and_health(&store).await;
    let before = store.list_configs().await.unwrap();
    drop(store);
    let reopened = JsonFileStore::open(&path).unwrap();
    assert_eq!(reopened.list_configs().await.unwrap(), before);
    reopened.ping().await.unwrap();
}

#[tokio::test]
async fn the_json_file_store_meets_the_client_key_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = JsonFileStore::open(dir.path().join("store.json")).unwrap();
    contract::client_key_store(&store).await;
}
