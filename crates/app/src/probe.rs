//! Key probes: a cheap real request with one key (the admin's test route, the background re-probe
//! of failed keys, and the confirmation of an ambiguous 403 on an LLM config), judged by the
//! domain's failover rules like any proxied attempt ([`domain::probe_decision`]); success puts
//! the key back in rotation.

use std::time::{Duration, Instant};

use actix_web::http::header::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use domain::{
    ApiKey, ConfigKind, HealthState, KeyHealth, KeyPageQuery, Outcome, PageLimit, ProxyConfig,
    UpstreamResponse,
};
use serde::Serialize;

use crate::{
    openapi,
    state::AppState,
    upstream::{Target, UpstreamClient},
};

/// Largest probe body read to classify it.
const PROBE_BODY_LIMIT: usize = 64 * 1024;
/// How long a probe waits for its answer when `PROXY_TIMEOUT` is `0`: the probe request is cheap,
/// and waiting longer would tell nothing more about the key.
const PROBE_TIMEOUT_FALLBACK: Duration = Duration::from_secs(30);

/// What a probe found.
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    /// The key probed.
    pub key_id: i64,
    /// Upstream status, when it answered.
    pub status: Option<u16>,
    /// Time to the response head, in milliseconds.
    pub latency_ms: u64,
    /// Health after the probe.
    pub health: openapi::KeyHealth,
    /// End of the cooldown, when cooling.
    pub cooldown_until: Option<DateTime<Utc>>,
    /// Why the probe failed, redacted.
    pub error: Option<String>,
}

/// What one probe request brought back.
#[derive(Debug)]
pub struct ProbeResponse {
    answer: ProbeAnswer,
    latency: Duration,
}

#[derive(Debug)]
enum ProbeAnswer {
    Response {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
    },
    TimedOut,
    Unreachable(String),
}

impl ProbeResponse {
    /// The facts the failover rules judge.
    pub fn outcome(&self) -> Outcome<'_> {
        match &self.answer {
            ProbeAnswer::Response {
                status,
                headers,
                body,
            } => Outcome::Response(UpstreamResponse::from_head(
                *status,
                |name| headers.get(name).and_then(|v| v.to_str().ok()),
                body,
            )),
            ProbeAnswer::TimedOut => Outcome::HeadTimeout,
            ProbeAnswer::Unreachable(_) => Outcome::ConnectFailed,
        }
    }

    fn status(&self) -> Option<u16> {
        match &self.answer {
            ProbeAnswer::Response { status, .. } => Some(*status),
            ProbeAnswer::TimedOut | ProbeAnswer::Unreachable(_) => None,
        }
    }

    /// Why the probe failed, without the key.
    fn error(&self, key: &ApiKey) -> Option<String> {
        let message = match &self.answer {
            ProbeAnswer::Response { status, .. } if *status < 400 => return None,
            ProbeAnswer::Response { status, .. } => format!("upstream answered {status}"),
            ProbeAnswer::TimedOut => "the upstream did not answer in time".to_owned(),
            ProbeAnswer::Unreachable(message) => message.clone(),
        };
        Some(
            domain::Redactor::new([key.key_value.expose()])
                .redact(&message)
                .into_owned(),
        )
    }
}

/// Sends the config's cheap request with this key; changes nothing.
pub async fn send_probe(
    state: &AppState,
    client: &UpstreamClient,
    config: &ProxyConfig,
    key: &ApiKey,
) -> ProbeResponse {
    let started = Instant::now();
    let answer = match probe_target(config, key) {
        Ok(target) => {
            let timeout = state
                .settings
                .proxy_timeout
                .unwrap_or(PROBE_TIMEOUT_FALLBACK);
            let mut request = client.raw().get(target.url).timeout(timeout);
            for (name, value) in target.headers {
                request = request.insert_header((name, value));
            }
            match request.send().await {
                Ok(mut response) => ProbeAnswer::Response {
                    status: response.status().as_u16(),
                    body: crate::upstream_body::read_bounded(&mut response, PROBE_BODY_LIMIT)
                        .await
                        .unwrap_or_default(),
                    headers: response.headers().clone(),
                },
                Err(awc::error::SendRequestError::Timeout) => ProbeAnswer::TimedOut,
                Err(error) => ProbeAnswer::Unreachable(error.to_string()),
            }
        }
        Err(error) => ProbeAnswer::Unreachable(error.to_string()),
    };
    ProbeResponse {
        answer,
        latency: started.elapsed(),
    }
}

/// Probes the key and applies the result to its health.
pub async fn probe_key(
    state: &AppState,
    client: &UpstreamClient,
    config: &ProxyConfig,
    key: &ApiKey,
) -> ProbeReport {
    let probe = send_probe(state, client, config, key).await;
    let settled = state.rotator.settle_probe(key.id, &probe.outcome()).await;
    state.record_health(key, &settled.health);
    let health = match settled.health {
        Ok(Some(health)) => health,
        Ok(None) | Err(_) => current_health(state, key).await,
    };
    ProbeReport {
        key_id: key.id.0,
        status: probe.status(),
        latency_ms: u64::try_from(probe.latency.as_millis()).unwrap_or(u64::MAX),
        health: health.into(),
        cooldown_until: health.cooldown_until(),
        error: probe.error(key),
    }
}

/// The key's live health, or what the snapshot knew when the rotation state is down.
async fn current_health(state: &AppState, key: &ApiKey) -> KeyHealth {
    state
        .rotation
        .key_states(&[key.id])
        .await
        .ok()
        .and_then(|s| s.first().copied())
        .unwrap_or(key.health)
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

/// One pass over the failed keys, a page at a time: a pool of 100 000 keys is never loaded
/// whole just to find its few failed ones.
pub async fn recover_failed_keys(state: &AppState, client: &UpstreamClient) -> usize {
    let Ok(configs) = state.admin.list_configs().await else {
        return 0;
    };
    let mut recovered = 0;
    for config in configs
        .iter()
        .filter(|c| c.is_active && matches!(c.kind, ConfigKind::Llm(_)))
    {
        let mut query = KeyPageQuery {
            limit: PageLimit::MAX,
            after: None,
            health: Some(HealthState::Failed),
            is_active: Some(true),
        };
        loop {
            let Ok(page) = state.admin.list_key_page(config.id, &query).await else {
                break;
            };
            for key in &page.items {
                let report = probe_key(state, client, config, key).await;
                if report.health == openapi::KeyHealth::Ok {
                    recovered += 1;
                    tracing::info!(key_id = %key.id, key = %key.key_value, config = %config.slug, "failed key recovered");
                }
            }
            match page.next_cursor {
                Some(cursor) => query.after = Some(cursor.last_seen()),
                None => break,
            }
        }
    }
    recovered
}
