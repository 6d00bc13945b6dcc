//! The proxy hot path reads the snapshot cache only: no store call (and, with `ENCRYPTION_KEY`,
//! no decryption) per proxied request, and an admin write is seen by the very next request.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use app::{Application, wiring};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{
    ApiKey, ApiKeyId, ConfigSnapshot, InsertedKeys, KeyCount, KeyHealth, KeyRange, KeySecret,
    ProxyConfig, ProxyConfigId, ProxyConfigSpec, ProxyStore, Result, Slug, UsageDelta,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_PASSWORD, MockUpstream, PROXY_KEY, test_settings};

/// Delegates to the real store and counts snapshot loads, and the key rows the store reads for
/// the admin API and the metrics.
pub(crate) struct CountingStore {
    pub(crate) inner: Arc<dyn ProxyStore>,
    pub(crate) snapshot_loads: Arc<AtomicUsize>,
    pub(crate) key_rows: Arc<AtomicUsize>,
}

#[async_trait]
impl ProxyStore for CountingStore {
    async fn create_config(&self, spec: ProxyConfigSpec) -> Result<ProxyConfig> {
        self.inner.create_config(spec).await
    }
    async fn list_configs(&self) -> Result<Vec<ProxyConfig>> {
        self.inner.list_configs().await
    }
    async fn get_config(&self, id: ProxyConfigId) -> Result<ProxyConfig> {
        self.inner.get_config(id).await
    }
    async fn replace_config(
        &self,
        id: ProxyConfigId,
        spec: ProxyConfigSpec,
    ) -> Result<ProxyConfig> {
        self.inner.replace_config(id, spec).await
    }
    async fn set_config_active(&self, id: ProxyConfigId, is_active: bool) -> Result<ProxyConfig> {
        self.inner.set_config_active(id, is_active).await
    }
    async fn delete_config(&self, id: ProxyConfigId) -> Result<ProxyConfig> {
        self.inner.delete_config(id).await
    }
    async fn list_keys(&self, config: ProxyConfigId) -> Result<Vec<ApiKey>> {
        let keys = self.inner.list_keys(config).await?;
        self.key_rows.fetch_add(keys.len(), Ordering::SeqCst);
        Ok(keys)
    }
    async fn list_key_range(&self, config: ProxyConfigId, range: KeyRange) -> Result<Vec<ApiKey>> {
        let keys = self.inner.list_key_range(config, range).await?;
        self.key_rows.fetch_add(keys.len(), Ordering::SeqCst);
        Ok(keys)
    }
    async fn count_keys(&self, now: DateTime<Utc>) -> Result<Vec<KeyCount>> {
        self.inner.count_keys(now).await
    }
    async fn get_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        self.inner.get_key(id).await
    }
    async fn add_key(
        &self,
        config: ProxyConfigId,
        key: KeySecret,
        is_active: bool,
    ) -> Result<ApiKey> {
        self.inner.add_key(config, key, is_active).await
    }
    async fn add_keys(
        &self,
        config: ProxyConfigId,
        keys: Vec<KeySecret>,
        is_active: bool,
    ) -> Result<InsertedKeys> {
        self.inner.add_keys(config, keys, is_active).await
    }
    async fn clear_keys(&self, config: ProxyConfigId) -> Result<u64> {
        self.inner.clear_keys(config).await
    }
    async fn set_key_active(&self, id: ApiKeyId, is_active: bool) -> Result<ApiKey> {
        self.inner.set_key_active(id, is_active).await
    }
    async fn delete_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        self.inner.delete_key(id).await
    }
    async fn active_config_by_slug(&self, slug: &Slug) -> Result<Option<ConfigSnapshot>> {
        self.snapshot_loads.fetch_add(1, Ordering::SeqCst);
        self.inner.active_config_by_slug(slug).await
    }
    async fn apply_usage(&self, deltas: &[UsageDelta]) -> Result<()> {
        self.inner.apply_usage(deltas).await
    }
    async fn set_key_health(&self, id: ApiKeyId, health: KeyHealth) -> Result<()> {
        self.inner.set_key_health(id, health).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

#[tokio::test]
async fn proxied_requests_read_the_snapshot_cache_not_the_store() {
    proxied_requests_load_one_snapshot_per_change(&[]).await;
}

/// With `ENCRYPTION_KEY` the store decrypts a config's keys when it loads the snapshot, so one
/// load per change also means one decryption per change, never one per request.
#[tokio::test]
async fn with_encrypted_keys_a_snapshot_load_decrypts_once_for_every_request() {
    proxied_requests_load_one_snapshot_per_change(&[("ENCRYPTION_KEY", crate::encryption::KEY_A)])
        .await;
}

async fn proxied_requests_load_one_snapshot_per_change(extra: &[(&str, &str)]) {
    let data = tempfile::tempdir().unwrap();
    let mut variables = vec![("USAGE_FLUSH_SECONDS", "3600")];
    variables.extend_from_slice(extra);
    let settings = test_settings(data.path(), &variables);
    let mut ports = wiring::connect(&settings).await.unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    ports.store = Arc::new(CountingStore {
        inner: ports.store,
        snapshot_loads: loads.clone(),
        key_rows: Arc::default(),
    });
    let application = Application::build_with_ports(settings, ports)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until_stopped());
    let client = reqwest::Client::new();
    let token = client
        .post(format!("{base}/admin/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mock = MockUpstream::start().await;
    let config: Value = client
        .post(format!("{base}/admin/proxy-configs"))
        .bearer_auth(&token)
        .json(
            &json!({"name": "hot", "slug": "hot", "config_type": "GENERIC", "method": "GET",
            "target_url": mock.base, "api_key_location": "header", "api_key_name": "X-Api-Key"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = config["id"].as_i64().unwrap();
    client
        .post(format!("{base}/admin/proxy-configs/{id}/keys"))
        .bearer_auth(&token)
        .json(&json!({"key_value": "first"}))
        .send()
        .await
        .unwrap();

    let proxy = |client: &reqwest::Client| {
        client
            .request(Method::GET, format!("{base}/proxy/hot/x"))
            .header("X-Proxy-Key", PROXY_KEY)
    };
    for _ in 0..50 {
        assert_eq!(proxy(&client).send().await.unwrap().status(), 200);
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "one load after the last change, none per request"
    );

    // An admin write is seen by the very next proxied request.
    client
        .patch(format!("{base}/admin/keys/{}", 1))
        .bearer_auth(&token)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{base}/admin/proxy-configs/{id}/keys"))
        .bearer_auth(&token)
        .json(&json!({"key_value": "second"}))
        .send()
        .await
        .unwrap();
    let before = mock.received().len();
    assert_eq!(proxy(&client).send().await.unwrap().status(), 200);
    assert_eq!(
        mock.received()[before].key,
        "second",
        "the disabled key is not used"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}
