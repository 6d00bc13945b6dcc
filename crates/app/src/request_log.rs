//! The request log's way off the hot path (SPEC §10): [`RequestLogQueue`] is the
//! `ExchangeObserver` that turns each finished exchange into a `RequestRecord` and pushes it
//! into a bounded channel without waiting (a full queue drops the record, counts it in
//! `/metrics` and says so in the log at most once a minute); [`RequestLogWriter`] drains the
//! channel in batches into the `RequestLog` port; [`prune`] keeps the log within
//! `REQUEST_LOG_RETENTION_DAYS` and `REQUEST_LOG_MAX_ROWS` in bounded steps.
//!
//! A store that is down or slow never reaches a proxied request: the writer keeps retrying its
//! batch (an `Unavailable` store) while the queue fills and then drops, and a batch the store
//! refuses for any other reason is dropped and counted, so one bad batch cannot stall the log.

use std::{
    borrow::Cow,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{TimeDelta, Utc};
use domain::{RequestLog, RequestRecord, Retention};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::completion::{ExchangeFacts, ExchangeObserver};

/// Records one write takes from the queue at most.
pub const WRITE_BATCH: usize = 2_000;
/// How long the writer lets records gather after the first one of a batch before it writes.
/// Fewer, larger batches cost the store far less per record (one transaction, one statement
/// parse and one write of the index pages they share, instead of one per handful of records),
/// and a writer that is not parked on the queue is not woken by every push: profiled at ~20 000
/// requests/s, the log's writes took a quarter of the server's CPU when each batch was whatever
/// one wake-up found.
pub const WRITE_LINGER: Duration = Duration::from_millis(100);
/// Records one prune step deletes at most: a few milliseconds of write lock on SQLite.
pub const PRUNE_BATCH: usize = 2_000;
/// Pause between two prune steps, so writers (the log's own, admin writes, usage flushes) get
/// the database in between.
const PRUNE_PAUSE: Duration = Duration::from_millis(50);
/// How often the log is pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(300);
/// Longest pause of a writer whose store is down, between two tries of the same batch.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(10);

/// The record of one finished exchange.
pub fn record_of(facts: &ExchangeFacts) -> RequestRecord {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    RequestRecord {
        created_at: Utc::now(),
        proxy_config_id: facts.config_id,
        client_key_id: facts.client_key_id,
        api_key_id: facts.api_key_id,
        method: static_method(&facts.method)
            .map_or_else(|| facts.method.as_str().to_owned().into(), Cow::Borrowed),
        path: domain::request_log::truncate_text(&facts.path, domain::request_log::MAX_PATH_BYTES)
            .to_owned(),
        status: facts.status,
        outcome: Cow::Borrowed(facts.outcome),
        attempts: facts.attempts,
        head_latency_ms: millis(facts.head_latency),
        total_latency_ms: millis(facts.total_latency),
        streamed: facts.streamed,
        bytes_in: facts.bytes_in,
        bytes_out: facts.bytes_out,
        tokens_in: facts.tokens.map(|usage| usage.input),
        tokens_out: facts.tokens.map(|usage| usage.output),
        error_code: facts.error_code.map(Cow::Borrowed),
    }
}

/// The standard methods' names without an allocation.
fn static_method(method: &actix_web::http::Method) -> Option<&'static str> {
    use actix_web::http::Method;
    [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ]
    .iter()
    .zip(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    .find_map(|(known, name)| (known == method).then_some(name))
}

/// Counts dropped records and says so in the log at most once a minute.
#[derive(Debug)]
pub struct DropCounter {
    metric: Counter,
    total: AtomicU64,
    last_warning_ms: AtomicI64,
}

impl DropCounter {
    /// A counter feeding `metric` (`akr_request_log_dropped_total`).
    pub fn new(metric: Counter) -> Self {
        DropCounter {
            metric,
            total: AtomicU64::new(0),
            last_warning_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// Records dropped so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts `n` dropped records (`why` goes to the log line).
    pub fn dropped(&self, n: u64, why: &'static str) {
        self.metric.inc_by(n);
        let total = self.total.fetch_add(n, Ordering::Relaxed) + n;
        let now = Utc::now().timestamp_millis();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        // One line a minute at most, whichever worker wins the exchange writes it.
        if now.saturating_sub(last) >= 60_000
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = total,
                why,
                "request log records dropped; see akr_request_log_dropped_total"
            );
        }
    }
}

/// The exchange observer of the request log: one non-blocking push per finished exchange.
#[derive(Debug)]
pub struct RequestLogQueue {
    sender: mpsc::Sender<RequestRecord>,
    drops: Arc<DropCounter>,
}

impl RequestLogQueue {
    /// A queue of `capacity` records and the writer that drains it into `log`.
    pub fn new(
        capacity: usize,
        log: Arc<dyn RequestLog>,
        drops: Arc<DropCounter>,
    ) -> (Self, RequestLogWriter) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (
            RequestLogQueue {
                sender,
                drops: drops.clone(),
            },
            RequestLogWriter {
                receiver,
                log,
                drops,
            },
        )
    }
}

