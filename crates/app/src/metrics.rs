//! Prometheus metrics: proxied requests by config, status class and outcome; upstream latency;
//! retries; keys by health (computed at scrape time); tokens the upstreams reported, per config
//! ([`TokenMeter`], an exchange observer); request log records dropped. Per-key series (requests,
//! failures, health of at most `METRICS_PER_KEY_LIMIT` keys per config) exist only when that
//! opt-in is set: by default every series is per config, so a scrape's size never grows with the
//! pools.
//!
//! The proxies' per-request series are resolved from their families once per thread and config
//! ([`SeriesCache`]): a request then builds no label set (no slug copied) and takes no family
//! lock, which both workers would otherwise contend for on every request.

use std::{borrow::Cow, cell::RefCell, collections::HashMap, sync::Mutex};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use thread_local::ThreadLocal;

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
    series: SeriesCache<ConfigSeries>,
}

/// Most configs a thread keeps resolved series for; past it the thread starts afresh, so that a
/// config renamed over and over cannot grow the cache without bound.
const SERIES_PER_THREAD: usize = 1024;

/// Series resolved per thread and config slug: each thread's own map, never shared, so a hit
/// costs a hash of the slug and no lock.
struct SeriesCache<T: Send> {
    threads: ThreadLocal<RefCell<HashMap<Box<str>, T>>>,
}

impl<T: Send> std::fmt::Debug for SeriesCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeriesCache")
    }
}

impl<T: Send> Default for SeriesCache<T> {
    fn default() -> Self {
        SeriesCache {
            threads: ThreadLocal::new(),
        }
    }
}

impl<T: Send + Default> SeriesCache<T> {
    /// Runs `f` on this thread's entry for `config`, made empty on its first use.
    fn with<R>(&self, config: &str, f: impl FnOnce(&mut T) -> R) -> R {
        let mut map = self.threads.get_or_default().borrow_mut();
        if let Some(series) = map.get_mut(config) {
            return f(series);
        }
        if map.len() >= SERIES_PER_THREAD {
            map.clear();
        }
        f(map.entry(config.into()).or_default())
    }
}

/// `config`'s series of a per-config family, made when it is first asked for.
fn of_config<M, C>(family: &Family<ConfigLabels, M, C>, config: &str) -> M
where
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    family
        .get_or_create(&ConfigLabels {
            config: config.to_owned(),
        })
        .clone()
}

/// One config's series, each taken from its family at its first use on the thread (so a series
/// appears in the exposition when it first counts, as with the families alone).
#[derive(Default)]
struct ConfigSeries {
    upstream_latency: Option<Histogram>,
    retries: Option<Counter>,
    /// By status class and outcome; a config sees a handful of pairs.
    requests: Vec<(&'static str, &'static str, Counter)>,
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
            series: SeriesCache::default(),
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
        self.series.with(config, |series| {
            let known = series
                .requests
                .iter()
                .find(|(class, known, _)| *class == status_class && *known == outcome);
            match known {
                Some((_, _, counter)) => {
                    counter.inc();
                }
                None => {
                    let counter = self
                        .requests
                        .get_or_create(&RequestLabels {
                            config: config.to_owned(),
                            status_class,
                            outcome,
                        })
                        .clone();
                    counter.inc();
                    series.requests.push((status_class, outcome, counter));
                }
            }
        });
    }

    /// Records how long `config`'s upstream took to answer with a response head.
    pub fn observe_upstream_latency(&self, config: &str, seconds: f64) {
        self.series.with(config, |series| {
            series
                .upstream_latency
                .get_or_insert_with(|| of_config(&self.upstream_latency, config))
                .observe(seconds);
        });
    }

    /// Counts a retry of `config`'s request with another key.
    pub fn count_retry(&self, config: &str) {
        self.series.with(config, |series| {
            series
                .retries
                .get_or_insert_with(|| of_config(&self.retries, config))
                .inc();
        });
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
    /// Input and output counters per config, resolved once per thread.
    series: SeriesCache<[Option<Counter>; 2]>,
}

impl TokenMeter {
    /// A meter feeding `metrics`' token counters.
    pub fn new(metrics: &Metrics) -> Self {
        TokenMeter {
            tokens: metrics.tokens.clone(),
            series: SeriesCache::default(),
        }
    }
}

/// The config slug of a proxied path (`/llm/{slug}/...` or `/proxy/{slug}/...`), lower case as
/// the config stores it; the proxies look configs up by this very segment.
fn config_of_path(path: &str) -> Option<Cow<'_, str>> {
    let rest = path
        .strip_prefix("/llm/")
        .or_else(|| path.strip_prefix("/proxy/"))?;
    let slug = rest.split('/').next().filter(|s| !s.is_empty())?;
    Some(if slug.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(slug.to_ascii_lowercase())
    } else {
        Cow::Borrowed(slug)
    })
}

