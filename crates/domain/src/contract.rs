//! The contract test suites every port implementation must pass (feature `contract-tests`).
//!
//! Each function exercises one port through its public behaviour and panics with a message
//! naming the broken rule. Adapters in this workspace run them from their integration tests; a
//! team writing its own adapter runs the same ones:
//!
//! ```ignore
//! #[tokio::test]
//! async fn my_store_meets_the_contract() {
//!     domain::contract::proxy_store(&MyStore::connect(...).await?).await;
//! }
//! ```
//!
//! The suites create their own uniquely named records, so they can run against a database that
//! already holds data, and several suites can run at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use chrono::{TimeDelta, Utc};
use futures_util::StreamExt;

use crate::{
    command::ProxyConfigInput,
    error::{Entity, Error},
    key_page::{HealthState, KeyCount, KeyRange},
    model::{
        ApiKeyId, ConfigChange, ConfigKind, KeyHealth, KeySecret, ProxyConfigId, ProxyConfigSpec,
        Slug, UsageDelta, UsageEvent,
    },
    ports::{ConfigEvents, ConfigNotice, Leases, ProxyStore, RotationState, UsageCounters},
};

mod request_log;

pub use request_log::{
    log_filters, log_large_batch, log_pages_and_fields, log_stats, request_log,
    request_log_retention, request_log_stats_by_hour,
};

/// A suffix no other run of a suite uses, so records never collide.
pub fn unique_suffix() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}{:x}",
        nanos % 0xffff_ffff_ffff,
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// A unique id base for rotation-state keys, far from ids a real store hands out.
fn unique_id_base() -> i64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    i64::try_from(nanos % 1_000_000_000_000).unwrap_or(0) * 1_000 + 1_000_000_000_000_000
}

fn generic_spec(suffix: &str) -> ProxyConfigSpec {
    ProxyConfigInput {
        name: Some(format!("Contract Generic {suffix}")),
        slug: Some(format!("contract-generic-{suffix}")),
        config_type: Some("GENERIC".into()),
        method: Some("POST".into()),
        target_url: Some("https://api.example.com/v2/items".into()),
        api_key_location: Some("query".into()),
        api_key_name: Some("apikey".into()),
        max_retries: Some(4),
        retry_on: Some(vec!["connect_error".into(), "timeout".into()]),
        response_timeout_seconds: Some(0),
        // Kept exactly, trailing space included.
        api_key_prefix: Some("token ".into()),
        ..Default::default()
    }
    .validate()
    .unwrap()
}

fn llm_spec(suffix: &str) -> ProxyConfigSpec {
    ProxyConfigInput {
        name: Some(format!("Contract LLM {suffix}")),
        slug: Some(format!("contract-llm-{suffix}")),
        config_type: Some("LLM".into()),
        target_base_url: Some("https://llm.example.com/v1".into()),
        api_format: Some("anthropic_native".into()),
        output_format: Some("openai".into()),
        api_key_location: Some("header".into()),
        // Gets the default `Bearer ` prefix, which the store must keep.
        api_key_name: Some("Authorization".into()),
        ..Default::default()
    }
    .validate()
    .unwrap()
}

fn secret(value: &str) -> KeySecret {
    KeySecret::parse(value).unwrap()
}

fn assert_conflict(result: Result<impl std::fmt::Debug, Error>, field: &str, what: &str) {
    match result {
        Err(Error::Conflict { field: f, .. }) if f == field => {}
        other => panic!("{what}: expected a conflict on {field}, got {other:?}"),
    }
}

fn assert_not_found(result: Result<impl std::fmt::Debug, Error>, entity: Entity, what: &str) {
    match result {
        Err(Error::NotFound { entity: e, .. }) if e == entity => {}
        other => panic!("{what}: expected {entity} not found, got {other:?}"),
    }
}

/// The whole store contract.
pub async fn proxy_store(store: &dyn ProxyStore) {
    store.ping().await.expect("ping answers");
    store_config_lifecycle(store).await;
    store_unique_fields(store).await;
    store_keys(store).await;
    store_batch_import(store).await;
    store_snapshot_by_slug(store).await;
    store_usage_and_health(store).await;
    store_key_ranges(store).await;
    store_key_counts(store).await;
    store_cascade_delete(store).await;
}

