//! The PostgreSQL store against the domain's store contract, the key encryption suite and the
//! cases the contract cannot see, on the database named by `TEST_POSTGRES_URL`. Without it each
//! test prints `skipped: TEST_POSTGRES_URL unset` and passes; with it, failing to connect fails
//! the test. Tests that drop tables or count every row work in scratch databases created next
//! to it (the URL's user needs `CREATEDB`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

#[path = "../../storage-sql/tests/support/original_db.rs"]
mod original_db;

use std::time::Duration;

use chrono::{SubsecRound, TimeDelta, Utc};
use domain::{
    Error, KeySecret, ProxyConfigInput, ProxyConfigSpec, ProxyStore, UsageDelta, contract,
};
use sea_orm::{ConnectionTrait, Database};
use storage_postgres::{PostgresOptions, PostgresStore};

fn test_url() -> Option<String> {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipped: TEST_POSTGRES_URL unset");
            None
        }
    }
}

async fn connect(url: &str) -> PostgresStore {
    PostgresStore::connect(PostgresOptions::new(url))
        .await
        .expect("TEST_POSTGRES_URL is set, so PostgreSQL must be reachable")
}

fn spec(suffix: &str) -> ProxyConfigSpec {
    ProxyConfigInput {
        name: Some(format!("PostgreSQL test {suffix}")),
        slug: Some(format!("postgres-test-{suffix}")),
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

/// A fresh, empty database `<name>_<suffix>` on the test server (dropped first if a previous
/// run left it); its URL.
async fn scratch_database(url: &str, suffix: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, name) = base
        .rsplit_once('/')
        .expect("a database name in TEST_POSTGRES_URL");
    let scratch = format!("{name}_{suffix}");
    let admin = Database::connect(url)
        .await
        .expect("TEST_POSTGRES_URL is reachable");
    admin
        .execute_unprepared(&format!(
            "DROP DATABASE IF EXISTS \"{scratch}\" WITH (FORCE)"
        ))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{scratch}\""))
        .await
        .unwrap();
    admin.close().await.unwrap();
    match query {
        Some(query) => format!("{server}/{scratch}?{query}"),
        None => format!("{server}/{scratch}"),
    }
}

