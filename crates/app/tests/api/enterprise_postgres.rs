//! The enterprise edition on PostgreSQL: the cases of `enterprise.rs` that exercise the store,
//! with `DATABASE_URL` on the PostgreSQL that `TEST_POSTGRES_URL` names and Redis on
//! `TEST_REDIS_URL`. Two instances share one pool and its health, an admin change on one
//! reaches the other, batch imports and usage flushes land in PostgreSQL, and proxying rides
//! out a database outage. Prints a `skipped:` line when either URL is unset.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    helpers::{Behavior, MockUpstream, TestApp, spawn_app_with},
    relay::Relay,
};

struct Shared {
    postgres: String,
    redis: String,
    namespace: String,
}

fn shared() -> Option<Shared> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (var("TEST_POSTGRES_URL"), var("TEST_REDIS_URL")) {
        (Some(postgres), Some(redis)) => Some(Shared {
            postgres,
            redis,
            namespace: format!("akr-pg-e2e-{}", domain::contract::unique_suffix()),
        }),
        _ => {
            eprintln!("skipped: TEST_POSTGRES_URL or TEST_REDIS_URL unset");
            None
        }
    }
}

async fn instance(shared: &Shared) -> TestApp {
    instance_on(shared, &shared.postgres, &[]).await
}

async fn instance_on(shared: &Shared, postgres: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![
        ("DATABASE_URL", postgres),
        ("REDIS_URL", shared.redis.as_str()),
        ("REDIS_NAMESPACE", shared.namespace.as_str()),
    ];
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", domain::contract::unique_suffix())
}

async fn generic_with_keys(app: &TestApp, slug: &str, target: &str, keys: &[&str]) -> i64 {
    let id = app
        .generic_config(slug, "GET", target, "header", "X-Api-Key")
        .await;
    let report = app.add_keys(id, keys).await;
    assert_eq!(report["success_count"], keys.len());
    id
}

#[tokio::test]
async fn the_store_is_postgres_and_two_instances_share_one_rotation() {
    let Some(shared) = shared() else { return };
    let (a, b) = (instance(&shared).await, instance(&shared).await);
    let ready: Value = a
        .client
        .get(a.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&ready["status"], &ready["database"]),
        (&json!("ready"), &json!("ok"))
    );
    let mock = MockUpstream::start().await;
    let slug = unique("pg-fleet");
    generic_with_keys(&a, &slug, &mock.base, &["k1", "k2", "k3"]).await;
    // The config is a row of the PostgreSQL database, not of some local file.
    let direct = storage_postgres::PostgresStore::connect(storage_postgres::PostgresOptions::new(
        shared.postgres.as_str(),
    ))
    .await
    .expect("TEST_POSTGRES_URL is set, so PostgreSQL must be reachable");
    let configs = domain::ProxyStore::list_configs(&direct).await.unwrap();
    assert!(configs.iter().any(|c| c.slug.as_str() == slug));
    direct.close().await.unwrap();
    let path = format!("/proxy/{slug}/x");
    for i in 0..300 {
        let app = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            app.proxy(Method::GET, &path).send().await.unwrap().status(),
            200
        );
    }
    let used = mock.keys_used();
    for key in ["k1", "k2", "k3"] {
        assert_eq!(used[key], 100, "{used:?}");
    }
}