/// Create, read, list, replace, switch and delete configs of both kinds.
pub async fn store_config_lifecycle(store: &dyn ProxyStore) {
    let suffix = unique_suffix();
    let before = Utc::now() - TimeDelta::seconds(2);
    let generic = store
        .create_config(generic_spec(&suffix))
        .await
        .expect("create GENERIC");
    assert_eq!(
        generic.spec(),
        generic_spec(&suffix),
        "stored GENERIC config keeps every field"
    );
    assert!(
        generic.created_at >= before,
        "created_at is set by the store"
    );
    assert!(
        generic.updated_at >= generic.created_at,
        "updated_at is not before created_at"
    );
    let llm = store
        .create_config(llm_spec(&suffix))
        .await
        .expect("create LLM");
    assert_eq!(
        llm.spec(),
        llm_spec(&suffix),
        "stored LLM config keeps every field"
    );
    assert_ne!(generic.id, llm.id, "ids are distinct");

    let read = store.get_config(generic.id).await.expect("get GENERIC");
    assert_eq!(
        read.spec(),
        generic_spec(&suffix),
        "get returns every field, the failover policy included"
    );
    let read = store.get_config(llm.id).await.expect("get LLM");
    assert_eq!(read.spec(), llm.spec(), "get returns what create stored");
    assert_eq!(read.id, llm.id);

    let listed = store.list_configs().await.expect("list configs");
    let positions: Vec<usize> = [generic.id, llm.id]
        .iter()
        .map(|id| {
            listed
                .iter()
                .position(|c| c.id == *id)
                .expect("list contains new configs")
        })
        .collect();
    assert!(positions[0] < positions[1], "list is ordered by id");

    let mut replacement = llm_spec(&format!("{suffix}r"));
    replacement.is_active = false;
    if let ConfigKind::Llm(target) = &mut replacement.kind {
        target.key_placement = None;
    }
    let replaced = store
        .replace_config(llm.id, replacement.clone())
        .await
        .expect("replace");
    assert_eq!(replaced.spec(), replacement, "replace changes every field");
    assert_eq!(replaced.id, llm.id, "replace keeps the id");
    assert!(
        replaced.updated_at >= llm.updated_at,
        "replace moves updated_at forward"
    );
    let generic_kind = store
        .replace_config(llm.id, generic_spec(&format!("{suffix}g")))
        .await;
    assert_eq!(
        generic_kind
            .expect("replace may change the type")
            .kind
            .config_type(),
        crate::ConfigType::Generic,
    );

    let switched = store
        .set_config_active(generic.id, false)
        .await
        .expect("switch off");
    assert!(!switched.is_active);
    assert!(
        !store.get_config(generic.id).await.unwrap().is_active,
        "switch is stored"
    );
    assert!(
        store
            .set_config_active(generic.id, true)
            .await
            .unwrap()
            .is_active
    );

    let missing = ProxyConfigId(i64::MAX - 7);
    assert_not_found(
        store.get_config(missing).await,
        Entity::ProxyConfig,
        "get unknown config",
    );
    assert_not_found(
        store
            .replace_config(missing, generic_spec(&format!("{suffix}m")))
            .await,
        Entity::ProxyConfig,
        "replace unknown config",
    );
    assert_not_found(
        store.set_config_active(missing, true).await,
        Entity::ProxyConfig,
        "switch unknown",
    );
    assert_not_found(
        store.delete_config(missing).await,
        Entity::ProxyConfig,
        "delete unknown config",
    );
    assert_not_found(
        store.list_keys(missing).await,
        Entity::ProxyConfig,
        "keys of unknown config",
    );

    let deleted = store.delete_config(generic.id).await.expect("delete");
    assert_eq!(deleted.id, generic.id);
    assert_not_found(
        store.get_config(generic.id).await,
        Entity::ProxyConfig,
        "deleted config is gone",
    );
    store.delete_config(llm.id).await.expect("delete second");
}

/// Name and slug are unique; slugs case-insensitively (they are stored lower case).
pub async fn store_unique_fields(store: &dyn ProxyStore) {
    let suffix = unique_suffix();
    let first = store
        .create_config(generic_spec(&suffix))
        .await
        .expect("create");

    let mut same_name = generic_spec(&format!("{suffix}x"));
    same_name.name = first.name.clone();
    assert_conflict(
        store.create_config(same_name).await,
        "name",
        "duplicate name on create",
    );

    let mut same_slug = generic_spec(&format!("{suffix}y"));
    same_slug.slug = first.slug.as_str().to_uppercase().parse::<Slug>().unwrap();
    assert_conflict(
        store.create_config(same_slug).await,
        "slug",
        "duplicate slug on create",
    );

    let other = store
        .create_config(llm_spec(&suffix))
        .await
        .expect("create other");
    let mut rename = other.spec();
    rename.slug = first.slug.clone();
    assert_conflict(
        store.replace_config(other.id, rename).await,
        "slug",
        "duplicate slug on replace",
    );
    let mut rename = other.spec();
    rename.name = first.name.clone();
    assert_conflict(
        store.replace_config(other.id, rename).await,
        "name",
        "duplicate name on replace",
    );
    store
        .replace_config(other.id, other.spec())
        .await
        .expect("replacing a config with its own name and slug is no conflict");

    store.delete_config(first.id).await.unwrap();
    store.delete_config(other.id).await.unwrap();
}

/// Single keys: add, duplicates inside a config, the same key in two configs, switch, delete.
pub async fn store_keys(store: &dyn ProxyStore) {
    let suffix = unique_suffix();
    let config = store.create_config(generic_spec(&suffix)).await.unwrap();
    let other = store.create_config(llm_spec(&suffix)).await.unwrap();
    let value = format!("sk-contract-{suffix}-one");

    let key = store
        .add_key(config.id, secret(&value), true)
        .await
        .expect("add key");
    assert_eq!(
        key.key_value.expose(),
        value,
        "the store keeps the exact value"
    );
    assert_eq!(key.proxy_config_id, config.id);
    assert!(key.is_active);
    assert_eq!(key.health, KeyHealth::Ok, "new keys are healthy");
    assert_eq!(key.usage.request_count, 0);
    assert_conflict(
        store.add_key(config.id, secret(&value), true).await,
        "key_value",
        "same key twice",
    );
    store
        .add_key(other.id, secret(&value), true)
        .await
        .expect("same key in another config");
    let disabled = store
        .add_key(
            config.id,
            secret(&format!("sk-contract-{suffix}-two")),
            false,
        )
        .await
        .unwrap();
    assert!(!disabled.is_active, "is_active is stored as given");

    let keys = store.list_keys(config.id).await.unwrap();
    let ids: Vec<ApiKeyId> = keys.iter().map(|k| k.id).collect();
    assert_eq!(
        ids,
        [key.id, disabled.id],
        "keys of a config, ordered by id"
    );

    let read = store.get_key(key.id).await.unwrap();
    assert_eq!(read.key_value.expose(), value);
    let switched = store.set_key_active(key.id, false).await.unwrap();
    assert!(!switched.is_active);
    assert!(
        !store.get_key(key.id).await.unwrap().is_active,
        "switch is stored"
    );

    let missing = ApiKeyId(i64::MAX - 3);
    assert_not_found(
        store.get_key(missing).await,
        Entity::ApiKey,
        "get unknown key",
    );
    assert_not_found(
        store.set_key_active(missing, true).await,
        Entity::ApiKey,
        "switch unknown key",
    );
    assert_not_found(
        store.delete_key(missing).await,
        Entity::ApiKey,
        "delete unknown key",
    );
    assert_not_found(
        store
            .add_key(ProxyConfigId(i64::MAX - 7), secret("sk-x"), true)
            .await,
        Entity::ProxyConfig,
        "add key to unknown config",
    );

    let deleted = store.delete_key(key.id).await.unwrap();
    assert_eq!(deleted.id, key.id);
    assert_not_found(
        store.get_key(key.id).await,
        Entity::ApiKey,
        "deleted key is gone",
    );
    assert_eq!(
        store.clear_keys(config.id).await.unwrap(),
        1,
        "clear counts what it deleted"
    );
    assert!(store.list_keys(config.id).await.unwrap().is_empty());
    assert_eq!(
        store.list_keys(other.id).await.unwrap().len(),
        1,
        "clear touches one config only"
    );
    assert_not_found(
        store.clear_keys(ProxyConfigId(i64::MAX - 7)).await,
        Entity::ProxyConfig,
        "clear unknown config",
    );

    store.delete_config(config.id).await.unwrap();
    store.delete_config(other.id).await.unwrap();
}

