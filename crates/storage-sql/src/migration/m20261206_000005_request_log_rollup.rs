//! The request log's hour rollup (`request_log_rollup`, see `crate::rollup`): one row per key
//! dimension (1 config, 2 upstream key within its config, 3 client key over every config,
//! 4 client key within a config), hour, config id (0 for every config), id (0 for none), status
//! and outcome, with the request count, token sums, the 29 latency-histogram counts and the
//! latency minimum and maximum. The primary key leads with the dimension and hour (unfiltered
//! stats, the prune); two indexes lead with the dimension and then the id or the config, so
//! stats filtered to one config, upstream key or client key read only that id's hours. The
//! migration backfills the rollup from the `request_logs` rows already stored.

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
        .col(ColumnDef::new(Alias::new("dim")).integer().not_null())
        .col(big("hour"))
        .col(big("config_id"))
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
            .col(Alias::new("dim"))
            .col(Alias::new("hour"))
            .col(Alias::new("config_id"))
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

/// The filtered stats' access paths: a dimension's rows of one id, and of one config, by hour.
fn indexes() -> [IndexCreateStatement; 2] {
    let index = |name: &str, column: &str| {
        Index::create()
            .name(name)
            .table(Alias::new(TABLE))
            .col(Alias::new("dim"))
            .col(Alias::new(column))
            .col(Alias::new("hour"))
            .if_not_exists()
            .to_owned()
    };
    [
        index("ix_request_log_rollup_id", "dim_id"),
        index("ix_request_log_rollup_config", "config_id"),
    ]
}

/// One dimension of the backfill: its code and the expressions of its `config_id` and
/// `dim_id` over `request_logs` (what `crate::rollup::Dim` computes per record on append).
fn dimensions() -> [(i32, Expr, Expr); 4] {
    let config = || Expr::col(Alias::new("proxy_config_id"));
    let or_zero = |column: &str| Expr::col(Alias::new(column)).if_null(0_i64);
    [
        (1, config(), config()),
        (2, config(), or_zero("api_key_id")),
        (3, Expr::val(0_i64), or_zero("client_key_id")),
        (4, config(), or_zero("client_key_id")),
    ]
}

/// `INSERT INTO request_log_rollup SELECT ... FROM request_logs GROUP BY ...` for one dimension.
fn backfill(
    backend: DbBackend,
    (dim, config, id): (i32, Expr, Expr),
) -> Result<InsertStatement, DbErr> {
    let cast = |expr: Expr| -> Expr {
        expr.cast_as(Alias::new(match backend {
            DbBackend::MySql => "SIGNED",
            _ => "BIGINT",
        }))
    };
    let created = || Expr::col(Alias::new("created_at"));
    let hour = created().sub(created().modulo(HOUR_MS));
    let mut select = Query::select();
    select
        .from(Alias::new("request_logs"))
        .expr_as(Expr::val(dim), "dim")
        .expr_as(cast(hour), "hour")
        .expr_as(cast(config), "config_id")
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
        .group_by_col(Alias::new("config_id"))
        .group_by_col(Alias::new("dim_id"))
        .group_by_col(Alias::new("status"))
        .group_by_col(Alias::new("outcome"));
    let mut columns: Vec<Alias> = [
        "dim",
        "hour",
        "config_id",
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
        for index in indexes() {
            manager.create_index(index).await?;
        }
        for dimension in dimensions() {
            manager
                .get_connection()
                .execute(&backfill(backend, dimension)?)
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