#[tokio::test]
async fn an_admin_change_on_one_instance_reaches_the_other_within_200_ms() {
    let Some(shared) = shared() else { return };
    let (a, b) = (instance(&shared).await, instance(&shared).await);
    let mock = MockUpstream::start().await;
    let slug = unique("pg-notice");
    let id = generic_with_keys(&a, &slug, &mock.base, &["k1"]).await;
    let path = format!("/proxy/{slug}/x");
    assert_eq!(
        b.proxy(Method::GET, &path).send().await.unwrap().status(),
        200,
        "B caches the snapshot"
    );
    let changed = a
        .admin(Method::PUT, &format!("/proxy-configs/{id}/status"))
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let written = Instant::now();
    while b.proxy(Method::GET, &path).send().await.unwrap().status() != 404 {
        assert!(
            written.elapsed() < Duration::from_millis(200),
            "B still served the config after 200 ms"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn health_and_usage_taken_on_one_instance_are_stored_and_read_on_the_other() {
    let Some(shared) = shared() else { return };
    let (a, b) = (instance(&shared).await, instance(&shared).await);
    let mock = MockUpstream::start().await;
    mock.on(
        "limited",
        Behavior::Status(429, "{}", vec![("retry-after", "300")]),
    );
    mock.on("revoked", Behavior::Status(401, "{}", vec![]));
    let slug = unique("pg-health");
    let id = generic_with_keys(&a, &slug, &mock.base, &["limited", "revoked", "good"]).await;
    let path = format!("/proxy/{slug}/x");
    assert_eq!(
        a.proxy(Method::GET, &path).send().await.unwrap().status(),
        200
    );
    for _ in 0..20 {
        assert_eq!(
            b.proxy(Method::GET, &path).send().await.unwrap().status(),
            200
        );
    }
    let used = mock.keys_used();
    assert_eq!(
        (used["limited"], used["revoked"], used["good"]),
        (1, 1, 21),
        "B skips both keys A took out"
    );
    // Usage is flushed to PostgreSQL every second (USAGE_FLUSH_SECONDS=1 in tests).
    let flushed = Instant::now();
    loop {
        let keys = b.list_keys(id).await;
        let health: Vec<&Value> = keys.iter().map(|k| &k["health"]).collect();
        let requests: u64 = keys
            .iter()
            .map(|k| k["request_count"].as_u64().unwrap())
            .sum();
        if requests == 23 {
            assert_eq!(health, [&json!("cooling"), &json!("failed"), &json!("ok")]);
            break;
        }
        assert!(
            flushed.elapsed() < Duration::from_secs(10),
            "usage reached PostgreSQL: {requests} of 23 requests counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_batch_import_of_ten_thousand_keys_lands_once() {
    let Some(shared) = shared() else { return };
    // 10 000 keys are about 200 KB of JSON.
    let a = instance_on(&shared, &shared.postgres, &[("MAX_BODY_BYTES", "1048576")]).await;
    let mock = MockUpstream::start().await;
    let slug = unique("pg-batch");
    let id = a
        .generic_config(&slug, "GET", &mock.base, "header", "X-Api-Key")
        .await;
    let keys: Vec<String> = (0..10_000).map(|i| format!("sk-pg-batch-{i:05}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let report = a.add_keys(id, &keys).await;
    assert_eq!(
        (&report["success_count"], &report["skipped_count"]),
        (&json!(10_000), &json!(0)),
        "{report}"
    );
    let again = a.add_keys(id, &keys[..500]).await;
    assert_eq!(again["skipped_count"], 500, "{again}");
    assert_eq!(a.list_keys(id).await.len(), 10_000);
}

#[tokio::test]
async fn proxying_survives_a_database_outage_and_admin_writes_say_so() {
    let Some(shared) = shared() else { return };
    let url = url::Url::parse(&shared.postgres).unwrap();
    let relay = Relay::start(format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap_or(5432)
    ))
    .await;
    let mut through = url.clone();
    through.set_port(Some(relay.port)).unwrap();
    let a = instance_on(&shared, through.as_str(), &[]).await;
    let mock = MockUpstream::start().await;
    let slug = unique("pg-cut");
    generic_with_keys(&a, &slug, &mock.base, &["k1", "k2"]).await;
    let path = format!("/proxy/{slug}/x");
    assert_eq!(
        a.proxy(Method::GET, &path).send().await.unwrap().status(),
        200
    );

    relay.cut();
    for _ in 0..10 {
        assert_eq!(
            a.proxy(Method::GET, &path).send().await.unwrap().status(),
            200,
            "served from the snapshot"
        );
    }
    let write = a
        .create_config(&json!({"name": unique("during"), "slug": unique("during"), "config_type": "LLM", "target_base_url": mock.base}))
        .await;
    assert_eq!(write.status(), 503);
    let body: Value = write.json().await.unwrap();
    assert_eq!(body["error"]["code"], "dependency_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database"),
        "{body}"
    );

    relay.restore();
    let restored = Instant::now();
    loop {
        let write = a
            .create_config(&json!({"name": unique("after"), "slug": unique("after"), "config_type": "LLM", "target_base_url": mock.base}))
            .await;
        if write.status() == 201 {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(15),
            "admin writes recover without a restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        a.proxy(Method::GET, &path).send().await.unwrap().status(),
        200
    );
}