impl crate::completion::ExchangeObserver for TokenMeter {
    fn exchange_finished(&self, facts: &crate::completion::ExchangeFacts) {
        let Some(usage) = facts.tokens else { return };
        let Some(config) = config_of_path(&facts.path) else {
            return;
        };
        self.series.with(&config, |counters| {
            let directions = [("input", usage.input), ("output", usage.output)];
            for ((direction, count), counter) in directions.into_iter().zip(counters) {
                if count > 0 {
                    counter
                        .get_or_insert_with(|| {
                            self.tokens
                                .get_or_create(&TokenLabels {
                                    config: config.to_string(),
                                    direction,
                                })
                                .clone()
                        })
                        .inc_by(count);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The exposition's line for `series` (`name{labels}`), or `None` when it is absent.
    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find(|line| line.starts_with(series))
    }

    #[test]
    fn requests_count_under_their_own_labels_from_every_thread() {
        let metrics = Metrics::default();
        metrics.count_request("alpha", 200, "success");
        metrics.count_request("alpha", 200, "success");
        metrics.count_request("alpha", 429, "rate_limited");
        metrics.count_request("beta", 502, "unreachable");
        std::thread::scope(|scope| {
            scope.spawn(|| metrics.count_request("alpha", 201, "success"));
        });
        let text = metrics.render(&[], &[]);
        let alpha_ok =
            r#"akr_proxy_requests_total{config="alpha",status_class="2xx",outcome="success"}"#;
        assert_eq!(line(&text, alpha_ok), Some(&*format!("{alpha_ok} 3")));
        let limited =
            r#"akr_proxy_requests_total{config="alpha",status_class="4xx",outcome="rate_limited"}"#;
        assert_eq!(line(&text, limited), Some(&*format!("{limited} 1")));
        let beta =
            r#"akr_proxy_requests_total{config="beta",status_class="5xx",outcome="unreachable"}"#;
        assert_eq!(line(&text, beta), Some(&*format!("{beta} 1")));
    }

    #[test]
    fn retries_and_latency_appear_once_they_count() {
        let metrics = Metrics::default();
        metrics.count_request("alpha", 200, "success");
        let before = metrics.render(&[], &[]);
        assert_eq!(line(&before, "akr_proxy_retries_total{"), None);
        assert_eq!(line(&before, "akr_upstream_latency_seconds_count{"), None);
        metrics.count_retry("alpha");
        metrics.count_retry("alpha");
        metrics.observe_upstream_latency("alpha", 0.02);
        let after = metrics.render(&[], &[]);
        assert_eq!(
            line(&after, "akr_proxy_retries_total{"),
            Some(r#"akr_proxy_retries_total{config="alpha"} 2"#)
        );
        assert_eq!(
            line(&after, "akr_upstream_latency_seconds_count{"),
            Some(r#"akr_upstream_latency_seconds_count{config="alpha"} 1"#)
        );
    }

    #[test]
    fn counts_survive_a_thread_starting_its_cache_afresh() {
        let metrics = Metrics::default();
        metrics.count_request("kept", 200, "success");
        for n in 0..SERIES_PER_THREAD {
            metrics.count_request(&format!("config-{n}"), 200, "success");
        }
        metrics.count_request("kept", 200, "success");
        let text = metrics.render(&[], &[]);
        let kept =
            r#"akr_proxy_requests_total{config="kept",status_class="2xx",outcome="success"}"#;
        assert_eq!(line(&text, kept), Some(&*format!("{kept} 2")));
    }

    #[test]
    fn tokens_count_per_config_slug_in_lower_case() {
        use crate::completion::{ExchangeFacts, ExchangeObserver};
        let metrics = Metrics::default();
        let meter = TokenMeter::new(&metrics);
        let facts = |path: &str, input, output| ExchangeFacts {
            config_id: domain::ProxyConfigId(1),
            client_key_id: None,
            api_key_id: None,
            method: actix_web::http::Method::POST,
            path: path.into(),
            status: 200,
            outcome: "success",
            attempts: 1,
            head_latency: std::time::Duration::ZERO,
            total_latency: std::time::Duration::ZERO,
            streamed: false,
            bytes_in: 0,
            bytes_out: 0,
            tokens: Some(llm_adapters::TokenUsage { input, output }),
            error_code: None,
        };
        meter.exchange_finished(&facts("/llm/openai/v1/chat/completions", 10, 0));
        meter.exchange_finished(&facts("/llm/OpenAI/v1/chat/completions", 5, 7));
        let text = metrics.render(&[], &[]);
        assert_eq!(
            line(
                &text,
                r#"akr_tokens_total{config="openai",direction="input"}"#
            ),
            Some(r#"akr_tokens_total{config="openai",direction="input"} 15"#)
        );
        assert_eq!(
            line(
                &text,
                r#"akr_tokens_total{config="openai",direction="output"}"#
            ),
            Some(r#"akr_tokens_total{config="openai",direction="output"} 7"#)
        );
    }

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
