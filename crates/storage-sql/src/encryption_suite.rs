//! The key encryption test suite of a SQL store (feature `encryption-tests`), run by both
//! adapter crates on their own backend: values encrypted at rest and keyed hashes, duplicate
//! detection under encryption, and the three rewrites (encrypt, rotate, decrypt), each stopped
//! between batches and run again, ending with every key readable, none lost or doubled.
//!
//! Each function needs a store of its own (an empty database): it counts every row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{collections::BTreeSet, ops::ControlFlow};

use domain::{Error, KeySecret, ProxyConfigId, ProxyConfigInput, ProxyStore};
use sea_orm::EntityTrait;
use sha2::{Digest, Sha256};

use crate::{
    EncryptionKey, KeyCipher, KeyRewrite, RewriteError, RewriteProgress, SqlStore, entity::api_key,
};

/// A fixed test key; `first` varies it.
pub fn test_cipher(first: char) -> KeyCipher {
    let hex = format!("{first}f1c9a7be2d4056817ac93e0b5f24d6e81a7c3b9d0e5f2a4c6b8d1e3f5a7c9e2");
    KeyCipher::new(&EncryptionKey::parse(&hex).unwrap())
}

/// `count` distinct key values that look like real ones.
pub fn test_keys(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("sk-live-{i:06}-a1b2c3d4e5f6a7b8c9d0"))
        .collect()
}

/// Creates a config holding `values`, through `store` (plain or encrypting).
pub async fn config_with_keys(store: &SqlStore, values: &[String]) -> ProxyConfigId {
    let suffix = domain::contract::unique_suffix();
    let spec = ProxyConfigInput {
        name: Some(format!("Encryption {suffix}")),
        slug: Some(format!("encryption-{suffix}")),
        config_type: Some("GENERIC".into()),
        method: Some("POST".into()),
        target_url: Some("https://api.example.com/v1".into()),
        api_key_location: Some("header".into()),
        api_key_name: Some("X-Api-Key".into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let config = store.create_config(spec).await.unwrap();
    let keys = values
        .iter()
        .map(|v| KeySecret::parse(v).unwrap())
        .collect();
    let report = store.add_keys(config.id, keys, true).await.unwrap();
    assert_eq!(report.inserted, values.len() as u64);
    config.id
}

/// Every stored `(key_value, key_hash)`, as a dump would show them.
pub async fn raw_rows(store: &SqlStore) -> Vec<(String, String)> {
    api_key::Entity::find()
        .all(store.connection())
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.key_value, row.key_hash))
        .collect()
}

/// Asserts that no stored column holds a value, a prefix of one longer than the admin mask
/// shows (four characters), or its unkeyed SHA-256.
pub async fn assert_no_value_in_rows(store: &SqlStore, values: &[String]) {
    let rows = raw_rows(store).await;
    for value in values {
        let plain_hash = hex::encode(Sha256::digest(value.as_bytes()));
        let prefix = &value[..5];
        for (stored, hash) in &rows {
            assert!(!stored.contains(prefix), "a stored value shows {prefix}");
            assert_ne!(hash, &plain_hash, "a stored hash is the plain SHA-256");
        }
    }
}

/// Reads every key of `config` through `store` and checks they are exactly `values`.
pub async fn assert_keys_are(store: &SqlStore, config: ProxyConfigId, values: &[String]) {
    let keys = store.list_keys(config).await.unwrap();
    let read: Vec<String> = keys
        .iter()
        .map(|k| k.key_value.expose().to_owned())
        .collect();
    let unique: BTreeSet<&String> = read.iter().collect();
    assert_eq!(read.len(), values.len(), "no key lost or doubled");
    assert_eq!(unique, values.iter().collect(), "every key readable");
}