/// Batch import: counts, skipping keys already present, and a size past bound-parameter limits.
pub async fn store_batch_import(store: &dyn ProxyStore) {
    let suffix = unique_suffix();
    let config = store.create_config(generic_spec(&suffix)).await.unwrap();
    store
        .add_key(config.id, secret(&format!("sk-{suffix}-00001")), true)
        .await
        .unwrap();

    let count = 70_000u64;
    let keys: Vec<KeySecret> = (0..count)
        .map(|i| secret(&format!("sk-{suffix}-{i:05}")))
        .collect();
    let inserted = store
        .add_keys(config.id, keys.clone(), true)
        .await
        .expect("batch insert");
    assert_eq!(
        (inserted.inserted, inserted.skipped),
        (count - 1, 1),
        "one key was already there"
    );
    let again = store
        .add_keys(config.id, keys, false)
        .await
        .expect("batch again");
    assert_eq!(
        (again.inserted, again.skipped),
        (0, count),
        "re-import inserts nothing"
    );
    let stored = store.list_keys(config.id).await.unwrap();
    assert_eq!(stored.len() as u64, count);
    assert!(
        stored.iter().all(|k| k.is_active),
        "skipped keys keep their state"
    );
    assert!(
        stored.windows(2).all(|pair| pair[0].id < pair[1].id),
        "ordered by id, each key once"
    );
    let snapshot = store
        .active_config_by_slug(&config.slug)
        .await
        .unwrap()
        .expect("a new config is active");
    let ids: Vec<ApiKeyId> = snapshot.keys().iter().map(|k| k.id).collect();
    let listed: Vec<ApiKeyId> = stored.iter().map(|k| k.id).collect();
    assert_eq!(ids, listed, "the snapshot holds the whole pool, in order");
    assert_not_found(
        store
            .add_keys(ProxyConfigId(i64::MAX - 7), vec![secret("sk-y")], true)
            .await,
        Entity::ProxyConfig,
        "batch into unknown config",
    );
    assert_eq!(store.clear_keys(config.id).await.unwrap(), count);
    store.delete_config(config.id).await.unwrap();
}

/// The snapshot the hot path reads: active configs only, with every key.
pub async fn store_snapshot_by_slug(store: &dyn ProxyStore) {
    let suffix = unique_suffix();
    let config = store.create_config(llm_spec(&suffix)).await.unwrap();
    let a = store
        .add_key(config.id, secret(&format!("sk-{suffix}-a")), true)
        .await
        .unwrap();
    let b = store
        .add_key(config.id, secret(&format!("sk-{suffix}-b")), false)
        .await
        .unwrap();

    let snapshot = store
        .active_config_by_slug(&config.slug)
        .await
        .unwrap()
        .expect("active config");
    assert_eq!(snapshot.config.id, config.id);
    assert_eq!(snapshot.config.spec(), config.spec());
    let ids: Vec<ApiKeyId> = snapshot.keys().iter().map(|k| k.id).collect();
    assert_eq!(ids, [a.id, b.id], "snapshot holds every key, ordered by id");
    assert_eq!(snapshot.keys()[0].key_value.expose(), a.key_value.expose());

    store.set_config_active(config.id, false).await.unwrap();
    assert!(
        store
            .active_config_by_slug(&config.slug)
            .await
            .unwrap()
            .is_none(),
        "inactive → none"
    );
    let unknown: Slug = format!("contract-unknown-{suffix}").parse().unwrap();
    assert!(
        store
            .active_config_by_slug(&unknown)
            .await
            .unwrap()
            .is_none(),
        "unknown → none"
    );
    store.delete_config(config.id).await.unwrap();
}

