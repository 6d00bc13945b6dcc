//! The `RequestLog` contract: [`request_log`] (safe on a log others write to: it reads only the
//! records of configs it made up) and [`request_log_retention`] (deletes rows by age and count,
//! so it needs a log no one else uses).

use chrono::{DateTime, TimeDelta, Utc};

use super::unique_id_base;
use crate::{
    model::{ApiKeyId, ClientKeyId, ProxyConfigId},
    ports::RequestLog,
    request_log::{
        LogCursor, LogFilter, LogQuery, LoggedRequest, RequestRecord, Retention, StatsInterval,
        StatsQuery, StatusClass, TopEntry,
    },
};

fn record(config: ProxyConfigId, at: DateTime<Utc>, status: u16) -> RequestRecord {
    RequestRecord {
        created_at: at,
        proxy_config_id: config,
        client_key_id: None,
        api_key_id: Some(ApiKeyId(config.0 + 1)),
        method: "POST".into(),
        path: "/llm/contract/v1/chat/completions".into(),
        status,
        outcome: if status < 400 {
            "success"
        } else {
            "client_error"
        }
        .into(),
        attempts: 1,
        head_latency_ms: 40,
        total_latency_ms: 100,
        streamed: false,
        bytes_in: 120,
        bytes_out: 480,
        tokens_in: None,
        tokens_out: None,
        error_code: None,
    }
}

/// A minute-aligned time a little in the past, so windows and buckets are predictable.
fn base_time() -> DateTime<Utc> {
    let now = Utc::now() - TimeDelta::hours(1);
    let ms = now.timestamp_millis();
    DateTime::from_timestamp_millis(ms - ms.rem_euclid(60_000)).unwrap()
}

async fn all_pages(log: &dyn RequestLog, filter: LogFilter, limit: usize) -> Vec<LoggedRequest> {
    let mut seen = Vec::new();
    let mut before: Option<LogCursor> = None;
    for _ in 0..1_000 {
        let page = log
            .query(&LogQuery {
                filter: filter.clone(),
                limit,
                before,
            })
            .await
            .expect("query a page");
        assert!(page.items.len() <= limit, "a page holds at most its limit");
        seen.extend(page.items);
        match page.next_cursor {
            Some(cursor) => before = Some(cursor),
            None => return seen,
        }
    }
    panic!("the pages never ended");
}

fn config_filter(config: ProxyConfigId) -> LogFilter {
    LogFilter {
        proxy_config_id: Some(config),
        ..LogFilter::default()
    }
}

/// The whole request-log contract, on records of configs no one else uses.
pub async fn request_log(log: &dyn RequestLog) {
    log.append(&[]).await.expect("an empty batch is fine");
    log_pages_and_fields(log).await;
    log_filters(log).await;
    log_stats(log).await;
    log_large_batch(log).await;
}

/// Every field reads back as written (normalized), newest first, across pages.
pub async fn log_pages_and_fields(log: &dyn RequestLog) {
    let config = ProxyConfigId(unique_id_base());
    let base = base_time();
    let mut full = record(config, base + TimeDelta::microseconds(1_234_567), 502);
    full.client_key_id = Some(ClientKeyId(77));
    full.api_key_id = None;
    full.method = "PATCH".into();
    full.path = format!("/proxy/contract/{}", "p".repeat(600));
    full.outcome = "upstream_fault".into();
    full.attempts = 3;
    full.head_latency_ms = 1_500;
    full.total_latency_ms = 2_750;
    full.streamed = true;
    full.bytes_in = 5_000_000_000;
    full.bytes_out = 0;
    full.tokens_in = Some(1_234);
    full.tokens_out = Some(0);
    full.error_code = Some("upstream_unavailable".into());
    let mut records = vec![full.clone()];
    // Two at the same millisecond: the id orders them.
    for seconds in [5, 5, 10, 20, 30, 40] {
        records.push(record(config, base + TimeDelta::seconds(seconds), 200));
    }
    log.append(&records).await.expect("append");
    let seen = all_pages(log, config_filter(config), 3).await;
    assert_eq!(seen.len(), records.len(), "every record, once");
    for pair in seen.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        assert!(
            (older.record.created_at, older.id) < (newer.record.created_at, newer.id),
            "newest first: time, then id"
        );
    }
    let oldest = seen.last().unwrap();
    assert_eq!(oldest.record, full.normalized(), "every field kept");
    assert_eq!(oldest.record.path.len(), crate::request_log::MAX_PATH_BYTES);
    assert_eq!(
        oldest.record.created_at.timestamp_subsec_micros(),
        234_000,
        "time kept to the millisecond"
    );
    let last_page = log
        .query(&LogQuery {
            filter: config_filter(config),
            limit: 7,
            before: None,
        })
        .await
        .unwrap();
    assert_eq!(last_page.items.len(), 7);
    assert_eq!(
        last_page.next_cursor, None,
        "no cursor when nothing follows"
    );
}

