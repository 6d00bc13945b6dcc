//! The request log of SPEC §10: one [`RequestRecord`] per proxied request (ids, method, path
//! without query, status, outcome, attempts, latencies, bytes and tokens; never a body, a header
//! value or a key), the admin's log and stats queries validated into [`LogQuery`] and
//! [`StatsQuery`], the opaque [`LogCursor`], and the pure arithmetic every `RequestLog` adapter
//! shares: time buckets, the latency histogram percentiles are read from ([`LATENCY_BOUNDS`]),
//! and the gap-filled series ([`SeriesBuilder`]).
//!
//! Percentiles come from a fixed histogram rather than from sorting every latency, so an adapter
//! answers with one grouped query whatever the number of rows; the estimate is interpolated
//! inside its bucket and clamped to the bucket's observed minimum and maximum, so a series of
//! equal latencies reads back exactly.

use std::{borrow::Cow, collections::BTreeMap, fmt};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use crate::{
    command::ValidationErrors,
    model::{ApiKeyId, ClientKeyId, ProxyConfigId},
};

/// Longest stored path, in bytes; longer paths are cut at a character boundary.
pub const MAX_PATH_BYTES: usize = 512;
/// Longest stored method, outcome or error code, in bytes.
pub const MAX_LABEL_BYTES: usize = 64;

/// `text` cut to at most `max` bytes at a character boundary.
pub fn truncate_text(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What the log keeps of one proxied request: exactly the fields of SPEC §10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// When the exchange ended; stored to the millisecond.
    pub created_at: DateTime<Utc>,
    /// The config it went to.
    pub proxy_config_id: ProxyConfigId,
    /// The client key that made it; `None` for a global proxy key.
    pub client_key_id: Option<ClientKeyId>,
    /// The upstream key of the last attempt; `None` when no key was tried.
    pub api_key_id: Option<ApiKeyId>,
    /// The HTTP method. Texts that are static on the proxy's side (method, outcome, error code)
    /// are borrowed there, so building a record on the hot path copies only the path.
    pub method: Cow<'static, str>,
    /// The request path without its query string.
    pub path: String,
    /// The status the client got.
    pub status: u16,
    /// The outcome class (`success`, `rate_limited`, ... or the error code of a proxy error).
    pub outcome: Cow<'static, str>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Time until the response head, in milliseconds.
    pub head_latency_ms: u64,
    /// Time until the response body ended, in milliseconds.
    pub total_latency_ms: u64,
    /// Whether the response was streamed (server-sent events).
    pub streamed: bool,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Input tokens, when the upstream reported usage.
    pub tokens_in: Option<u64>,
    /// Output tokens, when the upstream reported usage.
    pub tokens_out: Option<u64>,
    /// The proxy's error code, when the request failed.
    pub error_code: Option<Cow<'static, str>>,
}

/// A record's texts as a store keeps them, cut to their bounds, borrowed from the record (so a
/// store that binds them copies each once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundedTexts<'a> {
    /// The method, at most [`MAX_LABEL_BYTES`].
    pub method: &'a str,
    /// The path, at most [`MAX_PATH_BYTES`].
    pub path: &'a str,
    /// The outcome, at most [`MAX_LABEL_BYTES`].
    pub outcome: &'a str,
    /// The error code, at most [`MAX_LABEL_BYTES`].
    pub error_code: Option<&'a str>,
}

impl RequestRecord {
    /// The record as a store keeps it: time to the millisecond, texts cut to their bounds
    /// ([`RequestRecord::bounded_texts`]).
    pub fn normalized(mut self) -> Self {
        self.created_at = to_millis(self.created_at);
        let bounded = self.bounded_texts();
        let method = bounded.method.len();
        let path = bounded.path.len();
        let outcome = bounded.outcome.len();
        let error_code = bounded.error_code.map(str::len);
        let cut = |text: &mut Cow<'static, str>, len: usize| {
            if len < text.len() {
                text.to_mut().truncate(len);
            }
        };
        cut(&mut self.method, method);
        self.path.truncate(path);
        cut(&mut self.outcome, outcome);
        if let (Some(code), Some(len)) = (&mut self.error_code, error_code) {
            cut(code, len);
        }
        self
    }

    /// The record's texts cut to their bounds: the path to [`MAX_PATH_BYTES`], the method,
    /// outcome and error code to [`MAX_LABEL_BYTES`].
    pub fn bounded_texts(&self) -> BoundedTexts<'_> {
        fn label(text: &str) -> &str {
            truncate_text(text, MAX_LABEL_BYTES)
        }
        BoundedTexts {
            method: label(&self.method),
            path: truncate_text(&self.path, MAX_PATH_BYTES),
            outcome: label(&self.outcome),
            error_code: self.error_code.as_deref().map(label),
        }
    }

    /// The status class this record falls in.
    pub fn status_class(&self) -> Option<StatusClass> {
        StatusClass::of(self.status)
    }
}