/// Usage deltas add up; health persists.
pub async fn store_usage_and_health(store: &dyn ProxyStore) {
    let suffix = unique_suffix();
    let config = store.create_config(generic_spec(&suffix)).await.unwrap();
    let a = store
        .add_key(config.id, secret(&format!("sk-{suffix}-a")), true)
        .await
        .unwrap();
    let b = store
        .add_key(config.id, secret(&format!("sk-{suffix}-b")), true)
        .await
        .unwrap();
    let at = Utc::now().with_timezone(&Utc);
    let delta = |key_id, requests, failures, status, seconds| UsageDelta {
        key_id,
        requests,
        failures,
        last_status: Some(status),
        last_used_at: Some(at + TimeDelta::seconds(seconds)),
    };
    store
        .apply_usage(&[
            delta(a.id, 5, 1, 429, 0),
            delta(b.id, 2, 0, 200, 0),
            delta(ApiKeyId(i64::MAX - 1), 1, 1, 500, 0),
        ])
        .await
        .expect("apply usage, unknown keys ignored");
    store
        .apply_usage(&[delta(a.id, 3, 0, 200, 10)])
        .await
        .unwrap();
    store.apply_usage(&[]).await.expect("empty flush is fine");

    let a_now = store.get_key(a.id).await.unwrap();
    assert_eq!(
        (a_now.usage.request_count, a_now.usage.failure_count),
        (8, 1),
        "deltas add up"
    );
    assert_eq!(a_now.usage.last_status, Some(200), "latest status wins");
    let used = a_now.usage.last_used_at.expect("last_used_at stored");
    assert!(
        (used - (at + TimeDelta::seconds(10))).num_seconds().abs() <= 1,
        "last_used_at kept"
    );
    let b_now = store.get_key(b.id).await.unwrap();
    assert_eq!(b_now.usage.request_count, 2);

    store.set_key_health(a.id, KeyHealth::Failed).await.unwrap();
    assert_eq!(
        store.get_key(a.id).await.unwrap().health,
        KeyHealth::Failed,
        "failed persists"
    );
    let until = Utc::now() + TimeDelta::seconds(120);
    store
        .set_key_health(b.id, KeyHealth::Cooling { until })
        .await
        .unwrap();
    match store.get_key(b.id).await.unwrap().health {
        KeyHealth::Cooling { until: stored } => {
            assert!(
                (stored - until).num_seconds().abs() <= 1,
                "cooldown end kept"
            )
        }
        other => panic!("cooling persists, got {other:?}"),
    }
    store.set_key_health(a.id, KeyHealth::Ok).await.unwrap();
    assert_eq!(store.get_key(a.id).await.unwrap().health, KeyHealth::Ok);
    store
        .set_key_health(ApiKeyId(i64::MAX - 1), KeyHealth::Failed)
        .await
        .expect("unknown ignored");
    store.delete_config(config.id).await.unwrap();
}

/// Key ranges: one page after a cursor, ordered by id, filtered by the switch, never another
/// config's keys.
pub async fn store_key_ranges(store: &dyn ProxyStore) {
    let suffix = unique_suffix();
    let config = store.create_config(generic_spec(&suffix)).await.unwrap();
    let other = store.create_config(llm_spec(&suffix)).await.unwrap();
    let values: Vec<KeySecret> = (0..7)
        .map(|i| secret(&format!("sk-{suffix}-range-{i}")))
        .collect();
    store
        .add_keys(config.id, values.clone(), true)
        .await
        .unwrap();
    store.add_keys(other.id, values, true).await.unwrap();
    let all: Vec<ApiKeyId> = store
        .list_keys(config.id)
        .await
        .unwrap()
        .iter()
        .map(|k| k.id)
        .collect();
    for id in [all[1], all[4]] {
        store.set_key_active(id, false).await.unwrap();
    }
    let range = |after, limit, is_active| KeyRange {
        after,
        limit,
        is_active,
    };
    let ids =
        |keys: Vec<crate::model::ApiKey>| -> Vec<ApiKeyId> { keys.iter().map(|k| k.id).collect() };

    let first = store
        .list_key_range(config.id, range(None, 3, None))
        .await
        .expect("first page");
    assert_eq!(
        ids(first.clone()),
        all[..3],
        "first page: the lowest ids, in order"
    );
    assert!(
        first.iter().all(|k| k.proxy_config_id == config.id),
        "a page holds only the config's keys"
    );
    let second = store
        .list_key_range(config.id, range(Some(all[2]), 3, None))
        .await
        .unwrap();
    assert_eq!(ids(second), all[3..6], "a page starts after the cursor");
    let last = store
        .list_key_range(config.id, range(Some(all[5]), 3, None))
        .await
        .unwrap();
    assert_eq!(ids(last), all[6..], "the last page may be short");
    let past = store
        .list_key_range(config.id, range(Some(all[6]), 3, None))
        .await
        .unwrap();
    assert!(past.is_empty(), "nothing after the last key");

    let active = store
        .list_key_range(config.id, range(None, 10, Some(true)))
        .await
        .unwrap();
    assert_eq!(
        ids(active),
        [all[0], all[2], all[3], all[5], all[6]],
        "is_active = true keeps switched-on keys"
    );
    let inactive = store
        .list_key_range(config.id, range(Some(all[1]), 10, Some(false)))
        .await
        .unwrap();
    assert_eq!(
        ids(inactive),
        [all[4]],
        "is_active = false keeps switched-off keys after the cursor"
    );
    let read = store
        .list_key_range(config.id, range(Some(all[0]), 1, None))
        .await
        .unwrap();
    assert_eq!(
        read[0].key_value.expose(),
        format!("sk-{suffix}-range-1"),
        "a page carries the whole key, as list_keys does"
    );
    assert!(!read[0].is_active);

    let empty = store
        .create_config(generic_spec(&format!("{suffix}e")))
        .await
        .unwrap();
    assert!(
        store
            .list_key_range(empty.id, range(None, 5, None))
            .await
            .expect("a config without keys has an empty page")
            .is_empty()
    );
    assert_not_found(
        store
            .list_key_range(ProxyConfigId(i64::MAX - 7), range(None, 5, None))
            .await,
        Entity::ProxyConfig,
        "page of an unknown config",
    );

    for id in [config.id, other.id, empty.id] {
        store.delete_config(id).await.unwrap();
    }
}