/// Each filter narrows the records, alone and together.
pub async fn log_filters(log: &dyn RequestLog) {
    let config = ProxyConfigId(unique_id_base());
    let other = ProxyConfigId(config.0 + 500);
    let base = base_time();
    let mut records = Vec::new();
    for (i, status) in [200_u16, 201, 404, 429, 500, 503].into_iter().enumerate() {
        let mut r = record(config, base + TimeDelta::seconds(i as i64), status);
        r.client_key_id = (i % 2 == 0).then_some(ClientKeyId(config.0));
        r.api_key_id = Some(ApiKeyId(config.0 + (i as i64 % 3)));
        if status == 429 {
            r.outcome = "rate_limited".into();
        }
        records.push(r);
    }
    records.push(record(other, base, 200));
    log.append(&records).await.expect("append");
    let count = async |filter: LogFilter| all_pages(log, filter, 100).await.len();
    let within = |filter: LogFilter| LogFilter {
        proxy_config_id: Some(config),
        ..filter
    };
    assert_eq!(count(within(LogFilter::default())).await, 6);
    assert_eq!(count(config_filter(other)).await, 1);
    for (class, expected) in [
        (StatusClass::Success, 2),
        (StatusClass::ClientError, 2),
        (StatusClass::ServerError, 2),
    ] {
        let filter = within(LogFilter {
            status_class: Some(class),
            ..LogFilter::default()
        });
        assert_eq!(
            count(filter).await,
            expected,
            "status class {}",
            class.as_str()
        );
    }
    let by_client = within(LogFilter {
        client_key_id: Some(ClientKeyId(config.0)),
        ..LogFilter::default()
    });
    assert_eq!(count(by_client).await, 3, "client key filter");
    let by_key = within(LogFilter {
        api_key_id: Some(ApiKeyId(config.0 + 1)),
        ..LogFilter::default()
    });
    assert_eq!(count(by_key).await, 2, "api key filter");
    let by_outcome = within(LogFilter {
        outcome: Some("rate_limited".into()),
        ..LogFilter::default()
    });
    let limited = all_pages(log, by_outcome, 10).await;
    assert_eq!(limited.len(), 1, "outcome filter");
    assert_eq!(limited[0].record.status, 429);
    let window = within(LogFilter {
        from: Some(base + TimeDelta::seconds(1)),
        to: Some(base + TimeDelta::seconds(4)),
        ..LogFilter::default()
    });
    assert_eq!(count(window).await, 3, "from inclusive, to exclusive");
    let combined = within(LogFilter {
        status_class: Some(StatusClass::ServerError),
        client_key_id: Some(ClientKeyId(config.0)),
        ..LogFilter::default()
    });
    assert_eq!(count(combined).await, 1, "filters combine");
}

