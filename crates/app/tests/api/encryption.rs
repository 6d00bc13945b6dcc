//! `ENCRYPTION_KEY` end to end (SPEC §9): keys written through the admin API reach the upstream
//! whole but are stored encrypted (the raw SQLite file, a MySQL `SELECT key_value, key_hash`
//! and, in the enterprise edition, the Redis key space hold no value, no prefix longer than the
//! mask shows and no unkeyed hash), duplicates are still skipped, and start-up refuses a store
//! whose rows do not match the configured key with one line naming the command to run.

use std::path::Path;

use app::Application;
use reqwest::Method;
use sha2::{Digest, Sha256};
use storage_sql::{EncryptionKey, KeyCipher};
use storage_sqlite::{SqliteOptions, SqliteStore};

use crate::helpers::{Behavior, MockUpstream, TestApp, spawn_app_with, test_settings};

pub const KEY_A: &str = "3f1c9a7be2d4056817ac93e0b5f24d6e81a7c3b9d0e5f2a4c6b8d1e3f5a7c9e2";
pub const KEY_B: &str = "5b2e8d41c07f9a3e6d1b4c8f2a7e05d9c3b6f1a8e4d2c7b0f5a9e3d6c1b8f4a7";

/// Upstream keys shaped like real ones, unique per call so parallel tests never share them.
pub fn upstream_keys(count: usize) -> Vec<String> {
    let suffix = domain::contract::unique_suffix();
    (0..count)
        .map(|i| format!("sk-live-{suffix}-{i:04}-9f8e7d6c5b4a"))
        .collect()
}

/// Everything a reader of `haystack` could learn about `value`: the value, any prefix longer
/// than the admin mask shows (four characters, so five is the shortest leak) or its plain
/// SHA-256 (as hex or bytes). `prefix_len` is the length of the prefix searched for.
pub fn leaks(haystack: &[u8], value: &str, prefix_len: usize) -> Option<&'static str> {
    let find = |needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    if find(&value.as_bytes()[..prefix_len]) {
        return Some("a prefix of the value");
    }
    let digest = Sha256::digest(value.as_bytes());
    if find(hex::encode(digest).as_bytes()) || find(&digest[..]) {
        return Some("the unkeyed SHA-256 of the value");
    }
    None
}