impl ExchangeObserver for RequestLogQueue {
    fn exchange_finished(&self, facts: &ExchangeFacts) {
        if self.sender.try_send(record_of(facts)).is_err() {
            self.drops.dropped(1, "the request log queue is full");
        }
    }
}

/// Drains the queue into the store in batches of up to [`WRITE_BATCH`].
pub struct RequestLogWriter {
    receiver: mpsc::Receiver<RequestRecord>,
    log: Arc<dyn RequestLog>,
    drops: Arc<DropCounter>,
}

impl std::fmt::Debug for RequestLogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLogWriter").finish_non_exhaustive()
    }
}

impl RequestLogWriter {
    /// Writes batches until every sender is gone and the queue is empty, or until `stop`
    /// fires (or its sender is dropped): then writes what is queued at that moment and ends.
    pub async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        loop {
            tokio::select! {
                received = self.receiver.recv_many(&mut batch, WRITE_BATCH) => {
                    if received == 0 {
                        return;
                    }
                    if batch.len() < WRITE_BATCH {
                        tokio::select! {
                            () = tokio::time::sleep(WRITE_LINGER) => {}
                            _ = &mut stop => {
                                self.write(&batch).await;
                                batch.clear();
                                break;
                            }
                        }
                        self.take_queued(&mut batch);
                    }
                    self.write(&batch).await;
                    batch.clear();
                }
                _ = &mut stop => break,
            }
        }
        // Shutdown: what is queued now, once, without waiting for more.
        loop {
            self.take_queued(&mut batch);
            if batch.is_empty() {
                return;
            }
            if let Err(error) = self.log.append(&batch).await {
                tracing::warn!(%error, records = batch.len(), "request log records lost at shutdown");
                self.drops
                    .dropped(batch.len() as u64, "the store refused the last records");
            }
            batch.clear();
        }
    }

    /// Moves what is queued now into `batch`, up to [`WRITE_BATCH`], without waiting.
    fn take_queued(&mut self, batch: &mut Vec<RequestRecord>) {
        while batch.len() < WRITE_BATCH {
            match self.receiver.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
    }

    /// Appends one batch: an unavailable store is retried with a growing pause (the queue
    /// absorbs, then drops, meanwhile); any other refusal drops the batch.
    async fn write(&self, batch: &[RequestRecord]) {
        let mut pause = Duration::from_millis(250);
        loop {
            match self.log.append(batch).await {
                Ok(()) => return,
                Err(domain::Error::Unavailable { .. }) => {
                    self.drops.note_outage();
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                Err(error) => {
                    tracing::warn!(%error, records = batch.len(), "the store refused a request log batch");
                    self.drops
                        .dropped(batch.len() as u64, "the store refused a batch");
                    return;
                }
            }
        }
    }
}

impl DropCounter {
    /// Says, at most once a minute (sharing the drop lines' budget), that the store is down.
    fn note_outage(&self) {
        let now = Utc::now().timestamp_millis();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!("the request log store is unavailable; records wait in the queue");
        }
    }
}

/// Prunes the log to its retention in bounded steps; returns how many records went. The row
/// cap's edge is found once, at the start: records logged during the pass are newer than it.
pub async fn prune(log: &dyn RequestLog, retention_days: u32, max_rows: u64) -> u64 {
    let cap_edge = match log.cap_edge(max_rows).await {
        Ok(edge) => edge,
        Err(error) => {
            tracing::warn!(%error, "the request log could not be pruned; retrying later");
            return 0;
        }
    };
    let retention = Retention {
        older_than: Utc::now() - TimeDelta::days(i64::from(retention_days)),
        cap_edge,
        batch: PRUNE_BATCH,
    };
    let mut total = 0;
    loop {
        match log.prune(&retention).await {
            Ok(deleted) => {
                total += deleted;
                if deleted < PRUNE_BATCH as u64 {
                    return total;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "the request log could not be pruned; retrying later");
                return total;
            }
        }
        tokio::time::sleep(PRUNE_PAUSE).await;
    }
}

