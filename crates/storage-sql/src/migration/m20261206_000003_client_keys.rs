//! The `client_keys` table of SPEC §7: one row per client key, with the hash of its secret
//! (never the secret), its scope and limits as top-level columns, and its usage totals.
//! `allowed_config_ids` is a comma-separated id list (empty = every config): it is read whole
//! with the key and never queried by id.

use sea_orm_migration::prelude::*;

use super::m20250601_000001_create_tables::{id_column, table_options, timestamp};

/// Creates `client_keys`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ClientKeys {
    Table,
    Id,
    Name,
    KeyPrefix,
    SecretHash,
    IsActive,
    ExpiresAt,
    AllowedConfigIds,
    Rpm,
    Tpm,
    MaxConcurrency,
    TokenBudget,
    BudgetPeriod,
    RequestCount,
    TokenCount,
    BudgetUsed,
    BudgetPeriodStart,
    LastUsedAt,
    CreatedAt,
    UpdatedAt,
}

fn counter(column: ClientKeys) -> ColumnDef {
    ColumnDef::new(column)
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}

fn create_client_keys(backend: sea_orm::DbBackend) -> TableCreateStatement {
    let mut table = Table::create();
    table
        .table(ClientKeys::Table)
        .col(id_column(ClientKeys::Id))
        .col(ColumnDef::new(ClientKeys::Name).string_len(100).not_null())
        .col(
            ColumnDef::new(ClientKeys::KeyPrefix)
                .string_len(16)
                .not_null(),
        )
        .col(
            ColumnDef::new(ClientKeys::SecretHash)
                .char_len(64)
                .not_null(),
        )
        .col(ColumnDef::new(ClientKeys::IsActive).boolean().not_null())
        .col(timestamp(backend, ClientKeys::ExpiresAt).null())
        .col(
            ColumnDef::new(ClientKeys::AllowedConfigIds)
                .text()
                .not_null(),
        )
        .col(ColumnDef::new(ClientKeys::Rpm).integer().null())
        .col(ColumnDef::new(ClientKeys::Tpm).big_integer().null())
        .col(ColumnDef::new(ClientKeys::MaxConcurrency).integer().null())
        .col(ColumnDef::new(ClientKeys::TokenBudget).big_integer().null())
        .col(
            ColumnDef::new(ClientKeys::BudgetPeriod)
                .string_len(8)
                .null(),
        )
        .col(counter(ClientKeys::RequestCount))
        .col(counter(ClientKeys::TokenCount))
        .col(counter(ClientKeys::BudgetUsed))
        .col(timestamp(backend, ClientKeys::BudgetPeriodStart).null())
        .col(timestamp(backend, ClientKeys::LastUsedAt).null())
        .col(timestamp(backend, ClientKeys::CreatedAt).not_null())
        .col(timestamp(backend, ClientKeys::UpdatedAt).not_null())
        .index(
            Index::create()
                .name("uq_client_keys_name")
                .col(ClientKeys::Name)
                .unique(),
        )
        .index(
            Index::create()
                .name("uq_client_keys_secret_hash")
                .col(ClientKeys::SecretHash)
                .unique(),
        );
    table_options(backend, &mut table);
    table
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager.create_table(create_client_keys(backend)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(ClientKeys::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use sea_orm_migration::sea_query::{
        MysqlQueryBuilder, PostgresQueryBuilder, SqliteQueryBuilder,
    };

    use super::*;

    #[test]
    fn client_keys_schema_builds_on_every_backend() {
        let sqlite = create_client_keys(sea_orm::DbBackend::Sqlite).to_string(SqliteQueryBuilder);
        assert!(
            sqlite.contains(r#""secret_hash" char(64) NOT NULL"#),
            "{sqlite}"
        );
        let mysql = create_client_keys(sea_orm::DbBackend::MySql).to_string(MysqlQueryBuilder);
        assert!(mysql.contains("`expires_at` DATETIME(6) NULL"), "{mysql}");
        let postgres =
            create_client_keys(sea_orm::DbBackend::Postgres).to_string(PostgresQueryBuilder);
        assert!(
            postgres.contains(r#""id" bigserial"#) || postgres.contains("GENERATED"),
            "{postgres}"
        );
    }
}