/// `time` truncated to the millisecond.
pub fn to_millis(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or(time)
}

/// Store identifier of a logged request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestRecordId(pub i64);

/// A record as read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The store's id.
    pub id: RequestRecordId,
    /// The record.
    pub record: RequestRecord,
}

impl LoggedRequest {
    /// Where a page that ends with this record continues.
    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            created_at_ms: self.record.created_at.timestamp_millis(),
            id: self.id,
        }
    }
}

/// A status class the filters name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 200 to 299.
    Success,
    /// 400 to 499.
    ClientError,
    /// 500 to 599.
    ServerError,
}

impl StatusClass {
    /// Every class, in wire order.
    pub const ALL: [StatusClass; 3] = [
        StatusClass::Success,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    /// `2xx`, `4xx` or `5xx`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }

    /// The statuses of the class, as a half-open range.
    pub fn range(self) -> std::ops::Range<u16> {
        match self {
            StatusClass::Success => 200..300,
            StatusClass::ClientError => 400..500,
            StatusClass::ServerError => 500..600,
        }
    }

    /// The class of `status`, if it is one the filters name.
    pub fn of(status: u16) -> Option<Self> {
        StatusClass::ALL
            .into_iter()
            .find(|class| class.range().contains(&status))
    }

    fn parse(text: &str) -> Option<Self> {
        StatusClass::ALL
            .into_iter()
            .find(|class| class.as_str().eq_ignore_ascii_case(text))
    }
}

/// Which records a log page or a stats answer covers; every field narrows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogFilter {
    /// Only this config.
    pub proxy_config_id: Option<ProxyConfigId>,
    /// Only this client key.
    pub client_key_id: Option<ClientKeyId>,
    /// Only this upstream key.
    pub api_key_id: Option<ApiKeyId>,
    /// Only statuses of this class.
    pub status_class: Option<StatusClass>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Only records at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only records before this time.
    pub to: Option<DateTime<Utc>>,
}

impl LogFilter {
    /// Whether `record` passes the filter (the in-memory adapter's and the tests' reading).
    pub fn matches(&self, record: &RequestRecord) -> bool {
        self.proxy_config_id
            .is_none_or(|id| record.proxy_config_id == id)
            && self
                .client_key_id
                .is_none_or(|id| record.client_key_id == Some(id))
            && self
                .api_key_id
                .is_none_or(|id| record.api_key_id == Some(id))
            && self
                .status_class
                .is_none_or(|class| class.range().contains(&record.status))
            && self
                .outcome
                .as_deref()
                .is_none_or(|outcome| record.outcome == outcome)
            && self.from.is_none_or(|from| record.created_at >= from)
            && self.to.is_none_or(|to| record.created_at < to)
    }
}

/// Where the next page of the log starts: after the last record of the previous one, in the
/// log's order (newest first: time, then id, both descending). Clients treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    /// The last record's time in milliseconds since the epoch.
    pub created_at_ms: i64,
    /// The last record's id.
    pub id: RequestRecordId,
}

impl LogCursor {
    /// Whether a record at `created_at_ms` with `id` comes after the cursor (is older).
    pub fn precedes(&self, created_at_ms: i64, id: RequestRecordId) -> bool {
        created_at_ms < self.created_at_ms || (created_at_ms == self.created_at_ms && id < self.id)
    }

    /// Reads a cursor this service handed out.
    ///
    /// # Errors
    /// [`crate::MalformedCursor`] for anything else.
    pub fn parse(text: &str) -> Result<Self, crate::MalformedCursor> {
        let (time, id) = text.trim().split_once('_').ok_or(crate::MalformedCursor)?;
        let number = |digits: &str| {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(crate::MalformedCursor);
            }
            digits.parse::<i64>().map_err(|_| crate::MalformedCursor)
        };
        Ok(LogCursor {
            created_at_ms: number(time)?,
            id: RequestRecordId(number(id)?),
        })
    }
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.created_at_ms, self.id.0)
    }
}

/// Most records one page holds, and the default limit.
pub const MAX_LOG_PAGE: usize = 500;
/// The default page size.
pub const DEFAULT_LOG_PAGE: usize = 100;

/// A validated log query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Which records.
    pub filter: LogFilter,
    /// Most records to return, 1 to [`MAX_LOG_PAGE`].
    pub limit: usize,
    /// Only records after this cursor (older).
    pub before: Option<LogCursor>,
}

