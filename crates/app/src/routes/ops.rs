//! Operations endpoints: `/health` (process up), `/ready` (store reachable, shared-cache
//! operations succeeding: the cache adapter's probe, not a bare PING; and whether client-key
//! limits are shared or, while the cache is down, enforced per instance) and
//! `/metrics` (Prometheus text format, behind `METRICS_TOKEN` when it is set). A scrape costs
//! one store query per config list and one grouped count, never a read of the key pools; with
//! the per-key opt-in (`METRICS_PER_KEY_LIMIT=N`), one page of at most N keys per config more.

use actix_web::{HttpRequest, HttpResponse, get, http::header, web};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{errors::ApiError, metrics::KeySample, state::AppState};

/// Mounts the operations routes.
pub fn configure(config: &mut web::ServiceConfig) {
    config.service(health).service(ready).service(metrics);
}

#[get("/health")]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

#[get("/ready")]
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let (store, cache, limits) = tokio::join!(
        state.store.ping(),
        state.rotation.ping(),
        state.client_keys.limiter().ping()
    );
    let status = |r: &Result<(), domain::Error>| if r.is_ok() { "ok" } else { "unavailable" };
    let body = json!({
        "status": if store.is_ok() && cache.is_ok() { "ready" } else { "degraded" },
        "database": status(&store),
        "cache": status(&cache),
        // While the shared limiter is unreachable every instance enforces client-key limits by
        // itself (SPEC §7).
        "client_limits": if limits.is_ok() { "shared" } else { "local" },
    });
    if store.is_ok() && cache.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[get("/metrics")]
async fn metrics(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &state.settings.metrics_token {
        authorize_scrape(&request, token)?;
    }
    let (configs, tallies) = tokio::join!(state.admin.list_configs(), state.admin.key_tallies());
    let configs = configs.unwrap_or_default();
    let keys = match tallies {
        Ok(tallies) => keys_by_health(&configs, &tallies),
        Err(_) => Vec::new(),
    };
    let samples = key_samples(&state, &configs).await;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render(&keys, &samples)))
}

/// Checks the scraper's `Authorization: Bearer <METRICS_TOKEN>`. The two tokens are compared as
/// SHA-256 digests in constant time, so neither the content nor the length of the token leaks
/// through the answer's timing.
fn authorize_scrape(request: &HttpRequest, token: &SecretString) -> Result<(), ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(llm_adapters::bearer_token)
        .unwrap_or_default();
    let digest = |text: &str| Sha256::digest(text.as_bytes());
    let matches: bool = digest(presented)
        .ct_eq(&digest(token.expose_secret()))
        .into();
    if presented.is_empty() || !matches {
        return Err(ApiError::unauthorized(
            "send the metrics token as Authorization: Bearer <METRICS_TOKEN>",
        ));
    }
    Ok(())
}

/// Counts keys by config and health from one grouped store query, so the server's work and
/// memory per scrape grow with the configs, not their pools (the database counts the rows); a
/// store that is down yields no gauge rather than an error. The
/// health is the stored one, which the server writes as soon as a key's health changes live;
/// a key switched off counts as `disabled` whatever its health.
fn keys_by_health(
    configs: &[domain::ProxyConfig],
    tallies: &std::collections::BTreeMap<domain::ProxyConfigId, domain::key_page::KeyTally>,
) -> Vec<(String, &'static str, i64)> {
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut rows = Vec::with_capacity(configs.len() * 4);
    for config in configs {
        let tally = tallies.get(&config.id).copied().unwrap_or_default();
        rows.extend(
            [
                ("ok", tally.ok),
                ("cooling", tally.cooling),
                ("failed", tally.failed),
                ("disabled", tally.disabled),
            ]
            .map(|(label, n)| (config.slug.to_string(), label, gauge(n))),
        );
    }
    rows
}

/// The per-key figures of the first `METRICS_PER_KEY_LIMIT` keys (by id) of each config, read
/// a page per config as the admin API reads them (live health, usage totals); nothing when the
/// opt-in is off. A config whose page cannot be read is left out of this scrape.
async fn key_samples(state: &AppState, configs: &[domain::ProxyConfig]) -> Vec<KeySample> {
    let Some(limit) = domain::PageLimit::new(state.settings.metrics_per_key_limit)
        .filter(|_| state.metrics.per_key())
    else {
        return Vec::new();
    };
    let query = domain::KeyPageQuery {
        limit,
        ..Default::default()
    };
    let pages = futures_util::future::join_all(
        configs
            .iter()
            .map(|config| state.admin.list_key_page(config.id, &query)),
    )
    .await;
    let now = chrono::Utc::now();
    let mut samples = Vec::with_capacity(configs.len() * limit.get());
    for (config, page) in configs.iter().zip(pages) {
        let Ok(page) = page else { continue };
        samples.extend(page.items.iter().map(|key| KeySample {
            config: config.slug.to_string(),
            key_id: key.id.0,
            health: if key.is_active {
                key.health.at(now).as_str()
            } else {
                "disabled"
            },
            requests: key.usage.request_count,
            failures: key.usage.failure_count,
        }));
    }
    samples
}
