//! The request log's hour rollup, `request_log_rollup`: per hour, status and outcome, the
//! sums the stats queries need (requests, tokens, the latency histogram, its minimum and
//! maximum), once per dimension ([`Dim`]: per config, per upstream key within its config, per
//! client key, per client key within a config), so a week's stats read a few thousand rows
//! instead of every record, unfiltered or filtered to one config, upstream key or client key.
//!
//! `append` adds each batch to it in the raw insert's transaction, with one upsert per chunk of
//! keys (an atomic row update on every backend, so instances writing together add up). A null
//! key is stored as id 0 (ids start at 1), since unique keys never match NULLs on MySQL; so is
//! the config of a row that sums every config (`config_id` of [`Dim::ClientKey`]).

use std::collections::BTreeMap;

use domain::request_log::LATENCY_BUCKETS;
use sea_orm::{
    DbBackend, Statement,
    sea_query::{Alias, Expr, OnConflict, Query},
};

use crate::convert::LogRow;

/// The rollup's table.
pub const TABLE: &str = "request_log_rollup";
/// Width of a rollup row, milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// Keys per upsert statement: 40 parameters each, under SQLite's 32 766.
const KEYS_PER_UPSERT: usize = 128;
/// The row counts an upsert statement has, largest first (see [`crate::chunks`]): a batch over
/// many keys (a pool of 100 000) made a new, long statement text per batch before.
const UPSERT_SIZES: [usize; 5] = [KEYS_PER_UPSERT, 32, 8, 2, 1];

/// Which ids a rollup row is keyed by: `dim_id` and, but for [`Dim::ClientKey`], `config_id`.
///
/// Every record is counted once in each dimension, so any one dimension's rows sum to the
/// records, and a dimension keyed by the ids a stats query filters on and groups by answers that
/// part of the query alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dim {
    /// `dim_id` and `config_id` are both the `proxy_config_id`.
    Config = 1,
    /// `dim_id` is the `api_key_id` (0: no key tried); a key serves one config, so splitting by
    /// `config_id` adds no rows in practice (the split keeps a moved key exact).
    ApiKey = 2,
    /// `dim_id` is the `client_key_id` (0: the global proxy key) over every config
    /// (`config_id` 0): the unfiltered and client-key-filtered client lists read these few rows.
    ClientKey = 3,
    /// `dim_id` is the `client_key_id` within `config_id`: a client key may call any config, so
    /// this is the largest dimension, read only when a config filter meets the client keys.
    ClientKeyConfig = 4,
}

/// The id filters and groupings of a stats query, as a set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ids {
    /// `proxy_config_id`.
    pub config: bool,
    /// `api_key_id`.
    pub api_key: bool,
    /// `client_key_id`.
    pub client_key: bool,
}

impl Ids {
    /// The ids of `self` and of `other`.
    pub fn with(self, other: Ids) -> Ids {
        Ids {
            config: self.config || other.config,
            api_key: self.api_key || other.api_key,
            client_key: self.client_key || other.client_key,
        }
    }

    /// Whether every id of `self` is in `other`.
    fn within(self, other: Ids) -> bool {
        (!self.config || other.config)
            && (!self.api_key || other.api_key)
            && (!self.client_key || other.client_key)
    }
}

impl Dim {
    /// Every dimension, in the order [`Dim::covering`] tries them: each before the larger ones
    /// keyed by more ids (config before upstream key and client key per config, client key over
    /// every config before client key per config).
    pub const ALL: [Dim; 4] = [
        Dim::Config,
        Dim::ApiKey,
        Dim::ClientKey,
        Dim::ClientKeyConfig,
    ];

    pub fn code(self) -> i32 {
        self as i32
    }

    /// The ids a row of this dimension is keyed by.
    pub fn ids(self) -> Ids {
        let (config, api_key, client_key) = match self {
            Dim::Config => (true, false, false),
            Dim::ApiKey => (true, true, false),
            Dim::ClientKey => (false, false, true),
            Dim::ClientKeyConfig => (true, false, true),
        };
        Ids {
            config,
            api_key,
            client_key,
        }
    }

    /// The smallest dimension keyed by every id in `needed`, if any: the fewest rows to read.
    pub fn covering(needed: Ids) -> Option<Dim> {
        Dim::ALL.into_iter().find(|dim| needed.within(dim.ids()))
    }

    /// A record's `(config_id, dim_id)` in this dimension.
    fn key_of(self, row: &LogRow<'_>) -> (i64, i64) {
        match self {
            Dim::Config => (row.proxy_config_id, row.proxy_config_id),
            Dim::ApiKey => (row.proxy_config_id, row.api_key_id.unwrap_or(0)),
            Dim::ClientKey => (0, row.client_key_id.unwrap_or(0)),
            Dim::ClientKeyConfig => (row.proxy_config_id, row.client_key_id.unwrap_or(0)),
        }
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

/// The key columns, in the primary key's order: the dimension and hour lead, so the unfiltered
/// stats and the prune read one range per dimension.
pub const KEY_COLUMNS: [&str; 6] = ["dim", "hour", "config_id", "dim_id", "status", "outcome"];

type Key<'a> = (i32, i64, i64, i64, i32, &'a str);

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
fn aggregate<'a>(rows: &[LogRow<'a>]) -> BTreeMap<Key<'a>, Sums> {
    let mut sums: BTreeMap<Key<'a>, Sums> = BTreeMap::new();
    for row in rows {
        let hour = row.created_at - row.created_at.rem_euclid(HOUR_MS);
        let bucket = usize::try_from(row.latency_bucket)
            .unwrap_or(0)
            .min(LATENCY_BUCKETS - 1);
        for dim in Dim::ALL {
            let (config, id) = dim.key_of(row);
            let entry = sums
                .entry((dim.code(), hour, config, id, row.status, row.outcome))
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

/// The upserts adding the batch's `rows` to the rollup.
pub fn upsert_statements(
    backend: DbBackend,
    rows: &[LogRow<'_>],
) -> domain::Result<Vec<Statement>> {
    let sums: Vec<(Key<'_>, Sums)> = aggregate(rows).into_iter().collect();
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
    for chunk in crate::chunks::fixed_chunks(&sums, &UPSERT_SIZES) {
        let mut insert = Query::insert();
        insert.into_table(Alias::new(TABLE)).columns(
            KEY_COLUMNS
                .iter()
                .map(|c| Alias::new(*c))
                .chain(sum_columns.iter().map(|c| Alias::new(c.as_str())))
                .chain([Alias::new("min_latency"), Alias::new("max_latency")]),
        );
        for ((dim, hour, config, id, status, outcome), sums) in chunk {
            let mut values: Vec<Expr> = vec![
                Expr::val(*dim),
                Expr::val(*hour),
                Expr::val(*config),
                Expr::val(*id),
                Expr::val(*status),
                Expr::val(*outcome),
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
