//! The `RequestLog` port on [`SqlStore`], written once for SQLite, MySQL and PostgreSQL with
//! sea-query's builder (no backend-specific SQL but the integer cast's type name and the
//! rollup upsert's min/max, see [`crate::rollup`]).
//!
//! Appends are multi-row inserts of at most [`RECORDS_PER_INSERT`] rows, under every backend's
//! bound-parameter limit, in a few fixed sizes so their prepared statements are reused (and
//! their SQL is rendered once per backend and size; a batch builds only its values, borrowing
//! each record's texts until they are bound), plus the upserts of the batch's hour sums into the
//! rollup, in one transaction. Pages read newest first along an index that ends in the time.
//! Stats are grouped queries run side by side (the series by time bucket and latency bucket, and the
//! three top lists). Hour and day stats read each of those four parts from the rollup for the
//! whole hours of their window, and raw rows only for the partial hours at its edges, whenever
//! one rollup dimension is keyed by the part's ids (`StatsPlan`): every part unfiltered or
//! filtered to a config, an upstream key or a client key (with or without a config), but for
//! the client keys under an upstream-key filter and the upstream keys under a client-key filter,
//! which, like minute stats and every part under both key filters, read raw rows of the whole
//! window through the filtered id's index (the id, then the time), so their cost follows that
//! id's records in the window.
//! Percentiles come from the domain's latency histogram. Prune steps delete at most one batch
//! of ids each, oldest first, so no delete holds the write lock long; rollup hours go when they
//! are wholly past the retention age.

use std::{collections::BTreeMap, sync::OnceLock};

use async_trait::async_trait;
use domain::{
    ApiKeyId, ClientKeyId, LogCursor, LogFilter, LogPage, LogQuery, ProxyConfigId, RequestLog,
    RequestRecord, RequestRecordId, Result, Retention, StatsInterval, StatsQuery, TopEntry,
    TopLists, UsageStats,
    request_log::{BucketSums, LATENCY_BUCKETS, SeriesBuilder, rank_top},
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, Order, QueryFilter, QueryOrder,
    QueryResult, QuerySelect, Statement,
    sea_query::{
        Alias, CaseStatement, Condition, Expr, ExprTrait, NullOrdering, Query, SelectStatement,
    },
};

use crate::{
    SqlStore,
    convert::{self, LogRow},
    entity::request_log::{Column, Entity},
    rollup::{self, Dim, HOUR_MS, Ids},
};

/// Rows per insert statement at most: 18 parameters each, far under SQLite's 32 766 and
/// MySQL's and PostgreSQL's 65 535.
pub const RECORDS_PER_INSERT: usize = 256;
/// The row counts an insert statement has, largest first (see [`crate::chunks`]).
const INSERT_SIZES: [usize; 5] = [RECORDS_PER_INSERT, 64, 16, 4, 1];
/// Most ids one prune step deletes, whatever the caller asks.
const MAX_PRUNE_BATCH: usize = 10_000;

/// The rows matching a filter.
fn filter_condition(filter: &LogFilter) -> Condition {
    let mut condition = Condition::all();
    if let Some(id) = filter.proxy_config_id {
        condition = condition.add(Column::ProxyConfigId.eq(id.0));
    }
    if let Some(id) = filter.client_key_id {
        condition = condition.add(Column::ClientKeyId.eq(id.0));
    }
    if let Some(id) = filter.api_key_id {
        condition = condition.add(Column::ApiKeyId.eq(id.0));
    }
    if let Some(class) = filter.status_class {
        let range = class.range();
        condition = condition
            .add(Column::Status.gte(i32::from(range.start)))
            .add(Column::Status.lt(i32::from(range.end)));
    }
    if let Some(outcome) = &filter.outcome {
        condition = condition.add(Column::Outcome.eq(outcome.as_str()));
    }
    if let Some(from) = filter.from {
        condition = condition.add(Column::CreatedAt.gte(from.timestamp_millis()));
    }
    if let Some(to) = filter.to {
        condition = condition.add(Column::CreatedAt.lt(to.timestamp_millis()));
    }
    condition
}

/// Rows at or before `(created_at, id)` in the log's order.
fn at_or_before(created_at: i64, id: i64) -> Condition {
    Condition::any().add(Column::CreatedAt.lt(created_at)).add(
        Condition::all()
            .add(Column::CreatedAt.eq(created_at))
            .add(Column::Id.lte(id)),
    )
}

impl SqlStore {
    /// `expr` as a 64-bit integer: sums are decimals on MySQL and numerics on PostgreSQL.
    fn int(&self, expr: Expr) -> Expr {
        let name = match self.backend {
            DbBackend::MySql => "SIGNED",
            _ => "BIGINT",
        };
        expr.cast_as(Alias::new(name))
    }