/// One page of the log, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    /// The records.
    pub items: Vec<LoggedRequest>,
    /// Where the next page starts; `None` when no record follows.
    pub next_cursor: Option<LogCursor>,
}

impl LogPage {
    /// The page of `limit` records from `fetched`, which holds up to `limit + 1` matching
    /// records in log order: the extra one only tells that a next page exists.
    pub fn from_fetched(mut fetched: Vec<LoggedRequest>, limit: usize) -> Self {
        let more = fetched.len() > limit;
        fetched.truncate(limit);
        let next_cursor = if more {
            fetched.last().map(LoggedRequest::cursor)
        } else {
            None
        };
        LogPage {
            items: fetched,
            next_cursor,
        }
    }
}

/// The width of a stats bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsInterval {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl StatsInterval {
    /// Every interval, in wire order.
    pub const ALL: [StatsInterval; 3] = [
        StatsInterval::Minute,
        StatsInterval::Hour,
        StatsInterval::Day,
    ];

    /// `minute`, `hour` or `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatsInterval::Minute => "minute",
            StatsInterval::Hour => "hour",
            StatsInterval::Day => "day",
        }
    }

    /// The width in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            StatsInterval::Minute => 60_000,
            StatsInterval::Hour => 3_600_000,
            StatsInterval::Day => 86_400_000,
        }
    }

    /// The window a stats query covers when it names no `from`.
    pub fn default_window(self) -> TimeDelta {
        match self {
            StatsInterval::Minute => TimeDelta::hours(1),
            StatsInterval::Hour => TimeDelta::days(1),
            StatsInterval::Day => TimeDelta::days(30),
        }
    }

    /// The start of the bucket holding `millis` (milliseconds since the epoch).
    pub fn bucket_of(self, millis: i64) -> i64 {
        millis - millis.rem_euclid(self.millis())
    }

    fn parse(text: &str) -> Option<Self> {
        StatsInterval::ALL
            .into_iter()
            .find(|interval| interval.as_str().eq_ignore_ascii_case(text))
    }
}

/// Most points one series holds: the window divided by the interval.
pub const MAX_SERIES_POINTS: i64 = 2_000;
/// Entries of each top list.
pub const TOP_ENTRIES: usize = 10;

/// A validated stats query: a window (`from` and `to` are always set) cut into buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    /// Which records; `from` and `to` are set.
    pub filter: LogFilter,
    /// The bucket width.
    pub interval: StatsInterval,
}

impl StatsQuery {
    /// The window in milliseconds: `[from, to)`.
    pub fn window_ms(&self) -> (i64, i64) {
        let from = self.filter.from.map_or(0, |t| t.timestamp_millis());
        let to = self.filter.to.map_or(from, |t| t.timestamp_millis());
        (from, to)
    }
}

/// One bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsPoint {
    /// The bucket's start.
    pub time: DateTime<Utc>,
    /// Requests.
    pub requests: u64,
    /// Requests answered 4xx.
    pub errors_4xx: u64,
    /// Requests answered 5xx.
    pub errors_5xx: u64,
    /// Median total latency (estimated from the histogram), `None` without requests.
    pub latency_p50_ms: Option<u64>,
    /// 95th percentile total latency, `None` without requests.
    pub latency_p95_ms: Option<u64>,
    /// Input tokens reported.
    pub tokens_in: u64,
    /// Output tokens reported.
    pub tokens_out: u64,
}

/// One row of a top list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopEntry<Id> {
    /// Whose requests.
    pub id: Id,
    /// Requests.
    pub requests: u64,
    /// Requests answered 4xx or 5xx.
    pub errors: u64,
    /// Input and output tokens.
    pub tokens: u64,
}

/// The busiest configs, upstream keys and client keys of a window, most requests first (ties by
/// id), at most [`TOP_ENTRIES`] each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopLists {
    /// Configs.
    pub configs: Vec<TopEntry<ProxyConfigId>>,
    /// Upstream keys (requests that reached no key are left out).
    pub api_keys: Vec<TopEntry<ApiKeyId>>,
    /// Client keys; `None` gathers the requests made with a global proxy key.
    pub client_keys: Vec<TopEntry<Option<ClientKeyId>>>,
}

/// The answer to a stats query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsageStats {
    /// One point per bucket of the window, oldest first, empty buckets included.
    pub series: Vec<StatsPoint>,
    /// The top lists.
    pub top: TopLists,
}

/// Upper bounds (inclusive, milliseconds) of the latency histogram's buckets; a last, unbounded
/// bucket holds the rest.
pub const LATENCY_BOUNDS: [u64; 28] = [
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000,
    3_000, 5_000, 7_500, 10_000, 20_000, 30_000, 60_000, 120_000,
];

