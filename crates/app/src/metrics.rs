//! Prometheus metrics: proxied requests by config, status class and outcome; upstream latency;
//! retries; keys by health (computed at scrape time).

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

/// Labels of the keys-by-health gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    /// Config slug.
    pub config: String,
    /// `ok`, `cooling`, `failed` or `disabled`.
    pub health: &'static str,
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
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
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
        Metrics {
            registry,
            requests,
            upstream_latency,
            retries,
            keys,
            scrape: Mutex::new(()),
        }
    }
}

impl Metrics {
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

    /// Renders the text exposition format; `keys_by_health` refreshes the health gauge first.
    pub fn render(&self, keys_by_health: &[(String, &'static str, i64)]) -> String {
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
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