/// Prunes every [`PRUNE_INTERVAL`] (the first time right away) until the task is dropped. One
/// instance at a time does it when several share the store (the `request-log-prune` lease).
pub async fn prune_forever(
    log: Arc<dyn RequestLog>,
    leases: Arc<dyn domain::Leases>,
    holder: String,
    retention_days: u32,
    max_rows: u64,
) {
    let mut ticker = tokio::time::interval(PRUNE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match leases
            .acquire("request-log-prune", &holder, PRUNE_INTERVAL * 2)
            .await
        {
            Ok(true) => {
                let deleted = prune(log.as_ref(), retention_days, max_rows).await;
                if deleted > 0 {
                    tracing::info!(deleted, "request log pruned");
                }
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "the request log prune lease is unavailable"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Instant;

    use actix_web::http::Method;
    use cache_memory::MemoryRequestLog;
    use domain::{LogFilter, LogQuery, ProxyConfigId};
    use llm_adapters::TokenUsage;

    use super::*;

    fn facts() -> ExchangeFacts {
        ExchangeFacts {
            config_id: ProxyConfigId(3),
            client_key_id: None,
            api_key_id: Some(domain::ApiKeyId(9)),
            method: Method::POST,
            path: "/llm/openai/v1/chat/completions".into(),
            status: 200,
            outcome: "success",
            attempts: 2,
            head_latency: Duration::from_millis(120),
            total_latency: Duration::from_millis(900),
            streamed: true,
            bytes_in: 10,
            bytes_out: 2_000,
            tokens: Some(TokenUsage {
                input: 11,
                output: 22,
            }),
            error_code: None,
        }
    }

    #[test]
    fn a_record_carries_every_fact() {
        let record = record_of(&facts());
        assert_eq!(record.proxy_config_id, ProxyConfigId(3));
        assert_eq!(record.api_key_id, Some(domain::ApiKeyId(9)));
        assert_eq!(record.method, "POST");
        assert_eq!((record.attempts, record.status), (2, 200));
        assert_eq!(
            (record.head_latency_ms, record.total_latency_ms),
            (120, 900)
        );
        assert_eq!((record.tokens_in, record.tokens_out), (Some(11), Some(22)));
        assert!(record.streamed);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let log = Arc::new(MemoryRequestLog::default());
        let drops = Arc::new(DropCounter::new(Counter::default()));
        let (queue, writer) = RequestLogQueue::new(2, log.clone(), drops.clone());
        let started = Instant::now();
        for _ in 0..5 {
            queue.exchange_finished(&facts());
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(drops.total(), 3);
        drop(queue);
        let (_stop, stopped) = tokio::sync::oneshot::channel();
        writer.run(stopped).await;
        assert_eq!(log.len(), 2, "what fitted is written");
    }

    /// A store that is down until told otherwise.
    struct Flaky {
        up: std::sync::atomic::AtomicBool,
        inner: MemoryRequestLog,
    }

    #[async_trait::async_trait]
    impl RequestLog for Flaky {
        async fn append(&self, records: &[RequestRecord]) -> domain::Result<()> {
            if self.up.load(Ordering::SeqCst) {
                self.inner.append(records).await
            } else {
                Err(domain::Error::database("down"))
            }
        }
        async fn query(&self, query: &LogQuery) -> domain::Result<domain::LogPage> {
            self.inner.query(query).await
        }
        async fn stats(&self, query: &domain::StatsQuery) -> domain::Result<domain::UsageStats> {
            self.inner.stats(query).await
        }
        async fn cap_edge(&self, max_rows: u64) -> domain::Result<Option<domain::LogCursor>> {
            self.inner.cap_edge(max_rows).await
        }
        async fn prune(&self, retention: &Retention) -> domain::Result<u64> {
            self.inner.prune(retention).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn records_wait_through_an_outage_and_flow_after_it() {
        let log = Arc::new(Flaky {
            up: false.into(),
            inner: MemoryRequestLog::default(),
        });
        let drops = Arc::new(DropCounter::new(Counter::default()));
        let (queue, writer) = RequestLogQueue::new(3, log.clone(), drops.clone());
        let (_stop, stopped) = tokio::sync::oneshot::channel();
        let writing = tokio::spawn(writer.run(stopped));
        queue.exchange_finished(&facts());
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..5 {
            queue.exchange_finished(&facts());
        }
        assert_eq!(drops.total(), 2, "the writer holds one, the queue three");
        log.up.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(queue);
        writing.await.unwrap();
        let page = log
            .query(&LogQuery {
                filter: LogFilter::default(),
                limit: 100,
                before: None,
            })
            .await
            .unwrap();
        assert_eq!(
            page.items.len(),
            4,
            "every queued record arrives after recovery"
        );
    }

    #[tokio::test]
    async fn pruning_loops_over_bounded_steps() {
        let log = MemoryRequestLog::default();
        let mut old = record_of(&facts());
        old.created_at = Utc::now() - TimeDelta::days(30);
        log.append(&vec![old; PRUNE_BATCH + 10]).await.unwrap();
        log.append(&[record_of(&facts())]).await.unwrap();
        assert_eq!(prune(&log, 7, 1_000_000).await, PRUNE_BATCH as u64 + 10);
        assert_eq!(log.len(), 1);
    }
}