/// Creates a config proxying to `mock` with `values` as its keys, checks the upstream gets
/// each value whole, and answers the config id.
async fn config_serving(app: &TestApp, mock: &MockUpstream, values: &[String]) -> i64 {
    let slug = format!("vault-{}", domain::contract::unique_suffix());
    let id = app
        .generic_config(&slug, "GET", &mock.base, "header", "X-Api-Key")
        .await;
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let report = app.add_keys(id, &refs).await;
    assert_eq!(report["success_count"], values.len(), "{report}");
    for _ in 0..values.len() {
        let response = app
            .proxy(Method::GET, &format!("/proxy/{slug}/models"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let used = mock.keys_used();
    assert!(
        values.iter().all(|v| used.contains_key(v)),
        "the upstream gets every key whole: {:?}",
        used.keys().collect::<Vec<_>>()
    );
    let again = app.add_keys(id, &refs).await;
    assert_eq!(
        again["skipped_count"],
        values.len(),
        "duplicates are still found"
    );
    for key in app.list_keys(id).await {
        let shown = key["key_value"].as_str().unwrap();
        assert!(
            values
                .iter()
                .all(|v| leaks(shown.as_bytes(), v, 5).is_none())
        );
    }
    id
}

fn database_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    for extension in ["db-wal", "db-shm"] {
        if let Ok(more) = std::fs::read(path.with_extension(extension)) {
            bytes.extend(more);
        }
    }
    bytes
}

#[tokio::test]
async fn keys_written_through_the_admin_api_never_reach_the_sqlite_file_in_clear() {
    let app = spawn_app_with(&[("ENCRYPTION_KEY", KEY_A)]).await;
    let mock = MockUpstream::start().await;
    let values = upstream_keys(3);
    config_serving(&app, &mock, &values).await;

    let bytes = database_bytes(&app.data_dir().join("test.db"));
    assert!(bytes.len() > 4096, "the file was read");
    for value in &values {
        assert_eq!(
            leaks(&bytes, value, 5),
            None,
            "the SQLite file leaks {value}"
        );
    }
}

#[tokio::test]
async fn start_up_refuses_a_store_in_another_mode_with_one_line_naming_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.db");
    let cipher = |hex: &str| KeyCipher::new(&EncryptionKey::parse(hex).unwrap());
    let refusal = |extra: Vec<(&'static str, &'static str)>| {
        let settings = test_settings(dir.path(), &extra);
        async move {
            match Application::build(settings).await {
                Ok(_) => panic!("start-up must refuse the store"),
                Err(error) => format!("{error:#}"),
            }
        }
    };
    let values = upstream_keys(2);
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();

    // Plain rows, then a server with ENCRYPTION_KEY.
    let plain = SqliteStore::connect(SqliteOptions::file(&path))
        .await
        .unwrap();
    let config = crate::keys_command::config_in(&plain, "plain", &refs).await;
    plain.close().await.unwrap();
    let message = refusal(vec![("ENCRYPTION_KEY", KEY_A)]).await;
    assert!(message.contains("keys encrypt"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");

    // Encrypted rows (under A) beside the plain ones: a server with B names the rotation.
    let encrypting = SqliteStore::connect(SqliteOptions {
        key_cipher: Some(cipher(KEY_A)),
        ..SqliteOptions::file(&path)
    })
    .await
    .unwrap();
    domain::ProxyStore::clear_keys(&encrypting, config)
        .await
        .unwrap();
    crate::keys_command::config_in(&encrypting, "encrypted", &refs).await;
    encrypting.close().await.unwrap();
    let message = refusal(vec![("ENCRYPTION_KEY", KEY_B)]).await;
    assert!(message.contains("keys rotate-encryption"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");

    // No key at all.
    let message = refusal(vec![]).await;
    assert!(message.contains("keys decrypt"), "{message}");
    assert!(message.contains("ENCRYPTION_KEY is not set"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");

    // The right key starts.
    let app = Application::build(test_settings(dir.path(), &[("ENCRYPTION_KEY", KEY_A)]))
        .await
        .expect("every row is encrypted with A");
    drop(app);
}

#[cfg(feature = "enterprise")]
mod enterprise {
    //! The same guarantees on MySQL and Redis.

    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    use super::*;

    fn var(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }

    #[tokio::test]
    async fn a_mysql_dump_of_keys_written_through_the_admin_api_holds_no_key_value() {
        let Some(url) = var("TEST_MYSQL_URL") else {
            eprintln!("skipped: TEST_MYSQL_URL unset");
            return;
        };
        let (scratch_url, name) = crate::keys_command::scratch_mysql(&url, "admin_dump").await;
        let app = spawn_app_with(&[
            ("DATABASE_URL", scratch_url.as_str()),
            ("ENCRYPTION_KEY", KEY_A),
        ])
        .await;
        let mock = MockUpstream::start().await;
        let values = upstream_keys(3);
        config_serving(&app, &mock, &values).await;

        let store = storage_mysql::MysqlStore::connect(storage_mysql::MysqlOptions::new(
            scratch_url.as_str(),
        ))
        .await
        .unwrap();
        let rows = store
            .sql_store()
            .connection()
            .query_all_raw(Statement::from_string(
                DbBackend::MySql,
                "SELECT key_value, key_hash FROM api_keys",
            ))
            .await
            .unwrap();
        assert_eq!(rows.len(), values.len());
        let mut dump = Vec::new();
        for row in rows {
            let value: String = row.try_get("", "key_value").unwrap();
            let hash: String = row.try_get("", "key_hash").unwrap();
            dump.extend_from_slice(format!("{value}\t{hash}\n").as_bytes());
        }
        for value in &values {
            assert_eq!(leaks(&dump, value, 5), None, "the dump leaks {value}");
        }
        app.handle.stop(true).await;
        store.close().await.unwrap();
        crate::keys_command::drop_scratch_mysql(&url, &name).await;
    }

    #[tokio::test]
    async fn the_redis_key_space_holds_no_key_value_after_proxying() {
        let Some(redis) = var("TEST_REDIS_URL") else {
            eprintln!("skipped: TEST_REDIS_URL unset");
            return;
        };
        let namespace = format!("akr-enc-{}", domain::contract::unique_suffix());
        let app = spawn_app_with(&[
            ("REDIS_URL", redis.as_str()),
            ("REDIS_NAMESPACE", namespace.as_str()),
            ("ENCRYPTION_KEY", KEY_A),
        ])
        .await;
        let mock = MockUpstream::start().await;
        let values = upstream_keys(3);
        // One key rate-limited and one rejected, so cooldowns and failures reach Redis too.
        mock.on(
            &values[1],
            Behavior::Status(429, "{}", vec![("retry-after", "30")]),
        );
        mock.on(&values[2], Behavior::Status(401, "{}", vec![]));
        let slug = format!("redis-{}", domain::contract::unique_suffix());
        let id = app
            .generic_config(&slug, "GET", &mock.base, "header", "X-Api-Key")
            .await;
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        app.add_keys(id, &refs).await;
        for _ in 0..6 {
            let response = app
                .proxy(Method::GET, &format!("/proxy/{slug}/x"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        // Let a usage flush (USAGE_FLUSH_SECONDS=1 in tests) go through Redis.
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;

        // Stopped first, so nothing writes to the namespace while it is read and deleted.
        app.handle.stop(true).await;
        let space = crate::keys_command::redis_key_space(&redis, &namespace).await;
        assert!(!space.is_empty(), "the namespace was read");
        for value in &values {
            assert_eq!(leaks(&space, value, 5), None, "Redis holds {value}");
        }
    }
}
