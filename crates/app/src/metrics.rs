//! Prometheus metrics: proxied requests by config, status class and outcome; upstream latency;
//! retries; keys by health (computed at scrape time); tokens the upstreams reported, per config
//! ([`TokenMeter`], an exchange observer); request log records dropped. Per-key series (requests,
//! failures, health of at most `METRICS_PER_KEY_LIMIT` keys per config) exist only when that
//! opt-in is set: by default every series is per config, so a scrape's size never grows with the pools.

use std::sync::Mutex;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of a proxied request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Config slug.
    pub config: String,
    /// `2xx`, `4xx`, ... of the answer the client got.
    pub status_class: &'static str,
    /// `success`, `client_error`, `rate_limited`, `key_rejected`, `upstream_fault`,
    /// `no_usable_key`, `timeout`, `unreachable`.
    pub outcome: &'static str,
}

/// Labels of a per-config metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    /// Config slug.
    pub config: String,
}

/// Labels of the token counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Config slug.
    pub config: String,
    /// `input` or `output`.
    pub direction: &'static str,
}

/// Labels of the keys-by-health gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    /// Config slug.
    pub config: String,
    /// `ok`, `cooling`, `failed` or `disabled`.
    pub health: &'static str,
}

/// Labels of a per-key metric (opt-in): the key's id, never its value.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// Config slug.
    pub config: String,
    /// Key id, as in the admin API.
    pub key_id: i64,
}

/// Labels of the per-key health gauge (opt-in).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyHealthLabels {
    /// Config slug.
    pub config: String,
    /// Key id, as in the admin API.
    pub key_id: i64,
    /// `ok`, `cooling`, `failed` or `disabled`.
    pub health: &'static str,
}

/// One key's figures for the per-key series, read at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySample {
    /// Config slug.
    pub config: String,
    /// Key id.
    pub key_id: i64,
    /// `ok`, `cooling`, `failed` or `disabled`.
    pub health: &'static str,
    /// Upstream requests sent with the key, as the admin API counts them.
    pub requests: u64,
    /// Of those, the failed ones.
    pub failures: u64,
}

/// The per-key families, registered only when the opt-in is set.
struct PerKey {
    requests: Family<KeyLabels, Counter>,
    failures: Family<KeyLabels, Counter>,
    health: Family<KeyHealthLabels, Gauge>,
}

/// The metrics of one process.
pub struct Metrics {
    registry: Registry,
    /// Proxied requests.
    pub requests: Family<RequestLabels, Counter>,
    /// Upstream response-head latency, seconds.
    pub upstream_latency: Family<ConfigLabels, Histogram>,
    /// Retries with another key.
    pub retries: Family<ConfigLabels, Counter>,
    /// Keys by health.
    pub keys: Family<HealthLabels, Gauge>,
    per_key: Option<PerKey>,
    /// Tokens the upstreams reported, by config and direction.
    pub tokens: Family<TokenLabels, Counter>,
    /// Request log records dropped (queue full, or refused by the store).
    pub request_log_dropped: Counter,
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    /// Per-config series only.
    fn default() -> Self {
        Metrics::new(false)
    }
}

