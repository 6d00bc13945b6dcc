//! The MySQL store against the domain's store contract and the cases the contract cannot see,
//! on the database named by `TEST_MYSQL_URL`. Without it each test prints
//! `skipped: TEST_MYSQL_URL unset` and passes; with it, failing to connect fails the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::time::Duration;

use chrono::{SubsecRound, TimeDelta, Utc};
use domain::{
    Error, KeySecret, ProxyConfigInput, ProxyConfigSpec, ProxyStore, UsageDelta, contract,
};
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

fn spec(suffix: &str) -> ProxyConfigSpec {
    ProxyConfigInput {
        name: Some(format!("MySQL test {suffix}")),
        slug: Some(format!("mysql-test-{suffix}")),
        config_type: Some("LLM".into()),
        target_base_url: Some("https://llm.example.com/v1".into()),
        api_format: Some("openai_compatible".into()),
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

/// The same server with another database name (`…/name_suffix`), for tests that drop tables.
fn sibling_url(url: &str, suffix: &str) -> (String, String) {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, name) = base
        .rsplit_once('/')
        .expect("a database name in TEST_MYSQL_URL");
    let sibling = format!("{name}_{suffix}");
    let url = match query {
        Some(query) => format!("{server}/{sibling}?{query}"),
        None => format!("{server}/{sibling}"),
    };
    (url, sibling)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_meets_the_store_contract() {
    let Some(url) = test_url() else { return };
    let store = connect(&url).await;
    contract::proxy_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_meets_the_client_key_store_contract() {
    let Some(url) = test_url() else { return };
    let store = connect(&url).await;
    contract::client_key_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_keys_import_and_a_reimport_skips_every_one() {
    let Some(url) = test_url() else { return };
    let store = connect(&url).await;
    let suffix = contract::unique_suffix();
    let config = store.create_config(spec(&suffix)).await.unwrap();

    let batch = keys(&suffix, 100_000);
    let first = store
        .add_keys(config.id, batch.clone(), true)
        .await
        .expect("100 000 keys need several statements");
    assert_eq!((first.inserted, first.skipped), (100_000, 0));
    let again = store
        .add_keys(config.id, batch[..10_000].to_vec(), true)
        .await
        .unwrap();
    assert_eq!((again.inserted, again.skipped), (0, 10_000));
    assert_eq!(store.list_keys(config.id).await.unwrap().len(), 100_000);
    store.delete_config(config.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_flushes_add_up_and_the_latest_use_wins() {
    let Some(url) = test_url() else { return };
    let store = connect(&url).await;
    let suffix = contract::unique_suffix();
    let config = store.create_config(spec(&suffix)).await.unwrap();
    store
        .add_keys(config.id, keys(&suffix, 4_000), true)
        .await
        .unwrap();
    let stored = store.list_keys(config.id).await.unwrap();
    let now = Utc::now();
    let deltas = |status, at| -> Vec<UsageDelta> {
        stored
            .iter()
            .map(|key| UsageDelta {
                key_id: key.id,
                requests: 3,
                failures: 1,
                last_status: Some(status),
                last_used_at: Some(at),
            })
            .collect()
    };
    store
        .apply_usage(&deltas(429, now))
        .await
        .expect("chunked flush");
    store
        .apply_usage(&deltas(200, now - TimeDelta::seconds(5)))
        .await
        .expect("a late, older flush");

    for key in store.list_keys(config.id).await.unwrap() {
        assert_eq!((key.usage.request_count, key.usage.failure_count), (6, 2));
        assert_eq!(key.usage.last_status, Some(429), "the newer status stays");
        assert_eq!(key.usage.last_used_at, Some(now.trunc_subsecs(6)));
    }
    store.delete_config(config.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_keep_microseconds() {
    let Some(url) = test_url() else { return };
    let store = connect(&url).await;
    let config = store
        .create_config(spec(&contract::unique_suffix()))
        .await
        .unwrap();
    assert_eq!(store.get_config(config.id).await.unwrap(), config);
    let key = store
        .add_key(config.id, KeySecret::parse("sk-micro").unwrap(), true)
        .await
        .unwrap();
    assert_eq!(store.get_key(key.id).await.unwrap(), key);
    store.delete_config(config.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_and_reset_tables_on_a_scratch_database() {
    let Some(url) = test_url() else { return };
    let admin = connect(&url).await;
    let (scratch_url, scratch) = sibling_url(&url, "reset_test");
    let db = admin.sql_store().connection();
    db.execute_unprepared(&format!("DROP DATABASE IF EXISTS `{scratch}`"))
        .await
        .unwrap();
    db.execute_unprepared(&format!(
        "CREATE DATABASE `{scratch}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .await
    .unwrap();

    // Three instances migrate the empty database at once; the named lock serialises them.
    let (a, b, c) = tokio::join!(
        connect(&scratch_url),
        connect(&scratch_url),
        connect(&scratch_url)
    );
    let config = a.create_config(spec("reset")).await.unwrap();
    assert_eq!(b.get_config(config.id).await.unwrap().id, config.id);
    c.add_key(config.id, KeySecret::parse("sk-reset").unwrap(), true)
        .await
        .unwrap();

    let mut options = MysqlOptions::new(&scratch_url);
    options.reset_tables = true;
    let reset = MysqlStore::connect(options).await.expect("reset");
    assert!(reset.list_configs().await.unwrap().is_empty());
    contract::store_cascade_delete(&reset).await;

    for store in [a, b, c, reset] {
        store.close().await.unwrap();
    }
    db.execute_unprepared(&format!("DROP DATABASE `{scratch}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_unavailable_without_driver_text() {
    let Some(url) = test_url() else { return };
    let (_, host_and_db) = url.split_once('@').expect("user@host in TEST_MYSQL_URL");
    let wrong = format!("mysql://akr_no_such_user:wrong-password@{host_and_db}");
    match MysqlStore::connect(MysqlOptions::new(wrong)).await {
        Err(Error::Unavailable { message, .. }) => {
            assert!(message.contains("credentials"), "{message}");
            assert!(!message.contains("wrong-password"), "{message}");
            assert!(!message.contains("akr_no_such_user"), "{message}");
        }
        other => panic!("expected unavailable, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on the loopback refuses connections.
    let mut options = MysqlOptions::new("mysql://root:hunter2@127.0.0.1:1/akr");
    options.connect_timeout = Duration::from_secs(1);
    match MysqlStore::connect(options).await {
        Err(Error::Unavailable { message, .. }) => {
            assert!(message.contains("cannot reach"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        other => panic!("expected unavailable, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_malformed_url_is_unavailable_and_options_never_print_the_url() {
    let options = MysqlOptions::new("postgres://user:hunter2@host/db");
    assert!(!format!("{options:?}").contains("hunter2"));
    assert!(matches!(
        MysqlStore::connect(options).await,
        Err(Error::Unavailable { .. })
    ));
}

/// A fresh, empty database next to the test one, opened with `options` (its URL is set here):
/// the key encryption suite counts every row of `api_keys`, and the encrypting contract run
/// keeps its 70 000-key imports off the tables the other tests share.
async fn scratch_store(url: &str, suffix: &str, options: MysqlOptions) -> MysqlStore {
    let admin = connect(url).await;
    let (scratch_url, scratch) = sibling_url(url, suffix);
    let db = admin.sql_store().connection();
    db.execute_unprepared(&format!("DROP DATABASE IF EXISTS `{scratch}`"))
        .await
        .unwrap();
    db.execute_unprepared(&format!(
        "CREATE DATABASE `{scratch}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .await
    .unwrap();
    MysqlStore::connect(MysqlOptions {
        url: scratch_url,
        ..options
    })
    .await
    .expect("the scratch database opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypting_store_meets_the_store_contract() {
    let Some(url) = test_url() else { return };
    let options = MysqlOptions {
        key_cipher: Some(storage_sql::encryption_suite::test_cipher('3')),
        ..MysqlOptions::new(&url)
    };
    let store = scratch_store(&url, "encrypting_contract", options).await;
    contract::proxy_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_writes_hide_values_and_still_find_duplicates() {
    let Some(url) = test_url() else { return };
    let store = scratch_store(&url, "encrypted_writes", MysqlOptions::new(&url)).await;
    storage_sql::encryption_suite::encrypted_writes_hide_values_and_still_find_duplicates(
        store.sql_store(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rewrites_survive_interruption_and_are_idempotent() {
    let Some(url) = test_url() else { return };
    let store = scratch_store(&url, "key_rewrites", MysqlOptions::new(&url)).await;
    storage_sql::encryption_suite::rewrites_survive_interruption_and_are_idempotent(
        store.sql_store(),
        1_050,
        100,
    )
    .await;
}