/// Series sum each bucket and fill the empty ones; top lists rank by requests.
pub async fn log_stats(log: &dyn RequestLog) {
    let config = ProxyConfigId(unique_id_base());
    let base = base_time();
    let mut records = Vec::new();
    // Minute 0: four requests, one 429 and one 503, tokens on two of them.
    for (second, status, tokens) in [
        (1, 200, Some((10, 20))),
        (2, 200, Some((5, 7))),
        (3, 429, None),
        (4, 503, None),
    ] {
        let mut r = record(config, base + TimeDelta::seconds(second), status);
        if let Some((input, output)) = tokens {
            r.tokens_in = Some(input);
            r.tokens_out = Some(output);
        }
        r.api_key_id = Some(ApiKeyId(config.0 + second % 2));
        r.client_key_id = (second == 1).then_some(ClientKeyId(9));
        records.push(r);
    }
    // Minute 2: one slow request.
    let mut slow = record(config, base + TimeDelta::seconds(150), 200);
    slow.total_latency_ms = 5_000;
    records.push(slow);
    log.append(&records).await.expect("append");
    let stats = log
        .stats(&StatsQuery {
            filter: LogFilter {
                proxy_config_id: Some(config),
                from: Some(base),
                to: Some(base + TimeDelta::minutes(3)),
                ..LogFilter::default()
            },
            interval: StatsInterval::Minute,
        })
        .await
        .expect("stats");
    assert_eq!(
        stats.series.len(),
        3,
        "one point per minute, empty ones too"
    );
    let first = stats.series[0];
    assert_eq!(first.time, base);
    assert_eq!(
        (first.requests, first.errors_4xx, first.errors_5xx),
        (4, 1, 1)
    );
    assert_eq!((first.tokens_in, first.tokens_out), (15, 27));
    assert_eq!(
        first.latency_p50_ms,
        Some(100),
        "equal latencies read exactly"
    );
    assert_eq!(first.latency_p95_ms, Some(100));
    assert_eq!(stats.series[1].requests, 0);
    assert_eq!(stats.series[1].latency_p50_ms, None);
    assert_eq!(stats.series[2].time, base + TimeDelta::minutes(2));
    assert_eq!(stats.series[2].latency_p95_ms, Some(5_000));
    assert_eq!(
        stats.top.configs,
        vec![TopEntry {
            id: config,
            requests: 5,
            errors: 2,
            tokens: 42
        }]
    );
    let keys: Vec<(ApiKeyId, u64)> = stats
        .top
        .api_keys
        .iter()
        .map(|e| (e.id, e.requests))
        .collect();
    assert_eq!(
        keys,
        vec![(ApiKeyId(config.0 + 1), 3), (ApiKeyId(config.0), 2)],
        "most requests first"
    );
    let clients: Vec<(Option<ClientKeyId>, u64)> = stats
        .top
        .client_keys
        .iter()
        .map(|e| (e.id, e.requests))
        .collect();
    assert_eq!(
        clients,
        vec![(None, 4), (Some(ClientKeyId(9)), 1)],
        "global proxy keys gather under no id"
    );
    let hourly = log
        .stats(&StatsQuery {
            filter: LogFilter {
                proxy_config_id: Some(config),
                status_class: Some(StatusClass::Success),
                from: Some(base),
                to: Some(base + TimeDelta::minutes(3)),
                ..LogFilter::default()
            },
            interval: StatsInterval::Hour,
        })
        .await
        .expect("stats");
    let requests: u64 = hourly.series.iter().map(|p| p.requests).sum();
    assert_eq!(requests, 3, "filters apply to stats");
}

/// A batch far over any bound-parameter limit is stored whole.
pub async fn log_large_batch(log: &dyn RequestLog) {
    let config = ProxyConfigId(unique_id_base());
    let base = base_time();
    let records: Vec<RequestRecord> = (0..5_000)
        .map(|i| record(config, base + TimeDelta::milliseconds(i), 200))
        .collect();
    log.append(&records).await.expect("append a large batch");
    let stats = log
        .stats(&StatsQuery {
            filter: LogFilter {
                proxy_config_id: Some(config),
                from: Some(base),
                to: Some(base + TimeDelta::minutes(1)),
                ..LogFilter::default()
            },
            interval: StatsInterval::Minute,
        })
        .await
        .unwrap();
    assert_eq!(stats.series[0].requests, 5_000);
}

