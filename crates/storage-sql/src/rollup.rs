//! The request log's hour rollup, `request_log_rollup`: per hour, status and outcome, the
//! sums the stats queries need (requests, tokens, the latency histogram, its minimum and
//! maximum), once per config, once per upstream key and once per client key (the `dim`
//! column), so a week's stats read a few thousand rows instead of every record.
//!
//! `append` adds each batch to it in the raw insert's transaction, with one upsert per chunk of
//! keys (an atomic row update on every backend, so instances writing together add up). A null
//! key is stored as id 0 (ids start at 1), since unique keys never match NULLs on MySQL.

use std::collections::BTreeMap;

use domain::{RequestRecord, request_log::LATENCY_BUCKETS};
use sea_orm::{
    DbBackend, Statement,
    sea_query::{Alias, Expr, OnConflict, Query},
};

/// The rollup's table.
pub const TABLE: &str = "request_log_rollup";
/// Width of a rollup row, milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// Keys per upsert statement: 39 parameters each, under SQLite's 32 766.
const KEYS_PER_UPSERT: usize = 500;

/// Which id a rollup row is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dim {
    /// `proxy_config_id`.
    Config = 1,
    /// `api_key_id` (0: no key tried).
    ApiKey = 2,
    /// `client_key_id` (0: the global proxy key).
    ClientKey = 3,
}

impl Dim {
    pub const ALL: [Dim; 3] = [Dim::Config, Dim::ApiKey, Dim::ClientKey];

    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The name of histogram column `index`.
pub fn latency_column(index: usize) -> String {
    format!("lat_{index:02}")
}

/// The sum columns, in the order [`Sums::values`] gives them.
pub fn sum_columns() -> Vec<String> {
    let mut columns = vec![
        "requests".to_owned(),
        "tokens_in".to_owned(),
        "tokens_out".to_owned(),
    ];
    columns.extend((0..LATENCY_BUCKETS).map(latency_column));
    columns
}

/// The key columns.
pub const KEY_COLUMNS: [&str; 5] = ["hour", "dim", "dim_id", "status", "outcome"];

type Key = (i64, i32, i64, i32, String);

#[derive(Debug, Clone)]
struct Sums {
    requests: i64,
    tokens_in: i64,
    tokens_out: i64,
    min_latency: i64,
    max_latency: i64,
    latencies: [i64; LATENCY_BUCKETS],
}

impl Sums {
    fn values(&self) -> Vec<i64> {
        let mut values = vec![self.requests, self.tokens_in, self.tokens_out];
        values.extend(self.latencies);
        values
    }
}

/// The batch's sums per rollup key, in key order (so concurrent writers lock rows in the same
/// order on MySQL and PostgreSQL).
fn aggregate(records: &[RequestRecord]) -> BTreeMap<Key, Sums> {
    let mut sums: BTreeMap<Key, Sums> = BTreeMap::new();
    for record in records {
        let row = crate::convert::request_log_row(record);
        let hour = row.created_at - row.created_at.rem_euclid(HOUR_MS);
        let bucket = usize::try_from(row.latency_bucket)
            .unwrap_or(0)
            .min(LATENCY_BUCKETS - 1);
        for dim in Dim::ALL {
            let id = match dim {
                Dim::Config => row.proxy_config_id,
                Dim::ApiKey => row.api_key_id.unwrap_or(0),
                Dim::ClientKey => row.client_key_id.unwrap_or(0),
            };
            let entry = sums
                .entry((hour, dim.code(), id, row.status, row.outcome.clone()))
                .or_insert_with(|| Sums {
                    requests: 0,
                    tokens_in: 0,
                    tokens_out: 0,
                    min_latency: row.total_latency_ms,
                    max_latency: row.total_latency_ms,
                    latencies: [0; LATENCY_BUCKETS],
                });
            entry.requests += 1;
            entry.tokens_in += row.tokens_in.unwrap_or(0);
            entry.tokens_out += row.tokens_out.unwrap_or(0);
            entry.min_latency = entry.min_latency.min(row.total_latency_ms);
            entry.max_latency = entry.max_latency.max(row.total_latency_ms);
            entry.latencies[bucket] += 1;
        }
    }
    sums
}

/// `column` of the stored row combined with the inserted one, in the backend's words.
fn combine(backend: DbBackend, column: &str, function: Option<&str>) -> Expr {
    let (stored, inserted) = match backend {
        DbBackend::MySql => (format!("`{column}`"), format!("VALUES(`{column}`)")),
        _ => (
            format!("\"{TABLE}\".\"{column}\""),
            format!("\"excluded\".\"{column}\""),
        ),
    };
    let sql = match (function, backend) {
        (None, _) => format!("{stored} + {inserted}"),
        (Some(f), DbBackend::Sqlite) => format!("{f}({stored}, {inserted})"),
        (Some("MIN"), _) => format!("LEAST({stored}, {inserted})"),
        (Some(_), _) => format!("GREATEST({stored}, {inserted})"),
    };
    Expr::cust(sql)
}

/// The upserts adding `records` to the rollup.
pub fn upsert_statements(
    backend: DbBackend,
    records: &[RequestRecord],
) -> domain::Result<Vec<Statement>> {
    let sums: Vec<(Key, Sums)> = aggregate(records).into_iter().collect();
    let sum_columns = sum_columns();
    let mut updates: Vec<(Alias, Expr)> = sum_columns
        .iter()
        .map(|c| (Alias::new(c.as_str()), combine(backend, c, None)))
        .collect();
    updates.push((
        Alias::new("min_latency"),
        combine(backend, "min_latency", Some("MIN")),
    ));
    updates.push((
        Alias::new("max_latency"),
        combine(backend, "max_latency", Some("MAX")),
    ));
    let mut statements = Vec::new();
    for chunk in sums.chunks(KEYS_PER_UPSERT) {
        let mut insert = Query::insert();
        insert.into_table(Alias::new(TABLE)).columns(
            KEY_COLUMNS
                .iter()
                .map(|c| Alias::new(*c))
                .chain(sum_columns.iter().map(|c| Alias::new(c.as_str())))
                .chain([Alias::new("min_latency"), Alias::new("max_latency")]),
        );
        for ((hour, dim, id, status, outcome), sums) in chunk {
            let mut values: Vec<Expr> = vec![
                Expr::val(*hour),
                Expr::val(*dim),
                Expr::val(*id),
                Expr::val(*status),
                Expr::val(outcome.clone()),
            ];
            values.extend(sums.values().into_iter().map(Expr::val));
            values.push(Expr::val(sums.min_latency));
            values.push(Expr::val(sums.max_latency));
            insert
                .values(values)
                .map_err(|_| domain::Error::Internal("malformed request log rollup".to_owned()))?;
        }
        insert.on_conflict(
            OnConflict::columns(KEY_COLUMNS.iter().map(|c| Alias::new(*c)))
                .values(updates.clone())
                .to_owned(),
        );
        statements.push(backend.build(&insert));
    }
    Ok(statements)
}