/// Key counts: per config, stored health (an ended cooldown counts as ok) and switch.
pub async fn store_key_counts(store: &dyn ProxyStore) {
    let suffix = unique_suffix();
    let config = store.create_config(generic_spec(&suffix)).await.unwrap();
    let other = store.create_config(llm_spec(&suffix)).await.unwrap();
    let values: Vec<KeySecret> = (0..6)
        .map(|i| secret(&format!("sk-{suffix}-count-{i}")))
        .collect();
    store
        .add_keys(config.id, values.clone(), true)
        .await
        .unwrap();
    store
        .add_keys(other.id, values[..2].to_vec(), false)
        .await
        .unwrap();
    let keys: Vec<ApiKeyId> = store
        .list_keys(config.id)
        .await
        .unwrap()
        .iter()
        .map(|k| k.id)
        .collect();
    let now = Utc::now();
    store
        .set_key_health(keys[0], KeyHealth::Failed)
        .await
        .unwrap();
    store
        .set_key_health(keys[1], KeyHealth::Failed)
        .await
        .unwrap();
    store
        .set_key_health(
            keys[2],
            KeyHealth::Cooling {
                until: now + TimeDelta::seconds(300),
            },
        )
        .await
        .unwrap();
    store
        .set_key_health(
            keys[3],
            KeyHealth::Cooling {
                until: now - TimeDelta::seconds(300),
            },
        )
        .await
        .unwrap();
    store.set_key_active(keys[1], false).await.unwrap();

    let counts = store.count_keys(now).await.expect("count keys");
    let of = |config: ProxyConfigId| {
        let mut mine: Vec<(HealthState, bool, u64)> = counts
            .iter()
            .filter(|c: &&KeyCount| c.config == config && c.count > 0)
            .map(|c| (c.health, c.is_active, c.count))
            .collect();
        mine.sort();
        mine
    };
    assert_eq!(
        of(config.id),
        [
            (HealthState::Ok, true, 3),
            (HealthState::Cooling, true, 1),
            (HealthState::Failed, false, 1),
            (HealthState::Failed, true, 1),
        ],
        "counts per stored health and switch; the ended cooldown counts as ok"
    );
    assert_eq!(
        of(other.id),
        [(HealthState::Ok, false, 2)],
        "each config is counted apart"
    );
    let later = store
        .count_keys(now + TimeDelta::seconds(600))
        .await
        .unwrap();
    let cooling_later: u64 = later
        .iter()
        .filter(|c| c.config == config.id && c.health == HealthState::Cooling)
        .map(|c| c.count)
        .sum();
    assert_eq!(cooling_later, 0, "health is counted as of the time given");

    store.delete_config(config.id).await.unwrap();
    store.delete_config(other.id).await.unwrap();
    let gone = store.count_keys(now).await.unwrap();
    assert!(
        gone.iter().all(|c| c.config != config.id || c.count == 0),
        "a deleted config's keys are not counted"
    );
}

/// Deleting a config deletes its keys.
pub async fn store_cascade_delete(store: &dyn ProxyStore) {
    let suffix = unique_suffix();
    let config = store.create_config(generic_spec(&suffix)).await.unwrap();
    let key = store
        .add_key(config.id, secret(&format!("sk-{suffix}-c")), true)
        .await
        .unwrap();
    store.delete_config(config.id).await.unwrap();
    assert_not_found(
        store.get_key(key.id).await,
        Entity::ApiKey,
        "keys go with their config",
    );
}

/// The whole rotation-state contract.
pub async fn rotation_state(state: &dyn RotationState) {
    state.ping().await.expect("ping answers");
    let base = unique_id_base();
    let config = ProxyConfigId(base);
    let keys = [ApiKeyId(base + 1), ApiKeyId(base + 2), ApiKeyId(base + 3)];

    let mut counters = Vec::new();
    for _ in 0..5 {
        let turn = state.next_turn(config, &keys).await.expect("next turn");
        assert_eq!(turn.states, [KeyHealth::Ok; 3], "unmarked keys read ok");
        counters.push(turn.counter);
    }
    assert_eq!(
        counters,
        [0, 1, 2, 3, 4],
        "a new config's counter starts at 0 and counts up by one"
    );
    let other = state
        .next_turn(ProxyConfigId(base + 500), &[])
        .await
        .unwrap();
    assert_eq!(other.counter, 0, "each config has its own counter");
    assert!(other.states.is_empty());
    health_versions(state, config, &keys).await;

    let now = Utc::now();
    let until = now + TimeDelta::seconds(60);
    let effective = state.cool_down(keys[0], until).await.expect("cool down");
    assert_close(effective, until, "cool_down returns the cooldown in force");
    let shorter = state
        .cool_down(keys[0], now + TimeDelta::seconds(5))
        .await
        .unwrap();
    assert_close(
        shorter,
        until,
        "a shorter cooldown never shortens the current one",
    );
    let longer_until = now + TimeDelta::seconds(90);
    let longer = state.cool_down(keys[0], longer_until).await.unwrap();
    assert_close(longer, longer_until, "a longer cooldown extends");
    state.mark_failed(keys[1]).await.expect("mark failed");

    let states = state.key_states(&keys).await.unwrap();
    match states[0] {
        KeyHealth::Cooling { until } => assert_close(until, longer_until, "cooling until"),
        other => panic!("cooled key reads cooling, got {other:?}"),
    }
    assert_eq!(states[1], KeyHealth::Failed);
    assert_eq!(states[2], KeyHealth::Ok);
    let turn = state.next_turn(config, &[keys[2], keys[1]]).await.unwrap();
    assert_eq!(
        turn.states,
        [KeyHealth::Ok, KeyHealth::Failed],
        "states follow the order asked"
    );
    assert!(state.key_states(&[]).await.unwrap().is_empty());

    state.mark_ok(keys[0]).await.unwrap();
    state.mark_ok(keys[1]).await.unwrap();
    assert_eq!(
        state.key_states(&keys[..2]).await.unwrap(),
        [KeyHealth::Ok; 2],
        "mark_ok clears"
    );

    // Cooldowns end by themselves, with no sweeper.
    let brief = Utc::now() + TimeDelta::milliseconds(150);
    state.cool_down(keys[2], brief).await.unwrap();
    assert!(
        !state.key_states(&[keys[2]]).await.unwrap()[0].is_usable_at(Utc::now()),
        "cooling now"
    );
    std::thread::sleep(Duration::from_millis(250));
    assert!(
        state.key_states(&[keys[2]]).await.unwrap()[0].is_usable_at(Utc::now()),
        "a cooldown ends by itself"
    );

    state.mark_failed(keys[0]).await.unwrap();
    state.forget(&keys).await.expect("forget");
    assert_eq!(
        state.key_states(&keys).await.unwrap(),
        [KeyHealth::Ok; 3],
        "forgotten keys read ok"
    );
}