/// Number of histogram buckets: one per bound and the unbounded one.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// The histogram bucket of a latency.
pub fn latency_bucket(ms: u64) -> usize {
    LATENCY_BOUNDS.partition_point(|&bound| bound < ms)
}

/// Sums of one time bucket and one latency bucket: what one row of an adapter's grouped query
/// carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketSums {
    /// Requests.
    pub requests: u64,
    /// Requests answered 4xx.
    pub errors_4xx: u64,
    /// Requests answered 5xx.
    pub errors_5xx: u64,
    /// Input tokens.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
    /// Smallest total latency.
    pub min_latency_ms: u64,
    /// Largest total latency.
    pub max_latency_ms: u64,
}

impl BucketSums {
    /// The sums of one record.
    pub fn of(record: &RequestRecord) -> Self {
        BucketSums {
            requests: 1,
            errors_4xx: u64::from((400..500).contains(&record.status)),
            errors_5xx: u64::from((500..600).contains(&record.status)),
            tokens_in: record.tokens_in.unwrap_or(0),
            tokens_out: record.tokens_out.unwrap_or(0),
            min_latency_ms: record.total_latency_ms,
            max_latency_ms: record.total_latency_ms,
        }
    }

    fn add(&mut self, other: &BucketSums) {
        if self.requests == 0 {
            *self = *other;
            return;
        }
        self.requests += other.requests;
        self.errors_4xx += other.errors_4xx;
        self.errors_5xx += other.errors_5xx;
        self.tokens_in += other.tokens_in;
        self.tokens_out += other.tokens_out;
        self.min_latency_ms = self.min_latency_ms.min(other.min_latency_ms);
        self.max_latency_ms = self.max_latency_ms.max(other.max_latency_ms);
    }
}

#[derive(Debug, Clone, Default)]
struct TimeBucket {
    sums: BucketSums,
    latencies: [u64; LATENCY_BUCKETS],
}

impl TimeBucket {
    /// The `q` quantile (0 to 1) of the latencies, interpolated inside the histogram bucket
    /// holding its rank and clamped to the observed minimum and maximum.
    fn quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latencies.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: the smallest value with at least q of the values
        // at or below it.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut below = 0_u64;
        for (index, &count) in self.latencies.iter().enumerate() {
            if count == 0 || below + count < rank {
                below += count;
                continue;
            }
            let lower = if index == 0 {
                0
            } else {
                LATENCY_BOUNDS[index - 1]
            };
            let upper = LATENCY_BOUNDS
                .get(index)
                .copied()
                .unwrap_or(self.sums.max_latency_ms);
            let lower = lower.max(self.sums.min_latency_ms);
            let upper = upper.min(self.sums.max_latency_ms).max(lower);
            let fraction = (rank - below) as f64 / count as f64;
            let estimate = lower as f64 + (upper - lower) as f64 * fraction;
            return Some(estimate.round() as u64);
        }
        Some(self.sums.max_latency_ms)
    }
}

/// Builds a stats answer's series from grouped sums: adapters add what their query returned
/// (one call per time bucket and latency bucket, or per record) and get the gap-filled series
/// with its percentiles.
#[derive(Debug, Clone)]
pub struct SeriesBuilder {
    interval: StatsInterval,
    from_ms: i64,
    to_ms: i64,
    buckets: BTreeMap<i64, TimeBucket>,
}

impl SeriesBuilder {
    /// An empty series over the query's window.
    pub fn new(query: &StatsQuery) -> Self {
        let (from_ms, to_ms) = query.window_ms();
        SeriesBuilder {
            interval: query.interval,
            from_ms,
            to_ms,
            buckets: BTreeMap::new(),
        }
    }

    /// Adds the sums of the records of time bucket `bucket_ms` whose total latency falls in
    /// histogram bucket `latency_bucket` (an index into [`LATENCY_BOUNDS`], the last one for
    /// the rest).
    pub fn add(&mut self, bucket_ms: i64, latency_bucket: usize, sums: &BucketSums) {
        let bucket = self
            .buckets
            .entry(self.interval.bucket_of(bucket_ms))
            .or_default();
        bucket.sums.add(sums);
        let slot = latency_bucket.min(LATENCY_BUCKETS - 1);
        bucket.latencies[slot] += sums.requests;
    }

    /// Adds one record.
    pub fn add_record(&mut self, record: &RequestRecord) {
        self.add(
            record.created_at.timestamp_millis(),
            latency_bucket(record.total_latency_ms),
            &BucketSums::of(record),
        );
    }

