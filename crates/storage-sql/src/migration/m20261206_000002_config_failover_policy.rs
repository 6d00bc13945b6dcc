//! The per-config failover policy of SPEC §8: three nullable columns on `proxy_configs`
//! (`max_retries`, `retry_on` as comma-separated class names, `response_timeout_seconds`).
//! Null means "the environment's default", so every existing row keeps its behaviour.

use sea_orm_migration::prelude::*;

/// Adds the policy columns.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ProxyConfigs {
    Table,
    MaxRetries,
    RetryOn,
    ResponseTimeoutSeconds,
}

/// The new columns, each added by its own statement (SQLite alters one column at a time).
fn columns() -> [ColumnDef; 3] {
    [
        ColumnDef::new(ProxyConfigs::MaxRetries)
            .integer()
            .null()
            .to_owned(),
        ColumnDef::new(ProxyConfigs::RetryOn)
            .string_len(128)
            .null()
            .to_owned(),
        ColumnDef::new(ProxyConfigs::ResponseTimeoutSeconds)
            .integer()
            .null()
            .to_owned(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for mut column in columns() {
            manager
                .alter_table(
                    Table::alter()
                        .table(ProxyConfigs::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ProxyConfigs::MaxRetries,
            ProxyConfigs::RetryOn,
            ProxyConfigs::ResponseTimeoutSeconds,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ProxyConfigs::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