    /// `SUM(CASE WHEN condition THEN 1 ELSE 0 END)` as an integer.
    fn count_where(&self, condition: Condition) -> Expr {
        let case = CaseStatement::new()
            .case(condition, Expr::val(1_i64))
            .finally(Expr::val(0_i64));
        let case: Expr = case.into();
        self.int(case.sum())
    }

    fn status_in(low: i32, high: i32) -> Condition {
        Condition::all()
            .add(Expr::col(Column::Status).gte(low))
            .add(Expr::col(Column::Status).lt(high))
    }

    fn tokens_sum(&self, column: Column) -> Expr {
        self.int(Expr::col(column).if_null(0_i64).sum())
    }

    /// The series query: sums per time bucket and latency bucket.
    fn series_statement(&self, query: &StatsQuery) -> Statement {
        let width = query.interval.millis();
        let bucket = Expr::col(Column::CreatedAt).sub(Expr::col(Column::CreatedAt).modulo(width));
        let mut select = Query::select();
        select
            .from(Entity)
            .expr_as(self.int(bucket), "bucket")
            .expr_as(self.int(Expr::col(Column::LatencyBucket)), "latency_bucket")
            .expr_as(self.int(Expr::col(Column::Id).count()), "requests")
            .expr_as(self.count_where(Self::status_in(400, 500)), "errors_4xx")
            .expr_as(self.count_where(Self::status_in(500, 600)), "errors_5xx")
            .expr_as(self.tokens_sum(Column::TokensIn), "tokens_in")
            .expr_as(self.tokens_sum(Column::TokensOut), "tokens_out")
            .expr_as(
                self.int(Expr::col(Column::TotalLatencyMs).min()),
                "min_latency",
            )
            .expr_as(
                self.int(Expr::col(Column::TotalLatencyMs).max()),
                "max_latency",
            )
            .cond_where(filter_condition(&query.filter))
            .group_by_col(Alias::new("bucket"))
            .group_by_col(Alias::new("latency_bucket"));
        self.backend.build(&select)
    }

    /// A top-list query: requests, errors and tokens per value of `column`, most requests first.
    fn top_statement(
        &self,
        query: &StatsQuery,
        column: Column,
        skip_null: bool,
        limit: bool,
    ) -> Statement {
        let mut select: SelectStatement = Query::select();
        let mut condition = filter_condition(&query.filter);
        if skip_null {
            condition = condition.add(Expr::col(column).is_not_null());
        }
        select
            .from(Entity)
            .expr_as(Expr::col(column), "id")
            .expr_as(self.int(Expr::col(Column::Id).count()), "requests")
            .expr_as(self.count_where(Self::status_in(400, 600)), "errors")
            .expr_as(
                self.int(
                    Expr::col(Column::TokensIn)
                        .if_null(0_i64)
                        .add(Expr::col(Column::TokensOut).if_null(0_i64))
                        .sum(),
                ),
                "tokens",
            )
            .cond_where(condition)
            .group_by_col(column);
        if limit {
            // `rank_top`'s order, nulls (global proxy keys) first on every backend, so the
            // rows cut off are the ones ranking would drop.
            select
                .order_by(Alias::new("requests"), Order::Desc)
                .order_by_with_nulls(column, Order::Asc, NullOrdering::First)
                .limit(domain::request_log::TOP_ENTRIES as u64);
        }
        self.backend.build(&select)
    }

    async fn rows(&self, statement: Statement) -> Result<Vec<QueryResult>> {
        self.db
            .query_all_raw(statement)
            .await
            .map_err(|err| self.error(err))
    }

    /// The top-list sums of `rows` (columns `id`, `requests`, `errors`, `tokens`) added to
    /// `sums` by id; with `zero_is_null`, id 0 (the rollup's "none") counts as null.
    fn add_top_rows(
        &self,
        sums: &mut BTreeMap<Option<i64>, [u64; 3]>,
        rows: &[QueryResult],
        zero_is_null: bool,
    ) -> Result<()> {
        for row in rows {
            let get = |name: &str| -> Result<i64> {
                row.try_get::<i64>("", name).map_err(|err| self.error(err))
            };
            let mut id: Option<i64> = row.try_get("", "id").map_err(|err| self.error(err))?;
            if zero_is_null && id == Some(0) {
                id = None;
            }
            let entry = sums.entry(id).or_default();
            entry[0] += non_negative(get("requests")?);
            entry[1] += non_negative(get("errors")?);
            entry[2] += non_negative(get("tokens")?);
        }
        Ok(())
    }
}

