//! Operations endpoints: `/health` (process up), `/ready` (store and cache reachable) and
//! `/metrics` (Prometheus text format).

use actix_web::{HttpResponse, get, web};
use domain::KeyHealth;
use serde_json::json;

use crate::state::AppState;

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
    let (store, cache) = tokio::join!(state.store.ping(), state.rotation.ping());
    let status = |r: &Result<(), domain::Error>| if r.is_ok() { "ok" } else { "unavailable" };
    let body = json!({
        "status": if store.is_ok() && cache.is_ok() { "ready" } else { "degraded" },
        "database": status(&store),
        "cache": status(&cache),
    });
    if store.is_ok() && cache.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[get("/metrics")]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let keys = keys_by_health(&state).await;
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render(&keys))
}

/// Counts keys by config and health; a store that is down yields no gauge rather than an error.
async fn keys_by_health(state: &AppState) -> Vec<(String, &'static str, i64)> {
    let Ok(configs) = state.admin.list_configs().await else {
        return Vec::new();
    };
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    for config in configs {
        let Ok(keys) = state.admin.list_keys(config.id).await else {
            continue;
        };
        let mut counts: [(&'static str, i64); 4] =
            [("ok", 0), ("cooling", 0), ("failed", 0), ("disabled", 0)];
        for key in keys {
            let slot = match key.health.at(now) {
                _ if !key.is_active => 3,
                KeyHealth::Ok => 0,
                KeyHealth::Cooling { .. } => 1,
                KeyHealth::Failed => 2,
            };
            counts[slot].1 += 1;
        }
        rows.extend(
            counts
                .into_iter()
                .map(|(state, n)| (config.slug.to_string(), state, n)),
        );
    }
    rows
}