/// Drops a scratch database made by [`scratch_database`].
async fn drop_database(url: &str, scratch_url: &str) {
    let scratch = scratch_url
        .split('?')
        .next()
        .and_then(|base| base.rsplit_once('/'))
        .map(|(_, name)| name.to_owned())
        .unwrap();
    let admin = Database::connect(url).await.unwrap();
    admin
        .execute_unprepared(&format!(
            "DROP DATABASE IF EXISTS \"{scratch}\" WITH (FORCE)"
        ))
        .await
        .unwrap();
    admin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_meets_the_store_contract() {
    let Some(url) = test_url() else { return };
    let store = connect(&url).await;
    contract::proxy_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_meets_the_client_key_store_contract() {
    let Some(url) = test_url() else { return };
    let store = connect(&url).await;
    contract::client_key_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_meets_the_request_log_contract() {
    let Some(url) = test_url() else { return };
    contract::request_log(&connect(&url).await).await;
}

/// The retention suite deletes rows of every config, so it runs on a scratch database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_prunes_by_age_and_row_count_in_bounded_steps() {
    let Some(url) = test_url() else { return };
    let scratch_url = scratch_database(&url, "request_log").await;
    let store = connect(&scratch_url).await;
    contract::request_log_retention(&store).await;
    store.close().await.unwrap();
    drop_database(&url, &scratch_url).await;
}

/// Hour and day stats (answered from the rollup where they can be) equal the records; the
/// suite reads every config's records, so it runs on a scratch database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stats_by_hour_equal_the_records() {
    let Some(url) = test_url() else { return };
    let scratch_url = scratch_database(&url, "by_hour").await;
    let store = connect(&scratch_url).await;
    contract::request_log_stats_by_hour(&store).await;
    store.close().await.unwrap();
    drop_database(&url, &scratch_url).await;
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
        .expect("100 000 keys need several statements, each under 65 535 parameters");
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
async fn names_are_unique_byte_for_byte_whatever_the_database_collation() {
    let Some(url) = test_url() else { return };
    let store = connect(&url).await;
    let suffix = contract::unique_suffix();
    let first = store.create_config(spec(&suffix)).await.unwrap();
    // Another case, or an accent PostgreSQL's locale might sort as equal, is another name.
    for name in [
        format!("postgresql TEST {suffix}"),
        format!("PostgreSQL tést {suffix}"),
    ] {
        let mut other = spec(&format!("{suffix}-{}", name.len()));
        other.name = name.parse().unwrap();
        other.slug = format!("pg-other-{suffix}-{}", name.contains('é'))
            .parse()
            .unwrap();
        let created = store.create_config(other).await.expect("a distinct name");
        store.delete_config(created.id).await.unwrap();
    }
    store.delete_config(first.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_and_reset_tables_on_a_scratch_database() {
    let Some(url) = test_url() else { return };
    let scratch_url = scratch_database(&url, "reset_test").await;

    // Three instances migrate the empty database at once; the advisory lock serialises them.
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

    let mut options = PostgresOptions::new(&scratch_url);
    options.reset_tables = true;
    let reset = PostgresStore::connect(options).await.expect("reset");
    assert!(reset.list_configs().await.unwrap().is_empty());
    contract::store_cascade_delete(&reset).await;

    for store in [a, b, c, reset] {
        store.close().await.unwrap();
    }
    drop_database(&url, &scratch_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_leaves_no_half_made_schema() {
    let Some(url) = test_url() else { return };
    let scratch_url = scratch_database(&url, "half_schema").await;
    // A foreign `api_keys` table is in the way of the first migration's second table.
    let db = Database::connect(&scratch_url).await.unwrap();
    db.execute_unprepared("CREATE TABLE api_keys (id bigint PRIMARY KEY, note text)")
        .await
        .unwrap();
    match PostgresStore::connect(PostgresOptions::new(&scratch_url)).await {
        Err(Error::Internal(message)) => assert!(message.contains("RESET_DB_TABLES"), "{message}"),
        other => panic!("expected the schema error, got {:?}", other.map(|_| ())),
    }
    let tables: Vec<String> = db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT CAST(table_name AS TEXT) AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY 1",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "name").unwrap())
        .collect();
    assert_eq!(tables, ["api_keys"], "proxy_configs was rolled back");
    db.close().await.unwrap();

    let mut options = PostgresOptions::new(&scratch_url);
    options.reset_tables = true;
    let store = PostgresStore::connect(options)
        .await
        .expect("RESET_DB_TABLES recreates the tables");
    contract::store_cascade_delete(&store).await;
    store.close().await.unwrap();
    drop_database(&url, &scratch_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_from_the_original_keeps_ids_and_later_inserts_get_fresh_ones() {
    let Some(url) = test_url() else { return };
    let scratch_url = scratch_database(&url, "import_original").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("original.db");
    let sqlite = Database::connect(format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    for statement in original_db::statements(original_db::Engine::Sqlite, "https://up.example") {
        sqlite.execute_unprepared(&statement).await.unwrap();
    }
    sqlite.close().await.unwrap();
    let (_, data) = storage_sqlite::read_original(&path).await.unwrap();

    let store = connect(&scratch_url).await;
    let report = store.sql_store().import_original(&data).await.unwrap();
    assert_eq!(report.configs_imported, original_db::IMPORTED_CONFIGS);
    assert_eq!(report.keys_imported, original_db::IMPORTED_KEYS);
    let refused: Vec<(&str, i64)> = report
        .refused
        .iter()
        .map(|row| (row.table.as_str(), row.id))
        .collect();
    assert_eq!(refused, original_db::REFUSED);
    let again = store.sql_store().import_original(&data).await.unwrap();
    assert_eq!((again.configs_imported, again.keys_imported), (0, 0));
    let ids: Vec<i64> = store
        .list_configs()
        .await
        .unwrap()
        .iter()
        .map(|c| c.id.0)
        .collect();
    assert_eq!(ids, [1, 2, 3, 5], "the original ids are kept");

    // The identity sequences moved past the imported ids.
    let config = store.create_config(spec("after-import")).await.unwrap();
    assert_eq!(config.id.0, 6);
    let key = store
        .add_key(
            config.id,
            KeySecret::parse("sk-after-import").unwrap(),
            true,
        )
        .await
        .unwrap();
    assert_eq!(key.id.0, 9);
    store.close().await.unwrap();
    drop_database(&url, &scratch_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_unavailable_without_driver_text() {
    let Some(url) = test_url() else { return };
    let (scheme, rest) = url.split_once("://").expect("a URL in TEST_POSTGRES_URL");
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let wrong = format!("{scheme}://akr_no_such_user:wrong-password@{host_and_db}");
    match PostgresStore::connect(PostgresOptions::new(wrong)).await {
        Err(Error::Unavailable { message, .. }) => {
            assert!(
                message.contains("credentials") || message.contains("refused"),
                "{message}"
            );
            assert!(!message.contains("wrong-password"), "{message}");
            assert!(!message.contains("akr_no_such_user"), "{message}");
        }
        other => panic!("expected unavailable, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_unavailable_and_says_so() {
    let Some(url) = test_url() else { return };
    let base = url.split('?').next().unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    let missing = format!(
        "{server}/akr_no_such_database_{}",
        contract::unique_suffix()
    );
    match PostgresStore::connect(PostgresOptions::new(missing)).await {
        Err(Error::Unavailable { message, .. }) => {
            assert!(message.contains("does not exist"), "{message}")
        }
        other => panic!("expected unavailable, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on the loopback refuses connections.
    let mut options = PostgresOptions::new("postgres://postgres:hunter2@127.0.0.1:1/akr");
    options.connect_timeout = Duration::from_secs(1);
    match PostgresStore::connect(options).await {
        Err(Error::Unavailable { message, .. }) => {
            assert!(message.contains("cannot reach"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        other => panic!("expected unavailable, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_malformed_url_is_unavailable() {
    assert!(matches!(
        PostgresStore::connect(PostgresOptions::new("mysql://user:hunter2@host/db")).await,
        Err(Error::Unavailable { .. })
    ));
}

/// A fresh, empty database next to the test one, opened with `options` (its URL is set here):
/// the key encryption suite counts every row of `api_keys`, and the encrypting contract run
/// keeps its 70 000-key imports off the tables the other tests share.
async fn scratch_store(url: &str, suffix: &str, options: PostgresOptions) -> PostgresStore {
    let scratch_url = scratch_database(url, suffix).await;
    PostgresStore::connect(PostgresOptions {
        url: scratch_url,
        ..options
    })
    .await
    .expect("the scratch database opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypting_store_meets_the_store_contract() {
    let Some(url) = test_url() else { return };
    let options = PostgresOptions {
        key_cipher: Some(storage_sql::encryption_suite::test_cipher('3')),
        ..PostgresOptions::new(&url)
    };
    let store = scratch_store(&url, "encrypting_contract", options).await;
    contract::proxy_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_writes_hide_values_and_still_find_duplicates() {
    let Some(url) = test_url() else { return };
    let store = scratch_store(&url, "encrypted_writes", PostgresOptions::new(&url)).await;
    storage_sql::encryption_suite::encrypted_writes_hide_values_and_still_find_duplicates(
        store.sql_store(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rewrites_survive_interruption_and_are_idempotent() {
    let Some(url) = test_url() else { return };
    let store = scratch_store(&url, "key_rewrites", PostgresOptions::new(&url)).await;
    storage_sql::encryption_suite::rewrites_survive_interruption_and_are_idempotent(
        store.sql_store(),
        1_050,
        100,
    )
    .await;
    store
        .sql_store()
        .compact()
        .await
        .expect("VACUUM FULL runs outside a transaction");
}