    /// The series: one point per bucket from the window's first to its last, oldest first.
    pub fn build(self) -> Vec<StatsPoint> {
        let step = self.interval.millis();
        let first = self.interval.bucket_of(self.from_ms);
        let last = self.interval.bucket_of((self.to_ms - 1).max(self.from_ms));
        let mut series = Vec::new();
        let mut at = first;
        while at <= last {
            let bucket = self.buckets.get(&at);
            let sums = bucket.map(|b| b.sums).unwrap_or_default();
            series.push(StatsPoint {
                time: DateTime::from_timestamp_millis(at).unwrap_or_default(),
                requests: sums.requests,
                errors_4xx: sums.errors_4xx,
                errors_5xx: sums.errors_5xx,
                latency_p50_ms: bucket.and_then(|b| b.quantile(0.5)),
                latency_p95_ms: bucket.and_then(|b| b.quantile(0.95)),
                tokens_in: sums.tokens_in,
                tokens_out: sums.tokens_out,
            });
            at += step;
        }
        series
    }
}

/// Sorts a top list (most requests first, ties by id) and keeps its first [`TOP_ENTRIES`].
pub fn rank_top<Id: Ord + Copy>(mut entries: Vec<TopEntry<Id>>) -> Vec<TopEntry<Id>> {
    entries.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.id.cmp(&b.id)));
    entries.truncate(TOP_ENTRIES);
    entries
}

/// What one prune pass deletes, and how much one step of it may: records past the age limit,
/// and records beyond the row cap as it stood when the pass began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Records older than this are deleted.
    pub older_than: DateTime<Utc>,
    /// The row cap's edge as [`crate::RequestLog::cap_edge`] found it when the pass began: this
    /// record and every older one are deleted. Found once per pass, since finding it reads as
    /// many rows as the cap keeps; records logged since are newer, so they stay.
    pub cap_edge: Option<LogCursor>,
    /// Most records one prune step deletes, so no delete holds the store for long.
    pub batch: usize,
}

impl Retention {
    /// Whether a record at `created_at_ms` with `id` is past the retention.
    pub fn dooms(&self, created_at_ms: i64, id: RequestRecordId) -> bool {
        created_at_ms < self.older_than.timestamp_millis()
            || self.cap_edge.is_some_and(|edge| {
                edge.precedes(created_at_ms, id)
                    || (edge.created_at_ms == created_at_ms && edge.id == id)
            })
    }
}

/// The log query as it arrives in the query string: every parameter optional text.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogFilterInput {
    /// A config id.
    pub proxy_config_id: Option<String>,
    /// A client key id.
    pub client_key_id: Option<String>,
    /// An upstream key id.
    pub api_key_id: Option<String>,
    /// `2xx`, `4xx` or `5xx`.
    pub status_class: Option<String>,
    /// An outcome class.
    pub outcome: Option<String>,
    /// RFC 3339 time, inclusive.
    pub from: Option<String>,
    /// RFC 3339 time, exclusive.
    pub to: Option<String>,
}

