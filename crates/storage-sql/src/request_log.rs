//! The `RequestLog` port on [`SqlStore`], written once for SQLite, MySQL and PostgreSQL with
//! sea-query's builder (no backend-specific SQL but the integer cast's type name).
//!
//! Appends are multi-row inserts of at most [`RECORDS_PER_INSERT`] rows, under every backend's
//! bound-parameter limit. Pages read newest first along an index that ends in the time. Stats
//! are four grouped queries run side by side (the series by time bucket and latency bucket,
//! and the three top lists), so the database scans the matching rows and returns a few
//! thousand sums at most; percentiles come from the domain's latency histogram. Prune steps
//! delete at most one batch of ids each, oldest first, so no delete holds the write lock long.

use async_trait::async_trait;
use domain::{
    ApiKeyId, ClientKeyId, LogFilter, LogPage, LogQuery, ProxyConfigId, RequestLog, RequestRecord,
    Result, Retention, StatsQuery, TopEntry, TopLists, UsageStats,
    request_log::{BucketSums, SeriesBuilder, rank_top},
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, Order, QueryFilter, QueryOrder,
    QueryResult, QuerySelect, Statement,
    sea_query::{Alias, CaseStatement, Condition, Expr, ExprTrait, Query, SelectStatement},
};

use crate::{
    SqlStore, convert,
    entity::request_log::{Column, Entity},
};

/// Rows per insert statement: 18 parameters each, far under SQLite's 32 766 and MySQL's and
/// PostgreSQL's 65 535, and under 1 MiB of SQL with the longest paths.
pub const RECORDS_PER_INSERT: usize = 1_000;
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
    fn top_statement(&self, query: &StatsQuery, column: Column, skip_null: bool) -> Statement {
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
            .group_by_col(column)
            .order_by(Alias::new("requests"), Order::Desc)
            .order_by(column, Order::Asc)
            .limit(domain::request_log::TOP_ENTRIES as u64);
        self.backend.build(&select)
    }

    async fn rows(&self, statement: Statement) -> Result<Vec<QueryResult>> {
        self.db
            .query_all_raw(statement)
            .await
            .map_err(|err| self.error(err))
    }

    fn top_entries<Id: Ord + Copy>(
        &self,
        rows: &[QueryResult],
        id: impl Fn(Option<i64>) -> Option<Id>,
    ) -> Result<Vec<TopEntry<Id>>> {
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let get = |name: &str| -> Result<i64> {
                row.try_get::<i64>("", name).map_err(|err| self.error(err))
            };
            let raw: Option<i64> = row.try_get("", "id").map_err(|err| self.error(err))?;
            let Some(id) = id(raw) else { continue };
            entries.push(TopEntry {
                id,
                requests: non_negative(get("requests")?),
                errors: non_negative(get("errors")?),
                tokens: non_negative(get("tokens")?),
            });
        }
        Ok(rank_top(entries))
    }
}

fn non_negative(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[async_trait]
impl RequestLog for SqlStore {
    async fn append(&self, records: &[RequestRecord]) -> Result<()> {
        let statements: Vec<Statement> = records
            .chunks(RECORDS_PER_INSERT)
            .map(|chunk| self.insert_records_statement(chunk))
            .collect::<Result<_>>()?;
        match statements.len() {
            0 => Ok(()),
            1 => {
                for statement in statements {
                    self.db
                        .execute_raw(statement)
                        .await
                        .map_err(|err| self.error(err))?;
                }
                Ok(())
            }
            _ => {
                let txn = self.begin_write().await?;
                for statement in statements {
                    txn.execute_raw(statement)
                        .await
                        .map_err(|err| self.error(err))?;
                }
                self.commit(txn).await
            }
        }
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
        let (series_rows, config_rows, key_rows, client_rows) = futures_util::future::try_join4(
            self.rows(self.series_statement(query)),
            self.rows(self.top_statement(query, Column::ProxyConfigId, true)),
            self.rows(self.top_statement(query, Column::ApiKeyId, true)),
            self.rows(self.top_statement(query, Column::ClientKeyId, false)),
        )
        .await?;
        let mut series = SeriesBuilder::new(query);
        for row in &series_rows {
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
        Ok(UsageStats {
            series: series.build(),
            top: TopLists {
                configs: self.top_entries(&config_rows, |id| id.map(ProxyConfigId))?,
                api_keys: self.top_entries(&key_rows, |id| id.map(ApiKeyId))?,
                client_keys: self.top_entries(&client_rows, |id| Some(id.map(ClientKeyId)))?,
            },
        })
    }

    async fn prune(&self, retention: &Retention) -> Result<u64> {
        let batch = retention.batch.clamp(1, MAX_PRUNE_BATCH);
        // The newest row past the cap, if the log holds more than `max_rows`.
        let boundary = Entity::find()
            .select_only()
            .column(Column::CreatedAt)
            .column(Column::Id)
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
            .offset(retention.max_rows)
            .limit(1)
            .into_tuple::<(i64, i64)>()
            .one(&self.db)
            .await
            .map_err(|err| self.error(err))?;
        let mut doomed =
            Condition::any().add(Column::CreatedAt.lt(retention.older_than.timestamp_millis()));
        if let Some((created_at, id)) = boundary {
            doomed = doomed.add(at_or_before(created_at, id));
        }
        let ids: Vec<i64> = Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(doomed)
            .order_by_asc(Column::CreatedAt)
            .order_by_asc(Column::Id)
            .limit(batch as u64)
            .into_tuple::<i64>()
            .all(&self.db)
            .await
            .map_err(|err| self.error(err))?;
        if ids.is_empty() {
            return Ok(0);
        }
        let deleted = Entity::delete_many()
            .filter(Column::Id.is_in(ids))
            .exec(&self.db)
            .await
            .map_err(|err| self.error(err))?;
        Ok(deleted.rows_affected)
    }
}

impl SqlStore {
    /// One multi-row insert of `records`.
    fn insert_records_statement(&self, records: &[RequestRecord]) -> Result<Statement> {
        let mut insert = Query::insert();
        insert.into_table(Entity).columns([
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
        ]);
        for record in records {
            let row = convert::request_log_row(record);
            insert
                .values([
                    Expr::val(row.created_at),
                    Expr::val(row.proxy_config_id),
                    Expr::val(row.client_key_id),
                    Expr::val(row.api_key_id),
                    Expr::val(row.method),
                    Expr::val(row.path),
                    Expr::val(row.status),
                    Expr::val(row.outcome),
                    Expr::val(row.attempts),
                    Expr::val(row.head_latency_ms),
                    Expr::val(row.total_latency_ms),
                    Expr::val(row.latency_bucket),
                    Expr::val(row.streamed),
                    Expr::val(row.bytes_in),
                    Expr::val(row.bytes_out),
                    Expr::val(row.tokens_in),
                    Expr::val(row.tokens_out),
                    Expr::val(row.error_code),
                ])
                .map_err(|_| domain::Error::Internal("malformed request log insert".to_owned()))?;
        }
        Ok(self.backend.build(&insert))
    }
}