/// Retention: age and row count, each in bounded steps. Deletes rows of other configs too, so
/// it needs a log no one else writes to.
pub async fn request_log_retention(log: &dyn RequestLog) {
    let config = ProxyConfigId(unique_id_base());
    let now = Utc::now();
    let old: Vec<RequestRecord> = (0..10)
        .map(|i| {
            record(
                config,
                now - TimeDelta::days(10) + TimeDelta::seconds(i),
                200,
            )
        })
        .collect();
    let recent: Vec<RequestRecord> = (0..20)
        .map(|i| {
            record(
                config,
                now - TimeDelta::hours(1) + TimeDelta::seconds(i),
                200,
            )
        })
        .collect();
    log.append(&old).await.unwrap();
    log.append(&recent).await.unwrap();
    assert_eq!(
        log.cap_edge(30).await.unwrap(),
        None,
        "no edge while the log holds no more than the cap"
    );
    let by_age = Retention {
        older_than: now - TimeDelta::days(7),
        cap_edge: None,
        batch: 4,
    };
    let mut steps = Vec::new();
    loop {
        let deleted = log.prune(&by_age).await.expect("prune by age");
        steps.push(deleted);
        if deleted < 4 {
            break;
        }
    }
    assert_eq!(steps, [4, 4, 2], "at most one batch per step");
    let left = all_pages(log, config_filter(config), 100).await;
    assert_eq!(left.len(), 20, "recent records stay");

    let edge = log
        .cap_edge(5)
        .await
        .unwrap()
        .expect("20 records, a cap of 5");
    assert_eq!(
        edge,
        left[5].cursor(),
        "the newest record beyond the newest 5"
    );
    // Logged after the edge was found: newer than it, so the pass leaves them.
    let later: Vec<RequestRecord> = (0..3)
        .map(|i| record(config, now + TimeDelta::seconds(i), 200))
        .collect();
    log.append(&later).await.unwrap();
    let by_count = Retention {
        cap_edge: Some(edge),
        batch: 100,
        ..by_age
    };
    assert_eq!(log.prune(&by_count).await.unwrap(), 15);
    assert_eq!(log.prune(&by_count).await.unwrap(), 0, "nothing more to do");
    let kept = all_pages(log, config_filter(config), 100).await;
    let kept_times: Vec<DateTime<Utc>> = kept.iter().map(|r| r.record.created_at).collect();
    let newest: Vec<DateTime<Utc>> = recent
        .iter()
        .chain(&later)
        .rev()
        .take(8)
        .map(|r| r.clone().normalized().created_at)
        .collect();
    assert_eq!(kept_times, newest, "the newest rows are kept");
    assert_eq!(
        log.cap_edge(8).await.unwrap(),
        None,
        "the log is within the cap again"
    );
    assert_eq!(
        log.cap_edge(7).await.unwrap(),
        Some(kept[7].cursor()),
        "one record over"
    );
}

/// The answer the contract expects for `query` over `records`: the domain's series builder fed
/// record by record, and top lists summed by hand.
fn reference_stats(records: &[RequestRecord], query: &StatsQuery) -> crate::UsageStats {
    use std::collections::BTreeMap;
    let matching: Vec<&RequestRecord> = records
        .iter()
        .filter(|record| query.filter.matches(record))
        .collect();
    let mut series = crate::request_log::SeriesBuilder::new(query);
    for record in &matching {
        series.add_record(record);
    }
    fn top<Id: Ord + Copy>(
        records: &[&RequestRecord],
        id: impl Fn(&RequestRecord) -> Option<Id>,
    ) -> Vec<TopEntry<Id>> {
        let mut sums: BTreeMap<Id, TopEntry<Id>> = BTreeMap::new();
        for record in records {
            let Some(id) = id(record) else { continue };
            let entry = sums.entry(id).or_insert(TopEntry {
                id,
                requests: 0,
                errors: 0,
                tokens: 0,
            });
            entry.requests += 1;
            entry.errors += u64::from(record.status >= 400 && record.status < 600);
            entry.tokens += record.tokens_in.unwrap_or(0) + record.tokens_out.unwrap_or(0);
        }
        crate::request_log::rank_top(sums.into_values().collect())
    }
    crate::UsageStats {
        series: series.build(),
        top: crate::TopLists {
            configs: top(&matching, |r| Some(r.proxy_config_id)),
            api_keys: top(&matching, |r| r.api_key_id),
            client_keys: top(&matching, |r| Some(r.client_key_id)),
        },
    }
}

