//! `GET /admin/proxy-configs/{id}/keys` a page at a time: limits, cursors, the health and
//! active filters, the errors of a bad query, and a store read bounded by the page.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use reqwest::Method;
use serde_json::Value;

use crate::{
    helpers::{Behavior, MockUpstream, TestApp, spawn_app, spawn_app_wrapping_store},
    hot_path::CountingStore,
};

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["id"].as_i64().unwrap())
        .collect()
}

async fn config_with_keys(app: &TestApp, slug: &str, count: usize) -> i64 {
    let id = app
        .generic_config(slug, "GET", "https://api.example.com", "header", "X-Key")
        .await;
    let keys: Vec<String> = (0..count).map(|i| format!("sk-{slug}-{i:06}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let report = app.add_keys(id, &keys).await;
    assert_eq!(report["success_count"], count, "{report}");
    id
}

#[tokio::test]
async fn a_pool_is_read_in_pages_of_at_most_a_thousand_keys() {
    let key_rows = Arc::new(AtomicUsize::new(0));
    let counter = key_rows.clone();
    let app = spawn_app_wrapping_store(&[], |inner| {
        Arc::new(CountingStore {
            inner,
            snapshot_loads: Arc::default(),
            key_rows: counter,
        })
    })
    .await;
    let id = config_with_keys(&app, "paged", 2_500).await;

    key_rows.store(0, Ordering::SeqCst);
    let (status, first) = app.list_keys_page(id, "").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(ids(&first).len(), 1_000, "the default limit is 1 000");
    assert!(
        key_rows.load(Ordering::SeqCst) <= 1_001,
        "the store read one page and one key more, not the pool: {}",
        key_rows.load(Ordering::SeqCst)
    );
    let key = &first["items"][0];
    assert!(key["key_value"].as_str().unwrap().contains("****"), "{key}");
    assert_eq!(key["health"], "ok");

    let cursor = first["next_cursor"].as_str().expect("a second page");
    let (_, second) = app.list_keys_page(id, &format!("cursor={cursor}")).await;
    assert_eq!(
        ids(&second)[0],
        ids(&first)[999] + 1,
        "pages follow each other"
    );
    let all = app.list_keys(id).await;
    let mut seen: Vec<i64> = all.iter().map(|k| k["id"].as_i64().unwrap()).collect();
    assert_eq!(seen.len(), 2_500);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered by id");
    seen.dedup();
    assert_eq!(seen.len(), 2_500, "no key twice");

    let (_, small) = app.list_keys_page(id, "limit=2").await;
    assert_eq!(ids(&small), seen[..2]);
    assert_eq!(small["next_cursor"], seen[1].to_string());
    let last = seen[2_499];
    let (_, end) = app
        .list_keys_page(id, &format!("limit=5&cursor={}", seen[2_497]))
        .await;
    assert_eq!(ids(&end), [seen[2_498], last]);
    assert!(end["next_cursor"].is_null(), "no key follows the last page");
    let (_, exact) = app
        .list_keys_page(id, &format!("limit=2&cursor={}", seen[2_497]))
        .await;
    assert!(
        exact["next_cursor"].is_null(),
        "a page that ends with the pool has no cursor"
    );
}

#[tokio::test]
async fn keys_are_filtered_by_live_health_and_switch() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on("k-limited", Behavior::Status(429, "{}", vec![]));
    let id = app
        .generic_config("filtered", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["k-limited", "k-good", "k-off"]).await;
    // A batch is stored in the order given, so ids follow it.
    let all = app.list_keys(id).await;
    let off = all[2]["id"].as_i64().unwrap();
    app.admin(Method::PATCH, &format!("/keys/{off}"))
        .json(&serde_json::json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        app.proxy(Method::GET, "/proxy/filtered/x")
            .send()
            .await
            .unwrap();
    }
    let limited = all[0]["id"].as_i64().unwrap();

    let (_, cooling) = app.list_keys_page(id, "health=cooling").await;
    assert_eq!(ids(&cooling), [limited], "{cooling}");
    assert!(cooling["items"][0]["cooldown_until"].is_string());
    let (_, ok) = app.list_keys_page(id, "health=ok&is_active=true").await;
    assert_eq!(ids(&ok), [all[1]["id"].as_i64().unwrap()], "{ok}");
    let (_, inactive) = app.list_keys_page(id, "is_active=false").await;
    assert_eq!(ids(&inactive), [off]);
    let (_, failed) = app.list_keys_page(id, "health=failed").await;
    assert!(ids(&failed).is_empty());
    assert!(failed["next_cursor"].is_null());
    let (_, any) = app.list_keys_page(id, "health=&is_active=").await;
    assert_eq!(ids(&any).len(), 3, "empty filters mean any");
}

#[tokio::test]
async fn a_bad_query_is_a_clear_json_error() {
    let app = spawn_app().await;
    let id = config_with_keys(&app, "strict", 3).await;
    for (query, status, code, field) in [
        ("limit=0", 422, "invalid_fields", Some("limit")),
        ("limit=1001", 422, "invalid_fields", Some("limit")),
        ("limit=ten", 422, "invalid_fields", Some("limit")),
        ("health=sick", 422, "invalid_fields", Some("health")),
        ("is_active=maybe", 422, "invalid_fields", Some("is_active")),
        ("cursor=abc", 400, "invalid_cursor", None),
        ("cursor=-1", 400, "invalid_cursor", None),
    ] {
        let (actual, body) = app.list_keys_page(id, query).await;
        assert_eq!(actual, status, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 5);
        if let Some(field) = field {
            assert_eq!(body["error"]["fields"][0]["field"], field, "{query}");
        }
    }
    let (status, body) = app.list_keys_page(999_999, "limit=5").await;
    assert_eq!((status, &body["error"]["code"]), (404, &"not_found".into()));
}

#[tokio::test]
async fn key_counts_cover_every_config_from_one_query() {
    let app = spawn_app().await;
    let big = config_with_keys(&app, "counted", 1_500).await;
    let small = config_with_keys(&app, "few", 2).await;
    let empty = config_with_keys(&app, "none", 0).await;
    let first = app.list_keys_page(small, "limit=1").await.1["items"][0]["id"]
        .as_i64()
        .unwrap();
    app.admin(Method::PATCH, &format!("/keys/{first}"))
        .json(&serde_json::json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    let counts: Value = app
        .admin(Method::GET, "/key-counts")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let of = |config: i64| {
        counts["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["proxy_config_id"] == config)
            .cloned()
    };
    let big = of(big).unwrap();
    assert_eq!(
        (big["total"].as_u64(), big["ok"].as_u64()),
        (Some(1_500), Some(1_500))
    );
    let small = of(small).unwrap();
    assert_eq!(
        (
            small["total"].as_u64(),
            small["ok"].as_u64(),
            small["disabled"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert!(of(empty).is_none(), "configs without keys are left out");
    let status = app
        .client
        .get(app.url("/admin/key-counts"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401, "admin only");
}