/// `draw` shares `next_turn`'s counter, and every health write that changes a key's health
/// changes the health version before its effect can be read. Leaves every key healthy. The
/// config's counter is at 5.
async fn health_versions(state: &dyn RotationState, config: ProxyConfigId, keys: &[ApiKeyId; 3]) {
    let mut counters = Vec::new();
    for _ in 0..3 {
        counters.push(state.draw(config).await.expect("draw").counter);
    }
    let turn = state.next_turn(config, keys).await.expect("next turn");
    counters.push(turn.counter);
    counters.push(state.draw(config).await.expect("draw").counter);
    assert_eq!(
        counters,
        [5, 6, 7, 8, 9],
        "draw and next_turn take values of one counter, each once"
    );

    let read = state.read_health(keys).await.expect("read health");
    assert_eq!(read.states, [KeyHealth::Ok; 3], "unmarked keys read ok");
    let mut version = state.draw(config).await.expect("draw").health_version;
    let until = Utc::now() + TimeDelta::seconds(60);
    #[derive(Debug, Clone, Copy)]
    enum Write {
        CoolDown,
        MarkFailed,
        MarkOk,
        Forget,
    }
    let writes = [
        (Write::CoolDown, KeyHealth::Cooling { until }),
        (Write::MarkFailed, KeyHealth::Failed),
        (Write::MarkOk, KeyHealth::Ok),
        (Write::CoolDown, KeyHealth::Cooling { until }),
        (Write::Forget, KeyHealth::Ok),
    ];
    for (write, expected) in writes {
        let written = match write {
            Write::CoolDown => state.cool_down(keys[1], until).await.map(drop),
            Write::MarkFailed => state.mark_failed(keys[1]).await,
            Write::MarkOk => state.mark_ok(keys[1]).await,
            Write::Forget => state.forget(&keys[1..2]).await,
        };
        written.unwrap_or_else(|e| panic!("{write:?}: {e}"));
        let drawn = state.draw(config).await.expect("draw").health_version;
        assert_ne!(drawn, version, "{write:?} changes the health version");
        let read = state.read_health(&keys[..2]).await.expect("read health");
        assert_ne!(
            read.version, version,
            "{write:?} changes the health version"
        );
        assert_eq!(
            read.states[0],
            KeyHealth::Ok,
            "only the key written changes"
        );
        match (read.states[1], expected) {
            (KeyHealth::Cooling { until: read }, KeyHealth::Cooling { until }) => {
                assert_close(read, until, "read_health after cool_down");
            }
            (read, expected) => assert_eq!(read, expected, "read_health after {write:?}"),
        }
        version = read.version;
    }
    assert!(
        state
            .read_health(&[])
            .await
            .expect("read health")
            .states
            .is_empty(),
        "no keys, no states"
    );
}

fn assert_close(actual: chrono::DateTime<Utc>, expected: chrono::DateTime<Utc>, what: &str) {
    let off = (actual - expected).num_milliseconds().abs();
    assert!(off <= 5, "{what}: {actual} vs {expected}");
}

/// The whole usage-counters contract.
pub async fn usage_counters(counters: &dyn UsageCounters) {
    let base = unique_id_base();
    let (a, b) = (ApiKeyId(base + 1), ApiKeyId(base + 2));
    let at = Utc::now();
    // Drain whatever an earlier suite left.
    counters.flush().await.expect("flush");
    counters.record(
        a,
        UsageEvent {
            status: Some(200),
            failed: false,
            at,
        },
    );
    counters.record(
        a,
        UsageEvent {
            status: Some(429),
            failed: true,
            at: at + TimeDelta::seconds(1),
        },
    );
    counters.record(
        b,
        UsageEvent {
            status: None,
            failed: true,
            at,
        },
    );
    for _ in 0..1_000 {
        counters.record(
            b,
            UsageEvent {
                status: Some(200),
                failed: false,
                at,
            },
        );
    }
    let mut deltas = counters.flush().await.expect("flush");
    deltas.sort_by_key(|d| d.key_id);
    assert_eq!(deltas.len(), 2, "one delta per key: {deltas:?}");
    assert_eq!(
        (deltas[0].key_id, deltas[0].requests, deltas[0].failures),
        (a, 2, 1)
    );
    assert_eq!(deltas[0].last_status, Some(429), "latest status");
    assert_close(
        deltas[0].last_used_at.unwrap(),
        at + TimeDelta::seconds(1),
        "latest use",
    );
    assert_eq!(
        (deltas[1].key_id, deltas[1].requests, deltas[1].failures),
        (b, 1_001, 1)
    );
    assert!(
        counters.flush().await.unwrap().is_empty(),
        "a flush takes everything"
    );
}

/// The whole config-events contract: every subscriber gets every change, in order, unless it is
/// told to resync (the port's promise when messages may have been lost, e.g. over a reconnect).
/// A round that saw a resync proves nothing either way and is played again; a round without one
/// must deliver everything.
pub async fn config_events(events: &dyn ConfigEvents) {
    const ROUNDS: usize = 5;
    for _ in 0..ROUNDS {
        if config_events_round(events).await == Round::Delivered {
            return;
        }
    }
    panic!("every one of {ROUNDS} rounds was interrupted by a resync");
}

/// How one round of the config-events contract ended.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    Delivered,
    Resynced,
}

