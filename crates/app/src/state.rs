//! The state every worker shares: the domain services over the wired ports, the snapshot cache,
//! the proxy keys and the metrics; plus the per-worker upstream HTTP client.

use std::sync::Arc;

use cache_memory::SnapshotCache;
use domain::{
    AdminService, ConfigEvents, ConfigSnapshot, KeyHealth, ProxyKeySet, ProxyStore, RotationState,
    Rotator, Slug, UsageCounters,
};
use secrecy::ExposeSecret;

use crate::{
    completion::ExchangeObservers, config::Settings, errors::ApiError, hop::HopMarker,
    inbound::BodyLimits, metrics::Metrics,
};

/// Shared by every worker.
pub struct AppState {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// Admin use cases.
    pub admin: AdminService,
    /// Key selection and outcome handling.
    pub rotator: Rotator,
    /// Durable store (never called per proxied request).
    pub store: Arc<dyn ProxyStore>,
    /// Live rotation state.
    pub rotation: Arc<dyn RotationState>,
    /// Usage counters.
    pub usage: Arc<dyn UsageCounters>,
    /// Change notifications.
    pub events: Arc<dyn ConfigEvents>,
    /// Leases of single-instance background jobs.
    pub leases: Arc<dyn domain::Leases>,
    /// Active configs by slug, read by the hot path.
    pub snapshots: Arc<SnapshotCache>,
    /// The proxy keys clients present.
    pub proxy_keys: ProxyKeySet,
    /// Metrics.
    pub metrics: Metrics,
    /// Limits of the request bodies the proxies buffer.
    pub bodies: BodyLimits,
    /// This deployment's loop-protection marker.
    pub hop: HopMarker,
    /// Told about every finished proxied exchange.
    pub exchange_observers: ExchangeObservers,
    /// The request log, for the admin API (the proxies reach it only through the queue).
    pub request_log: Arc<dyn domain::RequestLog>,
    /// Client keys: directory, admission and usage (SPEC §7).
    pub client_keys: Arc<crate::client_keys::ClientKeys>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// The proxy keys from the settings.
    pub fn proxy_key_set(settings: &Settings) -> ProxyKeySet {
        ProxyKeySet::new(settings.proxy_keys.iter().map(|k| k.expose_secret()))
    }

    /// Who presented `presented` as a proxy key: a global proxy key (compared in constant time)
    /// or a client key (looked up by digest in memory).
    ///
    /// # Errors
    /// 401 with `invalid` for an unknown key, or the client key's own 401 (disabled, expired).
    pub fn authenticate(
        &self,
        presented: &str,
        invalid: &'static str,
    ) -> Result<crate::client_keys::Caller, ApiError> {
        use crate::client_keys::Caller;
        if self.proxy_keys.verify(presented) {
            return Ok(Caller::Global);
        }
        match self.client_keys.authenticate(presented) {
            Some(entry) => entry.map(Caller::Client),
            None => Err(ApiError::unauthorized(invalid)),
        }
    }

    /// The active config with this slug, from the snapshot cache; the store is read only on a
    /// miss (the first request after start-up or after a change), once for concurrent misses.
    ///
    /// # Errors
    /// 404 when no active config has this slug; 503 when the store is needed and down.
    pub async fn active_config(&self, slug: &str) -> Result<Arc<ConfigSnapshot>, ApiError> {
        let not_found =
            || ApiError::not_found(format!("no active proxy config with slug {slug:?}"));
        if let Some(hit) = self.snapshots.get(slug) {
            return hit.ok_or_else(not_found);
        }
        let slug: Slug = slug.parse().map_err(|_| not_found())?;
        let cached = match self.snapshots.get(slug.as_str()) {
            Some(hit) => hit,
            None => {
                let store = self.store.clone();
                let key = slug.clone();
                self.snapshots
                    .get_or_load(&slug, move || async move {
                        store.active_config_by_slug(&key).await
                    })
                    .await?
            }
        };
        cached.ok_or_else(not_found)
    }

    /// Follows up a settled failover decision: a new health is persisted off the request path
    /// (the live state already has it); a rotation state that could not apply it is logged, and
    /// the request goes on.
    pub fn record_health(&self, key: &domain::ApiKey, health: &domain::Result<Option<KeyHealth>>) {
        match health {
            Ok(Some(health)) => {
                if *health == KeyHealth::Failed {
                    tracing::warn!(key_id = %key.id, key = %key.key_value, "upstream key taken out of rotation");
                }
                self.persist_health(key.id, *health);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(key_id = %key.id, %error, "key health could not be updated");
            }
        }
    }

    /// Persists a key's new health off the request path; the live state is already updated.
    fn persist_health(&self, key: domain::ApiKeyId, health: KeyHealth) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.set_key_health(key, health).await {
                tracing::warn!(key_id = %key, %error, "key health could not be saved; it is still applied live");
            }
        });
    }
}
