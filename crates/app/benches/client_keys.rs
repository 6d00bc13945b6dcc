//! The hot-path cost of a client key (SPEC §7): finding the key by the digest of the presented
//! secret in the in-memory directory (SHA-256 or HMAC, then one map lookup), and the in-process
//! limiter's admission with `rpm` and `max_concurrency` plus giving the slot back, among 10 000
//! client keys. Each iteration presents the next of the 10 000 secrets, as requests of many
//! clients would: one key admitted back to back would run out of its `rpm` burst (a million)
//! within the warm-up, and the bench would measure refusals.
//!
//! Run with `cargo bench -p app --bench client_keys`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{hint::black_box, sync::Arc};

use app::client_keys::{Caller, ClientKeys};
use async_trait::async_trait;
use cache_memory::MemoryClientLimiter;
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use domain::{
    Admission, ClientKey, ClientKeyId, ClientKeyInput, ClientKeySpec, ClientKeyStore,
    ClientKeyUsage, ClientUsageDelta, IssuedSecret, Result,
};
use storage_sql::{ClientSecretHasher, EncryptionKey};

const KEYS: i64 = 10_000;

/// A store that only lists a fixed set of keys (the directory is built from it once).
struct FixedKeys(Vec<ClientKey>);

#[async_trait]
impl ClientKeyStore for FixedKeys {
    async fn create_client_key(&self, _: ClientKeySpec, _: IssuedSecret) -> Result<ClientKey> {
        unreachable!("the bench only reads")
    }
    async fn list_client_keys(&self) -> Result<Vec<ClientKey>> {
        Ok(self.0.clone())
    }
    async fn get_client_key(&self, _: ClientKeyId) -> Result<ClientKey> {
        unreachable!("the bench only lists")
    }
    async fn replace_client_key(&self, _: ClientKeyId, _: ClientKeySpec) -> Result<ClientKey> {
        unreachable!("the bench only reads")
    }
    async fn rotate_client_key(&self, _: ClientKeyId, _: IssuedSecret) -> Result<ClientKey> {
        unreachable!("the bench only reads")
    }
    async fn delete_client_key(&self, _: ClientKeyId) -> Result<ClientKey> {
        unreachable!("the bench only reads")
    }
    async fn apply_client_usage(&self, _: &[ClientUsageDelta]) -> Result<()> {
        Ok(())
    }
}

fn directory(hasher: &ClientSecretHasher) -> (ClientKeys, Arc<MemoryClientLimiter>, Vec<String>) {
    let spec = ClientKeyInput {
        name: Some("bench".into()),
        rpm: Some(1_000_000),
        max_concurrency: Some(1_000),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let keys = (1..=KEYS)
        .map(|id| ClientKey {
            id: ClientKeyId(id),
            spec: spec.clone(),
            digest: hasher.digest(&secret(id)),
            key_prefix: "akr-bench".into(),
            usage: ClientKeyUsage::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        })
        .collect();
    let limiter = Arc::new(MemoryClientLimiter::default());
    let client_keys = ClientKeys::new(Arc::new(FixedKeys(keys)), limiter.clone(), hasher.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(client_keys.refresh()).unwrap();
    (client_keys, limiter, (1..=KEYS).map(secret).collect())
}

fn secret(id: i64) -> String {
    format!("akr-bench-secret-{id:040}")
}

/// The secrets in turn, round and round.
fn in_turn<'a>(secrets: &'a [String]) -> impl FnMut() -> &'a str {
    let mut turns = secrets.iter().cycle();
    move || turns.next().expect("the secrets are not empty")
}

fn hot_path_check(c: &mut Criterion) {
    let key =
        EncryptionKey::parse("3f1c9a7be2d4056817ac93e0b5f24d6e81a7c3b9d0e5f2a4c6b8d1e3f5a7c9e2")
            .unwrap();
    for (name, hasher) in [
        ("sha256", ClientSecretHasher::plain()),
        ("hmac", ClientSecretHasher::keyed(&key)),
    ] {
        let (client_keys, limiter, secrets) = directory(&hasher);
        c.bench_function(&format!("client_key/lookup_{name}"), |b| {
            let mut next = in_turn(&secrets);
            b.iter(|| black_box(client_keys.authenticate(black_box(next()))));
        });
        c.bench_function(&format!("client_key/lookup_rpm_concurrency_{name}"), |b| {
            let mut next = in_turn(&secrets);
            b.iter(|| {
                let Some(Ok(entry)) = client_keys.authenticate(black_box(next())) else {
                    panic!("the key is found")
                };
                let caller = Caller::Client(entry.clone());
                let now = Utc::now();
                match limiter.admit_now(entry.id, &entry.limits, 0, now) {
                    Admission::Admitted(Some(_)) => limiter.release_now(entry.id),
                    other => panic!("admitted with a slot: {other:?}"),
                }
                black_box(caller)
            });
        });
    }
}

criterion_group!(benches, hot_path_check);
criterion_main!(benches);
