//! The request log's hour rollup (`request_log_rollup`, see `crate::rollup`): one row per hour,
//! key dimension (1 config, 2 upstream key, 3 client key), id (0 for none), status and outcome,
//! with the request count, token sums, the 29 latency-histogram counts and the latency minimum
//! and maximum. The migration backfills it from the `request_logs` rows already stored.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

/// Creates `request_log_rollup` and fills it from `request_logs`.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "request_log_rollup";
const HOUR_MS: i64 = 3_600_000;
const LATENCY_BUCKETS: usize = 29;

fn latency_column(index: usize) -> String {
    format!("lat_{index:02}")
}

fn create_table(backend: DbBackend) -> TableCreateStatement {
    let big = |name: &str| {
        ColumnDef::new(Alias::new(name))
            .big_integer()
            .not_null()
            .to_owned()
    };
    let mut table = Table::create();
    table
        .table(Alias::new(TABLE))
        .if_not_exists()
        .col(big("hour"))
        .col(ColumnDef::new(Alias::new("dim")).integer().not_null())
        .col(big("dim_id"))
        .col(ColumnDef::new(Alias::new("status")).integer().not_null())
        .col(
            ColumnDef::new(Alias::new("outcome"))
                .string_len(64)
                .not_null(),
        )
        .col(big("requests"))
        .col(big("tokens_in"))
        .col(big("tokens_out"))
        .col(big("min_latency"))
        .col(big("max_latency"));
    for index in 0..LATENCY_BUCKETS {
        table.col(big(&latency_column(index)));
    }
    table.primary_key(
        Index::create()
            .col(Alias::new("hour"))
            .col(Alias::new("dim"))
            .col(Alias::new("dim_id"))
            .col(Alias::new("status"))
            .col(Alias::new("outcome")),
    );
    if backend == DbBackend::MySql {
        table
            .engine("InnoDB")
            .character_set("utf8mb4")
            .collate("utf8mb4_bin");
    }
    table
}

/// `INSERT INTO request_log_rollup SELECT ... FROM request_logs GROUP BY ...` for one dimension.
fn backfill(backend: DbBackend, dim: i32, id_column: &str) -> Result<InsertStatement, DbErr> {
    let cast = |expr: Expr| -> Expr {
        expr.cast_as(Alias::new(match backend {
            DbBackend::MySql => "SIGNED",
            _ => "BIGINT",
        }))
    };
    let created = || Expr::col(Alias::new("created_at"));
    let hour = created().sub(created().modulo(HOUR_MS));
    let id = Expr::col(Alias::new(id_column)).if_null(0_i64);
    let mut select = Query::select();
    select
        .from(Alias::new("request_logs"))
        .expr_as(cast(hour), "hour")
        .expr_as(Expr::val(dim), "dim")
        .expr_as(cast(id), "dim_id")
        .column(Alias::new("status"))
        .column(Alias::new("outcome"))
        .expr(cast(Expr::col(Alias::new("id")).count()))
        .expr(cast(
            Expr::col(Alias::new("tokens_in")).if_null(0_i64).sum(),
        ))
        .expr(cast(
            Expr::col(Alias::new("tokens_out")).if_null(0_i64).sum(),
        ))
        .expr(cast(Expr::col(Alias::new("total_latency_ms")).min()))
        .expr(cast(Expr::col(Alias::new("total_latency_ms")).max()));
    for index in 0..LATENCY_BUCKETS {
        let case: Expr = CaseStatement::new()
            .case(
                Expr::col(Alias::new("latency_bucket")).eq(index as i64),
                Expr::val(1_i64),
            )
            .finally(Expr::val(0_i64))
            .into();
        select.expr(cast(case.sum()));
    }
    select
        .group_by_col(Alias::new("hour"))
        .group_by_col(Alias::new("dim_id"))
        .group_by_col(Alias::new("status"))
        .group_by_col(Alias::new("outcome"));
    let mut columns: Vec<Alias> = [
        "hour",
        "dim",
        "dim_id",
        "status",
        "outcome",
        "requests",
        "tokens_in",
        "tokens_out",
        "min_latency",
        "max_latency",
    ]
    .into_iter()
    .map(Alias::new)
    .collect();
    columns.extend((0..LATENCY_BUCKETS).map(|i| Alias::new(latency_column(i))));
    let mut insert = Query::insert();
    insert
        .into_table(Alias::new(TABLE))
        .columns(columns)
        .select_from(select)
        .map_err(|err| DbErr::Migration(err.to_string()))?;
    Ok(insert.to_owned())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager.create_table(create_table(backend)).await?;
        for (dim, column) in [
            (1, "proxy_config_id"),
            (2, "api_key_id"),
            (3, "client_key_id"),
        ] {
            manager
                .get_connection()
                .execute(&backfill(backend, dim, column)?)
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new(TABLE)).to_owned())
            .await
    }
}