/// Runs `plan` but stops after `batches` batches, as an interruption between two commits.
pub async fn rewrite_interrupted(
    store: &SqlStore,
    plan: &KeyRewrite,
    batches: usize,
) -> RewriteProgress {
    let mut seen = 0;
    let progress = store
        .rewrite_key_values(plan, |_| {
            seen += 1;
            if seen >= batches {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .unwrap();
    assert!(!progress.complete, "stopped mid-way");
    progress
}

/// Runs `plan` to the end.
pub async fn rewrite_all(store: &SqlStore, plan: &KeyRewrite) -> RewriteProgress {
    let progress = store
        .rewrite_key_values(plan, |_| ControlFlow::Continue(()))
        .await
        .unwrap();
    assert!(progress.complete);
    progress
}

/// With a cipher: values encrypted and hashes keyed at rest, read back decrypted, duplicates
/// still skipped on a re-import, and plain rows refused rather than passed on.
pub async fn encrypted_writes_hide_values_and_still_find_duplicates(plain: &SqlStore) {
    let cipher = test_cipher('3');
    let encrypted = plain.clone().with_key_cipher(Some(cipher.clone()));
    let values = test_keys(50);
    let config = config_with_keys(&encrypted, &values).await;
    assert_no_value_in_rows(plain, &values).await;
    assert_keys_are(&encrypted, config, &values).await;

    let again = values
        .iter()
        .map(|v| KeySecret::parse(v).unwrap())
        .collect();
    let report = encrypted.add_keys(config, again, true).await.unwrap();
    assert_eq!(
        (report.inserted, report.skipped),
        (0, 50),
        "keyed hashes match"
    );
    let one = KeySecret::parse(&values[0]).unwrap();
    assert!(matches!(
        encrypted.add_key(config, one, true).await,
        Err(Error::Conflict { .. })
    ));

    let census = plain.key_census(&[&cipher]).await.unwrap();
    assert_eq!(
        (census.total, census.encrypted, census.by_cipher),
        (50, 50, vec![50])
    );
    assert!(
        matches!(plain.list_keys(config).await, Err(Error::Internal(_))),
        "encrypted rows are refused without the key, never passed on"
    );
    let other = plain.clone().with_key_cipher(Some(test_cipher('4')));
    assert!(matches!(
        other.list_keys(config).await,
        Err(Error::Internal(_))
    ));
}

/// Encrypt, rotate and decrypt `count` keys in batches of `batch`, each interrupted after two
/// batches and run again, then run once more to show it has nothing left to do.
pub async fn rewrites_survive_interruption_and_are_idempotent(
    plain: &SqlStore,
    count: usize,
    batch: u64,
) {
    let (old, new) = (test_cipher('3'), test_cipher('5'));
    let values = test_keys(count);
    let config = config_with_keys(plain, &values).await;
    let total = count as u64;

    // Encrypt.
    let encrypt = KeyRewrite::encrypt(old.clone()).with_batch_size(batch);
    let first = rewrite_interrupted(plain, &encrypt, 2).await;
    assert_eq!(first.rewritten, 2 * batch);
    let census = plain.key_census(&[&old]).await.unwrap();
    assert_eq!(
        (census.plain(), census.by_cipher[0]),
        (total - 2 * batch, 2 * batch)
    );
    let under_old = plain.clone().with_key_cipher(Some(old.clone()));
    assert!(
        matches!(under_old.list_keys(config).await, Err(Error::Internal(_))),
        "a half-migrated pool is refused"
    );
    let rest = rewrite_all(plain, &encrypt).await;
    assert_eq!(
        (rest.rewritten, rest.already_done),
        (total - 2 * batch, 2 * batch)
    );
    assert_eq!(
        rewrite_all(plain, &encrypt).await.rewritten,
        0,
        "idempotent"
    );
    assert_keys_are(&under_old, config, &values).await;
    assert_no_value_in_rows(plain, &values).await;

    // A key the run was not given stops it before it writes.
    let wrong = KeyRewrite::encrypt(new.clone());
    assert!(matches!(
        plain
            .rewrite_key_values(&wrong, |_| ControlFlow::Continue(()))
            .await,
        Err(RewriteError::UnknownKey { .. })
    ));

    // Rotate.
    let rotate = KeyRewrite::rotate(old.clone(), new.clone()).with_batch_size(batch);
    rewrite_interrupted(plain, &rotate, 2).await;
    let census = plain.key_census(&[&old, &new]).await.unwrap();
    assert_eq!(census.by_cipher, vec![total - 2 * batch, 2 * batch]);
    rewrite_all(plain, &rotate).await;
    assert_eq!(rewrite_all(plain, &rotate).await.rewritten, 0, "idempotent");
    let under_new = plain.clone().with_key_cipher(Some(new.clone()));
    assert_keys_are(&under_new, config, &values).await;
    assert_no_value_in_rows(plain, &values).await;
    let census = plain.key_census(&[&new]).await.unwrap();
    assert_eq!(census.by_cipher, vec![total]);

    // Decrypt.
    let decrypt = KeyRewrite::decrypt(new.clone()).with_batch_size(batch);
    rewrite_interrupted(plain, &decrypt, 2).await;
    rewrite_all(plain, &decrypt).await;
    assert_eq!(
        rewrite_all(plain, &decrypt).await.rewritten,
        0,
        "idempotent"
    );
    assert_keys_are(plain, config, &values).await;
    let rows = raw_rows(plain).await;
    assert!(
        rows.iter()
            .all(|(value, hash)| *hash == hex::encode(Sha256::digest(value.as_bytes()))),
        "plain rows carry the plain hash again"
    );
    plain.compact().await.unwrap();
}