/// `GET /admin/request-logs`' query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogQueryInput {
    /// The filters.
    #[serde(flatten)]
    pub filter: LogFilterInput,
    /// Records per page, 1 to 500 (default 100).
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /admin/stats`' query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatsInput {
    /// The filters.
    #[serde(flatten)]
    pub filter: LogFilterInput,
    /// `minute`, `hour` (default) or `day`.
    pub interval: Option<String>,
}

/// Why a log or stats query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogQueryError {
    /// The cursor is not one this service handed out.
    #[error(transparent)]
    Cursor(#[from] crate::MalformedCursor),
    /// Some parameters are invalid; each is listed.
    #[error("{0}")]
    Fields(ValidationErrors),
}

fn present(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|s| !s.is_empty())
}

fn parse_id(errors: &mut ValidationErrors, field: &str, raw: Option<&str>) -> Option<i64> {
    let text = present(raw)?;
    match text.parse::<i64>() {
        Ok(id) if id >= 0 => Some(id),
        _ => {
            errors.add(field, "must be a whole number");
            None
        }
    }
}

fn parse_time(
    errors: &mut ValidationErrors,
    field: &str,
    raw: Option<&str>,
) -> Option<DateTime<Utc>> {
    // Present but empty is refused, not ignored: the document promises a date-time.
    let text = raw?.trim();
    match DateTime::parse_from_rfc3339(text) {
        Ok(time) => Some(time.with_timezone(&Utc)),
        Err(_) => {
            errors.add(
                field,
                "must be an RFC 3339 time such as 2026-12-06T14:05:00Z",
            );
            None
        }
    }
}

impl LogFilterInput {
    fn validate(&self, errors: &mut ValidationErrors) -> LogFilter {
        let filter = LogFilter {
            proxy_config_id: parse_id(errors, "proxy_config_id", self.proxy_config_id.as_deref())
                .map(ProxyConfigId),
            client_key_id: parse_id(errors, "client_key_id", self.client_key_id.as_deref())
                .map(ClientKeyId),
            api_key_id: parse_id(errors, "api_key_id", self.api_key_id.as_deref()).map(ApiKeyId),
            status_class: present(self.status_class.as_deref()).and_then(|text| {
                let class = StatusClass::parse(text);
                if class.is_none() {
                    errors.add("status_class", "must be 2xx, 4xx or 5xx");
                }
                class
            }),
            outcome: present(self.outcome.as_deref()).and_then(|text| {
                let valid = text.len() <= MAX_LABEL_BYTES
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    errors.add("outcome", "must be an outcome class such as rate_limited");
                }
                valid.then(|| text.to_owned())
            }),
            from: parse_time(errors, "from", self.from.as_deref()),
            to: parse_time(errors, "to", self.to.as_deref()),
        };
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && from >= to
        {
            errors.add("to", "must be later than from");
        }
        filter
    }
}

impl LogQueryInput {
    /// Validates the query, reporting every bad parameter at once; a malformed cursor is
    /// reported first.
    ///
    /// # Errors
    /// [`LogQueryError`].
    pub fn validate(&self) -> Result<LogQuery, LogQueryError> {
        let before = present(self.cursor.as_deref())
            .map(LogCursor::parse)
            .transpose()?;
        let mut errors = ValidationErrors::default();
        let filter = self.filter.validate(&mut errors);
        let limit = match present(self.limit.as_deref()) {
            None => Some(DEFAULT_LOG_PAGE),
            Some(text) => {
                let limit = text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LOG_PAGE).contains(n));
                if limit.is_none() {
                    errors.add(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LOG_PAGE}"),
                    );
                }
                limit
            }
        };
        match limit {
            Some(limit) if errors.is_empty() => Ok(LogQuery {
                filter,
                limit,
                before,
            }),
            _ => Err(LogQueryError::Fields(errors)),
        }
    }
}

impl StatsInput {
    /// Validates the query against the time `now`: a missing `to` is `now`, a missing `from`
    /// is the interval's default window before `to`; the window may hold at most
    /// [`MAX_SERIES_POINTS`] buckets.
    ///
    /// # Errors
    /// [`LogQueryError::Fields`] listing every bad parameter.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<StatsQuery, LogQueryError> {
        let mut errors = ValidationErrors::default();
        let mut filter = self.filter.validate(&mut errors);
        let interval = match present(self.interval.as_deref()) {
            None => Some(StatsInterval::Hour),
            Some(text) => {
                let interval = StatsInterval::parse(text);
                if interval.is_none() {
                    errors.add("interval", "must be minute, hour or day");
                }
                interval
            }
        };
        let Some(interval) = interval else {
            return Err(LogQueryError::Fields(errors));
        };
        if !errors.is_empty() {
            return Err(LogQueryError::Fields(errors));
        }
        let to = filter.to.unwrap_or(now);
        let from = filter.from.unwrap_or(to - interval.default_window());
        let points = (to - from).num_milliseconds() / interval.millis() + 1;
        if points > MAX_SERIES_POINTS {
            errors.add(
                "from",
                format!(
                    "the window holds {points} {} buckets; at most {MAX_SERIES_POINTS} are allowed: narrow from/to or use a wider interval",
                    interval.as_str()
                ),
            );
            return Err(LogQueryError::Fields(errors));
        }
        filter.from = Some(from);
        filter.to = Some(to);
        Ok(StatsQuery { filter, interval })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::TimeZone;

    use super::*;

    fn record(at_ms: i64, status: u16, latency: u64) -> RequestRecord {
        RequestRecord {
            created_at: DateTime::from_timestamp_millis(at_ms).unwrap(),
            proxy_config_id: ProxyConfigId(1),
            client_key_id: None,
            api_key_id: Some(ApiKeyId(2)),
            method: "POST".into(),
            path: "/llm/x/v1/chat/completions".into(),
            status,
            outcome: "success".into(),
            attempts: 1,
            head_latency_ms: latency,
            total_latency_ms: latency,
            streamed: false,
            bytes_in: 10,
            bytes_out: 20,
            tokens_in: Some(3),
            tokens_out: Some(4),
            error_code: None,
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let cursor = LogCursor {
            created_at_ms: 1_765_000_000_123,
            id: RequestRecordId(42),
        };
        assert_eq!(LogCursor::parse(&cursor.to_string()), Ok(cursor));
        for bad in [
            "",
            "12",
            "a_1",
            "1_b",
            "-1_2",
            "1_2_3",
            "99999999999999999999_1",
        ] {
            assert!(LogCursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cursor_precedes_older_records_and_lower_ids_at_the_same_time() {
        let cursor = LogCursor {
            created_at_ms: 1_000,
            id: RequestRecordId(5),
        };
        assert!(cursor.precedes(999, RequestRecordId(9)));
        assert!(cursor.precedes(1_000, RequestRecordId(4)));
        assert!(!cursor.precedes(1_000, RequestRecordId(5)));
        assert!(!cursor.precedes(1_001, RequestRecordId(1)));
    }

    #[test]
    fn retention_dooms_records_past_the_age_limit_and_at_or_before_the_cap_edge() {
        let by_age = Retention {
            older_than: DateTime::from_timestamp_millis(500).unwrap(),
            cap_edge: None,
            batch: 10,
        };
        assert!(by_age.dooms(499, RequestRecordId(100)));
        assert!(!by_age.dooms(500, RequestRecordId(1)));

        let by_cap = Retention {
            cap_edge: Some(LogCursor {
                created_at_ms: 1_000,
                id: RequestRecordId(5),
            }),
            ..by_age
        };
        assert!(by_cap.dooms(1_000, RequestRecordId(5)), "the edge itself");
        assert!(by_cap.dooms(1_000, RequestRecordId(4)));
        assert!(by_cap.dooms(999, RequestRecordId(9)));
        assert!(by_cap.dooms(499, RequestRecordId(100)), "still by age");
        assert!(!by_cap.dooms(1_000, RequestRecordId(6)));
        assert!(
            !by_cap.dooms(1_001, RequestRecordId(1)),
            "logged after the edge"
        );
    }

    #[test]
    fn normalizing_cuts_texts_at_character_boundaries_and_time_to_milliseconds() {
        let mut long = record(0, 200, 1);
        long.path = "é".repeat(400);
        long.created_at = Utc.timestamp_opt(1, 123_456_789).unwrap();
        let normal = long.normalized();
        assert!(normal.path.len() <= MAX_PATH_BYTES);
        assert!(normal.path.chars().all(|c| c == 'é'));
        assert_eq!(normal.created_at.timestamp_subsec_nanos(), 123_000_000);
    }

    #[test]
    fn bounded_texts_are_the_texts_a_normalized_record_keeps() {
        let mut long = record(0, 200, 1);
        long.path = "é".repeat(400);
        long.method = "M".repeat(70).into();
        long.outcome = format!("{}é", "o".repeat(63)).into();
        long.error_code = Some("e".repeat(65).into());
        let bounded = long.bounded_texts();
        assert_eq!(bounded.method.len(), MAX_LABEL_BYTES);
        assert_eq!(
            bounded.outcome,
            "o".repeat(63),
            "cut before a split character"
        );
        assert_eq!(bounded.error_code.map(str::len), Some(MAX_LABEL_BYTES));
        let normal = long.clone().normalized();
        assert_eq!(
            bounded,
            BoundedTexts {
                method: &normal.method,
                path: &normal.path,
                outcome: &normal.outcome,
                error_code: normal.error_code.as_deref(),
            }
        );
        let short = record(0, 200, 1);
        let texts = short.bounded_texts();
        assert_eq!((texts.method, texts.path), (&*short.method, &*short.path));
        assert_eq!(texts.error_code, short.error_code.as_deref());
    }

    #[test]
    fn latency_buckets_hold_their_upper_bound() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 0);
        assert_eq!(latency_bucket(2), 1);
        assert_eq!(latency_bucket(100), 11);
        assert_eq!(latency_bucket(101), 12);
        assert_eq!(latency_bucket(10_000_000), LATENCY_BUCKETS - 1);
    }

    fn stats_query(from_ms: i64, to_ms: i64, interval: StatsInterval) -> StatsQuery {
        StatsQuery {
            filter: LogFilter {
                from: DateTime::from_timestamp_millis(from_ms),
                to: DateTime::from_timestamp_millis(to_ms),
                ..LogFilter::default()
            },
            interval,
        }
    }

    #[test]
    fn a_series_fills_empty_buckets_and_sums_each_one() {
        let query = stats_query(0, 180_000, StatsInterval::Minute);
        let mut series = SeriesBuilder::new(&query);
        series.add_record(&record(1_000, 200, 100));
        series.add_record(&record(2_000, 429, 100));
        series.add_record(&record(150_000, 503, 40));
        let points = series.build();
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].requests, 2);
        assert_eq!(points[0].errors_4xx, 1);
        assert_eq!(points[0].tokens_in, 6);
        assert_eq!(
            points[0].latency_p50_ms,
            Some(100),
            "equal latencies read back exactly"
        );
        assert_eq!(points[1].requests, 0);
        assert_eq!(points[1].latency_p50_ms, None);
        assert_eq!(points[2].errors_5xx, 1);
        assert_eq!(points[2].time.timestamp_millis(), 120_000);
    }

    #[test]
    fn percentiles_are_close_to_the_exact_ones() {
        let query = stats_query(0, 60_000, StatsInterval::Minute);
        let mut series = SeriesBuilder::new(&query);
        let latencies: Vec<u64> = (1..=1_000).collect();
        for &latency in &latencies {
            series.add_record(&record(0, 200, latency));
        }
        let point = series.build()[0];
        let p50 = point.latency_p50_ms.unwrap();
        let p95 = point.latency_p95_ms.unwrap();
        assert!((450..=550).contains(&p50), "p50 {p50}");
        assert!((900..=1_000).contains(&p95), "p95 {p95}");
    }

    #[test]
    fn top_lists_rank_by_requests_then_id_and_keep_ten() {
        let entries = (0..15)
            .map(|i| TopEntry {
                id: ProxyConfigId(i),
                requests: u64::try_from(i % 5).unwrap(),
                errors: 0,
                tokens: 0,
            })
            .collect();
        let ranked = rank_top(entries);
        assert_eq!(ranked.len(), TOP_ENTRIES);
        assert_eq!(ranked[0].id, ProxyConfigId(4));
        assert_eq!(ranked[1].id, ProxyConfigId(9));
    }

    fn filter_input(pairs: &[(&str, &str)]) -> LogFilterInput {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        LogFilterInput {
            proxy_config_id: get("proxy_config_id"),
            client_key_id: get("client_key_id"),
            api_key_id: get("api_key_id"),
            status_class: get("status_class"),
            outcome: get("outcome"),
            from: get("from"),
            to: get("to"),
        }
    }

    #[test]
    fn every_filter_is_read_and_every_bad_one_listed() {
        let query = LogQueryInput {
            filter: filter_input(&[
                ("proxy_config_id", "3"),
                ("client_key_id", "4"),
                ("api_key_id", "5"),
                ("status_class", "4XX"),
                ("outcome", "rate_limited"),
                ("from", "2026-12-06T14:00:00Z"),
                ("to", "2026-12-06T16:00:00+01:00"),
            ]),
            limit: Some("20".into()),
            cursor: None,
        }
        .validate()
        .unwrap();
        assert_eq!(query.filter.proxy_config_id, Some(ProxyConfigId(3)));
        assert_eq!(query.filter.client_key_id, Some(ClientKeyId(4)));
        assert_eq!(query.filter.status_class, Some(StatusClass::ClientError));
        assert_eq!(query.limit, 20);
        let err = LogQueryInput {
            filter: filter_input(&[
                ("proxy_config_id", "x"),
                ("status_class", "3xx"),
                ("outcome", "DROP TABLE"),
                ("from", "yesterday"),
            ]),
            limit: Some("0".into()),
            cursor: None,
        }
        .validate()
        .unwrap_err();
        let LogQueryError::Fields(errors) = err else {
            panic!("{err:?}");
        };
        let fields: Vec<&str> = errors.fields().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "proxy_config_id",
                "status_class",
                "outcome",
                "from",
                "limit"
            ]
        );
    }

    #[test]
    fn stats_windows_default_to_the_interval_and_are_bounded() {
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 14, 30, 0).unwrap();
        let query = StatsInput {
            filter: LogFilterInput::default(),
            interval: Some("minute".into()),
        }
        .validate(now)
        .unwrap();
        assert_eq!(query.filter.to, Some(now));
        assert_eq!(query.filter.from, Some(now - TimeDelta::hours(1)));
        let too_long = StatsInput {
            filter: filter_input(&[("from", "2026-01-01T00:00:00Z")]),
            interval: Some("minute".into()),
        }
        .validate(now);
        assert!(matches!(too_long, Err(LogQueryError::Fields(_))));
        let bad = StatsInput {
            filter: LogFilterInput::default(),
            interval: Some("week".into()),
        }
        .validate(now);
        assert!(matches!(bad, Err(LogQueryError::Fields(_))));
    }

    #[test]
    fn a_fetched_page_with_an_extra_record_has_a_cursor() {
        let entry = |id| LoggedRequest {
            id: RequestRecordId(id),
            record: record(1_000, 200, 1),
        };
        let page = LogPage::from_fetched(vec![entry(3), entry(2), entry(1)], 2);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor.unwrap().id, RequestRecordId(2));
        let last = LogPage::from_fetched(vec![entry(1)], 2);
        assert_eq!(last.next_cursor, None);
    }
}