async fn config_events_round(events: &dyn ConfigEvents) -> Round {
    // Generous: this bounds a hang, it does not measure speed (CI machines run loaded).
    const WAIT: Duration = Duration::from_secs(15);
    let mut first = events.subscribe().await.expect("subscribe");
    let mut second = events.subscribe().await.expect("subscribe twice");
    let suffix = unique_suffix();
    let changes: Vec<ConfigChange> = (0..3)
        .map(|i| ConfigChange {
            config_id: ProxyConfigId(i),
            slugs: vec![format!("events-{suffix}-{i}").parse().unwrap()],
        })
        .collect();
    for change in &changes {
        events.publish(change.clone()).await.expect("publish");
    }
    for subscriber in [&mut first, &mut second] {
        let mut received = Vec::new();
        while received.len() < changes.len() {
            match within(WAIT, subscriber.next()).await {
                Some(Some(ConfigNotice::Changed(change))) => {
                    if change
                        .slugs
                        .first()
                        .is_some_and(|s| s.as_str().contains(&suffix))
                    {
                        received.push(change);
                    }
                }
                Some(Some(ConfigNotice::Resync)) => return Round::Resynced,
                Some(None) => panic!("subscription ended"),
                None => panic!(
                    "a published change did not arrive within {WAIT:?}, and no resync was \
                     sent: got {received:?}"
                ),
            }
        }
        assert_eq!(
            received, changes,
            "every subscriber gets every change, in order"
        );
    }
    Round::Delivered
}

/// The whole leases contract: one holder at a time, renewal, release, and takeover on expiry.
pub async fn leases(leases: &dyn Leases) {
    let name = format!("contract-lease-{}", unique_suffix());
    let ttl = Duration::from_millis(300);
    assert!(
        leases.acquire(&name, "a", ttl).await.expect("acquire"),
        "a free lease is taken"
    );
    assert!(
        leases.acquire(&name, "a", ttl).await.unwrap(),
        "the holder renews"
    );
    assert!(
        !leases.acquire(&name, "b", ttl).await.unwrap(),
        "another holder is refused"
    );
    leases
        .release(&name, "b")
        .await
        .expect("releasing a lease one does not hold is a no-op");
    assert!(
        !leases.acquire(&name, "b", ttl).await.unwrap(),
        "still held by a"
    );
    leases.release(&name, "a").await.unwrap();
    assert!(
        leases.acquire(&name, "b", ttl).await.unwrap(),
        "a released lease is free"
    );
    std::thread::sleep(Duration::from_millis(450));
    assert!(
        leases.acquire(&name, "c", ttl).await.unwrap(),
        "an expired lease is taken over"
    );
    leases.release(&name, "c").await.unwrap();
}