impl Metrics {
    /// The metrics, with the per-key families when `per_key` is set (`METRICS_PER_KEY_LIMIT`
    /// above 0).
    pub fn new(per_key: bool) -> Self {
        let mut registry = Registry::with_prefix("akr");
        let requests = Family::<RequestLabels, Counter>::default();
        let upstream_latency = Family::<ConfigLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        });
        let retries = Family::<ConfigLabels, Counter>::default();
        let keys = Family::<HealthLabels, Gauge>::default();
        registry.register(
            "proxy_requests",
            "Proxied requests by config, status class and outcome",
            requests.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time until the upstream response head arrived",
            upstream_latency.clone(),
        );
        registry.register("proxy_retries", "Retries with another key", retries.clone());
        registry.register("keys", "Upstream keys by config and health", keys.clone());
        let per_key = per_key.then(|| {
            let per_key = PerKey {
                requests: Family::default(),
                failures: Family::default(),
                health: Family::default(),
            };
            registry.register(
                "key_requests",
                "Upstream requests sent with a key (opt-in, first METRICS_PER_KEY_LIMIT keys per config)",
                per_key.requests.clone(),
            );
            registry.register(
                "key_failures",
                "Failed upstream requests sent with a key (opt-in)",
                per_key.failures.clone(),
            );
            registry.register(
                "key_health",
                "1 for a key's current health (opt-in)",
                per_key.health.clone(),
            );
            per_key
        });
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens the upstreams reported in their usage, by config and direction",
            tokens.clone(),
        );
        let request_log_dropped = Counter::default();
        registry.register(
            "request_log_dropped",
            "Request log records dropped because the queue was full or the store refused them",
            request_log_dropped.clone(),
        );
        Metrics {
            registry,
            requests,
            upstream_latency,
            retries,
            keys,
            per_key,
            tokens,
            request_log_dropped,
            scrape: Mutex::new(()),
        }
    }

    /// Counts one proxied request.
    pub fn count_request(&self, config: &str, status: u16, outcome: &'static str) {
        let status_class = match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&RequestLabels {
                config: config.to_owned(),
                status_class,
                outcome,
            })
            .inc();
    }

    /// Whether the per-key families are exposed.
    pub fn per_key(&self) -> bool {
        self.per_key.is_some()
    }

    /// Renders the text exposition format; `keys_by_health` refreshes the health gauge first,
    /// and `keys` the per-key series (ignored unless they are exposed). The per-key series are
    /// rebuilt at every scrape from the figures read then, so a deleted key's series goes away.
    pub fn render(
        &self,
        keys_by_health: &[(String, &'static str, i64)],
        keys: &[KeySample],
    ) -> String {
        let _scrape = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.keys.clear();
        for (config, health, count) in keys_by_health {
            self.keys
                .get_or_create(&HealthLabels {
                    config: config.clone(),
                    health,
                })
                .set(*count);
        }
        if let Some(per_key) = &self.per_key {
            per_key.requests.clear();
            per_key.failures.clear();
            per_key.health.clear();
            for key in keys {
                let labels = KeyLabels {
                    config: key.config.clone(),
                    key_id: key.key_id,
                };
                per_key.requests.get_or_create(&labels).inc_by(key.requests);
                per_key.failures.get_or_create(&labels).inc_by(key.failures);
                per_key
                    .health
                    .get_or_create(&KeyHealthLabels {
                        config: key.config.clone(),
                        key_id: key.key_id,
                        health: key.health,
                    })
                    .set(1);
            }
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Counts the tokens of every finished exchange whose upstream reported usage, per config.
#[derive(Debug)]
pub struct TokenMeter {
    tokens: Family<TokenLabels, Counter>,
}

impl TokenMeter {
    /// A meter feeding `metrics`' token counters.
    pub fn new(metrics: &Metrics) -> Self {
        TokenMeter {
            tokens: metrics.tokens.clone(),
        }
    }
}

/// The config slug of a proxied path (`/llm/{slug}/...` or `/proxy/{slug}/...`), lower case as
/// the config stores it; the proxies look configs up by this very segment.
fn config_of_path(path: &str) -> Option<String> {
    let rest = path
        .strip_prefix("/llm/")
        .or_else(|| path.strip_prefix("/proxy/"))?;
    let slug = rest.split('/').next().filter(|s| !s.is_empty())?;
    Some(slug.to_ascii_lowercase())
}

impl crate::completion::ExchangeObserver for TokenMeter {
    fn exchange_finished(&self, facts: &crate::completion::ExchangeFacts) {
        let Some(usage) = facts.tokens else { return };
        let Some(config) = config_of_path(&facts.path) else {
            return;
        };
        for (direction, count) in [("input", usage.input), ("output", usage.output)] {
            if count > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        config: config.clone(),
                        direction,
                    })
                    .inc_by(count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_config_is_the_proxied_path_s_first_segment() {
        assert_eq!(
            config_of_path("/llm/OpenAI/v1/chat/completions").as_deref(),
            Some("openai")
        );
        assert_eq!(config_of_path("/proxy/weather").as_deref(), Some("weather"));
        assert_eq!(config_of_path("/admin/stats"), None);
        assert_eq!(config_of_path("/llm//x"), None);
    }
}