/// A ranked top list from sums by id.
fn top_entries<Id: Ord + Copy>(
    sums: BTreeMap<Option<i64>, [u64; 3]>,
    id: impl Fn(Option<i64>) -> Option<Id>,
) -> Vec<TopEntry<Id>> {
    let entries = sums
        .into_iter()
        .filter_map(|(raw, [requests, errors, tokens])| {
            id(raw).map(|id| TopEntry {
                id,
                requests,
                errors,
                tokens,
            })
        })
        .collect();
    rank_top(entries)
}

fn non_negative(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[async_trait]
impl RequestLog for SqlStore {
    async fn append(&self, records: &[RequestRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let rows: Vec<LogRow<'_>> = records.iter().map(convert::log_row).collect();
        let mut statements: Vec<Statement> = crate::chunks::fixed_chunks(&rows, &INSERT_SIZES)
            .map(|chunk| insert_statement(self.backend, chunk))
            .collect::<Result<_>>()?;
        statements.extend(rollup::upsert_statements(self.backend, &rows)?);
        // The rows and their rollup sums commit together, so the stats never count a record
        // twice or miss one.
        let txn = self.begin_write_on(&self.log_writer).await?;
        for statement in statements {
            txn.execute_raw(statement)
                .await
                .map_err(|err| self.error(err))?;
        }
        self.commit(txn).await
    }

    async fn query(&self, query: &LogQuery) -> Result<LogPage> {
        let mut select = Entity::find().filter(filter_condition(&query.filter));
        if let Some(cursor) = query.before {
            select = select.filter(
                Condition::any()
                    .add(Column::CreatedAt.lt(cursor.created_at_ms))
                    .add(
                        Condition::all()
                            .add(Column::CreatedAt.eq(cursor.created_at_ms))
                            .add(Column::Id.lt(cursor.id.0)),
                    ),
            );
        }
        let rows = select
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
            .limit(query.limit as u64 + 1)
            .all(&self.db)
            .await
            .map_err(|err| self.error(err))?;
        let fetched = rows
            .into_iter()
            .map(convert::request_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(LogPage::from_fetched(fetched, query.limit))
    }

    async fn stats(&self, query: &StatsQuery) -> Result<UsageStats> {
        let plan = StatsPlan::of(query);
        // Every statement of the answer, run side by side.
        let (sources, statements): (Vec<(Part, Origin)>, Vec<Statement>) = self
            .stats_statements(query, &plan)
            .into_iter()
            .map(|(part, origin, statement)| ((part, origin), statement))
            .unzip();
        let results =
            futures_util::future::try_join_all(statements.into_iter().map(|s| self.rows(s)))
                .await?;
        let mut series = SeriesBuilder::new(query);
        let mut tops: [BTreeMap<Option<i64>, [u64; 3]>; 3] = Default::default();
        for ((part, origin), rows) in sources.into_iter().zip(&results) {
            let rollup = origin == Origin::Rollup;
            match part {
                Part::Series if rollup => self.add_rollup_series(&mut series, rows)?,
                Part::Series => self.add_raw_series(&mut series, rows)?,
                Part::Configs => self.add_top_rows(&mut tops[0], rows, rollup)?,
                Part::ApiKeys => self.add_top_rows(&mut tops[1], rows, rollup)?,
                Part::ClientKeys => self.add_top_rows(&mut tops[2], rows, rollup)?,
            }
        }
        let [configs, api_keys, client_keys] = tops;
        Ok(UsageStats {
            series: series.build(),
            top: TopLists {
                configs: top_entries(configs, |id| id.map(ProxyConfigId)),
                api_keys: top_entries(api_keys, |id| id.map(ApiKeyId)),
                client_keys: top_entries(client_keys, |id| Some(id.map(ClientKeyId))),
            },
        })
    }

    async fn cap_edge(&self, max_rows: u64) -> Result<Option<LogCursor>> {
        // On the log's own connection, like the rest of the prune: the walk down the time index
        // fills one page cache, the writer's, instead of one per pooled connection.
        let edge = Entity::find()
            .select_only()
            .column(Column::CreatedAt)
            .column(Column::Id)
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
            .offset(max_rows)
            .limit(1)
            .into_tuple::<(i64, i64)>()
            .one(&self.log_writer)
            .await
            .map_err(|err| self.error(err))?;
        Ok(edge.map(|(created_at_ms, id)| LogCursor {
            created_at_ms,
            id: RequestRecordId(id),
        }))
    }

    async fn prune(&self, retention: &Retention) -> Result<u64> {
        let batch = retention.batch.clamp(1, MAX_PRUNE_BATCH);
        let mut doomed =
            Condition::any().add(Column::CreatedAt.lt(retention.older_than.timestamp_millis()));
        if let Some(edge) = retention.cap_edge {
            doomed = doomed.add(at_or_before(edge.created_at_ms, edge.id.0));
        }
        let ids: Vec<i64> = Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(doomed)
            .order_by_asc(Column::CreatedAt)
            .order_by_asc(Column::Id)
            .limit(batch as u64)
            .into_tuple::<i64>()
            .all(&self.log_writer)
            .await
            .map_err(|err| self.error(err))?;
        // Rollup hours wholly older than the retention go too (a row cap leaves them: the
        // stats keep counting requests whose rows the cap removed).
        let cutoff = retention.older_than.timestamp_millis() - HOUR_MS;
        let mut doomed_hours = Query::delete();
        // Every dimension named, so the delete reads one range of the key per dimension.
        doomed_hours
            .from_table(Alias::new(rollup::TABLE))
            .cond_where(
                Condition::all()
                    .add(Expr::col(Alias::new("dim")).is_in(Dim::ALL.map(Dim::code)))
                    .add(Expr::col(Alias::new("hour")).lte(cutoff)),
            );
        self.log_writer
            .execute_raw(self.backend.build(&doomed_hours))
            .await
            .map_err(|err| self.error(err))?;
        if ids.is_empty() {
            return Ok(0);
        }
        let deleted = Entity::delete_many()
            .filter(Column::Id.is_in(ids))
            .exec(&self.log_writer)
            .await
            .map_err(|err| self.error(err))?;
        Ok(deleted.rows_affected)
    }
}

/// One part of a stats answer: the series or a top list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Series,
    Configs,
    ApiKeys,
    ClientKeys,
}

impl Part {
    const ALL: [Part; 4] = [Part::Series, Part::Configs, Part::ApiKeys, Part::ClientKeys];

    /// The id the part groups its rows by.
    fn groups_by(self) -> Ids {
        Ids {
            config: self == Part::Configs,
            api_key: self == Part::ApiKeys,
            client_key: self == Part::ClientKeys,
        }
    }
}

/// Where a statement's rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Raw,
    Rollup,
}

/// Where a stats query's answer comes from: per part, the rollup dimension that answers it
/// over the whole hours `hours` (with raw rows for the partial hours in `edges`), or raw rows
/// over the whole window when no dimension does (`None`).
struct StatsPlan {
    hours: (i64, i64),
    edges: Vec<StatsQuery>,
    dims: [Option<Dim>; 4],
}

impl StatsPlan {
    /// Hour and day stats read a part from the rollup when one dimension is keyed by the part's
    /// grouping id and every filtered id; minute stats, and windows without a whole hour, read
    /// raw rows.
    fn of(query: &StatsQuery) -> Self {
        let filter = &query.filter;
        let raw = StatsPlan {
            hours: (0, 0),
            edges: Vec::new(),
            dims: [None; 4],
        };
        let (Some(from), Some(to)) = (filter.from, filter.to) else {
            return raw;
        };
        let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
        let start = from + (HOUR_MS - from.rem_euclid(HOUR_MS)) % HOUR_MS;
        let end = to - to.rem_euclid(HOUR_MS);
        if query.interval == StatsInterval::Minute || start >= end {
            return raw;
        }
        let filtered = Ids {
            config: filter.proxy_config_id.is_some(),
            api_key: filter.api_key_id.is_some(),
            client_key: filter.client_key_id.is_some(),
        };
        let edge = |low: i64, high: i64| {
            let mut edge = query.clone();
            edge.filter.from = chrono::DateTime::from_timestamp_millis(low);
            edge.filter.to = chrono::DateTime::from_timestamp_millis(high);
            edge
        };
        StatsPlan {
            hours: (start, end),
            edges: [(from, start), (end, to)]
                .into_iter()
                .filter(|(low, high)| low < high)
                .map(|(low, high)| edge(low, high))
                .collect(),
            dims: Part::ALL.map(|part| Dim::covering(filtered.with(part.groups_by()))),
        }
    }

    /// The dimension answering `part`, if any.
    fn dim(&self, part: Part) -> Option<Dim> {
        self.dims[part as usize]
    }
}

/// The rollup rows of dimension `dim` matching the filter over the hours `[start, end)`: its
/// status class and outcome, and its ids (each a column of `dim`, as [`Dim::covering`] chose).
fn rollup_condition(query: &StatsQuery, (start, end): (i64, i64), dim: Dim) -> Condition {
    let col = |name: &str| Expr::col(Alias::new(name));
    let filter = &query.filter;
    let mut condition = Condition::all()
        .add(col("dim").eq(dim.code()))
        .add(col("hour").gte(start))
        .add(col("hour").lt(end));
    if let Some(id) = filter.proxy_config_id {
        condition = condition.add(col("config_id").eq(id.0));
    }
    if let Some(id) = filter.api_key_id {
        condition = condition.add(col("dim_id").eq(id.0));
    }
    if let Some(id) = filter.client_key_id {
        condition = condition.add(col("dim_id").eq(id.0));
    }
    if let Some(class) = filter.status_class {
        let range = class.range();
        condition = condition
            .add(col("status").gte(i32::from(range.start)))
            .add(col("status").lt(i32::from(range.end)));
    }
    if let Some(outcome) = &filter.outcome {
        condition = condition.add(col("outcome").eq(outcome.as_str()));
    }
    condition
}

impl SqlStore {
    /// Every statement of a stats answer, with the part and origin of its rows: per part the
    /// rollup statement and one raw statement per edge, or one raw statement over the window
    /// (then cut to the top entries in SQL).
    fn stats_statements(
        &self,
        query: &StatsQuery,
        plan: &StatsPlan,
    ) -> Vec<(Part, Origin, Statement)> {
        let mut statements = Vec::new();
        for part in Part::ALL {
            let Some(dim) = plan.dim(part) else {
                statements.push((part, Origin::Raw, self.raw_statement(query, part, true)));
                continue;
            };
            statements.push((
                part,
                Origin::Rollup,
                self.rollup_statement(query, plan.hours, part, dim),
            ));
            for edge in &plan.edges {
                statements.push((part, Origin::Raw, self.raw_statement(edge, part, false)));
            }
        }
        statements
    }

    /// `part` over raw rows; `limit` cuts a top list to its top entries.
    fn raw_statement(&self, query: &StatsQuery, part: Part, limit: bool) -> Statement {
        match part {
            Part::Series => self.series_statement(query),
            Part::Configs => self.top_statement(query, Column::ProxyConfigId, true, limit),
            Part::ApiKeys => self.top_statement(query, Column::ApiKeyId, true, limit),
            Part::ClientKeys => self.top_statement(query, Column::ClientKeyId, false, limit),
        }
    }

    /// `part` over the rollup rows of `dim`.
    fn rollup_statement(
        &self,
        query: &StatsQuery,
        hours: (i64, i64),
        part: Part,
        dim: Dim,
    ) -> Statement {
        match part {
            Part::Series => self.rollup_series_statement(query, hours, dim),
            Part::Configs => self.rollup_top_statement(query, hours, dim, "config_id"),
            Part::ApiKeys | Part::ClientKeys => {
                self.rollup_top_statement(query, hours, dim, "dim_id")
            }
        }
    }
}

impl SqlStore {
    /// `SUM(CASE WHEN status in [low, high) THEN requests ELSE 0 END)` over rollup rows.
    fn requests_with_status(&self, low: i32, high: i32) -> Expr {
        let status = || Expr::col(Alias::new("status"));
        let case: Expr = CaseStatement::new()
            .case(
                Condition::all()
                    .add(status().gte(low))
                    .add(status().lt(high)),
                Expr::col(Alias::new("requests")),
            )
            .finally(Expr::val(0_i64))
            .into();
        self.int(case.sum())
    }

    /// The series over the rollup: sums and histogram counts per time bucket (every record
    /// counted once, through its row of `dim`).
    fn rollup_series_statement(
        &self,
        query: &StatsQuery,
        hours: (i64, i64),
        dim: Dim,
    ) -> Statement {
        let width = query.interval.millis();
        let hour = || Expr::col(Alias::new("hour"));
        let sum = |name: &str| self.int(Expr::col(Alias::new(name)).sum());
        let mut select = Query::select();
        select
            .from(Alias::new(rollup::TABLE))
            .expr_as(self.int(hour().sub(hour().modulo(width))), "bucket")
            .expr_as(sum("requests"), "requests")
            .expr_as(self.requests_with_status(400, 500), "errors_4xx")
            .expr_as(self.requests_with_status(500, 600), "errors_5xx")
            .expr_as(sum("tokens_in"), "tokens_in")
            .expr_as(sum("tokens_out"), "tokens_out")
            .expr_as(
                self.int(Expr::col(Alias::new("min_latency")).min()),
                "min_latency",
            )
            .expr_as(
                self.int(Expr::col(Alias::new("max_latency")).max()),
                "max_latency",
            );
        for index in 0..LATENCY_BUCKETS {
            let column = rollup::latency_column(index);
            select.expr_as(sum(&column), Alias::new(column.as_str()));
        }
        select
            .cond_where(rollup_condition(query, hours, dim))
            .group_by_col(Alias::new("bucket"));
        self.backend.build(&select)
    }

    /// A top list over the rollup rows of `dim`: sums per value of `group` (`config_id` or
    /// `dim_id`), every value (the raw edges are merged in before ranking).
    fn rollup_top_statement(
        &self,
        query: &StatsQuery,
        hours: (i64, i64),
        dim: Dim,
        group: &str,
    ) -> Statement {
        let mut condition = rollup_condition(query, hours, dim);
        if dim == Dim::ApiKey && group == "dim_id" {
            // Requests that reached no upstream key are no upstream key's.
            condition = condition.add(Expr::col(Alias::new("dim_id")).ne(0_i64));
        }
        let mut select = Query::select();
        select
            .from(Alias::new(rollup::TABLE))
            .expr_as(Expr::col(Alias::new(group)), "id")
            .expr_as(
                self.int(Expr::col(Alias::new("requests")).sum()),
                "requests",
            )
            .expr_as(self.requests_with_status(400, 600), "errors")
            .expr_as(
                self.int(
                    Expr::col(Alias::new("tokens_in"))
                        .add(Expr::col(Alias::new("tokens_out")))
                        .sum(),
                ),
                "tokens",
            )
            .cond_where(condition)
            .group_by_col(Alias::new(group));
        self.backend.build(&select)
    }

    /// Adds the raw series statement's rows.
    fn add_raw_series(&self, series: &mut SeriesBuilder, rows: &[QueryResult]) -> Result<()> {
        for row in rows {
            let get = |name: &str| -> Result<i64> {
                row.try_get::<i64>("", name).map_err(|err| self.error(err))
            };
            series.add(
                get("bucket")?,
                usize::try_from(get("latency_bucket")?).unwrap_or(usize::MAX),
                &BucketSums {
                    requests: non_negative(get("requests")?),
                    errors_4xx: non_negative(get("errors_4xx")?),
                    errors_5xx: non_negative(get("errors_5xx")?),
                    tokens_in: non_negative(get("tokens_in")?),
                    tokens_out: non_negative(get("tokens_out")?),
                    min_latency_ms: non_negative(get("min_latency")?),
                    max_latency_ms: non_negative(get("max_latency")?),
                },
            );
        }
        Ok(())
    }

    /// Adds the rollup series statement's rows: one call per histogram bucket, the counts and
    /// tokens carried by the first.
    fn add_rollup_series(&self, series: &mut SeriesBuilder, rows: &[QueryResult]) -> Result<()> {
        for row in rows {
            let get = |name: &str| -> Result<i64> {
                row.try_get::<i64>("", name).map_err(|err| self.error(err))
            };
            let bucket = get("bucket")?;
            let mut first = BucketSums {
                requests: 0,
                errors_4xx: non_negative(get("errors_4xx")?),
                errors_5xx: non_negative(get("errors_5xx")?),
                tokens_in: non_negative(get("tokens_in")?),
                tokens_out: non_negative(get("tokens_out")?),
                min_latency_ms: non_negative(get("min_latency")?),
                max_latency_ms: non_negative(get("max_latency")?),
            };
            for index in 0..LATENCY_BUCKETS {
                let count = non_negative(get(&rollup::latency_column(index))?);
                if count == 0 {
                    continue;
                }
                series.add(
                    bucket,
                    index,
                    &BucketSums {
                        requests: count,
                        ..first
                    },
                );
                first.errors_4xx = 0;
                first.errors_5xx = 0;
                first.tokens_in = 0;
                first.tokens_out = 0;
            }
        }
        Ok(())
    }
}

/// One multi-row insert of `rows` (a chunk of one of the [`INSERT_SIZES`]): its SQL is rendered
/// once per backend and size, only its values per batch.
fn insert_statement(backend: DbBackend, rows: &[LogRow<'_>]) -> Result<Statement> {
    let sql = insert_sql(backend, rows.len())?;
    let mut values = Vec::with_capacity(rows.len() * INSERT_COLUMNS.len());
    for row in rows {
        row.push_values(&mut values);
    }
    Ok(Statement::from_sql_and_values(
        backend,
        sql.as_str(),
        values,
    ))
}

/// The columns a log insert fills, in the order of [`convert::LogRow::push_values`].
pub(crate) const INSERT_COLUMNS: [Column; 18] = [
    Column::CreatedAt,
    Column::ProxyConfigId,
    Column::ClientKeyId,
    Column::ApiKeyId,
    Column::Method,
    Column::Path,
    Column::Status,
    Column::Outcome,
    Column::Attempts,
    Column::HeadLatencyMs,
    Column::TotalLatencyMs,
    Column::LatencyBucket,
    Column::Streamed,
    Column::BytesIn,
    Column::BytesOut,
    Column::TokensIn,
    Column::TokensOut,
    Column::ErrorCode,
];

/// The rendered inserts, per backend (MySQL, PostgreSQL, SQLite) and size of [`INSERT_SIZES`].
static INSERT_SQL: [[OnceLock<String>; INSERT_SIZES.len()]; 3] =
    [const { [const { OnceLock::new() }; INSERT_SIZES.len()] }; 3];

/// The SQL of an insert of `rows` log rows on `backend`, placeholders only (every value bound).
fn insert_sql(backend: DbBackend, rows: usize) -> Result<&'static String> {
    let size = INSERT_SIZES
        .iter()
        .position(|&size| size == rows)
        .ok_or_else(|| domain::Error::Internal(format!("no log insert of {rows} rows")))?;
    let backend_slot = match backend {
        DbBackend::MySql => 0,
        DbBackend::Postgres => 1,
        _ => 2,
    };
    Ok(INSERT_SQL[backend_slot][size].get_or_init(|| render_insert(backend, rows)))
}

fn render_insert(backend: DbBackend, rows: usize) -> String {
    let mut insert = Query::insert();
    insert.into_table(Entity).columns(INSERT_COLUMNS);
    let row: Vec<Expr> = (0..INSERT_COLUMNS.len())
        .map(|_| Expr::val(0_i64))
        .collect();
    for _ in 0..rows {
        // Same length as the column list, so this never fails.
        let _ = insert.values(row.clone());
    }
    backend.build(&insert).sql
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{DateTime, Utc};

    use super::*;

    /// A full record with texts past their bounds (a multi-byte character across the path's),
    /// and a sparse one.
    fn records_to_insert() -> Vec<RequestRecord> {
        let full = RequestRecord {
            created_at: DateTime::from_timestamp_nanos(1_765_000_000_123_456_789),
            proxy_config_id: ProxyConfigId(7),
            client_key_id: Some(ClientKeyId(3)),
            api_key_id: Some(ApiKeyId(11)),
            method: "POST".into(),
            path: format!("/llm/x/{}é{}", "a".repeat(503), "b".repeat(40)),
            status: 429,
            outcome: "o".repeat(70).into(),
            attempts: 3,
            head_latency_ms: 12,
            total_latency_ms: 3_400,
            streamed: true,
            bytes_in: 100,
            bytes_out: u64::MAX,
            tokens_in: Some(5),
            tokens_out: Some(9),
            error_code: Some("e".repeat(65).into()),
        };
        let sparse = RequestRecord {
            client_key_id: None,
            api_key_id: None,
            tokens_in: None,
            tokens_out: None,
            error_code: None,
            path: "/proxy/y".into(),
            outcome: "success".into(),
            ..full.clone()
        };
        vec![full, sparse]
    }

    /// The insert as sea-query builds it from the normalized records, values and all.
    fn built_by_sea_query(backend: DbBackend, records: &[RequestRecord]) -> Statement {
        let mut insert = Query::insert();
        insert.into_table(Entity).columns(INSERT_COLUMNS);
        for record in records {
            let r = record.clone().normalized();
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            let bucket = domain::request_log::latency_bucket(r.total_latency_ms);
            insert
                .values([
                    Expr::val(r.created_at.timestamp_millis()),
                    Expr::val(r.proxy_config_id.0),
                    Expr::val(r.client_key_id.map(|id| id.0)),
                    Expr::val(r.api_key_id.map(|id| id.0)),
                    Expr::val(r.method.into_owned()),
                    Expr::val(r.path),
                    Expr::val(i32::from(r.status)),
                    Expr::val(r.outcome.into_owned()),
                    Expr::val(i32::try_from(r.attempts).unwrap()),
                    Expr::val(count(r.head_latency_ms)),
                    Expr::val(count(r.total_latency_ms)),
                    Expr::val(i16::try_from(bucket).unwrap()),
                    Expr::val(r.streamed),
                    Expr::val(count(r.bytes_in)),
                    Expr::val(count(r.bytes_out)),
                    Expr::val(r.tokens_in.map(count)),
                    Expr::val(r.tokens_out.map(count)),
                    Expr::val(r.error_code.map(|c| c.into_owned())),
                ])
                .unwrap();
        }
        backend.build(&insert)
    }

    #[test]
    fn a_cached_insert_is_the_statement_sea_query_builds() {
        let records = records_to_insert();
        for backend in [DbBackend::MySql, DbBackend::Postgres, DbBackend::Sqlite] {
            for size in INSERT_SIZES {
                let chunk: Vec<RequestRecord> =
                    records.iter().cycle().take(size).cloned().collect();
                let rows: Vec<LogRow<'_>> = chunk.iter().map(convert::log_row).collect();
                let cached = insert_statement(backend, &rows).unwrap();
                let expected = built_by_sea_query(backend, &chunk);
                assert_eq!(cached.sql, expected.sql, "{backend:?}, {size} rows");
                assert_eq!(cached.values, expected.values, "{backend:?}, {size} rows");
                // Asked again, the rendered SQL comes from the cache.
                assert_eq!(insert_statement(backend, &rows).unwrap().sql, expected.sql);
            }
        }
        let three: Vec<LogRow<'_>> = records
            .iter()
            .cycle()
            .take(3)
            .map(convert::log_row)
            .collect();
        assert!(
            insert_statement(DbBackend::Sqlite, &three).is_err(),
            "3 is no insert size"
        );
    }

    const DAY: i64 = 24 * HOUR_MS;

    fn at(ms: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(ms)
    }

    /// A query over `[from, to)` filtered to the given config, upstream key and client key.
    fn query(
        ids: (bool, bool, bool),
        (from, to): (i64, i64),
        interval: StatsInterval,
    ) -> StatsQuery {
        let (config, api_key, client_key) = ids;
        StatsQuery {
            filter: LogFilter {
                proxy_config_id: config.then_some(ProxyConfigId(3)),
                api_key_id: api_key.then_some(ApiKeyId(31)),
                client_key_id: client_key.then_some(ClientKeyId(7)),
                from: at(from),
                to: at(to),
                ..LogFilter::default()
            },
            interval,
        }
    }

    fn dims(ids: (bool, bool, bool)) -> [Option<Dim>; 4] {
        let week = (1_000 * DAY + 1_234, 1_007 * DAY + 5_678);
        StatsPlan::of(&query(ids, week, StatsInterval::Day)).dims
    }

    #[test]
    fn each_part_reads_the_smallest_dimension_keyed_by_its_ids() {
        let config = Some(Dim::Config);
        let key = Some(Dim::ApiKey);
        let client = Some(Dim::ClientKey);
        let client_config = Some(Dim::ClientKeyConfig);
        // Filtered to (config, upstream key, client key): the series', the configs', the
        // upstream keys' and the client keys' dimension, `None` for raw rows.
        let expected = [
            ((false, false, false), [config, config, key, client]),
            ((true, false, false), [config, config, key, client_config]),
            ((false, true, false), [key, key, key, None]),
            ((false, false, true), [client, client_config, None, client]),
            ((true, true, false), [key, key, key, None]),
            (
                (true, false, true),
                [client_config, client_config, None, client_config],
            ),
            ((false, true, true), [None; 4]),
            ((true, true, true), [None; 4]),
        ];
        for (ids, parts) in expected {
            assert_eq!(dims(ids), parts, "filtered to {ids:?}");
        }
    }

    #[test]
    fn the_rollup_gets_the_whole_hours_and_raw_rows_the_partial_ones() {
        let (from, to) = (10 * DAY + 1_234, 12 * DAY + 5_678);
        let plan = StatsPlan::of(&query(
            (true, false, false),
            (from, to),
            StatsInterval::Hour,
        ));
        assert_eq!(plan.hours, (10 * DAY + HOUR_MS, 12 * DAY));
        let edges: Vec<(i64, i64)> = plan.edges.iter().map(StatsQuery::window_ms).collect();
        assert_eq!(edges, [(from, 10 * DAY + HOUR_MS), (12 * DAY, to)]);
        assert!(
            plan.edges
                .iter()
                .all(|edge| edge.filter.proxy_config_id.is_some()),
            "the edges keep the filter"
        );
    }

    #[test]
    fn minute_stats_and_windows_without_a_whole_hour_read_raw_rows() {
        let none = (false, false, false);
        let minutes = query(none, (0, DAY), StatsInterval::Minute);
        assert_eq!(StatsPlan::of(&minutes).dims, [None; 4]);
        let inside_an_hour = query(none, (HOUR_MS + 1, 2 * HOUR_MS - 1), StatsInterval::Hour);
        assert_eq!(StatsPlan::of(&inside_an_hour).dims, [None; 4]);
    }
}