/// Runs `future` for at most `limit`, without depending on an async runtime's timer.
async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let deadline = Deadline::new(limit);
    let mut future = std::pin::pin!(future);
    let mut deadline = std::pin::pin!(deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        deadline.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// A future that completes after a delay, woken by a plain thread.
struct Deadline {
    shared: Arc<Mutex<(bool, Option<Waker>)>>,
}

impl Deadline {
    fn new(limit: Duration) -> Self {
        let shared = Arc::new(Mutex::new((false, None::<Waker>)));
        let timer = shared.clone();
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            let mut state = timer.lock().unwrap();
            state.0 = true;
            if let Some(waker) = state.1.take() {
                waker.wake();
            }
        });
        Deadline { shared }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.shared.lock().unwrap();
        if state.0 {
            Poll::Ready(())
        } else {
            state.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

fn client_spec(name: &str, allowed: Vec<i64>) -> crate::model::ClientKeySpec {
    crate::command::ClientKeyInput {
        name: Some(name.to_owned()),
        expires_at: Some("2031-05-04T03:02:01Z".into()),
        allowed_config_ids: Some(allowed),
        rpm: Some(60),
        tpm: Some(100_000),
        max_concurrency: Some(3),
        token_budget: Some(1_000_000),
        budget_period: Some("month".into()),
        ..Default::default()
    }
    .validate()
    .unwrap()
}

fn issued(byte: u8, prefix: &str) -> crate::model::IssuedSecret {
    crate::model::IssuedSecret {
        digest: crate::model::SecretDigest([byte; 32]),
        prefix: prefix.to_owned(),
    }
}

/// The whole client-key store contract (SPEC §7).
pub async fn client_key_store(store: &dyn crate::ports::ClientKeyStore) {
    use crate::model::{BudgetPeriod, ClientKeyId, ClientUsageDelta};
    let suffix = unique_suffix();
    let name = format!("contract client {suffix}");
    let created = store
        .create_client_key(client_spec(&name, vec![2, 1]), issued(7, "akr-abcd"))
        .await
        .expect("a client key is created");
    assert_eq!(
        created.spec,
        client_spec(&name, vec![1, 2]),
        "every field is kept"
    );
    assert_eq!(created.digest, crate::model::SecretDigest([7; 32]));
    assert_eq!(created.key_prefix, "akr-abcd");
    assert_eq!(created.usage, crate::model::ClientKeyUsage::default());
    let read = store.get_client_key(created.id).await.unwrap();
    assert_eq!(read, created, "a read gives back what was created");
    assert!(
        store
            .list_client_keys()
            .await
            .unwrap()
            .iter()
            .any(|k| k.id == created.id),
        "the list holds the new key"
    );
    assert_conflict(
        store
            .create_client_key(client_spec(&name, vec![]), issued(8, "akr-efgh"))
            .await,
        "name",
        "a second client key with the same name",
    );

    // Replace keeps the secret and the usage; rotate keeps everything else.
    let mut spec = client_spec(&format!("{name} renamed"), vec![]);
    spec.is_active = false;
    spec.expires_at = None;
    spec.limits = crate::model::ClientLimits::default();
    let replaced = store
        .replace_client_key(created.id, spec.clone())
        .await
        .unwrap();
    assert_eq!(replaced.spec, spec);
    assert_eq!(replaced.digest, created.digest);
    assert_eq!(replaced.created_at, created.created_at);
    let rotated = store
        .rotate_client_key(created.id, issued(9, "akr-ijkl"))
        .await
        .unwrap();
    assert_eq!(rotated.digest, crate::model::SecretDigest([9; 32]));
    assert_eq!(rotated.key_prefix, "akr-ijkl");
    assert_eq!(rotated.spec, spec);

    // Usage adds up per budget period.
    let day1 = BudgetPeriod::Day.start("2026-12-06T10:00:00Z".parse().unwrap());
    let day2 = BudgetPeriod::Day.start("2026-12-07T10:00:00Z".parse().unwrap());
    let used_at = "2026-12-06T10:00:05Z".parse().unwrap();
    let mut delta = ClientUsageDelta::new(created.id);
    delta.requests = 3;
    delta.tokens = 40;
    delta.budget_tokens = 40;
    delta.budget_period_start = Some(day1);
    delta.last_used_at = Some(used_at);
    let gone = ClientUsageDelta {
        key_id: ClientKeyId(i64::MAX - 1),
        ..delta
    };
    store
        .apply_client_usage(&[delta, gone])
        .await
        .expect("usage of a missing key is dropped");
    store.apply_client_usage(&[delta]).await.unwrap();
    let usage = store.get_client_key(created.id).await.unwrap().usage;
    assert_eq!(
        (usage.request_count, usage.token_count, usage.budget_used),
        (6, 80, 80),
        "usage adds up"
    );
    assert_eq!(usage.budget_period_start, Some(day1));
    assert_eq!(usage.last_used_at, Some(used_at));
    delta.budget_period_start = Some(day2);
    store.apply_client_usage(&[delta]).await.unwrap();
    let usage = store.get_client_key(created.id).await.unwrap().usage;
    assert_eq!(
        (usage.budget_used, usage.budget_period_start),
        (40, Some(day2)),
        "a new period starts the budget again"
    );

    let deleted = store.delete_client_key(created.id).await.unwrap();
    assert_eq!(deleted.id, created.id);
    assert_not_found(
        store.get_client_key(created.id).await,
        Entity::ClientKey,
        "a deleted client key",
    );
    assert_not_found(
        store.delete_client_key(created.id).await,
        Entity::ClientKey,
        "deleting twice",
    );
    assert_not_found(
        store.replace_client_key(created.id, spec).await,
        Entity::ClientKey,
        "replacing a deleted client key",
    );
    assert_not_found(
        store
            .rotate_client_key(created.id, issued(1, "akr-x"))
            .await,
        Entity::ClientKey,
        "rotating a deleted client key",
    );
}

/// The client limiter contract: the rules of [`crate::client_limits`] through the port, on
/// fresh key ids.
pub async fn client_limiter(limiter: &dyn crate::ports::ClientLimiter) {
    use crate::{
        client_limits::LimitKind,
        model::{BudgetPeriod, ClientKeyId, ClientLimits, TokenBudget},
        ports::Admission,
    };
    limiter.ping().await.expect("ping answers");
    let base = unique_id_base();
    let now = Utc::now();
    let refused = |admission: Admission| match admission {
        Admission::Refused(refusal) => Some(refusal),
        Admission::Admitted(_) => None,
    };

    // rpm: a burst admits exactly rpm.
    let key = ClientKeyId(base + 1);
    let limits = ClientLimits {
        rpm: Some(5),
        ..ClientLimits::default()
    };
    let mut admitted = 0;
    for _ in 0..8 {
        if refused(limiter.admit(key, &limits, 0, now).await.unwrap()).is_none() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5, "a burst admits exactly rpm");
    let refusal = refused(limiter.admit(key, &limits, 0, now).await.unwrap()).expect("over rpm");
    assert_eq!(refusal.kind, LimitKind::Requests);
    assert_eq!(refusal.retry_after_seconds, 12);
    assert!(
        refused(
            limiter
                .admit(key, &limits, 0, now + TimeDelta::seconds(12))
                .await
                .unwrap()
        )
        .is_none(),
        "admitted again once Retry-After passed"
    );

    // Concurrency: slots are taken and given back.
    let key = ClientKeyId(base + 2);
    let limits = ClientLimits {
        max_concurrency: Some(2),
        ..ClientLimits::default()
    };
    let Admission::Admitted(Some(first)) = limiter.admit(key, &limits, 0, now).await.unwrap()
    else {
        panic!("the first request gets a slot")
    };
    let Admission::Admitted(Some(_second)) = limiter.admit(key, &limits, 0, now).await.unwrap()
    else {
        panic!("the second request gets a slot")
    };
    let refusal =
        refused(limiter.admit(key, &limits, 0, now).await.unwrap()).expect("no third slot");
    assert_eq!(refusal.kind, LimitKind::Concurrency);
    limiter.release(key, first).await.unwrap();
    assert!(
        matches!(
            limiter.admit(key, &limits, 0, now).await.unwrap(),
            Admission::Admitted(Some(_))
        ),
        "a released slot is free again"
    );

    // Tokens per minute and the budget, charged after the fact.
    let key = ClientKeyId(base + 3);
    let limits = ClientLimits {
        tpm: Some(600),
        ..ClientLimits::default()
    };
    limiter
        .record_tokens(key, &limits, 660, 0, now)
        .await
        .unwrap();
    let refusal = refused(limiter.admit(key, &limits, 0, now).await.unwrap()).expect("over tpm");
    assert_eq!(refusal.kind, LimitKind::Tokens);
    assert!(
        refused(
            limiter
                .admit(key, &limits, 0, now + TimeDelta::seconds(7))
                .await
                .unwrap()
        )
        .is_none(),
        "the token bucket drains"
    );
    let key = ClientKeyId(base + 4);
    let limits = ClientLimits {
        budget: Some(TokenBudget {
            tokens: 100,
            period: BudgetPeriod::Day,
        }),
        ..ClientLimits::default()
    };
    assert!(refused(limiter.admit(key, &limits, 60, now).await.unwrap()).is_none());
    limiter
        .record_tokens(key, &limits, 40, 60, now)
        .await
        .unwrap();
    let refusal =
        refused(limiter.admit(key, &limits, 0, now).await.unwrap()).expect("budget spent");
    assert_eq!(refusal.kind, LimitKind::Budget);
    assert!(
        refused(
            limiter
                .admit(key, &limits, 0, now + TimeDelta::days(1))
                .await
                .unwrap()
        )
        .is_none(),
        "a new day starts the budget again"
    );
}
