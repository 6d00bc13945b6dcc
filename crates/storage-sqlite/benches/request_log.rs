//! The request log over 1 000 000 records in a SQLite file (WAL), spread over seven days, 20
//! configs, 200 upstream keys and 50 client keys: how long `GET /admin/stats` takes for the
//! whole week by hour (every row), the last hour by minute, one config's, one upstream key's
//! and one client key's week by day, and how long the first page of the log takes, unfiltered
//! and filtered to 5xx answers (rare: 1 in 50). Seeding happens once, outside the measurements
//! (`REQUEST_LOG_BENCH_ROWS` overrides the count for a quick run; `REQUEST_LOG_BENCH_DB` names
//! a directory to seed in and keep, for reading query plans with `sqlite3` afterwards).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{Criterion, criterion_main};
use domain::{
    ApiKeyId, ClientKeyId, LogFilter, LogQuery, ProxyConfigId, RequestLog, RequestRecord,
    StatsInterval, StatsQuery, StatusClass,
};
use storage_sqlite::{SqliteOptions, SqliteStore};

/// A small deterministic generator, so every run seeds the same rows.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn record(random: &mut Lcg, at: DateTime<Utc>) -> RequestRecord {
    let status = match random.next(100) {
        0..=1 => 503,
        2..=6 => 429,
        _ => 200,
    };
    let config = random.next(20) as i64 + 1;
    RequestRecord {
        created_at: at,
        proxy_config_id: ProxyConfigId(config),
        client_key_id: (random.next(4) > 0).then(|| ClientKeyId(random.next(50) as i64 + 1)),
        api_key_id: Some(ApiKeyId(config * 10 + random.next(10) as i64)),
        method: "POST".into(),
        path: format!("/llm/config-{config}/v1/chat/completions"),
        status,
        outcome: if status == 200 {
            "success"
        } else {
            "rate_limited"
        }
        .into(),
        attempts: 1 + random.next(2) as u32,
        head_latency_ms: 50 + random.next(500),
        total_latency_ms: 100 + random.next(5_000),
        streamed: random.next(2) == 0,
        bytes_in: 500 + random.next(2_000),
        bytes_out: 1_000 + random.next(20_000),
        tokens_in: Some(10 + random.next(1_000)),
        tokens_out: Some(random.next(800)),
        error_code: None,
    }
}

fn request_log(c: &mut Criterion) {
    let rows: usize = std::env::var("REQUEST_LOG_BENCH_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("REQUEST_LOG_BENCH_DB").map(std::path::PathBuf::from);
    let path = kept.as_deref().unwrap_or(dir.path()).join("bench.db");
    let store = runtime
        .block_on(SqliteStore::connect(SqliteOptions::file(path)))
        .unwrap();
    let now = Utc::now();
    let week = TimeDelta::days(7);
    let step = week.num_milliseconds() / rows as i64;
    let seeding = Instant::now();
    let mut random = Lcg(7);
    runtime.block_on(async {
        let mut batch = Vec::with_capacity(5_000);
        for i in 0..rows {
            let at = now - week + TimeDelta::milliseconds(step * i as i64);
            batch.push(record(&mut random, at));
            if batch.len() == batch.capacity() {
                store.append(&batch).await.unwrap();
                batch.clear();
            }
        }
        store.append(&batch).await.unwrap();
    });
    eprintln!("seeded {rows} records in {:?}", seeding.elapsed());

    let stats = |interval, from: DateTime<Utc>, only: LogFilter| StatsQuery {
        filter: LogFilter {
            from: Some(from),
            to: Some(now + TimeDelta::seconds(1)),
            ..only
        },
        interval,
    };
    let mut group = c.benchmark_group("sqlite_request_log");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    for (name, query) in [
        (
            "stats_week_by_hour_all_rows",
            stats(StatsInterval::Hour, now - week, LogFilter::default()),
        ),
        (
            "stats_last_hour_by_minute",
            stats(
                StatsInterval::Minute,
                now - TimeDelta::hours(1),
                LogFilter::default(),
            ),
        ),
        (
            "stats_one_config_week_by_day",
            stats(
                StatsInterval::Day,
                now - week,
                LogFilter {
                    proxy_config_id: Some(ProxyConfigId(3)),
                    ..LogFilter::default()
                },
            ),
        ),
        (
            "stats_one_upstream_key_week_by_day",
            stats(
                StatsInterval::Day,
                now - week,
                LogFilter {
                    api_key_id: Some(ApiKeyId(35)),
                    ..LogFilter::default()
                },
            ),
        ),
        (
            "stats_one_client_key_week_by_day",
            stats(
                StatsInterval::Day,
                now - week,
                LogFilter {
                    client_key_id: Some(ClientKeyId(7)),
                    ..LogFilter::default()
                },
            ),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let answer = runtime.block_on(store.stats(&query)).unwrap();
                assert!(answer.series.iter().any(|p| p.requests > 0));
                answer
            });
        });
    }
    for (name, filter) in [
        ("page_newest_100", LogFilter::default()),
        (
            "page_newest_100_of_5xx",
            LogFilter {
                status_class: Some(StatusClass::ServerError),
                ..LogFilter::default()
            },
        ),
    ] {
        let query = LogQuery {
            filter,
            limit: 100,
            before: None,
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let page = runtime.block_on(store.query(&query)).unwrap();
                assert_eq!(page.items.len(), 100);
                page
            });
        });
    }
    group.finish();
}

/// The benchmark group (what `criterion_group!` would generate, documented).
fn benches() {
    let mut criterion = Criterion::default().configure_from_args();
    request_log(&mut criterion);
}

criterion_main!(benches);