/// Hour and day stats, unfiltered and filtered to a config, an upstream key, a client key and
/// each combination of them, over windows whose edges fall inside an hour, equal what the
/// records give record by record, whatever batches they were appended in (an adapter may
/// answer them from sums it keeps per hour). Upstream keys and client keys here serve several
/// configs each, so sums kept per key are checked against keys shared across configs. Reads
/// every config's records, so it needs a log no one else writes to.
pub async fn request_log_stats_by_hour(log: &dyn RequestLog) {
    let now = Utc::now().timestamp_millis();
    let day = 86_400_000_i64;
    let start = now - now.rem_euclid(day) - 3 * day;
    let base_id = unique_id_base();
    let statuses = [200_u16, 200, 201, 404, 429, 500, 503, 200, 302];
    let latencies = [
        3_u64, 40, 100, 250, 900, 1_800, 4_000, 12_000, 70_000, 150_000,
    ];
    let records: Vec<RequestRecord> = (0..2_000_i64)
        .map(|i| {
            let config = ProxyConfigId(base_id + i % 13);
            let mut record = record(
                config,
                DateTime::from_timestamp_millis(start + i * 97_531 + i % 7).unwrap(),
                statuses[(i % 9) as usize],
            );
            record.client_key_id = (i % 4 != 0).then(|| ClientKeyId(base_id + i % 17));
            record.api_key_id = (i % 11 != 0).then(|| ApiKeyId(base_id + 100 + i % 23));
            record.total_latency_ms = latencies[(i % 10) as usize] + (i % 5) as u64;
            record.tokens_in = (i % 3 != 0).then_some((i % 1_000) as u64);
            record.tokens_out = (i % 2 == 0).then_some((i % 700) as u64);
            if i % 31 == 0 {
                record.outcome = "upstream_error".into();
            }
            record
        })
        .collect();
    // Uneven batches, so the same hours are added to more than once.
    for batch in records.chunks(333) {
        log.append(batch).await.expect("append");
    }
    let at = |ms: i64| Some(DateTime::from_timestamp_millis(ms).unwrap());
    let window = |from: i64, to: i64, interval| StatsQuery {
        filter: LogFilter {
            from: at(from),
            to: at(to),
            ..LogFilter::default()
        },
        interval,
    };
    let mut queries = vec![
        window(start, start + 3 * day, StatsInterval::Day),
        window(
            start + 1_234_567,
            start + 2 * day + 777,
            StatsInterval::Hour,
        ),
        window(start + 1_234_567, start + 2 * day + 777, StatsInterval::Day),
        window(start + 3_600_000, start + 7_200_000, StatsInterval::Hour),
        window(start + 10, start + 3_599_990, StatsInterval::Hour),
    ];
    let mut by_class = window(start + 99, start + 2 * day - 99, StatsInterval::Hour);
    by_class.filter.status_class = Some(StatusClass::ServerError);
    queries.push(by_class);
    let mut by_outcome = window(start + 99, start + 2 * day - 99, StatsInterval::Day);
    by_outcome.filter.outcome = Some("upstream_error".into());
    queries.push(by_outcome);
    queries.extend(filtered_queries(&records[501], start, day));
    for query in &queries {
        let answer = log.stats(query).await.expect("stats");
        assert!(
            answer.series.iter().any(|p| p.requests > 0),
            "the window holds records: {query:?}"
        );
        assert_eq!(answer, reference_stats(&records, query), "{query:?}");
    }
}

/// Stats filtered by the ids of `sample` (a record with a config, an upstream key and a client
/// key), alone and combined, by hour and by day, over a window with partial hours at both edges
/// and one of whole hours; one with a status class and one with an outcome besides.
fn filtered_queries(sample: &RequestRecord, start: i64, day: i64) -> Vec<StatsQuery> {
    let (config, api_key, client_key) = (
        Some(sample.proxy_config_id),
        sample.api_key_id,
        sample.client_key_id,
    );
    assert!(
        api_key.is_some() && client_key.is_some(),
        "a sample with every id"
    );
    let ids = [
        (config, None, None),
        (None, api_key, None),
        (None, None, client_key),
        (config, api_key, None),
        (config, None, client_key),
        (None, api_key, client_key),
        (config, api_key, client_key),
    ];
    let at = |ms: i64| Some(DateTime::from_timestamp_millis(ms).unwrap());
    let mut queries = Vec::new();
    for (proxy_config_id, api_key_id, client_key_id) in ids {
        for (from, to, interval) in [
            (
                start + 1_234_567,
                start + 2 * day + 777,
                StatsInterval::Hour,
            ),
            (start + 1_234_567, start + 2 * day + 777, StatsInterval::Day),
            (start, start + 3 * day, StatsInterval::Day),
        ] {
            queries.push(StatsQuery {
                filter: LogFilter {
                    proxy_config_id,
                    api_key_id,
                    client_key_id,
                    from: at(from),
                    to: at(to),
                    ..LogFilter::default()
                },
                interval,
            });
        }
    }
    let mut by_class = queries[0].clone();
    by_class.filter.status_class = Some(StatusClass::ClientError);
    let mut by_outcome = queries[7].clone();
    by_outcome.filter.outcome = Some("success".into());
    queries.extend([by_class, by_outcome]);
    queries
}
