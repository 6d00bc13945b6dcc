//! Key probes: a cheap real request with one key (the admin's test route, and the background
//! re-probe of failed keys), classified like any proxied attempt; success puts the key back in
//! rotation.

use std::time::Instant;

use chrono::{DateTime, Utc};
use domain::{ApiKey, ConfigKind, KeyHealth, Outcome, ProxyConfig, UpstreamResponse, Verdict};
use serde::Serialize;

use crate::{
    state::AppState,
    upstream::{Target, UpstreamClient},
};

/// What a probe found.
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    /// The key probed.
    pub key_id: i64,
    /// Upstream status, when it answered.
    pub status: Option<u16>,
    /// Time to the response head, in milliseconds.
    pub latency_ms: u64,
    /// Health after the probe: `ok`, `cooling` or `failed`.
    pub health: &'static str,
    /// End of the cooldown, when cooling.
    pub cooldown_until: Option<DateTime<Utc>>,
    /// Why the probe failed, redacted.
    pub error: Option<String>,
}

/// Sends the config's cheap request with this key and applies the result to the key's health.
pub async fn probe_key(
    state: &AppState,
    client: &UpstreamClient,
    config: &ProxyConfig,
    key: &ApiKey,
) -> ProbeReport {
    let started = Instant::now();
    let sent = match probe_target(config, key) {
        Ok(target) => {
            let mut request = client
                .raw()
                .get(target.url)
                .timeout(state.settings.proxy_timeout);
            for (name, value) in target.headers {
                request = request.insert_header((name, value));
            }
            request.send().await.map_err(|error| match error {
                awc::error::SendRequestError::Timeout => (Outcome::HeadTimeout, error.to_string()),
                _ => (Outcome::ConnectFailed, error.to_string()),
            })
        }
        Err(error) => Err((Outcome::ConnectFailed, error.to_string())),
    };
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, verdict, error) = match sent {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response.body().limit(64 * 1024).await.unwrap_or_default();
            let headers = response.headers();
            let outcome = Outcome::Response(UpstreamResponse {
                status,
                retry_after: headers.get("retry-after").and_then(|v| v.to_str().ok()),
                rate_limit_reset: None,
                body: &body,
            });
            let verdict = state.rotator.classify(key.id, &outcome);
            (
                Some(status),
                verdict,
                (status >= 400).then(|| format!("upstream answered {status}")),
            )
        }
        Err((outcome, message)) => {
            let verdict = state.rotator.classify(key.id, &outcome);
            let message = domain::Redactor::new([key.key_value.expose()])
                .redact(&message)
                .into_owned();
            (None, verdict, Some(message))
        }
    };
    let health = apply(state, key, verdict).await;
    ProbeReport {
        key_id: key.id.0,
        status,
        latency_ms,
        health: health.as_str(),
        cooldown_until: health.cooldown_until(),
        error,
    }
}

/// Success brings the key back; a rejection or rate limit is applied as on the proxy path;
/// an upstream fault says nothing about the key and leaves it as it was.
async fn apply(state: &AppState, key: &ApiKey, verdict: Verdict) -> KeyHealth {
    let result = match verdict {
        Verdict::Success => state
            .rotation
            .mark_ok(key.id)
            .await
            .map(|()| Some(KeyHealth::Ok)),
        other => state.rotator.apply(key.id, other).await,
    };
    match result {
        Ok(Some(health)) => {
            state.persist_health(key.id, health);
            health
        }
        Ok(None) | Err(_) => state
            .rotation
            .key_states(&[key.id])
            .await
            .ok()
            .and_then(|s| s.first().copied())
            .unwrap_or(key.health),
    }
}

/// The cheap request for a config: the model list of its format for LLM configs, a `GET` of the
/// target for GENERIC ones (never the configured method, which may have side effects).
fn probe_target(config: &ProxyConfig, key: &ApiKey) -> Result<Target, crate::errors::ApiError> {
    let secret = key.key_value.expose();
    let invalid = |e: llm_adapters::UrlError| {
        crate::errors::ApiError::bad_request("invalid_target", e.to_string())
    };
    match &config.kind {
        ConfigKind::Generic(target) => {
            let injection = llm_adapters::inject_at(&target.key_placement, secret);
            let url = llm_adapters::join_url(
                target.target_url.as_str(),
                "",
                &injection.apply_to_query(""),
            )
            .map_err(invalid)?;
            Target::new(url, &injection)
        }
        ConfigKind::Llm(target) => {
            let probe = llm_adapters::probe_request(target, secret).map_err(invalid)?;
            Target::new(probe.url, &probe.injection)
        }
    }
}

/// The lease that makes one instance at a time re-probe failed keys.
pub const RECOVERY_LEASE: &str = "key-recovery";

/// Re-probes failed keys of active LLM configs every `interval`, on a thread of its own (the
/// HTTP client is single-threaded), until `stop` is set. GENERIC configs have no request known
/// to be harmless, so their keys are probed only when an admin asks.
pub fn spawn_recovery(
    state: actix_web::web::Data<AppState>,
    interval: std::time::Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("key-recovery".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let client = UpstreamClient::new(&state.settings);
                // Random per process, so two instances never believe they share a lease.
                let holder =
                    crate::config::random_token(8).unwrap_or_else(|_| format!("{:p}", &client));
                // Long enough to survive one missed pass, short enough for a quick takeover.
                let lease_ttl = interval * 3;
                let step = std::time::Duration::from_millis(200).min(interval);
                let mut waited = std::time::Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    actix_rt::time::sleep(step).await;
                    waited += step;
                    if waited >= interval {
                        waited = std::time::Duration::ZERO;
                        match state.leases.acquire(RECOVERY_LEASE, &holder, lease_ttl).await {
                            Ok(true) => {
                                recover_failed_keys(&state, &client).await;
                            }
                            Ok(false) => tracing::debug!("another instance re-probes failed keys"),
                            Err(error) => {
                                tracing::debug!(%error, "recovery lease unavailable; skipping this pass");
                            }
                        }
                    }
                }
                let _ = state.leases.release(RECOVERY_LEASE, &holder).await;
            });
        })
}

/// One pass over the failed keys.
pub async fn recover_failed_keys(state: &AppState, client: &UpstreamClient) -> usize {
    let Ok(configs) = state.admin.list_configs().await else {
        return 0;
    };
    let mut recovered = 0;
    for config in configs
        .iter()
        .filter(|c| c.is_active && matches!(c.kind, ConfigKind::Llm(_)))
    {
        let Ok(keys) = state.admin.list_keys(config.id).await else {
            continue;
        };
        for key in keys
            .iter()
            .filter(|k| k.is_active && k.health == KeyHealth::Failed)
        {
            let report = probe_key(state, client, config, key).await;
            if report.health == "ok" {
                recovered += 1;
                tracing::info!(key_id = %key.id, key = %key.key_value, config = %config.slug, "failed key recovered");
            }
        }
    }
    recovered
}
